"""A hosted instance in a real browser (Debian's chromium, as tests/test_access_browser.py): behind the
password login nothing with data has a URL that answers without it, no request leaves the instance, a login
survives a reload and a new tab until logging out, and crafted query values render as text.

A visitor logs in and opens the overview, a neuron and an upload while every request the pages make is
recorded; then each recorded URL is fetched again by a plain HTTP client without any cookie."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest
import streamlit
from PIL import Image

from pure_explorer.live_app import (
    ALL_CHARTS_DRAWN,
    free_port,
    new_page,
    serve,
    streamlit_command,
    wait_idle,
)
from store import list_runs

pytestmark = pytest.mark.browser

SECRETS = """
[access]
mode = "password"
password = "correct horse"
allowed_emails = ["@lab.org"]
cookie_secret = "a test cookie secret"
session_hours = 1
"""
STREAMLIT_STATIC = Path(streamlit.__file__).parent / "static"
INLINE_DATA = """() => [...document.querySelectorAll('img[src^="data:"], a[href^="data:"]')]
    .map(e => (e.getAttribute('src') || e.getAttribute('href')).split(/[;,]/)[0])"""
CRAFTED = (
    "x`[Session expired - log in](http://evil.org)`![i](http://evil.org/i.png)<img src=http://evil.org/i.png>"
)


@pytest.fixture(scope="module")
def instance(demo_runs_root, tmp_path_factory, browser):
    """(URL, run name, browser) of the app on the demo store behind the password login."""
    root, _ = demo_runs_root
    secrets = tmp_path_factory.mktemp("secrets") / "secrets.toml"
    secrets.write_text(SECRETS)
    port = free_port()
    command = [*streamlit_command(port), "--secrets.files", str(secrets)]
    run = next(info for info in list_runs(root) if info.complete).directory.name
    with serve(root, command=command, port=port) as url:
        yield url, run, browser


def _log_in(page, url: str) -> None:
    page.goto(url)
    page.get_by_label("E-mail", exact=True).fill("ada@lab.org")
    page.get_by_label("Password", exact=True).fill("correct horse")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("Signed in as").wait_for()
    wait_idle(page, settle_ms=300)


def _fetch_without_cookie(url: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of a plain GET with no cookie (HTTP errors included)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url), timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


def _app_code_or_shell(path: str, body: bytes, shell: bytes) -> bool:
    """Whether an answer given without a login is harmless: a file shipped in Streamlit's package (its
    frontend code, styles, fonts, default icon), the page shell every visitor gets, or the health and host
    configuration endpoints."""
    shipped = STREAMLIT_STATIC / path.lstrip("/")
    return (
        (shipped.is_file() and shipped.read_bytes() == body)
        or body == shell
        or path in ("/_stcore/health", "/_stcore/host-config")
    )


def _inline_data(page) -> set[str]:
    """The kinds of data URIs that the page's images and links show, e.g. ``{"data:image/jpeg"}``."""
    return set(page.evaluate(INLINE_DATA))


def _visit_every_page(page, url: str, run: str, tmp_path) -> set[str]:
    """Overview, a neuron at k = 3 (its PNG report prepared), an upload analysed; returns `_inline_data`."""
    _log_in(page, f"{url}/?run={run}")
    page.get_by_text("Neurons ranked by polysemanticity").wait_for()
    page.wait_for_function(ALL_CHARTS_DRAWN)
    wait_idle(page, settle_ms=300)
    seen = _inline_data(page)
    page.goto(f"{url}/neuron?run={run}&k=3")
    page.get_by_role("heading", name="3 virtual neurons").wait_for()
    page.wait_for_function(ALL_CHARTS_DRAWN)
    page.get_by_role("button", name="Download these figures (PNG)").click()
    page.get_by_text("Download these figures (PNG)").and_(page.locator("a")).wait_for()
    wait_idle(page, settle_ms=300)
    seen |= _inline_data(page)
    photo = tmp_path / "upload.png"
    Image.new("RGB", (96, 96), (200, 30, 40)).save(photo)
    page.goto(f"{url}/upload?run={run}&k=2")
    page.get_by_text("Images (PNG, JPEG or WEBP)").wait_for()
    page.locator('input[type="file"]').set_input_files(str(photo))
    page.get_by_text("Neurons this image activates most").wait_for(timeout=180_000)
    wait_idle(page, settle_ms=300)
    return seen | _inline_data(page)


