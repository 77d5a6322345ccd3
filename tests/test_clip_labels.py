"""pure_core.clip_labels and pure_core.vocabulary: CLIP's zero-shot labels against hand-computed cases and
open_clip's own calls, on a tiny CLIP built from its config (random weights: the maths and the plumbing are
tested here, not the quality of the names)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pure_core.clip_labels import (
    CROP_TEMPLATES,
    ClipProbe,
    centroids,
    check_clip_weights,
    make_clip_probe,
    parse_clip_spec,
    zero_shot_labels,
)
from pure_core.models import MissingWeightsError
from pure_core.vocabulary import (
    COLOURS,
    MAX_NAME_CHARS,
    PARTS,
    TEXTURES,
    VocabularyError,
    default_vocabulary,
    read_vocabulary,
    vocabulary_fingerprint,
)


@pytest.fixture(scope="module")
def probe(tiny_clip_config) -> ClipProbe:
    return make_clip_probe(f"open_clip:{tiny_clip_config}/none", batch_size=3)


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (30 + 5 * i, 40, 3), dtype=np.uint8)) for i in range(n)]


# -- the probe against open_clip's own calls ----------------------------------------------------------------
def test_text_features_are_the_unit_mean_of_each_names_unit_prompt_features(probe):
    names = ["dog snout", "striped", "red"]
    got = probe.encode_texts(names)
    with torch.no_grad():
        for row, name in zip(got, names, strict=True):
            prompts = probe.tokenizer([t.format(name) for t in CROP_TEMPLATES])
            features = torch.nn.functional.normalize(probe.model.encode_text(prompts).float(), dim=-1)
            expected = torch.nn.functional.normalize(features.mean(0), dim=0).numpy()
            np.testing.assert_allclose(row, expected, atol=1e-5)
    assert got.shape == (3, probe.dim) and probe.encode_texts([]).shape == (0, probe.dim)


def test_image_features_are_open_clips_encode_image_made_unit_length_in_any_batching(probe):
    images = _images(5)
    got = probe.encode_images(images)
    with torch.no_grad():
        x = torch.stack([probe.images.preprocess(image) for image in images])
        expected = torch.nn.functional.normalize(probe.model.encode_image(x).float(), dim=-1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_random_weights_are_the_same_in_every_build_so_the_app_searches_what_precompute_stored(
        probe, tiny_clip_config):
    again = make_clip_probe(f"open_clip:{tiny_clip_config}/none")
    np.testing.assert_array_equal(again.encode_texts(["cat"]), probe.encode_texts(["cat"]))
    assert again.name == probe.name == f"open_clip:{tiny_clip_config}/random-weights"


# -- zero-shot labels and centroids, by hand ----------------------------------------------------------------
def test_zero_shot_labels_are_the_softmax_of_scaled_cosines_by_hand():
    text = np.array([[1.0, 0.0], [0.0, 1.0], [np.sqrt(0.5), np.sqrt(0.5)]], dtype=np.float32)
    images = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    classes, probabilities = zero_shot_labels(images, text, logit_scale=10.0, m=2)
    assert classes.tolist() == [[1, 2], [0, 2]]
    # image 0: cosines (0, 1, 0.707) -> softmax of 10 x those
    logits = 10 * np.array([0.0, 1.0, np.sqrt(0.5)])
    softmax = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(probabilities[0], softmax[[1, 2]], rtol=1e-5)
    np.testing.assert_allclose(probabilities[1], softmax[[1, 2]], rtol=1e-5)  # the same by symmetry
    with pytest.raises(ValueError, match="must be"):
        zero_shot_labels(images, text[:, :1], 10.0)


def test_a_crop_whose_features_are_a_words_features_is_labelled_that_word(probe):
    names = ["honeycombed", "zebra", "window", "teapot"]
    text = probe.encode_texts(names)
    classes, probabilities = zero_shot_labels(text[[2, 0, 3]], text, probe.logit_scale, m=4)
    assert classes[:, 0].tolist() == [2, 0, 3]
    assert np.all(np.diff(probabilities, axis=1) <= 1e-7)  # most probable first


def test_centroids_are_unit_means_of_each_groups_features_and_zero_for_an_empty_group():
    features = np.array([[1, 0], [0, 1], [3, 4], [-1, 0]], dtype=np.float32)
    got = centroids(features, np.array([0, 0, 1, 0]), 3)
    np.testing.assert_allclose(got[0], [0.0, 1.0], atol=1e-6)  # (1,0) + (0,1) + (-1,0) = (0,1)
    np.testing.assert_allclose(got[1], [0.6, 0.8], atol=1e-6)
    np.testing.assert_array_equal(got[2], [0.0, 0.0])


# -- specs and weights ------------------------------------------------------------------------------------
def test_specs_name_an_open_clip_model_in_its_joint_space():
    assert parse_clip_spec("open_clip:ViT-B-32/openai") == ("ViT-B-32", "openai")
    assert parse_clip_spec("open_clip:ViT-B-32/none") == ("ViT-B-32", None)
    with pytest.raises(ValueError, match="open_clip"):
        parse_clip_spec("efficientnet-lite0")
    with pytest.raises(ValueError, match="#tokens"):
        parse_clip_spec("open_clip:ViT-B-32/openai#tokens")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        check_clip_weights("open_clip:No-Such-Model/openai")


def test_missing_weights_are_told_fast_offline_with_where_they_belong(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path))
    import socket

    attempts = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: attempts.append(address))
    with pytest.raises(MissingWeightsError, match="not on this machine"):
        check_clip_weights("open_clip:ViT-B-32/openai")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        check_clip_weights(f"open_clip:ViT-B-32/{tmp_path / 'clip.pt'}")
    assert attempts == []  # offline: no connection tried, so no download retries to wait for


def test_a_local_checkpoint_is_loaded_and_names_the_probe(tiny_clip_config, probe, tmp_path):
    path = tmp_path / "tiny-clip.pt"
    torch.save(probe.model.state_dict(), path)
    loaded = make_clip_probe(f"open_clip:{tiny_clip_config}/{path}")
    assert loaded.name == f"open_clip:{tiny_clip_config}/{path}"
    np.testing.assert_allclose(loaded.encode_texts(["cat"]), probe.encode_texts(["cat"]), atol=1e-6)


# -- vocabularies -----------------------------------------------------------------------------------------
def test_the_default_vocabulary_holds_imagenet_textures_parts_and_colours_once_each():
    names = default_vocabulary()
    folded = [n.casefold() for n in names]
    assert len(folded) == len(set(folded))
    assert names[0] == "tench" and "goldfish" in names  # ImageNet's classes first, CLIP's curated names
    assert set(TEXTURES) | set(PARTS) | set(COLOURS) <= set(names)
    assert 1000 < len(names) < 1100


def test_a_vocabulary_file_is_one_name_per_line_without_comments_blanks_or_repeats(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# parts of animals\ndog snout\n\n  cat   ear \nDog Snout\nfur\n", encoding="utf-8")
    assert read_vocabulary(path) == ("dog snout", "cat ear", "fur")
    assert vocabulary_fingerprint(read_vocabulary(path)) != vocabulary_fingerprint(("fur", "cat ear"))


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        (b"\xff\xfe\x00binary", "not UTF-8"),
        (b"# only a comment\n\n", "holds no name"),
        (("x" * (MAX_NAME_CHARS + 1)).encode(), "line 1"),
    ],
    ids=["missing", "binary", "empty", "long line"],
)
def test_bad_vocabulary_files_are_refused_naming_the_problem(tmp_path, content, message):
    path = tmp_path / "words.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VocabularyError, match=message):
        read_vocabulary(path)
