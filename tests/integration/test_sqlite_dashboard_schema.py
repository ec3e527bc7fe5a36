"""Schema version 2 (the dashboard's index, audit log and intake pause) upgrades a
version-1 queue file that holds tasks, and the engine honours the pause it stores."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from taskyard.backends.sqlite import SCHEMA_VERSION, QueuedTaskManager, SqliteStore
from taskyard.backends.sqlite.schema import VERSION_TABLE, _statements, migrations
from taskyard.framework.engine import EngineConfig
from taskyard.framework.operations import AuditEntry, TaskFilter
from taskyard.testing import wait_until


def version_one_file(path: Path, tasks: int) -> None:
    """A queue file exactly as taskyard's schema version 1 left it, with tasks."""
    first = migrations()[0]
    assert first.version == 1
    conn = sqlite3.connect(path)
    conn.execute(
        f"CREATE TABLE {VERSION_TABLE} (version INTEGER PRIMARY KEY, "
        "name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    for statement in _statements(first.sql):
        conn.execute(statement)
    conn.execute(f"INSERT INTO {VERSION_TABLE} VALUES (1, 'initial', ?)", (time.time(),))
    now = time.time()
    conn.executemany(
        "INSERT INTO taskyard_tasks (id, type, status, priority, max_attempts, payload,"
        " created_at, updated_at, run_after, error, finished_at)"
        " VALUES (?, 'work', 'failed', 5, 3, ?, ?, ?, ?, 'boom', ?)",
        [(f"t{n:03d}", f'{{"n":{n}}}', now + n, now + n, now + n, now + n) for n in range(tasks)],
    )
    conn.commit()
    conn.close()


async def test_a_version_one_file_with_tasks_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    version_one_file(path, 25)
    store = SqliteStore(path)
    await store.open()
    try:
        info = await store.storage_info()
        assert info.schema_version == SCHEMA_VERSION >= 2
        page = await store.page_tasks(TaskFilter(), limit=10)
        assert [task.id for task in page.tasks] == [f"t{n:03d}" for n in range(24, 14, -1)]
        assert await store.count_matching(TaskFilter(text='"n":7')) == 1
        await store.record_action(AuditEntry(time.time(), "admin", "pause", "intake"))
        assert [entry.action for entry in await store.list_actions()] == ["pause"]
        assert await store.retry_matching(TaskFilter(), now=time.time(), limit=100) == 25
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    conn.close()
    assert "taskyard_tasks_newest" in indexes


async def test_a_paused_queue_is_not_claimed_until_resumed(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    operator = SqliteStore(path)
    await operator.open()
    ran: list[int] = []
    worker = QueuedTaskManager(EngineConfig(poll_interval=0.05), db_path=path)
    await worker.register_task("work", lambda payload: ran.append(payload["n"]))
    try:
        await operator.set_intake_paused(True)
        await worker.start()
        await wait_until(lambda: worker.worker_info()["intake_paused"] is True, timeout=10)
        task_id = await worker.schedule_task("work", {"n": 1})
        # the worker keeps reading the pause while it is set: two more readings, no claim
        readings = worker._held_read_at
        await wait_until(lambda: worker._held_read_at > readings, timeout=10)
        readings = worker._held_read_at
        await wait_until(lambda: worker._held_read_at > readings, timeout=10)
        status = await worker.get_task_status(task_id)
        assert status is not None and status["status"] == "queued" and ran == []
        await operator.set_intake_paused(False)
        done = await worker.wait_for(task_id, timeout=10)
        assert done["status"] == "completed" and ran == [1]
    finally:
        await worker.stop()
        await operator.close()
