"""Purified layer export: an analysed layer whose polysemantic channels become virtual channels.

PURE splits channel c of layer L into k virtual neurons, one per circuit: the centroids ``(k, C_lower)`` of
k-means on the circuits of its references (`pure_core.virtual.VirtualNeurons`). `purify` turns that split into
a network: a copy of the model whose layer L is a `PurifiedLayer`. In every forward pass it computes, for each
input and selected channel, the PURE circuit exactly as `pure_core.attribution.pure_attributions` defines it
(Gradient x Activation at the lower layer, started from ReLU(A_c) on every position, summed over space,
L1-normalised), assigns the input to the nearest centroid (Euclidean, `VirtualNeurons.predict`'s rule), and
routes the channel's map into that virtual channel (PURE's hard assignment):

    virtual channel j of channel c = A_c where the input's circuit is nearest to centroid j, 0 elsewhere.

The layer's output is layer L's output with each selected channel rebuilt as the sum of its virtual channels
(``merge(expand(...))``), which is A_c exactly, so the network's outputs are unchanged (``torch.equal``). The
virtual channels pass through a hookable ``nn.Identity`` (``layer.virtual``, ``(B, V, H, W)``, V = sum of the
k): a forward hook reads them, or returns a changed tensor to ablate one circuit of a channel downstream.
The circuits ``(B, n, C_lower)`` and assignments ``(B, n)`` pass through ``layer.circuit`` and
``layer.assignment`` the same way.

The circuit needs the lower layer's output and a graph from it to layer L in the same forward pass, also
when the caller runs under ``torch.no_grad()``: `PurifiedModel` runs the network under ``enable_grad``, with a
forward hook on the lower module (removed after each pass, also on errors) that keeps the lower output (a
leaf when nothing upstream requires grad; the network continues on a copy, so an in-place operation after
the lower layer cannot change it). With grad disabled by the caller, parameters are frozen during the pass
(their flags are restored) and the outputs come back detached; with grad enabled, gradients flow as in the
original network. ``torch.inference_mode()`` is refused (no graph can be built there).

`save_purified` writes one file (format `FORMAT_VERSION`): the model spec, the layer pair, per channel its
centroids and k, the run id, the model fingerprint and the base model's state dict; `load_purified` rebuilds
the purified model from it in one call, with no run store and no hub download.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pure_core.attribution import circuits_from_graph, frozen_parameters
from pure_core.hooks import as_maps, capture, first_tensor, model_lock, replace_first
from pure_core.models import (
    MissingWeightsError,
    ModelSpec,
    Preprocessing,
    build_model,
    get_layer,
    model_fingerprint,
)
from pure_core.registry import load_plugins

__all__ = [
    "EXPORT_FORMAT",
    "FORMAT_VERSION",
    "PurifiedExportError",
    "PurifiedLayer",
    "PurifiedModel",
    "PurifiedPass",
    "load_purified",
    "purified_pass",
    "purify",
    "read_export",
    "save_purified",
    "virtual_activations",
]

EXPORT_FORMAT = "pure-purified-layer"
FORMAT_VERSION = 1


class PurifiedExportError(ValueError):
    """A purified-layer export that cannot be read or does not fit its model (the message says which)."""


# -- the method ----------------------------------------------------------------------------------------------
@dataclass
class _Pass:
    """What one forward of a `PurifiedModel` hands its `PurifiedLayer`: the lower output and how to return."""

    layer: str
    lower_layer: str
    detach: bool
    lower: torch.Tensor | None = None


class PurifiedLayer(nn.Module):
    """Layer L with each selected channel split into its virtual channels (runs inside a `PurifiedModel`).

    ``centroids`` maps a channel c of layer L to its virtual neurons' centroids ``(k_c, C_lower)`` (row j is
    virtual neuron j + 1). Buffers: ``channels (n,)`` in ascending order, ``sizes (n,)`` the k of each,
    ``centroids (V, C_lower)`` float32, channel by channel. Submodules ``circuit``, ``assignment`` and
    ``virtual`` are identities that carry the circuits ``(B, n, C_lower)``, the assignments ``(B, n)``
    (0-based virtual neuron) and the virtual channels ``(B, V, H, W)``, for forward hooks.
    """

    def __init__(self, layer: nn.Module, centroids: Mapping[int, Any]):
        super().__init__()
        channels, arrays = _checked_centroids(centroids)
        self.layer = layer
        self.register_buffer("channels", torch.tensor(channels, dtype=torch.long))
        self.register_buffer("sizes", torch.tensor([len(a) for a in arrays], dtype=torch.long))
        self.register_buffer("centroids", torch.from_numpy(np.concatenate(arrays)).float())
        self.circuit = nn.Identity()
        self.assignment = nn.Identity()
        self.virtual = nn.Identity()
        self._pass: _Pass | None = None

    @property
    def virtual_channels(self) -> list[tuple[int, int]]:
        """Names of the virtual channels, in the order of ``virtual``'s tensor: ``(channel, vn)``, vn 1..k."""
        return [(int(c), vn) for c, k in zip(self.channels.tolist(), self.sizes.tolist(), strict=True)
                for vn in range(1, k + 1)]

    def expanded_channels(self, n_channels: int) -> list[tuple[int, int]]:
        """Names of `expand`'s channels for a layer of ``n_channels``: ``(channel, vn)`` in channel order, a
        selected channel as its vn 1..k, any other channel once as ``(channel, 0)``."""
        k_of = dict(zip(self.channels.tolist(), self.sizes.tolist(), strict=True))
        return [(c, vn) for c in range(n_channels) for vn in (range(1, k_of[c] + 1) if c in k_of else [0])]

    def centroids_of(self, channel: int) -> torch.Tensor:
        """The centroids ``(k, C_lower)`` of ``channel``."""
        row = self.channels.tolist().index(int(channel))
        start = int(self.sizes[:row].sum())
        return self.centroids[start:start + int(self.sizes[row])]

    def assign(self, circuits: torch.Tensor) -> torch.Tensor:
        """``(B, n)`` int64: for each input and selected channel, the nearest centroid (Euclidean, in float64,
        `VirtualNeurons.predict`'s rule) of its circuit ``circuits (B, n, C_lower)``."""
        if circuits.shape[-1] != self.centroids.shape[1]:
            raise ValueError(f"the lower layer has {circuits.shape[-1]} channels, but the centroids have "
                             f"{self.centroids.shape[1]}")
        vectors, centres = circuits.detach().double(), self.centroids.double()
        assignment = torch.empty(vectors.shape[:2], dtype=torch.long, device=vectors.device)
        for row, part in enumerate(self._slices()):
            distances = (vectors[:, row, None, :] - centres[part][None]).square().sum(dim=-1)
            assignment[:, row] = distances.argmin(dim=1)
        return assignment

    def split(self, maps: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
        """Virtual channels ``(B, V, H, W)`` from layer L's maps ``(B, C, H, W)`` and ``assignment (B, n)``:
        virtual channel (c, j) is A_c where the input is assigned to j, 0 elsewhere."""
        owner, vn = self._owner_and_vn(maps.device)
        selected = maps.index_select(1, self.channels[owner])
        chosen = (assignment[:, owner] == vn)[:, :, None, None]
        return torch.where(chosen, selected, torch.zeros((), dtype=maps.dtype, device=maps.device))

    def expand(self, maps: torch.Tensor, virtual: torch.Tensor) -> torch.Tensor:
        """Layer L's output with each selected channel replaced by its virtual channels:
        ``(B, C - n + V, H, W)``, channels named by `expanded_channels`."""
        n_channels = maps.shape[1]
        offsets = np.cumsum([0, *self.sizes.tolist()])
        row_of = {c: row for row, c in enumerate(self.channels.tolist())}
        order = [c if vn == 0 else n_channels + int(offsets[row_of[c]]) + vn - 1
                 for c, vn in self.expanded_channels(n_channels)]
        return torch.cat([maps, virtual], dim=1).index_select(1, torch.tensor(order, device=maps.device))

    def merge(self, expanded: torch.Tensor) -> torch.Tensor:
        """Layer L's maps ``(B, C, H, W)`` from `expand`'s view: each channel the sum of its columns (exact:
        all but one virtual channel of an input are zero)."""
        n_channels = expanded.shape[1] - int(self.sizes.sum()) + len(self.channels)
        target = torch.tensor([c for c, _ in self.expanded_channels(n_channels)], device=expanded.device)
        merged = expanded.new_zeros((expanded.shape[0], n_channels, *expanded.shape[2:]))
        return merged.index_add(1, target, expanded)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        state = self._pass
        if state is None:
            raise RuntimeError("a PurifiedLayer runs inside its PurifiedModel (it needs the lower layer's "
                               "output)")
        output = self.layer(*args, **kwargs)
        upper = first_tensor(output)
        if state.lower is None:
            raise ValueError(f"lower_layer {state.lower_layer!r} must run before layer {state.layer!r} "
                             "in the forward pass, but did not")
        maps = as_maps(upper)
        if int(self.channels.max()) >= maps.shape[1]:
            raise ValueError(f"channels {self.channels.tolist()} are out of range: layer {state.layer!r} "
                             f"has {maps.shape[1]} channels")
        circuits = self.circuit(
            circuits_from_graph(upper, state.lower, self.channels.tolist(), keep_graph=True))
        assignment = self.assignment(self.assign(circuits))
        if state.detach:
            maps = maps.detach()
        virtual = self.virtual(self.split(maps, assignment))
        merged = self.merge(self.expand(maps, virtual)).reshape(upper.shape)
        return replace_first(output, _same_layout(merged, upper))

    def _slices(self) -> list[slice]:
        offsets = np.cumsum([0, *self.sizes.tolist()])
        return [slice(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]

    def _owner_and_vn(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """For each virtual channel, the row of its channel and its 0-based virtual neuron: ``(V,)`` each."""
        sizes = self.sizes.tolist()
        owner = torch.tensor([row for row, k in enumerate(sizes) for _ in range(k)], device=device)
        vn = torch.tensor([j for k in sizes for j in range(k)], device=device)
        return owner, vn


class PurifiedModel(nn.Module):
    """A network whose layer ``layer`` is a `PurifiedLayer` fed by the circuits at ``lower_layer``.

    ``model`` is changed in place (`purify` passes a copy); ``model(x)`` must be called through this
    wrapper. Attributes: ``model``, ``layer``, ``lower_layer``, ``preprocess`` (the inputs' preprocessing
    when known, else None), and the properties `purified_layer`, `channels`, `virtual_channels`.
    """

    def __init__(self, model: nn.Module, layer: str, lower_layer: str, centroids: Mapping[int, Any],
                 preprocess: Preprocessing | None = None):
        super().__init__()
        if layer == lower_layer:
            raise ValueError(f"layer and lower_layer are both {layer!r}; the circuits need an earlier layer")
        lower_module, original = get_layer(model, lower_layer), get_layer(model, layer)
        if isinstance(original, PurifiedLayer):
            raise ValueError(f"layer {layer!r} is purified already")
        model.set_submodule(layer, PurifiedLayer(original, centroids))
        self.model = model
        self.layer, self.lower_layer, self.preprocess = layer, lower_layer, preprocess
        self._lower_path = next(name for name, module in model.named_modules() if module is lower_module)

    @property
    def purified_layer(self) -> PurifiedLayer:
        return self.model.get_submodule(self.layer)

    @property
    def channels(self) -> list[int]:
        """The selected channels of layer L, ascending."""
        return self.purified_layer.channels.tolist()

    @property
    def virtual_channels(self) -> list[tuple[int, int]]:
        """``(channel, vn)`` of each virtual channel, vn 1..k (`PurifiedLayer.virtual_channels`)."""
        return self.purified_layer.virtual_channels

    def base_model(self) -> nn.Module:
        """A copy of the network with layer L's own module back in place of the purified layer."""
        model = copy.deepcopy(self.model)
        model.set_submodule(self.layer, model.get_submodule(self.layer).layer)
        return model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if torch.is_inference_mode_enabled():
            raise RuntimeError("a purified model computes circuits with autograd: call it under "
                               "torch.no_grad(), not torch.inference_mode()")
        keep_graph = torch.is_grad_enabled()
        state = _Pass(self.layer, self.lower_layer, detach=not keep_graph)

        def keep_lower(_module, _args, output):
            if state.lower is not None:  # a module that runs twice: its first output, as attribution does
                return None
            tensor = first_tensor(output)
            state.lower = tensor if tensor.requires_grad else tensor.detach().requires_grad_(True)
            return replace_first(output, state.lower.clone())

        layer = self.purified_layer
        with model_lock(self.model), frozen_parameters(self.model, not keep_graph), torch.enable_grad():
            handle = self.model.get_submodule(self._lower_path).register_forward_hook(keep_lower)
            layer._pass = state
            try:
                outputs = self.model(*args, **kwargs)
            finally:
                handle.remove()
                layer._pass = None
        return outputs if keep_graph else _detached(outputs)


def purify(model: nn.Module, layer: str, lower_layer: str, centroids: Mapping[int, Any], *,
           preprocess: Preprocessing | None = None) -> PurifiedModel:
    """A purified copy of ``model`` (the given model is untouched): channel c of ``layer`` split into the
    virtual neurons ``centroids[c] (k_c, C_lower)`` (circuits at ``lower_layer``; row j is VN j + 1)."""
    for name in (layer, lower_layer):  # unknown names fail before the copy
        get_layer(model, name)
    return PurifiedModel(copy.deepcopy(model), layer, lower_layer, centroids, preprocess)


# -- reading a pass ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PurifiedPass:
    """One forward of a purified model: its ``outputs`` (those of the original network), the ``circuits
    (B, n, C_lower)`` and ``assignment (B, n)`` (0-based virtual neuron) of each selected channel, and the
    virtual channels ``virtual (B, V, H, W)`` named by `PurifiedModel.virtual_channels`."""

    outputs: Any
    circuits: torch.Tensor
    assignment: torch.Tensor
    virtual: torch.Tensor


def purified_pass(purified: PurifiedModel, inputs: torch.Tensor) -> PurifiedPass:
    """Run ``purified(inputs)`` and read its circuits, assignments and virtual channels (detached)."""
    names = {part: f"{purified.layer}.{part}" for part in ("circuit", "assignment", "virtual")}
    with capture(purified.model, list(names.values())) as seen:
        outputs = purified(inputs)
    return PurifiedPass(outputs, *(seen[name].detach() for name in names.values()))


def virtual_activations(purified: PurifiedModel, inputs: torch.Tensor) -> torch.Tensor:
    """The virtual channels ``(B, V, H, W)`` of ``inputs`` (`PurifiedModel.virtual_channels` names them)."""
    return purified_pass(purified, inputs).virtual


# -- the export ----------------------------------------------------------------------------------------------
def save_purified(path: str | os.PathLike, purified: PurifiedModel, spec: ModelSpec, *,
                  run_id: str | None = None, metrics: Mapping[str, Any] | None = None) -> Path:
    """Write ``purified`` to one file (`load_purified` reads it): format version, ``spec``, layer pair, per
    channel its centroids and k, ``run_id``, the base model's fingerprint and state dict, the preprocessing,
    and ``metrics`` (plain numbers and strings, e.g. the selectivity measured on the references)."""
    base = purified.base_model()
    layer = purified.purified_layer
    payload = {
        "format": EXPORT_FORMAT,
        "format_version": FORMAT_VERSION,
        "model": spec.to_dict(),
        "layer": purified.layer,
        "lower_layer": purified.lower_layer,
        "channels": [{"channel": c, "k": len(layer.centroids_of(c)), "centroids": layer.centroids_of(c).cpu()}
                     for c in purified.channels],
        "run_id": run_id,
        "model_fingerprint": model_fingerprint(base),
        "state_dict": {name: tensor.detach().cpu() for name, tensor in base.state_dict().items()},
        "preprocessing": None if purified.preprocess is None else asdict(purified.preprocess),
        "metrics": dict(metrics or {}),
    }
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    partial.replace(path)
    return path


def load_purified(path: str | os.PathLike, device: str | torch.device = "cpu") -> PurifiedModel:
    """The purified model saved at ``path``, on ``device``, in eval mode: built from its model spec (plugins
    loaded, nothing downloaded or trained), given the saved weights (fingerprint checked), and purified.
    `PurifiedExportError` for a missing file, a file that is no export, a newer format or other weights."""
    payload = read_export(path)
    load_plugins()
    loaded = _rebuilt(ModelSpec.from_dict(payload["model"]), payload["state_dict"], device, path)
    if model_fingerprint(loaded.model) != payload["model_fingerprint"]:
        raise PurifiedExportError(f"{path}: the rebuilt model's weights do not match the export's "
                                  "fingerprint")
    saved = payload.get("preprocessing")
    preprocess = Preprocessing(**saved) if saved else loaded.preprocess
    centroids = {int(entry["channel"]): entry["centroids"].numpy() for entry in payload["channels"]}
    purified = PurifiedModel(loaded.model, payload["layer"], payload["lower_layer"], centroids, preprocess)
    return purified.to(device).eval()


def read_export(path: str | os.PathLike) -> dict[str, Any]:
    """The raw contents of a purified-layer export (tensors on the CPU), checked for format and version."""
    path = Path(path)
    if not path.is_file():
        raise PurifiedExportError(f"{path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is "not an export"
        raise PurifiedExportError(f"{path} is not a purified-layer export ({_one_line(error)})") from error
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        raise PurifiedExportError(f"{path} is not a purified-layer export (no {EXPORT_FORMAT!r} marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PurifiedExportError(f"{path} has format version {version}, newer than this pure_core reads "
                                  f"({FORMAT_VERSION}); update pure-explorer")
    return payload


def _rebuilt(spec: ModelSpec, state_dict: Mapping[str, torch.Tensor], device: str | torch.device,
             path: str | os.PathLike):
    """The model of ``spec`` holding ``state_dict``: the bare architecture first (``ModelSpec(name)``, no
    weights file needed, the export carries them), the full spec when the bare one is missing or does not
    fit (a fine-tuned head from a checkpoint)."""
    error: Exception | None = None
    for candidate in dict.fromkeys([ModelSpec(spec.name), spec]):
        try:
            loaded = build_model(candidate, device=device, fetch_missing=False)
            loaded.model.load_state_dict(state_dict)
            return loaded
        except (MissingWeightsError, FileNotFoundError, RuntimeError) as failure:
            error = failure
    raise PurifiedExportError(f"{path}: cannot rebuild model {spec.name!r} with the saved weights "
                              f"({_one_line(error)})") from error


# -- helpers -------------------------------------------------------------------------------------------------
def _checked_centroids(centroids: Mapping[int, Any]) -> tuple[list[int], list[np.ndarray]]:
    """Channels ascending and their centroids as float32 ``(k, C_lower)`` arrays, checked."""
    if not centroids:
        raise ValueError("purify needs at least one channel with its centroids")
    channels = sorted(int(c) for c in centroids)
    if channels[0] < 0:
        raise ValueError(f"channels must be non-negative, got {channels[0]}")
    by_channel = {int(c): v for c, v in centroids.items()}
    arrays = [np.asarray(by_channel[c].cpu() if isinstance(by_channel[c], torch.Tensor) else by_channel[c],
                         dtype=np.float32) for c in channels]
    widths = {a.shape[1] if a.ndim == 2 else None for a in arrays}
    if None in widths or len(widths) != 1 or min(len(a) for a in arrays) < 1:
        shapes = {c: a.shape for c, a in zip(channels, arrays, strict=True)}
        raise ValueError(f"centroids must be (k, C_lower) arrays with k >= 1 and one C_lower; got {shapes}")
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("centroids must be finite")
    return channels, arrays


def _same_layout(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``tensor`` in ``like``'s memory format (channels-last or contiguous): later reductions then sum in
    the same order as in the original network."""
    channels_last = like.ndim == 4 and like.is_contiguous(memory_format=torch.channels_last) \
        and not like.is_contiguous()
    return tensor.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _detached(value: Any) -> Any:
    """Tensors in (nested tuples, lists and dicts of) ``value`` detached."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(_detached(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


def _one_line(error: BaseException | None) -> str:
    return " ".join(str(error).split())[:400]
