"""Small but internally consistent run stores for the app's tests and benchmarks: fixtures, never results.

`write_small_store` writes a store through the records of `store.schema`, as precompute does, but with no
model and no pipeline: real images from the synthetic world, real display crops (WEBP thumbnails with
masks), and attribution / activation / embedding vectors with planted structure, so every page can be
tested in milliseconds. Its config names a randomly
initialised torchvision ResNet-18 (`layer2` analysed, `layer1` below), which builds offline in a fraction
of a second, so the upload page can run the real attribution code on it.

Planted structure (per neuron, `SMALL_NEURONS`): the references show one, two or three world concepts;
PURE vectors (n_ref, 64) sit around one centroid per concept (weight on 4 lower channels each), activation
vectors (n_ref, 128) carry almost no concept signal, embeddings (n_ref, 16) separate the concepts. Neuron
41 has a single reference (the "too few references" state).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pure_core import scores as sc
from store import STAGES, RunStore, schema
from store.codecs import EMBED_QUALITY, THUMB_QUALITY, encode_image

__all__ = ["C_LAYER", "C_LOWER", "LOWER_NEURONS", "N_REF", "RUN_SEED", "SMALL_NEURONS", "SPARSE_NEURON",
           "write_small_store"]

# neuron -> the concepts its references show, as slots into the world's planted concepts by frequency
# (slot 0 = the most frequent), so the fixture does not depend on the world's concept list.
SMALL_NEURONS: dict[int, list[int]] = {3: [1, 2], 7: [3, 4, 5], 12: [0], 20: [6, 7], 33: [1], 41: [2]}
LOWER_NEURONS: dict[int, list[int]] = {0: [1], 1: [2], 5: [3], 6: [4]}
SPARSE_NEURON = 41  # one reference only
N_REF = 24
C_LOWER = 64  # resnet18 layer1
C_LAYER = 128  # resnet18 layer2
EMBED_DIM = 16
KS = (2, 3, 4, 5)
WORLD_IMAGES = 600
WORLD_SEED = 2
RUN_SEED = 0  # the run's k-means seed (config["seed"])


def _box_heatmap(box: tuple[int, int, int, int], size_px: int) -> np.ndarray:
    """A Gaussian bump on an object's box (stands in for an input heatmap), (size_px, size_px)."""
    top, left, bottom, right = box
    cy, cx = (top + bottom) / 2, (left + right) / 2
    sigma = max(bottom - top, right - left) / 3
    yy, xx = np.mgrid[0:size_px, 0:size_px]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def _pca2(x: np.ndarray) -> np.ndarray:
    """2-D coordinates (n, 2) standing in for UMAP (the app only reads stored coordinates)."""
    centred = x - x.mean(axis=0)
    if len(x) < 2:
        return np.zeros((len(x), 2), dtype=np.float32)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[:2].T).astype(np.float32)


def _config(layer: str, lower_layer: str, neurons: list[int], n_ref: int, model: dict | None = None) -> dict:
    return {
        "model": model or {"name": "resnet18", "weights": None, "checkpoint": None},
        "layer": layer,
        "lower_layer": lower_layer,
        "dataset": {"kind": "world", "path": None, "n_images": WORLD_IMAGES, "seed": WORLD_SEED},
        "n_ref": n_ref,
        "neurons": neurons,
        "embedder": "test-embedder",
        "crop": {"embed_kernel": 5, "embed_threshold": 0.01, "display_kernel": 51, "display_threshold": 0.01},
        "ks": list(KS),
        "attribution": "gradient_x_activation",
        "seed": RUN_SEED,
    }


def write_small_store(
    directory: str | Path,
    *,
    neurons: dict[int, list[int]] | None = None,
    layer: str = "layer2",
    lower_layer: str = "layer1",
    c_lower: int = C_LOWER,
    c_layer: int = C_LAYER,
    n_ref: int = N_REF,
    stages: tuple[str, ...] = STAGES,
    seed: int = 0,
    model: dict | None = None,
) -> Path:
    """Write a complete (or, with fewer `stages`, partial) small run store at `directory`; returns it.

    Every value goes in as its `store.schema` record, as precompute writes them. ``seed`` seeds the planted
    data; the run's k-means seed is `RUN_SEED`."""
    from pure_core.threads import one_thread

    with one_thread():  # k-means on tiny arrays: OpenMP start-up costs 20x the work
        return _write_small_store(
            directory, neurons, layer, lower_layer, c_lower, c_layer, n_ref, stages, seed, model
        )


