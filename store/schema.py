"""The store's schema: one record class per stored value, the key each one lives under, and its version.

Every value a run store holds is written as ``record.to_store()`` under ``key(type(record), index)`` and read
back with ``Record.from_store(value)`` (`store.RunStore.write` / `store.RunStore.read` do both). `to_store`
returns exactly the plain value precompute has always written (same dict keys in the same order, float16
arrays stay float16, k keys stay ``int``), so stores written through the records are the stores of schema
version 1. `from_store` tolerates the optional parts a store may lack (``oracle`` outside the synthetic
world, per-k entries for k larger than a neuron's references).

Records are frozen dataclasses; they compare equal when their stored values are identical (`values_equal`:
same types, dtypes, shapes, dict key order, NaN equal to NaN). Arrays are not copied on the way in or out.

The store section of docs/contracts.md is generated from this module: ``python -m store --write
docs/contracts.md`` (tests/test_schema.py checks that the file holds exactly `render_markdown`'s text).
"""

from __future__ import annotations

import math
import re
import textwrap
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

import numpy as np

SCHEMA_VERSION = 1
METHODS = ("pure", "activation", "embedding")  # clusterings scored per neuron and k (Fig. 4)
SCRATCH_KEYS = ("chunk:<stage>:<id>", "layout:<stage>", "references:state", "attributions:part:<id>")


def doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose documentation (shape, dtype, meaning) is rendered into docs/contracts.md."""
    return field(metadata={"doc": text}, **kwargs)


def values_equal(a: Any, b: Any) -> bool:
    """Whether two stored values are identical: same types, array dtypes/shapes/elements (NaN equals NaN),
    dict keys in the same order, equal scalars."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
        )
    if isinstance(a, Mapping):
        return list(a) == list(b) and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


class Record(ABC):
    """Base of every record: `to_store` / `from_store`, equality by stored value, and the key it lives under.

    ``KEY`` is the store key (or its prefix); ``INDEX`` names what follows the prefix (``"neuron"``,
    ``"dataset index"``, ``"stage"``) for values stored once per neuron, image or stage. Records without a
    ``KEY`` are parts of another record.
    """

    KEY: ClassVar[str | None] = None
    INDEX: ClassVar[str | None] = None

    @abstractmethod
    def to_store(self) -> Any:
        """The plain value stored for this record (dicts, lists, numpy arrays, bytes, scalars)."""

    @classmethod
    @abstractmethod
    def from_store(cls, value: Any) -> Self:
        """The record of a stored value."""

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and values_equal(self.to_store(), other.to_store())

    __hash__ = None  # type: ignore[assignment]  # records hold arrays


def key(record_type: type[Record], index: int | str | None = None) -> str:
    """The store key of ``record_type`` (``"references"``, ``"scores:12"``, ``"image:4031"``)."""
    if record_type.KEY is None:
        raise TypeError(f"{record_type.__name__} is part of another record, not stored under a key")
    if record_type.INDEX is None:
        if index is not None:
            raise ValueError(f"{record_type.__name__} is stored once per run; got index {index!r}")
        return record_type.KEY
    if index is None:
        raise ValueError(f"{record_type.__name__} is stored per {record_type.INDEX}; pass which one")
    return f"{record_type.KEY}:{index if isinstance(index, str) else int(index)}"


# -- run -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSettings:
    """``config["model"]`` read as attributes: the `pure_core.models.ModelSpec` fields."""

    name: str
    weights: str | None = None
    checkpoint: str | None = None


@dataclass(frozen=True)
class DatasetSettings:
    """``config["dataset"]`` read as attributes (kind "world", "folder" or "list")."""

    kind: str
    path: str | None = None
    n_images: int | None = None
    seed: int | None = None


@dataclass(frozen=True, eq=False)
class RunMeta(Record):
    """Which run a store holds: written once by `RunStore.create`, checked on every reopen."""

    KEY: ClassVar[str] = "meta"

    schema_version: int = doc("`SCHEMA_VERSION` of the writer")
    run_id: str = doc("16 hex digits of the identity's hash (`store.run_id_for`)")
    identity: dict[str, Any] = doc(
        "everything that changes results: `{config, fingerprints: {model, "
        "dataset}}` (precompute's `RunConfig.identity`)"
    )
    config: dict[str, Any] = doc(
        "`model {name, weights, checkpoint}`, `layer`, `lower_layer`, `dataset "
        "{kind, path, n_images, seed}`, `n_ref`, `neurons`, `embedder`, `crop "
        "{embed_kernel, embed_threshold, embed_side, display_kernel, display_threshold, "
        "thumbnail_px, heatmap}` (heatmap: the setting, `auto` resolved in `CropMethod`; heatmap and "
        "embed_side absent in older stores), `ks`, `attribution`, `umap {n_neighbors, min_dist, "
        "random_state}`, `seed` (of every k-means), `preset`"
    )
    versions: dict[str, str] = doc("library versions of the writer (python, torch, ..., store_schema)")
    created_at: float = doc("Unix time the store was created")

    def to_store(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "run_id": self.run_id,
            "identity": self.identity,
            "config": self.config,
            "versions": self.versions,
            "created_at": self.created_at,
        }

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> RunMeta:
        return cls(
            value["schema_version"],
            value["run_id"],
            value.get("identity", {}),
            value["config"],
            value.get("versions", {}),
            value["created_at"],
        )

    @property
    def model(self) -> ModelSettings:
        """The analysed model's spec."""
        model = self.config.get("model") or {}
        return ModelSettings(str(model.get("name", "?")), model.get("weights"), model.get("checkpoint"))

    @property
    def layer(self) -> str:
        return str(self.config.get("layer"))

    @property
    def lower_layer(self) -> str:
        return str(self.config.get("lower_layer"))

    @property
    def neurons(self) -> list[int]:
        """The analysed channels (all of the layer's when the config named none)."""
        return [int(n) for n in self.config.get("neurons") or []]

    @property
    def n_ref(self) -> int | None:
        return self.config.get("n_ref")

    @property
    def dataset(self) -> DatasetSettings:
        """Where the references come from."""
        dataset = self.config.get("dataset") or {}
        return DatasetSettings(
            str(dataset.get("kind", "?")), dataset.get("path"), dataset.get("n_images"), dataset.get("seed")
        )

    @property
    def embedder(self) -> str:
        return str(self.config.get("embedder", "?"))

    @property
    def ks(self) -> list[int]:
        return [int(k) for k in self.config.get("ks") or []]

    @property
    def seed(self) -> int:
        """The random state of every k-means of the run (0 for stores that did not record one)."""
        return int(self.config.get("seed", 0))

    @property
    def model_fingerprint(self) -> str | None:
        """sha256 of the model's state dict as precompute saw it (`pure_core.models.model_fingerprint`)."""
        return (self.identity.get("fingerprints") or {}).get("model")


