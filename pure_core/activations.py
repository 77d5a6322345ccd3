"""Layer activations: forward hooks, reference selection and the activation baseline.

- `capture` (from `pure_core.hooks`, re-exported): records chosen layers' outputs during a forward pass.
- `collect_references`: one streaming pass over a dataset that keeps, per neuron (channel k of layer L),
  the ``n_ref`` images with the highest *max-pooled* activation ``max_{h,w} A_k(h, w)`` (PURE, Sec. 4), the
  argmax position ``(h*, w*)`` in layer L's map (the crop heatmaps explain that activation), and the
  O'Mahony baseline vector of each selected image: the clamped layer-L activation, mean over space,
  ``(C_L,)``. Memory does not grow with the dataset: the running top-n_ref is merged with every batch and
  baseline vectors are kept only for images that are currently in some neuron's top set.
- `TopReferences`: that running top-n_ref, merged one batch at a time; its state is plain numpy arrays, so
  precompute checkpoints it between chunks and resumes from it.
- `pooled_activations`: the same statistics for a batch in memory (the upload path);
  `pooled_activations_and_outputs` also runs the rest of the network and returns its outputs (the model's
  predictions for the references come from the same pass as their baseline vectors).

Conventions shared with `pure_core.attribution`: a layer's activation is the output of the named module
(the first element when a module returns a tuple); a module that runs more than once in a forward pass
(a shared activation module) is taken at its first call; outputs of shape ``(B, C)`` or ``(B, C, L)`` are
treated as maps of shape ``(B, C, 1, 1)`` / ``(B, C, 1, L)``. The forward pass stops right after the last
layer needed, so the classifier head is never run (except in `pooled_activations_and_outputs`). Ranking
ties (equal activations) go to the lower dataset index; NaN ranks last. The forward plumbing
(run-until-layer, the per-model lock) is `pure_core.hooks`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pure_core.hooks import as_maps, capture, first_tensor, model_lock, run_until
from pure_core.models import get_layer

__all__ = ["ReferenceScan", "References", "TopReferences", "capture", "collect_references",
           "pooled_activations", "pooled_activations_and_outputs"]


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
        maps = as_maps(run_until(model, inputs, layer))
        return _statistics(maps)


def pooled_activations_and_outputs(
    model: nn.Module, inputs: torch.Tensor, layer: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`pooled_activations` of ``layer`` and the model's output ``(B, ...)`` from one whole forward pass.

    The statistics are taken inside the layer's hook, before any later in-place operation can change its
    output; the output is the model's (its first tensor when it returns a tuple), e.g. class logits.
    """
    target = get_layer(model, layer)
    state: dict[str, tuple[torch.Tensor, ...]] = {}

    def hook(_module, _args, output):
        if "statistics" not in state:  # a module that runs twice is taken at its first call
            state["statistics"] = _statistics(as_maps(first_tensor(output)))

    with torch.no_grad(), model_lock(model):
        handle = target.register_forward_hook(hook)
        try:
            outputs = first_tensor(model(inputs))
        finally:
            handle.remove()
    if "statistics" not in state:
        raise ValueError(f"layer {layer!r} did not run in the forward pass of {type(model).__name__}")
    return (*state["statistics"], outputs)


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
        self._keep_best(values, np.broadcast_to(np.asarray(indices, dtype=np.int64), values.shape),
                        np.asarray(positions, dtype=np.int64).transpose(1, 0, 2))

    def merge(self, other: TopReferences) -> None:
        """Merge another top set of the same neurons (e.g. another process's shard of the dataset); the result
        equals one pass over both shards' images."""
        self._keep_best(other.values, other.indices, other.positions)

    def _keep_best(self, values: np.ndarray, indices: np.ndarray, positions: np.ndarray) -> None:
        """Keep the best ``n_ref`` of the current set and candidates ``(N, c)``, ``(N, c)``, ``(N, c, 2)``."""
        all_values = np.concatenate([self.values, values], axis=1)
        all_indices = np.concatenate([self.indices, indices], axis=1)
        all_positions = np.concatenate([self.positions, positions], axis=1)
        key = np.where(np.isnan(all_values), np.inf, -all_values.astype(np.float64))
        order = np.lexsort((all_indices, key), axis=1)[:, :self.n_ref]
        self.values = np.take_along_axis(all_values, order, 1)
        self.indices = np.take_along_axis(all_indices, order, 1)
        self.positions = np.take_along_axis(all_positions, order[:, :, None], 1)


