"""The overview's figures as Vega-Lite charts (Altair), pure functions of plain data.

Vega-Lite rather than Plotly because the overview is the page every visitor opens first and Streamlit loads
Plotly's script (4.7 MB) with the first Plotly chart of a visit: on our 2-core machine a table with a
2048-point chart painted 1.2 s after the table alone with Plotly, 0.4 s with Vega-Lite, and a new visitor's
overview of 2048 neurons 2.2-2.5 s instead of 3.0-3.6 s (`benchmarks/bench_large_browser.py`). Streamlit
draws a chart of more than 2,000 data points on a canvas and a smaller one as SVG, one node per mark.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import pandas as pd

from app.chart_specs import BOX, PICK, built_once, chosen, data_free_spec, point_selections
from app.figures import METHOD_COLOURS
from store.schema import DistanceCorrelation, MethodComparison

__all__ = ["BOX", "DISTRIBUTION_FIELDS", "HEIGHT_PX", "PICK", "SCORE_TITLE", "chosen_neurons",
           "correlation_chart", "distribution_rows", "distribution_spec", "method_comparison_chart"]

SCORE_TITLE = "ρ_inter − ρ_intra"
HEIGHT_PX = 360


DISTRIBUTION_FIELDS = ["neuron", "rank", "overall", "polysemanticity"]


@built_once
def distribution_spec() -> dict:
    """Fig. A.2's Vega-Lite spec, without data (the rows are `distribution_rows`): overall embedding distance
    vs rho_inter - rho_intra, a dot per neuron coloured by the score (with its legend), its id, rank and
    scores on hover; a click selects the neuron (`PICK`), a drag a box of them (`BOX`)."""
    chart = (
        alt.Chart(height=HEIGHT_PX)
        .mark_circle(size=70, opacity=0.9, stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X("overall:Q", title="overall distance (mean over all pairs)", scale=alt.Scale(zero=False)),
            y=alt.Y("polysemanticity:Q", title=SCORE_TITLE, scale=alt.Scale(zero=False)),
            color=alt.Color("polysemanticity:Q", title=SCORE_TITLE, scale=alt.Scale(scheme="viridis")),
            tooltip=[
                alt.Tooltip("neuron:Q", format="d"),
                alt.Tooltip("rank:Q", format="d"),
                alt.Tooltip("overall:Q", format=".3f"),
                alt.Tooltip("polysemanticity:Q", title=SCORE_TITLE, format=".3f"),
            ],
        )
        .add_params(*point_selections("neuron"))
    )
    return data_free_spec(chart)


def distribution_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Fig. A.2's rows: a neuron each, with its `DISTRIBUTION_FIELDS`."""
    return table[DISTRIBUTION_FIELDS]


def chosen_neurons(event: Any, table: pd.DataFrame) -> list[int]:
    """The neurons selected in Fig. A.2's ``event``: the clicked one, else those inside the dragged box
    (ends included), in ranking order."""
    return chosen(event, table, "neuron", "overall", "polysemanticity")


def method_comparison_chart(
    comparison: MethodComparison, labels: Mapping[str, str]
) -> alt.Chart | alt.LayerChart:
    """Fig. 4: mean rho_intra (solid) and rho_inter (dashed) per method over k, the unclustered mean distance
    as a grey dotted rule."""
    drawn = [method for method, by_k in comparison.methods.items() if by_k]
    rows = [
        {"k": k, "method": labels.get(method, method), "statistic": statistic.replace("rho_", "ρ_"),
         "distance": getattr(comparison.methods[method][k], statistic)}
        for method in drawn
        for k in sorted(comparison.methods[method])
        for statistic in ("rho_intra", "rho_inter")
    ]  # fmt: skip
    data = pd.DataFrame(rows, columns=["k", "method", "statistic", "distance"])
    methods = [labels.get(m, m) for m in drawn]
    colours = [METHOD_COLOURS.get(m, "#444") for m in drawn]  # one per method, shared or not
    lines = (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("k:Q", title="k (virtual neurons per neuron)", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("distance:Q", title="mean embedding distance", scale=alt.Scale(zero=False)),
            color=alt.Color(
                "method:N", title=None, scale=alt.Scale(domain=methods, range=colours),
                legend=alt.Legend(orient="bottom", columns=1, symbolType="stroke", labelLimit=300),
            ),
            # solid rho_intra, dashed rho_inter: said in the chart's caption
            strokeDash=alt.StrokeDash("statistic:N", sort=["ρ_intra", "ρ_inter"], legend=None),
            detail="statistic:N",
            tooltip=["method:N", "statistic:N", alt.Tooltip("k:Q", format="d"),
                     alt.Tooltip("distance:Q", format=".3f")],
        )
    )  # fmt: skip
    if not math.isfinite(comparison.unclustered):
        return lines.properties(height=HEIGHT_PX)
    unclustered = alt.Chart(pd.DataFrame({"distance": [comparison.unclustered], "text": ["unclustered"]}))
    grey = METHOD_COLOURS["unclustered"]
    rule = unclustered.mark_rule(color=grey, strokeDash=[2, 3]).encode(y="distance:Q")
    text = unclustered.mark_text(align="left", dy=-6, x=4, color=grey).encode(y="distance:Q", text="text:N")
    return alt.layer(lines, rule, text, height=HEIGHT_PX)


def correlation_chart(correlation: DistanceCorrelation, labels: Mapping[str, str]) -> alt.LayerChart:
    """Sec. 4.2: Pearson r of each method's pairwise distances with the embedder's, with its SEM as an
    error bar."""
    methods: Sequence[str] = list(correlation.methods)
    data = pd.DataFrame(
        {
            "method": [labels.get(m, m) for m in methods],
            "r": [correlation.methods[m].r for m in methods],
            "sem": [s if math.isfinite(s := correlation.methods[m].sem) else 0.0 for m in methods],
        }
    ).assign(low=lambda d: d["r"] - d["sem"], high=lambda d: d["r"] + d["sem"])
    x = alt.X("method:N", title=None, sort=None, axis=alt.Axis(labelAngle=0, labelLimit=160))
    colours = alt.Scale(domain=list(data["method"]), range=[METHOD_COLOURS.get(m, "#444") for m in methods])
    bars = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=x,
            y=alt.Y("r:Q", title="Pearson r with the embedder's distances"),
            color=alt.Color("method:N", legend=None, scale=colours),
            tooltip=["method:N", alt.Tooltip("r:Q", format=".3f"),
                     alt.Tooltip("sem:Q", title="SEM", format=".3f")],
        )
    )  # fmt: skip
    errors = alt.Chart(data).mark_rule(color="black").encode(x=x, y="low:Q", y2="high:Q")
    return alt.layer(bars, errors, height=HEIGHT_PX)
