"""`AnnotationStore`: read, save (optimistically locked), search, export and import annotations.

Opening a store migrates its database to the newest schema (Alembic, `annotations_db/migrations`). Every
save is one transaction that writes the new version and appends it to the history. A database that is down
or read-only raises `DatabaseUnavailable` with one line to show; pages that only read can go on without
annotations.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from annotations_db.records import (
    MAX_AUTHOR_CHARS,
    MAX_LABEL_CHARS,
    MAX_NOTE_CHARS,
    Annotation,
    AnnotationKey,
    Edit,
    Verdict,
    clean_text,
)
from annotations_db.tables import AnnotationRow, EditRow

__all__ = ["EXPORT_FIELDS", "AnnotationError", "AnnotationStore", "DatabaseUnavailable", "EditConflict",
           "default_url", "migrate"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_FILE = "annotations.sqlite"
CONNECT_TIMEOUT_S = 3
EXPORT_FIELDS = ("run_id", "neuron", "k", "virtual_neuron", "label", "note", "verdict", "author",
                 "created_at", "updated_at", "version")


class AnnotationError(RuntimeError):
    """Base of the annotation store's errors; the message is one line for the user."""


class DatabaseUnavailable(AnnotationError):
    """The database cannot be reached or written (down, read-only, locked for too long)."""


class EditConflict(AnnotationError):
    """Someone saved the annotation after the editor opened it: ``theirs`` is their version (None when they
    deleted nothing but the caller expected an annotation that does not exist)."""

    def __init__(self, theirs: Annotation | None) -> None:
        who = "someone" if theirs is None else f"{theirs.author} (version {theirs.version})"
        super().__init__(f"changed meanwhile by {who}; here is theirs, yours is not saved")
        self.theirs = theirs


def default_url(runs_dir: str | Path) -> str:
    """The embedded SQLite database next to the runs directory (not inside it: the run stores are read-only
    to the app): ``sqlite:///<runs_dir>/../annotations.sqlite``."""
    return f"sqlite:///{Path(runs_dir).resolve().parent / DEFAULT_FILE}"


