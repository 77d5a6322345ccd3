"""Stage 5, scores: per neuron the polysemanticity (`pure_core.scores.polysemanticity`), the per-k cluster
quality of PURE / activation / embedding clusterings (`fit_methods` + `evaluate_fits`), the k diagnostics
and suggested k (`pure_core.k_choice`), distance correlations, PURE centroids per k (the virtual neurons),
the references' dataset labels and the virtual neurons' labels per k from them and from the model's
predicted classes (`pure_core.labels.label_shares`), UMAP coordinates, and the oracle score when the source
has planted ground truth; then the run-wide ``summary``, ``method_comparison``, ``distance_correlation``,
``data_label_names`` and ``label_index``."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import numpy as np
from joblib import Parallel, delayed

from precompute.config import UmapConfig
from precompute.job import Job
from precompute.runner import ChunkRunner, stage_label
from pure_core import scores as sc
from pure_core.k_choice import k_diagnostics
from pure_core.labels import label_shares
from pure_core.projection import import_umap, umap_2d
from pure_core.sources import GroundTruth
from pure_core.threads import one_thread
from store import RunStore
from store.schema import (
    ActivationVectors,
    Correlation,
    CropBoxes,
    DatasetLabelNames,
    DistanceCorrelation,
    Embeddings,
    KChoice,
    LabelIndex,
    LabelsByK,
    MethodComparison,
    MethodScore,
    NeuronScores,
    Oracle,
    PooledCorrelation,
    PureVectors,
    Record,
    ReferenceDatasetLabels,
    ReferencePredictions,
    References,
    Summary,
    SummaryRow,
    UmapCoordinates,
    VirtualNeuronClipLabels,
    VirtualNeuronDataLabels,
    VirtualNeuronLabel,
    VirtualNeuronLabels,
)

__all__ = ["LABEL_SOURCES", "MIN_NEURONS_PER_PROCESS", "NeuronInputs", "NeuronResults", "dataset_labels",
           "label_index", "run", "score_neuron", "score_processes", "virtual_neuron_labels"]

PARTS = ("scores",)
METHODS = ("pure", "activation", "embedding")


# Below this many neurons per process, starting a worker (imports, numba's cache) costs more than it saves.
MIN_NEURONS_PER_PROCESS = 32


@dataclass(frozen=True)
class NeuronInputs:
    """What one neuron's scores are computed from (read from the store by the main process)."""

    embeddings: np.ndarray
    pure: np.ndarray
    activation: np.ndarray
    truth: GroundTruth | None
    labels: np.ndarray | None = None  # (n_ref,) each reference's predicted class, None without predictions
    data_labels: np.ndarray | None = None  # (n_ref,) each reference's dataset label, None without any


@dataclass(frozen=True)
class NeuronResults:
    """What stage 5 stores for one neuron (labels only where the references have them)."""

    scores: NeuronScores
    coordinates: UmapCoordinates
    k_choice: KChoice
    labels: VirtualNeuronLabels | None = None
    data_labels: ReferenceDatasetLabels | None = None
    vn_data_labels: VirtualNeuronDataLabels | None = None

    def records(self) -> list[Record]:
        """The records to write, in a fixed order."""
        return [r for r in (self.scores, self.coordinates, self.k_choice, self.labels, self.data_labels,
                            self.vn_data_labels) if r is not None]


def dataset_labels(job: Job, references: References) -> tuple[tuple[str, ...], np.ndarray] | None:
    """The dataset's labels of every reference (`ImageSource.dataset_label`): the sorted names and
    ``(N, n_ref)`` int32 indices into them (-1: none); None when the source labels none of them."""
    indices = references.indices
    by_index = {int(i): job.source.dataset_label(int(i)) for i in np.unique(indices[indices >= 0])}
    names = tuple(sorted({label for label in by_index.values() if label is not None}))
    if not names:
        return None
    code = {name: i for i, name in enumerate(names)}
    codes = np.array([[code.get(by_index.get(int(i)), -1) if i >= 0 else -1 for i in row] for row in indices],
                     dtype=np.int32)
    return names, codes


def _inputs(job: Job, references: References, row: int, data_labels: np.ndarray | None) -> NeuronInputs:
    neuron = references.neuron_ids[row]
    embeddings, pure, activation = (np.asarray(job.store.read(record, neuron).values, dtype=np.float64)
                                    for record in (Embeddings, PureVectors, ActivationVectors))
    truth = job.source.ground_truth(references.indices[row], job.store.read(CropBoxes, neuron).values)
    predicted = job.store.read(ReferencePredictions, neuron)
    return NeuronInputs(embeddings, pure, activation, truth, None if predicted is None else predicted.labels,
                        None if data_labels is None else data_labels[row])


