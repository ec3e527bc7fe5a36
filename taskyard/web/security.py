"""Who may see and change what: tokens, roles and CSRF protection.

Two tokens, both secrets of the settings (``dashboard.token`` in ``.secrets.toml``):

- the *admin* token sees everything and may act (retry, cancel, purge, pause);
- the *read-only* token (``dashboard.read_only_token``, optional) sees everything and
  changes nothing.

A browser logs in once through ``/?token=...`` (the URL ``taskyard dashboard`` prints);
the token then lives in an HttpOnly, SameSite=Strict cookie. Scripts send
``Authorization: Bearer <token>``. Anything else gets 401.

Every POST carries a CSRF token, an HMAC of the session's token, in its form; one
missing or wrong (or a request from another origin) gets 403.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from enum import StrEnum

from taskyard.framework.errors import ConfigurationError

__all__ = [
    "COOKIE",
    "Role",
    "Tokens",
    "check_bind",
    "csrf_token",
    "is_loopback",
    "new_token",
]

COOKIE = "taskyard_dashboard"


class Role(StrEnum):
    ADMIN = "admin"
    READ_ONLY = "read-only"

    @property
    def can_act(self) -> bool:
        return self is Role.ADMIN


@dataclass(frozen=True)
class Tokens:
    admin: str
    read_only: str = ""

    def role_of(self, presented: str | None) -> Role | None:
        """The role a presented token grants, or None (compared in constant time)."""
        if not presented:
            return None
        given = presented.encode()
        if hmac.compare_digest(given, self.admin.encode()):
            return Role.ADMIN
        if self.read_only and hmac.compare_digest(given, self.read_only.encode()):
            return Role.READ_ONLY
        return None


def new_token() -> str:
    """A fresh random token (printed in the login URL when none is configured)."""
    return secrets.token_urlsafe(24)


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: bound to its token, useless to anyone without it."""
    return hmac.new(session_token.encode(), b"taskyard-dashboard-csrf", hashlib.sha256).hexdigest()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, configured_token: str) -> None:
    """Refuse to serve beyond this machine without a configured token (a generated one
    is printed to the console, which is no way to hand a secret to a team)."""
    if not is_loopback(host) and not configured_token:
        raise ConfigurationError(
            f"the dashboard would listen on {host}, beyond this machine, without a token: "
            "set dashboard.token (at least 16 characters, in .secrets.toml or "
            "TASKYARD_DASHBOARD__TOKEN), or listen on 127.0.0.1"
        )
