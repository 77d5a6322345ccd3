"""Stage 5, scores: per neuron the polysemanticity (`pure_core.scores.polysemanticity`), the per-k cluster
quality of PURE / activation / embedding clusterings (`fit_methods` + `evaluate_fits`), distance
correlations, PURE centroids per k (the virtual neurons), UMAP coordinates, and the oracle score when the
source has planted ground truth; then the run-wide ``summary``, ``method_comparison`` and
``distance_correlation``."""

from __future__ import annotations

import math

import numpy as np
from threadpoolctl import threadpool_limits

from precompute.job import Job
from precompute.runner import ChunkRunner
from pure_core import scores as sc
from pure_core.projection import import_umap, umap_2d
from store.schema import (
    ActivationVectors,
    Correlation,
    CropBoxes,
    DistanceCorrelation,
    Embeddings,
    MethodComparison,
    MethodScore,
    NeuronScores,
    Oracle,
    PooledCorrelation,
    PureVectors,
    References,
    Summary,
    SummaryRow,
    UmapCoordinates,
)

__all__ = ["run"]

PARTS = ("scores",)
METHODS = ("pure", "activation", "embedding")


def _neuron_scores(job: Job, references: References, row: int) -> tuple[NeuronScores, UmapCoordinates]:
    """One neuron's scores and UMAP coordinates (see `store.schema.NeuronScores`)."""
    store, config = job.store, job.config
    seed = int(config.seed)
    neuron = references.neuron_ids[row]
    embeddings, pure, activation = (np.asarray(store.read(record, neuron).values, dtype=np.float64)
                                    for record in (Embeddings, PureVectors, ActivationVectors))
    n = len(embeddings)
    poly = sc.polysemanticity(embeddings, random_state=seed)
    ks = [int(k) for k in config.ks if k <= n]
    fits = sc.fit_methods({"pure": pure, "activation": activation, "embedding": embeddings}, ks, seed)
    evaluations = sc.evaluate_fits(embeddings, fits)
    methods = {method: {k: MethodScore(float(e.rho_intra), float(e.rho_inter))
                        for k, e in evaluations[method].items()} for method in METHODS}
    correlation = Correlation(*(float(sc.per_neuron_distance_correlation(embeddings, vectors)) if n > 2
                                else math.nan for vectors in (pure, activation)))
    truth = job.source.ground_truth(references.indices[row], store.read(CropBoxes, neuron).values)
    oracle = None
    if truth is not None:
        ideal = sc.polysemanticity(truth.embeddings, random_state=seed)
        oracle = Oracle(float(ideal.score), float(ideal.rho_intra), float(ideal.rho_inter),
                        float(ideal.overall), ideal.labels, truth.concepts, truth.kind)
    scores = NeuronScores(
        polysemanticity=float(poly.score), rho_intra=float(poly.rho_intra), rho_inter=float(poly.rho_inter),
        overall=float(poly.overall), embedding_labels=poly.labels, methods=methods, correlation=correlation,
        centroids={k: fitted.cluster_centers_ for k, fitted in fits["pure"].items()}, oracle=oracle)
    umap_cfg = config.umap
    coords = UmapCoordinates(*(umap_2d(v, umap_cfg.n_neighbors, umap_cfg.min_dist, umap_cfg.random_state)
                               for v in (pure, activation)))
    return scores, coords


def run(job: Job) -> None:
    """``scores:<n>`` and ``umap:<n>`` per neuron, then ``summary``, ``method_comparison`` and
    ``distance_correlation``."""
    store = job.store
    references = store.read(References)
    neurons = references.neuron_ids
    runner = ChunkRunner(job, "scores", len(neurons), job.chunk_neurons, "5/5 scores + UMAP", "neuron")
    if not runner.complete:
        import_umap()  # numba's runtime too; also keeps its import time out of the progress bar's rate
    # k-means and UMAP on ~100 points: starting threads costs more than the work (20x for k-means).
    # threadpoolctl limits only runtimes already loaded: pure_core.scores loaded scikit-learn's OpenMP.
    with threadpool_limits(1):
        for chunk_id, chunk in runner.pending():
            outputs = {}
            for row in chunk:
                outputs[neurons[row]] = _neuron_scores(job, references, row)
                runner.advance(1)
            with runner.commit(chunk_id):
                for neuron, (scores, coords) in outputs.items():
                    store.write(scores, neuron)
                    store.write(coords, neuron)
        runner.close()
        if job.group.is_main:  # every rank's neurons are scored now
            _aggregate(job, references)
        job.group.barrier()


def _aggregate(job: Job, references: References) -> None:
    """The run-wide records: the ranking table, Fig. 4's means per method and k, Sec. 4.2's correlations."""
    store, config = job.store, job.config
    neurons = references.neuron_ids
    per_neuron = {neuron: store.read(NeuronScores, neuron) for neuron in neurons}
    summary = Summary(tuple(
        SummaryRow(neuron=neuron, polysemanticity=scores.polysemanticity, rho_intra=scores.rho_intra,
                   rho_inter=scores.rho_inter, overall=scores.overall,
                   top_activation=float(references.max_activations[row, 0]), n_ref=references.n_ref,
                   oracle_polysemanticity=None if scores.oracle is None else scores.oracle.polysemanticity,
                   oracle_kind=None if scores.oracle is None else scores.oracle.kind)
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
        store.write(summary)
        store.write(comparison)
        store.write(DistanceCorrelation(pooled))
