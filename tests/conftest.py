"""Shared fixtures: small but internally consistent run stores for the app's tests (written by
`pure_explorer.fixtures.write_small_store` through the store's records, in milliseconds), and a real store
made by `python -m precompute` with a tiny config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pure_explorer.fixtures import LOWER_NEURONS, SMALL_NEURONS, write_small_store
from pure_explorer.live_app import chromium_path


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `browser` need Debian's chromium and Playwright: skip them, saying so, when either is
    missing (CI installs both), before their fixtures build a store or start a server."""
    if item.get_closest_marker("browser") is None:
        return
    if chromium_path() is None:
        pytest.skip("no chromium (apt-get install -y chromium)")
    pytest.importorskip("playwright.async_api")


TINY_CLIP = "pure-test-tiny-clip"


@pytest.fixture(scope="session")
def tiny_clip_config(tmp_path_factory) -> str:
    """A 2-layer, width-64, 32 px CLIP config (image and text towers, open_clip's own tokenizer) registered
    with open_clip in this process; builds in milliseconds. Returns its model name."""
    import open_clip

    directory = tmp_path_factory.mktemp("open_clip_config")
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    (directory / f"{TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(directory)
    return TINY_CLIP


@pytest.fixture(scope="session")
def small_runs_root(tmp_path_factory) -> Path:
    """A runs root with two complete small runs of the same model: `small` (layer2, circuits in layer1) and
    `small-lower` (layer1 itself, so the circuits' lower channels have their own references)."""
    root = tmp_path_factory.mktemp("runs")
    write_small_store(root / "small")
    write_small_store(
        root / "small-lower",
        neurons=LOWER_NEURONS,
        layer="layer1",
        lower_layer="conv1",
        c_lower=64,
        c_layer=64,
        n_ref=8,
        seed=1,
    )
    return root


@pytest.fixture(scope="session")
def small_store(small_runs_root) -> Path:
    """The directory of the complete small run (`small_runs_root / "small"`)."""
    return small_runs_root / "small"


@pytest.fixture(scope="session")
def partial_runs_root(tmp_path_factory) -> Path:
    """A runs root holding one run whose precompute stopped after the attributions stage."""
    root = tmp_path_factory.mktemp("partial")
    write_small_store(
        root / "computing",
        neurons={3: SMALL_NEURONS[3], 12: SMALL_NEURONS[12]},
        stages=("references", "attributions"),
    )
    return root


@pytest.fixture(scope="session")
def missing_model_runs_root(tmp_path_factory) -> Path:
    """A complete small run whose model checkpoint does not exist (the upload page must say so)."""
    root = tmp_path_factory.mktemp("missing-model")
    write_small_store(
        root / "orphan",
        neurons={3: SMALL_NEURONS[3], 12: SMALL_NEURONS[12]},
        model={"name": "demo", "weights": None, "checkpoint": str(root / "no-such-model.pt")},
    )
    return root


# -- the real demo store, made by `python -m precompute` ----------------------------------------------------
DEMO_PRECOMPUTE_ARGS = os.environ.get("PURE_TEST_PRECOMPUTE_ARGS", "--preset tiny --no-progress")


@pytest.fixture(scope="session")
def demo_runs_root(tmp_path_factory) -> tuple[Path, str]:
    """(root, kind): a runs root with a real store made by `python -m precompute` with a tiny config (kind
    "precompute"), or the prebuilt root named by ``$PURE_TEST_DEMO_RUNS`` (kind "prebuilt")."""
    prebuilt = os.environ.get("PURE_TEST_DEMO_RUNS")
    if prebuilt:
        return Path(prebuilt).resolve(), "prebuilt"
    root = tmp_path_factory.mktemp("demo-runs")
    command = [sys.executable, "-m", "precompute", *DEMO_PRECOMPUTE_ARGS.split(), "--out", str(root / "demo")]
    result = subprocess.run(
        command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return root, "precompute"
