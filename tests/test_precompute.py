"""precompute: configs, image sources, a full tiny run, and clear one-line errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from precompute.__main__ import main
from precompute.config import (
    ConfigError,
    RunConfig,
    load_config_file,
    parse_ks,
    parse_neurons,
    resolve_config,
)
from pure_core.sources import (
    DatasetConfig,
    DatasetError,
    dataset_config_from_string,
    iterate_batches,
    open_source,
)
from store import STAGES, RunStore

ROOT = Path(__file__).resolve().parents[1]
# A seconds-long run: 300 world images, 4 channels of the demo net, 8 references each.
TINY = ["--preset", "tiny", "--neurons", "0-3", "--n-ref", "8", "--ks", "2,3", "--no-progress"]


@pytest.fixture(scope="session")
def demo_model():
    """The trained demo net (trained once into the cache if missing)."""
    from synthetic.demo import load_demo_model

    return load_demo_model(progress=False)


def _cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "precompute", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "PURE_NO_PROGRESS": "1", **(env or {})})


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("precompute: error:")]
    assert len(lines) == 1, err
    return lines[0]


# -- configuration ---------------------------------------------------------------------------------
def test_neuron_specs_parse_and_out_of_range_ones_are_refused():
    assert parse_neurons("all", 4) == [0, 1, 2, 3]
    assert parse_neurons("0-2,7", 8) == [0, 1, 2, 7]
    assert parse_neurons("5,1,5", 8) == [1, 5]
    assert parse_neurons([3, 2], 8) == [2, 3]
    with pytest.raises(ConfigError, match="out of range.*8 channels"):
        parse_neurons("0-8", 8)
    with pytest.raises(ConfigError, match="cannot read"):
        parse_neurons("a-b", 8)


def test_ks_parse():
    assert parse_ks("2..5") == [2, 3, 4, 5]
    assert parse_ks("2-3") == [2, 3]
    assert parse_ks("4,2") == [2, 4]
    with pytest.raises(ConfigError):
        parse_ks("1,2")


def test_presets_file_and_flags_override_in_that_order(tmp_path):
    assert resolve_config().model.name == "demo"
    file = tmp_path / "run.yaml"
    file.write_text("preset: efficientnet-lite0\nn_ref: 40\ndataset: /data/pics\n"
                    "crop:\n  display_kernel: 31\n")
    config = resolve_config(config_file=file, overrides={"n_ref": 20})
    assert (config.model.name, config.layer, config.n_ref) == ("efficientnet-lite0", "blocks.6", 20)
    assert (config.dataset.kind, config.dataset.path) == ("folder", "/data/pics")
    assert config.crop.display_kernel == 31 and config.crop.embed_kernel == 5
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "tiny"\nks = [2, 4]\n[model]\nname = "demo"\n')
    assert resolve_config(config_file=toml).ks == [2, 4]
    assert load_config_file(toml)["model"] == {"name": "demo"}


def test_bad_config_files_name_the_problem(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("n_reff: 3\n")
    with pytest.raises(ConfigError, match="unknown setting.*n_reff"):
        resolve_config(config_file=file)
    file.write_text("n_ref: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(config_file=file)
    with pytest.raises(ConfigError, match="cannot read config file"):
        resolve_config(config_file=tmp_path / "missing.yaml")
    file.write_text("crop:\n  heatmap: lrp-epsilon\n")
    with pytest.raises(ConfigError, match="crop heatmap must be one of auto, lrp, gradient_x_input"):
        resolve_config(config_file=file)


def test_the_crop_heatmap_is_resolved_for_the_model_and_never_switched_on_resume(demo_model):
    from types import SimpleNamespace

    from precompute.job import PrecomputeError
    from precompute.stages.crops import heatmap_method
    from store.schema import CropMethod

    recorded = {}
    store = SimpleNamespace(read=lambda record_type: recorded.get(record_type))

    def job(heatmap: str) -> SimpleNamespace:
        return SimpleNamespace(model=demo_model, store=store,
                               config=SimpleNamespace(crop=SimpleNamespace(heatmap=heatmap)))

    assert resolve_config(overrides={"preset": "efficientnet-lite0"}).crop.heatmap == "auto"
    assert heatmap_method(job("auto")) == "gradient_x_input"  # the demo net has no LRP canonizer
    with pytest.raises(PrecomputeError, match="does not support"):
        heatmap_method(job("lrp"))
    recorded[CropMethod] = CropMethod("lrp")  # a store whose crops were begun with another method
    with pytest.raises(PrecomputeError, match="made with 'lrp' heatmaps"):
        heatmap_method(job("auto"))


def test_identity_ignores_runtime_settings_but_not_results_settings():
    a = resolve_config(overrides={"device": "cpu", "batch_size": 8, "out": "/x"})
    b = resolve_config(overrides={"device": "cuda", "batch_size": 512, "out": "/y"})
    fingerprints = {"model": "m", "dataset": {}}
    assert a.identity([0, 1], fingerprints) == b.identity([0, 1], fingerprints)
    c = resolve_config(overrides={"n_ref": 7})
    assert a.identity([0, 1], fingerprints) != c.identity([0, 1], fingerprints)
    assert a.identity([0, 1], fingerprints) != a.identity([0, 2], fingerprints)


def test_example_configs_load_and_the_demo_file_is_the_default_run():
    files = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs").glob("*.toml"))
    assert len(files) >= 3
    for file in files:
        assert isinstance(resolve_config(config_file=file), RunConfig)
    fingerprints = {"model": "m", "dataset": {}}
    from_file = resolve_config(config_file=ROOT / "configs" / "demo.yaml")
    assert from_file.identity([0], fingerprints) == resolve_config().identity([0], fingerprints)


# -- image sources -----------------------------------------------------------------------------------
def _write_images(folder: Path, names: list[str], size: int = 20) -> None:
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size, size + i), (10 * i, 100, 200)).save(path)


def test_folder_source_lists_images_recursively_in_a_stable_order(tmp_path):
    _write_images(tmp_path, ["b/2.png", "a/1.jpg", "a/0.PNG", "c/d/3.webp"])
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    _write_images(tmp_path, [".hidden/x.png"])
    source = open_source(DatasetConfig(kind="folder", path=str(tmp_path)))
    listed = [source.relative_path(i) for i in range(len(source))]
    assert listed == ["a/0.PNG", "a/1.jpg", "b/2.png", "c/d/3.webp"]
    assert source.load(1).mode == "RGB"
    assert source.fingerprint() == open_source(DatasetConfig(kind="folder", path=str(tmp_path))).fingerprint()
    # an ImageFolder tree labels each image by its first folder under the root
    assert [source.dataset_label(i) for i in range(len(source))] == ["a", "a", "b", "c"]
    _write_images(tmp_path / "flat", ["1.png"])
    assert open_source(DatasetConfig(kind="folder", path=str(tmp_path / "flat"))).dataset_label(0) is None


def test_list_file_paths_are_relative_to_the_list(tmp_path):
    _write_images(tmp_path / "imgs", ["x.png", "y.png"])
    listing = tmp_path / "list.txt"
    listing.write_text("# two images\nimgs/y.png\n\nimgs/x.png\n")
    config = dataset_config_from_string(str(listing))
    assert config.kind == "list"
    source = open_source(config)
    assert [Path(source.describe(i)).name for i in range(len(source))] == ["y.png", "x.png"]


def test_missing_and_empty_datasets_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path / 'nope'} does not exist"):
        open_source(DatasetConfig(kind="folder", path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=f"no images found in {tmp_path / 'empty'}"):
        open_source(DatasetConfig(kind="folder", path=str(tmp_path / "empty")))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DatasetError, match="names no images"):
        open_source(DatasetConfig(kind="list", path=str(tmp_path / "empty.txt")))


def test_unreadable_images_are_reported_per_batch_not_raised(tmp_path):
    _write_images(tmp_path, ["0.png", "2.png"])
    (tmp_path / "1.png").write_bytes(b"not a png")
    source = open_source(DatasetConfig(kind="folder", path=str(tmp_path)))

    def to_tensor(image):
        import torch

        return torch.zeros(3, 4, 4)

    batches = list(iterate_batches(source, range(3), to_tensor, batch_size=2))
    assert [b[1].tolist() for b in batches] == [[0], [2]]
    assert batches[0][2][0][0] == 1 and "1.png" in batches[0][2][0][1]


# -- a full tiny run -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, demo_model) -> Path:
    out = tmp_path_factory.mktemp("precompute") / "tiny"
    assert main([*TINY, "--out", str(out)]) == 0
    return out


def test_tiny_run_fills_the_store_as_the_contract_says(tiny_store):
    from store import schema as sc

    with RunStore.open(tiny_store) as store:
        assert store.complete and set(store.stages_done()) == set(STAGES)
        config = store.config
        assert config["model"]["name"] == "demo" and config["dataset"]["kind"] == "world"
        assert config["neurons"] == [0, 1, 2, 3] and config["ks"] == [2, 3]
        assert {"torch", "numpy", "umap-learn"} <= set(store.meta["versions"])
        assert config["crop"]["heatmap"] == "gradient_x_input"  # the demo preset names it
        assert store.read(sc.CropMethod).heatmap == "gradient_x_input"
        refs = store.read(sc.References)
        n, n_ref = refs.indices.shape
        assert (n, n_ref) == (4, 8) and refs.positions.shape == (4, 8, 2)
        assert np.all(np.diff(refs.max_activations, axis=1) <= 0)  # descending activation
        c_lower, c_layer = config["channels"]["lower_layer"], config["channels"]["layer"]
        from synthetic.world import SyntheticWorld

        world = SyntheticWorld(config["dataset"]["n_images"], config["dataset"]["seed"])
        for row, neuron in enumerate(refs.neuron_ids):
            for index in refs.indices[row]:
                image = Image.open(io.BytesIO(store.read(sc.ReferenceImage, int(index)).data))
                assert image.format == "WEBP" and image.size == (64, 64)
                # small images are stored exactly: an upload of a stored reference fires as it did
                np.testing.assert_array_equal(np.asarray(image.convert("RGB")), world.render(int(index))[0])
            pure = store.read(sc.PureVectors, neuron).values
            assert pure.dtype == np.float16 and pure.shape == (n_ref, c_lower)
            assert np.allclose(np.abs(pure.astype(np.float32)).sum(1), 1, atol=1e-2)
            assert store.read(sc.ActivationVectors, neuron).values.shape == (n_ref, c_layer)
            boxes = store.read(sc.CropBoxes, neuron).values
            assert boxes.shape == (n_ref, 4) and np.all(boxes[:, 2] > boxes[:, 0])
            assert len(store.read(sc.Crops, neuron).images) == len(store.read(sc.Thumbnails, neuron).images)
            assert len(store.read(sc.Crops, neuron).images) == n_ref
            assert store.read(sc.Embeddings, neuron).values.shape[0] == n_ref
            umap = store.read(sc.UmapCoordinates, neuron)
            assert umap.pure.shape == umap.activation.shape == (n_ref, 2)
            scores = store.read(sc.NeuronScores, neuron)
            assert set(scores.methods) == {"pure", "activation", "embedding"}
            assert set(scores.methods["pure"]) == {2, 3} and scores.centroids[3].shape == (3, c_lower)
            assert np.isclose(scores.polysemanticity, scores.rho_inter - scores.rho_intra)
            assert len(scores.oracle.concepts) == n_ref
        summary = store.read(sc.Summary).rows
        assert [r.neuron for r in summary] == [0, 1, 2, 3]
        assert all(r.oracle_polysemanticity is not None for r in summary)
        assert set(store.read(sc.MethodComparison).methods) == {"pure", "activation", "embedding"}
        assert set(store.read(sc.DistanceCorrelation).methods) == {"pure", "activation"}
        # bookkeeping is gone from the finished store
        assert store.get("references:state") is None and store.get("chunk:crops:0") is None
    # finished stores use a rollback journal: one self-contained file a read-only mount can serve
    assert not (tiny_store / "cache.db-wal").exists()


def test_the_references_carry_the_models_predictions_and_the_datasets_labels_and_so_do_virtual_neurons(
    tiny_store, demo_model
):
    """Stage 2 stores the classifier's top classes of each reference (as a plain forward pass of the whole
    model gives them); stage 5 labels each virtual neuron from them, and the ranking row carries k = 2's."""
    import torch

    from pure_core.labels import label_shares
    from pure_core.sources import DatasetConfig, open_source
    from pure_core.virtual import VirtualNeurons
    from store import schema as sc
    from synthetic.demo import DEMO_PREPROCESSING

    with RunStore.open(tiny_store) as store:
        names = store.read(sc.ClassNames).names
        assert len(names) == demo_model(torch.zeros(1, 3, 64, 64)).shape[1] and " or " in names[0]
        refs = store.read(sc.References)
        source = open_source(DatasetConfig(**store.config["dataset"]))
        summary = {r.neuron: r for r in store.read(sc.Summary).rows}
        for row, neuron in enumerate(refs.neuron_ids):
            predicted = store.read(sc.ReferencePredictions, neuron)
            assert predicted.classes.shape == predicted.probabilities.shape == (refs.n_ref, 5)
            x = torch.stack([DEMO_PREPROCESSING.to_tensor(source.load(int(i))) for i in refs.indices[row]])
            with torch.no_grad():
                expected = torch.softmax(demo_model(x), dim=1)
            top = torch.sort(expected, dim=1, descending=True, stable=True)
            assert np.array_equal(predicted.classes, top.indices[:, :5].numpy())
            assert np.allclose(predicted.probabilities, top.values[:, :5].numpy(), atol=2e-3)
            labels = store.read(sc.VirtualNeuronLabels, neuron)
            scores = store.read(sc.NeuronScores, neuron)
            assert set(labels.by_k) == set(scores.centroids) == {2, 3}
            pure = store.read(sc.PureVectors, neuron).values.astype(np.float64)
            for k, groups in labels.by_k.items():
                members = VirtualNeurons.from_stored(scores.centroids[k], pure).labels_
                expected_labels = label_shares(predicted.labels, members, k)
                assert [[(s.label, s.count) for s in g] for g in groups] == \
                    [[(s.label, s.count) for s in g] for g in expected_labels]
            assert summary[neuron].labels == labels.first_labels(2)
            # the dataset's labels: each reference's planted concept, and the virtual neurons' from them
            data_names = store.read(sc.DatasetLabelNames).names
            codes = store.read(sc.ReferenceDatasetLabels, neuron).values
            assert [data_names[c] for c in codes] == [source.dataset_label(int(i)) for i in refs.indices[row]]
            data_labels = store.read(sc.VirtualNeuronDataLabels, neuron)
            for k, groups in data_labels.by_k.items():
                members = VirtualNeurons.from_stored(scores.centroids[k], pure).labels_
                expected_labels = label_shares(codes, members, k)
                assert [[(s.label, s.count) for s in g] for g in groups] == \
                    [[(s.label, s.count) for s in g] for g in expected_labels]
            assert summary[neuron].data_labels == data_labels.first_labels(2)


