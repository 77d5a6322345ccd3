"""Stage 8, depth: where each neuron's circuit splits (`pure_core.depth`).

For every analysed neuron, its references' circuits are computed again at each of ``config.depth_layers``
(layers below the run's lower layer, e.g. the rest of a ``--chain``), one forward and one backward pass per
layer and batch of (reference, neuron) pairs. With the stored circuits at the run's own lower layer they make
the neuron's `CircuitDepth`: per layer, the k = 2 split's rho gap under the stored embeddings, its silhouette,
and on ground-truth data the ARI against the references' planted concepts. Without depth layers the stage
stores nothing (and the dashboard shows no depth chart).
"""

from __future__ import annotations

import numpy as np
import torch

from precompute.job import Job
from precompute.runner import ChunkRunner, stage_label
from pure_core.depth import circuits_at_layers, depth_profile
from store.schema import CircuitDepth, CropBoxes, Embeddings, PureVectors, References

NAME = "depth"
PARTS = ("depth",)
DEPTH_K = 2  # the paper's split
PAIR_BATCH = 64  # fixed, not --batch-size: a resumed run computes the same circuits


def run(job: Job) -> None:
    """``depth:<n>`` for every neuron, when the run has depth layers."""
    layers = list(job.config.depth_layers)
    if not layers:
        job.log(f"{stage_label(NAME, 'depth')}: no depth layers (--depth-layers or --chain adds them)")
        return
    store = job.store
    references = store.read(References)
    neurons, n_ref = references.neuron_ids, references.n_ref
    runner = ChunkRunner(job, NAME, len(neurons), job.chunk_neurons,
                         stage_label(NAME, f"depth ({', '.join(layers)})"), "reference",
                         weight=lambda chunk: len(chunk) * n_ref)
    for chunk_id, chunk in runner.pending():
        records = {}
        for row in chunk:
            neuron = neurons[row]
            valid = references.indices[row][references.indices[row] >= 0]
            records[neuron] = _profile(job, neuron, valid, layers)
            runner.advance(n_ref)
        with runner.commit(chunk_id):
            for neuron, record in records.items():
                store.write(record, neuron)
    runner.close()
    job.group.barrier()


def _profile(job: Job, neuron: int, indices: np.ndarray, layers: list[str]) -> CircuitDepth:
    """One neuron's `CircuitDepth` over its run's lower layer and ``layers``."""
    store, config = job.store, job.config
    images = [job.preprocess.to_tensor(job.load_reference(int(i))) for i in indices]
    inputs = torch.stack(images).to(job.device)
    deeper = circuits_at_layers(job.model, inputs, config.layer, layers, [neuron] * len(indices),
                                batch_size=PAIR_BATCH)
    circuits = {config.lower_layer: store.read(PureVectors, neuron).values.astype(np.float32), **deeper}
    embeddings = store.read(Embeddings, neuron)
    truth = job.source.ground_truth(indices, store.read(CropBoxes, neuron).values)
    profile = depth_profile(circuits, None if embeddings is None else embeddings.values.astype(np.float64),
                            None if truth is None else truth.concepts, k=DEPTH_K,
                            random_state=int(config.seed))
    return CircuitDepth(profile.layers, profile.k, profile.rho_gap, profile.silhouette, profile.ari)
