"""The team's notes on the neuron page (AppTest, two sessions on one SQLite database): a save shows for the
other collaborator, a save from an old version is refused with theirs loaded and one's own text kept, a
viewer or a switched-off instance shows notes without a form, and a database that is down leaves the page
browsable with one line."""

from __future__ import annotations

import os
from pathlib import Path

from streamlit.testing.v1 import AppTest

from annotations_db import AnnotationKey, AnnotationStore
from app.auth import AccessPolicy
from app.team_notes import widget_keys
from store import RunStore

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"


def _page(monkeypatch, root: Path, url: str, **secrets) -> AppTest:
    """Neuron 3 of the small run at k = 2, with its virtual neurons' note panels open (`_run`)."""
    monkeypatch.setenv("PURE_RUNS_DIR", str(root))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets["annotations"] = {"url": url, **secrets}
    at.query_params = {"page": "neuron", "run": "small", "neuron": "3", "k": "2"}
    at.run()
    assert all(not panel.children for panel in at.expander if panel.label.startswith("Team notes on"))
    return _run(at)


def _run(at: AppTest) -> AppTest:
    """Run ``at`` with the note panels of neuron 3's virtual neurons at k = 2 open: they are lazy, and AppTest
    sends no expander's state back, as a browser does, so every run opens them again."""
    with RunStore.open(Path(os.environ["PURE_RUNS_DIR"]) / "small") as store:
        run_id = store.run_id
    for vn in (1, 2):
        at.session_state[widget_keys(AnnotationKey(run_id, 3, 2, vn))["open"]] = True
    return at.run()


def _vn_panel(at: AppTest, vn: int):
    (panel,) = [e for e in at.expander if e.label.startswith(f"Team notes on VN {vn}")]
    return panel


def _save(at: AppTest, vn: int, label: str, note: str = "") -> AppTest:
    panel = _vn_panel(at, vn)
    panel.text_input[0].set_value(label)
    panel.text_area[0].set_value(note)
    panel.button[0].click()
    return _run(at)


def test_a_note_saved_in_one_session_shows_in_another_and_an_old_version_is_not_saved_over_it(
    monkeypatch, small_runs_root, tmp_path
):
    url = f"sqlite:///{tmp_path / 'notes.sqlite'}"
    ana, ben = _page(monkeypatch, small_runs_root, url), _page(monkeypatch, small_runs_root, url)
    assert not ana.exception and not ben.exception
    _save(ana, 1, "dog <b>snout</b>", "the nose half")  # ben's page is open, his form untouched
    assert any("Saved (version 1)" in s.value for s in ana.success)
    with RunStore.open(small_runs_root / "small") as store:
        run_id = store.run_id
    with AnnotationStore(url) as db:
        saved = db.get(AnnotationKey(run_id, 3, 2, 1))
    assert (saved.label, saved.note, saved.author) == ("dog <b>snout</b>", "the nose half", "local")
    _run(ben)  # ben's next interaction reads it
    assert _vn_panel(ben, 1).label == "Team notes on VN 1: `dog <b>snout</b>`"  # as code, never HTML
    assert any("`dog <b>snout</b>` · unreviewed · by `local`" in m.value for m in _vn_panel(ben, 1).markdown)
    # both now edit version 1; ben saves first, then ana's save from version 1 is refused
    _save(ben, 1, "snout", "ben's words")
    _save(ana, 1, "nose", "ana's words")
    assert any("Changed meanwhile by `local`" in w.value for w in ana.warning)
    assert any("label: nose\nnote: ana's words" in t.value for t in ana.text)  # her text, to copy back
    assert _vn_panel(ana, 1).text_input[0].value == "snout"  # the form holds theirs now
    with AnnotationStore(url) as db:
        assert db.get(AnnotationKey(run_id, 3, 2, 1)).label == "snout"
        assert [e.label for e in db.history(AnnotationKey(run_id, 3, 2, 1))] == ["dog <b>snout</b>", "snout"]
    _save(ana, 1, "nose and snout")  # from theirs: lands as version 3
    assert any("Saved (version 3)" in s.value for s in ana.success)
    earlier = [c.value for c in _vn_panel(ana, 1).caption if c.value.startswith("Earlier: ")]
    assert earlier and earlier[0].startswith("Earlier: version 2: `snout`")
    assert "version 1: `dog <b>snout</b>`" in earlier[0]


