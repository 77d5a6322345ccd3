"""The five precompute stages, each resumable, each writing its outputs into the run store.

1. ``references``: one streaming pass over the dataset; per neuron the top-n_ref images by max-pooled
   activation of layer L (ties: lower dataset index first) and the argmax position. The running top set
   (`pure_core.activations.TopReferences`) is checkpointed every `Job.checkpoint_every` batches; then the
   reference images are stored as WEBP at model-input resolution (``image:<index>``).
2. ``attributions``: PURE vectors ``(n_ref, C_lower)`` and activation baselines ``(n_ref, C_L)`` per neuron.
   Work is grouped by reference image, in chunks of unique images: when images are shared by several
   neurons (>= 2 pairs per image on average), one forward per image and the batched VJPs of all neurons
   that chose it (`pure_attributions`); otherwise batched forwards, one per (image, neuron) pair
   (`pure_attributions_for_pairs`). Each chunk is kept as a scratch part until every part exists, then the
   per-neuron arrays are written and the parts dropped.
3. ``crops``: input heatmaps from the argmax position -> crop boxes, crops for embedding, display
   thumbnails (WEBP bytes), in chunks of neurons.
4. ``embeddings``: the crops through the embedder, batched across the neurons of a chunk.
5. ``scores``: polysemanticity, per-k cluster evaluation of PURE / activation / embedding clusterings,
   distance correlations, PURE centroids per k, UMAP coordinates, the oracle score (world only); then the
   run-wide ``summary``, ``method_comparison`` and ``distance_correlation``.

Every chunk's outputs and its chunk marker go into the store in one transaction, so a kill (even SIGKILL)
loses at most the chunk in flight, and a resumed run redoes exactly that chunk with the same inputs: the
final store equals an uninterrupted run's (fixed seeds, fixed order, batch boundaries recorded).
"""

from __future__ import annotations

import io
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from precompute.config import RunConfig
from precompute.datasets import DatasetError, ImageSource, UnreadableImageError, iterate_batches
from store import RunStore

__all__ = [
    "STAGE_FUNCTIONS",
    "Job",
    "PrecomputeError",
    "attribution_strategy",
    "chunk_transaction",
    "decode_image",
    "encode_image",
    "format_seconds",
    "import_umap",
    "run_stages",
    "umap_2d",
]

KILL_ENV = "PURE_PRECOMPUTE_KILL_AT"  # tests: "<stage>:<chunk>" SIGKILLs inside that chunk's transaction
EMBED_QUALITY = 90  # WEBP quality of reference images and crops for embedding
THUMB_QUALITY = 85
IMAGE_CHUNK = 256  # reference images encoded per transaction


class PrecomputeError(RuntimeError):
    """A run cannot go on; the message is one line for the user."""


@dataclass
class Job:
    """One precompute run: config, store, model, data and runtime settings shared by the stages."""

    config: RunConfig
    store: RunStore
    model: torch.nn.Module
    preprocess: Any  # pure_core.models.Preprocessing
    source: ImageSource
    neurons: list[int]
    device: torch.device
    embedder_factory: Callable[[], Any]
    progress: bool = True
    checkpoint_every: int = 8  # stage 1: batches per checkpoint
    chunk_neurons: int = 16  # stages 3-5: neurons per transaction
    image_chunk: int = 64  # stage 2: reference images per transaction
    attribution_strategy: str = "auto"  # stage 2: "per_pair", "per_image" or "auto"
    workers: int = 0
    log: Callable[[str], None] = print
    seconds: dict[str, float] = field(default_factory=dict)
    batch_size: int = 0  # the current stage's recorded batch size (see `_layout`)
    _embedder: Any = None

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = self.embedder_factory()
        return self._embedder


# -- shared helpers ------------------------------------------------------------------------------------
def _bar(job: Job, total: int, desc: str, unit: str, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not job.progress,
                dynamic_ncols=True, leave=True, mininterval=0.5)


def _maybe_kill(stage: str, chunk: int) -> None:
    if os.environ.get(KILL_ENV) == f"{stage}:{chunk}":
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def chunk_transaction(store: RunStore, stage: str, chunk: int) -> Iterator[None]:
    """Write one chunk's outputs and its marker atomically (the test hook can SIGKILL before the commit)."""
    with store.transaction():
        yield
        store.mark_chunk_done(stage, chunk)
        _maybe_kill(stage, chunk)


