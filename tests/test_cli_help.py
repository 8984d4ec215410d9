"""`python study/run.py --help` read against what the options do: every option explains itself,
the defaults the help names are the ones `build_spec` applies, and the study directory lands
where --output-dir's help says (<output-dir>/<name>). That every run prints the study
directory's path first is checked on the real smoke study (tests/test_console.py)."""

import re
from pathlib import Path

import pytest

from study.errors import UsageError
from study.presets import PRESETS, sampler_kind
from study.run import build_spec, parse_args
from study.spec import StudySpec
from trainables.config import TrainConfig

SMOKE = ["--preset", "smoke", "--dataset", "digits", "--no-clip"]


@pytest.fixture
def help_lines(capsys) -> list[str]:
    with pytest.raises(SystemExit) as e:
        parse_args(["--help"])
    assert e.value.code == 0
    return capsys.readouterr().out.splitlines()


def _help_of(lines: list[str], option: str) -> str:
    """The help text of `option`, its wrapped lines joined."""
    start = next(i for i, line in enumerate(lines)
                 if re.match(rf"  {option}( |,|$)", line))
    # "  --opt METAVAR   help ..." or "  --opt METAVAR" and the help on the lines below
    text = re.split(r"\s{2,}", lines[start].strip(), maxsplit=1)[1:]
    for line in lines[start + 1:]:
        if not line.startswith(" " * 4):  # the next option ("  --x") or group
            break
        text.append(line.strip())
    return " ".join(text)


def test_every_option_has_a_help_text(help_lines):
    usage = " ".join(help_lines[:help_lines.index("")])
    options = sorted(set(re.findall(r"\[(--[a-z-]+)", usage)))
    assert len(options) >= 20
    for option in options:
        assert len(_help_of(help_lines, option).split()) >= 3, option


def test_the_study_directory_is_output_dir_slash_name(help_lines, tmp_path):
    assert _help_of(help_lines, "--output-dir").startswith(
        "the folder the study directory <name>/ is made in (default: runs, so runs/<name>/)")
    out = tmp_path / "out"
    spec = build_spec(parse_args([*SMOKE, "--name", "x", "--output-dir", str(out)]))
    assert Path(spec.study_dir) == (out / "x").resolve()
    assert "default: sqlite:///<study directory>/optuna.db" in _help_of(help_lines, "--storage")
    assert spec.storage == f"sqlite:///{(out / 'x' / 'optuna.db').resolve()}"
    # "a local --storage-path takes its place"
    shared = tmp_path / "shared"
    shared.mkdir()
    spec = build_spec(parse_args([*SMOKE, "--name", "x", "--output-dir", str(out),
                                  "--storage-path", str(shared)]))
    assert Path(spec.study_dir) == (shared / "x").resolve()
    assert not out.exists()  # checking options writes nothing


def test_the_defaults_the_help_names_are_applied(help_lines, tmp_path):
    spec = build_spec(parse_args([*SMOKE, "--output-dir", str(tmp_path)]))
    smoke = PRESETS["smoke"]
    assert re.fullmatch(r"smoke-\d{8}-\d{6}", spec.name)  # <preset>-<date>-<time>
    assert "default: <preset>-<date>-<time>" in _help_of(help_lines, "--name")
    for option, field in (("--confirm-seeds", "confirm_seeds"),
                          ("--workers-per-trial", "workers_per_trial"),
                          ("--num-trials", "num_trials")):
        text = _help_of(help_lines, option)
        for name, preset in PRESETS.items():
            assert f"{name} {getattr(preset, field)}" in text, (option, name)
        assert getattr(spec, field) == getattr(smoke, field)
    assert spec.base.train.epochs == smoke.epochs
    for name, preset in PRESETS.items():
        assert f"{name} {preset.epochs}" in _help_of(help_lines, "--epochs"), name
    patience = TrainConfig.early_stop_patience
    assert f"after {patience} epochs without a better validation loss" in \
        _help_of(help_lines, "--epochs")
    assert spec.base.train.early_stop_patience == patience
    assert "(default 0)" in _help_of(help_lines, "--seed")
    assert spec.seed == spec.base.train.seed == 0
    seeded = build_spec(parse_args([*SMOKE, "--output-dir", str(tmp_path), "--seed", "7"]))
    assert seeded.seed == seeded.base.train.seed == 7  # the sampler's and the trials' seed
    assert "default 2:" in _help_of(help_lines, "--trials-per-gpu") and spec.trials_per_gpu == 2
    # --resume: only what StudySpec lets a resumed study change may differ
    assert set(StudySpec.RESUMABLE) == {"num_trials", "address"}
    assert "only --num-trials and --address may differ" in _help_of(help_lines, "--resume")


def test_asha_follows_the_preset_unless_asked(help_lines):
    text = _help_of(help_lines, "--asha")
    for name, preset in PRESETS.items():
        assert f"{name} {'on' if preset.asha else 'off'}" in text
    cpu = ["--preset", "cpu", "--dataset", "digits", "--no-clip"]
    assert build_spec(parse_args(cpu)).asha is PRESETS["cpu"].asha is False
    assert build_spec(parse_args([*cpu, "--asha"])).asha is True
    assert build_spec(parse_args([*SMOKE, "--no-asha"])).asha is False
    # the sampler is the preset's, recorded in the spec (study.json) the driver reads
    assert build_spec(parse_args(cpu)).sampler == PRESETS["cpu"].sampler


def test_sampler_follows_the_preset_unless_asked(help_lines):
    text = _help_of(help_lines, "--sampler")
    for name, preset in PRESETS.items():
        assert f"{name} {sampler_kind(preset.sampler)}" in text
    cpu = ["--preset", "cpu", "--dataset", "digits", "--no-clip"]
    tpe = build_spec(parse_args([*cpu, "--sampler", "tpe"])).sampler
    # another kind keeps the preset's start-up trials; the preset's own kind is the preset's
    assert (tpe.kind, tpe.n_startup_trials) == ("tpe", PRESETS["cpu"].sampler.n_startup_trials)
    assert build_spec(parse_args([*cpu, "--sampler", "gp"])).sampler == PRESETS["cpu"].sampler
    assert build_spec(parse_args([*SMOKE, "--sampler", "random"])).sampler.kind == "random"
    with pytest.raises(UsageError, match="--sampler"):
        parse_args([*cpu, "--sampler", "bayes"])
