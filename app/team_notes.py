"""The team's annotations in the dashboard: the database (`annotations_db`), who may write, and the panel
that shows and edits one annotation.

Configured in `.streamlit/secrets.toml`:

    [annotations]
    url = "postgresql+psycopg://explorer:...@db.lab.org/explorer"
    # absent: $PURE_ANNOTATIONS_URL, else the SQLite file annotations.sqlite next to the runs directory
    editing = true                      # false: an open instance shows annotations but takes none

Who may write on a protected instance: ``[access] editors`` (`app.auth`). Everything a visitor typed is shown
as code or plain text, never as markdown or HTML. A database that is down or read-only leaves the pages
browsable: the panel says so in one line.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from annotations_db import (
    MAX_LABEL_CHARS,
    MAX_NOTE_CHARS,
    Annotation,
    AnnotationError,
    AnnotationKey,
    AnnotationStore,
    EditConflict,
    Verdict,
    default_url,
)
from app import auth, store_access
from app.safe_text import code

__all__ = ["VERDICT_NAMES", "Editor", "annotation_store", "database_url", "editor", "history", "neuron_notes",
           "panel", "search_hits", "summary", "verdict_name"]

VERDICT_NAMES = {
    Verdict.UNREVIEWED: "unreviewed",
    Verdict.POLYSEMANTIC: "polysemantic, confirmed",
    Verdict.MONOSEMANTIC: "monosemantic",
    Verdict.UNCLEAR: "unclear",
}


@dataclass(frozen=True)
class Editor:
    """The visitor as an author: ``name`` (e-mail, password-login name or "local") and whether and why not
    they may write."""

    name: str
    may_edit: bool
    why_not: str = ""


def verdict_name(verdict: Verdict) -> str:
    return VERDICT_NAMES[Verdict(verdict)]


def _settings() -> dict[str, Any]:
    return dict(auth.instance_secrets().get("annotations", {}) or {})


def database_url() -> str:
    """The configured database: ``[annotations] url``, else ``$PURE_ANNOTATIONS_URL``, else the SQLite file
    next to the runs directory."""
    return str(_settings().get("url") or os.environ.get("PURE_ANNOTATIONS_URL")
               or default_url(store_access.runs_root()))


@st.cache_resource(show_spinner=False, max_entries=4)
def _open_store(url: str) -> AnnotationStore:
    return AnnotationStore(url)


_FAILED: dict[str, tuple[float, AnnotationError]] = {}  # url -> (when, why): a down database is asked again
RETRY_AFTER_S = 30.0  # only after this long, so that pages do not wait for its timeout on every run


def annotation_store() -> AnnotationStore:
    """The instance's annotation store (opened and migrated once per server; a failed open is retried
    after `RETRY_AFTER_S`). Raises `annotations_db.DatabaseUnavailable` when the database cannot be
    reached."""
    url = database_url()
    failed = _FAILED.get(url)
    if failed is not None and time.monotonic() - failed[0] < RETRY_AFTER_S:
        raise failed[1]
    try:
        store = _open_store(url)
    except AnnotationError as error:
        _FAILED[url] = (time.monotonic(), error)
        raise
    _FAILED.pop(url, None)
    return store


def editor() -> Editor:
    """Who the visitor is and whether they may annotate here."""
    name, allowed = auth.visitor()
    if not allowed:
        return Editor(name, False, "your login may view annotations but not write them")
    if auth.AccessPolicy.from_secrets(auth.instance_secrets()).mode == "open" and \
            _settings().get("editing", True) is False:
        return Editor(name, False, "editing is switched off on this instance")
    return Editor(name, True)


def _label(label: str) -> str:
    return code(label, max_chars=MAX_LABEL_CHARS) if label else "(no label)"


def summary(annotation: Annotation) -> str:
    """One line of markdown: label, verdict, author, time, version; typed values as code."""
    label = _label(annotation.label)
    when = annotation.updated_at.strftime("%Y-%m-%d %H:%M UTC")
    return (f"{label} · {verdict_name(annotation.verdict)} · by {code(annotation.author, max_chars=80)}, "
            f"{when} (version {annotation.version})")


def widget_keys(key: AnnotationKey) -> dict[str, str]:
    """The session-state keys of the panel of ``key``: its form's widgets, what the form was loaded from, the
    last save's message, and ``open``, whether the panel is open."""
    base = f"annotation:{key.run_id}:{key.neuron}:{key.k}:{key.virtual_neuron}"
    names = ("label", "note", "verdict", "version", "loaded", "message", "open")
    return {name: f"{base}:{name}" for name in names}


