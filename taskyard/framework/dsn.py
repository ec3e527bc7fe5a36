"""Showing a PostgreSQL DSN without its password: in logs, errors, ``taskyard settings``
and ``status``. One helper, used by the settings and the postgres backend alike."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_KEYS = frozenset({"password", "passfile", "sslpassword"})
_KEYWORD_SECRET = re.compile(r"(?i)\b(password|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def redact_dsn(dsn: str) -> str:
    """The DSN with every secret replaced by ``***``: the password of the URL's user
    part, ``password=`` (and ``sslpassword=``) in its query string, and the same keys
    in a ``key=value`` connection string. Anything unparsable is hidden whole."""
    text = str(dsn)
    if "://" not in text:
        return _KEYWORD_SECRET.sub(lambda match: f"{match[1]}=***", text)
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return "<a PostgreSQL DSN that cannot be parsed; not shown>"
    netloc = parts.netloc
    if password is not None or "@" in netloc:
        user = parts.username or ""
        hosts = netloc.rsplit("@", 1)[-1]
        if password is not None:
            netloc = f"{user}:***@{hosts}"
        else:
            netloc = f"{user}@{hosts}" if user else hosts
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in _SECRET_KEYS for key, _ in pairs):
            query = urlencode(
                [(key, "***" if key.lower() in _SECRET_KEYS else value) for key, value in pairs],
                safe="*",
            )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
