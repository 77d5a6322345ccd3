"""Stage 8 on a real chain of tiny runs (``--chain block4,block3,block2``): each neuron's depth profile is
`pure_core.depth` recomputed from the stored images, circuits and embeddings; the neuron page charts it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from pure_core.attribution import pure_attributions_for_pairs
from pure_core.depth import depth_profile
from pure_core.models import ModelSpec, build_model
from pure_core.registry import load_plugins
from store import RunStore
from store.codecs import decode_image
from store.schema import (
    CircuitDepth,
    CropBoxes,
    Embeddings,
    NeuronScores,
    PureVectors,
    ReferenceImage,
    References,
    RunMeta,
)

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"


def test_each_neurons_depth_profile_is_recomputed_from_the_store(chain_runs_root):
    load_plugins()
    with RunStore.open(chain_runs_root / "demo") as store:
        meta = store.read(RunMeta)
        assert meta.config["depth_layers"] == ["block2"]
        loaded = build_model(ModelSpec.from_dict(meta.config["model"]), fetch_missing=False)
        references = store.read(References)
        for neuron in references.neuron_ids[:3]:
            row = references.row(neuron)
            indices = references.indices[row][references.indices[row] >= 0]
            images = [decode_image(store.read(ReferenceImage, int(i)).data) for i in indices]
            pixels = np.stack([np.asarray(image) for image in images])
            inputs = loaded.preprocess.from_pixels(pixels)
            deep = pure_attributions_for_pairs(loaded.model, inputs, meta.layer, "block2",
                                               [neuron] * len(indices)).numpy()
            concepts = store.read(NeuronScores, neuron).oracle.concepts
            expected = depth_profile(
                {"block3": store.read(PureVectors, neuron).values.astype(np.float32), "block2": deep},
                store.read(Embeddings, neuron).values.astype(np.float64), concepts, k=2,
                random_state=meta.seed)
            stored = store.read(CircuitDepth, neuron)
            assert stored.layers == ("block3", "block2") and stored.k == 2
            np.testing.assert_allclose(stored.rho_gap, expected.rho_gap, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(stored.ari, expected.ari, atol=1e-6)
            assert store.read(CropBoxes, neuron) is not None
    with RunStore.open(chain_runs_root / "demo-block3") as lower:  # the bottom pair has no deeper layer
        assert lower.read(RunMeta).config["depth_layers"] == []
        assert lower.read(CircuitDepth, lower.read(References).neuron_ids[0]) is None


def test_the_neuron_page_charts_where_the_circuit_splits(monkeypatch, chain_runs_root):
    monkeypatch.setenv("PURE_RUNS_DIR", str(chain_runs_root))
    at = AppTest.from_file(str(APP), default_timeout=120)
    with RunStore.open(chain_runs_root / "demo") as store:
        neuron = store.read(References).neuron_ids[0]
        depth = store.read(CircuitDepth, neuron)
    at.query_params = {"page": "neuron", "run": "demo", "neuron": str(neuron), "k": "2"}
    at.run()
    assert not at.exception
    assert not any(c.key == f"depth_{neuron}" for c in at.get("plotly_chart"))  # on request only
    at.toggle(key="circuit_depth").set_value(True).run()
    best = depth.layers[int(np.nanargmax(depth.rho_gap))]
    assert any(f"circuits taken at `{best}`" in m.value for m in at.markdown)
    assert any(c.key == f"depth_{neuron}" for c in at.get("plotly_chart"))
    at.query_params = {"page": "neuron", "run": "demo-block3", "neuron": str(neuron), "k": "2"}
    at.run()
    assert not [t for t in at.toggle if t.key == "circuit_depth"]
