"""The engine does no store work it can decide locally: a task that is not due does not
make the worker claim, wake-ups during a claim coalesce, and the next delayed task still
runs on time. Counted with a real in-memory store that counts its calls."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any

from taskyard.backends.memory import InMemoryStore, InMemoryTaskManager
from taskyard.framework import EngineConfig, RetryPolicy
from taskyard.framework.models import TaskRecord, TaskStatus
from taskyard.framework.store import Capability
from taskyard.testing import wait_until

WAIT = 5.0


class CountingStore(InMemoryStore):
    """An in-memory store that counts claims and next_due reads, and can hold a claim
    until released (a store doing I/O). Without ``claim_on_add`` it lacks that capability,
    so that every task goes through the claim loop whose decisions are counted here."""

    def __init__(self, *, claim_on_add: bool = False) -> None:
        super().__init__()
        if not claim_on_add:
            self.capabilities = InMemoryStore.capabilities - {Capability.CLAIM_ON_ADD}
        self.calls: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None
        self.claim_entered = asyncio.Event()

    async def claim(self, **options: Any) -> list[TaskRecord]:
        self.calls["claim"] += 1
        self.claim_entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return await super().claim(**options)

    async def next_due(self, types: Any = None) -> datetime | None:
        self.calls["next_due"] += 1
        return await super().next_due(types)


def config(**options: Any) -> EngineConfig:
    # polls far apart: every claim counted here comes from the engine's own decisions
    return EngineConfig(poll_interval=60.0, **options)


async def noop(payload: dict[str, Any]) -> None:
    return None


async def test_scheduling_tasks_that_are_not_due_makes_no_claims() -> None:
    store = CountingStore()
    async with InMemoryTaskManager(config(), store=store) as manager:
        await manager.register_task("noop", noop)
        marker = await manager.schedule_task("noop", {})
        await manager.wait_for(marker, timeout=WAIT)  # the start-up claims are over
        before = store.calls.copy()
        for n in range(200):
            await manager.schedule_task("noop", {"n": n}, delay=3600)
        marker = await manager.schedule_task("noop", {})
        await manager.wait_for(marker, timeout=WAIT)
        claims = store.calls["claim"] - before["claim"]
        reads = store.calls["next_due"] - before["next_due"]
    # the due marker needs a claim (and perhaps one more to see nothing else is due);
    # the 200 delayed tasks need none
    assert claims <= 2, store.calls
    assert reads <= 1, store.calls
    counts = await store.count_by_status()
    assert counts["queued"] == 200


async def test_wake_ups_during_a_claim_coalesce() -> None:
    store = CountingStore()
    async with InMemoryTaskManager(config(concurrency=100), store=store) as manager:
        await manager.register_task("noop", noop)
        first = await manager.schedule_task("noop", {})
        await manager.wait_for(first, timeout=WAIT)
        store.gate = asyncio.Event()
        store.claim_entered.clear()
        await manager.schedule_task("noop", {})
        await asyncio.wait_for(store.claim_entered.wait(), WAIT)  # a claim is in flight
        before = store.calls["claim"]
        ids = [await manager.schedule_task("noop", {"n": n}) for n in range(50)]
        store.gate.set()
        for task_id in ids:
            await manager.wait_for(task_id, timeout=WAIT)
        after = store.calls["claim"]
    # the 50 wake-ups that arrived during the held claim make one more claim, not 50
    assert after - before <= 2, store.calls


async def test_a_delayed_task_runs_when_due_without_a_poll() -> None:
    store = CountingStore()
    async with InMemoryTaskManager(config(), store=store) as manager:
        await manager.register_task("noop", noop)
        late = await manager.schedule_task("noop", {}, delay=0.2)
        soon = await manager.schedule_task("noop", {}, delay=0.05)
        # poll_interval is a minute: only the engine's own next-due timer can run them
        assert (await manager.wait_for(soon, timeout=WAIT))["status"] == "completed"
        assert (await manager.wait_for(late, timeout=WAIT))["status"] == "completed"


async def test_a_retry_with_backoff_runs_when_due() -> None:
    calls = 0

    async def flaky(payload: dict[str, Any]) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("again")
        return calls

    manager = InMemoryTaskManager(config(retry=RetryPolicy(initial=0.05, jitter=0)))
    async with manager:
        await manager.register_task("flaky", flaky)
        task_id = await manager.schedule_task("flaky", {})
        status = await manager.wait_for(task_id, timeout=WAIT)
    assert (status["status"], status["attempts"]) == ("completed", 3)


async def test_a_handler_registered_later_finds_tasks_already_queued() -> None:
    store = CountingStore()
    other = InMemoryTaskManager(config(run_worker=False), store=store)
    await other.register_task("late", noop)
    async with other:
        task_id = await other.schedule_task("late", {})
        async with InMemoryTaskManager(config(), store=store) as worker:
            await worker.register_task("late", noop)
            status = await worker.wait_for(task_id, timeout=WAIT)
    assert status["status"] == "completed"


async def test_tracking_evicts_the_oldest_in_order_after_many_evictions() -> None:
    manager = InMemoryTaskManager(EngineConfig(run_worker=False, tracked_tasks=100))
    await manager.register_task("noop", noop)
    async with manager:
        ids: list[str] = []
        for start in range(0, 5000, 500):
            ids += await manager.schedule_many(
                [{"task_type": "noop", "payload": {"n": n}} for n in range(start, start + 500)]
            )
        assert manager.get_active_task_ids() == ids[-100:]
        assert not manager.is_task_active(ids[-101])


class SlowNextDueStore(InMemoryStore):
    """Answers next_due after a pause, as a store doing I/O does: a delayed task can
    come due between a claim and the answer."""

    async def next_due(self, types: Any = None) -> datetime | None:
        await asyncio.sleep(0.06)  # simulated I/O latency, not synchronisation
        return await super().next_due(types)


async def test_tasks_due_after_one_that_came_due_during_a_next_due_read_still_run() -> None:
    # A comes due and is claimed; while next_due is read, B comes due, so the answer
    # lies in the past: B is claimed at once, and the engine must ask again to learn C.
    async with InMemoryTaskManager(config(), store=SlowNextDueStore()) as manager:
        await manager.register_task("noop", noop)
        ids = [
            await manager.schedule_task("noop", {"n": n}, delay=delay)
            for n, delay in enumerate((0.05, 0.08, 0.3))
        ]
        for task_id in ids:
            assert (await manager.wait_for(task_id, timeout=WAIT))["status"] == "completed"


# -- claiming in the write that adds the task (Capability.CLAIM_ON_ADD) ---------------------


async def test_tasks_scheduled_while_slots_are_free_are_claimed_as_they_are_added() -> None:
    store = CountingStore(claim_on_add=True)
    async with InMemoryTaskManager(config(concurrency=4), store=store) as manager:
        await manager.register_task("noop", noop)
        marker = await manager.schedule_task("noop", {})
        await manager.wait_for(marker, timeout=WAIT)  # the start-up claims are over
        before = store.calls["claim"]
        recorder = []
        manager.events.subscribe(
            lambda event: recorder.append((event.task_id, event.status, event.attempts))
        )
        ids = []
        for n in range(20):
            ids.append(await manager.schedule_task("noop", {"n": n}))
            await manager.wait_for(ids[-1], timeout=WAIT)
        assert store.calls["claim"] == before  # no claim: each went in as running
        for task_id in ids:
            status = await manager.get_task_status(task_id)
            assert status is not None
            assert (status["status"], status["attempts"]) == ("completed", 1)
            seen = [(str(s), attempts) for t, s, attempts in recorder if t == task_id]
            assert seen == [("queued", 0), ("running", 1), ("completed", 1)]


async def test_tasks_added_while_the_slots_are_taken_run_by_priority() -> None:
    """With no slot free, new tasks are queued as before: the claim loop takes them in
    priority order once the slot frees."""
    store = CountingStore(claim_on_add=True)
    order: list[str] = []
    release, blocking = asyncio.Event(), asyncio.Event()

    async def record(payload: dict[str, Any]) -> None:
        order.append(payload["name"])
        if payload["name"] == "blocker":
            blocking.set()
            await release.wait()

    async with InMemoryTaskManager(config(concurrency=1), store=store) as manager:
        await manager.register_task("record", record)
        blocker = await manager.schedule_task("record", {"name": "blocker"})
        await asyncio.wait_for(blocking.wait(), WAIT)  # the one slot is taken
        urgent = await manager.schedule_task("record", {"name": "urgent"}, priority=0)
        late = await manager.schedule_task("record", {"name": "late"}, priority=9)
        release.set()
        for task_id in (blocker, urgent, late):
            await manager.wait_for(task_id, timeout=WAIT)
    assert order == ["blocker", "urgent", "late"]


async def test_a_task_claimed_on_add_runs_on_its_own_copy_of_the_payload() -> None:
    seen: list[dict[str, Any]] = []

    async def mutate(payload: dict[str, Any]) -> None:
        seen.append(dict(payload))
        payload["changed"] = True

    async with InMemoryTaskManager(config(), store=CountingStore(claim_on_add=True)) as manager:
        await manager.register_task("mutate", mutate)
        mine = {"n": 1}
        task_id = await manager.schedule_task("mutate", mine)
        await manager.wait_for(task_id, timeout=WAIT)
        status = await manager.get_task_status(task_id)
    assert mine == {"n": 1}
    assert seen == [{"n": 1}]
    assert status is not None and status["payload"] == {"n": 1}


async def test_a_producer_only_manager_never_claims_what_it_schedules() -> None:
    """Handlers registered on a manager with run_worker = false (a web process that
    registers its task types) run elsewhere: its tasks are added queued, not claimed."""
    ran: list[int] = []

    async def record(payload: dict[str, Any]) -> None:
        ran.append(payload["n"])

    store = CountingStore(claim_on_add=True)
    producer = InMemoryTaskManager(config(run_worker=False), store=store)
    await producer.register_task("record", record)
    async with producer:
        task_id = await producer.schedule_task("record", {"n": 1})
        status = await producer.get_task_status(task_id)
        assert status is not None and status["status"] == "queued"
        await asyncio.sleep(0)  # a launched task would start here
    assert ran == []


async def test_nothing_is_claimed_on_add_while_a_claim_may_fill_the_slots() -> None:
    """A claim in flight was sized for every free slot: a task claimed on add meanwhile
    would make one more running than the concurrency allows."""
    limit = 3
    store = CountingStore(claim_on_add=True)
    release = asyncio.Event()
    current = peak = 0

    async def held(payload: dict[str, Any]) -> None:
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        await release.wait()
        current -= 1

    async with InMemoryTaskManager(config(concurrency=limit), store=store) as manager:
        await manager.register_task("held", held)
        store.gate = asyncio.Event()  # claims wait here: one is in flight below
        first = await manager.schedule_task("held", {"n": 0})
        await asyncio.wait_for(store.claim_entered.wait(), WAIT)
        later = [await manager.schedule_task("held", {"n": n}) for n in range(1, 6)]
        store.gate.set()

        async def started() -> bool:
            return (await store.count_by_status())[TaskStatus.RUNNING] >= limit

        await wait_until(started, message="the claim's tasks starting")
        counts = await store.count_by_status()
        assert counts[TaskStatus.RUNNING] == limit  # the claim took three; none more
        assert counts[TaskStatus.QUEUED] == 6 - limit
        release.set()
        for task_id in (first, *later):
            await manager.wait_for(task_id, timeout=WAIT)
    assert peak == limit
