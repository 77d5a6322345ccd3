"""LRP input heatmaps (`pure_core.lrp`) and the heatmap-method registry (`pure_core.heatmaps`).

References used here, each independent of the batched path:
- conservation: on a bias-free ReLU conv net, EpsilonPlusFlat (flat, then z+) hands exactly the start
  activation A_k(h*, w*) down to the pixels;
- zennit's own ``Gradient`` attributor with the same composite, one pair at a time, on the network cut at
  the analysed layer;
- the model itself: canonized outputs equal the original's, and nothing is left behind afterwards.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

from pure_core import lrp
from pure_core.attribution import input_attributions_for_pairs
from pure_core.heatmaps import HEATMAP_METHODS, input_heatmaps_for_pairs, resolve_heatmap_method
from pure_core.lrp import canonizer_for, lrp_composite, lrp_heatmaps_for_pairs


def _randomise_batch_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so that merging them matters."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(0.2 * torch.rand(n, generator=generator) - 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return _randomise_batch_norms(torchvision.models.resnet18(weights=None))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _bias_free_relu_net() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.ReLU()).eval()


def _argmax_positions(model: nn.Module, images: torch.Tensor, layer: str, neurons: list[int]) -> torch.Tensor:
    """``(B, 2)`` argmax (h, w) of each input's neuron in ``layer``'s map, and the activations there."""
    maps = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _a, output: maps.setdefault("o", output))
    with torch.no_grad():
        model(images)
    handle.remove()
    chosen = maps["o"][torch.arange(len(images)), neurons]
    flat = chosen.flatten(1).argmax(1)
    positions = torch.stack([flat // chosen.shape[2], flat % chosen.shape[2]], dim=1)
    return positions, chosen.flatten(1).max(1).values


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


def test_relevance_is_conserved_from_the_start_activation_to_the_pixels(images):
    model = _bias_free_relu_net()
    neurons = [0, 3, 5]
    positions, start = _argmax_positions(model, images.abs(), "5", neurons)
    heatmaps = input_attributions_for_pairs(model, images.abs(), "5", neurons, positions,
                                            composite=EpsilonPlusFlat())
    assert torch.all(start > 0)
    assert torch.allclose(heatmaps.sum(dim=(1, 2)), start, rtol=1e-4)


def test_batched_lrp_equals_zennits_attributor_pair_by_pair(resnet18, images):
    neurons = [3, 100, 511]
    positions, _ = _argmax_positions(resnet18, images, "layer4", neurons)
    batched = lrp_heatmaps_for_pairs(resnet18, images, "layer4", neurons, positions)
    trunk = nn.Sequential(*list(resnet18.children())[:-2])  # the same modules, cut after layer4
    for b, (k, (h, w)) in enumerate(zip(neurons, positions.tolist(), strict=True)):
        def start(output, k=k, h=h, w=w):
            relevance = torch.zeros_like(output)
            relevance[:, k, h, w] = output[:, k, h, w]
            return relevance

        composite = EpsilonPlusFlat(canonizers=[ResNetCanonizer()])
        with Gradient(model=trunk, composite=composite) as attributor:
            _, relevance = attributor(images[b:b + 1], start)
        expected = relevance.sum(dim=1)[0]
        assert torch.allclose(batched[b], expected, atol=1e-6 * expected.abs().max().item())
        assert expected.abs().sum() > 0


def test_a_batch_equals_its_pairs_one_by_one(resnet18, images):
    neurons, positions = [7, 7, 42], [(0, 1), (1, 1), (1, 0)]
    batched = lrp_heatmaps_for_pairs(resnet18, images, "layer4", neurons, positions)
    for b in range(len(images)):
        single = lrp_heatmaps_for_pairs(resnet18, images[b:b + 1], "layer4", neurons[b:b + 1],
                                        positions[b:b + 1])
        assert torch.allclose(batched[b], single[0], atol=1e-6 * single.abs().max().item())


def test_batches_larger_than_the_cpu_batch_are_split_with_the_same_result(resnet18, images, monkeypatch):
    neurons, positions = [7, 7, 42], np.array([(0, 1), (1, 1), (1, 0)])
    whole = lrp_heatmaps_for_pairs(resnet18, images, "layer4", neurons, positions)
    monkeypatch.setattr(lrp, "CPU_BATCH", 2)  # 3 pairs: a batch of 2 and one of 1
    split = lrp_heatmaps_for_pairs(resnet18, images, "layer4", neurons, positions)
    assert split.shape == whole.shape and torch.allclose(split, whole, atol=1e-6 * whole.abs().max().item())


@pytest.mark.parametrize("build", [
    lambda: torchvision.models.resnet18(weights=None),
    lambda: timm.create_model("resnet18", pretrained=False),
    lambda: timm.create_model("resnet26", pretrained=False),
    lambda: timm.create_model("tf_efficientnet_lite0", pretrained=False),
], ids=["torchvision-resnet18", "timm-resnet18", "timm-resnet26-bottleneck", "timm-efficientnet-lite0"])
def test_canonized_models_compute_the_same_outputs_and_are_restored_afterwards(build):
    torch.manual_seed(0)
    model = _randomise_batch_norms(build())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(x)
        with lrp_composite(model).context(model):
            canonized = model(x)
        after = model(x)
    # zennit's own merge (torchvision) leaves x / sqrt(1 + 1e-5) per batch norm; ours is exact
    assert torch.allclose(canonized, before, atol=1e-4 * before.abs().max().item())
    assert torch.equal(after, before) and _hooks(model) == 0
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()) and state.keys() == \
        model.state_dict().keys()
    assert not any("forward" in vars(m) or hasattr(m, "canonizer_sum") for m in model.modules())


def test_lrp_leaves_no_hook_and_the_model_unchanged_also_on_errors(resnet18, images):
    flags = [p.requires_grad for p in resnet18.parameters()]
    with torch.no_grad():
        before = resnet18(images)
    lrp_heatmaps_for_pairs(resnet18, images, "layer4", [1, 2, 3], [(0, 0), (1, 1), (0, 1)])
    with pytest.raises(ValueError, match="positions"):
        lrp_heatmaps_for_pairs(resnet18, images, "layer4", [1, 2, 3], [(9, 9), (1, 1), (0, 1)])
    with torch.no_grad():
        assert torch.equal(resnet18(images), before)
    assert _hooks(resnet18) == 0 and [p.requires_grad for p in resnet18.parameters()] == flags


def test_threads_sharing_a_model_never_see_each_others_rules(resnet18, images):
    neurons, positions = [1, 2, 3], [(0, 0), (1, 1), (0, 1)]
    methods = (lrp_heatmaps_for_pairs, input_attributions_for_pairs)
    expected = [method(resnet18, images, "layer4", neurons, positions) for method in methods]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(method, resnet18, images, "layer4", neurons, positions)
                   for method in methods * 3]
    for future, reference in zip(futures, expected * 3, strict=True):
        assert torch.allclose(future.result(), reference, atol=1e-6 * reference.abs().max().item())
    assert _hooks(resnet18) == 0


def test_auto_picks_lrp_where_a_canonizer_exists_and_gradient_x_input_elsewhere(resnet18):
    assert list(HEATMAP_METHODS) == ["lrp", "gradient_x_input"]
    assert resolve_heatmap_method(resnet18) == "lrp"
    assert resolve_heatmap_method(timm.create_model("tf_efficientnet_lite0")) == "lrp"
    plain = _bias_free_relu_net()
    assert canonizer_for(plain) is None and resolve_heatmap_method(plain, "auto") == "gradient_x_input"
    with_gates = timm.create_model("efficientnet_b0")  # squeeze-excitation: no LRP rule written here
    assert canonizer_for(with_gates) is None and resolve_heatmap_method(with_gates) == "gradient_x_input"
    assert resolve_heatmap_method(resnet18, "gradient_x_input") == "gradient_x_input"
    with pytest.raises(ValueError, match="does not support"):
        resolve_heatmap_method(plain, "lrp")
    with pytest.raises(ValueError, match="unknown heatmap method"):
        resolve_heatmap_method(plain, "lrp-epsilon")


def test_heatmaps_by_name_are_the_methods_own_results(resnet18, images):
    neurons, positions = [1, 2, 3], [(0, 0), (1, 1), (0, 1)]
    gradient = input_heatmaps_for_pairs(resnet18, images, "layer4", neurons, positions, "gradient_x_input")
    assert torch.equal(gradient, input_attributions_for_pairs(resnet18, images, "layer4", neurons, positions))
    lrp = input_heatmaps_for_pairs(resnet18, images, "layer4", neurons, positions, "auto")
    assert torch.equal(lrp, lrp_heatmaps_for_pairs(resnet18, images, "layer4", neurons, positions))
    assert not torch.allclose(lrp, gradient)
