"""CLIP scores of generated 28×28 digits, from an open_clip model.

    scorer = ClipScorer.load(ClipConfig())                           # ViT-B-32 / openai
    scorer = ClipScorer.load(ClipConfig(checkpoint="clip.safetensors"))  # local weights, offline
    out = scorer.score(images, labels)  # clip_score, clip_prob, clip_pred (N,), clip_probs (N, 10)

The text side is a zero-shot classifier built once at load: every digit is written as a word
("three") and a numeral ("3") in several prompt templates; the prompt embeddings are
L2-normalised, averaged per class and re-normalised (CLIP's prompt ensembling). Images are
preprocessed as batched tensors the way open_clip's own PIL eval transform does it (resize with
the model's interpolation, center crop, the model's mean/std), without a PIL round trip.

Any failure to load becomes a one-line ``ClipLoadError`` that names the model, tag or file and the
fix (``--clip-checkpoint`` or ``--no-clip``). Weights that are not cached are fetched only when
their host answers within a few seconds: offline, huggingface_hub would retry for ~45 s first.
OpenAI weights loaded from a file need the model's QuickGELU variant, e.g. ``ViT-B-32-quickgelu``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F

from trainables.errors import squeeze

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_TEMPLATES = (
    'a photo of the number: "{}".',
    "a handwritten digit {}.",
    "the digit {}.",
    "a black and white image of the number {}.",
    "a blurry photo of the handwritten number {}.",
)
FIX = "point --clip-checkpoint at a local weights file, or pass --no-clip"
PROBE_TIMEOUT_S = 3.0  # how long an unreachable weights host may take to say so


class ClipLoadError(ValueError):
    """CLIP could not be loaded; the message is one line naming the model/tag/file and the fix."""


@dataclass(frozen=True)
class ClipConfig:
    model: str = "ViT-B-32"  # open_clip model name, or a path to an open_clip model-config JSON
    pretrained: str | None = "openai"  # open_clip pretrained tag (ignored when checkpoint is set)
    checkpoint: str | None = None  # local weights file; takes precedence over `pretrained`
    invert: bool = False  # feed black-on-white digits instead of white-on-black
    templates: tuple[str, ...] = DEFAULT_TEMPLATES  # prompt templates, each with one "{}"

    def __post_init__(self):
        # A list from a JSON round trip would make the frozen config unhashable.
        object.__setattr__(self, "templates", tuple(self.templates))
        if not self.templates or any(t.count("{}") != 1 for t in self.templates):
            raise ValueError(f"templates={self.templates!r}: give at least one, each with "
                             f"exactly one '{{}}'")
        if self.pretrained is None and self.checkpoint is None:
            # Random CLIP weights would give scores that look like numbers but mean nothing.
            raise ClipLoadError(f"CLIP {self.model!r} has neither a pretrained tag nor a "
                                f"checkpoint; {FIX}")

    def to_dict(self) -> dict:
        return asdict(self)


class ClipScorer:
    """An open_clip model in eval mode with its digit-class text embeddings."""

    def __init__(self, model, tokenizer, cfg: ClipConfig, description: str, device="cpu"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.description = description  # e.g. "ViT-B-32/openai" or "tiny.json @ /path/ckpt.pt"
        self.device = torch.device(device)
        pp = model.visual.preprocess_cfg  # the eval transform's settings, as open_clip set them
        size = pp["size"]
        self.image_size = (size, size) if isinstance(size, int) else tuple(size[-2:])
        # open_clip resizes bilinearly only when asked to; 'random' and the rest mean bicubic.
        self.interpolation = "bilinear" if pp["interpolation"] == "bilinear" else "bicubic"
        self.resize_mode = pp["resize_mode"]
        self.fill = pp.get("fill_color", 0) / 255
        self.mean = torch.tensor(pp["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(pp["std"], dtype=torch.float32).view(1, 3, 1, 1)
        self.logit_scale = float(model.logit_scale.detach().exp())
        self.text_embeddings = self.class_text_embeddings(cfg.templates)  # (10, D), CPU

    @classmethod
    def load(cls, cfg: ClipConfig, device="cpu") -> ClipScorer:
        """Build the scorer, or raise a one-line ClipLoadError saying what to fix."""
        import open_clip  # slow (~2 s); kept off the training start-up path

        name, shown = _model_name(open_clip, cfg.model)
        kwargs, offline = {}, False
        if cfg.checkpoint is not None:
            path = Path(cfg.checkpoint).expanduser()
            if not path.is_file():
                raise ClipLoadError(f"CLIP checkpoint file {cfg.checkpoint!r} not found; {FIX}")
            weights, description = str(path), f"{shown} @ {path}"
        else:
            weights, description = cfg.pretrained, f"{shown}/{cfg.pretrained}"
            pcfg = _tag_cfg(open_clip, name, weights)
            if _weights_cached(pcfg):
                offline = _hf_source(pcfg) is not None
            else:
                _check_reachable(pcfg, description)
            # open_clip 3 only warns when a tag was trained with QuickGELU (all OpenAI tags) and
            # the model config is not; running plain GELU on those weights degrades the scores.
            kwargs["force_quick_gelu"] = bool(pcfg.get("quick_gelu", False))
        try:
            with _hub_offline() if offline else nullcontext():
                model, _, _ = open_clip.create_model_and_transforms(
                    name, pretrained=weights, device=device, **kwargs)
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as e:  # open_clip raises anything from RuntimeError to UnpicklingError
            raise ClipLoadError(f"could not load CLIP {shown} from {weights!r} "
                                f"({type(e).__name__}: {squeeze(e)}); {FIX}") from e
        return cls(model, tokenizer, cfg, description, device)

    @torch.no_grad()
    def class_text_embeddings(self, templates: tuple[str, ...]) -> torch.Tensor:
        """(10, D) unit vectors: each class's prompt embeddings averaged over templates × names."""
        prompts = [t.format(n) for c, word in enumerate(DIGIT_WORDS)
                   for t in templates for n in (word, str(c))]  # class-major
        tokens = self.tokenizer(prompts).to(self.device)
        emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1)  # (10 * P, D)
        emb = emb.view(10, -1, emb.shape[-1]).mean(1)  # (10, D)
        return F.normalize(emb, dim=-1).cpu()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1|3, H, H) in [-1, 1] -> (N, 3, S, S) normalised model input, on images' device."""
        if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[2] != images.shape[3]:
            raise ValueError(f"images of shape {tuple(images.shape)}: expected square "
                             f"(N, 1 or 3, H, H) in [-1, 1]")
        x = ((images.float() + 1) / 2).clamp(0, 1)  # what ToTensor gives for the PIL image
        if self.cfg.invert:
            x = 1 - x
        x = x.expand(-1, 3, -1, -1)  # grey -> RGB
        h, w = self.image_size
        # open_clip's eval transform on a square image: 'shortest' scales it to cover (h, w) and
        # center-crops, 'longest' scales it to fit inside and pads, 'squash' scales to (h, w).
        side = max(h, w) if self.resize_mode == "shortest" else min(h, w)
        size = (h, w) if self.resize_mode == "squash" else (side, side)
        # antialias=True selects PIL's bicubic kernel (a = -0.5, not -0.75); the clamp mimics
        # PIL's uint8 output, which cuts the bicubic overshoot at the digit's edges.
        x = F.interpolate(x, size=size, mode=self.interpolation, align_corners=False,
                          antialias=True).clamp(0, 1)
        x = _center_crop_or_pad(x, (h, w), self.fill)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)  # (N, 3, h, w)

    @torch.no_grad()
    def score(self, images: torch.Tensor, labels: torch.Tensor,
              batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Per-image CLIP score, zero-shot probability and prediction of the target digit."""
        labels = torch.as_tensor(labels).long().cpu()
        if labels.shape != (len(images),):
            raise ValueError(f"labels of shape {tuple(labels.shape)} do not match "
                             f"{len(images)} images")
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) <= 9:
            raise ValueError(f"labels in [{int(labels.min())}, {int(labels.max())}] "
                             f"must lie in 0..9")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be positive")
        self.model.eval()
        text = self.text_embeddings.to(self.device)  # (10, D)
        chunks = images.split(batch_size) if len(images) else ()  # the ViT cannot take 0 images
        cos = [F.normalize(self.model.encode_image(self.preprocess(chunk.to(self.device))).float(),
                           dim=-1) @ text.T for chunk in chunks]
        cos = torch.cat(cos).cpu() if cos else torch.zeros(0, 10)  # (N, 10)
        probs = (self.logit_scale * cos).softmax(dim=-1)  # (N, 10)
        target = labels[:, None]
        return {
            "clip_score": 100 * cos.gather(1, target).squeeze(1).clamp(min=0),
            "clip_prob": probs.gather(1, target).squeeze(1),
            "clip_pred": probs.argmax(dim=1),
            "clip_probs": probs,
        }


def _center_crop_or_pad(x: torch.Tensor, size: tuple[int, int], fill: float) -> torch.Tensor:
    """Center crop (torchvision's rounding) or pad with `fill` to (h, w)."""
    h, w = size
    ph, pw = max(h - x.shape[-2], 0), max(w - x.shape[-1], 0)
    if ph or pw:
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=fill)
    top, left = round((x.shape[-2] - h) / 2), round((x.shape[-1] - w) / 2)
    return x[..., top:top + h, left:left + w]


def _model_name(open_clip, model: str) -> tuple[str, str]:
    """open_clip's name for `model` (a config JSON is registered under its stem), and a display
    name."""
    if model.endswith(".json"):
        path = Path(model).expanduser()
        try:
            model_cfg = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ClipLoadError(f"CLIP model config {model!r} is unreadable "
                                f"({type(e).__name__}: {squeeze(e, 120)}); {FIX}") from e
        # open_clip skips a config without these keys silently, and one that is not JSON makes
        # every later add_model_config raise, so both are checked before registering.
        needed = ("embed_dim", "vision_cfg", "text_cfg")
        if not isinstance(model_cfg, dict) or not all(k in model_cfg for k in needed):
            raise ClipLoadError(f"CLIP model config {model!r} lacks one of {', '.join(needed)}; "
                                f"{FIX}")
        open_clip.add_model_config(path)
        return path.stem, path.name
    name = model.replace("/", "-")  # open_clip reads "ViT-B/32" as "ViT-B-32"
    if name not in open_clip.list_models():
        raise ClipLoadError(f"unknown CLIP model {model!r}: not in open_clip.list_models() nor a "
                            f"model-config .json; fix the name, or pass --no-clip")
    return name, model


def _tag_cfg(open_clip, name: str, tag: str) -> dict:
    """open_clip's download entry for (`name`, `tag`); an unknown tag fails before any network."""
    pcfg = open_clip.get_pretrained_cfg(name, tag)
    if not pcfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        known = squeeze(", ".join(tags) or "none", 160)
        raise ClipLoadError(f"unknown pretrained tag {tag!r} for CLIP {name} (known: {known}); "
                            f"{FIX}")
    return pcfg


def _hf_source(pcfg: dict) -> tuple[str, str] | None:
    """(repo id, file name) when open_clip would fetch these weights from the HF hub."""
    # Without huggingface_hub installed, open_clip falls back to the tag's URL.
    if not pcfg.get("hf_hub") or importlib.util.find_spec("huggingface_hub") is None:
        return None
    from open_clip.constants import HF_WEIGHTS_NAME

    repo, filename = os.path.split(pcfg["hf_hub"])
    return repo, filename or HF_WEIGHTS_NAME


def _weights_cached(pcfg: dict) -> bool:
    """Whether open_clip will find the tag's weights on disk without a download."""
    if "file" in pcfg:
        return True
    hf = _hf_source(pcfg)
    if hf is None:
        url = pcfg.get("url", "")
        return bool(url) and os.path.isfile(
            os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url)))
    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = hf
    # open_clip prefers a .safetensors twin of the named file, so either counts as cached.
    twins = {filename, os.path.splitext(filename)[0] + ".safetensors"}
    if filename == HF_WEIGHTS_NAME:
        twins.add(HF_SAFE_WEIGHTS_NAME)
    return any(isinstance(try_to_load_from_cache(repo, f), str) for f in twins)


def _check_reachable(pcfg: dict, what: str) -> None:
    """Fail fast when the weights' host is unreachable, instead of open_clip's ~45 s of retries."""
    hf = _hf_source(pcfg)
    if hf is not None:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise ClipLoadError(f"CLIP weights {what} are not cached and HF_HUB_OFFLINE is set; "
                                f"{FIX}")
        url = f"{constants.ENDPOINT}/{hf[0]}"
    else:
        url = pcfg.get("url", "")
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 443), PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise ClipLoadError(f"CLIP weights {what} are not cached and {parsed.hostname} is "
                            f"unreachable ({type(e).__name__}: {squeeze(e, 80)}); {FIX}") from e


@contextmanager
def _hub_offline():
    """huggingface_hub's offline switch while cached weights load: otherwise every cached file
    costs an update check that, with no network, is retried for ~20 s before the cache is used.
    It is a module global, read on each request, so it is set only for the load."""
    from huggingface_hub import constants

    before, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