def _batch_tensor(batch) -> torch.Tensor:
    """The images of a batch: the tensor itself, or the first element of an (images, labels, ...) tuple."""
    try:
        return first_tensor(batch)
    except TypeError:
        message = f"a batch must be a tensor (B, 3, H, W) or a tuple (tensor, ...), not {type(batch)}"
        raise TypeError(message) from None


class ReferenceScan:
    """A resumable streaming top-``n_ref`` selection over a dataset: feed batches with their dataset indices.

    ``neurons``: the channels of ``layer`` to rank (default: all, known at the first batch). ``top``: a
    `TopReferences` to resume from (its arrays, e.g. checkpointed by precompute). ``keep_baseline``: also keep
    the O'Mahony vector of every image currently in some top set (what `collect_references` returns). The
    model must be on the inputs' device and in eval mode.
    """

    def __init__(self, model: nn.Module, layer: str, n_ref: int, neurons: Sequence[int] | None = None,
                 top: TopReferences | None = None, keep_baseline: bool = False):
        if int(n_ref) < 1:
            raise ValueError(f"n_ref must be at least 1, got {n_ref}")
        get_layer(model, layer)  # fail on an unknown name before reading any data
        self.model, self.layer, self.n_ref = model, layer, int(n_ref)
        self.neurons = None if neurons is None else [int(n) for n in neurons]
        self.top = top
        self.channels: torch.Tensor | None = None
        self.vectors: dict[int, torch.Tensor] | None = {} if keep_baseline else None
        self.n_seen = 0

    @torch.no_grad()
    def update(self, inputs: torch.Tensor, indices: Sequence[int] | np.ndarray) -> None:
        """Merge a batch ``inputs (B, 3, H, W)`` whose dataset indices are ``indices (B,)``."""
        if len(inputs) == 0:
            return
        maps = as_maps(run_until(self.model, inputs, self.layer))
        if self.channels is None:
            self.channels = _channel_index(self.neurons, maps.shape[1])
        if self.top is None:
            self.top = TopReferences.empty(len(self.channels), self.n_ref)
        values, positions, mean = (t.cpu() for t in _statistics(maps, self.channels.to(maps.device)))
        indices = np.asarray(indices, dtype=np.int64)
        self.top.update(values.numpy(), positions.numpy(), indices)
        if self.vectors is not None:
            _update_vectors(self.vectors, self.top.indices, indices, mean)
        self.n_seen += len(inputs)

    def references(self) -> References:
        """The `References` so far (baseline vectors only with ``keep_baseline``)."""
        if self.top is None or self.channels is None:
            raise ValueError("the reference scan got no images (the batches were empty)")
        vectors = self.vectors or {}
        image_indices = np.asarray(sorted(vectors), dtype=np.int64)
        activation_vectors = (torch.stack([vectors[int(i)] for i in image_indices]).float().numpy()
                              if vectors else np.zeros((0, 0), np.float32))
        return References(
            neurons=self.channels.numpy().astype(np.int64),
            indices=self.top.indices,
            max_activations=self.top.values.astype(np.float32),
            positions=self.top.positions,
            image_indices=image_indices,
            activation_vectors=activation_vectors,
            layer=self.layer,
            n_images=self.n_seen,
        )


def collect_references(model: nn.Module, batches: Iterable[torch.Tensor], layer: str, n_ref: int,
                       neurons: Sequence[int] | None = None, device: str | torch.device = "cpu",
                       progress: bool = False) -> References:
    """Top-``n_ref`` references per channel of ``layer`` by max-pooled activation, in one streaming pass.

    ``batches`` yields tensors ``(B, 3, H, W)`` (or tuples whose first element is one, e.g. a DataLoader
    over an image/label dataset); they are consecutive, so an image's dataset index is its running
    position. ``neurons``: the channels to rank (default: all). Inputs are moved to ``device``; the model
    must already be there and in eval mode. The running top set (`TopReferences`, via `ReferenceScan`) is
    merged with each batch, so memory is independent of the dataset's size. ``progress`` shows a tqdm bar.
    """
    scan = ReferenceScan(model, layer, n_ref, neurons, keep_baseline=True)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"references {layer}", unit="batch")
    for batch in batches:
        x = _batch_tensor(batch).to(device)
        scan.update(x, np.arange(scan.n_seen, scan.n_seen + len(x)))
    if scan.top is None:
        raise ValueError("collect_references got no images (the batches were empty)")
    return scan.references()


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
