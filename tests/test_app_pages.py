"""Every page's logic, run headless with streamlit.testing.v1.AppTest on the small stores (conftest.py)."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from app import analysis, store_access
from app.safe_text import code
from app.views import neuron as neuron_page
from app.views import overview as overview_page
from pure_explorer.fixtures import write_small_store
from store import RunStore, list_runs
from store.schema import Summary

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"


def _app(monkeypatch, root: Path, **params) -> AppTest:
    monkeypatch.setenv("PURE_RUNS_DIR", str(root))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params = {name: str(value) for name, value in params.items()}
    return at.run()


def _text(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("title", "subheader", "markdown", "caption", "info", "warning", "error", "success")
        for e in getattr(at, kind)
    ]
    parts += [c.value for c in at.code]
    return "\n".join(str(p) for p in parts)


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _ranking(root: Path, name: str = "small") -> list[int]:
    with RunStore.open(root / name) as store:
        rows = sorted(store.read(Summary).rows, key=lambda r: (-r.polysemanticity, r.neuron))
    return [r.neuron for r in rows]


def _virtual_neuron_blocks(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if "**VN " in m.value]


def _charts(at: AppTest) -> list:
    return at.get("plotly_chart") + at.get("vega_lite_chart")


# -- states ------------------------------------------------------------------------------------------------
def test_without_a_store_the_app_says_which_command_to_run(monkeypatch, tmp_path):
    at = _app(monkeypatch, tmp_path / "nothing-here")
    _ok(at)
    assert "python -m precompute" in [c.value for c in at.code]
    assert "No run store" in _text(at)


def test_a_store_still_being_computed_shows_its_stages(monkeypatch, partial_runs_root):
    at = _app(monkeypatch, partial_runs_root)
    _ok(at)
    text = _text(at)
    assert "still being computed" in text
    assert "references: done" in text and "attributions: done" in text
    assert "crops: not yet" in text and "scores: not yet" in text
    assert not at.dataframe  # no ranking yet
    at = _app(monkeypatch, partial_runs_root, page="neuron", neuron=3)
    _ok(at)
    assert "still being computed" in _text(at)


# -- overview ----------------------------------------------------------------------------------------------
def test_a_run_judged_by_the_analysed_network_itself_is_flagged(monkeypatch, small_runs_root, tmp_path):
    at = _app(monkeypatch, small_runs_root, run="small")
    assert not at.warning  # resnet18 judged by another embedder
    circular = {"name": "test-embedder", "weights": None, "checkpoint": None}  # the run's embedder's name
    write_small_store(tmp_path / "circular", model=circular)
    at = _app(monkeypatch, tmp_path, run="circular")
    _ok(at)
    assert len(at.warning) == 1 and "is the analysed network itself" in at.warning[0].value


def test_overview_ranks_neurons_with_thumbnail_strips_and_figures(monkeypatch, small_runs_root, vega_rows):
    at = _app(monkeypatch, small_runs_root, run="small")
    _ok(at)
    assert at.query_params["run"] == "small"
    table = at.dataframe[0].value
    assert list(table["neuron"]) == _ranking(small_runs_root)
    assert list(table["rank"]) == list(range(1, 7))
    assert table["references"].iloc[0].startswith("data:image/jpeg;base64,")
    assert len(_charts(at)) == 3  # distribution (Fig. A.2), method comparison (Fig. 4), distance correlation
    distribution = vega_rows(at.get("vega_lite_chart")[0])  # a dot per neuron, with its id and scores
    assert sorted(distribution["neuron"]) == sorted(table["neuron"])
    assert distribution.set_index("neuron")["polysemanticity"].to_dict() == pytest.approx(
        table.set_index("neuron")["polysemanticity"].to_dict()
    )
    facts = _text(at)
    assert "resnet18" in facts and "layer2 ← layer1" in facts and "test-embedder" in facts
    # the ranking's CSV is made on request (a button), then inline in the page: no /media/ URL serves it
    assert not [m.value for m in at.markdown if "pure-download" in m.value]
    at.button(key="ranking_csv").click().run()
    [link] = [m.value for m in at.markdown if "pure-download" in m.value]
    assert "href='data:text/csv;base64," in link and "download='ranking-small.csv'" in link
    csv = base64.b64decode(link.split("base64,")[1].split("'")[0]).decode()
    assert [int(row.split(",")[1]) for row in csv.splitlines()[1:]] == list(table["neuron"])  # rank, neuron


def test_every_ranking_column_fits_a_1366_px_laptop_window():
    columns = overview_page.ranking_columns()
    assert set(columns) == set(overview_page.TABLE_COLUMNS)
    for present in (overview_page.TABLE_COLUMNS, [c for c in overview_page.TABLE_COLUMNS if c != "team"]):
        shown = overview_page.shown_columns(present)
        assert sum(columns[c]["width"] for c in shown) <= overview_page.TABLE_WIDTH_PX, shown


def test_overview_search_by_neuron_id(monkeypatch, small_runs_root):
    at = _app(monkeypatch, small_runs_root, run="small")
    at.text_input(key="ranking_search").set_value("12, 3").run()
    _ok(at)
    assert sorted(at.dataframe[0].value["neuron"]) == [3, 12]
    at.text_input(key="ranking_search").set_value("999").run()
    assert "No neuron of this run matches" in _text(at)


def test_overview_filter_by_score_range(monkeypatch, small_runs_root):
    at = _app(monkeypatch, small_runs_root, run="small")
    full = at.dataframe[0].value
    low, high = at.slider(key="ranking_scores").value
    assert len(full) == 6 and low <= full["polysemanticity"].min() and full["polysemanticity"].max() <= high
    cut = float(full["polysemanticity"].median())
    at.slider(key="ranking_scores").set_value((cut, high)).run()
    _ok(at)
    shown = at.dataframe[0].value
    above = full[full["polysemanticity"] >= cut]
    assert list(shown["neuron"]) == list(above["neuron"])
    assert 0 < len(shown) < len(full)
    at.text_input(key="ranking_search").set_value(str(full["neuron"].iloc[-1])).run()  # below the range
    assert at.dataframe[0].value.empty and "No neuron of this run matches" in _text(at)


def test_selecting_a_ranking_row_opens_that_neuron(monkeypatch, small_runs_root):
    at = _app(monkeypatch, small_runs_root, run="small")
    at.session_state["ranking_table"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    _ok(at)
    assert [t.value for t in at.title] == ["Neuron explorer"]
    assert at.query_params["neuron"] == str(_ranking(small_runs_root)[1])
    assert at.query_params["run"] == "small"


def test_selection_helpers_map_table_rows_to_neurons():
    import pandas as pd

    table = pd.DataFrame({"rank": [1, 2], "neuron": [7, 3], "polysemanticity": [1.0, 0.5]})
    view = overview_page.ranking_view(overview_page.filter_ranking(table, "3"), {7: "data:x"})
    assert list(view["neuron"]) == [3] and view["references"].iloc[0] is None
    assert overview_page.ranking_view(table, {7: "data:x"})["references"].iloc[0] == "data:x"
    assert list(overview_page.filter_ranking(table, "", (0.5, 0.9))["neuron"]) == [3]  # ends included
    assert list(overview_page.filter_ranking(table, "7 3", (0.6, 1.0))["neuron"]) == [7]
    assert overview_page.score_bounds(table) == (0.5, 1.0)
    assert overview_page.score_bounds(table.head(1)) is None  # one score: no range to choose from

    class Event:
        selection = type("S", (), {"rows": [0]})()

    assert overview_page.selected_row_neuron(Event(), view) == 3


# -- neuron explorer ---------------------------------------------------------------------------------------
def test_deep_link_opens_the_neuron_with_k_virtual_neurons(monkeypatch, small_runs_root):
    at = _app(monkeypatch, small_runs_root, page="neuron", run="small", neuron=20, k=3)
    _ok(at)
    assert at.selectbox(key="neuron_select").value == 20
    assert at.slider(key="k_select").value == 3
    assert at.query_params == {"run": "small", "neuron": "20", "k": "3"}
    blocks = _virtual_neuron_blocks(at)
    assert len(blocks) == 3 and all("references" in b and "ρ_intra" in b for b in blocks)
    scores = at.dataframe[0].value
    assert list(scores["method"]) == [
        analysis.METHOD_LABELS[m] for m in ("pure", "activation", "embedding", "unclustered")
    ]
    assert len(_charts(at)) == 2  # the two UMAPs; circuits are light HTML bars
    assert len(at.get("html")) == 3  # one circuit per virtual neuron


def test_changing_k_reclusters_live_and_updates_the_link(monkeypatch, small_runs_root, vega_rows):
    at = _app(monkeypatch, small_runs_root, page="neuron", run="small", neuron=7, k=2)
    umaps = {c.proto.id: c.proto.spec for c in at.get("vega_lite_chart")}
    for k in (5, 1, 3):
        at.slider(key="k_select").set_value(k).run()
        _ok(at)
        blocks = _virtual_neuron_blocks(at)
        assert len(blocks) == k and at.query_params["k"] == str(k)
        sizes = [int(b.split("· ")[1].split(" references")[0]) for b in blocks]
        assert sum(sizes) == 24 and sizes == sorted(sizes, reverse=True)
        # the UMAPs are the same elements with the same spec (the browser keeps them), with new rows:
        # every reference once, in the k clusters of the blocks above (pure) and of the baseline
        charts = at.get("vega_lite_chart")
        assert {c.proto.id: c.proto.spec for c in charts} == umaps
        pure, baseline = (vega_rows(c) for c in charts)
        assert sorted(pure["reference"]) == sorted(baseline["reference"]) == list(range(24))
        assert sorted(pure["cluster"].value_counts()) == sorted(sizes)
        assert baseline["cluster"].nunique() == k


def test_pure_recovers_the_planted_concepts_where_activations_do_not(monkeypatch, small_runs_root):
    """On the planted store, PURE's k=3 clusters of neuron 7 beat the activation baseline (embedder)."""
    at = _app(monkeypatch, small_runs_root, page="neuron", run="small", neuron=7, k=3)
    scores = at.dataframe[0].value.set_index("method")["rho_inter - rho_intra"]
    assert scores[analysis.METHOD_LABELS["pure"]] > scores[analysis.METHOD_LABELS["activation"]] + 1.0