def _write_small_store(
    directory, neurons, layer, lower_layer, c_lower, c_layer, n_ref, stages, seed, model
) -> Path:
    from pure_core.crops import crop_box, crop_for_display, crop_for_embedding
    from synthetic.world import SyntheticWorld, polysemantic_kind

    neurons = SMALL_NEURONS if neurons is None else neurons
    rng = np.random.default_rng(seed)
    world = SyntheticWorld(WORLD_IMAGES, seed=WORLD_SEED)
    by_concept: dict[str, list[int]] = {}
    for i in range(WORLD_IMAGES):
        by_concept.setdefault(world.annotation(i)["planted_concept"], []).append(i)
    all_concepts = sorted(by_concept, key=lambda c: (-len(by_concept[c]), c))
    concept_centroid_lower = {
        c: [(5 * j + t) % c_lower for t in range(4)] for j, c in enumerate(all_concepts)
    }
    concept_embedding = {c: rng.normal(0, 3, EMBED_DIM) for c in all_concepts}

    ids = sorted(neurons)
    config = _config(layer, lower_layer, ids, n_ref, model)
    store = RunStore.create(directory, {"config": config}, config, {"pure_core": "test"})
    n_rows = {n: (1 if n == SPARSE_NEURON else n_ref) for n in ids}
    indices = np.full((len(ids), n_ref), -1, dtype=np.int64)
    max_act = np.zeros((len(ids), n_ref), dtype=np.float32)
    positions = np.zeros((len(ids), n_ref, 2), dtype=np.int64)
    per_neuron: dict[int, dict] = {}
    for row, neuron in enumerate(ids):
        concepts = [all_concepts[slot % len(all_concepts)] for slot in neurons[neuron]]
        n = n_rows[neuron]
        chosen = [concepts[j % len(concepts)] for j in range(n)]
        rng.shuffle(chosen)
        used: set[int] = set()
        refs = []
        for concept in chosen:
            pool = [i for i in by_concept[concept] if i not in used]
            refs.append(int(rng.choice(pool)))
            used.add(refs[-1])
        indices[row, :n] = refs
        max_act[row, :n] = np.sort(rng.uniform(2.0, 9.0, n))[::-1]
        positions[row, :n] = rng.integers(0, 8, (n, 2))
        pure = rng.normal(0, 0.02, (n, c_lower))
        for j, concept in enumerate(chosen):
            pure[j, concept_centroid_lower[concept]] += [0.4, 0.3, 0.2, 0.1]
        pure /= np.abs(pure).sum(axis=1, keepdims=True)
        activation = np.abs(rng.normal(0.5, 0.3, (n, c_layer)))
        embeddings = np.stack([concept_embedding[c] + rng.normal(0, 1, EMBED_DIM) for c in chosen])
        thumbs, crops, boxes = [], [], []
        for index in refs:
            image, annotation = world.render(index)
            planted = next(o for o in annotation["objects"] if o["planted"])
            heat = _box_heatmap(planted["box"], image.shape[0])
            thumbs.append(
                encode_image(crop_for_display(image, heat, kernel_size=51, size_px=96), THUMB_QUALITY)
            )
            crops.append(encode_image(crop_for_embedding(image, heat), EMBED_QUALITY))
            boxes.append(crop_box(heat, 5, 0.01))
        per_neuron[neuron] = {
            # the float16 vectors as stored (scores are computed on what the store holds, as in precompute)
            "pure": schema.PureVectors(pure),
            "activation": schema.ActivationVectors(activation),
            "embeddings": schema.Embeddings(embeddings),
            "thumbnails": schema.Thumbnails(thumbs),
            "crops": schema.Crops(crops),
            "boxes": schema.CropBoxes(boxes),
            "predictions": _predictions(rng, [all_concepts.index(c) for c in chosen], len(all_concepts)),
            "oracle": _oracle(chosen, polysemantic_kind(chosen)),
        }

    references = schema.References(np.asarray(ids, dtype=np.int64), indices, max_act, positions)
    store.write(references)
    for index in np.unique(indices[indices >= 0]):
        image = encode_image(Image.fromarray(world.render(int(index))[0]), EMBED_QUALITY)
        store.write(schema.ReferenceImage(image), int(index))
    store.mark_stage_done("references", 0.1)
    for stage, kinds in (
        ("attributions", ("pure", "activation", "predictions")),
        ("crops", ("thumbnails", "crops", "boxes")),
        ("embeddings", ("embeddings",)),
    ):
        if stage in stages:
            for neuron, data in per_neuron.items():
                for kind in kinds:
                    store.write(data[kind], neuron)
            store.mark_stage_done(stage, 0.1)
    if "attributions" in stages:
        store.write(schema.ClassNames(all_concepts))  # the fixture's "model" classifies world concepts
    if "crops" in stages:
        store.write(schema.CropMethod("gradient_x_input"))  # the boxes above are drawn, not from a model
    if "scores" in stages:
        scores = {neuron: _neuron_scores(data) for neuron, data in per_neuron.items()}
        from precompute.stages.scores import virtual_neuron_labels

        names = sorted({c for data in per_neuron.values() for c in data["oracle"].concepts})
        groups = {neuron: _virtual_neurons(data, scores[neuron]) for neuron, data in per_neuron.items()}
        labels = {n: virtual_neuron_labels(per_neuron[n]["predictions"].labels, g) for n, g in groups.items()}
        concept_ids = {n: np.array([names.index(c) for c in per_neuron[n]["oracle"].concepts]) for n in ids}
        data_labels = {n: virtual_neuron_labels(concept_ids[n], g, schema.VirtualNeuronDataLabels)
                       for n, g in groups.items()}
        store.write(schema.DatasetLabelNames(names))  # the planted concepts, as precompute labels them
        for neuron, data in per_neuron.items():
            store.write(scores[neuron], neuron)
            store.write(labels[neuron], neuron)
            store.write(schema.ReferenceDatasetLabels(concept_ids[neuron]), neuron)
            store.write(data_labels[neuron], neuron)
            store.write(
                schema.UmapCoordinates(_pca2(_vectors(data["pure"])), _pca2(_vectors(data["activation"]))),
                neuron,
            )
        store.write(_summary(references, scores, labels, data_labels))
        store.write(schema.LabelIndex.of({n: {"data": data_labels[n], "predicted": labels[n]} for n in ids}))
        dense = [n for n in ids if n_rows[n] > 2]
        store.write(_method_comparison([scores[n] for n in dense]))
        store.write(_distance_correlation([per_neuron[n] for n in dense]))
        store.mark_stage_done("scores", 0.1)
    if "clip_labels" in stages:  # no CLIP model here: the run says so, as precompute's stage 6 does
        store.write(schema.ClipLabelStatus("off", None))
        store.mark_stage_done("clip_labels", 0.0)
    if "quantiles" in stages:  # no model here: the run says stage 7 was off, as precompute does for probe 0
        store.write(schema.QuantileBands.off(RUN_SEED))
        store.mark_stage_done("quantiles", 0.0)
    if "depth" in stages:  # a run without depth layers: stage 8 stores nothing
        store.mark_stage_done("depth", 0.0)
    store.finalize()  # one self-contained cache.db, as precompute leaves it
    store.close()
    return Path(directory)


