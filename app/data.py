"""The one module that reads run stores (read-only), cached for the app.

Caching: handles and raw per-neuron data live in `st.cache_resource` (shared, never copied; treat as
read-only, arrays are flagged non-writeable); derived data (rankings, clusterings for a given
``(run, neuron, k, method)``, upload analyses) lives in `st.cache_data`. Every cached function takes a
`RunRef`, whose ``stages`` tuple is part of the key, so a store that is still being written is re-read as
stages finish.

Re-clustering is k-means (`pure_core.virtual.VirtualNeurons`) on at most a few hundred vectors (PURE reuses
the centroids precompute stored for its ks, and the scores table its stored method scores), run with one
BLAS/OpenMP thread: on tiny arrays the thread pool's start-up costs ~20x the work (measured: 150 ms vs 7 ms
for 60 x 64 vectors, n_init=10). UMAP is never fitted here; its coordinates come from the store.
"""

from __future__ import annotations

import base64
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from app import state
from store import STAGES, RunInfo, RunStore, StoreError, list_runs

METHODS = ("pure", "activation", "embedding")
METHOD_LABELS = {
    "pure": "PURE (circuits)",
    "activation": "activation clustering",
    "embedding": "embedding clustering (upper bound)",
    "unclustered": "unclustered",
}


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


@st.cache_data(show_spinner=False, max_entries=32)
def run_details(run: RunRef) -> dict[str, Any]:
    """Config, versions, stage timings and sizes of a run (small, for display)."""
    store = _open(run)
    refs = store.get("references") or {}
    return {
        "config": store.config,
        "versions": store.meta.get("versions", {}),
        "created_at": store.meta.get("created_at"),
        "stages_done": store.stages_done(),
        "stage_seconds": store.stage_seconds(),
        "n_neurons": len(refs.get("neurons", [])),
        "n_ref": int(np.asarray(refs["indices"]).shape[1]) if "indices" in refs else None,
    }


# -- overview data ---------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=32)
def ranking(run: RunRef) -> pd.DataFrame:
    """The ranking table: one row per neuron, by rho_inter - rho_intra (descending), with ``rank`` 1..N.

    Columns: rank, neuron, polysemanticity, rho_intra, rho_inter, overall, top_activation (and
    oracle_polysemanticity for synthetic-world runs). Empty when the scores stage has not run.
    """
    rows = _open(run).summary()
    if not rows:
        return pd.DataFrame(
            columns=["rank", "neuron", "polysemanticity", "rho_intra", "rho_inter", "overall"]
        )
    table = pd.DataFrame(rows)
    table["neuron"] = table["neuron"].astype(int)
    table = table.sort_values(["polysemanticity", "neuron"], ascending=[False, True], kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)


def neuron_order(run: RunRef) -> list[int]:
    """Neurons in ranking order (store order while the scores stage is missing)."""
    table = ranking(run)
    if len(table):
        return [int(n) for n in table["neuron"]]
    return _open(run).neurons


@st.cache_data(show_spinner=False, max_entries=20_000)
def thumbnail_strip(run: RunRef, neuron: int, n_thumbnails: int = 6, height_px: int = 40) -> str | None:
    """A horizontal strip of the neuron's top ``n_thumbnails`` display crops as a JPEG data URI (None when
    the neuron has no thumbnails yet)."""
    thumbs = (_open(run).neuron("thumbnails", neuron) or [])[:n_thumbnails]
    if not thumbs:
        return None
    tiles = [_open_image(b).resize((height_px, height_px), Image.Resampling.BILINEAR) for b in thumbs]
    strip = Image.new("RGB", (len(tiles) * (height_px + 2) - 2, height_px), "white")
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * (height_px + 2), 0))
    buffer = io.BytesIO()
    strip.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def thumbnail_strips(run: RunRef, neurons: list[int]) -> dict[int, str]:
    """`thumbnail_strip` of each of ``neurons`` that has thumbnails."""
    strips = {int(n): thumbnail_strip(run, int(n)) for n in neurons}
    return {n: uri for n, uri in strips.items() if uri is not None}


