"""A SIGKILL storm over several worker processes: nothing accepted is lost, and every
task that ran more than once did so because a killed worker was running it."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework import EngineConfig

from .conftest import Workers
from .worker_app import HANDLERS

pytestmark = pytest.mark.slow

TASKS = 800
WORKERS = 3
KILLS = 20
SETTINGS = {"lease_seconds": "1.0", "poll_interval": "0.05", "max_concurrency": "4"}


async def test_a_sigkill_storm_loses_nothing_and_duplicates_only_killed_runs(
    workers: Workers,
) -> None:
    rng = random.Random(10)
    producer = QueuedTaskManager(EngineConfig(run_worker=False), db_path=workers.db)
    for task_type, handler in HANDLERS.items():
        await producer.register_task(task_type, handler)
    async with producer:
        ids = await producer.schedule_many(
            [
                {
                    "task_type": "work",
                    "payload": {"n": n, "seconds": rng.uniform(0.1, 0.4)},
                    # more attempts than kills: a task killed each time would otherwise
                    # fail (dead-lettered, as promised), which is not what this counts
                    "max_attempts": KILLS + 5,
                }
                for n in range(TASKS)
            ]
        )
        alive = [workers.start(**SETTINGS) for _ in range(WORKERS)]
        kills = 0
        while kills < KILLS:
            counts = await producer.count_by_status()
            if counts["completed"] == TASKS:
                break
            await asyncio.sleep(rng.uniform(0.1, 0.4))  # the storm's rhythm, not a sync
            victim = alive.pop(rng.randrange(len(alive)))
            workers.kill(victim)
            kills += 1
            alive.append(workers.start(**SETTINGS))
        deadline = time.monotonic() + 120
        for task_id in ids:
            status = await producer.wait_for(task_id, timeout=max(deadline - time.monotonic(), 1))
            assert status["status"] == "completed", status
        counts = await producer.count_by_status()

    starts = workers.starts()
    lost = TASKS - counts["completed"]
    duplicates = {n: c for n, c in starts.items() if c > 1}
    # Trace each extra execution: every run but a task's last must have been cut short by
    # a SIGKILL of the process running it (a start without an end, or an end whose
    # outcome the killed process had not written yet).
    runs: dict[str, list[int]] = {}
    for event, n, pid in workers.events():
        if event == "start":
            runs.setdefault(n, []).append(pid)
    untraced = {
        n: pids for n, pids in runs.items() if any(pid not in workers.killed for pid in pids[:-1])
    }
    print(
        f"\nkill storm: {kills} SIGKILLs over {WORKERS} workers, {TASKS} tasks, "
        f"{lost} lost, {len(duplicates)} run twice or more "
        f"({sum(duplicates.values()) - len(duplicates)} extra runs), "
        f"{len(untraced)} not traced to a killed run"
    )
    assert kills >= 1
    assert lost == 0
    assert set(starts) == {str(n) for n in range(TASKS)}
    assert untraced == {}
