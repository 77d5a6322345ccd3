"""Cached, read-only access to the run stores: which runs exist, and their stored records (`store.schema`).

The only app module that opens stores; it neither computes (see `app.analysis`) nor draws (it never imports
`app.figures`). Handles and per-neuron data live in `st.cache_resource` (shared between sessions, never
copied; arrays are flagged non-writeable); small derived data (run details, the ranking table) in
`st.cache_data`. Every cached function takes a `RunRef`, whose ``stages`` tuple is part of the key, so a
store that is still being written is re-read as stages finish.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import state
from store import STAGES, RunInfo, RunStore, StoreError, list_runs
from store.schema import (
    ActivationVectors,
    CircuitDepth,
    ClassNames,
    ClipCentroidIndex,
    ClipLabelNames,
    ClipLabelStatus,
    CropMethod,
    DatasetLabelNames,
    DistanceCorrelation,
    Embeddings,
    KChoice,
    LabelIndex,
    MethodComparison,
    NeuronScores,
    PureVectors,
    QuantileBands,
    QuantileSamples,
    ReferenceArray,
    ReferenceClipLabels,
    ReferenceDatasetLabels,
    ReferenceImage,
    ReferencePredictions,
    References,
    RunMeta,
    Summary,
    Thumbnails,
    UmapCoordinates,
)


# -- runs ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunRef:
    """A run as cache key: where it is, which run it holds, and which stages were done when it was read."""

    directory: str
    run_id: str
    stages: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return Path(self.directory).name

    @property
    def complete(self) -> bool:
        return set(self.stages) >= set(STAGES)


def runs_root() -> Path:
    """The configured runs directory (``-- --runs-dir DIR``, ``$PURE_RUNS_DIR`` or ``./runs``)."""
    return state.runs_root(sys.argv[1:])


@st.cache_data(ttl=3, show_spinner=False)
def available_runs(root: str) -> list[RunInfo]:
    """Every readable run under ``root``, newest first (re-listed every few seconds)."""
    return list_runs(root)


def run_ref(info: RunInfo) -> RunRef:
    return RunRef(str(info.directory), info.run_id, tuple(s for s, done in info.stages_done.items() if done))


@st.cache_resource(show_spinner=False, max_entries=16)
def _store(directory: str, run_id: str) -> RunStore:
    store = RunStore.open(directory)
    if store.run_id != run_id:  # the directory was recomputed with another config since it was listed
        raise StoreError(f"{directory} now holds run {store.run_id}, not {run_id}; reload the page")
    return store


def _open(run: RunRef) -> RunStore:
    return _store(run.directory, run.run_id)


@dataclass(frozen=True)
class RunDetails:
    """What the pages show about a run: its `RunMeta` (config, versions, seed), stage completion and
    timings, and its size."""

    meta: RunMeta
    stages_done: dict[str, bool]
    stage_seconds: dict[str, float]
    n_neurons: int
    n_ref: int | None


@st.cache_data(show_spinner=False, max_entries=32)
def run_details(run: RunRef) -> RunDetails:
    """The run's metadata, stage timings and sizes (small, for display and as analysis settings)."""
    store = _open(run)
    refs = references(run)
    return RunDetails(
        meta=store.read(RunMeta),
        stages_done=store.stages_done(),
        stage_seconds=store.stage_seconds(),
        n_neurons=0 if refs is None else len(refs.neurons),
        n_ref=None if refs is None else refs.n_ref,
    )


@st.cache_data(show_spinner=False, ttl=3, max_entries=64)
def lower_layer_run(root: str, run: RunRef) -> RunRef | None:
    """A complete run under ``root`` of the same model that analyses ``run``'s lower layer, if any."""
    meta = run_details(run).meta
    for info in available_runs(root):
        if (
            info.directory != Path(run.directory)
            and info.meta.model == meta.model
            and info.meta.layer == meta.lower_layer
            and info.complete
        ):
            return run_ref(info)
    return None


# -- run-wide records --------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=32)
def references(run: RunRef) -> References | None:
    """The run's references (shared, read-only); None before the scan is done."""
    return _shared(_open(run).read(References), "neurons", "indices", "max_activations", "positions")


