"""A full disk (a 2 MB tmpfs) and a read-only file system, under live managers: every
task a call accepted is kept, every refusal is typed, and health says what fails."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from taskyard.backends.fallback import FallbackTaskManager
from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework.errors import StoreFull, StoreUnavailable
from taskyard.testing import fast_config, wait_until

from .conftest import remount

BLOB = "x" * 4000


async def noop(payload):
    return None


def stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM taskyard_tasks")}


def fill(folder: Path, size: int) -> Path:
    """Take ``size`` bytes of the file system with a file that can be removed later."""
    filler = folder / "filler"
    with open(filler, "wb") as file:
        file.write(b"\0" * size)
    return filler


async def test_a_full_disk_keeps_every_accepted_task_and_health_says_full(
    small_tmpfs: Path,
) -> None:
    db = small_tmpfs / "q.db"
    filler = fill(small_tmpfs, 512 * 1024)
    accepted: list[str] = []
    refused = 0
    async with QueuedTaskManager(fast_config(run_worker=False), db_path=db) as manager:
        await manager.register_task("noop", noop)
        for n in range(2000):
            try:
                accepted.append(await manager.schedule_task("noop", {"n": n, "blob": BLOB}))
            except StoreFull:
                refused += 1
                if refused >= 5:
                    break
        assert refused, "the disk never filled"
        health = await manager.health()
        assert health["status"] == "down", health
        assert "full" in health["reason"]
        filler.unlink()  # free space: writes go on
        accepted.append(await manager.schedule_task("noop", {"n": -1}))
        assert (await manager.health())["status"] == "ok"
    lost = set(accepted) - stored_ids(db)
    print(f"\nfull disk: {len(accepted)} accepted, {refused} refused (StoreFull), {len(lost)} lost")
    assert lost == set()


async def test_the_fallback_holds_tasks_through_a_full_disk_and_moves_them_back(
    small_tmpfs: Path,
) -> None:
    db = small_tmpfs / "q.db"
    filler = fill(small_tmpfs, 1536 * 1024)  # leaves about 0.5 MB
    manager = FallbackTaskManager(fast_config(run_worker=False), db_path=db)
    manager.fallback._probe_max = 0.1
    async with manager:
        await manager.register_task("noop", noop)
        accepted = [await manager.schedule_task("noop", {"n": n, "blob": BLOB}) for n in range(150)]
        assert manager.fallback.degraded, "the disk never filled"
        held = manager.fallback.held_in_memory
        assert held > 0
        assert (await manager.health())["status"] == "degraded"
        filler.unlink()
        await wait_until(lambda: not manager.fallback.degraded, timeout=30)
    lost = set(accepted) - stored_ids(db)
    print(
        f"\nfull disk, fallback: {len(accepted)} accepted, {held} held in memory, {len(lost)} lost"
    )
    assert lost == set()


async def test_a_read_only_file_system_is_refused_or_bridged_by_the_fallback(
    small_tmpfs: Path,
) -> None:
    # Linux refuses to remount a file system read-only while a file on it is open for
    # writing, so the queue meets the read-only file system when it (re)starts.
    db = small_tmpfs / "q.db"
    async with QueuedTaskManager(fast_config(run_worker=False), db_path=db) as manager:
        await manager.register_task("noop", noop)
        before = await manager.schedule_task("noop", {})
    remount(small_tmpfs, "ro")
    try:
        plain = QueuedTaskManager(fast_config(run_worker=False), db_path=db)
        with pytest.raises(StoreUnavailable, match="read-only"):
            await plain.start()
        fallback = FallbackTaskManager(fast_config(run_worker=False), db_path=db)
        fallback.fallback._probe_max = 0.1
        await fallback.register_task("noop", noop)
        await fallback.start()
        try:
            held = [await fallback.schedule_task("noop", {"n": n}) for n in range(20)]
            health = await fallback.health()
            assert health["status"] == "degraded", health
            assert "read-only" in health["reason"]
        finally:
            remount(small_tmpfs, "rw")
        await wait_until(lambda: not fallback.fallback.degraded, timeout=30)
        await fallback.stop()
    finally:
        remount(small_tmpfs, "rw")
    assert {before, *held} <= stored_ids(db)


async def test_a_read_only_file_system_at_start_is_refused_clearly(small_tmpfs: Path) -> None:
    db = small_tmpfs / "q.db"
    remount(small_tmpfs, "ro")
    manager = QueuedTaskManager(fast_config(), db_path=db)
    with pytest.raises(StoreUnavailable, match=str(small_tmpfs)):
        await manager.start()
    assert not os.path.exists(db)