def score_neuron(inputs: NeuronInputs, ks: list[int], seed: int, umap_cfg: UmapConfig) -> NeuronResults:
    """One neuron's scores, UMAP coordinates and virtual-neuron labels (see `store.schema`);
    single-threaded, so a process per neuron gives the values of the serial loop."""
    embeddings, pure, activation = inputs.embeddings, inputs.pure, inputs.activation
    n = len(embeddings)
    with one_thread():
        poly = sc.polysemanticity(embeddings, random_state=seed)
        ks = [int(k) for k in ks if k <= n]
        fits = sc.fit_methods({"pure": pure, "activation": activation, "embedding": embeddings}, ks, seed)
        evaluations = sc.evaluate_fits(embeddings, fits)
        methods = {method: {k: MethodScore(float(e.rho_intra), float(e.rho_inter))
                            for k, e in evaluations[method].items()} for method in METHODS}
        correlation = Correlation(*(float(sc.per_neuron_distance_correlation(embeddings, vectors)) if n > 2
                                    else math.nan for vectors in (pure, activation)))
        oracle = None
        if inputs.truth is not None:
            ideal = sc.polysemanticity(inputs.truth.embeddings, random_state=seed)
            oracle = Oracle(float(ideal.score), float(ideal.rho_intra), float(ideal.rho_inter),
                            float(ideal.overall), ideal.labels, inputs.truth.concepts, inputs.truth.kind)
        centroids = {k: fitted.cluster_centers_ for k, fitted in fits["pure"].items()}
        scores = NeuronScores(
            polysemanticity=float(poly.score), rho_intra=float(poly.rho_intra),
            rho_inter=float(poly.rho_inter), overall=float(poly.overall), embedding_labels=poly.labels,
            methods=methods, correlation=correlation, centroids=centroids, oracle=oracle)
        coords = UmapCoordinates(*(umap_2d(v, umap_cfg.n_neighbors, umap_cfg.min_dist, umap_cfg.random_state)
                                   for v in (pure, activation)))
        diagnostics = k_diagnostics(pure, ks, embeddings, random_state=seed,
                                    labels={k: fitted.labels_ for k, fitted in fits["pure"].items()})
    k_choice = KChoice(diagnostics.ks, diagnostics.silhouette, diagnostics.stability, diagnostics.score,
                       diagnostics.suggested_k)
    groups = {k: fitted.numbered_by_size().labels_ for k, fitted in fits["pure"].items()}
    results = NeuronResults(scores, coords, k_choice)
    if inputs.labels is not None:
        results = replace(results, labels=virtual_neuron_labels(inputs.labels, groups))
    if inputs.data_labels is not None:
        by_k = virtual_neuron_labels(inputs.data_labels, groups, VirtualNeuronDataLabels)
        results = replace(results, data_labels=ReferenceDatasetLabels(inputs.data_labels),
                          vn_data_labels=by_k)
    return results


def virtual_neuron_labels(labels: np.ndarray, groups_by_k: dict[int, np.ndarray],
                          record: type[LabelsByK] = VirtualNeuronLabels) -> LabelsByK:
    """The ``record`` of each virtual neuron's labels (`pure_core.labels.label_shares`) for every k, from
    the references' ``labels (n,)`` and, per k, their virtual neurons ``(n,)`` numbered by size."""
    return record({
        k: tuple(tuple(VirtualNeuronLabel(s.label, s.count, s.share, s.enrichment) for s in group)
                 for group in label_shares(labels, groups, k))
        for k, groups in groups_by_k.items()})


LABEL_SOURCES: dict[str, type[LabelsByK]] = {
    "data": VirtualNeuronDataLabels, "predicted": VirtualNeuronLabels, "clip": VirtualNeuronClipLabels,
}


def label_index(store: RunStore, neurons: list[int]) -> LabelIndex:
    """The `LabelIndex` of every stored virtual-neuron label of ``neurons`` (each `LabelIndex.SOURCES`)."""
    by_neuron = {}
    for neuron in neurons:
        records = {source: store.read(record, neuron) for source, record in LABEL_SOURCES.items()}
        by_neuron[neuron] = {source: record for source, record in records.items() if record}
    return LabelIndex.of(by_neuron)


