"""The typed values of the annotation database: what a caller passes in and gets back (no SQLAlchemy)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = ["MAX_AUTHOR_CHARS", "MAX_LABEL_CHARS", "MAX_NOTE_CHARS", "Annotation", "AnnotationKey", "Edit",
           "Verdict", "clean_text"]

MAX_LABEL_CHARS = 80
MAX_NOTE_CHARS = 4000
MAX_AUTHOR_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Verdict(StrEnum):
    """A collaborator's judgement of a neuron or virtual neuron."""

    UNREVIEWED = "unreviewed"
    POLYSEMANTIC = "polysemantic"  # confirmed
    MONOSEMANTIC = "monosemantic"
    UNCLEAR = "unclear"


@dataclass(frozen=True)
class AnnotationKey:
    """What an annotation is about: a neuron of a run (``k = virtual_neuron = 0``) or its virtual neuron
    ``virtual_neuron`` (1-based, numbered by size: VN 1 is the largest) among ``k``."""

    run_id: str
    neuron: int
    k: int = 0
    virtual_neuron: int = 0

    def __post_init__(self) -> None:
        if not self.run_id or len(self.run_id) > 64:
            raise ValueError(f"run id must be 1-64 characters, got {self.run_id!r}")
        if self.neuron < 0:
            raise ValueError(f"neuron must be >= 0, got {self.neuron}")
        if (self.k == 0) != (self.virtual_neuron == 0) or not 0 <= self.virtual_neuron <= self.k:
            raise ValueError(f"a virtual neuron is 1..k of k >= 1 (or both 0 for the neuron itself); got "
                             f"k={self.k}, virtual_neuron={self.virtual_neuron}")

    @property
    def is_neuron(self) -> bool:
        """About the neuron as a whole, not one of its virtual neurons."""
        return self.k == 0


@dataclass(frozen=True)
class Annotation:
    """The current version of an annotation: ``version`` counts its saves (1 for the first)."""

    key: AnnotationKey
    label: str
    note: str
    verdict: Verdict
    author: str
    created_at: datetime
    updated_at: datetime
    version: int


@dataclass(frozen=True)
class Edit:
    """One saved version of an annotation (the history keeps them all, oldest first)."""

    key: AnnotationKey
    version: int
    label: str
    note: str
    verdict: Verdict
    author: str
    at: datetime


def clean_text(value: str, limit: int, what: str, single_line: bool = False) -> str:
    """``value`` without control characters (and line breaks for ``single_line``), stripped; `ValueError`
    when longer than ``limit`` characters."""
    text = _CONTROL.sub("", str(value))
    if single_line:
        text = " ".join(text.split())
    text = text.strip()
    if len(text) > limit:
        raise ValueError(f"{what} is {len(text)} characters long; at most {limit}")
    return text
