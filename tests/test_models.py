"""pure_core.models: builders, shipped EfficientNet-Lite0 weights, checkpoints, layers, preprocessing, and
fast failure when hub weights are missing offline: no connection attempted, no retry loop (no test here
touches the network)."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from pure_core import models
from pure_core.models import (
    EFFICIENTNET_LITE0_PREPROCESSING,
    LoadedModel,
    MissingWeightsError,
    ModelSpec,
    Preprocessing,
    UnknownLayerError,
    build_model,
    get_layer,
    layer_names,
    use_channels_last,
)
from pure_explorer.testing import network_attempts


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty torch-hub and HF caches under tmp_path, and downloads forbidden by the environment."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("PURE_OFFLINE", "1")
    return tmp_path


@pytest.fixture(scope="module")
def lite0() -> LoadedModel:
    return build_model(ModelSpec("efficientnet-lite0"))


def _top(loaded: LoadedModel, image: np.ndarray, k: int = 3) -> list[str]:
    with torch.no_grad():
        logits = loaded.model(loaded.preprocess.to_tensor(Image.fromarray(image))[None])
    return [loaded.categories[i] for i in logits[0].topk(k).indices.tolist()]


# -- efficientnet-lite0: real ImageNet weights, offline ------------------------------------------------------
def test_efficientnet_lite0_recognises_a_tabby_cat_and_an_espresso(lite0):
    import skimage.data

    assert len(lite0.categories) == 1000 and lite0.preprocess == EFFICIENTNET_LITE0_PREPROCESSING
    assert not lite0.model.training
    cat = _top(lite0, skimage.data.chelsea())
    assert "tabby" in cat and cat[0] in ("tabby", "tiger cat", "Egyptian cat"), cat
    assert "espresso" in _top(lite0, skimage.data.coffee())


@pytest.mark.parametrize("variant", [1, 2])
def test_shipped_lite1_and_lite2_load_as_lite0_does_and_recognise_a_cat_and_an_espresso(variant):
    import skimage.data
    import timm

    lite = models.EFFICIENTNET_LITES[f"efficientnet-lite{variant}"]
    source = models.load_state_dict(lite.weights_path())
    target = timm.create_model(f"tf_efficientnet_lite{variant}").state_dict()
    assert list(models.map_state_dict_in_order(source, target)) == list(target)  # every tensor, in order
    loaded = build_model(ModelSpec(lite.name))
    cfg = loaded.model.pretrained_cfg  # timm's own published preprocessing of this variant
    assert loaded.preprocess.size == cfg["input_size"][1]
    assert loaded.preprocess.resize == round(cfg["input_size"][1] / cfg["crop_pct"])
    cat = _top(loaded, skimage.data.chelsea())
    assert cat[0] in ("tabby", "tiger cat", "Egyptian cat"), cat
    assert "espresso" in _top(loaded, skimage.data.coffee())


def test_efficientnet_lite0_uses_its_published_preprocessing(lite0):
    assert lite0.preprocess == Preprocessing(size=224, resize=256, mean=(0.5,) * 3, std=(0.5,) * 3,
                                             interpolation="bicubic")


def test_shipped_lite0_keys_map_in_order_onto_timm_with_matching_shapes():
    import timm

    source = models.load_state_dict(models.EFFICIENTNET_LITES["efficientnet-lite0"].weights_path())
    target = timm.create_model("tf_efficientnet_lite0").state_dict()
    mapped = models.map_state_dict_in_order(source, target)
    assert list(mapped) == list(target)
    assert all(mapped[k].shape == target[k].shape for k in target)
    assert list(source)[0] == "_conv_stem.weight" and list(mapped)[0] == "conv_stem.weight"

    with pytest.raises(ValueError, match="tensors, but the model expects"):
        models.map_state_dict_in_order(dict(list(source.items())[:-1]), target)
    swapped = dict(source)
    first, second = list(swapped)[:2]
    swapped[first], swapped[second] = swapped[second], swapped[first]
    with pytest.raises(ValueError, match="shape"):
        models.map_state_dict_in_order(swapped, target)


# -- torchvision ---------------------------------------------------------------------------------------------
def test_torchvision_builder_without_weights_uses_imagenet_defaults():
    loaded = build_model(ModelSpec("resnet18"))
    assert loaded.categories is None and not loaded.model.training
    imagenet = Preprocessing(224, 256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")
    assert loaded.preprocess == imagenet
    assert loaded.spec == ModelSpec("resnet18")
    assert build_model("resnet18").spec == ModelSpec("resnet18")  # a bare name works too


def test_preprocessing_is_derived_from_torchvision_weights():
    from torchvision.models import ResNet18_Weights, ViT_B_16_Weights

    assert models.torchvision_preprocessing(ResNet18_Weights.IMAGENET1K_V1) == Preprocessing(224, 256)
    swag = models.torchvision_preprocessing(ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1)
    assert (swag.size, swag.resize, swag.interpolation) == (384, 384, "bicubic")


def test_unknown_builder_or_weights_name_the_options():
    with pytest.raises(ValueError, match="resnet18"):
        build_model(ModelSpec("resnet-18"))
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        build_model(ModelSpec("resnet18", weights="IMAGENET1K_V9"))


def test_missing_torchvision_weights_fail_fast_naming_the_file(offline):
    with network_attempts() as attempts, pytest.raises(MissingWeightsError) as info:
        build_model(ModelSpec("resnet18", weights="IMAGENET1K_V1"))
    assert attempts == [] and "no download attempted" in str(info.value)
    expected = offline / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    message = str(info.value)
    assert str(expected) in message and info.value.expected == str(expected)
    assert "--checkpoint" in message and "download.pytorch.org" in message
    assert not expected.exists()


def test_a_hanging_host_probe_is_abandoned_at_its_timeout(monkeypatch):
    """A connection attempt that hangs (a resolver or a firewall that drops packets) answers False at the
    probe's timeout, while the attempt itself is still hanging: the caller never waits for it."""
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    attempted, release, finished = [], threading.Event(), threading.Event()

    def hanging_connection(address, timeout=None, **_):
        attempted.append((address, timeout))
        release.wait(timeout=60)
        finished.set()
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", hanging_connection)
    try:
        assert models.host_reachable("https://weights.example/resnet.pth", timeout_s=0.05) is False
        assert attempted == [(("weights.example", 443), 0.05)] and not finished.is_set()
    finally:
        release.set()