def _layout(job: Job, stage: str, chunk_size: int) -> int:
    """The chunk size of `stage` (and, in ``job.batch_size``, its batch size) as first used for this run.

    Chunk markers count chunks, so a resumed run must cut the work exactly as the first run did; equal
    batches also give equal floats. Runtime flags (--batch-size, --chunk-neurons) only apply to stages that
    have not started yet.
    """
    layout = job.store.get(f"layout:{stage}")
    if layout is None:
        layout = {"chunk_size": int(chunk_size), "batch_size": int(job.config.batch_size)}
        job.store.put(f"layout:{stage}", layout)
    job.batch_size = layout["batch_size"]
    return layout["chunk_size"]


def _chunks(n: int, size: int) -> list[range]:
    """Consecutive ranges covering ``range(n)``, ``size`` long (the last one shorter)."""
    return [range(start, min(n, start + size)) for start in range(0, n, max(1, size))]


def _slice(r: range) -> slice:
    return slice(r.start, r.stop)


def encode_image(image: Image.Image, quality: int) -> bytes:
    """WEBP bytes of an RGB image (deterministic for equal pixels)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="WEBP", quality=quality, method=4)
    return buffer.getvalue()


def decode_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _load_reference(job: Job, index: int) -> Image.Image:
    try:
        return job.source.load(int(index))
    except UnreadableImageError as error:
        raise PrecomputeError(f"reference image became unreadable: {error}") from error


# -- stage 1: references -------------------------------------------------------------------------------
def _batch_statistics(job: Job, x: torch.Tensor, neuron_index: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Max-pooled activation ``(B, N)`` and its argmax ``(B, N, 2)`` (h, w) for the selected channels."""
    from pure_core.activations import pooled_activations

    values, positions, _ = pooled_activations(job.model, x.to(job.device), job.config.layer)
    values = values.index_select(1, neuron_index.to(values.device)).float().cpu().numpy()
    positions = positions.index_select(1, neuron_index.to(positions.device)).cpu().numpy()
    return values, positions


def _scan(job: Job) -> None:
    from pure_core.activations import TopReferences

    store, source, config = job.store, job.source, job.config
    n_images = len(source)
    state = store.get("references:state")
    if state is None:
        state = {
            "batch_size": int(config.batch_size),
            "chunk_batches": int(job.checkpoint_every),
            "next_chunk": 0,
            "n_seen": 0,
            "n_skipped": 0,
            "skipped": [],
        }
        top = TopReferences.empty(len(job.neurons), config.n_ref)
    else:  # resume from the last checkpoint
        top = TopReferences(config.n_ref, state["values"], state["indices"], state["positions"])
    batch_size = state["batch_size"]  # the recorded batch layout, so a resume computes the same floats
    chunk_images = batch_size * state["chunk_batches"]
    chunks = _chunks(n_images, chunk_images)
    neuron_index = torch.as_tensor(job.neurons, dtype=torch.long)
    bar = _bar(job, n_images, "1/5 references: scan", "img", initial=min(n_images, state["n_seen"]))
    for chunk_id in range(state["next_chunk"], len(chunks)):
        for x, batch_indices, errors in iterate_batches(source, chunks[chunk_id], job.preprocess.to_tensor,
                                                        batch_size, job.workers):
            if errors:
                state["n_skipped"] += len(errors)
                state["skipped"] = (state["skipped"] + [message for _, message in errors])[:20]
            if x is not None:
                top.update(*_batch_statistics(job, x, neuron_index), batch_indices)
            state["n_seen"] += len(batch_indices) + len(errors)
            bar.update(len(batch_indices) + len(errors))
            if state["n_skipped"]:
                bar.set_postfix(skipped=state["n_skipped"])
        state = {**state, "values": top.values, "indices": top.indices, "positions": top.positions,
                 "next_chunk": chunk_id + 1}
        with chunk_transaction(store, "references", chunk_id):
            store.put("references:state", state)
    bar.close()
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
    references = {
        "neurons": np.asarray(job.neurons, dtype=np.int64),
        "indices": top.indices,
        "max_activations": top.values,
        "positions": top.positions,
    }
    scan = {"n_images": n_images, "n_valid": n_valid, "n_skipped": state["n_skipped"],
            "skipped_examples": state["skipped"]}
    with store.transaction():
        store.put("references", references)
        store.put("scan", scan)
        store.delete("references:state")


