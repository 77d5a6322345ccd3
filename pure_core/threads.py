"""One thread for the process's BLAS and OpenMP pools while a block runs, the pools looked up once.

`threadpoolctl.threadpool_limits(1)` scans the process's loaded libraries on every call: 3.7 ms with torch
loaded on our machine, more than the k-means of one neuron's 100 references it wraps, and the dashboard runs
a dozen of those for each neuron a visitor opens. The scan here happens once per process; a library loaded
after it is not limited, which the callers (k-means, scores and UMAP, with scikit-learn and numpy loaded
first) do not need.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager

from threadpoolctl import ThreadpoolController


@functools.cache
def controller() -> ThreadpoolController:
    """The process's thread pools (BLAS and OpenMP libraries loaded when first asked for)."""
    return ThreadpoolController()


def one_thread() -> AbstractContextManager:
    """A context manager under which every pool of `controller` runs one thread, as under
    ``threadpool_limits(1)``: k-means and scores give the same values whatever the machine's cores."""
    return controller().limit(limits=1)
