"""A producer-only manager follows a bounded number of the tasks it scheduled."""

from __future__ import annotations

import asyncio
from typing import Any

from taskyard.backends.memory import InMemoryStore, InMemoryTaskManager
from taskyard.framework import EngineConfig
from taskyard.framework.models import TaskRecord


async def test_a_producer_follows_only_its_newest_unfinished_tasks() -> None:
    manager = InMemoryTaskManager(EngineConfig(run_worker=False, tracked_tasks=10))
    await manager.register_task("noop", lambda payload: None)
    async with manager:
        ids = await manager.schedule_many(
            [{"task_type": "noop", "payload": {"n": n}} for n in range(25)]
        )
        assert manager.get_active_task_count() == 10
        assert manager.get_active_task_ids() == ids[-10:]
        assert not manager.is_task_active(ids[0])
        assert manager.is_task_active(ids[-1])
        assert len(manager.tasks) == 25  # the store keeps every task; only tracking is bounded


class CountingReads(InMemoryStore):
    """Counts ``get``: the read wait_for and wait_all make per task."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    async def get(self, task_id: str) -> TaskRecord | None:
        self.gets += 1
        return await super().get(task_id)


async def test_wait_all_follows_the_tasks_ending_here_without_reading_each() -> None:
    store = CountingReads()
    release = asyncio.Event()

    async def held(payload: dict[str, Any]) -> int:
        await release.wait()
        return int(payload["n"])

    async with InMemoryTaskManager(EngineConfig(concurrency=5), store=store) as manager:
        await manager.register_task("held", held)
        ids = [await manager.schedule_task("held", {"n": n}) for n in range(40)]
        waiting = asyncio.create_task(manager.wait_all(timeout=10))
        await asyncio.sleep(0)  # wait_all is waiting now
        release.set()
        await waiting
        assert manager.get_active_task_count() == 0
        statuses = [await manager.get_task_status(task_id) for task_id in ids]
    assert all(s is not None and s["status"] == "completed" for s in statuses)
    assert store.gets <= 40 + 2  # the status reads above; wait_all itself read ~nothing


async def test_wait_all_sees_tasks_that_another_manager_ran() -> None:
    """A producer's tasks end in a worker elsewhere (here: another manager on the same
    store); no event reaches the producer, which learns it from the store each poll."""
    store = InMemoryStore()
    producer = InMemoryTaskManager(EngineConfig(run_worker=False, poll_interval=0.05), store=store)
    worker = InMemoryTaskManager(EngineConfig(poll_interval=0.05), store=store)
    await worker.register_task("noop", lambda payload: None)
    async with producer, worker:
        ids = await producer.schedule_many(
            [{"task_type": "noop", "payload": {"n": n}} for n in range(30)]
        )
        await producer.wait_all(timeout=10)
        assert producer.get_active_task_count() == 0
        statuses = [await producer.get_task_status(task_id) for task_id in ids]
    assert all(s is not None and s["status"] == "completed" for s in statuses)
