"""The SQLite store against its file moving under it, a full database, and a group commit
with one operation SQLite cannot take (issue 10, items 2, 3, 5, 6 and health)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from taskyard.backends.fallback import FallbackStore, FallbackTaskManager
from taskyard.backends.sqlite import QueuedTaskManager, SqliteStore
from taskyard.framework.errors import ConfigurationError, DatabaseMoved, StoreError, StoreFull
from taskyard.framework.models import TaskRecord, new_task_id
from taskyard.testing import fast_config, wait_until

WAIT = 10.0


async def noop(payload):
    return None


def stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM taskyard_tasks")}


async def test_deleting_the_file_under_a_live_process_refuses_writes_and_says_so(
    tmp_path: Path,
) -> None:
    db = tmp_path / "q.db"
    async with QueuedTaskManager(fast_config(run_worker=False), db_path=db) as manager:
        await manager.register_task("noop", noop)
        kept = await manager.schedule_task("noop", {})
        assert (await manager.health())["status"] == "ok"
        os.unlink(db)
        with pytest.raises(DatabaseMoved, match="deleted or renamed"):
            await manager.schedule_task("noop", {})
        health = await manager.health()
        assert health["status"] == "down"
        assert "deleted or renamed" in health["reason"]
        assert kept  # accepted before the deletion: it was in the file, not lost by us


async def test_a_file_put_back_under_a_live_process_is_written_again(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    aside = tmp_path / "aside.db"
    async with QueuedTaskManager(fast_config(run_worker=False), db_path=db) as manager:
        await manager.register_task("noop", noop)
        first = await manager.schedule_task("noop", {})
        os.rename(db, aside)
        with pytest.raises(DatabaseMoved):
            await manager.schedule_task("noop", {})
        os.rename(aside, db)  # the same file (inode) back at its path
        second = await manager.schedule_task("noop", {})
    assert stored_ids(db) == {first, second}


async def test_a_database_renamed_while_in_use_is_not_replaced_by_a_fresh_one(
    tmp_path: Path,
) -> None:
    db = tmp_path / "q.db"
    live = SqliteStore(db)
    await live.open()
    try:
        record = TaskRecord(id=new_task_id(), type="t", payload={"n": 1})
        await live.add([record])
        assert db.with_name("q.db-wal").exists()
        os.rename(db, tmp_path / "renamed.db")  # the -wal stays at the old name
        second = SqliteStore(db)
        with pytest.raises(DatabaseMoved, match=r"q\.db-wal") as refused:
            await second.open()
        assert "Put the database file back" in str(refused.value)
        assert not db.exists()  # no fresh database was created beside the orphaned -wal
        await second.close()
    finally:
        await live.close()


async def test_the_fallback_degrades_when_its_file_is_deleted_and_recovers_when_restored(
    tmp_path: Path,
) -> None:
    db = tmp_path / "q.db"
    link = tmp_path / "hard-link.db"
    manager = FallbackTaskManager(fast_config(), db_path=db)
    manager.fallback._probe_max = 0.1
    done: list[int] = []

    async def record(payload):
        done.append(payload["n"])

    async with manager:
        await manager.register_task("record", record)
        os.link(db, link)
        os.unlink(db)
        held = await manager.schedule_task("record", {"n": 1})
        health = await manager.health()
        assert health["status"] == "degraded", health
        assert "deleted or renamed" in health["reason"]
        os.link(link, db)  # the same inode is back at its path
        await wait_until(lambda: not manager.fallback.degraded, timeout=WAIT)
        status = await manager.wait_for(held, timeout=WAIT)
        assert status["status"] == "completed"
    assert held in stored_ids(db)
    assert done == [1]


async def test_health_reports_a_full_database_and_recovers(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    store = SqliteStore(db, inline_writes=False)
    await store.open()
    try:
        pages = await store.execute_read(
            lambda conn: conn.execute("PRAGMA page_count").fetchone()[0]
        )
        await store.execute_read(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}"))
        with pytest.raises(StoreFull):
            for n in range(200):
                await store.add(
                    [TaskRecord(id=new_task_id(), type="t", payload={"blob": "x" * 4000, "n": n})]
                )
        state, reason = await store.health()
        assert state == "down"
        assert "full" in reason
        await store.execute_read(lambda conn: conn.execute("PRAGMA max_page_count = 1000000"))
        await store.add([TaskRecord(id=new_task_id(), type="t", payload={})])
        assert (await store.health())[0] == "ok"
    finally:
        await store.close()


async def test_one_operation_sqlite_cannot_take_fails_alone_in_a_group_commit(
    tmp_path: Path,
) -> None:
    # Below the API (which refuses priority=2**63 itself): the store must keep any
    # per-operation error to its operation, OverflowError included.
    store = SqliteStore(tmp_path / "q.db")
    await store.open()
    try:
        good = [TaskRecord(id=new_task_id(), type="t", payload={"n": n}) for n in range(20)]
        bad = TaskRecord(id=new_task_id(), type="t", payload={}, priority=2**63)
        calls = [store.add([record]) for record in good]
        calls.insert(5, store.add([bad]))
        results = await asyncio.gather(*calls, return_exceptions=True)
        failed = results.pop(5)
        assert isinstance(failed, StoreError), failed
        assert results == [[record.id] for record in good]
        assert (await store.health())[0] == "ok"  # one caller's bad input, not the store's
    finally:
        await store.close()
    assert stored_ids(tmp_path / "q.db") == {record.id for record in good}


async def test_the_fallback_moves_every_task_back_but_one_sqlite_refuses(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    store = FallbackStore(SqliteStore(db), probe_initial=0.01, probe_max=0.05)
    await store.open()
    try:
        # tasks memory took while degraded, one of them beyond what SQLite holds (it got
        # there below the API, as before the API bounded priorities)
        good = [TaskRecord(id=new_task_id(), type="t", payload={"n": n}) for n in range(5)]
        poison = TaskRecord(id=new_task_id(), type="t", payload={}, priority=2**63)
        await store.memory.import_records([*good[:2], poison, *good[2:]])
        store._degrade(StoreError("simulated outage"))
        await wait_until(lambda: {r.id for r in good} <= stored_ids(db), timeout=WAIT)
        assert set(store.memory.tasks) == {poison.id}
        state, reason = await store.health()
        assert state == "degraded"
        assert poison.id in reason and "refuses" in reason
    finally:
        await store.close()


async def test_a_spill_file_the_store_refuses_leaves_no_thread_behind(tmp_path: Path) -> None:
    import json
    import threading

    db = tmp_path / "q.db"
    store = FallbackStore(SqliteStore(db))
    spill = store.spill_candidates()[0]
    line = {
        "id": "poison",
        "type": "t",
        "status": "queued",
        "priority": 2**63,  # memory took it once; SQLite never could
        "attempts": 0,
        "max_attempts": 3,
        "payload": {},
        "result": None,
        "error": None,
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
        "run_after": "2026-01-01T00:00:00+00:00",
        "started_at": None,
        "finished_at": None,
    }
    header = {"format": "taskyard-spill", "version": 1}
    spill.write_text(json.dumps(header) + "\n" + json.dumps(line) + "\n")
    before = set(threading.enumerate())
    with pytest.raises(ConfigurationError, match="priority"):
        await store.open()
    assert store.primary._db is None  # SQLite's connection (and its thread) closed again
    # the thread ends just after close() returns
    await wait_until(lambda: set(threading.enumerate()) - before == set(), timeout=WAIT)