@dataclass(frozen=True, eq=False)
class StageStatus(Record):
    """A finished stage (`store.STAGES`); absent while the stage has not finished."""

    KEY: ClassVar[str] = "stage"
    INDEX: ClassVar[str] = "stage"

    done: bool = doc("always true once written")
    seconds: float = doc("wall time the stage took in the process that finished it")
    finished_at: float = doc("Unix time")

    def to_store(self) -> dict[str, Any]:
        return {
            "done": bool(self.done),
            "seconds": float(self.seconds),
            "finished_at": float(self.finished_at),
        }

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> StageStatus:
        return cls(
            bool(value.get("done")), float(value.get("seconds", 0.0)), float(value.get("finished_at", 0))
        )


# -- stage 1: references ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class References(Record):
    """The top-n_ref reference images of every analysed neuron (rows in the order of ``neurons``)."""

    KEY: ClassVar[str] = "references"

    neurons: np.ndarray = doc("`(N,)` int64 channel ids of layer L")
    indices: np.ndarray = doc(
        "`(N, n_ref)` int64 dataset indices by descending activation; -1 where a neuron has fewer references"
    )
    max_activations: np.ndarray = doc("`(N, n_ref)` float32 max-pooled activation of each reference")
    positions: np.ndarray = doc("`(N, n_ref, 2)` int64 argmax (h, w) in layer L's map")

    def __post_init__(self) -> None:
        for name, dtype in (
            ("neurons", np.int64),
            ("indices", np.int64),
            ("max_activations", np.float32),
            ("positions", np.int64),
        ):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype))

    def to_store(self) -> dict[str, np.ndarray]:
        return {
            "neurons": self.neurons,
            "indices": self.indices,
            "max_activations": self.max_activations,
            "positions": self.positions,
        }

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> References:
        return cls(value["neurons"], value["indices"], value["max_activations"], value["positions"])

    @property
    def neuron_ids(self) -> list[int]:
        return [int(n) for n in self.neurons]

    @property
    def n_ref(self) -> int:
        return int(self.indices.shape[1])

    def row(self, neuron: int) -> int | None:
        """The row of ``neuron`` in the arrays, None when the run does not analyse it."""
        rows = np.flatnonzero(self.neurons == int(neuron))
        return int(rows[0]) if len(rows) else None

    def weakest_activations(self) -> dict[int, float]:
        """Each neuron's lowest reference activation (what an image must reach to be one of its references);
        neurons without references are left out."""
        valid = self.indices >= 0
        return {int(n): float(self.max_activations[row][valid[row]].min())
                for row, n in enumerate(self.neurons) if valid[row].any()}


@dataclass(frozen=True, eq=False)
class ScanReport(Record):
    """What the dataset scan read: how many images, how many were unreadable and skipped."""

    KEY: ClassVar[str] = "scan"

    n_images: int = doc("images in the dataset")
    n_valid: int = doc("images read")
    n_skipped: int = doc("unreadable images skipped")
    skipped_examples: tuple[str, ...] = doc("messages of the first (at most 20) skipped images")

    def to_store(self) -> dict[str, Any]:
        return {
            "n_images": int(self.n_images),
            "n_valid": int(self.n_valid),
            "n_skipped": int(self.n_skipped),
            "skipped_examples": list(self.skipped_examples),
        }

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> ScanReport:
        return cls(
            value["n_images"], value["n_valid"], value["n_skipped"], tuple(value.get("skipped_examples", ()))
        )


@dataclass(frozen=True, eq=False)
class ReferenceImage(Record):
    """A reference image at model-input resolution (resized and centre-cropped)."""

    KEY: ClassVar[str] = "image"
    INDEX: ClassVar[str] = "dataset index"

    data: bytes = doc("WEBP bytes (lossless up to `store.codecs.LOSSLESS_MAX_PIXELS`)")

    def to_store(self) -> bytes:
        return self.data

    @classmethod
    def from_store(cls, value: bytes) -> ReferenceImage:
        return cls(value)


@dataclass(frozen=True, eq=False)
class CropMethod(Record):
    """Which input heatmaps the crops were cut from (stage 3); absent in stores written before it was
    recorded, whose crops all used gradient x input."""

    KEY: ClassVar[str] = "crop_method"

    heatmap: str = doc(
        '`"lrp"` (zennit EpsilonPlusFlat with the model\'s canonizer) or `"gradient_x_input"`: '
        "`config.crop.heatmap` resolved for the model (`pure_core.heatmaps.resolve_heatmap_method`)"
    )

    def to_store(self) -> dict[str, str]:
        return {"heatmap": str(self.heatmap)}

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> CropMethod:
        return cls(str(value["heatmap"]))

    @classmethod
    def unrecorded(cls) -> CropMethod:
        """The method of a store written before the record existed: gradient x input."""
        return cls("gradient_x_input")


# -- per neuron: arrays and images of its references -----------------------------------------------------
@dataclass(frozen=True, eq=False)
class ReferenceArray(Record):
    """Base of the per-neuron arrays with one row per reference (stored as the bare array)."""

    INDEX: ClassVar[str] = "neuron"
    DTYPE: ClassVar[Any] = np.float16

    values: np.ndarray = doc("one row per reference, in reference order")

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", np.asarray(self.values, dtype=self.DTYPE))

    def to_store(self) -> np.ndarray:
        return self.values

    @classmethod
    def from_store(cls, value: np.ndarray) -> Self:
        return cls(value)


class PureVectors(ReferenceArray):
    """`(n_ref, C_lower)` float16: PURE attributions of the references to the lower layer (L1-normed)."""

    KEY: ClassVar[str] = "pure"


class ActivationVectors(ReferenceArray):
    """`(n_ref, C_L)` float16: the baseline vectors, clamped layer-L activation averaged over space."""

    KEY: ClassVar[str] = "activation"


