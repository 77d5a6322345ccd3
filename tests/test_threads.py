"""pure_core.threads: one thread per pool inside the block, the pools restored after it, the process's
libraries looked up once."""

from __future__ import annotations

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


def test_the_libraries_are_looked_up_once_per_process(monkeypatch):
    built = []

    class Counting(threadpoolctl.ThreadpoolController):
        def __init__(self) -> None:
            built.append(self)
            super().__init__()

    monkeypatch.setattr(threads, "ThreadpoolController", Counting)
    threads.controller.cache_clear()
    try:
        for _ in range(3):
            with threads.one_thread():
                pass
    finally:
        threads.controller.cache_clear()
    assert len(built) == 1
