"""The project's tools around the PURE library: the `pure-explorer` command (`cli`); a live dashboard driven
in Debian's chromium, for browser tests and benchmarks (`live_app`, and a user's session on it: `sessions`);
and a network guard for tests of offline behaviour (`testing`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["app_script"]


def app_script() -> Path:
    """The installed dashboard's entry for `streamlit run`: ``app/server.py`` (the pages of ``app/main.py``
    behind the middleware that closes /_stcore/metrics), located without importing the app (wherever the
    project is installed: a checkout, site-packages, the image)."""
    spec = importlib.util.find_spec("app")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the dashboard's package 'app' is not installed (see requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "server.py"