# -- checkpoints ---------------------------------------------------------------------------------------------
def _forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_checkpoint_round_trip_gives_the_same_outputs(tmp_path):
    original = build_model(ModelSpec("resnet18")).model
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    plain, wrapped = tmp_path / "plain.pt", tmp_path / "wrapped.pth"
    torch.save(original.state_dict(), plain)
    parallel = {f"module.{k}": v for k, v in original.state_dict().items()}  # as DataParallel saves it
    torch.save({"state_dict": parallel, "epoch": 3}, wrapped)
    for path in (plain, wrapped):
        loaded = build_model(ModelSpec("resnet18", checkpoint=str(path)))
        assert torch.allclose(_forward(loaded.model, x), _forward(original, x), atol=1e-6)


def test_checkpoint_with_another_head_rebuilds_the_classifier(tmp_path):
    import torchvision

    finetuned = torchvision.models.resnet18(num_classes=10).eval()
    torch.save({"model": finetuned.state_dict()}, tmp_path / "ten.pt")
    loaded = build_model(ModelSpec("resnet18", checkpoint=str(tmp_path / "ten.pt")))
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(_forward(loaded.model, x), _forward(finetuned, x), atol=1e-6)


def test_checkpoint_that_does_not_fit_says_so(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pt")
    with pytest.raises(ValueError, match="does not fit"):
        build_model(ModelSpec("resnet18", checkpoint=str(tmp_path / "r34.pt")))
    with pytest.raises(FileNotFoundError):
        build_model(ModelSpec("resnet18", checkpoint=str(tmp_path / "missing.pt")))


# -- timm ----------------------------------------------------------------------------------------------------
def test_timm_model_takes_preprocessing_from_its_pretrained_cfg():
    loaded = build_model(ModelSpec("timm:resnet18"))
    assert loaded.preprocess.interpolation == "bicubic"
    assert (loaded.preprocess.size, loaded.preprocess.resize) == (224, int(224 / 0.95))
    assert "layer4" in layer_names(loaded.model)


def test_missing_timm_weights_fail_fast_naming_the_hub_repo(offline):
    with network_attempts() as attempts, pytest.raises(MissingWeightsError) as info:
        build_model(ModelSpec("timm:resnet18", weights="pretrained"))
    assert attempts == [] and "no download attempted" in str(info.value)
    message = str(info.value)
    assert "timm/resnet18.a1_in1k" in message and str(offline / "hf" / "hub") in message
    assert "--checkpoint" in message


def test_timm_weights_in_the_hf_cache_are_loaded_without_network(offline):
    """A file placed in the HF cache layout (as `huggingface-cli download` leaves it) is found and loaded."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18").eval()
    repo = offline / "hf" / "hub" / "models--timm--resnet18.a1_in1k"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    save_file(source.state_dict(), str(repo / "snapshots" / revision / "model.safetensors"))

    with network_attempts() as attempts:
        loaded = build_model(ModelSpec("timm:resnet18", weights="pretrained"))
    assert attempts == []
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(_forward(loaded.model, x), _forward(source, x), atol=1e-6)
    assert loaded.categories is not None and len(loaded.categories) == 1000


# -- demo ----------------------------------------------------------------------------------------------------
def test_demo_spec_uses_the_demo_net_and_its_preprocessing(monkeypatch):
    from synthetic import demo
    seen = {}

    def fake_load(path=None, train_if_missing=True, **_):
        seen["path"] = path
        model = demo.DemoNet(n_classes=2)
        model.demo_meta = {"world": {"classes": [["red circle", "blue square"], ["green star"]]}}
        return model

    monkeypatch.setattr(demo, "load_demo_model", fake_load)
    loaded = build_model(ModelSpec("demo", checkpoint=None))
    assert isinstance(loaded.model, demo.DemoNet) and not loaded.model.training
    assert loaded.preprocess == demo.DEMO_PREPROCESSING
    assert loaded.categories == ["red circle or blue square", "green star"]
    assert seen["path"] is None


# -- layers --------------------------------------------------------------------------------------------------
def test_get_layer_resolves_dotted_module_names():
    model = build_model(ModelSpec("resnet18")).model
    assert get_layer(model, "layer4") is model.layer4
    assert get_layer(model, "layer4.1.conv2") is model.layer4[1].conv2
    names = layer_names(model)
    assert "" not in names and names[:2] == ["conv1", "bn1"] and "layer3" in names


def test_unknown_layer_lists_close_matches_and_valid_names():
    model = build_model(ModelSpec("resnet18")).model
    with pytest.raises(UnknownLayerError) as info:
        get_layer(model, "layer5")
    error = info.value
    assert isinstance(error, KeyError) and isinstance(error, ValueError)
    message = str(error)
    assert not message.startswith(("'", '"'))  # not KeyError's quoted repr
    assert "Did you mean" in message and "layer4" in error.close_matches
    assert "conv1" in message and "layer_names(model)" in message
    with pytest.raises(KeyError):
        get_layer(model, "")


# -- preprocessing -------------------------------------------------------------------------------------------
def test_geometric_resizes_the_shorter_side_and_centre_crops():
    prep = Preprocessing(size=64, resize=80, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    wide = Image.new("L", (300, 200), color=128)  # grey: converted to RGB
    out = prep.geometric(wide)
    assert out.mode == "RGB" and out.size == (64, 64)
    # a marker column in the middle of a wide image stays in the middle after resize + crop
    array = np.zeros((100, 200, 3), dtype=np.uint8)
    array[:, 98:102] = 255
    centre = np.asarray(prep.geometric(Image.fromarray(array)))
    assert centre[:, 30:34].mean() > 200 and centre[:, :20].max() == 0


def test_to_tensor_and_denormalize_round_trip():
    prep = Preprocessing(size=32, resize=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                         interpolation="bicubic")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    x = prep.to_tensor(image)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    back = prep.denormalize(x)
    assert torch.allclose(back.permute(1, 2, 0) * 255, torch.from_numpy(np.array(image)).float(), atol=1e-3)
    batch = prep.to_batch([image, image])
    assert batch.shape == (2, 3, 32, 32) and torch.allclose(prep.denormalize(batch)[1], back)
    pixels = np.stack([np.asarray(prep.geometric(image))] * 2)  # already at the model's geometry
    assert torch.equal(prep.from_pixels(pixels), batch)
    flat = Image.new("RGB", (40, 40), color=(int(0.5 * 255), int(0.4 * 255), int(0.3 * 255)))
    assert prep.to_tensor(flat).abs().max() < 0.02  # the mean colour normalises to ~0


def test_preprocessing_validates_its_fields():
    with pytest.raises(ValueError):
        Preprocessing(size=64, resize=32)
    with pytest.raises(ValueError):
        Preprocessing(size=64, resize=64, interpolation="lanczos")
    spec = ModelSpec("resnet18", "DEFAULT")
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def test_convolutional_models_come_channels_last_with_the_same_outputs():
    loaded = build_model("efficientnet-lite0")
    conv = next(m for m in loaded.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        fast = loaded.model(loaded.preprocess.normalize(x))
        loaded.model.to(memory_format=torch.contiguous_format)
        plain = loaded.model(loaded.preprocess.normalize(x))
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    linear_only = use_channels_last(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    assert linear_only[0].weight.is_contiguous()
