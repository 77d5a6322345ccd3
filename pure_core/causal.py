"""Causal checks of virtual neurons: ablate one circuit, see whose activation falls.

A virtual neuron's circuit is a set of lower-layer channels (those with the largest weights in its centroid,
`circuit_channels`). If the circuit is what carries the virtual neuron, removing it from the lower layer
should take away much of the neuron's activation on that virtual neuron's own references and little on the
other virtual neurons' references. `causal_check` measures exactly that:

- one forward pass over the references as they are (the neuron's max-pooled activation, the reference
  statistic), which also records the lower layer's per-channel mean over the references and space;
- per virtual neuron, one forward pass with its circuit channels replaced in the lower layer's output,
  by that recorded mean (``mode="mean"``) or by zero (``mode="zero"``), stopped right after layer L.

Which channels: by default those whose weight in the virtual neuron's centroid exceeds the other centroids'
mean weight most (``contrast=True``). The channels with the largest plain weight are often shared by all of a
neuron's circuits (on the demo world, the texture both planted concepts carry): ablating them removes the
activation everywhere and says nothing about one virtual neuron (measured on the 8 planted channels at
k = 2, top 8 by plain weight, zero: 96 % removed on the own references and 87 % on the other's;
`benchmarks/bench_causal.py`).

`CausalCheck.removed` is the ``(k, k)`` share of activation removed, row = ablated circuit, column = whose
references (ratio of summed activations, so strong references weigh more, as the neuron's response does);
`CausalCheck.selectivity` is a row's own share minus the mean of its other shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pure_core.hooks import as_maps, run_until

__all__ = ["ABLATION_MODES", "DEFAULT_CIRCUIT_CHANNELS", "CausalCheck", "causal_check", "circuit_channels"]

ABLATION_MODES = ("zero", "mean")
DEFAULT_CIRCUIT_CHANNELS = 10  # channels ablated per virtual neuron


def circuit_channels(centroids, n_channels: int = DEFAULT_CIRCUIT_CHANNELS,
                     contrast: bool = False) -> list[np.ndarray]:
    """Per virtual neuron (row of ``centroids (k, C_lower)``), its ``n_channels`` lower-layer channels with
    the largest centroid weight, largest first: the channels the circuit bars show first. ``contrast``:
    rank by the weight minus the other centroids' mean weight instead (the channels that set this circuit
    apart, not those every circuit of the neuron shares)."""
    centroids = np.atleast_2d(np.asarray(centroids, dtype=np.float64))
    if not 1 <= n_channels <= centroids.shape[1]:
        raise ValueError(f"n_channels must be in 1..{centroids.shape[1]}, got {n_channels}")
    k = len(centroids)
    if contrast and k > 1:
        centroids = centroids - (centroids.sum(axis=0) - centroids) / (k - 1)
    return [np.argsort(-row, kind="stable")[:n_channels] for row in centroids]


@dataclass(frozen=True)
class CausalCheck:
    """One neuron's ablations: ``channels`` per virtual neuron, the references' activation ``baseline (n,)``
    and with each circuit ablated ``ablated (k, n)``, and each reference's virtual neuron ``groups (n,)``."""

    channels: list[np.ndarray]
    baseline: np.ndarray
    ablated: np.ndarray
    groups: np.ndarray
    mode: str

    @property
    def removed(self) -> np.ndarray:
        """``(k, k)``: share of the activation on virtual neuron g's references (column) removed by
        ablating virtual neuron c's circuit (row): 1 - sum(ablated) / sum(baseline) over g's references
        (NaN for a group without activation)."""
        k = len(self.channels)
        out = np.full((k, k), np.nan)
        for g in range(k):
            members = self.groups == g
            total = self.baseline[members].sum()
            if total > 0:
                out[:, g] = 1.0 - self.ablated[:, members].sum(axis=1) / total
        return out

    @property
    def selectivity(self) -> np.ndarray:
        """``(k,)``: per ablated circuit, the share removed on its own references minus the mean share
        removed on the other virtual neurons' references."""
        removed = self.removed
        k = len(removed)
        if k < 2:
            return np.diag(removed).copy()
        others = (np.nansum(removed, axis=1) - np.diag(removed)) / (k - 1)
        return np.diag(removed) - others


def _max_activation(maps: torch.Tensor, neuron: int) -> torch.Tensor:
    return as_maps(maps)[:, neuron].flatten(1).max(dim=1).values


def causal_check(model: nn.Module, inputs: torch.Tensor, layer: str, lower_layer: str, neuron: int,
                 centroids, groups: Sequence[int], *, n_channels: int = DEFAULT_CIRCUIT_CHANNELS,
                 mode: str = "mean", contrast: bool = True, batch_size: int = 64) -> CausalCheck:
    """Ablate each virtual neuron's circuit (`circuit_channels` of ``centroids (k, C_lower)``) in
    ``lower_layer`` and measure ``neuron``'s max-pooled activation in ``layer`` on ``inputs (n, 3, H, W)``
    (its references, preprocessed, on the model's device), whose virtual neurons are ``groups (n,)``.
    ``mode``: replace the channels by their mean over ``inputs`` and space (default: the layer stays in
    its usual range) or by zero. ``contrast`` (default): choose the channels that set each circuit apart
    (`circuit_channels`). ``batch_size`` inputs per forward pass (no gradients)."""
    if mode not in ABLATION_MODES:
        raise ValueError(f"mode must be one of {ABLATION_MODES}, got {mode!r}")
    groups = np.asarray(groups, dtype=np.int64)
    if len(groups) != len(inputs):
        raise ValueError(f"groups has {len(groups)} entries for {len(inputs)} inputs")
    channels = circuit_channels(centroids, n_channels, contrast)
    batches = [inputs[i:i + batch_size] for i in range(0, len(inputs), batch_size)]
    baseline, sums = [], []

    def record(lower: torch.Tensor) -> None:
        sums.append(as_maps(lower).float().mean(dim=(2, 3)).sum(dim=0))

    with torch.no_grad():
        for batch in batches:
            baseline.append(_max_activation(run_until(model, batch, layer, {lower_layer: record}), neuron))
        mean = torch.stack(sums).sum(dim=0) / len(inputs)
        ablated = []
        for chosen in channels:
            index = torch.as_tensor(chosen, device=mean.device)
            values = torch.zeros_like(mean[index]) if mode == "zero" else mean[index]

            def replace(lower: torch.Tensor, index=index, values=values) -> torch.Tensor:
                maps = as_maps(lower).clone()
                maps[:, index] = values.to(maps.dtype)[None, :, None, None]
                return maps.reshape(lower.shape)

            ablated.append(torch.cat([_max_activation(run_until(model, batch, layer, {lower_layer: replace}),
                                                      neuron) for batch in batches]))
    return CausalCheck(channels, torch.cat(baseline).float().cpu().numpy(),
                       torch.stack(ablated).float().cpu().numpy(), groups, mode)
