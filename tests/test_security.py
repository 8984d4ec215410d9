"""What the project loads and executes: no pickle besides weights-only checkpoints, no eval/exec,
YAML through the safe loader, and malicious checkpoints refused without running their payload.
(Network exposure: local Ray's bind addresses and token in test_faults.py, cluster.yaml's
ports and the cluster's token in test_cluster.py.)"""

import ast
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
