"""Property-based fuzzing of what a user hands `study/run.py`: generated search-space files (YAML
and JSON, well-formed or not) and generated command-line values. Whatever the input, `main()`
either accepts it (and reaches the study, stubbed here) or refuses it with exit status 2 and one
line on stderr; it never raises, and never leaves a study directory behind.

`main()` runs in this process with `prepare` (data, judge, study.json) stubbed: an accepted input
stops there, after the study's lock was taken, so each example costs milliseconds.
"""

import json
import string
import sys
import types
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import study.run
from study.run import main
from study.search_space import AXES

BASE = ["--preset", "smoke", "--dataset", "digits", "--no-clip", "--name", "fuzz"]
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


class Accepted(BaseException):
    """Raised by the stubbed `prepare`: the input passed every check."""


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """`cli(argv)` → ("accepted", None) or ("refused", stderr), checking the invariants."""
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")

    def accept(*a, **k):
        raise Accepted

    monkeypatch.setattr(study.run, "prepare", accept)
    fake_driver = types.ModuleType("study.driver")
    fake_driver.run_study = lambda *a, **k: pytest.fail("reached the study driver")
    monkeypatch.setitem(sys.modules, "study.driver", fake_driver)
    out = tmp_path / "runs"
    out.mkdir()

    def run(argv: list[str]) -> tuple[str, str | None]:
        try:
            code = main([*argv, "--output-dir", str(out)])
        except Accepted:
            code = None
        err = capsys.readouterr().err.strip()
        assert list(out.iterdir()) == [], "a refused or stubbed start left files behind"
        if code is None:
            return "accepted", None
        assert code == 2, (code, err)
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
        return "refused", err

    return run


# ---- search-space files ----------------------------------------------------------------------

scalars = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30), st.booleans(), st.none(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from([2, 3, 8, 16, 1e-3, 2e-3, 0.0, 1.0, 4.0, True, False]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=4), inner, max_size=2), max_leaves=8)
axis_names = st.one_of(st.sampled_from(list(AXES)), st.text(max_size=6), st.integers(0, 9))
spaces = st.one_of(st.dictionaries(axis_names, st.lists(scalars, max_size=4), max_size=5),
                   st.dictionaries(axis_names, values, max_size=5), values)


def _render(data, fmt: str) -> bytes:
    if fmt == "json":
        return json.dumps(data, default=str).encode()
    return yaml.safe_dump(data, allow_unicode=True).encode()


@FUZZ
@given(data=spaces, fmt=st.sampled_from(["yaml", "json"]),
       damage=st.one_of(st.none(), st.tuples(st.integers(0, 200), st.binary(max_size=6))))
def test_generated_search_space_files_never_crash(cli, tmp_path, data, fmt, damage):
    try:
        text = _render(data, fmt)
    except (ValueError, TypeError, yaml.YAMLError):  # e.g. keys JSON cannot hold
        return
    if damage is not None:  # overwrite a few bytes somewhere: broken syntax, bad UTF-8, ...
        at, junk = damage
        text = text[:at] + junk + text[at + len(junk):]
    path = tmp_path / f"space.{fmt}"
    path.write_bytes(text)
    outcome, err = cli([*BASE, "--space", str(path)])
    if outcome == "refused":
        assert "space" in err or "--space" in err or "search" in err, err


@FUZZ
@given(st.sampled_from([
    "depth: [2, 3]\n", "lr: [0.0005, 0.002]\n", "lr: [0.001, 0.004]\nstyle: [false, true]\n",
    '{"width": [8, 16]}', "depth: [2]\nwidth: [8]\nlr: [0.001, 0.001]\n"]))
def test_valid_search_space_files_are_accepted(cli, tmp_path, text):
    path = tmp_path / ("space.json" if text.startswith("{") else "space.yaml")
    path.write_text(text)
    assert cli([*BASE, "--space", str(path)]) == ("accepted", None)


# ---- command-line values ---------------------------------------------------------------------

INT_OPTIONS = ["--num-trials", "--epochs", "--seed", "--confirm-seeds", "--workers-per-trial",
               "--trials-per-gpu", "--gpus"]
TEXT_OPTIONS = ["--name", "--preset", "--dataset", "--data-dir", "--storage", "--storage-path",
                "--address", "--clip-model", "--space", "--output-dir"]
numbers = st.one_of(st.integers(-(2**70), 2**70).map(str), st.sampled_from(
    ["0", "1", "-1", "2", "1e3", "0x10", "1_000", " 3", "３", "", "nan", "9" * 5000]))
texts = st.one_of(
    st.text(alphabet=string.printable, max_size=20),
    st.text(max_size=12),  # any Unicode, NUL and surrogates included
    st.sampled_from(["..", ".", "/", "-x", "a/b", "sqlite://", "s3://", "postgresql://u:p@h/d",
                     "http://", "127.0.0.1:1", "/dev/zero", "~", "x" * 300, "smoke", "digits"]))


@FUZZ
@given(st.lists(st.one_of(st.tuples(st.sampled_from(INT_OPTIONS), numbers),
                          st.tuples(st.sampled_from(TEXT_OPTIONS), texts)), max_size=4))
def test_generated_command_line_values_never_crash(cli, options):
    argv = list(BASE)
    for option, value in options:
        argv.append(f"{option}={value}")  # '=' keeps a value like '-1' or '' attached
    outcome, _ = cli(argv)
    final = dict(options)  # argparse keeps an option's last value
    for option in ("--seed", "--num-trials"):
        value = final.get(option, "")
        if value.isascii() and value.lstrip("-").isdigit() and len(value) < 50 and \
                not 0 <= int(value) < 2**31:
            assert outcome == "refused", (option, value)  # out of range is never accepted


def test_the_fuzzer_reaches_both_outcomes(cli, tmp_path):
    """The property tests are only as good as their generator: make sure a valid command line
    is accepted by the same harness (so 'accepted' is reachable) and a bad one refused."""
    assert cli(BASE) == ("accepted", None)
    assert cli([*BASE, "--seed=-5"])[0] == "refused"
    assert Path(tmp_path / "runs").is_dir()