def test_nothing_the_pages_fetch_answers_with_data_without_a_login_and_nothing_leaves_the_instance(
    instance, tmp_path
):
    url, run, browser = instance
    page = new_page(browser)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("websocket", lambda socket: requests.append(socket.url))
    inline = _visit_every_page(page, url, run, tmp_path)
    page.context.close()

    instance_host = urlparse(url).netloc
    outside = [
        r
        for r in requests
        if urlparse(r).scheme not in ("data", "blob") and urlparse(r).netloc != instance_host
    ]
    assert not outside, f"requests leaving the instance: {outside}"
    fetched = sorted({r for r in requests if urlparse(r).scheme == "http"})
    assert not [r for r in fetched if urlparse(r).path.startswith("/media/")], "data served from /media/ URLs"
    shell = _fetch_without_cookie(url + "/")[2]
    with_data = {
        address: kind
        for address, (status, kind, body) in ((a, _fetch_without_cookie(a)) for a in fetched)
        if status == 200 and not _app_code_or_shell(urlparse(address).path, body, shell)
    }
    assert not with_data, f"answered without a login: {with_data}"
    # the data came inline instead: images, the ranking CSV, the neuron's PNG report and CSV
    assert {"data:image/jpeg", "data:image/png", "data:text/csv"} <= inline


def test_a_login_survives_a_reload_and_a_new_tab_until_logging_out_which_revokes_it(instance):
    url, run, browser = instance
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(60_000)
    _log_in(page, f"{url}/neuron?run={run}&k=2")
    cookie = next(c for c in context.cookies() if c["name"] == "pure_explorer_session")
    assert cookie["sameSite"] == "Strict" and cookie["path"] == "/" and cookie["expires"] > 0
    page.reload()
    page.get_by_text("Signed in as").wait_for()
    other = context.new_page()  # a shared link opened in a new tab
    other.goto(f"{url}/neuron?run={run}&k=3")
    other.get_by_role("heading", name="3 virtual neurons").wait_for()
    assert other.get_by_role("button", name="Log in").count() == 0
    other.close()

    page.get_by_role("button", name="Log out").click()
    page.get_by_role("button", name="Log in").wait_for()
    wait_idle(page, settle_ms=300)
    assert not [c for c in context.cookies() if c["name"] == "pure_explorer_session"]
    page.reload()
    page.get_by_role("button", name="Log in").wait_for()
    assert page.get_by_text("Signed in as").count() == 0
    context.close()
    # a copy of the cookie, taken before the logout (another browser, a leaked header), admits nobody now
    copied = browser.new_context(viewport={"width": 1400, "height": 1400})
    copied.add_cookies([cookie])
    page = copied.new_page()
    page.goto(f"{url}/neuron?run={run}&k=2")
    page.get_by_role("button", name="Log in").wait_for()
    assert page.get_by_text("Signed in as").count() == 0
    copied.close()


def test_crafted_query_values_render_as_text_without_links_images_or_html(instance):
    url, run, browser = instance
    page = new_page(browser)
    _log_in(page, f"{url}/neuron?run={quote(CRAFTED)}&neuron={quote(CRAFTED)}&k={quote(CRAFTED)}")
    page.get_by_text("from the link", exact=False).first.wait_for()
    wait_idle(page, settle_ms=300)
    main = page.locator('[data-testid="stMain"]')
    assert main.locator("a[href*='evil'], img[src*='evil'], script").count() == 0
    assert page.locator('[data-testid="stAlertContentInfo"] code').count() >= 3
    assert "[Session expired - log in](http://evil.org)" in main.inner_text()
    page.context.close()


def test_the_metrics_endpoint_is_closed_however_it_is_spelled(instance):
    url, _, _ = instance
    for path in ("/_stcore/metrics", "//_stcore//metrics/", "/neuron/_stcore/metrics", "/_STCORE/Metrics"):
        status, _, body = _fetch_without_cookie(url + path)
        assert status == 404 and b"session" not in body, path
    assert _fetch_without_cookie(url + "/_stcore/health")[:1] == (200,)
