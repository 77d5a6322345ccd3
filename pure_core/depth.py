"""Where a neuron's circuit splits: PURE's virtual neurons with the circuits taken at several lower layers.

PURE leaves the lower layer free (any earlier module). How deep to look matters: the layer right below the
analysed one may already have merged a polysemantic neuron's two routes into shared channels, so its circuits
look alike; a layer further down can still tell them apart (ARCHITECTURE.md, the prototype's lessons). The
depth profile answers that question per neuron: for each lower layer, k-means on the references' circuits at
that layer (`pure_core.virtual.VirtualNeurons`, the run's seed) and

- ``rho_gap``: the split's rho_inter - rho_intra under the crops' embeddings (Eq. 5), how distinct the virtual
  neurons' feature visualisations are;
- ``silhouette``: how well the circuits themselves separate;
- ``ari``: on ground-truth data (the synthetic world), the adjusted Rand index of the split against the
  references' planted concepts.

`circuits_at_layers` computes the circuits of (reference, neuron) pairs at all the layers with one forward
and one backward pass per batch (`pure_core.attribution.pure_attributions_for_pairs_at`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score
from torch import nn

from pure_core.attribution import pure_attributions_for_pairs_at
from pure_core.k_choice import split_readings

__all__ = ["DepthProfile", "circuits_at_layers", "depth_profile"]


@dataclass(frozen=True)
class DepthProfile:
    """Per lower layer of ``layers`` (in the order given): ``rho_gap``, ``silhouette`` and ``ari`` of the
    k-split of the circuits at that layer (NaN where undefined: no embeddings, no ground truth)."""

    layers: tuple[str, ...]
    k: int
    rho_gap: np.ndarray
    silhouette: np.ndarray
    ari: np.ndarray

    @property
    def best_layer(self) -> str | None:
        """The layer whose split is most distinct under the embeddings (None without embeddings)."""
        if np.isnan(self.rho_gap).all():
            return None
        return self.layers[int(np.nanargmax(self.rho_gap))]


def circuits_at_layers(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Sequence[int]]], layer: str,
                       lower_layers: Sequence[str]) -> dict[str, np.ndarray]:
    """PURE circuits ``{lower_layer: (n, C_lower) float32}`` of the pairs in ``batches`` (``(inputs, neuron of
    each input)``), rows in their order: per batch one forward and one backward pass for all the layers
    (`pure_attributions_for_pairs_at`)."""
    parts: dict[str, list[np.ndarray]] = {lower: [] for lower in lower_layers}
    for inputs, neuron_of_input in batches:
        circuits = pure_attributions_for_pairs_at(model, inputs, layer, lower_layers, neuron_of_input)
        for lower, values in circuits.items():
            parts[lower].append(values.float().cpu().numpy())
    return {lower: np.concatenate(values) for lower, values in parts.items()}


def depth_profile(circuits: Mapping[str, np.ndarray], embeddings=None, concepts: Sequence[str] | None = None,
                  k: int = 2, random_state: int = 0) -> DepthProfile:
    """The `DepthProfile` of one neuron from its references' circuits ``{layer: (n, C_layer)}``, their
    crops' ``embeddings (n, D)`` and planted ``concepts`` (n names), split into ``k`` virtual neurons."""
    layers = tuple(circuits)
    rho_gap, silhouette, ari = (np.full(len(layers), np.nan) for _ in range(3))
    for i, name in enumerate(layers):
        R = np.asarray(circuits[name], dtype=np.float64)
        if not 2 <= k < len(R):
            continue
        fitted = split_readings(R, k, embeddings, random_state=random_state)
        silhouette[i], rho_gap[i] = fitted.silhouette, fitted.rho_gap
        if concepts is not None:
            ari[i] = adjusted_rand_score(list(concepts), fitted.labels)
    return DepthProfile(layers, int(k), rho_gap, silhouette, ari)
