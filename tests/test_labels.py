"""Labels of references and virtual neurons (`pure_core.labels`) against hand-computed cases, and the one
forward pass that gives both the baseline vectors and the predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pure_core.activations import pooled_activations, pooled_activations_and_outputs
from pure_core.labels import LabelShare, label_shares, top_classes


def rows(shares: list[LabelShare]) -> list[tuple[int, int, float, float]]:
    """Label, count, share and enrichment rounded to 12 places (the by-hand values are decimal)."""
    return [(s.label, s.count, round(s.share, 12), round(s.enrichment, 12)) for s in shares]


def test_shares_and_enrichment_by_hand():
    # 10 references: group 0 holds 4 x label 7 and 1 x label 3; group 1 holds 1 x 7, 3 x 3 and 1 x 5.
    labels = np.array([7, 7, 7, 7, 3, 7, 3, 3, 3, 5])
    groups = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    first, second = label_shares(labels, groups, 2)
    # label 7: 5 of 10 overall; in group 0, 4 of 5 -> share 0.8, enrichment 0.8 / 0.5 = 1.6
    assert rows(first) == [(7, 4, 0.8, 1.6), (3, 1, 0.2, 0.5)]
    # group 1: label 3 (3 of 5, overall 4 of 10 -> 1.5) and label 5 (1 of 5, overall 1 of 10 -> 2.0) are
    # over-represented, most frequent first; label 7 (0.2 / 0.5) comes after them
    assert rows(second) == [(3, 3, 0.6, 1.5), (5, 1, 0.2, 2.0), (7, 1, 0.2, 0.4)]
    assert label_shares(labels, groups, 2, top=1) == [[first[0]], [second[0]]]


def test_unlabelled_references_count_nowhere_and_empty_groups_get_no_labels():
    labels = np.array([2, -1, 2, 4, -1])
    groups = np.array([0, 0, 1, 1, 1])
    zero, one, two = label_shares(labels, groups, 3)
    assert rows(zero) == [(2, 1, 1.0, 1.5)]  # 1 labelled member; label 2 is 2 of 3 labelled references
    assert rows(one) == [(4, 1, 0.5, 1.5), (2, 1, 0.5, 0.75)]
    assert two == []
    with pytest.raises(ValueError, match="equal 1-D"):
        label_shares(labels, groups[:3], 3)


def test_a_stray_reference_never_names_a_group_even_when_over_represented():
    # a control channel: label 1 everywhere but for one stray 2 in group 0, and group 0 holds a bit less 1
    # than the neuron as a whole (enrichment < 1); the stray 2 is over-represented but 1 of 20 (5 %)
    labels = np.array([1] * 19 + [2] + [1] * 20)
    groups = np.array([0] * 20 + [1] * 20)
    first, second = label_shares(labels, groups, 2)
    assert rows(first)[0][:2] == (1, 19) and rows(first)[1][:2] == (2, 1)
    assert rows(second) == [(1, 20, 1.0, round(1 / (39 / 40), 12))]


def test_a_monosemantic_neuron_names_each_group_by_its_one_label():
    labels = np.full(12, 9)
    assert [rows(g) for g in label_shares(labels, np.arange(12) % 2, 2)] == [[(9, 6, 1.0, 1.0)]] * 2


def test_top_classes_are_the_softmax_ranking():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 5.0, -1.0, 0.0]])
    classes, probabilities = top_classes(logits, m=3)
    assert classes.tolist() == [[1, 3, 2], [0, 1, 3]]  # a tie keeps the lower class first
    expected = torch.softmax(logits, dim=1).numpy()
    assert np.allclose(probabilities, np.take_along_axis(expected, classes, axis=1))
    assert np.all(np.diff(probabilities, axis=1) <= 0)
    assert top_classes(logits, m=10)[0].shape == (2, 4)  # never more than the classes there are
    with pytest.raises(ValueError, match="n_classes"):
        top_classes(torch.zeros(2, 3, 4))


class _Net(nn.Module):
    """A conv layer followed by an in-place ReLU and a classifier head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        with torch.no_grad():
            self.conv.bias[:2] = -10.0  # channels 0 and 1 never positive
        self.act = nn.ReLU(inplace=True)
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        return self.head(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_one_pass_gives_the_layer_statistics_and_the_outputs():
    net, x = _Net().eval(), torch.randn(3, 3, 9, 9)
    maximum, positions, mean, outputs = pooled_activations_and_outputs(net, x, "conv")
    expected = pooled_activations(net, x, "conv")
    # taken before the in-place ReLU changed the conv's output: negative maxima survive
    for got, want in zip((maximum, positions, mean), expected, strict=True):
        assert torch.equal(got, want)
    assert (maximum[:, :2] < 0).all()
    assert torch.allclose(outputs, net(x))
    assert not net.conv._forward_hooks  # the hook is gone
