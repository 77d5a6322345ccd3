"""Neuron explorer: one neuron's references, its virtual neurons for a live k (k-means on the stored PURE
vectors, and on the activation vectors as the baseline), their circuits, and the scores for that k."""

from __future__ import annotations

import functools
import html
from collections import Counter
from collections.abc import Mapping, Sequence
from urllib.parse import urlencode

import numpy as np
import streamlit as st

from annotations_db import AnnotationKey
from app import (
    analysis,
    circuit_checks,
    figures,
    quantile_view,
    sheets,
    state,
    store_access,
    team_notes,
    ui,
    umap_charts,
)
from app.analysis import Clustering
from app.hover_thumbnails import hover_thumbnails
from app.reference_tiles import reference_tiles
from app.safe_text import code
from app.store_access import NeuronData, RunRef
from store.schema import KChoice

N_CIRCUIT_CHANNELS = 8
N_LOWER_SHOWN = 3
ENLARGED_PX = 320  # side of a reference opened large
# Tiles in a virtual neuron's grid unless every reference is asked for: a k change then re-sends at most
# k x GRID_TILES thumbnails (data URIs) instead of all of them (measured at 100 references: about 180 kB
# instead of 490 kB at k = 2), and the server hashes and the browser decodes that much less. Every
# reference stays in the "All N references" grid above.
GRID_TILES = 16


def planted_summary(nd: NeuronData, members: np.ndarray) -> str:
    """Ground truth of a virtual neuron's members, e.g. `` · planted: 7 × hstripes tbar, 1 × hstripes circle``
    (world runs only; empty string elsewhere)."""
    concepts = nd.planted_concepts
    if concepts is None or len(members) == 0:
        return ""
    counts = Counter(concepts[i] for i in members).most_common(3)
    return " · planted: " + ", ".join(f"{n} × {code(name)}" for name, n in counts)


def labels_summary(prefix: str, names: tuple[str, ...], shares: list | None) -> str:
    """A cluster's labels, e.g. `` · model predicts: `pagoda` 43 % ×1.9, `vase` 14 % ×2.0`` (share of its
    references, enrichment over the neuron's); empty without labels."""
    if not shares or not names:
        return ""
    return f" · {prefix}: " + ", ".join(
        f"{code(class_name(names, s.label), max_chars=40)} {s.share:.0%} ×{s.enrichment:.1f}" for s in shares
    )


def class_name(names: tuple[str, ...], label: int) -> str:
    """The name of class ``label`` ("class <label>" where the stored names do not reach it)."""
    return names[label] if 0 <= label < len(names) else f"class {label}"


def report_png(run: RunRef, neuron: int, k: int) -> bytes:
    """The neuron's figures as one PNG: both UMAPs, and per virtual neuron its reference grid and circuit."""
    nd = store_access.neuron_data(run, neuron)
    meta = store_access.run_details(run).meta
    pure = analysis.clustering(run, neuron, k, "pure")
    activation = analysis.clustering(run, neuron, k, "activation")
    umaps = []
    if nd.umap is not None:
        for method, result in (("pure", pure), ("activation", activation)):
            if result is not None:
                title = {"pure": "UMAP of PURE vectors", "activation": "UMAP of activations (their clusters)"}
                umaps.append(
                    figures.scatter_image(nd.umap.of(method), result.labels, title[method], method=method)
                )
    rows = []
    for c in range(k):
        members = np.flatnonzero(pure.labels == c)
        title = f"{figures.vn_name(c)}: {len(members)} references"
        if not np.isnan(pure.rho_intra[c]):
            title += f", rho_intra {pure.rho_intra[c]:.2f}"
        grid = figures.contact_sheet(
            [(title, [nd.thumbnails[i] for i in members if i < len(nd.thumbnails)], figures.colour(c))]
        )
        bars = figures.bars_image(
            pure.centers[c],
            N_CIRCUIT_CHANNELS,
            figures.colour(c),
            meta.lower_layer,
            f"circuit of {figures.vn_name(c)}",
        )
        rows.append((grid, bars))
    title = f"{run.name} · {meta.layer} neuron {neuron} · k = {k} virtual neurons (PURE)"
    return figures.png_bytes(figures.neuron_report(title, umaps, rows))


