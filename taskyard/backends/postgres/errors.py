"""The one place where asyncpg's errors become taskyard errors.

Every store call goes through :func:`translate` (``raise translate(exc, where) from
exc``); messages name the server by its redacted DSN, never with its password.
"""

from __future__ import annotations

import asyncio

import asyncpg

from taskyard.framework.errors import (
    ConfigurationError,
    IntegrityError,
    StoreError,
    StoreFull,
    StoreUnavailable,
    TaskyardError,
)

# SQLSTATE classes and codes that mean "not now": the server is away, restarting, out
# of connections, or the statement was cancelled; the caller retries later.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "40", "25", "55")
_CONFIGURATION = {
    "28000": "the server refused the role (check the user in task_execution.postgres_dsn)",
    "28P01": "the password was refused (check task_execution.postgres_dsn)",
    "3D000": "the database does not exist; create it (createdb) or fix task_execution.postgres_dsn",
    "42501": "the role lacks a privilege taskyard needs (CREATE on the database, or USAGE "
    "and CREATE on task_execution.postgres_schema)",
}

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.InternalClientError,
)
"""What a lost or unreachable server raises, besides server errors with an 08/57 code."""


def translate(exc: BaseException, where: str = "the PostgreSQL queue") -> TaskyardError:
    """The taskyard error for a driver error (returned, for ``raise ... from exc``).

    ``where`` names the queue (the redacted DSN and schema); it is the only place a
    server is named, so no password can reach a message."""
    if isinstance(exc, TaskyardError):
        return exc
    text = f"{type(exc).__name__}: {exc}".strip()
    if isinstance(exc, asyncpg.PostgresError):
        code = str(getattr(exc, "sqlstate", "") or "")
        if code == "53100":
            return StoreFull(
                f"{where}: the server's disk is full ({text}); free space on the database "
                "server. Tasks already accepted are kept."
            )
        if code in _CONFIGURATION:
            return ConfigurationError(f"{where}: {_CONFIGURATION[code]} ({text})")
        if code[:2] in _UNAVAILABLE_CLASSES:
            return StoreUnavailable(f"{where}: {text}; retry later")
        if code[:2] == "23":
            return IntegrityError(f"{where}: {text}")
        return StoreError(f"{where}: {text}")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return StoreUnavailable(f"{where}: the server did not answer in time; retry later")
    if isinstance(exc, CONNECTION_ERRORS):
        return StoreUnavailable(f"{where}: cannot reach the server ({text}); retry later")
    return StoreError(f"{where}: {text}")