class Embeddings(ReferenceArray):
    """`(n_ref, D)` float16: the embedder's vectors of the crops."""

    KEY: ClassVar[str] = "embeddings"


class ReferenceDatasetLabels(ReferenceArray):
    """`(n_ref,)` int32: each reference's dataset label (`DatasetLabelNames`; -1 for an image without one)."""

    KEY: ClassVar[str] = "data_labels"
    DTYPE: ClassVar[Any] = np.int32


class CropBoxes(ReferenceArray):
    """`(n_ref, 4)` int32: crop boxes (top, left, bottom, right) in model-input pixels."""

    KEY: ClassVar[str] = "boxes"
    DTYPE: ClassVar[Any] = np.int32


@dataclass(frozen=True, eq=False)
class ReferenceImages(Record):
    """Base of the per-neuron image lists, one image per reference (stored as a list of bytes)."""

    INDEX: ClassVar[str] = "neuron"

    images: tuple[bytes, ...] = doc("encoded images, in reference order")

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))

    def to_store(self) -> list[bytes]:
        return list(self.images)

    @classmethod
    def from_store(cls, value: Iterable[bytes]) -> Self:
        return cls(tuple(value))


class Crops(ReferenceImages):
    """WEBP crops for the embedder (square boxes around the input heatmap, not resized)."""

    KEY: ClassVar[str] = "crops"


class Thumbnails(ReferenceImages):
    """WEBP display crops with the mask overlay (`pure_core.crops.crop_for_display`)."""

    KEY: ClassVar[str] = "thumbnails"


@dataclass(frozen=True, eq=False)
class LabelNames(Record):
    """Base of the run-wide label vocabularies (stored as a list of names; a label is an index into it)."""

    names: tuple[str, ...] = doc("label names; label i is ``names[i]``")

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))

    def to_store(self) -> list[str]:
        return list(self.names)

    @classmethod
    def from_store(cls, value: Iterable[str]) -> Self:
        return cls(tuple(value))


class ClassNames(LabelNames):
    """The analysed model's class names, in the order of its outputs: the vocabulary of
    `ReferencePredictions` (stage 2; models with categories only)."""

    KEY: ClassVar[str] = "class_names"


class DatasetLabelNames(LabelNames):
    """The dataset's own labels of the references, sorted (class folders of an ImageFolder tree, the
    synthetic world's planted concepts, the photograph a crop comes from): the vocabulary of
    `ReferenceDatasetLabels` (stage 5; datasets with labels only)."""

    KEY: ClassVar[str] = "data_label_names"


@dataclass(frozen=True, eq=False)
class ReferencePredictions(Record):
    """The analysed model's most probable classes for each reference (stage 2, from the same forward pass as
    the activation vectors; models with categories only)."""

    KEY: ClassVar[str] = "predictions"
    INDEX: ClassVar[str] = "neuron"

    classes: np.ndarray = doc("`(n_ref, m)` int32 class ids (`ClassNames`; `ClipLabelNames` for "
                              "`ReferenceClipLabels`), most probable first")
    probabilities: np.ndarray = doc("`(n_ref, m)` float16 softmax probabilities of those classes")

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", np.asarray(self.classes, dtype=np.int32))
        object.__setattr__(self, "probabilities", np.asarray(self.probabilities, dtype=np.float16))

    def to_store(self) -> dict[str, np.ndarray]:
        return {"classes": self.classes, "probabilities": self.probabilities}

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> ReferencePredictions:
        return cls(value["classes"], value["probabilities"])

    @property
    def labels(self) -> np.ndarray:
        """`(n_ref,)` each reference's label: its most probable class."""
        return self.classes[:, 0]


class ClipLabelNames(LabelNames):
    """The vocabulary of CLIP's zero-shot labels (`pure_core.vocabulary`), in the order `ReferenceClipLabels`
    indexes it (stage 6; runs with CLIP weights only)."""

    KEY: ClassVar[str] = "clip_label_names"


class ReferenceClipLabels(ReferencePredictions):
    """CLIP's zero-shot labels of each reference's crop: its most similar vocabulary names
    (`pure_core.clip_labels.zero_shot_labels`; stage 6, runs with CLIP weights only)."""

    KEY: ClassVar[str] = "clip_predictions"


@dataclass(frozen=True, eq=False)
class ClipLabelStatus(Record):
    """Whether stage 6 named the crops with CLIP: ``labelled``, ``skipped`` (the weights were not on the
    machine; a later run with them fills the labels in) or ``off`` (no CLIP model configured)."""

    KEY: ClassVar[str] = "clip_status"
    STATES: ClassVar[tuple[str, ...]] = ("labelled", "skipped", "off")

    state: str = doc("`ClipLabelStatus.STATES`")
    model: str | None = doc("the open_clip spec that named them (`pure_core.clip_labels.make_clip_probe`)")
    reason: str = doc("why the stage skipped (empty when labelled)", default="")
    templates: tuple[str, ...] = doc("the prompt templates of the text features", default=())

    def __post_init__(self) -> None:
        if self.state not in self.STATES:
            raise ValueError(f"state must be one of {self.STATES}, got {self.state!r}")
        object.__setattr__(self, "templates", tuple(self.templates))

    def to_store(self) -> dict[str, Any]:
        return {"state": self.state, "model": self.model, "reason": self.reason,
                "templates": list(self.templates)}

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> ClipLabelStatus:
        return cls(
            value["state"], value.get("model"), value.get("reason", ""), tuple(value.get("templates", ()))
        )


# -- per neuron: scores ----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class MethodScore(Record):
    """Eq. 5 of one clustering judged by the embeddings: mean distance within and across clusters."""

    rho_intra: float = doc("mean embedding distance of pairs in the same cluster")
    rho_inter: float = doc("mean embedding distance of pairs in different clusters")

    def to_store(self) -> dict[str, float]:
        return {"rho_intra": float(self.rho_intra), "rho_inter": float(self.rho_inter)}

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> MethodScore:
        return cls(value["rho_intra"], value["rho_inter"])


def _method_scores_from_store(value: Mapping[Any, Any]) -> dict[str, dict[int, MethodScore]]:
    return {
        str(method): {int(k): MethodScore.from_store(score) for k, score in by_k.items()}
        for method, by_k in value.items()
        if isinstance(by_k, Mapping)
    }


def _method_scores_to_store(methods: Mapping[str, Mapping[int, MethodScore]]) -> dict[str, Any]:
    return {
        method: {int(k): score.to_store() for k, score in by_k.items()} for method, by_k in methods.items()
    }