def test_virtual_neurons_show_the_planted_ground_truth(monkeypatch, small_runs_root):
    """World runs carry each reference's planted concept; with k=2 PURE's virtual neurons of a two-concept
    neuron are pure (12 references of one concept each)."""
    at = _app(monkeypatch, small_runs_root, page="neuron", run="small", neuron=20, k=2)
    _ok(at)
    blocks = _virtual_neuron_blocks(at)
    assert len(blocks) == 2
    planted = [b.split("planted: ")[1] for b in blocks]
    assert all(p.startswith("12 × ") and "," not in p for p in planted) and planted[0] != planted[1]
    assert "Ground truth (synthetic world): `polysemantic`" in _text(at)


def test_previous_and_next_follow_the_ranking(monkeypatch, small_runs_root):
    order = _ranking(small_runs_root)
    at = _app(monkeypatch, small_runs_root, page="neuron", run="small", neuron=order[0])
    previous, following = at.button[:2]  # then the PNG download's "prepare" button
    assert previous.disabled and not following.disabled
    following.click().run()
    _ok(at)
    assert at.query_params["neuron"] == str(order[1])
    at.button[0].click().run()
    assert at.query_params["neuron"] == str(order[0])


def test_invalid_query_values_are_ignored_with_a_notice(monkeypatch, small_runs_root):
    at = _app(monkeypatch, small_runs_root, page="neuron", run="nope", neuron="abc", k="99")
    _ok(at)
    notices = " ".join(i.value for i in at.info)
    assert (
        "Ignored `run=nope`" in notices and "Ignored `neuron=abc`" in notices and "Ignored `k=99`" in notices
    )
    assert at.query_params["neuron"] in {str(n) for n in _ranking(small_runs_root, at.query_params["run"])}
    at = _app(monkeypatch, small_runs_root, page="neuron", run="small", neuron=5, k=0)
    _ok(at)
    assert "this run does not analyse that channel" in _text(at)


