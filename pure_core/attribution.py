"""PURE circuit attributions (Eq. 3) and input heatmaps, batched over neurons.

The circuit of neuron k (channel k of layer L) on one input is the vector over the channels i of a lower
layer L-1 (any earlier module)

    R_i = sum_s A_i(s) * g_i(s),      g = J^T r,      r = ReLU(A_k) on channel k of layer L, 0 elsewhere,

i.e. Gradient x Activation (Eq. 3) started from the neuron's whole (rectified) map, as in the authors'
code: J is the Jacobian of layer L's output with respect to layer L-1's output, ``s`` runs over space.
Each row is divided by its L1 norm (``sum_i |R_i|``; a zero row stays zero).

How it is computed: one forward pass per input batch, stopped right after layer L. A hook turns layer
L-1's output into a leaf tensor, so the graph starts there: nothing below it is built or traversed, and
parameters are frozen during that pass (their ``requires_grad`` flags are restored after it). All neurons
share the graph; ``torch.autograd.grad(..., is_grads_batched=True)`` runs the vector-Jacobian products for
a chunk of neurons at once. `pure_attributions_for_pairs` needs one plain backward pass for a batch in
which every input has its own neuron.

`input_attributions` uses the same machinery down to the input pixels (gradient x input, summed over RGB),
started from ReLU(A_k) everywhere or from the single activation A_k(h*, w*) at a given position (the
authors' crop heatmaps explain a neuron's maximal activation). `input_attributions_for_pairs` also takes a
zennit composite (LRP rules and canonizers, `pure_core.lrp`): forward and backward then run inside the
composite's context, and the modified gradient at the input is the relevance itself (zennit's convention).

Layers are module names (see `pure_core.models.get_layer`), taken at their first call in the forward pass;
the model should be in eval mode (batch statistics would mix the inputs otherwise). Results are on the
inputs' device, detached, in the model's dtype. No hook survives a call, also on errors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from pure_core.hooks import as_maps, model_lock, run_until

if TYPE_CHECKING:
    from zennit.core import Composite

__all__ = [
    "circuits_from_graph",
    "frozen_parameters",
    "input_attributions",
    "input_attributions_for_pairs",
    "pure_attributions",
    "pure_attributions_for_pairs",
    "pure_attributions_for_pairs_at",
]

DEFAULT_NEURON_CHUNK = 32  # neurons per batched VJP in `pure_attributions`
DEFAULT_INPUT_NEURON_CHUNK = 8  # the same for `input_attributions` (the backward runs through the whole net)


# -- shared machinery --------------------------------------------------------------------------------------
@contextmanager
def frozen_parameters(model: nn.Module, active: bool = True) -> Iterator[None]:
    """While ``active``: no parameter of ``model`` requires grad inside the block (the backward then stops
    at the activations); their flags are restored afterwards, also on errors."""
    parameters = list(model.parameters()) if active else []
    flags = [p.requires_grad for p in parameters]
    try:
        for p in parameters:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(parameters, flags, strict=True):
            p.requires_grad_(flag)


def _upper_graph(model: nn.Module, inputs: torch.Tensor, layer: str,
                 lower_layers: Sequence[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One forward pass: ``({lower_layer: A^{L-1}}, A^L)``, where A^L's graph starts at the first lower layer
    to run (a leaf) and passes through the others.

    The network below that layer sees no tensor that requires grad, so it builds no graph; the rest of the
    network sees a copy of each lower layer's output (an in-place operation after it, such as
    ``ReLU(inplace=True)`` after a batch norm, changes the copy, and the tensor kept here is A^{L-1}).
    """
    held: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(output: torch.Tensor) -> torch.Tensor:
            held[name] = output if output.requires_grad else output.detach().requires_grad_(True)
            return held[name].clone()
        return hook

    with model_lock(model), frozen_parameters(model), torch.enable_grad():
        upper = run_until(model, inputs.detach(), layer, before={name: keep(name) for name in lower_layers})
    if not upper.requires_grad:
        raise ValueError(f"layer {layer!r} does not depend on lower_layer {list(lower_layers)[0]!r}")
    return held, upper


