"""End to end in a real browser: `streamlit run app/main.py` on a free localhost port, driven by Playwright
on Debian's chromium. Opens the overview, opens a neuron through the ranking table, changes k, uploads a
photograph, and checks what is shown. Screenshots go to test-artifacts/; to refresh the README's, run
`PURE_TEST_DEMO_RUNS=runs PURE_UPDATE_SCREENSHOTS=1 pytest tests/test_browser.py` after the demo precompute.

The store: a real demo run made by `python -m precompute --preset tiny` (tests/conftest.py `demo_runs_root`);
`PURE_TEST_DEMO_RUNS=DIR` uses a prebuilt root.
"""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from PIL import Image

from app.figures import data_uri
from app.views.neuron import GRID_TILES
from pure_explorer.live_app import ALL_CHARTS_DRAWN, new_page, screenshot, serve, wait_idle
from pure_explorer.sessions import VN_CAPTIONS
from store import RunStore, list_runs
from store.schema import Summary, Thumbnails

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
# Per tile of the virtual neurons' grids: [its virtual neuron ("■ VN 2"), its reference position]. Tiles live
# in shadow roots; their grid's bordered container starts with the virtual neuron's caption.
VN_TILES = """tiles => tiles.map(tile => {
    let node = tile.getRootNode().host;
    while (node && !(node.dataset.testid === 'stVerticalBlock' && node.innerText.trim().startsWith('■ VN'))) {
        node = node.parentElement;
    }
    return node ? [node.innerText.trim().split(' ·')[0], Number(tile.dataset.reference)] : null;
}).filter(Boolean)"""


@pytest.fixture(scope="module")
def app_url(demo_runs_root):
    root, kind = demo_runs_root
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(root, log=ARTIFACTS / "streamlit-server.log") as url:
        yield url, root, kind


@pytest.fixture(scope="module")
def page(browser):
    return new_page(browser)


def _shot(page, name: str) -> None:
    """Screenshot to test-artifacts/; also to docs/screenshots/ with PURE_UPDATE_SCREENSHOTS=1."""
    screenshot(page, ARTIFACTS / f"{name}.png", SCREENSHOTS / f"{name}.png")


def _query(page) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(page.url).query).items()}


def _ranking(root: Path, run_name: str) -> list[int]:
    with RunStore.open(root / run_name) as store:
        rows = sorted(store.read(Summary).rows, key=lambda r: (-r.polysemanticity, r.neuron))
    return [r.neuron for r in rows]


