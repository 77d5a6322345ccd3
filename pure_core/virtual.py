"""Virtual neurons: k-means on a neuron's circuit attributions (PURE, Sec. 3, step 2).

A polysemantic neuron is represented by the lower-layer attribution vectors ``R^{L-1}`` of its reference
samples, shape ``(n_ref, C_lower)``. k-means on these vectors finds one centroid per circuit; each centroid
is a *virtual neuron*. A new sample is assigned to the virtual neuron whose centroid is closest to its own
attribution vector (``predict``).

`VirtualNeurons` follows scikit-learn's estimator conventions, so a reader who knows `KMeans` knows it:
hyper-parameters are stored unchanged, learned attributes end in ``_`` and exist only after `fit`, `fit`
returns ``self``, and `predict`/`transform` raise `sklearn.exceptions.NotFittedError` before `fit`.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.utils.validation import check_array, check_is_fitted

__all__ = ["VirtualNeurons", "radius_ratio"]


def radius_ratio(distances, radii) -> np.ndarray:
    """``(n,)``: per row of ``distances (n, k)`` to k centroids, the smallest distance / radius over the
    centroids (``radii (k,)``). Above 1, the point is beyond every radius; a zero radius makes any other
    point infinitely far."""
    distances = np.atleast_2d(np.asarray(distances, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(distances > 0, distances / np.asarray(radii, dtype=np.float64), 0.0)
    return ratios.min(axis=1)


class VirtualNeurons(TransformerMixin, ClusterMixin, BaseEstimator):
    """Split one neuron into ``n_clusters`` virtual neurons by k-means on its attribution vectors.

    Parameters
    ----------
    n_clusters : int, default 2
        Number of virtual neurons (k). ``1`` gives a single centroid, the mean of all vectors.
    random_state : int or None, default 0
        Seed of the k-means initialisation; a fixed seed makes `fit` deterministic.
    n_init : int, default 10
        Number of k-means++ restarts; the run with the lowest inertia is kept (as in the paper).
    radius_quantile : float, default 0.95
        Quantile of the members' distances to their centroid that makes a virtual neuron's radius.

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, n_features)
        Centroids, one per virtual neuron.
    labels_ : ndarray (n_samples,) int
        Virtual neuron of each training vector.
    inertia_ : float
        Sum of squared distances of the training vectors to their centroid.
    n_features_in_ : int
        Number of features (lower-layer channels) seen during `fit`.
    n_iter_ : int
        Lloyd iterations of the best run.
    radii_ : ndarray (n_clusters,)
        Per virtual neuron, the ``radius_quantile`` of its members' distances to its centroid (0 for an
        empty cluster); only when the training vectors are known (`fit`, `from_stored`).
    """

    def __init__(self, n_clusters: int = 2, random_state: int | None = 0, n_init: int = 10,
                 radius_quantile: float = 0.95):
        self.n_clusters = n_clusters
        self.random_state = random_state
        self.n_init = n_init
        self.radius_quantile = radius_quantile

    def fit(self, R, y=None) -> VirtualNeurons:
        """Cluster the attribution vectors ``R (n_ref, C_lower)``; returns ``self``. ``y`` is ignored."""
        X = self._check_input(R, reset=True)
        if not isinstance(self.n_clusters, numbers.Integral) or isinstance(self.n_clusters, bool) \
                or self.n_clusters < 1:
            raise ValueError(f"n_clusters must be a positive integer, got {self.n_clusters!r}.")
        if self.n_clusters > X.shape[0]:
            raise ValueError(
                f"n_clusters={self.n_clusters} virtual neurons need at least as many reference vectors, "
                f"got n_samples={X.shape[0]}."
            )
        kmeans = KMeans(n_clusters=self.n_clusters, random_state=self.random_state, n_init=self.n_init)
        kmeans.fit(X)
        self.cluster_centers_ = kmeans.cluster_centers_
        self.labels_ = kmeans.labels_.astype(np.int64)
        self.inertia_ = float(kmeans.inertia_)
        self.n_iter_ = int(kmeans.n_iter_)
        self.radii_ = self._radii(X, self.labels_)
        return self

    @classmethod
    def from_centroids(cls, centers, labels=None, random_state: int | None = 0) -> VirtualNeurons:
        """Fitted virtual neurons with the given centroids ``(k, C_lower)`` (e.g. stored by precompute), so
        `predict` / `transform` assign new vectors to them without refitting; ``labels (n,)`` of the vectors
        they were fitted on, when known, become ``labels_``."""
        centers = check_array(centers, dtype=[np.float64, np.float32])
        model = cls(n_clusters=len(centers), random_state=random_state)
        model.cluster_centers_ = centers
        model.n_features_in_ = centers.shape[1]
        if labels is not None:
            model.labels_ = np.asarray(labels, dtype=np.int64)
        return model

    @classmethod
    def from_stored(cls, centers, R, random_state: int | None = 0) -> VirtualNeurons:
        """Virtual neurons from stored centroids ``(k, C_lower)``, the vectors ``R (n, C_lower)`` they were
        fitted on assigned by `predict` and numbered by size (`numbered_by_size`): the split precompute
        stored, as the app shows it."""
        model = cls.from_centroids(np.asarray(centers, dtype=np.float64), random_state=random_state)
        X = np.atleast_2d(np.asarray(R, dtype=np.float64))
        numbered = model.numbered_by_size(model.predict(X))
        numbered.radii_ = numbered._radii(X, numbered.labels_)
        return numbered

    def numbered_by_size(self, labels=None) -> VirtualNeurons:
        """These virtual neurons renumbered by the size of their clusters in ``labels (n,)`` (default
        ``labels_``), largest first, ties by first member: "VN 1" is the biggest. The result's ``labels_``
        are ``labels`` renumbered alike."""
        check_is_fitted(self, "cluster_centers_")
        fitted_split = labels is None  # the radii (of the training split) carry over
        labels = np.asarray(self.labels_ if fitted_split else labels, dtype=np.int64)
        k = len(self.cluster_centers_)
        sizes = np.bincount(labels, minlength=k)
        first = np.array([np.flatnonzero(labels == c)[0] if sizes[c] else len(labels) for c in range(k)])
        order = np.lexsort((first, -sizes))  # new cluster i = old cluster order[i]
        relabel = np.empty(k, dtype=np.int64)
        relabel[order] = np.arange(k)
        numbered = type(self).from_centroids(self.cluster_centers_[order], relabel[labels], self.random_state)
        numbered.radius_quantile = self.radius_quantile
        if fitted_split and hasattr(self, "radii_"):
            numbered.radii_ = self.radii_[order]
        return numbered

    def transform(self, R) -> np.ndarray:
        """Euclidean distances ``(n, n_clusters)`` from each vector of ``R (n, C_lower)`` to each centroid."""
        check_is_fitted(self, "cluster_centers_")
        X = self._check_input(R, reset=False)
        return euclidean_distances(X, self.cluster_centers_.astype(X.dtype, copy=False))

    def predict(self, R) -> np.ndarray:
        """Nearest centroid ``(n,)`` (the virtual neuron) of each vector of ``R (n, C_lower)``."""
        return np.argmin(self.transform(R), axis=1).astype(np.int64)

    def radius_ratio(self, R) -> np.ndarray:
        """``(n,)``: for each vector of ``R (n, C_lower)``, the smallest distance-to-centroid over radius
        (`radii_`) among the virtual neurons (`radius_ratio`). Above 1, the vector is farther from every
        centroid than that virtual neuron's references usually are."""
        check_is_fitted(self, "radii_")
        return radius_ratio(self.transform(R), self.radii_)

    def unlike_any_circuit(self, R) -> np.ndarray:
        """``(n,)`` bool: vectors beyond the radius of every virtual neuron (`radius_ratio` > 1)."""
        return self.radius_ratio(R) > 1.0

    def _radii(self, X: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The ``radius_quantile`` of each cluster's members' distances to its centroid (0 when empty)."""
        own = self.transform(X)[np.arange(len(X)), labels]
        return np.array([np.quantile(own[labels == c], self.radius_quantile) if np.any(labels == c) else 0.0
                         for c in range(len(self.cluster_centers_))])

    def _check_input(self, R, *, reset: bool) -> np.ndarray:
        """2-D float array (float16 and integers are promoted to float64); checks the feature count."""
        if hasattr(R, "detach"):  # a torch tensor
            R = R.detach().cpu().numpy()
        X = check_array(R, dtype=[np.float64, np.float32], ensure_min_samples=1)
        if reset:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but VirtualNeurons is expecting {self.n_features_in_} "
                "features as input (the lower-layer channels it was fitted on)."
            )
        return X