def _input_graph(model: nn.Module, inputs: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass with the inputs as leaf: ``(x, A^L)``."""
    x = inputs.detach().requires_grad_(True)
    with model_lock(model), frozen_parameters(model), torch.enable_grad():
        upper = run_until(model, x, layer)
    if not upper.requires_grad:
        raise ValueError(f"layer {layer!r} does not depend on the model's input")
    return x, upper


def _neuron_tensor(neurons: Sequence[int], n_channels: int, device: torch.device) -> torch.Tensor:
    index = torch.as_tensor(np.asarray(neurons, dtype=np.int64).reshape(-1), device=device)
    bad = index[(index < 0) | (index >= n_channels)]
    if len(bad):
        raise ValueError(f"neurons {bad[:10].tolist()} are out of range: the layer has {n_channels} channels")
    return index


def _position_tensor(positions, shape: tuple[int, ...], maps_shape: torch.Size,
                     device: torch.device) -> torch.Tensor:
    """``positions`` as an int64 tensor of ``shape`` (..., 2), checked against the map size (H, W)."""
    if isinstance(positions, torch.Tensor):
        positions = positions.cpu()
    tensor = torch.as_tensor(np.asarray(positions), dtype=torch.long, device=device)
    if tuple(tensor.shape) != shape:
        raise ValueError(f"positions must have shape {shape}, got {tuple(tensor.shape)}")
    height, width = maps_shape[2], maps_shape[3]
    h, w = tensor[..., 0], tensor[..., 1]
    if ((h < 0) | (h >= height) | (w < 0) | (w >= width)).any():
        raise ValueError(f"positions must lie in the layer's {height}x{width} map")
    return tensor


def _start_relevance(upper: torch.Tensor, neurons: torch.Tensor,
                     positions: torch.Tensor | None = None) -> torch.Tensor:
    """Batched start relevance ``(n, *A^L.shape)``: row j holds ReLU(A_{k_j}) on channel k_j (or, with
    ``positions (n, B, 2)``, only A_{k_j}(h, w) of each input), zero elsewhere."""
    maps = as_maps(upper.detach())
    n, batch = len(neurons), maps.shape[0]
    start = torch.zeros((n, *maps.shape), dtype=maps.dtype, device=maps.device)
    rows = torch.arange(n, device=maps.device)
    if positions is None:
        start[rows, :, neurons] = maps[:, neurons].clamp(min=0).transpose(0, 1)
    else:
        r = rows[:, None].expand(n, batch)
        b = torch.arange(batch, device=maps.device)[None, :].expand(n, batch)
        k = neurons[:, None].expand(n, batch)
        h, w = positions[..., 0], positions[..., 1]
        start[r, b, k, h, w] = maps[b, k, h, w]
    return start.reshape(n, *upper.shape)


def _pair_relevance(upper: torch.Tensor, neurons: torch.Tensor,
                    positions: torch.Tensor | None = None) -> torch.Tensor:
    """Start relevance ``A^L.shape`` with input b's own neuron k_b only (ReLU map, or A_{k_b}(h_b, w_b))."""
    maps = as_maps(upper.detach())
    start = torch.zeros_like(maps)
    b = torch.arange(maps.shape[0], device=maps.device)
    if positions is None:
        start[b, neurons] = maps[b, neurons].clamp(min=0)
    else:
        h, w = positions[:, 0], positions[:, 1]
        start[b, neurons, h, w] = maps[b, neurons, h, w]
    return start.reshape(upper.shape)


def _circuit(gradient: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """Gradient x activation summed over space and L1-normalised: ``(..., B, C_lower)`` from a gradient
    ``(..., B, C_lower, *S)`` and ``lower (B, C_lower, *S)``."""
    relevance = gradient * lower
    spatial = tuple(range(gradient.ndim - lower.ndim + 2, gradient.ndim))
    if spatial:
        relevance = relevance.sum(dim=spatial)
    norm = relevance.abs().sum(dim=-1, keepdim=True).clamp_min(torch.finfo(relevance.dtype).tiny)
    return relevance / norm


def _chunks(n: int, size: int) -> list[slice]:
    size = max(1, int(size))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _batched_vjp(upper: torch.Tensor, leaf: torch.Tensor, neurons: torch.Tensor, chunk: int,
                 positions: torch.Tensor | None = None,
                 keep_graph: bool = False) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(chunk slice, gradient (n, *leaf.shape))`` for the start relevances of ``neurons``; the graph
    is freed after the last chunk unless ``keep_graph``."""
    parts = _chunks(len(neurons), chunk)
    for j, part in enumerate(parts):
        start = _start_relevance(upper, neurons[part], None if positions is None else positions[part])
        (gradient,) = torch.autograd.grad(upper, leaf, grad_outputs=start, is_grads_batched=True,
                                          retain_graph=keep_graph or j < len(parts) - 1)
        yield part, gradient


# -- PURE circuits -----------------------------------------------------------------------------------------
def pure_attributions(model: nn.Module, inputs: torch.Tensor, layer: str, lower_layer: str,
                      neurons: Sequence[int], *, neuron_chunk: int = DEFAULT_NEURON_CHUNK) -> torch.Tensor:
    """PURE circuits ``(B, N, C_lower)`` of ``neurons`` (channels of ``layer``) on ``inputs (B, 3, H, W)``.

    Row ``[b, j]`` is the L1-normalised Gradient x Activation of layer ``lower_layer``'s channels for
    neuron ``neurons[j]`` on input b, started from ReLU(A_k) at every position of channel k (Eq. 3). One
    forward pass; the backward stops at ``lower_layer``; ``neuron_chunk`` neurons per batched VJP.
    """
    held, upper = _upper_graph(model, inputs, layer, [lower_layer])
    return circuits_from_graph(upper, held[lower_layer], neurons, neuron_chunk=neuron_chunk)


def circuits_from_graph(upper: torch.Tensor, lower: torch.Tensor, neurons: Sequence[int], *,
                        neuron_chunk: int = DEFAULT_NEURON_CHUNK, keep_graph: bool = False) -> torch.Tensor:
    """`pure_attributions`' circuits ``(B, N, C_lower)`` from a graph a forward pass already built: ``upper``
    is layer L's output computed from ``lower``, the lower layer's output (requiring grad). For callers that
    run the forward themselves (`pure_core.purify`); ``keep_graph`` keeps the graph for their own backward.
    """
    if not upper.requires_grad:
        raise ValueError("layer L's output does not depend on the lower layer's output (no graph)")
    index = _neuron_tensor(neurons, as_maps(upper).shape[1], upper.device)
    out = torch.empty((len(index), *lower.shape[:2]), dtype=lower.dtype, device=lower.device)
    values = lower.detach()
    for part, gradient in _batched_vjp(upper, lower, index, neuron_chunk, keep_graph=keep_graph):
        out[part] = _circuit(gradient, values)
    return out.transpose(0, 1)


def pure_attributions_for_pairs(model: nn.Module, inputs: torch.Tensor, layer: str, lower_layer: str,
                                neuron_of_input: Sequence[int]) -> torch.Tensor:
    """PURE circuits ``(B, C_lower)``: row b is the circuit of neuron ``neuron_of_input[b]`` on input b.

    Equal to ``pure_attributions(...)[b, j]`` for the matching neuron; one forward and one backward pass
    for the whole batch (each input's start relevance holds its own neuron only).
    """
    return pure_attributions_for_pairs_at(model, inputs, layer, [lower_layer], neuron_of_input)[lower_layer]


def pure_attributions_for_pairs_at(model: nn.Module, inputs: torch.Tensor, layer: str,
                                   lower_layers: Sequence[str],
                                   neuron_of_input: Sequence[int]) -> dict[str, torch.Tensor]:
    """`pure_attributions_for_pairs` at several lower layers at once: ``{lower_layer: (B, C_lower)}`` in the
    order given, from one forward pass and one backward pass, which reaches the deepest of them through the
    others."""
    if not lower_layers:
        raise ValueError("no lower layer given")
    held, upper = _upper_graph(model, inputs, layer, lower_layers)
    index = _neuron_tensor(neuron_of_input, upper.shape[1], upper.device)
    if len(index) != len(upper):
        raise ValueError(f"neuron_of_input has {len(index)} entries for {len(upper)} inputs")
    names = list(dict.fromkeys(lower_layers))
    gradients = torch.autograd.grad(upper, [held[name] for name in names],
                                    grad_outputs=_pair_relevance(upper, index), allow_unused=True)
    unused = [name for name, gradient in zip(names, gradients, strict=True) if gradient is None]
    if unused:
        raise ValueError(f"layer {layer!r} does not depend on lower layer(s) {unused}")
    return {name: _circuit(gradient, held[name].detach())
            for name, gradient in zip(names, gradients, strict=True)}


# -- input heatmaps ----------------------------------------------------------------------------------------
def input_attributions(model: nn.Module, inputs: torch.Tensor, layer: str, neurons: Sequence[int],
                       positions=None, *, neuron_chunk: int = DEFAULT_INPUT_NEURON_CHUNK) -> torch.Tensor:
    """Input heatmaps ``(B, N, H, W)``: gradient x input summed over RGB, for ``neurons`` of ``layer``.

    Started from ReLU(A_k) at every position of channel k, or, with ``positions (B, N, 2)`` (h, w in
    layer L's map, e.g. `References.positions`), from the single activation A_k(h, w) of each input (the
    crops' heatmap of a neuron's maximal activation). One forward pass, batched VJPs to the input.
    """
    x, upper = _input_graph(model, inputs, layer)
    index = _neuron_tensor(neurons, upper.shape[1], upper.device)
    where = None
    if positions is not None:
        shape = (len(upper), len(index), 2)
        where = _position_tensor(positions, shape, as_maps(upper).shape, upper.device).transpose(0, 1)
    out = torch.empty((len(index), len(x), *x.shape[2:]), dtype=x.dtype, device=x.device)
    pixels = x.detach()
    for part, gradient in _batched_vjp(upper, x, index, neuron_chunk, where):
        out[part] = (gradient * pixels).sum(dim=2)
    return out.transpose(0, 1)


def input_attributions_for_pairs(model: nn.Module, inputs: torch.Tensor, layer: str,
                                 neuron_of_input: Sequence[int], positions=None,
                                 composite: Composite | None = None) -> torch.Tensor:
    """Input heatmaps ``(B, H, W)``: row b explains neuron ``neuron_of_input[b]`` on input b (its whole
    rectified map, or A_k(h, w) at ``positions[b]`` when ``positions (B, 2)`` is given); one backward.

    Without ``composite``: gradient x input summed over RGB. With a zennit ``composite``: the relevance at
    the input under its rules (the modified gradient, not multiplied by the input), summed over RGB; the
    composite's canonizers and hooks exist only inside this call, under `pure_core.hooks.model_lock`.
    """
    rules = nullcontext() if composite is None else composite.context(model)
    # canonizers change the model: no other thread may run it meanwhile; frozen parameters (the merged biases
    # too) keep the rules' modified weights out of the backward graph
    with model_lock(model), rules, frozen_parameters(model):
        x, upper = _input_graph(model, inputs, layer)
        index = _neuron_tensor(neuron_of_input, upper.shape[1], upper.device)
        if len(index) != len(upper):
            raise ValueError(f"neuron_of_input has {len(index)} entries for {len(upper)} inputs")
        where = None
        if positions is not None:
            where = _position_tensor(positions, (len(upper), 2), as_maps(upper).shape, upper.device)
        (gradient,) = torch.autograd.grad(upper, x, grad_outputs=_pair_relevance(upper, index, where))
    return (gradient if composite is not None else gradient * x.detach()).sum(dim=1)
