"""Online backups of the queue file and restores from them (SQLite's backup API), in the
store's thread."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from taskyard.backends.sqlite import schema
from taskyard.backends.sqlite.errors import translate
from taskyard.backends.sqlite.files import STEP_PAGES, read_connection
from taskyard.backends.sqlite.queries import count_by_status
from taskyard.framework.operations import (
    BackupCheck,
    ProgressCallback,
)

# -- backups --------------------------------------------------------------------------------


def copy_snapshot(
    source: sqlite3.Connection, target_path: Path, progress: ProgressCallback
) -> tuple[dict[str, int], int]:
    """Copy ``source`` into a new file at ``target_path`` from one pinned snapshot.
    Returns the task counts of that snapshot and the pages copied. Runs in the store's
    thread."""
    source.execute("BEGIN")
    try:
        counts = count_by_status(source)  # the read that starts the snapshot copied
        target = sqlite3.connect(target_path, isolation_level=None)
        try:
            pages = [0]

            def step(status: int, remaining: int, total: int) -> None:
                pages[0] = total
                progress(total - remaining, total)

            source.backup(target, pages=STEP_PAGES, progress=step)
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            target.close()
    finally:
        if source.in_transaction:
            source.execute("COMMIT")
    return counts, pages[0]


def verify_backup_file(path: Path) -> BackupCheck:
    """Open a backup read-only and check it (see :meth:`SqliteOperations.verify_backup`)."""
    with read_connection(path, read_only=True) as conn:
        version = schema.stored_version(conn, path)
        try:
            integrity = [str(row[0]) for row in conn.execute("PRAGMA integrity_check(100)")]
        except sqlite3.DatabaseError as exc:  # damaged beyond what the check can walk
            integrity = [f"integrity_check stopped: {exc}"]
        counts = count_by_status(conn) if integrity == ["ok"] else {}
    return BackupCheck(integrity, version, counts)


def restore_into(
    conn: sqlite3.Connection, backup: Path, progress: ProgressCallback
) -> dict[str, int]:
    """Copy the backup over the live database on ``conn`` (in the store's thread)."""
    try:
        source = sqlite3.connect(f"{backup.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise translate(exc, backup) from exc
    try:

        def step(status: int, remaining: int, total: int) -> None:
            progress(total - remaining, total)

        source.backup(conn, pages=STEP_PAGES, progress=step)
    finally:
        source.close()
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DELETE FROM taskyard_workers")  # heartbeats of the backup's time
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return count_by_status(conn)
