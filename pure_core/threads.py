"""One thread for the process's BLAS and OpenMP pools while a block runs, the pools looked up once.

`threadpoolctl.threadpool_limits(1)` scans the process's loaded libraries on every call: 3.7 ms with torch
loaded on our machine, more than the k-means of one neuron's 100 references it wraps, and the dashboard runs
a dozen of those for each neuron a visitor opens. Here the scan is kept, and done again only once modules
were imported since: an extension module (torch, scipy) may bring a pool of its own.
"""

from __future__ import annotations

import functools
import sys
from contextlib import AbstractContextManager

from threadpoolctl import ThreadpoolController


@functools.lru_cache(maxsize=1)
def _controller(n_modules: int) -> ThreadpoolController:
    return ThreadpoolController()


def controller() -> ThreadpoolController:
    """The process's thread pools (BLAS and OpenMP libraries), looked up again only when the number of
    imported modules changed since the last look."""
    return _controller(len(sys.modules))


def one_thread() -> AbstractContextManager:
    """A context manager under which every pool of `controller` runs one thread, as under
    ``threadpool_limits(1)``: k-means and scores give the same values whatever the machine's cores."""
    return controller().limit(limits=1)