def _vectors(record: schema.ReferenceArray) -> np.ndarray:
    """A stored float16 array as the float64 vectors precompute computes on."""
    return np.asarray(record.values, dtype=np.float64)


def _oracle(concepts: list[str], kind: str) -> schema.Oracle:
    """The ideal embedder's scores: one-hot vectors of the planted concepts."""
    names = sorted(set(concepts))
    one_hot = np.eye(len(names))[[names.index(c) for c in concepts]]
    poly = sc.polysemanticity(one_hot, random_state=RUN_SEED)
    return schema.Oracle(
        poly.score, poly.rho_intra, poly.rho_inter, poly.overall, poly.labels, concepts, kind
    )


def _neuron_scores(data: dict) -> schema.NeuronScores:
    """A neuron's scores record, computed as precompute's scores stage does (k-means with the run's seed)."""
    from pure_core.virtual import VirtualNeurons

    emb, pure, activation = (_vectors(data[kind]) for kind in ("embeddings", "pure", "activation"))
    poly = sc.polysemanticity(emb, random_state=RUN_SEED)
    ks = [k for k in KS if k <= len(emb)]
    evaluated = (
        sc.evaluate_methods(
            emb, {"pure": pure, "activation": activation, "embedding": emb}, ks=ks, random_state=RUN_SEED
        )
        if ks
        else {}
    )
    methods = {
        m: {k: schema.MethodScore(float(e.rho_intra), float(e.rho_inter)) for k, e in by_k.items()}
        for m, by_k in evaluated.items()
    }
    centroids = {k: VirtualNeurons(k, random_state=RUN_SEED).fit(pure).cluster_centers_ for k in ks}
    correlation = schema.Correlation(
        *(
            sc.per_neuron_distance_correlation(emb, v) if len(emb) > 2 else float("nan")
            for v in (pure, activation)
        )
    )
    return schema.NeuronScores(
        poly.score,
        poly.rho_intra,
        poly.rho_inter,
        poly.overall,
        poly.labels,
        methods,
        correlation,
        centroids,
        data["oracle"],
    )


