"""Vega-Lite specs from Altair charts for `st.vega_lite_chart`, their click and box selections, and the
selected points read back.

Handing Streamlit an Altair chart costs its building and a JSON-schema validation on every script run: about
25 ms for the overview's method comparison on our machine, whose pages run their scripts on every click.
So the pages build each spec once (`built_once`, or per run where the data is the run's) and pass the spec;
where the rows change between runs (Fig. A.2's filter, the UMAPs' k) the spec holds none (`data_free_spec`)
and the rows go beside it, so a page run only serialises the rows.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import altair as alt
import pandas as pd

DATA_KEYS = ("data", "datasets", "config")  # the rows, and Altair's default view size, which Streamlit sets
# Selection parameters of the point charts: a click picks points (shift-click adds more), a drag boxes some.
PICK, BOX = "pick", "box"


def data_free_spec(chart: alt.TopLevelMixin) -> dict:
    """``chart``'s Vega-Lite spec without its rows (`DATA_KEYS` removed): the rows go to
    `st.vega_lite_chart` as its ``data``, so one spec serves every dataset of the same columns."""
    spec = chart.to_dict()
    for key in DATA_KEYS:
        spec.pop(key, None)
    return spec


def built_once(build: Callable[..., dict]) -> Callable[..., dict]:
    """``build`` (a spec from hashable arguments) run once per arguments; every call gets its own copy, which
    Streamlit may change."""
    cached = functools.cache(build)

    @functools.wraps(build)
    def spec(*args: Any) -> dict:
        return copy.deepcopy(cached(*args))

    return spec


def point_selections(field: str) -> tuple[alt.Parameter, alt.Parameter]:
    """A click that selects the points' ``field`` (`PICK`) and a box dragged over x and y (`BOX`)."""
    return (alt.selection_point(name=PICK, fields=[field], on="click"),
            alt.selection_interval(name=BOX, encodings=["x", "y"]))


def chosen(event: Any, rows: pd.DataFrame, field: str, x: str, y: str) -> list[int]:
    """The ``field`` values selected in a chart's ``event`` (`point_selections`): the clicked points in click
    order, else the ``rows`` inside the box dragged over columns ``x`` and ``y`` (ends included), in their
    ``rank`` order."""
    selection = getattr(event, "selection", None) or {}
    picked = [int(point[field]) for point in selection.get(PICK) or [] if field in point]
    if picked:
        return list(dict.fromkeys(picked))
    box = selection.get(BOX) or {}
    if x not in box or y not in box:
        return []
    inside = rows[x].between(*sorted(box[x])) & rows[y].between(*sorted(box[y]))
    return [int(value) for value in rows.loc[inside].sort_values("rank")[field]]
