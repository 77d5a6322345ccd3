"""Many sessions on one store at once: one `streamlit run app/main.py`, one chromium, `N_SESSIONS` browser
contexts (separate Streamlit sessions) driven at the same time through overview, neuron and upload, each
seeing exactly what one session alone sees, without an exception on any page or in the server log.

A session is `pure_explorer.sessions.drive_session` (overview, a ranking row, k, upload; its `Variant`s
differ in neuron, k and image). The reference is one session per variant, run one after another on a server
of its own, so both servers start with cold caches. Latencies are recorded, never asserted here:
benchmarks/bench_concurrency.py reports them with the same scenario.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.state import DEFAULT_K
from pure_explorer.live_app import async_chromium, serve
from pure_explorer.sessions import (
    STEPS,
    SessionResult,
    Variant,
    differences,
    drive_crowd,
    drive_session,
    ranking_order,
    server_errors,
    variants,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
N_SESSIONS = 10


@pytest.fixture(scope="module")
def demo_variants(demo_runs_root, tmp_path_factory) -> tuple[Path, list[Variant]]:
    """The demo store's root and its `variants`."""
    root, _ = demo_runs_root
    return root, variants(root, tmp_path_factory.mktemp("uploads"))


def test_concurrent_sessions_see_what_one_session_sees(demo_variants) -> None:
    """`N_SESSIONS` sessions at once on a fresh server: no error anywhere, and every session sees what one
    session of its variant saw alone on another fresh server (which is checked against the store first)."""
    root, found = demo_variants
    plan = [found[i % len(found)] for i in range(N_SESSIONS)]
    ARTIFACTS.mkdir(exist_ok=True)
    logs = (ARTIFACTS / "concurrency-single-server.log", ARTIFACTS / "concurrency-crowd-server.log")

    async def single_then_crowd(
        single_url: str, crowd_url: str
    ) -> tuple[list[SessionResult], list[SessionResult]]:
        async with async_chromium() as browser:
            alone = [
                await drive_session(browser, single_url, v, f"single-{i}", ARTIFACTS)
                for i, v in enumerate(found)
            ]
            return alone, await drive_crowd(browser, crowd_url, plan, screenshots=ARTIFACTS)

    with serve(root, log=logs[0]) as single_url, serve(root, log=logs[1]) as crowd_url:
        alone, crowd = asyncio.run(single_then_crowd(single_url, crowd_url))

    for result in alone:
        assert not result.problems, result.problems
        assert set(result.seen) == set(STEPS)
    order = ranking_order(root, found[0].run)
    shown = [int(row["neuron"]) for row in alone[0].seen["overview"]["ranking"]]
    assert shown == order[: len(shown)] and shown
    for variant, result in zip(found, alone, strict=True):
        assert f"neuron={variant.neuron}&k={DEFAULT_K}" in result.seen["neuron"]["url"]
        assert f"neuron={variant.neuron}&k={variant.k}" in result.seen["k change"]["url"]
        assert len(result.seen["k change"]["virtual neurons"]) == variant.k
        assert f"neuron={variant.neuron}&k={variant.k}" in result.seen["upload page"]["url"]
        assert f"of {variant.k} " in result.seen["upload"]["assigned"]

    reference = {result.variant: result for result in alone}
    failures = {
        f"session {i} (neuron {result.variant.neuron})": result.problems
        + differences(result, reference[result.variant])
        for i, result in enumerate(crowd)
    }
    assert not any(failures.values()), {name: listed for name, listed in failures.items() if listed}
    for log in logs:
        assert not server_errors(log), f"{log}:\n" + "\n".join(server_errors(log))
