"""A user's session on the live dashboard, driven in a browser context of its own (one Streamlit session),
and what it saw: used by tests/test_concurrency.py (many sessions see what one sees) and
benchmarks/bench_concurrency.py (their latencies).

A session (`drive_session`) moves the way a user does: it opens the overview, clicks a row of the ranking
table (st.switch_page to the neuron page), moves k with the keyboard on the slider (a fragment rerun), and
follows the sidebar link to the upload page (neuron and k carried in the session state), where it uploads
the neuron's top reference image. Sessions differ by `Variant` (which row, k up or down, which image), so a
crowd (`drive_crowd`) computes different neurons, k and uploads at once. Per step it records what the page
shows, the seconds from the action to the settled page, and any problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.state import DEFAULT_K
from pure_explorer.live_app import ALL_CHARTS_DRAWN, IDLE, K_DRAWN, REFERENCE_MAPS
from store import RunStore, list_runs
from store.codecs import decode_image
from store.schema import ReferenceImage, References, Summary

if TYPE_CHECKING:
    from playwright.async_api import Browser as AsyncBrowser

N_VARIANTS = 2
STEP_TIMEOUT_MS = 180_000  # 2 cores shared by the server, chromium and ten sessions
VIEWPORT = {"width": 1280, "height": 1800}
STEPS = ("overview", "neuron", "k change", "upload page", "upload")
HEADER_PX, ROW_PX = 35, 46  # the ranking table's glide grid: header and row heights (overview row_height)

# The neuron page shows k: `K_DRAWN` (its heading, every UMAP with k clusters) and k virtual-neuron captions
# ("■ VN i · ...").
K_SHOWN = f"""(k) => ({K_DRAWN})(k) && [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
    .filter(e => e.innerText.startsWith('■ VN')).length === k"""
# A dataframe's cells as the glide grid's accessible table holds them (full-precision values; rows in view):
# one {column header: text} per row, image columns (data URIs) left out.
GRID_ROWS = """(grid) => {
    const heads = [...grid.querySelectorAll('[role=columnheader]')].map(h => h.textContent.trim());
    return [...grid.querySelectorAll('tbody [role=row]')].map(row => Object.fromEntries(
        [...row.querySelectorAll('[role=gridcell]')]
            .map((cell, i) => [heads[i], cell.textContent.trim()])
            .filter(([, text]) => !text.startsWith('data:'))));
}"""
METRICS = """() => [...document.querySelectorAll('[data-testid="stMetric"]')]
    .map(m => m.innerText.replace(/\\s+/g, ' ').trim())"""
VN_CAPTIONS = """() => [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
    .map(e => e.innerText.trim()).filter(t => t.startsWith('■ VN'))"""
# Each Plotly chart's traces (the upload page's distances) as [name, number of points, y values when few].
TRACES = """() => [...document.querySelectorAll('.js-plotly-plot')].map(p => p._fullData.map(
    t => [t.name, t._length, t._length <= 16 && t.y ? Array.from(t.y) : null]))"""
# What must never be on a page: Streamlit exception boxes, error alerts, a Python traceback.
PROBLEMS = """() => [
    ...[...document.querySelectorAll('[data-testid="stException"]')].map(e => 'exception: ' + e.innerText),
    ...[...document.querySelectorAll('[data-testid="stAlertContentError"]')]
        .map(e => 'error: ' + e.innerText),
    ...(document.body.innerText.includes('Traceback') ? ['a traceback on the page'] : []),
]"""


@dataclass(frozen=True)
class Variant:
    """What a session does on run ``run``: open the ranking's row ``row`` (neuron ``neuron``; the page opens
    with `DEFAULT_K` virtual neurons), press ``key`` on the k slider (to ``k``), and upload ``image``."""

    run: str
    row: int
    neuron: int
    key: str
    k: int
    image: Path


@dataclass
class SessionResult:
    """What one session saw per step, how long each step took (s, action to settled page), and anything
    that went wrong (page problems, JavaScript errors, the step that failed)."""

    variant: Variant
    seen: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def ranking_order(root: Path, run_name: str) -> list[int]:
    """The run's neurons by polysemanticity (descending), ties by id: the overview's row order."""
    with RunStore.open(root / run_name) as store:
        rows = sorted(store.read(Summary).rows, key=lambda r: (-r.polysemanticity, r.neuron))
    return [r.neuron for r in rows]


def variants(root: Path, images_dir: Path, n: int = N_VARIANTS) -> list[Variant]:
    """``n`` variants on the first complete run under ``root``: row i of the ranking, k one up (even i) or
    one down (odd i) from `DEFAULT_K`, and that neuron's top reference image (written to ``images_dir``)."""
    run = next(info for info in list_runs(root) if info.complete)
    order = ranking_order(root, run.directory.name)
    with RunStore.open(run.directory) as store:
        references = store.read(References)
        found = []
        for i, neuron in enumerate(order[:n]):
            image = images_dir / f"neuron-{neuron}-top-reference.png"
            top = int(references.indices[references.row(neuron)][0])
            decode_image(store.read(ReferenceImage, top).data).save(image)
            key, k = ("ArrowRight", DEFAULT_K + 1) if i % 2 == 0 else ("ArrowLeft", DEFAULT_K - 1)
            found.append(Variant(run.directory.name, i, neuron, key, k, image))
    return found


async def _settle(page: Any) -> None:
    """Wait until the page is `IDLE` (after a moment, so that a script run just started shows)."""
    await page.wait_for_timeout(150)
    await page.wait_for_function(IDLE)


async def _grid(page: Any, settle_ms: int = 250) -> list[dict[str, str]]:
    """The rows of the page's (first) dataframe; scrolled into view, as the grid renders lazily, and read
    until two reads ``settle_ms`` apart agree (its hidden accessible table can trail a rerun on a busy
    machine)."""
    grid = page.locator('[data-testid="stDataFrame"]').first
    await grid.scroll_into_view_if_needed()
    await grid.locator("tbody [role=row]").first.wait_for(state="attached")  # a hidden accessible table
    rows = await grid.evaluate(GRID_ROWS)
    for _ in range(40):  # a grid still changing after 10 s is returned as it is (and then differs)
        await page.wait_for_timeout(settle_ms)
        again = await grid.evaluate(GRID_ROWS)
        if again == rows:
            break
        rows = again
    return rows


async def _check(page: Any, result: SessionResult, step: str) -> None:
    """Record the page's `PROBLEMS` under ``step``."""
    result.problems += [f"{step}: {problem}" for problem in await page.evaluate(PROBLEMS)]


async def _k_view(page: Any) -> dict[str, Any]:
    """What the neuron page shows for the current k (URL, virtual neurons, UMAP points, scores table)."""
    return {
        "url": page.url.split("/", 3)[-1],
        "virtual neurons": await page.evaluate(VN_CAPTIONS),
        "umap": await page.evaluate(REFERENCE_MAPS),
        "scores": await _grid(page),
    }


async def drive_session(
    browser: AsyncBrowser,
    url: str,
    variant: Variant,
    name: str = "session",
    screenshots: Path | None = None,
) -> SessionResult:
    """One user in a browser context of its own: overview, neuron (row click), k, upload. Never raises:
    a failed step ends the session and is recorded in ``problems`` (with a screenshot of the page,
    ``concurrency-<name>.png``, in ``screenshots`` when given)."""
    result = SessionResult(variant)
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    page.on("pageerror", lambda error: result.problems.append(f"javascript: {error}"))
    step = STEPS[0]
    try:
        start = time.perf_counter()
        await page.goto(f"{url}/?run={variant.run}")
        await page.get_by_text("Neurons ranked by polysemanticity").wait_for()
        await page.wait_for_function(ALL_CHARTS_DRAWN)
        await _settle(page)
        result.seconds[step] = time.perf_counter() - start
        await _check(page, result, step)
        result.seen[step] = {"ranking": await _grid(page)}

        step = STEPS[1]
        grid = await page.locator('[data-testid="stDataFrame"]').bounding_box()
        start = time.perf_counter()
        await page.mouse.click(grid["x"] + 18, grid["y"] + HEADER_PX + ROW_PX * variant.row + ROW_PX / 2)
        await page.wait_for_url("**/neuron?**")
        await page.wait_for_function(K_SHOWN, arg=DEFAULT_K)
        await _settle(page)
        result.seconds[step] = time.perf_counter() - start
        await _check(page, result, step)
        result.seen[step] = {"metrics": await page.evaluate(METRICS), **await _k_view(page)}

        step = STEPS[2]
        slider = page.locator('[data-testid="stSlider"] input[type="range"]')
        await slider.focus()
        start = time.perf_counter()
        await slider.press(variant.key)
        await page.wait_for_function(K_SHOWN, arg=variant.k)
        await _settle(page)
        result.seconds[step] = time.perf_counter() - start
        await _check(page, result, step)
        result.seen[step] = await _k_view(page)

        step = STEPS[3]
        start = time.perf_counter()
        await page.locator('[data-testid="stSidebarNav"]').get_by_text("Upload an image").click()
        await page.get_by_text("Images (PNG, JPEG or WEBP)").wait_for()
        await _settle(page)
        result.seconds[step] = time.perf_counter() - start
        await _check(page, result, step)
        result.seen[step] = {"url": page.url.split("/", 3)[-1]}

        step = STEPS[4]
        start = time.perf_counter()
        await page.locator('input[type="file"]').set_input_files(str(variant.image))
        await page.get_by_text("Assigned to").wait_for()
        await page.get_by_text("Neurons this image activates most").wait_for()
        await page.wait_for_function(ALL_CHARTS_DRAWN)
        await _settle(page)
        result.seconds[step] = time.perf_counter() - start
        await _check(page, result, step)
        result.seen[step] = {
            "metrics": await page.evaluate(METRICS),
            "assigned": await page.get_by_text("Assigned to").inner_text(),
            "distances": await page.evaluate(TRACES),
            "top neurons": await _grid(page),
        }
    except Exception as error:  # noqa: BLE001 - the caller reports every session's failure at once
        result.problems.append(f"{step} failed: {type(error).__name__}: {error}")
        if screenshots is not None:
            screenshots.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(Exception):  # a crashed page has no screenshot; the failure is recorded
                await page.screenshot(path=str(screenshots / f"concurrency-{name}.png"), full_page=True)
    finally:
        await context.close()
    return result


async def drive_crowd(
    browser: AsyncBrowser,
    url: str,
    plan: Sequence[Variant],
    name: str = "crowd",
    screenshots: Path | None = None,
) -> list[SessionResult]:
    """All sessions of ``plan`` at once (one browser context each; `drive_session` for the arguments)."""
    sessions = (drive_session(browser, url, v, f"{name}-{i}", screenshots) for i, v in enumerate(plan))
    return list(await asyncio.gather(*sessions))


def differences(result: SessionResult, reference: SessionResult) -> list[str]:
    """What ``result`` saw otherwise than ``reference``: per step and item, both values."""
    found = []
    for step in STEPS:
        seen, expected = result.seen.get(step) or {}, reference.seen.get(step) or {}
        for item in sorted(set(seen) | set(expected)):
            if seen.get(item) != expected.get(item):
                found.append(f"{step} / {item}: {seen.get(item)!r} instead of {expected.get(item)!r}")
    return found


def server_errors(log: Path) -> list[str]:
    """Lines of a server log that report an exception."""
    text = log.read_text() if log.exists() else ""
    return [line for line in text.splitlines() if "Traceback" in line or "Uncaught app exception" in line]
