"""Scores from embedding distances: polysemanticity, cluster quality and distance correlation.

Everything here is measured on embeddings of a neuron's feature visualisations (cropped reference
samples), e.g. CLIP embeddings ``(n_ref, D)``:

- Eq. 4: ``D_ij = ||e_i - e_j||`` (Euclidean), `pairwise_distances`.
- Eq. 5: ``rho_intra`` = mean of ``D_ij`` over ordered pairs ``i != j`` in the same cluster,
  ``rho_inter`` = mean over pairs in different clusters, `cluster_distances`.
- Polysemanticity (Sec. 4.1, A.2): k-means with k=2 on the embeddings, score ``rho_inter - rho_intra``.
- Sec. 4.2 / A.4: any clustering (PURE, activations) judged by the embedding distances,
  `evaluate_clustering` and `evaluate_methods`; the correlation of distances between methods,
  `distance_correlation`.

Conventions for degenerate cases (a mean over no pairs is 0): a clustering with a single cluster has no
inter pairs and gets ``rho_inter = rho_intra`` (score 0); singleton clusters contribute no intra pairs; if
no cluster has two members, ``rho_intra = 0`` (a single point has no spread). Fewer than two embeddings
give ``0`` for every distance.

Means over ordered pairs ``i != j`` equal means over unordered pairs ``i < j`` (``D`` is symmetric), so the
code works on the condensed upper triangle of `scipy.spatial.distance.pdist`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy.spatial.distance import pdist, squareform

from pure_core.virtual import VirtualNeurons

__all__ = [
    "ClusterEvaluation",
    "DistanceCorrelation",
    "Polysemanticity",
    "cluster_distances",
    "distance_correlation",
    "evaluate_clustering",
    "evaluate_fits",
    "evaluate_methods",
    "fit_methods",
    "overall_distance",
    "pairwise_distances",
    "per_neuron_distance_correlation",
    "polysemanticity",
]


class ClusterEvaluation(NamedTuple):
    """Eq. 5 for one clustering: mean embedding distance inside and across clusters."""

    rho_intra: float
    rho_inter: float


class Polysemanticity(NamedTuple):
    """Result of `polysemanticity`: ``score = rho_inter - rho_intra`` on k=2 embedding clusters."""

    score: float
    rho_intra: float
    rho_inter: float
    overall: float  # mean distance over all pairs, unclustered (Fig. A.2's horizontal axis)
    labels: np.ndarray  # (n,) int64, the k=2 cluster of each embedding


class DistanceCorrelation(NamedTuple):
    """Pearson r between two methods' pairwise distances, with its standard error over random subsets."""

    r: float
    sem: float


