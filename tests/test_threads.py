"""pure_core.threads: one thread per pool inside the block, the pools restored after it, the process's
libraries looked up once, and again after imports that may have brought new ones."""

from __future__ import annotations

import sys
import types

import numpy as np
import threadpoolctl
from sklearn.cluster import KMeans

from pure_core import threads


def _threads_by_library() -> dict[str, int]:
    """Each loaded BLAS/OpenMP library's current thread count, from a fresh scan (threadpoolctl's own)."""
    return {info["filepath"]: info["num_threads"] for info in threadpoolctl.threadpool_info()}


def test_every_pool_runs_one_thread_inside_the_block_and_its_own_count_after():
    KMeans(2, n_init=1).fit(np.arange(8.0).reshape(4, 2))  # scikit-learn's OpenMP loaded, as in any real fit
    before = _threads_by_library()
    assert before
    with threads.one_thread():
        assert set(_threads_by_library().values()) == {1}
    assert _threads_by_library() == before


def _import_a_module(monkeypatch, name: str) -> None:
    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))


def test_the_libraries_are_looked_up_once_and_again_after_new_imports(monkeypatch):
    built = []

    class Counting(threadpoolctl.ThreadpoolController):
        def __init__(self) -> None:
            built.append(self)
            super().__init__()

    monkeypatch.setattr(threads, "ThreadpoolController", Counting)
    _import_a_module(monkeypatch, "pure_test_first_import")  # whatever was looked up before is stale now
    for _ in range(3):
        with threads.one_thread():
            pass
    assert len(built) == 1
    _import_a_module(monkeypatch, "pure_test_second_import")  # it may have brought a pool of its own
    with threads.one_thread():
        pass
    assert len(built) == 2
