"""How fast missing weights fail offline (the tests assert that no connection is attempted; this times it).

    python benchmarks/bench_offline.py
    python benchmarks/bench_offline.py --repeats 5 --json timings.json

Each case runs with empty torch-hub and Hugging Face caches in a temporary directory and downloads forbidden
by the environment (`PURE_OFFLINE=1`, `HF_HUB_OFFLINE=1`), so nothing is fetched:
- torchvision / timm / open_clip: `build_model` or `make_embedder` until `MissingWeightsError` (in this
  process; the first repeat includes importing the library);
- host probe: `host_reachable` on a host that does not resolve (`.invalid`), with its 0.5 s timeout (this
  one does ask the resolver);
- precompute CLI: `python -m precompute --preset resnet50-imagenet` until its one-line error (a fresh
  Python: interpreter and torch start-up included).
Open_clip's own loader, offline, spends ~46 s retrying the hub before failing; the target is < 1 s per case
in process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image


def missing_weights(build: Callable[[], object]) -> Callable[[], None]:
    """A case that must end in `MissingWeightsError`."""
    from pure_core.models import MissingWeightsError

    def case() -> None:
        try:
            build()
        except MissingWeightsError:
            return
        raise RuntimeError("weights were found: the caches are not empty")

    return case


def precompute_cli(work: Path) -> Callable[[], None]:
    """`python -m precompute --preset resnet50-imagenet` on one image, expecting its missing-weights error."""
    data = work / "val" / "n01440764"
    data.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32)).save(data / "a.JPEG")

    def case() -> None:
        result = subprocess.run(
            [sys.executable, "-m", "precompute", "--preset", "resnet50-imagenet", "--dataset",
             str(data.parent), "--out", str(work / "out")],
            capture_output=True, text=True, env=dict(os.environ),
        )  # fmt: skip
        if result.returncode != 2 or "no download attempted" not in result.stderr:
            raise RuntimeError(f"precompute exited {result.returncode}: {result.stderr[-2000:]}")

    return case


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the raw timings here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-offline-"))
    os.environ.update(TORCH_HOME=str(work / "torch"), HF_HOME=str(work / "hf"), PURE_OFFLINE="1",
                      HF_HUB_OFFLINE="1")
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        os.environ.pop(variable, None)
    from pure_core.embed import make_embedder
    from pure_core.models import ModelSpec, build_model, host_reachable

    torchvision = ModelSpec("resnet18", weights="IMAGENET1K_V1")
    timm = ModelSpec("timm:resnet18", weights="pretrained")
    cases = {
        "torchvision resnet18": missing_weights(lambda: build_model(torchvision)),
        "timm resnet18": missing_weights(lambda: build_model(timm)),
        "open_clip ViT-B-32": missing_weights(lambda: make_embedder("open_clip:ViT-B-32/laion2b_s34b_b79k")),
        "host probe (.invalid)": lambda: host_reachable("https://pure-explorer-bench.invalid/w.pth"),
        "precompute CLI": precompute_cli(work),
    }
    timings: dict[str, list[float]] = {}
    for name, case in cases.items():
        for _ in range(args.repeats):
            start = time.perf_counter()
            case()
            timings.setdefault(name, []).append(time.perf_counter() - start)
    print(f"{'case':<24}{'first s':>9}{'best s':>9}   (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")
    for name, seconds in timings.items():
        print(f"{name:<24}{seconds[0]:9.2f}{min(seconds):9.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(timings, indent=1))
    return timings


if __name__ == "__main__":
    main()
