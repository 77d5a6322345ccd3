"""Benchmark: a purified layer on the demo world's planted polysemantic channels (issue 17, part 5).

    python -m precompute                          # the demo run, runs/demo
    python benchmarks/bench_purify.py --run runs/demo --k 2
    python benchmarks/bench_purify.py --top 8     # also the run's 8 most polysemantic neurons

Selects the channels whose references mix two planted concepts (`NeuronScores.oracle.kind ==
"polysemantic"`), purifies the analysed layer with their k virtual neurons as the dashboard numbers them
(`precompute.purify.read_splits`), and reports on each channel's own references what `python -m precompute
purify` reports (`precompute.purify.measure`: outputs' max |diff|, selectivity per virtual neuron, agreement
with the stored clusters), plus the ground truth the world allows: per virtual neuron the share of its
references (by the in-forward assignment) that show its most common planted concept, beside that share for
the undivided channel. Then times a forward pass of the purified model against the plain one on a batch of
references, alternating A B C A B C in one process (C: `pure_attributions` of the same channels, the cost of
the circuits alone), with the load average beside it.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from precompute.purify import measure, read_splits, reference_inputs
from pure_core.attribution import pure_attributions
from pure_core.models import ModelSpec, build_model
from pure_core.purify import PurifiedModel, purified_pass, purify
from store import RunStore
from store.schema import NeuronScores, References, RunMeta, Summary


def concept_purity(purified: PurifiedModel, inputs: torch.Tensor, concepts: list[str], neuron: int,
                   k: int) -> tuple[float, list[float]]:
    """The most common planted concept's share among all references, and among each virtual neuron's
    references (as the purified layer assigns them; NaN for a virtual neuron that gets none)."""
    with torch.no_grad():
        assignment = purified_pass(purified, inputs).assignment[:, purified.channels.index(neuron)].numpy()
    return _majority_share(concepts), [_majority_share([c for c, a in zip(concepts, assignment, strict=True)
                                                        if a == j]) for j in range(k)]


def _majority_share(concepts: list[str]) -> float:
    return Counter(concepts).most_common(1)[0][1] / len(concepts) if concepts else float("nan")


def forward_times(plain: torch.nn.Module, purified: PurifiedModel, x: torch.Tensor,
                  rounds: int) -> dict[str, float]:
    """Median seconds of a forward (no_grad) of ``plain`` and of ``purified``, and of `pure_attributions` of
    the same channels on the same batch (the circuits alone, the floor of the purified forward's extra
    cost), measured in turn A B C A B C."""
    calls = {
        "plain": lambda: plain(x),
        "purified": lambda: purified(x),
        "pure_attributions": lambda: pure_attributions(plain, x, purified.layer, purified.lower_layer,
                                                       purified.channels),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        for call in calls.values():  # warm-up: allocator, first-call costs
            call()
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(seconds)) for name, seconds in times.items()}


def bench(directory: Path, neurons: list[int], k: int, batch_size: int, rounds: int, label: str) -> dict:
    """Purify ``neurons`` of the run at ``directory``, measure and time it; print and return the figures."""
    with RunStore.open(directory) as store:
        meta, references = store.read(RunMeta), store.read(References)
        splits = read_splits(store, references, neurons, k, meta.seed)
        loaded = build_model(ModelSpec.from_dict(meta.config["model"]), fetch_missing=False)
        purified = purify(loaded.model, meta.layer, meta.lower_layer, {s.neuron: s.centroids for s in splits},
                          preprocess=loaded.preprocess)
        print(f"{label}: {len(neurons)} channels of {meta.layer} <- circuits in {meta.lower_layer}, k={k}")
        rows = []
        for split in splits:
            valid = split.dataset_indices[split.dataset_indices >= 0]
            inputs = reference_inputs(store, valid, loaded.preprocess)
            report = measure(purified, loaded.model, inputs, split, batch_size)
            oracle = store.read(NeuronScores, split.neuron).oracle
            whole, per_vn = (None, []) if oracle is None else concept_purity(
                purified, inputs, list(oracle.concepts), split.neuron, k)
            shares = ", ".join(f"VN{j + 1} {p:.2f}" for j, p in enumerate(per_vn))
            purity = "" if whole is None else f"  concept purity {whole:.2f} -> {shares}"
            print("  " + report.line() + purity)
            rows.append({"report": report, "purity_whole": whole, "purity_per_vn": per_vn})
        timing_inputs = inputs[:batch_size]
    seconds = forward_times(loaded.model, purified, timing_inputs, rounds)
    plain_s, purified_s = seconds["plain"], seconds["purified"]
    per_vn = np.array([r["report"].selectivity_per_vn for r in rows])
    summary = {
        "selectivity_per_vn_mean": [round(float(v), 4) for v in np.nanmean(per_vn, axis=0)],
        "selectivity_per_vn_min": [round(float(v), 4) for v in np.nanmin(per_vn, axis=0)],
        "agreement_mean": round(float(np.mean([r["report"].agreement for r in rows])), 4),
        "max_abs_diff": max(r["report"].max_abs_diff for r in rows),
        "plain_forward_s": plain_s, "purified_forward_s": purified_s, "time_ratio": purified_s / plain_s,
        "pure_attributions_s": seconds["pure_attributions"],
    }
    if rows[0]["purity_whole"] is not None:
        summary["concept_purity_whole_mean"] = round(float(np.mean([r["purity_whole"] for r in rows])), 3)
        summary["concept_purity_vn_mean"] = round(float(np.nanmean([r["purity_per_vn"] for r in rows])), 3)
    print(f"  selectivity per VN: mean {summary['selectivity_per_vn_mean']}, min "
          f"{summary['selectivity_per_vn_min']}; agreement {summary['agreement_mean']}; "
          f"outputs max |diff| {summary['max_abs_diff']:.2e}")
    if "concept_purity_vn_mean" in summary:
        print(f"  planted-concept purity: undivided channel {summary['concept_purity_whole_mean']}, "
              f"virtual neurons {summary['concept_purity_vn_mean']}")
    print(f"  forward of {len(timing_inputs)} references (no_grad, median of {rounds}, A B C A B C): plain "
          f"{plain_s * 1e3:.1f} ms, purified {purified_s * 1e3:.1f} ms, ratio {purified_s / plain_s:.2f}x; "
          f"pure_attributions of the same channels alone {seconds['pure_attributions'] * 1e3:.1f} ms "
          f"(load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores, {torch.get_num_threads()} "
          "threads)")
    return summary


def planted_polysemantic(directory: Path) -> list[int]:
    """The analysed channels whose references mix two planted concepts (`Oracle.kind`)."""
    with RunStore.open(directory) as store:
        neurons = store.read(References).neuron_ids
        oracles = {n: store.read(NeuronScores, n).oracle for n in neurons}
    return [n for n, oracle in oracles.items() if oracle is not None and oracle.kind == "polysemantic"]


def most_polysemantic(directory: Path, top: int) -> list[int]:
    """The ``top`` neurons of the run's summary by polysemanticity."""
    with RunStore.open(directory) as store:
        rows = sorted(store.read(Summary).rows, key=lambda row: row.polysemanticity, reverse=True)
    return [int(row.neuron) for row in rows[:top]]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="a complete precompute run of the demo world")
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--top", type=int, default=0, help="also the run's N most polysemantic neurons")
    parser.add_argument("--batch-size", type=int, default=64, help="references per forward (and timed batch)")
    parser.add_argument("--rounds", type=int, default=20, help="timed forwards of each model")
    args = parser.parse_args(argv)
    directory = Path(args.run)
    print(f"run {directory.resolve()}; torch {torch.__version__}; load average {os.getloadavg()}")
    results = {"planted": bench(directory, planted_polysemantic(directory), args.k, args.batch_size,
                                args.rounds, "planted polysemantic channels")}
    if args.top:
        results["top"] = bench(directory, most_polysemantic(directory, args.top), args.k, args.batch_size,
                               args.rounds, f"top {args.top} by polysemanticity")
    return results


if __name__ == "__main__":
    main()
