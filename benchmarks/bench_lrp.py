"""LRP crop heatmaps with zennit's stock z+ rule against `pure_core.lrp_rules.LeanZPlus`, A B A B in one run.

    python benchmarks/bench_lrp.py                        # ResNet-50 layer4 (untrained), 224 px, batches of 8
    python benchmarks/bench_lrp.py --model efficientnet-lite0 --layer blocks.6
    python benchmarks/bench_lrp.py --device cuda --batch 64

Both sides run `pure_core.attribution.input_attributions_for_pairs` on the same images, neurons and argmax
positions with EpsilonPlusFlat and the model's canonizer; they differ only in the rule on the convolutions
after the first. Reported: seconds per pair of each side (median over the repeats), the ratio, the largest
difference between their heatmaps relative to the largest heatmap value, and the load average before and
after. ResNet-50's ImageNet weights cannot be downloaded here; untrained weights cost the same.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from zennit.composites import EpsilonPlusFlat

from pure_core.activations import pooled_activations
from pure_core.attribution import input_attributions_for_pairs
from pure_core.lrp import canonizer_for, lrp_composite
from pure_core.models import ModelSpec, build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--weights", help="the builder's weights (default: none for torchvision, untrained)")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    model = build_model(ModelSpec(args.model, args.weights), device=args.device).model
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=generator).to(args.device)
    neurons = list(range(args.batch))
    positions = pooled_activations(model, x, args.layer)[1][torch.arange(args.batch), neurons].cpu()
    sides = {"zennit ZPlus": lambda: EpsilonPlusFlat(canonizers=[canonizer_for(model)]),
             "LeanZPlus": lambda: lrp_composite(model)}
    load_before = os.getloadavg()
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    heatmaps = {}
    for _ in range(args.repeats):
        for name, composite in sides.items():
            if args.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            heatmaps[name] = input_attributions_for_pairs(model, x, args.layer, neurons, positions,
                                                          composite=composite())
            if args.device == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
    stock, lean = heatmaps["zennit ZPlus"], heatmaps["LeanZPlus"]
    per_pair = {name: statistics.median(values) / args.batch for name, values in seconds.items()}
    report = {
        "workload": f"{args.model} {args.layer}, {args.batch} pairs per call, {args.size} px, {args.device}, "
                    f"CPU threads {torch.get_num_threads()}, {args.repeats} repeats A B A B",
        "seconds_per_pair": {name: round(value, 4) for name, value in per_pair.items()},
        "ratio": round(per_pair["zennit ZPlus"] / per_pair["LeanZPlus"], 2),
        "max_relative_difference": float((stock - lean).abs().max() / stock.abs().max()),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
