"""A live dashboard for browser tests and benchmarks: `streamlit run <installed app/server.py>` on a free
localhost port, and Debian's chromium driven by Playwright (never `playwright install`); plus what a page
script waits for (`ALL_CHARTS_DRAWN`, `IDLE`, `K_DRAWN`, `K_REDRAW_PROBE`).

Used by the browser tests (tests/test_browser.py, test_concurrency.py, test_access_browser.py,
test_dockerfile.py) and by benchmarks/.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pure_explorer import app_script

if TYPE_CHECKING:
    from playwright.async_api import Browser as AsyncBrowser
    from playwright.sync_api import Browser, Page

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    # WebGL (Fig. A.2 of a large run is a WebGL trace) in software despite --disable-gpu: Debian's chromium
    # 156 falls back to SwiftShader by itself, a fallback Chromium has deprecated; this flag keeps it allowed.
    "--enable-unsafe-swiftshader",
]
# Streamlit's chart elements of the pages: Plotly (charts drawn on request on the neuron and upload pages)
# and Vega-Lite (the overview's figures and the neuron page's UMAPs).
PLOTLY_CHART = '[data-testid="stPlotlyChart"]'
VEGA_CHART = '[data-testid="stVegaLiteChart"]'
CHARTS = f"{PLOTLY_CHART}, {VEGA_CHART}"
# Every chart on the page is drawn: each Plotly chart has its SVG, each Vega-Lite chart its marks (an SVG, or
# a canvas from 2,000 data points on).
ALL_CHARTS_DRAWN = f"""() => {{
    const plotly = document.querySelectorAll('{PLOTLY_CHART}').length;
    const vega = document.querySelectorAll('{VEGA_CHART}').length;
    return plotly + vega > 0
        && document.querySelectorAll('.js-plotly-plot .main-svg').length >= plotly
        && document.querySelectorAll('{VEGA_CHART} :is(svg, canvas).marks').length >= vega;
}}"""
# The script run is over (no "Running..." widget), nothing on the page is stale, and no element is still a
# loading skeleton (element code is loaded lazily; under load, metrics and images come seconds later).
IDLE = """() => !document.querySelector('[data-testid="stStatusWidget"]')
    && !document.querySelector('[data-stale="true"], [data-testid^="stSkeleton"]')"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chromium_path() -> str | None:
    """Debian's chromium (on PATH or /usr/bin), or None where it is not installed."""
    return shutil.which("chromium") or (os.path.exists("/usr/bin/chromium") and "/usr/bin/chromium") or None


def streamlit_command(port: int) -> list[str]:
    """`streamlit run <installed app/server.py>` headless on 127.0.0.1:``port``, no file watcher, no usage
    statistics."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app_script()),
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 90, log: Path | None = None) -> None:
    """Poll ``url``/_stcore/health until it answers 200; raise with the server log if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"streamlit did not start (exit code {process.poll()}):\n{tail}")
        time.sleep(0.2)


