"""The run store: identity checks, resume markers, read-only reading."""

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import diskcache
import numpy as np
import pytest

from store import RunStore, StoreMismatchError, StoreNotFoundError, list_runs, run_id_for
from store.codecs import EMBED_QUALITY, LOSSLESS_MAX_PIXELS, decode_image, encode_image, reference_quality
from store.schema import PureVectors, References

IDENTITY = {"model": {"name": "demo"}, "layer": "block4", "n_ref": 10}


def _make(tmp_path, identity=IDENTITY):
    return RunStore.create(tmp_path / "run", identity, {**identity, "device": "cpu"}, {"torch": "x"})


def test_run_id_is_stable_and_order_independent():
    assert run_id_for({"a": 1, "b": [1, 2]}) == run_id_for({"b": [1, 2], "a": 1})
    assert run_id_for({"a": 1}) != run_id_for({"a": 2})


def test_reopening_with_another_identity_is_refused(tmp_path):
    _make(tmp_path).close()
    with pytest.raises(StoreMismatchError, match="another config"):
        _make(tmp_path, {**IDENTITY, "n_ref": 11})


def test_reopening_with_the_same_identity_resumes(tmp_path):
    with _make(tmp_path) as store:
        store.mark_chunk_done("attributions", 3)
        store.mark_stage_done("references", 1.5)
    with _make(tmp_path) as store:
        assert store.is_chunk_done("attributions", 3) and not store.is_chunk_done("attributions", 4)
        assert store.stages_done()["references"] and not store.complete
        assert store.stage_seconds()["references"] == 1.5 and store.stage_status()["scores"] is None


def _references(neurons: list[int], n_ref: int = 3) -> References:
    n = len(neurons)
    return References(neurons, np.zeros((n, n_ref)), np.zeros((n, n_ref)), np.zeros((n, n_ref, 2)))


def test_reader_sees_writer_records_and_cannot_write(tmp_path):
    with _make(tmp_path) as store:
        store.write(_references([4, 7]))
        store.write(PureVectors(np.full((3, 5), 0.25, dtype=np.float16)), 4)
    with RunStore.open(tmp_path / "run") as reader:
        assert reader.read(References).neuron_ids == [4, 7]
        vectors = reader.read(PureVectors, 4).values
        assert vectors.dtype == np.float16 and np.all(vectors == 0.25)
        assert reader.read(PureVectors, 7) is None
        with pytest.raises(Exception, match="read-only"):
            reader.put("x", 1)
        with pytest.raises(Exception, match="read-only"):
            reader.write(_references([1]))


def _digest(run: Path) -> dict[str, str]:
    """SHA-256 of every file of a store (SQLite's transient -wal/-shm files aside)."""
    files = (p for p in run.rglob("*") if p.is_file() and "-wal" not in p.name and "-shm" not in p.name)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_reader_never_writes(tmp_path):
    """SQLite may add its empty -wal/-shm side files; the data itself is never touched."""
    with _make(tmp_path) as store:
        store.write(_references([1]))
    run = tmp_path / "run"
    before = _digest(run)
    with RunStore.open(run) as reader:
        assert reader.read(References) == _references([1])
    after = _digest(run)
    assert before == after


def test_missing_store_and_listing(tmp_path):
    with pytest.raises(StoreNotFoundError):
        RunStore.open(tmp_path / "nothing")
    _make(tmp_path).close()
    runs = list_runs(tmp_path)
    assert [r.directory.name for r in runs] == ["run"]
    assert not runs[0].complete and runs[0].label == "run — demo block4 · computing"
    assert runs[0].meta.config["n_ref"] == 10


def test_small_reference_images_are_stored_exactly_large_ones_at_the_embedding_quality():
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    small = Image.fromarray(pixels)
    assert reference_quality(small) is None
    np.testing.assert_array_equal(np.asarray(decode_image(encode_image(small, None))), pixels)
    lossy = np.asarray(decode_image(encode_image(small, EMBED_QUALITY)))
    assert lossy.shape == pixels.shape and not np.array_equal(lossy, pixels)
    side = int(LOSSLESS_MAX_PIXELS**0.5) + 1
    assert reference_quality(Image.new("RGB", (side, side))) == EMBED_QUALITY


def _journal_mode(directory: Path) -> str:
    with sqlite3.connect(directory / "cache.db") as connection:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]


def test_finalize_waits_for_a_reader_that_lets_go_and_makes_one_file(tmp_path):
    store = _make(tmp_path)
    store.put("k", 1)
    reader = sqlite3.connect(tmp_path / "run" / "cache.db", check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM Cache").fetchone()  # a read transaction holds the WAL open

    def let_go() -> None:
        time.sleep(1.0)
        reader.rollback()
        reader.close()

    threading.Thread(target=let_go).start()
    assert store.finalize() is True
    store.close()
    assert _journal_mode(tmp_path / "run") == "delete"


def test_finalize_reports_a_store_that_another_process_keeps_open(tmp_path, monkeypatch):
    store = _make(tmp_path)

    def locked(*_args, **_kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(diskcache.Cache, "reset", locked)
    assert store.finalize() is False  # complete and readable, still in WAL mode
    monkeypatch.undo()
    assert store.finalize() is True
    store.close()
