"""Figures as pure functions of plain data: Plotly for the charts drawn on request on the neuron and upload
pages (the overview's and the UMAPs are Vega-Lite, `app.overview_charts` and `app.umap_charts`), light HTML
for the circuit bars, PIL for the PNG downloads.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont

from app.safe_text import html_text
from store.codecs import decode_image
from store.schema import KChoice

# Colour of virtual neuron i (0-based); shared by the charts, the circuit bars and the PNG report.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
METHOD_COLOURS = {
    "pure": "#d62728",
    "activation": "#1f77b4",
    "embedding": "#2ca02c",
    "unclustered": "#7f7f7f",
}
# No dragmode in the figures: Streamlit lets a click select a point (and so open a neuron or list a reference)
# only while the chart pans; box and lasso are in the chart's toolbar.
_LAYOUT = {"margin": {"l": 10, "r": 10, "t": 20, "b": 10}, "height": 360}


# The activation baseline's clusters are not virtual neurons: their own names (letters) and their own muted
# palette and marker, so a "VN 2" never looks like an activation cluster.
ACTIVATION_PALETTE = ("#7f7f7f", "#bcbd22", "#8c6d31", "#393b79", "#e7969c", "#637939", "#9c9ede", "#843c39")
MARKERS = {"pure": "circle", "activation": "diamond"}  # the UMAPs' point shapes (Vega-Lite's names)


def colour(i: int, method: str = "pure") -> str:
    """Colour of cluster ``i`` (0-based) of ``method``: PURE's virtual neurons or the baseline's clusters."""
    palette = ACTIVATION_PALETTE if method == "activation" else PALETTE
    return palette[i % len(palette)]


def vn_name(i: int) -> str:
    """Display name of virtual neuron ``i`` (0-based) -> "VN 1"."""
    return f"VN {i + 1}"


def cluster_name(i: int, method: str = "pure") -> str:
    """Display name of cluster ``i`` (0-based) of ``method``: "VN 1" for PURE, "cluster A" for the activation
    baseline (and any other method)."""
    return vn_name(i) if method == "pure" else f"cluster {chr(ord('A') + i)}"


# -- neuron: choosing k ------------------------------------------------------------------------------------
K_DIAGNOSTICS = (
    ("silhouette", "silhouette", "how much closer each reference is to its own VN than to the next"),
    ("stability", "stability (ARI)", "agreement of k-means splits from different seeds"),
    ("score", "ρ_inter − ρ_intra", "distinctness of the VNs' crops under the embedder"),
)


def k_diagnostics_figure(k_choice: KChoice, min_stability: float) -> go.Figure:
    """Three small panels over k: silhouette, stability (with the ``min_stability`` line) and the embedding
    score of PURE's split; the suggested k marked in each."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=[title for _, title, _ in K_DIAGNOSTICS],
                        horizontal_spacing=0.09)
    ks = list(k_choice.ks)
    for column, (name, title, meaning) in enumerate(K_DIAGNOSTICS, start=1):
        values = np.asarray(getattr(k_choice, name), dtype=float)
        fig.add_trace(go.Scatter(
            x=ks, y=values, mode="lines+markers", name=title, showlegend=False,
            line={"color": METHOD_COLOURS["pure"]},
            hovertemplate=f"k = %{{x}}<br>{title} %{{y:.3f}}<br>{meaning}<extra></extra>",
        ), row=1, col=column)
        if k_choice.suggested_k in ks:
            at = ks.index(k_choice.suggested_k)
            fig.add_trace(go.Scatter(
                x=[ks[at]], y=[values[at]], mode="markers", showlegend=False,
                marker={"size": 13, "symbol": "star", "color": "#d62728"},
                hovertemplate="suggested k = %{x}<extra></extra>",
            ), row=1, col=column)
    fig.add_hline(y=min_stability, line={"color": "#999", "dash": "dot"}, row=1, col=2)
    fig.update_xaxes(dtick=1, title_text="k")
    fig.update_layout(**{**_LAYOUT, "height": 230, "margin": {"l": 10, "r": 10, "t": 30, "b": 10}})
    return fig


