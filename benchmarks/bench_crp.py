"""The whole precompute against the authors' per-neuron pipeline (zennit-crp), same model, data and neurons.

    pip install matplotlib && pip install --no-deps zennit-crp==0.6.0   # crp pins zennit<=0.4.6; 0.5.1 works
    python benchmarks/bench_crp.py                                      # ResNet-50 (untrained), CPU
    python benchmarks/bench_crp.py --model efficientnet-lite0 --layer blocks.6 --lower-layer blocks.4
    python benchmarks/bench_crp.py --images 2000 --neurons 0-63 --n-ref 100 --device cuda

The authors' reference (github.com/maxdreyer/PURE, ``scripts/run_preprocessing.sh``) is three passes, each
rebuilt here through zennit-crp's public API with their settings:

1. ``crp_run``: ``FeatureVisualization.run`` over the whole dataset with the EpsilonPlusFlat composite
   (activation and relevance maximisation, ``max_target="max"``, SAMPLE_SIZE = n_ref). They record every
   layer; here only the analysed one (in their favour).
2. ``compute_latent_features``: per neuron, a DataLoader over its n_ref references (batch 40) and one
   ``CondAttribution`` call per batch with the gradient composite from the analysed layer,
   ``init_rel = act.clamp(min=0)``; circuit = ChannelConcept sum of lower-layer gradient x activation,
   L1-normalised. They record every layer; here the two in question.
3. ``compute_embeddings``: per neuron, ``get_max_reference(..., "activation", composite=EpsilonPlusFlat,
   rf=True)`` (LRP heatmaps restricted to the most active position, cropped by crp's ``vis_opaque_img``),
   then the crops embedded in batches of 10. Their embedder is CLIP ViT-B/32 from the Hugging Face hub,
   which cannot be fetched offline; both pipelines here embed with the same model (this project's
   ``--embedder``), so the comparison is about the pipelines, not the embedders.

Ours: ``python -m precompute`` with the same model, layers, folder, neurons and n_ref, run in a subprocess
(its wall time includes interpreter start and model loading; the authors' side is timed after its imports).
Reported: seconds per step on both sides, the whole-job ratio, and the ratio over the steps both pipelines
have (`SHARED_STAGES`: ours without scores + UMAP, which the authors run in notebooks, and without the
stages they have no counterpart of: CLIP labels, activation quantiles, depth). The machine's load average
is printed beside the figures. ResNet-50's ImageNet weights cannot be downloaded here, so the default run
uses untrained weights (``--weights none``): timings depend on the architecture, not on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_stages import photo_folder, precompute_command
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms.functional import to_tensor

from pure_core.embed import make_embedder
from pure_core.lrp import canonizer_for
from pure_core.models import ModelSpec, build_model
from store import RunStore
from store.schema import CropMethod, References

ROOT = Path(__file__).resolve().parents[1]
# our stages that the authors' three passes also do (scan, circuits, crops, embeddings)
SHARED_STAGES = ("references", "attributions", "crops", "embeddings")


class PhotoDataset(Dataset):
    """The photo folder as the authors' datasets present ImageNet: ``(unnormalised tensor, label)``."""

    def __init__(self, folder: Path, to_tensor) -> None:
        self.files = sorted(folder.iterdir())
        self.to_tensor = to_tensor

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        return self.to_tensor(Image.open(self.files[index]).convert("RGB")), 0


