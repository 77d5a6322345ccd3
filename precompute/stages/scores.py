"""Stage 5, scores: per neuron the polysemanticity (`pure_core.scores.polysemanticity`), the per-k cluster
quality of PURE / activation / embedding clusterings (`fit_methods` + `evaluate_fits`), distance
correlations, PURE centroids per k (the virtual neurons), UMAP coordinates, and the oracle score when the
source has planted ground truth; then the run-wide ``summary``, ``method_comparison`` and
``distance_correlation``."""

from __future__ import annotations

from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from precompute.job import Job
from precompute.runner import ChunkRunner
from pure_core import scores as sc
from pure_core.projection import import_umap, umap_2d

__all__ = ["run"]

PARTS = ("scores",)
METHODS = ("pure", "activation", "embedding")


def _polysemanticity_record(vectors: np.ndarray, seed: int) -> dict[str, Any]:
    """``{polysemanticity, rho_intra, rho_inter, overall}`` and the k=2 labels of ``vectors (n, D)``."""
    if len(vectors) >= 2:
        poly = sc.polysemanticity(vectors, random_state=seed)
    else:
        poly = sc.Polysemanticity(0.0, 0.0, 0.0, 0.0, np.zeros(len(vectors), dtype=np.int64))
    return {"polysemanticity": float(poly.score), "rho_intra": float(poly.rho_intra),
            "rho_inter": float(poly.rho_inter), "overall": float(poly.overall),
            "labels": np.asarray(poly.labels, dtype=np.int64)}


def _neuron_scores(job: Job, row: int, references: dict, embeddings: np.ndarray, pure: np.ndarray,
                   activation: np.ndarray, boxes: np.ndarray) -> tuple[dict, dict]:
    """One neuron's ``scores`` and ``umap`` entries (see docs/contracts.md)."""
    config = job.config
    seed = int(config.seed)
    embeddings, pure, activation = (np.asarray(a, dtype=np.float64) for a in (embeddings, pure, activation))
    n = len(embeddings)
    poly = _polysemanticity_record(embeddings, seed)
    ks = [int(k) for k in config.ks if k <= n]
    fits = sc.fit_methods({"pure": pure, "activation": activation, "embedding": embeddings}, ks, seed)
    evaluations = sc.evaluate_fits(embeddings, fits)
    methods = {method: {k: {"rho_intra": float(e.rho_intra), "rho_inter": float(e.rho_inter)}
                        for k, e in evaluations[method].items()} for method in METHODS}
    centroids = {k: fitted.cluster_centers_.astype(np.float32) for k, fitted in fits["pure"].items()}
    correlation = {m: (float(sc.per_neuron_distance_correlation(embeddings, v)) if n > 2 else float("nan"))
                   for m, v in (("pure", pure), ("activation", activation))}
    result = {
        "polysemanticity": poly["polysemanticity"], "rho_intra": poly["rho_intra"],
        "rho_inter": poly["rho_inter"], "overall": poly["overall"], "embedding_labels": poly["labels"],
        "methods": methods, "correlation": correlation, "centroids": centroids,
    }
    truth = job.source.ground_truth(references["indices"][row], boxes)
    if truth is not None:
        result["oracle"] = {**_polysemanticity_record(truth.embeddings, seed), "concepts": truth.concepts,
                            "kind": truth.kind}
    umap_cfg = config.umap
    coords = {name: umap_2d(v, umap_cfg.n_neighbors, umap_cfg.min_dist, umap_cfg.random_state)
              for name, v in (("pure", pure), ("activation", activation))}
    return result, coords


def run(job: Job) -> None:
    """``scores:<n>`` and ``umap:<n>`` per neuron, then ``summary``, ``method_comparison`` and
    ``distance_correlation``."""
    store = job.store
    references = store.get("references")
    neurons = [int(n) for n in references["neurons"]]
    runner = ChunkRunner(job, "scores", len(neurons), job.chunk_neurons, "5/5 scores + UMAP", "neuron")
    if not runner.complete:
        import_umap()  # numba's runtime too; also keeps its import time out of the progress bar's rate
    # k-means and UMAP on ~100 points: starting threads costs more than the work (20x for k-means).
    # threadpoolctl limits only runtimes already loaded: pure_core.scores loaded scikit-learn's OpenMP.
    with threadpool_limits(1):
        for chunk_id, chunk in runner.pending():
            outputs = {}
            for row in chunk:
                neuron = neurons[row]
                outputs[neuron] = _neuron_scores(
                    job, row, references, store.neuron("embeddings", neuron), store.neuron("pure", neuron),
                    store.neuron("activation", neuron), store.neuron("boxes", neuron))
                runner.advance(1)
            with runner.commit(chunk_id):
                for neuron, (result, coords) in outputs.items():
                    store.put_neuron("scores", neuron, result)
                    store.put_neuron("umap", neuron, coords)
        runner.close()
        _aggregate(job, neurons, references)


def _aggregate(job: Job, neurons: list[int], references: dict) -> None:
    store, config = job.store, job.config
    summary, per_neuron = [], {}
    for row, neuron in enumerate(neurons):
        result = store.neuron("scores", neuron)
        per_neuron[neuron] = result
        entry = {
            "neuron": neuron,
            "polysemanticity": result["polysemanticity"],
            "rho_intra": result["rho_intra"],
            "rho_inter": result["rho_inter"],
            "overall": result["overall"],
            "top_activation": float(references["max_activations"][row, 0]),
            "n_ref": int(references["indices"].shape[1]),
        }
        if "oracle" in result:
            entry["oracle_polysemanticity"] = result["oracle"]["polysemanticity"]
            entry["oracle_kind"] = result["oracle"]["kind"]
        summary.append(entry)
    comparison: dict[str, Any] = {}
    for method in METHODS:
        comparison[method] = {}
        for k in config.ks:
            rows = [r["methods"][method][k] for r in per_neuron.values() if k in r["methods"].get(method, {})]
            if rows:
                comparison[method][int(k)] = {key: float(np.mean([r[key] for r in rows]))
                                              for key in ("rho_intra", "rho_inter")}
    overall = [r["overall"] for r in per_neuron.values()]
    comparison["unclustered"] = float(np.mean(overall)) if overall else 0.0
    dense = [n for n in neurons if len(store.neuron("embeddings", n)) > 2]
    correlation: dict[str, Any] = {}
    if dense:
        embeddings = [store.neuron("embeddings", n) for n in dense]
        for method in ("pure", "activation"):
            result = sc.distance_correlation(embeddings, [store.neuron(method, n) for n in dense], n_top=50,
                                             n_subsets=30, random_state=int(config.seed))
            correlation[method] = {"r": float(result.r), "sem": float(result.sem)}
    with store.transaction():
        store.put("summary", summary)
        store.put("method_comparison", comparison)
        store.put("distance_correlation", correlation)
