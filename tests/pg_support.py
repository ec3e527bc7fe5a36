"""The PostgreSQL server the postgres tests use, and a fresh database per test module.

The server is the one at 127.0.0.1:5432 (trust auth, database ``test``), or the one
``TEST_POSTGRES_DSN`` names (a DSN of an existing database the tests may create
databases from). Without a server the tests skip, saying how to run them; with
``CI=true`` a missing server fails them instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

ADMIN_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
HOW_TO_RUN = (
    "PostgreSQL is not answering at {dsn} ({error}). To run the postgres tests, start a "
    "PostgreSQL 13+ server there with trust authentication for local TCP and a database "
    "named test (for example `apt-get install postgresql`, then `createdb test` as the "
    "postgres user), or point TEST_POSTGRES_DSN at a database on a server where the user "
    "may CREATE DATABASE."
)


def run_sync(make: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine to completion in a thread of its own (callers may be inside a
    running event loop: async fixtures, tests)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result()  # type: ignore[arg-type]


def _probe() -> str | None:
    """None when the server answers, else why not."""
    try:
        import asyncpg
    except ImportError as exc:  # pragma: no cover - the test extra has it
        return f"asyncpg is not installed ({exc}); pip install -e '.[test]'"

    async def run() -> None:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=3)
        await conn.close()

    try:
        run_sync(run)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


_state: dict[str, str | None] = {}


def require_postgres() -> None:
    """Skip (or, under CI=true, fail) the calling test when no server answers."""
    if "error" not in _state:
        _state["error"] = _probe()
    error = _state["error"]
    if error is None:
        return
    message = HOW_TO_RUN.format(dsn=ADMIN_DSN, error=error)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def dsn_for(database: str) -> str:
    parts = urlsplit(ADMIN_DSN)
    return urlunsplit(parts._replace(path=f"/{database}"))


def admin(sql: str) -> None:
    """Run one statement on the admin database (CREATE/DROP DATABASE)."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run_sync(run)


def create_database() -> tuple[str, str]:
    """A new empty database: (name, dsn)."""
    name = f"taskyard_test_{uuid.uuid4().hex[:12]}"
    admin(f'CREATE DATABASE "{name}"')
    return name, dsn_for(name)


def drop_database(name: str) -> None:
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    """The DSN of a database made for this test module (dropped afterwards)."""
    require_postgres()
    name, dsn = create_database()
    try:
        yield dsn
    finally:
        drop_database(name)


def schema_for(location: object) -> str:
    """A schema name for a storage location (the contract suite reopens by location)."""
    return "t_" + uuid.uuid5(uuid.NAMESPACE_URL, str(location)).hex[:20]