def _shared(record: Any, *arrays: str) -> Any:
    """``record`` (None passes through) with its named arrays flagged read-only: it is shared by sessions."""
    if record is not None:
        for name in arrays:
            getattr(record, name).flags.writeable = False
    return record


@st.cache_data(show_spinner=False, max_entries=32)
def ranking(run: RunRef) -> pd.DataFrame:
    """The ranking table: one row per neuron, by rho_inter - rho_intra (descending), with ``rank`` 1..N.

    Columns: rank and the stored `SummaryRow` fields (neuron, polysemanticity, rho_intra, rho_inter,
    overall, top_activation, n_ref, oracle_polysemanticity / oracle_kind for synthetic-world runs, and the
    virtual neurons' labels at k = 2 as text: ``labels`` (the dataset's, else the model's predicted classes,
    else CLIP's), ``predicted`` (the model's) and ``clip`` (CLIP's), where the run has them). Empty when the
    scores stage has not run.
    """
    summary = _open(run).read(Summary)
    if summary is None or not summary.rows:
        return pd.DataFrame(
            columns=["rank", "neuron", "polysemanticity", "rho_intra", "rho_inter", "overall"]
        )
    table = pd.DataFrame([row.to_store() for row in summary.rows])
    # "labels": the virtual neurons' dataset labels at k = 2 where the data has labels, else the model's
    # predicted classes; "predicted": the predicted ones too (searched, not shown)
    for column, names in (("labels", class_names(run)), ("data_labels", data_label_names(run)),
                          ("clip_labels", clip_label_names(run))):
        if column in table and names:
            table[column] = [label_text(labels, names) for labels in table[column]]
        elif column in table:
            table = table.drop(columns=column)
    if "labels" in table:
        table["predicted"] = table["labels"]
    if "clip_labels" in table:
        table["clip"] = table.pop("clip_labels")
    for column in ("data_labels", "predicted", "clip"):  # the first source the run has names "labels"
        if column in table:
            table["labels"] = table.pop("data_labels") if column == "data_labels" else table[column]
            break
    table = table.sort_values(["polysemanticity", "neuron"], ascending=[False, True], kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)


def label_text(labels: Any, names: Sequence[str]) -> str | None:
    """``"pagoda | daisy"``: the stored first label of each virtual neuron, named ("–" for none)."""
    if not isinstance(labels, list | tuple):
        return None
    return " | ".join(names[label] if 0 <= label < len(names) else "–" for label in labels)


@st.cache_data(show_spinner=False, max_entries=32)
def class_names(run: RunRef) -> tuple[str, ...]:
    """The analysed model's class names (`ClassNames`); empty for models without categories."""
    record = _open(run).read(ClassNames)
    return () if record is None else record.names


@st.cache_data(show_spinner=False, max_entries=32)
def data_label_names(run: RunRef) -> tuple[str, ...]:
    """The dataset's label names (`DatasetLabelNames`); empty for data without labels."""
    record = _open(run).read(DatasetLabelNames)
    return () if record is None else record.names


@st.cache_data(show_spinner=False, max_entries=32)
def clip_label_names(run: RunRef) -> tuple[str, ...]:
    """The vocabulary of CLIP's labels (`ClipLabelNames`); empty for runs without them."""
    record = _open(run).read(ClipLabelNames)
    return () if record is None else record.names


@st.cache_data(show_spinner=False, max_entries=32)
def clip_status(run: RunRef) -> ClipLabelStatus | None:
    """Whether and with which model CLIP named the crops (`ClipLabelStatus`); None for older runs."""
    return _open(run).read(ClipLabelStatus)


@st.cache_resource(show_spinner=False, max_entries=32)
def clip_centroid_index(run: RunRef) -> ClipCentroidIndex | None:
    """Every virtual neuron's CLIP direction in one table (read once per run and server, read-only)."""
    return _shared(_open(run).read(ClipCentroidIndex), "neuron", "k", "virtual_neuron", "vectors")


@st.cache_resource(show_spinner=False, max_entries=32)
def label_index(run: RunRef) -> LabelIndex | None:
    """Every virtual neuron's labels in one table (`LabelIndex`; read once per run and server)."""
    return _open(run).read(LabelIndex)


def neuron_order(run: RunRef) -> list[int]:
    """Neurons in ranking order (store order while the scores stage is missing)."""
    table = ranking(run)
    if len(table):
        return [int(n) for n in table["neuron"]]
    refs = references(run)
    return [] if refs is None else refs.neuron_ids


