"""Access control for a shared instance: open for local use, OIDC login or a shared password when configured.

Configured in `.streamlit/secrets.toml` (never in the URL):

    [access]
    mode = "oidc"                       # or "password"; absent section = open (local use)
    allowed_emails = ["ada@lab.org", "@lab.org"]   # exact addresses or whole domains; empty = any
    editors = ["ada@lab.org"]           # who may annotate (same forms); empty = everyone let in
    password = "..."                    # password mode only
    cookie_secret = "..."               # password mode: signs the login cookie (absent: login per tab)
    session_hours = 12                  # password mode: how long that cookie keeps a browser logged in
    revocations = "/var/lib/pure/revoked"  # password mode: keep logouts on disk (absent: in memory)
    behind_proxy = false                # true: limit attempts per X-Forwarded-For client, not per socket

    [auth]                              # OIDC mode: Streamlit's st.login settings (needs Authlib)
    redirect_uri = "https://explorer.lab.org/oauth2callback"
    cookie_secret = "..."
    client_id = "..."
    client_secret = "..."
    server_metadata_url = "https://accounts.example.org/.well-known/openid-configuration"

Password mode is a shared password plus a self-declared e-mail (the allow-list only filters what people
type); OIDC is the way to real identities. Failed passwords are limited per client with exponential back-off
(`AttemptLimiter`), compared in constant time, and a successful login sets a signed cookie
(`AccessPolicy.session_token`: HMAC-SHA256 over e-mail and expiry, keyed by the cookie secret and the
password), so a reload or a shared link in a new tab stays logged in until it expires or the user logs out.
Logging out revokes that cookie on the server (`RevokedTokens`): a copy of it admits nobody afterwards. The
revocations live in the server process, or, with ``revocations``, in a folder that every server process on
the host shares and that outlives a restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from secrets import token_urlsafe
from typing import Any, Literal

import streamlit as st

from app.safe_text import code

Mode = Literal["open", "oidc", "password"]
SESSION_COOKIE = "pure_explorer_session"
DEFAULT_SESSION_HOURS = 12.0
MAX_EMAIL_CHARS = 254  # RFC 5321's limit on a forward path
MAX_PASSWORD_CHARS = 1024


@dataclass(frozen=True)
class AccessPolicy:
    """Who may see the app: everyone (`open`), an OIDC login or a shared password; an e-mail allow-list."""

    mode: Mode = "open"
    allowed_emails: frozenset[str] = frozenset()
    password: str | None = None
    cookie_secret: str | None = None
    session_s: float = DEFAULT_SESSION_HOURS * 3600
    behind_proxy: bool = False
    editors: frozenset[str] = frozenset()
    revocations: str | None = None

    @classmethod
    def from_secrets(cls, secrets: Mapping[str, Any]) -> AccessPolicy:
        access = dict(secrets.get("access", {}) or {})
        mode = access.get("mode", "open")
        if mode not in ("open", "oidc", "password"):
            raise ValueError(f"[access] mode must be 'open', 'oidc' or 'password', not {mode!r}")
        if mode == "password" and not access.get("password"):
            raise ValueError("[access] mode = 'password' needs [access] password in secrets.toml")
        if mode == "oidc" and "auth" not in secrets:
            raise ValueError(
                "[access] mode = 'oidc' needs an [auth] section (st.login settings) in secrets.toml"
            )
        emails = _email_list(access.get("allowed_emails", []))
        hours = access.get("session_hours", DEFAULT_SESSION_HOURS)
        if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours <= 24 * 366:
            raise ValueError(f"[access] session_hours must be a number of hours above 0, not {hours!r}")
        revocations = access.get("revocations")
        if revocations is not None:
            _check_revocations_folder(revocations)
        return cls(
            mode=mode,
            allowed_emails=emails,
            password=access.get("password"),
            cookie_secret=access.get("cookie_secret") or None,
            session_s=float(hours) * 3600,
            behind_proxy=bool(access.get("behind_proxy", False)),
            editors=_email_list(access.get("editors", [])),
            revocations=revocations,
        )

    def email_allowed(self, email: str | None) -> bool:
        """True when `email` is listed (or its `@domain` is), or when no allow-list is configured."""
        return _listed(email, self.allowed_emails)

    def may_edit(self, email: str | None) -> bool:
        """Whether an admitted visitor may annotate: on a protected instance, those on ``editors`` (everyone
        let in when it is empty); on an open instance, everyone (`app.annotations` may switch it off)."""
        if self.mode == "open":
            return True
        return self.email_allowed(email) and _listed(email, self.editors)

    def password_matches(self, attempt: str) -> bool:
        """Constant-time comparison (of digests, so that not even the password's length leaks)."""
        if self.password is None:
            return False
        digest = hashlib.sha256
        return hmac.compare_digest(digest(attempt.encode()).digest(), digest(self.password.encode()).digest())

    def _cookie_key(self) -> bytes:
        """The signing key: the cookie secret mixed with the password, so a new password ends every login."""
        return hmac.new(
            str(self.cookie_secret).encode(), str(self.password).encode(), hashlib.sha256
        ).digest()

    def session_token(self, email: str, now: float) -> str | None:
        """A login cookie's value for ``email``, valid `session_s` from ``now`` (epoch seconds):
        ``<e-mail, base64url>.<expiry>.<nonce>.<HMAC-SHA256 hex>``, the nonce making each login's cookie its
        own (to revoke one, `RevokedTokens`); None without a cookie secret."""
        if self.cookie_secret is None:
            return None
        name = base64.urlsafe_b64encode(email.encode()).decode().rstrip("=")
        payload = f"{name}.{int(now + self.session_s)}.{token_urlsafe(9)}"
        return f"{payload}.{hmac.new(self._cookie_key(), payload.encode(), hashlib.sha256).hexdigest()}"

    def token_email(self, token: object, now: float) -> str | None:
        """The e-mail a login cookie vouches for at ``now``: None unless its signature is this instance's, it
        has not expired and the e-mail is (still) allowed."""
        if self.cookie_secret is None or not isinstance(token, str) or len(token) > 1024:
            return None
        payload, _, signature = token.rpartition(".")
        name, _, rest = payload.partition(".")
        expiry = rest.partition(".")[0]  # the nonce follows
        expected = hmac.new(self._cookie_key(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return None
        try:
            email = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
            alive = int(expiry) > now
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        return email if alive and self.email_allowed(email) else None


class AttemptLimiter:
    """Failed logins per client, shared by all sessions of the process (thread-safe): after
    ``free_failures`` failures, a client must wait ``base_delay_s * 2**(n - free_failures)`` seconds (at most
    ``max_delay_s``) after its n-th failure before the next attempt counts; a success clears its record."""

    def __init__(
        self,
        free_failures: int = 3,
        base_delay_s: float = 1.0,
        max_delay_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.clock = clock
        self._failures: dict[str, tuple[int, float]] = {}  # client -> (failures, time of the last one)
        self._lock = threading.Lock()

    def wait_s(self, client: str) -> float:
        """Seconds ``client`` must still wait before its next attempt counts (0 when it may try now)."""
        with self._lock:
            failures, last = self._failures.get(client, (0, 0.0))
        if failures < self.free_failures:
            return 0.0
        delay = min(self.max_delay_s, self.base_delay_s * 2 ** (failures - self.free_failures))
        return max(0.0, last + delay - self.clock())

    def failed(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            forget = [c for c, (_, last) in self._failures.items() if now - last > 2 * self.max_delay_s]
            for stale in forget:  # keeps the table small under many clients
                del self._failures[stale]
            failures, _ = self._failures.get(client, (0, now))
            self._failures[client] = (failures + 1, now)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


LOGIN_ATTEMPTS = AttemptLimiter()


class RevokedTokens:
    """Login cookies whose owner logged out before they expired (thread-safe): a copy of the cookie (another
    browser, a leaked header) admits nobody afterwards. Each is kept until it would have expired anyway.

    Kept in memory by default: shared by the sessions of one server process, forgotten on a restart (a copied
    cookie then works until its own expiry, at most ``session_hours`` after its login). With ``directory``,
    kept in a diskcache (SQLite) there: shared by every server process on the host and kept across restarts.
    Only a digest of each cookie is stored."""

    def __init__(self, clock: Callable[[], float] = time.time, directory: str | Path | None = None) -> None:
        self.clock = clock
        self._until: dict[str, float] = {}  # digest -> when its cookie expires by itself
        self._lock = threading.Lock()
        self._disk = None
        if directory is not None:
            import diskcache

            self._disk = diskcache.Cache(str(Path(directory).expanduser()))

    def revoke(self, token: str, until: float) -> None:
        """Refuse ``token`` from now until ``until`` (epoch seconds); forgets those past their time."""
        now, key = self.clock(), _digest(token)
        if self._disk is not None:
            self._disk.set(key, True, expire=max(until - now, 0.0))
            return
        with self._lock:
            self._until = {t: end for t, end in self._until.items() if end > now}
            self._until[key] = until

    def __contains__(self, token: object) -> bool:
        if not isinstance(token, str):
            return False
        if self._disk is not None:
            return _digest(token) in self._disk
        with self._lock:
            return self._until.get(_digest(token), -math.inf) > self.clock()

    def __len__(self) -> int:
        if self._disk is not None:
            self._disk.expire()
            return len(self._disk)
        with self._lock:
            return len(self._until)


def _check_revocations_folder(value: Any) -> None:
    """`ValueError` unless ``value`` is a folder path the server can create and write (the message names no
    path: visitors see it)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"[access] revocations must be a folder path, not {value!r}")
    _check_writable_folder(value)


@cache  # once per path: the policy is read on every script run (a failed check is tried again next time)
def _check_writable_folder(path: str) -> None:
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        raise ValueError("[access] revocations: the server cannot create that folder") from None
    if not os.access(folder, os.W_OK):
        raise ValueError("[access] revocations: the server cannot write in that folder")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@cache
def revoked_tokens(directory: str | None = None) -> RevokedTokens:
    """The process's `RevokedTokens` for ``[access] revocations`` (None: in memory)."""
    return RevokedTokens(directory=directory)


def _email_list(values: Any) -> frozenset[str]:
    """An allow-list from secrets.toml: exact addresses and ``@domain`` entries, lower-case."""
    if isinstance(values, str):
        values = [values]
    return frozenset(str(e).strip().lower() for e in values or [] if str(e).strip())


def _listed(email: str | None, listed: frozenset[str]) -> bool:
    """``email`` (or its ``@domain``) is in ``listed``; any e-mail when ``listed`` is empty."""
    if not listed:
        return True
    if not email:
        return False
    email = email.strip().lower()
    return email in listed or "@" + email.rsplit("@", 1)[-1] in listed


def visitor() -> tuple[str, bool]:
    """(who the admitted visitor is, whether they may annotate): the OIDC e-mail or the name given at the
    password login, ``"local"`` on an open instance; call after `require_access`."""
    try:
        policy = AccessPolicy.from_secrets(instance_secrets())
    except ValueError:
        return "", False
    email = _admitted_email(policy)
    if email is None:
        return "", False
    return (email or "local"), policy.may_edit(email)


def instance_secrets() -> Mapping[str, Any]:
    """The instance's `.streamlit/secrets.toml` as a dict (empty without one)."""
    try:
        return st.secrets.to_dict()
    except (FileNotFoundError, st.errors.StreamlitSecretNotFoundError):
        return {}


def _admitted_email(policy: AccessPolicy) -> str | None:
    """The e-mail of the visitor this policy lets in now ("" on an open instance); None while not admitted.
    In password mode a valid login cookie admits a new session (a reload, a new tab) unless it logged out."""
    if policy.mode == "open":
        return ""
    if policy.mode == "oidc":
        if not st.user.is_logged_in:
            return None
        email = st.user.get("email") or ""
        return email if policy.email_allowed(email) else None
    revoked = revoked_tokens(policy.revocations)
    if st.session_state.get("access_token") in revoked:  # logged out in another tab or browser
        _log_out_of_password(policy)
    email = st.session_state.get("access_email")
    if email is None and not st.session_state.get("access_logged_out"):
        token = st.context.cookies.get(SESSION_COOKIE)
        email = None if token in revoked else policy.token_email(token, time.time())
        if email is not None:
            st.session_state["access_email"] = email
            st.session_state["access_token"] = token
    return email


def _log_out_of_password(policy: AccessPolicy) -> None:
    """Forget the login in this session, revoke its cookie (`revoked_tokens`: copies of it are refused too)
    and have the page delete it (this session, having read the cookie when it connected, ignores it from now
    on)."""
    token = st.session_state.pop("access_token", None)
    if token is not None:
        revoked_tokens(policy.revocations).revoke(token, until=time.time() + policy.session_s)
    st.session_state.pop("access_email", None)
    st.session_state["access_logged_out"] = True
    st.session_state["access_cookie"] = ""


def _write_pending_cookie(policy: AccessPolicy) -> None:
    """Set (after a login) or delete (after a logout) the login cookie from the page: a Streamlit script
    cannot set response headers, so a tiny script in the page does it. Not HttpOnly, hence
    ``SameSite=Strict`` and ``Secure`` on HTTPS; the value holds only characters safe in a JS string."""
    value = st.session_state.pop("access_cookie", None)
    if value is None:
        return
    max_age_s = int(policy.session_s) if value else 0
    st.html(
        f"<script>document.cookie = '{SESSION_COOKIE}={value}; Max-Age={max_age_s}; Path=/; SameSite=Strict'"
        " + (location.protocol === 'https:' ? '; Secure' : '');</script>",
        unsafe_allow_javascript=True,
    )


def is_admitted() -> bool:
    """Whether this visitor may see the app now; renders nothing (`require_access` shows the login)."""
    try:
        return _admitted_email(AccessPolicy.from_secrets(instance_secrets())) is not None
    except ValueError:
        return False


def require_access() -> None:
    """Render the login for protected instances and stop the script until the visitor is allowed in."""
    try:
        policy = AccessPolicy.from_secrets(instance_secrets())
    except ValueError as error:
        st.error(f"This instance's access control is misconfigured: {error}")
        st.stop()
    email = _admitted_email(policy)
    if email is None:
        _login(policy)
    elif policy.mode == "oidc":
        with st.sidebar:
            st.caption(f"Signed in as {code(email)}")
            st.button("Log out", on_click=st.logout)
    elif policy.mode == "password":
        with st.sidebar:
            st.caption(f"Signed in as {code(email)} (self-declared: the password is shared)")
            st.button("Log out", on_click=_log_out_of_password, args=(policy,))
            _write_pending_cookie(policy)


def login_field(value: object, max_chars: int) -> str:
    """A login field's value as the client sent it: anything but a string (a forged widget state over the
    websocket) counts as empty, and an over-long string is cut, so no value can crash the login."""
    return value[:max_chars] if isinstance(value, str) else ""


def _client(policy: AccessPolicy) -> str:
    """Whom failed attempts are counted against: the client address (behind a proxy, the last
    X-Forwarded-For entry, which the proxy wrote), else this session (on localhost Streamlit knows none)."""
    forwarded = st.context.headers.get("X-Forwarded-For") if policy.behind_proxy else None
    address = forwarded.split(",")[-1].strip() if isinstance(forwarded, str) else st.context.ip_address
    if isinstance(address, str) and address:
        return "ip:" + address
    return "session:" + st.session_state.setdefault("access_client", uuid.uuid4().hex)


def _check_password(policy: AccessPolicy, email: str, attempt: str) -> None:
    """One submitted login: admit and rerun, or say why not (also while the client must wait)."""
    client = _client(policy)
    wait_s = LOGIN_ATTEMPTS.wait_s(client)
    if wait_s > 0:
        st.error(f"Too many failed attempts; try again in {math.ceil(wait_s)} s.", icon=":material/timer:")
        return
    if policy.password_matches(attempt) and policy.email_allowed(email):
        LOGIN_ATTEMPTS.succeeded(client)
        email = email.strip().lower()
        st.session_state["access_email"] = email
        st.session_state.pop("access_logged_out", None)
        token = policy.session_token(email, time.time())
        if token is not None:
            st.session_state["access_cookie"] = token  # to write from the page
            st.session_state["access_token"] = token  # to revoke at logout
        st.rerun()
    LOGIN_ATTEMPTS.failed(client)
    st.error("Wrong password, or this e-mail is not on the allow-list.")


def _login(policy: AccessPolicy) -> None:
    """The login of a protected instance (and nothing else); stops the script."""
    if policy.mode == "oidc" and st.user.is_logged_in:
        st.error(f"{code(st.user.get('email'))} is not on this instance's allow-list.")
        st.button("Log out", on_click=st.logout)
    elif policy.mode == "oidc":
        st.title("PURE neuron explorer")
        st.write("This instance is shared with a research group. Log in to continue.")
        st.button("Log in", on_click=st.login, type="primary")
    else:
        st.title("PURE neuron explorer")
        _write_pending_cookie(policy)
        with st.form("login"):
            # no max_chars: Streamlit would slice a forged non-string value and crash before this code;
            # `login_field` bounds the values instead
            email = st.text_input("E-mail", key="login_email")
            attempt = st.text_input("Password", type="password", key="login_password")
            submitted = st.form_submit_button("Log in", type="primary")
        st.caption(
            "The password is shared by the group; the e-mail is self-declared and only checked against the "
            "allow-list, not verified. Instances that need real identities use an OIDC login."
        )
        if submitted is True:
            _check_password(
                policy, login_field(email, MAX_EMAIL_CHARS), login_field(attempt, MAX_PASSWORD_CHARS)
            )
    st.stop()
