"""Ground truth: how well clusterings of a neuron's references recover the world's planted concepts.

`ground_truth_report` ranks references with `pure_core.activations.collect_references`, computes PURE
circuits (`pure_core.attribution.pure_attributions_for_pairs`) at each requested lower layer and the
activation baseline, and measures the adjusted Rand index (ARI) of k-means clusters of each against the
planted concept of every reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pure_core.activations import References, collect_references
from pure_core.attribution import pure_attributions_for_pairs
from pure_core.virtual import VirtualNeurons
from synthetic.world import SyntheticWorld, polysemantic_kind, world_batches

__all__ = ["CONCEPT_MIN_SHARE", "GroundTruthReport", "NeuronGroundTruth", "count_concepts",
           "ground_truth_report"]


@dataclass
class NeuronGroundTruth:
    """One neuron's references against the world's ground truth.

    ``concepts (n_ref,)``: the planted concept of each reference; ``kind``: `polysemantic_kind` of them;
    ``n_concepts``: planted concepts that make up at least `CONCEPT_MIN_SHARE` of the references (a stray
    single reference does not count); ``ari_pure[lower_layer][k]`` and ``ari_activation[k]``: adjusted
    Rand index between the concepts and k-means (`VirtualNeurons`) clusters of PURE circuits / activation
    vectors, for each k of the report (``"c"`` = ``max(2, n_concepts)``).
    """

    neuron: int
    concepts: list[str]
    kind: str
    n_concepts: int
    ari_pure: dict[str, dict[int | str, float]] = field(default_factory=dict)
    ari_activation: dict[int | str, float] = field(default_factory=dict)


@dataclass
class GroundTruthReport:
    """`ground_truth_report`'s result: per-neuron rows plus the references they came from."""

    layer: str
    lower_layers: list[str]
    n_ref: int
    ks: list[int | str]
    neurons: list[NeuronGroundTruth]
    references: References | None = None

    def rows(self, kind: str | None = None) -> list[NeuronGroundTruth]:
        return [n for n in self.neurons if kind is None or n.kind == kind]

    def mean_ari(self, method: str, k: int | str = 2, kind: str | None = "polysemantic",
                 lower_layer: str | None = None) -> float:
        """Mean ARI of ``method`` ("pure" or "activation") at ``k`` over neurons of ``kind`` (None: all);
        "pure" needs `lower_layer` (default: the first one). NaN when no neuron is of that kind."""
        rows = self.rows(kind)
        if not rows:
            return float("nan")
        if method == "pure":
            lower = lower_layer or self.lower_layers[0]
            return float(np.mean([r.ari_pure[lower][k] for r in rows]))
        if method == "activation":
            return float(np.mean([r.ari_activation[k] for r in rows]))
        raise ValueError(f"method must be 'pure' or 'activation', not {method!r}")

    def format_table(self) -> str:
        """A plain-text table: one line per neuron, then means over polysemantic neurons and controls."""
        cols = [f"PURE {low} k={k}" for low in self.lower_layers for k in self.ks] + [
            f"act k={k}" for k in self.ks]
        head = f"{'neuron':>6}  {'kind':<12} {'concepts among references':<44} " + " ".join(
            f"{c:>{max(8, len(c))}}" for c in cols)
        lines = [head, "-" * len(head)]

        def cells(values: list[float]) -> str:
            return " ".join(f"{v:>{max(8, len(c))}.3f}" for v, c in zip(values, cols, strict=True))

        for r in self.neurons:
            names, counts = np.unique(np.asarray(r.concepts), return_counts=True)
            order = np.argsort(-counts)
            mix = ", ".join(f"{counts[j]} {names[j]}" for j in order[:3]) + (" ..." if len(order) > 3 else "")
            values = [r.ari_pure[low][k] for low in self.lower_layers for k in self.ks] + [
                r.ari_activation[k] for k in self.ks]
            lines.append(f"{r.neuron:>6}  {r.kind:<12} {mix[:44]:<44} {cells(values)}")
        lines.append("-" * len(head))
        for kind in ("polysemantic", "monosemantic", "mixed"):
            rows = self.rows(kind)
            if not rows:
                continue
            values = [self.mean_ari("pure", k, kind, low) for low in self.lower_layers for k in self.ks] + [
                self.mean_ari("activation", k, kind) for k in self.ks]
            label = f"mean over {len(rows)} {kind}"
            lines.append(f"{'':>6}  {label:<57} {cells(values)}")
        return "\n".join(lines)


CONCEPT_MIN_SHARE = 0.05


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


def ground_truth_report(model, world: SyntheticWorld, layer: str, lower_layers: Sequence[str],
                        preprocessing, n_ref: int = 100, ks: Sequence[int | str] = (2, "c"),
                        neurons: Sequence[int] | None = None, batch_size: int = 256,
                        progress: bool = False, random_state: int = 0) -> GroundTruthReport:
    """Measure PURE and the activation baseline against the planted concepts, neuron by neuron.

    For every channel of `layer` (or `neurons`): its top-`n_ref` references in `world`
    (`collect_references`), the planted concept of each, and the adjusted Rand index between those
    concepts and k-means clusters (`VirtualNeurons`, `random_state`) of (a) PURE circuits
    (`pure_attributions_for_pairs`) for each of `lower_layers` and (b) the references' activation vectors
    (the O'Mahony baseline), for each k in `ks` (``"c"``: the number of planted concepts among the
    references, each at least `CONCEPT_MIN_SHARE` of them; at least 2). `model` in eval mode;
    `preprocessing` a `pure_core.models.Preprocessing`.
    """
    refs = collect_references(model, world_batches(world, preprocessing, batch_size), layer, n_ref,
                              neurons=neurons, progress=progress)
    rows = range(len(refs.neurons))
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc="ground truth", unit="neuron")
    results = []
    for row in rows:
        neuron = int(refs.neurons[row])
        indices = refs.indices[row]
        concepts = [world.concept_of(int(i)) for i in indices]
        n_concepts = count_concepts(concepts)
        inputs = next(world_batches(world, preprocessing, len(indices), indices))
        result = NeuronGroundTruth(neuron, concepts, polysemantic_kind(concepts), n_concepts)
        for lower in lower_layers:
            circuits = pure_attributions_for_pairs(model, inputs, layer, lower, [neuron] * len(inputs))
            circuits = circuits.detach().cpu().numpy().astype(np.float64)
            result.ari_pure[lower] = {k: _cluster_ari(circuits, concepts, k, n_concepts, random_state)
                                      for k in ks}
        baseline = refs.baseline(row).astype(np.float64)
        result.ari_activation = {k: _cluster_ari(baseline, concepts, k, n_concepts, random_state) for k in ks}
        results.append(result)
    return GroundTruthReport(layer, list(lower_layers), refs.n_ref, list(ks), results, refs)
