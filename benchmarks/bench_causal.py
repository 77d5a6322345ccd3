"""Causal checks of the planted channels' virtual neurons on a demo-world run (issue 17's target).

    python -m precompute                          # the demo run, runs/demo
    python benchmarks/bench_causal.py --run runs/demo --k 2

Channels 0-7 of the demo net's block4 are planted unions of two concepts (`synthetic.world.CLASSES`). For
each, at k, every virtual neuron's circuit is ablated in block3 (`pure_core.causal.causal_check`) and the
share of the channel's activation removed is measured on its own references and on the other virtual
neurons'. Target at k = 2: >= 50 % removed on the own references, <= 20 % on the other's. Reported for
several ablation sizes, both replacements (mean, zero) and both channel choices (contrast: the channels
that set a circuit apart; weight: the largest centroid weights), then selectivity across k at the default.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from precompute.purify import read_splits, reference_inputs
from pure_core.causal import DEFAULT_CIRCUIT_CHANNELS, causal_check
from pure_core.models import ModelSpec, build_model
from pure_core.registry import load_plugins
from store import RunStore
from store.schema import References, RunMeta
from synthetic.world import CLASSES


def measure(store: RunStore, loaded, meta: RunMeta, k: int, n_channels: int, mode: str, contrast: bool,
            channels: list[int]) -> dict:
    """Own / other shares removed over the planted channels' virtual neurons for one setting."""
    references = store.read(References)
    own, other, per_channel = [], [], []
    for split in read_splits(store, references, channels, k, meta.seed):
        inputs = reference_inputs(store, split.dataset_indices[: len(split.labels)], loaded.preprocess)
        result = causal_check(loaded.model, inputs, meta.layer, meta.lower_layer, split.neuron,
                              split.centroids, split.labels, n_channels=n_channels, mode=mode,
                              contrast=contrast)
        removed = result.removed
        mine = np.diag(removed)
        theirs = [float(np.nanmean(np.delete(removed[c], c))) for c in range(k)]
        own += mine.tolist()
        other += theirs
        per_channel.append({"channel": split.neuron, "own": np.round(mine, 3).tolist(),
                            "other": np.round(theirs, 3).tolist()})
    return {"n_channels": n_channels, "mode": mode, "choice": "contrast" if contrast else "weight",
            "own_mean": round(float(np.mean(own)), 3), "own_min": round(float(np.min(own)), 3),
            "other_mean": round(float(np.mean(other)), 3), "other_max": round(float(np.max(other)), 3),
            "vns_meeting_both": f"{sum(o >= 0.5 and t <= 0.2 for o, t in zip(own, other, strict=True))}"
                                f"/{len(own)}",
            "channels": per_channel}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="a complete precompute run of the demo world")
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--sizes", default="2,4,8,10,16", help="channels ablated per circuit")
    args = parser.parse_args(argv)
    load_plugins()
    with RunStore.open(Path(args.run)) as store:
        meta = store.read(RunMeta)
        loaded = build_model(ModelSpec.from_dict(meta.config["model"]), fetch_missing=False)
        analysed = set(store.read(References).neuron_ids)
        channels = [c for c, planted in enumerate(CLASSES) if planted.polysemantic and c in analysed]
        start = time.perf_counter()
        sweep = [measure(store, loaded, meta, args.k, int(n), mode, contrast, channels)
                 for contrast in (True, False) for mode in ("mean", "zero")
                 for n in args.sizes.split(",")]
        across_k = {k: measure(store, loaded, meta, k, DEFAULT_CIRCUIT_CHANNELS, "mean", True, channels)
                    for k in range(2, 6)}
        seconds = time.perf_counter() - start
    default = next(r for r in sweep if r["n_channels"] == DEFAULT_CIRCUIT_CHANNELS and r["mode"] == "mean"
                   and r["choice"] == "contrast")
    report = {"run": str(Path(args.run).resolve()), "load_average": os.getloadavg(), "k": args.k,
              "planted_channels": channels, "default": default,
              "sweep": [{key: r[key] for key in r if key != "channels"} for r in sweep],
              "selectivity_across_k": {k: {"own_mean": r["own_mean"], "other_mean": r["other_mean"]}
                                       for k, r in across_k.items()},
              "seconds": round(seconds, 1)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
