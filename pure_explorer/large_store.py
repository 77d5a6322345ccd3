"""A run store of real size and formats with synthetic values, for tests and benchmarks at scale: a fixture,
never a result.

`write_large_store` writes what a ResNet-50 ``layer4 <- layer3`` run over ImageNet's validation set would
hold (default 2048 neurons x 100 references, C_lower 1024, C_L 2048, 768-d embeddings, k = 2..8) through the
records of `store.schema`, as precompute writes them, in minutes: reference images, crops and thumbnails
are real WEBP images (random crops of the photographs that ship with scikit-image, with the display mask
drawn by `pure_core.crops`), so their bytes are what real ones weigh; vectors are float16 with planted
cluster structure; scores, centroids and UMAP coordinates are drawn at random with the right shapes and
invariants (rho_inter - rho_intra = polysemanticity, centroids per stored k); the "model's" top-5 ImageNet
classes per reference are drawn mostly from two classes per planted circuit (CLIP's names of the crops
likewise, from the default vocabulary, and 512-d CLIP directions around one per circuit), and the virtual
neurons' labels and CLIP centroids are computed from them as precompute does. Nothing is computed by a model.

    python -m pure_explorer.large_store runs/large --neurons 2048
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from precompute.stages.scores import virtual_neuron_labels
from pure_core.clip_labels import CROP_TEMPLATES, centroids
from pure_core.crops import crop_for_display, crop_for_embedding
from pure_core.models import imagenet_categories
from pure_core.quantiles import DEFAULT_BANDS
from pure_core.virtual import VirtualNeurons
from pure_core.vocabulary import default_vocabulary
from store import STAGES, RunStore, schema
from store.codecs import EMBED_QUALITY, THUMB_QUALITY, encode_image

__all__ = ["LARGE_CONFIG", "main", "photo_crops", "write_large_store"]

# The shape of the paper's setting: ResNet-50 layer4 (2048 channels) with circuits in layer3 (1024).
LARGE_CONFIG = {"n_neurons": 2048, "n_ref": 100, "c_lower": 1024, "c_layer": 2048, "embed_dim": 768,
                "ks": tuple(range(2, 9)), "n_images": 50_000, "image_px": 224, "thumbnail_px": 128}
CLIP_MODEL, CLIP_DIM = "open_clip:ViT-B-32/openai", 512  # the paper's CLIP, as a real run would record it
POOL_SIZE = 512  # distinct images, crops and thumbnails drawn once and reused across neurons
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def photo_crops(rng: np.random.Generator, n: int, size_px: int) -> list[np.ndarray]:
    """``n`` random square crops ``(size_px, size_px, 3)`` uint8 of the colour photographs that ship with
    scikit-image and scikit-learn (offline), taken in turn from each photograph."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [getattr(skimage.data, name)() for name in PHOTOS] + list(load_sample_images().images)
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]
        side = int(rng.integers(min(photo.shape[:2]) // 3, min(photo.shape[:2])))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size_px, size_px),
                                                                             Image.Resampling.BILINEAR)
        crops.append(np.asarray(crop))
    return crops


def _heatmap(rng: np.random.Generator, size_px: int) -> np.ndarray:
    """A Gaussian bump at a random place: stands in for an input heatmap ``(size_px, size_px)``."""
    cy, cx = rng.uniform(0.2, 0.8, 2) * size_px
    sigma = rng.uniform(0.08, 0.2) * size_px
    yy, xx = np.mgrid[0:size_px, 0:size_px]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def _neuron_vectors(rng: np.random.Generator, n_ref: int, c_lower: int, c_layer: int, embed_dim: int):
    """Float16 PURE ``(n_ref, c_lower)`` (L1 rows around 1-3 sparse circuits), activation ``(n_ref, c_layer)``
    and embedding ``(n_ref, embed_dim)`` vectors, and the planted circuit of each reference."""
    n_circuits = int(rng.integers(1, 4))
    circuit = rng.integers(0, n_circuits, n_ref)
    width = max(1, min(8, c_lower // n_circuits))  # lower-layer channels that carry one circuit
    channels = rng.choice(c_lower, size=(n_circuits, width), replace=False)
    pure = np.abs(rng.normal(0, 0.002, (n_ref, c_lower)))
    pure[np.arange(n_ref)[:, None], channels[circuit]] += rng.uniform(0.02, 0.1, (n_ref, width))
    pure /= pure.sum(axis=1, keepdims=True)
    activation = np.abs(rng.normal(0.3, 0.3, (n_ref, c_layer)))
    centres = rng.normal(0, 3, (n_circuits, embed_dim))
    embeddings = centres[circuit] + rng.normal(0, 1, (n_ref, embed_dim))
    return pure.astype(np.float16), activation.astype(np.float16), embeddings.astype(np.float16), circuit


def _neuron_scores(rng: np.random.Generator, pure: np.ndarray, ks: Sequence[int]) -> schema.NeuronScores:
    """Random scores with the stored invariants (polysemanticity = rho_inter - rho_intra, centroids per k)."""
    n_ref = len(pure)
    overall = float(rng.uniform(10, 16))
    rho_intra = overall - float(rng.uniform(0, 2))
    rho_inter = rho_intra + float(rng.gamma(1.5, 0.6))
    methods = {method: {int(k): schema.MethodScore(rho_intra - 0.1 * k * rng.uniform(0, 1),
                                                   rho_inter + 0.05 * k * rng.uniform(0, 1)) for k in ks}
               for method in schema.METHODS}
    centroids = {int(k): pure[rng.choice(n_ref, size=k, replace=False)].astype(np.float32) for k in ks}
    return schema.NeuronScores(
        polysemanticity=rho_inter - rho_intra, rho_intra=rho_intra, rho_inter=rho_inter, overall=overall,
        embedding_labels=rng.integers(0, 2, n_ref), methods=methods,
        correlation=schema.Correlation(float(rng.uniform(0.2, 0.6)), float(rng.uniform(0.0, 0.3))),
        centroids=centroids)


def _k_choice(rng: np.random.Generator, ks: Sequence[int]) -> schema.KChoice:
    """Random k diagnostics with the stored invariant (the suggested k is stable, else 1)."""
    stability = rng.uniform(0.3, 1.0, len(ks))
    silhouette = rng.uniform(0.0, 0.5, len(ks))
    stable = np.flatnonzero(stability >= 0.8)
    suggested = int(np.asarray(ks)[stable[np.argmax(silhouette[stable])]]) if len(stable) else 1
    return schema.KChoice(tuple(ks), silhouette, stability, rng.uniform(0.0, 3.0, len(ks)), suggested)


def _predictions(rng: np.random.Generator, circuit: np.ndarray,
                 n_classes: int) -> schema.ReferencePredictions:
    """Top-5 classes per reference: mostly one of two classes per planted circuit, sometimes another."""
    by_circuit = rng.choice(n_classes, size=(int(circuit.max()) + 1, 2), replace=False)
    first = by_circuit[circuit, rng.integers(0, 2, len(circuit))]
    first = np.where(rng.random(len(circuit)) < 0.8, first, rng.integers(0, n_classes, len(circuit)))
    others = (first[:, None] + np.arange(1, 5)[None]) % n_classes
    probabilities = np.sort(rng.dirichlet(np.ones(6), len(circuit))[:, :5], axis=1)[:, ::-1]
    return schema.ReferencePredictions(np.concatenate([first[:, None], others], axis=1), probabilities)


def _groups(pure: np.ndarray, scores: schema.NeuronScores) -> dict[int, np.ndarray]:
    """The virtual neurons the app shows: the stored centroids, references assigned and numbered by size."""
    return {k: VirtualNeurons.from_stored(c, pure).labels_ for k, c in scores.centroids.items()}


def _clip_features(rng: np.random.Generator, circuit: np.ndarray, dim: int) -> np.ndarray:
    """Unit-length "CLIP features" of the crops: one direction per planted circuit, plus noise."""
    directions = rng.normal(size=(int(circuit.max()) + 1, dim))
    features = directions[circuit] + 0.8 * rng.normal(size=(len(circuit), dim))
    return (features / np.linalg.norm(features, axis=1, keepdims=True)).astype(np.float32)


def _quantile_samples(rng: np.random.Generator, pure: np.ndarray, lowest: float, candidates: np.ndarray,
                      n_bands: int, per_band: int) -> schema.QuantileSamples:
    """Reference quantiles of one neuron: ``per_band`` images per band (the top band short by 0-2, as if some
    were references) drawn from ``candidates``, activations falling band by band below the references'
    ``lowest``, circuits near the references' own (rows of ``pure`` with noise, L1 rows)."""
    counts = [per_band - (int(rng.integers(0, 3)) if b == 0 else 0) for b in range(n_bands)]
    edges = np.array([[lowest * 0.9 ** (2 * b + 2), lowest * 0.9 ** (2 * b)] for b in range(n_bands)],
                     np.float32)
    activations = np.concatenate([-np.sort(-rng.uniform(lo, hi, n)) for (lo, hi), n in zip(edges, counts,
                                                                                            strict=True)])
    rows = pure[rng.integers(0, len(pure), len(activations))].astype(np.float64)
    rows = np.abs(rows + rng.normal(0, 0.002, rows.shape))
    indices = rng.choice(candidates, size=len(activations), replace=len(candidates) < len(activations))
    return schema.QuantileSamples(indices, activations, np.repeat(np.arange(n_bands), counts),
                                  rows / rows.sum(axis=1, keepdims=True), edges)


def _config(neurons: list[int], n_ref: int, n_images: int, ks: Sequence[int], seed: int) -> dict:
    return {
        "model": {"name": "resnet50", "weights": "IMAGENET1K_V2", "checkpoint": None},
        "layer": "layer4", "lower_layer": "layer3",
        "dataset": {"kind": "folder", "path": None, "n_images": n_images, "seed": None, "size_px": None},
        "n_ref": n_ref, "neurons": neurons, "embedder": "open_clip:ViT-B-32/openai",
        "crop": {"embed_kernel": 5, "embed_threshold": 0.01, "display_kernel": 51, "display_threshold": 0.01,
                 "thumbnail_px": 128},
        "ks": [int(k) for k in ks], "attribution": "gradient_x_activation",
        "umap": {"n_neighbors": 6, "min_dist": 0.3, "random_state": 0}, "seed": seed,
        "preset": "large-fixture", "fixture": "pure_explorer.large_store: synthetic values, not a result",
    }


def write_large_store(directory: str | Path, *, n_neurons: int = 2048, n_ref: int = 100, c_lower: int = 1024,
                      c_layer: int = 2048, embed_dim: int = 768, ks: Sequence[int] = tuple(range(2, 9)),
                      n_images: int = 50_000, image_px: int = 224, thumbnail_px: int = 128, seed: int = 0,
                      progress: bool = True) -> Path:
    """Write a complete run store of real size with synthetic values at ``directory``; returns it."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    neurons = list(range(n_neurons))
    config = _config(neurons, n_ref, n_images, ks, seed)
    identity = {"config": config, "fingerprints": {"fixture": "large", "seed": seed}}
    store = RunStore.create(directory, identity, config, {"pure_explorer.large_store": "fixture"})
    photos = photo_crops(rng, POOL_SIZE, image_px)
    heatmaps = [_heatmap(rng, image_px) for _ in range(POOL_SIZE)]
    pool_images = [encode_image(Image.fromarray(p), EMBED_QUALITY) for p in photos]
    pool_crops = [encode_image(crop_for_embedding(p, h), EMBED_QUALITY) for p, h in zip(photos, heatmaps,
                                                                                          strict=True)]
    pool_thumbs = [encode_image(crop_for_display(p, h, size_px=thumbnail_px), THUMB_QUALITY)
                   for p, h in zip(photos, heatmaps, strict=True)]

    indices = np.stack([rng.choice(n_images, size=n_ref, replace=False) for _ in neurons]).astype(np.int64)
    max_activations = -np.sort(-rng.gamma(4.0, 2.0, (n_neurons, n_ref)), axis=1).astype(np.float32)
    references = schema.References(np.asarray(neurons), indices, max_activations,
                                   rng.integers(0, 7, (n_neurons, n_ref, 2)))
    with store.transaction():
        store.write(references)
        store.write(schema.ScanReport(n_images, n_images, 0, ()))
    unique = np.unique(indices)
    for start in tqdm(range(0, len(unique), 1024), desc="reference images", disable=not progress):
        with store.transaction():
            for index in unique[start:start + 1024]:
                store.write(schema.ReferenceImage(pool_images[int(index) % POOL_SIZE]), int(index))

    rows, labels_by_neuron, clip_centroids = [], {}, {}
    quantile_rng = np.random.default_rng([seed, 7])  # own stream: the other records stay as they were
    bands = schema.QuantileBands("sampled", DEFAULT_BANDS, 6, 1000, min(1000, n_images), 0, seed)
    n_classes = len(imagenet_categories())
    vocabulary = default_vocabulary()
    for row, neuron in enumerate(tqdm(neurons, desc="neurons", unit="neuron", disable=not progress)):
        pure, activation, embeddings, circuit = _neuron_vectors(rng, n_ref, c_lower, c_layer, embed_dim)
        pooled = [int(i) % POOL_SIZE for i in indices[row]]
        scores = _neuron_scores(rng, pure, ks)
        k_choice = _k_choice(rng, ks)
        predictions = _predictions(rng, circuit, n_classes)
        groups = _groups(pure, scores)
        labels = virtual_neuron_labels(predictions.labels, groups)
        clip_predictions = schema.ReferenceClipLabels(*_predictions(rng, circuit, len(vocabulary)).to_store()
                                                      .values())
        clip_labels = virtual_neuron_labels(clip_predictions.labels, groups, schema.VirtualNeuronClipLabels)
        features = _clip_features(rng, circuit, CLIP_DIM)
        clip_centroids[neuron] = schema.VirtualNeuronClipCentroids(
            {k: centroids(features, g, k) for k, g in groups.items()})
        labels_by_neuron[neuron] = {"predicted": labels, "clip": clip_labels}
        with store.transaction():
            store.write(schema.PureVectors(pure), neuron)
            store.write(schema.ActivationVectors(activation), neuron)
            store.write(predictions, neuron)
            store.write(labels, neuron)
            store.write(clip_predictions, neuron)
            store.write(clip_labels, neuron)
            store.write(clip_centroids[neuron], neuron)
            store.write(schema.Embeddings(embeddings), neuron)
            store.write(schema.CropBoxes(np.tile([16, 16, 208, 208], (n_ref, 1))), neuron)
            store.write(schema.Crops([pool_crops[i] for i in pooled]), neuron)
            store.write(schema.Thumbnails([pool_thumbs[i] for i in pooled]), neuron)
            store.write(scores, neuron)
            store.write(k_choice, neuron)
            others = np.setdiff1d(unique, indices[row])  # images stored already: no new image keys
            store.write(_quantile_samples(quantile_rng, pure, float(max_activations[row, -1]), others,
                                          len(bands.bands), bands.per_band), neuron)
            store.write(schema.UmapCoordinates(rng.normal(0, 3, (n_ref, 2)), rng.normal(0, 3, (n_ref, 2))),
                        neuron)
        rows.append(schema.SummaryRow(neuron, scores.polysemanticity, scores.rho_intra, scores.rho_inter,
                                      scores.overall, float(max_activations[row, 0]), n_ref,
                                      labels=labels.first_labels(2), clip_labels=clip_labels.first_labels(2),
                                      suggested_k=k_choice.suggested_k))
    means = {method: {int(k): schema.MethodScore(float(rng.uniform(10, 14)), float(rng.uniform(14, 16)))
                      for k in ks} for method in schema.METHODS}
    with store.transaction():
        store.write(schema.Summary(rows))
        store.write(schema.ClassNames(imagenet_categories()))
        store.write(schema.LabelIndex.of(labels_by_neuron))
        store.write(schema.ClipLabelNames(vocabulary))
        store.write(schema.ClipCentroidIndex.of(clip_centroids))
        store.write(schema.ClipLabelStatus("labelled", CLIP_MODEL, "", CROP_TEMPLATES))
        store.write(schema.CropMethod("lrp"))  # what a ResNet-50 run resolves "auto" to
        store.write(bands)
        store.write(schema.MethodComparison(means, float(np.mean([r.overall for r in rows]))))
        store.write(schema.DistanceCorrelation({"pure": schema.PooledCorrelation(0.38, 0.01),
                                                "activation": schema.PooledCorrelation(0.17, 0.01)}))
        for stage in STAGES:
            store.mark_stage_done(stage, 0.0)
    store.finalize()
    store.close()
    return Path(directory)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pure_explorer.large_store", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="store directory to create")
    parser.add_argument("--neurons", type=int, default=LARGE_CONFIG["n_neurons"])
    parser.add_argument("--n-ref", type=int, default=LARGE_CONFIG["n_ref"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = write_large_store(args.out, n_neurons=args.neurons, n_ref=args.n_ref, seed=args.seed)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    seconds = time.perf_counter() - start
    print(f"wrote {out}: {args.neurons} neurons x {args.n_ref} references in {seconds:.0f} s, "
          f"{size / 1e9:.2f} GB ({size / args.neurons / 1e6:.2f} MB per neuron)")


if __name__ == "__main__":
    main()
