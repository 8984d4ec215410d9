"""CLIP scoring with a tiny random open_clip model, loaded the way a user loads local weights.

Pretrained CLIP weights cannot be downloaded here, so the fixture writes a small model-config
JSON, saves a randomly initialised model's state dict and loads both through
``ClipConfig(model=<json>, checkpoint=<file>)``. open_clip's own PIL transform is the reference
for the batched tensor preprocessing.
"""

import time
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import trainables.clip_score as clip_score
from trainables.clip_score import DEFAULT_TEMPLATES, ClipConfig, ClipLoadError, ClipScorer


@pytest.fixture(scope="module")
def tiny(tiny_clip_files):
    import open_clip

    config, checkpoint = tiny_clip_files
    reference, _, pil_preprocess = open_clip.create_model_and_transforms(
        "tiny_clip", pretrained=str(checkpoint))
    cfg = ClipConfig(model=str(config), checkpoint=str(checkpoint))
    return SimpleNamespace(root=config.parent, cfg=cfg, checkpoint=checkpoint,
                           reference=reference.eval(), pil_preprocess=pil_preprocess,
                           scorer=ClipScorer.load(cfg))


def _to_pil(image: torch.Tensor) -> Image.Image:
    """(1, H, W) in [-1, 1] -> the RGB PIL image a user would hand to open_clip."""
    grey = ((image[0] + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(grey, mode="L").convert("RGB")


def test_loads_weights_from_checkpoint(tiny):
    assert str(tiny.checkpoint) in tiny.scorer.description
    assert "tiny_clip.json" in tiny.scorer.description
    loaded, saved = tiny.scorer.model.state_dict(), tiny.reference.state_dict()
    assert loaded.keys() == saved.keys()
    for k in saved:
        torch.testing.assert_close(loaded[k], saved[k], msg=k)
    assert not tiny.scorer.model.training
    assert tiny.scorer.image_size == (48, 48)


def test_preprocess_matches_open_clip_transform(tiny, digits_splits):
    images = digits_splits.val.images[:8]
    ours = tiny.scorer.preprocess(images)
    theirs = torch.stack([tiny.pil_preprocess(_to_pil(im)) for im in images])
    assert ours.shape == theirs.shape == (8, 3, 48, 48)
    diff = (ours - theirs).abs()
    # Measured: mean 0.002, max 0.07, from PIL's uint8 rounding between its two resize passes.
    # torch's plain bicubic (antialias=False, a = -0.75) gives mean 0.010, max 0.20; bilinear
    # 0.016 and 0.40; skipping mean/std 1.4.
    assert diff.mean() < 0.005, diff.mean()
    assert diff.max() < 0.12, diff.max()
    # Normalised with CLIP's mean/std, not left in [0, 1]: the black corner is -mean/std.
    mean, std = tiny.scorer.mean.view(3), tiny.scorer.std.view(3)
    assert ours.min() < -1
    torch.testing.assert_close(ours[:, :, 0, 0], (-mean / std).expand(8, 3))


def test_inversion_flips_background(tiny, digits_splits):
    images = digits_splits.val.images[:4]
    inverted = ClipScorer.load(replace(tiny.cfg, invert=True))
    mean, std = tiny.scorer.mean, tiny.scorer.std
    plain01 = tiny.scorer.preprocess(images) * std + mean
    inverted01 = inverted.preprocess(images) * std + mean
    torch.testing.assert_close(inverted01, 1 - plain01, atol=1e-5, rtol=0)
    assert (inverted01[:, :, 0, 0] > 0.99).all()  # white background


def test_score_outputs(tiny, digits_splits):
    images, labels = digits_splits.val.images[:20], digits_splits.val.labels[:20]
    out = tiny.scorer.score(images, labels, batch_size=7)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "clip_score": (20,), "clip_prob": (20,), "clip_pred": (20,), "clip_probs": (20, 10)}
    assert all(v.device.type == "cpu" for v in out.values())
    assert ((out["clip_score"] >= 0) & (out["clip_score"] <= 100)).all()
    torch.testing.assert_close(out["clip_probs"].sum(1), torch.ones(20))
    torch.testing.assert_close(out["clip_prob"], out["clip_probs"][torch.arange(20), labels])
    assert torch.equal(out["clip_pred"], out["clip_probs"].argmax(1))

    # The same numbers from the reference model and open_clip's PIL transform, unbatched.
    with torch.no_grad():
        pixels = torch.stack([tiny.pil_preprocess(_to_pil(im)) for im in images])
        cos = tiny.reference.encode_image(pixels, normalize=True) @ tiny.scorer.text_embeddings.T
    scale = tiny.reference.logit_scale.exp()
    torch.testing.assert_close(out["clip_score"], 100 * cos[torch.arange(20), labels].clamp(min=0),
                               atol=0.5, rtol=0)
    torch.testing.assert_close(out["clip_probs"], (scale * cos).softmax(1), atol=0.01, rtol=0)

    # Batching changes nothing.
    whole = tiny.scorer.score(images, labels)
    torch.testing.assert_close(whole["clip_probs"], out["clip_probs"])


def test_score_rejects_bad_input(tiny, digits_splits):
    images = digits_splits.val.images[:3]
    with pytest.raises(ValueError, match="10"):
        tiny.scorer.score(images, torch.tensor([0, 1, 10]))
    with pytest.raises(ValueError, match=r"\(2,\)"):
        tiny.scorer.score(images, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(3, 28, 28\)"):
        tiny.scorer.preprocess(images[:, 0])
    empty = tiny.scorer.score(images[:0], torch.zeros(0, dtype=torch.long))
    assert empty["clip_probs"].shape == (0, 10) and empty["clip_score"].shape == (0,)


def test_text_embeddings_are_prompt_ensembles(tiny):
    import open_clip

    emb = tiny.scorer.text_embeddings
    assert emb.shape == (10, 32)  # TINY_CLIP embed_dim
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(10))

    # Class 3 by hand: unit prompt embeddings over templates × {"three", "3"}, averaged.
    prompts = [t.format(n) for t in DEFAULT_TEMPLATES for n in ("three", "3")]
    with torch.no_grad():
        per_prompt = tiny.reference.encode_text(open_clip.get_tokenizer("tiny_clip")(prompts))
    expected = F.normalize(F.normalize(per_prompt, dim=-1).mean(0), dim=0)
    torch.testing.assert_close(emb[3], expected, atol=1e-5, rtol=0)

    single = tiny.scorer.class_text_embeddings(("the digit {}.",))
    assert (single - emb).abs().max() > 1e-3


def test_config_validation_and_round_trip():
    cfg = ClipConfig(model="ViT-B-16", templates=("the digit {}",))
    assert ClipConfig(**cfg.to_dict()) == cfg
    assert ClipConfig(**{**cfg.to_dict(), "templates": ["the digit {}"]}) == cfg  # from JSON
    with pytest.raises(ValueError, match="no placeholder"):
        ClipConfig(templates=("no placeholder",))
    with pytest.raises(ClipLoadError, match="--clip-checkpoint"):
        ClipConfig(pretrained=None)


def _bad_files(root):
    """Named broken inputs, written on demand."""
    corrupt = root / "corrupt.pt"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    wrong = root / "wrong_keys.pt"
    torch.save({"not.a.clip.weight": torch.zeros(3)}, wrong)
    bad_json = root / "broken.json"
    bad_json.write_text("{not json")
    return corrupt, wrong, bad_json


def test_load_errors_are_one_line(tiny):
    corrupt, wrong, bad_json = _bad_files(tiny.root)
    missing = tiny.root / "missing.pt"
    cases = [
        (ClipConfig(model="no-such-model"), "no-such-model"),
        (ClipConfig(model="ViT-B-32", pretrained="not-a-tag"), "not-a-tag"),
        (replace(tiny.cfg, checkpoint=str(missing)), str(missing)),
        (replace(tiny.cfg, checkpoint=str(corrupt)), str(corrupt)),
        (replace(tiny.cfg, checkpoint=str(wrong)), str(wrong)),  # multi-line state-dict error
        (replace(tiny.cfg, model=str(bad_json)), str(bad_json)),
    ]
    for cfg, bad in cases:
        start = time.perf_counter()
        with pytest.raises(ClipLoadError) as info:
            ClipScorer.load(cfg)
        message = str(info.value)
        assert "\n" not in message, message
        assert bad in message, message
        assert "--clip-checkpoint" in message or "--no-clip" in message, message
        assert time.perf_counter() - start < 5, cfg  # detected up front, no network attempt
    # The unparsable config did not poison open_clip's model registry.
    assert ClipScorer.load(tiny.cfg).description == tiny.scorer.description


def test_uncached_weights_fail_fast_offline(monkeypatch):
    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(clip_score, "_weights_cached", lambda pcfg: False)
    monkeypatch.setattr(clip_score.socket, "create_connection", unreachable)
    start = time.perf_counter()
    with pytest.raises(ClipLoadError, match=r"ViT-B-32/openai are not cached.*--clip-checkpoint"):
        ClipScorer.load(ClipConfig(model="ViT-B-32", pretrained="openai"))
    assert time.perf_counter() - start < 5
