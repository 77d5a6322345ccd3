"""The overview's Vega-Lite charts: one dot per neuron carrying its id, selections read back as neurons, and
the method comparison and distance correlation drawn from the stored records."""

from types import SimpleNamespace

import altair as alt
import numpy as np
import pandas as pd
import pytest

from app import overview_charts
from app.figures import METHOD_COLOURS
from store.schema import DistanceCorrelation, MethodComparison, PooledCorrelation


def _table(n: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    scores = np.sort(rng.random(n))[::-1] * 2
    return pd.DataFrame(
        {"rank": np.arange(1, n + 1), "neuron": rng.permutation(n) * 3 + 1, "polysemanticity": scores,
         "overall": rng.random(n) + 4, "labels": "x"}
    )  # fmt: skip


def _event(**selection) -> SimpleNamespace:
    return SimpleNamespace(selection=selection)


def test_distribution_has_one_dot_per_neuron_with_its_id_and_both_selections():
    table = _table(2048)
    rows = overview_charts.distribution_rows(table)
    fields = ["neuron", "overall", "polysemanticity"]
    assert rows[fields].equals(table[fields])
    spec = overview_charts.distribution_spec()
    assert not {"data", "datasets"} & set(spec)  # the rows go separately: one spec for every run
    encoded = {spec["encoding"][channel]["field"] for channel in ("x", "y", "color")}
    encoded |= {t["field"] for t in spec["encoding"]["tooltip"]}
    assert encoded <= set(rows.columns)
    assert spec["mark"]["type"] == "circle"
    assert (spec["encoding"]["x"]["field"], spec["encoding"]["y"]["field"]) == ("overall", "polysemanticity")
    assert spec["encoding"]["color"]["field"] == "polysemanticity"  # coloured by the score, with a legend
    assert "neuron" in [t["field"] for t in spec["encoding"]["tooltip"]]
    params = {p["name"]: p["select"] for p in spec["params"]}
    assert params[overview_charts.PICK] == {"type": "point", "fields": ["neuron"], "on": "click"}
    assert params[overview_charts.BOX]["type"] == "interval"


def test_a_click_names_its_neuron_and_a_box_every_neuron_inside_it_in_ranking_order():
    table = pd.DataFrame(
        {"rank": [1, 2, 3, 4], "neuron": [7, 3, 12, 5], "polysemanticity": [2.0, 1.0, 0.5, 0.1],
         "overall": [5.0, 4.0, 4.5, 3.0]}
    )  # fmt: skip
    assert overview_charts.chosen_neurons(_event(pick=[{"neuron": 12}], box={}), table) == [12]
    # a box drawn right to left and top to bottom still spans its ends, which count as inside
    box = {"overall": [5.0, 4.0], "polysemanticity": [1.0, 0.5]}
    assert overview_charts.chosen_neurons(_event(pick=[], box=box), table) == [3, 12]
    assert overview_charts.chosen_neurons(_event(pick=[], box={"overall": [0, 9], "polysemanticity": [0, 9]}),
                                          table) == [7, 3, 12, 5]  # fmt: skip
    assert overview_charts.chosen_neurons(_event(pick=[], box={}), table) == []
    assert overview_charts.chosen_neurons(None, table) == []


@pytest.mark.parametrize("unclustered", [1.3, float("nan")])
def test_method_comparison_draws_each_method_and_statistic_over_k(unclustered):
    comparison = MethodComparison.from_store(
        {
            "pure": {2: {"rho_intra": 1.0, "rho_inter": 2.0}, 3: {"rho_intra": 0.9, "rho_inter": 1.8}},
            "activation": {2: {"rho_intra": 1.2, "rho_inter": 1.4}},
            "embedding": {},
            "unclustered": unclustered,
        }
    )
    chart = overview_charts.method_comparison_chart(comparison, {"pure": "PURE"})
    layers = chart.layer if isinstance(chart, alt.LayerChart) else [chart]
    lines = layers[0].data
    pure = lines[lines["method"] == "PURE"].set_index(["k", "statistic"])["distance"]
    assert pure.to_dict() == {
        (2, "ρ_intra"): 1.0, (2, "ρ_inter"): 2.0, (3, "ρ_intra"): 0.9, (3, "ρ_inter"): 1.8
    }  # fmt: skip
    assert set(lines["method"]) == {"PURE", "activation"}  # a method with no k is not drawn
    colours = layers[0].to_dict()["encoding"]["color"]["scale"]
    assert colours["domain"] == ["PURE", "activation"]
    assert colours["range"] == [METHOD_COLOURS["pure"], METHOD_COLOURS["activation"]]
    if np.isfinite(unclustered):
        assert len(layers) == 3 and layers[1].data["distance"].tolist() == [1.3]  # the unclustered rule
    else:
        assert len(layers) == 1


def test_correlation_bars_carry_their_error_bars():
    correlation = DistanceCorrelation(
        {"pure": PooledCorrelation(0.4, 0.02), "activation": PooledCorrelation(0.1, float("nan"))}
    )
    chart = overview_charts.correlation_chart(correlation, {"pure": "PURE"})
    bars = chart.data  # shared by the bars and their error bars
    assert bars["method"].tolist() == ["PURE", "activation"] and bars["r"].tolist() == [0.4, 0.1]
    assert np.allclose(bars["low"], [0.38, 0.1]) and np.allclose(bars["high"], [0.42, 0.1])  # no SEM: no bar
    errors = chart.layer[1].to_dict()["encoding"]
    assert (errors["y"]["field"], errors["y2"]["field"]) == ("low", "high")
