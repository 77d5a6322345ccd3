"""Registries of model builders and image sources, in the style of torchvision's ``register_model``.

Code that builds models or opens datasets looks them up here by name and never branches on names:

    @register_model("efficientnet-lite0")
    def build(spec, fetch_missing): ...

    @register_model("timm:", prefix=True)      # every name that starts with "timm:"
    def build_timm(spec, fetch_missing): ...

An exact name wins over a prefix, and a longer prefix over a shorter one (the empty prefix catches all).
Packages outside pure_core (the synthetic world, a lab's own models) register themselves when imported;
`load_plugins` imports those declared under the ``pure_explorer.plugins`` entry-point group (the project's
own ``synthetic`` package is declared there in pyproject.toml) and the modules named in ``$PURE_PLUGINS``
(comma-separated). Every lookup (`Registry.get`) loads the plugins first (once), so pure_core never imports
a plugin by name.
"""

from __future__ import annotations

import difflib
import importlib
import os
import threading
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Generic, TypeVar

__all__ = ["MODELS", "PLUGIN_GROUP", "SOURCES", "Registry", "load_plugins", "register_model",
           "register_source"]

T = TypeVar("T")
PLUGIN_GROUP = "pure_explorer.plugins"
PLUGINS_ENV = "PURE_PLUGINS"


class Registry(Generic[T]):
    """Named entries (exact names and name prefixes) of one kind, e.g. model builders."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._exact: dict[str, T] = {}
        self._prefixes: dict[str, T] = {}

    def register(self, name: str, *, prefix: bool = False) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (or every name starting with it)."""
        table = self._prefixes if prefix else self._exact

        def decorator(entry: T) -> T:
            if name in table and table[name] is not entry:
                raise ValueError(f"{self.what} {name!r} is registered already ({table[name]!r})")
            table[name] = entry
            return entry

        return decorator

    def find(self, name: str) -> T | None:
        """The entry for ``name``: exact match, else the longest registered prefix; None when neither."""
        if name in self._exact:
            return self._exact[name]
        matching = [p for p in self._prefixes if name.startswith(p)]
        return self._prefixes[max(matching, key=len)] if matching else None

    def get(self, name: str) -> T:
        """`find` after the plugins are loaded; `ValueError` naming close matches and what exists."""
        load_plugins()
        entry = self.find(name)
        if entry is None:
            close = difflib.get_close_matches(name, self.names(), n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown {self.what} {name!r}.{hint} Registered: {', '.join(self.names())}")
        return entry

    def names(self) -> list[str]:
        """Registered exact names, then prefixes shown as ``"<prefix>*"``."""
        return sorted(self._exact) + [f"{p}*" for p in sorted(self._prefixes) if p]

    def __contains__(self, name: str) -> bool:
        return self.find(name) is not None


MODELS: Registry = Registry("model")
SOURCES: Registry = Registry("dataset kind")
register_model = MODELS.register
register_source = SOURCES.register

_loaded: set[str] = set()
_entry_points: list[str] | None = None  # the plugin group's modules, read on first use
_load_lock = threading.RLock()


def load_plugins(modules: Sequence[str] = ()) -> list[str]:
    """Import the plugin modules (entry points of `PLUGIN_GROUP`, read once; ``$PURE_PLUGINS``; ``modules``)
    that were not imported yet; each registers its models and sources on import. Returns those loaded."""
    global _entry_points
    with _load_lock:
        if _entry_points is None:
            _entry_points = [ep.value.split(":")[0] for ep in metadata.entry_points(group=PLUGIN_GROUP)]
        names = list(_entry_points)
        names += [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
        names += list(modules)
        loaded = []
        for name in dict.fromkeys(names):
            if name not in _loaded:
                importlib.import_module(name)
                _loaded.add(name)
                loaded.append(name)
    return loaded
