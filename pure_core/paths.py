"""Where the explorer keeps files it makes for itself (trained demo nets, numba's compiled code)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """``$PURE_CACHE_DIR`` or ``~/.cache/pure-explorer`` (read from the environment on every call)."""
    return Path(os.environ.get("PURE_CACHE_DIR") or Path.home() / ".cache" / "pure-explorer")
