"""Virtual neurons of a stored neuron for any k, and the scores of that split, for the pages.

The virtual neurons are `pure_core.virtual.VirtualNeurons` (k-means) with the run's seed, so the app splits
a neuron exactly as precompute did: PURE reuses the centroids precompute stored for its ks (loaded into a
`VirtualNeurons`, whose `predict` assigns the references), any other k and method is fitted now. Clusters
are numbered by size, largest first (ties by first member), so "VN 1" is the biggest.

k-means runs on at most a few hundred vectors with one BLAS/OpenMP thread: on tiny arrays the thread pool's
start-up costs ~20x the work (measured: 150 ms vs 7 ms for 60 x 64 vectors, n_init=10). UMAP is never fitted
here; its coordinates come from the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from app.store_access import NeuronData, RunRef, neuron_data, run_details
from store.schema import METHODS, KChoice

if TYPE_CHECKING:  # scikit-learn takes ~1 s to import; the overview page never needs it
    from pure_core.labels import LabelShare
    from pure_core.virtual import VirtualNeurons

METHOD_LABELS = {
    "pure": "PURE (circuits)",
    "activation": "activation clustering",
    "embedding": "embedding clustering (upper bound)",
    "unclustered": "unclustered",
}


@dataclass(frozen=True)
class Clustering:
    """Virtual neurons of one neuron for one method and k, numbered by size (largest first).

    ``virtual_neurons``: the fitted `VirtualNeurons` (centroids ``(k, d)`` in the method's vector space);
    ``labels (n,)`` of the references; ``sizes (k,)``; ``rho_intra (k,)``: mean embedding distance inside each
    cluster (NaN without embeddings or for a single member); ``evaluation``: (rho_intra, rho_inter) of the
    whole clustering under the embedder (Eq. 5) or None.
    """

    method: str
    k: int
    virtual_neurons: VirtualNeurons
    labels: np.ndarray
    sizes: np.ndarray
    rho_intra: np.ndarray
    evaluation: tuple[float, float] | None

    @property
    def centers(self) -> np.ndarray:
        """Centroids ``(k, d)``, one per virtual neuron."""
        return self.virtual_neurons.cluster_centers_

    def distances(self, vector: np.ndarray) -> np.ndarray:
        """Euclidean distances ``(k,)`` of a vector ``(d,)`` to the centroids (`VirtualNeurons.transform`)."""
        return self.virtual_neurons.transform(_as_rows(vector))[0]

    def assign(self, vector: np.ndarray) -> int:
        """The virtual neuron (0-based) of a vector ``(d,)``: nearest centroid (`VirtualNeurons.predict`)."""
        return int(self.virtual_neurons.predict(_as_rows(vector))[0])

    @property
    def radii(self) -> np.ndarray:
        """``(k,)`` per virtual neuron, the 95th percentile of its references' distances to its centroid
        (`VirtualNeurons.radii_`): beyond every radius, a circuit is unlike any of the neuron's."""
        return self.virtual_neurons.radii_


def _as_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as float64 rows ``(n, d)`` (a single ``(d,)`` vector becomes one row)."""
    return np.atleast_2d(np.asarray(vectors, dtype=np.float64))


def fit_virtual_neurons(vectors: np.ndarray, k: int, seed: int) -> VirtualNeurons:
    """k-means (`VirtualNeurons`, ``seed``) on ``vectors (n, d)`` with one thread, numbered by size."""
    from pure_core.threads import one_thread
    from pure_core.virtual import VirtualNeurons

    with one_thread():
        fitted = VirtualNeurons(n_clusters=int(k), random_state=seed).fit(_as_rows(vectors))
    return fitted.numbered_by_size()


def _vectors(data: NeuronData, method: str) -> np.ndarray | None:
    return {"pure": data.pure, "activation": data.activation, "embedding": data.embeddings}[method]


@st.cache_data(show_spinner=False, max_entries=2048)
def clustering(run: RunRef, neuron: int, k: int, method: str = "pure") -> Clustering | None:
    """Virtual neurons of ``neuron`` for ``k`` by ``method`` ("pure", "activation" or "embedding"); None
    when the vectors are missing or fewer than ``k``. Stored PURE centroids where precompute kept them for
    this k, else k-means now with the run's seed (milliseconds on n_ref vectors)."""
    from pure_core.scores import cluster_distances, pairwise_distances

    data = neuron_data(run, neuron)
    vectors = None if data is None else _vectors(data, method)
    if vectors is None or len(vectors) < max(k, 1):
        return None
    seed = run_details(run).meta.seed
    stored = data.scores.centroids.get(int(k)) if method == "pure" and data.scores is not None else None
    if stored is not None and stored.shape == (k, vectors.shape[1]):
        from pure_core.virtual import VirtualNeurons

        model = VirtualNeurons.from_stored(stored, vectors, random_state=seed)
    else:
        model = fit_virtual_neurons(vectors, k, seed)
    labels = model.labels_
    sizes = np.bincount(labels, minlength=k)
    rho_intra = np.full(k, np.nan)
    evaluation = None
    if data.embeddings is not None and len(data.embeddings) == len(labels):
        distances = pairwise_distances(data.embeddings)
        for c in range(k):
            members = np.flatnonzero(labels == c)
            if len(members) > 1:
                block = distances[np.ix_(members, members)]
                rho_intra[c] = block.sum() / (len(members) * (len(members) - 1))
        evaluation = tuple(float(v) for v in cluster_distances(data.embeddings, labels))
    return Clustering(method, int(k), model, labels, sizes, rho_intra, evaluation)


@st.cache_data(show_spinner=False, max_entries=2048)
def cluster_labels(
    run: RunRef, neuron: int, k: int, method: str = "pure", source: str = "predicted"
) -> list[list[LabelShare]] | None:
    """Per cluster of `clustering` (VN 1, 2, ... or A, B, ...), the labels over-represented among its
    references (`pure_core.labels.label_shares`) from ``source``: "predicted" (the model's classes), "data"
    (the dataset's labels) or "clip" (CLIP's names of the crops); None when the run stored no such labels."""
    from pure_core.labels import label_shares

    data = neuron_data(run, neuron)
    result = clustering(run, neuron, k, method)
    if data is None or result is None:
        return None
    labels = {
        "predicted": None if data.predictions is None else data.predictions.labels,
        "data": data.dataset_labels,
        "clip": None if data.clip_labels is None else data.clip_labels.labels,
    }[source]
    if labels is None:
        return None
    if len(labels) != len(result.labels):
        return None
    return label_shares(labels, result.labels, k)


@st.cache_data(show_spinner=False, max_entries=1024)
def k_scores(run: RunRef, neuron: int, k: int) -> pd.DataFrame:
    """Scores for this k: rho_intra, rho_inter and their difference under the embedder, per method.

    Rows: PURE, activation clustering, embedding clustering (upper bound) and unclustered (the mean distance
    over all pairs). Empty without embeddings.
    """
    from pure_core.scores import overall_distance

    data = neuron_data(run, neuron)
    rows = []
    for method in METHODS:
        stored = None if data is None or data.scores is None else data.scores.method_score(method, k)
        if stored is not None:  # precompute's value (same k-means, same embeddings)
            intra, inter = stored.rho_intra, stored.rho_inter
        else:
            result = clustering(run, neuron, k, method)
            if result is None or result.evaluation is None:
                continue
            intra, inter = result.evaluation
        rows.append(_score_row(METHOD_LABELS[method], intra, inter))
    if rows and data is not None and data.embeddings is not None:
        overall = overall_distance(data.embeddings)
        rows.append(_score_row(METHOD_LABELS["unclustered"], overall, overall))
    return pd.DataFrame(rows)


@st.cache_data(show_spinner=False, max_entries=1024)
def k_choice(run: RunRef, neuron: int) -> KChoice | None:
    """The neuron's k diagnostics and suggested k (`store.schema.KChoice`): precompute's where stored, else
    computed now as precompute does (`pure_core.k_choice`, the run's ks and seed; stores written before the
    diagnostics existed). None without PURE vectors."""
    data = neuron_data(run, neuron)
    if data is None or data.pure is None:
        return None
    if data.k_choice is not None:
        return data.k_choice
    from pure_core.k_choice import k_diagnostics
    from pure_core.threads import one_thread

    meta = run_details(run).meta
    with one_thread():
        result = k_diagnostics(data.pure, meta.ks or [2, 3, 4, 5], data.embeddings, random_state=meta.seed)
    return KChoice(result.ks, result.silhouette, result.stability, result.score, result.suggested_k)


def _score_row(label: str, intra: float, inter: float) -> dict[str, float | str]:
    return {"method": label, "rho_intra": intra, "rho_inter": inter, "rho_inter - rho_intra": inter - intra}


# -- an uploaded image against a neuron's virtual neurons -------------------------------------------------
TIE_MARGIN = 0.05  # nearest two centroids closer than 5 % of the second distance: no assignment


@dataclass(frozen=True)
class Assignment:
    """Where an image's circuit vector falls among a neuron's virtual neurons, and whether that counts.

    ``nearest``: the nearest virtual neuron (0-based); ``distances (k,)`` to every centroid; ``percentile``:
    share (%) of the neuron's references whose activation the image's reaches (None without references);
    ``fires``: the image activates the neuron at least as much as its weakest reference; ``runner_up``: the
    second-nearest virtual neuron when its distance is within ``TIE_MARGIN`` of the nearest, else None;
    ``radii (k,)``: each virtual neuron's radius (`Clustering.radii`), None when unknown.
    An assignment counts only when the neuron fires and there is no tie.
    """

    nearest: int
    distances: np.ndarray
    percentile: float | None
    fires: bool
    runner_up: int | None
    radii: np.ndarray | None = None

    @property
    def counts(self) -> bool:
        return self.fires and self.runner_up is None

    @property
    def radius_ratio(self) -> float | None:
        """The smallest distance / radius over the virtual neurons (`VirtualNeurons.radius_ratio`)."""
        from pure_core.virtual import radius_ratio

        return None if self.radii is None else float(radius_ratio(self.distances, self.radii)[0])

    @property
    def unlike_any_circuit(self) -> bool:
        """The circuit lies beyond every virtual neuron's radius: the neuron responds by a route none of
        its references took."""
        ratio = self.radius_ratio
        return ratio is not None and ratio > 1.0


def activation_percentile(activation: float, reference_activations: np.ndarray) -> float | None:
    """Share (%) of ``reference_activations (n,)`` at or below ``activation``; None when there are none."""
    references = np.asarray(reference_activations, dtype=np.float64)
    if len(references) == 0:
        return None
    return 100.0 * float((references <= activation).mean())


def judge_assignment(
    activation: float,
    reference_activations: np.ndarray,
    distances: np.ndarray,
    tie_margin: float = TIE_MARGIN,
    radii: np.ndarray | None = None,
) -> Assignment:
    """Nearest virtual neuron of an image and whether to call it an assignment.

    Not when the neuron does not fire: the references are the dataset's top-n_ref images, so an activation
    below the weakest of them is weaker than everything the virtual neurons were fitted on, and its circuit
    explains a response the neuron hardly gives. Not when the nearest two centroids are within
    ``tie_margin`` (relative to the second distance): the image sits on the boundary between two virtual
    neurons, and a resize or crop of a few pixels can flip it.
    """
    distances = np.asarray(distances, dtype=np.float64)
    order = np.argsort(distances, kind="stable")
    references = np.asarray(reference_activations, dtype=np.float64)
    fires = bool(activation > 0 and (len(references) == 0 or activation >= references.min()))
    runner_up = None
    if len(order) > 1:
        first, second = distances[order[0]], distances[order[1]]
        if second - first <= tie_margin * second:
            runner_up = int(order[1])
    return Assignment(
        int(order[0]),
        distances,
        activation_percentile(activation, references),
        fires,
        runner_up,
        None if radii is None else np.asarray(radii, dtype=np.float64),
    )
