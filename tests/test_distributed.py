"""`torchrun --nproc-per-node 2 -m precompute` (gloo on CPU) writes the store a single process writes, value
for value; a rank killed mid-stage resumes with the same command; a sharded scan refuses another world
size; two "nodes" meeting through torchrun's c10d rendezvous (as under `srun torchrun` on Slurm) write the
same store."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import diskcache
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# 300 world images in 2 scan chunks, 4 neurons in 4 chunks: both ranks get work in every stage.
ARGS = ["--preset", "tiny", "--neurons", "0-3", "--n-ref", "8", "--ks", "2,3", "--no-progress",
        "--checkpoint-every", "1", "--chunk-neurons", "1"]
# torchrun runs each rank with one OpenMP thread; the single-process reference does the same, because the
# thread count changes float reductions (and so the last bits of the embeddings).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PURE_NO_PROGRESS": "1"}
TIMING = ("created_at", "seconds", "finished_at")


def _precompute(out: Path, processes: int = 1, kill_at: str | None = None) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",  # a free port each time
                "--nproc-per-node", str(processes)]
    python = launcher if processes > 1 else [sys.executable]
    command = [*python, "-m", "precompute", *ARGS, "--out", str(out)]
    env = {**ENV, **({"PURE_PRECOMPUTE_KILL_AT": kill_at} if kill_at else {})}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _values(directory: Path) -> dict:
    """Every key of a store and its value, timings left out."""
    keys = [k for (k,) in sqlite3.connect(directory / "cache.db").execute("SELECT key FROM Cache")]
    cache = diskcache.Cache(str(directory))
    values = {key: cache.get(key) for key in keys}
    cache.close()
    for key in ("meta", *(k for k in values if k.startswith("stage:"))):
        values[key] = {k: v for k, v in values[key].items() if k not in TIMING}
    return values


def _assert_equal(a, b, path: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for key in a:
            _assert_equal(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, path


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    result = _precompute(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_two_processes_write_the_store_of_one_value_for_value(single, tmp_path):
    out = tmp_path / "two"
    result = _precompute(out, processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("precompute: wrote") == 1  # rank 0 speaks for the job
    _assert_equal(_values(single), _values(out))


def test_a_killed_rank_resumes_and_a_sharded_scan_keeps_its_number_of_processes(single, tmp_path):
    out = tmp_path / "killed"
    killed = _precompute(out, processes=2, kill_at="references:1")  # rank 1, in the middle of the scan
    assert killed.returncode != 0
    other_world = _precompute(out)
    assert other_world.returncode == 2 and "started with 2 process(es)" in other_world.stderr
    killed = _precompute(out, processes=2, kill_at="crops:3")  # rank 1 again, in a per-neuron stage
    assert killed.returncode != 0
    resumed = _precompute(out, processes=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_equal(_values(single), _values(out))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_nodes_through_the_c10d_rendezvous_write_the_store_of_one(single, tmp_path):
    """Two torchrun launchers, one per "node" (here both on this machine, sharing its disk as nodes share a
    filesystem), find each other through the rendezvous endpoint as `srun torchrun --nnodes 2` would."""
    out, endpoint = tmp_path / "nodes", f"127.0.0.1:{_free_port()}"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "pure-test"]
    command = [*launcher, "-m", "precompute", *ARGS, "--out", str(out)]
    nodes = [subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [node.communicate(timeout=600) for node in nodes]
    for node, (_, stderr) in zip(nodes, results, strict=True):
        assert node.returncode == 0, stderr[-3000:]
    assert sum(stdout.count("precompute: wrote") for stdout, _ in results) == 1  # one rank 0 in the world
    _assert_equal(_values(single), _values(out))