def score_processes(n_neurons: int, processes_per_node: int = 1) -> int:
    """Processes for scoring ``n_neurons`` on this rank: the node's cores shared among its ranks, and no
    more than one per `MIN_NEURONS_PER_PROCESS` neurons (1: the loop runs in this process)."""
    cores = max(1, (os.cpu_count() or 1) // max(1, processes_per_node))
    return max(1, min(cores, n_neurons // MIN_NEURONS_PER_PROCESS))


def run(job: Job) -> None:
    """``scores:<n>`` and ``umap:<n>`` per neuron, then ``summary``, ``method_comparison`` and
    ``distance_correlation``. k-means and UMAP on ~100 points run single-threaded (starting threads costs
    more than the work, 20x for k-means); with many neurons, in parallel processes over neurons."""
    store, config = job.store, job.config
    references = store.read(References)
    neurons = references.neuron_ids
    runner = ChunkRunner(job, "scores", len(neurons), job.chunk_neurons,
                         stage_label("scores", "scores + UMAP"), "neuron")
    pending = list(runner.pending())
    if pending:
        import_umap()  # numba's runtime too; also keeps its import time out of the progress bar's rate
    processes = score_processes(sum(len(chunk) for _, chunk in pending), job.group.local_world)
    labelled = dataset_labels(job, references)
    codes = None if labelled is None else labelled[1]
    with Parallel(n_jobs=processes, backend="loky") as parallel:
        for chunk_id, chunk in pending:
            work = (delayed(score_neuron)(_inputs(job, references, row, codes), config.ks, int(config.seed),
                                          config.umap) for row in chunk)
            outputs = {}
            for row, result in zip(chunk, parallel(work), strict=True):
                outputs[neurons[row]] = result
                runner.advance(1)
            with runner.commit(chunk_id):
                for neuron, result in outputs.items():
                    for record in result.records():
                        store.write(record, neuron)
    runner.close()
    if job.group.is_main:  # every rank's neurons are scored now
        with one_thread():
            _aggregate(job, references, None if labelled is None else labelled[0])
    job.group.barrier()


def _aggregate(job: Job, references: References, data_label_names: tuple[str, ...] | None) -> None:
    """The run-wide records: the ranking table, Fig. 4's means per method and k, Sec. 4.2's correlations,
    the dataset labels' names and the index of every virtual neuron's labels."""
    store, config = job.store, job.config
    neurons = references.neuron_ids
    per_neuron = {neuron: store.read(NeuronScores, neuron) for neuron in neurons}
    labels = {neuron: store.read(VirtualNeuronLabels, neuron) for neuron in neurons}
    data_labels = {neuron: store.read(VirtualNeuronDataLabels, neuron) for neuron in neurons}
    k_choices = {neuron: store.read(KChoice, neuron) for neuron in neurons}
    summary = Summary(tuple(
        SummaryRow(neuron=neuron, polysemanticity=scores.polysemanticity, rho_intra=scores.rho_intra,
                   rho_inter=scores.rho_inter, overall=scores.overall,
                   top_activation=float(references.max_activations[row, 0]), n_ref=references.n_ref,
                   oracle_polysemanticity=None if scores.oracle is None else scores.oracle.polysemanticity,
                   oracle_kind=None if scores.oracle is None else scores.oracle.kind,
                   labels=None if labels[neuron] is None else labels[neuron].first_labels(2),
                   data_labels=None if data_labels[neuron] is None else data_labels[neuron].first_labels(2),
                   suggested_k=None if k_choices[neuron] is None else k_choices[neuron].suggested_k)
        for row, (neuron, scores) in enumerate(per_neuron.items())))
    means: dict[str, dict[int, MethodScore]] = {}
    for method in METHODS:
        means[method] = {}
        for k in config.ks:
            rows = [s.method_score(method, k) for s in per_neuron.values()]
            rows = [r for r in rows if r is not None]
            if rows:
                means[method][int(k)] = MethodScore(float(np.mean([r.rho_intra for r in rows])),
                                                    float(np.mean([r.rho_inter for r in rows])))
    overall = [s.overall for s in per_neuron.values()]
    comparison = MethodComparison(means, float(np.mean(overall)) if overall else 0.0)
    embeddings = {n: store.read(Embeddings, n).values.astype(np.float32) for n in neurons}
    dense = [n for n in neurons if len(embeddings[n]) > 2]
    pooled: dict[str, PooledCorrelation] = {}
    if dense:
        for method, record in (("pure", PureVectors), ("activation", ActivationVectors)):
            result = sc.distance_correlation([embeddings[n] for n in dense],
                                             [store.read(record, n).values.astype(np.float32) for n in dense],
                                             n_top=50, n_subsets=30, random_state=int(config.seed))
            pooled[method] = PooledCorrelation(float(result.r), float(result.sem))
    with store.transaction():
        if data_label_names is not None:
            store.write(DatasetLabelNames(data_label_names))
        store.write(label_index(store, neurons))
        store.write(summary)
        store.write(comparison)
        store.write(DistanceCorrelation(pooled))