@dataclass(frozen=True, eq=False)
class Correlation(Record):
    """Sec. 4.2 for one neuron: Pearson r of a method's pairwise distances with the embeddings' (NaN for
    fewer than 3 references)."""

    pure: float = doc("PURE vectors vs embeddings")
    activation: float = doc("activation vectors vs embeddings")

    def to_store(self) -> dict[str, float]:
        return {"pure": float(self.pure), "activation": float(self.activation)}

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> Correlation:
        return cls(value.get("pure", math.nan), value.get("activation", math.nan))


@dataclass(frozen=True, eq=False)
class Oracle(Record):
    """Ground truth of synthetic-world runs: the score an ideal embedder gives, and the planted concepts."""

    polysemanticity: float = doc("rho_inter - rho_intra of the ideal embedding's k=2 clusters")
    rho_intra: float = doc("as `NeuronScores.rho_intra`, ideal embedding")
    rho_inter: float = doc("as `NeuronScores.rho_inter`, ideal embedding")
    overall: float = doc("mean ideal-embedding distance over all pairs")
    labels: np.ndarray = doc("`(n_ref,)` int64 k=2 clusters of the ideal embedding")
    concepts: tuple[str, ...] = doc("planted concept of each reference")
    kind: str = doc('"polysemantic", "monosemantic", ... (`synthetic.world.polysemantic_kind`)')

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64))
        object.__setattr__(self, "concepts", tuple(self.concepts))

    def to_store(self) -> dict[str, Any]:
        return {
            "polysemanticity": float(self.polysemanticity),
            "rho_intra": float(self.rho_intra),
            "rho_inter": float(self.rho_inter),
            "overall": float(self.overall),
            "labels": self.labels,
            "concepts": list(self.concepts),
            "kind": self.kind,
        }

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> Oracle:
        return cls(
            value["polysemanticity"],
            value["rho_intra"],
            value["rho_inter"],
            value["overall"],
            value["labels"],
            tuple(value["concepts"]),
            value["kind"],
        )


@dataclass(frozen=True, eq=False)
class NeuronScores(Record):
    """One neuron's scores (stage 5): polysemanticity (Eq. 5 on k=2 embedding clusters), every method's
    clustering quality per k, distance correlations, PURE's virtual neurons (centroids) per k."""

    KEY: ClassVar[str] = "scores"
    INDEX: ClassVar[str] = "neuron"

    polysemanticity: float = doc("rho_inter - rho_intra (the ranking score)")
    rho_intra: float = doc("mean embedding distance within the k=2 embedding clusters")
    rho_inter: float = doc("mean embedding distance across them")
    overall: float = doc("mean embedding distance over all pairs (Fig. A.2's x axis)")
    embedding_labels: np.ndarray = doc("`(n_ref,)` int64 k=2 embedding cluster of each reference")
    methods: dict[str, dict[int, MethodScore]] = doc(
        "`{method: {k: MethodScore}}` for methods pure, activation, embedding and each k of the run up to "
        "n_ref; stored as `{method: {k: {rho_intra, rho_inter}}}` with int k"
    )
    correlation: Correlation = doc("stored as `{pure: r, activation: r}`")
    centroids: dict[int, np.ndarray] = doc(
        "`{k: (k, C_lower) float32}` PURE virtual neurons, k-means with "
        "the run's seed (cluster order as k-means left it)"
    )
    oracle: Oracle | None = doc("synthetic-world runs only (stored key absent elsewhere)", default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "embedding_labels", np.asarray(self.embedding_labels, dtype=np.int64))
        object.__setattr__(
            self, "centroids", {int(k): np.asarray(c, dtype=np.float32) for k, c in self.centroids.items()}
        )

    def to_store(self) -> dict[str, Any]:
        value = {
            "polysemanticity": float(self.polysemanticity),
            "rho_intra": float(self.rho_intra),
            "rho_inter": float(self.rho_inter),
            "overall": float(self.overall),
            "embedding_labels": self.embedding_labels,
            "methods": _method_scores_to_store(self.methods),
            "correlation": self.correlation.to_store(),
            "centroids": dict(self.centroids),
        }
        if self.oracle is not None:
            value["oracle"] = self.oracle.to_store()
        return value

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> NeuronScores:
        oracle = value.get("oracle")
        return cls(
            value["polysemanticity"],
            value["rho_intra"],
            value["rho_inter"],
            value["overall"],
            value["embedding_labels"],
            _method_scores_from_store(value.get("methods", {})),
            Correlation.from_store(value.get("correlation", {})),
            dict(value.get("centroids", {})),
            None if oracle is None else Oracle.from_store(oracle),
        )

    def method_score(self, method: str, k: int) -> MethodScore | None:
        """The stored score of ``method``'s clustering with ``k`` clusters, if precompute computed it."""
        return self.methods.get(method, {}).get(int(k))


@dataclass(frozen=True, eq=False)
class KChoice(Record):
    """How many virtual neurons (stage 5, `pure_core.k_choice`): per k of the run, the silhouette of PURE's
    split, its stability over k-means seeds and its embedding score, and the suggested k. Absent in stores
    written before it existed (the app then computes it)."""

    KEY: ClassVar[str] = "k_choice"
    INDEX: ClassVar[str] = "neuron"

    ks: tuple[int, ...] = doc("the run's ks, in order")
    silhouette: np.ndarray = doc("`(len(ks),)` float32 mean silhouette of the split (NaN: k >= n_ref)")
    stability: np.ndarray = doc("`(len(ks),)` float32 mean ARI between k-means seeds (NaN: k >= n_ref)")
    score: np.ndarray = doc("`(len(ks),)` float32 rho_inter - rho_intra of the split under the embeddings")
    suggested_k: int = doc("the stable k with the best silhouette; 1 when no k is stable")

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))
        for name in ("silhouette", "stability", "score"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float32))

    def to_store(self) -> dict[str, Any]:
        return {
            "ks": list(self.ks),
            "silhouette": self.silhouette,
            "stability": self.stability,
            "score": self.score,
            "suggested_k": int(self.suggested_k),
        }

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> KChoice:
        return cls(tuple(value["ks"]), value["silhouette"], value["stability"], value["score"],
                   int(value["suggested_k"]))


