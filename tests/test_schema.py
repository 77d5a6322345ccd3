"""The store schema: every record stores exactly the value precompute writes (keys, order, dtypes), parses it
back to an equal record, survives a trip through a RunStore, and docs/contracts.md is generated from it."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from store import NEURON_KINDS, STAGES, RunStore
from store import schema as s

CONTRACTS = Path(__file__).resolve().parents[1] / "docs" / "contracts.md"
RNG = np.random.default_rng(0)
N_REF, C_LOWER, C_LAYER = 6, 5, 7


def _scores_value(with_oracle: bool = True) -> dict:
    """A ``scores:<n>`` value shaped as precompute's `_neuron_scores` writes it."""
    value = {
        "polysemanticity": 0.5,
        "rho_intra": 1.25,
        "rho_inter": 1.75,
        "overall": 1.5,
        "embedding_labels": np.array([0, 1, 0, 1, 1, 0], dtype=np.int64),
        "methods": {
            "pure": {2: {"rho_intra": 1.0, "rho_inter": 2.0}, 3: {"rho_intra": 0.9, "rho_inter": 1.9}},
            "activation": {2: {"rho_intra": 1.4, "rho_inter": 1.6}, 3: {"rho_intra": 1.3, "rho_inter": 1.5}},
            "embedding": {2: {"rho_intra": 0.8, "rho_inter": 2.2}, 3: {"rho_intra": 0.7, "rho_inter": 2.0}},
        },
        "correlation": {"pure": 0.4, "activation": float("nan")},
        "centroids": {
            2: RNG.random((2, C_LOWER)).astype(np.float32),
            3: RNG.random((3, C_LOWER)).astype(np.float32),
        },
    }
    if with_oracle:
        value["oracle"] = {
            "polysemanticity": 1.4,
            "rho_intra": 0.0,
            "rho_inter": 1.4,
            "overall": 0.7,
            "labels": np.array([0, 1, 0, 1, 1, 0], dtype=np.int64),
            "concepts": ["red circle", "blue square"] * 3,
            "kind": "polysemantic",
        }
    return value


def _summary_row(neuron: int, world: bool) -> dict:
    """A ``summary`` row shaped as precompute's `_aggregate` writes it."""
    row = {
        "neuron": neuron,
        "polysemanticity": 0.5,
        "rho_intra": 1.25,
        "rho_inter": 1.75,
        "overall": 1.5,
        "top_activation": 7.5,
        "n_ref": N_REF,
    }
    if world:
        row["oracle_polysemanticity"] = 1.4
        row["oracle_kind"] = "polysemantic"
    return row


