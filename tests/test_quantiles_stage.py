"""Stage 7 (`precompute.stages.quantiles`) on tiny runs: what it stores is what the model and
`pure_core.quantiles` give on the stored images (activations, bands, circuits), never a reference; the same
command adds the stage to a store whose other stages were done before it, leaving them untouched; the stage
off writes only its status; and the neuron page's "below the top" assigns each sample as
`VirtualNeurons.predict` does."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import diskcache
import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from precompute.__main__ import main
from precompute.config import ConfigError, resolve_config
from pure_core.activations import pooled_activations
from pure_core.attribution import pure_attributions_for_pairs
from pure_core.models import ModelSpec, build_model
from pure_core.quantiles import DEFAULT_BANDS, activation_bands, probe_indices
from pure_core.registry import load_plugins
from pure_core.sources import DatasetConfig, iterate_batches, open_source
from pure_core.virtual import VirtualNeurons
from store import STAGES, RunStore
from store import schema as sc
from store.codecs import decode_image

ARGS = ["--preset", "tiny", "--neurons", "0-3", "--n-ref", "8", "--ks", "2,3", "--no-progress"]
STAGE_7 = ("stage:quantiles", "quantile_bands", "quantiles:")


def _demo_store(demo_runs_root) -> Path:
    root, _ = demo_runs_root
    runs = sorted(p for p in root.iterdir() if (p / "cache.db").is_file())
    assert runs
    return runs[0]


def _model_and_source(store: RunStore):
    load_plugins()
    meta = store.read(sc.RunMeta)
    loaded = build_model(ModelSpec.from_dict(meta.config["model"]), fetch_missing=False)
    dataset = {k: v for k, v in meta.config["dataset"].items() if k in DatasetConfig.__dataclass_fields__}
    return meta, loaded, open_source(DatasetConfig(**dataset))


def _stored_images(store: RunStore, indices: np.ndarray) -> np.ndarray:
    """``(M, H, W, 3)`` uint8: the stored images (at model-input geometry) of ``indices``."""
    return np.stack([np.asarray(decode_image(store.read(sc.ReferenceImage, int(i)).data)) for i in indices])


def test_samples_are_band_members_below_the_top_and_never_references(demo_runs_root):
    with RunStore.open(_demo_store(demo_runs_root)) as store:
        assert store.is_stage_done("quantiles")
        bands = store.read(sc.QuantileBands)
        assert bands.state == "sampled" and bands.bands == DEFAULT_BANDS and bands.per_band == 6
        n_images = store.read(sc.ScanReport).n_images
        assert bands.n_probe + bands.n_skipped == len(probe_indices(n_images, bands.probe_images, bands.seed))
        references = store.read(sc.References)
        for row, neuron in enumerate(references.neuron_ids):
            samples = store.read(sc.QuantileSamples, neuron)
            assert samples.n_samples > 0 and samples.pure.shape[0] == samples.n_samples
            assert not np.isin(samples.indices, references.indices[row]).any()
            assert np.all(samples.max_activations > 0)  # only images it fires on: each has a circuit
            assert np.all(np.diff(samples.bands) >= 0)  # band by band, highest band first
            for b in range(len(bands.bands)):
                own = samples.max_activations[samples.bands == b]
                assert len(own) <= bands.per_band and np.all(np.diff(own) <= 0)
                lower = samples.max_activations[samples.bands > b]
                assert len(own) == 0 or len(lower) == 0 or own.min() >= lower.max()
                if b + 1 < len(bands.bands):
                    assert samples.band_edges[b, 0] >= samples.band_edges[b + 1, 1]
                if len(own):
                    assert samples.band_edges[b, 0] <= own.min() and own.max() <= samples.band_edges[b, 1]
            for index in samples.indices:
                assert store.read(sc.ReferenceImage, int(index)).data[8:12] == b"WEBP"


def test_samples_are_what_the_bands_pick_from_the_models_activations_on_the_probe_set(demo_runs_root):
    """The whole selection recomputed: the model's max-pooled activations of the probe images, then
    `activation_bands` without each neuron's references."""
    from precompute.stages.quantiles import PROBE_BATCH

    with RunStore.open(_demo_store(demo_runs_root)) as store:
        meta, loaded, source = _model_and_source(store)
        bands, references = store.read(sc.QuantileBands), store.read(sc.References)
        probe = probe_indices(len(source), bands.probe_images, bands.seed)
        values, read = [], []
        batches = iterate_batches(source, probe.tolist(), loaded.preprocess.to_tensor, PROBE_BATCH)
        for x, indices, _ in batches:
            values.append(pooled_activations(loaded.model, x, meta.layer)[0][:, references.neurons].numpy())
            read.append(indices)
        values, read = np.concatenate(values), np.concatenate(read)
        for row, neuron in enumerate(references.neuron_ids):
            leave_out = np.isin(read, references.indices[row]) | (values[:, row] <= 0)
            chosen = activation_bands(values[:, row], bands.bands, bands.per_band, exclude=leave_out)
            samples = store.read(sc.QuantileSamples, neuron)
            np.testing.assert_array_equal(samples.indices, read[np.concatenate([p for _, p in chosen])])
            np.testing.assert_array_equal(samples.bands, np.repeat(np.arange(len(chosen)),
                                                                   [len(p) for _, p in chosen]))


