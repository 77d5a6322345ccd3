"""The crops stage before and after batching, and LRP crops against gradient x input crops.

    python benchmarks/bench_crops.py                  # EfficientNet-Lite0, 256 photos, 32 neurons x 16 refs
    python benchmarks/bench_crops.py --before HEAD~1      # the "before" code from another commit

Runs of ``python -m precompute --preset efficientnet-lite0`` on one folder of random 256 px crops of the
packaged colour photographs (`bench_stages.photo_folder`), one after the other on the same machine:

1. before: the code of ``--before`` (default HEAD, exported with ``git archive``), gradient x input crops;
2. after, gradient x input: this working tree with ``crop.heatmap: gradient_x_input``;
3. after, LRP: this working tree with ``crop.heatmap: auto`` (LRP for EfficientNet-Lite0).

Reported: crops pairs/s of each run (1 vs 2 is the A/B of the batching; their stores must hold the same
crops), and 2 vs 3: the median area of the embedding crop boxes as a fraction of the 224 px image, the same
for the display boxes (recomputed here from the heatmaps of ``--display-pairs`` pairs), the median IoU of the
two methods' boxes per reference, and how the polysemanticity ranking moves (Pearson and Spearman r across
neurons, overlap of the top quarter). The load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_stages import photo_folder, precompute_command
from PIL import Image
from scipy.stats import pearsonr, spearmanr

from pure_core.crops import box_area_fractions, crop_box
from pure_core.heatmaps import input_heatmaps_for_pairs
from pure_core.models import build_model
from store import RunStore
from store.schema import CropBoxes, CropMethod, Crops, References, Summary

ROOT = Path(__file__).resolve().parents[1]


def export_tree(commit: str, directory: Path) -> Path:
    """The files of ``commit`` (``git archive``) under ``directory``; the working tree is not touched."""
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return directory


def precompute(tree: Path, folder: Path, out: Path, args: argparse.Namespace, heatmap: str | None) -> dict:
    """One run in ``tree``; its stage seconds, wall time and load average before it."""
    command = precompute_command(folder, out, args, heatmap, preset="efficientnet-lite0", device="cpu")
    load = os.getloadavg()
    start = time.perf_counter()
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run(command, cwd=tree, check=True, capture_output=True, text=True, env=environment)
    wall = time.perf_counter() - start
    with RunStore.open(out) as store:
        seconds = store.stage_seconds()
        pairs = int(np.prod(store.read(References).indices.shape))
        method = store.read(CropMethod)
    return {"load_average_before": [round(v, 2) for v in load], "wall_s": round(wall, 1),
            "crops_s": round(seconds["crops"], 1), "crops_pairs_per_s": round(pairs / seconds["crops"], 2),
            "heatmap": "gradient_x_input (not recorded)" if method is None else method.heatmap}


def _boxes(out: Path) -> dict[int, np.ndarray]:
    with RunStore.open(out) as store:
        return {n: store.read(CropBoxes, n).values for n in store.read(References).neuron_ids}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    top, left = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    bottom, right = np.minimum(a[:, 2], b[:, 2]), np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def same_crops(a: Path, b: Path) -> bool:
    """Whether two stores hold identical crop boxes and crop bytes."""
    with RunStore.open(a) as first, RunStore.open(b) as second:
        neurons = first.read(References).neuron_ids
        return all(first.read(CropBoxes, n) == second.read(CropBoxes, n) and
                   first.read(Crops, n) == second.read(Crops, n) for n in neurons)


def display_fractions(out: Path, n_pairs: int, side: int) -> dict[str, float]:
    """Median display-box area fraction (kernel 51, threshold 0.01) of both methods on the first pairs."""
    loaded = build_model("efficientnet-lite0")
    with RunStore.open(out) as store:
        references = store.read(References)
        folder = Path(store.config["dataset"]["path"])
    files = sorted(folder.iterdir())
    rows = np.repeat(np.arange(len(references.neuron_ids)), references.n_ref)[:n_pairs]
    refs = references.indices.reshape(-1)[:n_pairs]
    x = torch.stack([loaded.preprocess.to_tensor(Image.open(files[int(i)]).convert("RGB")) for i in refs])
    neurons = [references.neuron_ids[r] for r in rows]
    positions = references.positions.reshape(-1, 2)[:n_pairs]
    out_fractions = {}
    for method in ("gradient_x_input", "lrp"):
        maps = input_heatmaps_for_pairs(loaded.model, x, "blocks.6", neurons, positions, method).numpy()
        boxes = np.array([crop_box(m, 51, 0.01) for m in maps])
        out_fractions[method] = round(float(np.median(box_area_fractions(boxes, side, side))), 3)
    return out_fractions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--neurons", default="0-31")
    parser.add_argument("--n-ref", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--before", default="HEAD", help="commit of the 'before' code ('' skips that run)")
    parser.add_argument("--display-pairs", type=int, default=64)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-crops-"))
    folder = photo_folder(work / "photos", args.images)
    runs = {}
    if args.before:
        old = export_tree(args.before, work / "before")
        runs["before (gradient_x_input)"] = precompute(old, folder, work / "before-run", args, None)
    runs["after, gradient_x_input"] = precompute(ROOT, folder, work / "gradient", args, "gradient_x_input")
    runs["after, auto (lrp)"] = precompute(ROOT, folder, work / "lrp", args, "auto")
    gradient, lrp = _boxes(work / "gradient"), _boxes(work / "lrp")
    side = 224
    with RunStore.open(work / "gradient") as a, RunStore.open(work / "lrp") as b:
        score_a = {r.neuron: r.polysemanticity for r in a.read(Summary).rows}
        score_b = {r.neuron: r.polysemanticity for r in b.read(Summary).rows}
    neurons = sorted(score_a)
    sa, sb = np.array([score_a[n] for n in neurons]), np.array([score_b[n] for n in neurons])
    quarter = max(1, len(neurons) // 4)
    top_a, top_b = set(np.argsort(-sa)[:quarter]), set(np.argsort(-sb)[:quarter])
    all_a, all_b = np.concatenate(list(gradient.values())), np.concatenate(list(lrp.values()))
    report = {
        "workload": f"EfficientNet-Lite0 blocks.6, {args.images} photos, neurons {args.neurons} x "
                    f"{args.n_ref} refs, batch {args.batch_size}, CPU threads {torch.get_num_threads()}",
        "runs": runs,
        "before_and_after_crops_identical": same_crops(work / "before-run", work / "gradient")
        if args.before else None,
        "embedding_box_area_fraction_median": {
            "gradient_x_input": round(float(np.median(box_area_fractions(all_a, side, side))), 3),
            "lrp": round(float(np.median(box_area_fractions(all_b, side, side))), 3)},
        "display_box_area_fraction_median": display_fractions(work / "gradient", args.display_pairs, side),
        "embedding_box_iou_median": round(float(np.median(_iou(all_a, all_b))), 3),
        "polysemanticity_pearson_r": round(float(pearsonr(sa, sb)[0]), 3),
        "polysemanticity_spearman_r": round(float(spearmanr(sa, sb)[0]), 3),
        f"top_{quarter}_overlap": len(top_a & top_b),
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