def test_overview_neuron_k_and_upload_in_a_real_browser(app_url, page, tmp_path):
    url, root, kind = app_url
    run = next(info for info in list_runs(root) if info.complete)
    order = _ranking(root, run.directory.name)

    # 1. overview: the run, the ranking table and the figures
    page.goto(f"{url}/?run={run.directory.name}")
    page.get_by_text("Neurons ranked by polysemanticity").wait_for()
    page.wait_for_function(ALL_CHARTS_DRAWN)
    wait_idle(page)
    assert page.locator('[data-testid="stDataFrame"]').count() == 1
    assert page.locator('[data-testid="stVegaLiteChart"]').count() == 3
    _shot(page, "overview")

    # 1b. clicking the highest dot of Fig. A.2 opens the most polysemantic neuron (an SVG node each)
    dots = page.locator('[data-testid="stVegaLiteChart"]').first.locator(".mark-symbol path")
    assert dots.count() == len(order)
    top = min((dots.nth(i).bounding_box() for i in range(dots.count())), key=lambda box: box["y"])
    page.mouse.click(top["x"] + top["width"] / 2, top["y"] + top["height"] / 2)
    page.wait_for_url("**/neuron?**")
    page.get_by_role("heading", name=re.compile(r"^\d+ virtual neurons?$")).wait_for()
    assert int(_query(page)["neuron"]) == order[0]
    page.goto(f"{url}/?run={run.directory.name}")
    page.get_by_text("Neurons ranked by polysemanticity").wait_for()
    page.wait_for_function(ALL_CHARTS_DRAWN)
    wait_idle(page)

    # 2. open the second-ranked neuron by selecting its row (row marker column of the glide grid)
    grid = page.locator('[data-testid="stDataFrame"]').bounding_box()
    header_px, row_px = 35, 46
    page.mouse.click(grid["x"] + 18, grid["y"] + header_px + row_px * 1 + row_px / 2)
    page.wait_for_url("**/neuron?**")
    page.get_by_role("heading", name=re.compile(r"^\d+ virtual neurons?$")).wait_for()
    page.wait_for_function(ALL_CHARTS_DRAWN)
    wait_idle(page)
    params = _query(page)
    assert params["run"] == run.directory.name and int(params["neuron"]) == order[1]
    k = int(params["k"])
    assert page.get_by_text(f"{k} virtual neurons").count() == 1
    _shot(page, "neuron")

    # 2b. hovering a UMAP point shows that reference's thumbnail beside the cursor (app/hover_thumbnails.py)
    umaps = page.locator('[data-testid="stVegaLiteChart"]')
    box = umaps.first.locator(".mark-symbol path").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    thumbnail = page.locator("#pure-hover-thumbnail")
    thumbnail.wait_for(state="visible")
    tooltip = page.locator("#vg-tooltip-element")  # Vega's own tooltip names the reference
    tooltip.wait_for(state="visible")
    rank = int(re.search(r"reference #\s*(\d+)", tooltip.inner_text())[1])
    with RunStore.open(root / run.directory.name) as store:
        expected = data_uri(store.read(Thumbnails, order[1]).images[rank - 1])
    assert thumbnail.get_attribute("src") == expected
    # ... and rings the same reference in the other UMAP (the activation baseline's)
    twin = page.locator(".pure-twin-ring")
    twin.wait_for(state="visible")
    assert twin.get_attribute("data-reference") == str(rank - 1)
    ring = twin.bounding_box()
    other = umaps.nth(1).bounding_box()
    centre = (ring["x"] + ring["width"] / 2, ring["y"] + ring["height"] / 2)
    assert other["x"] <= centre[0] <= other["x"] + other["width"]
    assert other["y"] <= centre[1] <= other["y"] + other["height"]
    page.mouse.move(2, 2)
    thumbnail.wait_for(state="hidden")
    twin.wait_for(state="hidden")
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # a click lists it below
    page.get_by_text("1 selected reference(s)").wait_for()
    wait_idle(page)

    # 2c. grids are tiles at the stored thumbnail size; any tile opens its reference large
    with RunStore.open(root / run.directory.name) as store:
        stored_px = max(Image.open(io.BytesIO(store.read(Thumbnails, order[1]).images[0])).size)
    tile = page.locator(".pure-tile").first
    if not tile.is_visible():  # a long list of references starts collapsed
        page.get_by_text(re.compile(r"^All \d+ references")).click()
        tile.wait_for()
    assert tile.bounding_box()["width"] >= min(stored_px, 160) - 2
    tile.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("reference #1 of neuron").wait_for()
    dialog.locator("img").nth(1).wait_for()
    assert dialog.locator("img").count() == 2  # the display crop and the whole image, large
    assert min(dialog.locator("img").nth(i).bounding_box()["width"] for i in range(2)) >= 250
    _shot(page, "neuron-reference")
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    wait_idle(page)

    # 3. change k with the keyboard on the slider; time until the page shows the new clustering
    slider = page.locator('[data-testid="stSlider"] input[type="range"]')
    latencies = []
    for key, new_k in (("ArrowRight", k + 1), ("ArrowRight", k + 2), ("ArrowLeft", k + 1)):
        slider.focus()
        start = time.perf_counter()
        slider.press(key)
        page.get_by_role("heading", name=f"{new_k} virtual neurons").wait_for()
        page.wait_for_function(ALL_CHARTS_DRAWN)
        wait_idle(page)
        latencies.append(time.perf_counter() - start)
        assert _query(page)["k"] == str(new_k)
        assert page.get_by_text(f"VN {new_k} ·").count() >= 1
        # every grid holds its own references, none twice
        tiles = page.locator(".pure-tile").evaluate_all(VN_TILES)
        members = [int(re.search(r" · (\d+) references", c)[1]) for c in page.evaluate(VN_CAPTIONS)]
        sizes = [min(n, GRID_TILES) for n in members]
        assert [sum(vn == f"■ VN {i + 1}" for vn, _ in tiles) for i in range(new_k)] == sizes
        assert len({reference for _, reference in tiles}) == len(tiles)
    # recorded, not asserted (no timed assertions in tests): benchmarks/bench_app.py measures it properly
    (ARTIFACTS / "browser-k-latency.json").write_text(json.dumps({"store": kind, "k_change_s": latencies}))
    _shot(page, "neuron-k")

    # 4. upload a photograph on the upload page for this neuron
    page.goto(f"{url}/upload?run={run.directory.name}&neuron={order[0]}&k=2")
    page.get_by_text("Images (PNG, JPEG or WEBP)").wait_for()
    from skimage import data as skdata

    photo = tmp_path / "chelsea.png"
    Image.fromarray(skdata.chelsea()).save(photo)
    page.locator('input[type="file"]').set_input_files(str(photo))
    page.get_by_text(re.compile("^(Assigned to|No assignment: )")).first.wait_for(timeout=180_000)
    page.get_by_text("Neurons this image activates most").wait_for()
    wait_idle(page)
    assert page.get_by_text(f"Activation of neuron {order[0]}").count() == 1
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    _shot(page, "upload")


def test_neuron_page_at_phone_width_keeps_tiles_usable(app_url, page):
    """At 400 px the grids wrap into fewer columns instead of shrinking: no tile under 40 px."""
    url, root, _ = app_url
    run = next(info for info in list_runs(root) if info.complete)
    neuron = _ranking(root, run.directory.name)[0]
    page.set_viewport_size({"width": 400, "height": 1600})
    try:
        page.goto(f"{url}/neuron?run={run.directory.name}&neuron={neuron}&k=2")
        visible = page.locator(".pure-tile >> visible=true")
        visible.first.wait_for()
        wait_idle(page)
        widths = [visible.nth(i).bounding_box()["width"] for i in range(min(6, visible.count()))]
        assert min(widths) >= 40, widths
        _shot(page, "neuron-phone")
    finally:
        page.set_viewport_size({"width": 1400, "height": 2400})


def test_the_ranking_fits_a_1366_px_laptop_screen(app_url, page):
    """Every column of the ranking table is visible without scrolling sideways in a 1366 px window."""
    url, root, _ = app_url
    run = next(info for info in list_runs(root) if info.complete)
    page.set_viewport_size({"width": 1366, "height": 900})
    try:
        page.goto(f"{url}/?run={run.directory.name}")
        page.get_by_text("Neurons ranked by polysemanticity").wait_for()
        wait_idle(page)
        scroller = page.locator('[data-testid="stDataFrame"] .dvn-scroller')
        scroller.wait_for()
        overflow = scroller.evaluate("(element) => element.scrollWidth - element.clientWidth")
        assert overflow <= 1, overflow
    finally:
        page.set_viewport_size({"width": 1400, "height": 2400})
