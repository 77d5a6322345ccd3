"""2-D projections of a neuron's reference vectors (UMAP, as in the authors' plots), with numba's cache on.

umap-learn compiles its numba functions in every new process (~10 s here) because they are not cached on
disk; `import_umap` turns numba's on-disk cache on for them (in ``$NUMBA_CACHE_DIR``, default
``<cache_dir()>/numba``), which brings a later process's first fit to ~0.1 s. This is the one place that
sets numba up.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from pure_core.paths import cache_dir

__all__ = ["import_umap", "umap_2d"]

_umap_module = None


def import_umap():
    """umap-learn with numba's on-disk cache on for its functions (saves ~10 s of compiling per process).

    numba reads ``NUMBA_CACHE_DIR`` when first imported; it defaults to ``<PURE_CACHE_DIR>/numba``.
    """
    global _umap_module
    if _umap_module is not None:
        return _umap_module
    os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir() / "numba"))
    try:
        Path(os.environ["NUMBA_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
    except OSError:
        os.environ["NUMBA_CACHE_DIR"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / "pure-numba-cache")
    import numba

    original = numba.njit, numba.jit

    def cached(decorator):
        def wrapper(*args, **kwargs):
            kwargs.setdefault("cache", True)
            return decorator(*args, **kwargs)

        return wrapper

    numba.njit, numba.jit = cached(original[0]), cached(original[1])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap
    finally:
        numba.njit, numba.jit = original
    _umap_module = umap
    return umap


def umap_2d(vectors: np.ndarray, n_neighbors: int = 6, min_dist: float = 0.3,
            random_state: int = 0) -> np.ndarray:
    """2-D UMAP ``(n, 2)`` float32 of ``vectors (n, d)``; tiny sets (n < 4) get PCA-like fallbacks."""
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if n < 4 or np.allclose(x, x[0]):
        out = np.zeros((n, 2), np.float32)
        if n >= 2 and not np.allclose(x, x[0]):
            centred = x - x.mean(0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            proj = centred @ vt[:2].T
            out[:, : proj.shape[1]] = proj
        return out
    umap = import_umap()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist, random_state=random_state,
                            n_components=2, init="spectral" if n > n_neighbors + 1 else "random")
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)
