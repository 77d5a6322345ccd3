"""precompute survives SIGKILL in every stage: each restart resumes where the last one stopped, and the final
store equals an uninterrupted run's, array for array and byte for byte."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from store import RunStore

ROOT = Path(__file__).resolve().parents[1]
# 300 world images in batches of 16, checkpointed every 4 batches (5 scan chunks); 4 neurons x 12 references;
# 2 neurons per chunk in stages 3-5. Chunking is a runtime setting: both runs use the same one.
ARGS = ["--preset", "tiny", "--neurons", "0-3", "--n-ref", "12", "--ks", "2,3", "--batch-size", "16",
        "--checkpoint-every", "4", "--chunk-neurons", "2", "--no-progress"]
# Each restart is SIGKILLed inside the transaction of the named chunk (after its writes, before the commit):
# mid-scan (the checkpointed top-k state), mid-attributions (scratch parts), mid-scores (per-neuron chunks,
# the same mechanism as crops and embeddings).
KILL_POINTS = ["references:2", "attributions:1", "scores:1"]


@pytest.fixture(scope="module")
def demo_model():
    from synthetic.demo import load_demo_model

    return load_demo_model(progress=False)  # train once here, not in two subprocesses at the same time


def _start(out: Path, kill_at: str | None = None, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    env = {**os.environ, "PURE_NO_PROGRESS": "1"}
    env.pop("PURE_PRECOMPUTE_KILL_AT", None)
    if kill_at:
        env["PURE_PRECOMPUTE_KILL_AT"] = kill_at
    return subprocess.Popen([sys.executable, "-m", "precompute", *ARGS, *extra, "--out", str(out)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out + err


def _keys(directory: Path) -> list[str]:
    with sqlite3.connect(f"file:{directory / 'cache.db'}?mode=ro", uri=True) as conn:
        return sorted(key for (key,) in conn.execute("SELECT key FROM Cache"))


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return type(a) is type(b) and a == b


def test_killed_in_every_stage_resumes_to_the_uninterrupted_result(tmp_path, demo_model):
    reference = _start(tmp_path / "uninterrupted")  # runs beside the killed chain
    resumed = tmp_path / "resumed"
    progress = []
    for kill_at in KILL_POINTS:
        code, output = _finish(_start(resumed, kill_at))
        assert code == -9, f"expected SIGKILL at {kill_at}, got exit {code}:\n{output[-3000:]}"
        with RunStore.open(resumed) as store:
            progress.append(store.stages_done())
            if kill_at == "references:2":  # the scan resumes from its checkpoint, not from image 0
                state = store.get("references:state")
                assert state["n_seen"] == 2 * 4 * 16
                assert store.is_chunk_done("references", 1) and not store.is_chunk_done("references", 2)
                assert store.get("references") is None
            stage = kill_at.split(":")[0]
            chunk = int(kill_at.split(":")[1])
            assert not store.is_chunk_done(stage, chunk)  # the chunk in flight was rolled back, ...
            assert chunk == 0 or store.is_chunk_done(stage, chunk - 1)  # ... the ones before it were kept
    # every kill happened later than the one before: the run kept moving forward
    done_counts = [sum(p.values()) for p in progress]
    assert done_counts == [0, 1, 4]
    # other runtime settings on the last restart: the stage in flight keeps the chunking it started with
    code, output = _finish(_start(resumed, extra=("--chunk-neurons", "3", "--batch-size", "20")))
    assert code == 0, output[-3000:]
    code, output = _finish(reference)
    assert code == 0, output[-3000:]

    keys = _keys(resumed)
    assert keys == _keys(tmp_path / "uninterrupted")
    assert any(k.startswith("image:") for k in keys) and any(k.startswith("umap:") for k in keys)
    with RunStore.open(resumed) as a, RunStore.open(tmp_path / "uninterrupted") as b:
        assert a.run_id == b.run_id and a.complete and b.complete
        assert a.config == b.config
        compared = [k for k in keys if k != "meta" and not k.startswith("stage:")]  # timestamps, seconds
        assert [k for k in compared if not _same(a.get(k), b.get(k))] == []