def run_references(job: Job) -> None:
    """Stage 1: top-n_ref references per neuron, then their images as WEBP (``image:<index>``)."""
    if job.store.get("references") is None:
        _scan(job)
    references = job.store.get("references")
    unique = np.unique(references["indices"])
    chunks = _chunks(len(unique), IMAGE_CHUNK)
    done = [job.store.is_chunk_done("images", c) for c in range(len(chunks))]
    bar = _bar(job, len(unique), "1/5 references: images", "img",
               initial=sum(len(chunk) for chunk, ok in zip(chunks, done, strict=True) if ok))
    for chunk_id, chunk in enumerate(chunks):
        if done[chunk_id]:
            continue
        encoded = {int(unique[i]): encode_image(job.preprocess.geometric(_load_reference(job, unique[i])),
                                                EMBED_QUALITY) for i in chunk}
        with chunk_transaction(job.store, "images", chunk_id):
            for index, data in encoded.items():
                job.store.put(f"image:{index}", data)
        bar.update(len(chunk))
    bar.close()


# -- stage 2: attributions ---------------------------------------------------------------------------
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
    from pure_core.attribution import pure_attributions_for_pairs

    config = job.config
    pair_image = [b for b, neurons in enumerate(neuron_lists) for _ in neurons]
    pair_neuron = [n for neurons in neuron_lists for n in neurons]
    out = []
    for chunk in _chunks(len(pair_neuron), job.batch_size):
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
    from pure_core.attribution import pure_attributions

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


PER_IMAGE_MIN_SHARE = 2.0  # pairs per unique reference image from which stage 2 groups by image


def _activation_vectors(job: Job, x: torch.Tensor) -> np.ndarray:
    """O'Mahony baseline: clamped layer-L activation, mean over space, ``(B, C_L)``."""
    from pure_core.activations import pooled_activations

    out = []
    for chunk in _chunks(len(x), job.batch_size):
        _, _, mean = pooled_activations(job.model, x[_slice(chunk)].to(job.device), job.config.layer)
        out.append(mean.float().cpu().numpy())
    return np.concatenate(out, axis=0)


def run_attributions(job: Job) -> None:
    """Stage 2: ``pure:<n>`` ``(n_ref, C_lower)`` and ``activation:<n>`` ``(n_ref, C_L)``, float16."""
    store = job.store
    references = store.get("references")
    indices = references["indices"]
    neurons = [int(n) for n in references["neurons"]]
    unique, pairs = _group_by_image(indices)
    strategy = attribution_strategy(indices.size, len(unique), job.attribution_strategy)
    attribute = _pure_per_image if strategy == "per_image" else _pure_per_pair
    chunks = _chunks(len(unique), _layout(job, "attributions", job.image_chunk))
    done = [store.is_chunk_done("attributions", c) for c in range(len(chunks))]
    bar = _bar(job, indices.size, f"2/5 attributions ({strategy.replace('_', ' ')})", "pair",
               initial=sum(len(pairs[u]) for c, ok in enumerate(done) if ok for u in chunks[c]))
    for chunk_id, chunk in enumerate(chunks):
        if done[chunk_id]:
            continue
        images = torch.stack([job.preprocess.to_tensor(_load_reference(job, unique[u])) for u in chunk])
        pure = np.concatenate(attribute(job, images, [[neurons[row] for row, _ in pairs[u]] for u in chunk]))
        part = {
            "images": unique[chunk.start:chunk.stop],
            "rows": np.array([row for u in chunk for row, _ in pairs[u]], dtype=np.int64),
            "slots": np.array([slot for u in chunk for _, slot in pairs[u]], dtype=np.int64),
            "pure": pure.astype(np.float16),
            "activation": _activation_vectors(job, images).astype(np.float16),
        }
        with chunk_transaction(store, "attributions", chunk_id):
            store.put(f"attributions:part:{chunk_id}", part)
        bar.update(len(part["rows"]))
    bar.close()
    _assemble_attributions(job, neurons, indices, len(chunks))


