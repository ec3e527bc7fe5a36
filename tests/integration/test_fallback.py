"""sqlite-with-fallback under real faults: a lock held by another process, an immutable
file, a full database, a path that cannot be created, a stop while degraded."""

from __future__ import annotations

import collections
import functools
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from taskyard.backends.fallback import FallbackTaskManager
from taskyard.framework import EngineConfig, RetryPolicy
from taskyard.testing import wait_until

FAST = EngineConfig(
    concurrency=20,
    poll_interval=0.05,
    lease_seconds=10,
    retry=RetryPolicy(initial=0.01, max_delay=0.05, jitter=0),
    shutdown_timeout=2,
)


class Counting:
    """A handler that counts its executions per payload key."""

    def __init__(self) -> None:
        self.executions: collections.Counter[int] = collections.Counter()

    async def __call__(self, payload: dict[str, Any]) -> int:
        self.executions[payload["n"]] += 1
        return int(payload["n"])


until = functools.partial(wait_until, timeout=30.0)


def stored_statuses(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, status FROM taskyard_tasks").fetchall())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "queue.db"


@pytest.fixture
async def manager(db: Path) -> AsyncIterator[FallbackTaskManager]:
    manager = FallbackTaskManager(FAST, db_path=db, busy_timeout=0.1)
    manager.fallback._probe_max = 0.2
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()


async def schedule(manager: FallbackTaskManager, handler: Counting, numbers: range) -> list[str]:
    if "count" not in manager.registered_types:
        await manager.register_task("count", handler)
    return [await manager.schedule_task("count", {"n": n}) for n in numbers]


async def finish_all(manager: FallbackTaskManager, ids: list[str]) -> None:
    for task_id in ids:
        try:
            info = await manager.wait_for(task_id, timeout=30)
        except TimeoutError:
            store = manager.fallback
            where = "memory" if task_id in store.memory.tasks else "sqlite"
            raise AssertionError(
                f"{task_id} stuck in {where}: {await store.get(task_id)}; degraded: "
                f"{store.reason}; stats: {store.stats}; running: {list(manager._running)}"
            ) from None
        assert info["status"] == "completed", info


async def test_a_lock_held_by_another_process(manager: FallbackTaskManager, db: Path) -> None:
    handler = Counting()
    before = await schedule(manager, handler, range(50))
    release = db.with_name("release")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time, pathlib\n"
            f"conn = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "conn.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            f"release = pathlib.Path({str(release)!r})\n"
            "deadline = time.monotonic() + 60\n"
            "while not release.exists() and time.monotonic() < deadline:\n"
            "    time.sleep(0.01)\n"
            "conn.execute('COMMIT')\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"locked"
        during = await schedule(manager, handler, range(50, 350))
        report = await manager.health()
        assert report["status"] == "degraded"
        assert "locked" in report["reason"]
        assert 0 <= report["held_in_memory"] <= 300
        await finish_all(manager, during)
        assert manager.fallback.stats.fallbacks >= 300
    finally:
        release.touch()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()
    await until(lambda: not manager.fallback.degraded, message="recovery")
    await finish_all(manager, before)
    statuses = stored_statuses(db)
    assert all(statuses.get(task_id) == "completed" for task_id in before + during)
    assert set(handler.executions) == set(range(350))
    assert set(handler.executions.values()) == {1}
    report = await manager.health()
    assert (report["status"], report["reason"], report["held_in_memory"]) == ("ok", "", 0)


async def test_an_immutable_file_mid_run(
    manager: FallbackTaskManager, db: Path, chattr: Callable[[Path, bool], None]
) -> None:
    handler = Counting()
    await finish_all(manager, await schedule(manager, handler, range(10)))
    wal = db.with_name(db.name + "-wal")
    chattr(wal, True)
    chattr(db, True)
    during = await schedule(manager, handler, range(10, 110))
    assert manager.fallback.degraded
    await finish_all(manager, during)
    chattr(db, False)
    chattr(wal, False)
    await until(lambda: not manager.fallback.degraded, message="recovery")
    statuses = stored_statuses(db)
    assert all(statuses.get(task_id) == "completed" for task_id in during)
    assert set(handler.executions.values()) == {1}
    assert len(handler.executions) == 110


async def test_a_full_database(manager: FallbackTaskManager, db: Path) -> None:
    handler = Counting()
    primary = manager.fallback.primary
    pages = await primary.execute_read(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await primary.execute_write(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
    payload_padding = "x" * 2000  # fills a page or so per task
    await manager.register_task("count", handler)
    ids = [
        await manager.schedule_task("count", {"n": n, "pad": payload_padding}) for n in range(60)
    ]
    assert manager.fallback.degraded
    assert "full" in (manager.fallback.reason or "")
    # the first tasks may have fitted in the last free page: those wait in SQLite
    held = [task_id for task_id in ids if task_id in manager.fallback.memory.tasks]
    assert len(held) >= 50
    await finish_all(manager, held)
    await primary.execute_write(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
    await until(lambda: not manager.fallback.degraded, message="recovery")
    await finish_all(manager, ids)
    statuses = stored_statuses(db)
    assert all(statuses.get(task_id) == "completed" for task_id in ids)
    assert set(handler.executions.values()) == {1}
    assert len(handler.executions) == 60


async def test_a_path_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    manager = FallbackTaskManager(FAST, db_path=blocker / "queue.db", busy_timeout=0.1)
    manager.fallback.spill_dirs = [tmp_path / "state"]
    handler = Counting()
    async with manager:
        health, reason = await manager.store.health()
        assert health == "degraded"
        assert "a-file" in reason
        ids = await schedule(manager, handler, range(40))
        await finish_all(manager, ids)
    assert set(handler.executions.values()) == {1}
    assert len(handler.executions) == 40
    [spill] = (tmp_path / "state").iterdir()
    assert len(spill.read_text().splitlines()) == 1 + 40


async def test_stop_while_degraded_spills_and_the_next_start_runs_them(
    db: Path, chattr: Callable[[Path, bool], None]
) -> None:
    handler = Counting()
    first = FallbackTaskManager(FAST, db_path=db, busy_timeout=0.1)
    first.fallback._probe_max = 0.2
    async with first:
        await schedule(first, handler, range(5))
        await first.wait_all(timeout=30)
        chattr(db.with_name(db.name + "-wal"), True)
        chattr(db, True)
        # delayed, so they are still queued when we stop
        await first.register_task("later", handler)
        ids = [await first.schedule_task("later", {"n": n}, delay=0.5) for n in range(100, 130)]
        assert first.fallback.degraded
    spill = first.fallback.spill_path
    assert spill.exists()
    assert oct(spill.stat().st_mode & 0o777) == "0o600"
    chattr(db, False)
    chattr(db.with_name(db.name + "-wal"), False)

    second = FallbackTaskManager(FAST, db_path=db, busy_timeout=0.1)
    async with second:
        await second.register_task("later", handler)
        assert not spill.exists()
        for task_id in ids:
            info = await second.wait_for(task_id, timeout=30)
            assert info["status"] == "completed"
    statuses = stored_statuses(db)
    assert all(statuses[task_id] == "completed" for task_id in ids)
    assert all(handler.executions[n] == 1 for n in range(100, 130))


async def test_workflows_and_keys_stay_in_sqlite_and_are_refused_while_degraded(
    manager: FallbackTaskManager, db: Path
) -> None:
    """Dependencies and concurrency keys need one transaction of one store: while SQLite
    is locked by another process they are refused (StoreUnavailable: nothing accepted is
    lost) while plain tasks still go to memory; once it is back they work again."""
    from taskyard.framework.errors import StoreUnavailable

    handler = Counting()
    await manager.register_task("count", handler)
    parent = await manager.schedule_task("count", {"n": 0})
    child = await manager.schedule_task("count", {"n": 1}, depends_on=[parent])
    assert (await manager.wait_for(child, timeout=30))["status"] == "completed"
    assert await manager.store.dependencies(child) == [parent]
    release = db.with_name("release")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, time, pathlib\n"
            f"conn = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "conn.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            f"release = pathlib.Path({str(release)!r})\n"
            "deadline = time.monotonic() + 60\n"
            "while not release.exists() and time.monotonic() < deadline:\n"
            "    time.sleep(0.01)\n"
            "conn.execute('COMMIT')\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"locked"
        plain = await manager.schedule_task("count", {"n": 2})
        assert manager.fallback.degraded and plain in manager.fallback.memory.tasks
        for options in ({"depends_on": [parent]}, {"concurrency_key": "k"}):
            with pytest.raises(StoreUnavailable, match="SQLite only"):
                await manager.schedule_task("count", {"n": 3}, **options)
    finally:
        release.touch()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()
    await until(lambda: not manager.fallback.degraded, message="recovery")
    keyed = await manager.schedule_task("count", {"n": 4}, concurrency_key="k")
    for task_id in (plain, keyed):
        assert (await manager.wait_for(task_id, timeout=30))["status"] == "completed"
    assert sorted(handler.executions) == [0, 1, 2, 4]
