"""Access control for a shared instance: open for local use, OIDC login or a shared password when configured.

Configured in `.streamlit/secrets.toml` (never in the URL):

    [access]
    mode = "oidc"                       # or "password"; absent section = open (local use)
    allowed_emails = ["ada@lab.org", "@lab.org"]   # exact addresses or whole domains; empty = any
    password = "..."                    # password mode only

    [auth]                              # OIDC mode: Streamlit's st.login settings (needs Authlib)
    redirect_uri = "https://explorer.lab.org/oauth2callback"
    cookie_secret = "..."
    client_id = "..."
    client_secret = "..."
    server_metadata_url = "https://accounts.example.org/.well-known/openid-configuration"
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import streamlit as st

Mode = Literal["open", "oidc", "password"]


@dataclass(frozen=True)
class AccessPolicy:
    """Who may see the app: everyone (`open`), an OIDC login or a shared password; an e-mail allow-list."""

    mode: Mode = "open"
    allowed_emails: frozenset[str] = frozenset()
    password: str | None = None

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
        emails = frozenset(str(e).strip().lower() for e in access.get("allowed_emails", []) if str(e).strip())
        return cls(mode=mode, allowed_emails=emails, password=access.get("password"))

    def email_allowed(self, email: str | None) -> bool:
        """True when `email` is listed (or its `@domain` is), or when no allow-list is configured."""
        if not self.allowed_emails:
            return True
        if not email:
            return False
        email = email.strip().lower()
        domain = "@" + email.rsplit("@", 1)[-1]
        return email in self.allowed_emails or domain in self.allowed_emails

    def password_matches(self, attempt: str) -> bool:
        return self.password is not None and hmac.compare_digest(attempt.encode(), self.password.encode())


def _secrets() -> Mapping[str, Any]:
    try:
        return st.secrets.to_dict()
    except (FileNotFoundError, st.errors.StreamlitSecretNotFoundError):
        return {}


def _admitted_email(policy: AccessPolicy) -> str | None:
    """The e-mail of the visitor this policy lets in now ("" on an open instance); None while not admitted."""
    if policy.mode == "open":
        return ""
    if policy.mode == "oidc":
        if not st.user.is_logged_in:
            return None
        email = st.user.get("email") or ""
        return email if policy.email_allowed(email) else None
    return st.session_state.get("access_email")


def _log_out_of_password() -> None:
    st.session_state.pop("access_email", None)


def is_admitted() -> bool:
    """Whether this visitor may see the app now; renders nothing (`require_access` shows the login)."""
    try:
        return _admitted_email(AccessPolicy.from_secrets(_secrets())) is not None
    except ValueError:
        return False


def require_access() -> None:
    """Render the login for protected instances and stop the script until the visitor is allowed in."""
    try:
        policy = AccessPolicy.from_secrets(_secrets())
    except ValueError as error:
        st.error(f"This instance's access control is misconfigured: {error}")
        st.stop()
    email = _admitted_email(policy)
    if email is None:
        _login(policy)
    elif policy.mode != "open":
        with st.sidebar:
            st.caption(f"Signed in as {email}")
            st.button("Log out", on_click=st.logout if policy.mode == "oidc" else _log_out_of_password)


def _login(policy: AccessPolicy) -> None:
    """The login of a protected instance (and nothing else); stops the script."""
    if policy.mode == "oidc" and st.user.is_logged_in:
        st.error(f"{st.user.get('email')} is not on this instance's allow-list.")
        st.button("Log out", on_click=st.logout)
    elif policy.mode == "oidc":
        st.title("PURE neuron explorer")
        st.write("This instance is shared with a research group. Log in to continue.")
        st.button("Log in", on_click=st.login, type="primary")
    else:
        st.title("PURE neuron explorer")
        with st.form("login"):
            email = st.text_input("E-mail", key="login_email")
            attempt = st.text_input("Password", type="password", key="login_password")
            submitted = st.form_submit_button("Log in", type="primary")
        if submitted:
            if policy.password_matches(attempt) and policy.email_allowed(email):
                st.session_state["access_email"] = email.strip().lower()
                st.rerun()
            st.error("Wrong password, or this e-mail is not on the allow-list.")
    st.stop()