def ablation_figure(removed: np.ndarray, channels: Sequence[np.ndarray], lower_layer: str) -> go.Figure:
    """The causal check as a k x k heatmap: share of the activation removed on each virtual neuron's
    references (columns) when each circuit is ablated (rows, with the channels it ablates)."""
    k = len(removed)
    rows = [f"ablate {vn_name(c)}" for c in range(k)]
    shown = [", ".join(str(int(ch)) for ch in chosen[:6]) + (" …" if len(chosen) > 6 else "")
             for chosen in channels]
    heat = go.Heatmap(
        z=np.asarray(removed, dtype=float) * 100,
        x=[f"{vn_name(g)}'s references" for g in range(k)],
        y=rows,
        zmin=0,
        zmax=100,
        colorscale="Reds",
        text=[[f"{v:.0%}" for v in row] for row in removed],
        texttemplate="%{text}",
        customdata=[[shown[c]] * k for c in range(k)],
        hovertemplate=f"%{{y}} ({lower_layer} channels %{{customdata}})<br>%{{x}}: %{{z:.0f}} % of the "
        "activation removed<extra></extra>",
        colorbar={"title": {"text": "% removed"}},
    )
    fig = go.Figure(heat)
    fig.update_layout(**{**_LAYOUT, "height": 120 + 48 * k, "margin": {"l": 10, "r": 10, "t": 10, "b": 10}},
                      yaxis={"autorange": "reversed"})
    return fig


def selectivity_by_k_figure(by_k: Mapping[int, np.ndarray]) -> go.Figure:
    """Selectivity of every virtual neuron's circuit (own share removed minus the others' mean) per k, a
    dot per virtual neuron in its colour, and the mean over the virtual neurons as a line."""
    ks = sorted(by_k)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=ks, y=[float(np.nanmean(by_k[k])) for k in ks], mode="lines",
                             name="mean over the VNs", line={"color": "#444"}))
    for c in range(max(len(by_k[k]) for k in ks)):
        present = [k for k in ks if c < len(by_k[k])]
        fig.add_trace(go.Scatter(
            x=present, y=[float(by_k[k][c]) for k in present], mode="markers", name=vn_name(c),
            marker={"color": colour(c), "size": 9},
            hovertemplate=f"k = %{{x}}<br>{vn_name(c)}: selectivity %{{y:+.2f}}<extra></extra>",
        ))
    fig.update_layout(**{**_LAYOUT, "height": 300}, xaxis={"dtick": 1, "title": {"text": "k"}},
                      yaxis={"title": {"text": "selectivity"}}, legend={"orientation": "h", "y": -0.25})
    return fig


def depth_figure(layers: Sequence[str], rho_gap: np.ndarray, ari: np.ndarray) -> go.Figure:
    """Where the circuit splits: per lower layer (the run's own first, then deeper), the rho gap of PURE's
    k = 2 split under the embeddings, and on ground-truth data its ARI against the planted concepts (right
    axis)."""
    fig = go.Figure(go.Scatter(
        x=list(layers), y=np.asarray(rho_gap, dtype=float), mode="lines+markers", name="ρ_inter − ρ_intra",
        line={"color": METHOD_COLOURS["pure"]},
        hovertemplate="circuits in %{x}<br>ρ_inter − ρ_intra %{y:.3f}<extra></extra>",
    ))
    ari = np.asarray(ari, dtype=float)
    if not np.isnan(ari).all():
        fig.add_trace(go.Scatter(
            x=list(layers), y=ari, mode="lines+markers", name="ARI vs planted concepts", yaxis="y2",
            line={"color": "#2ca02c", "dash": "dash"},
            hovertemplate="circuits in %{x}<br>ARI %{y:.2f}<extra></extra>",
        ))
    fig.update_layout(
        **{**_LAYOUT, "height": 260},
        xaxis={"title": {"text": "layer the circuits are taken at (deeper to the right)"}},
        yaxis={"title": {"text": "ρ_inter − ρ_intra"}},
        yaxis2={"title": {"text": "ARI"}, "overlaying": "y", "side": "right", "range": [-0.05, 1.05]},
        legend={"orientation": "h", "y": -0.35},
    )
    return fig


