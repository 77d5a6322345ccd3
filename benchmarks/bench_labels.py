"""Data labels of the planted channels' virtual neurons on a demo-world run (issue 15's quality target).

    python -m precompute                          # the demo run, runs/demo
    python benchmarks/bench_labels.py --run runs/demo --k 2

Channel c < 16 of the demo net's block4 is planted with `synthetic.world.CLASSES[c]`: a union of two concepts
or a control of one. At k, each virtual neuron's data label is the first of its stored dataset labels
(`VirtualNeuronDataLabels`: the planted concepts of its references, over-represented ones first). Reports,
per group, how many virtual neurons are labelled with one of their channel's planted concepts (target: >= 95 %
of them), how many unions have their two concepts on two different virtual neurons, and each label's share.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from store import RunStore
from store.schema import DatasetLabelNames, References, VirtualNeuronDataLabels
from synthetic.world import CLASSES


def label_quality(directory: Path, k: int) -> dict:
    """Per planted channel the label and share of each virtual neuron at ``k``, and the hit rates."""
    rows, hits, total, split_unions = [], 0, 0, 0
    with RunStore.open(directory) as store:
        names = store.read(DatasetLabelNames).names
        analysed = set(store.read(References).neuron_ids)
        for channel, planted in enumerate(CLASSES):
            if channel not in analysed:
                continue
            vns = store.read(VirtualNeuronDataLabels, channel).by_k[k]
            labels = [(names[vn[0].label], round(vn[0].share, 3)) if vn else (None, 0.0) for vn in vns]
            correct = [label in planted.concepts for label, _ in labels]
            hits += sum(correct)
            total += len(correct)
            both = planted.polysemantic and {label for label, _ in labels} == set(planted.concepts)
            split_unions += bool(both)
            rows.append({"channel": channel, "planted": planted.name, "labels": labels, "correct": correct})
    unions = sum(planted.polysemantic for c, planted in enumerate(CLASSES) if c in analysed)
    return {"k": k, "virtual_neurons_labelled_with_a_planted_concept": f"{hits}/{total}",
            "rate": round(hits / max(1, total), 4),
            "unions_split_into_their_two_concepts": f"{split_unions}/{unions}", "channels": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="a complete precompute run of the demo world")
    parser.add_argument("--k", type=int, default=2)
    args = parser.parse_args(argv)
    report = {"run": str(Path(args.run).resolve()), "load_average": os.getloadavg(),
              **label_quality(Path(args.run), args.k)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
