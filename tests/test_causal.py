"""Causal checks: ablating a virtual neuron's circuit channels in the lower layer, checked by hand on a net
whose neuron is a known sum of lower-layer channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pure_core.causal import CausalCheck, causal_check, circuit_channels


class SumNet(nn.Module):
    """lower = ReLU(x) on 4 channels (one per input channel); the analysed layer's channel 0 is
    ReLU(sum_c w_c * lower_c) and channel 1 its negation, so activations are known in closed form."""

    def __init__(self, weights):
        super().__init__()
        self.lower = nn.ReLU()
        self.layer = nn.Conv2d(4, 2, 1, bias=False)
        with torch.no_grad():
            w = torch.tensor(weights, dtype=torch.float32)
            self.layer.weight.copy_(torch.stack([w, -w])[:, :, None, None])
        self.head = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.head(torch.relu(self.layer(self.lower(x))))


def _inputs() -> tuple[torch.Tensor, np.ndarray]:
    """Group 0 lights channels 0 and 1, group 1 channels 2 and 3, all with a small bit of channel 1."""
    x = torch.zeros(6, 4, 3, 3)
    x[:3, 0] = torch.tensor([1.0, 2.0, 3.0])[:, None, None]
    x[:3, 1] = 1.0
    x[3:, 2] = torch.tensor([2.0, 1.0, 1.0])[:, None, None]
    x[3:, 3] = 0.5
    x[3:, 1, 0, 0] = 0.5
    return x, np.array([0, 0, 0, 1, 1, 1])


def test_circuit_channels_by_weight_and_by_contrast():
    centroids = np.array([[0.5, 0.4, 0.1, 0.0], [0.1, 0.45, 0.2, 0.25]])
    assert [c.tolist() for c in circuit_channels(centroids, 2)] == [[0, 1], [1, 3]]
    # contrast: own weight minus the other's: (0.4, -0.05, -0.1, -0.25) and (-0.4, 0.05, 0.1, 0.25)
    assert [c.tolist() for c in circuit_channels(centroids, 2, contrast=True)] == [[0, 1], [3, 2]]
    with pytest.raises(ValueError, match="n_channels"):
        circuit_channels(centroids, 5)


def test_zero_ablation_removes_what_the_hand_computation_says():
    net = SumNet([1.0, 1.0, 1.0, 1.0]).eval()
    x, groups = _inputs()
    centroids = np.array([[0.6, 0.4, 0.0, 0.0], [0.0, 0.0, 0.7, 0.3]])
    result = causal_check(net, x, "layer", "lower", 0, centroids, groups, n_channels=2, mode="zero",
                          contrast=False)
    # max over space of the sum of channels: group 0 = (2, 3, 4), group 1 = (2.5+0.5, 1.5+0.5, 1.5+0.5)
    np.testing.assert_allclose(result.baseline, [2, 3, 4, 3, 2, 2])
    np.testing.assert_allclose(result.ablated[0], [0, 0, 0, 2.5, 1.5, 1.5])  # channels 0, 1 removed
    np.testing.assert_allclose(result.ablated[1], [2, 3, 4, 0.5, 0.5, 0.5])  # channels 2, 3 removed
    np.testing.assert_allclose(result.removed, [[1.0, 1 - 5.5 / 7], [0.0, 1 - 1.5 / 7]])
    np.testing.assert_allclose(result.selectivity, [1.0 - (1 - 5.5 / 7), (1 - 1.5 / 7) - 0.0])
    assert not net.lower._forward_hooks and not net.layer._forward_hooks


def test_mean_ablation_replaces_by_the_mean_over_references_and_space():
    net = SumNet([1.0, 0.0, 0.0, 0.0]).eval()  # the neuron reads channel 0 only
    x, groups = _inputs()
    centroids = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    result = causal_check(net, x, "layer", "lower", 0, centroids, groups, n_channels=1, mode="mean")
    mean_channel_0 = (1 + 2 + 3) / 6  # over all six references and every position
    np.testing.assert_allclose(result.ablated[0], [mean_channel_0] * 6, rtol=1e-6)
    np.testing.assert_allclose(result.ablated[1], result.baseline)  # channel 2 is not read
    assert result.mode == "mean"


def test_batches_give_the_values_of_one_pass_and_bad_arguments_are_errors():
    net = SumNet([1.0, 0.5, 2.0, 1.0]).eval()
    x, groups = _inputs()
    centroids = np.array([[0.6, 0.4, 0.0, 0.0], [0.0, 0.0, 0.7, 0.3]])
    one = causal_check(net, x, "layer", "lower", 0, centroids, groups, n_channels=2)
    batched = causal_check(net, x, "layer", "lower", 0, centroids, groups, n_channels=2, batch_size=4)
    np.testing.assert_allclose(one.ablated, batched.ablated, rtol=1e-6)
    np.testing.assert_allclose(one.baseline, batched.baseline, rtol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        causal_check(net, x, "layer", "lower", 0, centroids, groups, mode="noise")
    with pytest.raises(ValueError, match="groups"):
        causal_check(net, x, "layer", "lower", 0, centroids, groups[:3])


def test_removed_is_nan_for_a_group_without_activation():
    ablated = np.array([[0.0, 0.0], [1.0, 0.0]])
    channels, groups = [np.array([0]), np.array([1])], np.array([0, 1])
    result = CausalCheck(channels, np.array([1.0, 0.0]), ablated, groups, "zero")
    removed = result.removed
    assert removed[0, 0] == 1.0 and removed[1, 0] == 0.0 and np.isnan(removed[:, 1]).all()
    np.testing.assert_allclose(result.selectivity, [1.0, np.nan])
