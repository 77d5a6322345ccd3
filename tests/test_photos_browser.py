"""The photos demo in a real browser: `python -m precompute --preset photos` (reduced to 3 neurons over 240
images; the same network, layers, LRP crops and judge) opened in Chromium. The overview names the judge and
raises no shared-weights warning, and a label search opens the virtual neuron most about the label; the most
polysemantic neuron's page names each virtual neuron's photographs and predicted ImageNet classes, as
stored, and opens a reference with the model's top classes.

`PURE_TEST_PHOTOS_RUNS=DIR` uses a prebuilt runs root instead (the full preset's run); with
`PURE_UPDATE_SCREENSHOTS=1` the neuron page becomes the README's `docs/screenshots/photos-neuron.png`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.search import label_hits
from pure_explorer.live_app import ALL_CHARTS_DRAWN, new_page, screenshot, serve, wait_idle
from store import RunStore, list_runs
from store.schema import (
    ClassNames,
    DatasetLabelNames,
    LabelIndex,
    Summary,
    VirtualNeuronDataLabels,
    VirtualNeuronLabels,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
PHOTOS_ARGS = "--preset photos --neurons 2,6,10 --n-images 240 --no-progress"


@pytest.fixture(scope="module")
def photos_root(tmp_path_factory) -> Path:
    prebuilt = os.environ.get("PURE_TEST_PHOTOS_RUNS")
    if prebuilt:
        return Path(prebuilt).resolve()
    root = tmp_path_factory.mktemp("photos-runs")
    command = [sys.executable, "-m", "precompute", *PHOTOS_ARGS.split(), "--out", str(root / "photos")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return root


def _shot(page, name: str) -> None:
    """Screenshot to test-artifacts/; also to docs/screenshots/ with PURE_UPDATE_SCREENSHOTS=1."""
    screenshot(page, ARTIFACTS / f"{name}.png", ROOT / "docs" / "screenshots" / f"{name}.png")


def test_the_photos_run_in_a_real_browser(photos_root, browser):
    run = next(info for info in list_runs(photos_root) if info.complete)
    assert run.config["model"]["name"] == "efficientnet-lite0" and run.config["dataset"]["kind"] == "photos"
    with RunStore.open(run.directory) as store:
        names = store.read(ClassNames).names
        top = max(store.read(Summary).rows, key=lambda r: (r.polysemanticity, -r.neuron)).neuron
        labels = store.read(VirtualNeuronLabels, top).by_k[2]
        data_names = store.read(DatasetLabelNames).names
        data_labels = store.read(VirtualNeuronDataLabels, top).by_k[2]
        index = store.read(LabelIndex)
    assert len(names) == 1000 and "Egyptian cat" in names  # ImageNet's classes, from the model's weights
    assert "astronaut" in data_names  # the dataset's labels: the photographs

    with serve(photos_root, log=ARTIFACTS / "photos-server.log") as url:
        page = new_page(browser, timeout_ms=120_000)
        page.goto(f"{url}/?run={run.directory.name}")
        page.get_by_text("Neurons ranked by polysemanticity").wait_for()
        page.wait_for_function(ALL_CHARTS_DRAWN)
        wait_idle(page)
        body = page.locator("body").inner_text()
        assert "efficientnet-lite2" in body and "efficientnet-lite0" in body  # the judge is another network
        assert "is the analysed network itself" not in body
        assert page.locator('[data-testid="stException"]').count() == 0

        # a label search lists the virtual neurons about it; its first row opens that neuron at its k
        search = page.get_by_label("Search by neuron id or label")
        search.fill("astronaut")
        search.press("Enter")
        page.get_by_text("Virtual neurons labelled").wait_for()
        wait_idle(page)
        first = label_hits(index, {"data": data_names, "predicted": names}, "astronaut").iloc[0]
        grid = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
        page.mouse.click(grid["x"] + 18, grid["y"] + 35 + 46 / 2)  # row marker of the first row
        page.wait_for_url("**/neuron?**")
        page.get_by_role("heading", name=re.compile(r"^\d+ virtual neurons?$")).wait_for()
        query = dict(part.split("=") for part in page.url.split("?", 1)[1].split("&"))
        assert (int(query["neuron"]), int(query["k"])) == (int(first["neuron"]), int(first["k"]))

        page.goto(f"{url}/neuron?run={run.directory.name}&neuron={top}&k=2")
        page.get_by_role("heading", name="2 virtual neurons").wait_for()
        page.wait_for_function(ALL_CHARTS_DRAWN)
        page.get_by_text("model predicts:").nth(1).wait_for()
        wait_idle(page)
        headers = [t for t in page.locator('[data-testid="stMarkdownContainer"]').all_inner_texts()
                   if "model predicts:" in t]
        assert len(headers) == 2
        for header, stored, from_data in zip(headers, labels, data_labels, strict=True):
            assert re.match(r"^\S?\s*VN \d", header.strip())
            assert names[stored[0].label] in header  # the stored labels are the ones the page shows
            assert f"data: {data_names[from_data[0].label]}" in header  # the photograph its crops come from
        assert page.locator('[data-testid="stException"]').count() == 0
        _shot(page, "photos-neuron")

        title = page.locator(".pure-tile").first.get_attribute("title")  # a tile's tooltip names its labels
        assert "model: " in title and any(f"({name};" in title for name in data_names)
        page.locator(".pure-tile").first.click()  # a reference opens large with the model's top classes
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("model predicts").wait_for()
        assert any(name in dialog.inner_text() for name in names)
