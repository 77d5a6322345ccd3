"""The large-store fixture writes every record of a real run (shapes, dtypes, invariants) and the dashboard
opens it; tested at a small size here (benchmarks use the real one: 2048 neurons x 100 references)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pure_explorer.large_store import write_large_store
from store import RunStore, schema

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"
SHAPE = {"n_neurons": 5, "n_ref": 12, "c_lower": 16, "c_layer": 24, "embed_dim": 8, "ks": (2, 3, 4),
         "n_images": 200, "image_px": 64, "thumbnail_px": 32}


@pytest.fixture(scope="module")
def large_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("large")
    write_large_store(root / "large", progress=False, **SHAPE)
    return root


def test_every_record_of_a_run_is_written_with_its_shape_and_dtype(large_root):
    with RunStore.open(large_root / "large") as store:
        assert store.complete
        references = store.read(schema.References)
        assert references.indices.shape == (5, 12) and references.neuron_ids == [0, 1, 2, 3, 4]
        assert np.all(np.diff(references.max_activations, axis=1) <= 0)
        for index in np.unique(references.indices):
            assert store.read(schema.ReferenceImage, int(index)).data[8:12] == b"WEBP"
        for neuron in references.neuron_ids:
            pure = store.read(schema.PureVectors, neuron).values
            assert pure.shape == (12, 16) and pure.dtype == np.float16
            assert np.allclose(pure.astype(np.float32).sum(axis=1), 1, atol=1e-2)  # L1 rows, non-negative
            assert store.read(schema.ActivationVectors, neuron).values.shape == (12, 24)
            assert store.read(schema.Embeddings, neuron).values.shape == (12, 8)
            assert len(store.read(schema.Thumbnails, neuron).images) == 12
            assert len(store.read(schema.Crops, neuron).images) == 12
            scores = store.read(schema.NeuronScores, neuron)
            assert np.isclose(scores.polysemanticity, scores.rho_inter - scores.rho_intra)
            assert {k: c.shape for k, c in scores.centroids.items()} == {2: (2, 16), 3: (3, 16), 4: (4, 16)}
            assert store.read(schema.UmapCoordinates, neuron).pure.shape == (12, 2)
            assert store.read(schema.ReferenceClipLabels, neuron).classes.shape == (12, 5)
            centroids = store.read(schema.VirtualNeuronClipCentroids, neuron).by_k
            assert {k: c.shape for k, c in centroids.items()} == {2: (2, 512), 3: (3, 512), 4: (4, 512)}
        assert [r.neuron for r in store.read(schema.Summary).rows] == [0, 1, 2, 3, 4]
        index = store.read(schema.ClipCentroidIndex)
        assert index.vectors.shape == (5 * (2 + 3 + 4), 512) and store.read(schema.ClipLabelStatus).state == \
            "labelled"
        assert np.allclose(np.linalg.norm(index.vectors.astype(np.float32), axis=1), 1, atol=1e-2)
        assert "fixture" in store.config  # says it is a fixture, not a result


def test_the_dashboard_opens_the_large_store(monkeypatch, large_root, vega_rows):
    monkeypatch.setenv("PURE_RUNS_DIR", str(large_root))
    for params in ({}, {"page": "neuron", "neuron": "3", "k": "3"}):
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.query_params = params
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        if not params:  # the overview's Fig. A.2 sends every neuron as a dot
            dots = vega_rows(at.get("vega_lite_chart")[0])
            assert sorted(dots["neuron"]) == list(range(SHAPE["n_neurons"]))


def test_free_text_without_the_clip_weights_says_so_and_the_label_search_still_answers(
    monkeypatch, large_root
):
    from pure_core.clip_labels import check_clip_weights
    from pure_core.models import MissingWeightsError

    monkeypatch.setenv("PURE_RUNS_DIR", str(large_root))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.text_input(key="ranking_search").set_value("striped <b>fur</b>").run()
    assert not at.exception and not at.error
    text = " ".join(m.value for m in at.markdown)
    assert "Virtual neurons labelled `striped <b>fur</b>`" in text  # the query shown as code, never as HTML
    try:
        check_clip_weights("open_clip:ViT-B-32/openai")
    except MissingWeightsError:  # this machine: one clear notice where the CLIP hits would be
        notices = [i.value for i in at.info if "Free-text search needs the CLIP weights" in i.value]
        assert len(notices) == 1 and "`open_clip:ViT-B-32/openai`" in notices[0]
    else:  # a machine with the weights: the CLIP hits
        assert "Virtual neurons that look like" in text
