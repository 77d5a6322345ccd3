"""The neuron page's UMAPs as Vega-Lite charts: one spec for every k (only the rows change, so a k change
re-colours the drawn chart), each point carrying its reference position, cluster name, size and colour, and
selections read back as reference positions."""

from types import SimpleNamespace

import numpy as np

from app import figures, umap_charts


def _event(**selection) -> SimpleNamespace:
    return SimpleNamespace(selection=selection)


def test_rows_carry_reference_positions_cluster_names_sizes_and_colours_in_cluster_order():
    coords = np.arange(12, dtype=float).reshape(6, 2)
    labels = np.array([0, 1, 0, 2, 1, 0])
    rows = umap_charts.umap_rows(coords, labels, "pure", np.linspace(1, 2, 6))
    assert list(rows[umap_charts.REFERENCE]) == [0, 2, 5, 1, 4, 3]  # by cluster, ranking order within
    assert list(rows["rank"]) == [1, 3, 6, 2, 5, 4]
    assert list(rows["cluster"]) == ["VN 1 (3)"] * 3 + ["VN 2 (2)"] * 2 + ["VN 3 (1)"]
    assert list(rows["colour"]) == [figures.colour(c) for c in (0, 0, 0, 1, 1, 2)]
    assert np.allclose(rows[["x", "y"]].to_numpy(), coords[rows[umap_charts.REFERENCE]])
    assert np.allclose(rows["activation"], np.linspace(1, 2, 6)[rows[umap_charts.REFERENCE]])


def test_an_empty_cluster_leaves_the_others_their_own_names_and_colours():
    rows = umap_charts.umap_rows(np.zeros((3, 2)), np.array([0, 2, 2]), "pure")
    assert list(rows["cluster"]) == ["VN 1 (1)", "VN 3 (2)", "VN 3 (2)"]
    assert list(rows["colour"]) == [figures.colour(0), figures.colour(2), figures.colour(2)]
    assert rows["activation"].isna().all()  # no activations given


def test_activation_clusters_have_letters_their_own_colours_and_marker():
    labels = np.array([0, 0, 1])
    baseline = umap_charts.umap_rows(np.zeros((3, 2)), labels, "activation")
    pure = umap_charts.umap_rows(np.zeros((3, 2)), labels, "pure")
    assert list(baseline["cluster"]) == ["cluster A (2)", "cluster A (2)", "cluster B (1)"]
    assert not set(baseline["colour"]) & set(pure["colour"])
    assert umap_charts.umap_spec("activation", "t")["mark"]["shape"] == "diamond"
    assert umap_charts.umap_spec("pure", "t")["mark"]["shape"] == "circle"


def test_the_spec_holds_no_data_and_pairs_each_cluster_with_the_colour_its_rows_carry():
    spec = umap_charts.umap_spec("pure", "UMAP of PURE circuit vectors")
    assert not {"data", "datasets"} & set(spec)  # the same spec for every k: the rows come separately
    assert spec["title"] == "UMAP of PURE circuit vectors"
    colour = spec["encoding"]["color"]
    assert colour["field"] == "cluster" and colour["scale"]["range"] == {"field": "colour"}
    assert (spec["encoding"]["x"]["field"], spec["encoding"]["y"]["field"]) == ("x", "y")
    assert "rank" in [t["field"] for t in spec["encoding"]["tooltip"]]
    params = {p["name"]: p["select"] for p in spec["params"]}
    assert params[umap_charts.PICK] == {"type": "point", "fields": [umap_charts.REFERENCE], "on": "click"}
    assert params[umap_charts.BOX] == {"type": "interval", "encodings": ["x", "y"]}
    spec["title"] = "changed"  # a copy: the cached spec is untouched
    assert umap_charts.umap_spec("pure", "UMAP of PURE circuit vectors")["title"] != "changed"


def test_a_click_names_its_references_and_a_box_every_reference_inside_it_in_ranking_order():
    coords = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 0.5]])
    rows = umap_charts.umap_rows(coords, np.array([1, 0, 1, 0]), "pure")
    picked = [{umap_charts.REFERENCE: 2}, {umap_charts.REFERENCE: 0}, {umap_charts.REFERENCE: 2}]
    assert umap_charts.chosen_references(_event(pick=picked, box={}), rows) == [2, 0]
    # a box drawn right to left and top to bottom still spans its ends, which count as inside
    box = {"x": [2.0, 0.5], "y": [2.0, 0.0]}
    assert umap_charts.chosen_references(_event(pick=[], box=box), rows) == [1, 2]
    assert umap_charts.chosen_references(_event(pick=[], box={}), rows) == []
    assert umap_charts.chosen_references(None, rows) == []
