"""Overview page: the run, the ranking of neurons by rho_inter - rho_intra, and the paper's summary figures
(Fig. A.2 distribution, Fig. 4 method comparison, Sec. 4.2 distance correlation). Selecting a table row or
a dot opens the neuron page."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import analysis, model_cache, overview_charts, search, sheets, state, store_access, team_notes, ui
from app.safe_text import code
from app.store_access import RunRef

MAX_STRIPS = 150
STRIP_WIDTH_PX = 216  # a strip of 6 thumbnails (`sheets.thumbnail_strip`) at the row height
TABLE_WIDTH_PX = 870  # the grid beside the sidebar in a 1366 px laptop window (904 px; 938 at 1400, measured)
# less the row-selection column
TABLE_COLUMNS = [
    "rank",
    "neuron",
    "references",
    "labels",
    "team",
    "polysemanticity",
    "suggested_k",
    "overall",
    "oracle_kind",
    "oracle_polysemanticity",
]
# hidden while the team's column is shown (both stay in the CSV download, as does the top activation)
TEAM_REPLACES = ("overall", "oracle_polysemanticity")


def filter_ranking(
    table: pd.DataFrame,
    query: str = "",
    score_range: tuple[float, float] | None = None,
    verdict: str | None = None,
) -> pd.DataFrame:
    """The ranking rows that match ``query`` (neuron ids typed in it, else its text in the virtual neurons'
    labels or the team's, ignoring case; any row for an empty query), whose rho_inter - rho_intra lies in
    ``score_range`` (ends included; any score for None) and whose team verdict is ``verdict`` (any for
    None; neurons nobody judged are "unreviewed")."""
    wanted = state.parse_neuron_filter(query)
    if wanted is not None:
        table = table[table["neuron"].isin(wanted)]
    elif query.strip():
        columns = [c for c in ("labels", "predicted", "clip", "team") if c in table]
        if columns:
            hits = [table[c].str.contains(query.strip(), case=False, regex=False, na=False) for c in columns]
            table = table[np.logical_or.reduce(hits)]
    if score_range is not None:
        table = table[table["polysemanticity"].between(*score_range)]
    if verdict is not None:
        judged = table["verdict"] if "verdict" in table else pd.Series("unreviewed", index=table.index)
        table = table[judged.fillna("unreviewed") == verdict]
    return table


def with_team_notes(run: RunRef, table: pd.DataFrame) -> pd.DataFrame:
    """The ranking with the team's ``team`` label and ``verdict`` per neuron (when anyone annotated)."""
    notes = team_notes.neuron_notes(run.run_id)
    if notes is None or notes.empty:
        return table
    return table.merge(notes, on="neuron", how="left")


def score_bounds(table: pd.DataFrame) -> tuple[float, float] | None:
    """The ends of the score filter: the lowest and highest rho_inter - rho_intra, widened to the slider's
    0.01 steps so that the whole range keeps every row; None when there is no range to choose from (no
    score yet, or all scores within one step)."""
    scores = table["polysemanticity"].dropna()
    if scores.empty:
        return None
    low, high = math.floor(scores.min() * 100) / 100, math.ceil(scores.max() * 100) / 100
    return (low, high) if low < high else None


def ranking_filters(table: pd.DataFrame) -> tuple[str, tuple[float, float] | None, str | None]:
    """The search box (neuron ids, labels, any words) beside the score slider and the team's verdict;
    returns the query, the score range chosen (None while the slider spans every score, so rows without a
    score yet stay listed) and the verdict (None: any)."""
    search, scores, judged = st.columns([2, 2, 1])
    verdict = judged.selectbox("Team verdict", ["any", *team_notes.VERDICT_NAMES.values()],
                               key="ranking_verdict")
    verdict = None if verdict == "any" else verdict
    labelled = "labels" in table
    query = search.text_input(
        "Search by neuron id or label" if labelled else "Search by neuron id",
        placeholder="e.g. 12, or several: 3 7 12" + (", or a class: dog" if labelled else ""),
        key="ranking_search",
    )
    bounds = score_bounds(table)
    if bounds is None:
        return query, None, verdict
    chosen = scores.slider(
        "ρ_inter − ρ_intra between", *bounds, value=bounds, step=0.01, key="ranking_scores"
    )
    return query, None if tuple(chosen) == bounds else tuple(chosen), verdict


def no_match_notice(
    query: str, score_range: tuple[float, float] | None, verdict: str | None = None
) -> str:
    """Why the filtered ranking is empty; the typed query is quoted as code, never rendered."""
    reasons = [f"matches {code(query, max_chars=60)}"] if query else []
    if score_range is not None:
        reasons.append(f"has ρ_inter − ρ_intra in [{score_range[0]:.2f}, {score_range[1]:.2f}]")
    if verdict is not None:
        reasons.append(f"is judged {verdict} by the team")
    return "No neuron of this run " + " and ".join(reasons) + "."


def shown_columns(present: Sequence[str]) -> list[str]:
    """The ranking's columns among ``present``, in order: the team's column takes the place of
    `TEAM_REPLACES` (still in the CSV download), so that the table keeps to `TABLE_WIDTH_PX`."""
    hidden = TEAM_REPLACES if "team" in present else ()
    return [c for c in TABLE_COLUMNS if c in present and c not in hidden]


def ranking_view(view: pd.DataFrame, strips: Mapping[int, str]) -> pd.DataFrame:
    """The displayed table: ``view``'s rows with a thumbnail-strip column (None where no strip is given)."""
    view = view.assign(references=[strips.get(int(n)) for n in view["neuron"]])
    return view[shown_columns(list(view.columns))].reset_index(drop=True)


def selected_row(event: Any, view: pd.DataFrame) -> pd.Series | None:
    """The selected table row of ``view`` (selection positions refer to its rows), None without one."""
    rows = list(getattr(getattr(event, "selection", None), "rows", None) or [])
    if not rows or not 0 <= rows[0] < len(view):
        return None
    return view.iloc[rows[0]]


def selected_row_neuron(event: Any, view: pd.DataFrame) -> int | None:
    """The neuron of the selected table row."""
    row = selected_row(event, view)
    return None if row is None else int(row["neuron"])


def open_neuron(run: RunRef, neuron: int, k: int | None = None) -> None:
    """The neuron page of ``neuron`` at ``k`` (default: the session's k)."""
    k = st.session_state.get("k", state.DEFAULT_K) if k is None else k
    st.switch_page(ui.PAGES["neuron"], query_params={"run": run.name, "neuron": str(neuron), "k": str(k)})


def is_text_query(query: str) -> bool:
    """A query that is text to search for, not neuron ids."""
    return bool(query.strip()) and state.parse_neuron_filter(query) is None


def hits_table(
    run: RunRef, hits: pd.DataFrame, key: str, column_config: dict[str, Any],
    where: tuple[str, ...] = ("virtual_neuron", "k"),
) -> None:
    """Search hits (one row per neuron, or per annotation, with its virtual neuron and k) with the neuron's
    strip of top references and the ``where`` columns; selecting a row opens that neuron at that k."""
    strips = sheets.thumbnail_strips(run, [int(n) for n in hits["neuron"]])
    view = hits.assign(references=[strips.get(int(n)) for n in hits["neuron"]])
    event = st.dataframe(
        view[["neuron", "references", *where, *column_config]],
        key=key,
        on_select="rerun",
        selection_mode="single-row",
        hide_index=True,
        row_height=40,
        column_config={
            **neuron_columns(),
            "virtual_neuron": st.column_config.NumberColumn("VN", width=48, format="%d"),
            "k": st.column_config.NumberColumn("k", width=40, format="%d"),
            **column_config,
        },
    )
    hit = selected_row(event, hits)
    if hit is not None:
        open_neuron(run, int(hit["neuron"]), int(hit["k"]))


def label_hits_section(run: RunRef, query: str) -> None:
    """For a text query: the virtual neurons labelled like it over every k and every label source
    (`app.search.label_hits`), most about it first; selecting a row opens that neuron at that k."""
    index = store_access.label_index(run)
    if index is None or not is_text_query(query):
        return
    names = {"data": store_access.data_label_names(run), "predicted": store_access.class_names(run),
             "clip": store_access.clip_label_names(run)}
    hits = search.label_hits(index, names, query)
    st.markdown(
        f"**Virtual neurons labelled {code(query, max_chars=60)}**: {len(hits)} neuron(s), each with its "
        "virtual neuron (at any k) whose references carry the label most"
    )
    if hits.empty:
        return
    hits_table(
        run,
        hits,
        "label_hits",
        {
            "label": st.column_config.TextColumn("label", width=160),
            "source": st.column_config.TextColumn(
                "from",
                width=80,
                help="data: the dataset's labels; predicted: the model's classes; clip: CLIP's names of the "
                "crops",
            ),
            "share": st.column_config.NumberColumn(
                "share", width=64, format="percent", help="of the virtual neuron's references"
            ),
            "enrichment": st.column_config.NumberColumn(
                "×",
                width=56,
                format="%.1f",
                help="share / the label's share among all the neuron's references",
            ),
            "count": st.column_config.NumberColumn("refs", width=52, format="%d"),
        },
    )


def team_hits_section(run: RunRef, query: str) -> None:
    """For a text query: the team's annotations whose label or note holds it (`annotations_db`)."""
    if not is_text_query(query):
        return
    hits = team_notes.search_hits(run.run_id, query, st.session_state.get("k", state.DEFAULT_K))
    if hits is None or hits.empty:
        return
    st.markdown(f"**Annotated by the team with {code(query, max_chars=60)}**: {len(hits)} annotation(s)")
    hits_table(
        run,
        hits,
        "team_hits",
        {
            "label": st.column_config.TextColumn("label", width=160),
            "verdict": st.column_config.TextColumn("verdict", width=120),
            "author": st.column_config.TextColumn("by", width=140),
        },
        where=("on",),
    )


def clip_hits_section(run: RunRef, query: str) -> None:
    """For a text query on a run that CLIP labelled: the virtual neurons whose crops look most like the
    text in CLIP's joint space (`app.search.clip_hits`), any words, not only the vocabulary's."""
    status = store_access.clip_status(run)
    index = store_access.clip_centroid_index(run)
    if not is_text_query(query) or status is None or status.state != "labelled" or index is None:
        return
    from pure_core.models import MissingWeightsError

    try:
        vector = model_cache.clip_text_vector(status.model, query.strip()[:200])
    except MissingWeightsError as error:
        ui.notice(f"Free-text search needs the CLIP weights that labelled this run, {code(status.model)}, "
                  f"and they are not on this server: {code(str(error).splitlines()[0])}")
        return
    hits = search.clip_hits(index, vector, limit=20)
    st.markdown(
        f"**Virtual neurons that look like {code(query, max_chars=60)}** (CLIP, any words): each neuron's "
        "virtual neuron (at any k) whose crops are closest to the text"
    )
    hits_table(
        run,
        hits,
        "clip_hits",
        {
            "similarity": st.column_config.NumberColumn(
                "cos", width=60, format="%.3f",
                help="cosine similarity of the text's CLIP feature and the mean CLIP feature of the "
                "virtual neuron's crops",
            ),
        },
    )


def neuron_columns() -> dict[str, Any]:
    """The neuron id and its strip of top references, as both the ranking and the label hits show them."""
    return {
        "neuron": st.column_config.NumberColumn("neuron", width=64, format="%d"),
        "references": st.column_config.ImageColumn("top references", width=STRIP_WIDTH_PX),
    }


def ranking_columns() -> dict[str, Any]:
    """Headers, formats and pixel widths of the ranking table; the widths add up to at most `TABLE_WIDTH_PX`,
    so the last column is not cut off in a 1366-1440 px laptop window."""
    return {
        "rank": st.column_config.NumberColumn("rank", width=52),
        **neuron_columns(),
        "labels": st.column_config.TextColumn(
            "VN 1 | VN 2",
            width=136,
            help="the label most frequent among each virtual neuron's references at k = 2, over-represented "
            "labels first: the dataset's labels where it has them, else the model's predicted classes, "
            "else CLIP's names of the crops; the search box above finds them all",
        ),
        "polysemanticity": st.column_config.NumberColumn("ρ_inter − ρ_intra", width=104, format="%.3f"),
        "overall": st.column_config.NumberColumn(
            "overall", width=68, format="%.3f", help="mean distance, all pairs"
        ),
        "suggested_k": st.column_config.NumberColumn(
            "k*",
            width=44,
            format="%d",
            help="suggested number of virtual neurons: the k whose split is stable over k-means seeds with "
            "the best silhouette; 1 when no split is stable (one circuit)",
        ),
        "team": st.column_config.TextColumn(
            "team", width=120, help="the team's label of the neuron, else of its virtual neurons"
        ),
        "oracle_kind": st.column_config.TextColumn(
            "planted",
            width=92,
            help="ground truth of the synthetic world: the planted concepts of the references",
        ),
        "oracle_polysemanticity": st.column_config.NumberColumn(
            "oracle",
            width=64,
            format="%.2f",
            help="the score with an ideal embedder (ground truth of the synthetic world)",
        ),
    }


def ranking_section(run: RunRef, table: pd.DataFrame) -> None:
    st.subheader("Neurons ranked by polysemanticity")
    st.caption(
        "Score = ρ_inter − ρ_intra: the references' embeddings are split into two clusters (k-means); a "
        "large gap between the mean distance across and within the clusters means the neuron responds to two "
        "different things. Click a row to open the neuron; click a column header to sort."
    )
    table = with_team_notes(run, table)
    query, score_range, verdict = ranking_filters(table)
    label_hits_section(run, query)
    team_hits_section(run, query)
    clip_hits_section(run, query)
    view = filter_ranking(table, query, score_range, verdict)
    # Strips for the first rows only: a layer of thousands of channels would otherwise send megabytes.
    view = ranking_view(view, sheets.thumbnail_strips(run, [int(n) for n in view["neuron"][:MAX_STRIPS]]))
    if len(view) > MAX_STRIPS:
        st.caption(
            f"{len(view)} neurons; thumbnails for the top {MAX_STRIPS} rows: search by id or narrow the "
            "score range to see others."
        )
    if view.empty and (query or score_range or verdict):
        ui.notice(no_match_notice(query, score_range, verdict))
    event = st.dataframe(
        view,
        key="ranking_table",
        on_select="rerun",
        selection_mode="single-row",
        hide_index=True,
        column_config=ranking_columns(),
        row_height=40,
    )
    neuron = selected_row_neuron(event, view)
    if neuron is not None:
        open_neuron(run, neuron)
    ui.download(  # on request: the CSV of 2048 neurons is half a megabyte in the page, parsed as markdown
        "Download the ranking (CSV)",
        lambda: table.to_csv(index=False).encode(),
        file_name=f"ranking-{run.name}.csv",
        mime="text/csv",
        key="ranking_csv",
    )


@st.cache_data(show_spinner=False, max_entries=64)
def paper_figure_specs(run: RunRef) -> dict[str, dict]:
    """The Vega-Lite specs, data included, of the run's method comparison (Fig. 4, "methods") and distance
    correlation (Sec. 4.2, "correlation"), those it has stored: built once per run, as building an Altair
    chart and validating its spec took longer than the rest of the overview's script."""
    specs, labels = {}, analysis.METHOD_LABELS
    comparison = store_access.method_comparison(run)
    if comparison is not None:
        specs["methods"] = overview_charts.method_comparison_chart(comparison, labels).to_dict()
    correlation = store_access.distance_correlation(run)
    if correlation is not None and correlation.methods:
        specs["correlation"] = overview_charts.correlation_chart(correlation, labels).to_dict()
    return specs


def figures_section(run: RunRef, table: pd.DataFrame) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Distribution (Fig. A.2)")
        st.caption(
            "One dot per neuron: mean distance between its references' embeddings (all pairs) against "
            "ρ_inter − ρ_intra. Polysemantic neurons sit high. Click a dot to open the neuron; drag a box "
            "to list several."
        )
        event = st.vega_lite_chart(
            overview_charts.distribution_rows(table),
            overview_charts.distribution_spec(),
            key="distribution",
            on_select="rerun",
            selection_mode=(overview_charts.PICK, overview_charts.BOX),
        )
        chosen = overview_charts.chosen_neurons(event, table)
        if len(chosen) == 1:
            open_neuron(run, chosen[0])
        elif chosen:
            st.caption(f"{len(chosen)} neurons selected:")
            for neuron in chosen[:12]:
                st.page_link(
                    ui.PAGES["neuron"],
                    label=f"neuron {neuron}",
                    query_params={"run": run.name, "neuron": str(neuron)},
                )
    with right:
        st.subheader("Methods compared (Fig. 4)")
        st.caption(
            "Each neuron's references split into k groups by PURE's circuits, by its activations "
            "(baseline), or by the embeddings themselves (upper bound), judged by the embedder: mean "
            "distance within (ρ_intra, solid; lower is better) and across groups (ρ_inter, dashed)."
        )
        specs = paper_figure_specs(run)
        if "methods" in specs:
            st.vega_lite_chart(specs["methods"], key="methods")
        else:
            st.caption("No method comparison stored in this run.")
    if "correlation" in specs:
        left, _ = st.columns(2)
        with left:
            st.subheader("Distance correlation (Sec. 4.2)")
            st.caption(
                "How well each method's pairwise distances between a neuron's references follow the "
                "embedder's (Pearson r over all neurons' pairs; error bars: SEM over neuron subsets)."
            )
            st.vega_lite_chart(specs["correlation"], key="correlation")


def render() -> None:
    run = ui.choose_run()
    if run is None:
        return
    ui.write_params(run=run.name)
    st.title("PURE neuron explorer")
    ui.run_summary(run)
    table = store_access.ranking(run)
    if not run.complete:
        ui.progress(run, "the ranking and the figures")
    if table.empty:
        return
    ranking_section(run, table)
    figures_section(run, table)


if __name__ == "__main__":
    render()