def assignments_csv(run: RunRef, neuron: int, k: int) -> bytes:
    nd = store_access.neuron_data(run, neuron)
    lines = ["reference,dataset_index,max_activation,pure_virtual_neuron,activation_cluster"]
    pure = analysis.clustering(run, neuron, k, "pure")
    activation = analysis.clustering(run, neuron, k, "activation")
    for i in range(nd.n_references):
        act = "" if activation is None else figures.cluster_name(activation.labels[i], "activation")
        lines.append(
            f"{i + 1},{nd.dataset_indices[i]},{nd.max_activations[i]:.4f},{pure.labels[i] + 1},{act}"
        )
    return ("\n".join(lines) + "\n").encode()


def header(run: RunRef, neuron: int, nd: NeuronData) -> None:
    table = store_access.ranking(run)
    row = table[table["neuron"] == neuron]
    cols = st.columns(5)
    if len(row):
        r = row.iloc[0]
        cols[0].metric("Rank", f"{int(r['rank'])} of {len(table)}")
        cols[1].metric("ρ_inter − ρ_intra", f"{r['polysemanticity']:.3f}", help="k = 2 embedding clusters")
        cols[2].metric("ρ_intra", f"{r['rho_intra']:.3f}")
        cols[3].metric("ρ_inter", f"{r['rho_inter']:.3f}")
    cols[4].metric("References", nd.n_references)
    oracle = None if nd.scores is None else nd.scores.oracle
    if oracle is not None:
        concepts = Counter(nd.planted_concepts or ()).most_common(3)
        st.caption(
            f"Ground truth (synthetic world): {code(oracle.kind)}; planted concepts of the references: "
            + ", ".join(f"{n} × {code(name)}" for name, n in concepts)
        )


OPEN_GRID_MAX = 24  # references shown open at first; a longer grid would push the virtual neurons far down


def reference_grid(run: RunRef, nd: NeuronData) -> None:
    with st.expander(
        f"All {len(nd.thumbnails)} references (display crops; caption: rank · max activation)",
        expanded=len(nd.thumbnails) <= OPEN_GRID_MAX,
    ):
        opened = reference_tiles(
            sheets.tiles(run, nd.neuron, range(len(nd.thumbnails))),
            sheets.tile_px(run, nd.neuron),
            key=f"tiles_all_{nd.neuron}",
        )
        if opened is not None:
            enlarged_reference(run, nd, opened, st.session_state.get("k"))


def umap_panels(run: RunRef, nd: NeuronData, k: int, pure: Clustering, activation: Clustering | None) -> None:
    """The two UMAPs side by side, coloured by ``pure``'s and ``activation``'s clusters; the references
    clicked or boxed in one are listed below it."""
    if nd.umap is None:
        st.caption("UMAP coordinates are not stored yet (scores stage).")
        return
    left, right = st.columns(2)
    for column, method, result, title in (
        (left, "pure", pure, "PURE circuit vectors"),
        (right, "activation", activation, "activation vectors (baseline)"),
    ):
        if result is None:
            continue
        with column:
            rows = umap_charts.umap_rows(nd.umap.of(method), result.labels, method, nd.max_activations)
            event = st.vega_lite_chart(
                rows,
                umap_charts.umap_spec(method, f"UMAP of {title}"),
                key=f"umap_{method}_{nd.neuron}",  # one chart for every k: new rows re-colour it in place
                on_select="rerun",
                selection_mode=(umap_charts.PICK, umap_charts.BOX),
                width="stretch",
            )
            chosen = [i for i in umap_charts.chosen_references(event, rows) if i < len(nd.thumbnails)]
            if chosen:
                st.caption(f"{len(chosen)} selected reference(s) (click one to open it large):")
                opened = reference_tiles(
                    sheets.tiles(run, nd.neuron, chosen), 76, key=f"tiles_{method}_{nd.neuron}_{k}"
                )
                if opened is not None:
                    enlarged_reference(run, nd, opened, k)
            else:
                st.caption(
                    "Hover a point to see its reference and where it lies in the other map; click it or drag "
                    "a box to list them."
                )


