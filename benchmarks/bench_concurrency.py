"""Latency of the dashboard with many sessions at once, against one session alone.

    python benchmarks/bench_concurrency.py                    # the store under ./runs ($PURE_RUNS_DIR)
    python benchmarks/bench_concurrency.py --runs DIR --sessions 20 --rounds 3 --json timings.json
    python benchmarks/bench_concurrency.py --store large --sessions 20 --rounds 1   # 2048 x 100 references

Each session is the scenario of tests/test_concurrency.py (pure_explorer.sessions.drive_session): a
browser context of its own (one Streamlit session) opens the overview, clicks a ranking row (neuron page),
moves k on the slider, follows the sidebar link to the upload page and uploads the neuron's top reference
image; sessions alternate between `--variants` such scenarios (different neurons, k and images). Per step,
the latency is the driver's wall time from the action (goto, click, key, file) to the settled page: script
run over, nothing stale, no loading skeleton, every chart drawn (Playwright round trips included).

Two phases, each on a freshly started `streamlit run` (so round 1 meets cold caches, later rounds warm
ones), with one chromium for all sessions:
- "1 session": one session at a time, each variant once per round;
- "N sessions": `--sessions` sessions started together, per round.
Every session's results are compared with the first single session of its variant; errors on the pages,
in the browser or in the server logs are counted. Chromium runs on the same machine as the server, so on
few cores the latencies include the browsers' own rendering load: the CPU seconds the server and chromium
spent per round (Linux /proc) say which side the time went to. The server's own latency is measured inside
it: each server runs with `SCRIPT_TIMER` (a sitecustomize module) that logs the wall time of every script
run, from Streamlit's SCRIPT_STARTED to its end, per session, whole-page runs and fragment runs (a k change)
apart; their percentiles are reported per phase.

`--store large` is the real-size store of `pure_explorer.large_store` (/tmp/pure-large/large, written when
missing: ~4 GB, about a minute). Its model (ResNet-50, ImageNet weights) has no weights on an offline
machine, so the servers get a stand-in: the same architecture with random weights, saved where torch.hub
looks for the real file, in a temporary $TORCH_HOME. The upload step then costs what it costs with the
real model; its assignments mean nothing, and are the same in every session. With random circuits an
upload often sits on the boundary of two virtual neurons, where the page rightly assigns none, but the
scenario expects an assignment: so on this store only the scenarios that move k down to 1 are used
(ranking rows 1, 3, ...; one virtual neuron, so every upload is assigned).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pure_explorer.large_store import write_large_store
from pure_explorer.live_app import async_chromium, serve
from pure_explorer.sessions import (
    STEPS,
    SessionResult,
    Variant,
    differences,
    drive_crowd,
    drive_session,
    server_errors,
    variants,
)

ROOT = Path(__file__).resolve().parents[1]
LARGE_STORE = Path("/tmp/pure-large/large")
RUN_LOG_ENV = "PURE_BENCH_RUN_LOG"
# sitecustomize for the servers: one line per script run to $PURE_BENCH_RUN_LOG, "<session> <full|fragment>
# <how it ended> <seconds>", timed in the script thread from SCRIPT_STARTED to the run's end.
SCRIPT_TIMER = """
import os
import time

from streamlit.runtime.app_session import AppSession
from streamlit.runtime.scriptrunner import ScriptRunnerEvent

_started = {}
_handle = AppSession._on_scriptrunner_event


