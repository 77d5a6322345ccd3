"""pure_core.embed: the offline EfficientNet-Lite0 metric, open_clip image towers (tiny config, random or
local weights), fast failure for missing tags offline (no connection attempted, also without open_clip's
private helper), and the spec factory. No test touches the network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pure_core.embed import (
    EfficientNetLiteEmbedder,
    Embedder,
    OpenClipEmbedder,
    make_embedder,
    parse_open_clip_spec,
    safetensors_alternatives,
)
from pure_core.models import MissingWeightsError
from pure_explorer.testing import network_attempts


@pytest.fixture
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 48, 3), dtype=np.uint8)) for i in range(5)]


@pytest.fixture(scope="module")
def lite0_embedder() -> EfficientNetLiteEmbedder:
    return EfficientNetLiteEmbedder(batch_size=2)


# -- EfficientNet-Lite0 --------------------------------------------------------------------------------------
def test_lite0_embeds_two_crops_of_one_cat_closer_than_cat_and_coffee(lite0_embedder):
    import skimage.data

    cat, coffee = skimage.data.chelsea(), skimage.data.coffee()
    crops = [Image.fromarray(a) for a in (cat[0:300, 40:340], cat[20:290, 130:400], coffee)]
    z = lite0_embedder.embed(crops)
    assert z.shape == (3, 1280) and z.dtype == np.float32
    same_cat = np.linalg.norm(z[0] - z[1])
    assert same_cat < np.linalg.norm(z[0] - z[2]) and same_cat < np.linalg.norm(z[1] - z[2])


def test_lite0_embedder_is_an_embedder_and_batches_consistently(lite0_embedder, images):
    assert isinstance(lite0_embedder, Embedder)
    assert lite0_embedder.name == "efficientnet-lite0" and lite0_embedder.dim == 1280
    together = lite0_embedder.embed(images[:3])  # batch_size=2: batches of 2 and 1
    alone = np.concatenate([lite0_embedder.embed([image]) for image in images[:3]])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    assert lite0_embedder.embed([]).shape == (0, 1280)


def test_lite1_and_lite2_embed_at_their_own_resolution_and_agree_with_lite0_on_the_cat():
    import skimage.data

    cat, coffee = skimage.data.chelsea(), skimage.data.coffee()
    crops = [Image.fromarray(a) for a in (cat[0:300, 40:340], cat[20:290, 130:400], coffee)]
    for variant, size in (("efficientnet-lite1", 240), ("efficientnet-lite2", 260)):
        embedder = make_embedder(variant, batch_size=2)
        assert embedder.name == variant and embedder.preprocess.size == size
        z = embedder.embed(crops)
        assert z.shape == (3, 1280)
        assert np.linalg.norm(z[0] - z[1]) < min(np.linalg.norm(z[0] - z[2]), np.linalg.norm(z[1] - z[2]))
    with pytest.raises(ValueError, match="efficientnet-lite1"):
        EfficientNetLiteEmbedder("efficientnet-lite9")


@pytest.fixture(params=["open_clip's helper", "without open_clip's helper"])
def safetensors_rule(request, monkeypatch) -> str:
    """A test twice: with open_clip's private `_get_safe_alternatives`, and as if a release dropped it."""
    if request.param.startswith("without"):
        import open_clip.pretrained

        monkeypatch.delattr(open_clip.pretrained, "_get_safe_alternatives", raising=False)
    return request.param