def trail(run: RunRef, neuron: int) -> list[state.Crumb]:
    """The neuron pages a visitor followed down to this one (`state.parse_trail`): taken from the link that
    opened the page, kept while the page shows that run and neuron, dropped once another neuron is chosen."""
    fresh = ui.external_param("trail")
    if fresh is not None:
        st.session_state["trail"] = (run.name, int(neuron), fresh)
    owner = st.session_state.get("trail")
    if owner is None or owner[:2] != (run.name, int(neuron)):
        return []
    names = [info.directory.name for info in store_access.available_runs(str(store_access.runs_root()))]
    return state.parse_trail(owner[2], names)


def write_params(run: RunRef, neuron: int, k: int, crumbs: Sequence[state.Crumb]) -> None:
    """The page's URL: run, neuron, k and the trail it was reached by (``crumbs``, `trail`)."""
    ui.write_params(run=run.name, neuron=neuron, k=k, trail=state.encode_trail(crumbs) or None)


def neuron_url(run_name: str, neuron: int, k: int | None = None,
               crumbs: Sequence[state.Crumb] = ()) -> str:
    """A neuron page's URL (relative to the app), with the trail that leads to it."""
    params = {"run": run_name, "neuron": int(neuron)}
    if k is not None:
        params["k"] = int(k)
    if crumbs:
        params["trail"] = state.encode_trail(crumbs)
    return "neuron?" + urlencode(params)


def channel_links(lower: RunRef | None, channels: Sequence[int],
                  crumbs: Sequence[state.Crumb]) -> dict[int, str]:
    """URLs of the circuit ``channels`` that ``lower`` (a run of the lower layer) analyses, each carrying
    ``crumbs`` (the way back up, this virtual neuron last)."""
    if lower is None:
        return {}
    available = set(store_access.neuron_order(lower))
    return {int(c): neuron_url(lower.name, c, crumbs=crumbs) for c in channels if int(c) in available}


def lower_channel_html(lower: RunRef | None, links: Mapping[int, str], lower_layer: str) -> str:
    """Top references of the first circuit channels that ``lower`` analyses (``links``: their pages), when a
    run of the lower layer with the same model exists. Empty string otherwise."""
    if lower is None or not links:
        return ""
    strips = sheets.thumbnail_strips(lower, list(links)[:N_LOWER_SHOWN])
    if not strips:
        return ""
    parts = [
        f"<div style='font-size:12px;color:#555;margin:8px 0 2px'>Top references of these channels "
        f"(run <code>{html.escape(lower.name)}</code>):</div>"
    ]
    for channel in strips:
        parts.append(
            f"<div style='display:flex;align-items:center;gap:6px;margin:2px 0'>"
            f"<a href='{html.escape(links[channel])}' target='_self' style='min-width:86px;font-size:11px'>"
            f"<code>{html.escape(lower_layer)}:{channel}</code></a>"
            f"<img src='{strips[channel]}' style='height:32px' alt='references of channel {channel}'></div>"
        )
    return "".join(parts)


def breadcrumb(run: RunRef, neuron: int, crumbs: Sequence[state.Crumb]) -> None:
    """Where the visitor came from down the chain of layers (``crumbs``, `trail`), each step a link back up
    (at its k)."""
    if not crumbs:
        return
    runs = {info.directory.name: info for info in store_access.available_runs(str(store_access.runs_root()))}
    steps = []
    for i, crumb in enumerate(crumbs):
        layer = runs[crumb.run].meta.layer if crumb.run in runs else "?"
        url = neuron_url(crumb.run, crumb.neuron, crumb.k, crumbs[:i])
        steps.append(
            f"<a href='{html.escape(url)}' target='_self'><code>{html.escape(layer)}</code> · neuron "
            f"{crumb.neuron} · VN {crumb.vn} of {crumb.k}</a>"
        )
    here = store_access.run_details(run).meta.layer
    steps.append(f"<b><code>{html.escape(here)}</code> · neuron {int(neuron)}</b>")
    st.html(
        "<nav aria-label='way down the circuit' style='font-size:13px'>Followed down the circuit: "
        + " › ".join(steps) + "</nav>"
    )


