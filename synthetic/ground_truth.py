"""Ground truth: how well clusterings of a neuron's references recover the world's planted concepts.

`ground_truth_report` ranks references with `pure_core.activations.collect_references` and measures the
adjusted Rand index (ARI) between the planted concept of every reference and k-means clusters of:

- PURE circuits (`pure_core.attribution.pure_attributions_for_pairs_at`) at each requested lower layer;
- the activation baseline (the references' activation vectors of the analysed layer, O'Mahony et al.);
- the trivial readings of `synthetic.readings` (colour histograms, raw pixels, the patch and the lower-layer
  activations at the peak cell), which need no explanation method.

A channel's *role* comes from the network: with ``planted_classes``, channel c is class c's detector, a
``"union"`` (planted polysemantic) or a ``"control"`` (planted monosemantic); other channels are ``"free"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pure_core.activations import References, collect_references
from pure_core.attribution import pure_attributions_for_pairs_at
from pure_core.hooks import as_maps, run_until
from pure_core.virtual import VirtualNeurons
from synthetic.readings import activation_at_peak, trivial_readings
from synthetic.world import SyntheticWorld, WorldClass, model_inputs, polysemantic_kind, world_batches

__all__ = ["ACTIVATION", "CONCEPT_MIN_SHARE", "GroundTruthReport", "NeuronGroundTruth", "ROLES",
           "count_concepts", "ground_truth_report", "pure_method"]

ROLES = ("union", "control", "free")
ACTIVATION = "activation"
CONCEPT_MIN_SHARE = 0.05


def pure_method(lower_layer: str) -> str:
    """The method name of PURE with circuits at `lower_layer` (a column of the report)."""
    return f"PURE {lower_layer}"


@dataclass
class NeuronGroundTruth:
    """One neuron's references against the world's ground truth.

    ``concepts (n_ref,)``: the planted concept of each reference; ``kind``: `polysemantic_kind` of them;
    ``n_concepts``: planted concepts that make up at least `CONCEPT_MIN_SHARE` of the references; ``role``:
    one of `ROLES`; ``on_class``: share of references showing a concept of the channel's planted class (None
    for free channels); ``ari[method][k]``: adjusted Rand index between the concepts and k-means
    (`VirtualNeurons`) clusters of the method's vectors, for each k of the report (``"c"`` =
    ``max(2, n_concepts)``). Methods: ``"PURE <lower>"`` (`pure_method`), ``"activation"`` and every
    trivial reading.
    """

    neuron: int
    concepts: list[str]
    kind: str
    n_concepts: int
    role: str = "free"
    on_class: float | None = None
    ari: dict[str, dict[int | str, float]] = field(default_factory=dict)


@dataclass
class GroundTruthReport:
    """`ground_truth_report`'s result: per-neuron rows plus the references they came from."""

    layer: str
    lower_layers: list[str]
    n_ref: int
    ks: list[int | str]
    neurons: list[NeuronGroundTruth]
    methods: list[str]
    references: References | None = None

    @property
    def readings(self) -> list[str]:
        """The trivial readings among `methods`."""
        pure = {pure_method(low) for low in self.lower_layers}
        return [m for m in self.methods if m not in pure and m != ACTIVATION]

    def rows(self, group: str | None = None) -> list[NeuronGroundTruth]:
        """Neurons whose role (`ROLES`) or kind (`polysemantic_kind`) is ``group``; all for None."""
        return [n for n in self.neurons if group is None or group in (n.role, n.kind)]

    def mean_ari(self, method: str, k: int | str = 2, group: str | None = "union") -> float:
        """Mean ARI of ``method`` at ``k`` over the neurons of ``group`` (see `rows`); NaN when none."""
        if method not in self.methods:
            raise ValueError(f"unknown method {method!r}; the report has {self.methods}")
        rows = self.rows(group)
        return float(np.mean([r.ari[method][k] for r in rows])) if rows else float("nan")

    def best_pure_layer(self, k: int | str = 2, group: str = "union") -> str:
        """The lower layer at which PURE's mean ARI over ``group`` is highest."""
        return max(self.lower_layers, key=lambda low: self.mean_ari(pure_method(low), k, group))

    def format_table(self, k: int | str = 2) -> str:
        """A plain-text table at ``k``: one line per neuron, then means per role and per kind."""
        cols = self.methods
        widths = [max(7, len(c)) for c in cols]
        head = (f"{'neuron':>6}  {'role':<8}{'kind':<13}{'on class':>8}  {'concepts among references':<40} "
                + " ".join(f"{c:>{w}}" for c, w in zip(cols, widths, strict=True)))
        lines = [f"ARI at k={k}", head, "-" * len(head)]

        def cells(values: list[float]) -> str:
            return " ".join(f"{v:>{w}.3f}" for v, w in zip(values, widths, strict=True))

        for r in self.neurons:
            names, counts = np.unique(np.asarray(r.concepts), return_counts=True)
            order = np.argsort(-counts)
            mix = ", ".join(f"{counts[j]} {names[j]}" for j in order[:2]) + (" ..." if len(order) > 2 else "")
            on_class = "" if r.on_class is None else f"{r.on_class:.2f}"
            lines.append(f"{r.neuron:>6}  {r.role:<8}{r.kind:<13}{on_class:>8}  {mix[:40]:<40} "
                         + cells([r.ari[m][k] for m in cols]))
        lines.append("-" * len(head))
        for group in (*ROLES, "polysemantic", "monosemantic"):
            rows = self.rows(group)
            if rows:
                label = f"mean over {len(rows)} {group}"
                lines.append(f"{'':>6}  {label:<71} " + cells([self.mean_ari(m, k, group) for m in cols]))
        return "\n".join(lines)