def test_stored_circuits_and_activations_are_the_models_on_the_stored_images(demo_runs_root):
    with RunStore.open(_demo_store(demo_runs_root)) as store:
        meta, loaded, _ = _model_and_source(store)
        for neuron in store.read(sc.References).neuron_ids[:3]:
            samples = store.read(sc.QuantileSamples, neuron)
            x = loaded.preprocess.from_pixels(_stored_images(store, samples.indices))
            maxima = pooled_activations(loaded.model, x, meta.layer)[0][:, neuron].numpy()
            np.testing.assert_allclose(samples.max_activations, maxima, rtol=1e-4, atol=1e-4)
            pure = pure_attributions_for_pairs(loaded.model, x, meta.layer, meta.lower_layer,
                                               [neuron] * len(x)).numpy()
            assert samples.pure.dtype == np.float16
            np.testing.assert_allclose(samples.pure.astype(np.float32), pure, rtol=1e-2, atol=1e-3)
            np.testing.assert_allclose(np.abs(pure).sum(axis=1), 1.0, atol=1e-5)  # L1 rows, as PureVectors


# -- the same command adds the stage to a store made before it --------------------------------------------
def _values(directory: Path) -> dict:
    keys = [k for (k,) in sqlite3.connect(directory / "cache.db").execute("SELECT key FROM Cache")]
    cache = diskcache.Cache(str(directory))
    values = {key: cache.get(key) for key in keys}
    cache.close()
    return values


def _same(a, b) -> bool:
    return sc.values_equal(a, b)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quantiles") / "run"
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


def _strip_stage_7(directory: Path) -> None:
    """Make ``directory`` a store of the six stages before this one: its records, its images and its marker
    removed."""
    with RunStore.open(directory) as store:
        referenced = {int(i) for i in np.unique(store.read(sc.References).indices)}
    cache = diskcache.Cache(str(directory))
    for key in list(cache.iterkeys()):
        stage_7 = key.startswith(STAGE_7)
        sample_image = key.startswith("image:") and int(key.split(":")[1]) not in referenced
        if stage_7 or sample_image:
            del cache[key]
    cache.close()


def test_the_same_command_adds_only_this_stage_and_leaves_every_other_record_as_it_was(
    tiny_run, tmp_path, capsys
):
    older = tmp_path / "older"
    shutil.copytree(tiny_run, older)
    _strip_stage_7(older)
    with RunStore.open(older) as store:
        assert [s for s, done in store.stages_done().items() if not done] == ["quantiles"]
    before = _values(older)
    capsys.readouterr()
    assert main([*ARGS, "--out", str(older)]) == 0
    printed = capsys.readouterr().out
    assert f"{STAGES.index('quantiles') + 1}/{len(STAGES)} reference quantiles" in printed
    assert "references: scan" not in printed and "CLIP labels" not in printed  # no other stage ran
    after, original = _values(older), _values(tiny_run)
    assert {k: v for k, v in after.items() if k in before}.keys() == before.keys()
    assert [k for k in before if not _same(before[k], after[k])] == []  # every earlier record as it was
    added = sorted(set(after) - set(before))
    assert added == sorted(set(original) - set(before))  # the records and images of stage 7, no scratch
    assert any(k.startswith("quantiles:") for k in added) and any(k.startswith("image:") for k in added)
    assert [k for k in added if k != "stage:quantiles" and not _same(after[k], original[k])] == []


def test_the_stage_off_stores_only_its_status(tiny_run, tmp_path):
    from precompute.job import Job
    from precompute.stages import quantiles

    older = tmp_path / "off"
    shutil.copytree(tiny_run, older)
    _strip_stage_7(older)
    before = set(_values(older))
    config = resolve_config("tiny", overrides={"quantiles": {"probe_images": 0}})
    meta = RunStore.open(older).meta
    with RunStore.create(older, meta["identity"], meta["config"], meta["versions"]) as store:
        job = Job(config=config, store=store, model=None, preprocess=None, source=None, neurons=[],
                  device=torch.device("cpu"), embedder_factory=None, log=lambda _: None)
        quantiles.run(job)
        assert store.read(sc.QuantileBands) == sc.QuantileBands.off(config.seed)
    assert set(_values(older)) - before == {"quantile_bands"}
    at = _below_the_top(older, 0, 2)
    assert not at.get("html") and len(at.caption) == 1 and "was off for this run" in at.caption[0].value