def shown_in_grid(members: np.ndarray, show_all: bool) -> tuple[np.ndarray, str]:
    """The references a virtual neuron's grid shows: its first `GRID_TILES` ``members`` (positions in ranking
    order, so its most activating references) unless ``show_all``; and a note when some are left out."""
    if show_all or len(members) <= GRID_TILES:
        return members, ""
    return members[:GRID_TILES], f" (top {GRID_TILES} shown)"


def virtual_neuron_grids(
    run: RunRef, nd: NeuronData, k: int, method: str, result: Clustering, show_all: bool,
    crumbs: Sequence[state.Crumb],
) -> None:
    """Per cluster of ``result``: its reference grid (`shown_in_grid`) beside its circuit, whose channels
    link down to the lower layer's pages with the way back up (``crumbs``, then this virtual neuron)."""
    meta = store_access.run_details(run).meta
    lower = store_access.lower_layer_run(str(store_access.runs_root()), run)
    predicted = analysis.cluster_labels(run, nd.neuron, k, method) or [None] * k
    data = analysis.cluster_labels(run, nd.neuron, k, method, source="data") or [None] * k
    clip = analysis.cluster_labels(run, nd.neuron, k, method, source="clip") or [None] * k
    class_names, data_names = store_access.class_names(run), store_access.data_label_names(run)
    clip_names = store_access.clip_label_names(run)
    for c in range(k):
        members = np.flatnonzero(result.labels == c)
        shown, note = shown_in_grid(members, show_all)
        rho = "" if np.isnan(result.rho_intra[c]) else f" · ρ_intra {result.rho_intra[c]:.3f}"
        with st.container(border=True):
            st.markdown(
                f"<span style='color:{figures.colour(c, method)}'>■</span> "
                f"**{figures.cluster_name(c, method)}** · {len(members)} references{note}{rho}"
                # the planted ground truth of a world run, else the dataset's labels; then the model's
                f"{planted_summary(nd, members) or labels_summary('data', data_names, data[c])}"
                f"{labels_summary('model predicts', class_names, predicted[c])}"
                f"{labels_summary('CLIP', clip_names, clip[c])}",
                unsafe_allow_html=True,
            )
            grid, circuit = st.columns([3, 2])
            with grid:
                opened = reference_tiles(
                    sheets.tiles(run, nd.neuron, shown),
                    sheets.tile_px(run, nd.neuron),
                    key=f"tiles_{method}_{nd.neuron}_{k}_{c}",
                )
                if opened is not None:
                    enlarged_reference(run, nd, opened, k)
            with circuit:
                if method == "pure":
                    channels = figures.top_channels(result.centers[c], N_CIRCUIT_CHANNELS)
                    here = state.Crumb(run.name, nd.neuron, k, c + 1)
                    links = channel_links(lower, channels, [*crumbs, here])
                    st.html(
                        "<div style='font-size:14px;margin-bottom:4px'><b>Circuit</b> · lower-layer channels "
                        "with the largest centroid weights</div>"
                        + figures.circuit_html(
                            result.centers[c],
                            N_CIRCUIT_CHANNELS,
                            figures.colour(c, method),
                            meta.lower_layer,
                            links,
                        )
                        + lower_channel_html(lower, links, meta.lower_layer)
                    )
                else:
                    st.caption("Activation clusters have no circuit; switch to PURE to see one.")
            if method == "pure":
                team_notes.panel(AnnotationKey(run.run_id, nd.neuron, k, c + 1), f"Team notes on VN {c + 1}")