@contextmanager
def serve(
    runs_root: Path,
    *,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    port: int | None = None,
    log: Path | None = None,
) -> Iterator[str]:
    """Run the dashboard on ``runs_root`` and yield its URL; the server is stopped on exit.

    ``command`` (default `streamlit_command`) must listen on ``port``; ``env`` is added to the environment;
    it runs in ``cwd`` (default: this process's), whose .streamlit/ may hold secrets (the dashboard's config
    is installed beside its script);
    the server's output goes to ``log`` (or nowhere)."""
    port = port or free_port()
    out: IO | int = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        list(command or streamlit_command(port)),
        cwd=cwd,
        env={**os.environ, "PURE_RUNS_DIR": str(runs_root), **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log=log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        if log is not None:
            out.close()


@contextmanager
def chromium() -> Iterator[Browser]:
    """A Playwright chromium browser (Debian's /usr/bin/chromium), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@asynccontextmanager
async def async_chromium() -> AsyncIterator[AsyncBrowser]:
    """The same browser for Playwright's async API (many sessions driven at once), closed on exit."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def screenshot(page: Page, path: Path, docs_copy: Path | None = None) -> None:
    """A full-page screenshot to ``path``; with ``PURE_UPDATE_SCREENSHOTS=1`` also the README's copy at
    ``docs_copy``: 70 % size, 256 colours (about 5x smaller)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    if docs_copy is not None and os.environ.get("PURE_UPDATE_SCREENSHOTS") == "1":
        docs_copy.parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(path).convert("RGB")
        image = image.resize((image.width * 7 // 10, image.height * 7 // 10), Image.Resampling.LANCZOS)
        # octree keeps a chart's rare colours (median cut turned the few yellow pixels of a colour scale red)
        image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(docs_copy, optimize=True)


def new_page(browser: Browser, timeout_ms: int = 60_000) -> Page:
    """A tall tab (every chart of the neuron page in view) with a generous default timeout."""
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.set_default_timeout(timeout_ms)
    return page


def wait_idle(page: Page, settle_ms: int = 150) -> None:
    """Wait ``settle_ms`` for a click's rerun to begin, then until the page is `IDLE`."""
    page.wait_for_timeout(settle_ms)
    page.wait_for_function(IDLE)


def switch_on(page: Page, label: str | re.Pattern, tries: int = 3) -> None:
    """Turn on the Streamlit toggle ``label`` (its text, or a pattern of it) by clicking its label until its
    switch reads as on: a click that lands while the page reruns can be lost, and nothing would ask for what
    the toggle shows."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    switch = page.get_by_role("switch", name=label)
    for _ in range(tries):
        if switch.is_checked():
            return
        page.get_by_text(label, exact=isinstance(label, str)).click()
        try:
            page.wait_for_function("element => element.checked", arg=switch.element_handle(), timeout=5_000)
            return
        except PlaywrightTimeout:
            wait_idle(page)
    if not switch.is_checked():
        raise AssertionError(f"the toggle {label!r} did not turn on after {tries} clicks")


# The neuron page's reference maps (the UMAPs, `app.umap_charts`) as drawn: per Vega-Lite chart whose points
# carry a reference position, its points as [reference, cluster], in reference order (Vega keeps each
# point's row on its SVG node).
REFERENCE_MAPS = f"""() => [...document.querySelectorAll('{VEGA_CHART}')]
    .map(chart => [...chart.querySelectorAll('.mark-symbol path')]
        .map(node => node.__data__ && node.__data__.datum)
        .filter(row => row && Number.isInteger(row.reference))
        .map(row => [row.reference, row.cluster])
        .sort((a, b) => a[0] - b[0]))
    .filter(points => points.length > 0)"""
# The page shows k virtual neurons: its "k virtual neurons" heading, and every reference map drawn with k
# clusters.
K_DRAWN = f"""(k) => {{
    const heading = [...document.querySelectorAll('h3')]
        .some(e => e.textContent.includes(k + ' virtual neuron'));
    const maps = ({REFERENCE_MAPS})();
    return heading && maps.length > 0 && maps.every(points => new Set(points.map(p => p[1])).size === k);
}}"""
# Arm before a k change on the neuron page: from the keydown to the first moment the page shows the new k
# (`K_DRAWN`, no stale element left), measured in the page itself with performance.now(), so driver round
# trips are not counted. Read `window.__kRedraw`.
K_REDRAW_PROBE = f"""(k) => {{
    const m = window.__kRedraw = {{}};
    if (window.__kObserver) window.__kObserver.disconnect();
    document.addEventListener('keydown', () => {{ m.key = performance.now(); }},
                              {{once: true, capture: true}});
    const check = () => {{
        if (m.key === undefined || m.drawn !== undefined) return;
        if (({K_DRAWN})(k) && !document.querySelector('[data-stale="true"]')) {{
            m.drawn = performance.now() - m.key;
        }}
    }};
    window.__kObserver = new MutationObserver(check);
    window.__kObserver.observe(document.body, {{subtree: true, childList: true, attributes: true,
                                               characterData: true}});
}}"""