@st.cache_data(show_spinner=False, max_entries=32)
def method_comparison(run: RunRef) -> dict[str, Any] | None:
    """Fig. 4: ``{method: {k: {rho_intra, rho_inter}}, "unclustered": float}`` averaged over neurons."""
    return _open(run).get("method_comparison")


@st.cache_data(show_spinner=False, max_entries=32)
def distance_correlation(run: RunRef) -> dict[str, Any] | None:
    """Sec. 4.2: ``{method: {"r", "sem"}}``, distances of each method vs embedding distances."""
    return _open(run).get("distance_correlation")


# -- one neuron --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NeuronData:
    """Everything stored about one neuron's references (arrays are read-only).

    ``pure (n, C_lower)``, ``activation (n, C_L)``, ``embeddings (n, D)`` or None, ``umap`` ``{"pure": (n, 2),
    "activation": (n, 2)}`` or None, ``thumbnails`` n WEBP byte strings, ``dataset_indices (n,)``,
    ``max_activations (n,)``, ``scores`` (the stored dict) or None.
    """

    neuron: int
    pure: np.ndarray | None
    activation: np.ndarray | None
    embeddings: np.ndarray | None
    umap: dict[str, np.ndarray] | None
    thumbnails: list[bytes]
    dataset_indices: np.ndarray
    max_activations: np.ndarray
    scores: dict[str, Any] | None = field(default=None)

    @property
    def n_references(self) -> int:
        """References usable for clustering (those with a circuit vector)."""
        return 0 if self.pure is None else int(self.pure.shape[0])


def _readonly(array: Any) -> Any:
    if isinstance(array, np.ndarray):
        array.flags.writeable = False
    return array


@st.cache_resource(show_spinner=False, max_entries=256)
def neuron_data(run: RunRef, neuron: int) -> NeuronData | None:
    """The stored data of ``neuron``; None when the run does not analyse it."""
    store = _open(run)
    refs = store.get("references")
    if refs is None:
        return None
    ids = [int(n) for n in refs["neurons"]]
    if int(neuron) not in ids:
        return None
    row = ids.index(int(neuron))
    indices = np.asarray(refs["indices"][row])
    valid = indices >= 0
    umap = store.neuron("umap", neuron)
    if umap is not None:
        umap = {key: _readonly(np.asarray(value, dtype=np.float32)) for key, value in umap.items()}
    return NeuronData(
        neuron=int(neuron),
        pure=_readonly(store.neuron("pure", neuron)),
        activation=_readonly(store.neuron("activation", neuron)),
        embeddings=_readonly(store.neuron("embeddings", neuron)),
        umap=umap,
        thumbnails=list(store.neuron("thumbnails", neuron) or []),
        dataset_indices=_readonly(indices[valid]),
        max_activations=_readonly(np.asarray(refs["max_activations"][row])[valid]),
        scores=store.neuron("scores", neuron),
    )


@st.cache_data(show_spinner=False, max_entries=4096)
def reference_image(run: RunRef, dataset_index: int) -> bytes | None:
    """WEBP bytes of a reference image at model-input resolution."""
    return _open(run).image(dataset_index)


@dataclass(frozen=True)
class Clustering:
    """Virtual neurons of one neuron for one method and k; clusters numbered by size (largest first).

    ``labels (n,)``, ``centers (k, d)`` in the method's vector space, ``sizes (k,)``, ``rho_intra (k,)``:
    mean embedding distance inside each cluster (NaN without embeddings or for a single member),
    ``evaluation``: (rho_intra, rho_inter) of the whole clustering under the embedder (Eq. 5) or None.
    """

    method: str
    k: int
    labels: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray
    rho_intra: np.ndarray
    evaluation: tuple[float, float] | None

    def distances(self, vector: np.ndarray) -> np.ndarray:
        """Euclidean distances ``(k,)`` of a vector ``(d,)`` to the centroids (`VirtualNeurons.transform`)."""
        return np.linalg.norm(self.centers - np.asarray(vector, dtype=np.float64)[None, :], axis=1)


def _vectors(data: NeuronData, method: str) -> np.ndarray | None:
    return {"pure": data.pure, "activation": data.activation, "embedding": data.embeddings}[method]


