"""Group commit: one transaction for many callers, each with its own result or error."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from taskyard.backends.sqlite import schema
from taskyard.backends.sqlite.store import AddOperation, _Failed, run_batch, waiting
from taskyard.framework.models import TaskRecord, dumps, new_task_id


def record(n: int) -> TaskRecord:
    return TaskRecord(id=new_task_id(), type="t", payload={"n": n}, payload_json=dumps({"n": n}))


@pytest.fixture
def conn(tmp_path: Path):
    path = tmp_path / "q.db"
    schema.prepare_file(path)
    connection = sqlite3.connect(path, isolation_level=None)
    schema.open_queue(connection, path, synchronous="NORMAL", busy_timeout=1)
    yield connection
    connection.close()


def stored(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT id FROM taskyard_tasks ORDER BY seq")]


def test_plain_inserts_of_several_callers_share_one_statement(conn) -> None:
    batches = [[record(1), record(2)], [record(3)], [record(4), record(5)]]
    results = run_batch(conn, [AddOperation(batch) for batch in batches])
    assert results == [[r.id for r in batch] for batch in batches]
    assert stored(conn) == [r.id for batch in batches for r in batch]


def test_an_operation_that_fails_keeps_its_error_and_the_others_commit(conn) -> None:
    first, last = record(1), record(2)

    def broken(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO taskyard_runs (run_id) VALUES ('x')")  # NOT NULLs

    results = run_batch(conn, [AddOperation([first]), broken, AddOperation([last])])
    assert results[0] == [first.id]
    assert isinstance(results[1], _Failed)
    assert isinstance(results[1].error, sqlite3.IntegrityError)
    assert results[2] == [last.id]
    assert stored(conn) == [first.id, last.id]
    assert conn.execute("SELECT COUNT(*) FROM taskyard_runs").fetchone()[0] == 0
    assert not conn.in_transaction


def test_a_lone_failing_operation_raises_and_leaves_nothing(conn) -> None:
    def broken(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO taskyard_runs (run_id) VALUES ('x')")

    with pytest.raises(sqlite3.IntegrityError):
        run_batch(conn, [broken])
    assert not conn.in_transaction


def holder(path: Path) -> sqlite3.Connection:
    """Another connection, holding the write lock until it commits or rolls back."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_a_write_waits_in_short_steps_for_the_lock_and_then_commits(conn, tmp_path) -> None:
    conn.execute("PRAGMA busy_timeout = 0")  # the waits are waiting()'s, not SQLite's
    other = holder(tmp_path / "q.db")
    released = threading.Event()

    def release() -> None:
        released.wait()
        other.rollback()

    releaser = threading.Thread(target=release)
    releaser.start()
    first = record(1)
    tries = 0

    def batch(connection: sqlite3.Connection) -> list[object]:
        nonlocal tries
        tries += 1
        if tries == 3:  # the lock was refused twice: let the holder go now
            released.set()
        return run_batch(connection, [AddOperation([first])])

    try:
        assert waiting(batch, conn, 30.0) == [[first.id]]
    finally:
        released.set()
        releaser.join()
        other.close()
    assert tries >= 3
    assert stored(conn) == [first.id]


def test_a_write_gives_up_with_the_busy_error_after_its_patience(conn, tmp_path) -> None:
    conn.execute("PRAGMA busy_timeout = 0")
    other = holder(tmp_path / "q.db")
    try:
        with pytest.raises(sqlite3.OperationalError) as raised:
            waiting(run_batch, conn, 0.05, [AddOperation([record(1)])])
    finally:
        other.rollback()
        other.close()
    assert str(getattr(raised.value, "sqlite_errorname", "")).startswith("SQLITE_BUSY")
    assert stored(conn) == []
