"""Stage 7, reference quantiles: per neuron, images from activation bands below its top references, with
their circuits, so the app can show whether a virtual neuron persists below the top.

A probe set of dataset images (`pure_core.quantiles.probe_indices`: ``quantiles.probe_images`` drawn with the
run's seed) goes once through the model to layer L (max-pooled activation per analysed neuron; unreadable
images skipped as in stage 1). Per neuron, `pure_core.quantiles.activation_bands` picks ``per_band`` images
of each band that are not among its references and that it fires on (activation > 0); their PURE vectors
come from `pure_attributions_for_pairs` (one backward per batch of a neuron's samples), and each sampled
image is stored like a reference image (``image:<index>``, model-input resolution, stage 1's encoding).
Chunks of neurons are committed one at a time (`ChunkRunner`), and ranks share them; every rank runs the
probe itself (one forward over the probe set). Batches are fixed (`PROBE_BATCH`, and per neuron
`PAIR_BATCH`), never ``--batch-size`` or the chunk size, so a resumed or sharded run stores the same floats.

Self-contained: it reads the references (stage 1), the width of the PURE vectors (stage 2) and the model, so
the same command adds it to a store whose other stages finished before it existed. ``quantiles.probe_images:
0`` stores only ``QuantileBands("off")``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from precompute.job import Job
from precompute.runner import ChunkRunner, chunk_ranges, stage_label
from pure_core.activations import pooled_activations
from pure_core.attribution import pure_attributions_for_pairs
from pure_core.quantiles import activation_bands, probe_indices
from pure_core.sources import iterate_batches
from store.codecs import encode_image, reference_quality
from store.schema import PureVectors, QuantileBands, QuantileSamples, ReferenceImage, References, key

__all__ = ["NAME", "PAIR_BATCH", "PARTS", "PROBE_BATCH", "Probe", "run", "select_samples"]

NAME = "quantiles"
PARTS = ("quantiles",)
PROBE_BATCH = 64  # probe images per forward pass (fixed: equal batches give equal floats)
PAIR_BATCH = 32  # (image, neuron) pairs per backward pass, cut from one neuron's samples
LABEL = stage_label(NAME, "reference quantiles")


class Probe:
    """The probe set through layer L: ``indices (S,)`` dataset indices read (ascending), ``values (S, N)``
    float32 max-pooled activation of each analysed neuron (columns in `References.neurons` order), and the
    count of probe images skipped as unreadable."""

    def __init__(self, indices: np.ndarray, values: np.ndarray, n_skipped: int):
        self.indices, self.values, self.n_skipped = indices, values, n_skipped

    @classmethod
    def compute(cls, job: Job, probe: np.ndarray, neurons: list[int]) -> Probe:
        columns = torch.as_tensor(neurons, dtype=torch.long)
        indices, values, n_skipped = [], [], 0
        for x, batch_indices, errors in iterate_batches(job.source, probe.tolist(), job.preprocess.to_tensor,
                                                        PROBE_BATCH, job.workers):
            n_skipped += len(errors)
            if x is not None:
                maxima, _, _ = pooled_activations(job.model, x.to(job.device), job.config.layer)
                values.append(maxima.index_select(1, columns.to(maxima.device)).float().cpu().numpy())
                indices.append(np.asarray(batch_indices, dtype=np.int64))
        if not values:
            return cls(np.zeros(0, np.int64), np.zeros((0, len(neurons)), np.float32), n_skipped)
        return cls(np.concatenate(indices), np.concatenate(values), n_skipped)


def select_samples(probe: Probe, column: int, references: np.ndarray, bands, per_band: int):
    """One neuron's samples: ``(positions into the probe (M,), band of each (M,) int8, band edges (B, 2))``,
    band by band in descending activation, none of them in ``references`` (its dataset indices) and none the
    neuron does not fire on (activation <= 0: no circuit to assign)."""
    values = probe.values[:, column]
    leave_out = np.isin(probe.indices, references) | ~(values > 0)
    chosen = activation_bands(values, bands, per_band, exclude=leave_out)
    positions = np.concatenate([p for _, p in chosen]).astype(np.int64)
    band_of = np.concatenate([np.full(len(p), b, np.int8) for b, (_, p) in enumerate(chosen)])
    edges = np.full((len(chosen), 2), np.nan, np.float32)
    for b, (_, members) in enumerate(activation_bands(values, bands, len(values))):  # every band member
        if len(members):
            edges[b] = (values[members].min(), values[members].max())
    return positions, band_of, edges


def run(job: Job) -> None:
    """``quantiles:<n>`` per neuron and ``image:<index>`` of the samples, then ``quantile_bands``; only
    ``quantile_bands`` (off) when ``quantiles.probe_images`` is 0."""
    store, config, settings = job.store, job.config, job.config.quantiles
    if settings.probe_images == 0:
        job.log(f"{LABEL}: off (quantiles probe_images 0)")
        _write_bands(job, QuantileBands.off(config.seed))
        return
    references = store.read(References)
    neurons = references.neuron_ids
    probe_set = probe_indices(len(job.source), settings.probe_images, config.seed)
    job.log(f"{LABEL}: {len(probe_set)} probe images through {config.layer}, {settings.per_band} per band "
            f"of {len(settings.bands)} bands per neuron")
    probe = Probe.compute(job, probe_set, neurons)
    c_lower = store.read(PureVectors, neurons[0]).values.shape[1]
    runner = ChunkRunner(job, NAME, len(neurons), job.chunk_neurons, LABEL, "neuron")
    for chunk_id, chunk in runner.pending():
        records, images = [], {}
        for row in chunk:
            positions, band_of, edges = select_samples(probe, row, references.indices[row], settings.bands,
                                                       settings.per_band)
            indices = probe.indices[positions]
            for index in indices.tolist():
                if index not in images:  # at model-input geometry: stored as is, normalised for the model
                    images[index] = job.preprocess.geometric(job.load_reference(index))
            pure = _circuits(job, [images[i] for i in indices.tolist()], neurons[row], c_lower)
            activations = probe.values[positions, row]
            records.append((neurons[row], QuantileSamples(indices, activations, band_of, pure, edges)))
            runner.advance(1)
        encoded = {index: encode_image(image, reference_quality(image)) for index, image in images.items()
                   if store.get(key(ReferenceImage, index)) is None}
        with runner.commit(chunk_id):
            for neuron, record in records:
                store.write(record, neuron)
            for index, data in encoded.items():
                store.write(ReferenceImage(data), index)
    runner.close()
    _write_bands(job, QuantileBands("sampled", tuple(tuple(b) for b in settings.bands), settings.per_band,
                                    settings.probe_images, len(probe.indices), probe.n_skipped, config.seed))


def _circuits(job: Job, images: list[Image.Image], neuron: int, c_lower: int) -> np.ndarray:
    """PURE vectors ``(M, C_lower)`` float16 of ``neuron`` on ``images`` (at model-input geometry),
    `PAIR_BATCH` at a time."""
    out = [np.zeros((0, c_lower), np.float16)]
    for batch in chunk_ranges(len(images), PAIR_BATCH):
        x = job.preprocess.from_pixels(np.stack([np.asarray(images[i]) for i in batch])).to(job.device)
        pure = pure_attributions_for_pairs(job.model, x, job.config.layer, job.config.lower_layer,
                                           [neuron] * len(batch))
        out.append(pure.detach().float().cpu().numpy().astype(np.float16))
    return np.concatenate(out)


def _write_bands(job: Job, record: QuantileBands) -> None:
    if job.group.is_main:
        job.store.write(record)
    job.group.barrier()
