"""Access control: open locally; OIDC or password with an allow-list when configured."""

import re
import time

import pytest
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import TextInput

from app import auth
from app.auth import SESSION_COOKIE, AccessPolicy, AttemptLimiter, RevokedTokens

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


PASSWORD_SECRETS = {
    "access": {
        "mode": "password",
        "password": "s3cret",
        "allowed_emails": ["@lab.org"],
        "cookie_secret": "a server secret",
        "session_hours": 2,
    }
}


def _log_in(at: AppTest, email: str, password: str) -> AppTest:
    at.text_input(key="login_email").input(email)
    at.text_input(key="login_password").input(password)
    return at.button[0].click().run()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """The process-wide attempt limiter replaced by a fresh one on a clock the test moves."""
    fake = FakeClock()
    monkeypatch.setattr(auth, "LOGIN_ATTEMPTS", AttemptLimiter(clock=fake))
    return fake


def _forged(value_field: str, value: object):
    """A text input's widget state as a raw websocket client could send it: any value field, any value."""

    def widget_state(self) -> WidgetState:
        state = WidgetState(id=self.id)
        if value_field == "json_value":
            state.json_value = value
        else:
            setattr(state, value_field, value)
        return state

    return property(widget_state)


@pytest.mark.parametrize(
    ("value_field", "value"),
    [
        ("int_value", 7),
        ("double_value", 1e308),
        ("bool_value", True),
        ("json_value", '{"a": [1, 2]}'),
        ("bytes_value", b"\xff\x00"),
        ("string_value", "ada@lab.org" + "x" * 5_000_000),
    ],
    ids=["int", "double", "bool", "json", "bytes", "5-MB-string"],
)
def test_forged_login_widget_states_are_refused_without_a_traceback(monkeypatch, clock, value_field, value):
    at = _app(PASSWORD_SECRETS)
    monkeypatch.setattr(TextInput, "_widget_state", _forged(value_field, value))
    at.button[0].click().run()
    assert not at.exception
    assert "PROTECTED CONTENT" not in _markdown(at)
    assert [e.value for e in at.error] == ["Wrong password, or this e-mail is not on the allow-list."]


@pytest.mark.parametrize("value", [7, None, ["s3cret"], {"p": "s3cret"}, b"s3cret", "x" * 10_000])
def test_login_fields_accept_only_bounded_strings(value):
    assert auth.login_field(value, 100) == (value[:100] if isinstance(value, str) else "")


def test_failed_passwords_back_off_per_client_even_for_the_right_password(clock):
    at = _app(PASSWORD_SECRETS)
    for _ in range(3):  # the free failures
        _log_in(at, "ada@lab.org", "wrong")
        assert at.error[0].value.startswith("Wrong password")
    _log_in(at, "ada@lab.org", "wrong")  # waits 1 s after this fourth failure
    _log_in(at, "ada@lab.org", "s3cret")
    assert "PROTECTED CONTENT" not in _markdown(at) and "try again in 1 s" in at.error[0].value
    other = _app(PASSWORD_SECRETS)  # another client is not held back
    assert "PROTECTED CONTENT" in _markdown(_log_in(other, "bob@lab.org", "s3cret"))
    clock.now += 1.5
    assert "PROTECTED CONTENT" in _markdown(_log_in(at, "ada@lab.org", "s3cret"))


def test_attempt_limiter_doubles_the_wait_up_to_its_cap_and_forgets_on_success():
    clock = FakeClock()
    limiter = AttemptLimiter(free_failures=2, base_delay_s=1.0, max_delay_s=8.0, clock=clock)
    waits = []
    for _ in range(7):
        limiter.failed("a")
        waits.append(limiter.wait_s("a"))
    assert waits == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert limiter.wait_s("b") == 0.0
    clock.now += 5
    assert limiter.wait_s("a") == 3.0
    limiter.succeeded("a")
    assert limiter.wait_s("a") == 0.0


def test_the_password_is_compared_in_constant_time(monkeypatch):
    compared = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    policy = AccessPolicy(mode="password", password="s3cret")
    assert policy.password_matches("s3cret") and not policy.password_matches("s3cre")
    assert len(compared) == 2 and all(len(a) == len(b) == 32 for a, b in compared)


def test_session_token_is_signed_expires_and_follows_the_secret_password_and_allow_list():
    policy = AccessPolicy.from_secrets(PASSWORD_SECRETS)
    token = policy.session_token("ada@lab.org", now=1_000.0)
    assert policy.token_email(token, now=1_000.0 + 2 * 3600 - 1) == "ada@lab.org"
    assert policy.token_email(token, now=1_000.0 + 2 * 3600) is None  # expired
    name, expiry, nonce, signature = token.split(".")
    assert policy.session_token("ada@lab.org", now=1_000.0) != token  # each login's cookie is its own
    forged = [
        f"{name}.{int(expiry) + 10**6}.{nonce}.{signature}",  # a later expiry
        f"{name}.{expiry}.{nonce[::-1]}.{signature}",  # another nonce
        token.replace(name, "ZXZlQGxhYi5vcmc"),  # another e-mail (eve@lab.org)
        f"{name}.{expiry}.{nonce}.{'0' * 64}",
        "",
        "a.b",
        "x" * 5000,
        None,
    ]
    assert [policy.token_email(t, now=1_000.0) for t in forged] == [None] * len(forged)
    for other in (
        AccessPolicy(**{**policy.__dict__, "cookie_secret": "another secret"}),
        AccessPolicy(**{**policy.__dict__, "password": "a new password"}),
        AccessPolicy(**{**policy.__dict__, "allowed_emails": frozenset({"@other.org"})}),
    ):
        assert other.token_email(token, now=1_000.0) is None
    assert AccessPolicy(mode="password", password="p").session_token("ada@lab.org", 0.0) is None


