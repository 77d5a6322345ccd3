"""Collaborators' annotations of neurons and virtual neurons, in a real database (SQLite by default,
PostgreSQL when hosted) through SQLAlchemy, with Alembic migrations; never in the read-only run stores.

An annotation is keyed by `AnnotationKey` (run id, neuron, k, virtual neuron: the virtual neurons numbered by
size as precompute and the app number them, so a label stays with its cluster across reruns of the same
run), holds a short label, a note and a `Verdict`, and remembers its author, its timestamps and every earlier
version. `AnnotationStore.save` takes the version the editor started from and raises `EditConflict` with the
other collaborator's annotation when someone saved in between: nobody's edit is lost.
"""

from annotations_db.records import (
    MAX_AUTHOR_CHARS,
    MAX_LABEL_CHARS,
    MAX_NOTE_CHARS,
    Annotation,
    AnnotationKey,
    Edit,
    Verdict,
)
from annotations_db.store import (
    AnnotationError,
    AnnotationStore,
    DatabaseUnavailable,
    EditConflict,
    default_url,
)

__all__ = [
    "MAX_AUTHOR_CHARS",
    "MAX_LABEL_CHARS",
    "MAX_NOTE_CHARS",
    "Annotation",
    "AnnotationError",
    "AnnotationKey",
    "AnnotationStore",
    "DatabaseUnavailable",
    "Edit",
    "EditConflict",
    "Verdict",
    "default_url",
]