def count_concepts(concepts: Sequence[str], min_share: float = CONCEPT_MIN_SHARE) -> int:
    """How many distinct concepts make up at least `min_share` of `concepts`."""
    if len(concepts) == 0:
        return 0
    _, counts = np.unique(np.asarray(concepts), return_counts=True)
    return int((counts >= min_share * len(concepts)).sum())


def _cluster_ari(vectors: np.ndarray, concepts: Sequence[str], k: int | str, n_concepts: int,
                 random_state: int) -> float:
    """ARI between `concepts` and k-means clusters of `vectors (n_ref, D)`; ``k="c"``: max(2, n_concepts)."""
    from sklearn.metrics import adjusted_rand_score

    n_clusters = max(1, min(max(2, n_concepts) if k == "c" else int(k), len(vectors)))
    labels = VirtualNeurons(n_clusters=n_clusters, random_state=random_state).fit(vectors).labels_
    return float(adjusted_rand_score(concepts, labels))


def _role(neuron: int, planted_classes: Sequence[WorldClass]) -> tuple[str, WorldClass | None]:
    if neuron < len(planted_classes):
        cls = planted_classes[neuron]
        return ("union" if cls.polysemantic else "control"), cls
    return "free", None


def ground_truth_report(model, world: SyntheticWorld, layer: str, lower_layers: Sequence[str],
                        preprocessing, n_ref: int = 100, ks: Sequence[int | str] = (2, "c"),
                        neurons: Sequence[int] | None = None, batch_size: int = 256,
                        progress: bool = False, random_state: int = 0,
                        planted_classes: Sequence[WorldClass] = ()) -> GroundTruthReport:
    """Measure PURE, the activation baseline and the trivial readings against the planted concepts.

    For every channel of `layer` (or `neurons`): its top-`n_ref` references in `world`
    (`collect_references`), the planted concept of each, and the adjusted Rand index between those
    concepts and k-means clusters (`VirtualNeurons`, `random_state`) of (a) PURE circuits at each of
    `lower_layers`, (b) the references' activation vectors and (c) every `synthetic.readings` reading
    (the lower-layer activation at the peak cell for each of `lower_layers`), for each k in `ks`
    (``"c"``: the number of planted concepts among the references, at least 2). `planted_classes[c]` is
    the class whose detector channel c is (the demo net: ``world.classes``). `model` in eval mode;
    `preprocessing` a `pure_core.models.Preprocessing`.
    """
    refs = collect_references(model, world_batches(world, preprocessing, batch_size), layer, n_ref,
                              neurons=neurons, progress=progress)
    rows = range(len(refs.neurons))
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc="ground truth", unit="neuron")
    layer_hw = _layer_hw(model, next(world_batches(world, preprocessing, 1)), layer)
    results: list[NeuronGroundTruth] = []
    methods: list[str] = []
    for row in rows:
        neuron = int(refs.neurons[row])
        indices = refs.indices[row]
        concepts = [world.concept_of(int(i)) for i in indices]
        n_concepts = count_concepts(concepts)
        role, cls = _role(neuron, planted_classes)
        on_class = None if cls is None else float(np.mean([c in cls.concepts for c in concepts]))
        images = world.arrays(indices)
        inputs = model_inputs(images, preprocessing)
        circuits = pure_attributions_for_pairs_at(model, inputs, layer, lower_layers, [neuron] * len(inputs))
        vectors = {pure_method(lower): values.cpu().numpy().astype(np.float64)
                   for lower, values in circuits.items()}
        vectors[ACTIVATION] = refs.baseline(row).astype(np.float64)
        positions = refs.positions[row]
        at_peak = activation_at_peak(model, inputs, lower_layers, positions, layer_hw)
        vectors.update(trivial_readings(images, positions, layer_hw, at_peak))
        methods = list(vectors)
        ari = {m: {k: _cluster_ari(v, concepts, k, n_concepts, random_state) for k in ks}
               for m, v in vectors.items()}
        results.append(NeuronGroundTruth(neuron, concepts, polysemantic_kind(concepts), n_concepts, role,
                                         on_class, ari))
    return GroundTruthReport(layer, list(lower_layers), refs.n_ref, list(ks), results, methods, refs)


def _layer_hw(model, x, layer: str) -> tuple[int, int]:
    """Spatial size of `layer`'s map for inputs like `x`."""
    with torch.no_grad():
        maps = as_maps(run_until(model, x, layer))
    return int(maps.shape[2]), int(maps.shape[3])
