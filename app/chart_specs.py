"""Vega-Lite specs from Altair charts, for `st.vega_lite_chart`.

Handing Streamlit an Altair chart costs its building and a JSON-schema validation on every script run: about
25 ms for the overview's method comparison on our machine, whose pages run their scripts on every click.
The chart modules build their specs once (`data_free_spec`, cached by the caller) and send the rows
separately, so a page run only serialises the rows.
"""

from __future__ import annotations

import altair as alt

DATA_KEYS = ("data", "datasets", "config")  # the rows, and Altair's default view size, which Streamlit sets


def data_free_spec(chart: alt.TopLevelMixin) -> dict:
    """``chart``'s Vega-Lite spec without its rows (`DATA_KEYS` removed): the rows go to
    `st.vega_lite_chart` as its ``data``, so one spec serves every dataset of the same columns."""
    spec = chart.to_dict()
    for key in DATA_KEYS:
        spec.pop(key, None)
    return spec
