"""Figures are pure functions of plain data; the PNG downloads are real PNGs drawn with PIL."""

import io

import numpy as np
from PIL import Image

from app import figures


def test_circuit_shows_the_largest_centroid_weights():
    weights = np.array([0.1, -0.5, 0.4, 0.0, 0.3])
    assert figures.top_channels(weights, 3) == [2, 4, 0]
    bars = figures.circuit_html(weights, 3, "#123456", "layer1")
    assert [bars.index(f"layer1:{c}") for c in (2, 4, 0)] == sorted(
        bars.index(f"layer1:{c}") for c in (2, 4, 0)
    )
    assert "width:100.0%" in bars and "width:75.0%" in bars and "#123456" in bars


def test_distances_highlight_the_nearest_virtual_neuron():
    fig = figures.distances_figure(np.array([0.5, 0.2, 0.9]), assigned=1)
    assert list(fig.data[0].x) == ["VN 1", "VN 2", "VN 3"]
    assert fig.data[0].marker.color[1] == figures.colour(1) and fig.data[0].marker.color[0] == "#c7c7c7"


def _thumb(colour):
    buffer = io.BytesIO()
    Image.new("RGB", (50, 40), colour).save(buffer, format="WEBP")
    return buffer.getvalue()


def test_contact_sheet_and_report_are_pngs():
    sheet = figures.contact_sheet(
        [("VN 1", [_thumb("red")] * 10, "#f00"), ("VN 2", [_thumb("blue")], "#00f")], thumb_px=32, columns=4
    )
    assert sheet.width == 4 * 36 + 4 and sheet.height > 3 * 36
    scatter = figures.scatter_image(np.random.default_rng(0).normal(size=(10, 2)), np.arange(10) % 3, "umap")
    bars = figures.bars_image(np.linspace(0, 1, 20), 5, "#f00", "layer1", "circuit")
    report = figures.png_bytes(figures.neuron_report("neuron 3", [scatter, scatter], [(sheet, bars)]))
    image = Image.open(io.BytesIO(report))
    assert image.format == "PNG" and image.width >= 2 * scatter.width
