"""Ground truth on the synthetic world: does PURE recover the planted concepts where simpler readings fail?

    python benchmarks/bench_ground_truth.py                       # the cached demo net (trained if missing)
    python benchmarks/bench_ground_truth.py --checkpoint seed1.pt --json seed1.json
    python benchmarks/bench_ground_truth.py --embedder none      # ARI only, no crops / embeddings

For each planted channel of the analysed layer (`DEMO_LAYER`; channel c is class c's detector: 8 unions of
two concepts, 8 monosemantic controls): its top-n_ref references in the world's reference split, the
planted concept each reference shows, and the adjusted Rand index between those concepts and k-means
clusters (k=2) of PURE circuits at every lower layer (the depth curve), the activation baseline, and the
trivial readings of `synthetic.readings` (colour histograms, raw pixels, the patch and the lower-layer
activations under the peak cell).

Then the polysemanticity score rho_inter - rho_intra of every planted channel from embeddings of its
reference crops (input heatmaps of the maximal activation, `pure_core.crops.crop_for_embedding` with the
demo's crop settings unless ``--crop-threshold`` / ``--crop-side``), under the offline embedder
(efficientnet-lite0) and the world's oracle embedder (`oracle_embedding`), and the ROC-AUC of each score
for unions vs controls.

Prints tables; ``--json FILE`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from synthetic.demo import (
    DEMO_LAYER,
    DEMO_LOWER_LAYER,
    DEMO_PREPROCESSING,
    demo_dataset,
    load_demo_model,
)
from synthetic.ground_truth import GroundTruthReport, ground_truth_report
from synthetic.world import CLASSES, SyntheticWorld, model_inputs, oracle_embedding

LOWER_LAYERS = ["stem", "block1", "block2", "block3"]


def reference_crops(model, world: SyntheticWorld, report: GroundTruthReport, row: int, preprocessing,
                    layer: str, kernel: int, threshold: float, side: int | None):
    """Crops for embedding and oracle vectors ``(n_ref, n_concepts)`` of neuron row `row`'s references."""
    from pure_core.attribution import input_attributions_for_pairs
    from pure_core.crops import crop_box, crop_for_embedding

    refs = report.references
    indices = refs.indices[row]
    neuron = int(refs.neurons[row])
    rendered = [world.render(int(index)) for index in indices]  # each image drawn once
    inputs = model_inputs(np.stack([image for image, _ in rendered]), preprocessing)
    heatmaps = input_attributions_for_pairs(model, inputs, layer, [neuron] * len(indices),
                                            positions=refs.positions[row]).detach().cpu().numpy()
    crops, oracle = [], []
    for (image, annotation), heatmap in zip(rendered, heatmaps, strict=True):
        crops.append(crop_for_embedding(image, heatmap, kernel, threshold, side))
        oracle.append(oracle_embedding(annotation, crop_box(heatmap, kernel, threshold, side=side)))
    return crops, np.stack(oracle)


def polysemanticity_scores(model, world, report, preprocessing, layer, embedder, kernel: int,
                           threshold: float, side: int | None) -> dict[str, list[float]]:
    """Per neuron row: polysemanticity score under the oracle and (if given) the embedder."""
    from pure_core.scores import polysemanticity

    out: dict[str, list[float]] = {"oracle": []}
    if embedder is not None:
        out[embedder.name] = []
    for row in range(len(report.neurons)):
        crops, oracle = reference_crops(model, world, report, row, preprocessing, layer, kernel, threshold,
                                        side)
        out["oracle"].append(polysemanticity(oracle).score)
        if embedder is not None:
            out[embedder.name].append(polysemanticity(embedder.embed(crops)).score)
    return out


def roc_auc(report: GroundTruthReport, scores: list[float]) -> float:
    """ROC-AUC of `scores` for planted unions (1) vs monosemantic controls (0)."""
    from sklearn.metrics import roc_auc_score

    pairs = [(1 if n.role == "union" else 0, s) for n, s in zip(report.neurons, scores, strict=True)
             if n.role in ("union", "control")]
    labels = [p[0] for p in pairs]
    if len(set(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, [p[1] for p in pairs]))


def _concept_counts(concepts: list[str]) -> dict[str, int]:
    names, counts = np.unique(np.asarray(concepts), return_counts=True)
    return {str(name): int(count) for name, count in zip(names, counts, strict=True)}


