"""Vega-Lite specs from Altair charts, for `st.vega_lite_chart`.

Handing Streamlit an Altair chart costs its building and a JSON-schema validation on every script run: about
25 ms for the overview's method comparison on our machine, whose pages run their scripts on every click.
So the pages build each spec once (per process, or per run where the data is the run's) and pass the spec;
where the rows change between runs (Fig. A.2's filter, the UMAPs' k) the spec holds none (`data_free_spec`)
and the rows go beside it, so a page run only serialises the rows.
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
