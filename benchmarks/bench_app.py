"""How fast the neuron page redraws when k changes (target: < 300 ms on the demo store).

    python benchmarks/bench_app.py                  # the newest complete run under ./runs ($PURE_RUNS_DIR)
    python benchmarks/bench_app.py --runs-dir DIR --neurons 3
    python benchmarks/bench_app.py --browser             # also time it in chromium (needs /usr/bin/chromium)

Without a complete run it benchmarks the small test store (tests/conftest.py), and says so.

Two measurements:
- script: `streamlit.testing.v1.AppTest`. "open": wall time of the first run of the neuron page (k-means
  for every k, figures, grids: opening a neuron warms every k). Then the wall time of one rerun after moving
  the k slider (AppTest reruns the whole page; the live app reruns only the virtual-neuron fragment), through
  k = 3..8, 2 twice per neuron. Also the process CPU time of those reruns, which a busy machine does not
  inflate as much as wall time.
- browser: `streamlit run` + Playwright; from the keydown on the slider to the page showing the new k
  ("drawn": heading, every UMAP chart drawn with k traces, no stale element; timed inside the page, so
  websocket transfer, React and Plotly rendering in chromium are included and driver round trips are not),
  and, timed by the driver, to Streamlit idle ("idle"; the first visit of a neuron also warms every k).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from pure_explorer import app_script
from store import list_runs

ROOT = Path(__file__).resolve().parents[1]


def pages_script() -> Path:
    """The dashboard's pages (``app/main.py``) for `AppTest`: `app_script` is ``app/server.py``, which only
    wraps them in an ASGI app for `streamlit run`, so an AppTest of it runs no page at all."""
    return app_script().with_name("main.py")


def find_runs(runs_dir: str | None) -> tuple[Path, str]:
    root = Path(runs_dir or os.environ.get("PURE_RUNS_DIR") or ROOT / "runs")
    if any(info.complete for info in list_runs(root)):
        return root, f"store under {root}"
    from pure_explorer.fixtures import write_small_store

    tmp = Path(tempfile.mkdtemp(prefix="bench-app-"))
    write_small_store(tmp / "small")
    return tmp, "small test store (tests/conftest.py; no complete run found)"


def bench_script(root: Path, run_name: str, neurons: list[int], ks: list[int]) -> dict:
    from streamlit.testing.v1 import AppTest

    os.environ["PURE_RUNS_DIR"] = str(root)
    opened, cold, warm, cold_cpu, warm_cpu = [], [], [], [], []
    for neuron in neurons:
        at = AppTest.from_file(str(pages_script()), default_timeout=120)
        at.query_params = {"page": "neuron", "run": run_name, "neuron": str(neuron), "k": str(ks[0])}
        start = time.perf_counter()
        at.run()
        opened.append(time.perf_counter() - start)
        assert not at.exception, [e.value for e in at.exception]
        for timings, cpu in ((cold, cold_cpu), (warm, warm_cpu)):
            for k in ks[1:] + ks[:1]:
                start, start_cpu = time.perf_counter(), time.process_time()
                at.slider(key="k_select").set_value(k).run()
                timings.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
                assert not at.exception and at.query_params["k"] == str(k)
    return {"open_s": opened, "cold_s": cold, "warm_s": warm, "cold_cpu_s": cold_cpu, "warm_cpu_s": warm_cpu}


def bench_browser(root: Path, run_name: str, neuron: int, n_changes: int) -> dict:
    from pure_explorer.live_app import chromium, new_page, serve

    with serve(root) as url, chromium() as browser:
        page = new_page(browser)
        page.goto(f"{url}/neuron?run={run_name}&neuron={neuron}&k=2")
        drawn, idle = time_k_changes(page, n_changes)
    return {"browser_drawn_s": drawn, "browser_idle_s": idle}


def time_k_changes(page, n_changes: int, k: int = 2) -> tuple[list[float], list[float]]:
    """Seconds from the keydown on the k slider to the new k drawn (`K_REDRAW_PROBE`, timed in the page) and
    to Streamlit idle (timed by the driver), for ``n_changes`` steps up and down from ``k``, on a ``page``
    that is opening a neuron at ``k``."""
    from pure_explorer.live_app import ALL_CHARTS_DRAWN, IDLE, K_REDRAW_PROBE

    page.get_by_role("heading", name=f"{k} virtual neurons").wait_for()
    page.wait_for_function(ALL_CHARTS_DRAWN)
    page.wait_for_function(IDLE)
    slider = page.locator('[data-testid="stSlider"] input[type="range"]')
    drawn, idle = [], []
    for i in range(n_changes):
        key, k = ("ArrowRight", k + 1) if (i // 3) % 2 == 0 else ("ArrowLeft", k - 1)
        slider.focus()
        page.evaluate(K_REDRAW_PROBE, k)
        start = time.perf_counter()
        slider.press(key)
        page.wait_for_function("() => window.__kRedraw.drawn !== undefined", polling=10)
        drawn.append(page.evaluate("() => window.__kRedraw.drawn") / 1000)
        page.wait_for_timeout(30)
        page.wait_for_function(IDLE, polling=10)
        idle.append(time.perf_counter() - start)
    return drawn, idle


def _summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    return (
        f"median {statistics.median(ms):6.0f} ms   p90 {p90:6.0f} ms   max {ms[-1]:6.0f} ms   (n={len(ms)})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir")
    parser.add_argument("--neurons", type=int, default=2, help="how many top-ranked neurons to visit")
    parser.add_argument("--browser", action="store_true", help="also time k changes in chromium")
    parser.add_argument("--json", help="write the raw timings here")
    args = parser.parse_args(argv)

    root, what = find_runs(args.runs_dir)
    run = next(info for info in list_runs(root) if info.complete)
    from store import RunStore
    from store.schema import References, Summary

    with RunStore.open(run.directory) as store:
        order = [
            r.neuron for r in sorted(store.read(Summary).rows, key=lambda r: (-r.polysemanticity, r.neuron))
        ]
        n_ref = store.read(References).n_ref
    neurons = order[: args.neurons]
    print(
        f"{what}: run {run.directory.name} ({run.config.get('model', {}).get('name')} "
        f"{run.config.get('layer')}), {len(order)} neurons x {n_ref} references; neurons {neurons}"
    )
    results = {"store": what, "run": run.directory.name, "n_ref": int(n_ref), "neurons": neurons}
    results.update(bench_script(root, run.directory.name, neurons, ks=[2, 3, 4, 5, 6, 7, 8]))
    print(f"neuron page open, script (AppTest):       {_summary(results['open_s'])}")
    print(f"k change, script (AppTest), 1st pass:     {_summary(results['cold_s'])}")
    print(f"k change, script (AppTest), 2nd pass:     {_summary(results['warm_s'])}")
    print(f"  CPU time of those reruns (load-independent): 1st pass {_summary(results['cold_cpu_s'])}")
    print(f"                                               2nd pass {_summary(results['warm_cpu_s'])}")
    print(f"  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores while measuring)")
    if args.browser:
        results.update(bench_browser(root, run.directory.name, neurons[0], n_changes=12))
        print(f"k change, chromium (keydown -> drawn):    {_summary(results['browser_drawn_s'])}")
        print(f"k change, chromium (keydown -> idle):     {_summary(results['browser_idle_s'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