# -- neuron ------------------------------------------------------------------------------------------------
def top_channels(weights: np.ndarray, top_n: int = 8) -> list[int]:
    """Indices of the ``top_n`` largest entries of a centroid ``(C_lower,)``, largest first."""
    weights = np.asarray(weights, dtype=np.float64)
    order = np.argsort(-weights, kind="stable")
    return [int(i) for i in order[:top_n]]


def circuit_html(weights: np.ndarray, top_n: int, bar_colour: str, lower_layer: str,
                 links: Mapping[int, str] | None = None) -> str:
    """The circuit as light HTML bars (no chart to mount in the browser, so a k change redraws fast):
    the ``top_n`` lower-layer channels with the largest centroid weights, largest first; a channel with a
    URL in ``links`` (its own neuron page in a run of the lower layer) is a link."""
    channels = top_channels(weights, top_n)
    links = links or {}
    peak = max([abs(float(weights[c])) for c in channels] + [1e-12])
    rows = []
    for c in channels:
        value = float(weights[c])
        width = max(1.0, 100.0 * abs(value) / peak)
        rows.append(
            f"<div style='display:flex;align-items:center;gap:6px;font-size:12px;line-height:16px'>"
            f"{_channel_label(f'{html_text(lower_layer)}:{c}', links.get(c))}"
            f"<div style='flex:1'><div style='width:{width:.1f}%;height:11px;background:{bar_colour};"
            f"opacity:{1.0 if value >= 0 else 0.4}'></div></div>"
            f"<span style='min-width:44px;text-align:right;color:#555'>{value:.3f}</span></div>"
        )
    return "<div style='display:flex;flex-direction:column;gap:3px'>" + "".join(rows) + "</div>"


def _channel_label(text: str, url: str | None) -> str:
    """A circuit bar's channel name (``text`` already escaped), a link to ``url`` when there is one."""
    label = f"<code style='font-size:11px'>{text}</code>"
    if url is None:
        return f"<span style='min-width:86px'>{label}</span>"
    return f"<a href='{html_text(url)}' target='_self' style='min-width:86px'>{label}</a>"


def distances_figure(distances: np.ndarray, assigned: int, radii: np.ndarray | None = None) -> go.Figure:
    """Distances of an image's circuit vector to each virtual neuron's centroid, the nearest highlighted;
    with ``radii (k,)``, each virtual neuron's radius (95 % of its references within) as a dash."""
    names = [vn_name(i) for i in range(len(distances))]
    bars = {
        "type": "bar",
        "x": names,
        "y": np.asarray(distances, dtype=float),
        "marker": {"color": [colour(i) if i == assigned else "#c7c7c7" for i in range(len(distances))]},
        "hovertemplate": "%{x}<br>distance %{y:.4f}<extra></extra>",
    }
    traces = [bars]
    if radii is not None:
        traces.append({
            "type": "scatter",
            "mode": "markers",
            "x": names,
            "y": np.asarray(radii, dtype=float),
            "name": "radius: 95 % of its references within",
            "marker": {"symbol": "line-ew-open", "size": 36, "color": "#222",
                       "line": {"width": 3, "color": "#222"}},
            "hovertemplate": "%{x}<br>95 % of its references within %{y:.4f}<extra></extra>",
        })
    layout = {
        "margin": {"l": 10, "r": 10, "t": 30, "b": 10},
        "height": 240,
        "title": {"text": "Distance to each virtual neuron's centroid"},
        "yaxis": {"title": {"text": "Euclidean distance"}},
        "showlegend": radii is not None,
        "legend": {"orientation": "h", "y": -0.15},
    }
    return go.Figure({"data": traces, "layout": layout})


