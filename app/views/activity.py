"""Team page: what collaborators wrote lately on this run, with links, and the run's annotations to download
(JSON, CSV) or to bring in from another instance's export (for those who may write)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from annotations_db import AnnotationError
from app import state, team_notes, ui
from app.safe_text import code
from app.store_access import RunRef

N_RECENT = 100
MAX_IMPORT_BYTES = 5 * 1024 * 1024


def neuron_link(run: RunRef, neuron: int, k: int) -> str:
    """Deep link to a neuron page at ``k`` (relative to the app's root)."""
    return f"neuron?run={run.name}&neuron={int(neuron)}&k={int(k)}"


def recent_table(run: RunRef) -> pd.DataFrame:
    """The run's latest saves, newest first, each linked to its neuron page."""
    edits = team_notes.annotation_store().recent(N_RECENT, run_id=run.run_id)
    return pd.DataFrame(
        [{"when": e.at.strftime("%Y-%m-%d %H:%M"),
          "neuron": neuron_link(run, e.key.neuron, e.key.k or state.DEFAULT_K),
          "on": "the neuron" if e.key.is_neuron else f"VN {e.key.virtual_neuron} of {e.key.k}",
          "version": e.version, "label": e.label, "verdict": team_notes.verdict_name(e.verdict),
          "by": e.author} for e in edits],
        columns=["when", "neuron", "on", "version", "label", "verdict", "by"])


def import_section(run: RunRef) -> None:
    """Bring in an export (JSON or CSV): each annotation that differs becomes a new version."""
    visitor = team_notes.editor()
    if not visitor.may_edit:
        st.caption(f"Importing: {visitor.why_not}.")
        return
    upload = st.file_uploader("Import annotations (an export of this or another instance)",
                              type=["json", "csv"], key="annotations_import")
    if upload is None or not st.button("Import", key="annotations_import_go"):
        return
    data = upload.getvalue()
    if len(data) > MAX_IMPORT_BYTES:
        st.error(f"The file is larger than {MAX_IMPORT_BYTES // 2**20} MB.")
        return
    try:
        text = data.decode("utf-8")
        reader = team_notes.annotation_store().import_csv if upload.name.lower().endswith(".csv") else \
            team_notes.annotation_store().import_json
        counts = reader(text, author=visitor.name)
    except UnicodeDecodeError:
        st.error("The file is not UTF-8 text.")
        return
    except (AnnotationError, ValueError) as error:
        st.error(f"Nothing imported: {code(str(error), max_chars=300)}")
        return
    st.success(f"Imported: {counts['created']} new, {counts['updated']} updated, {counts['unchanged']} "
               "unchanged.")


def render() -> None:
    run = ui.choose_run()
    if run is None:
        return
    ui.write_params(run=run.name)
    st.title("Team notes")
    st.caption("What collaborators wrote about this run's neurons and virtual neurons, newest first; every "
               "version is kept. Write notes on a neuron's page.")
    try:
        recent = recent_table(run)
        store = team_notes.annotation_store()
        exported_json, exported_csv = store.export_json(run.run_id), store.export_csv(run.run_id)
    except AnnotationError as error:
        ui.notice(f"Annotations unavailable: {code(str(error), max_chars=200)}")
        return
    if recent.empty:
        st.caption("Nobody has annotated this run yet.")
    else:
        st.dataframe(recent, hide_index=True, key="recent_activity", column_config={
            "neuron": st.column_config.LinkColumn("neuron", display_text=r"&neuron=(\d+)"),
            "label": st.column_config.TextColumn("label", width=200),
        })
    left, right = st.columns(2)
    left.download_button("Download as JSON", exported_json.encode(), f"annotations-{run.run_id}.json",
                         "application/json", key="export_json")
    right.download_button("Download as CSV", exported_csv.encode(), f"annotations-{run.run_id}.csv",
                          "text/csv", key="export_csv")
    import_section(run)


if __name__ == "__main__":
    render()
