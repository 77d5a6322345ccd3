"""Shareable page state: where runs live, and validation of the query parameters (run, neuron, k, and the
trail of neuron pages a visitor followed down a chain of layers).

Everything here is plain Python (no Streamlit), so it is tested directly. Invalid values never raise: the
parsers return ``(None, notice)`` and the page shows the notice and falls back to a default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.safe_text import code

K_MIN, K_MAX = 1, 8
DEFAULT_K = 2
DEFAULT_RUNS_DIR = "runs"
RUNS_DIR_ENV = "PURE_RUNS_DIR"


def runs_root(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The directory holding run stores: ``--runs-dir`` after ``--`` in ``streamlit run app/main.py -- ...``,
    else ``$PURE_RUNS_DIR``, else ``./runs``."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runs-dir", dest="runs_dir")
    known, _ = parser.parse_known_args(list(argv or []))
    environ = os.environ if environ is None else environ
    chosen = known.runs_dir or environ.get(RUNS_DIR_ENV) or DEFAULT_RUNS_DIR
    return Path(chosen).expanduser()


def first_value(raw: str | Sequence[str] | None) -> str | None:
    """A query parameter's value; repeated parameters (``?k=2&k=3``) keep the last one."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    return str(raw[-1]) if len(raw) else None


def _as_int(text: str) -> int | None:
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        return None
    if not value.is_integer():
        return None
    return int(value)


def parse_neuron(raw: str | Sequence[str] | None, neurons: Sequence[int]) -> tuple[int | None, str | None]:
    """The neuron id in ``raw`` if it names one of ``neurons``; else ``(None, notice)`` (``(None, None)`` when
    absent)."""
    text = first_value(raw)
    if text is None or text == "":
        return None, None
    value = _as_int(text)
    if value is None:
        return None, f"Ignored {code(f'neuron={text[:40]}')} from the link: a neuron is a channel number."
    if value not in set(neurons):
        return (
            None,
            f"Ignored {code(f'neuron={value}')} from the link: this run does not analyse that channel.",
        )
    return value, None


def parse_k(raw: str | Sequence[str] | None, k_max: int = K_MAX) -> tuple[int | None, str | None]:
    """The number of virtual neurons in ``raw`` if it is an integer in ``1..min(k_max, 8)``."""
    text = first_value(raw)
    if text is None or text == "":
        return None, None
    upper = max(K_MIN, min(K_MAX, k_max))
    value = _as_int(text)
    if value is None or not K_MIN <= value <= upper:
        return (
            None,
            f"Ignored {code(f'k={text[:40]}')} from the link: "
            f"k must be a whole number from {K_MIN} to {upper}.",
        )
    return value, None


def parse_run(raw: str | Sequence[str] | None, run_names: Sequence[str]) -> tuple[str | None, str | None]:
    """The run directory name in ``raw`` if it is one of ``run_names``."""
    text = first_value(raw)
    if text is None or text == "":
        return None, None
    if text not in set(run_names):
        return (
            None,
            f"Ignored {code(f'run={text[:60]}')} from the link: no such run under the runs directory.",
        )
    return text, None


def parse_neuron_filter(text: str) -> set[int] | None:
    """Neuron ids typed into the search box (``"3, 12 20"`` -> {3, 12, 20}); None when it is not a list of
    ids (empty, or text such as ``"4 legs"``, which is searched for as text)."""
    parts = text.replace(",", " ").split()
    if not parts or not all(part.isdigit() for part in parts):
        return None
    return {int(part) for part in parts}


def clamp_k(k: int, n_references: int) -> int:
    """k limited to what the neuron's references allow (k-means needs at least k vectors)."""
    return max(K_MIN, min(int(k), K_MAX, max(n_references, K_MIN)))


# -- the way down a chain of layers: crumbs of the neuron pages a visitor came from --------------------------
MAX_CRUMBS = 8


@dataclass(frozen=True)
class Crumb:
    """A neuron page higher up the chain: ``run`` (directory name), ``neuron``, ``k`` and the virtual neuron
    ``vn`` (1..k) whose circuit channel was followed down."""

    run: str
    neuron: int
    k: int
    vn: int

    def encode(self) -> str:
        return f"{self.run}:{self.neuron}:{self.k}:{self.vn}"


def encode_trail(crumbs: Sequence[Crumb]) -> str:
    """The ``trail`` query value of ``crumbs`` (top first): ``run:neuron:k:vn`` joined by commas."""
    return ",".join(crumb.encode() for crumb in crumbs[-MAX_CRUMBS:])


def parse_trail(raw: str | Sequence[str] | None, run_names: Sequence[str]) -> list[Crumb]:
    """The crumbs of a ``trail`` query value (`encode_trail`) that name an existing run with a valid neuron
    id, k in 1..8 and VN in 1..k; malformed crumbs are dropped (a trail is a convenience, never an error),
    and at most `MAX_CRUMBS` are kept."""
    text = first_value(raw) or ""
    known = set(run_names)
    crumbs = []
    for part in text.split(",")[-MAX_CRUMBS:]:
        fields = part.rsplit(":", 3)
        if len(fields) != 4 or fields[0] not in known:
            continue
        numbers = [_as_int(f) if f.strip().isdigit() else None for f in fields[1:]]
        if None in numbers:
            continue
        neuron, k, vn = numbers
        if K_MIN <= k <= K_MAX and 1 <= vn <= k:
            crumbs.append(Crumb(fields[0], neuron, k, vn))
    return crumbs