# -- open_clip -----------------------------------------------------------------------------------------------
def test_missing_open_clip_tag_fails_fast_offline(monkeypatch, tmp_path, safetensors_rule):
    """No connection is attempted and open_clip's factory (whose download retries the hub for ~46 s offline)
    is never entered: the message names the repo, the file and the cache."""
    import open_clip

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entered = []
    monkeypatch.setattr(open_clip, "create_model_and_transforms", lambda *a, **k: entered.append(a))
    with network_attempts() as attempts, pytest.raises(MissingWeightsError) as info:
        make_embedder("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert attempts == [] and entered == []
    message = str(info.value)
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in message and str(tmp_path / "hf" / "hub") in message
    assert "open_clip_model.safetensors" in message and "checkpoint" in message


def test_safetensors_alternatives_follow_open_clips_rule(safetensors_rule):
    assert safetensors_alternatives("open_clip_pytorch_model.bin") == ["open_clip_model.safetensors"]
    assert safetensors_alternatives("weights.bin") == ["weights.safetensors"]
    assert safetensors_alternatives("epoch_32.pth") == ["epoch_32.safetensors"]
    assert safetensors_alternatives("model.safetensors") == [] and safetensors_alternatives("model.pt") == []


def test_unknown_tag_or_missing_path_is_reported(tiny_clip_config, tmp_path):
    with pytest.raises(ValueError, match="laion2b_s34b_b79k"):
        make_embedder("open_clip:ViT-B-32/no-such-tag")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        make_embedder(f"open_clip:{tiny_clip_config}/{tmp_path}/missing.pt")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        make_embedder("open_clip:No-Such-Model/none")


def test_tiny_open_clip_with_random_weights_embeds_mean_tokens(tiny_clip_config, images):
    embedder = make_embedder(f"open_clip:{tiny_clip_config}/none")
    assert isinstance(embedder, OpenClipEmbedder) and isinstance(embedder, Embedder)
    assert "random-weights" in embedder.name and embedder.pooling == "tokens"
    z = embedder.embed(images)
    assert z.shape == (5, 64) and embedder.dim == 64 and z.dtype == np.float32
    # tokens pooling = mean over all transformer output tokens (class token included), before ln_post/proj
    visual = embedder.model.visual
    x = torch.stack([embedder.preprocess(image) for image in images])
    with torch.no_grad():
        expected = visual.transformer(visual._embeds(x)).mean(dim=1).numpy()
    np.testing.assert_allclose(z, expected, atol=1e-5)


def test_image_features_pooling_uses_encode_image(tiny_clip_config, images):
    embedder = make_embedder(f"open_clip:{tiny_clip_config}/none#image_features")
    z = embedder.embed(images)
    assert z.shape == (5, 32) and embedder.dim == 32 and embedder.name.endswith("#image_features")
    x = torch.stack([embedder.preprocess(image) for image in images])
    with torch.no_grad():
        np.testing.assert_allclose(z, embedder.model.encode_image(x).numpy(), atol=1e-5)


def test_open_clip_checkpoint_path_round_trip(tiny_clip_config, images, tmp_path):
    original = OpenClipEmbedder(tiny_clip_config, None)
    path = tmp_path / "weights dir" / "tiny.pt"  # a path with '/' (and a space) inside the spec
    path.parent.mkdir()
    torch.save(original.model.state_dict(), path)
    loaded = make_embedder(f"open_clip:{tiny_clip_config}/{path}")
    assert loaded.name == f"open_clip:{tiny_clip_config}/{path}#tokens"
    np.testing.assert_allclose(loaded.embed(images), original.embed(images), atol=1e-5)
    rebuilt = make_embedder(loaded.name)  # an embedder's name is a spec that rebuilds it
    np.testing.assert_allclose(rebuilt.embed(images[:2]), original.embed(images[:2]), atol=1e-5)


# -- specs ---------------------------------------------------------------------------------------------------
def test_open_clip_specs_split_on_the_first_slash():
    assert parse_open_clip_spec("open_clip:ViT-B-32/openai") == ("ViT-B-32", "openai", "auto")
    assert parse_open_clip_spec("open_clip:ViT-B-32//data/w/clip.pt#image_features") == (
        "ViT-B-32", "/data/w/clip.pt", "image_features")
    assert parse_open_clip_spec("open_clip:ViT-B-32/none") == ("ViT-B-32", None, "auto")
    with pytest.raises(ValueError, match="open_clip:<model>/"):
        parse_open_clip_spec("open_clip:ViT-B-32")


def test_unknown_embedder_lists_the_options():
    with pytest.raises(ValueError) as info:
        make_embedder("clip-vit")
    assert "efficientnet-lite0" in str(info.value) and "open_clip:<model>/" in str(info.value)