@pytest.mark.parametrize(
    "crafted",
    [
        "x`[Session expired - log in](http://evil.org)`",
        "![i](http://evil.org/i.png)",
        "<script>alert(1)</script><img src=http://evil.org/i.png>",
    ],
    ids=["link", "image", "html"],
)
def test_crafted_query_values_are_quoted_as_code_never_rendered(monkeypatch, small_runs_root, crafted):
    at = _app(monkeypatch, small_runs_root, page="neuron", run=crafted, neuron=crafted, k=crafted)
    _ok(at)
    assert sorted(i.value for i in at.info) == sorted(
        [
            f"Ignored {code('run=' + crafted[:60])} from the link: no such run under the runs directory.",
            f"Ignored {code('neuron=' + crafted[:40])} from the link: a neuron is a channel number.",
            f"Ignored {code('k=' + crafted[:40])} from the link: k must be a whole number from 1 to 8.",
        ]
    )


def test_a_neuron_with_too_few_references_says_so(monkeypatch, small_runs_root):
    at = _app(monkeypatch, small_runs_root, page="neuron", run="small", neuron=41, k=3)
    _ok(at)
    assert "only 1 reference" in _text(at)
    assert "k is at most 1" in _text(at)
    assert not _virtual_neuron_blocks(at)


def test_grids_show_the_top_references_unless_every_one_is_asked_for(monkeypatch, small_runs_root):
    at = _app(monkeypatch, small_runs_root, run="small", page="neuron", neuron=3, k=1)
    _ok(at)
    [block] = _virtual_neuron_blocks(at)  # one virtual neuron holds every reference
    assert f"(top {neuron_page.GRID_TILES} shown)" in block
    at.toggle(key="grids_all").set_value(True).run()
    _ok(at)
    assert "shown)" not in _virtual_neuron_blocks(at)[0]
    members = np.arange(40)
    assert list(neuron_page.shown_in_grid(members, False)[0]) == list(range(neuron_page.GRID_TILES))
    assert len(neuron_page.shown_in_grid(members, True)[0]) == 40
    few, note = neuron_page.shown_in_grid(members[:5], False)
    assert list(few) == list(range(5)) and note == ""


