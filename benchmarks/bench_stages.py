"""The job's throughput stage by stage, side by side with what the hardware does with the same model.

    python benchmarks/bench_stages.py                         # EfficientNet-Lite0 (shipped weights), CPU
    python benchmarks/bench_stages.py --images 512 --neurons 0-63 --n-ref 16 --device cuda
    python benchmarks/bench_stages.py --heatmap gradient_x_input   # crops from gradient x input, not LRP
    python benchmarks/bench_stages.py --model resnet50 --weights none --layer layer4 --lower-layer layer3

One run of ``python -m precompute --preset efficientnet-lite0`` (blocks.6 <- blocks.4; or another ``--model``
with its layers: ResNet-50's ImageNet weights cannot be downloaded here, so ``--weights none`` measures its
architecture with untrained weights, which runs at the same speed) on a folder of random
256 px crops of the colour photographs that ship with scikit-image and scikit-learn, then, in this process,
the raw batched forward of the same network on the same preprocessed images (the floor a scan cannot beat:
no decoding, no hooks, no top-k). Reported per stage: items per second, and for the reference scan and the
embeddings (both one forward per image) their share of the raw forward's images per second (issue target:
>= 0.8), and the crops' input-heatmap method the run resolved (``--heatmap``: ``crop.heatmap``, default the
preset's ``auto``, i.e. LRP for EfficientNet-Lite0). The machine's load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pure_core.models import ModelSpec, build_model
from pure_explorer.large_store import photo_crops
from store import RunStore
from store.schema import CropMethod, References

ROOT = Path(__file__).resolve().parents[1]


def photo_folder(directory: Path, n_images: int, size_px: int = 256, seed: int = 0) -> Path:
    """``n_images`` random square crops of the packaged colour photographs, saved as JPEG files."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(photo_crops(np.random.default_rng(seed), n_images, size_px)):
        Image.fromarray(crop).save(directory / f"{i:05d}.jpg", quality=92)
    return directory


def precompute_command(folder: Path, out: Path, args: argparse.Namespace, heatmap: str | None = None,
                       **flags: str | int | None) -> list[str]:
    """``python -m precompute`` on the photo ``folder`` into ``out`` with the benchmark's workload (``args``:
    neurons, n_ref, batch_size), crops from ``heatmap`` (written to a config file beside ``out``: the setting
    has no flag) and further ``flags`` (``layer="layer4"`` -> ``--layer layer4``; None values left out)."""
    command = [sys.executable, "-m", "precompute", "--dataset", str(folder), "--neurons", args.neurons,
               "--n-ref", str(args.n_ref), "--batch-size", str(args.batch_size), "--no-progress",
               "--out", str(out)]
    if heatmap is not None:
        config = out.parent / f"{out.name}-crop.yaml"
        config.write_text(f"crop:\n  heatmap: {heatmap}\n")
        command += ["--config", str(config)]
    for name, value in flags.items():
        command += [] if value is None else [f"--{name.replace('_', '-')}", str(value)]
    return command


def raw_forward(spec: ModelSpec, images: list[Image.Image], batch_size: int, device: str) -> float:
    """Images per second of the plain batched forward of the model on preprocessed images."""
    loaded = build_model(spec, device=device)
    x = loaded.preprocess.to_batch(images).to(device)
    with torch.no_grad():
        loaded.model(x[:batch_size])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(x), batch_size):
            loaded.model(x[i:i + batch_size])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--neurons", default="0-31")
    parser.add_argument("--n-ref", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--weights", help="e.g. none (untrained) for a torchvision model")
    parser.add_argument("--layer", help="analysed layer (default: the model's)")
    parser.add_argument("--lower-layer", help="circuit layer (default: the model's)")
    parser.add_argument("--heatmap", choices=("auto", "lrp", "gradient_x_input"), default="auto",
                        help="crop.heatmap of the run")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    folder = photo_folder(work / "photos", args.images)
    out = work / "run"
    load_before = os.getloadavg()
    command = precompute_command(folder, out, args, args.heatmap, preset="efficientnet-lite0",
                                 model=args.model, weights=args.weights, layer=args.layer,
                                 lower_layer=args.lower_layer, device=args.device)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    with RunStore.open(out) as store:
        seconds = store.stage_seconds()
        references = store.read(References)
        n_neurons, n_ref = references.indices.shape
        heatmap = store.read(CropMethod).heatmap
    pairs = n_neurons * n_ref
    images = [Image.open(path).convert("RGB") for path in sorted(folder.iterdir())]
    raw = raw_forward(ModelSpec(args.model, args.weights), images, args.batch_size, args.device)
    scan = "references (scan + reference images), img/s"
    per_second = {
        scan: args.images / seconds["references"],
        "attributions, pairs/s": pairs / seconds["attributions"],
        "crops, pairs/s": pairs / seconds["crops"],
        "embeddings, crops/s": pairs / seconds["embeddings"],
        "scores + UMAP, s/neuron": seconds["scores"] / n_neurons,
    }
    report = {
        "load_average": [round(v, 2) for v in load_before],
        "workload": f"{args.model}, {args.images} images, {n_neurons} neurons x {n_ref} references, "
                    f"batch {args.batch_size}, {args.device}",
        "crop_heatmap": f"{args.heatmap} -> {heatmap}",
        "precompute_wall_s": round(wall, 1),
        "stage_s": {k: round(v, 2) for k, v in seconds.items()},
        "throughput": {k: round(v, 2) for k, v in per_second.items()},
        "raw_forward_img_per_s": round(raw, 1),
        "scan_share_of_raw_forward": round(per_second[scan] / raw, 2),
        "embeddings_share_of_raw_forward": round(per_second["embeddings, crops/s"] / raw, 2),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