def _form_values(keys: dict[str, str]) -> tuple[Any, ...]:
    state = st.session_state
    return state.get(keys["label"], ""), state.get(keys["note"], ""), state.get(keys["verdict"])


def _load_into_form(keys: dict[str, str], annotation: Annotation | None) -> None:
    st.session_state[keys["label"]] = "" if annotation is None else annotation.label
    st.session_state[keys["note"]] = "" if annotation is None else annotation.note
    st.session_state[keys["verdict"]] = Verdict.UNREVIEWED if annotation is None else annotation.verdict
    st.session_state[keys["version"]] = None if annotation is None else annotation.version
    st.session_state[keys["loaded"]] = _form_values(keys)


def _refresh_form(keys: dict[str, str], current: Annotation | None) -> None:
    """Load the stored version into a form opened for the first time, or into one left untouched while a
    collaborator saved a newer version; a form with the visitor's edits keeps them (a save then conflicts)."""
    state = st.session_state
    version = None if current is None else current.version
    first = keys["version"] not in state
    untouched = state.get(keys["loaded"]) == _form_values(keys)
    if first or (state.get(keys["version"]) != version and untouched):
        _load_into_form(keys, current)


def _save(key: AnnotationKey, keys: dict[str, str], author: str) -> None:
    """The form's submit callback: save from the version the form was loaded with; on a conflict, load
    theirs into the form and keep the visitor's own text in the message, so nothing is lost."""
    state = st.session_state
    label, note = state.get(keys["label"], ""), state.get(keys["note"], "")
    verdict = state.get(keys["verdict"], Verdict.UNREVIEWED)
    try:
        saved = annotation_store().save(key, label=label, note=note, verdict=verdict, author=author,
                                        expected_version=state.get(keys["version"]))
    except EditConflict as conflict:
        _load_into_form(keys, conflict.theirs)
        state[keys["message"]] = ("conflict", conflict.theirs, label, note)
        return
    except (AnnotationError, ValueError) as error:
        state[keys["message"]] = ("error", str(error))
        return
    _load_into_form(keys, saved)
    state[keys["message"]] = ("saved", saved.version)


def _message(keys: dict[str, str]) -> None:
    message = st.session_state.pop(keys["message"], None)
    if message is None:
        return
    if message[0] == "saved":
        st.success(f"Saved (version {message[1]}).", icon=":material/check:")
    elif message[0] == "error":
        st.error(f"Not saved: {code(message[1], max_chars=300)}")
    else:
        _, theirs, label, note = message
        who = "someone" if theirs is None else code(theirs.author, max_chars=80)
        st.warning(f"Changed meanwhile by {who}: the form now holds theirs. Yours was not saved; it was:",
                   icon=":material/merge:")
        st.text(f"label: {label}\nnote: {note}")


def history(key: AnnotationKey, shown: int = 10) -> None:
    """The earlier versions of an annotation, newest first (label, verdict, author, time)."""
    try:
        edits = annotation_store().history(key)[:-1][::-1][:shown]
    except AnnotationError:
        return
    lines = [f"version {e.version}: {_label(e.label)} · {verdict_name(e.verdict)} · "
             f"{code(e.author, max_chars=80)}, {e.at.strftime('%Y-%m-%d %H:%M')}" for e in edits]
    st.caption("Earlier: " + "; ".join(lines))


