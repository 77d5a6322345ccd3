"""Search and image probing end to end in Chromium, on a real demo run (`python -m precompute --preset tiny`):
typing a planted concept lists the virtual neurons labelled with it, and a hit opens that neuron at that k
with the label on the virtual neuron; uploading an image of a planted concept lists the neurons it activates
most, each with its virtual neuron and label, and the concept is among those labels."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from pure_explorer.live_app import new_page, serve, wait_idle
from store import RunStore, list_runs
from store.schema import (
    DatasetLabelNames,
    ReferenceDatasetLabels,
    ReferenceImage,
    References,
    Summary,
    VirtualNeuronDataLabels,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
HEADER_PX, ROW_PX = 35, 46  # the glide grid's header and a row of 40 px thumbnails (as in test_browser)


@pytest.fixture(scope="module")
def app(demo_runs_root, browser):
    root, _ = demo_runs_root
    ARTIFACTS.mkdir(exist_ok=True)
    run = next(info for info in list_runs(root) if info.complete)
    with serve(root, log=ARTIFACTS / "streamlit-search-server.log") as url:
        yield url, root / run.directory.name, run.directory.name, new_page(browser)


def _grid_cells(grid) -> list[str]:
    """The texts of a dataframe's cells (glide's accessible grid beside its canvas, filled in once the grid
    is on screen)."""
    grid.scroll_into_view_if_needed()
    grid.locator('[role="gridcell"]').first.wait_for(state="attached")
    return [text.strip() for text in grid.locator('[role="gridcell"]').all_text_contents()]


def test_searching_a_label_lists_its_virtual_neurons_and_a_hit_opens_the_neuron_at_that_k(app):
    url, store_dir, run_name, page = app
    with RunStore.open(store_dir) as store:
        names = store.read(DatasetLabelNames).names
        top = max(store.read(Summary).rows, key=lambda row: row.polysemanticity)
        label = names[store.read(VirtualNeuronDataLabels, top.neuron).by_k[2][0][0].label]
    page.goto(f"{url}/?run={run_name}")
    box = page.get_by_label("Search by neuron id or label")
    box.fill(label)
    box.press("Enter")
    page.get_by_text(re.compile(r"^Virtual neurons labelled")).wait_for()
    wait_idle(page)
    hits = page.locator('[data-testid="stDataFrame"]').first
    cells = _grid_cells(hits)
    assert label in cells, cells
    grid = hits.bounding_box()
    page.mouse.click(grid["x"] + 18, grid["y"] + HEADER_PX + ROW_PX / 2)  # the first hit's row marker
    page.wait_for_url("**/neuron?**")
    page.get_by_role("heading", name=re.compile(r"^\d+ virtual neurons?$")).wait_for()
    wait_idle(page)
    query = {k: v[-1] for k, v in parse_qs(urlparse(page.url).query).items()}
    assert query["run"] == run_name and int(query["k"]) >= 2
    # the virtual neuron that carries the label says so in its header (the planted concepts of a world run)
    assert page.get_by_text(re.compile(re.escape(label))).count() >= 1


def test_uploading_an_image_of_a_concept_lists_the_circuits_it_fires_with_that_concept_among_their_labels(
    app, tmp_path
):
    url, store_dir, run_name, page = app
    with RunStore.open(store_dir) as store:
        references = store.read(References)
        names = store.read(DatasetLabelNames).names
        neuron = references.neuron_ids[0]  # a planted channel: its references show its concepts
        index = int(references.indices[0][0])
        concept = names[int(store.read(ReferenceDatasetLabels, neuron).values[0])]
        image = store.read(ReferenceImage, index).data
    path = tmp_path / "reference.webp"
    path.write_bytes(image)
    page.goto(f"{url}/upload?run={run_name}&neuron={neuron}&k=2")
    page.get_by_text("Images (PNG, JPEG or WEBP)").wait_for()
    page.locator('input[type="file"]').set_input_files(str(path))
    page.get_by_text("Neurons this image activates most").wait_for(timeout=180_000)
    wait_idle(page)
    table = page.locator('[data-testid="stDataFrame"]').last
    cells = _grid_cells(table)
    assert any(cell.startswith(concept) for cell in cells), (concept, cells)
    assert f"{neuron}" in cells  # the neuron whose top reference it is, linked by its id
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    page.screenshot(path=str(ARTIFACTS / "upload-probing.png"), full_page=True)


# -- free text through CLIP, with a CLIP the server builds itself ------------------------------------------
CLIP_WORDS = ["striped", "chequered", "dotted", "grid", "zigzagged", "red", "blue", "green", "bar", "circle",
              "diamond", "hexagon", "square", "cross", "triangle", "hourglass"]


@pytest.fixture(scope="module")
def clip_app(tmp_path_factory, browser):
    """A tiny demo run named by ViT-S-32-alt with seeded random weights (the server builds the same model:
    the plumbing end to end, not CLIP's quality), served, and a page."""
    root = tmp_path_factory.mktemp("clip-runs")
    words = root / "words.txt"
    words.write_text("\n".join(CLIP_WORDS), encoding="utf-8")
    command = [sys.executable, "-m", "precompute", "--preset", "tiny", "--neurons", "0-5", "--no-progress",
               "--clip", "open_clip:ViT-S-32-alt/none", "--vocabulary", str(words),
               "--out", str(root / "clip")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    with serve(root, log=ARTIFACTS / "streamlit-clip-server.log") as url:
        yield url, root / "clip", new_page(browser)


def test_free_text_lists_the_virtual_neurons_that_look_like_it_and_a_hit_opens_the_neuron(clip_app):
    url, store_dir, page = clip_app
    page.goto(f"{url}/?run=clip")
    box = page.get_by_label("Search by neuron id or label")
    box.fill("a striped red bar")  # in no vocabulary: only CLIP's joint space can answer
    box.press("Enter")
    page.get_by_text(re.compile(r"^Virtual neurons that look like")).wait_for(timeout=120_000)
    wait_idle(page)
    hits = page.locator('[data-testid="stDataFrame"]').first  # no label hits: the CLIP hits come first
    cells = _grid_cells(hits)
    rows = [cells[i:i + 5] for i in range(0, len(cells), 5)]  # neuron, references, VN, k, cosine
    assert len(rows) == 6 and {int(row[0]) for row in rows} == set(range(6)), cells  # every neuron once
    cosines = [float(row[4]) for row in rows]
    assert cosines == sorted(cosines, reverse=True) and all(-1 <= c <= 1 for c in cosines)
    grid = hits.bounding_box()
    page.mouse.click(grid["x"] + 18, grid["y"] + HEADER_PX + ROW_PX / 2)
    page.wait_for_url("**/neuron?**")
    page.get_by_role("heading", name=re.compile(r"^\d+ virtual neurons?$")).wait_for()
    wait_idle(page)
    assert page.get_by_text(re.compile(r"· CLIP: ")).count() >= 1  # each virtual neuron's CLIP names
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
