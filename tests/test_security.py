"""What the project loads, executes and exposes: no pickle besides weights-only checkpoints (and
Tune's own saved searcher), no eval/exec, YAML through the safe loader, malicious checkpoints
refused without running their payload; storage passwords never written or printed; Ray's token
file private; the HTML report's attributes escaped. (Network exposure: local Ray's bind
addresses and token in test_faults.py, cluster.yaml's ports, the cluster's token and a job's
command line in test_cluster.py.)"""

import ast
import html
import html.parser
import json
import re
import stat
import subprocess
from pathlib import Path

import pytest
import torch

from trainables.train_loop import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("study", "trainables", "analysis", "benchmarks")


def project_calls():
    """(file, call node, dotted callee name) for every call in the project's own code."""
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if any(part.startswith(".") for part in path.relative_to(ROOT).parts):
                continue  # e.g. benchmarks/.peerlibs, a third-party install
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call):
                    yield path.relative_to(ROOT), node, ast.unparse(node.func)


def _kw(node: ast.Call, name: str):
    return next((ast.unparse(k.value) for k in node.keywords if k.arg == name), None)


def test_no_unsafe_loading_or_dynamic_code():
    calls = list(project_calls())
    assert len(calls) > 500  # the scan saw the code base
    bad = []
    for path, node, name in calls:
        where = f"{path}:{node.lineno} {name}"
        if name == "torch.load" and _kw(node, "weights_only") != "True":
            bad.append(f"{where} without weights_only=True")
        if name in ("eval", "exec", "compile", "pickle.load", "pickle.loads", "yaml.load",
                    "yaml.unsafe_load", "yaml.full_load", "dill.load", "cloudpickle.load"):
            bad.append(where)
        if name == "np.load" and _kw(node, "allow_pickle") not in (None, "False"):
            bad.append(f"{where} with allow_pickle")
    assert not bad, bad
    loads = {name for _, _, name in calls if name.startswith("yaml.")}
    assert loads <= {"yaml.safe_load", "yaml.safe_dump", "yaml.dump"}, loads


