"""The SQLite queue file outside an open store: sizes and companion files, a plain
never-migrating connection (a metrics scrape outside the event loop, backup files),
``taskyard db init``, and a lock holder for demonstrations."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from taskyard.backends.sqlite import schema
from taskyard.backends.sqlite.errors import translate
from taskyard.framework.errors import (
    StoreUnavailable,
)
from taskyard.framework.operations import (
    InitFigures,
)

STEP_PAGES = 1024
"""Pages copied per backup step: 4 MiB with the default page size."""


# -- files --------------------------------------------------------------------------------


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


def require_file(path: Path) -> None:
    """Raise StoreUnavailable when there is no database file at ``path``."""
    if not path.exists():
        raise StoreUnavailable(
            f"there is no queue database at {path}: nothing was scheduled there yet, or "
            "task_execution.queue_db_path names another file"
        )
    schema.check_header(path)


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


def hold_exclusive_lock(
    path: Path, *, seconds: float, locked: threading.Event, release: threading.Event
) -> None:
    """Hold an exclusive lock on the database for ``seconds`` (or until ``release`` is
    set), as a long writer or a stuck process would; sets ``locked`` once it holds it (or
    failed to). Blocks: run it in a thread. For demonstrations of the fallback."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(seconds)
        conn.execute("COMMIT")
    finally:
        locked.set()
        conn.close()


def init_file(
    path: str | os.PathLike[str], *, synchronous: str = "NORMAL", busy_timeout: float = 5.0
) -> InitFigures:
    """Create the queue database at ``path``, or upgrade it to this taskyard's schema;
    idempotent. Refuses (SchemaError) a file that is not a taskyard queue, unchanged."""
    target = Path(path)
    existed = target.exists() and target.stat().st_size > 0
    schema.prepare_file(target)
    try:
        conn = sqlite3.connect(target, isolation_level=None, timeout=busy_timeout)
    except sqlite3.Error as exc:
        raise translate(exc, target) from exc
    try:
        before = schema.stored_version(conn, target)
        applied = schema.open_queue(
            conn, target, synchronous=synchronous, busy_timeout=busy_timeout
        )
    except sqlite3.Error as exc:
        raise translate(exc, target) from exc
    finally:
        conn.close()
    return InitFigures(
        location=str(target),
        created=not existed or before == 0,
        from_version=before,
        to_version=schema.SCHEMA_VERSION,
        applied=applied,
    )
