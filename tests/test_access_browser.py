"""Access control on the real app in a real browser: a protected instance (secrets from `secrets.files`)
shows an anonymous visitor only the login, on every page and deep link, and the right password with an
allowed e-mail opens the app. tests/test_auth.py covers the policy's logic with AppTest."""

from __future__ import annotations

import pytest

from pure_explorer.live_app import (
    ALL_CHARTS_DRAWN,
    CHARTS,
    IDLE,
    free_port,
    new_page,
    serve,
    streamlit_command,
)
from store import list_runs

pytestmark = pytest.mark.browser

PASSWORD_SECRETS = """
[access]
mode = "password"
password = "correct horse"
allowed_emails = ["@lab.org"]
"""
OIDC_SECRETS = """
[access]
mode = "oidc"
allowed_emails = ["ada@lab.org"]

[auth]
redirect_uri = "http://127.0.0.1:1/oauth2callback"
cookie_secret = "a test cookie secret"
client_id = "explorer"
client_secret = "not a real secret"
server_metadata_url = "http://127.0.0.1:1/.well-known/openid-configuration"
"""
# What only an admitted visitor may see: the store's data, its images and charts, the page navigation.
DATA_ON_PAGE = f"""() => ({{
    charts: document.querySelectorAll('{CHARTS}').length,
    images: document.querySelectorAll('[data-testid="stImage"], [data-testid="stDataFrame"]').length,
    nav: document.querySelectorAll('[data-testid="stSidebarNav"]').length,
    text: document.body.innerText,
}})"""


@pytest.fixture(scope="module")
def protected(demo_runs_root, tmp_path_factory, request, browser):
    """URL of the app on the demo store, protected by the secrets in ``request.param``."""
    root, _ = demo_runs_root
    secrets = tmp_path_factory.mktemp("secrets") / "secrets.toml"
    secrets.write_text(request.param)
    port = free_port()
    command = [*streamlit_command(port), "--secrets.files", str(secrets)]
    run = next(info for info in list_runs(root) if info.complete).directory.name
    with serve(root, command=command, port=port) as url:
        yield url, run, browser


def _anonymous_view(browser, url: str) -> dict:
    page = new_page(browser)
    page.goto(url)
    page.get_by_role("button", name="Log in").wait_for()
    page.wait_for_timeout(300)
    page.wait_for_function(IDLE)
    return page, page.evaluate(DATA_ON_PAGE)


def _assert_only_the_login(seen: dict) -> None:
    assert seen["charts"] == 0 and seen["images"] == 0 and seen["nav"] == 0, seen
    for admitted_only in ("Neurons ranked", "virtual neuron", "Upload an image", "Traceback"):
        assert admitted_only not in seen["text"]


@pytest.mark.parametrize("protected", [PASSWORD_SECRETS], indirect=True, ids=["password"])
def test_password_instance_shows_only_the_login_until_the_password_and_email_match(protected):
    url, run, browser = protected
    for path in ("/", f"/neuron?run={run}&neuron=2&k=3", f"/upload?run={run}", f"/?page=neuron&run={run}"):
        page, seen = _anonymous_view(browser, url + path)
        _assert_only_the_login(seen)
        page.close()

    page, _ = _anonymous_view(browser, f"{url}/neuron?run={run}&neuron=2&k=3")
    page.get_by_label("E-mail", exact=True).fill("ada@lab.org")
    page.get_by_label("Password", exact=True).fill("wrong")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("Wrong password").wait_for()
    _assert_only_the_login(page.evaluate(DATA_ON_PAGE))

    page.get_by_label("Password", exact=True).fill("correct horse")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="3 virtual neurons").wait_for()
    page.wait_for_function(ALL_CHARTS_DRAWN)
    assert page.get_by_text("Signed in as ada@lab.org").count() == 1

    other = new_page(browser)  # a second visitor is not let in by the first one's login
    other.goto(f"{url}/neuron?run={run}&neuron=2&k=3")
    other.get_by_role("button", name="Log in").wait_for()
    _assert_only_the_login(other.evaluate(DATA_ON_PAGE))

    page.get_by_role("button", name="Log out").click()  # logging out leaves only the login again
    page.get_by_role("button", name="Log in").wait_for()
    page.wait_for_timeout(300)
    page.wait_for_function(IDLE)
    _assert_only_the_login(page.evaluate(DATA_ON_PAGE))


@pytest.mark.parametrize("protected", [OIDC_SECRETS], indirect=True, ids=["oidc"])
def test_oidc_instance_shows_an_anonymous_visitor_only_the_login_button(protected):
    url, run, browser = protected
    for path in ("/", f"/neuron?run={run}&neuron=2&k=3", f"/upload?run={run}"):
        page, seen = _anonymous_view(browser, url + path)
        _assert_only_the_login(seen)
        assert page.get_by_label("Password", exact=True).count() == 0
        page.close()