META = {
    "schema_version": 1,
    "run_id": "0123456789abcdef",
    "identity": {"config": {"layer": "block4"}, "fingerprints": {"model": "ab12", "dataset": "cd34"}},
    "config": {
        "model": {"name": "demo", "weights": None, "checkpoint": None},
        "layer": "block4",
        "lower_layer": "block2",
        "ks": [2, 3],
        "seed": 3,
    },
    "versions": {"python": "3.11.7", "store_schema": "1"},
    "created_at": 1.7e9,
}
REFERENCES = {
    "neurons": np.array([3, 7], dtype=np.int64),
    "indices": RNG.integers(0, 100, (2, N_REF)).astype(np.int64),
    "max_activations": RNG.random((2, N_REF)).astype(np.float32),
    "positions": RNG.integers(0, 8, (2, N_REF, 2)).astype(np.int64),
}
COMPARISON = {
    "pure": {2: {"rho_intra": 1.0, "rho_inter": 2.0}},
    "activation": {2: {"rho_intra": 1.4, "rho_inter": 1.6}},
    "embedding": {},
    "unclustered": 1.5,
}
# (record class, index, stored value as precompute writes it)
STORED = [
    (s.RunMeta, None, META),
    (s.StageStatus, "scores", {"done": True, "seconds": 12.5, "finished_at": 1.7e9}),
    (s.References, None, REFERENCES),
    (
        s.ScanReport,
        None,
        {"n_images": 300, "n_valid": 299, "n_skipped": 1, "skipped_examples": ["x.png: bad"]},
    ),
    (s.ReferenceImage, 42, b"RIFF....WEBP"),
    (s.PureVectors, 3, RNG.random((N_REF, C_LOWER)).astype(np.float16)),
    (s.ActivationVectors, 3, RNG.random((N_REF, C_LAYER)).astype(np.float16)),
    (s.CropBoxes, 3, RNG.integers(0, 64, (N_REF, 4)).astype(np.int32)),
    (s.Crops, 3, [b"crop%d" % i for i in range(N_REF)]),
    (s.Thumbnails, 3, [b"thumb%d" % i for i in range(N_REF)]),
    (s.Embeddings, 3, RNG.random((N_REF, 16)).astype(np.float16)),
    (s.NeuronScores, 3, _scores_value()),
    (s.NeuronScores, 7, _scores_value(with_oracle=False)),
    (s.CircuitDepth, 3, {"layers": ["block3", "block2"], "k": 2,
                         "rho_gap": np.array([1.9, 2.5], dtype=np.float32),
                         "silhouette": np.array([0.3, 0.4], dtype=np.float32),
                         "ari": np.array([np.nan, np.nan], dtype=np.float32)}),
    (s.KChoice, 3, {"ks": [2, 3, 4], "silhouette": np.array([0.4, 0.2, np.nan], dtype=np.float32),
                    "stability": np.array([0.97, 0.5, np.nan], dtype=np.float32),
                    "score": np.array([2.1, 1.2, np.nan], dtype=np.float32), "suggested_k": 2}),
    (
        s.UmapCoordinates,
        3,
        {
            "pure": RNG.random((N_REF, 2)).astype(np.float32),
            "activation": RNG.random((N_REF, 2)).astype(np.float32),
        },
    ),
    (s.Summary, None, [_summary_row(3, world=True), _summary_row(7, world=True)]),
    (s.Summary, None, [_summary_row(3, world=False)]),
    (s.MethodComparison, None, COMPARISON),
    (s.DistanceCorrelation, None, {"pure": {"r": 0.38, "sem": 0.01}, "activation": {"r": 0.17, "sem": 0.02}}),
    (s.DistanceCorrelation, None, {}),
    (s.ClipLabelStatus, None, {"state": "labelled", "model": "open_clip:ViT-B-32/openai", "reason": "",
                               "templates": ["a photo of a {}."]}),
    (s.ClipLabelStatus, None, {"state": "skipped", "model": "open_clip:ViT-B-32/openai", "reason": "missing",
                               "templates": []}),
    (s.ClipLabelNames, None, ["tench", "striped", "red"]),
    (
        s.ReferenceClipLabels,
        3,
        {
            "classes": RNG.integers(0, 3, (N_REF, 2)).astype(np.int32),
            "probabilities": RNG.random((N_REF, 2)).astype(np.float16),
        },
    ),
    (s.VirtualNeuronClipLabels, 3, {2: [[{"label": 1, "count": 3, "share": 0.75, "enrichment": 1.5}], []]}),
    (s.VirtualNeuronClipCentroids, 3, {2: RNG.random((2, 16)).astype(np.float16)}),
    (
        s.ClipCentroidIndex,
        None,
        {
            "neuron": np.array([3, 3], np.int32),
            "k": np.array([2, 2], np.int16),
            "virtual_neuron": np.array([0, 1], np.int16),
            "vectors": RNG.random((2, 16)).astype(np.float16),
        },
    ),
    (s.QuantileBands, None, {"state": "sampled", "bands": [[99.0, 100.0], [50.0, 75.0]], "per_band": 2,
                             "probe_images": 1000, "n_probe": 998, "n_skipped": 2, "seed": 0}),
    (s.QuantileBands, None, {"state": "off", "bands": [], "per_band": 0, "probe_images": 0, "n_probe": 0,
                             "n_skipped": 0, "seed": 3}),
    (
        s.QuantileSamples,
        3,
        {
            "indices": np.array([17, 4, 230], np.int64),
            "max_activations": np.array([3.5, 1.25, 0.5], np.float32),
            "bands": np.array([0, 1, 1], np.int8),
            "pure": RNG.random((3, C_LOWER)).astype(np.float16),
            "band_edges": np.array([[3.0, 4.0], [0.25, 2.0]], np.float32),
        },
    ),
]
IDS = [f"{record.__name__}-{i}" for i, (record, _, _) in enumerate(STORED)]