def test_login_sets_the_signed_cookie_from_the_page_and_logout_deletes_it(clock):
    at = _log_in(_app(PASSWORD_SECRETS), "Ada@lab.org", "s3cret")
    assert "PROTECTED CONTENT" in _markdown(at)
    [script] = [h.proto.body for h in at.sidebar.get("html")]
    token = re.search(
        rf"document.cookie = '{SESSION_COOKIE}=([^;]+); Max-Age=7200; Path=/; SameSite=Strict", script
    )
    policy, now = AccessPolicy.from_secrets(PASSWORD_SECRETS), time.time()
    assert policy.token_email(token.group(1), now) == "ada@lab.org"
    assert policy.token_email(token.group(1), now + 7201) is None
    assert not at.run().sidebar.get("html")  # written once
    at.sidebar.button[0].click().run()  # log out
    assert "PROTECTED CONTENT" not in _markdown(at)
    [script] = [h.proto.body for h in at.get("html")]
    assert f"document.cookie = '{SESSION_COOKIE}=; Max-Age=0;" in script


def test_revoked_tokens_are_refused_until_they_would_have_expired_and_then_forgotten():
    clock = FakeClock()
    revoked = RevokedTokens(clock=clock)
    revoked.revoke("a.1.n.sig", until=clock.now + 60)
    assert "a.1.n.sig" in revoked and "b.1.n.sig" not in revoked and None not in revoked
    clock.now += 60
    assert "a.1.n.sig" not in revoked  # it has expired by itself: nothing left to refuse
    revoked.revoke("b.1.n.sig", until=clock.now + 60)
    assert len(revoked) == 1  # the lapsed one was dropped, so the list stays as long as the live logouts


def _cookie_set_by(at: AppTest) -> str:
    """The login cookie's value that the page was told to set after ``at``'s login."""
    [script] = [h.proto.body for h in at.sidebar.get("html")]
    return re.search(rf"{SESSION_COOKIE}=([^;]+);", script).group(1)


def test_logging_out_revokes_the_cookie_and_ends_every_session_admitted_with_it(clock):
    auth.revoked_tokens.cache_clear()  # a fresh in-memory list
    at = _log_in(_app(PASSWORD_SECRETS), "ada@lab.org", "s3cret")
    other = _log_in(_app(PASSWORD_SECRETS), "ada@lab.org", "s3cret")  # another tab, its own cookie
    token, other_token = _cookie_set_by(at), _cookie_set_by(other)
    at.sidebar.button[0].click().run()  # log out
    revoked = auth.revoked_tokens(None)
    assert token in revoked and other_token not in revoked
    assert "PROTECTED CONTENT" in _markdown(other.run())  # other logins stand
    revoked.revoke(other_token, until=time.time() + 60)  # its owner logs out in another tab
    assert "PROTECTED CONTENT" not in _markdown(other.run())
    assert other.button[0].label == "Log in"


def test_revocations_in_a_folder_outlive_the_process_and_hold_no_cookie(clock, tmp_path):
    folder = tmp_path / "revoked"
    secrets = {"access": {**PASSWORD_SECRETS["access"], "revocations": str(folder)}}
    at = _log_in(_app(secrets), "ada@lab.org", "s3cret")
    token = _cookie_set_by(at)
    at.sidebar.button[0].click().run()  # log out
    restarted = RevokedTokens(directory=folder)  # another server process, or this one after a restart
    assert token in restarted and len(restarted) == 1 and token not in auth.revoked_tokens(None)
    assert not any(token.encode() in f.read_bytes() for f in folder.rglob("*") if f.is_file())
    restarted.revoke("b.1.n.sig", until=time.time() - 1)  # already expired by itself: nothing to refuse
    assert "b.1.n.sig" not in restarted and len(restarted) == 1
    with pytest.raises(ValueError, match="revocations must be a folder path"):
        AccessPolicy.from_secrets({"access": {**PASSWORD_SECRETS["access"], "revocations": 3}})
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="cannot create that folder") as error:
        AccessPolicy.from_secrets({"access": {**PASSWORD_SECRETS["access"],
                                              "revocations": str(tmp_path / "a-file" / "revoked")}})
    assert str(tmp_path) not in str(error.value)


def test_password_login_says_the_email_is_self_declared():
    at = _app(PASSWORD_SECRETS)
    assert "self-declared" in " ".join(c.value for c in at.caption) and "OIDC" in at.caption[0].value
    _log_in(at, "ada@lab.org", "s3cret")
    assert "self-declared" in " ".join(c.value for c in at.sidebar.caption)


def test_crafted_emails_render_as_code_not_markdown(clock):
    crafted = "[log in](http://evil.org)`<img src=x>`@lab.org"
    at = _log_in(_app(PASSWORD_SECRETS), crafted, "s3cret")
    [caption] = [c.value for c in at.sidebar.caption if "Signed in" in c.value]
    assert "``" in caption and crafted.lower() in caption