def how_to_read(run: RunRef) -> None:
    """A few lines for a newcomer: what the page's objects are and how to use them (collapsed)."""
    meta = store_access.run_details(run).meta
    layer, lower = code(meta.layer, max_chars=60), code(meta.lower_layer, max_chars=60)
    with st.expander("How to read this page", icon=":material/help:"):
        st.markdown(
            f"""
- **References**: the dataset images that activate this channel of {layer} most. Each tile shows the part of
  the image that drove the activation (outside the input heatmap dimmed); click a tile to open it large.
- **Circuit**: for each reference, PURE measures how much every channel of the layer below ({lower})
  contributed to this neuron's activation (attribution, a share of the total). A **virtual neuron (VN)** is a
  group of references with similar circuits (k-means): references the neuron responds to *by the same route*.
  A polysemantic neuron, one that fires for unrelated things, splits into virtual neurons that are each
  about one thing.
- **Circuit bars**: a virtual neuron's centroid, i.e. the lower-layer channels that contribute most to it on
  average and their share. A channel links to its own page where a run of the lower layer exists.
- **The two UMAPs** place the same references, one dot each: left by their circuits (coloured by VN 1..k),
  right by their plain activation vectors (the baseline, with its own clusters A, B, ... and colours). Close
  dots have similar vectors. Hover a dot to see its reference, ringed in the other map too; groups that the
  left map separates and the right one mixes are what circuits add.
- **Choosing k**: start at 2. Raise k while each new virtual neuron's references look like one new thing and
  PURE's ρ_inter − ρ_intra in the score table grows; stop when a concept splits into two similar grids or a
  virtual neuron holds only a couple of references.
"""
        )


@st.dialog("Reference", width="large")
def enlarged_reference(run: RunRef, nd: NeuronData, position: int, k: int | None = None) -> None:
    """One reference large: its display crop (the input heatmap's mask: outside dimmed, with a contour)
    enlarged, beside the whole image the model saw, with its rank, activation and clusters for ``k``."""
    facts = [
        f"reference #{position + 1} of neuron {nd.neuron}",
        f"max activation {nd.max_activations[position]:.3f}",
        f"dataset image {int(nd.dataset_indices[position])}",
    ]
    for method in ("pure", "activation") if k else ():
        result = analysis.clustering(run, nd.neuron, k, method)
        if result is not None:
            facts.append(f"{method}: {figures.cluster_name(int(result.labels[position]), method)}")
    names = store_access.class_names(run)
    if nd.predictions is not None and names and position < len(nd.predictions.classes):
        classes, probabilities = (
            a[position][:3] for a in (nd.predictions.classes, nd.predictions.probabilities)
        )
        facts.append(
            "model predicts "
            + ", ".join(
                f"{code(class_name(names, c), max_chars=40)} {p:.0%}"
                for c, p in zip(classes, probabilities, strict=True)
            )
        )
    st.caption(" · ".join(facts))
    crop, whole = st.columns(2)
    with crop:
        ui.image(
            figures.enlarged(nd.thumbnails[position], ENLARGED_PX),
            caption="display crop: outside the input heatmap's mask dimmed",
        )
    image = store_access.reference_image(run, int(nd.dataset_indices[position]))
    if image is not None:
        with whole:
            ui.image(figures.enlarged(image, ENLARGED_PX), caption="the whole image at model input")


def render_neuron(run: RunRef, neuron: int, nd: NeuronData) -> None:
    """The k-independent part (explanation, header, all references), then the k control and everything it
    changes."""
    crumbs = trail(run, neuron)
    breadcrumb(run, neuron, crumbs)
    how_to_read(run)
    header(run, neuron, nd)
    team_notes.panel(AnnotationKey(run.run_id, neuron), f"Team notes on neuron {neuron}")
    if nd.n_references < 2:
        write_params(run, neuron, ui.choose_k(nd.n_references), crumbs)
        st.warning(
            f"Neuron {neuron} has only {nd.n_references} reference(s) with a circuit vector; at least 2 are "
            "needed to split it into virtual neurons. Rerun precompute with a larger dataset or `n_ref` to "
            "explore it.",
            icon=":material/warning:",
        )
        if nd.thumbnails:
            reference_grid(run, nd)
        return
    reference_grid(run, nd)
    hover_thumbnails([figures.data_uri(b) for b in nd.thumbnails], key=f"hover_thumbnails_{neuron}")
    k_suggestion(run, nd)
    circuit_depth(run, nd)
    virtual_neurons(run, neuron, nd, crumbs)


