"""Opening queue files: what is ours is created or upgraded, anything else is refused
with the right error and left byte-for-byte unchanged."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from taskyard.backends.sqlite import SCHEMA_VERSION, QueuedTaskManager, SqliteStore, schema
from taskyard.framework.errors import (
    ForeignDatabase,
    NotADatabase,
    SchemaError,
    SchemaMismatch,
    SchemaTooNew,
    TaskyardError,
)


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


def older_queue(path: Path, version: int) -> None:
    """A queue file exactly as taskyard's schema ``version`` made it: the shipped
    migrations up to that version, run as the migration runner runs them."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(
            "CREATE TABLE taskyard_schema_version (version INTEGER PRIMARY KEY, "
            "name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        for migration in schema.migrations():
            if migration.version > version:
                break
            for statement in schema._statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO taskyard_schema_version VALUES (?, ?, 0)",
                (migration.version, migration.name),
            )
    finally:
        conn.close()


def insert_old_tasks(path: Path, statuses: list[str]) -> list[str]:
    """Tasks written with only the columns every schema version has."""
    ids = [f"old-{index}" for index in range(len(statuses))]
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO taskyard_tasks (id, type, status, priority, attempts, max_attempts,"
            " payload, created_at, updated_at, run_after, finished_at)"
            " VALUES (?, 'old', ?, 5, 0, 3, ?, 1, 1, 1, ?)",
            [
                (task_id, status, f'{{"n": {index}}}', 2.0 if status == "completed" else None)
                for index, (task_id, status) in enumerate(zip(ids, statuses, strict=True))
            ],
        )
    return ids


async def test_a_version_1_file_with_tasks_is_upgraded_to_take_stop_requests(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v1.db"
    older_queue(path, 1)
    ids = insert_old_tasks(path, ["queued", "completed", "failed"])
    with sqlite3.connect(path) as conn:
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


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_an_older_file_with_tasks_is_upgraded_to_run_workflows(
    tmp_path: Path, version: int
) -> None:
    """Migration 0003 rebuilds the tasks table (its status CHECK gains 'waiting'): every
    task keeps its id, order, status and payload, and the file then runs workflows."""
    path = tmp_path / f"v{version}.db"
    older_queue(path, version)
    ids = insert_old_tasks(path, ["queued", "completed", "queued", "cancelled"])
    with sqlite3.connect(path) as conn:
        before = conn.execute("SELECT seq, id, status, payload FROM taskyard_tasks").fetchall()
    async with QueuedTaskManager(db_path=path) as manager:
        assert manager.store.migrations_applied == list(range(version + 1, SCHEMA_VERSION + 1))
        done: list[str] = []

        async def old(payload: dict[str, int]) -> int:
            done.append(str(payload["n"]))
            return payload["n"]

        await manager.register_task("old", old)
        follow = await manager.schedule_task("old", {"n": 9}, depends_on=[ids[0], ids[2]])
        info = await manager.wait_for(follow, timeout=10)
        assert info["status"] == "completed"
        assert sorted(done) == ["0", "2", "9"]  # the old queued tasks ran first
        assert await manager.store.dependencies(follow) == [ids[0], ids[2]]
    with sqlite3.connect(path) as conn:
        after = conn.execute(
            "SELECT seq, id, payload FROM taskyard_tasks WHERE id LIKE 'old-%' ORDER BY seq"
        ).fetchall()
        statuses = dict(conn.execute("SELECT id, status FROM taskyard_tasks").fetchall())
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert after == [(seq, task_id, payload) for seq, task_id, _, payload in before]
    assert [statuses[task_id] for task_id in ids] == [
        "completed",
        "completed",
        "completed",
        "cancelled",
    ]
    assert {"taskyard_tasks_ready", "taskyard_tasks_keyed", "taskyard_dependencies"} <= indexes


async def test_a_version_5_file_with_tasks_is_upgraded_to_keep_schedules(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from taskyard.framework.schedules import ScheduleRecord, fire, make_schedule

    path = tmp_path / "v5.db"
    older_queue(path, 5)  # what version 5 wrote (6 adds schedules)
    ids = insert_old_tasks(path, ["queued", "completed", "queued"])
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