def _predictions(
    rng: np.random.Generator, concepts: list[int], n_classes: int
) -> schema.ReferencePredictions:
    """The "model's" top classes of each reference: its planted concept first (probability 0.5-0.9), then the
    other concepts in order."""
    m = min(5, n_classes)
    classes = np.array([[c] + [o for o in range(n_classes) if o != c][: m - 1] for c in concepts])
    first = rng.uniform(0.5, 0.9, (len(concepts), 1))
    rest = (1 - first) * np.linspace(0.5, 0.1, m - 1)[None] / np.linspace(0.5, 0.1, m - 1).sum()
    return schema.ReferencePredictions(classes, np.concatenate([first, rest], axis=1))


def _virtual_neurons(data: dict, scores: schema.NeuronScores) -> dict[int, np.ndarray]:
    """Each reference's virtual neuron for each stored k, from the stored centroids (as the app splits)."""
    from pure_core.virtual import VirtualNeurons

    pure = _vectors(data["pure"])
    return {k: VirtualNeurons.from_stored(c, pure, RUN_SEED).labels_ for k, c in scores.centroids.items()}


def _summary(
    references: schema.References,
    scores: dict[int, schema.NeuronScores],
    labels: dict[int, schema.VirtualNeuronLabels],
    data_labels: dict[int, schema.VirtualNeuronDataLabels],
) -> schema.Summary:
    return schema.Summary(
        schema.SummaryRow(
            neuron,
            s.polysemanticity,
            s.rho_intra,
            s.rho_inter,
            s.overall,
            float(references.max_activations[references.row(neuron), 0]),
            references.n_ref,
            s.oracle.polysemanticity,
            s.oracle.kind,
            labels[neuron].first_labels(2),
            data_labels[neuron].first_labels(2),
        )
        for neuron, s in scores.items()
    )


def _method_comparison(dense: list[schema.NeuronScores]) -> schema.MethodComparison:
    """Means over the neurons with more than 2 references (all of them have every k)."""
    methods = {
        m: {
            k: schema.MethodScore(
                *(
                    float(np.mean([getattr(s.methods[m][k], key) for s in dense]))
                    for key in ("rho_intra", "rho_inter")
                )
            )
            for k in KS
        }
        for m in schema.METHODS
    }
    return schema.MethodComparison(methods, float(np.mean([s.overall for s in dense])))


def _distance_correlation(dense: list[dict]) -> schema.DistanceCorrelation:
    embeddings = [_vectors(data["embeddings"]) for data in dense]
    pooled = {}
    for method in ("pure", "activation"):
        result = sc.distance_correlation(embeddings, [_vectors(data[method]) for data in dense], n_subsets=4)
        pooled[method] = schema.PooledCorrelation(result.r, result.sem)
    return schema.DistanceCorrelation(pooled)