def test_rerunning_a_finished_run_does_nothing_and_says_how_to_open_it(tiny_store, capsys):
    assert main([*TINY, "--out", str(tiny_store)]) == 0
    out = capsys.readouterr().out
    assert "already holds this run" in out
    # the last line is the command that opens the dashboard on this store's folder, and where to look
    assert out.strip().splitlines()[-1] == (f"  dashboard: streamlit run app/main.py -- --runs-dir "
                                            f"{tiny_store.parent}  (then open http://localhost:8501)")


def test_another_config_in_the_same_directory_is_refused(tiny_store, capsys):
    assert main([*TINY, "--n-ref", "9", "--ks", "2,4", "--out", str(tiny_store)]) == 2
    line = _error_line(capsys)
    assert "another config" in line
    assert "settings that differ: ks ([2, 3] -> [2, 4]), n_ref (8 -> 9)" in line


def test_inspect_prints_the_summary_and_json(tiny_store, capsys):
    assert main(["inspect", str(tiny_store)]) == 0
    text = capsys.readouterr().out
    from synthetic.demo import DEMO_LAYER, DEMO_LOWER_LAYER

    assert f"{DEMO_LAYER} <- circuits in {DEMO_LOWER_LAYER}" in text and "most polysemantic" in text
    assert "crops from gradient_x_input heatmaps" in text
    assert main(["inspect", str(tiny_store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] and info["n_neurons"] == 4 and len(info["scores"]["top"]) == 4
    assert info["crop_heatmaps"] == "gradient_x_input"
    from store import schema as sc

    with RunStore.open(tiny_store) as store:  # the median crop area, by hand from the stored boxes (64 px)
        neurons = store.read(sc.References).neuron_ids
        boxes = np.concatenate([store.read(sc.CropBoxes, n).values for n in neurons])
    expected = np.median((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 64**2)
    assert info["crop_fraction_median"] == pytest.approx(expected) and 0 < expected <= 1
    assert f"median {expected:.0%} of the image" in text
    assert main(["inspect", str(tiny_store.parent / "nothing")]) == 2


# -- bad input: one line on stderr, non-zero exit -------------------------------------------------------
def test_unknown_layer_lists_valid_names(tmp_path, demo_model, capsys):
    assert main([*TINY, "--layer", "block9", "--out", str(tmp_path / "x")]) == 2
    line = _error_line(capsys)
    assert "block9" in line and "block4" in line
    assert "e.g. 'fc' or 'fc.free'" in line  # the hint's examples are this model's own layers
    assert not (tmp_path / "x").exists()  # nothing written for a config that cannot run


def test_out_of_range_neurons_are_refused(tmp_path, demo_model, capsys):
    assert main([*TINY, "--neurons", "0-99", "--out", str(tmp_path / "x")]) == 2
    assert "out of range" in _error_line(capsys)


def test_empty_dataset_names_the_path(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([*TINY, "--dataset", str(tmp_path / "empty"), "--out", str(tmp_path / "x")]) == 2
    assert str(tmp_path / "empty") in _error_line(capsys)


def test_all_unreadable_dataset_fails_and_some_unreadable_are_skipped(tmp_path, demo_model, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.jpg").write_bytes(b"\xff\xd8 broken")
    assert main([*TINY, "--dataset", str(bad), "--out", str(tmp_path / "x")]) == 2
    line = _error_line(capsys)
    assert "all 3 images" in line and str(bad) in line
    assert not (tmp_path / "x").exists()  # no half-started store is left behind

    from synthetic.world import SyntheticWorld

    mixed = tmp_path / "mixed" / "class_a"
    mixed.mkdir(parents=True)
    world = SyntheticWorld(12, seed=5)
    for i in range(12):
        Image.fromarray(world.render(i)[0]).save(mixed / f"{i:02d}.png")
    (mixed / "05.png").write_bytes(b"truncated")
    (mixed / "07.png").write_bytes(b"")
    out = tmp_path / "mixed-run"
    assert main([*TINY, "--dataset", str(mixed.parent), "--neurons", "0", "--n-ref", "4", "--ks", "2",
                 "--out", str(out)]) == 0
    assert "skipped 2 unreadable image(s) of 12" in capsys.readouterr().out
    with RunStore.open(out) as store:
        assert store.get("scan")["n_skipped"] == 2
        assert not {5, 7} & set(store.get("references")["indices"].ravel().tolist())


def test_missing_weights_fail_fast_before_any_data_is_read(tmp_path):
    """The resnet50-imagenet preset offline: one line naming the missing file, no download attempted (so no
    retry loop; tests/test_models.py checks that no connection is opened on this path), nothing written."""
    data = tmp_path / "val"
    _write_images(data, ["n01440764/a.JPEG"])
    result = _cli("--preset", "resnet50-imagenet", "--dataset", str(data), "--out", str(tmp_path / "x"),
                  env={"TORCH_HOME": str(tmp_path / "torch-home"), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "resnet50-11ad3fa6.pth" in lines[0] and str(tmp_path / "torch-home") in lines[0]  # file and place
    assert not (tmp_path / "x").exists()
    assert "no download attempted" in lines[0]


def test_disk_full_is_one_clear_line_and_the_run_resumes(tmp_path, demo_model, monkeypatch, capsys):
    """ENOSPC while a chunk is written: its transaction rolls back, the message says how to go on, and the
    same command then finishes the run."""
    import errno

    from store.schema import CropBoxes, Crops

    out = tmp_path / "full"
    args = [*TINY, "--neurons", "0", "--n-ref", "4", "--ks", "2", "--out", str(out)]
    original = RunStore.write

    def write(self, record, index=None):
        if isinstance(record, Crops):  # after this chunk's boxes were written, inside the same transaction
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, record, index)

    monkeypatch.setattr(RunStore, "write", write)
    assert main(args) == 2
    line = _error_line(capsys)
    assert "no space left" in line and "run the same command again" in line
    with RunStore.open(out) as store:
        assert store.stages_done()["attributions"] and not store.stages_done()["crops"]
        assert store.get("boxes:0") is None and not store.is_chunk_done("crops", 0)  # rolled back
    monkeypatch.setattr(RunStore, "write", original)
    assert main(args) == 0
    with RunStore.open(out) as store:
        assert store.complete and store.read(CropBoxes, 0).values.shape == (4, 4)


def test_errors_from_the_command_line_have_no_traceback_unless_debug(tmp_path):
    result = _cli("--preset", "tiny", "--dataset", str(tmp_path / "missing"), "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "does not exist" in result.stderr
    result = _cli("--preset", "tiny", "--dataset", str(tmp_path / "missing"), "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_a_real_model_named_without_a_preset_gets_the_library_defaults_not_the_demos():
    demo = resolve_config()
    custom = resolve_config(overrides={"model": {"name": "resnet50"}, "layer": "layer4"})
    assert (demo.preset, demo.crop.heatmap, demo.crop.embed_threshold, demo.crop.embed_side) == (
        "demo", "gradient_x_input", 0.3, 24)
    assert (custom.preset, custom.crop.heatmap, custom.crop.embed_threshold) == ("custom", "auto", 0.01)
    assert custom.n_ref == 100 and custom.dataset.kind == "folder"
    assert resolve_config(overrides={"model": {"name": "demo"}}).preset == "demo"