class Payload:
    """Unpickling this runs `Path(marker).touch()`: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_malicious_training_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": Payload(marker), "config": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_malicious_clip_checkpoint_is_refused(tmp_path, tiny_clip_files):
    from trainables.clip_score import ClipConfig, ClipLoadError, ClipScorer

    config, _ = tiny_clip_files
    marker = tmp_path / "pwned"
    bad = tmp_path / "clip.pt"
    torch.save({"state_dict": Payload(marker)}, bad)
    with pytest.raises(ClipLoadError, match="could not load CLIP"):
        ClipScorer.load(ClipConfig(model=str(config), checkpoint=str(bad)))
    assert not marker.exists()


# ---- secrets ---------------------------------------------------------------------------------


def test_storage_passwords_are_masked_and_restored_only_in_memory(tmp_path):
    """study.json and Tune's pickled searcher hold the URL with *** for the password; the driver
    that was given it reconnects with it (study/redact.py, study/search.py)."""
    import dialects
    import optuna
    import ray.cloudpickle

    from study.redact import redact, with_password, without_password
    from study.search import StudySearch
    from study.search_space import SearchSpace

    url = with_password(f"sqlitepw://me:{dialects.PASSWORD}@//{tmp_path}/optuna.db")
    assert redact(url) == f"sqlitepw://me:***@//{tmp_path}/optuna.db"
    assert with_password(without_password(url), {"STUDY_STORAGE_PASSWORD": dialects.PASSWORD}) \
        == url
    search = StudySearch(study_dir=str(tmp_path), study_name="s", seed=0,
                         storage=optuna.storages.RDBStorage(url))
    search.set_search_properties(None, None, SearchSpace().to_tune())
    params = search.suggest("t1")
    pickled = ray.cloudpickle.dumps(search)  # as Tune writes tuner.pkl
    search.save(str(tmp_path / "searcher-state.pkl"))  # and its searcher state
    for data in (pickled, (tmp_path / "searcher-state.pkl").read_bytes()):
        assert dialects.PASSWORD.encode() not in data and b"me:***@" in data
    back = ray.cloudpickle.loads(pickled)  # reconnected with the password it was given
    assert back._ot_study.trials[0].params == params


@pytest.mark.slow
def test_no_file_or_log_of_a_study_holds_its_storage_password(tmp_path, judge_cache):
    """A real study with a password in --storage (a SQLite behind a password-checking dialect):
    neither the files it writes (study.json, Tune's state, the report, ...) nor what it prints
    hold the password; the run itself, which needs it, completes."""
    import dialects
    from conftest import STUDY_CLI, study_env

    url = f"sqlitepw://me:{dialects.PASSWORD}@//{tmp_path}/optuna.db"
    script = ("import sys, runpy; sys.path.insert(0, sys.argv.pop(1)); import dialects; "
              "sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')")
    cli = [STUDY_CLI[0], "-c", script, str(ROOT / "tests"), *STUDY_CLI[1:]]
    p = subprocess.run([*cli, "--preset", "smoke", "--dataset", "digits", "--no-clip",
                        "--num-trials", "1", "--workers-per-trial", "1", "--name", "secret",
                        "--output-dir", str(tmp_path / "runs"), "--storage", url],
                       env=study_env(judge_cache), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "me:***@" in p.stdout  # the summary names the storage, masked
    leaks = [str(f) for f in (tmp_path / "runs").rglob("*") if f.is_file()
             and dialects.PASSWORD.encode() in f.read_bytes()]
    files = list((tmp_path / "runs" / "secret").rglob("*"))
    assert len(files) > 20 and any(f.name == "tuner.pkl" for f in files)  # the scan saw them
    assert not leaks, leaks
    assert dialects.PASSWORD not in p.stdout + p.stderr
    record = json.loads((tmp_path / "runs" / "secret" / "study.json").read_text())
    assert record["spec"]["storage"] == f"sqlitepw://me:***@//{tmp_path}/optuna.db"


# ---- Ray's token file ------------------------------------------------------------------------


def test_cluster_token_is_created_private_and_a_readable_one_is_fixed(tmp_path, monkeypatch,
                                                                      capsys):
    from study.cluster import Launcher

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    token = tmp_path / ".ray" / "auth_token"
    Launcher().ensure_token()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
    assert len(token.read_text()) == 64
    first = token.read_text()
    token.chmod(0o644)  # e.g. written by `ray get-auth-token --generate` under umask 022
    Launcher().ensure_token()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text() == first
    assert "was readable by others (mode 644); made it 0600" in capsys.readouterr().err


# ---- the HTML report -------------------------------------------------------------------------

HOSTILE = ["\"><script>alert('id')</script>", "x' onerror='alert(1)", "../../../../tmp/evil"]


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.script_text: list[str] = []  # what stands between <script> and </script>

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        (self.script_text if self.lasttag == "script" else self.text).append(data)


def test_report_escapes_every_attribute_and_keeps_files_inside(tmp_path):
    """Hostile trial ids (hand-edited into results.csv) reach the report only as text: no tag
    or attribute they spell appears, every <img> points at a file beside index.html, and no
    file is written outside report/. The one script is the page's own table sorter, a fixed
    file beside index.html (analysis/page.py), never built from data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from fake_study import fake_study

    from analysis.page import SORT_JS, SORT_SCRIPT
    from analysis.report import Page, build_report

    study = fake_study(tmp_path / "s", clip=False)
    df = pd.read_csv(study / "results.csv", dtype={"trial_id": str})
    df.loc[df["trial_id"] == "bad1", "trial_id"] = HOSTILE[0]
    df = pd.concat([df, df.iloc[[0, 0]].assign(trial_id=HOSTILE[1:])], ignore_index=True)
    df.to_csv(study / "results.csv", index=False)
    index = build_report(study)
    page = Page(tmp_path / "fig")
    page.out.mkdir()
    for name in HOSTILE:  # a figure named after a hostile id, directly
        page.figure(f"top3_{name}", plt.figure())
    for text, scripts in ((index.read_text(), [{"src": SORT_SCRIPT, "defer": None}]),
                          (page.render("t"), [])):  # no sortable table: no script at all
        parser = _Tags()
        parser.feed(text)
        assert [attrs for t, attrs in parser.tags if t == "script"] == scripts
        assert "".join(parser.script_text).strip() == ""  # nothing inline
        assert not [a for _, attrs in parser.tags for a in attrs if a.startswith("on")]
        for tag, attrs in parser.tags:
            if tag == "img":
                assert re.fullmatch(r"[A-Za-z0-9_.-]+\.png", attrs["src"]), attrs
    assert {p.parent for p in page.images} == {page.out} and len(page.images) == 3
    assert all(p.exists() for p in page.images)
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()
    assert (index.parent / SORT_SCRIPT).read_text() == SORT_JS  # the same for every study
    assert "is not a plain name: its files are skipped" in index.read_text()
    parser = _Tags()
    parser.feed(index.read_text())
    assert any(HOSTILE[0] in text for text in parser.text)  # shown, as text
