"""annotations_db on both databases (SQLite always, PostgreSQL on a throwaway local server): saves keep every
version with its author, two collaborators saving the same annotation at once lose nothing, a restart loses
nothing, a read-only or unreachable database says so in one line, text is bounded, search, export and import
round-trip, and the migrations build exactly the tables the code declares."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from annotations_db import (
    MAX_LABEL_CHARS,
    AnnotationKey,
    AnnotationStore,
    DatabaseUnavailable,
    EditConflict,
    Verdict,
    default_url,
)
from annotations_db.tables import Base

RUN = "79a507440a02d166"
VN = AnnotationKey(RUN, 17, 2, 1)


@pytest.fixture
def store(database_url):
    with AnnotationStore(database_url) as opened:
        yield opened


def test_a_save_keeps_its_author_and_time_and_every_version_is_in_the_history(store):
    before = datetime.now(UTC) - timedelta(seconds=1)
    first = store.save(VN, label="striped bar", note="the bar half", verdict="polysemantic", author="ana@lab",
                       expected_version=None)
    assert (first.version, first.author, first.verdict) == (1, "ana@lab", Verdict.POLYSEMANTIC)
    assert before <= first.created_at == first.updated_at <= datetime.now(UTC)
    second = store.save(VN, label="striped tbar", note="the bar half", verdict=Verdict.POLYSEMANTIC,
                        author="ben", expected_version=1)
    assert second.version == 2 and second.created_at == first.created_at and second.author == "ben"
    assert store.get(VN) == second
    history = store.history(VN)
    assert [(e.version, e.label, e.author) for e in history] == [(1, "striped bar", "ana@lab"),
                                                                  (2, "striped tbar", "ben")]
    assert store.get(AnnotationKey(RUN, 17, 3, 1)) is None and store.history(AnnotationKey(RUN, 1)) == []


def test_a_save_from_an_old_version_is_refused_with_the_other_collaborators_annotation(store):
    store.save(VN, label="dots", author="ana", expected_version=None)
    store.save(VN, label="dotted circle", author="ben", expected_version=1)  # ben saved meanwhile
    with pytest.raises(EditConflict, match="changed meanwhile by ben") as conflict:
        store.save(VN, label="spots", author="ana", expected_version=1)  # ana still edits version 1
    assert conflict.value.theirs.label == "dotted circle" and conflict.value.theirs.version == 2
    with pytest.raises(EditConflict):  # a first save when someone else made the first one
        store.save(VN, label="spots", author="ana", expected_version=None)
    assert store.get(VN).label == "dotted circle" and len(store.history(VN)) == 2


def test_collaborators_saving_at_once_lose_nothing(database_url):
    """8 threads, each with its own connection pool, read the annotation and save from that version, 6 times
    each: every save either lands as the next version or is refused as a conflict; none is lost or doubled."""
    with AnnotationStore(database_url) as setup:
        setup.save(VN, label="start", author="setup", expected_version=None)
    landed, refused, errors = [], [], []

    def editor(name: str) -> None:
        with AnnotationStore(database_url, migrate_schema=False) as mine:
            for attempt in range(6):
                current = mine.get(VN)
                try:
                    saved = mine.save(VN, label=f"{name}-{attempt}", author=name,
                                      expected_version=current.version)
                    landed.append((saved.version, saved.label))
                except EditConflict as conflict:
                    refused.append(conflict.theirs.version)
                except Exception as error:  # noqa: BLE001 - reported below
                    errors.append(repr(error))

    threads = [threading.Thread(target=editor, args=(f"editor{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with AnnotationStore(database_url) as check:
        history = check.history(VN)
        final = check.get(VN)
    assert len(landed) + len(refused) == 48 and landed
    assert sorted(version for version, _ in landed) == list(range(2, 2 + len(landed)))  # one per version
    assert [(e.version, e.label) for e in history[1:]] == sorted(landed)  # every landed save, in order
    assert final.version == 1 + len(landed) and final.label == max(landed)[1]


def test_a_restart_loses_nothing(database_url):
    with AnnotationStore(database_url) as first:
        first.save(VN, label="kept", note="across restarts", author="ana", expected_version=None)
    with AnnotationStore(database_url) as again:  # a new process would open it the same way
        assert again.get(VN).label == "kept" and again.get(VN).note == "across restarts"


def test_a_read_only_database_still_reads_and_refuses_saves_in_one_line(database_url, tmp_path):
    with AnnotationStore(database_url) as writable:
        writable.save(VN, label="kept", author="ana", expected_version=None)
    if database_url.startswith("sqlite"):
        url = f"sqlite:///file:{database_url.removeprefix('sqlite:///')}?mode=ro&uri=true"
    else:
        from sqlalchemy import create_engine, text

        engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            name = engine.url.database
            connection.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
        engine.dispose()
        url = database_url
    with AnnotationStore(url) as read_only:
        assert read_only.get(VN).label == "kept"
        with pytest.raises(DatabaseUnavailable, match="cannot save now") as refused:
            read_only.save(VN, label="lost?", author="ben", expected_version=1)
        assert "\n" not in str(refused.value)
        assert read_only.get(VN).label == "kept"


def test_an_unreachable_database_says_so_in_one_line(tmp_path):
    with pytest.raises(DatabaseUnavailable, match="cannot open now") as unavailable:
        AnnotationStore(f"postgresql+psycopg://nobody@/db?host={tmp_path}&port=1")
    assert "\n" not in str(unavailable.value)


def test_text_is_bounded_and_kept_as_typed_without_control_characters(store):
    with pytest.raises(ValueError, match=f"at most {MAX_LABEL_CHARS}"):
        store.save(VN, label="x" * (MAX_LABEL_CHARS + 1), author="ana", expected_version=None)
    saved = store.save(VN, label="<script>alert(1)</script>\x00 **bold**\nline", note="a\x07b\nc",
                       author="  ana \t", expected_version=None)
    assert saved.label == "<script>alert(1)</script> **bold** line"  # escaping is the page's job
    assert saved.note == "ab\nc" and saved.author == "ana"
    with pytest.raises(ValueError, match="verdict|not a valid"):
        store.save(VN, verdict="certain", author="ana", expected_version=1)


def test_keys_are_a_neuron_or_one_of_its_k_virtual_neurons():
    assert AnnotationKey(RUN, 3).is_neuron and not AnnotationKey(RUN, 3, 2, 2).is_neuron
    for k, vn in ((2, 0), (0, 1), (2, 3)):
        with pytest.raises(ValueError, match="virtual neuron"):
            AnnotationKey(RUN, 3, k, vn)
    with pytest.raises(ValueError, match="run id"):
        AnnotationKey("", 3)


def test_search_finds_labels_before_notes_and_takes_wildcards_literally(store):
    store.save(AnnotationKey(RUN, 1, 2, 1), label="Dog snout", author="ana", expected_version=None)
    store.save(AnnotationKey(RUN, 2, 2, 2), label="fur", note="next to the dog's snout", author="ana",
               expected_version=None)
    store.save(AnnotationKey(RUN, 3), label="100% red", author="ana", expected_version=None)
    store.save(AnnotationKey("other-run", 1), label="dog", author="ana", expected_version=None)
    assert [a.key.neuron for a in store.search(RUN, "DOG")] == [1, 2]
    assert [a.label for a in store.search(RUN, "100%")] == ["100% red"]
    assert store.search(RUN, "0_") == [] and store.search(RUN, "  ") == []


def test_recent_activity_is_newest_first(store):
    for neuron in range(3):
        store.save(AnnotationKey(RUN, neuron), label=f"n{neuron}", author="ana", expected_version=None)
    store.save(AnnotationKey(RUN, 0), label="n0 again", author="ben", expected_version=1)
    assert [(e.key.neuron, e.version, e.author) for e in store.recent(3, run_id=RUN)] == [
        (0, 2, "ben"), (2, 1, "ana"), (1, 1, "ana")]


def test_export_and_import_round_trip_as_json_and_csv(store, tmp_path):
    store.save(VN, label="striped, \"quoted\" bar", note="line one\nline two", verdict="unclear",
               author="ana", expected_version=None)
    store.save(AnnotationKey(RUN, 4), label="ünïcödé", author="ben", expected_version=None)
    for kind in ("json", "csv"):
        exported = getattr(store, f"export_{kind}")(RUN)
        with AnnotationStore(f"sqlite:///{tmp_path / f'{kind}.sqlite'}") as other:
            assert getattr(other, f"import_{kind}")(exported, author="cleo") == {
                "created": 2, "updated": 0, "unchanged": 0}
            assert getattr(other, f"import_{kind}")(exported, author="cleo")["unchanged"] == 2
            copied = other.get(VN)
            assert (copied.label, copied.note, copied.verdict) == ('striped, "quoted" bar',
                                                                   "line one\nline two", Verdict.UNCLEAR)
            assert copied.author == "ana (imported by cleo)"
            assert other.get(AnnotationKey(RUN, 4)).label == "ünïcödé"
    with pytest.raises(ValueError, match="record 1"):
        store.import_json('[{"run_id": "r", "neuron": 1, "k": 2, "virtual_neuron": 5}]', author="x")
    with pytest.raises(ValueError, match="not JSON"):
        store.import_json("{", author="x")


def test_the_migrations_build_the_tables_the_code_declares(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_the_default_database_is_a_sqlite_file_next_to_the_runs_not_in_them(tmp_path):
    (tmp_path / "runs").mkdir()
    url = default_url(tmp_path / "runs")
    assert url == f"sqlite:///{(tmp_path / 'annotations.sqlite').resolve()}"
    with AnnotationStore(url) as opened:
        opened.save(VN, label="x", author="local", expected_version=None)
    assert (tmp_path / "annotations.sqlite").is_file() and not any((tmp_path / "runs").iterdir())


def test_a_sqlite_file_where_no_folder_can_be_made_is_unavailable_not_a_crash(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DatabaseUnavailable, match="cannot create"):
        AnnotationStore(f"sqlite:///{blocker / 'notes' / 'annotations.sqlite'}")
