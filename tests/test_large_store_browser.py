"""The dashboard in a real browser on a store with the paper's number of neurons (2048; small vectors and
images, so it is written in seconds): the overview draws every neuron in Fig. A.2 with WebGL and its ranking,
the score filter narrows the ranking, and a deep link opens a neuron far down the list with its charts drawn
and redraws it for a new k, with no exception on any page."""

from __future__ import annotations

import io
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

from pure_explorer.large_store import write_large_store
from pure_explorer.live_app import (
    ALL_CHARTS_DRAWN,
    IDLE,
    K_REDRAW_PROBE,
    new_page,
    screenshot,
    serve,
)
from pure_explorer.sessions import VN_CAPTIONS
from store import RunStore
from store.schema import Summary

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
N_NEURONS = 2048
RANKING_ROWS = """() => {
    // the rows of the ranking's glide grid, from its accessible table (queried afresh: a rerun may replace
    // the grid's element when a notice appears or goes above it)
    const table = document.querySelector('[data-testid="stDataFrame"] table[aria-rowcount]');
    return table ? Number(table.getAttribute('aria-rowcount')) - 1 : 0;  // less the header row
}"""


@pytest.fixture(scope="module")
def large_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("large-runs")
    write_large_store(
        root / "large",
        n_neurons=N_NEURONS,
        n_ref=24,
        c_lower=64,
        c_layer=128,
        embed_dim=16,
        n_images=3000,
        image_px=64,
        thumbnail_px=64,
        progress=False,
    )
    return root


@pytest.fixture(scope="module")
def large_url(large_root):
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with serve(large_root, log=artifacts / "streamlit-large-server.log") as url:
        yield url


def _settle(page) -> None:
    page.wait_for_function(ALL_CHARTS_DRAWN)
    page.wait_for_timeout(150)
    page.wait_for_function(IDLE)
    assert page.locator('[data-testid="stException"]').count() == 0


def _coloured_pixels(png: bytes) -> int:
    """Pixels of a screenshot that are neither white nor grey: dots of the Viridis colour scale, not axes."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 40).sum())


def test_overview_and_a_neuron_page_of_a_2048_neuron_store(large_url, browser):
    page = new_page(browser, timeout_ms=120_000)
    page.goto(f"{large_url}/?run=large")
    page.get_by_text("Neurons ranked by polysemanticity").wait_for()
    _settle(page)
    # Fig. A.2 (every neuron a dot: tests/test_large_store.py) is drawn on a canvas, not 2048 SVG nodes
    chart = page.locator('[data-testid="stVegaLiteChart"]').first
    chart.scroll_into_view_if_needed()
    assert chart.locator("canvas.marks").count() == 1 and chart.locator(".mark-symbol").count() == 0
    # the dots are painted, not just sent
    assert _coloured_pixels(chart.screenshot()) > 2000
    assert page.locator('[data-testid="stDataFrame"]').count() == 1
    page.goto(f"{large_url}/neuron?run=large&neuron=1999&k=3")
    page.get_by_role("heading", name=re.compile(r"^3 virtual neurons$")).wait_for()
    _settle(page)
    assert parse_qs(urlparse(page.url).query)["neuron"] == ["1999"]  # the link's neuron, not a default
    screenshot(page, ROOT / "test-artifacts" / "large-neuron.png")

    # a k change redraws the UMAPs with 4 virtual neurons and updates the link
    slider = page.locator('[data-testid="stSlider"] input[type="range"]')
    slider.focus()
    page.evaluate(K_REDRAW_PROBE, 4)
    slider.press("ArrowRight")
    page.wait_for_function("() => window.__kRedraw.drawn !== undefined")
    _settle(page)
    assert parse_qs(urlparse(page.url).query)["k"] == ["4"]
    assert [caption.split(" · ")[0] for caption in page.evaluate(VN_CAPTIONS)] == [
        f"■ VN {i}" for i in range(1, 5)
    ]


def test_the_score_filter_narrows_the_ranking(large_url, large_root, browser):
    """The lower end of the score slider moved near the top: the table lists exactly the neurons whose
    rho_inter - rho_intra is at least that end."""
    with RunStore.open(large_root / "large") as store:
        scores = np.array([row.polysemanticity for row in store.read(Summary).rows])
    page = new_page(browser, timeout_ms=120_000)
    page.goto(f"{large_url}/?run=large")
    page.get_by_text("Neurons ranked by polysemanticity").wait_for()
    _settle(page)
    page.wait_for_function(f"() => ({RANKING_ROWS})() === {N_NEURONS}")
    low = page.locator('[data-testid="stSlider"] input[type="range"]').first
    low.focus()
    page.keyboard.press("End")  # the lower end onto the upper one: no neuron in range
    page.get_by_text(re.compile(r"^No neuron of this run has ρ_inter − ρ_intra in")).wait_for()
    low.focus()  # kept across the rerun, unless the page moved it
    for _ in range(60):  # 0.6 down from the top
        page.keyboard.press("ArrowLeft")
    expected = int((scores >= float(low.input_value()) - 1e-9).sum())
    assert 0 < expected < N_NEURONS
    page.wait_for_function(f"() => ({RANKING_ROWS})() === {expected}")
    _settle(page)
    assert page.evaluate(RANKING_ROWS) == expected
