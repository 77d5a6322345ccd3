"""Forward-pass plumbing shared by activations, attribution and crops: one public module, no hidden state.

- `model_lock(model)`: the re-entrant lock held while hooks are attached to a model, so threads that share a
  model (the app's cached model) never fire each other's hooks.
- `capture(model, layers)`: a context manager that records layer outputs during forward passes.
- `run_until(model, inputs, layer, before=...)`: run the network only as far as ``layer`` (the rest is
  skipped), optionally replacing earlier layers' outputs on the way (attribution makes its leaf there).
- `first_tensor`, `replace_first`, `as_maps`: read and rewrite module outputs as channel maps.

Every hook lives inside a ``with`` block or ``try/finally``; none survives a call, also on errors.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from pure_core.models import get_layer

__all__ = ["OutputHook", "as_maps", "capture", "first_tensor", "model_lock", "replace_first", "run_until"]


class _StopForward(Exception):
    """Raised by a hook on the last layer needed, to skip the rest of the network."""


_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock held while hooks are attached to ``model`` (one per model object)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def first_tensor(output) -> torch.Tensor:
    """A module's output tensor (the first element of a tuple/list output)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot read a tensor from a module output of type {type(output).__name__}")


def replace_first(output, tensor: torch.Tensor):
    """``output`` with its tensor (or its first element) replaced by ``tensor``."""
    if isinstance(output, torch.Tensor):
        return tensor
    return type(output)([tensor, *output[1:]])


def as_maps(activation: torch.Tensor) -> torch.Tensor:
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


OutputHook = Callable[[torch.Tensor], "torch.Tensor | None"]


def run_until(model: nn.Module, inputs: torch.Tensor, layer: str,
               before: dict[str, OutputHook] | None = None) -> torch.Tensor:
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

    def make_hook(name: str, fn: OutputHook):
        def hook(_module, _args, output):
            if name in done:
                return None
            done.add(name)
            replacement = fn(first_tensor(output))
            return None if replacement is None else replace_first(output, replacement)
        return hook

    def stop(_module, _args, output):
        missing = [name for name in modules if name not in done]
        if missing:
            raise ValueError(f"layer(s) {missing} must run before {layer!r} in the forward pass, but did not")
        state["out"] = first_tensor(output)
        raise _StopForward

    handles = []
    with model_lock(model):
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
                outputs[name] = first_tensor(output)
        return hook

    with model_lock(model):
        handles = [model.register_forward_pre_hook(start)]
        try:
            for name, module in modules.items():
                handles.append(module.register_forward_hook(make_hook(name)))
            yield outputs
        finally:
            for handle in handles:
                handle.remove()