# -- PNG downloads (PIL; no plotting backend needed) ----------------------------------------------------
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def tile(data: bytes, size_px: int) -> Image.Image:
    """A thumbnail's bytes decoded and fitted into a white ``size_px`` square."""
    image = decode_image(data)
    image.thumbnail((size_px, size_px), Image.Resampling.BICUBIC)
    tile = Image.new("RGB", (size_px, size_px), "white")
    tile.paste(image, ((size_px - image.width) // 2, (size_px - image.height) // 2))
    return tile


def enlarged(data: bytes, size_px: int) -> Image.Image:
    """An image's bytes decoded and scaled so that its longer side is ``size_px`` (up or down, bicubic)."""
    image = decode_image(data)
    scale = size_px / max(image.size)
    return image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC
    )


def reference_sheet(
    tiles: Sequence[Image.Image], captions: Sequence[str] | None = None, columns: int = 10, gap_px: int = 4
) -> Image.Image:
    """A grid of reference thumbnails (square `tile` images of one size) as one image, so a page sends one
    element instead of one per thumbnail; each tile captioned below ("#3 · 7.21": rank and activation)."""
    font = _font(11)
    tile_px = tiles[0].width if tiles else 1
    caption_px = 14 if captions else 0
    columns = max(1, min(columns, len(tiles) or 1))
    rows = max(1, math.ceil(len(tiles) / columns))
    cell_w, cell_h = tile_px + gap_px, tile_px + caption_px + gap_px
    sheet = Image.new("RGB", (columns * cell_w - gap_px, rows * cell_h - gap_px), "white")
    draw = ImageDraw.Draw(sheet)
    for i, image in enumerate(tiles):
        r, c = divmod(i, columns)
        x, y = c * cell_w, r * cell_h
        sheet.paste(image, (x, y))
        if captions:
            draw.text((x + tile_px / 2, y + tile_px + 1), captions[i], fill="#555555", font=font, anchor="ma")
    return sheet


def reference_captions(max_activations: Sequence[float], members: Sequence[int]) -> list[str]:
    """Captions "#rank · max activation" of the references at positions ``members`` (0-based)."""
    return [
        f"#{i + 1} · {max_activations[i]:.2f}" if i < len(max_activations) else f"#{i + 1}" for i in members
    ]


def strip(thumbnails: Sequence[bytes], height_px: int, gap_px: int = 2) -> Image.Image:
    """Thumbnails side by side, each squeezed into a ``height_px`` square, on white."""
    tiles = [decode_image(b).resize((height_px, height_px), Image.Resampling.BILINEAR) for b in thumbnails]
    canvas = Image.new("RGB", (len(tiles) * (height_px + gap_px) - gap_px, height_px), "white")
    for i, image in enumerate(tiles):
        canvas.paste(image, (i * (height_px + gap_px), 0))
    return canvas


def data_uri(data: bytes, mime: str | None = None) -> str:
    """Bytes as a data URI of type ``mime`` (default: the image format read from the bytes' header);
    `st.image` passes URIs through without decoding or re-encoding, and links download them."""
    if mime is None:
        mime = f"image/{(Image.open(io.BytesIO(data)).format or 'PNG').lower()}"
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    """JPEG bytes; `st.image` passes JPEG through untouched (WEBP/PNG bytes are re-encoded on every rerun)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_data_uri(image: Image.Image, quality: int = 85) -> str:
    """An image as a JPEG data URI (for image columns of tables and inline HTML)."""
    return data_uri(jpeg_bytes(image, quality), "image/jpeg")


def contact_sheet(
    groups: Sequence[tuple[str, Sequence[bytes], str]], thumb_px: int = 72, columns: int = 8, gap_px: int = 4
) -> Image.Image:
    """Reference grids, one block per group ``(title, thumbnails, colour)``, stacked vertically."""
    font = _font(14)
    blocks = []
    width = columns * (thumb_px + gap_px) + gap_px
    for title, thumbs, block_colour in groups:
        rows = max(1, math.ceil(len(thumbs) / columns))
        block = Image.new("RGB", (width, 24 + rows * (thumb_px + gap_px) + gap_px), "white")
        draw = ImageDraw.Draw(block)
        draw.rectangle([0, 0, 6, 20], fill=block_colour)
        draw.text((12, 3), title, fill="black", font=font)
        for i, data in enumerate(thumbs):
            r, c = divmod(i, columns)
            block.paste(
                tile(data, thumb_px),
                (gap_px + c * (thumb_px + gap_px), 24 + gap_px + r * (thumb_px + gap_px)),
            )
        blocks.append(block)
    return _stack(blocks)


def scatter_image(
    coords: np.ndarray, labels: np.ndarray, title: str, size_px: int = 320, method: str = "pure"
) -> Image.Image:
    """A UMAP scatter drawn with PIL: points ``(n, 2)`` coloured by the ``method``'s clusters."""
    image = Image.new("RGB", (size_px, size_px + 24), "white")
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), title, fill="black", font=_font(14))
    pad = 14
    box = (pad, 24 + pad, size_px - pad, size_px + 24 - pad)
    draw.rectangle([box[0] - 6, box[1] - 6, box[2] + 6, box[3] + 6], outline="#bbbbbb")
    coords = np.asarray(coords, dtype=np.float64)
    if len(coords):
        low, high = coords.min(axis=0), coords.max(axis=0)
        span = np.where(high - low > 0, high - low, 1.0)
        scaled = (coords - low) / span
        for (u, v), label in zip(scaled, np.asarray(labels), strict=True):
            x = box[0] + u * (box[2] - box[0])
            y = box[3] - v * (box[3] - box[1])
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour(int(label), method), outline="white")
    return image