@dataclass(frozen=True, eq=False)
class CircuitDepth(Record):
    """Where a neuron's circuit splits (stage 8, `pure_core.depth`): PURE's k-split with the circuits taken
    at the run's lower layer and at each of its depth layers. Absent without depth layers."""

    KEY: ClassVar[str] = "depth"
    INDEX: ClassVar[str] = "neuron"

    layers: tuple[str, ...] = doc("the run's lower layer, then `config.depth_layers` in order")
    k: int = doc("virtual neurons of the split (2)")
    rho_gap: np.ndarray = doc("`(len(layers),)` float32 rho_inter - rho_intra of the split, embeddings")
    silhouette: np.ndarray = doc("`(len(layers),)` float32 silhouette of the circuits' split")
    ari: np.ndarray = doc("`(len(layers),)` float32 ARI against the planted concepts (NaN: no ground truth)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(str(name) for name in self.layers))
        for name in ("rho_gap", "silhouette", "ari"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float32))

    def to_store(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "k": int(self.k), "rho_gap": self.rho_gap,
                "silhouette": self.silhouette, "ari": self.ari}

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> CircuitDepth:
        return cls(tuple(value["layers"]), int(value["k"]), value["rho_gap"], value["silhouette"],
                   value["ari"])


@dataclass(frozen=True, eq=False)
class UmapCoordinates(Record):
    """2-D UMAP of a neuron's reference vectors (n_neighbors 6, min_dist 0.3 as in the paper's plots)."""

    KEY: ClassVar[str] = "umap"
    INDEX: ClassVar[str] = "neuron"

    pure: np.ndarray = doc("`(n_ref, 2)` float32 of the PURE vectors")
    activation: np.ndarray = doc("`(n_ref, 2)` float32 of the activation vectors")

    def __post_init__(self) -> None:
        object.__setattr__(self, "pure", np.asarray(self.pure, dtype=np.float32))
        object.__setattr__(self, "activation", np.asarray(self.activation, dtype=np.float32))

    def to_store(self) -> dict[str, np.ndarray]:
        return {"pure": self.pure, "activation": self.activation}

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> UmapCoordinates:
        return cls(value["pure"], value["activation"])

    def of(self, method: str) -> np.ndarray:
        """The coordinates of ``method`` ("pure" or "activation")."""
        return {"pure": self.pure, "activation": self.activation}[method]


@dataclass(frozen=True, eq=False)
class VirtualNeuronLabel(Record):
    """One label of a virtual neuron (`pure_core.labels.label_shares`)."""

    label: int = doc("class id (`ClassNames`)")
    count: int = doc("the virtual neuron's references whose label it is")
    share: float = doc("count / the virtual neuron's labelled references")
    enrichment: float = doc("share / the label's share among all the neuron's references")

    def to_store(self) -> dict[str, Any]:
        return {
            "label": int(self.label),
            "count": int(self.count),
            "share": float(self.share),
            "enrichment": float(self.enrichment),
        }

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> VirtualNeuronLabel:
        return cls(value["label"], value["count"], value["share"], value["enrichment"])


@dataclass(frozen=True, eq=False)
class LabelsByK(Record):
    """Base of the virtual neurons' labels for every k of the run (stage 5): per virtual neuron, the labels
    over-represented among its references, most frequent first (`pure_core.labels.label_shares`)."""

    INDEX: ClassVar[str] = "neuron"

    by_k: dict[int, tuple[tuple[VirtualNeuronLabel, ...], ...]] = doc(
        "`{k: per virtual neuron its labels}`, the virtual neurons numbered by size, largest first (as "
        "`VirtualNeurons.numbered_by_size` and the app number them); stored as "
        "`{k: [[VirtualNeuronLabel dict, ...], ...]}` with int k"
    )

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "by_k", {int(k): tuple(tuple(v) for v in groups) for k, groups in self.by_k.items()}
        )

    def to_store(self) -> dict[int, list[list[dict[str, Any]]]]:
        return {
            k: [[label.to_store() for label in group] for group in groups] for k, groups in self.by_k.items()
        }

    @classmethod
    def from_store(cls, value: Mapping[Any, Any]) -> Self:
        return cls(
            {
                int(k): tuple(tuple(VirtualNeuronLabel.from_store(v) for v in group) for group in groups)
                for k, groups in value.items()
            }
        )

    def first_labels(self, k: int) -> tuple[int, ...] | None:
        """The first label of each virtual neuron for ``k`` (-1 where one has none); None without that k
        (the ranking's labels at k = 2)."""
        if int(k) not in self.by_k:
            return None
        return tuple(group[0].label if group else -1 for group in self.by_k[int(k)])


class VirtualNeuronLabels(LabelsByK):
    """The virtual neurons' labels from the model's predicted classes (`ReferencePredictions`)."""

    KEY: ClassVar[str] = "vn_labels"


class VirtualNeuronDataLabels(LabelsByK):
    """The virtual neurons' labels from the dataset's labels (`ReferenceDatasetLabels`)."""

    KEY: ClassVar[str] = "vn_data_labels"


class VirtualNeuronClipLabels(LabelsByK):
    """The virtual neurons' labels from CLIP's zero-shot labels of their crops (`ReferenceClipLabels`;
    stage 6)."""

    KEY: ClassVar[str] = "vn_clip_labels"


@dataclass(frozen=True, eq=False)
class VirtualNeuronClipCentroids(Record):
    """Per k, each virtual neuron's direction in CLIP's joint space: the unit-length mean of its crops'
    image features (`pure_core.clip_labels.centroids`; stage 6), what free text is matched against."""

    KEY: ClassVar[str] = "vn_clip_centroids"
    INDEX: ClassVar[str] = "neuron"

    by_k: dict[int, np.ndarray] = doc("`{k: (k, D) float16}`, virtual neurons numbered by size")

    def __post_init__(self) -> None:
        by_k = {int(k): np.asarray(v, dtype=np.float16) for k, v in self.by_k.items()}
        object.__setattr__(self, "by_k", by_k)

    def to_store(self) -> dict[int, np.ndarray]:
        return dict(self.by_k)

    @classmethod
    def from_store(cls, value: Mapping[Any, Any]) -> VirtualNeuronClipCentroids:
        return cls(dict(value))