@st.cache_data(show_spinner=False, max_entries=32)
def method_comparison(run: RunRef) -> MethodComparison | None:
    """Fig. 4: every method's clustering quality per k, averaged over neurons."""
    return _open(run).read(MethodComparison)


@st.cache_data(show_spinner=False, max_entries=32)
def crop_heatmap_method(run: RunRef) -> str:
    """The input-heatmap method the run's crops were cut from (`CropMethod`; stores written before it was
    recorded all used gradient x input)."""
    return (_open(run).read(CropMethod) or CropMethod.unrecorded()).heatmap


@st.cache_data(show_spinner=False, max_entries=32)
def distance_correlation(run: RunRef) -> DistanceCorrelation | None:
    """Sec. 4.2: each method's distances vs the embedder's, pooled over neurons."""
    return _open(run).read(DistanceCorrelation)


# -- one neuron --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NeuronData:
    """Everything stored about one neuron's references (arrays are read-only).

    ``pure (n, C_lower)``, ``activation (n, C_L)``, ``embeddings (n, D)`` as float32 (stored float16) or
    None before their stage; ``thumbnails`` n WEBP byte strings; ``dataset_indices (n,)`` and
    ``max_activations (n,)`` of the references; ``umap``, ``scores``, ``predictions`` (the model's top
    classes per reference), ``clip_labels`` (CLIP's names per crop), ``k_choice`` (the k diagnostics) and
    ``depth`` (where the circuit splits) the stored records or None;
    ``dataset_labels (n,)`` each reference's dataset label (`data_label_names`; -1 for none) or None.
    """

    neuron: int
    pure: np.ndarray | None
    activation: np.ndarray | None
    embeddings: np.ndarray | None
    umap: UmapCoordinates | None
    thumbnails: tuple[bytes, ...]
    dataset_indices: np.ndarray
    max_activations: np.ndarray
    scores: NeuronScores | None = None
    predictions: ReferencePredictions | None = None
    dataset_labels: np.ndarray | None = None
    clip_labels: ReferenceClipLabels | None = None
    k_choice: KChoice | None = None
    depth: CircuitDepth | None = None

    @property
    def n_references(self) -> int:
        """References usable for clustering (those with a circuit vector)."""
        return 0 if self.pure is None else int(self.pure.shape[0])

    @property
    def planted_concepts(self) -> tuple[str, ...] | None:
        """Ground truth of synthetic-world runs: each reference's planted concept (None elsewhere)."""
        oracle = None if self.scores is None else self.scores.oracle
        if oracle is None or len(oracle.concepts) != self.n_references:
            return None
        return oracle.concepts


def _readonly(array: np.ndarray, dtype: type | None = None) -> np.ndarray:
    array = np.array(array, dtype=dtype) if dtype is not None else array
    array.flags.writeable = False
    return array


def _vectors(record: ReferenceArray | None, dtype: type | None = np.float32) -> np.ndarray | None:
    """A stored array read-only, as ``dtype`` (float16 vectors as float32; None: the stored dtype); None
    when absent."""
    return None if record is None else _readonly(record.values, dtype)


@st.cache_resource(show_spinner=False, max_entries=4096)
def thumbnails(run: RunRef, neuron: int) -> tuple[bytes, ...]:
    """The neuron's display crops (WEBP bytes, reference order); empty before the crops stage. Read alone
    for the overview's strips, without the neuron's vectors."""
    record = _open(run).read(Thumbnails, neuron)
    return () if record is None else record.images


