"""The neuron page's causal check (ablating each virtual neuron's circuit) and the k suggestion on a real
precomputed store: the numbers on the page are `pure_core.causal.causal_check`'s on the stored references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from app import analysis, circuit_checks, store_access
from pure_core.causal import causal_check
from store import list_runs

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"


def _page(monkeypatch, root, run: str, **params) -> AppTest:
    monkeypatch.setenv("PURE_RUNS_DIR", str(root))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params = {"page": "neuron", "run": run, **{n: str(v) for n, v in params.items()}}
    return at.run()


def _demo(root):
    info = next(r for r in list_runs(root) if r.complete)
    return info.directory.name, store_access.run_ref(info)


def test_the_causal_check_shows_pure_cores_ablation_of_the_stored_references(monkeypatch, demo_runs_root):
    root, _ = demo_runs_root
    name, run = _demo(root)
    neuron = store_access.neuron_order(run)[0]
    at = _page(monkeypatch, root, name, neuron=neuron, k=2)
    assert not at.exception
    assert not [m for m in at.markdown if "its circuit removes" in m.value]  # nothing runs by itself
    at.number_input(key="causal_channels").set_value(3).run()
    at.toggle(key="causal_on").set_value(True).run()
    assert not at.exception and not at.warning
    [text] = [m.value for m in at.markdown if "its circuit removes" in m.value]

    meta = store_access.run_details(run).meta
    clustering = analysis.clustering(run, neuron, 2, "pure")
    from app import model_cache

    expected = causal_check(model_cache.model_for(run).model, circuit_checks.reference_inputs(run, neuron),
                            meta.layer, meta.lower_layer, neuron, clustering.centers, clustering.labels,
                            n_channels=3, mode="mean")
    removed = expected.removed
    assert text == circuit_checks.selectivity_text(removed, expected.selectivity)
    assert f"removes {removed[0, 0]:.0%} of the activation on its own references" in text
    # the references the page ablated are the stored ones, in reference order
    nd = store_access.neuron_data(run, neuron)
    assert len(circuit_checks.reference_inputs(run, neuron)) == nd.n_references
    np.testing.assert_allclose(expected.baseline, nd.max_activations, rtol=1e-3, atol=1e-3)

    at.toggle(key="causal_across_k").set_value(True).run()
    assert not at.exception
    assert any(c.key == f"selectivity_k_{neuron}" for c in at.get("plotly_chart"))


def test_a_model_that_cannot_be_loaded_is_one_warning(monkeypatch, missing_model_runs_root):
    name = next(r for r in list_runs(missing_model_runs_root)).directory.name
    monkeypatch.setenv("PURE_RUNS_DIR", str(missing_model_runs_root))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params = {"page": "neuron", "run": name, "k": "2"}
    at.run()
    at.toggle(key="causal_on").set_value(True).run()
    assert not at.exception
    assert any("model could not be loaded" in w.value for w in at.warning)


def test_samples_below_the_top_are_shown_on_request(monkeypatch, demo_runs_root):
    root, _ = demo_runs_root
    name, run = _demo(root)
    neuron = store_access.neuron_order(run)[0]
    at = _page(monkeypatch, root, name, neuron=neuron, k=2)
    below = [h for h in at.get("html") if "<b>Below the top</b>" in h.proto.body]
    assert not at.exception and not below  # nothing re-sent on every k change until asked for
    at.toggle(key="below_the_top").set_value(True).run()
    [block] = [h.proto.body for h in at.get("html") if "<b>Below the top</b>" in h.proto.body]
    assert "VN 1:" in block and "of the top references" in block


def test_every_forward_on_a_cached_model_holds_the_servers_forward_lock(monkeypatch, demo_runs_root):
    """Sessions share the cached models, and pure_core's forward hooks on a shared model would fire in
    another session's forward: the causal check and the upload analysis run under `FORWARD_LOCK`."""
    from PIL import Image

    import pure_core.causal
    from app import model_cache, uploads

    root, _ = demo_runs_root
    _, run = _demo(root)
    neuron = store_access.neuron_order(run)[0]
    held = []

    def holding(real):
        def call(*args, **kwargs):
            held.append(model_cache.FORWARD_LOCK.locked())
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(pure_core.causal, "causal_check", holding(pure_core.causal.causal_check))
    monkeypatch.setattr(model_cache, "analyse_image", holding(uploads.analyse_image))
    circuit_checks.causal_check.clear()
    model_cache.analyse_upload.clear()
    circuit_checks.causal_check(run, neuron, 2, circuit_checks.Settings(n_channels=2, mode="zero"))
    image = Image.new("RGB", (64, 64), "orange")
    model_cache.analyse_upload(run, "an orange square", image, neuron)
    assert held == [True, True] and not model_cache.FORWARD_LOCK.locked()