@dataclass(frozen=True, eq=False)
class ClipCentroidIndex(Record):
    """Every virtual neuron's CLIP direction of the run in one table (stage 6), so that a free-text search
    over all neurons and every k is one matrix product: row i is virtual neuron ``virtual_neuron[i]``
    (0-based, numbered by size) of ``neuron[i]`` at ``k[i]``."""

    KEY: ClassVar[str] = "clip_centroid_index"

    neuron: np.ndarray = doc("`(R,)` int32 channel id")
    k: np.ndarray = doc("`(R,)` int16 number of virtual neurons")
    virtual_neuron: np.ndarray = doc("`(R,)` int16 virtual neuron, 0-based, largest first")
    vectors: np.ndarray = doc("`(R, D)` float16 unit-length directions (`VirtualNeuronClipCentroids`)")

    def __post_init__(self) -> None:
        for name, dtype in (("neuron", np.int32), ("k", np.int16), ("virtual_neuron", np.int16)):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype).reshape(-1))
        vectors = np.asarray(self.vectors, dtype=np.float16)
        object.__setattr__(self, "vectors", vectors.reshape(len(self.neuron), -1) if vectors.size else
                           np.zeros((len(self.neuron), 0), np.float16))

    def to_store(self) -> dict[str, np.ndarray]:
        return {"neuron": self.neuron, "k": self.k, "virtual_neuron": self.virtual_neuron,
                "vectors": self.vectors}

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> ClipCentroidIndex:
        return cls(value["neuron"], value["k"], value["virtual_neuron"], value["vectors"])

    @classmethod
    def of(cls, by_neuron: Mapping[int, VirtualNeuronClipCentroids]) -> ClipCentroidIndex:
        """The index of ``{neuron: its centroids}``, neurons and k in the mapping's order."""
        rows = [(neuron, k, vn, vector) for neuron, record in by_neuron.items()
                for k, vectors in record.by_k.items() for vn, vector in enumerate(vectors)]
        if not rows:
            return cls((), (), (), ())
        neuron, k, vn, vectors = zip(*rows, strict=True)
        return cls(neuron, k, vn, np.stack(vectors))


@dataclass(frozen=True, eq=False)
class LabelIndex(Record):
    """Every virtual neuron's labels of the run in one table (stage 5), so that a search over all neurons
    and every k reads one value: row i says that virtual neuron ``virtual_neuron[i]`` (0-based, numbered by
    size) of ``neuron[i]`` at ``k[i]`` carries label ``label[i]`` of ``source[i]``."""

    KEY: ClassVar[str] = "label_index"
    SOURCES: ClassVar[tuple[str, ...]] = (
        "data",
        "predicted",
        "clip",
    )  # `VirtualNeuronDataLabels`, `VirtualNeuronLabels`, `VirtualNeuronClipLabels`

    source: np.ndarray = doc(
        "`(R,)` int8 index into `LabelIndex.SOURCES`: 0 dataset labels, 1 predicted, 2 CLIP"
    )
    label: np.ndarray = doc("`(R,)` int32 label (`DatasetLabelNames` / `ClassNames` / `ClipLabelNames`)")
    neuron: np.ndarray = doc("`(R,)` int32 channel id")
    k: np.ndarray = doc("`(R,)` int16 number of virtual neurons")
    virtual_neuron: np.ndarray = doc("`(R,)` int16 virtual neuron, 0-based, largest first")
    count: np.ndarray = doc("`(R,)` int32 `VirtualNeuronLabel.count`")
    share: np.ndarray = doc("`(R,)` float32 `VirtualNeuronLabel.share`")
    enrichment: np.ndarray = doc("`(R,)` float32 `VirtualNeuronLabel.enrichment`")

    DTYPES: ClassVar[dict[str, Any]] = {
        "source": np.int8,
        "label": np.int32,
        "neuron": np.int32,
        "k": np.int16,
        "virtual_neuron": np.int16,
        "count": np.int32,
        "share": np.float32,
        "enrichment": np.float32,
    }

    def __post_init__(self) -> None:
        for name, dtype in self.DTYPES.items():
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype).reshape(-1))

    def to_store(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.DTYPES}

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> LabelIndex:
        return cls(**{name: value[name] for name in cls.DTYPES})

    @classmethod
    def of(cls, labels_by_neuron: Mapping[int, Mapping[str, LabelsByK]]) -> LabelIndex:
        """The index of ``{neuron: {source: labels record}}`` (sources as in `SOURCES`)."""
        rows = [
            (
                cls.SOURCES.index(source),
                label.label,
                neuron,
                k,
                vn,
                label.count,
                label.share,
                label.enrichment,
            )
            for neuron, by_source in labels_by_neuron.items()
            for source, record in by_source.items()
            for k, groups in record.by_k.items()
            for vn, group in enumerate(groups)
            for label in group
        ]
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(cls.DTYPES)
        return cls(*columns)


# -- run-wide results ------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SummaryRow(Record):
    """One neuron's row of the ranking table."""

    neuron: int = doc("channel id")
    polysemanticity: float = doc("`NeuronScores.polysemanticity`")
    rho_intra: float = doc("`NeuronScores.rho_intra`")
    rho_inter: float = doc("`NeuronScores.rho_inter`")
    overall: float = doc("`NeuronScores.overall`")
    top_activation: float = doc("max activation of the top reference")
    n_ref: int = doc("reference slots per neuron (`References.n_ref`)")
    oracle_polysemanticity: float | None = doc("`Oracle.polysemanticity` (world runs only)", default=None)
    oracle_kind: str | None = doc("`Oracle.kind` (world runs only)", default=None)
    labels: tuple[int, ...] | None = doc(
        "the first label of each virtual neuron at k = 2 (`VirtualNeuronLabels`; -1 for none), runs with "
        "predictions only",
        default=None,
    )
    data_labels: tuple[int, ...] | None = doc(
        "the same from the dataset's labels (`VirtualNeuronDataLabels`), datasets with labels only",
        default=None,
    )
    clip_labels: tuple[int, ...] | None = doc(
        "the same from CLIP's labels (`VirtualNeuronClipLabels`), runs with CLIP weights only", default=None
    )
    suggested_k: int | None = doc("`KChoice.suggested_k` (absent in older stores)", default=None)

    def to_store(self) -> dict[str, Any]:
        value = {
            "neuron": int(self.neuron),
            "polysemanticity": float(self.polysemanticity),
            "rho_intra": float(self.rho_intra),
            "rho_inter": float(self.rho_inter),
            "overall": float(self.overall),
            "top_activation": float(self.top_activation),
            "n_ref": int(self.n_ref),
        }
        if self.oracle_polysemanticity is not None:
            value["oracle_polysemanticity"] = float(self.oracle_polysemanticity)
        if self.oracle_kind is not None:
            value["oracle_kind"] = self.oracle_kind
        if self.labels is not None:
            value["labels"] = [int(label) for label in self.labels]
        if self.data_labels is not None:
            value["data_labels"] = [int(label) for label in self.data_labels]
        if self.clip_labels is not None:
            value["clip_labels"] = [int(label) for label in self.clip_labels]
        if self.suggested_k is not None:
            value["suggested_k"] = int(self.suggested_k)
        return value

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> SummaryRow:
        return cls(
            value["neuron"],
            value["polysemanticity"],
            value["rho_intra"],
            value["rho_inter"],
            value["overall"],
            value["top_activation"],
            value["n_ref"],
            value.get("oracle_polysemanticity"),
            value.get("oracle_kind"),
            None if value.get("labels") is None else tuple(int(v) for v in value["labels"]),
            None if value.get("data_labels") is None else tuple(int(v) for v in value["data_labels"]),
            None if value.get("clip_labels") is None else tuple(int(v) for v in value["clip_labels"]),
            value.get("suggested_k"),
        )


