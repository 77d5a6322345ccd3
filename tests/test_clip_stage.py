"""Stage 6 (`precompute.stages.clip_labels`) on a tiny run with a tiny CLIP built from its config: skipped in
one line while the weights are missing, filled in by the same command once they are there (the other stages
untouched), and what it stores equals CLIP's labels recomputed from the stored crops; the app's free-text
search finds the virtual neuron whose crops a text was made from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from app.search import clip_hits
from precompute.__main__ import main
from pure_core import clip_labels
from pure_core.labels import label_shares
from pure_core.virtual import VirtualNeurons
from store import STAGES, RunStore
from store import schema as sc
from store.codecs import decode_image

ARGS = ["--preset", "tiny", "--neurons", "0-3", "--n-ref", "8", "--ks", "2,3", "--no-progress"]
WORDS = ["hstripes", "vstripes", "checker", "dots", "red", "blue", "bar", "blob"]


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory, tiny_clip_config, capsys_module):
    """(store dir, spec, first run's output, stage seconds after the first run): the run made while the
    checkpoint was missing, then made again once it is there."""
    root = tmp_path_factory.mktemp("clip-run")
    checkpoint = root / "tiny-clip.pt"
    vocabulary = root / "words.txt"
    vocabulary.write_text("\n".join(WORDS), encoding="utf-8")
    spec = f"open_clip:{tiny_clip_config}/{checkpoint}"
    args = [*ARGS, "--clip", spec, "--vocabulary", str(vocabulary), "--out", str(root / "run")]
    assert main(args) == 0
    first = capsys_module()
    with RunStore.open(root / "run") as store:
        seconds = store.stage_seconds()
        status = store.read(sc.ClipLabelStatus)
        assert store.complete and status.state == "skipped" and store.read(sc.ClipLabelNames) is None
    probe = clip_labels.make_clip_probe(f"open_clip:{tiny_clip_config}/none")
    torch.save(probe.model.state_dict(), checkpoint)
    assert main(args) == 0
    return root / "run", spec, first, seconds


@pytest.fixture(scope="module")
def capsys_module():
    """Output printed since the last call (module-scoped runs cannot use capsys)."""
    import contextlib
    import io

    buffer = io.StringIO()
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(buffer))

    def read() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    yield read
    stack.close()


def test_missing_weights_skip_the_stage_in_one_line_and_the_same_command_fills_it_in(clip_run):
    out, spec, first, seconds = clip_run
    lines = [line for line in first.splitlines() if "CLIP labels" in line]
    assert len(lines) == 1 and "skipped" in lines[0] and "does not exist" in lines[0], first
    with RunStore.open(out) as store:
        assert store.complete and set(store.stages_done()) == set(STAGES)
        status = store.read(sc.ClipLabelStatus)
        assert status.state == "labelled" and status.model == spec and status.templates
        after = store.stage_seconds()
    # the other stages were not run again
    others = [s for s in STAGES if s != "clip_labels"]
    assert {s: after[s] for s in others} == {s: seconds[s] for s in others}


def test_stored_clip_labels_are_clips_labels_of_the_stored_crops(clip_run):
    out, spec, _, _ = clip_run
    probe = clip_labels.make_clip_probe(spec)
    text = probe.encode_texts(WORDS)
    with RunStore.open(out) as store:
        assert store.read(sc.ClipLabelNames).names == tuple(WORDS)
        refs = store.read(sc.References)
        index = store.read(sc.ClipCentroidIndex)
        label_index = store.read(sc.LabelIndex)
        summary = store.read(sc.Summary)
        for neuron in refs.neuron_ids:
            crops = [decode_image(data) for data in store.read(sc.Crops, neuron).images]
            features = probe.encode_images(crops)
            classes, probabilities = clip_labels.zero_shot_labels(features, text, probe.logit_scale, 5)
            stored = store.read(sc.ReferenceClipLabels, neuron)
            assert stored.classes.shape == (8, 5)
            np.testing.assert_array_equal(stored.classes, classes)
            np.testing.assert_allclose(stored.probabilities, probabilities, atol=2e-3)
            pure = store.read(sc.PureVectors, neuron).values
            by_k = store.read(sc.VirtualNeuronClipLabels, neuron).by_k
            centres = store.read(sc.VirtualNeuronClipCentroids, neuron).by_k
            for k, stored_centroids in store.read(sc.NeuronScores, neuron).centroids.items():
                groups = VirtualNeurons.from_stored(stored_centroids, pure).labels_
                expected = label_shares(classes[:, 0], groups, k)
                assert [[(s.label, s.count) for s in vn] for vn in by_k[k]] == \
                    [[(s.label, s.count) for s in vn] for vn in expected]
                np.testing.assert_allclose(centres[k], clip_labels.centroids(features, groups, k), atol=2e-3)
                rows = (index.neuron == neuron) & (index.k == k)
                np.testing.assert_array_equal(index.virtual_neuron[rows], np.arange(k))
                np.testing.assert_array_equal(index.vectors[rows], centres[k])
        assert len(index.neuron) == len(refs.neuron_ids) * (2 + 3)
        clip_rows = label_index.source == sc.LabelIndex.SOURCES.index("clip")
        assert clip_rows.any() and (label_index.source == sc.LabelIndex.SOURCES.index("data")).any()
        assert all(row.clip_labels is not None and len(row.clip_labels) == 2 for row in summary.rows)


def test_free_text_search_ranks_first_the_virtual_neuron_whose_crops_the_text_was_made_of(clip_run):
    out, spec, _, _ = clip_run
    with RunStore.open(out) as store:
        index = store.read(sc.ClipCentroidIndex)
    row = 1  # VN 2 of the first neuron at k = 2 as the query: the top hit (ties go to the smaller k)
    query = index.vectors[row].astype(np.float32)
    hits = clip_hits(index, query / np.linalg.norm(query), limit=3)
    assert len(hits) == 3 and hits["neuron"].is_unique
    assert (int(hits["neuron"][0]), int(hits["k"][0]), int(hits["virtual_neuron"][0]) - 1) == \
        (int(index.neuron[row]), int(index.k[row]), int(index.virtual_neuron[row]))
    assert hits["similarity"][0] == pytest.approx(1.0, abs=2e-3)
    assert hits["similarity"].is_monotonic_decreasing


APP = Path(__file__).resolve().parents[1] / "app" / "main.py"


def test_the_dashboard_shows_clip_labels_and_finds_virtual_neurons_by_any_words(clip_run, monkeypatch):
    out, _, _, _ = clip_run
    monkeypatch.setenv("PURE_RUNS_DIR", str(out.parent))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params = {"run": out.name}
    at.run()
    with RunStore.open(out) as store:
        word = WORDS[store.read(sc.VirtualNeuronClipLabels, 0).by_k[2][0][0].label]
    at.text_input(key="ranking_search").set_value(word).run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert f"Virtual neurons labelled `{word}`" in text and f"look like `{word}`" in text
    labelled, clip = at.dataframe[0].value, at.dataframe[1].value
    assert "clip" in set(labelled["source"])
    assert len(clip) == 4 and clip["similarity"].is_monotonic_decreasing  # every neuron, best VN first
    at.text_input(key="ranking_search").set_value("a striped thing no vocabulary holds").run()
    assert not at.exception and len(at.dataframe[0].value) == 4  # free text: CLIP still ranks every neuron


def test_the_neuron_page_names_each_virtual_neuron_by_clip_beside_the_datas_labels(clip_run, monkeypatch):
    out, _, _, _ = clip_run
    monkeypatch.setenv("PURE_RUNS_DIR", str(out.parent))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params = {"page": "neuron", "run": out.name, "neuron": "0", "k": "2"}
    at.run()
    assert not at.exception
    with RunStore.open(out) as store:
        first = store.read(sc.VirtualNeuronClipLabels, 0).by_k[2][0][0]
    headers = [m.value for m in at.markdown if "**VN 1**" in m.value]
    assert headers and " · CLIP: " in headers[0] and f"`{WORDS[first.label]}` {first.share:.0%}" in headers[0]


def test_clip_settings_resolve_from_flags_and_files_and_bad_ones_are_refused(tmp_path):
    from precompute.config import ConfigError, resolve_config

    assert resolve_config("tiny").clip.model == "open_clip:ViT-B-32/openai"  # on by default, skipped offline
    assert resolve_config("tiny", overrides={"clip": {"model": "none"}}).clip.model is None
    config = tmp_path / "run.yaml"
    config.write_text("clip:\n  model: open_clip:ViT-B-16/openai\n  vocabulary: words.txt\n  top: 3\n")
    clip = resolve_config(config_file=config).clip
    assert (clip.model, clip.vocabulary, clip.top) == ("open_clip:ViT-B-16/openai", "words.txt", 3)
    for bad in ({"model": "efficientnet-lite0"}, {"top": 0}):
        with pytest.raises(ConfigError, match="clip"):
            resolve_config("tiny", overrides={"clip": bad})
    # a vocabulary file's location is not part of the run; its content is (a fingerprint, see main)
    a = resolve_config("tiny", overrides={"clip": {"vocabulary": "/a/words.txt"}})
    b = resolve_config("tiny", overrides={"clip": {"vocabulary": "/b/words.txt"}})
    assert a.identity([0], {}) == b.identity([0], {})


def test_an_unreadable_vocabulary_or_unknown_clip_model_fails_before_any_data_is_read(tmp_path, capsys):
    assert main([*ARGS, "--vocabulary", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "a")]) != 0
    assert "vocabulary file" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main([*ARGS, "--clip", "open_clip:No-Such-Model/openai", "--out", str(tmp_path / "b")]) != 0
    assert "unknown open_clip model" in capsys.readouterr().err and not (tmp_path / "b").exists()
