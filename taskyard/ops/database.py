"""Opening a queue file for the operations tools.

Two ways in, both with the schema checks and the error translation of the SQLite
backend:

- :func:`open_queue`: a :class:`~taskyard.backends.sqlite.SqliteStore` (an async context
  manager), for everything that writes or that must run in the store's thread:
  ``await store.execute_read(fn, *args)`` runs ``fn(conn, *args)`` outside any
  transaction, ``await store.execute_write(fn)`` runs ``fn(conn)`` in one short
  ``BEGIN IMMEDIATE`` transaction.
- :func:`read_connection`: a plain ``sqlite3`` connection that never writes, for code
  that runs outside an event loop (a metrics scrape in the HTTP server's thread) and
  for checking files that are not the live queue (backups).

Neither creates a missing database: an operations tool pointed at the wrong path says
so instead of leaving an empty queue behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from taskyard.backends.fallback import FallbackStore
from taskyard.backends.sqlite import schema
from taskyard.backends.sqlite.errors import translate
from taskyard.backends.sqlite.store import SqliteStore
from taskyard.framework.errors import StoreUnavailable


def require_file(path: Path) -> None:
    """Raise StoreUnavailable when there is no database file at ``path``."""
    if not path.exists():
        raise StoreUnavailable(
            f"there is no queue database at {path}: nothing was scheduled there yet, or "
            "task_execution.queue_db_path names another file"
        )
    schema.check_header(path)


@contextlib.asynccontextmanager
async def open_queue(
    path: str | os.PathLike[str],
    *,
    busy_timeout: float = 5.0,
    synchronous: str = "NORMAL",
    create: bool = False,
) -> AsyncIterator[SqliteStore]:
    """An open :class:`SqliteStore` on an existing queue file (or a new one when
    ``create``); closed on exit. Raises StoreError subclasses (missing file, not a
    database, a foreign or newer schema)."""
    path = Path(path)
    if not create:
        require_file(path)
    store = SqliteStore(path, synchronous=synchronous, busy_timeout=busy_timeout)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@contextlib.contextmanager
def read_connection(
    path: str | os.PathLike[str], *, busy_timeout: float = 5.0, read_only: bool = False
) -> Iterator[sqlite3.Connection]:
    """A plain connection to an existing taskyard queue file, checked like the store
    checks it (not a database, foreign, too new, mismatched tables), never migrated.

    ``read_only`` opens the file with ``mode=ro``: for a backup copy, which must stay
    exactly as it is. sqlite3 errors raised inside the block become taskyard errors.
    """
    path = Path(path)
    require_file(path)
    try:
        if read_only:
            conn = sqlite3.connect(
                f"{path.absolute().as_uri()}?mode=ro",
                uri=True,
                timeout=busy_timeout,
                isolation_level=None,
            )
        else:
            conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if schema.stored_version(conn, path) == 0:
            raise StoreUnavailable(f"{path} is an empty database, not a taskyard queue yet")
        schema.check_columns(conn, path)
        yield conn
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc
    finally:
        conn.close()


def file_size(path: Path) -> int:
    """The size of ``path`` in bytes, 0 when it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def companion_files(path: Path) -> list[Path]:
    """The database file and the WAL and shared-memory files SQLite keeps beside it."""
    return [path, wal_path(path), path.with_name(path.name + "-shm")]


def spill_files(path: Path) -> dict[Path, int]:
    """Spill files a ``sqlite-with-fallback`` process left for this database (it wrote
    tasks there because SQLite could not take them at its stop), with the number of
    tasks each holds; the next start of that backend imports them."""
    candidates = FallbackStore(SqliteStore(path)).spill_candidates()  # no I/O: just paths
    return {candidate: _spilled_tasks(candidate) for candidate in candidates if candidate.exists()}


def _spilled_tasks(path: Path) -> int:
    try:
        with path.open(encoding="utf-8") as handle:
            header: Any = json.loads(handle.readline() or "{}")
    except (OSError, ValueError):
        return 0
    tasks = header.get("tasks") if isinstance(header, dict) else None
    return tasks if isinstance(tasks, int) else 0