@dataclass(frozen=True, eq=False)
class Summary(Record):
    """The ranking table: one row per neuron, in the order of `References.neurons`."""

    KEY: ClassVar[str] = "summary"

    rows: tuple[SummaryRow, ...] = doc("stored as a list of `SummaryRow` dicts")

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(self.rows))

    def to_store(self) -> list[dict[str, Any]]:
        return [row.to_store() for row in self.rows]

    @classmethod
    def from_store(cls, value: Iterable[Mapping[str, Any]]) -> Summary:
        return cls(tuple(SummaryRow.from_store(row) for row in value))


@dataclass(frozen=True, eq=False)
class MethodComparison(Record):
    """Fig. 4: each method's clustering quality per k, averaged over the neurons that have that k."""

    KEY: ClassVar[str] = "method_comparison"

    methods: dict[str, dict[int, MethodScore]] = doc("`{method: {k: MethodScore}}` means over neurons")
    unclustered: float = doc(
        'mean `NeuronScores.overall`; stored as the key "unclustered" beside the methods'
    )

    def to_store(self) -> dict[str, Any]:
        return {**_method_scores_to_store(self.methods), "unclustered": float(self.unclustered)}

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> MethodComparison:
        methods = {m: v for m, v in value.items() if m != "unclustered"}
        return cls(_method_scores_from_store(methods), value.get("unclustered", math.nan))


@dataclass(frozen=True, eq=False)
class PooledCorrelation(Record):
    """Sec. 4.2 over all neurons: Pearson r of pooled pairwise distances, with its SEM over neuron subsets."""

    r: float = doc("Pearson r")
    sem: float = doc("standard error over 30 random neuron subsets")

    def to_store(self) -> dict[str, float]:
        return {"r": float(self.r), "sem": float(self.sem)}

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> PooledCorrelation:
        return cls(value["r"], value.get("sem", math.nan))


@dataclass(frozen=True, eq=False)
class DistanceCorrelation(Record):
    """Sec. 4.2: how well each method's distances follow the embedder's (empty for runs too small)."""

    KEY: ClassVar[str] = "distance_correlation"

    methods: dict[str, PooledCorrelation] = doc("`{method: PooledCorrelation}` for pure and activation")

    def to_store(self) -> dict[str, Any]:
        return {method: value.to_store() for method, value in self.methods.items()}

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> DistanceCorrelation:
        return cls({str(m): PooledCorrelation.from_store(v) for m, v in value.items()})


# -- stage 7: reference quantiles -------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class QuantileBands(Record):
    """Stage 7's run-wide record: the probe set and activation bands the reference quantiles
    (`QuantileSamples`) were drawn from, or ``off`` (``quantiles.probe_images: 0``; no samples stored)."""

    KEY: ClassVar[str] = "quantile_bands"
    STATES: ClassVar[tuple[str, ...]] = ("sampled", "off")

    state: str = doc("`QuantileBands.STATES`")
    bands: tuple[tuple[float, float], ...] = doc(
        "percentile ranges `(lo, hi)` of a neuron's activation over the probe set, as configured; "
        "`QuantileSamples.bands` indexes them (`pure_core.quantiles.activation_bands`)"
    )
    per_band: int = doc("samples asked per band and neuron")
    probe_images: int = doc("probe images asked (`quantiles.probe_images`)")
    n_probe: int = doc("probe images read")
    n_skipped: int = doc("probe images skipped as unreadable")
    seed: int = doc("the probe set is `pure_core.quantiles.probe_indices(n_images, probe_images, seed)`")

    def __post_init__(self) -> None:
        if self.state not in self.STATES:
            raise ValueError(f"state must be one of {self.STATES}, got {self.state!r}")
        object.__setattr__(self, "bands", tuple((float(lo), float(hi)) for lo, hi in self.bands))

    def to_store(self) -> dict[str, Any]:
        return {"state": self.state, "bands": [[lo, hi] for lo, hi in self.bands],
                "per_band": int(self.per_band), "probe_images": int(self.probe_images),
                "n_probe": int(self.n_probe), "n_skipped": int(self.n_skipped), "seed": int(self.seed)}

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> QuantileBands:
        return cls(value["state"], tuple(tuple(band) for band in value.get("bands", ())),
                   value.get("per_band", 0), value.get("probe_images", 0), value.get("n_probe", 0),
                   value.get("n_skipped", 0), value.get("seed", 0))

    @classmethod
    def off(cls, seed: int = 0) -> QuantileBands:
        """The record of a run with the stage turned off."""
        return cls("off", (), 0, 0, 0, 0, seed)

    def band_name(self, band: int) -> str:
        """``"95–99th percentile"`` (``"top 1 %"`` for a band that reaches 100)."""
        lo, hi = self.bands[band]
        return f"top {100 - lo:g} %" if hi >= 100 else f"{lo:g}–{hi:g}th percentile"