@st.cache_resource(show_spinner=False, max_entries=256)
def neuron_data(run: RunRef, neuron: int) -> NeuronData | None:
    """The stored data of ``neuron``; None when the run does not analyse it."""
    refs = references(run)
    row = None if refs is None else refs.row(neuron)
    if row is None:
        return None
    store = _open(run)
    valid = refs.indices[row] >= 0
    umap = store.read(UmapCoordinates, neuron)
    if umap is not None:
        umap = UmapCoordinates(_readonly(umap.pure), _readonly(umap.activation))
    return NeuronData(
        neuron=int(neuron),
        pure=_vectors(store.read(PureVectors, neuron)),
        activation=_vectors(store.read(ActivationVectors, neuron)),
        embeddings=_vectors(store.read(Embeddings, neuron)),
        umap=umap,
        thumbnails=thumbnails(run, neuron),
        dataset_indices=_readonly(refs.indices[row][valid]),
        max_activations=_readonly(refs.max_activations[row][valid]),
        scores=store.read(NeuronScores, neuron),
        predictions=store.read(ReferencePredictions, neuron),
        dataset_labels=_vectors(store.read(ReferenceDatasetLabels, neuron), dtype=None),
        clip_labels=store.read(ReferenceClipLabels, neuron),
        k_choice=store.read(KChoice, neuron),
        depth=store.read(CircuitDepth, neuron),
    )


@st.cache_resource(show_spinner=False, max_entries=256)
def quantile_samples(run: RunRef, neuron: int) -> tuple[QuantileBands | None, QuantileSamples | None]:
    """Stage 7's reference quantiles of ``neuron`` (`QuantileSamples`, arrays read-only) and the run's bands
    (`QuantileBands`): ``(None, None)`` in stores written before the stage, ``(bands, None)`` where it was
    off or has no samples of this neuron."""
    store = _open(run)
    samples = store.read(QuantileSamples, neuron)
    return store.read(QuantileBands), _shared(samples, "indices", "max_activations", "bands", "pure",
                                              "band_edges")


# -- images to try on the upload page ----------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=4096)
def reference_image(run: RunRef, dataset_index: int) -> bytes | None:
    """A reference image at model-input resolution (WEBP bytes); None when the store has none."""
    record = _open(run).read(ReferenceImage, int(dataset_index))
    return None if record is None else record.data


@dataclass(frozen=True)
class ExampleImage:
    """An image to try on the upload page: what it is (``label``) and its encoded bytes (PNG or WEBP)."""

    label: str
    data: bytes


def _spread(candidates: list[int], n: int) -> list[int]:
    """``n`` of ``candidates`` evenly spread over the list (all of them when there are fewer)."""
    if len(candidates) <= n:
        return candidates
    return [candidates[int(i)] for i in np.linspace(0, len(candidates) - 1, n)]


def _dataset_images(run: RunRef, indices: list[int]) -> dict[int, bytes] | None:
    """PNG bytes of the run's dataset images ``indices``, read through the run's image source; None when the
    source does not open or read here (a generated source renders its images; a folder or list needs its
    files on this machine)."""
    import io
    from dataclasses import fields

    from pure_core.registry import load_plugins
    from pure_core.sources import DatasetConfig, DatasetError, UnreadableImageError, open_source

    dataset = run_details(run).meta.config.get("dataset") or {}
    known = {f.name for f in fields(DatasetConfig)}
    images = {}
    try:
        load_plugins()
        source = open_source(DatasetConfig(**{key: v for key, v in dataset.items() if key in known}))
        for index in indices:
            buffer = io.BytesIO()
            source.load(index).save(buffer, format="PNG")
            images[index] = buffer.getvalue()
    except (DatasetError, UnreadableImageError, ValueError, OSError, IndexError):
        return None
    return images


@st.cache_data(show_spinner="Loading example images…", max_entries=64)
def example_images(run: RunRef, neuron: int, n: int = 6) -> list[ExampleImage]:
    """``n`` images to try against ``neuron``: two of its own references (its strongest and its median one,
    where an assignment is expected) and references of other neurons spread over the dataset (held out from
    this neuron: they show what happens when it barely fires, and the neurons they do activate). Read from
    the run's dataset where it opens here, else from the reference images the store holds."""
    data = neuron_data(run, neuron)
    own = [] if data is None else [int(i) for i in data.dataset_indices]
    mine = list(dict.fromkeys(own[:1] + own[len(own) // 2 :][:1]))
    refs = references(run)
    others = [] if refs is None else sorted({int(i) for i in refs.indices.ravel() if i >= 0} - set(own))
    chosen = mine + _spread(others, n - len(mine))
    images = _dataset_images(run, chosen) or {index: reference_image(run, index) for index in chosen}
    labels = {index: f"its reference #{own.index(index) + 1}" for index in mine}
    return [
        ExampleImage(labels.get(index, f"dataset image {index}"), images[index])
        for index in chosen
        if images.get(index) is not None
    ]
