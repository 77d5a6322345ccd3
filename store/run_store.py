"""Open, create and read run stores (diskcache directories) safely.

Typed access goes through the records of `store.schema`: `RunStore.write(record, index)` is the one writer
and `RunStore.read(Record, index)` the one reader of stored values. The generic `get` / `put` remain for
precompute's scratch keys (and for callers not yet switched to the records).

The writer (`RunStore.create`) refuses to mix runs: a directory that holds another run identity or schema
raises `StoreMismatchError`. The reader (`RunStore.open`) never writes, so a store can be mounted read-only
and served to many sessions at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import diskcache

from store.schema import SCHEMA_VERSION, Record, RunMeta, StageStatus, key

STAGES = ("references", "attributions", "crops", "embeddings", "scores", "clip_labels", "quantiles", "depth")
_DB_NAME = "cache.db"
R = TypeVar("R", bound=Record)


class StoreError(RuntimeError):
    """A store cannot be used as asked (missing, unreadable, wrong schema)."""


class StoreNotFoundError(StoreError):
    """No run store exists at the given directory."""


class StoreMismatchError(StoreError):
    """The directory holds a different run (config or schema) than the one asked for."""


def run_id_for(identity: dict[str, Any]) -> str:
    """Hash of everything that changes results; equal configs give equal ids."""
    canonical = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class _ReadOnlyCache:
    """Read diskcache's SQLite table directly, without any write (diskcache's own init writes settings)."""

    def __init__(self, directory: Path) -> None:
        db = directory / _DB_NAME
        immutable = "" if os.access(directory, os.W_OK) else "&immutable=1"
        self._conn = sqlite3.connect(f"file:{db}?mode=ro{immutable}", uri=True, check_same_thread=False)
        self._disk = diskcache.Disk(str(directory))

    def get(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute(
            "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1", (key,)
        ).fetchone()
        if row is None:
            return default
        mode, filename, value = row
        return self._disk.fetch(mode, filename, value, False)

    def close(self) -> None:
        self._conn.close()


@dataclass(frozen=True)
class RunInfo:
    """What the app needs to list a run without loading its data."""

    directory: Path
    meta: RunMeta
    stages_done: dict[str, bool]

    @property
    def run_id(self) -> str:
        return self.meta.run_id

    @property
    def config(self) -> dict[str, Any]:
        return self.meta.config

    @property
    def created_at(self) -> float:
        return self.meta.created_at

    @property
    def complete(self) -> bool:
        return all(self.stages_done.values())

    @property
    def label(self) -> str:
        """``<directory> — <model> <layer>``, plus `` · computing`` while stages are missing."""
        status = "" if self.complete else " · computing"
        return f"{self.directory.name} — {self.meta.model.name} {self.meta.layer}{status}"


class RunStore:
    """One run's data. Use `RunStore.create` to write (precompute) and `RunStore.open` to read (app)."""

    def __init__(self, directory: Path, backend: diskcache.Cache | _ReadOnlyCache, meta: dict[str, Any]):
        self.directory = directory
        self._backend = backend
        self.meta = meta

    # -- opening -------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, directory: str | Path, identity: dict[str, Any], config: dict[str, Any], versions: dict[str, str]
    ) -> RunStore:
        """Open `directory` for writing run `identity`, resuming it if it already holds that very run."""
        directory = Path(directory)
        run_id = run_id_for(identity)
        try:
            cache = diskcache.Cache(str(directory), eviction_policy="none", size_limit=2**62)
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot open store directory {directory}: {error}") from error
        meta = cache.get(RunMeta.KEY)
        if meta is None:
            meta = RunMeta(SCHEMA_VERSION, run_id, identity, config, versions, time.time()).to_store()
            cache.set(RunMeta.KEY, meta)
        else:
            _check_compatible(directory, meta, run_id)
        return cls(directory, cache, meta)

    @classmethod
    def open(cls, directory: str | Path) -> RunStore:
        """Open an existing store read-only; never writes to `directory`."""
        directory = Path(directory)
        if not (directory / _DB_NAME).is_file():
            raise StoreNotFoundError(f"no run store at {directory} (expected {directory / _DB_NAME})")
        try:
            backend = _ReadOnlyCache(directory)
            meta = backend.get(RunMeta.KEY)
        except sqlite3.Error as error:
            raise StoreError(f"cannot read store {directory}: {error}") from error
        if meta is None:
            raise StoreNotFoundError(f"{directory} is a cache directory but holds no run (no 'meta' entry)")
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise StoreMismatchError(
                f"store {directory} has schema {meta.get('schema_version')}, this version reads "
                f"{SCHEMA_VERSION}; recompute it with `python -m precompute`"
            )
        return cls(directory, backend, meta)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- identity ------------------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.meta["run_id"]

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]

    @property
    def writable(self) -> bool:
        return isinstance(self._backend, diskcache.Cache)

    def info(self) -> RunInfo:
        return RunInfo(self.directory, RunMeta.from_store(self.meta), self.stages_done())

    # -- typed access (store.schema) -----------------------------------------------------------------
    def write(self, record: Record, index: int | str | None = None) -> None:
        """Store ``record`` under its key (``index``: the neuron, dataset index or stage it belongs to)."""
        self.put(key(type(record), index), record.to_store())

    def read(self, record_type: type[R], index: int | str | None = None) -> R | None:
        """The stored ``record_type`` (of neuron / dataset index / stage ``index``), None when absent."""
        value = self.get(key(record_type, index))
        return None if value is None else record_type.from_store(value)

    # -- generic access ------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        return self._backend.get(key, default)

    def put(self, key: str, value: Any) -> None:
        self._writer().set(key, value)

    def delete(self, key: str) -> None:
        """Remove `key` if present (precompute drops its scratch entries when a stage is done)."""
        self._writer().delete(key)

    def finalize(self) -> bool:
        """Switch SQLite from WAL to a rollback journal (DELETE), so the finished store is one self-contained
        ``cache.db`` that readers can open from a read-only mount. Reopening for writing keeps the mode.

        False when another process keeps the store open past SQLite's busy timeout (a dashboard that read it
        while it was computed): the store stays in WAL mode, complete and readable where it is, and the same
        command run again once the reader is gone makes it one file."""
        try:
            self._writer().reset("sqlite_journal_mode", "delete")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            return False
        return True

    def transaction(self) -> AbstractContextManager[Any]:
        """Group writes so that a kill leaves either all of them or none."""
        return self._writer().transact() if self.writable else nullcontext()

    def _writer(self) -> diskcache.Cache:
        if not isinstance(self._backend, diskcache.Cache):
            raise StoreError(f"store {self.directory} was opened read-only")
        return self._backend

    # -- stages and chunks ---------------------------------------------------------------------------
    def stage_status(self) -> dict[str, StageStatus | None]:
        """Every stage's record (None for stages not finished)."""
        return {name: self.read(StageStatus, name) for name in STAGES}

    def stages_done(self) -> dict[str, bool]:
        return {name: status is not None and status.done for name, status in self.stage_status().items()}

    def stage_seconds(self) -> dict[str, float]:
        statuses = self.stage_status().items()
        return {name: 0.0 if status is None else status.seconds for name, status in statuses}

    def is_stage_done(self, name: str) -> bool:
        status = self.read(StageStatus, name)
        return status is not None and status.done

    def mark_stage_done(self, name: str, seconds: float) -> None:
        self.write(StageStatus(True, seconds, time.time()), name)

    def reopen_stage(self, name: str) -> None:
        """Mark a finished stage unfinished again (a stage that redoes work it had to skip), so that readers
        see it change twice: pending while it runs, done when it is marked again."""
        self.delete(key(StageStatus, name))

    @property
    def complete(self) -> bool:
        return all(self.stages_done().values())

    def is_chunk_done(self, stage: str, chunk: int) -> bool:
        return self.get(f"chunk:{stage}:{chunk}") is not None

    def mark_chunk_done(self, stage: str, chunk: int) -> None:
        self.put(f"chunk:{stage}:{chunk}", True)


def _check_compatible(directory: Path, meta: dict[str, Any], run_id: str) -> None:
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise StoreMismatchError(
            f"{directory} holds a store of schema {meta.get('schema_version')} (this version writes "
            f"{SCHEMA_VERSION}); pass another --out directory or delete it"
        )
    if meta.get("run_id") != run_id:
        raise StoreMismatchError(
            f"{directory} holds run {meta.get('run_id')} made with another config; this config is run "
            f"{run_id}. Pass another --out directory, or delete the old one to recompute"
        )


def list_runs(root: str | Path) -> list[RunInfo]:
    """Every readable run under `root` (the root itself or its direct subdirectories), newest first."""
    root = Path(root)
    candidates = [root] if (root / _DB_NAME).is_file() else []
    if root.is_dir():
        candidates += sorted(p for p in root.iterdir() if (p / _DB_NAME).is_file())
    runs = []
    for directory in candidates:
        try:
            with RunStore.open(directory) as store:
                runs.append(store.info())
        except StoreError:
            continue
    return sorted(runs, key=lambda r: r.created_at, reverse=True)
