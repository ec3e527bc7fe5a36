"""The SQLite queue file's part of ``taskyard validate``: the file, its schema version, WAL
mode and integrity, then the task counts and worker records, all read on a plain
connection that never creates, migrates or reconfigures the file (validating changes
nothing). The verdicts' wording and the report live in :mod:`taskyard.ops.validate`."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskyard.backends.sqlite import schema
from taskyard.backends.sqlite.errors import translate
from taskyard.backends.sqlite.queries import count_by_status, workers
from taskyard.framework.errors import ConfigurationError, SchemaError, StoreError
from taskyard.framework.operations import WorkerRecord

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"

AddCheck = Callable[..., Any]
"""``add(name, status, detail, **data)``: records one check's verdict."""


@dataclass(frozen=True)
class FileReading:
    """What the file holds, read once its checks passed."""

    counts: dict[str, int]
    due: int
    workers: list[WorkerRecord]


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection that never creates the file."""
    try:
        return sqlite3.connect(
            f"{path.absolute().as_uri()}?mode=rw",
            uri=True,
            timeout=busy_timeout,
            isolation_level=None,
        )
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc


def _check_file(add: AddCheck, path: Path) -> bool:
    if not path.exists():
        add("file", FAIL, f"there is no database at {path}; create it: taskyard db init")
        return False
    try:
        schema.check_header(path)
    except (SchemaError, ConfigurationError, StoreError) as exc:
        add("file", FAIL, str(exc))
        return False
    problems = []
    if not os.access(path, os.R_OK | os.W_OK):
        problems.append(f"{path} is not readable and writable by this user")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        problems.append(f"its folder {path.parent} is not writable (SQLite keeps its WAL there)")
    size = path.stat().st_size
    wal = path.with_name(path.name + "-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0
    if problems:
        add("file", FAIL, "; ".join(problems), size=size, wal_size=wal_size)
        return False
    add("file", OK, f"{size:,} bytes (WAL {wal_size:,} bytes)", size=size, wal_size=wal_size)
    return True


def _check_schema(add: AddCheck, conn: sqlite3.Connection, path: Path) -> bool:
    try:
        version = schema.stored_version(conn, path)
        if version == 0:
            add("schema", FAIL, "an empty database, not a taskyard queue yet: taskyard db init")
            return False
        if version < schema.SCHEMA_VERSION:
            add(
                "schema",
                FAIL,
                f"schema version {version}; this taskyard uses {schema.SCHEMA_VERSION}: "
                "upgrade it with taskyard db init",
                version=version,
            )
            return False
        schema.check_columns(conn, path)
    except (SchemaError, sqlite3.Error) as exc:
        error = translate(exc, path) if isinstance(exc, sqlite3.Error) else exc
        add("schema", FAIL, str(error))
        return False
    add("schema", OK, f"taskyard queue schema version {version}", version=version)
    return True


def _check_wal(add: AddCheck, conn: sqlite3.Connection) -> None:
    mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    if mode == "wal":
        add("wal", OK, "journal_mode = wal", journal_mode=mode)
    else:
        add(
            "wal",
            FAIL,
            f"journal_mode = {mode}, not wal: readers would block writers and a crash could "
            "tear a commit; taskyard db init switches it",
            journal_mode=mode,
        )


def _check_integrity(add: AddCheck, conn: sqlite3.Connection) -> None:
    started = time.perf_counter()
    rows = [row[0] for row in conn.execute("PRAGMA integrity_check(20)")]
    seconds = time.perf_counter() - started
    if rows == ["ok"]:
        add("integrity", OK, f"integrity_check: ok ({seconds * 1000:.0f} ms)")
    else:
        add(
            "integrity",
            FAIL,
            "integrity_check: "
            + " ".join("; ".join(rows[:5]).split())
            + ": restore the latest backup",
            problems=rows,
        )


def check_database_file(add: AddCheck, path: Path, *, busy_timeout: float) -> FileReading | None:
    """The ``file``, ``schema``, ``wal`` and ``integrity`` checks of the queue file at
    ``path``, each reported through ``add``; then what the file holds. None when a check
    that later ones depend on failed (or the file could not be read)."""
    if not _check_file(add, path):
        return None
    try:
        conn = _connect(path, busy_timeout)
    except StoreError as exc:
        add("schema", FAIL, str(exc))
        return None
    try:
        if not _check_schema(add, conn, path):
            return None
        _check_wal(add, conn)
        _check_integrity(add, conn)
        due = conn.execute(
            "SELECT COUNT(*) FROM taskyard_tasks WHERE status = 'queued' AND run_after <= ?",
            (time.time(),),
        ).fetchone()[0]
        return FileReading(count_by_status(conn), int(due), workers(conn))
    except sqlite3.Error as exc:
        add("database", FAIL, str(translate(exc, path)))
        return None
    finally:
        conn.close()