@pytest.mark.parametrize(("record_type", "index", "value"), STORED, ids=IDS)
def test_a_stored_value_parses_and_stores_back_byte_for_byte(record_type, index, value):
    record = record_type.from_store(value)
    again = record.to_store()
    assert s.values_equal(again, value)
    assert pickle.dumps(again, protocol=pickle.HIGHEST_PROTOCOL) == pickle.dumps(
        value, protocol=pickle.HIGHEST_PROTOCOL
    )
    assert record_type.from_store(again) == record


@pytest.mark.parametrize(("record_type", "index", "value"), STORED, ids=IDS)
def test_a_record_written_to_a_store_reads_back_equal_with_its_dtypes(tmp_path, record_type, index, value):
    record = record_type.from_store(value)
    with RunStore.create(tmp_path / "run", {"id": 1}, {}, {}) as store:
        if record_type is not s.RunMeta:  # the store writes its own meta
            store.write(record, index)
    with RunStore.open(tmp_path / "run") as reader:
        if record_type is s.RunMeta:
            assert reader.read(s.RunMeta).run_id == reader.run_id
            return
        back = reader.read(record_type, index)
        assert back == record
        assert s.values_equal(reader.get(s.key(record_type, index)), value)


def test_float16_vectors_stay_float16_through_the_store(tmp_path):
    vectors = np.full((3, 4), 0.1, dtype=np.float16)
    with RunStore.create(tmp_path / "run", {"id": 1}, {}, {}) as store:
        store.write(s.PureVectors(vectors), 12)
    with RunStore.open(tmp_path / "run") as reader:
        record = reader.read(s.PureVectors, 12)
        assert record.values.dtype == np.float16 and np.array_equal(record.values, vectors)
        assert reader.read(s.PureVectors, 13) is None


def test_records_coerce_to_the_documented_dtypes():
    assert s.CropBoxes(np.zeros((2, 4), dtype=np.int64)).values.dtype == np.int32
    assert s.PureVectors(np.zeros((2, 3))).values.dtype == np.float16
    scores = s.NeuronScores.from_store(_scores_value())
    assert all(type(k) is int and c.dtype == np.float32 for k, c in scores.centroids.items())
    same = np.zeros((2, 3), dtype=np.float16)
    assert s.PureVectors(same).values is same  # no copy when the dtype is already right


def test_optional_parts_may_be_absent():
    scores = s.NeuronScores.from_store(_scores_value(with_oracle=False))
    assert scores.oracle is None and "oracle" not in scores.to_store()
    assert scores.method_score("pure", 3) == s.MethodScore(0.9, 1.9)
    assert scores.method_score("pure", 5) is None
    sparse = {key: value for key, value in _scores_value().items() if key not in ("centroids", "correlation")}
    parsed = s.NeuronScores.from_store(sparse)
    assert parsed.centroids == {} and math.isnan(parsed.correlation.pure)
    row = s.SummaryRow.from_store(_summary_row(3, world=False))
    assert row.oracle_kind is None and "oracle_kind" not in row.to_store()


def test_records_read_as_attributes():
    scores = s.NeuronScores.from_store(_scores_value())
    assert scores.oracle.kind == "polysemantic" and scores.oracle.concepts[:2] == (
        "red circle",
        "blue square",
    )
    assert scores.correlation.pure == 0.4
    comparison = s.MethodComparison.from_store(COMPARISON)
    assert comparison.methods["pure"][2].rho_inter == 2.0 and comparison.unclustered == 1.5
    meta = s.RunMeta.from_store(META)
    assert (meta.layer, meta.lower_layer, meta.seed, meta.ks) == ("block4", "block2", 3, [2, 3])
    assert meta.model.name == "demo" and meta.model.checkpoint is None and meta.model_fingerprint == "ab12"
    references = s.References.from_store(REFERENCES)
    assert references.row(7) == 1 and references.row(99) is None and references.n_ref == N_REF


def test_records_differ_when_a_stored_value_differs():
    a = s.MethodScore(1.0, 2.0)
    assert a == s.MethodScore(1.0, 2.0) and a != s.MethodScore(1.0, 2.5)
    assert s.PureVectors(np.zeros((1, 2))) != s.ActivationVectors(np.zeros((1, 2)))
    assert not s.values_equal({"a": 1, "b": 2}, {"b": 2, "a": 1})  # key order is part of the stored value
    assert not s.values_equal(np.zeros(2, np.float16), np.zeros(2, np.float32))


