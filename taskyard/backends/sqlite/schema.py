"""Opening a queue file: refuse what is not ours, create or upgrade what is.

Everything here runs on a plain ``sqlite3.Connection`` (inside aiosqlite's thread or
in a command-line tool). The checks read before they write: a file that is not SQLite,
a database of another application, or one written by a newer taskyard is refused
with nothing in it changed.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from taskyard._platform import is_network_path, make_private_folder
from taskyard.framework.errors import (
    ConfigurationError,
    DatabaseMoved,
    ForeignDatabase,
    NotADatabase,
    SchemaMismatch,
    SchemaTooNew,
    StoreUnavailable,
)
from taskyard.framework.migrations import Migration, shipped_migrations

SQLITE_HEADER = b"SQLite format 3\x00"
VERSION_TABLE = "taskyard_schema_version"
SYNCHRONOUS_MODES = ("NORMAL", "FULL")


def migrations() -> list[Migration]:
    """The versioned migrations shipped in the package, in order."""
    return shipped_migrations("taskyard.backends.sqlite")


SCHEMA_VERSION = migrations()[-1].version

#: The columns each table must have at the current version.
EXPECTED_COLUMNS = {
    "taskyard_tasks": {
        "seq", "id", "type", "status", "priority", "attempts", "max_attempts", "payload",
        "result", "error", "created_at", "updated_at", "run_after", "started_at",
        "finished_at", "timeout", "idempotency_key", "lease_token", "lease_expires_at",
        "worker_id", "trace_context", "tracebacks", "concurrency_key",
        "on_dependency_failure", "waiting_on", "workflow_id",
    },
    "taskyard_dependencies": {"depends_on", "task_id"},
    "taskyard_runs": {"run_id", "module_id", "status", "created_at", "data"},
    "taskyard_workers": {
        "worker_id", "hostname", "pid", "started_at", "last_heartbeat", "info",
        "stop_requested_at",
    },
    "taskyard_audit": {"seq", "at", "actor", "action", "target", "count", "detail"},
    "taskyard_state": {"key", "value"},
    "taskyard_schedules": {
        "name", "definition", "enabled", "next_fire_at", "last_fire_at", "last_task_id",
        "created_at", "updated_at",
    },
}  # fmt: skip


def journal_path(path: Path, suffix: str) -> Path:
    """The ``-wal`` or ``-shm`` file SQLite keeps next to ``path``."""
    return path.with_name(path.name + suffix)


def prepare_file(path: Path) -> None:
    """Create the parent folder and an empty owner-only file when missing; refuse a file
    that is not SQLite before SQLite touches it."""
    if is_network_path(path):
        raise ConfigurationError(
            f"task_execution.queue_db_path {str(path)!r} is on a network share: SQLite's "
            "locks (and WAL) do not work there, so two processes could corrupt the queue. "
            "Put the file on a local disk, or use the postgres backend to share a queue "
            "between machines."
        )
    try:
        make_private_folder(path.parent)
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot create the folder {path.parent} for the queue database ({exc}); "
            "create it or point task_execution.queue_db_path elsewhere"
        ) from exc
    if not path.exists():
        orphans = [p.name for p in (journal_path(path, "-wal"), journal_path(path, "-shm"))]
        orphans = [name for name in orphans if (path.parent / name).exists()]
        if orphans:
            # The database was renamed or deleted while in use: its last writes may live
            # only in that -wal, which a fresh database here would truncate.
            raise DatabaseMoved(
                f"{path} does not exist but {' and '.join(orphans)} next to it do: the "
                "database was moved or deleted while in use, and its latest writes may "
                f"be in {orphans[0]}. Put the database file back at {path} (or, to start "
                "an empty queue on purpose, move those files away)"
            )
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        check_header(path)
        return
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot create the queue database {path} ({exc}); check the folder's "
            "permissions and free space, or point task_execution.queue_db_path elsewhere"
        ) from exc
    os.close(fd)


def check_header(path: Path) -> None:
    """Refuse a file that is not SQLite, without changing it.

    The file is first probed through SQLite itself, read-only, and read directly only
    once SQLite has said it is no database. Never open and close a live database file
    outside SQLite: closing *any* descriptor of a file drops every POSIX lock the
    process holds on it, SQLite's too. A worker whose locks are gone looks absent to
    other processes; the next one to close its last connection then checkpoints and
    deletes the WAL under it, and the worker's later commits go to a deleted file.
    """
    if path.is_dir():
        raise ConfigurationError(
            f"task_execution.queue_db_path {str(path)!r} is a folder; name a file in it"
        )
    try:
        if path.stat().st_size == 0:
            return
        probe = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except (OSError, sqlite3.Error) as exc:
        raise StoreUnavailable(f"cannot read the queue database {path} ({exc})") from exc
    try:
        probe.execute("PRAGMA schema_version").fetchone()  # reads the header
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", "") != "SQLITE_NOTADB":
            return  # locked, unreadable, damaged: the connection that follows says so
    else:
        return
    finally:
        probe.close()
    try:  # not SQLite, so no SQLite lock of this process can be lost: read it directly
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreUnavailable(f"cannot read the queue database {path} ({exc})") from exc
    if header != SQLITE_HEADER:
        raise NotADatabase(
            f"{path} is not a SQLite database (it starts with {header[:8]!r}); taskyard left "
            "it unchanged. Point task_execution.queue_db_path at another path."
        )


def _tables(conn: sqlite3.Connection) -> set[str]:
    try:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise NotADatabase(f"the file is not a usable SQLite database: {exc}") from exc
        raise
    return {row[0] for row in rows}


def stored_version(conn: sqlite3.Connection, path: object) -> int:
    """The schema version of an existing queue, 0 for an empty database.

    Raises ForeignDatabase, SchemaTooNew or SchemaMismatch without writing anything.
    """
    tables = _tables(conn)
    if not tables:
        return 0
    if VERSION_TABLE not in tables:
        sample = ", ".join(sorted(tables)[:5])
        raise ForeignDatabase(
            f"{path} is a SQLite database of another application (tables: {sample}), not a "
            "taskyard queue; taskyard left it unchanged. Point task_execution.queue_db_path "
            "at another path."
        )
    row = conn.execute(f"SELECT MAX(version) FROM {VERSION_TABLE}").fetchone()
    version = int(row[0] or 0)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{path} has queue schema version {version}, and this taskyard knows up to "
            f"{SCHEMA_VERSION}; upgrade taskyard to open it (nothing was changed)."
        )
    return version


def check_columns(conn: sqlite3.Connection, path: object) -> None:
    for table, expected in EXPECTED_COLUMNS.items():
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        missing = expected - present
        if missing:
            raise SchemaMismatch(
                f"{path} says it is taskyard queue schema version {SCHEMA_VERSION}, but "
                f"table {table} lacks {', '.join(sorted(missing))}; restore it from a "
                "backup or point task_execution.queue_db_path elsewhere."
            )


def migrate(conn: sqlite3.Connection, path: object) -> list[int]:
    """Bring the database to SCHEMA_VERSION; returns the versions applied.

    Each migration runs in its own immediate transaction, with the version check
    repeated inside it, so two processes opening a new file at once migrate it once.
    """
    applied: list[int] = []
    for migration in migrations():
        if stored_version(conn, path) >= migration.version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if stored_version(conn, path) >= migration.version:
                conn.execute("COMMIT")
                continue
            if migration.version == 1:
                conn.execute(
                    f"CREATE TABLE {VERSION_TABLE} (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at REAL NOT NULL)"
                )
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                f"INSERT INTO {VERSION_TABLE} (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(migration.version)
    check_columns(conn, path)
    return applied


def _statements(script: str) -> list[str]:
    """Split a migration into statements (no "--" or semicolon inside literals; a
    trigger's body, whose statements end in semicolons too, stays whole)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    statements: list[str] = []
    pending = ""
    for part in "\n".join(lines).split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip().removesuffix(";"))
            pending = ""
    if pending.strip(" \n;"):
        statements.append(pending.strip().removesuffix(";"))
    return statements


def configure(conn: sqlite3.Connection, *, synchronous: str, busy_timeout: float) -> None:
    """Connection settings: WAL, the chosen synchronous level, a busy timeout."""
    mode = synchronous.upper()
    if mode not in SYNCHRONOUS_MODES:
        raise ConfigurationError(
            f"task_execution.sqlite_synchronous is {synchronous!r}; allowed: NORMAL, FULL"
        )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if str(journal).lower() != "wal":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {mode}")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA cache_size = -16000")


def open_queue(conn: sqlite3.Connection, path: object, *, synchronous: str,
               busy_timeout: float) -> list[int]:  # fmt: skip
    """Check, configure and migrate; returns the versions applied."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    stored_version(conn, path)  # refuse before changing anything (WAL changes the file)
    configure(conn, synchronous=synchronous, busy_timeout=busy_timeout)
    return migrate(conn, path)
