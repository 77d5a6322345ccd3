"""`python -m precompute purify RUN_DIR --out FILE`: export a run's virtual neurons as a purified layer.

    python -m precompute purify runs/demo --out demo-purified.pt                 # the 8 most polysemantic
    python -m precompute purify runs/demo --out demo-purified.pt --neurons 3,5 --k 3

Reads the run store (read-only): the model spec, layer pair and seed (`RunMeta`), the references, PURE vectors
and stored centroids (`NeuronScores.centroids`; k-means with the run's seed when k was not stored), numbered
as the dashboard numbers virtual neurons (VN 1 = the biggest cluster, `VirtualNeurons.from_stored`). Builds
the run's model (nothing downloaded or trained; its fingerprint must match the run's), purifies it
(`pure_core.purify`), and measures on each neuron's own references, the stored images at model-input
resolution:

- the largest |difference| between the purified and the original outputs (0: unchanged);
- selectivity: the share of the neuron's max-pooled activation on a reference that lands in the virtual
  channel of the reference's stored cluster, averaged per virtual neuron and over the neuron's references;
- agreement of the in-forward assignment with the stored cluster labels.

Then writes the export (`pure_core.purify.save_purified`, the figures in its metrics) and says how to load
it. Errors are one line on stderr with exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from precompute.config import ConfigError, parse_neurons
from pure_core.hooks import as_maps, capture
from pure_core.models import (
    MissingWeightsError,
    ModelSpec,
    Preprocessing,
    UnknownLayerError,
    build_model,
    model_fingerprint,
)
from pure_core.purify import PurifiedExportError, PurifiedModel, purified_pass, purify, save_purified
from pure_core.virtual import VirtualNeurons
from store import RunStore, StoreError
from store.codecs import decode_pixels
from store.schema import NeuronScores, PureVectors, ReferenceImage, References, RunMeta, Summary

__all__ = ["NeuronReport", "NeuronSplit", "PurifyError", "main", "measure", "read_splits", "select_neurons"]

EXIT_ERROR = 2
EXIT_BUG = 1
DEFAULT_TOP = 8


class PurifyError(ValueError):
    """The store, the neurons or k cannot make an export (the message says which and why)."""


@dataclass(frozen=True)
class NeuronSplit:
    """One neuron's virtual neurons as the dashboard shows them: ``centroids (k, C_lower)`` (VN 1 first),
    ``labels (n_ref,)`` the stored cluster (0-based VN) of each reference, ``dataset_indices (n_ref,)``
    (-1 for an empty reference slot)."""

    neuron: int
    centroids: np.ndarray
    labels: np.ndarray
    dataset_indices: np.ndarray


@dataclass(frozen=True)
class NeuronReport:
    """What `measure` found on one neuron's references (NaN where a virtual neuron has no reference)."""

    neuron: int
    k: int
    n_ref: int
    max_abs_diff: float
    selectivity: float
    selectivity_per_vn: tuple[float, ...]
    agreement: float

    def line(self) -> str:
        per_vn = ", ".join(f"VN{j + 1} {s:.3f}" for j, s in enumerate(self.selectivity_per_vn))
        return (f"neuron {self.neuron:>5}  k={self.k}  refs {self.n_ref:>4}  "
                f"max|diff| {self.max_abs_diff:.2e}  selectivity {self.selectivity:.3f} ({per_vn})  "
                f"agreement {self.agreement:.3f}")


# -- reading the store ---------------------------------------------------------------------------------------
def select_neurons(store: RunStore, references: References, neurons: str | None, top: int) -> list[int]:
    """The neurons to purify: ``neurons`` ("3,5", "0-7", "all" = every analysed one), else the ``top`` most
    polysemantic of the run's `Summary`."""
    analysed = references.neuron_ids
    if neurons is not None:
        chosen = analysed if neurons.strip().lower() == "all" else parse_neurons(neurons, max(analysed) + 1)
        missing = sorted(set(chosen) - set(analysed))
        if missing:
            raise PurifyError(f"neurons {missing[:10]} are not analysed by this run (it analyses "
                              f"{len(analysed)} neurons of {min(analysed)}-{max(analysed)})")
        return list(chosen)
    summary = store.read(Summary)
    if summary is None:
        raise PurifyError(f"store {store.directory} has no summary yet (the scores stage is pending); run "
                          "precompute again to finish it, or name the neurons with --neurons")
    if top < 1:
        raise PurifyError(f"--top must be at least 1, got {top}")
    ranked = sorted((row for row in summary.rows if math.isfinite(row.polysemanticity)),
                    key=lambda row: row.polysemanticity, reverse=True)
    return [int(row.neuron) for row in ranked[:top]]


