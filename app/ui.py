"""Page pieces shared by the pages: run / neuron / k controls synced with the URL, the empty states, and
images and downloads sent inline with the page.

State model: the shareable state (run, neuron, k) lives in `st.query_params`; the pages rewrite the URL on
every run. A query value that differs from what the app itself last wrote came from outside (first load, a
pasted deep link, `st.switch_page(..., query_params=...)`) and is applied to the widgets after validation;
invalid values are ignored with a notice. Widget values persist across pages in plain session keys
(``run``, ``neuron``, ``k``; the widgets use ``*_select`` keys seeded from them on every run) because
Streamlit drops the state of widgets that a page does not render, even when another page has a widget with
the same key.

Data never gets a URL of its own: `st.image` and `st.download_button` would serve it from /media/ addresses
that answer without a login, so `image` and `download` send it inline (data URIs) over the session's
websocket. Values from outside (query, store, file names) reach markdown only through `safe_text.code`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import PurePath
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image, ImageDraw

from app import figures, state, store_access
from app.safe_text import code, html_text
from app.store_access import RunRef
from store import STAGES, StoreError

_WRITTEN = "_query_written"
PRECOMPUTE_COMMAND = "python -m precompute"
PAGES = {"overview": "views/overview.py", "neuron": "views/neuron.py", "upload": "views/upload.py",
         "activity": "views/activity.py"}


def external_param(name: str) -> str | None:
    """The query parameter ``name`` if it changed outside the app since the app last wrote it, else None."""
    current = st.query_params.get(name)
    written = st.session_state.get(_WRITTEN, {}).get(name)
    return None if current is None or current == written else current


def write_params(**values: object) -> None:
    """Make the URL's query exactly ``values`` (None values dropped), so the page can be shared."""
    wanted = {name: str(value) for name, value in values.items() if value is not None}
    for name in list(st.query_params.keys()):
        if name not in wanted:
            del st.query_params[name]
    for name, value in wanted.items():
        if st.query_params.get(name) != value:
            st.query_params[name] = value
    st.session_state[_WRITTEN] = wanted


def notice(message: str) -> None:
    """An info box; ``message`` is markdown whose outside values went through `safe_text.code`."""
    st.info(message, icon=":material/info:")


ImageLike = bytes | Image.Image | np.ndarray


def image_uri(picture: ImageLike) -> str:
    """A picture as a data URI: encoded image bytes as they are, PIL images and ``(H, W[, 3])`` arrays as
    PNG."""
    if isinstance(picture, bytes):
        return figures.data_uri(picture)
    if isinstance(picture, np.ndarray):
        picture = Image.fromarray(picture)
    return figures.data_uri(figures.png_bytes(picture), "image/png")


def image(pictures: ImageLike | Sequence[ImageLike], **options: Any) -> None:
    """`st.image` of inline data URIs (Streamlit passes them through), so no /media/ URL serves the pixels;
    ``options`` as for `st.image`."""
    many = isinstance(pictures, list | tuple)
    uris = [image_uri(p) for p in pictures] if many else image_uri(pictures)
    st.image(uris, **options)


def download(
    label: str, data: bytes | Callable[[], bytes], file_name: str, mime: str, key: str | None = None
) -> None:
    """A download link whose content is inline in the page (a data URI), so no /media/ URL serves it.
    A callable ``data`` (costly content) is called only after a click on a button with the same label
    (widget key ``key``), which the link then replaces."""
    if callable(data):
        prepared = f"{key}_prepared"
        if not st.session_state.get(prepared):
            st.button(label, key=key, on_click=_mark_prepared, args=(prepared,))
            return
        data = data()
    uri = figures.data_uri(data, mime)
    st.markdown(
        f"<a href='{uri}' download='{html_text(file_name)}' data-testid='pure-download'>"
        f":material/download: {html_text(label)}</a>",
        unsafe_allow_html=True,
    )


def _mark_prepared(flag: str) -> None:
    st.session_state[flag] = True


@functools.cache
def favicon_uri() -> str:
    """The tab icon, drawn here (a red neuron): Streamlit fetches emoji and Material icons for the tab from
    outside hosts, which would tell a third party of every visit and fail offline."""
    canvas = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for end in ((8, 8), (56, 10), (6, 52), (58, 56)):
        draw.line(((32, 32), end), fill="#d62728", width=5)
    draw.ellipse((18, 18, 46, 46), fill="#d62728")
    return image_uri(canvas)