def _timed(self, sender, event, *args, **kwargs):
    if event == ScriptRunnerEvent.SCRIPT_STARTED:
        kind = "fragment" if kwargs.get("fragment_ids_this_run") else "full"
        _started[self.id] = (time.perf_counter(), kind)
    elif event.name.startswith(("SCRIPT_STOPPED", "FRAGMENT_STOPPED")) and self.id in _started:
        start, kind = _started.pop(self.id)
        line = f"{self.id} {kind} {event.name} {time.perf_counter() - start:.4f}\\n"
        fd = os.open(os.environ["PURE_BENCH_RUN_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    return _handle(self, sender, event, *args, **kwargs)


AppSession._on_scriptrunner_event = _timed
"""


@dataclass
class Round:
    """One round of a phase: its sessions' results, wall time and the CPU seconds of server and chromium."""

    results: list[SessionResult]
    wall_s: float
    server_cpu_s: float
    chromium_cpu_s: float


def cpu_seconds(matches: Callable[[list[str]], bool]) -> float:
    """CPU seconds (user + system, reaped children included) of this process's descendants whose command
    line ``matches``; from Linux /proc (0 elsewhere)."""
    parents, seconds, commands = {}, {}, {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_text().split("\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        seconds[int(entry.name)] = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    mine, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        mine.add(pid)
        todo += [child for child, parent in parents.items() if parent == pid and child not in mine]
    return sum(seconds[pid] for pid in mine if pid in commands and matches(commands[pid]))


def is_chromium(args: list[str]) -> bool:
    return "chromium" in args[0]


def is_server(url: str) -> Callable[[list[str]], bool]:
    """Matches the command line of the `streamlit run` serving ``url`` (by its port)."""
    port = url.rsplit(":", 1)[1]
    return lambda args: "streamlit" in args and port in args


async def bench(
    single_url: str, crowd_url: str, found: list[Variant], sessions: int, rounds: int
) -> dict[str, list[Round]]:
    """Both phases, ``rounds`` rounds each: "single" on ``single_url``, "crowd" on ``crowd_url``."""
    plan = [found[i % len(found)] for i in range(sessions)]
    phases: dict[str, list[Round]] = {"single": [], "crowd": []}
    async with async_chromium() as browser:
        for name, url in (("single", single_url), ("crowd", crowd_url)):
            for r in range(rounds):
                wall, server, chromium = (
                    time.perf_counter(),
                    cpu_seconds(is_server(url)),
                    cpu_seconds(is_chromium),
                )
                if name == "single":
                    results = [
                        await drive_session(browser, url, v, f"bench-{r}-{i}") for i, v in enumerate(found)
                    ]
                else:
                    results = await drive_crowd(browser, url, plan, f"bench-crowd-{r}")
                phases[name].append(
                    Round(
                        results,
                        time.perf_counter() - wall,
                        cpu_seconds(is_server(url)) - server,
                        cpu_seconds(is_chromium) - chromium,
                    )
                )
    return phases


def timed_env(directory: Path, run_log: Path) -> dict[str, str]:
    """Environment for a server whose script runs `SCRIPT_TIMER` logs to ``run_log`` (its sitecustomize
    module written to ``directory``, first on PYTHONPATH)."""
    (directory / "sitecustomize.py").write_text(SCRIPT_TIMER)
    path = os.pathsep.join([str(directory), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {"PYTHONPATH": path, RUN_LOG_ENV: str(run_log)}


def script_runs(run_log: Path) -> dict[str, list[float]]:
    """Seconds of the completed script runs in a `SCRIPT_TIMER` log, by kind ("full", "fragment"); runs
    stopped for a rerun are left out (their time is cut short by the next run)."""
    runs: dict[str, list[float]] = {"full": [], "fragment": []}
    for line in run_log.read_text().splitlines() if run_log.exists() else []:
        _, kind, ended, seconds = line.split()
        if ended != "SCRIPT_STOPPED_FOR_RERUN":
            runs[kind].append(float(seconds))
    return runs


def stand_in_weights(run_dir: Path, torch_home: Path) -> dict[str, str]:
    """Environment that lets a server load the model of the `pure_explorer.large_store` fixture at
    ``run_dir`` offline: its torchvision architecture with random weights, saved under ``torch_home`` where
    torch.hub looks for the real weights' file."""
    import torch
    import torchvision

    from store import RunStore
    from store.schema import RunMeta

    with RunStore.open(run_dir) as store:
        model = store.read(RunMeta).model
    url = torchvision.models.get_model_weights(model.name)[model.weights].url
    target = torch_home / "hub" / "checkpoints" / Path(url).name
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.get_model(model.name, weights=None).state_dict(), target)
    return {"TORCH_HOME": str(torch_home)}


def percentiles(values: list[float]) -> str:
    """p50, p90, p99 (linear interpolation) and max in ms, and the sample count."""
    if not values:
        return f"{'–':>8}{'–':>8}{'–':>8}{'–':>8}{0:>5}"
    p50, p90, p99 = np.percentile(np.asarray(values) * 1000, [50, 90, 99])
    return f"{p50:8.0f}{p90:8.0f}{p99:8.0f}{max(values) * 1000:8.0f}{len(values):>5}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=os.environ.get("PURE_RUNS_DIR") or str(ROOT / "runs"))
    parser.add_argument(
        "--store", choices=["runs", "large"], default="runs", help=f"large: {LARGE_STORE} instead of --runs"
    )
    parser.add_argument("--sessions", type=int, default=10, help="concurrent sessions per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per phase (round 1: cold caches)")
    parser.add_argument("--variants", type=int, default=2, help="scenarios (ranking rows) to alternate")
    parser.add_argument("--json", help="write the raw timings here")
    args = parser.parse_args(argv)

    root, env = Path(args.runs), {}
    scratch = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    if args.store == "large":
        if not (LARGE_STORE / "cache.db").is_file():
            write_large_store(LARGE_STORE)
        root, env = LARGE_STORE.parent, stand_in_weights(LARGE_STORE, scratch / "torch")
    found = variants(root, scratch, args.variants * (2 if args.store == "large" else 1))
    if args.store == "large":  # one virtual neuron: an upload is always assigned (see the module docstring)
        found = [v for v in found if v.k == 1]
    print(
        f"run {found[0].run} under {root}; {args.sessions} concurrent sessions, {args.rounds} rounds, "
        f"neurons {[v.neuron for v in found]}; {os.cpu_count()} cores (server and chromium share them); "
        f"load average {os.getloadavg()}"
    )
    logs = [scratch / f"server-{name}.log" for name in ("1", "N")]
    run_logs = [scratch / f"script-runs-{name}.log" for name in ("1", "N")]
    envs = [{**env, **timed_env(scratch, run_log)} for run_log in run_logs]
    with (
        serve(root, log=logs[0], env=envs[0]) as single_url,
        serve(root, log=logs[1], env=envs[1]) as crowd_url,
    ):
        phases = asyncio.run(bench(single_url, crowd_url, found, args.sessions, args.rounds))
    print(f"load average after: {os.getloadavg()}")
    shutil.rmtree(scratch / "torch", ignore_errors=True)  # the stand-in weights (about 100 MB)

    reference = {r.variant: r for r in phases["single"][0].results}
    everyone = [r for phase in phases.values() for one in phase for r in one.results]
    problems = [p for r in everyone for p in r.problems]
    mismatches = [r for r in everyone if differences(r, reference[r.variant])]
    log_errors = [line for log in logs for line in server_errors(log)]
    print(
        f"{len(everyone)} sessions: {len(problems)} errors, {len(mismatches)} results unlike one session "
        f"alone, {len(log_errors)} server log errors"
    )
    for line in (problems + log_errors)[:10]:
        print(f"  {line[:300]}")

    label = {"single": "1 session", "crowd": f"{args.sessions} sessions"}
    print(
        f"\n{'step':<13}{'sessions':<13}{'caches':<8}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'n':>5}  (ms)"
    )
    for step in STEPS:
        for name, phase in phases.items():
            for caches, chosen in (("cold", phase[:1]), ("warm", phase[1:])):
                values = [r.seconds[step] for one in chosen for r in one.results if step in r.seconds]
                print(f"{step:<13}{label[name]:<13}{caches:<8}{percentiles(values)}")
    columns = f"{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'n':>5}  (ms)"
    print(f"\n{'server':<13}{'script runs (timed in it)':<26}{columns}")
    for name, run_log in zip(phases, run_logs, strict=True):
        for kind, values in script_runs(run_log).items():
            print(f"{label[name]:<13}{kind + ' runs':<26}{percentiles(values)}")
    print(f"\n{'round':<26}{'wall s':>8}{'server CPU s':>14}{'chromium CPU s':>16}{'sessions':>10}")
    for name, phase in phases.items():
        for r, one in enumerate(phase):
            print(
                f"{label[name] + (', cold' if r == 0 else ', warm'):<26}{one.wall_s:8.1f}"
                f"{one.server_cpu_s:14.1f}{one.chromium_cpu_s:16.1f}{len(one.results):>10}"
            )
    if args.json:
        raw = {
            name: [
                {
                    "wall_s": one.wall_s,
                    "server_cpu_s": one.server_cpu_s,
                    "chromium_cpu_s": one.chromium_cpu_s,
                    "sessions": [{"neuron": r.variant.neuron, "seconds": r.seconds} for r in one.results],
                }
                for one in phase
            ]
            for name, phase in phases.items()
        }
        runs = {name: script_runs(run_log) for name, run_log in zip(phases, run_logs, strict=True)}
        report = {"sessions": args.sessions, "phases": raw, "server_script_runs_s": runs}
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
