"""Circuits in Chromium on a real demo run (`python -m precompute --preset tiny`): the neuron page's causal
check draws its ablation chart and per-VN selectivity, and the upload page flags an image whose circuit is
unlike any of the neuron's virtual neurons (and does not flag one of the neuron's own references). On a
chain of two layer pairs (`--chain block4,block3,block2`): the chart of where a circuit splits, a circuit
channel's link down to its own page, and the breadcrumb back up."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pure_core.attribution import pure_attributions
from pure_core.models import ModelSpec, build_model
from pure_core.registry import load_plugins
from pure_core.virtual import VirtualNeurons
from pure_explorer.live_app import new_page, serve, switch_on, wait_idle
from store import RunStore, list_runs
from store.codecs import decode_image
from store.schema import NeuronScores, PureVectors, ReferenceImage, References, RunMeta

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def app(demo_runs_root, browser):
    root, _ = demo_runs_root
    ARTIFACTS.mkdir(exist_ok=True)
    run = next(info for info in list_runs(root) if info.complete)
    with serve(root, log=ARTIFACTS / "streamlit-circuits-server.log") as url:
        yield url, root / run.directory.name, run.directory.name, new_page(browser)


def test_the_causal_check_draws_its_ablation_chart_and_selectivity(app):
    url, store_dir, run_name, page = app
    with RunStore.open(store_dir) as store:
        neuron = store.read(References).neuron_ids[0]
    page.goto(f"{url}/neuron?run={run_name}&neuron={neuron}&k=2")
    page.get_by_role("heading", name="2 virtual neurons").wait_for(timeout=120_000)
    wait_idle(page)
    expander = page.get_by_text("Causal check: ablate each virtual neuron's circuit")
    expander.scroll_into_view_if_needed()
    expander.click()
    switch_on(page, "Run the causal check (runs the model on the references)")
    removes = re.compile(r"VN 1: its circuit removes \d+% of the activation")
    page.get_by_text(removes).wait_for(timeout=120_000)
    wait_idle(page)
    chart = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="VN 1's references")
    assert chart.count() == 1 and chart.get_by_text("ablate VN 2").count() >= 1
    assert page.get_by_text(re.compile(r"VN 2: its circuit removes \d+%")).count() == 1
    page.screenshot(path=str(ARTIFACTS / "causal-check.png"), full_page=True)


def _circuit_ratios(store_dir: Path, images: list[Image.Image]) -> list[dict[int, float]]:
    """Per image, per analysed neuron, its `radius_ratio` against the neuron's k = 2 virtual neurons (as the
    page judges it: the run's model, the stored centroids numbered by size, the stored references' radii);
    one model and one attribution pass for all images."""
    load_plugins()
    with RunStore.open(store_dir) as store:
        meta = store.read(RunMeta)
        loaded = build_model(ModelSpec.from_dict(meta.config["model"]), fetch_missing=False)
        neurons = store.read(References).neuron_ids
        x = loaded.preprocess.to_batch(images)
        circuits = pure_attributions(loaded.model, x, meta.layer, meta.lower_layer, neurons).numpy()
        ratios = [{} for _ in images]
        for row, neuron in enumerate(neurons):
            R = store.read(PureVectors, neuron).values.astype(np.float64)
            fitted = VirtualNeurons.from_stored(store.read(NeuronScores, neuron).centroids[2], R,
                                                random_state=meta.seed)
            for i, ratio in enumerate(fitted.radius_ratio(circuits[:, row])):
                ratios[i][neuron] = float(ratio)
    return ratios


def _upload(page, url: str, run_name: str, neuron: int, path: Path) -> None:
    """Upload ``path`` on the upload page for ``neuron`` at k = 2 and wait until it is analysed."""
    page.goto(f"{url}/upload?run={run_name}&neuron={neuron}&k=2")
    page.get_by_text("Images (PNG, JPEG or WEBP)").wait_for()
    page.locator('input[type="file"]').set_input_files(str(path))
    page.get_by_text("Neurons this image activates most").wait_for(timeout=180_000)
    wait_idle(page)


def test_an_image_unlike_any_circuit_is_flagged_and_a_reference_is_not(app, tmp_path):
    url, store_dir, run_name, page = app
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    [ratios] = _circuit_ratios(store_dir, [grey])
    flagged = [n for n, ratio in ratios.items() if ratio > 1.2]  # clearly beyond every radius
    assert flagged, ratios
    neuron = flagged[0]
    path = tmp_path / "grey.png"
    grey.save(path)
    _upload(page, url, run_name, neuron, path)
    assert page.get_by_text("Unlike any circuit.").count() == 1
    assert page.get_by_text(re.compile(r"beyond every virtual neuron's radius \(\d+\.\d× the closest one\)"))\
        .count() == 1
    page.screenshot(path=str(ARTIFACTS / "unlike-any-circuit.png"), full_page=True)

    with RunStore.open(store_dir) as store:  # the neuron's own reference inside a radius: no flag
        references = store.read(References)
        candidates = [int(i) for i in references.indices[references.row(neuron)][:8]]
        images = [decode_image(store.read(ReferenceImage, i).data).convert("RGB") for i in candidates]
    inside = next(image for image, r in zip(images, _circuit_ratios(store_dir, images), strict=True)
                  if r[neuron] < 0.8)
    reference = tmp_path / "reference.png"
    inside.save(reference)
    _upload(page, url, run_name, neuron, reference)
    assert page.get_by_text("Unlike any circuit.").count() == 0


# -- down the chain of layers ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chain_app(chain_runs_root, browser):
    with serve(chain_runs_root, log=ARTIFACTS / "streamlit-chain-server.log") as url:
        yield url, chain_runs_root, new_page(browser)


def test_a_circuit_channel_leads_to_its_own_page_and_the_breadcrumb_back_up(chain_app):
    url, root, page = chain_app
    with RunStore.open(root / "demo-block3") as store:
        lower_neurons = set(store.read(References).neuron_ids)
    with RunStore.open(root / "demo") as store:
        neuron = store.read(References).neuron_ids[0]
    page.goto(f"{url}/neuron?run=demo&neuron={neuron}&k=2")
    page.get_by_role("heading", name="2 virtual neurons").wait_for(timeout=120_000)
    wait_idle(page)
    # where the circuit splits: the chain's deeper layer charted beside the run's own lower layer
    switch_on(page, re.compile(r"^Where the circuit splits: circuits taken at"))
    depth = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="ARI vs planted concepts")
    depth.wait_for(timeout=60_000)
    assert depth.get_by_text("block2").count() >= 1 and depth.get_by_text("block3").count() >= 1
    links = page.locator("a[href*='run=demo-block3']")
    links.first.wait_for(state="attached")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    channels = {int(re.search(r"neuron=(\d+)", h).group(1)) for h in hrefs}
    assert channels and channels <= lower_neurons
    link = links.first
    channel = int(re.search(r"neuron=(\d+)", link.get_attribute("href")).group(1))
    link.scroll_into_view_if_needed()
    link.click()
    page.wait_for_url(re.compile(rf".*/neuron\?run=demo-block3&neuron={channel}\b.*"))
    nav = page.locator("nav[aria-label='way down the circuit']")
    nav.wait_for(timeout=120_000)
    assert nav.get_by_text(re.compile(rf"block4 · neuron {neuron} · VN \d of 2")).count() == 1
    assert nav.get_by_text(re.compile(rf"block3 · neuron {channel}")).count() == 1
    page.get_by_role("heading", name=re.compile(r"^\d+ virtual neurons?$")).wait_for()
    wait_idle(page)
    page.screenshot(path=str(ARTIFACTS / "drill-down.png"))
    nav.get_by_role("link").first.click()  # back up to the neuron whose circuit was followed, at its k
    page.wait_for_url(re.compile(rf".*/neuron\?run=demo&neuron={neuron}&k=2.*"))
    page.get_by_role("heading", name="2 virtual neurons").wait_for(timeout=120_000)
