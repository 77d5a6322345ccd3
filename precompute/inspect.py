"""`python -m precompute inspect DIR [--json]`: what a run store holds, without changing it.

Prints the config, library versions, stage completion (with seconds), the neuron count, how much of the
image the crops keep (median box area over all references), and a score summary (the most polysemantic
neurons). Opens the store read-only, so it works on a read-only mount.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pure_core.crops import box_area_fractions
from store import STAGES, RunStore, StoreError
from store.schema import (
    ClipLabelStatus,
    CropBoxes,
    CropMethod,
    DistanceCorrelation,
    MethodComparison,
    QuantileBands,
    ReferenceImage,
    References,
    ScanReport,
    Summary,
)

__all__ = ["crop_fraction_median", "describe", "main"]


def describe(directory: str | Path, top: int = 10) -> dict[str, Any]:
    """Everything `inspect` prints, as plain JSON-able data."""
    with RunStore.open(directory) as store:
        summary = [row.to_store() for row in (store.read(Summary) or Summary(())).rows]
        done = store.stages_done()
        scores = [r["polysemanticity"] for r in summary if _finite(r["polysemanticity"])]
        ranked = sorted(summary, key=lambda r: r["polysemanticity"], reverse=True)
        chunks = {}
        if not all(done.values()):
            # how far an unfinished stage got (counted from its chunk markers)
            for stage in ("references", "images", *STAGES[1:]):
                n = 0
                while store.is_chunk_done(stage, n):
                    n += 1
                if n:
                    chunks[stage] = n
        scan, references, crop_method = store.read(ScanReport), store.read(References), store.read(CropMethod)
        return _plain({
            "directory": str(Path(directory)),
            "run_id": store.run_id,
            "schema_version": store.meta.get("schema_version"),
            "created_at": store.meta.get("created_at"),
            "config": store.config,
            "versions": store.meta.get("versions", {}),
            "stages": {name: {"done": done[name], "seconds": store.stage_seconds()[name]} for name in STAGES},
            "complete": all(done.values()),
            "chunks_done": chunks,
            "n_neurons": 0 if references is None else len(references.neurons),
            "scan": {} if scan is None else scan.to_store(),
            "scores": {
                "n_scored": len(scores),
                "polysemanticity_mean": float(np.mean(scores)) if scores else None,
                "polysemanticity_median": float(np.median(scores)) if scores else None,
                "top": ranked[:top],
            },
            "crop_heatmaps": None if crop_method is None else crop_method.heatmap,
            "clip_labels": _stored(store.read(ClipLabelStatus)),
            "quantiles": _stored(store.read(QuantileBands)),
            "crop_fraction_median": crop_fraction_median(store, references),
            "method_comparison": _stored(store.read(MethodComparison)),
            "distance_correlation": _stored(store.read(DistanceCorrelation)),
        })


def crop_fraction_median(store: RunStore, references: References | None) -> float | None:
    """The median area of the embedding crop boxes as a fraction of the model-input image, over every
    reference of every neuron; None before the crops stage."""
    if references is None:
        return None
    boxes = [b.values for n in references.neuron_ids if (b := store.read(CropBoxes, n)) is not None]
    first = store.read(ReferenceImage, int(references.indices[references.indices >= 0][0]))
    if not boxes or first is None:
        return None
    width, height = Image.open(io.BytesIO(first.data)).size
    return float(np.median(box_area_fractions(np.concatenate(boxes), height, width)))


def _stored(record) -> Any:
    """A record as its stored (JSON-able once `_plain`) value; None when absent."""
    return None if record is None else record.to_store()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _plain(value: Any) -> Any:
    """numpy scalars/arrays and int dict keys made JSON-friendly."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _format(info: dict[str, Any]) -> str:
    config = info["config"]
    model = config.get("model", {})
    dataset = config.get("dataset", {})
    lines = [
        f"run {info['run_id']} in {info['directory']} (schema {info['schema_version']})",
        f"  model     {model.get('name')} weights={model.get('weights')} "
        f"checkpoint={model.get('checkpoint')}",
        f"  layers    {config.get('layer')} <- circuits in {config.get('lower_layer')}",
        f"  dataset   {dataset.get('kind')} {dataset.get('path') or ''} ({dataset.get('n_images')} images"
        + (f", {info['scan']['n_skipped']} unreadable skipped" if info["scan"].get("n_skipped") else "")
        + ")",
        f"  neurons   {info['n_neurons']} x n_ref {config.get('n_ref')}; embedder {config.get('embedder')}; "
        f"ks {config.get('ks')}; crops from {info['crop_heatmaps'] or 'no'} heatmaps"
        + ("" if info["crop_fraction_median"] is None
           else f", median {info['crop_fraction_median']:.0%} of the image"),
        "  versions  " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        "  stages    " + " | ".join(f"{name} {'done' if s['done'] else 'pending'}"
                                    + (f" {s['seconds']:.1f} s" if s["done"] else "")
                                    for name, s in info["stages"].items()),
    ]
    clip = info.get("clip_labels")
    if clip:
        lines.append("  CLIP      " + {"labelled": f"names of the crops by {clip['model']}",
                                       "skipped": f"skipped: {clip['reason']}",
                                       "off": "off (no clip model configured)"}[clip["state"]])
    quantiles = info.get("quantiles")
    if quantiles:
        lines.append("  quantiles " + ("off (quantiles probe_images 0)" if quantiles["state"] == "off" else
                     f"up to {quantiles['per_band']} images per band and neuron below the top references, "
                     f"from {quantiles['n_probe']} probe images; bands (percentiles) "
                     + ", ".join(f"{lo:g}-{hi:g}" for lo, hi in quantiles["bands"])))
    if info["chunks_done"]:
        lines.append("  progress  " + ", ".join(f"{k}: {v} chunk(s)" for k, v in info["chunks_done"].items()))
    scores = info["scores"]
    if scores["n_scored"]:
        lines.append(f"  polysemanticity over {scores['n_scored']} neurons: "
                     f"mean {scores['polysemanticity_mean']:.3f}, "
                     f"median {scores['polysemanticity_median']:.3f}")
        lines.append("  most polysemantic (rho_inter - rho_intra):")
        for row in scores["top"]:
            oracle = row.get("oracle_polysemanticity")
            oracle = f"  oracle {oracle:.3f}" if _finite(oracle) else ""
            lines.append(f"    neuron {row['neuron']:>5}  score {row['polysemanticity']:.3f}  "
                         f"intra {row['rho_intra']:.3f}  inter {row['rho_inter']:.3f}  "
                         f"top activation {row['top_activation']:.3f}{oracle}")
    correlation = info.get("distance_correlation") or {}
    if correlation:
        lines.append("  distance correlation with the embedder: " + ", ".join(
            f"{m} r={c['r']:.3f}" if c.get("r") is not None else f"{m} r=n/a"
            for m, c in correlation.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute inspect",
                                     description="Show what a run store holds (read-only).")
    parser.add_argument("directory", help="run store directory")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--top", type=int, default=10, help="how many polysemantic neurons to list")
    args = parser.parse_args(argv)
    try:
        info = describe(args.directory, top=args.top)
    except StoreError as error:
        print(f"precompute inspect: error: {error}", file=sys.stderr)
        return 2
    return _print_to_stdout(json.dumps(info, indent=2, default=str) if args.json else _format(info))


def _print_to_stdout(text: str) -> int:
    """Print ``text``; 0, or 1 when the reader went away (`... --json | head -1`): then quietly, as the
    Python docs recommend for SIGPIPE, with stdout pointed at /dev/null so the flush at exit does not fail
    again with a second BrokenPipeError traceback."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0
