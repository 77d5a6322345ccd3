"""Benchmark: batched PURE attributions vs the per-neuron loop of the authors' pipeline.

Both compute the same circuits ``(n_refs, n_neurons, C_lower)`` on the same inputs:

- naive: per neuron, a full forward pass (classifier head included) with the input requiring grad, then a
  backward pass from ReLU(A_k) all the way to the input, reading the gradient at the lower layer (what a
  generic attribution pipeline such as CRP/zennit does). Parameters are frozen here, which only makes the
  baseline faster than the authors' setting (they also accumulate weight gradients).
- batched: `pure_core.attribution.pure_attributions`: one forward pass stopped after the layer, batched
  vector-Jacobian products over neurons that end at the lower layer.

Random weights (``weights=None``, fixed seed) cost the same as trained ones. Examples::

    python benchmarks/bench_attribution.py                      # ResNet-50 layer4 -> layer3, 64 x 16, 224 px
    python benchmarks/bench_attribution.py --neurons 8 --refs 4 --size 112   # a quick run
    python benchmarks/bench_attribution.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torchvision
from torch import nn

from pure_core.activations import pooled_activations
from pure_core.attribution import DEFAULT_NEURON_CHUNK, pure_attributions


def naive_pure_attributions(model: nn.Module, inputs: torch.Tensor, layer: str, lower_layer: str,
                            neurons: list[int]) -> torch.Tensor:
    """``(B, N, C_lower)``, one full forward and one backward to the input per neuron."""
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    handles = [modules[name].register_forward_hook(lambda _m, _a, out, n=name: captured.setdefault(n, out))
               for name in (lower_layer, layer)]
    flags = [p.requires_grad for p in model.parameters()]
    rows = []
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for k in neurons:
            captured.clear()
            x = inputs.detach().clone().requires_grad_(True)
            model(x)
            lower, upper = captured[lower_layer], captured[layer]
            lower.retain_grad()
            start = torch.zeros_like(upper)
            start[:, k] = upper[:, k].clamp(min=0)
            upper.backward(start)
            relevance = (lower.grad * lower).sum(dim=(2, 3)).detach()
            rows.append(relevance / relevance.abs().sum(dim=1, keepdim=True).clamp_min(1e-38))
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    return torch.stack(rows, dim=1)


def _timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="torchvision builder (weights=None)")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--lower-layer", default="layer3")
    parser.add_argument("--neurons", type=int, default=64, help="number of neurons (channels of --layer)")
    parser.add_argument("--refs", type=int, default=16, help="number of reference images (the batch)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--chunk", type=int, default=DEFAULT_NEURON_CHUNK, help="neurons per batched VJP")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-warmup", action="store_true", help="skip the one-neuron warm-up of each method")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = getattr(torchvision.models, args.model)(weights=None).eval().to(device)
    generator = torch.Generator().manual_seed(args.seed)
    inputs = torch.randn(args.refs, 3, args.size, args.size, generator=generator).to(device)
    n_channels = pooled_activations(model, inputs[:1], args.layer)[0].shape[1]
    neurons = sorted(torch.randperm(n_channels, generator=generator)[: args.neurons].tolist())

    if not args.no_warmup:  # first-call costs (allocator, vmap set-up) are not what we compare
        naive_pure_attributions(model, inputs, args.layer, args.lower_layer, neurons[:1])
        pure_attributions(model, inputs, args.layer, args.lower_layer, neurons[:1])

    layer, lower = args.layer, args.lower_layer
    naive, naive_s = _timed(lambda: naive_pure_attributions(model, inputs, layer, lower, neurons), device)
    batched, batched_s = _timed(
        lambda: pure_attributions(model, inputs, layer, lower, neurons, neuron_chunk=args.chunk), device)
    diff = (naive - batched).abs().max().item()
    speedup = naive_s / batched_s

    threads = torch.get_num_threads() if device.type == "cpu" else None
    print(f"{args.model} {layer} -> {lower}: {len(neurons)} neurons x {args.refs} references, "
          f"{args.size} px, {device}" + (f" ({threads} threads, {os.cpu_count()} cores)" if threads else "")
          + f", torch {torch.__version__}")
    print(f"{'method':<44}{'seconds':>10}{'per neuron':>12}")
    print(f"{'naive loop (forward + backward to input)':<44}{naive_s:>10.2f}{naive_s / len(neurons):>12.3f}")
    print(f"{f'pure_attributions (batched, chunk {args.chunk})':<44}{batched_s:>10.2f}"
          f"{batched_s / len(neurons):>12.3f}")
    print(f"speed-up: {speedup:.1f}x    max |diff|: {diff:.2e}    result shape: {tuple(batched.shape)}")
    return {"naive_s": naive_s, "batched_s": batched_s, "speedup": speedup, "max_abs_diff": diff}


if __name__ == "__main__":
    main()