@st.fragment
def virtual_neurons(run: RunRef, neuron: int, nd: NeuronData, crumbs: Sequence[state.Crumb]) -> None:
    """The k control and the virtual neurons for that k. A fragment: moving k reruns only this part, so the
    header, the reference sheet and the neuron controls above are neither recomputed nor re-sent."""
    k = ui.choose_k(nd.n_references)
    write_params(run, neuron, k, crumbs)
    pure = analysis.clustering(run, neuron, k, "pure")
    activation = analysis.clustering(run, neuron, k, "activation")
    st.subheader(f"{k} virtual neuron{'s' if k > 1 else ''}")
    umap_panels(run, nd, k, pure, activation)
    scores = analysis.k_scores(run, neuron, k)
    if not scores.empty:
        st.markdown(
            f"**Scores for k = {k}** (embedding distances of the references; lower ρ_intra and higher "
            "ρ_inter mean purer virtual neurons)"
        )
        st.dataframe(
            scores,
            hide_index=True,
            column_config={
                c: st.column_config.NumberColumn(c.replace("rho_", "ρ_"), format="%.3f")
                for c in scores.columns[1:]
            },
        )
    method = (
        st.segmented_control(
            "Reference grids of",
            ["pure", "activation"],
            default="pure",
            format_func=lambda m: {
                "pure": "PURE virtual neurons (VN 1, 2, …)",
                "activation": "activation clusters (baseline: A, B, …)",
            }[m],
            key="grid_method",
        )
        or "pure"
    )
    show_all = nd.n_references > GRID_TILES and st.toggle(
        "Every reference in the grids",
        key="grids_all",
        help=f"Off: each grid shows its {GRID_TILES} most activating references, so k redraws fast.",
    )
    result = pure if method == "pure" or activation is None else activation
    virtual_neuron_grids(run, nd, k, result.method, result, show_all, crumbs)
    if st.toggle("Below the top: samples from lower activation bands, assigned to these virtual neurons",
                 key="below_the_top"):  # on request: its tiles would be re-sent on every k change
        quantile_view.below_the_top(run, nd, pure)
    circuit_checks.section(run, nd, k)
    downloads(run, neuron, k)
    prefetch_all_k(run, nd, result.method)


def suggestion_text(choice: KChoice) -> str:
    """Why this k is suggested, in one sentence (`pure_core.k_choice.suggest_k`'s rule)."""
    from pure_core.k_choice import MIN_STABILITY  # scikit-learn: imported by the neuron page only when used

    ks, stability = list(choice.ks), np.nan_to_num(choice.stability, nan=-1.0)
    if choice.suggested_k in ks:
        at = ks.index(choice.suggested_k)
        return (
            f"**Suggested k = {choice.suggested_k}**: of the splits that k-means finds again from any seed "
            f"(stability ≥ {MIN_STABILITY:.1f}; here {choice.stability[at]:.2f}), the one with the best "
            f"silhouette ({choice.silhouette[at]:.2f})."
        )
    best = int(np.argmax(stability))
    return (
        f"**Suggested k = {choice.suggested_k}**: no split is found again from different k-means seeds (best "
        f"stability {choice.stability[best]:.2f} at k = {ks[best]}, below {MIN_STABILITY:.1f}), so the "
        "references share one circuit as far as k-means can tell."
    )


@st.cache_resource(show_spinner=False, max_entries=256)
def _k_figure(run: RunRef, neuron: int):
    """Cached k-diagnostics figure of a neuron (it does not depend on the chosen k)."""
    from pure_core.k_choice import MIN_STABILITY

    return figures.k_diagnostics_figure(analysis.k_choice(run, neuron), MIN_STABILITY)


@st.fragment
def k_suggestion(run: RunRef, nd: NeuronData) -> None:
    """The suggested k just above the k control, a button that takes it, and on request the diagnostics per
    k behind it (a toggle, not an expander: a hidden chart would still be sent and drawn). Outside the k
    fragment: none of it depends on k, so a k change neither recomputes nor re-sends it."""
    choice = analysis.k_choice(run, nd.neuron)
    if choice is None or choice.suggested_k > nd.n_references:
        return
    text, button = st.columns([5, 1], vertical_alignment="center")
    text.markdown(suggestion_text(choice))
    if button.button(f"Use k = {choice.suggested_k}", key="use_suggested_k",
                     help="sets k for the virtual neurons below"):
        st.session_state["k"] = int(choice.suggested_k)
        st.rerun(scope="app")  # the k fragment below redraws with it
    if st.toggle("k diagnostics: silhouette, stability over seeds and the score per k", key="k_diagnostics"):
        st.plotly_chart(_k_figure(run, nd.neuron), key=f"k_diagnostics_{nd.neuron}")