# -- run ---------------------------------------------------------------------------------------------------
def choose_run() -> RunRef | None:
    """The sidebar's run selector; renders the "no store yet" state and returns None when there is no run."""
    root = store_access.runs_root()
    runs = store_access.available_runs(str(root))
    if not runs:
        no_store(root)
        return None
    by_name = {info.directory.name: info for info in runs}
    requested, message = state.parse_run(external_param("run"), list(by_name))
    if message:
        notice(message)
    if requested is not None:
        st.session_state["run"] = requested
    if st.session_state.get("run") not in by_name:
        complete = [name for name, info in by_name.items() if info.complete]
        st.session_state["run"] = (complete or list(by_name))[0]
    st.session_state["run_select"] = st.session_state["run"]
    with st.sidebar:
        name = st.selectbox(
            "Run",
            list(by_name),
            key="run_select",
            format_func=lambda n: by_name[n].label,
            on_change=_persist,
            args=("run_select", "run"),
            help="Every run store in the runs directory.",
        )
        info = by_name[name]
        meta = info.meta
        st.caption(
            f"{code(meta.model.name)}, layer {code(meta.layer)} (circuits in {code(meta.lower_layer)}), "
            f"{len(meta.neurons) or 'all'} neurons, {meta.n_ref or '?'} references each; "
            f"embedder {code(meta.embedder)}."
        )
    run = store_access.run_ref(info)
    try:
        store_access.run_details(run)
    except StoreError:  # replaced or damaged since it was listed; the details (server paths) stay in the log
        st.error(f"Run {code(name)} cannot be read (see the server log).", icon=":material/error:")
        return None
    return run


def no_store(root) -> None:
    """The "no run yet" state; names the runs directory as configured, never the server's absolute path."""
    st.title("PURE neuron explorer")
    st.warning(f"No run store in the runs directory {code(root)} yet.", icon=":material/inbox:")
    st.markdown(
        "Compute the demo run (the synthetic world and its small trained network; a few minutes on a CPU), "
        "then reload this page:"
    )
    st.code(PRECOMPUTE_COMMAND, language="bash")
    st.caption(
        "Runs are read from `$PURE_RUNS_DIR`, or `--runs-dir DIR` after `--` "
        "(`streamlit run app/main.py -- --runs-dir DIR`), else `./runs`."
    )


def progress(run: RunRef, what: str) -> None:
    """The "still being computed" state: which stages are done, and how to resume."""
    details = store_access.run_details(run)
    done = details.stages_done
    seconds = details.stage_seconds
    st.warning(
        f"Run {code(run.name)} is still being computed; {what} appear when its stages are done.",
        icon=":material/hourglass_top:",
    )
    lines = []
    for stage in STAGES:
        if done.get(stage):
            took = f" in {seconds[stage]:.0f} s" if seconds.get(stage) else ""
            lines.append(f"- :material/check_circle: {stage}: done{took}")
        else:
            lines.append(f"- :material/pending: {stage}: not yet")
    st.markdown("\n".join(lines))
    st.caption(
        f"`{PRECOMPUTE_COMMAND}` resumes an interrupted run with the same config; this page re-reads the "
        "store every few seconds (reload to refresh)."
    )


def judge_shares_weights(model_name: str, embedder: str) -> bool:
    """Whether a run's embedder is the analysed network (the same registered model, so the same weights):
    a circular judge of the polysemanticity score."""
    return embedder == model_name


