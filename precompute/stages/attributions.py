"""Stage 2, attributions: PURE vectors ``(n_ref, C_lower)`` and activation baselines ``(n_ref, C_L)``; for
models with class names, also the model's top classes for each reference (`ReferencePredictions`), from the
same forward pass as the baselines (the rest of the network past layer L is all they add).

Work is grouped by reference image, in chunks of unique images: when images are shared by several neurons
(>= `PER_IMAGE_MIN_SHARE` pairs per image on average), one forward per image and the batched VJPs of all
neurons that chose it (`pure_attributions`); otherwise batched forwards, one per (image, neuron) pair
(`pure_attributions_for_pairs`). Each chunk is kept as a scratch part until every part exists, then the
per-neuron arrays are written and the parts dropped.
"""

from __future__ import annotations

import numpy as np
import torch

from precompute.job import Job, PrecomputeError
from precompute.runner import ChunkRunner, chunk_ranges, stage_label
from pure_core.activations import pooled_activations, pooled_activations_and_outputs
from pure_core.attribution import pure_attributions, pure_attributions_for_pairs
from pure_core.labels import top_classes
from store.schema import ActivationVectors, ClassNames, PureVectors, ReferencePredictions, References

__all__ = ["PER_IMAGE_MIN_SHARE", "attribution_strategy", "run"]

PER_IMAGE_MIN_SHARE = 2.0  # pairs per unique reference image from which the stage groups by image
PARTS = ("attributions",)


def _group_by_image(indices: np.ndarray) -> tuple[np.ndarray, list[list[tuple[int, int]]]]:
    """Unique dataset indices ``(U,)`` and, per unique image, its ``(neuron row, reference slot)`` pairs."""
    unique, inverse = np.unique(indices, return_inverse=True)
    pairs: list[list[tuple[int, int]]] = [[] for _ in unique]
    rows, slots = np.unravel_index(np.arange(indices.size), indices.shape)
    for flat, u in enumerate(inverse.reshape(-1)):
        pairs[u].append((int(rows[flat]), int(slots[flat])))
    return unique, pairs


def _pure_per_pair(job: Job, images: torch.Tensor, neuron_lists: list[list[int]]) -> list[np.ndarray]:
    """PURE vectors per image ``[(G_b, C_lower)]``: every (image, neuron) pair is one input of
    `pure_attributions_for_pairs` (a forward per pair, one backward per batch)."""
    config = job.config
    pair_image = [b for b, neurons in enumerate(neuron_lists) for _ in neurons]
    pair_neuron = [n for neurons in neuron_lists for n in neurons]
    out = []
    for chunk in chunk_ranges(len(pair_neuron), job.batch_size):
        x = images[pair_image[chunk.start]:pair_image[chunk.stop - 1] + 1]
        rows = [pair_image[p] - pair_image[chunk.start] for p in chunk]
        part = pure_attributions_for_pairs(job.model, x[rows].to(job.device), config.layer,
                                           config.lower_layer, [pair_neuron[p] for p in chunk])
        out.append(part.detach().float().cpu().numpy())
    flat = np.concatenate(out, axis=0)
    offsets = np.cumsum([0] + [len(n) for n in neuron_lists])
    return [flat[offsets[b]:offsets[b + 1]] for b in range(len(neuron_lists))]


def _pure_per_image(job: Job, images: torch.Tensor, neuron_lists: list[list[int]]) -> list[np.ndarray]:
    """PURE vectors per image ``[(G_b, C_lower)]``: one forward per image, the VJPs of all its neurons
    (`pure_attributions` with that image's neurons)."""
    config = job.config
    return [pure_attributions(job.model, images[b:b + 1].to(job.device), config.layer, config.lower_layer,
                              neurons)[0].detach().float().cpu().numpy()
            for b, neurons in enumerate(neuron_lists)]


def attribution_strategy(n_pairs: int, n_images: int, requested: str = "auto") -> str:
    """``"per_image"`` (one forward per unique image, a VJP per neuron) when images are shared by enough
    neurons to pay for unbatched forwards, else ``"per_pair"`` (batched forwards, one per pair)."""
    if requested != "auto":
        return requested
    return "per_image" if n_pairs >= PER_IMAGE_MIN_SHARE * max(1, n_images) else "per_pair"