def panel(key: AnnotationKey, title: str) -> None:
    """The team's annotation of ``key``: the current version (and its history), and a form for those who may
    write. Reads the database on every run, so a collaborator's save shows on the next interaction."""
    try:
        store = annotation_store()
        current = store.get(key)
    except AnnotationError as error:
        st.caption(f"Annotations unavailable: {code(str(error), max_chars=200)}")
        return
    keys = widget_keys(key)
    heading = f"{title}: {code(current.label, max_chars=40)}" if current and current.label else title
    # Lazy: its contents (a form of four widgets) are built and sent only while it is open, so the virtual
    # neurons' panels add little to a k change. Streamlit names the panel by its heading and `expanded` too,
    # so a save (a new heading) makes a new panel: it starts as the last one was, open, with the message.
    was_open = bool(st.session_state.get(keys["open"])) or st.session_state.get(keys["message"]) is not None
    with st.expander(heading, expanded=was_open, icon=":material/edit_note:", key=keys["open"],
                     on_change="rerun") as expander:
        if not expander.open:
            return
        if current is None:
            st.caption("Nobody has annotated this yet.")
        else:
            st.markdown(summary(current))
            if current.note:
                st.text(current.note)
            if current.version > 1:
                history(key)
        visitor = editor()
        if not visitor.may_edit:
            st.caption(f"Viewing only: {visitor.why_not}.")
            return
        _refresh_form(keys, current)
        _message(keys)
        with st.form(keys["label"] + ":form", border=False):
            st.text_input("Label", key=keys["label"], max_chars=MAX_LABEL_CHARS,
                          placeholder="a short name, e.g. dog snout")
            st.text_area("Note", key=keys["note"], max_chars=MAX_NOTE_CHARS, height=80)
            st.selectbox("Verdict", list(Verdict), key=keys["verdict"], format_func=verdict_name)
            st.form_submit_button("Save", on_click=_save, args=(key, keys, visitor.name))
        st.caption(f"Saved as {code(visitor.name, max_chars=80)}; every version is kept.")


def neuron_notes(run_id: str) -> pd.DataFrame | None:
    """Per annotated neuron of a run: ``team`` (the neuron's label, else its virtual neurons' labels) and
    ``verdict`` (the neuron's, "unreviewed" without one); None when the database cannot be read."""
    try:
        notes = annotation_store().for_run(run_id)
    except AnnotationError:
        return None
    rows: dict[int, dict[str, Any]] = {}
    for note in notes:
        row = rows.setdefault(note.key.neuron, {"neuron": note.key.neuron, "team": "", "vn_labels": [],
                                                "verdict": verdict_name(Verdict.UNREVIEWED)})
        if note.key.is_neuron:
            row["team"], row["verdict"] = note.label, verdict_name(note.verdict)
        elif note.label:
            row["vn_labels"].append(f"VN {note.key.virtual_neuron}/{note.key.k}: {note.label}")
    for row in rows.values():
        row["team"] = row["team"] or " | ".join(row.pop("vn_labels"))
        row.pop("vn_labels", None)
    return pd.DataFrame(list(rows.values()), columns=["neuron", "team", "verdict"])


def search_hits(run_id: str, query: str, default_k: int) -> pd.DataFrame | None:
    """The run's annotations whose label or note holds ``query``, labels first: ``neuron``, ``k`` (the
    annotated k, ``default_k`` for a note on the whole neuron), ``virtual_neuron``, ``on``, ``label``,
    ``verdict``, ``author``; None when the database cannot be read."""
    try:
        found = annotation_store().search(run_id, query)
    except AnnotationError:
        return None
    return pd.DataFrame(
        [{"neuron": a.key.neuron, "k": a.key.k or default_k, "virtual_neuron": a.key.virtual_neuron,
          "on": "the neuron" if a.key.is_neuron else f"VN {a.key.virtual_neuron} of {a.key.k}",
          "label": a.label, "verdict": verdict_name(a.verdict), "author": a.author} for a in found],
        columns=["neuron", "k", "virtual_neuron", "on", "label", "verdict", "author"])
