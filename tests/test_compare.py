"""`python -m analysis.compare`: studies side by side on one static page (each study's answer and
its best against the first's, the fronts overlaid, the best configurations side by side, the
settings that differ), from hand-made study directories; and every bad argument as one line on
stderr with exit status 2. (The page in a real browser: tests/test_report_browser.py.)"""

import html
import json
import re
import shutil

import pandas as pd
import pytest
from fake_study import fake_study

from analysis.compare import SECTIONS, build_compare, main
from study.layout import ID_DTYPES


@pytest.fixture
def two(tmp_path):
    """A CPU study and a "GPU" one: another machine and preset, where the big configuration
    trained 4× faster, so it is the best for its cost there by a wider margin."""
    a = fake_study(tmp_path / "cpu-run", clip=False)
    b = fake_study(tmp_path / "gpu-run", clip=False)
    record = json.loads((b / "study.json").read_text())
    record["spec"]["preset"] = "gpu"
    record["machine"] = {"cpus": 16, "gpus": ["H200"]}
    (b / "study.json").write_text(json.dumps(record))
    table = pd.read_csv(b / "results.csv", dtype=ID_DTYPES)
    big = table["trial_id"].isin(["big", "big_s1"])
    table.loc[big, ["train_cost_s", "train_seconds"]] /= 4
    table.to_csv(b / "results.csv", index=False)
    return a, b


def test_comparison_page(two, tmp_path, capsys):
    a, b = two
    assert main([str(a), str(b)]) == 0
    index = tmp_path / "compare-cpu-run-vs-gpu-run" / "index.html"  # beside the first study
    assert capsys.readouterr().out == f"comparison: {index}\n"
    page = index.read_text()
    for sid, title in SECTIONS:
        assert f"<section id='{sid}'><h2>{title}</h2>" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert set(images) == {"fronts.png", "best_cpu-run.png", "best_gpu-run.png"}
    assert all((index.parent / i).stat().st_size > 1000 for i in images)
    # each study's answer, then the second's best against the first's, with ± over seeds
    assert "cpu-run: Best for its cost: d3 w16 lr=0.0013 (trial big, 2 seeds)" in page
    assert ("Against cpu-run: gpu-run&#x27;s best reaches coverage 0.680 ± 0.028 vs 0.680 ± "
            "0.028 (+0.000 ± 0.040, within the seeds&#x27; spread) for 0.25× the training "
            "seconds.") in page
    best = _rows_after(page, "best configuration for its cost")
    assert best["training s"] == ["20.5 ± 0.7", "5.1 ± 0.2"]
    assert best["coverage"] == ["0.680 ± 0.028"] * 2
    differ = _rows_after(page, "settings differ")
    assert differ["setting"] == ["cpu-run", "gpu-run"]
    assert differ["machine.cpus"] == ["2", "16"] and differ["spec.preset"] == ["(absent)", "gpu"]
    assert "spec.name" not in differ and "trials run" not in differ
    assert "3 settings differ" in page  # preset, cpus, gpus


def test_three_studies_and_same_names(two, tmp_path):
    """Any number of studies; two named alike get distinct names; studies that ran with the
    same settings say so."""
    a, _ = two
    twin = tmp_path / "elsewhere" / "cpu-run"
    shutil.copytree(a, twin)
    page = build_compare([a, twin], tmp_path / "same").read_text()
    assert "Comparing cpu-run, cpu-run-2" in page and "No setting differs" in page
    page = build_compare([*two, twin], tmp_path / "three").read_text()
    assert page.count("Against cpu-run:") == 2


@pytest.mark.parametrize("argv, match", [
    (["{a}"], "at least two"),
    (["{a}", "{a}"], "given twice"),
    (["{a}", "{missing}"], "is not a directory"),
    (["{a}", "{empty}"], "holds no results.csv"),
    (["{a}", "{b}", "--out", "{file}"], "is a file"),
    ([], "the following arguments are required: studies"),
    (["{a}", "{b}", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_arguments_are_one_line(two, tmp_path, capsys, argv, match):
    a, b = two
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    paths = {"a": a, "b": b, "missing": tmp_path / "nope", "empty": tmp_path / "empty",
             "file": tmp_path / "file"}
    assert main([arg.format(**paths) for arg in argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(match, err), err
    assert not list(tmp_path.glob("compare-*"))  # nothing written


def _rows_after(page: str, caption: str) -> dict[str, list[str]]:
    """The first table after `caption` as {first cell: the other cells} per row."""
    start = page.index(caption)
    table = page[page.index("<table", start):page.index("</table>", start)]
    rows = [[html.unescape(c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)]
            for r in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)]
    return {r[0]: r[1:] for r in rows}
