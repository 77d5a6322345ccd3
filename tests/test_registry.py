"""Registries: models and dataset kinds are looked up by name; plugins register themselves."""

from __future__ import annotations

import socket
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from pure_core import registry
from pure_core.models import LoadedModel, MissingWeightsError, ModelSpec, Preprocessing, build_model
from pure_core.registry import MODELS, SOURCES, Registry
from pure_core.sources import DatasetConfig, DatasetError, check_dataset_path, open_source


def test_an_exact_name_beats_a_prefix_and_a_longer_prefix_beats_a_shorter_one():
    table: Registry = Registry("thing")
    table.register("", prefix=True)("fallback")
    table.register("timm:", prefix=True)("timm")
    table.register("timm:special")("special")
    assert table.find("resnet50") == "fallback"
    assert table.find("timm:convnext_tiny") == "timm"
    assert table.find("timm:special") == "special"
    assert table.names() == ["timm:special", "timm:*"]
    with pytest.raises(ValueError, match="registered already"):
        table.register("timm:special")("another")


def test_an_unknown_name_names_close_matches():
    table: Registry = Registry("dataset kind")
    table.register("world")("world source")
    with pytest.raises(ValueError, match="unknown dataset kind 'wrld'.*Did you mean: world"):
        table.get("wrld")


def test_the_synthetic_package_registers_the_demo_model_and_the_world_as_a_plugin():
    assert "synthetic" in registry.load_plugins() or "synthetic" in sys.modules
    assert MODELS.find("demo") is not None and SOURCES.find("world") is not None
    assert {"folder", "list", "world"} <= set(SOURCES.names())


def test_a_plugin_named_in_the_environment_registers_a_model_that_build_model_then_builds(
        tmp_path, monkeypatch):
    (tmp_path / "lab_models.py").write_text(textwrap.dedent('''
        import torch
        from pure_core.models import LoadedModel, Preprocessing
        from pure_core.registry import register_model

        @register_model("lab-net")
        def build(spec, fetch_missing=True):
            model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
            return LoadedModel(model, Preprocessing(size=8, resize=8), None, spec, default_layers=("1", "0"))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(registry.PLUGINS_ENV, "lab_models")
    loaded = build_model("lab-net")
    assert isinstance(loaded, LoadedModel) and loaded.default_layers == ("1", "0")
    assert not loaded.model.training  # build_model puts every registered model in eval mode


def test_the_demo_model_is_neither_trained_nor_downloaded_when_fetching_is_off(tmp_path):
    missing = tmp_path / "no-demo-model.pt"
    missing.write_bytes(b"")  # a file that exists (the checkpoint check passes) but is no checkpoint
    with pytest.raises(MissingWeightsError, match="python -m synthetic"):
        build_model(ModelSpec("demo", checkpoint=str(missing)), fetch_missing=False)


def test_torchvision_weights_are_not_downloaded_when_fetching_is_off(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("PURE_OFFLINE", raising=False)
    attempts = []

    def connect(*args, **kwargs):
        attempts.append(args)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "create_connection", connect)
    with pytest.raises(MissingWeightsError, match="no download attempted"):
        build_model(ModelSpec("resnet18", weights="DEFAULT"), fetch_missing=False)
    assert attempts == []  # not even a connection was tried


def test_dataset_kinds_come_from_the_registry(tmp_path):
    from pure_core.sources import dataset_config_from_string

    assert dataset_config_from_string("world:40") == DatasetConfig(kind="world", n_images=40)
    assert dataset_config_from_string(str(tmp_path)).kind == "folder"
    assert dataset_config_from_string("refs.txt").kind == "list"
    with pytest.raises(DatasetError, match="unknown dataset kind 'lmdb'"):
        check_dataset_path(DatasetConfig(kind="lmdb", path=str(tmp_path)))
    with pytest.raises(DatasetError, match="no dataset given.*world"):
        check_dataset_path(DatasetConfig(kind="folder"))
    world = open_source(DatasetConfig(kind="world", n_images=5))
    assert len(world) == 5 and not world.parallel_loading


def test_the_world_source_knows_the_planted_truth_of_its_references_and_files_do_not(tmp_path):
    world = open_source(DatasetConfig(kind="world", n_images=6, seed=2))
    boxes = np.array([[0, 0, 64, 64]] * 3)
    truth = world.ground_truth([0, 1, 2], boxes)
    assert truth.concepts == [world.annotation(i)["planted_concept"] for i in range(3)]
    assert truth.embeddings.shape[0] == 3 and truth.kind in ("polysemantic", "monosemantic", "mixed")
    # the whole image as crop: each planted object lies fully inside it
    for row, i in enumerate(range(3)):
        planted = [o for o in world.annotation(i)["objects"] if o["concept"] == truth.concepts[row]]
        assert truth.embeddings[row, planted[0]["concept_id"]] == 1.0
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    files = open_source(DatasetConfig(kind="folder", path=str(tmp_path)))
    assert files.ground_truth([0], boxes[:1]) is None


def test_preprocessing_normalize_is_the_one_normalisation_of_images_and_batches():
    prep = Preprocessing(size=4, resize=4, mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7))
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    single = prep.to_tensor(Image.fromarray(pixels))
    unit = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
    assert torch.equal(single, prep.normalize(unit))  # to_tensor = geometry + normalize
    assert torch.equal(prep.normalize(unit[None])[0], single)  # (B, 3, H, W) batches alike
    assert torch.allclose(single[2], (unit[2] - 0.3) / 0.7)
