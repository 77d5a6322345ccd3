"""Input heatmaps of a neuron's maximal activation, by method name: what the crops are cut from.

Every method explains, for a batch of (image, neuron, position) pairs, the single activation A_k(h*, w*) of
neuron k at its argmax position in layer L, and returns one map per pair at the input's resolution,
``(B, H, W)``, summed over RGB, with one forward and one backward pass for the batch:

- ``"lrp"``: LRP through zennit (EpsilonPlusFlat with the model's canonizer, `pure_core.lrp`), as the
  authors' crops are made; only for models with a registered canonizer.
- ``"gradient_x_input"``: gradient x input (`pure_core.attribution.input_attributions_for_pairs`); any
  model.

Methods live in a registry (`HEATMAP_METHODS`, `register_heatmap_method`), never in branches on names.
``"auto"`` resolves to the first registered method that supports the model (`resolve_heatmap_method`):
LRP where a canonizer exists, gradient x input otherwise. A run records the resolved name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pure_core.attribution import input_attributions_for_pairs
from pure_core.lrp import canonizer_for, lrp_heatmaps_for_pairs

__all__ = [
    "AUTO",
    "HEATMAP_METHODS",
    "HeatmapMethod",
    "input_heatmaps_for_pairs",
    "register_heatmap_method",
    "resolve_heatmap_method",
]

AUTO = "auto"

PairHeatmaps = Callable[..., torch.Tensor]  # (model, inputs, layer, neuron_of_input, positions) -> (B, H, W)


@dataclass(frozen=True)
class HeatmapMethod:
    """A registered input-heatmap method: its name, which models it supports, and its batched function."""

    name: str
    supports: Callable[[nn.Module], bool]
    heatmaps_for_pairs: PairHeatmaps


HEATMAP_METHODS: dict[str, HeatmapMethod] = {}  # in order of preference for "auto"


def register_heatmap_method(method: HeatmapMethod) -> HeatmapMethod:
    """Add ``method`` to `HEATMAP_METHODS` (after the registered ones: "auto" prefers earlier methods)."""
    if method.name == AUTO or method.name in HEATMAP_METHODS:
        raise ValueError(f"heatmap method {method.name!r} is registered already or reserved")
    HEATMAP_METHODS[method.name] = method
    return method


def resolve_heatmap_method(model: nn.Module, name: str = AUTO) -> str:
    """The method a run with setting ``name`` uses on ``model``: ``name`` itself (checked: registered and
    supporting the model), or for ``"auto"`` the first registered method that supports the model."""
    if name == AUTO:
        return next(m.name for m in HEATMAP_METHODS.values() if m.supports(model))
    method = HEATMAP_METHODS.get(name)
    if method is None:
        raise ValueError(f"unknown heatmap method {name!r}; choose from {AUTO}, {', '.join(HEATMAP_METHODS)}")
    if not method.supports(model):
        raise ValueError(f"heatmap method {name!r} does not support {type(model).__name__} "
                         f"(no LRP canonizer for its modules); use {AUTO} or gradient_x_input")
    return name


def input_heatmaps_for_pairs(model: nn.Module, inputs: torch.Tensor, layer: str,
                             neuron_of_input: Sequence[int], positions=None,
                             method: str = "gradient_x_input") -> torch.Tensor:
    """Input heatmaps ``(B, H, W)`` of ``method`` (a registered name or "auto"): row b explains neuron
    ``neuron_of_input[b]`` of ``layer`` on ``inputs[b]`` from A_k(h, w) at ``positions[b]`` ((B, 2), h and w
    in layer L's map) or, without positions, from its whole rectified map."""
    name = resolve_heatmap_method(model, method)
    return HEATMAP_METHODS[name].heatmaps_for_pairs(model, inputs, layer, neuron_of_input, positions)


register_heatmap_method(HeatmapMethod("lrp", lambda model: canonizer_for(model) is not None,
                                      lrp_heatmaps_for_pairs))
register_heatmap_method(HeatmapMethod("gradient_x_input", lambda model: True, input_attributions_for_pairs))
