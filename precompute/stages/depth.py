"""Stage 8, depth: where each neuron's circuit splits (`pure_core.depth`).

For every analysed neuron, its references' circuits are computed again at each of ``config.depth_layers``
(layers below the run's lower layer, e.g. the rest of a ``--chain``): one forward and one backward pass per
batch of (reference, neuron) pairs for all the layers, the batches filled across a chunk's neurons. With the
stored circuits at the run's own lower layer they make the neuron's `CircuitDepth`: per layer, the k = 2
split's rho gap under the stored embeddings, its silhouette, and on ground-truth data the ARI against the
references' planted concepts. Without depth layers the stage stores nothing (and the dashboard shows no depth
chart).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from precompute.job import Job
from precompute.runner import ChunkRunner, stage_label
from pure_core.depth import circuits_at_layers, depth_profile
from store.schema import CircuitDepth, CropBoxes, Embeddings, PureVectors, References

NAME = "depth"
PARTS = ("depth",)
DEPTH_K = 2  # the paper's split
PAIR_BATCH = 64  # fixed, not --batch-size, and chunks are fixed: a resumed run computes the same circuits


def run(job: Job) -> None:
    """``depth:<n>`` for every neuron, when the run has depth layers."""
    layers = list(job.config.depth_layers)
    if not layers:
        job.log(f"{stage_label(NAME, 'depth')}: no depth layers (--depth-layers or --chain adds them)")
        return
    store = job.store
    references = store.read(References)
    neurons, valid = references.neuron_ids, references.indices >= 0
    runner = ChunkRunner(job, NAME, len(neurons), job.chunk_neurons,
                         stage_label(NAME, f"depth ({', '.join(layers)})"), "reference",
                         weight=lambda chunk: int(valid[chunk.start:chunk.stop].sum()))
    for chunk_id, chunk in runner.pending():
        pairs = [(neurons[row], references.indices[row][valid[row]]) for row in chunk]
        circuits = circuits_at_layers(job.model, _pair_batches(job, runner, pairs), job.config.layer, layers)
        records, start = {}, 0
        for neuron, indices in pairs:
            deeper = {layer: values[start:start + len(indices)] for layer, values in circuits.items()}
            records[neuron] = _profile(job, neuron, indices, deeper)
            start += len(indices)
        with runner.commit(chunk_id):
            for neuron, record in records.items():
                store.write(record, neuron)
    runner.close()
    job.group.barrier()


def _pair_batches(job: Job, runner: ChunkRunner,
                  pairs: list[tuple[int, np.ndarray]]) -> Iterator[tuple[torch.Tensor, list[int]]]:
    """The chunk's (reference image, neuron) pairs in batches of `PAIR_BATCH`, across its neurons, each
    batch's images loaded when it is due (once per image); progress advances as each batch is done."""
    flat = [(neuron, int(index)) for neuron, indices in pairs for index in indices]
    for i in range(0, len(flat), PAIR_BATCH):
        batch = flat[i:i + PAIR_BATCH]
        inputs = job.reference_inputs([index for _, index in batch]).to(job.device)
        yield inputs, [neuron for neuron, _ in batch]
        runner.advance(len(batch))


def _profile(job: Job, neuron: int, indices: np.ndarray, deeper: dict[str, np.ndarray]) -> CircuitDepth:
    """One neuron's `CircuitDepth` over its run's lower layer and its references' ``deeper`` circuits."""
    store, config = job.store, job.config
    circuits = {config.lower_layer: store.read(PureVectors, neuron).values.astype(np.float32), **deeper}
    embeddings = store.read(Embeddings, neuron)
    truth = job.source.ground_truth(indices, store.read(CropBoxes, neuron).values)
    profile = depth_profile(circuits, None if embeddings is None else embeddings.values.astype(np.float64),
                            None if truth is None else truth.concepts, k=DEPTH_K,
                            random_state=int(config.seed))
    return CircuitDepth(profile.layers, profile.k, profile.rho_gap, profile.silhouette, profile.ari)
