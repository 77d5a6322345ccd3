"""What a workload costs on P processes, projected from per-stage throughput measured on one.

    python benchmarks/bench_stages.py --json stages.json          # measure on the hardware in question
    python benchmarks/project_cost.py stages.json                  # the paper's workload on 1, 8, 64
    python benchmarks/project_cost.py stages.json --images 50000 --neurons 2048 --n-ref 100 --processes 1 8 64

Each stage of the job is sharded across torchrun's ranks (the scan by dataset index, the other stages by
neuron chunks) and ends with a barrier, so a stage's time on P ranks is its single-rank time over P plus the
slowest rank's share of one chunk. The projection assumes that and nothing else: linear scaling of every
stage, no shared-filesystem or data-loading limit. Both do bind in practice (image decoding at thousands of
images per second per node; SQLite writes on a network filesystem), so read the figures as the floor the
job's structure allows, and measure on the real cluster before booking it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

# The throughput keys `bench_stages.py` writes, and what each stage's count of work items is.
STAGES = {
    "references": ("references (scan + reference images), img/s", "images"),
    "attributions": ("attributions, pairs/s", "pairs"),
    "crops": ("crops, pairs/s", "pairs"),
    "embeddings": ("embeddings, crops/s", "pairs"),
}
SCORES = "scores + UMAP, s/neuron"
CHUNK_NEURONS = 16


def stage_seconds(throughput: dict[str, float], images: int, neurons: int, n_ref: int,
                  processes: int) -> dict[str, float]:
    """Projected seconds per stage on ``processes`` ranks for ``images`` x ``neurons`` x ``n_ref``."""
    work = {"images": images, "pairs": neurons * n_ref}
    seconds = {}
    for stage, (key, unit) in STAGES.items():
        per_second = throughput[key]
        chunk = 0.0 if unit == "images" else CHUNK_NEURONS * n_ref / per_second
        seconds[stage] = work[unit] / per_second / processes + (chunk if processes > 1 else 0.0)
    per_neuron = throughput[SCORES]
    seconds["scores"] = math.ceil(neurons / processes) * per_neuron
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("measured", help="JSON written by bench_stages.py --json")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--neurons", type=int, default=2048)
    parser.add_argument("--n-ref", type=int, default=100)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    measured = json.loads(Path(args.measured).read_text())
    rows = {}
    for p in args.processes:
        seconds = stage_seconds(measured["throughput"], args.images, args.neurons, args.n_ref, p)
        rows[p] = {"stage_hours": {k: round(v / 3600, 2) for k, v in seconds.items()},
                   "total_hours": round(sum(seconds.values()) / 3600, 2),
                   "process_hours": round(p * sum(seconds.values()) / 3600, 1)}
    print(json.dumps({"measured_on": measured.get("workload"), "load_average": measured.get("load_average"),
                      "workload": f"{args.images} images, {args.neurons} neurons x {args.n_ref} references",
                      "projection (linear scaling per stage)": rows}, indent=2))


if __name__ == "__main__":
    main()
