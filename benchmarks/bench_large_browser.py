"""The dashboard at the paper's size in Chromium: 2048 neurons x 100 references (issue 13's browser targets).

    python benchmarks/bench_large_browser.py                # /tmp/pure-large/large (written when missing)
    python benchmarks/bench_large_browser.py --store DIR --repeats 5 --sessions 5 --json timings.json

One `streamlit run` on the store's directory and one chromium (`pure_explorer.live_app`); every visit is a
fresh browser context, i.e. a new Streamlit session. Measured:
- overview paint (target < 2 s): navigation start -> the ranking table's canvas and Fig. A.2's dots painted
  (Vega-Lite, on a canvas from 2,000 data points on), read as `performance.now()` in the page at the first
  animation frame where both hold. A new visitor (a fresh context: the app's scripts, megabytes, not in the
  HTTP cache) and a returning one (the same context loading the page again: scripts cached, a new session);
  the very first visit also meets the server's cold caches (store opened, ranking read).
- neuron paint: navigation start -> "2 virtual neurons" heading and every chart drawn: a new visitor's first
  neuron page (the scripts of its elements that the overview has none of loaded then); then, scripts
  cached, `--repeats` neurons down the ranking, each a first visit of that neuron (its k-means run on the
  server), and the first one again (warm).
- k change (target p90 < 300 ms): keydown on the k slider -> the new k drawn, timed in the page
  (`bench_app.time_k_changes`), and -> Streamlit idle, timed by the driver.
- keep-alive response: a small answer (/_stcore/health) on one HTTP keep-alive connection, as the page's
  ~150 scripts arrive; about 40 ms each where the server leaves Nagle's algorithm on (`app.server.NoDelay`).
- server memory: resident set of the streamlit process (Linux /proc) with one session open (overview, then a
  neuron page) and with `--sessions` open, after a first session warmed the shared caches; MB per extra
  session.
Chromium and the server share this machine's cores; the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import time
from pathlib import Path

from bench_app import time_k_changes
from bench_concurrency import is_server

from pure_explorer.large_store import write_large_store
from pure_explorer.live_app import ALL_CHARTS_DRAWN, chromium, new_page, serve
from store import RunStore
from store.schema import Summary

# performance.now() (ms since navigation start) once the ranking grid is drawn and Fig. A.2 has painted its
# dots: coloured pixels on its canvas (Vega draws all marks in one pass; a run of 2,000 data points or more),
# or `n` SVG nodes (a smaller run, `n` its neurons).
OVERVIEW_PAINTED = """(n) => {
    const chart = document.querySelector('[data-testid="stVegaLiteChart"]');
    const canvas = chart && chart.querySelector('canvas.marks');
    const coloured = (c) => {
        if (!c || !c.width || !c.height) return false;
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 0; i < px.length; i += 4) {
            const [r, g, b] = [px[i], px[i + 1], px[i + 2]];
            if (Math.max(r, g, b) - Math.min(r, g, b) > 40) return true;
        }
        return false;
    };
    const dots = chart ? chart.querySelectorAll('.mark-symbol path').length : 0;
    const grid = document.querySelector('[data-testid="stDataFrame"] canvas');
    return grid && (dots >= n || coloured(canvas)) ? performance.now() : false;
}"""
# performance.now() once the neuron page shows `k` virtual neurons with every chart drawn.
NEURON_PAINTED = f"""(k) => {{
    const heading = [...document.querySelectorAll('h3')]
        .some(e => e.textContent.includes(k + ' virtual neurons'));
    return heading && ({ALL_CHARTS_DRAWN})() ? performance.now() : false;
}}"""


def painted_s(page, url: str, condition: str, arg: int) -> float:
    """Seconds from navigation start to the first animation frame where ``condition(arg)`` holds."""
    page.goto(url, wait_until="commit")
    return page.wait_for_function(condition, arg=arg, polling="raf").json_value() / 1000


def rss_mb(url: str) -> float:
    """Resident set size in MB of the `streamlit run` process serving ``url`` (Linux /proc)."""
    matches = is_server(url)
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if matches((entry / "cmdline").read_text().split("\0")):
                status = (entry / "status").read_text()
                return int(status.split("VmRSS:")[1].split()[0]) / 1024
        except (OSError, IndexError):
            continue
    raise RuntimeError(f"no streamlit process serves {url}")


def keep_alive_s(url: str, requests: int = 20) -> list[float]:
    """Seconds per request for ``requests`` small answers in a row on one keep-alive connection."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    seconds = []
    try:
        for _ in range(requests):
            start = time.perf_counter()
            connection.request("GET", "/_stcore/health")
            connection.getresponse().read()
            seconds.append(time.perf_counter() - start)
    finally:
        connection.close()
    return seconds


def ranking(directory: Path) -> list[int]:
    """The store's neurons, most polysemantic first (the overview's order)."""
    with RunStore.open(directory) as store:
        rows = sorted(store.read(Summary).rows, key=lambda r: (-r.polysemanticity, r.neuron))
    return [r.neuron for r in rows]


