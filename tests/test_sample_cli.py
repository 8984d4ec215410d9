"""`python -m trainables.sample`: digits on command from a trained trial, and every bad input
as one line on stderr with exit status 2."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from trainables.config import TrialConfig
from trainables.data import Digits, Splits
from trainables.diffusion import Schedule
from trainables.sample import generate, main, parse_digits, to_uint8
from trainables.train_loop import CHECKPOINT_FILE, FitResult, LocalSession, fit

TINY = {"data": {"dataset": "digits"}, "model": {"depth": 1, "width": 8},
        "diffusion": {"timesteps": 20},
        "train": {"batch_size": 64, "epochs": 1, "val_size": 64},
        "sample": {"guidance": 2.0, "steps": 25}}  # 25 > T: the default is capped at T


def _train(root, splits, **model) -> FitResult:
    """A tiny model trained for 2 steps on 128 digits into `root`/checkpoint.pt."""
    cfg = TrialConfig.from_dict({**TINY, "model": {**TINY["model"], **model}})
    few = Splits(Digits(splits.train.images[:128], splits.train.labels[:128]),
                 Digits(splits.val.images[:64], splits.val.labels[:64]), "digits (first)", "few")
    return fit(cfg, LocalSession(root, verbose=False), few)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_splits) -> tuple:
    """(trial directory with checkpoint.pt and no outcome.json, the FitResult in memory)."""
    root = tmp_path_factory.mktemp("trial")
    return root, _train(root, digits_splits)


@pytest.fixture(scope="module")
def trial(trained):
    return trained[0]


@pytest.fixture(scope="module")
def style_trial(tmp_path_factory, digits_splits):
    root = tmp_path_factory.mktemp("style_trial")
    _train(root, digits_splits, style_dim=2)
    return root


def run(argv, capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the CLI called in-process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse: --help, and its own usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def sample_npz(argv, capsys, path):
    code, out, err = run([*argv, "--npz", path], capsys)
    assert code == 0, err
    with np.load(path, allow_pickle=False) as f:
        return (f["images"], f["labels"], json.loads(str(f["config"])),
                json.loads(str(f["generation"])), out)


def test_png_and_npz(trial, tmp_path, capsys):
    png, npz = tmp_path / "out" / "digits.png", tmp_path / "out" / "digits.npz"
    code, out, err = run([trial, "--digits", "1,4,7", "-n", "3", "--steps", "5",
                          "--out", png, "--npz", npz], capsys)
    assert code == 0 and err == "" and "9 images" in out
    with np.load(npz, allow_pickle=False) as f:
        images, labels = f["images"], f["labels"]
        config = json.loads(str(f["config"]))
    assert images.shape == (9, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [1, 1, 1, 4, 4, 4, 7, 7, 7]
    assert images.std() > 0  # not a blank canvas
    assert TrialConfig.from_dict(config).sample.steps == 5  # the settings used, loadable
    with Image.open(png) as im:  # a real PNG, 3 rows (digits) × 3 columns (samples)
        assert im.format == "PNG" and 0.7 < im.height / im.width < 1.6


def test_draws_what_generate_draws_from_the_trained_ema(trained, tmp_path, capsys):
    """The CLI's images are `generate` on the EMA weights `fit` returned, with the checkpoint's
    sampling settings (w = 2, ddim, steps capped at T = 20, η = 1, its precision) and seed 0;
    the raw (non-EMA) weights draw other images."""
    trial, result = trained
    images, labels, _, _, _ = sample_npz([trial, "--digits", "2,5", "-n", "3"], capsys,
                                         tmp_path / "s.npz")
    sched = Schedule.from_config(TrialConfig.from_dict(TINY).diffusion)
    for weights, same in ((result.ema, True), (result.model, False)):
        expected, expected_labels = generate(weights, sched, [2, 5], 3, guidance=2.0,
                                             sampler="ddim", steps=20, eta=1.0, seed=0,
                                             amp=None)
        assert np.array_equal(images, to_uint8(expected)) == same
    assert labels.tolist() == expected_labels.tolist()


@pytest.mark.parametrize("digits, expected", [
    ("0-9", list(range(10))), ("3", [3]), ("1,4,7", [1, 4, 7]), ("0-2,7", [0, 1, 2, 7]),
])
def test_digits_forms(trial, tmp_path, capsys, digits, expected):
    assert parse_digits(digits) == expected
    _, labels, _, gen, _ = sample_npz([trial, "--digits", digits, "-n", "2", "--steps", "2"],
                                      capsys, tmp_path / "d.npz")
    assert labels.tolist() == np.repeat(expected, 2).tolist() and gen["digits"] == expected


def test_same_seed_same_images(trial, tmp_path, capsys):
    args = [trial, "--digits", "0-3", "-n", "2", "--steps", "4"]
    a = sample_npz([*args, "--seed", "7"], capsys, tmp_path / "a.npz")[0]
    b = sample_npz([*args, "--seed", "7"], capsys, tmp_path / "b.npz")[0]
    c = sample_npz([*args, "--seed", "8"], capsys, tmp_path / "c.npz")[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_default_guidance_is_the_trials_tuned_w(trial, tmp_path, capsys):
    args = ["--digits", "5", "-n", "2", "--steps", "3"]
    # no outcome.json: the checkpoint config's w, and the default steps capped at T = 20
    _, _, cfg, _, out = sample_npz([trial, *args[:-2]], capsys, tmp_path / "cfg.npz")
    assert cfg["sample"]["guidance"] == 2.0 and cfg["sample"]["steps"] == 20
    assert "the checkpoint config's" in out
    # a study trial directory records its tuned w in outcome.json: that one is the default
    tuned = tmp_path / "tuned"
    shutil.copytree(trial, tuned)
    (tuned / "outcome.json").write_text(json.dumps({"metrics": {"guidance": 0.5}}))
    images, _, cfg, _, out = sample_npz([tuned, *args], capsys, tmp_path / "tuned.npz")
    assert cfg["sample"]["guidance"] == 0.5 and "outcome.json" in out
    explicit = sample_npz([trial, *args, "--guidance", "0.5"], capsys, tmp_path / "w.npz")[0]
    assert np.array_equal(images, explicit)  # the same w and seed: the same images
    # the checkpoint file inside that trial directory finds it too; --guidance wins over it
    _, _, cfg, _, _ = sample_npz([tuned / CHECKPOINT_FILE, *args], capsys, tmp_path / "f.npz")
    assert cfg["sample"]["guidance"] == 0.5
    _, _, cfg, _, _ = sample_npz([tuned, *args, "--guidance", "3"], capsys, tmp_path / "g.npz")
    assert cfg["sample"]["guidance"] == 3.0


def test_style_on_a_style_model(style_trial, tmp_path, capsys):
    args = [style_trial, "--digits", "1", "-n", "2", "--steps", "3"]
    lean, _, _, gen, out = sample_npz([*args, "--style", "slant=2,thickness=-1"], capsys,
                                      tmp_path / "s.npz")
    assert gen["style"] == {"slant": 2.0, "thickness": -1.0} and "style" in out
    other = sample_npz([*args, "--style", "slant=-2"], capsys, tmp_path / "t.npz")[0]
    assert not np.array_equal(lean, other)  # the style reaches the model
    sample_npz(args, capsys, tmp_path / "any.npz")  # without --style: any style


def test_help_explains_every_option(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for option in ("TRIAL_DIR_OR_CHECKPOINT", "--digits", "-n", "--guidance", "--sampler",
                   "--steps", "--seed", "--style", "--out", "--npz", "--device", "outcome.json"):
        assert option in out, option
    text = " ".join(out.split())  # wrapped lines joined
    assert "Default: the trial's tuned w, from its outcome.json" in text  # as it does (above)
    assert "images (uint8, N x 28 x 28), labels (N,)" in text


def _bad_files(tmp_path, trial):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / CHECKPOINT_FILE).write_bytes(np.random.default_rng(0).bytes(300))
    broken = tmp_path / "broken"
    shutil.copytree(trial, broken)
    (broken / "outcome.json").write_text("{not json")
    return {"text": text, "junk": junk, "empty": tmp_path, "broken": broken}


@pytest.mark.parametrize("argv, match", [
    (["{missing}", "--out", "x.png"], "does not exist"),
    (["{empty}", "--out", "x.png"], "holds no checkpoint.pt"),
    (["{text}", "--out", "x.png"], "not a checkpoint of this project"),
    (["{junk}", "--out", "x.png"], "not a checkpoint of this project"),
    (["{broken}", "--out", "x.png"], "outcome.json is unreadable.*--guidance"),
    (["{trial}", "--digits", "10", "--out", "x.png"], "'10'.*0-9"),
    (["{trial}", "--digits", "a", "--out", "x.png"], "--digits.*0-9"),
    (["{trial}", "--digits", "3-1", "--out", "x.png"], "increasing range"),
    (["{trial}", "--digits", "1,1", "--out", "x.png"], "digit 1 twice"),
    (["{trial}", "--style", "slant=1", "--out", "x.png"], "without style conditioning"),
    (["{trial}", "--style", "tilt=1", "--out", "x.png"], "slant, thickness"),
    (["{trial}", "--style", "slant=x", "--out", "x.png"], "'x' is not a number"),
    (["{trial}", "-n", "0", "--out", "x.png"], "'0' is not a positive"),
    (["{trial}", "--steps", "50", "--out", "x.png"], r"steps=50 must be in \[1, T=20\]"),
    (["{trial}", "--guidance", "-1", "--out", "x.png"], "guidance=-1"),
    (["{trial}", "--guidance", "nan", "--out", "x.png"], "finite"),
    (["{trial}"], "nothing to write"),
    (["{trial}", "--out", "x.jpg"], r"\*\.png"),
    (["{trial}", "--npz", "x.txt"], r"\*\.npz"),
    (["{trial}", "--out", "x.png", "--bogus"], "unrecognized arguments: --bogus"),
    (["{trial}", "--out", "x.png", "--device", "gpu"], "--device 'gpu'"),
    (["{trial}", "--out", "{trial}/checkpoint.pt/x.png"], "cannot create the folder"),
])
def test_bad_input_is_one_line(trial, tmp_path, capsys, argv, match):
    files = {"trial": trial, "missing": tmp_path / "nope", **_bad_files(tmp_path, trial)}
    argv = [a.format(**files) for a in argv]
    argv = [str(tmp_path / a) if a.startswith("x.") else a for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(match, err), err
    assert not list(tmp_path.glob("x.*"))  # nothing written


def test_subprocess_exit_status_and_stderr(trial, tmp_path):
    bad = subprocess.run([sys.executable, "-m", "trainables.sample", str(tmp_path / "nope"),
                          "--out", str(tmp_path / "x.png")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr and "does not exist" in bad.stderr


def test_generate_samples_in_bf16_where_asked_or_where_it_pays(trained, monkeypatch):
    """The U-Net's calls run under bf16 autocast with amp=True, in fp32 with amp=False, and as
    trainables/precision.py decides with None (SampleConfig's default); images stay fp32."""
    import torch

    from trainables.precision import native_bf16

    _, result = trained
    sched = Schedule.from_config(TrialConfig.from_dict(TINY).diffusion)
    seen = []
    hook = result.ema.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))

    def dtypes(amp) -> set:
        seen.clear()
        images, _ = generate(result.ema, sched, [1, 7], 2, steps=3, amp=amp)
        assert images.dtype == torch.float32 and images.abs().max() <= 1 + 1e-6
        return set(seen)

    try:
        assert dtypes(True) == {torch.bfloat16} and dtypes(False) == {torch.float32}
        auto = torch.bfloat16 if native_bf16(torch.device("cpu")) else torch.float32
        assert dtypes(None) == {auto}
        monkeypatch.setattr(torch.ops, "mkldnn", object())  # a torch without the check: fp32
        assert dtypes(None) == {torch.float32}
    finally:
        hook.remove()