def _assemble_attributions(job: Job, neurons: list[int], indices: np.ndarray, n_parts: int) -> None:
    store = job.store
    n_neurons, n_ref = indices.shape
    pure_all: np.ndarray | None = None
    activation_of: dict[int, np.ndarray] = {}
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
    assert pure_all is not None
    for chunk in _chunks(n_neurons, job.chunk_neurons):
        with store.transaction():
            for row in chunk:
                store.put_neuron("pure", neurons[row], np.ascontiguousarray(pure_all[row]))
                store.put_neuron("activation", neurons[row],
                                 np.stack([activation_of[int(i)] for i in indices[row]]))
    with store.transaction():
        for part_id in range(n_parts):
            store.delete(f"attributions:part:{part_id}")


# -- stage 3: crops --------------------------------------------------------------------------------------
def _input_heatmaps(job: Job, images: torch.Tensor, neurons: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Input heatmaps ``(P, H, W)`` for pairs (images[p], neurons[p]) started at the argmax ``positions
    (P, 2)`` (`input_attributions_for_pairs`: one forward and one backward for the batch)."""
    from pure_core.attribution import input_attributions_for_pairs

    maps = input_attributions_for_pairs(job.model, images.to(job.device), job.config.layer,
                                        [int(n) for n in neurons], positions=positions)
    return maps.detach().float().cpu().numpy()


def run_crops(job: Job) -> None:
    """Stage 3: ``boxes:<n>`` ``(n_ref, 4)``, ``crops:<n>`` and ``thumbnails:<n>`` (lists of WEBP bytes)."""
    from pure_core.crops import crop_box, crop_for_display, crop_for_embedding

    store, crop = job.store, job.config.crop
    references = store.get("references")
    neurons = [int(n) for n in references["neurons"]]
    n_ref = references["indices"].shape[1]
    chunks = _chunks(len(neurons), _layout(job, "crops", job.chunk_neurons))
    done = [store.is_chunk_done("crops", c) for c in range(len(chunks))]
    bar = _bar(job, len(neurons) * n_ref, "3/5 crops", "crop",
               initial=sum(len(chunks[c]) for c in range(len(chunks)) if done[c]) * n_ref)
    for chunk_id, chunk in enumerate(chunks):
        if done[chunk_id]:
            continue
        rows = list(chunk)
        ref_indices = references["indices"][rows].reshape(-1)
        pair_neurons = np.repeat([neurons[row] for row in rows], n_ref)
        pair_positions = references["positions"][rows].reshape(-1, 2)
        boxes, crops, thumbnails = [], [], []
        for batch in _chunks(len(ref_indices), job.batch_size):  # images are loaded per batch
            loaded = {int(i): _load_reference(job, i) for i in ref_indices[_slice(batch)]}
            x = torch.stack([job.preprocess.to_tensor(loaded[int(i)]) for i in ref_indices[_slice(batch)]])
            pictures = {index: np.asarray(job.preprocess.geometric(pil)) for index, pil in loaded.items()}
            heatmaps = _input_heatmaps(job, x, pair_neurons[_slice(batch)], pair_positions[_slice(batch)])
            for index, heatmap in zip(ref_indices[_slice(batch)], heatmaps, strict=True):
                image = pictures[int(index)]
                boxes.append(crop_box(heatmap, crop.embed_kernel, crop.embed_threshold))
                crops.append(encode_image(crop_for_embedding(image, heatmap, crop.embed_kernel,
                                                             crop.embed_threshold), EMBED_QUALITY))
                thumbnail = crop_for_display(image, heatmap, crop.display_kernel, crop.display_threshold,
                                             size_px=crop.thumbnail_px)
                thumbnails.append(encode_image(thumbnail, THUMB_QUALITY))
                bar.update(1)
        boxes = np.asarray(boxes, dtype=np.int32).reshape(len(rows), n_ref, 4)
        with chunk_transaction(store, "crops", chunk_id):
            for j, row in enumerate(rows):
                store.put_neuron("boxes", neurons[row], boxes[j])
                store.put_neuron("crops", neurons[row], crops[j * n_ref:(j + 1) * n_ref])
                store.put_neuron("thumbnails", neurons[row], thumbnails[j * n_ref:(j + 1) * n_ref])
    bar.close()


# -- stage 4: embeddings -------------------------------------------------------------------------------
def run_embeddings(job: Job) -> None:
    """Stage 4: ``embeddings:<n>`` ``(n_ref, D)`` float16 of the crops, batched across a chunk's neurons."""
    store = job.store
    neurons = store.neurons
    n_ref = store.get("references")["indices"].shape[1]
    chunks = _chunks(len(neurons), _layout(job, "embeddings", job.chunk_neurons))
    done = [store.is_chunk_done("embeddings", c) for c in range(len(chunks))]
    bar = _bar(job, len(neurons) * n_ref, "4/5 embeddings", "crop",
               initial=sum(len(chunk) for chunk, ok in zip(chunks, done, strict=True) if ok) * n_ref)
    for chunk_id, chunk in enumerate(chunks):
        if done[chunk_id]:
            continue
        crops = [store.neuron("crops", neurons[row]) for row in chunk]
        images = [decode_image(data) for per_neuron in crops for data in per_neuron]
        parts = []
        for batch in _chunks(len(images), job.batch_size):
            parts.append(np.asarray(job.embedder.embed([images[i] for i in batch]), dtype=np.float32))
            bar.update(len(batch))
        embeddings = np.concatenate(parts, axis=0) if parts else np.zeros((0, 0), np.float32)
        with chunk_transaction(store, "embeddings", chunk_id):
            start = 0
            for row, per_neuron in zip(chunk, crops, strict=True):
                store.put_neuron("embeddings", neurons[row],
                                 embeddings[start:start + len(per_neuron)].astype(np.float16))
                start += len(per_neuron)
    bar.close()


# -- stage 5: scores -------------------------------------------------------------------------------------
_umap_module = None


def import_umap():
    """umap-learn with numba's on-disk cache on for its functions (saves ~10 s of compiling per process).

    numba reads ``NUMBA_CACHE_DIR`` when first imported; it defaults to ``<PURE_CACHE_DIR>/numba``.
    """
    global _umap_module
    if _umap_module is not None:
        return _umap_module
    from pure_core.demo import cache_dir

    os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir() / "numba"))
    try:
        Path(os.environ["NUMBA_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
    except OSError:
        os.environ["NUMBA_CACHE_DIR"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / "pure-numba-cache")
    import numba

    original = numba.njit, numba.jit

    def cached(decorator):
        def wrapper(*args, **kwargs):
            kwargs.setdefault("cache", True)
            return decorator(*args, **kwargs)

        return wrapper

    numba.njit, numba.jit = cached(original[0]), cached(original[1])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap
    finally:
        numba.njit, numba.jit = original
    _umap_module = umap
    return umap


def umap_2d(vectors: np.ndarray, n_neighbors: int = 6, min_dist: float = 0.3,
            random_state: int = 0) -> np.ndarray:
    """2-D UMAP ``(n, 2)`` float32 of ``vectors (n, d)``; tiny sets (n < 4) get PCA-like fallbacks."""
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if n < 4 or np.allclose(x, x[0]):
        out = np.zeros((n, 2), np.float32)
        if n >= 2 and not np.allclose(x, x[0]):
            centred = x - x.mean(0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            proj = centred @ vt[:2].T
            out[:, : proj.shape[1]] = proj
        return out
    umap = import_umap()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist, random_state=random_state,
                            n_components=2, init="spectral" if n > n_neighbors + 1 else "random")
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def _neuron_scores(job: Job, row: int, references: dict, embeddings: np.ndarray, pure: np.ndarray,
                   activation: np.ndarray, boxes: np.ndarray) -> tuple[dict, dict]:
    """One neuron's ``scores`` and ``umap`` entries (see docs/contracts.md).

    One k-means fit per (method, k): the PURE fit gives both the method's cluster quality and the virtual
    neurons' centroids; the embedding's k=2 fit is the polysemanticity clustering. Each equals what
    `pure_core.scores.evaluate_methods` computes for the same ``random_state``.
    """
    from pure_core import scores as sc
    from pure_core.virtual import VirtualNeurons

    config = job.config
    seed = int(config.seed)
    embeddings, pure, activation = (np.asarray(a, dtype=np.float64) for a in (embeddings, pure, activation))
    n = len(embeddings)
    if n >= 2:
        poly = sc.polysemanticity(embeddings, random_state=seed)
    else:
        poly = sc.Polysemanticity(0.0, 0.0, 0.0, 0.0, np.zeros(n, dtype=np.int64))
    methods: dict[str, dict[int, dict[str, float]]] = {"pure": {}, "activation": {}, "embedding": {}}
    centroids: dict[int, np.ndarray] = {}
    for k in (int(k) for k in config.ks if k <= n):
        for method, vectors in (("pure", pure), ("activation", activation), ("embedding", embeddings)):
            if method == "embedding" and k == 2:
                labels = poly.labels
            else:
                fitted = VirtualNeurons(n_clusters=k, random_state=seed).fit(vectors)
                labels = fitted.labels_
                if method == "pure":
                    centroids[k] = fitted.cluster_centers_.astype(np.float32)
            quality = sc.evaluate_clustering(embeddings, labels)
            methods[method][k] = {"rho_intra": float(quality.rho_intra),
                                  "rho_inter": float(quality.rho_inter)}
    correlation = {m: (float(sc.per_neuron_distance_correlation(embeddings, v)) if n > 2 else float("nan"))
                   for m, v in (("pure", pure), ("activation", activation))}
    result = {
        "polysemanticity": float(poly.score), "rho_intra": float(poly.rho_intra),
        "rho_inter": float(poly.rho_inter), "overall": float(poly.overall),
        "embedding_labels": np.asarray(poly.labels, dtype=np.int64), "methods": methods,
        "correlation": correlation, "centroids": centroids,
    }
    if job.source.kind == "world":
        result["oracle"] = _oracle(job, references["indices"][row], boxes, seed)
    umap_cfg = config.umap
    coords = {name: umap_2d(v, umap_cfg.n_neighbors, umap_cfg.min_dist, umap_cfg.random_state)
              for name, v in (("pure", pure), ("activation", activation))}
    return result, coords


def _oracle(job: Job, ref_indices: np.ndarray, boxes: np.ndarray, seed: int) -> dict[str, Any]:
    """Ground truth for world runs: the score an ideal embedder would give (`oracle_embedding` of each crop
    box), and the planted concept of every reference."""
    from pure_core import scores as sc
    from pure_core.world import oracle_embedding, polysemantic_kind

    annotations = [job.source.annotation(int(i)) for i in ref_indices]
    vectors = np.stack([oracle_embedding(a, box) for a, box in zip(annotations, boxes, strict=True)])
    concepts = [a["planted_concept"] for a in annotations]
    if len(vectors) >= 2:
        poly = sc.polysemanticity(vectors, random_state=seed)
        score = {"polysemanticity": float(poly.score), "rho_intra": float(poly.rho_intra),
                 "rho_inter": float(poly.rho_inter), "overall": float(poly.overall),
                 "labels": np.asarray(poly.labels, dtype=np.int64)}
    else:
        score = {"polysemanticity": 0.0, "rho_intra": 0.0, "rho_inter": 0.0, "overall": 0.0,
                 "labels": np.zeros(len(vectors), np.int64)}
    return {**score, "concepts": concepts, "kind": polysemantic_kind(concepts)}


def run_scores(job: Job) -> None:
    """Stage 5: ``scores:<n>`` and ``umap:<n>`` per neuron, then ``summary``, ``method_comparison`` and
    ``distance_correlation``."""
    from threadpoolctl import threadpool_limits

    import pure_core.scores  # noqa: F401 - loads scikit-learn's OpenMP runtime before the limit below

    store = job.store
    references = store.get("references")
    neurons = [int(n) for n in references["neurons"]]
    chunks = _chunks(len(neurons), _layout(job, "scores", job.chunk_neurons))
    done = [store.is_chunk_done("scores", c) for c in range(len(chunks))]
    if not all(done):
        import_umap()  # numba's runtime too; also keeps its import time out of the progress bar's rate
    bar = _bar(job, len(neurons), "5/5 scores + UMAP", "neuron",
               initial=sum(len(chunks[c]) for c in range(len(chunks)) if done[c]))
    # k-means and UMAP on ~100 points: starting threads costs more than the work (20x for k-means).
    # threadpoolctl limits only runtimes already loaded, hence the imports above.
    with threadpool_limits(1):
        for chunk_id, chunk in enumerate(chunks):
            if done[chunk_id]:
                continue
            outputs = {}
            for row in chunk:
                neuron = neurons[row]
                outputs[neuron] = _neuron_scores(
                    job, row, references, store.neuron("embeddings", neuron), store.neuron("pure", neuron),
                    store.neuron("activation", neuron), store.neuron("boxes", neuron))
                bar.update(1)
            with chunk_transaction(store, "scores", chunk_id):
                for neuron, (result, coords) in outputs.items():
                    store.put_neuron("scores", neuron, result)
                    store.put_neuron("umap", neuron, coords)
        bar.close()
        _aggregate(job, neurons, references)


def _aggregate(job: Job, neurons: list[int], references: dict) -> None:
    from pure_core import scores as sc

    store, config = job.store, job.config
    summary, per_neuron = [], {}
    for row, neuron in enumerate(neurons):
        result = store.neuron("scores", neuron)
        per_neuron[neuron] = result
        entry = {
            "neuron": neuron,
            "polysemanticity": result["polysemanticity"],
            "rho_intra": result["rho_intra"],
            "rho_inter": result["rho_inter"],
            "overall": result["overall"],
            "top_activation": float(references["max_activations"][row, 0]),
            "n_ref": int(references["indices"].shape[1]),
        }
        if "oracle" in result:
            entry["oracle_polysemanticity"] = result["oracle"]["polysemanticity"]
            entry["oracle_kind"] = result["oracle"]["kind"]
        summary.append(entry)
    comparison: dict[str, Any] = {}
    for method in ("pure", "activation", "embedding"):
        comparison[method] = {}
        for k in config.ks:
            rows = [r["methods"][method][k] for r in per_neuron.values() if k in r["methods"].get(method, {})]
            if rows:
                comparison[method][int(k)] = {key: float(np.mean([r[key] for r in rows]))
                                              for key in ("rho_intra", "rho_inter")}
    overall = [r["overall"] for r in per_neuron.values()]
    comparison["unclustered"] = float(np.mean(overall)) if overall else 0.0
    dense = [n for n in neurons if len(store.neuron("embeddings", n)) > 2]
    correlation: dict[str, Any] = {}
    if dense:
        embeddings = [store.neuron("embeddings", n) for n in dense]
        for method in ("pure", "activation"):
            result = sc.distance_correlation(embeddings, [store.neuron(method, n) for n in dense], n_top=50,
                                             n_subsets=30, random_state=int(config.seed))
            correlation[method] = {"r": float(result.r), "sem": float(result.sem)}
    with store.transaction():
        store.put("summary", summary)
        store.put("method_comparison", comparison)
        store.put("distance_correlation", correlation)


# -- driver ------------------------------------------------------------------------------------------------
STAGE_FUNCTIONS: dict[str, Callable[[Job], None]] = {
    "references": run_references,
    "attributions": run_attributions,
    "crops": run_crops,
    "embeddings": run_embeddings,
    "scores": run_scores,
}


_CHUNK_STAGES = {"references": ("references", "images"), "attributions": ("attributions",),
                 "crops": ("crops",), "embeddings": ("embeddings",), "scores": ("scores",)}


def run_stages(job: Job) -> dict[str, float]:
    """Run every stage not yet done (in order); returns this process's seconds per stage run."""
    for name, function in STAGE_FUNCTIONS.items():
        if job.store.is_stage_done(name):
            continue
        start = time.perf_counter()
        function(job)
        seconds = time.perf_counter() - start
        with job.store.transaction():  # chunk markers are bookkeeping: the finished store does not keep them
            for marker_stage in _CHUNK_STAGES[name]:
                chunk = 0
                while job.store.is_chunk_done(marker_stage, chunk):
                    job.store.delete(f"chunk:{marker_stage}:{chunk}")
                    chunk += 1
            job.store.delete(f"layout:{name}")
            job.store.mark_stage_done(name, seconds)
        job.seconds[name] = seconds
    return job.seconds


def format_seconds(seconds: float) -> str:
    """``12.3 s`` or ``4.5 min``."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"