def test_circuits_show_the_lower_layer_run_references(monkeypatch, small_runs_root):
    at = _app(monkeypatch, small_runs_root, page="neuron", run="small", neuron=3, k=2)
    _ok(at)
    circuits = " ".join(h.proto.body for h in at.get("html"))
    assert "run <code>small-lower</code>" in circuits
    assert "href='neuron?run=small-lower&amp;neuron=" in circuits and "data:image/jpeg;base64," in circuits
    # a circuit channel the lower run analyses is a link down, carrying the way back up to its VN
    links = re.findall(r"href='(neuron\?run=small-lower[^']*)'", circuits)
    assert links and all("&amp;trail=small%3A3%3A2%3A" in link for link in links)
    assert any(link.endswith("trail=small%3A3%3A2%3A1") for link in links)


def test_grids_of_activation_clusters(monkeypatch, small_runs_root):
    at = _app(monkeypatch, small_runs_root, page="neuron", run="small", neuron=3, k=2)
    at.button_group(key="grid_method").set_value("activation").run()
    _ok(at)
    assert not _virtual_neuron_blocks(at)  # the baseline's clusters are not virtual neurons ...
    blocks = [m.value for m in at.markdown if "**cluster " in m.value]
    assert [b.split("**")[1] for b in blocks] == ["cluster A", "cluster B"]  # ... and have their own names
    assert "Activation clusters have no circuit" in _text(at)


def test_neuron_report_png_and_assignments(small_runs_root):
    run = store_access.run_ref(next(r for r in list_runs(small_runs_root) if r.directory.name == "small"))
    image = Image.open(io.BytesIO(neuron_page.report_png(run, 3, 3)))
    assert image.format == "PNG" and image.width > 600 and image.height > 400
    csv = neuron_page.assignments_csv(run, 3, 3).decode().splitlines()
    assert csv[0].startswith("reference,dataset_index") and len(csv) == 25


