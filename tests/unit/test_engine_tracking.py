"""A producer-only manager follows a bounded number of the tasks it scheduled."""

from __future__ import annotations

from taskyard.backends.memory import InMemoryTaskManager
from taskyard.framework import EngineConfig


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
