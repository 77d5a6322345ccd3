"""Searching a run's virtual neurons by label (`app.search.label_hits` on `store.schema.LabelIndex`):
the hits are the virtual neurons most about the query, one per neuron, and the overview lists them."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from app.search import HIT_COLUMNS, label_hits
from store import RunStore
from store.schema import (
    DatasetLabelNames,
    LabelIndex,
    References,
    VirtualNeuronDataLabels,
    VirtualNeuronLabel,
    VirtualNeuronLabels,
)

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"
NAMES = {"data": ("astronaut", "coffee", "dahlia"), "predicted": ("daisy", "espresso", "football helmet")}


def _labels(record, by_k):
    return record(
        {k: tuple(tuple(VirtualNeuronLabel(*label) for label in vn) for vn in vns) for k, vns in by_k.items()}
    )


INDEX = LabelIndex.of(
    {
        # neuron 2: dahlias (VN 1) and the astronaut (VN 2), also by the model's classes
        2: {
            "data": _labels(
                VirtualNeuronDataLabels,
                {
                    2: [[(2, 14, 1.0, 1.7)], [(0, 9, 0.9, 2.2), (1, 1, 0.1, 0.5)]],
                    3: [[(2, 8, 1.0, 1.7)], [(2, 6, 1.0, 1.7)], [(0, 9, 1.0, 2.4)]],
                },
            ),
            "predicted": _labels(VirtualNeuronLabels, {2: [[(0, 14, 1.0, 1.4)], [(2, 2, 0.2, 3.4)]]}),
        },
        # neuron 5: mostly coffee, a little astronaut
        5: {"data": _labels(VirtualNeuronDataLabels, {2: [[(1, 12, 0.8, 1.1)], [(0, 3, 0.3, 2.0)]]})},
    }
)


def test_hits_are_the_virtual_neurons_most_about_the_query_one_per_neuron():
    hits = label_hits(INDEX, NAMES, "ASTRO")  # any case, any part of the name
    assert list(hits.columns) == HIT_COLUMNS
    assert hits["neuron"].tolist() == [2, 5]  # neuron 2's best hit (share 1.0) before neuron 5's (0.3)
    best = hits.iloc[0]
    # neuron 2's astronaut virtual neuron at k = 3 holds only the astronaut (share 1.0 beats 0.9 at k = 2)
    assert (best["k"], best["virtual_neuron"], best["label"], best["source"]) == (3, 3, "astronaut", "data")
    assert best["share"] == 1.0 and round(best["enrichment"], 3) == 2.4 and best["count"] == 9


def test_exact_names_come_first_and_both_sources_are_searched():
    hits = label_hits(INDEX, NAMES, "daisy")
    assert hits["label"].tolist() == ["daisy"] and hits["source"].tolist() == ["predicted"]
    assert hits.iloc[0]["virtual_neuron"] == 1
    helmet = label_hits(INDEX, NAMES, "helmet")
    assert helmet.iloc[0][["neuron", "k", "virtual_neuron"]].tolist() == [2, 2, 2]


def test_nothing_matches_nothing():
    assert label_hits(INDEX, NAMES, "zebra").empty and label_hits(INDEX, NAMES, "  ").empty
    assert label_hits(LabelIndex.of({}), NAMES, "coffee").empty
    assert len(label_hits(INDEX, NAMES, "a", limit=1)) == 1


def test_the_stored_index_holds_every_virtual_neurons_labels(small_store):
    with RunStore.open(small_store) as store:
        index = store.read(LabelIndex)
        neurons = store.read(References).neuron_ids
        expected = LabelIndex.of(
            {
                n: {
                    "data": store.read(VirtualNeuronDataLabels, n),
                    "predicted": store.read(VirtualNeuronLabels, n),
                }
                for n in neurons
            }
        )
    assert index == expected and len(index.label) > 0


def test_the_overview_lists_the_virtual_neurons_labelled_like_the_search(monkeypatch, small_runs_root):
    monkeypatch.setenv("PURE_RUNS_DIR", str(small_runs_root))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params = {"run": "small"}
    at.run()
    with RunStore.open(small_runs_root / "small") as store:
        shape = store.read(DatasetLabelNames).names[0].split()[-1]  # e.g. "diamond": several concepts
    at.text_input(key="ranking_search").set_value(shape).run()
    assert not at.exception
    assert any("Virtual neurons labelled" in m.value and f"`{shape}`" in m.value for m in at.markdown)
    hits = at.dataframe[0].value
    assert len(hits) > 0 and all(shape in label for label in hits["label"])
    assert hits["references"].iloc[0].startswith("data:image/")
    at.text_input(key="ranking_search").set_value("12").run()  # an id search lists no label hits
    assert not any("Virtual neurons labelled" in m.value for m in at.markdown)
