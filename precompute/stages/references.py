"""Stage 1, references: one streaming pass over the dataset, then the reference images.

Per neuron the top-n_ref images by max-pooled activation of layer L (ties: lower dataset index first) and the
argmax position (`pure_core.activations.ReferenceScan`). The running top set is checkpointed once per chunk
of ``batch_size x checkpoint_every`` images, so a resumed scan starts from the last checkpoint; then the
reference images are stored as WEBP at model-input resolution (``image:<index>``).
"""

from __future__ import annotations

import numpy as np

from precompute.job import Job, PrecomputeError
from precompute.runner import ChunkRunner, stage_label
from pure_core.activations import ReferenceScan, TopReferences
from pure_core.sources import DatasetError, iterate_batches
from store.codecs import encode_image, reference_quality
from store.schema import ReferenceImage, References, ScanReport

__all__ = ["IMAGE_CHUNK", "run"]

IMAGE_CHUNK = 256  # reference images encoded per transaction
PARTS = ("references", "images")


def _state_key(rank: int, world: int) -> str:
    """Where a process checkpoints its running top set (one key per rank when the scan is sharded)."""
    return "references:state" if world == 1 else f"references:state:{rank}"


def _check_world(job: Job) -> None:
    """A sharded scan resumes only with as many processes as it started with (each rank's checkpoint holds
    the chunks it took); per-neuron stages resume with any number."""
    store, world = job.store, job.group.world
    started = store.get("references:world")
    if started is None:
        job.group.barrier()  # every rank reads before rank 0 writes
        if job.group.is_main:
            store.put("references:world", world)
        job.group.barrier()
    elif started != world:
        raise PrecomputeError(f"the reference scan of {store.directory} was started with {started} "
                              f"process(es); resume it with the same number (torchrun --nproc-per-node "
                              f"{started}), or delete the directory to start again")


def _scan(job: Job) -> None:
    store, source, config, group = job.store, job.source, job.config, job.group
    n_images = len(source)
    _check_world(job)
    runner = ChunkRunner(job, "references", n_images, config.batch_size * job.checkpoint_every,
                         stage_label("references", "references: scan"), "img")
    key = _state_key(group.rank, group.world)
    state = store.get(key) or {"n_seen": 0, "n_skipped": 0, "skipped": []}
    top = (TopReferences(config.n_ref, state["values"], state["indices"], state["positions"])
           if "values" in state else None)  # no top set while every image so far was unreadable
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
            store.put(key, state)
    runner.close()  # every rank's chunks are committed past this point
    _merge_shards(job, n_images)


def _merge_shards(job: Job, n_images: int) -> None:
    """Every rank's checkpointed top set merged into the references (each rank computes it, so that all
    raise the same error; rank 0 writes)."""
    store, config, group = job.store, job.config, job.group
    states = [store.get(_state_key(rank, group.world)) or {"n_seen": 0, "n_skipped": 0, "skipped": []}
              for rank in range(group.world)]
    n_seen, n_skipped = sum(s["n_seen"] for s in states), sum(s["n_skipped"] for s in states)
    skipped = [message for s in states for message in s["skipped"]][:20]
    n_valid = n_seen - n_skipped
    if n_valid == 0:
        example = f" (e.g. {skipped[0]})" if skipped else ""
        raise DatasetError(f"all {n_images} images of {job.source.label} are unreadable{example}")
    top = TopReferences.empty(len(job.neurons), config.n_ref)
    for state in states:
        if "values" in state:
            top.merge(TopReferences(config.n_ref, state["values"], state["indices"], state["positions"]))
    if n_skipped:
        job.log(f"skipped {n_skipped} unreadable image(s) of {n_images} (first: {skipped[0]})")
    if n_valid < config.n_ref:
        job.log(f"only {n_valid} readable images: every neuron gets all of them as references "
                f"(n_ref {config.n_ref})")
    group.barrier()  # every rank has read the checkpoints before rank 0 drops them
    if group.is_main:
        references = References(neurons=np.asarray(job.neurons, dtype=np.int64), indices=top.indices,
                                max_activations=top.values, positions=top.positions)
        with store.transaction():
            store.write(references)
            store.write(ScanReport(n_images=n_images, n_valid=n_valid, n_skipped=n_skipped,
                                   skipped_examples=tuple(skipped)))
            for rank in range(group.world):
                store.delete(_state_key(rank, group.world))
            store.delete("references:world")
    group.barrier()


def run(job: Job) -> None:
    """Top-n_ref references per neuron, then their images as WEBP (``image:<index>``)."""
    if job.store.read(References) is None:
        _scan(job)
    unique = np.unique(job.store.read(References).indices)
    runner = ChunkRunner(job, "images", len(unique), IMAGE_CHUNK,
                         stage_label("references", "references: images"), "img")
    for chunk_id, chunk in runner.pending():
        images = {int(unique[i]): job.preprocess.geometric(job.load_reference(unique[i])) for i in chunk}
        encoded = {index: encode_image(image, reference_quality(image)) for index, image in images.items()}
        with runner.commit(chunk_id):
            for index, data in encoded.items():
                job.store.write(ReferenceImage(data), index)
        runner.advance(len(chunk))
    runner.close()