def main(argv: list[str] | None = None) -> dict:
    from precompute.config import WORLD_CROP

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="demo net checkpoint (default: the cached one)")
    parser.add_argument("--layer", default=DEMO_LAYER)
    parser.add_argument("--lower-layers", nargs="+", default=LOWER_LAYERS)
    parser.add_argument("--n-images", type=int, default=None, help="reference split size (default: demo's)")
    parser.add_argument("--n-ref", type=int, default=100)
    parser.add_argument("--ks", nargs="+", default=["2"], help="k values; 'c' = planted concepts")
    parser.add_argument("--embedder", default="efficientnet-lite0", help="embedder spec, or 'none'")
    parser.add_argument("--crop-kernel", type=int, default=WORLD_CROP["embed_kernel"])
    parser.add_argument("--crop-threshold", type=float, default=WORLD_CROP["embed_threshold"],
                        help="crop box threshold on the smoothed input heatmap (default: the demo run's)")
    parser.add_argument("--crop-side", type=int, default=WORLD_CROP["embed_side"],
                        help="side of the embedding crops in pixels (default: the demo run's); 0: the box")
    parser.add_argument("--json", default=None, help="write the numbers to this file")
    args = parser.parse_args(argv)
    ks = [k if k == "c" else int(k) for k in args.ks]
    side = args.crop_side or None

    timings: dict[str, float] = {}
    start = time.perf_counter()
    model = load_demo_model(args.checkpoint)
    meta = getattr(model, "demo_meta", {})
    timings["load_model_s"] = time.perf_counter() - start
    preprocessing = DEMO_PREPROCESSING
    world = demo_dataset("reference", args.n_images)
    print(f"demo net: seed {meta.get('seed')}, accuracy {meta.get('accuracy', float('nan')):.2%}, trained in "
          f"{meta.get('train_time_s', float('nan')):.0f} s; world: {len(world)} reference images; "
          f"layer {args.layer}, n_ref {args.n_ref}, default lower layer {DEMO_LOWER_LAYER}")

    start = time.perf_counter()
    report = ground_truth_report(model, world, args.layer, args.lower_layers, preprocessing, n_ref=args.n_ref,
                                 ks=ks, neurons=range(len(CLASSES)), planted_classes=CLASSES)
    timings["ground_truth_s"] = time.perf_counter() - start
    for k in ks:
        print()
        print(report.format_table(k))

    scores: dict[str, list[float]] = {}
    aucs: dict[str, float] = {}
    if args.embedder.lower() != "none":
        from pure_core.embed import make_embedder

        start = time.perf_counter()
        embedder = make_embedder(args.embedder)
        scores = polysemanticity_scores(model, world, report, preprocessing, args.layer, embedder,
                                        args.crop_kernel, args.crop_threshold, side)
        timings["scores_s"] = time.perf_counter() - start
        aucs = {name: roc_auc(report, values) for name, values in scores.items()}
        print()
        names = list(scores)
        print(f"{'neuron':>6}  {'role':<8} " + " ".join(f"{'poly ' + n:>24}" for n in names))
        for row, n in enumerate(report.neurons):
            print(f"{n.neuron:>6}  {n.role:<8} " + " ".join(f"{scores[name][row]:>24.3f}" for name in names))
        crop = f"crop kernel {args.crop_kernel}, threshold {args.crop_threshold}, side {side}"
        print(f"ROC-AUC unions vs controls ({crop}): "
              + ", ".join(f"{name} {auc:.3f}" for name, auc in aucs.items()))

    print()
    k = ks[0]
    print(f"mean ARI at k={k} over the {len(report.rows('union'))} planted unions: "
          + ", ".join(f"{m} {report.mean_ari(m, k):.3f}" for m in report.methods))
    print(f"best lower layer for PURE: {report.best_pure_layer(k)}")
    print("timings: " + ", ".join(f"{name} {v:.1f}" for name, v in timings.items()))

    result = {
        "layer": args.layer, "lower_layers": args.lower_layers, "n_ref": report.n_ref, "n_images": len(world),
        "seed": meta.get("seed"), "accuracy": meta.get("accuracy"), "train_time_s": meta.get("train_time_s"),
        "methods": report.methods,
        "neurons": [{"neuron": n.neuron, "role": n.role, "kind": n.kind, "on_class": n.on_class,
                     "n_concepts": n.n_concepts, "concepts": _concept_counts(n.concepts),
                     "ari": {m: {str(k): v for k, v in d.items()} for m, d in n.ari.items()},
                     **{f"polysemanticity_{name}": values[row] for name, values in scores.items()}}
                    for row, n in enumerate(report.neurons)],
        "mean_ari": {group: {m: {str(k): report.mean_ari(m, k, group) for k in ks} for m in report.methods}
                     for group in ("union", "control")},
        "best_pure_layer": report.best_pure_layer(ks[0]),
        "roc_auc": aucs, "crop": {"kernel": args.crop_kernel, "threshold": args.crop_threshold, "side": side},
        "timings": timings,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
