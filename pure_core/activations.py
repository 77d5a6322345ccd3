"""Layer activations: forward hooks, reference selection and the activation baseline.

- `capture`: a context manager that records chosen layers' outputs during a forward pass; its hooks are
  always removed, also when the forward fails.
- `collect_references`: one streaming pass over a dataset that keeps, per neuron (channel k of layer L),
  the ``n_ref`` images with the highest *max-pooled* activation ``max_{h,w} A_k(h, w)`` (PURE, Sec. 4), the
  argmax position ``(h*, w*)`` in layer L's map (the crop heatmaps explain that activation), and the
  O'Mahony baseline vector of each selected image: the clamped layer-L activation, mean over space,
  ``(C_L,)``. Memory does not grow with the dataset: the running top-n_ref is merged with every batch and
  baseline vectors are kept only for images that are currently in some neuron's top set.
- `TopReferences`: that running top-n_ref, merged one batch at a time; its state is plain numpy arrays, so
  precompute checkpoints it between chunks and resumes from it.
- `pooled_activations`: the same statistics for a batch in memory (the upload path).

Conventions shared with `pure_core.attribution`: a layer's activation is the output of the named module
(the first element when a module returns a tuple); a module that runs more than once in a forward pass
(a shared activation module) is taken at its first call; outputs of shape ``(B, C)`` or ``(B, C, L)`` are
treated as maps of shape ``(B, C, 1, 1)`` / ``(B, C, 1, L)``. The forward pass stops right after the last
layer needed, so the classifier head is never run. Ranking ties (equal activations) go to the lower
dataset index; NaN ranks last. Hooked forward passes on one model are serialised by a per-model lock, so
threads sharing a model (the app's cached model) do not fire each other's hooks.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pure_core.models import get_layer

__all__ = ["References", "TopReferences", "capture", "collect_references", "pooled_activations"]


# -- forward-pass plumbing (shared with pure_core.attribution) --------------------------------------------
class _StopForward(Exception):
    """Raised by a hook on the last layer needed, to skip the rest of the network."""


_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock held while hooks are attached to ``model`` (one per model object)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def _first_tensor(output) -> torch.Tensor:
    """A module's output tensor (the first element of a tuple/list output)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot read a tensor from a module output of type {type(output).__name__}")


def _replace_first(output, tensor: torch.Tensor):
    """``output`` with its tensor (or its first element) replaced by ``tensor``."""
    if isinstance(output, torch.Tensor):
        return tensor
    return type(output)([tensor, *output[1:]])


def _as_maps(activation: torch.Tensor) -> torch.Tensor:
    """View of a layer output as channel maps ``(B, C, H, W)``: ``(B, C)`` -> ``(B, C, 1, 1)``,
    ``(B, C, L)`` -> ``(B, C, 1, L)``."""
    if activation.ndim == 4:
        return activation
    if activation.ndim == 2:
        return activation[:, :, None, None]
    if activation.ndim == 3:
        return activation[:, :, None, :]
    shape = tuple(activation.shape)
    raise ValueError(f"expected a layer output (B, C), (B, C, L) or (B, C, H, W), not {shape}")


_OutputHook = Callable[[torch.Tensor], "torch.Tensor | None"]


def _run_until(model: nn.Module, inputs: torch.Tensor, layer: str,
               before: dict[str, _OutputHook] | None = None) -> torch.Tensor:
    """Run ``model(inputs)``; return the output of ``layer`` (first call), skipping the rest of the network.

    ``before`` maps names of modules that must run before ``layer`` to functions of their output tensor;
    a function may return a replacement tensor (seen by the rest of the network) or ``None``. Hooks are
    removed before returning. Gradient mode is the caller's.
    """
    target = get_layer(model, layer)
    before = dict(before or {})
    modules = {name: get_layer(model, name) for name in before}
    done: set[str] = set()
    state: dict[str, torch.Tensor] = {}

    def make_hook(name: str, fn: _OutputHook):
        def hook(_module, _args, output):
            if name in done:
                return None
            done.add(name)
            replacement = fn(_first_tensor(output))
            return None if replacement is None else _replace_first(output, replacement)
        return hook

    def stop(_module, _args, output):
        missing = [name for name in modules if name not in done]
        if missing:
            raise ValueError(f"layer(s) {missing} must run before {layer!r} in the forward pass, but did not")
        state["out"] = _first_tensor(output)
        raise _StopForward

    handles = []
    with _model_lock(model):
        try:
            for name, fn in before.items():  # registered first: they also run first when a module is both
                handles.append(modules[name].register_forward_hook(make_hook(name, fn)))
            handles.append(target.register_forward_hook(stop))
            try:
                model(inputs)
            except _StopForward:
                pass
        finally:
            for handle in handles:
                handle.remove()
    if "out" not in state:
        raise ValueError(f"layer {layer!r} did not run in the forward pass of {type(model).__name__}")
    return state["out"]


