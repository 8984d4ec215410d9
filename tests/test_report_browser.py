"""The study report in a real headless browser (tests/browser.py): a report of a hand-made study
loads every image, logs no console error, fits a 1366-px laptop screen without scrolling
sideways and shows every section; and a page that is broken in each of these ways is caught."""

import pytest
from fake_study import fake_study

from analysis.report import SECTIONS, build_report

pytest_plugins = ["browser"]


@pytest.mark.parametrize("clip", [True, False])
def test_report_renders_cleanly(browser, render, tmp_path, clip):
    index = build_report(fake_study(tmp_path / "fake", clip=clip))
    check = render(index, tmp_path / "report.png")
    assert check.title == "Diffusion study fake"
    assert not check.broken_images, check.broken_images
    assert not check.severe_logs, check.severe_logs
    assert not check.overflow, f"{check.scroll_width} px wide in a {check.window_width}-px window"
    assert check.screenshot.stat().st_size > 20_000
    absent = browser.execute_script(
        "return arguments[0].filter(id => !document.getElementById(id))", [s for s, _ in SECTIONS])
    assert absent == []


def test_a_broken_page_fails_the_checks(render, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><title>broken</title><img src='missing.png' alt='x'>"
                    "<table><tr><td style='min-width:2000px'>too wide</td></tr></table>")
    check = render(page, tmp_path / "broken.png")
    assert check.title == "broken"
    assert check.broken_images == ["missing.png"]
    assert any("missing.png" in line and "ERR_FILE_NOT_FOUND" in line
               for line in check.severe_logs), check.severe_logs
    assert check.overflow and check.scroll_width > 2000
