"""Stage 3, crops: input heatmaps from each reference's argmax position -> crop boxes, crops for embedding and
display thumbnails (WEBP bytes), in chunks of neurons (`pure_core.heatmaps`, `pure_core.crops`).

The heatmap method is the config's ``crop.heatmap`` resolved for the model ("auto": LRP where a canonizer
exists, gradient x input otherwise); it is recorded (`store.schema.CropMethod`) with every chunk, and a
resumed run that would resolve another method stops instead of mixing two kinds of crops.
"""

from __future__ import annotations

import numpy as np
import torch

from precompute.job import Job, PrecomputeError
from precompute.runner import ChunkRunner, chunk_ranges, stage_label
from pure_core.crops import reference_crops
from pure_core.heatmaps import input_heatmaps_for_pairs, resolve_heatmap_method
from store.codecs import EMBED_QUALITY, THUMB_QUALITY, encode_image
from store.schema import CropBoxes, CropMethod, Crops, References, Thumbnails

__all__ = ["heatmap_method", "run"]

PARTS = ("crops",)


def heatmap_method(job: Job) -> str:
    """The run's input-heatmap method: ``crop.heatmap`` resolved for the model, checked against the method
    the store recorded when the stage started (`PrecomputeError` if they differ or the method cannot be
    used on this model)."""
    try:
        method = resolve_heatmap_method(job.model, job.config.crop.heatmap)
    except ValueError as error:
        raise PrecomputeError(f"crop heatmap: {error}") from error
    recorded = job.store.read(CropMethod)
    if recorded is not None and recorded.heatmap != method:
        raise PrecomputeError(f"the store's crops were made with {recorded.heatmap!r} heatmaps, this run "
                              f"resolves {job.config.crop.heatmap!r} to {method!r}; pass another --out")
    return method


def _input_heatmaps(job: Job, method: str, images: torch.Tensor, neurons: np.ndarray,
                    positions: np.ndarray) -> np.ndarray:
    """Input heatmaps ``(P, H, W)`` for pairs (images[p], neurons[p]) started at the argmax ``positions
    (P, 2)``: one forward and one backward for the batch."""
    maps = input_heatmaps_for_pairs(job.model, images.to(job.device), job.config.layer,
                                    [int(n) for n in neurons], positions=positions, method=method)
    return maps.detach().float().cpu().numpy()


def run(job: Job) -> None:
    """``boxes:<n>`` ``(n_ref, 4)``, ``crops:<n>`` and ``thumbnails:<n>`` (lists of WEBP bytes), and
    ``crop_method``."""
    store, crop = job.store, job.config.crop
    method = heatmap_method(job)
    references = store.read(References)
    neurons, n_ref = references.neuron_ids, references.n_ref
    runner = ChunkRunner(job, "crops", len(neurons), job.chunk_neurons, stage_label("crops", "crops"), "crop",
                         weight=lambda chunk: len(chunk) * n_ref)
    for chunk_id, chunk in runner.pending():
        rows = list(chunk)
        ref_indices = references.indices[rows].reshape(-1)
        pair_neurons = np.repeat([neurons[row] for row in rows], n_ref)
        pair_positions = references.positions[rows].reshape(-1, 2)
        boxes, crops, thumbnails = [], [], []
        for batch in chunk_ranges(len(ref_indices), job.batch_size):  # images are loaded per batch
            batch = slice(batch.start, batch.stop)
            pictures = {int(i): np.asarray(job.preprocess.geometric(job.load_reference(i)))
                        for i in ref_indices[batch]}  # each image resized once, shared by its pairs
            images = [pictures[int(i)] for i in ref_indices[batch]]
            inputs = job.preprocess.from_pixels(np.stack(images))
            heatmaps = _input_heatmaps(job, method, inputs, pair_neurons[batch], pair_positions[batch])
            made = reference_crops(images, heatmaps, crop.embed_kernel, crop.embed_threshold,
                                   crop.display_kernel, crop.display_threshold, crop.thumbnail_px,
                                   crop.embed_side)
            for reference in made:
                boxes.append(reference.box)
                crops.append(encode_image(reference.crop, EMBED_QUALITY))
                thumbnails.append(encode_image(reference.thumbnail, THUMB_QUALITY))
            runner.advance(len(made))
        boxes = np.asarray(boxes, dtype=np.int32).reshape(len(rows), n_ref, 4)
        with runner.commit(chunk_id):
            store.write(CropMethod(method))
            for j, row in enumerate(rows):
                store.write(CropBoxes(boxes[j]), neurons[row])
                store.write(Crops(tuple(crops[j * n_ref:(j + 1) * n_ref])), neurons[row])
                store.write(Thumbnails(tuple(thumbnails[j * n_ref:(j + 1) * n_ref])), neurons[row])
    runner.close()
