"""The sqlite backend when its file stops taking writes mid-run (no fallback)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework import EngineConfig


async def test_stop_returns_when_the_store_refuses_outcomes_and_the_task_runs_again(
    tmp_path: Path, chattr: Callable[[Path, bool], None]
) -> None:
    db = tmp_path / "queue.db"
    config = EngineConfig(poll_interval=0.05, lease_seconds=1.0, shutdown_timeout=0.2)
    started, release = asyncio.Event(), asyncio.Event()
    runs = 0

    async def job(payload: dict[str, int]) -> int:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()
        return payload["n"]

    first = QueuedTaskManager(config, db_path=db, busy_timeout=0.1)
    await first.register_task("job", job)
    await first.start()
    task_id = await first.schedule_task("job", {"n": 7})
    await asyncio.wait_for(started.wait(), 10)
    chattr(db.with_name(db.name + "-wal"), True)
    chattr(db, True)
    release.set()  # the outcome cannot be written now
    await asyncio.wait_for(first.stop(), 30)  # bounded, not a hang
    chattr(db, False)
    chattr(db.with_name(db.name + "-wal"), False)

    second = QueuedTaskManager(config, db_path=db)
    release.set()
    await second.register_task("job", job)
    async with second:
        deadline = time.monotonic() + 30
        info = await second.wait_for(task_id, timeout=deadline - time.monotonic())
    assert info["status"] == "completed"
    assert info["result"] == 7
    assert info["attempts"] == 2  # the lost outcome's attempt counted; the lease rescued it
    assert runs == 2
