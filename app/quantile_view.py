"""Below the top: a neuron's reference quantiles (precompute stage 7) assigned to its virtual neurons, so the
page shows whether a virtual neuron persists at lower activations or only among the top references.

Each stored sample (a probe image from an activation band below the references, `QuantileSamples`) goes to
the nearest centroid of the chosen k's PURE clustering (`VirtualNeurons.predict` on its stored circuit) and is
flagged when its circuit lies beyond every virtual neuron's radius (`unlike_any_circuit`). The page gets one
line per virtual neuron (its share of the samples beside its share of the references) and one HTML grid: a
row per band, a column per virtual neuron, small tiles of the whole images.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import figures, store_access
from app.analysis import Clustering
from app.safe_text import html_text
from app.store_access import NeuronData, RunRef
from store.schema import QuantileBands, QuantileSamples

__all__ = ["TILE_PX", "assign", "below_the_top", "grid_html", "persistence_lines", "tile_uris"]

TILE_PX = 56  # side of a sample's tile: the whole image, small
MISSING = ("No reference quantiles in this run: stores written before precompute's `quantiles` stage lack "
           "them; the same precompute command adds them.")


def assign(samples: QuantileSamples, clustering: Clustering) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's virtual neuron ``(M,)`` int64 (0-based, numbered as the page shows them) and whether its
    circuit is unlike any of the neuron's ``(M,)`` bool."""
    if samples.n_samples == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    vectors = np.asarray(samples.pure, dtype=np.float64)
    model = clustering.virtual_neurons
    return model.predict(vectors), model.unlike_any_circuit(vectors)


def persistence_lines(virtual_neuron: np.ndarray, reference_labels: np.ndarray, k: int,
                      unlike: np.ndarray | None = None) -> list[str]:
    """Per virtual neuron: ``"VN 1: 9 of 24 samples below the top (38 %) vs 50 % of the top references"``,
    plus ``"; 4 of them unlike any circuit"`` where ``unlike (M,)`` flags some of its samples."""
    n, n_ref = len(virtual_neuron), len(reference_labels)
    unlike = np.zeros(n, bool) if unlike is None else np.asarray(unlike, bool)
    lines = []
    for c in range(k):
        mine = virtual_neuron == c
        count, strays = int(mine.sum()), int((mine & unlike).sum())
        lines.append(f"{figures.vn_name(c)}: {count} of {n} samples below the top ({_percent(count, n)}) vs "
                     f"{_percent(int(np.sum(reference_labels == c)), n_ref)} of the top references"
                     + (f"; {strays} of them unlike any circuit" if strays else ""))
    return lines


def _percent(count: int, total: int) -> str:
    return f"{round(100 * count / total)} %" if total else "– %"


@st.cache_data(show_spinner=False, max_entries=256)
def tile_uris(run: RunRef, neuron: int) -> tuple[str, ...]:
    """The samples' whole images as small JPEG data URIs, in sample order ("" where the store lacks one)."""
    from PIL import Image

    from store.codecs import decode_image

    _, samples = store_access.quantile_samples(run, neuron)
    uris = []
    for index in [] if samples is None else samples.indices.tolist():
        data = store_access.reference_image(run, int(index))
        if data is None:
            uris.append("")
            continue
        image = decode_image(data)
        image.thumbnail((TILE_PX, TILE_PX), Image.Resampling.BICUBIC)
        uris.append(figures.jpeg_data_uri(image))
    return tuple(uris)


def _tile(uri: str, activation: float, unlike: bool, colour: str) -> str:
    border = f"2px {'dashed' if unlike else 'solid'} {html_text(colour)}"
    image = (f"<img src='{html_text(uri)}' width='{TILE_PX}' height='{TILE_PX}' style='border:{border}' "
             f"alt='activation {activation:.2f}'>" if uri else
             f"<div style='width:{TILE_PX}px;height:{TILE_PX}px;border:{border}'></div>")
    note = "<br><span style='color:#b00'>unlike any circuit</span>" if unlike else ""
    return (f"<figure style='display:inline-block;margin:2px;text-align:center;vertical-align:top'>{image}"
            f"<figcaption style='font-size:10px;color:#555;line-height:1.2'>{activation:.2f}{note}"
            "</figcaption></figure>")


