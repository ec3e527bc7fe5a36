"""Opening queue files: what is ours is created or upgraded, anything else is refused
with the right error and left byte-for-byte unchanged."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from taskyard.backends.sqlite import SCHEMA_VERSION, QueuedTaskManager, SqliteStore
from taskyard.framework.errors import (
    ForeignDatabase,
    NotADatabase,
    SchemaError,
    SchemaMismatch,
    SchemaTooNew,
    TaskyardError,
)
from taskyard.framework.models import TaskStatus
from taskyard.testing.operations import record


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def open_store(path: Path) -> SqliteStore:
    store = SqliteStore(path)
    await store.open()
    return store


async def test_new_file_and_folder_are_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "deeper" / "queue.db"
    store = await open_store(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert store.migrations_applied == list(range(1, SCHEMA_VERSION + 1))
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            version = conn.execute("SELECT MAX(version) FROM taskyard_schema_version").fetchone()
        assert version[0] == SCHEMA_VERSION
    finally:
        await store.close()
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600


async def test_reopening_applies_nothing_and_keeps_tasks(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with QueuedTaskManager(db_path=path) as manager:
        await manager.register_task("noop", lambda payload: None)
        task_id = await manager.schedule_task("noop", {"x": 1}, delay=3600)  # stays queued
    store = await open_store(path)
    try:
        assert store.migrations_applied == []
        record = await store.get(task_id)
        assert record is not None and record.payload == {"x": 1}
    finally:
        await store.close()


async def test_random_bytes_are_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "noise.db"
    path.write_bytes(os.urandom(8192))
    before = digest(path)
    with pytest.raises(NotADatabase, match="not a SQLite database"):
        await open_store(path)
    assert digest(path) == before


async def test_text_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a database\n")
    with pytest.raises(NotADatabase) as info:
        await open_store(path)
    assert "queue_db_path" in str(info.value)


async def test_another_applications_database_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    before = digest(path)
    with pytest.raises(ForeignDatabase, match="customers"):
        await open_store(path)
    assert digest(path) == before
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


async def test_newer_schema_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    store = await open_store(path)
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO taskyard_schema_version (version, name, applied_at) VALUES (?, ?, 0)",
            (SCHEMA_VERSION + 1, "from_the_future"),
        )
    before = digest(path)
    with pytest.raises(SchemaTooNew, match="upgrade taskyard"):
        await open_store(path)
    assert digest(path) == before


async def test_wrong_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mangled.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE taskyard_schema_version (version INTEGER PRIMARY KEY, name TEXT, "
            "applied_at REAL)"
        )
        conn.execute(
            "INSERT INTO taskyard_schema_version VALUES (?, 'initial', 0)", (SCHEMA_VERSION,)
        )
        conn.execute("CREATE TABLE taskyard_tasks (id TEXT PRIMARY KEY, payload BLOB)")
    with pytest.raises(SchemaMismatch, match="lacks"):
        await open_store(path)


def test_schema_errors_share_one_root() -> None:
    for error in (NotADatabase, ForeignDatabase, SchemaTooNew, SchemaMismatch):
        assert issubclass(error, SchemaError)
        assert issubclass(error, TaskyardError)


async def test_a_folder_as_the_path_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(TaskyardError, match="is a folder"):
        await open_store(tmp_path)


async def test_a_version_1_file_with_tasks_is_upgraded_to_take_stop_requests(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v1.db"
    store = await open_store(path)
    tasks = [record(), record(TaskStatus.COMPLETED), record(TaskStatus.FAILED)]
    await store.import_records(tasks)
    await store.close()
    ids = [task.id for task in tasks]
    with sqlite3.connect(path) as conn:  # back to what version 1 wrote
        conn.execute("DROP TABLE taskyard_schedules")
        conn.execute("ALTER TABLE taskyard_workers DROP COLUMN stop_requested_at")
        conn.execute("ALTER TABLE taskyard_tasks DROP COLUMN trace_context")
        conn.execute("ALTER TABLE taskyard_tasks DROP COLUMN tracebacks")
        for index in ("newest", "finished", "finished_types"):  # the dashboard's
            conn.execute(f"DROP INDEX taskyard_tasks_{index}")
        conn.execute("DROP TABLE taskyard_audit")
        conn.execute("DROP TABLE taskyard_state")
        conn.execute("DELETE FROM taskyard_schema_version WHERE version > 1")
        conn.execute(
            "INSERT INTO taskyard_workers VALUES ('old', 'here', 1, 0, 0, '{\"role\": \"worker\"}')"
        )
    store = await open_store(path)
    try:
        assert store.migrations_applied == list(range(2, SCHEMA_VERSION + 1))
        assert await store.present(ids) == set(ids)
        assert await store.request_worker_stop(["old"]) == ["old"]
        assert await store.record_worker("old", {"role": "worker"}) is True
    finally:
        await store.close()


async def test_a_version_5_file_with_tasks_is_upgraded_to_keep_schedules(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from taskyard.framework.schedules import ScheduleRecord, fire, make_schedule

    path = tmp_path / "v5.db"
    store = await open_store(path)
    tasks = [record(), record(TaskStatus.COMPLETED), record(TaskStatus.QUEUED)]
    await store.import_records(tasks)
    await store.close()
    ids = [task.id for task in tasks]
    with sqlite3.connect(path) as conn:  # back to what version 5 wrote (6 adds schedules)
        conn.execute("DROP TABLE taskyard_schedules")
        conn.execute("DELETE FROM taskyard_schema_version WHERE version > 5")
    store = await open_store(path)
    try:
        assert store.migrations_applied == list(range(6, SCHEMA_VERSION + 1))
        assert await store.present(ids) == set(ids)
        slot = datetime(2030, 1, 1, tzinfo=UTC)
        schedule = make_schedule("tick", "work", every=60)
        assert await store.insert_schedule(ScheduleRecord(schedule=schedule, next_fire_at=slot))
        stored = await store.get_schedule("tick")
        assert stored is not None
        fired, _ = await fire(store, stored, slot)
        assert fired is not None and len(fired) == 1
        assert await store.present([*ids, *fired]) == {*ids, *fired}
    finally:
        await store.close()
