"""A version-1 queue file with tasks in it upgrades in place: the tasks keep everything
they had and gain what later versions store (issue 9, item 2: tracebacks)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from taskyard.backends.sqlite import SCHEMA_VERSION, QueuedTaskManager, SqliteStore, schema
from taskyard.framework import EngineConfig, RetryPolicy


def version_1_file(path: Path) -> None:
    """A queue file exactly as taskyard's schema version 1 left it, with two tasks."""
    [first] = [migration for migration in schema.migrations() if migration.version == 1]
    now = time.time()
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute(
            f"CREATE TABLE {schema.VERSION_TABLE} (version INTEGER PRIMARY KEY, "
            "name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        for statement in schema._statements(first.sql):
            conn.execute(statement)
        conn.execute(f"INSERT INTO {schema.VERSION_TABLE} VALUES (1, 'initial', ?)", (now,))
        conn.executemany(
            "INSERT INTO taskyard_tasks (id, type, status, priority, attempts, max_attempts,"
            " payload, error, created_at, updated_at, run_after, finished_at)"
            " VALUES (?, ?, ?, 5, ?, 2, ?, ?, ?, ?, ?, ?)",
            [
                ("old-failed", "divide", "failed", 2, '{"n": 0}', "ZeroDivisionError", now,
                 now, now, now),
                ("old-queued", "divide", "queued", 0, '{"n": 0}', None, now, now, now, None),
            ],
        )  # fmt: skip


async def test_a_version_1_file_with_tasks_is_upgraded_and_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    version_1_file(path)
    store = SqliteStore(path)
    await store.open()
    try:
        assert store.migrations_applied == list(range(2, SCHEMA_VERSION + 1))
        old = await store.get("old-failed")
        assert old is not None
        assert (old.status, old.attempts, old.error) == ("failed", 2, "ZeroDivisionError")
        assert old.payload == {"n": 0} and old.tracebacks == []
    finally:
        await store.close()

    async def divide(payload: dict[str, int]) -> float:
        return 1 / payload["n"]

    config = EngineConfig(poll_interval=0.02, retry=RetryPolicy(initial=0.01, jitter=0))
    async with QueuedTaskManager(db_path=path, config=config) as manager:
        await manager.register_task("divide", divide)
        status = await manager.wait_for("old-queued", timeout=30)
    assert status["status"] == "failed"
    assert [entry["attempt"] for entry in status["tracebacks"]] == [1, 2]
    assert "in divide" in status["tracebacks"][-1]["traceback"]
