"""Figures are pure functions of plain data; the PNG downloads are real PNGs drawn with PIL."""

import io

import numpy as np
import pandas as pd
from PIL import Image

from app import figures
from store.schema import DistanceCorrelation, MethodComparison, PooledCorrelation


def _table():
    return pd.DataFrame(
        {
            "rank": [1, 2, 3],
            "neuron": [7, 3, 12],
            "polysemanticity": [2.0, 1.0, 0.1],
            "overall": [5.0, 4.0, 3.0],
        }
    )


def test_distribution_has_one_dot_per_neuron_with_its_id():
    fig = figures.distribution_figure(_table(), highlight=3)
    dots = fig.data[0]
    assert list(dots.customdata) == [7, 3, 12] and list(dots.y) == [2.0, 1.0, 0.1]
    assert len(fig.data) == 2  # the highlight ring
    assert dots.marker.showscale and dots.marker.colorbar.title.text  # the colours have a legend
    assert dots.cliponaxis is False and fig.layout.margin.t >= 30  # the top dot is drawn whole


def test_distribution_of_a_large_layer_is_drawn_with_webgl():
    n = figures.WEBGL_MIN_POINTS
    table = pd.DataFrame(
        {"rank": np.arange(1, n + 1), "neuron": np.arange(n)[::-1], "polysemanticity": np.linspace(2, 0, n)}
    ).assign(overall=1.0)
    dots = figures.distribution_figure(table).data[0]
    assert dots.type == "scattergl" and len(dots.x) == n
    assert list(dots.customdata[:3]) == [n - 1, n - 2, n - 3]  # clicks and lassos still name the neuron
    assert figures.distribution_figure(table.head(n - 1)).data[0].type == "scatter"


def test_umap_traces_are_virtual_neurons_and_carry_reference_positions():
    coords = np.arange(12, dtype=float).reshape(6, 2)
    labels = np.array([0, 1, 0, 2, 1, 0])
    fig = figures.umap_figure(coords, labels, "t", max_activations=np.ones(6))
    assert [t.name for t in fig.data] == ["VN 1 (3)", "VN 2 (2)", "VN 3 (1)"]
    assert list(fig.data[0].customdata) == [0, 2, 5]
    assert fig.data[1].marker.color == figures.colour(1)


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


def test_method_comparison_and_correlation_figures():
    comparison = MethodComparison.from_store(
        {
            "pure": {2: {"rho_intra": 1.0, "rho_inter": 2.0}, 3: {"rho_intra": 0.9, "rho_inter": 1.8}},
            "activation": {2: {"rho_intra": 1.2, "rho_inter": 1.4}},
            "embedding": {},
            "unclustered": 1.3,
        }
    )
    fig = figures.method_comparison_figure(comparison, {"pure": "PURE"})
    assert len(fig.data) == 4 and fig.data[0].name == "PURE: ρ_intra" and list(fig.data[0].x) == [2, 3]
    fig = figures.correlation_figure(
        DistanceCorrelation(
            {"pure": PooledCorrelation(0.4, 0.02), "activation": PooledCorrelation(0.1, 0.01)}
        ),
        {},
    )
    assert list(fig.data[0].y) == [0.4, 0.1]


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
