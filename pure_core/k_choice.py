"""How many virtual neurons: diagnostics per k and a suggested k for one neuron.

Three readings per k of a neuron's PURE vectors ``R (n_ref, C_lower)``:

- **silhouette**: scikit-learn's mean silhouette coefficient of the k-means split (Euclidean, in [-1, 1]):
  how much closer each reference's circuit is to its own virtual neuron than to the next one.
- **stability**: the mean adjusted Rand index between the splits of k-means started from ``n_seeds``
  different seeds (one k-means++ start each). A k that matches the data gives the same split from any
  start (ARI near 1); a k larger than the number of circuits cuts a circuit somewhere arbitrary, and
  different starts cut it differently.
- **score**: the split's ``rho_inter - rho_intra`` under the crops' embeddings (Eq. 5), the paper's own
  measure of how distinct the virtual neurons' feature visualisations are; NaN without embeddings.

`suggest_k` picks, among the stable ks (stability >= ``min_stability``), the one with the highest
silhouette. When no k is stable it suggests k = 1: no split of the circuits is reproducible, so the neuron
is best read as one circuit. (On the demo world every planted two-concept channel at depth is stable at
k = 2, ARI 0.86-1.0, and most one-concept channels are stable at no k.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from sklearn.metrics import adjusted_rand_score, silhouette_score

from pure_core.scores import cluster_distances
from pure_core.virtual import VirtualNeurons

__all__ = ["MIN_STABILITY", "N_SEEDS", "KDiagnostics", "Split", "k_diagnostics", "split_readings",
           "split_stability", "suggest_k"]

N_SEEDS = 5  # k-means starts compared per k
MIN_STABILITY = 0.8  # mean ARI between starts for a k to count as stable


@dataclass(frozen=True)
class KDiagnostics:
    """Per k of ``ks``: ``silhouette``, ``stability`` and ``score`` (NaN where undefined), and the
    ``suggested_k`` (`suggest_k`; 1: no stable split)."""

    ks: tuple[int, ...]
    silhouette: np.ndarray
    stability: np.ndarray
    score: np.ndarray
    suggested_k: int


@dataclass(frozen=True)
class Split:
    """One k-split of a neuron's circuits: its ``labels (n,)``, their ``silhouette`` (NaN for a single
    cluster) and its ``rho_gap``, rho_inter - rho_intra under the crops' embeddings (NaN without them)."""

    labels: np.ndarray
    silhouette: float
    rho_gap: float


def split_readings(R: np.ndarray, k: int, embeddings=None, *, labels: np.ndarray | None = None,
                   random_state: int = 0) -> Split:
    """The `Split` of the circuits ``R (n, C)`` into ``k`` virtual neurons: k-means with ``random_state``
    (`VirtualNeurons`, as precompute and the app split), or ``labels`` when already fitted; ``embeddings
    (n, D)``: the crops' embeddings for the rho gap. Read per k by `k_diagnostics`, per layer by
    `pure_core.depth.depth_profile`."""
    if labels is None:
        labels = VirtualNeurons(n_clusters=k, random_state=random_state).fit(R).labels_
    silhouette = float(silhouette_score(R, labels)) if len(np.unique(labels)) > 1 else np.nan
    rho_gap = np.nan
    if embeddings is not None:
        rho_intra, rho_inter = cluster_distances(embeddings, labels)
        rho_gap = float(rho_inter - rho_intra)
    return Split(labels, silhouette, rho_gap)


def split_stability(R: np.ndarray, k: int, n_seeds: int = N_SEEDS, random_state: int = 0) -> float:
    """Mean pairwise ARI between the k-means splits of ``R`` from seeds ``random_state .. + n_seeds - 1``
    (one k-means++ start each); 1.0 when every start finds the same split."""
    splits = [VirtualNeurons(n_clusters=k, random_state=random_state + s, n_init=1).fit(R).labels_
              for s in range(n_seeds)]
    return float(np.mean([adjusted_rand_score(a, b) for a, b in combinations(splits, 2)]))


def suggest_k(ks: Sequence[int], silhouette: np.ndarray, stability: np.ndarray,
              min_stability: float = MIN_STABILITY) -> int:
    """The stable k (``stability >= min_stability``) with the highest silhouette (ties: the smaller k);
    1 when no k is stable."""
    ks = np.asarray(ks)
    silhouette = np.nan_to_num(np.asarray(silhouette, dtype=np.float64), nan=-np.inf)
    stability = np.nan_to_num(np.asarray(stability, dtype=np.float64), nan=-np.inf)
    stable = stability >= min_stability
    if not stable.any():
        return 1
    return int(ks[stable][np.argmax(silhouette[stable])])


def k_diagnostics(R, ks: Sequence[int], embeddings=None, *, labels: dict[int, np.ndarray] | None = None,
                  n_seeds: int = N_SEEDS, random_state: int = 0,
                  min_stability: float = MIN_STABILITY) -> KDiagnostics:
    """`KDiagnostics` of the PURE vectors ``R (n, C_lower)`` for every k in ``ks`` (those with k >= n are
    NaN). ``labels``: the split of each k when already fitted (k-means with ``random_state``, as precompute
    and the app split); the rest are fitted here. ``embeddings (n, D)``: the crops' embeddings for the score.
    """
    R = np.asarray(R, dtype=np.float64)
    n = len(R)
    ks = tuple(int(k) for k in ks)
    silhouette, stability, score = (np.full(len(ks), np.nan) for _ in range(3))
    for i, k in enumerate(ks):
        if not 2 <= k < n:
            continue
        fitted = split_readings(R, k, embeddings, labels=(labels or {}).get(k), random_state=random_state)
        silhouette[i], score[i] = fitted.silhouette, fitted.rho_gap
        stability[i] = split_stability(R, k, n_seeds, random_state)
    return KDiagnostics(ks, silhouette, stability, score, suggest_k(ks, silhouette, stability, min_stability))
