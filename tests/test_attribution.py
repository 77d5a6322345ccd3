"""PURE circuit attributions and input heatmaps match their definitions.

References used here, each computed independently of `pure_core.attribution`:
- the authors' way: one full forward and one backward pass *to the input* per neuron, reading the gradient
  at the lower layer (torchvision ResNet-18, random weights, 64 px);
- central finite differences of A_k with respect to a scaled lower-layer channel (float64, tiny net);
- a 1x1 convolution worked out by hand.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from pure_core.attribution import (
    input_attributions,
    input_attributions_for_pairs,
    pure_attributions,
    pure_attributions_for_pairs,
    pure_attributions_for_pairs_at,
)
from pure_core.models import UnknownLayerError

TOL = 1e-5


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _output_of(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(lambda _m, _a, o, n=n: outputs.setdefault(n, o))
               for n in names]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return outputs


def loop_pure(model: nn.Module, x: torch.Tensor, layer: str, lower: str, neurons: list[int]) -> torch.Tensor:
    """(B, N, C_lower) the authors' way: per neuron a full forward and a backward to the input."""
    rows = []
    for k in neurons:
        out = _output_of(model, [lower, layer], x.clone().requires_grad_())
        a_lower, a_upper = out[lower], out[layer]
        a_lower.retain_grad()
        start = torch.zeros_like(a_upper)
        start[:, k] = a_upper[:, k].clamp(min=0)
        a_upper.backward(start)
        r = (a_lower.grad * a_lower).sum(dim=(2, 3)).detach()
        rows.append(r / r.abs().sum(dim=1, keepdim=True))
    model.zero_grad(set_to_none=True)
    return torch.stack(rows, dim=1)