def migrate(engine: Engine) -> None:
    """Bring the database of ``engine`` to the newest schema (Alembic ``upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Several app processes and sessions share one SQLite file: WAL lets readers go on during a write,
    and a writer waits up to 5 s for another instead of failing at once."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 5000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes for what was stored in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _key(row: AnnotationRow) -> AnnotationKey:
    return AnnotationKey(row.run_id, row.neuron, row.k, row.virtual_neuron)


def _annotation(row: AnnotationRow) -> Annotation:
    return Annotation(_key(row), row.label, row.note, Verdict(row.verdict), row.author,
                      _aware(row.created_at), _aware(row.updated_at), row.version)


class AnnotationStore:
    """The annotations in the database at ``url`` (any SQLAlchemy URL: ``sqlite:///path``,
    ``postgresql+psycopg://user:password@host/db``); migrated to the newest schema when opened."""

    def __init__(self, url: str, *, migrate_schema: bool = True) -> None:
        parsed = make_url(url)
        self.url = url
        self.backend = parsed.get_backend_name()
        if self.backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
            folder = Path(parsed.database.removeprefix("file:").split("?")[0]).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DatabaseUnavailable(f"the annotation database cannot open now (cannot create {folder}: "
                                          f"{error.strerror})") from error
        # a server that does not answer fails within seconds, not after the system's TCP timeout
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if self.backend == "postgresql" else {}
        self.engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        if self.backend == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate_schema:
            with self._errors("open"):
                migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> AnnotationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AnnotationStore({make_url(self.url).render_as_string(hide_password=True)!r})"

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except IntegrityError:
            raise
        except DBAPIError as error:
            reason = str(getattr(error, "orig", error)).splitlines()[0][:200]
            raise DatabaseUnavailable(f"the annotation database cannot {action} now ({reason})") from error

    @contextmanager
    def _session(self, action: str) -> Iterator[Session]:
        with self._errors(action), self._sessions() as session:
            yield session

    # -- reading -----------------------------------------------------------------------------------------
    def get(self, key: AnnotationKey) -> Annotation | None:
        """The current annotation of ``key``, None when nobody annotated it."""
        with self._session("be read") as session:
            row = session.scalars(self._where(select(AnnotationRow), key)).one_or_none()
            return None if row is None else _annotation(row)

    def for_run(self, run_id: str, neuron: int | None = None) -> list[Annotation]:
        """Every annotation of a run (or of one of its neurons), by neuron, k and virtual neuron."""
        query = select(AnnotationRow).where(AnnotationRow.run_id == run_id)
        if neuron is not None:
            query = query.where(AnnotationRow.neuron == int(neuron))
        query = query.order_by(AnnotationRow.neuron, AnnotationRow.k, AnnotationRow.virtual_neuron)
        with self._session("be read") as session:
            return [_annotation(row) for row in session.scalars(query)]

    def history(self, key: AnnotationKey) -> list[Edit]:
        """Every saved version of ``key``'s annotation, oldest first (empty when never annotated)."""
        query = (select(EditRow, AnnotationRow).join(AnnotationRow, EditRow.annotation_id == AnnotationRow.id)
                 .order_by(EditRow.version))
        with self._session("be read") as session:
            return [Edit(key, edit.version, edit.label, edit.note, Verdict(edit.verdict), edit.author,
                         _aware(edit.edited_at))
                    for edit, _ in session.execute(self._where(query, key))]

    def recent(self, limit: int = 50, run_id: str | None = None) -> list[Edit]:
        """The latest saves, newest first (of one run, or of all)."""
        query = select(EditRow, AnnotationRow).join(AnnotationRow, EditRow.annotation_id == AnnotationRow.id)
        if run_id is not None:
            query = query.where(AnnotationRow.run_id == run_id)
        query = query.order_by(EditRow.edited_at.desc(), EditRow.id.desc()).limit(int(limit))
        with self._session("be read") as session:
            return [Edit(_key(row), edit.version, edit.label, edit.note, Verdict(edit.verdict), edit.author,
                         _aware(edit.edited_at)) for edit, row in session.execute(query)]

    def search(self, run_id: str, text: str, limit: int = 50) -> list[Annotation]:
        """The run's annotations whose label or note contains ``text`` (ignoring case), labels first."""
        text = text.strip()
        if not text:
            return []
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = (select(AnnotationRow).where(AnnotationRow.run_id == run_id)
                 .where(or_(AnnotationRow.label.ilike(pattern, escape="\\"),
                            AnnotationRow.note.ilike(pattern, escape="\\")))
                 .order_by(AnnotationRow.neuron, AnnotationRow.k, AnnotationRow.virtual_neuron))
        with self._session("be read") as session:
            found = [_annotation(row) for row in session.scalars(query)]
        folded = text.casefold()
        return sorted(found, key=lambda a: folded not in a.label.casefold())[:limit]

    @staticmethod
    def _where(query: Any, key: AnnotationKey) -> Any:
        return query.where(AnnotationRow.run_id == key.run_id, AnnotationRow.neuron == key.neuron,
                           AnnotationRow.k == key.k, AnnotationRow.virtual_neuron == key.virtual_neuron)

    # -- writing -----------------------------------------------------------------------------------------
    def save(self, key: AnnotationKey, *, label: str = "", note: str = "",
             verdict: Verdict | str = Verdict.UNREVIEWED, author: str,
             expected_version: int | None) -> Annotation:
        """Save a new version of ``key``'s annotation. ``expected_version``: the version the editor started
        from (None: there was none). When the stored version differs, nothing is written and `EditConflict`
        carries the stored one. Text is bounded (`MAX_LABEL_CHARS`, `MAX_NOTE_CHARS`; `ValueError` beyond)
        and stripped of control characters; it is stored as typed and must be escaped where shown."""
        label = clean_text(label, MAX_LABEL_CHARS, "the label", single_line=True)
        note = clean_text(note, MAX_NOTE_CHARS, "the note")
        author = clean_text(author, MAX_AUTHOR_CHARS, "the author", single_line=True) or "unknown"
        verdict = Verdict(verdict)
        now = _now()
        saved: Annotation | None = None
        try:
            with self._session("save") as session, session.begin():
                row = session.scalars(self._where(select(AnnotationRow), key)).one_or_none()
                if row is None and expected_version is None:
                    row = AnnotationRow(run_id=key.run_id, neuron=key.neuron, k=key.k,
                                        virtual_neuron=key.virtual_neuron, label=label, note=note,
                                        verdict=verdict.value, author=author, created_at=now, updated_at=now,
                                        version=1)
                    session.add(row)
                    session.flush()  # a concurrent first save of the same key fails here (unique key)
                elif row is not None and expected_version is not None:
                    # the version check and the write are one statement: of two saves from version v, one wins
                    changed = session.execute(
                        update(AnnotationRow)
                        .where(AnnotationRow.id == row.id, AnnotationRow.version == expected_version)
                        .values(label=label, note=note, verdict=verdict.value, author=author, updated_at=now,
                                version=AnnotationRow.version + 1)
                        .execution_options(synchronize_session=False)
                    ).rowcount
                    row = session.get(AnnotationRow, row.id, populate_existing=True) if changed == 1 else None
                else:
                    row = None
                if row is not None:
                    session.add(EditRow(annotation_id=row.id, version=row.version, label=label, note=note,
                                        verdict=verdict.value, author=author, edited_at=now))
                    saved = _annotation(row)
        except IntegrityError:
            saved = None
        if saved is None:
            raise EditConflict(self.get(key))
        return saved

    # -- export and import --------------------------------------------------------------------------------
    def export_records(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """The current annotations (of one run, or all) as plain dicts with `EXPORT_FIELDS`."""
        query = select(AnnotationRow).order_by(AnnotationRow.run_id, AnnotationRow.neuron, AnnotationRow.k,
                                               AnnotationRow.virtual_neuron)
        if run_id is not None:
            query = query.where(AnnotationRow.run_id == run_id)
        with self._session("be read") as session:
            rows = [_annotation(row) for row in session.scalars(query)]
        return [{"run_id": a.key.run_id, "neuron": a.key.neuron, "k": a.key.k,
                 "virtual_neuron": a.key.virtual_neuron, "label": a.label, "note": a.note,
                 "verdict": a.verdict.value, "author": a.author, "created_at": a.created_at.isoformat(),
                 "updated_at": a.updated_at.isoformat(), "version": a.version} for a in rows]

    def export_json(self, run_id: str | None = None) -> str:
        return json.dumps(self.export_records(run_id), indent=1, ensure_ascii=False)

    def export_csv(self, run_id: str | None = None) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        writer.writerows(self.export_records(run_id))
        return out.getvalue()

    def import_records(self, records: Iterable[dict[str, Any]], author: str) -> dict[str, int]:
        """Save each exported record as a new version where it differs from what is stored (the history
        keeps both; the record's author is kept, noted as imported by ``author``). Returns counts of
        ``created``, ``updated`` and ``unchanged``; `ValueError` names the first bad record."""
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        for number, record in enumerate(records, start=1):
            try:
                key = AnnotationKey(str(record["run_id"]), int(record["neuron"]), int(record.get("k", 0)),
                                    int(record.get("virtual_neuron", 0)))
                wanted = (clean_text(record.get("label", ""), MAX_LABEL_CHARS, "the label", single_line=True),
                          clean_text(record.get("note", ""), MAX_NOTE_CHARS, "the note"),
                          Verdict(record.get("verdict", Verdict.UNREVIEWED.value)))
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"record {number}: {error}") from None
            current = self.get(key)
            if current is not None and (current.label, current.note, current.verdict) == wanted:
                counts["unchanged"] += 1
                continue
            by = str(record.get("author") or "unknown")
            by = by if by == author else f"{by} (imported by {author})"
            self.save(key, label=wanted[0], note=wanted[1], verdict=wanted[2], author=by[:MAX_AUTHOR_CHARS],
                      expected_version=None if current is None else current.version)
            counts["created" if current is None else "updated"] += 1
        return counts

    def import_json(self, text: str, author: str) -> dict[str, int]:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"not JSON: {error.msg} at line {error.lineno}") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ValueError("expected a list of annotation objects, as the export writes")
        return self.import_records(records, author)

    def import_csv(self, text: str, author: str) -> dict[str, int]:
        reader = csv.DictReader(io.StringIO(text))
        missing = {"run_id", "neuron"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"CSV without the column(s) {sorted(missing)}; expected "
                             f"{', '.join(EXPORT_FIELDS)}")
        return self.import_records(list(reader), author)
