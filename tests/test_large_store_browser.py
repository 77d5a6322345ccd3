"""The dashboard in a real browser on a store with the paper's number of neurons (2048; small vectors and
images, so it is written in seconds): the overview draws every neuron in Fig. A.2 and its ranking, and a deep
link opens a neuron far down the list with its charts drawn, with no exception on any page."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from pure_explorer.large_store import write_large_store
from pure_explorer.live_app import ALL_CHARTS_DRAWN, IDLE, chromium, new_page, serve

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
N_NEURONS = 2048
FIG_A2_POINTS = """() => {
    const plot = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
    // _length: the points plotly drew per trace (x may arrive as a typed array, base64-encoded)
    return plot && plot._fullData ? plot._fullData.reduce((n, trace) => n + (trace._length || 0), 0) : -1;
}"""


@pytest.fixture(scope="module")
def large_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("large-runs")
    write_large_store(root / "large", n_neurons=N_NEURONS, n_ref=24, c_lower=64, c_layer=128, embed_dim=16,
                      n_images=3000, image_px=64, thumbnail_px=64, progress=False)
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with serve(root, log=artifacts / "streamlit-large-server.log") as url:
        yield url


def _settle(page) -> None:
    page.wait_for_function(ALL_CHARTS_DRAWN)
    page.wait_for_timeout(150)
    page.wait_for_function(IDLE)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_overview_and_a_neuron_page_of_a_2048_neuron_store(large_url):
    with chromium() as browser:
        page = new_page(browser, timeout_ms=120_000)
        page.goto(f"{large_url}/?run=large")
        page.get_by_text("Neurons ranked by polysemanticity").wait_for()
        _settle(page)
        assert page.evaluate(FIG_A2_POINTS) == N_NEURONS  # every neuron is a dot of Fig. A.2
        assert page.locator('[data-testid="stDataFrame"]').count() == 1
        page.goto(f"{large_url}/neuron?run=large&neuron=1999&k=3")
        page.get_by_role("heading", name=re.compile(r"^3 virtual neurons$")).wait_for()
        _settle(page)
        assert parse_qs(urlparse(page.url).query)["neuron"] == ["1999"]  # the link's neuron, not a default
        page.screenshot(path=str(ROOT / "test-artifacts" / "large-neuron.png"), full_page=True)