def loop_input(model: nn.Module, x: torch.Tensor, layer: str, neurons: list[int],
               positions: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, H, W) gradient x input per neuron, one backward each."""
    maps = []
    for j, k in enumerate(neurons):
        xx = x.clone().requires_grad_()
        a_upper = _output_of(model, [layer], xx)[layer]
        start = torch.zeros_like(a_upper)
        if positions is None:
            start[:, k] = a_upper[:, k].clamp(min=0)
        else:
            for b in range(len(x)):
                h, w = positions[b, j]
                start[b, k, h, w] = a_upper[b, k, h, w]
        a_upper.backward(start)
        maps.append((xx.grad * xx).sum(dim=1).detach())
    model.zero_grad(set_to_none=True)
    return torch.stack(maps, dim=1)


def _hooks_left(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules()
            if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks]


# -- agreement with the authors' full-backward loop --------------------------------------------------------
@pytest.mark.parametrize(("layer", "lower", "neurons"), [
    ("layer4", "layer3", [0, 17, 511]),
    ("layer3", "layer2.0", [3, 64, 255, 3]),  # a submodule name; a repeated neuron
])
def test_pure_attributions_equal_a_full_backward_per_neuron(resnet18, images, layer, lower, neurons):
    batched = pure_attributions(resnet18, images, layer, lower, neurons, neuron_chunk=2)
    expected = loop_pure(resnet18, images, layer, lower, neurons)
    assert batched.shape == expected.shape == (2, len(neurons), expected.shape[-1])
    assert (batched - expected).abs().max().item() < TOL


def test_rows_are_l1_normalised(resnet18, images):
    result = pure_attributions(resnet18, images, "layer4", "layer3", list(range(0, 512, 37)))
    assert not result.requires_grad
    torch.testing.assert_close(result.abs().sum(dim=-1), torch.ones(result.shape[:2]), atol=1e-5, rtol=0)


def test_pairs_equal_the_matching_slice_of_the_full_result(resnet18, images):
    full = pure_attributions(resnet18, images, "layer4", "layer3", [7, 300, 42])
    pairs = pure_attributions_for_pairs(resnet18, images, "layer4", "layer3", [300, 42])
    assert pairs.shape == (2, 256)
    assert (pairs - full[[0, 1], [1, 2]]).abs().max().item() < TOL


def test_pairs_at_several_layers_equal_one_layer_at_a_time(resnet18, images):
    # layer3.1.bn2 is followed by an in-place ReLU inside its block: alone it is the leaf, here it is not
    layers = ["layer3", "layer2", "layer3.1.bn2", "layer1.0.conv1"]
    together = pure_attributions_for_pairs_at(resnet18, images, "layer4", layers, [300, 42])
    assert list(together) == layers
    for lower in layers:
        alone = pure_attributions_for_pairs(resnet18, images, "layer4", lower, [300, 42])
        assert together[lower].shape == alone.shape and not together[lower].requires_grad
        assert (together[lower] - alone).abs().max().item() < TOL


class _SideBranch(nn.Module):
    """``head(a(x))``; ``side(x)`` runs first and is never used."""

    def __init__(self) -> None:
        super().__init__()
        self.side, self.a, self.head = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.side(x)
        return self.head(torch.relu(self.a(x)))


def test_pairs_at_several_layers_need_layers_the_upper_one_uses():
    torch.manual_seed(0)
    net, x = _SideBranch().eval(), torch.randn(2, 3, 8, 8)
    assert set(pure_attributions_for_pairs_at(net, x, "head", ["a"], [0, 1])) == {"a"}
    with pytest.raises(ValueError, match="no lower layer"):
        pure_attributions_for_pairs_at(net, x, "head", [], [0, 1])
    with pytest.raises(ValueError, match=r"does not depend on lower layer\(s\) \['side'\]"):
        pure_attributions_for_pairs_at(net, x, "head", ["a", "side"], [0, 1])
    with pytest.raises(ValueError, match="must run before"):
        pure_attributions_for_pairs_at(net, x, "a", ["head"], [0, 1])


# -- definition checks on small nets ------------------------------------------------------------------------
def _tiny_net(inplace: bool = False) -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 4, 3, padding=1), bn=nn.BatchNorm2d(4), relu1=nn.ReLU(inplace=inplace),
        conv2=nn.Conv2d(4, 6, 3, padding=1), relu2=nn.ReLU(), pool=nn.MaxPool2d(2),
        conv3=nn.Conv2d(6, 5, 3, padding=1),
        head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 2)),
    ))
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net.double().eval()


def test_pure_attributions_match_finite_differences():
    """R_i = d/de sum_s r(s) A_k(s) when channel i of A^{L-1} is scaled by (1 + e), r = ReLU(A_k) fixed."""
    net, eps = _tiny_net(), 1e-6
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    scale = {"channel": 0, "eps": 0.0}

    def perturb(_m, _a, out):
        out = out.clone()
        out[:, scale["channel"]] *= 1 + scale["eps"]
        return out

    def upper() -> torch.Tensor:
        handle = net.relu1.register_forward_hook(perturb)
        try:
            return _output_of(net, ["conv3"], x)["conv3"].detach()
        finally:
            handle.remove()

    active = 0
    for k in range(5):
        weight = upper()[:, k].clamp(min=0)
        expected = torch.zeros(2, 4, dtype=torch.float64)
        for i in range(4):
            scale.update(channel=i, eps=eps)
            plus = (weight * upper()[:, k]).sum(dim=(1, 2))
            scale.update(eps=-eps)
            minus = (weight * upper()[:, k]).sum(dim=(1, 2))
            expected[:, i] = (plus - minus) / (2 * eps)
        scale.update(eps=0.0)
        norm = expected.abs().sum(dim=1, keepdim=True)
        expected = torch.where(norm > 0, expected / norm, 0.0)  # a neuron that is off everywhere: zeros
        result = pure_attributions(net, x, "conv3", "relu1", [k])[:, 0]
        assert (result - expected).abs().max().item() < 1e-7, k
        active += int((norm > 0).sum())
    assert active >= 6  # most (neuron, input) pairs carry relevance


def test_one_by_one_convolution_worked_by_hand():
    """A^L = W A^{L-1} (1x1 conv): R_i = sum_s a_i(s) w_ki ReLU(A_k(s)), then L1-normalised."""
    net = nn.Sequential(OrderedDict(lower=nn.Identity(), upper=nn.Conv2d(2, 3, 1, bias=False)))
    with torch.no_grad():
        net.upper.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 1.0], [-1.0, -1.0]])[:, :, None, None])
    x = torch.tensor([[[[1.0, 2.0], [0.0, -1.0]], [[1.0, 0.5], [1.0, 1.0]]]])  # (1, 2, 2, 2)
    # k=0: A_0 = [[-1, 1], [-2, -3]], ReLU keeps one position: R = [2*1*1, 0.5*(-2)*1] = [2, -1]
    # k=1: A_1 = [[1.5, 1.5], [1, 0.5]] > 0: R = [0.5*(1.5+3+0-0.5), 1.5+0.75+1+0.5] = [2, 3.75]
    # k=2: A_2 = -(x_0 + x_1) <= 0 everywhere: no relevance, the row stays zero (not NaN)
    expected = torch.tensor([[2 / 3, -1 / 3], [2 / 5.75, 3.75 / 5.75], [0.0, 0.0]])
    result = pure_attributions(net, x, "upper", "lower", [0, 1, 2])[0]
    torch.testing.assert_close(result, expected)


def test_an_inplace_operation_after_the_lower_layer_is_harmless():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    plain = pure_attributions(_tiny_net(inplace=False), x, "conv3", "bn", [0, 1, 2, 3, 4])
    inplace = pure_attributions(_tiny_net(inplace=True), x, "conv3", "bn", [0, 1, 2, 3, 4])
    torch.testing.assert_close(inplace, plain, rtol=0, atol=1e-12)


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise AssertionError("the backward pass went below the lower layer")


class _Guard(nn.Module):
    """Creates a graph of its own (a tensor that requires grad), whose backward must never run."""

    def __init__(self):
        super().__init__()
        self.scale = torch.ones(1, requires_grad=True)  # not a parameter: not frozen by the call

    def forward(self, x):
        return _NoBackward.apply(x * self.scale)


def test_the_backward_stops_at_the_lower_layer_and_the_head_is_not_run():
    net = nn.Sequential(OrderedDict(guard=_Guard(), conv1=nn.Conv2d(3, 4, 3), relu=nn.ReLU(),
                                    conv2=nn.Conv2d(4, 3, 3), head=nn.Flatten()))
    calls = []
    handle = net.head.register_forward_hook(lambda *_: calls.append(1))
    try:
        x = torch.randn(2, 3, 9, 9)
        assert pure_attributions(net, x, "conv2", "relu", [0, 2]).shape == (2, 2, 4)
        assert pure_attributions_for_pairs(net, x, "conv2", "conv1", [1, 0]).shape == (2, 4)
    finally:
        handle.remove()
    assert calls == []


# -- input heatmaps ----------------------------------------------------------------------------------------
def test_input_attributions_equal_a_backward_per_neuron(resnet18, images):
    neurons = [1, 200, 77]
    result = input_attributions(resnet18, images, "layer3", neurons, neuron_chunk=2)
    expected = loop_input(resnet18, images, "layer3", neurons)
    assert result.shape == (2, 3, 64, 64)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_input_attributions_at_positions_equal_a_backward_per_neuron(resnet18, images):
    neurons = [1, 200, 77]
    positions = torch.randint(0, 4, (2, 3, 2), generator=torch.Generator().manual_seed(6))
    result = input_attributions(resnet18, images, "layer3", neurons, positions=positions, neuron_chunk=2)
    expected = loop_input(resnet18, images, "layer3", neurons, positions)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    # a start at one position differs from the whole-map start
    assert not torch.allclose(result, input_attributions(resnet18, images, "layer3", neurons))
    pairs = input_attributions_for_pairs(resnet18, images, "layer3", [200, 77],
                                         positions=positions[[0, 1], [1, 2]].numpy())
    torch.testing.assert_close(pairs, result[[0, 1], [1, 2]], rtol=1e-4, atol=1e-6)


def test_input_pairs_without_positions_equal_the_full_result(resnet18, images):
    full = input_attributions(resnet18, images, "layer2", [9, 4])
    pairs = input_attributions_for_pairs(resnet18, images, "layer2", [4, 9])
    torch.testing.assert_close(pairs, full[[0, 1], [1, 0]], rtol=1e-4, atol=1e-6)


def test_positions_outside_the_map_are_refused(resnet18, images):
    with pytest.raises(ValueError, match="positions"):
        input_attributions(resnet18, images, "layer4", [0], positions=torch.full((2, 1, 2), 5))
    with pytest.raises(ValueError, match="shape"):
        input_attributions(resnet18, images, "layer4", [0], positions=torch.zeros((2, 2, 2), dtype=int))


# -- the model is left as it was ----------------------------------------------------------------------------
def test_model_state_is_restored_after_success_and_failure(resnet18, images):
    flags = {name: p.requires_grad for name, p in resnet18.named_parameters()}
    resnet18.layer1[0].conv1.weight.requires_grad_(False)
    flags["layer1.0.conv1.weight"] = False
    try:
        pure_attributions(resnet18, images[:1], "layer4", "layer3", [0, 1])
        pure_attributions_for_pairs(resnet18, images[:1], "layer4", "layer3", [0])
        input_attributions(resnet18, images[:1], "layer1", [0])
        input_attributions_for_pairs(resnet18, images[:1], "layer1", [0])
        with pytest.raises(ValueError, match="must run before"):
            pure_attributions(resnet18, images[:1], "layer2", "layer3", [0])
        with pytest.raises(UnknownLayerError):
            pure_attributions(resnet18, images[:1], "layer4", "layer9", [0])
        with pytest.raises(ValueError, match="out of range"):
            pure_attributions(resnet18, images[:1], "layer4", "layer3", [512])
        with pytest.raises(ValueError, match="entries"):
            pure_attributions_for_pairs(resnet18, images, "layer4", "layer3", [0])
        assert _hooks_left(resnet18) == []
        assert {name: p.requires_grad for name, p in resnet18.named_parameters()} == flags
        assert all(p.grad is None for p in resnet18.parameters())
        assert not any(m.training for m in resnet18.modules())
    finally:
        resnet18.layer1[0].conv1.weight.requires_grad_(True)


def test_results_follow_the_dtype_and_grad_mode():
    net = _tiny_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        result = pure_attributions(net, x, "conv3", "relu1", [0])
    assert result.dtype == torch.float64 and result.device == x.device and not result.requires_grad
    assert pure_attributions(net, x, "conv3", "relu1", []).shape == (2, 0, 4)
    assert np.isfinite(result.numpy()).all()


def test_threads_sharing_a_model_get_their_own_results():
    """The app shares one cached model between sessions: concurrent calls must not see each other's hooks."""
    from concurrent.futures import ThreadPoolExecutor

    net = _tiny_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    jobs = [("conv3", "relu1"), ("conv2", "conv1"), ("conv3", "bn"), ("relu2", "conv1")] * 2
    expected = [pure_attributions(net, x, layer, lower, [0, 1]) for layer, lower in jobs]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda job: pure_attributions(net, x, job[0], job[1], [0, 1]), jobs))
    for result, wanted in zip(results, expected, strict=True):
        torch.testing.assert_close(result, wanted)
    assert _hooks_left(net) == []