def read_splits(store: RunStore, references: References, neurons: Sequence[int], k: int,
                seed: int) -> list[NeuronSplit]:
    """Each neuron's split into ``k`` virtual neurons: the stored centroids for k, else k-means now with the
    run's ``seed``; numbered by size on the stored PURE vectors (`VirtualNeurons.from_stored`)."""
    splits = []
    for neuron in neurons:
        vectors, scores = store.read(PureVectors, neuron), store.read(NeuronScores, neuron)
        if vectors is None or scores is None:
            raise PurifyError(f"store {store.directory} is incomplete: neuron {neuron} has no "
                              f"{'PURE vectors' if vectors is None else 'scores'} yet; run precompute again")
        R = vectors.values.astype(np.float64)
        if k > len(R):
            raise PurifyError(f"k={k} virtual neurons need at least {k} references; neuron {neuron} has "
                              f"{len(R)}")
        stored = scores.centroids.get(k)
        if stored is not None and stored.shape == (k, R.shape[1]):
            split = VirtualNeurons.from_stored(stored, R, random_state=seed)
        else:
            split = VirtualNeurons(n_clusters=k, random_state=seed).fit(R).numbered_by_size()
        row = references.row(neuron)
        splits.append(NeuronSplit(neuron, split.cluster_centers_, split.labels_, references.indices[row]))
    return splits


def reference_inputs(store: RunStore, indices: np.ndarray, preprocess: Preprocessing) -> torch.Tensor:
    """The stored reference images ``indices`` as model inputs ``(n, 3, H, W)``: decoded at model-input
    resolution and normalised as precompute's stages do (`Preprocessing.from_pixels`)."""
    blobs = []
    for index in indices:
        record = store.read(ReferenceImage, int(index))
        if record is None:
            raise PurifyError(f"store {store.directory} is incomplete: reference image {index} is missing")
        blobs.append(record.data)
    return preprocess.from_pixels(decode_pixels(blobs))


# -- measuring -----------------------------------------------------------------------------------------------
def measure(purified: PurifiedModel, base: torch.nn.Module, inputs: torch.Tensor, split: NeuronSplit,
            batch_size: int = 64) -> NeuronReport:
    """Outputs' max |diff|, selectivity and agreement of ``purified`` on one neuron's references ``inputs``
    (its valid reference slots, in order) against the neuron's stored ``split``."""
    labels = torch.as_tensor(split.labels[split.dataset_indices >= 0])
    row = purified.channels.index(split.neuron)
    columns = [j for j, (c, _) in enumerate(purified.virtual_channels) if c == split.neuron]
    device = next(purified.parameters()).device
    diffs, shares, agrees = [], [], []
    for start in range(0, len(inputs), batch_size):
        x, own = inputs[start:start + batch_size].to(device), labels[start:start + batch_size].to(device)
        with torch.no_grad(), capture(base, [purified.layer]) as seen:
            original = base(x)
            peak = as_maps(seen[purified.layer])[:, split.neuron].flatten(1).amax(dim=1)
        with torch.no_grad():
            passed = purified_pass(purified, x)
        diffs.append((passed.outputs - original).abs().max().item())
        pooled = passed.virtual[:, columns].flatten(2).amax(dim=2)
        own_share = pooled.gather(1, own[:, None])[:, 0] / peak
        shares.append(torch.where(peak > 0, own_share, torch.nan).cpu())  # a silent reference has no share
        agrees.append((passed.assignment[:, row] == own).cpu())
    share, agree = torch.cat(shares).double(), torch.cat(agrees)
    per_vn = tuple(float(share[labels == j].nanmean()) for j in range(len(columns)))
    return NeuronReport(split.neuron, len(columns), len(labels), max(diffs), float(share.nanmean()), per_vn,
                        float(agree.double().mean()))