def test_the_key_table_names_every_stored_value():
    assert NEURON_KINDS == (
        "pure",
        "activation",
        "predictions",
        "data_labels",
        "boxes",
        "crops",
        "thumbnails",
        "embeddings",
        "scores",
        "k_choice",
        "depth",
        "umap",
        "vn_labels",
        "vn_data_labels",
        "clip_predictions",
        "vn_clip_labels",
        "vn_clip_centroids",
        "quantiles",
    )
    assert s.key(s.NeuronScores, 12) == "scores:12" and s.key(s.Summary) == "summary"
    assert s.key(s.StageStatus, "crops") == "stage:crops" and s.key(s.ReferenceImage, 4031) == "image:4031"
    assert s.KEY_TABLE["umap"] is s.UmapCoordinates
    with pytest.raises(ValueError, match="per neuron"):
        s.key(s.NeuronScores)
    with pytest.raises(ValueError, match="once per run"):
        s.key(s.Summary, 3)
    with pytest.raises(TypeError):
        s.key(s.MethodScore)


def test_contracts_store_section_is_generated_from_the_schema():
    text = CONTRACTS.read_text()
    assert s.render_markdown() in text, "update it: python -m store --write docs/contracts.md"
    assert s.replace_store_section(text) == text


def _stored_keys(store: RunStore) -> list[tuple[type[s.Record], int | str | None]]:
    """Every (record type, index) a complete store holds."""
    references = store.read(s.References)
    keys: list[tuple[type[s.Record], int | str | None]] = [(s.StageStatus, stage) for stage in STAGES]
    keys += [(r, None) for r in s.STORED_RECORDS if r.INDEX is None]
    keys += [(s.ReferenceImage, int(i)) for i in np.unique(references.indices[references.indices >= 0])]
    keys += [(r, n) for r in s.NEURON_RECORDS.values() for n in references.neuron_ids]
    return keys


CLIP_RECORDS = (s.ClipLabelNames, s.ReferenceClipLabels, s.VirtualNeuronClipLabels,
                s.VirtualNeuronClipCentroids, s.ClipCentroidIndex)
QUANTILE_RECORDS = (s.QuantileBands, s.QuantileSamples)


def _assert_every_value_round_trips(directory: Path) -> None:
    """Values read back compare by content, types and dtypes (their pickles may differ only in how equal
    strings are shared, which a fresh write through the records reproduces: see the first test)."""
    with RunStore.open(directory) as store:
        for record_type, index in _stored_keys(store):
            value = store.get(s.key(record_type, index))
            if value is None:
                # written by precompute's scan only; CLIP's records by runs that had CLIP's weights; the k
                # diagnostics and the reference quantiles by precompute since they exist (the small fixture
                # stands for an older store); the depth profiles by runs with depth layers
                labelled = store.read(s.ClipLabelStatus).state == "labelled"
                older = store.read(s.KChoice, store.read(s.References).neuron_ids[0]) is None
                quantiles = store.read(s.QuantileBands)
                shallow = not store.read(s.RunMeta).config.get("depth_layers")
                assert record_type is s.ScanReport or (record_type in CLIP_RECORDS and not labelled) or (
                    record_type is s.KChoice and older) or (
                    record_type in QUANTILE_RECORDS and (quantiles is None or quantiles.state == "off")) or (
                    (record_type, index) == (s.StageStatus, "quantiles") and quantiles is None) or (
                    record_type is s.CircuitDepth and shallow)
                continue
            assert s.values_equal(record_type.from_store(value).to_store(), value), s.key(record_type, index)


def test_every_value_of_the_small_store_round_trips(small_store):
    _assert_every_value_round_trips(small_store)


@pytest.mark.slow
def test_every_value_of_a_precomputed_store_round_trips(demo_runs_root):
    """The real writer's values (precompute on the tiny world) parse and store back byte for byte."""
    root, _ = demo_runs_root
    runs = [p for p in root.iterdir() if (p / "cache.db").is_file()]
    assert runs
    for directory in runs:
        _assert_every_value_round_trips(directory)
