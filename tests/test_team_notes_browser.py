"""Two collaborators in two browser contexts on one instance (Chromium, a password-protected instance with
two editors and a viewer): each editor annotates a virtual neuron, sees the other's label, finds it by
search, and the team page lists both saves and offers the export; the viewer reads the notes without a form.
Once on a SQLite file and once on the test session's PostgreSQL server, named in secrets.toml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from annotations_db import AnnotationKey, AnnotationStore
from pure_explorer.live_app import (
    free_port,
    new_page,
    screenshot,
    serve,
    streamlit_command,
    wait_idle,
)
from store import RunStore, list_runs

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
SECRETS = """
[access]
mode = "password"
password = "team-password"
cookie_secret = "a-secret-for-the-test-only-0123456789"
allowed_emails = ["@lab.org"]
editors = ["ana@lab.org", "ben@lab.org"]  # cleo@lab.org may log in and read

[annotations]
url = "{url}"
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def instance(request, demo_runs_root, tmp_path_factory, browser):
    root, _ = demo_runs_root
    run = next(info for info in list_runs(root) if info.complete)
    directory = tmp_path_factory.mktemp("team")
    if request.param == "sqlite":
        url = f"sqlite:///{directory / 'notes.sqlite'}"
    else:
        url = request.getfixturevalue("make_postgres_database")()
    secrets = directory / "secrets.toml"
    secrets.write_text(SECRETS.format(url=url))
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(root, command=[*streamlit_command(port), "--secrets.files", str(secrets)], port=port,
               log=ARTIFACTS / "streamlit-team-server.log") as app_url:
        yield app_url, run.directory.name, url, browser, run.directory


def _log_in(browser, url: str, email: str):
    page = new_page(browser)  # a context of its own: its own cookies, its own session
    page.goto(url)
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password", exact=True).fill("team-password")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text(f"Signed in as {email}").wait_for()
    return page


def _annotate(page, vn: int, label: str, note: str) -> None:
    wait_idle(page)  # a click during a rerun can land on an element about to be replaced
    panel = page.locator('[data-testid="stExpander"]').filter(has_text=f"Team notes on VN {vn}")
    field = panel.get_by_label("Label")
    if not field.is_visible():
        page.get_by_text(re.compile(rf"^Team notes on VN {vn}")).first.click()
    field.wait_for()
    field.fill(label)
    panel.get_by_label("Note").fill(note)
    panel.get_by_role("button", name="Save").click()
    page.get_by_text(re.compile(r"^Saved \(version \d+\)")).wait_for()
    wait_idle(page)


def test_two_collaborators_annotate_see_each_others_labels_search_and_export(instance):
    url, run_name, database, browser, store_dir = instance
    neuron_page = f"{url}/neuron?run={run_name}&neuron=0&k=2"
    ana, ben = _log_in(browser, neuron_page, "ana@lab.org"), _log_in(browser, neuron_page, "ben@lab.org")
    for page in (ana, ben):
        page.get_by_role("heading", name="2 virtual neurons").wait_for()
        wait_idle(page)
    _annotate(ana, 1, "bar half <b>x</b>", "ana's note")
    screenshot(ana, ARTIFACTS / "team-notes-neuron.png", SCREENSHOTS / "team-notes.png")
    _annotate(ben, 2, "blob half", "ben's note")
    # each sees the other's label after reloading (a new run of the page reads the database)
    for page, other_vn, other_label in ((ana, 2, "blob half"), (ben, 1, "bar half <b>x</b>")):
        page.reload()
        page.get_by_role("heading", name="2 virtual neurons").wait_for()
        page.get_by_text(f"Team notes on VN {other_vn}: {other_label}").wait_for()
    assert ana.locator("b", has_text="x").count() == 0  # the label's tag is text, never HTML
    # ana finds ben's label from the overview's search
    ana.goto(f"{url}/?run={run_name}")
    box = ana.get_by_label("Search by neuron id or label")
    box.fill("blob half")
    box.press("Enter")
    ana.get_by_text(re.compile(r"^Annotated by the team with")).wait_for()
    # the team page lists both saves with their authors and offers the export
    ben.goto(f"{url}/activity?run={run_name}")
    ben.get_by_role("heading", name="Team notes").wait_for()
    wait_idle(ben)
    grid = ben.locator('[data-testid="stDataFrame"]').first
    grid.scroll_into_view_if_needed()
    grid.locator('[role="gridcell"]').first.wait_for(state="attached")
    cells = [c.strip() for c in grid.locator('[role="gridcell"]').all_text_contents()]
    assert {"ana@lab.org", "ben@lab.org"} <= set(cells) and "blob half" in cells
    with ben.expect_download() as download:
        ben.get_by_role("button", name="Download as JSON").click()
    exported = Path(download.value.path()).read_text()
    assert "bar half <b>x</b>" in exported and "ben's note" in exported
    # a viewer reads both notes and gets no form
    cleo = _log_in(browser, neuron_page, "cleo@lab.org")
    cleo.get_by_role("heading", name="2 virtual neurons").wait_for()
    cleo.get_by_text("Team notes on VN 2: blob half").click()
    panel = cleo.locator('[data-testid="stExpander"]').filter(has_text="Team notes on VN 2")
    panel.get_by_text(re.compile(r"^Viewing only: your login may view annotations")).wait_for()
    assert panel.get_by_text("ben's note").is_visible()
    assert cleo.get_by_role("button", name="Save").count() == 0
    with RunStore.open(store_dir) as store:
        run_id = store.run_id
    with AnnotationStore(database) as db:
        assert db.get(AnnotationKey(run_id, 0, 2, 2)).author == "ben@lab.org"
    ben.screenshot(path=str(ARTIFACTS / "team-notes-page.png"), full_page=True)
