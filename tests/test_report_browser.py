"""The study report and the comparison page in a real headless browser (tests/browser.py): each,
built from hand-made studies, loads every image, logs no console error, fits a 1366-px laptop
screen without scrolling sideways and shows every section (a full-page screenshot is saved in
the test's temporary folder); the report's trial table sorts when a header is clicked; and a
page that is broken in each of these ways is caught."""

import pytest
from fake_study import fake_study

from analysis import compare
from analysis.report import SECTIONS, build_report

pytest_plugins = ["browser"]
# The trial table's train_seconds column read top to bottom (bad1 failed before training).
_COLUMN = ("const t = document.querySelector('#trials table.sortable');"
           "const col = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent === "
           "arguments[0]);"
           "if (arguments[1]) t.tHead.rows[0].cells[col].click();"
           "return Array.from(t.tBodies[0].rows).map(r => r.cells[col].textContent);")


def _clean(check, browser, sections) -> None:
    assert not check.broken_images, check.broken_images
    assert not check.severe_logs, check.severe_logs
    assert not check.overflow, f"{check.scroll_width} px wide in a {check.window_width}-px window"
    assert check.screenshot.stat().st_size > 20_000
    absent = browser.execute_script(
        "return arguments[0].filter(id => !document.getElementById(id))", [s for s, _ in sections])
    assert absent == []


@pytest.mark.parametrize("clip", [True, False])
def test_report_renders_cleanly(browser, render, tmp_path, clip):
    index = build_report(fake_study(tmp_path / "fake", clip=clip, style=not clip))
    check = render(index, tmp_path / "report.png")
    assert check.title == "Diffusion study fake"
    _clean(check, browser, SECTIONS)
    # click a header: numbers sort as numbers, largest first, empty cells last; again: smallest
    assert browser.execute_script(_COLUMN, "train_seconds", False)[0] == ""  # bad1, as written
    assert browser.execute_script(_COLUMN, "train_seconds", True) == \
        ["21", "20", "6.5", "6", "4", "3", ""]
    assert browser.execute_script(_COLUMN, "train_seconds", True) == \
        ["3", "4", "6", "6.5", "20", "21", ""]
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_comparison_page_renders_cleanly(browser, render, tmp_path):
    studies = [fake_study(tmp_path / "cpu", clip=False), fake_study(tmp_path / "gpu", clip=True)]
    index = compare.build_compare(studies, tmp_path / "compare")
    check = render(index, tmp_path / "compare.png")
    assert check.title == "Comparing cpu, gpu"
    _clean(check, browser, compare.SECTIONS)


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
