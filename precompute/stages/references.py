"""Stage 1, references: one streaming pass over the dataset, then the reference images.

Per neuron the top-n_ref images by max-pooled activation of layer L (ties: lower dataset index first) and the
argmax position (`pure_core.activations.ReferenceScan`). The running top set is checkpointed once per chunk
of ``batch_size x checkpoint_every`` images, so a resumed scan starts from the last checkpoint; then the
reference images are stored as WEBP at model-input resolution (``image:<index>``).
"""

from __future__ import annotations

import numpy as np

from precompute.job import Job
from precompute.runner import ChunkRunner
from pure_core.activations import ReferenceScan, TopReferences
from pure_core.sources import DatasetError, iterate_batches
from store.codecs import EMBED_QUALITY, encode_image
from store.schema import ReferenceImage, References, ScanReport

__all__ = ["IMAGE_CHUNK", "run"]

IMAGE_CHUNK = 256  # reference images encoded per transaction
PARTS = ("references", "images")


def _scan(job: Job) -> None:
    store, source, config = job.store, job.source, job.config
    n_images = len(source)
    runner = ChunkRunner(job, "references", n_images, config.batch_size * job.checkpoint_every,
                         "1/5 references: scan", "img")
    state = store.get("references:state")
    if state is None:
        state = {"n_seen": 0, "n_skipped": 0, "skipped": []}
        top = None
    else:  # resume from the last checkpoint (which holds no top set while every image was unreadable)
        top = (TopReferences(config.n_ref, state["values"], state["indices"], state["positions"])
               if "values" in state else None)
    scan = ReferenceScan(job.model, config.layer, config.n_ref, job.neurons, top=top)
    for chunk_id, chunk in runner.pending():
        for x, batch_indices, errors in iterate_batches(source, chunk, job.preprocess.to_tensor,
                                                        job.batch_size, job.workers):
            if errors:
                state["n_skipped"] += len(errors)
                state["skipped"] = (state["skipped"] + [message for _, message in errors])[:20]
            if x is not None:
                scan.update(x.to(job.device), batch_indices)
            state["n_seen"] += len(batch_indices) + len(errors)
            runner.advance(len(batch_indices) + len(errors))
            if state["n_skipped"]:
                runner.bar.set_postfix(skipped=state["n_skipped"])
        if scan.top is not None:
            state = {**state, "values": scan.top.values, "indices": scan.top.indices,
                     "positions": scan.top.positions}
        with runner.commit(chunk_id):
            store.put("references:state", state)
    runner.close()
    n_valid = state["n_seen"] - state["n_skipped"]
    if n_valid == 0:
        example = f" (e.g. {state['skipped'][0]})" if state["skipped"] else ""
        raise DatasetError(f"all {n_images} images of {source.label} are unreadable{example}")
    if state["n_skipped"]:
        job.log(f"skipped {state['n_skipped']} unreadable image(s) of {n_images} "
                f"(first: {state['skipped'][0]})")
    if n_valid < config.n_ref:
        job.log(f"only {n_valid} readable images: every neuron gets all of them as references "
                f"(n_ref {config.n_ref})")
    references = References(neurons=np.asarray(job.neurons, dtype=np.int64), indices=state["indices"],
                            max_activations=state["values"], positions=state["positions"])
    scan_report = ScanReport(n_images=n_images, n_valid=n_valid, n_skipped=state["n_skipped"],
                             skipped_examples=tuple(state["skipped"]))
    with store.transaction():
        store.write(references)
        store.write(scan_report)
        store.delete("references:state")


def run(job: Job) -> None:
    """Top-n_ref references per neuron, then their images as WEBP (``image:<index>``)."""
    if job.store.read(References) is None:
        _scan(job)
    unique = np.unique(job.store.read(References).indices)
    runner = ChunkRunner(job, "images", len(unique), IMAGE_CHUNK, "1/5 references: images", "img")
    for chunk_id, chunk in runner.pending():
        encoded = {int(unique[i]): encode_image(job.preprocess.geometric(job.load_reference(unique[i])),
                                                EMBED_QUALITY) for i in chunk}
        with runner.commit(chunk_id):
            for index, data in encoded.items():
                job.store.write(ReferenceImage(data), index)
        runner.advance(len(chunk))
    runner.close()
