"""The neuron page explains itself, keeps the activation baseline apart from PURE's virtual neurons, sizes
its reference grids from the stored thumbnails and opens any reference large."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from app import analysis, figures, sheets, store_access
from app.views import neuron as neuron_page
from store import list_runs

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"


def _page(monkeypatch, root, **params) -> AppTest:
    monkeypatch.setenv("PURE_RUNS_DIR", str(root))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params = {"page": "neuron", "run": "small", **{n: str(v) for n, v in params.items()}}
    return at.run()


def _run(root):
    return store_access.run_ref(next(r for r in list_runs(root) if r.directory.name == "small"))


def test_a_collapsed_explanation_says_what_the_page_shows(monkeypatch, small_runs_root):
    at = _page(monkeypatch, small_runs_root, neuron=3, k=2)
    assert not at.exception
    (how,) = [e for e in at.expander if e.label == "How to read this page"]
    text = " ".join(m.value for m in how.markdown)
    for term in ("virtual neuron (VN)", "Circuit", "Circuit bars", "two UMAPs", "Choosing k", "cluster"):
        assert term in text, term


def test_activation_clusters_have_their_own_names_and_colours():
    assert [figures.cluster_name(i, "pure") for i in range(3)] == ["VN 1", "VN 2", "VN 3"]
    assert [figures.cluster_name(i, "activation") for i in range(3)] == [
        "cluster A",
        "cluster B",
        "cluster C",
    ]
    assert not {figures.colour(i, "activation") for i in range(8)} & {figures.colour(i) for i in range(8)}


def test_grids_are_tiles_at_the_stored_thumbnail_size(small_runs_root):
    run = _run(small_runs_root)
    nd = store_access.neuron_data(run, 3)
    stored_px = max(Image.open(io.BytesIO(nd.thumbnails[0])).size)
    assert sheets.tile_px(run, 3) == min(stored_px, sheets.MAX_TILE_PX) and sheets.tile_px(run, 3) > 64
    tiles = sheets.tiles(run, 3, [2, 0])
    assert [t.reference for t in tiles] == [2, 0]
    assert tiles[0].caption == f"#3 · {nd.max_activations[2]:.2f}" and tiles[0].src.startswith("data:image/")
    # the tooltip names the reference's labels: its planted concept (the dataset's) and the model's class
    concept = nd.planted_concepts[2]
    top = store_access.class_names(run)[int(nd.predictions.classes[2, 0])]
    assert tiles[0].detail == f"{concept}; model: {top} {float(nd.predictions.probabilities[2, 0]):.0%}"


def test_the_csv_names_activation_clusters_by_letter(small_runs_root):
    lines = neuron_page.assignments_csv(_run(small_runs_root), 3, 2).decode().splitlines()
    assert {line.rsplit(",", 1)[1] for line in lines[1:]} <= {"cluster A", "cluster B"}


def test_a_reference_opens_large_with_its_whole_image(small_runs_root):
    run = _run(small_runs_root)
    nd = store_access.neuron_data(run, 3)
    big = figures.enlarged(nd.thumbnails[0], neuron_page.ENLARGED_PX)
    assert max(big.size) == neuron_page.ENLARGED_PX
    assert store_access.reference_image(run, int(nd.dataset_indices[0])) is not None


def test_each_virtual_neuron_is_labelled_by_the_classes_its_references_are_predicted_as(
    monkeypatch, small_runs_root
):
    """The small store's "model" predicts each reference's planted concept: a virtual neuron's header
    names the concepts of its own references, with their share and enrichment."""
    from app import analysis

    run = _run(small_runs_root)
    names = store_access.class_names(run)
    for neuron, k in ((3, 2), (12, 3)):
        nd = store_access.neuron_data(run, neuron)
        result = analysis.clustering(run, neuron, k, "pure")
        shares = analysis.cluster_labels(run, neuron, k, "pure")
        concepts = np.array(nd.planted_concepts)
        for c in range(k):
            members = result.labels == c
            top = shares[c][0]
            assert names[top.label] == max(set(concepts[members]), key=list(concepts[members]).count)
            assert top.count == int((concepts[members] == names[top.label]).sum())
            overall = np.mean(concepts == names[top.label])
            assert np.isclose(top.enrichment, top.share / overall)
    at = _page(monkeypatch, small_runs_root, neuron=3, k=2)
    headers = [m.value for m in at.markdown if "references" in m.value and "model predicts:" in m.value]
    assert len(headers) == 2
    assert all(
        f"`{names[shares_c[0].label]}`" in h
        for h, shares_c in zip(headers, analysis.cluster_labels(run, 3, 2, "pure"), strict=True)
    )


def test_stored_virtual_neuron_labels_are_the_ones_the_page_shows(small_runs_root):
    """Precompute's `VirtualNeuronLabels` (for the ranking and search) name the virtual neurons as the page
    numbers them (largest first)."""
    from app import analysis
    from store import RunStore
    from store.schema import VirtualNeuronLabels

    run = _run(small_runs_root)
    with RunStore.open(run.directory) as store:
        stored = store.read(VirtualNeuronLabels, 12)

    def pairs(groups):
        return [[(s.label, s.count) for s in group] for group in groups]

    for k, groups in stored.by_k.items():
        assert pairs(groups) == pairs(analysis.cluster_labels(run, 12, k, "pure")), k


def test_suggested_k_is_computed_for_older_stores_and_the_button_takes_it(monkeypatch, small_runs_root):
    """The small store has no `KChoice` records (a store written before them): the page computes the
    diagnostics as precompute does, names the suggested k with its reasons, and the button moves k there."""
    from pure_core.k_choice import k_diagnostics

    run = _run(small_runs_root)
    nd = store_access.neuron_data(run, 7)
    meta = store_access.run_details(run).meta
    assert nd.k_choice is None
    expected = k_diagnostics(nd.pure, meta.ks, nd.embeddings, random_state=meta.seed)
    at = _page(monkeypatch, small_runs_root, neuron=7, k=5)
    assert not at.exception
    [text] = [m.value for m in at.markdown if m.value.startswith("**Suggested k")]
    assert text.startswith(f"**Suggested k = {expected.suggested_k}**")
    assert text == neuron_page.suggestion_text(analysis.k_choice(run, 7))
    at.toggle(key="k_diagnostics").set_value(True).run()
    assert any(c.key == "k_diagnostics_7" for c in at.get("plotly_chart"))
    at.button(key="use_suggested_k").click().run()
    assert not at.exception
    assert at.slider(key="k_select").value == expected.suggested_k
    assert at.query_params["k"] == str(expected.suggested_k)


def test_suggestion_text_gives_the_rule_and_its_numbers():
    from store.schema import KChoice

    stable = KChoice((2, 3, 4), [0.4, 0.2, 0.1], [0.97, 0.6, 0.5], [2.0, 1.5, 1.0], 2)
    text = neuron_page.suggestion_text(stable)
    assert text.startswith("**Suggested k = 2**") and "0.97" in text and "0.40" in text
    single = KChoice((2, 3), [0.1, 0.1], [0.7, 0.5], [0.1, 0.1], 1)
    text = neuron_page.suggestion_text(single)
    assert text.startswith("**Suggested k = 1**") and "0.70 at k = 2" in text