def _activations_and_predictions(job: Job, x: torch.Tensor) -> dict[str, np.ndarray]:
    """O'Mahony baseline: clamped layer-L activation, mean over space, ``activation (B, C_L)``; with the
    model's class names also its top classes, ``classes`` and ``probabilities (B, TOP_CLASSES)``."""
    predict = bool(job.categories)
    means, classes, probabilities = [], [], []
    for chunk in chunk_ranges(len(x), job.batch_size):
        batch = x[chunk.start:chunk.stop].to(job.device)
        if predict:
            _, _, mean, logits = pooled_activations_and_outputs(job.model, batch, job.config.layer)
            if logits.ndim != 2 or logits.shape[1] != len(job.categories):
                raise PrecomputeError(f"the model names {len(job.categories)} classes but returns outputs of "
                                      f"shape {tuple(logits.shape)}; its predictions cannot be labelled")
            top, p = top_classes(logits)
            classes.append(top)
            probabilities.append(p)
        else:
            _, _, mean = pooled_activations(job.model, batch, job.config.layer)
        means.append(mean.float().cpu().numpy())
    out = {"activation": np.concatenate(means, axis=0).astype(np.float16)}
    if predict:
        out["classes"] = np.concatenate(classes, axis=0).astype(np.int32)
        out["probabilities"] = np.concatenate(probabilities, axis=0).astype(np.float16)
    return out


def run(job: Job) -> None:
    """``pure:<n>`` ``(n_ref, C_lower)`` and ``activation:<n>`` ``(n_ref, C_L)``, float16."""
    store = job.store
    references = store.read(References)
    indices = references.indices
    neurons = references.neuron_ids
    unique, pairs = _group_by_image(indices)
    strategy = attribution_strategy(indices.size, len(unique), job.attribution_strategy)
    attribute = _pure_per_image if strategy == "per_image" else _pure_per_pair
    runner = ChunkRunner(job, "attributions", len(unique), job.image_chunk,
                         stage_label("attributions", f"attributions ({strategy.replace('_', ' ')})"), "pair",
                         weight=lambda chunk: sum(len(pairs[u]) for u in chunk))
    for chunk_id, chunk in runner.pending():
        images = job.reference_inputs(unique[chunk.start:chunk.stop])
        pure = np.concatenate(attribute(job, images, [[neurons[row] for row, _ in pairs[u]] for u in chunk]))
        part = {
            "images": unique[chunk.start:chunk.stop],
            "rows": np.array([row for u in chunk for row, _ in pairs[u]], dtype=np.int64),
            "slots": np.array([slot for u in chunk for _, slot in pairs[u]], dtype=np.int64),
            "pure": pure.astype(np.float16),
            **_activations_and_predictions(job, images),
        }
        with runner.commit(chunk_id):
            store.put(f"attributions:part:{chunk_id}", part)
        runner.advance(len(part["rows"]))
    runner.close()
    if job.group.is_main:  # the parts of every rank are in the store now
        _assemble(job, neurons, indices, len(runner.chunks))
    job.group.barrier()


def _assemble(job: Job, neurons: list[int], indices: np.ndarray, n_parts: int) -> None:
    """Per-neuron arrays from the scratch parts, then the parts dropped."""
    store = job.store
    n_neurons, n_ref = indices.shape
    pure_all: np.ndarray | None = None
    activation_of: dict[int, np.ndarray] = {}
    predictions_of: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for part_id in range(n_parts):
        part = store.get(f"attributions:part:{part_id}")
        if part is None:
            raise PrecomputeError(f"store {store.directory} lost attribution part {part_id}; "
                                  "delete the directory and rerun")
        if pure_all is None:
            pure_all = np.zeros((n_neurons, n_ref, part["pure"].shape[1]), np.float16)
        pure_all[part["rows"], part["slots"]] = part["pure"]
        for i, index in enumerate(part["images"]):
            activation_of[int(index)] = part["activation"][i]
            if "classes" in part:
                predictions_of[int(index)] = (part["classes"][i], part["probabilities"][i])
    assert pure_all is not None
    for chunk in chunk_ranges(n_neurons, job.chunk_neurons):
        with store.transaction():
            for row in chunk:
                store.write(PureVectors(np.ascontiguousarray(pure_all[row])), neurons[row])
                store.write(ActivationVectors(np.stack([activation_of[int(i)] for i in indices[row]])),
                            neurons[row])
                if predictions_of:
                    classes, probs = zip(*(predictions_of[int(i)] for i in indices[row]), strict=True)
                    store.write(ReferencePredictions(np.stack(classes), np.stack(probs)), neurons[row])
    with store.transaction():
        if predictions_of:
            store.write(ClassNames(tuple(job.categories or ())))
        for part_id in range(n_parts):
            store.delete(f"attributions:part:{part_id}")
