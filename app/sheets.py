"""Images assembled from a neuron's stored thumbnails, cached for the pages: reference sheets (one JPEG grid
for a neuron or for one of its virtual neurons), reference tiles (`app.reference_tiles`, sized from the
stored thumbnails) and thumbnail strips (a row of top references for tables).

Sits above the data layer: it draws with `app.figures` from what `app.store_access` and `app.analysis`
return. One image per grid instead of one element per thumbnail keeps the pages light.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import streamlit as st
from PIL import Image

from app import figures
from app.analysis import clustering
from app.reference_tiles import Tile
from app.store_access import RunRef, class_names, data_label_names, neuron_data, thumbnails

MAX_TILE_PX = 160  # grids show tiles at the stored thumbnail size, up to this


@st.cache_data(show_spinner=False, max_entries=4096)
def reference_sheet(
    run: RunRef,
    neuron: int,
    k: int = 0,
    method: str = "pure",
    cluster: int = 0,
    columns: int = 10,
    tile_px: int = 64,
) -> bytes | None:
    """JPEG grid of a neuron's reference thumbnails: all of them (``k=0``) or one virtual neuron's members
    (cluster ``cluster`` of the ``method`` clustering with ``k``), captioned "#rank · max activation"."""
    data = neuron_data(run, neuron)
    if data is None or not data.thumbnails:
        return None
    members = np.arange(len(data.thumbnails))
    if k > 0:
        result = clustering(run, neuron, k, method)
        if result is None:
            return None
        members = np.flatnonzero(result.labels == cluster)
    members = [int(i) for i in members if i < len(data.thumbnails)]
    if not members:
        return None
    tiles = _tiles(run, neuron, tile_px)
    captions = figures.reference_captions(data.max_activations, members)
    return figures.jpeg_bytes(figures.reference_sheet([tiles[i] for i in members], captions, columns=columns))


@st.cache_resource(show_spinner=False, max_entries=64)
def _tiles(run: RunRef, neuron: int, tile_px: int) -> list[Image.Image]:
    """The neuron's thumbnails decoded once into ``tile_px`` squares (re-gridded for every k; read-only)."""
    data = neuron_data(run, neuron)
    return [figures.tile(b, tile_px) for b in (data.thumbnails if data is not None else ())]


@st.cache_data(show_spinner=False, max_entries=20_000)
def thumbnail_strip(run: RunRef, neuron: int, n_thumbnails: int = 6, height_px: int = 34) -> str | None:
    """The neuron's top ``n_thumbnails`` display crops side by side as a JPEG data URI (None when the neuron
    has no thumbnails yet)."""
    thumbs = thumbnails(run, neuron)[:n_thumbnails]
    if not thumbs:
        return None
    return figures.jpeg_data_uri(figures.strip(thumbs, height_px))


@st.cache_data(show_spinner=False, max_entries=16)
def thumbnail_strips(run: RunRef, neurons: list[int]) -> dict[int, str]:
    """`thumbnail_strip` of each of ``neurons`` that has thumbnails. Cached as a whole too: the ranking asks
    for the same 150 on every run of the overview, and 150 cache lookups (each hashing the run) cost more
    than the rest of the table."""
    strips = {int(n): thumbnail_strip(run, int(n)) for n in neurons}
    return {n: uri for n, uri in strips.items() if uri is not None}


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnail_uris(run: RunRef, neuron: int) -> list[str]:
    """The neuron's display crops as data URIs, in reference order."""
    return [figures.data_uri(b) for b in thumbnails(run, neuron)]


def tile_px(run: RunRef, neuron: int) -> int:
    """Tile size of the neuron's grids: its stored thumbnails' longer side (precompute's ``thumbnail_px``), at
    most `MAX_TILE_PX`, so real 128-224 px crops are shown at their size rather than squeezed to 64 px."""
    thumbs = thumbnails(run, neuron)
    if not thumbs:
        return MAX_TILE_PX
    return min(max(Image.open(io.BytesIO(thumbs[0])).size), MAX_TILE_PX)


def tiles(run: RunRef, neuron: int, members: Sequence[int]) -> list[Tile]:
    """Tiles of the references at positions ``members`` (0-based), captioned "#rank · max activation", with
    each reference's labels as the tooltip's detail."""
    data = neuron_data(run, neuron)
    uris = thumbnail_uris(run, neuron)
    members = [int(i) for i in members if i < len(uris)]
    captions = figures.reference_captions(data.max_activations if data is not None else [], members)
    details = reference_details(run, neuron)
    return [
        Tile(uris[i], caption, i, details[i] if i < len(details) else "")
        for i, caption in zip(members, captions, strict=True)
    ]


@st.cache_data(show_spinner=False, max_entries=256)
def reference_details(run: RunRef, neuron: int) -> list[str]:
    """Each reference's labels as one line: its dataset label, then the model's top class with its
    probability (e.g. "astronaut; model: football helmet 41 %"); empty strings without labels."""
    data = neuron_data(run, neuron)
    if data is None:
        return []
    data_names, model_names = data_label_names(run), class_names(run)
    n = len(data.max_activations)
    details = []
    for i in range(n):
        parts = []
        if data.dataset_labels is not None and i < len(data.dataset_labels) and data_names:
            label = int(data.dataset_labels[i])
            if 0 <= label < len(data_names):
                parts.append(data_names[label])
        predictions = data.predictions
        if predictions is not None and i < len(predictions.classes) and model_names:
            top, probability = int(predictions.classes[i, 0]), float(predictions.probabilities[i, 0])
            if 0 <= top < len(model_names):
                parts.append(f"model: {model_names[top]} {probability:.0%}")
        details.append("; ".join(parts))
    return details
