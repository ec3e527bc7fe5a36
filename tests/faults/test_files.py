"""The database file deleted, renamed or corrupted under live processes."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework import EngineConfig
from taskyard.framework.errors import DatabaseMoved, StoreError
from taskyard.testing import fast_config, wait_until

from .conftest import Workers
from .worker_app import HANDLERS

WAIT = 30.0


async def producer(db: Path) -> QueuedTaskManager:
    manager = QueuedTaskManager(EngineConfig(run_worker=False), db_path=db)
    for task_type, handler in HANDLERS.items():
        await manager.register_task(task_type, handler)
    return manager


@pytest.mark.slow
async def test_a_database_renamed_under_live_processes_loses_nothing(workers: Workers) -> None:
    aside = workers.db.with_name("renamed.db")
    manager = await producer(workers.db)
    async with manager:
        before = [await manager.schedule_task("work", {"n": n}) for n in range(20)]
        worker = workers.start(lease_seconds="1.0", poll_interval="0.05")
        os.rename(workers.db, aside)  # the -wal (the latest writes) stays at the old name
        with pytest.raises(DatabaseMoved):
            await manager.schedule_task("work", {"n": "refused"})
        assert (await manager.health())["status"] == "down"
        workers.kill(worker)  # a crash while the file is away: its -wal stays behind
    # A new worker must not create a fresh database beside that -wal (SQLite would then
    # truncate it, and with it the queue's latest writes).
    refused = workers.spawn()
    assert refused.wait(timeout=WAIT) != 0
    assert "Put the database file back" in workers.output(refused)
    assert not workers.db.exists()
    os.rename(aside, workers.db)  # the operator restores it, as the message says
    workers.start(lease_seconds="1.0", poll_interval="0.05")
    async with await producer(workers.db) as manager:
        for task_id in before:
            status = await manager.wait_for(task_id, timeout=WAIT)
            assert status["status"] == "completed", status
    print(f"\nrenamed database: {len(before)} accepted, 0 lost, 1 write refused while away")


async def test_a_database_deleted_under_a_live_producer_accepts_nothing_more(
    tmp_path: Path,
) -> None:
    db = tmp_path / "q.db"
    async with await producer(db) as manager:
        await manager.schedule_task("work", {"n": 1})
        os.unlink(db)
        accepted_after = []
        for n in range(5):
            try:
                accepted_after.append(await manager.schedule_task("work", {"n": n}))
            except DatabaseMoved:
                pass
        assert accepted_after == []  # before the fix: 5 ids, into a file with no name
        health = await manager.health()
        assert health["status"] == "down"


def corrupt(db: Path, *, skip_pages: int = 2) -> int:
    """Overwrite every page after the first ``skip_pages`` with garbage; returns how many."""
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db.stat().st_size
    pages = size // page_size
    with open(db, "r+b") as file:
        for page in range(skip_pages, pages):
            file.seek(page * page_size)
            file.write(bytes((page * 7 + i) % 251 for i in range(page_size)))
    return max(pages - skip_pages, 0)


@pytest.mark.slow
async def test_a_corrupted_page_gives_typed_errors_and_health_down_not_a_crash(
    tmp_path: Path,
) -> None:
    db = tmp_path / "q.db"
    async with await producer(db) as manager:
        for n in range(300):
            await manager.schedule_task("work", {"n": n, "pad": "p" * 200})
    damaged = corrupt(db)
    assert damaged > 0
    manager = QueuedTaskManager(fast_config(shutdown_timeout=1.0), db_path=db)
    for task_type, handler in HANDLERS.items():
        await manager.register_task(task_type, handler)
    try:
        await manager.start()
    except StoreError as exc:  # typed, and nothing left running
        print(f"\ncorrupted page: start refused with {type(exc).__name__}: {exc}")
        return
    try:

        async def unhealthy() -> bool:
            return (await manager.health())["status"] != "ok"

        await wait_until(unhealthy, timeout=WAIT, message="health leaving ok")
        health = await manager.health()
        print(f"\ncorrupted page: health {health['status']}: {health['reason']}")
        with pytest.raises(StoreError):
            await manager.list_tasks(limit=1000)
    finally:
        async with asyncio.timeout(1.0 + 1.0 + 5.0):  # bounded by the shutdown timeout
            await manager.stop()
