"""How long precompute takes: the end-to-end demo, and ResNet-50 layer4 -> layer3 on 500 generated images.

    python benchmarks/bench_precompute.py                  # both, CPU
    python benchmarks/bench_precompute.py --device cuda    # on a GPU
    python benchmarks/bench_precompute.py --only resnet50 --attribution-strategies

- demo: ``python -m precompute`` (the default demo config) into a fresh directory; wall time, the time per
  stage, and the demo net's training time (from its checkpoint; ``--train`` retrains into a temporary cache
  so the wall time includes it).
- resnet50: torchvision ResNet-50 without pretrained weights (seeded init), layer4 analysed, circuits in
  layer3, on a folder of 500 world images drawn at 224 px, 64 neurons x 50 references, the offline
  efficientnet-lite0 embedder.
- ``--attribution-strategies``: stage 2's two ways to batch PURE attributions on ResNet-50 (a forward per
  (image, neuron) pair with `pure_attributions_for_pairs`, or one forward per unique image with the VJPs of
  all its neurons via `pure_attributions`), timed on the same pairs.

Prints a table and writes JSON with ``--json FILE``.
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

ROOT = Path(__file__).resolve().parents[1]


def _precompute(args: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "precompute", "--no-progress", *args], cwd=ROOT, text=True,
                            capture_output=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"precompute failed ({result.returncode}):\n{result.stdout[-2000:]}\n"
                         f"{result.stderr[-3000:]}")
    return wall, result.stdout


def _stage_times(out: Path) -> dict[str, float]:
    from store import RunStore

    with RunStore.open(out) as store:
        return {name: round(s, 2) for name, s in store.stage_seconds().items()}


def bench_demo(work: Path, device: str, train: bool) -> dict:
    from synthetic.demo import default_checkpoint_path, read_checkpoint

    env = {}
    if train:
        env["PURE_CACHE_DIR"] = str(work / "cache")  # empty: the run trains the demo net first
    out = work / "demo"
    wall, stdout = _precompute(["--out", str(out), "--device", device], env)
    checkpoint = (work / "cache" / "demo_model.pt") if train else default_checkpoint_path()
    meta = read_checkpoint(checkpoint)["meta"]
    return {"wall_s": round(wall, 1), "stages_s": _stage_times(out), "trained_in_run": train,
            "train_time_s": round(meta.get("train_time_s", float("nan")), 1),
            "demo_accuracy": meta.get("accuracy"), "report": stdout.strip().splitlines()}


def make_folder(folder: Path, n_images: int = 500, size_px: int = 224, seed: int = 7) -> Path:
    """``n_images`` world images drawn at ``size_px`` as PNG files in ``folder/world``."""
    from PIL import Image

    from synthetic.world import SyntheticWorld

    target = folder / "world"
    target.mkdir(parents=True, exist_ok=True)
    world = SyntheticWorld(n_images, seed=seed, size_px=size_px)
    for i in range(n_images):
        path = target / f"{i:04d}.png"
        if not path.exists():
            Image.fromarray(world.render(i)[0]).save(path)
    return folder


def bench_resnet50(work: Path, device: str, batch_size: int) -> dict:
    data = make_folder(work / "images")
    out = work / "resnet50"
    wall, stdout = _precompute(["--model", "resnet50", "--weights", "none", "--layer", "layer4",
                                "--lower-layer", "layer3", "--dataset", str(data), "--neurons", "0-63",
                                "--n-ref", "50", "--embedder", "efficientnet-lite0", "--device", device,
                                "--batch-size", str(batch_size), "--out", str(out)])
    from store import RunStore
    from store.schema import References

    with RunStore.open(out) as store:
        unique = len(set(store.read(References).indices.ravel().tolist()))
    return {"wall_s": round(wall, 1), "stages_s": _stage_times(out), "unique_reference_images": unique,
            "report": stdout.strip().splitlines()}


def bench_attribution_strategies(device: str, n_images: int = 16, neurons_per_image: int = 8) -> dict:
    """Stage 2's options on ResNet-50 layer4 -> layer3: per pair vs per unique image (same pairs)."""
    import torch
    import torchvision

    from pure_core.attribution import pure_attributions, pure_attributions_for_pairs

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval().to(device)
    x = torch.randn(n_images, 3, 224, 224, device=device)
    neurons = [list(range(j * 3, j * 3 + neurons_per_image)) for j in range(n_images)]
    pairs_x = torch.cat([x[j:j + 1].expand(len(ns), -1, -1, -1) for j, ns in enumerate(neurons)])
    pairs_n = [n for ns in neurons for n in ns]

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    timings = {}
    for name in ("per_pair", "per_image"):
        for repeat in range(2):  # the first pass warms up
            sync()
            start = time.perf_counter()
            if name == "per_pair":
                for s in range(0, len(pairs_n), 32):
                    pure_attributions_for_pairs(model, pairs_x[s:s + 32], "layer4", "layer3",
                                                pairs_n[s:s + 32])
            else:
                for j, ns in enumerate(neurons):
                    pure_attributions(model, x[j:j + 1], "layer4", "layer3", ns)
            sync()
            if repeat:
                timings[name] = round(time.perf_counter() - start, 2)
    return {"pairs": len(pairs_n), "images": n_images, **{f"{k}_s": v for k, v in timings.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--only", choices=["demo", "resnet50"], help="run one benchmark")
    parser.add_argument("--train", action="store_true", help="demo: retrain the net inside the timed run")
    parser.add_argument("--batch-size", type=int, default=32, help="resnet50 batch size")
    parser.add_argument("--attribution-strategies", action="store_true", help="also time stage 2's options")
    parser.add_argument("--workdir", help="keep outputs here (default: a temporary directory)")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)

    import torch

    results = {"device": args.device, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    if args.device == "cuda":
        results["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="bench-precompute-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.only in (None, "demo"):
            results["demo"] = bench_demo(work, args.device, args.train)
            print(f"demo: {results['demo']['wall_s']} s end to end; stages {results['demo']['stages_s']}; "
                  f"net trained in {results['demo']['train_time_s']} s "
                  f"({'inside this run' if args.train else 'earlier, cached'})", flush=True)
        if args.only in (None, "resnet50"):
            results["resnet50"] = bench_resnet50(work, args.device, args.batch_size)
            print("resnet50 layer4->layer3, 500 images, 64 neurons x 50 refs: "
                  f"{results['resnet50']['wall_s']} s; "
                  f"stages {results['resnet50']['stages_s']}; "
                  f"{results['resnet50']['unique_reference_images']} unique reference images", flush=True)
        if args.attribution_strategies:
            results["attribution_strategies"] = bench_attribution_strategies(args.device)
            print(f"stage 2 strategies: {results['attribution_strategies']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
