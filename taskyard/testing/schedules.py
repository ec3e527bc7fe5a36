"""The schedules part of the contract: what every store does with periodic schedules.

:class:`ScheduleContract` is a mixin of pytest tests over the same ``make_manager``
fixture as :class:`~taskyard.testing.TaskManagerContract`; a backend joins with::

    class TestMyBackendSchedules(ScheduleContract):
        pass

The rules (slots, missed policies, time zones) are :mod:`taskyard.framework.schedules`'s
and are tested once; this suite holds a store to its part: keeping a schedule's state,
and firing a slot atomically and once (the conditional update on the expected next fire
time and the slot's task in one transaction). Durability across a restart is checked on
stores with the ``durable`` capability.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from taskyard.framework.models import TaskStatus
from taskyard.framework.schedules import (
    ScheduleRecord,
    declare,
    fire,
    make_schedule,
    run_now,
    schedule_slot,
    slot_key,
    slot_record,
)
from taskyard.framework.store import Capability
from taskyard.testing.contract import require
from taskyard.testing.helpers import MakeManager, wait_until

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
"""A fixed "now" for store-level tests: the firing clock is injected."""


def _record(
    name: str = "tick", *, every: float = 60, next_fire_at: datetime = T0
) -> ScheduleRecord:
    schedule = make_schedule(name, "work", {"n": 1}, every=every, missed="all")
    return ScheduleRecord(
        schedule=schedule, next_fire_at=next_fire_at, created_at=T0, updated_at=T0
    )


class ScheduleContract:
    """Periodic schedules, on every store."""

    async def test_a_schedule_is_stored_read_listed_and_removed(
        self, make_manager: MakeManager
    ) -> None:
        store = (await make_manager(run_worker=False)).store
        assert await store.get_schedule("tick") is None
        assert await store.insert_schedule(_record("tick"))
        assert await store.insert_schedule(_record("alpha"))
        assert not await store.insert_schedule(_record("tick", every=5)), "a name is unique"
        stored = await store.get_schedule("tick")
        assert stored is not None
        assert stored.schedule == _record("tick").schedule, "the first declaration stays"
        assert stored.next_fire_at == T0 and stored.enabled and stored.last_fire_at is None
        assert [record.name for record in await store.list_schedules()] == ["alpha", "tick"]
        assert await store.remove_schedule("tick")
        assert not await store.remove_schedule("tick")
        assert [record.name for record in await store.list_schedules()] == ["alpha"]

    async def test_update_is_conditional_on_the_expected_next_fire(
        self, make_manager: MakeManager
    ) -> None:
        store = (await make_manager(run_worker=False)).store
        await store.insert_schedule(_record())
        paused = _record(next_fire_at=T0 + timedelta(minutes=5))
        paused.enabled = False
        assert not await store.update_schedule(paused, expected_next=T0 + timedelta(seconds=1))
        assert (await store.get_schedule("tick")).enabled  # type: ignore[union-attr]
        assert await store.update_schedule(paused, expected_next=T0)
        stored = await store.get_schedule("tick")
        assert stored is not None and not stored.enabled
        assert stored.next_fire_at == T0 + timedelta(minutes=5)
        assert await store.update_schedule(_record(next_fire_at=T0)), "unconditional update"
        assert not await store.update_schedule(_record("missing"))

    async def test_firing_creates_the_slot_task_and_advances_in_one_step(
        self, make_manager: MakeManager
    ) -> None:
        store = (await make_manager(run_worker=False)).store
        await store.insert_schedule(_record())
        record = await store.get_schedule("tick")
        assert record is not None
        now = T0 + timedelta(seconds=1)
        ids, step = await fire(store, record, now)
        assert ids is not None and len(ids) == 1 and step is not None
        task = await store.get(ids[0])
        assert task is not None and task.status is TaskStatus.QUEUED
        assert task.type == "work" and task.payload == {"n": 1, "schedule_slot": T0.isoformat()}
        assert task.idempotency_key == slot_key("tick", T0)
        assert schedule_slot(task) == ("tick", T0), "the task carries its slot"
        stored = await store.get_schedule("tick")
        assert stored is not None
        assert stored.next_fire_at == T0 + timedelta(minutes=1)
        assert stored.last_fire_at == T0 and stored.last_task_id == ids[0]
        # the record read before is stale now: firing it again writes nothing
        again, _ = await fire(store, record, now)
        assert again is None
        assert len(await store.list_tasks()) == 1

    async def test_racing_firers_fire_a_slot_once(self, make_manager: MakeManager) -> None:
        store = (await make_manager(run_worker=False)).store
        await store.insert_schedule(_record())
        record = await store.get_schedule("tick")
        assert record is not None
        now = T0 + timedelta(seconds=1)
        results = await asyncio.gather(*(fire(store, record, now) for _ in range(8)))
        winners = [ids for ids, _ in results if ids is not None]
        assert len(winners) == 1 and len(winners[0]) == 1
        assert len(await store.list_tasks()) == 1

    async def test_a_slot_key_already_stored_is_not_fired_twice(
        self, make_manager: MakeManager
    ) -> None:
        # a next fire time put back (an operator's edit, a restored backup) meets the
        # slot's idempotency key: the existing task, no second one
        store = (await make_manager(run_worker=False)).store
        await store.insert_schedule(_record())
        record = await store.get_schedule("tick")
        assert record is not None
        first, _ = await fire(store, record, T0)
        assert first is not None
        assert await store.update_schedule(_record(next_fire_at=T0))
        rewound = await store.get_schedule("tick")
        assert rewound is not None
        second, _ = await fire(store, rewound, T0)
        assert second == first
        assert len(await store.list_tasks()) == 1

    async def test_a_paused_or_removed_schedule_does_not_fire(
        self, make_manager: MakeManager
    ) -> None:
        store = (await make_manager(run_worker=False)).store
        await store.insert_schedule(_record())
        record = await store.get_schedule("tick")
        assert record is not None
        paused = _record()
        paused.enabled = False
        assert await store.update_schedule(paused)
        ids = await store.fire_schedule(
            "tick",
            expected_next=T0,
            records=[slot_record(record.schedule, T0, now=T0, default_max_attempts=3)],
            next_fire_at=T0 + timedelta(minutes=1),
            last_fire_at=T0,
            now=T0,
        )
        assert ids is None
        await store.remove_schedule("tick")
        assert (await fire(store, record, T0))[0] is None
        assert await store.list_tasks() == []

    async def test_missed_slots_fire_by_policy_in_one_transaction(
        self, make_manager: MakeManager
    ) -> None:
        store = (await make_manager(run_worker=False)).store
        await store.insert_schedule(_record())  # every minute, missed = "all"
        record = await store.get_schedule("tick")
        assert record is not None
        ids, _ = await fire(store, record, T0 + timedelta(minutes=4, seconds=1))
        assert ids is not None and len(ids) == 5
        slots = sorted(schedule_slot(task)[1] for task in await store.list_tasks())  # type: ignore[index]
        assert slots == [T0 + timedelta(minutes=i) for i in range(5)]
        stored = await store.get_schedule("tick")
        assert stored is not None and stored.next_fire_at == T0 + timedelta(minutes=5)

    async def test_declare_creates_updates_and_leaves_unchanged(
        self, make_manager: MakeManager
    ) -> None:
        store = (await make_manager(run_worker=False)).store
        first = make_schedule("nightly", "work", {"v": 1}, cron="0 3 * * *")
        record, what = await declare(store, first, now=T0)
        assert what == "created" and record.next_fire_at == datetime(2030, 1, 2, 3, tzinfo=UTC)
        _, what = await declare(store, first, now=T0 + timedelta(hours=1))
        assert what == "unchanged"
        changed = make_schedule("nightly", "work", {"v": 2}, cron="0 3 * * *")
        record, what = await declare(store, changed, now=T0)
        assert what == "updated" and record.schedule.payload == {"v": 2}
        assert record.next_fire_at == datetime(2030, 1, 2, 3, tzinfo=UTC), "same timing"
        retimed = make_schedule("nightly", "work", {"v": 2}, cron="0 4 * * *")
        record, what = await declare(store, retimed, now=T0)
        assert what == "updated" and record.next_fire_at == datetime(2030, 1, 2, 4, tzinfo=UTC)
        assert [r.name for r in await store.list_schedules()] == ["nightly"], "not duplicated"

    async def test_run_now_adds_a_task_and_keeps_the_next_fire(
        self, make_manager: MakeManager
    ) -> None:
        store = (await make_manager(run_worker=False)).store
        await store.insert_schedule(_record())
        task_id = await run_now(store, "tick", now=T0 - timedelta(seconds=30))
        task = await store.get(task_id)
        assert task is not None and schedule_slot(task) == ("tick", T0 - timedelta(seconds=30))
        stored = await store.get_schedule("tick")
        assert stored is not None and stored.next_fire_at == T0

    async def test_a_worker_fires_a_declared_schedule_and_runs_each_slot_once(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        slots: list[Any] = []

        async def work(payload: dict[str, Any]) -> None:
            slots.append(payload)

        await manager.register_task("work", work)
        await declare(manager.store, make_schedule("fast", "work", {"k": 1}, every=0.05))
        await wait_until(lambda: len(slots) >= 3, message="three slots fired and ran")
        tasks = await manager.store.list_tasks(task_type="work")
        keys = [task.idempotency_key for task in tasks]
        assert len(keys) == len(set(keys)), "no slot fired twice"
        assert all(schedule_slot(task) is not None for task in tasks)
        assert slots[0]["k"] == 1 and "schedule_slot" in slots[0]

    async def test_schedules_survive_a_restart(self, make_manager: MakeManager) -> None:
        manager = await make_manager(run_worker=False)
        require(manager, Capability.DURABLE)  # in-memory: as long as the process (documented)
        await manager.store.insert_schedule(_record())
        record = await manager.store.get_schedule("tick")
        assert record is not None
        ids, _ = await fire(manager.store, record, T0)
        reopened = await make_manager(same_store=True, run_worker=False)
        stored = await reopened.store.get_schedule("tick")
        assert stored is not None and ids is not None
        assert stored.next_fire_at == T0 + timedelta(minutes=1)
        assert stored.last_fire_at == T0 and stored.last_task_id == ids[0]
        assert stored.schedule == record.schedule
