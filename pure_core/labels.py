"""Labels of references and virtual neurons: which classes a group of references is about.

- `top_classes`: a classifier's top-m classes and their softmax probabilities per image (the model's own
  labels of its references, for networks with categories such as ImageNet classifiers).
- `label_shares`: per group of references (a virtual neuron, an activation cluster), its labels with their
  share of the group and their enrichment over the neuron's references as a whole. A group's labels are
  those over-represented in it (enrichment >= 1) that hold at least `MIN_SHARE` of it, most frequent first,
  then the others most frequent first: a group is named by what it holds most of among what sets it apart
  from the rest of the neuron, and never by a stray reference or two.

Labels are integers into a vocabulary (class names); -1 marks a reference without a label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MIN_SHARE", "TOP_CLASSES", "LabelShare", "label_shares", "top_classes"]

TOP_CLASSES = 5  # classes kept per reference (the first is its label for `label_shares`)
# An over-represented label names a group only when it holds this share of it: one stray reference among a
# control channel's 38 (2.6 %, enrichment 1.9) named a virtual neuron of the demo before this rule.
MIN_SHARE = 0.1


def top_classes(logits: torch.Tensor, m: int = TOP_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` most probable classes of each row of ``logits (B, n_classes)``: ``classes (B, m)`` int64
    by descending softmax probability (ties: lower class id first) and ``probabilities (B, m)`` float32."""
    if logits.ndim != 2:
        raise ValueError(f"expected class logits of shape (B, n_classes), got {tuple(logits.shape)}")
    probabilities = torch.softmax(logits.detach().float(), dim=1)
    m = min(int(m), probabilities.shape[1])
    # a stable descending sort keeps equal probabilities in class order (topk does not promise an order)
    order = torch.sort(probabilities, dim=1, descending=True, stable=True).indices[:, :m]
    values = torch.gather(probabilities, 1, order)
    return order.cpu().numpy().astype(np.int64), values.cpu().numpy().astype(np.float32)


@dataclass(frozen=True)
class LabelShare:
    """One label of a group: ``count`` of the group's labelled references carry it, ``share`` = count / the
    group's labelled references, ``enrichment`` = share / the label's share among all the references."""

    label: int
    count: int
    share: float
    enrichment: float


def label_shares(
    labels: np.ndarray, groups: np.ndarray, n_groups: int, top: int = 3
) -> list[list[LabelShare]]:
    """Per group ``0..n_groups-1`` of ``groups (n,)``, at most ``top`` labels of ``labels (n,)`` (-1: none):
    over-represented ones (enrichment >= 1) holding at least `MIN_SHARE` of the group most frequent first,
    then the rest most frequent first (ties: higher enrichment, then lower label). A group without labelled
    references gets an empty list."""
    labels, groups = np.asarray(labels, dtype=np.int64), np.asarray(groups, dtype=np.int64)
    if labels.shape != groups.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and groups {groups.shape} must be equal 1-D shapes")
    known = labels >= 0
    vocabulary, codes = np.unique(labels[known], return_inverse=True)
    counts = np.zeros((n_groups, len(vocabulary)), dtype=np.int64)
    np.add.at(counts, (groups[known], codes), 1)
    overall = counts.sum(axis=0) / max(1, int(known.sum()))
    out: list[list[LabelShare]] = []
    for row in counts:
        size = int(row.sum())
        present = np.flatnonzero(row)
        shares = row[present] / max(1, size)
        enrichment = shares / overall[present]
        order = sorted(range(len(present)),
                       key=lambda i: (enrichment[i] < 1 - 1e-9 or shares[i] < MIN_SHARE - 1e-9,
                                      -row[present[i]], -enrichment[i], vocabulary[present[i]]))
        out.append([LabelShare(int(vocabulary[present[i]]), int(row[present[i]]), float(shares[i]),
                               float(enrichment[i])) for i in order[:top]])
    return out