def _as_2d(x, name: str) -> np.ndarray:
    """``x`` as a float64 array ``(n, D)``; torch tensors are accepted."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, D), got shape {arr.shape}.")
    return arr


def _condensed_distances(x, name: str = "embeddings") -> np.ndarray:
    """Eq. 4 on the upper triangle: ``(n * (n - 1) / 2,)`` Euclidean distances in `pdist` order."""
    arr = _as_2d(x, name)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain NaN or infinite values.")
    return pdist(arr, metric="euclidean")


def _mean_or_zero(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else 0.0


def _cluster_distances_condensed(distances: np.ndarray, labels: np.ndarray) -> ClusterEvaluation:
    """Eq. 5 from condensed distances ``(n(n-1)/2,)`` and labels ``(n,)``."""
    n = labels.shape[0]
    i, j = np.triu_indices(n, k=1)  # the pair order of pdist
    same = labels[i] == labels[j]
    rho_intra = _mean_or_zero(distances[same])
    if same.all():  # one cluster (or < 2 points): no inter pairs
        return ClusterEvaluation(rho_intra, rho_intra)
    return ClusterEvaluation(rho_intra, _mean_or_zero(distances[~same]))


def _check_labels(labels, n: int) -> np.ndarray:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the embeddings, got {labels.shape}.")
    return labels


def pairwise_distances(embeddings) -> np.ndarray:
    """Eq. 4: Euclidean distance matrix ``(n, n)`` between the rows of ``embeddings (n, D)``."""
    return squareform(_condensed_distances(embeddings))


def cluster_distances(embeddings, labels) -> tuple[float, float]:
    """Eq. 5: ``(rho_intra, rho_inter)`` for ``embeddings (n, D)`` grouped by ``labels (n,)``.

    Means of Eq. 4 distances over ordered pairs ``i != j`` with equal / different labels. One cluster gives
    ``rho_inter = rho_intra``; if no cluster has two members ``rho_intra = 0``.
    """
    distances = _condensed_distances(embeddings)
    labels = _check_labels(labels, _as_2d(embeddings, "embeddings").shape[0])
    return tuple(_cluster_distances_condensed(distances, labels))


def evaluate_clustering(embeddings, labels) -> ClusterEvaluation:
    """Eq. 5 for any clustering (PURE, activations, ...) judged by ``embeddings (n, D)``; ``labels (n,)``."""
    return ClusterEvaluation(*cluster_distances(embeddings, labels))


def overall_distance(embeddings) -> float:
    """Mean Eq. 4 distance over all pairs ``i != j`` of ``embeddings (n, D)`` (0 for fewer than 2 rows)."""
    return _mean_or_zero(_condensed_distances(embeddings))


def polysemanticity(embeddings, random_state: int | None = 0) -> Polysemanticity:
    """Polysemanticity of one neuron from its embeddings ``(n_ref, D)``: k=2 k-means (n_init=10), Eq. 5.

    ``score = rho_inter - rho_intra``; large for neurons whose references form two distinct groups. Fewer than
    two distinct embeddings leave nothing to split: every figure is 0 and all labels 0.
    """
    X = _as_2d(embeddings, "embeddings")
    distances = _condensed_distances(X)
    if len(np.unique(X, axis=0)) < 2:
        return Polysemanticity(0.0, 0.0, 0.0, 0.0, np.zeros(len(X), dtype=np.int64))
    labels = VirtualNeurons(n_clusters=2, random_state=random_state).fit(X).labels_
    rho_intra, rho_inter = _cluster_distances_condensed(distances, labels)
    return Polysemanticity(
        score=rho_inter - rho_intra,
        rho_intra=rho_intra,
        rho_inter=rho_inter,
        overall=_mean_or_zero(distances),
        labels=labels,
    )


def fit_methods(vectors_by_method: Mapping[str, np.ndarray], ks: Sequence[int] = (2, 3, 4, 5),
                random_state: int | None = 0) -> dict[str, dict[int, VirtualNeurons]]:
    """``VirtualNeurons(k)`` fitted on each method's vectors ``(n, d)`` for each k: ``{method: {k: fit}}``
    (PURE's fits are the virtual neurons themselves; `evaluate_fits` judges them)."""
    return {method: {int(k): VirtualNeurons(n_clusters=int(k), random_state=random_state)
                     .fit(_as_2d(vectors, f"vectors of {method!r}")) for k in ks}
            for method, vectors in vectors_by_method.items()}


def evaluate_fits(embeddings, fits: Mapping[str, Mapping[int, VirtualNeurons]]
                  ) -> dict[str, dict[int, ClusterEvaluation]]:
    """Eq. 5 of every fitted clustering judged by ``embeddings (n, D)``: ``{method: {k: evaluation}}``."""
    distances = _condensed_distances(embeddings)
    n = _as_2d(embeddings, "embeddings").shape[0]
    result: dict[str, dict[int, ClusterEvaluation]] = {}
    for method, per_k in fits.items():
        result[method] = {}
        for k, fitted in per_k.items():
            if fitted.labels_.shape[0] != n:
                raise ValueError(f"method {method!r} has {fitted.labels_.shape[0]} vectors but there are {n} "
                                 "embeddings.")
            result[method][int(k)] = _cluster_distances_condensed(distances, fitted.labels_)
    return result


def evaluate_methods(
    embeddings,
    vectors_by_method: Mapping[str, np.ndarray],
    ks: Sequence[int] = (2, 3, 4, 5),
    random_state: int | None = 0,
) -> dict[str, dict[int, ClusterEvaluation]]:
    """Fig. 4 (top left) / A.8 for one neuron: cluster each method's vectors, judge by embedding distances.

    ``embeddings (n, D)`` (e.g. CLIP of the cropped references); ``vectors_by_method`` maps a method name to
    its vectors ``(n, d)`` for the same references in the same order (PURE attributions ``(n, C_lower)``,
    activations ``(n, C_L)``, or other embeddings for the DINOv2-style baseline). Each is clustered with
    ``VirtualNeurons(k)`` (`fit_methods`) and judged (`evaluate_fits`); returns ``{method: {k: evaluation}}``.
    """
    n = _as_2d(embeddings, "embeddings").shape[0]
    for method, vectors in vectors_by_method.items():
        rows = _as_2d(vectors, f"vectors of {method!r}").shape[0]
        if rows != n:
            raise ValueError(f"method {method!r} has {rows} vectors but there are {n} embeddings.")
    return evaluate_fits(embeddings, fit_methods(vectors_by_method, ks, random_state))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two 1-D arrays; NaN for fewer than 2 values or a constant array."""
    if x.size < 2:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc @ xc) * (yc @ yc))
    return float((xc @ yc) / denom) if denom > 0 else float("nan")


def _nonzero_pairs(reference, other, n_top: int | None, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Condensed distances of the first ``n_top`` rows of both arrays, pairs with a zero product dropped."""
    ref, oth = _as_2d(reference, f"reference{where}"), _as_2d(other, f"other{where}")
    if ref.shape[0] != oth.shape[0]:
        raise ValueError(f"reference{where} has {ref.shape[0]} rows but other{where} has {oth.shape[0]}.")
    if n_top is not None:
        ref, oth = ref[:n_top], oth[:n_top]
    d_ref, d_oth = _condensed_distances(ref, f"reference{where}"), _condensed_distances(oth, f"other{where}")
    keep = (d_ref * d_oth) != 0
    return d_ref[keep], d_oth[keep]


def per_neuron_distance_correlation(reference, other) -> float:
    """Pearson r between the pairwise distances of ``reference (n, D)`` and ``other (n, d)`` (one neuron).

    Rows are the same references in the same order (e.g. CLIP embeddings vs PURE attributions); pairs
    where either distance is zero are dropped; NaN when fewer than two pairs remain or one side is constant.
    """
    d_ref, d_oth = _nonzero_pairs(reference, other, None, "")
    return _pearson(d_ref, d_oth)


def distance_correlation(
    reference: Sequence[np.ndarray],
    other: Sequence[np.ndarray],
    n_top: int = 50,
    n_subsets: int = 30,
    random_state: int | None = 0,
) -> DistanceCorrelation:
    """Sec. 4.2 / A.4: how well one method's distances follow another's, pooled over neurons.

    ``reference[i] (n_i, D)`` and ``other[i] (n_i, d)`` hold neuron i's references in the same order, most
    activating first (e.g. CLIP embeddings of the crops vs PURE attributions). Per neuron, the Euclidean
    distances of all pairs among its first ``n_top`` references (upper triangle; the full matrix gives the
    same r) are computed on both sides; pairs whose distance product is zero are dropped; the remaining pairs
    of all neurons are pooled and ``r`` is their Pearson correlation.

    ``sem``: the neurons are split at random (seeded by ``random_state``) into ``n_subsets`` near-equal
    groups, r is computed on each group's pooled pairs, and ``sem = std(r_g, ddof=1) / sqrt(n_groups)``
    (as the authors' notebook: 30 random neuron subsets). With fewer neurons than ``n_subsets`` the pooled
    *pairs* are partitioned instead. Groups with an undefined r are skipped; ``sem`` is NaN with fewer than
    two usable groups.
    """
    if len(reference) != len(other):
        raise ValueError(f"reference has {len(reference)} neurons but other has {len(other)}.")
    if len(reference) == 0:
        raise ValueError("distance_correlation needs at least one neuron.")
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}.")
    pairs = [
        _nonzero_pairs(ref, oth, n_top, f"[{i}]")
        for i, (ref, oth) in enumerate(zip(reference, other, strict=True))
    ]
    d_ref = np.concatenate([p[0] for p in pairs])
    d_oth = np.concatenate([p[1] for p in pairs])
    r = _pearson(d_ref, d_oth)

    rng = np.random.default_rng(random_state)
    n_neurons = len(pairs)
    if n_neurons >= n_subsets:
        neuron_group = rng.permutation(n_neurons) % n_subsets
        group = np.repeat(neuron_group, [p[0].size for p in pairs])
    else:
        group = rng.permutation(d_ref.size) % n_subsets
    r_groups = _grouped_pearson(d_ref, d_oth, group, n_subsets)
    r_groups = r_groups[np.isfinite(r_groups)]
    sem = float(r_groups.std(ddof=1) / np.sqrt(r_groups.size)) if r_groups.size >= 2 else float("nan")
    return DistanceCorrelation(r=r, sem=sem)


def _grouped_pearson(x: np.ndarray, y: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Pearson r of ``x`` and ``y`` within each group ``0..n_groups-1`` (NaN where undefined), vectorised."""
    x = x - x.mean()  # centring first keeps the sums well conditioned
    y = y - y.mean()
    count = np.bincount(group, minlength=n_groups).astype(np.float64)
    sx, sy = np.bincount(group, x, n_groups), np.bincount(group, y, n_groups)
    sxx, syy = np.bincount(group, x * x, n_groups), np.bincount(group, y * y, n_groups)
    sxy = np.bincount(group, x * y, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sxy - sx * sy / count
        var_x = sxx - sx * sx / count
        var_y = syy - sy * sy / count
        r = cov / np.sqrt(var_x * var_y)
    degenerate = ~(var_x > 1e-12 * sxx) | ~(var_y > 1e-12 * syy)  # constant within the group
    r[(count < 2) | degenerate] = np.nan
    return np.clip(r, -1.0, 1.0)
