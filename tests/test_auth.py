"""Access control: open locally; OIDC or password with an allow-list when configured."""

import pytest
from streamlit.testing.v1 import AppTest

from app.auth import AccessPolicy

PAGE = """
from app.auth import require_access
import streamlit as st
require_access()
st.markdown("PROTECTED CONTENT")
"""
OIDC_SECRETS = {
    "access": {"mode": "oidc", "allowed_emails": ["ada@lab.org", "@group.org"]},
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "x" * 32,
        "client_id": "id",
        "client_secret": "secret",
        "server_metadata_url": "https://idp.invalid/.well-known/openid-configuration",
    },
}


def _markdown(at: AppTest) -> str:
    return " ".join(m.value for m in at.markdown)


def _app(secrets=None, user=None) -> AppTest:
    at = AppTest.from_string(PAGE)
    for key, value in (secrets or {}).items():
        at.secrets[key] = value
    if user is not None:
        at.user = user
    return at.run()


def test_without_access_config_the_app_is_open():
    at = _app()
    assert not at.exception and "PROTECTED CONTENT" in _markdown(at)


def test_oidc_anonymous_visitor_sees_only_the_login():
    at = _app(OIDC_SECRETS, user={"is_logged_in": False})
    assert "PROTECTED CONTENT" not in _markdown(at)
    assert [b.label for b in at.button] == ["Log in"]


@pytest.mark.parametrize(
    ("email", "allowed"), [("ada@lab.org", True), ("bob@group.org", True), ("eve@evil.org", False)]
)
def test_oidc_allow_list(email, allowed):
    at = _app(OIDC_SECRETS, user={"is_logged_in": True, "email": email})
    assert ("PROTECTED CONTENT" in _markdown(at)) is allowed
    if not allowed:
        assert "allow-list" in at.error[0].value


def test_password_mode_gates_until_password_and_email_match():
    secrets = {"access": {"mode": "password", "password": "s3cret", "allowed_emails": ["ada@lab.org"]}}
    at = _app(secrets)
    assert "PROTECTED CONTENT" not in _markdown(at)
    at.text_input(key="login_email").input("ada@lab.org")
    at.text_input(key="login_password").input("wrong")
    at.button[0].click().run()
    assert "PROTECTED CONTENT" not in _markdown(at) and at.error
    at.text_input(key="login_password").input("s3cret")
    at.button[0].click().run()
    assert "PROTECTED CONTENT" in _markdown(at)


def test_misconfiguration_is_reported_not_served():
    at = _app({"access": {"mode": "password"}})
    assert "PROTECTED CONTENT" not in _markdown(at) and "misconfigured" in at.error[0].value


def test_policy_email_rules():
    policy = AccessPolicy(mode="oidc", allowed_emails=frozenset({"ada@lab.org", "@group.org"}))
    assert policy.email_allowed("ADA@lab.org ") and policy.email_allowed("x@group.org")
    assert not policy.email_allowed("x@lab.org") and not policy.email_allowed(None)
    assert AccessPolicy().email_allowed(None)