def run_summary(run: RunRef) -> None:
    details = store_access.run_details(run)
    meta = details.meta
    model = meta.model
    # file names only: a checkpoint or dataset path on the server is none of a visitor's business
    model_files = (("weights", model.weights), ("checkpoint", model.checkpoint))
    dataset = meta.dataset
    cols = st.columns(4)
    facts = (
        (
            "Model",
            model.name,
            ", ".join(f"{key} {code(PurePath(value).name)}" for key, value in model_files if value) or None,
        ),
        ("Layer ← circuits from", f"{meta.layer} ← {meta.lower_layer}", None),
        ("Dataset", dataset.kind, code(PurePath(dataset.path).name) if dataset.path else None),
        ("Embedder", meta.embedder, None),
    )
    for column, (label, value, detail) in zip(cols, facts, strict=True):
        column.markdown(
            f"<div style='font-size:13px;color:#666'>{label}</div>"
            f"<div style='font-size:20px;font-weight:600;overflow-wrap:anywhere'>{html_text(value)}</div>",
            unsafe_allow_html=True,
        )
        if detail:
            column.caption(detail)
    if judge_shares_weights(model.name, meta.embedder):
        st.warning(
            f"The embedder that scored this run ({code(meta.embedder)}) is the analysed network itself: its "
            "distances largely repeat the network's own activations, so the scores favour the activation "
            "baseline and say little about meaning. Rerun with an embedder that shares no weights with it "
            "(e.g. `--embedder efficientnet-lite2`, or CLIP).",
            icon=":material/warning:",
        )
    when = datetime.fromtimestamp(meta.created_at).strftime("%Y-%m-%d %H:%M")
    st.caption(
        f"{details.n_neurons} neurons × {details.n_ref} references · {dataset.n_images or '?'} images "
        f"(seed {'-' if dataset.seed is None else dataset.seed}) · k = {meta.ks} · run {code(run.run_id)} "
        f"created {when}"
    )


# -- neuron and k ------------------------------------------------------------------------------------------
def _persist(widget_key: str, store_key: str) -> None:
    st.session_state[store_key] = st.session_state[widget_key]


def choose_neuron(order: Sequence[int], with_steps: bool = True) -> int:
    """Neuron selector (ranking order) with previous/next buttons; applies and validates ``?neuron=``."""
    requested, message = state.parse_neuron(external_param("neuron"), order)
    if message:
        notice(message)
    if requested is not None:
        st.session_state["neuron"] = requested
    current = st.session_state.get("neuron")
    if current not in order:
        current = order[0]
    st.session_state["neuron"] = st.session_state["neuron_select"] = current
    rank = {n: i for i, n in enumerate(order)}

    def step(delta: int) -> None:
        position = rank[st.session_state["neuron_select"]] + delta
        st.session_state["neuron_select"] = order[max(0, min(len(order) - 1, position))]
        st.session_state["neuron"] = st.session_state["neuron_select"]

    if with_steps:
        left, middle, right = st.columns([1, 4, 1], vertical_alignment="bottom")
        left.button(
            "◀ Previous",
            on_click=step,
            args=(-1,),
            disabled=rank[current] == 0,
            width="stretch",
            help="Previous neuron in ranking order",
        )
        right.button(
            "Next ▶",
            on_click=step,
            args=(1,),
            disabled=rank[current] == len(order) - 1,
            width="stretch",
            help="Next neuron in ranking order",
        )
    else:
        middle = st.container()
    neuron = middle.selectbox(
        "Neuron (ranking order)",
        order,
        key="neuron_select",
        format_func=lambda n: f"neuron {n} (rank {rank[n] + 1} of {len(order)})",
        on_change=_persist,
        args=("neuron_select", "neuron"),
    )
    st.session_state["neuron"] = neuron
    return int(neuron)


def choose_k(n_references: int) -> int:
    """The k control (virtual neurons, 1..8, at most the number of references); applies ``?k=``."""
    k_max = state.clamp_k(state.K_MAX, n_references)
    requested, message = state.parse_k(external_param("k"))
    if message:
        notice(message)
    if requested is not None and requested > k_max:
        notice(f"This neuron has {n_references} reference(s), so k is at most {k_max}; showing k = {k_max}.")
        requested = k_max
    if requested is not None:
        st.session_state["k"] = requested
    current = st.session_state.get("k", state.DEFAULT_K)
    st.session_state["k"] = st.session_state["k_select"] = max(state.K_MIN, min(int(current), k_max))
    if k_max <= state.K_MIN:
        st.session_state["k"] = state.K_MIN
        return state.K_MIN
    k = st.slider(
        "k (virtual neurons)",
        state.K_MIN,
        k_max,
        key="k_select",
        on_change=_persist,
        args=("k_select", "k"),
        help="Re-clusters the stored circuit vectors live (k-means).",
    )
    st.session_state["k"] = k
    return int(k)