def test_viewers_and_switched_off_instances_see_notes_without_a_form(monkeypatch, small_runs_root, tmp_path):
    url = f"sqlite:///{tmp_path / 'notes.sqlite'}"
    at = _page(monkeypatch, small_runs_root, url, editing=False)
    assert not at.exception
    panel = _vn_panel(at, 1)
    assert not panel.text_input and any("editing is switched off" in c.value for c in panel.caption)
    access = {"mode": "password", "password": "x", "allowed_emails": ["@lab.org"], "editors": ["ada@lab.org"]}
    policy = AccessPolicy.from_secrets({"access": access})
    assert policy.may_edit("ada@lab.org") and not policy.may_edit("ben@lab.org")
    assert AccessPolicy.from_secrets({"access": {"mode": "password", "password": "x"}}).may_edit("any@x.org")


def test_a_database_that_is_down_leaves_the_page_browsable(monkeypatch, small_runs_root, tmp_path):
    at = _page(monkeypatch, small_runs_root, f"postgresql+psycopg://nobody@/db?host={tmp_path}&port=1")
    assert not at.exception and not at.error
    assert any(h.value == "2 virtual neurons" for h in at.subheader)
    notices = [c.value for c in at.caption if c.value.startswith("Annotations unavailable")]
    assert notices and all("\n" not in n for n in notices)


def test_the_ranking_shows_the_teams_labels_filters_by_verdict_and_the_search_finds_them(
    monkeypatch, small_runs_root, tmp_path
):
    url = f"sqlite:///{tmp_path / 'notes.sqlite'}"
    with RunStore.open(small_runs_root / "small") as store:
        run_id = store.run_id
    with AnnotationStore(url) as db:
        db.save(AnnotationKey(run_id, 12), label="petals", verdict="polysemantic", author="ana",
                expected_version=None)
        db.save(AnnotationKey(run_id, 3, 2, 2), label="helmet face", note="the *astronaut*", author="ben",
                expected_version=None)
    monkeypatch.setenv("PURE_RUNS_DIR", str(small_runs_root))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets["annotations"] = {"url": url}
    at.query_params = {"run": "small"}
    at.run()
    assert not at.exception
    ranking = at.dataframe[0].value
    team = dict(zip(ranking["neuron"], ranking["team"], strict=True))
    assert team[12] == "petals" and team[3] == "VN 2/2: helmet face"
    assert "overall" not in ranking.columns  # the team's column takes its place
    at.selectbox(key="ranking_verdict").set_value("polysemantic, confirmed").run()
    assert list(at.dataframe[0].value["neuron"]) == [12]
    at.selectbox(key="ranking_verdict").set_value("any").run()
    at.text_input(key="ranking_search").set_value("ASTRONAUT").run()  # a word of ben's note
    assert any("Annotated by the team with `ASTRONAUT`" in m.value for m in at.markdown)
    hits = next(d.value for d in at.dataframe if "on" in d.value.columns)
    assert list(hits["on"]) == ["VN 2 of 2"] and list(hits["author"]) == ["ben"]


def test_the_team_page_lists_recent_saves_and_exports_and_imports(monkeypatch, small_runs_root, tmp_path):
    url = f"sqlite:///{tmp_path / 'notes.sqlite'}"
    with RunStore.open(small_runs_root / "small") as store:
        run_id = store.run_id
    with AnnotationStore(url) as db:
        db.save(AnnotationKey(run_id, 12), label="petals", author="ana", expected_version=None)
        db.save(AnnotationKey(run_id, 3, 2, 1), label="<i>face</i>", author="ben", expected_version=None)
        exported = db.export_json(run_id)
    monkeypatch.setenv("PURE_RUNS_DIR", str(small_runs_root))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets["annotations"] = {"url": url}
    at.query_params = {"page": "activity", "run": "small"}
    at.run()
    assert not at.exception and at.title[0].value == "Team notes"
    recent = at.dataframe[0].value
    assert list(recent["label"]) == ["<i>face</i>", "petals"] and list(recent["by"]) == ["ben", "ana"]
    assert recent["neuron"][0] == "neuron?run=small&neuron=3&k=2"
    with AnnotationStore(f"sqlite:///{tmp_path / 'other.sqlite'}") as other:
        assert other.import_json(exported, author="cleo")["created"] == 2  # the export the page offers


def test_a_read_only_database_shows_the_notes_and_refuses_a_save_in_one_message(
    monkeypatch, small_runs_root, tmp_path
):
    path = tmp_path / "notes.sqlite"
    with RunStore.open(small_runs_root / "small") as store:
        run_id = store.run_id
    with AnnotationStore(f"sqlite:///{path}") as db:
        db.save(AnnotationKey(run_id, 3, 2, 1), label="kept", author="ana", expected_version=None)
    at = _page(monkeypatch, small_runs_root, f"sqlite:///file:{path}?mode=ro&uri=true")
    assert _vn_panel(at, 1).label == "Team notes on VN 1: `kept`"
    _save(at, 1, "lost?")
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Not saved: `the annotation database cannot save now")
    assert not at.exception and _vn_panel(at, 1).label == "Team notes on VN 1: `kept`"
