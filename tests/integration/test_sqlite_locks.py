"""A process that opens the queue file twice (the run registry's connection, then the
store's, as the container does) keeps its SQLite locks.

Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
included. A process whose locks are gone looks absent: the next other process to close
its last connection checkpoints and deletes the WAL, and what the first process commits
afterwards goes to a deleted file, visible to no other process, lost at its exit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from taskyard.backends.sqlite import SqliteRunPersistence, SqliteStore, schema
from taskyard.framework.errors import NotADatabase
from taskyard.framework.models import TaskRecord, new_task_id


def count_elsewhere(db: Path) -> int:
    """The number of tasks another process sees (it opens and closes a connection)."""
    code = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "print(conn.execute('SELECT COUNT(*) FROM taskyard_tasks').fetchone()[0])\n"
        "conn.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(db)], check=True, capture_output=True, text=True
    )
    return int(out.stdout)


async def test_writes_after_another_process_closed_are_seen_by_everyone(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    runs = SqliteRunPersistence(db)  # the first connection of this process
    store = SqliteStore(db)
    await store.open()  # checks the existing file while the first connection is open
    try:
        await store.add([TaskRecord(id=new_task_id(), type="t", payload={})])
        assert count_elsewhere(db) == 1  # another process opens, reads and closes
        await store.add([TaskRecord(id=new_task_id(), type="t", payload={})])
        assert count_elsewhere(db) == 2
        assert db.with_name("queue.db-wal").exists()  # nobody deleted the WAL under us
    finally:
        await store.close()
        runs.close()
    assert count_elsewhere(db) == 2


def test_a_file_that_is_not_sqlite_is_still_refused_unchanged(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_bytes(b"meeting notes, not a database\n" * 10)
    with pytest.raises(NotADatabase, match=r"starts with b'meeting "):
        schema.check_header(notes)
    assert notes.read_bytes() == b"meeting notes, not a database\n" * 10
    empty = tmp_path / "empty.db"
    empty.touch()
    schema.check_header(empty)  # a new, empty file is fine
