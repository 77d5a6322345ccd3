"""Stage 4, embeddings: the crops through the embedder (`pure_core.embed`), batched across neurons."""

from __future__ import annotations

import numpy as np

from precompute.job import Job
from precompute.runner import ChunkRunner, chunk_ranges, stage_label
from store.codecs import decode_image
from store.schema import Crops, Embeddings, References

__all__ = ["run"]

PARTS = ("embeddings",)


def run(job: Job) -> None:
    """``embeddings:<n>`` ``(n_ref, D)`` float16 of the crops."""
    store = job.store
    references = store.read(References)
    neurons, n_ref = references.neuron_ids, references.n_ref
    runner = ChunkRunner(job, "embeddings", len(neurons), job.chunk_neurons,
                         stage_label("embeddings", "embeddings"), "crop",
                         weight=lambda chunk: len(chunk) * n_ref)
    for chunk_id, chunk in runner.pending():
        crops = [store.read(Crops, neurons[row]).images for row in chunk]
        images = [decode_image(data) for per_neuron in crops for data in per_neuron]
        parts = []
        for batch in chunk_ranges(len(images), job.batch_size):
            parts.append(np.asarray(job.embedder.embed([images[i] for i in batch]), dtype=np.float32))
            runner.advance(len(batch))
        embeddings = np.concatenate(parts, axis=0) if parts else np.zeros((0, 0), np.float32)
        with runner.commit(chunk_id):
            start = 0
            for row, per_neuron in zip(chunk, crops, strict=True):
                store.write(Embeddings(embeddings[start:start + len(per_neuron)].astype(np.float16)),
                            neurons[row])
                start += len(per_neuron)
    runner.close()