def test_quantile_settings_resolve_validate_and_name_the_run_only_when_changed(tmp_path):
    default, tiny = resolve_config("demo"), resolve_config("tiny")
    assert (default.quantiles.probe_images, default.quantiles.per_band) == (1000, 6)
    assert [tuple(b) for b in default.quantiles.bands] == list(DEFAULT_BANDS)
    assert tiny.quantiles.probe_images == 200
    # at the defaults the section stays out of the identity: stores made before the stage keep their id
    assert "quantiles" not in default.identity([0], {})["config"]
    assert tiny.identity([0], {})["config"]["quantiles"]["probe_images"] == 200
    config = tmp_path / "run.yaml"
    config.write_text("quantiles:\n  probe_images: 500\n  per_band: 4\n  bands: [[90, 100], [0, 10]]\n")
    quantiles = resolve_config(config_file=config).quantiles
    assert (quantiles.probe_images, quantiles.per_band, quantiles.bands) == (500, 4, [[90.0, 100.0],
                                                                                     [0.0, 10.0]])
    for bad in ({"probe_images": -1}, {"per_band": 0}, {"bands": [[10, 5]]}, {"bands": []}, {"n": 1}):
        with pytest.raises(ConfigError, match="quantiles"):
            resolve_config("tiny", overrides={"quantiles": bad})


# -- the neuron page: below the top ------------------------------------------------------------------------
SCRIPT = """
from app import analysis, quantile_view, store_access
from store import list_runs

run = store_access.run_ref(next(r for r in list_runs({root!r}) if r.directory.name == {name!r}))
nd = store_access.neuron_data(run, {neuron})
quantile_view.below_the_top(run, nd, analysis.clustering(run, {neuron}, {k}, "pure"))
"""


def _below_the_top(directory: Path, neuron: int, k: int) -> AppTest:
    script = SCRIPT.format(root=str(directory.parent), name=directory.name, neuron=neuron, k=k)
    at = AppTest.from_string(script, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_each_sample_goes_to_the_virtual_neuron_predict_names_and_the_page_counts_them(demo_runs_root):
    from app import analysis, quantile_view, store_access
    from store import list_runs

    directory = _demo_store(demo_runs_root)
    neuron, k = 0, 2
    with RunStore.open(directory) as store:
        seed = store.read(sc.RunMeta).seed
        pure = store.read(sc.PureVectors, neuron).values.astype(np.float64)
        fitted = VirtualNeurons.from_stored(store.read(sc.NeuronScores, neuron).centroids[k], pure,
                                            random_state=seed)
        samples = store.read(sc.QuantileSamples, neuron)
    expected = fitted.predict(samples.pure)
    unlike = fitted.unlike_any_circuit(samples.pure)
    run = store_access.run_ref(next(r for r in list_runs(directory.parent) if r.directory == directory))
    clustering = analysis.clustering(run, neuron, k, "pure")
    assigned, flagged = quantile_view.assign(samples, clustering)
    np.testing.assert_array_equal(assigned, expected)
    np.testing.assert_array_equal(flagged, unlike)

    at = _below_the_top(directory, neuron, k)
    (block,) = at.get("html")
    body = block.proto.body
    m = samples.n_samples
    for c in range(k):
        count, strays = int(np.sum(expected == c)), int(np.sum((expected == c) & unlike))
        top = round(100 * np.sum(fitted.labels_ == c) / len(pure))
        line = (f"VN {c + 1}: {count} of {m} samples below the top ({round(100 * count / m)} %) vs {top} % "
                "of the top references" + (f"; {strays} of them unlike any circuit" if strays else ""))
        assert f"{line}</li>" in body
    assert body.count("<img ") == m and body.count("unlike any circuit</span>") == int(unlike.sum())
    names = sc.QuantileBands.from_store({"state": "sampled", "bands": DEFAULT_BANDS})
    assert all(names.band_name(band) in body for band in range(len(DEFAULT_BANDS)))


def test_a_store_made_before_the_stage_shows_one_caption(tmp_path):
    from pure_explorer.fixtures import SMALL_NEURONS, write_small_store

    before = STAGES[:STAGES.index("quantiles")]
    older = write_small_store(tmp_path / "older", neurons={3: SMALL_NEURONS[3]}, stages=before)
    at = _below_the_top(older, 3, 2)
    assert not at.get("html") and [c.value for c in at.caption] == [
        "No reference quantiles in this run: stores written before precompute's `quantiles` stage lack them; "
        "the same precompute command adds them."
    ]