@dataclass(frozen=True, eq=False)
class QuantileSamples(Record):
    """Reference quantiles of one neuron (stage 7): probe images from each activation band below the top (none
    of them one of its references, each one it fires on), ordered by band, then by descending activation, with
    their circuits."""

    KEY: ClassVar[str] = "quantiles"
    INDEX: ClassVar[str] = "neuron"

    indices: np.ndarray = doc("`(M,)` int64 dataset indices (`ReferenceImage` stored for each)")
    max_activations: np.ndarray = doc("`(M,)` float32 max-pooled activation of the neuron on each")
    bands: np.ndarray = doc("`(M,)` int8 band of each, an index into `QuantileBands.bands`")
    pure: np.ndarray = doc("`(M, C_lower)` float16 PURE attributions (L1-normed, as `PureVectors`)")
    band_edges: np.ndarray = doc(
        "`(B, 2)` float32 lowest and highest activation of the probe images in each band (NaN when empty)"
    )

    def __post_init__(self) -> None:
        for name, dtype in (("indices", np.int64), ("max_activations", np.float32), ("bands", np.int8)):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype).reshape(-1))
        pure = np.asarray(self.pure, dtype=np.float16)
        if pure.ndim != 2:
            pure = pure.reshape(len(self.indices), -1 if pure.size else 0)
        object.__setattr__(self, "pure", pure)
        edges = np.asarray(self.band_edges, dtype=np.float32)
        object.__setattr__(self, "band_edges", edges.reshape(-1, 2))

    def to_store(self) -> dict[str, np.ndarray]:
        return {"indices": self.indices, "max_activations": self.max_activations, "bands": self.bands,
                "pure": self.pure, "band_edges": self.band_edges}

    @classmethod
    def from_store(cls, value: Mapping[str, Any]) -> QuantileSamples:
        return cls(value["indices"], value["max_activations"], value["bands"], value["pure"],
                   value["band_edges"])

    @property
    def n_samples(self) -> int:
        return int(len(self.indices))


# -- the key table ---------------------------------------------------------------------------------------
STORED_RECORDS: tuple[type[Record], ...] = (
    RunMeta,
    StageStatus,
    References,
    ScanReport,
    ReferenceImage,
    PureVectors,
    ActivationVectors,
    ClassNames,
    ReferencePredictions,
    DatasetLabelNames,
    ReferenceDatasetLabels,
    CropMethod,
    CropBoxes,
    Crops,
    Thumbnails,
    Embeddings,
    NeuronScores,
    KChoice,
    CircuitDepth,
    UmapCoordinates,
    VirtualNeuronLabels,
    VirtualNeuronDataLabels,
    LabelIndex,
    Summary,
    MethodComparison,
    DistanceCorrelation,
    ClipLabelStatus,
    ClipLabelNames,
    ReferenceClipLabels,
    VirtualNeuronClipLabels,
    VirtualNeuronClipCentroids,
    ClipCentroidIndex,
    QuantileBands,
    QuantileSamples,
)
PART_RECORDS: tuple[type[Record], ...] = (
    MethodScore,
    Correlation,
    Oracle,
    VirtualNeuronLabel,
    SummaryRow,
    PooledCorrelation,
)
KEY_TABLE: dict[str, type[Record]] = {r.KEY: r for r in STORED_RECORDS}  # type: ignore[misc]
NEURON_RECORDS: dict[str, type[Record]] = {r.KEY: r for r in STORED_RECORDS if r.INDEX == "neuron"}  # type: ignore[misc]
NEURON_KINDS = tuple(NEURON_RECORDS)


# -- documentation ---------------------------------------------------------------------------------------
STORE_HEADING = "## store (written by precompute, read by app)"
DOC_WIDTH = 110


def _key_pattern(record_type: type[Record]) -> str:
    suffix = "" if record_type.INDEX is None else f":<{record_type.INDEX}>"
    return f"`{record_type.KEY}{suffix}`"


def _summary_line(record_type: type[Record]) -> str:
    return " ".join((record_type.__doc__ or "").split("\n\n")[0].split())


def _wrapped(text: str, indent: str = "") -> list[str]:
    """``text`` wrapped at `DOC_WIDTH`; list items (``- ...``) continue under their text."""
    hanging = indent + ("  " if text.startswith("- ") else "")
    return textwrap.wrap(
        text,
        DOC_WIDTH,
        initial_indent=indent,
        subsequent_indent=hanging,
        break_on_hyphens=False,
        break_long_words=False,
    )


def render_markdown() -> str:
    """The store section of docs/contracts.md, from the records' docstrings and field documentation."""
    lines = [
        STORE_HEADING,
        "<!-- generated from store/schema.py by `python -m store --write docs/contracts.md`;",
        "     edit the schema, not this text -->",
    ]
    lines += _wrapped(
        f"Schema version {SCHEMA_VERSION}. `RunStore.create(dir, identity, config, versions)` (writer, "
        "resumes the same run, refuses another), `RunStore.open(dir)` (read-only), `list_runs(root)`. Each "
        "stored value has one record class in `store.schema`: `store.write(record, index=None)` stores "
        "`record.to_store()` under `key(type(record), index)`; `store.read(Record, index=None)` returns "
        "`Record.from_store(value)` or None. Float16 arrays come back as float16."
    )
    lines += ["", "| key | record | value |", "|---|---|---|"]
    lines += [f"| {_key_pattern(r)} | `{r.__name__}` | {_summary_line(r)} |" for r in STORED_RECORDS]
    lines.append("")
    lines += _wrapped(
        "Precompute's scratch keys (not records; deleted when their stage is done): "
        + ", ".join(f"`{k}`" for k in SCRATCH_KEYS)
        + "."
    )
    lines += ["", "Fields (`field: type`: meaning):"]
    for record_type in STORED_RECORDS + PART_RECORDS:
        if issubclass(record_type, ReferenceArray | ReferenceImages):
            continue  # bare arrays and image lists: their table row says everything
        lines += _wrapped(f"- `{record_type.__name__}`: {_summary_line(record_type)}")
        for f in fields(record_type):  # type: ignore[arg-type]
            lines += _wrapped(f"- `{f.name}: {f.type}`: {f.metadata['doc']}", indent="  ")
    return "\n".join(lines) + "\n"


def replace_store_section(text: str) -> str:
    """``text`` (docs/contracts.md) with its store section replaced by `render_markdown`'s."""
    pattern = re.compile(rf"^{re.escape(STORE_HEADING)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if not pattern.search(text):
        raise ValueError(f"no section {STORE_HEADING!r} in the text")
    return pattern.sub(lambda _: render_markdown(), text, count=1)