# -- the command ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m precompute purify",
        description="Export a run's virtual neurons as a purified layer: a torch module in which each "
                    "selected channel of the analysed layer becomes k virtual channels (one per circuit), in "
                    "one file that `pure_core.purify.load_purified` loads.")
    parser.add_argument("directory", help="run store directory")
    parser.add_argument("--out", required=True, metavar="FILE", help="the export to write (e.g. purified.pt)")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--neurons", help='channels of the analysed layer: "3,5", "0-7" or "all" (every '
                                          'analysed one)')
    chosen.add_argument("--top", type=int, default=DEFAULT_TOP,
                        help=f"the N most polysemantic neurons of the run (default {DEFAULT_TOP})")
    parser.add_argument("--k", type=int, default=2, help="virtual neurons per neuron (default 2)")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                        help="default auto (cuda when available)")
    parser.add_argument("--batch-size", type=int, default=64, help="references per forward pass (default 64)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def run(args: argparse.Namespace) -> list[NeuronReport]:
    """Read the store, purify, measure (printing a line per neuron and a summary), write the export."""
    if args.k < 1:
        raise PurifyError(f"--k must be at least 1, got {args.k}")
    if not Path(args.out).expanduser().resolve().parent.is_dir():
        raise PurifyError(f"--out {args.out}: its directory does not exist")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    with RunStore.open(args.directory) as store:
        meta, references = store.read(RunMeta), store.read(References)
        if references is None:
            raise PurifyError(f"store {store.directory} is incomplete: no references yet; run precompute "
                              "again")
        neurons = select_neurons(store, references, args.neurons, args.top)
        splits = read_splits(store, references, neurons, args.k, meta.seed)
        loaded = _run_model(meta, device)
        centroids = {split.neuron: split.centroids for split in splits}
        purified = purify(loaded.model, meta.layer, meta.lower_layer, centroids, preprocess=loaded.preprocess)
        reports = []
        for split in tqdm(splits, desc="purify: measuring on the references", unit="neuron",
                          disable=args.no_progress):
            valid = split.dataset_indices[split.dataset_indices >= 0]
            inputs = reference_inputs(store, valid, loaded.preprocess)
            reports.append(measure(purified, loaded.model, inputs, split, args.batch_size))
            tqdm.write(reports[-1].line())
    print(_summary(reports, meta.layer))
    out = save_purified(args.out, purified, ModelSpec.from_dict(meta.config["model"]), run_id=meta.run_id,
                        metrics=_metrics(reports, args.k))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); load it with:\n"
          f"    from pure_core.purify import load_purified\n"
          f"    model = load_purified({str(out)!r})   # model.virtual_channels names the virtual channels")
    return reports


def _run_model(meta: RunMeta, device: str):
    """The run's model (nothing downloaded or trained); `PurifyError` when its weights are not the run's."""
    loaded = build_model(ModelSpec.from_dict(meta.config["model"]), device=device, fetch_missing=False)
    expected = meta.model_fingerprint
    if expected and model_fingerprint(loaded.model)[:len(expected)] != expected:
        raise PurifyError(f"the model built for this run has other weights than the one precompute used "
                          f"(fingerprint {expected}); its export would not match the run's references")
    return loaded


def _summary(reports: list[NeuronReport], layer: str) -> str:
    diff = max(r.max_abs_diff for r in reports)
    selectivity = np.nanmean([r.selectivity for r in reports])
    agreement = np.mean([r.agreement for r in reports])
    return (f"purified {len(reports)} neurons of {layer} into {sum(r.k for r in reports)} virtual channels: "
            f"outputs max |diff| {diff:.2e}, selectivity {selectivity:.3f}, agreement with the stored "
            f"clusters {agreement:.3f}")


def _metrics(reports: list[NeuronReport], k: int) -> dict:
    """The figures as plain values for the export's metrics."""
    neurons = [asdict(r) | {"selectivity_per_vn": list(r.selectivity_per_vn)} for r in reports]
    return {"k": k, "neurons": neurons}


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


USER_ERRORS = (StoreError, PurifyError, ConfigError, PurifiedExportError, UnknownLayerError,
               MissingWeightsError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
        return 0
    except Exception as error:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        if isinstance(error, USER_ERRORS):
            print(f"precompute purify: error: {_one_line(error)}", file=sys.stderr)
            return EXIT_ERROR
        print(f"precompute purify: error: {type(error).__name__}: {_one_line(error)} (run with --debug for "
              "the traceback)", file=sys.stderr)
        return EXIT_BUG

