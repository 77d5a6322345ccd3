"""The neuron page's two UMAPs (references placed by their circuits; by their activations, the baseline) as
Vega-Lite charts, pure functions of plain data.

Vega-Lite rather than Plotly for the k change: the chart's spec (`umap_spec`) does not depend on k, only its
rows do (`umap_rows`), so Streamlit keeps the chart and Vega re-colours the points in place. A Plotly
chart is remounted and replotted whenever its figure changes, about 80 ms of the browser's time per chart
on our machine. The default neuron page then needs no Plotly script at all.

Every point carries its reference position (`REFERENCE`, 0-based, in ranking order), shared by both maps:
app/hover_thumbnails.py shows the hovered reference's thumbnail and rings it in the other map, and
`chosen_references` turns a click or a box into positions. Streamlit draws these charts as SVG (one node
per point) below 2,000 references; the hover thumbnails read the points from that SVG.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from app.chart_specs import BOX, PICK, built_once, chosen, data_free_spec, point_selections
from app.figures import MARKERS, cluster_name, colour

__all__ = ["BOX", "HEIGHT_PX", "PICK", "REFERENCE", "chosen_references", "umap_rows", "umap_spec"]

REFERENCE = "reference"  # the field holding a point's reference position
HEIGHT_PX = 300


@built_once
def umap_spec(method: str, title: str) -> dict:
    """The Vega-Lite spec of one UMAP of ``method`` ("pure" or "activation"), without data: points at (x, y),
    coloured and named by cluster (legend below), reference number, activation and cluster on hover; a
    click selects a reference (`PICK`), a drag a box of them (`BOX`)."""
    shape = MARKERS.get(method, "circle")
    chart = (
        alt.Chart(title=title, height=HEIGHT_PX)
        .mark_point(
            filled=True, size=70, opacity=0.9, stroke="white", strokeWidth=0.5,
            shape=shape,
        )
        .encode(
            x=alt.X("x:Q", axis=None, scale=alt.Scale(zero=False)),
            y=alt.Y("y:Q", axis=None, scale=alt.Scale(zero=False)),
            # the colours travel with the rows (paired with the names, in row order): the spec stays the same
            # for every k and a cluster keeps its colour however many others are empty
            color=alt.Color(
                "cluster:N", scale=alt.Scale(range=alt.FieldRange(field="colour")),
                legend=alt.Legend(orient="bottom", title=None, columns=4, symbolType=shape),
            ),
            tooltip=[
                alt.Tooltip("rank:Q", title="reference #", format="d"),
                alt.Tooltip("activation:Q", format=".2f"),
                alt.Tooltip("cluster:N"),
            ],
        )
        .add_params(*point_selections(REFERENCE))
    )
    return data_free_spec(chart)  # the rows come separately (`umap_rows`)


def umap_rows(
    coords: np.ndarray, labels: np.ndarray, method: str, max_activations: ArrayLike | None = None
) -> pd.DataFrame:
    """One row per reference of the stored UMAP coordinates ``(n, 2)`` and the ``method``'s cluster
    ``labels (n,)``: its position (`REFERENCE`), rank, x, y, cluster name with the cluster's size
    ("VN 1 (23)", `figures.cluster_name`), colour (`figures.colour`) and max activation. Sorted by cluster,
    so the legend lists the clusters in order."""
    labels = np.asarray(labels, dtype=int)
    n = len(labels)
    sizes = np.bincount(labels)
    names = {c: f"{cluster_name(c, method)} ({sizes[c]})" for c in np.unique(labels)}
    rows = pd.DataFrame({
        REFERENCE: np.arange(n),
        "rank": np.arange(1, n + 1),
        "x": np.asarray(coords, dtype=float)[:n, 0],
        "y": np.asarray(coords, dtype=float)[:n, 1],
        "cluster": [names[c] for c in labels],
        "colour": [colour(int(c), method) for c in labels],
        "activation": (np.full(n, np.nan) if max_activations is None
                       else np.asarray(max_activations, dtype=float)[:n]),
    })
    return rows.iloc[np.argsort(labels, kind="stable")].reset_index(drop=True)


def chosen_references(event: Any, rows: pd.DataFrame) -> list[int]:
    """The reference positions selected in a UMAP's ``event``: the clicked ones in click order, else those
    inside the dragged box (ends included) in ranking order."""
    return chosen(event, rows, REFERENCE, "x", "y")
