"""Seconds per neuron of the scores + UMAP stage at the paper's shape, serial and in worker processes.

    python benchmarks/bench_scores.py                       # 100 refs, C_lower 1024, C 2048, 768-d, k 2..5
    python benchmarks/bench_scores.py --neurons 128 --ks 2 3 4 5 6 7 8 --processes 1 2

Per neuron, what ``precompute/stages/scores.py`` does (`score_neuron`: the polysemanticity score, k-means
of the PURE / activation / embedding vectors for every k with the rho_intra / rho_inter evaluation, the
distance correlations, the two UMAPs), single-threaded, in 1 or P processes as the stage runs it
(`score_processes`). Inputs are synthetic (two planted clusters per neuron), so the figures are about time
only. The first neuron, which pays numba's compile (or cache load), is timed apart; each process count is
timed on a warm pool (issue target: <= 0.3 s per neuron after the first compile).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from joblib import Parallel, delayed

from precompute.config import UmapConfig
from precompute.stages.scores import NeuronInputs, score_neuron
from pure_core.projection import import_umap


def neuron_inputs(rng: np.random.Generator, n_ref: int, dims: tuple[int, int, int]) -> NeuronInputs:
    """Embeddings, PURE and activation vectors of one neuron: two clusters with a random split."""
    split = (rng.random(n_ref) < 0.5).astype(int)
    vectors = [rng.normal(size=(2, dim))[split] + 0.5 * rng.normal(size=(n_ref, dim)) for dim in dims]
    return NeuronInputs(*vectors, truth=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", type=int, default=64)
    parser.add_argument("--n-ref", type=int, default=100)
    parser.add_argument("--dims", type=int, nargs=3, default=[768, 1024, 2048],
                        metavar=("EMBED", "C_LOWER", "C_LAYER"))
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 3, 4, 5])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    inputs = [neuron_inputs(rng, args.n_ref, tuple(args.dims)) for _ in range(args.neurons)]
    settings = (args.ks, 0, UmapConfig())
    load = os.getloadavg()
    start = time.perf_counter()
    import_umap()
    score_neuron(inputs[0], *settings)
    first = time.perf_counter() - start
    per_neuron = {}
    for processes in args.processes:
        with Parallel(n_jobs=processes, backend="loky") as parallel:
            parallel(delayed(score_neuron)(x, *settings) for x in inputs[:processes])  # warm the workers
            start = time.perf_counter()
            parallel(delayed(score_neuron)(x, *settings) for x in inputs)
            per_neuron[f"{processes} process(es)"] = round((time.perf_counter() - start) / len(inputs), 3)
    print(json.dumps({
        "load_average": [round(v, 2) for v in load],
        "shape": f"{args.neurons} neurons x {args.n_ref} refs, embeddings {args.dims[0]}, C_lower "
                 f"{args.dims[1]}, C {args.dims[2]}, k {args.ks}",
        "first_neuron_with_umap_import_s": round(first, 2),
        "wall_s_per_neuron": per_neuron,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }, indent=2))


if __name__ == "__main__":
    main()
