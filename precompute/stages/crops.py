"""Stage 3, crops: input heatmaps from each reference's argmax position -> crop boxes, crops for embedding and
display thumbnails (WEBP bytes), in chunks of neurons (`pure_core.crops`)."""

from __future__ import annotations

import numpy as np
import torch

from precompute.job import Job
from precompute.runner import ChunkRunner, chunk_ranges
from pure_core.attribution import input_attributions_for_pairs
from pure_core.crops import crop_box, crop_for_display, crop_for_embedding
from store.codecs import EMBED_QUALITY, THUMB_QUALITY, encode_image
from store.schema import CropBoxes, Crops, References, Thumbnails

__all__ = ["run"]

PARTS = ("crops",)


def _input_heatmaps(job: Job, images: torch.Tensor, neurons: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Input heatmaps ``(P, H, W)`` for pairs (images[p], neurons[p]) started at the argmax ``positions
    (P, 2)`` (`input_attributions_for_pairs`: one forward and one backward for the batch)."""
    maps = input_attributions_for_pairs(job.model, images.to(job.device), job.config.layer,
                                        [int(n) for n in neurons], positions=positions)
    return maps.detach().float().cpu().numpy()


def run(job: Job) -> None:
    """``boxes:<n>`` ``(n_ref, 4)``, ``crops:<n>`` and ``thumbnails:<n>`` (lists of WEBP bytes)."""
    store, crop = job.store, job.config.crop
    references = store.read(References)
    neurons, n_ref = references.neuron_ids, references.n_ref
    runner = ChunkRunner(job, "crops", len(neurons), job.chunk_neurons, "3/5 crops", "crop",
                         weight=lambda chunk: len(chunk) * n_ref)
    for chunk_id, chunk in runner.pending():
        rows = list(chunk)
        ref_indices = references.indices[rows].reshape(-1)
        pair_neurons = np.repeat([neurons[row] for row in rows], n_ref)
        pair_positions = references.positions[rows].reshape(-1, 2)
        boxes, crops, thumbnails = [], [], []
        for batch in chunk_ranges(len(ref_indices), job.batch_size):  # images are loaded per batch
            batch = slice(batch.start, batch.stop)
            loaded = {int(i): job.load_reference(i) for i in ref_indices[batch]}
            x = torch.stack([job.preprocess.to_tensor(loaded[int(i)]) for i in ref_indices[batch]])
            pictures = {index: np.asarray(job.preprocess.geometric(pil)) for index, pil in loaded.items()}
            heatmaps = _input_heatmaps(job, x, pair_neurons[batch], pair_positions[batch])
            for index, heatmap in zip(ref_indices[batch], heatmaps, strict=True):
                image = pictures[int(index)]
                boxes.append(crop_box(heatmap, crop.embed_kernel, crop.embed_threshold))
                crops.append(encode_image(crop_for_embedding(image, heatmap, crop.embed_kernel,
                                                             crop.embed_threshold), EMBED_QUALITY))
                thumbnail = crop_for_display(image, heatmap, crop.display_kernel, crop.display_threshold,
                                             size_px=crop.thumbnail_px)
                thumbnails.append(encode_image(thumbnail, THUMB_QUALITY))
                runner.advance(1)
        boxes = np.asarray(boxes, dtype=np.int32).reshape(len(rows), n_ref, 4)
        with runner.commit(chunk_id):
            for j, row in enumerate(rows):
                store.write(CropBoxes(boxes[j]), neurons[row])
                store.write(Crops(tuple(crops[j * n_ref:(j + 1) * n_ref])), neurons[row])
                store.write(Thumbnails(tuple(thumbnails[j * n_ref:(j + 1) * n_ref])), neurons[row])
    runner.close()