def grid_html(bands: QuantileBands, samples: QuantileSamples, virtual_neuron: np.ndarray, unlike: np.ndarray,
              uris: tuple[str, ...], k: int) -> str:
    """The samples as a table: a row per band (its percentiles and activation range), a column per virtual
    neuron (in its colour), each sample a tile captioned with its activation (and "unlike any circuit")."""
    header = "".join(
        f"<th style='padding:2px 6px;text-align:left;color:{html_text(figures.colour(c))}'>■ "
        f"{html_text(figures.vn_name(c))}</th>" for c in range(k))
    rows = []
    for b in range(len(bands.bands)):
        lo, hi = (samples.band_edges[b] if b < len(samples.band_edges) else (np.nan, np.nan))
        span = "" if np.isnan(lo) else f"<br><span style='color:#777'>activation {lo:.2f}–{hi:.2f}</span>"
        in_band = np.flatnonzero(samples.bands == b)
        cells = []
        for c in range(k):
            mine = [i for i in in_band if virtual_neuron[i] == c]
            tiles = "".join(_tile(uris[i] if i < len(uris) else "", float(samples.max_activations[i]),
                                  bool(unlike[i]), figures.colour(c)) for i in mine)
            cells.append(f"<td style='padding:2px 6px;vertical-align:top'>{tiles or '–'}</td>")
        if not len(in_band):
            why = ("no probe image falls in this band" if np.isnan(hi) else
                   "the neuron does not fire on this band's probe images" if hi <= 0 else
                   "no probe image of this band outside the top references")
            cells = [f"<td colspan='{k}' style='padding:2px 6px;color:#777'>{why}</td>"]
        rows.append(f"<tr style='border-top:1px solid #eee'><td style='padding:2px 6px;vertical-align:top;"
                    f"white-space:nowrap'>{html_text(bands.band_name(b))}{span}</td>{''.join(cells)}</tr>")
    return (f"<table style='border-collapse:collapse;font-size:13px'><tr><th></th>{header}</tr>"
            f"{''.join(rows)}</table>")


def below_the_top(run: RunRef, nd: NeuronData, clustering: Clustering | None) -> None:
    """The reference quantiles of ``nd``'s neuron against ``clustering`` (the chosen k's PURE virtual
    neurons): one line per virtual neuron and the grid of samples by band; one caption where the run has no
    samples (stores written before the stage, the stage off, or a clustering other than PURE's)."""
    if clustering is None or clustering.method != "pure":
        return
    bands, samples = store_access.quantile_samples(run, nd.neuron)
    if bands is None:
        st.caption(MISSING)
        return
    if bands.state == "off" or samples is None:
        st.caption("No reference quantiles: precompute's `quantiles` stage was off for this run "
                   "(`quantiles: probe_images: 0`).")
        return
    if samples.n_samples == 0 or samples.pure.shape[1] != clustering.centers.shape[1]:
        st.caption("No probe image below this neuron's top references.")
        return
    virtual_neuron, unlike = assign(samples, clustering)
    k = clustering.k
    lines = persistence_lines(virtual_neuron, clustering.labels, k, unlike)
    items = "".join(f"<li><span style='color:{html_text(figures.colour(c))}'>■</span> {html_text(line)}</li>"
                    for c, line in enumerate(lines))
    n_unlike = int(unlike.sum())
    st.html(
        "<div style='font-size:14px;margin:8px 0 4px'><b>Below the top</b> · "
        f"{samples.n_samples} images of {bands.n_probe} probe images, from activation bands below the top "
        f"references, each assigned to its nearest virtual neuron"
        + (f"; {n_unlike} unlike any circuit (beyond every virtual neuron's radius)" if n_unlike else "")
        + f"</div><ul style='margin:0 0 6px 0;font-size:13px'>{items}</ul>"
        + grid_html(bands, samples, virtual_neuron, unlike, tile_uris(run, nd.neuron), k)
    )