def fit_virtual_neurons(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means (VirtualNeurons, seed 0) on ``vectors (n, d)`` with one thread; ``(labels (n,), centers
    (k, d))`` with clusters renumbered by size, largest first (ties by first member)."""
    from threadpoolctl import threadpool_limits

    from pure_core.virtual import VirtualNeurons

    with threadpool_limits(1):
        model = VirtualNeurons(n_clusters=int(k), random_state=0).fit(np.asarray(vectors, dtype=np.float64))
    return _by_size(model.labels_, model.cluster_centers_)


def _by_size(labels: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = len(centers)
    sizes = np.bincount(labels, minlength=k)
    first = np.array([np.flatnonzero(labels == c)[0] if sizes[c] else len(labels) for c in range(k)])
    order = np.lexsort((first, -sizes))  # new cluster i = old cluster order[i]
    relabel = np.empty(k, dtype=np.int64)
    relabel[order] = np.arange(k)
    return relabel[labels], centers[order]


def assign_to_centroids(vectors: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``(n,)`` of ``vectors (n, d)`` by nearest centroid of ``centers (k, d)`` (precompute's stored
    virtual neurons, i.e. `VirtualNeurons.predict`), renumbered by size as in `fit_virtual_neurons`."""
    distances = np.linalg.norm(np.asarray(vectors, np.float64)[:, None, :] - centers[None, :, :], axis=2)
    return _by_size(np.argmin(distances, axis=1), centers)


@st.cache_data(show_spinner=False, max_entries=2048)
def clustering(run: RunRef, neuron: int, k: int, method: str = "pure") -> Clustering | None:
    """Virtual neurons of ``neuron`` for ``k`` by ``method`` ("pure", "activation" or "embedding");
    None when the vectors are missing or fewer than ``k``.

    PURE for a k that precompute stored centroids for: the stored virtual neurons (nearest centroid); any
    other k and method: k-means now (VirtualNeurons, seed 0, n_init 10; milliseconds on n_ref vectors)."""
    from pure_core.scores import cluster_distances, pairwise_distances

    data = neuron_data(run, neuron)
    vectors = None if data is None else _vectors(data, method)
    if vectors is None or len(vectors) < max(k, 1):
        return None
    stored = ((data.scores or {}).get("centroids") or {}).get(int(k)) if method == "pure" else None
    if stored is not None and np.shape(stored) == (k, vectors.shape[1]):
        labels, centers = assign_to_centroids(vectors, np.asarray(stored, dtype=np.float64))
    else:
        labels, centers = fit_virtual_neurons(vectors, k)
    sizes = np.bincount(labels, minlength=k)
    rho_intra = np.full(k, np.nan)
    evaluation = None
    if data.embeddings is not None and len(data.embeddings) == len(labels):
        distances = pairwise_distances(data.embeddings)
        for c in range(k):
            members = np.flatnonzero(labels == c)
            if len(members) > 1:
                block = distances[np.ix_(members, members)]
                rho_intra[c] = block.sum() / (len(members) * (len(members) - 1))
        evaluation = tuple(float(v) for v in cluster_distances(data.embeddings, labels))
    return Clustering(method, int(k), labels, centers, sizes, rho_intra, evaluation)


@st.cache_data(show_spinner=False, max_entries=1024)
def k_scores(run: RunRef, neuron: int, k: int) -> pd.DataFrame:
    """Scores for this k: rho_intra, rho_inter and their difference under the embedder, per method.

    Rows: PURE, activation clustering, embedding clustering (upper bound) and unclustered (the mean distance
    over all pairs). Empty without embeddings.
    """
    from pure_core.scores import overall_distance

    data = neuron_data(run, neuron)
    stored = (data.scores or {}).get("methods", {}) if data is not None else {}
    rows = []
    for method in METHODS:
        entry = (stored.get(method) or {}).get(int(k))
        if entry is not None:  # precompute's value (same k-means, same embeddings)
            intra, inter = float(entry["rho_intra"]), float(entry["rho_inter"])
        else:
            result = clustering(run, neuron, k, method)
            if result is None or result.evaluation is None:
                continue
            intra, inter = result.evaluation
        rows.append(
            {
                "method": METHOD_LABELS[method],
                "rho_intra": intra,
                "rho_inter": inter,
                "rho_inter - rho_intra": inter - intra,
            }
        )
    if rows and data is not None and data.embeddings is not None:
        overall = overall_distance(data.embeddings)
        rows.append(
            {
                "method": METHOD_LABELS["unclustered"],
                "rho_intra": overall,
                "rho_inter": overall,
                "rho_inter - rho_intra": 0.0,
            }
        )
    return pd.DataFrame(rows)


@st.cache_data(show_spinner=False, max_entries=4096)
def reference_sheet(
    run: RunRef,
    neuron: int,
    k: int = 0,
    method: str = "pure",
    cluster: int = 0,
    columns: int = 10,
    tile_px: int = 64,
) -> bytes | None:
    """JPEG grid of a neuron's reference thumbnails: all of them (``k=0``) or one virtual neuron's members
    (cluster ``cluster`` of the ``method`` clustering with ``k``), captioned "#rank · max activation"."""
    from app.figures import jpeg_bytes
    from app.figures import reference_sheet as sheet

    data = neuron_data(run, neuron)
    tiles = _tiles(run, neuron, tile_px)
    if data is None or not data.thumbnails:
        return None
    members = np.arange(len(data.thumbnails))
    if k > 0:
        result = clustering(run, neuron, k, method)
        if result is None:
            return None
        members = np.flatnonzero(result.labels == cluster)
    members = [int(i) for i in members if i < len(data.thumbnails)]
    if not members:
        return None
    captions = [
        f"#{i + 1} · {data.max_activations[i]:.2f}" if i < len(data.max_activations) else f"#{i + 1}"
        for i in members
    ]
    return jpeg_bytes(sheet([tiles[i] for i in members], captions, columns=columns))


@st.cache_resource(show_spinner=False, max_entries=64)
def _tiles(run: RunRef, neuron: int, tile_px: int) -> list[Image.Image]:
    """The neuron's thumbnails decoded once into ``tile_px`` squares (re-gridded for every k; read-only)."""
    from app.figures import tile

    data = neuron_data(run, neuron)
    return [tile(b, tile_px) for b in (data.thumbnails if data is not None else [])]


# -- circuits ----------------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, ttl=3, max_entries=64)
def lower_layer_run(root: str, run: RunRef) -> RunRef | None:
    """A complete run under ``root`` of the same model that analyses ``run``'s lower layer, if any."""
    config = run_details(run)["config"]
    lower = config.get("lower_layer")
    for info in available_runs(root):
        other = info.config
        if (
            info.directory != Path(run.directory)
            and other.get("model") == config.get("model")
            and other.get("layer") == lower
            and info.complete
        ):
            return run_ref(info)
    return None


# -- model and uploads -------------------------------------------------------------------------------------
@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def model_for(run: RunRef):
    """The run's model (`pure_core.models.LoadedModel`), built once per run from the stored config."""
    from pure_core.models import ModelSpec, build_model

    spec = ModelSpec.from_dict(run_details(run)["config"]["model"])
    if spec.name == "demo":  # never train inside a page: fail fast with the command that makes it
        from pure_core.demo import load_demo_model

        load_demo_model(spec.checkpoint, train_if_missing=False, progress=False)
    return build_model(spec)


@st.cache_data(show_spinner=False, max_entries=16)
def model_matches_run(run: RunRef) -> bool | None:
    """Whether the model the app loads for ``run`` has the weights precompute recorded (sha256 over the state
    dict, `pure_core.models.model_fingerprint`); None when the run recorded no fingerprint."""
    from pure_core.models import model_fingerprint

    expected = ((_open(run).meta.get("identity") or {}).get("fingerprints") or {}).get("model")
    if not expected:
        return None
    return model_fingerprint(model_for(run).model)[: len(expected)] == expected


@st.cache_data(show_spinner=False, max_entries=64)
def analyse_upload(run: RunRef, image_sha: str, _image: Image.Image, neuron: int, top_n: int = 5):
    """The k-independent part of an upload's analysis (`app.uploads.analyse_image`), cached by image hash."""
    from app.uploads import analyse_image

    config = run_details(run)["config"]
    return analyse_image(
        model_for(run), _image, config["layer"], config["lower_layer"], neuron, neuron_order(run), top_n=top_n
    )


def _open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    return image.convert("RGB")