@st.cache_resource(show_spinner=False, max_entries=256)
def _depth_figure(run: RunRef, neuron: int):
    depth = store_access.neuron_data(run, neuron).depth
    return figures.depth_figure(depth.layers, depth.rho_gap, depth.ari)


@st.fragment
def circuit_depth(run: RunRef, nd: NeuronData) -> None:
    """Where the circuit splits: PURE's k = 2 split with the circuits taken at each lower layer the run
    analysed (stage 8), as a chart; nothing for runs without depth layers."""
    depth = nd.depth
    if depth is None or len(depth.layers) < 2:
        return
    layers = ", ".join(code(name, max_chars=40) for name in depth.layers)
    if st.toggle("Where the circuit splits: circuits taken at " + layers, key="circuit_depth"):
        gaps = np.nan_to_num(depth.rho_gap, nan=-np.inf)
        best = depth.layers[int(np.argmax(gaps))]
        st.markdown(
            f"The k = {depth.k} virtual neurons are most distinct (ρ_inter − ρ_intra of their references' "
            f"crops) with the circuits taken at {code(best, max_chars=40)}. Where the value is low, the "
            "circuits at that layer do not tell the virtual neurons apart: close to the analysed layer the "
            "routes may already run through the same channels, far below it a circuit may see only parts "
            "that both meanings share."
        )
        st.plotly_chart(_depth_figure(run, nd.neuron), key=f"depth_{nd.neuron}")


def downloads(run: RunRef, neuron: int, k: int) -> None:
    left, right = st.columns(2)
    with left:
        ui.download(
            "Download these figures (PNG)",
            functools.partial(report_png, run, neuron, k),
            file_name=f"neuron-{neuron}-k{k}.png",
            mime="image/png",
            key=f"report_png_{neuron}_{k}",
        )
    with right:
        ui.download(
            "Download the assignments (CSV)",
            assignments_csv(run, neuron, k),
            file_name=f"neuron-{neuron}-k{k}.csv",
            mime="text/csv",
        )


def prefetch_all_k(run: RunRef, nd: NeuronData, method: str) -> None:
    """Warm the caches for every k of this neuron once the page is drawn, so that moving k only re-sends
    cached results; once per session, neuron and grid method: later k changes would only hit the caches,
    tens of milliseconds of CPU that the browser drawing the new k on the same machine could use."""
    warmed = st.session_state.setdefault("prefetched", set())
    if (run.name, nd.neuron, method) in warmed:
        return
    for k in range(state.K_MIN, state.clamp_k(state.K_MAX, nd.n_references) + 1):
        for name in ("pure", "activation"):  # both UMAPs are coloured by their clusters
            analysis.clustering(run, nd.neuron, k, name)
        analysis.cluster_labels(run, nd.neuron, k, method)
        analysis.cluster_labels(run, nd.neuron, k, method, source="data")
        analysis.cluster_labels(run, nd.neuron, k, method, source="clip")
        analysis.k_scores(run, nd.neuron, k)
    warmed.add((run.name, nd.neuron, method))  # last: a run interrupted by a new k warms again


def render() -> None:
    run = ui.choose_run()
    if run is None:
        return
    order = store_access.neuron_order(run)
    if not order:
        ui.progress(run, "neurons")
        return
    st.title("Neuron explorer")
    neuron = ui.choose_neuron(order)
    nd = store_access.neuron_data(run, neuron)
    if not run.complete:
        ui.progress(run, "the references, virtual neurons and scores")
    if nd is None or nd.pure is None or not nd.thumbnails:
        write_params(run, neuron, ui.choose_k(nd.n_references if nd is not None else 0), trail(run, neuron))
        return
    render_neuron(run, neuron, nd)


if __name__ == "__main__":
    render()