def authors_pipeline(args: argparse.Namespace, folder: Path, work: Path,
                     neurons: list[int]) -> dict[str, float]:
    """Seconds of the three passes of the authors' preprocessing (module docstring) for ``neurons``, after
    imports."""
    from crp.attribution import CondAttribution
    from crp.concepts import ChannelConcept
    from crp.helper import load_maximization
    from crp.image import vis_opaque_img
    from crp.visualization import FeatureVisualization
    from zennit.composites import EpsilonPlusFlat
    from zennit.core import Composite

    device = args.device
    loaded = build_model(ModelSpec(args.model, args.weights), device=device)
    model, preprocess = loaded.model, loaded.preprocess
    dataset = PhotoDataset(folder, lambda image: to_tensor(preprocess.geometric(image)))
    composite = EpsilonPlusFlat(canonizers=[canonizer_for(model)])  # zennit's stock rules, as theirs
    concept = ChannelConcept()
    attribution = CondAttribution(model)
    fv = FeatureVisualization(attribution, dataset, {args.layer: concept}, preprocess_fn=preprocess.normalize,
                              path=str(work / "crp_files"), max_target="max", abs_norm=False)
    fv.ActMax.SAMPLE_SIZE = args.n_ref
    seconds = {}

    start = time.perf_counter()
    fv.run(composite, 0, len(dataset), batch_size=args.batch_size)
    seconds["1 scan (FeatureVisualization.run)"] = time.perf_counter() - start

    start = time.perf_counter()
    sorted_ids, _, _ = load_maximization(fv.ActMax.PATH, args.layer)
    circuits = []
    for neuron in neurons:
        loader = DataLoader(Subset(dataset, sorted_ids[:args.n_ref, neuron].tolist()), batch_size=40,
                            shuffle=False, num_workers=args.workers)
        parts = []
        for x, _ in loader:
            x = preprocess.normalize(x.to(device)).requires_grad_()
            attr = attribution(x, [{args.layer: [int(neuron)]}], Composite(),
                               record_layer=[args.lower_layer, args.layer], start_layer=args.layer,
                               init_rel=lambda act: act.clamp(min=0))
            lower = args.lower_layer
            relevance = attr.relevances[lower].detach() * attr.activations[lower].detach()
            parts.append(concept.attribute(relevance, abs_norm=True).cpu())
        circuits.append(torch.cat(parts))
    seconds["2 circuits (CondAttribution per neuron)"] = time.perf_counter() - start

    start = time.perf_counter()
    embedder = make_embedder(args.embedder, device=device, batch_size=10)
    for neuron in neurons:
        crops = fv.get_max_reference([int(neuron)], args.layer, "activation", (0, args.n_ref),
                                     composite=composite, rf=True, batch_size=args.n_ref,
                                     plot_fn=vis_opaque_img)[int(neuron)]
        for i in range(0, len(crops), 10):
            embedder.embed(crops[i:i + 10])
    seconds["3 crops + embeddings (get_max_reference per neuron)"] = time.perf_counter() - start
    return seconds


def our_pipeline(args: argparse.Namespace, folder: Path,
                 out: Path) -> tuple[float, dict[str, float], str, list[int]]:
    """Wall seconds of ``python -m precompute`` on the same work, its stage seconds, its crop heatmaps and the
    neurons it analysed."""
    command = precompute_command(folder, out, args, model=args.model, weights=args.weights, layer=args.layer,
                                 lower_layer=args.lower_layer, embedder=args.embedder, device=args.device)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    with RunStore.open(out) as store:
        neurons = [int(n) for n in store.read(References).neuron_ids]
        return wall, store.stage_seconds(), store.read(CropMethod).heatmap, neurons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--lower-layer", default="layer3")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--neurons", default="0-15")
    parser.add_argument("--n-ref", type=int, default=16)
    parser.add_argument("--embedder", default="efficientnet-lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="the authors' DataLoader workers (they use 8)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench-crp-"))
    folder = photo_folder(work / "photos", args.images)
    load_before = os.getloadavg()
    ours_wall, ours_stages, heatmap, neurons = our_pipeline(args, folder, work / "run")
    theirs = authors_pipeline(args, folder, work, neurons)
    theirs_total = sum(theirs.values())
    shared = sum(ours_stages[stage] for stage in SHARED_STAGES)
    report = {
        "load_average": [round(v, 2) for v in load_before],
        "workload": f"{args.model} ({args.weights} weights) {args.layer} <- {args.lower_layer}, "
                    f"{args.images} photos, neurons {args.neurons} x {args.n_ref} references, "
                    f"batch {args.batch_size}, {args.device}, embedder {args.embedder}",
        "ours_crop_heatmaps": heatmap,
        "ours_wall_s": round(ours_wall, 1),
        "ours_stage_s": {k: round(v, 2) for k, v in ours_stages.items()},
        "authors_s": {k: round(v, 2) for k, v in theirs.items()},
        "authors_total_s": round(theirs_total, 1),
        "speed-up, whole job (our wall incl. start-up and scores)": round(theirs_total / ours_wall, 1),
        f"speed-up, the steps both have ({', '.join(SHARED_STAGES)})": round(theirs_total / shared, 1),
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
