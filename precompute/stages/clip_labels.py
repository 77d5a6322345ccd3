"""Stage 6, CLIP labels: each reference's crop named zero-shot by CLIP against a vocabulary, and per k each
virtual neuron's CLIP labels and its direction in CLIP's joint space for free-text search
(`pure_core.clip_labels`); then the run-wide label index, the CLIP centroid index and the ranking's labels.

Without the weights the stage writes ``ClipLabelStatus("skipped")`` and says so in one line; the same command
run again once the weights are on the machine fills the labels in (`is_pending`), the other stages untouched.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from precompute.config import RunConfig
from precompute.job import Job
from precompute.runner import ChunkRunner, chunk_ranges, stage_label
from precompute.stages.scores import label_index, virtual_neuron_labels
from pure_core import clip_labels
from pure_core.models import MissingWeightsError
from pure_core.virtual import VirtualNeurons
from pure_core.vocabulary import default_vocabulary, read_vocabulary
from store import RunStore
from store.codecs import decode_image
from store.schema import (
    ClipCentroidIndex,
    ClipLabelNames,
    ClipLabelStatus,
    Crops,
    NeuronScores,
    PureVectors,
    ReferenceClipLabels,
    References,
    Summary,
    VirtualNeuronClipCentroids,
    VirtualNeuronClipLabels,
)

__all__ = ["NAME", "PARTS", "is_pending", "run", "vocabulary"]

NAME = "clip_labels"
LABEL = stage_label(NAME, "CLIP labels")
PARTS = ("clip_labels",)
CLIP_BATCH = 32  # fixed, not --batch-size: a resumed run must encode with the same batches


def vocabulary(config: RunConfig) -> tuple[str, ...]:
    """The run's vocabulary: the file ``clip.vocabulary`` names, else the default one."""
    path = config.clip.vocabulary
    return default_vocabulary() if path is None else read_vocabulary(path)


def weights_present(spec: str) -> bool:
    """Whether the weights of the open_clip ``spec`` are on this machine (checked fast, nothing loaded)."""
    try:
        clip_labels.check_clip_weights(spec)
    except MissingWeightsError:
        return False
    return True


def is_pending(store: RunStore, config: RunConfig) -> bool:
    """Not done yet, or done without labels because the weights were missing and now they are here."""
    if not store.is_stage_done(NAME):
        return True
    status = store.read(ClipLabelStatus)
    return (status is not None and status.state == "skipped" and config.clip.model is not None
            and weights_present(config.clip.model))


def run(job: Job) -> None:
    """``clip_predictions``, ``vn_clip_labels`` and ``vn_clip_centroids`` per neuron, then the run-wide
    records; or only ``clip_status`` when CLIP is off or its weights are missing."""
    store, config, spec = job.store, job.config, job.config.clip.model
    if spec is None:
        job.log(f"{LABEL}: off (no clip model configured)")
        _write_status(job, ClipLabelStatus("off", None))
        return
    try:
        probe = clip_labels.make_clip_probe(spec, device=job.device, batch_size=CLIP_BATCH)
    except MissingWeightsError as error:
        reason = str(error).splitlines()[0]
        job.log(f"{LABEL} skipped: {reason} Everything else is stored; run the same command with "
                "the weights on this machine to add the labels.")
        _write_status(job, ClipLabelStatus("skipped", spec, reason))
        return
    names = vocabulary(config)
    job.log(f"{LABEL}: {probe.name}, text features of {len(names)} vocabulary names")
    text = probe.encode_texts(names)
    references = store.read(References)
    neurons, n_ref = references.neuron_ids, references.n_ref
    runner = ChunkRunner(job, NAME, len(neurons), job.chunk_neurons, LABEL, "crop",
                         weight=lambda chunk: len(chunk) * n_ref)
    for chunk_id, chunk in runner.pending():
        crops = [store.read(Crops, neurons[row]).images for row in chunk]
        images = [decode_image(data) for per_neuron in crops for data in per_neuron]
        features = np.zeros((len(images), probe.dim), np.float32)
        for batch in chunk_ranges(len(images), CLIP_BATCH):
            features[batch.start:batch.stop] = probe.encode_images([images[i] for i in batch])
            runner.advance(len(batch))
        records = []
        start = 0
        for row, per_neuron in zip(chunk, crops, strict=True):
            neuron = neurons[row]
            own = features[start:start + len(per_neuron)]
            start += len(per_neuron)
            classes, probabilities = clip_labels.zero_shot_labels(own, text, probe.logit_scale,
                                                                  config.clip.top)
            groups = _virtual_neurons(store, neuron)
            records.append((neuron, [
                ReferenceClipLabels(classes, probabilities),
                virtual_neuron_labels(classes[:, 0], groups, VirtualNeuronClipLabels),
                VirtualNeuronClipCentroids({k: clip_labels.centroids(own, g, k) for k, g in groups.items()}),
            ]))
        with runner.commit(chunk_id):
            for neuron, outputs in records:
                for record in outputs:
                    store.write(record, neuron)
    runner.close()
    if job.group.is_main:  # every rank's neurons are labelled now
        _aggregate(store, neurons, ClipLabelStatus("labelled", probe.name, "", probe.templates), names)
    job.group.barrier()


def _virtual_neurons(store: RunStore, neuron: int) -> dict[int, np.ndarray]:
    """Per stored k, the virtual neuron of each reference, numbered by size: the split the app shows
    (`VirtualNeurons.from_stored` on the stored centroids and PURE vectors)."""
    centroids = store.read(NeuronScores, neuron).centroids
    pure = np.asarray(store.read(PureVectors, neuron).values, dtype=np.float64)
    return {k: VirtualNeurons.from_stored(c, pure).labels_ for k, c in centroids.items()}


def _write_status(job: Job, status: ClipLabelStatus) -> None:
    if job.group.is_main:
        job.store.write(status)
    job.group.barrier()


def _aggregate(store: RunStore, neurons: list[int], status: ClipLabelStatus, names: tuple[str, ...]) -> None:
    """The vocabulary, the status, the label index with CLIP's labels, the centroid index and the ranking's
    CLIP labels at k = 2."""
    labels = {neuron: store.read(VirtualNeuronClipLabels, neuron) for neuron in neurons}
    index = ClipCentroidIndex.of({n: store.read(VirtualNeuronClipCentroids, n) for n in neurons})
    summary = store.read(Summary)
    rows = tuple(replace(row, clip_labels=labels[row.neuron].first_labels(2)) for row in summary.rows)
    with store.transaction():
        store.write(ClipLabelNames(names))
        store.write(label_index(store, neurons))
        store.write(index)
        store.write(Summary(rows))
        store.write(status)
