"""`pure_core.lrp_rules.LeanZPlus` against zennit's own `ZPlus`: the same relevance, less work.

References: zennit's stock EpsilonPlusFlat (its `ZPlus` on every convolution after the first) on the same
model and inputs, and plain autograd while the rules are inactive. The work is counted in convolutions
from the profiler's operator list, never timed.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn
from torch.profiler import profile
from zennit.composites import EpsilonPlusFlat
from zennit.types import Convolution

from pure_core.lrp import canonizer_for
from pure_core.lrp_rules import LeanZPlus


def _signed_net() -> nn.Module:
    """Convolutions after a ReLU (in place), after another convolution (signed input), grouped, strided,
    with and without bias."""
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                         nn.ReLU(), nn.Conv2d(8, 6, 1, bias=False), nn.ReLU()).eval()


def _composites(model: nn.Module) -> tuple[EpsilonPlusFlat, EpsilonPlusFlat]:
    """zennit's stock EpsilonPlusFlat and the same with `LeanZPlus`, each with its own canonizer."""
    def canonizers():
        return [] if canonizer_for(model) is None else [canonizer_for(model)]

    return (EpsilonPlusFlat(canonizers=canonizers()),
            EpsilonPlusFlat(canonizers=canonizers(), layer_map=[(Convolution, LeanZPlus())]))


def _relevance(model: nn.Module, x: torch.Tensor, composite, start) -> torch.Tensor:
    x = x.clone().requires_grad_()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    with composite.context(model) as modified:
        output = modified(x)
        (relevance,) = torch.autograd.grad(output, x, start(output))
    return relevance


def _top_unit(output: torch.Tensor) -> torch.Tensor:
    """Relevance starting at each sample's largest activation of channel 1 (or class 1)."""
    flat = output[:, 1].reshape(len(output), -1)
    start = torch.zeros_like(flat)
    index = flat.argmax(1, keepdim=True)
    start.scatter_(1, index, flat.gather(1, index))
    return torch.zeros_like(output).index_copy_(1, torch.tensor([1]), start.reshape(output[:, 1:2].shape))


@pytest.mark.parametrize("build, size", [
    (_signed_net, 16),
    (lambda: torchvision.models.resnet18(weights=None), 64),
    (lambda: timm.create_model("tf_efficientnet_lite0", pretrained=False), 64),  # signed block inputs
], ids=["signed-net", "torchvision-resnet18", "timm-efficientnet-lite0"])
def test_lean_zplus_hands_down_zennits_relevance(build, size):
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(5))
    stock, lean = _composites(model)
    expected = _relevance(model, x, stock, _top_unit)
    got = _relevance(model, x, lean, _top_unit)
    assert expected.abs().sum() > 0
    assert torch.allclose(got, expected, atol=1e-6 * expected.abs().max().item(), rtol=1e-5)


def _convolutions(model: nn.Module, x: torch.Tensor, composite) -> tuple[int, int]:
    """(forward convolutions, convolution backwards) that one LRP pass runs."""
    with profile() as trace:
        _relevance(model, x, composite, _top_unit)
    names = [event.name for event in trace.events()]
    return names.count("aten::convolution"), names.count("aten::convolution_backward")


def test_lean_zplus_runs_half_the_convolutions_after_a_relu_and_both_halves_on_signed_input():
    torch.manual_seed(0)
    relu_net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                             nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()
    x = torch.randn(2, 3, 12, 12)
    stock, lean = _composites(relu_net)
    # first layer (flat rule, zennit's hook in both): 2 forwards, 2 backwards; each z+ layer: the module's
    # forward and backward plus two halves in zennit, the module's forward plus one half here
    assert _convolutions(relu_net, x, stock) == (2 + 2 * 3, 2 + 2 * 3)
    assert _convolutions(relu_net, x, lean) == (2 + 2 * 2, 2 + 2 * 1)
    signed_net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)).eval()
    stock, lean = _composites(signed_net)
    assert _convolutions(signed_net, x, stock) == (2 + 3, 2 + 3)
    assert _convolutions(signed_net, x, lean) == (2 + 3, 2 + 2)


def test_inactive_rules_give_the_plain_gradient():
    model = _signed_net()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6)).requires_grad_()
    plain_x = x.detach().clone().requires_grad_()
    (plain,) = torch.autograd.grad(model(plain_x), plain_x, torch.ones(2, 6, 8, 8))
    _, lean = _composites(model)
    with lean.context(model) as modified:
        output = modified(x)
        with lean.inactive():
            (gradient,) = torch.autograd.grad(output, x, torch.ones_like(output))
    assert torch.allclose(gradient, plain, atol=1e-6)


def test_second_order_gradients_through_the_relevance_are_zennits():
    model = _signed_net()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7)) - 0.3
    results = []
    for composite in _composites(model):
        leaf = x.clone().requires_grad_()
        with composite.context(model) as modified:
            output = modified(leaf)
            (relevance,) = torch.autograd.grad(output, leaf, _top_unit(output), create_graph=True)
            (second,) = torch.autograd.grad(relevance.square().sum(), leaf)
        results.append((relevance.detach(), second))
    (stock, stock_second), (lean, lean_second) = results
    assert torch.allclose(lean, stock, atol=1e-6 * stock.abs().max().item())
    assert stock_second.abs().sum() > 0
    assert torch.allclose(lean_second, stock_second, atol=1e-5 * stock_second.abs().max().item(), rtol=1e-4)


def test_without_gradients_the_rule_stays_out_of_the_way():
    model = _signed_net()
    x = torch.randn(2, 3, 16, 16)
    _, lean = _composites(model)
    with torch.no_grad(), lean.context(model) as modified:
        output = modified(x)
    assert output.grad_fn is None and torch.equal(output, model(x).detach())