def bars_image(
    weights: np.ndarray, top_n: int, bar_colour: str, lower_layer: str, title: str, width_px: int = 320
) -> Image.Image:
    """The circuit bar chart drawn with PIL (largest centroid weights first)."""
    channels = top_channels(weights, top_n)
    font = _font(12)
    row_px = 18
    image = Image.new("RGB", (width_px, 26 + row_px * len(channels) + 6), "white")
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), title, fill="black", font=_font(14))
    peak = max([abs(float(weights[c])) for c in channels] + [1e-12])
    label_px = 96
    for i, c in enumerate(channels):
        y = 26 + i * row_px
        draw.text((6, y + 2), f"{lower_layer}:{c}", fill="black", font=font)
        length = (width_px - label_px - 60) * abs(float(weights[c])) / peak
        draw.rectangle([label_px, y + 3, label_px + length, y + row_px - 3], fill=bar_colour)
        draw.text((label_px + length + 4, y + 2), f"{float(weights[c]):.3f}", fill="#333333", font=font)
    return image


def neuron_report(
    title: str, umaps: Sequence[Image.Image], rows: Sequence[tuple[Image.Image, Image.Image | None]]
) -> Image.Image:
    """One PNG for a neuron: a title, the UMAP panels side by side, then per virtual neuron its reference
    grid beside its circuit."""
    body = [_hstack(list(umaps))] + [
        _hstack([grid] + ([bars] if bars is not None else [])) for grid, bars in rows
    ]
    header = Image.new("RGB", (max(p.width for p in body), 30), "white")
    ImageDraw.Draw(header).text((6, 6), title, fill="black", font=_font(18))
    return _stack([header, *body])


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _stack(images: Sequence[Image.Image]) -> Image.Image:
    width = max((im.width for im in images), default=1)
    height = sum(im.height for im in images) or 1
    canvas = Image.new("RGB", (width, height), "white")
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height
    return canvas


def _hstack(images: Sequence[Image.Image], gap_px: int = 8) -> Image.Image:
    width = sum(im.width for im in images) + gap_px * max(len(images) - 1, 0)
    height = max((im.height for im in images), default=1)
    canvas = Image.new("RGB", (max(width, 1), height), "white")
    x = 0
    for im in images:
        canvas.paste(im, (x, 0))
        x += im.width + gap_px
    return canvas