# -- capture -----------------------------------------------------------------------------------------------
@contextmanager
def capture(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of ``layers`` (module names) during forward passes inside the ``with`` block.

    Yields a dict name -> output tensor, filled by each forward pass of ``model`` (a later pass overwrites
    it; a module that runs twice in one pass keeps its first output). Tensors are stored as the module
    returned them (not detached; an in-place operation that follows the module in the network changes
    them too). Unknown names raise `pure_core.models.UnknownLayerError` before any hook is attached; the
    hooks are removed when the block ends, also on an exception. Other threads' hooked passes on the same
    model wait for the block to end.
    """
    modules = {name: get_layer(model, name) for name in layers}
    outputs: dict[str, torch.Tensor] = {}
    this_pass: set[str] = set()

    def start(_module, _args):
        this_pass.clear()

    def make_hook(name: str):
        def hook(_module, _args, output):
            if name not in this_pass:
                this_pass.add(name)
                outputs[name] = _first_tensor(output)
        return hook

    with _model_lock(model):
        handles = [model.register_forward_pre_hook(start)]
        try:
            for name, module in modules.items():
                handles.append(module.register_forward_hook(make_hook(name)))
            yield outputs
        finally:
            for handle in handles:
                handle.remove()


# -- per-batch statistics ----------------------------------------------------------------------------------
def _statistics(maps: torch.Tensor, channels: torch.Tensor | None = None):
    """Max over space ``(B, n)``, its argmax ``(B, n, 2)`` (h, w; first maximum in row-major order) for
    ``channels`` (all when None), and the clamped mean over space ``(B, C)`` of all channels."""
    maps = maps.to(torch.promote_types(maps.dtype, torch.float32))
    mean = maps.clamp(min=0).mean(dim=(2, 3))
    selected = maps if channels is None else maps.index_select(1, channels)
    width = maps.shape[3]
    values, flat = selected.flatten(2).max(dim=2)
    positions = torch.stack([flat // width, flat % width], dim=-1)
    return values, positions, mean


def pooled_activations(model: nn.Module, inputs: torch.Tensor,
                       layer: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Max-pooled activation, its position and the mean-pooled clamped activation of ``layer``.

    ``inputs (B, 3, H, W)`` on the model's device. Returns ``max (B, C)``, ``positions (B, C, 2)`` int64
    (argmax h, w in the layer's map) and ``mean (B, C)`` = mean over space of ReLU(A) (the O'Mahony
    baseline vector), all on the inputs' device, float32 or wider. The forward pass stops after ``layer``.
    """
    with torch.no_grad():
        maps = _as_maps(_run_until(model, inputs, layer))
        return _statistics(maps)


# -- reference selection -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class References:
    """The top-``n_ref`` reference images of each neuron of one layer (descending max-pooled activation).

    ``neurons (N,)`` channel ids; ``indices (N, n_ref)`` int64 dataset indices; ``max_activations (N, n_ref)``
    float32; ``positions (N, n_ref, 2)`` int64 argmax (h, w) in layer L's map; ``image_indices (U,)`` the
    unique dataset indices referenced (ascending); ``activation_vectors (U, C_L)`` float32, their clamped
    layer-L activation averaged over space (the O'Mahony baseline). ``n_ref`` is the requested number or
    the dataset size, whichever is smaller.
    """

    neurons: np.ndarray
    indices: np.ndarray
    max_activations: np.ndarray
    positions: np.ndarray
    image_indices: np.ndarray
    activation_vectors: np.ndarray
    layer: str = ""
    n_images: int = field(default=0)

    @property
    def n_ref(self) -> int:
        return int(self.indices.shape[1])

    def baseline(self, neuron_row: int) -> np.ndarray:
        """Activation vectors ``(n_ref, C_L)`` of the references of ``neurons[neuron_row]``, in rank order."""
        rows = np.searchsorted(self.image_indices, self.indices[neuron_row])
        return self.activation_vectors[rows]


@dataclass
class TopReferences:
    """The running top-``n_ref`` images of each of ``N`` neurons by max-pooled activation.

    State, plain numpy so that it can be checkpointed and passed back to the constructor to resume:
    ``values (N, m)`` max-pooled activations in rank order, ``indices (N, m)`` int64 dataset indices,
    ``positions (N, m, 2)`` int64 argmax (h, w) in the layer's map; ``m`` grows to ``n_ref`` as images come
    in. Equal values rank by the lower dataset index and NaN ranks last (with -inf), so the result depends
    neither on how the images are cut into batches nor on gaps in their indices.
    """

    n_ref: int
    values: np.ndarray
    indices: np.ndarray
    positions: np.ndarray

    @classmethod
    def empty(cls, n_neurons: int, n_ref: int) -> TopReferences:
        """No images seen yet (``m = 0``); ``values`` are float32 or the wider dtype of the batches."""
        return cls(n_ref, np.zeros((n_neurons, 0), np.float32), np.zeros((n_neurons, 0), np.int64),
                   np.zeros((n_neurons, 0, 2), np.int64))

    def update(self, values: np.ndarray, positions: np.ndarray, indices: np.ndarray) -> None:
        """Merge a batch of ``B`` images: ``values (B, N)`` and ``positions (B, N, 2)`` as
        `pooled_activations` returns them (for the ``N`` neurons), ``indices (B,)`` their dataset indices."""
        values = np.asarray(values).T
        all_values = np.concatenate([self.values, values], axis=1)
        all_indices = np.concatenate(
            [self.indices, np.broadcast_to(np.asarray(indices, dtype=np.int64), values.shape)], axis=1)
        all_positions = np.concatenate(
            [self.positions, np.asarray(positions, dtype=np.int64).transpose(1, 0, 2)], axis=1)
        key = np.where(np.isnan(all_values), np.inf, -all_values.astype(np.float64))
        order = np.lexsort((all_indices, key), axis=1)[:, :self.n_ref]
        self.values = np.take_along_axis(all_values, order, 1)
        self.indices = np.take_along_axis(all_indices, order, 1)
        self.positions = np.take_along_axis(all_positions, order[:, :, None], 1)


def _batch_tensor(batch) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(f"a batch must be a tensor (B, 3, H, W) or a tuple (tensor, ...), not {type(batch)}")


def collect_references(model: nn.Module, batches: Iterable[torch.Tensor], layer: str, n_ref: int,
                       neurons: Sequence[int] | None = None, device: str | torch.device = "cpu",
                       progress: bool = False) -> References:
    """Top-``n_ref`` references per channel of ``layer`` by max-pooled activation, in one streaming pass.

    ``batches`` yields tensors ``(B, 3, H, W)`` (or tuples whose first element is one, e.g. a DataLoader
    over an image/label dataset); they are consecutive, so an image's dataset index is its running
    position. ``neurons``: the channels to rank (default: all). Inputs are moved to ``device``; the model
    must already be there and in eval mode. The running top set (`TopReferences`) is merged with each
    batch, so memory is independent of the dataset's size. ``progress`` shows a tqdm bar.
    """
    if int(n_ref) < 1:
        raise ValueError(f"n_ref must be at least 1, got {n_ref}")
    n_ref = int(n_ref)
    get_layer(model, layer)  # fail on an unknown name before reading any data
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"references {layer}", unit="batch")

    channels: torch.Tensor | None = None
    top: TopReferences | None = None
    vectors: dict[int, torch.Tensor] = {}
    n_seen = 0
    with torch.no_grad():
        for batch in batches:
            x = _batch_tensor(batch).to(device)
            if len(x) == 0:
                continue
            maps = _as_maps(_run_until(model, x, layer))
            if top is None:
                channels = _channel_index(neurons, maps.shape[1])
                top = TopReferences.empty(len(channels), n_ref)
            values, positions, mean = (t.cpu() for t in _statistics(maps, channels.to(maps.device)))
            batch_indices = np.arange(n_seen, n_seen + len(x))
            top.update(values.numpy(), positions.numpy(), batch_indices)
            _update_vectors(vectors, top.indices, batch_indices, mean)
            n_seen += len(x)
    if top is None:
        raise ValueError("collect_references got no images (the batches were empty)")
    image_indices = np.asarray(sorted(vectors), dtype=np.int64)
    activation_vectors = torch.stack([vectors[int(i)] for i in image_indices]).float().numpy()
    return References(
        neurons=channels.numpy().astype(np.int64),
        indices=top.indices,
        max_activations=top.values.astype(np.float32),
        positions=top.positions,
        image_indices=image_indices,
        activation_vectors=activation_vectors,
        layer=layer,
        n_images=n_seen,
    )


def _channel_index(neurons: Sequence[int] | None, n_channels: int) -> torch.Tensor:
    if neurons is None:
        return torch.arange(n_channels)
    channels = torch.as_tensor([int(n) for n in neurons], dtype=torch.long)
    bad = [int(n) for n in channels if not 0 <= int(n) < n_channels]
    if bad:
        raise ValueError(f"neurons {bad[:10]} are out of range: the layer has {n_channels} channels")
    return channels


def _update_vectors(vectors: dict[int, torch.Tensor], best_indices: np.ndarray, batch_indices: np.ndarray,
                    mean: torch.Tensor) -> None:
    """Keep baseline vectors for exactly the images in some top set: add the batch's entrants, drop others."""
    current = set(np.unique(best_indices).tolist())
    first = int(batch_indices[0])
    for index in batch_indices.tolist():
        if index in current:
            vectors[index] = mean[index - first].clone()
    for index in [i for i in vectors if i not in current]:
        del vectors[index]