# -- upload ------------------------------------------------------------------------------------------------
def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_assigns_an_image_to_a_virtual_neuron(monkeypatch, small_runs_root):
    from skimage import data as skdata

    at = _app(monkeypatch, small_runs_root, page="upload", run="small", neuron=3, k=2)
    _ok(at)
    at.file_uploader[0].set_value(
        [
            ("chelsea.png", _png(Image.fromarray(skdata.chelsea())), "image/png"),
            ("broken.png", b"\x89PNG not really", "image/png"),
        ]
    ).run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    text = _text(at)
    assert "Assigned to **VN" in text or "No assignment: " in text  # app/views/upload.py's verdict
    assert [e.value for e in at.error] == [e.value for e in at.error if "broken.png" in e.value] and at.error
    top = at.dataframe[0].value
    assert len(top) == 5
    assert all(v in {"VN 1", "VN 2", "–"} or v.startswith("– (") for v in top["virtual neuron"])
    assert any(m.label.startswith("Activation of neuron 3") for m in at.metric)


def test_upload_page_waits_for_files(monkeypatch, small_runs_root):
    at = _app(monkeypatch, small_runs_root, page="upload", run="small", neuron=3)
    _ok(at)
    assert at.file_uploader[0].allowed_type == [".png", ".jpg", ".jpeg", ".webp"]
    assert at.query_params["neuron"] == "3"


def test_upload_with_a_missing_model_says_how_to_make_it(monkeypatch, missing_model_runs_root):
    at = _app(monkeypatch, missing_model_runs_root, page="upload", neuron=3)
    at.file_uploader[0].set_value(("a.png", _png(Image.new("RGB", (64, 64), "red")), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    (error,) = at.error
    assert "could not be loaded" in error.value and "no-such-model.pt" in error.value


def test_the_ranking_names_each_neurons_virtual_neurons_and_finds_them_by_label(monkeypatch, small_runs_root):
    at = _app(monkeypatch, small_runs_root, run="small")
    table = at.dataframe[0].value
    assert "labels" in table and "rho_intra" not in table  # the components stay in the CSV download
    run = store_access.run_ref(next(r for r in list_runs(small_runs_root) if r.directory.name == "small"))
    names = store_access.class_names(run)
    some = table["labels"].dropna().iloc[0]
    assert all(part in names or part == "–" for part in some.split(" | "))
    concept = some.split(" | ")[0]
    at.text_input(key="ranking_search").set_value(concept.upper()).run()
    found = at.dataframe[-1].value  # the ranking, below the virtual neurons labelled like the query
    assert "rank" in found
    assert 0 < len(found) <= len(table) and all(concept in labels for labels in found["labels"])


def test_a_page_reached_down_a_circuit_shows_the_way_back_up_until_another_neuron_is_chosen(
    monkeypatch, small_runs_root
):
    info = next(r for r in list_runs(small_runs_root) if r.directory.name == "small-lower")
    lower = store_access.run_ref(info)
    channel = store_access.neuron_order(lower)[0]
    at = _app(monkeypatch, small_runs_root, page="neuron", run="small-lower", neuron=channel,
              trail="small:3:2:1,ghost:1:2:1")
    _ok(at)
    [nav] = [h.proto.body for h in at.get("html") if "way down the circuit" in h.proto.body]
    assert "href='neuron?run=small&amp;neuron=3&amp;k=2'" in nav and "neuron 3 · VN 1 of 2" in nav
    assert f"neuron {channel}</b>" in nav and "ghost" not in nav
    assert at.query_params["trail"] == "small:3:2:1"  # the URL keeps the way up (without the unknown run)
    other = store_access.neuron_order(lower)[1]
    at.selectbox(key="neuron_select").set_value(other).run()
    _ok(at)
    assert not [h for h in at.get("html") if "way down the circuit" in h.proto.body]
    assert "trail" not in at.query_params