def open_session(browser, base: str, run: str, neuron: int, n_neurons: int):
    """A new browser context (a new Streamlit session) with the overview, then ``neuron``'s page, drawn;
    returns the open page and the two paint times in seconds."""
    page = new_page(browser, timeout_ms=180_000)
    overview = painted_s(page, f"{base}/?run={run}", OVERVIEW_PAINTED, n_neurons)
    neuron_s = painted_s(page, f"{base}/neuron?run={run}&neuron={neuron}&k=2", NEURON_PAINTED, 2)
    return page, overview, neuron_s


def bench(directory: Path, repeats: int, sessions: int, k_changes: int) -> dict:
    """All measurements on one server for the store at ``directory``."""
    order = ranking(directory)
    run = directory.name
    report: dict = {"neurons": len(order), "load_average_before": os.getloadavg()}
    log = Path("/tmp/bench-large-browser-server.log")
    with serve(directory.parent, log=log) as url, chromium() as browser:
        report["keep_alive_s"] = keep_alive_s(url)
        overview = f"{url}/?run={run}"
        fresh, cached = [], []
        for _ in range(repeats + 1):
            page = new_page(browser, timeout_ms=180_000)
            fresh.append(painted_s(page, overview, OVERVIEW_PAINTED, len(order)))
            cached.append(painted_s(page, overview, OVERVIEW_PAINTED, len(order)))
            page.context.close()
        report["overview_paint_s"] = {"cold server": fresh[0], "new visitor": fresh[1:], "returning": cached}
        picks = order[:: max(1, len(order) // repeats)][:repeats]
        page = new_page(browser, timeout_ms=180_000)
        painted_s(page, overview, OVERVIEW_PAINTED, len(order))  # the overview's scripts in the HTTP cache
        # the first neuron page of this visitor also loads the scripts of elements the overview has none of
        first_page = painted_s(page, f"{url}/neuron?run={run}&neuron={order[-1]}&k=2", NEURON_PAINTED, 2)
        first = [painted_s(page, f"{url}/neuron?run={run}&neuron={n}&k=2", NEURON_PAINTED, 2) for n in picks]
        again = painted_s(page, f"{url}/neuron?run={run}&neuron={picks[0]}&k=2", NEURON_PAINTED, 2)
        report["neuron_paint_s"] = {"neurons": picks, "first_visit": first, "again": again,
                                    "first_of_a_new_visitor": first_page}
        drawn, idle = time_k_changes(page, k_changes)
        report["k_change_s"] = {"drawn": drawn, "idle": idle}
        page.context.close()

        warm_up = open_session(browser, url, run, order[0], len(order))[0]  # the shared caches, not a session
        warm_up.context.close()
        time.sleep(2)
        pages = [open_session(browser, url, run, order[0], len(order))[0]]
        time.sleep(2)
        one = rss_mb(url)
        pages += [open_session(browser, url, run, order[0], len(order))[0] for _ in range(sessions - 1)]
        time.sleep(2)
        many = rss_mb(url)
        report["server_rss_mb"] = {
            "1 session": one,
            f"{sessions} sessions": many,
            "per extra session": (many - one) / max(1, sessions - 1),
        }
        for page in pages:
            page.context.close()
    report["load_average_after"] = os.getloadavg()
    return report


def _ms(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p50, p90 = statistics.median(ms), ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return f"p50 {p50:6.0f} ms   p90 {p90:6.0f} ms   max {ms[-1]:6.0f} ms   (n={len(ms)})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="/tmp/pure-large/large", help="store (written when missing)")
    parser.add_argument("--repeats", type=int, default=4, help="overview visits and neurons opened")
    parser.add_argument("--sessions", type=int, default=5, help="sessions open for the memory figure")
    parser.add_argument("--k-changes", type=int, default=12)
    parser.add_argument("--json", help="write the raw timings here")
    args = parser.parse_args(argv)
    directory = Path(args.store)
    if not (directory / "cache.db").is_file():
        write_large_store(directory)
    r = bench(directory, args.repeats, args.sessions, args.k_changes)
    print(f"store {directory}: {r['neurons']} neurons; {os.cpu_count()} cores shared by chromium and server")
    print(f"load average before {r['load_average_before']}, after {r['load_average_after']}")
    print(f"keep-alive response:               {_ms(r['keep_alive_s'])}")
    print(f"overview paint, cold server:       {r['overview_paint_s']['cold server'] * 1000:6.0f} ms")
    print(f"overview paint, new visitor:       {_ms(r['overview_paint_s']['new visitor'])}")
    print(f"overview paint, returning visitor: {_ms(r['overview_paint_s']['returning'])}")
    neuron = r["neuron_paint_s"]
    print(f"neuron paint, new visitor's first: {neuron['first_of_a_new_visitor'] * 1000:6.0f} ms")
    print(f"neuron paint, first visit:         {_ms(neuron['first_visit'])}")
    print(f"neuron paint, again:               {neuron['again'] * 1000:6.0f} ms")
    print(f"k change, keydown -> drawn:        {_ms(r['k_change_s']['drawn'])}")
    print(f"k change, keydown -> idle:         {_ms(r['k_change_s']['idle'])}")
    rss = r["server_rss_mb"]
    print("server RSS: " + ", ".join(f"{name} {mb:.1f} MB" for name, mb in rss.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
