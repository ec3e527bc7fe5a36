"""Engine regressions the contract suite found, pinned with a store slower than the engine
(the in-memory store answers at once and hides ordering bugs a real store shows)."""

import asyncio

import pytest
from loguru import logger

from taskyard.backends.memory import InMemoryStore, InMemoryTaskManager
from taskyard.framework import EngineConfig
from taskyard.framework.errors import ManagerStateError
from taskyard.framework.store import Capability
from taskyard.settings import load_settings
from taskyard.settings.conversion import engine_config_from_settings
from taskyard.testing import EventRecorder, fast_config

WAIT = 5.0


class SlowWritesStore(InMemoryStore):
    """Writes outcomes after a pause, as a store doing I/O does."""

    async def finish(self, outcomes):
        await asyncio.sleep(0.02)  # simulated I/O latency, not synchronisation
        return await super().finish(outcomes)


async def test_a_retry_is_picked_up_when_the_store_writes_slower_than_the_claim_loop():
    calls = 0

    async def flaky(payload):
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ValueError("again")
        return calls

    async with InMemoryTaskManager(fast_config(), store=SlowWritesStore()) as manager:
        await manager.register_task("flaky", flaky)
        task_id = await manager.schedule_task("flaky", {})
        status = await manager.wait_for(task_id, timeout=WAIT)
    assert (status["status"], status["attempts"], status["result"]) == ("completed", 3, 3)


async def test_stop_writes_the_release_of_a_cancelled_handler_and_announces_it():
    store = SlowWritesStore()
    manager = InMemoryTaskManager(fast_config(), store=store)
    await manager.start()
    events = EventRecorder(manager.events)
    entered = asyncio.Event()

    async def endless(payload):
        entered.set()
        await asyncio.Event().wait()

    await manager.register_task("endless", endless)
    task_id = await manager.schedule_task("endless", {})
    await asyncio.wait_for(entered.wait(), WAIT)
    await manager.stop(timeout=0.01)
    assert events.statuses(task_id) == ["queued", "running", "queued"]
    stored = store.tasks[task_id]
    assert (stored.status, stored.attempts, stored.lease_token) == ("queued", 0, None)


async def test_a_stopped_manager_refuses_calls_instead_of_restarting():
    manager = InMemoryTaskManager(fast_config())
    await manager.register_task("echo", lambda payload: payload)
    task_id = await manager.schedule_task("echo", {"n": 1})  # a new manager starts lazily
    assert manager.started
    await manager.wait_for(task_id, timeout=WAIT)
    await manager.stop()
    for call in (
        manager.get_task_status(task_id),
        manager.wait_for(task_id),
        manager.cancel_task(task_id),
        manager.schedule_task("echo", {}),
        manager.count_by_status(),
    ):
        with pytest.raises(ManagerStateError, match="stopped"):
            await call
    assert not manager.started

    await manager.start()  # an explicit start brings it back
    try:
        assert (await manager.get_task_status(task_id))["status"] == "completed"
    finally:
        await manager.stop()


async def test_an_in_memory_manager_without_a_worker_says_its_tasks_never_run() -> None:
    messages: list[str] = []
    logger.enable("taskyard")
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    try:
        manager = InMemoryTaskManager(EngineConfig(run_worker=False))
        async with manager:
            await manager.schedule_task("resize_video", {})
    finally:
        logger.remove(sink)
        logger.disable("taskyard")
    assert any("will never run" in message for message in messages), messages


def test_the_settings_task_types_list_reaches_the_engine() -> None:
    settings = load_settings(
        overrides={"task_execution.task_types": ["send_email"], "task_execution.run_worker": False}
    )
    config = engine_config_from_settings(settings.task_execution)
    assert config.task_types == frozenset({"send_email"}) and not config.run_worker
    assert engine_config_from_settings(load_settings().task_execution).task_types is None


async def test_the_failure_s_log_line_carries_its_traceback() -> None:
    messages: list[str] = []
    logger.enable("taskyard")
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")

    def deep(payload: dict[str, int]) -> float:
        return 1 / payload["n"]

    try:
        async with InMemoryTaskManager(fast_config()) as manager:
            await manager.register_task("divide", deep, max_attempts=1)
            task_id = await manager.schedule_task("divide", {"n": 0})
            await manager.wait_for(task_id, timeout=30)
    finally:
        logger.remove(sink)
        logger.disable("taskyard")
    [failure] = [message for message in messages if task_id in message]
    assert "failed after 1 attempt(s): ZeroDivisionError" in failure
    assert "in deep" in failure and failure.endswith("ZeroDivisionError: division by zero")


class GatedReturnsStore(InMemoryStore):
    """Commits at once but answers the engine only when a gate opens, as a database whose
    reply is still on the wire after the row is visible to every other reader. It does
    not claim on add, so that a claim can beat the add's answer (as PostgreSQL's can)."""

    capabilities = InMemoryStore.capabilities - {Capability.CLAIM_ON_ADD}

    def __init__(self):
        super().__init__()
        self.add_gate = asyncio.Event()
        self.finish_gate = asyncio.Event()
        self.add_gate.set()
        self.finish_gate.set()
        self.finished = asyncio.Event()
        self.wake = None

    def set_wakeup(self, wake):
        self.wake = wake

    async def add(self, records):
        ids = await super().add(records)
        if self.wake is not None:  # as PostgreSQL's own NOTIFY reaches its LISTEN
            self.wake()
        await self.add_gate.wait()
        return ids

    async def finish(self, outcomes):
        applied = await super().finish(outcomes)
        self.finished.set()
        await self.finish_gate.wait()
        return applied


async def test_wait_for_returns_after_the_outcome_event_not_just_the_stored_status():
    store = GatedReturnsStore()
    async with InMemoryTaskManager(fast_config(), store=store) as manager:
        events = EventRecorder(manager.events)
        await manager.register_task("noop", lambda payload: None)
        store.finish_gate.clear()
        task_id = await manager.schedule_task("noop", {})
        await asyncio.wait_for(store.finished.wait(), WAIT)  # stored completed, not yet said
        waiting = asyncio.create_task(manager.wait_for(task_id, timeout=WAIT))
        await asyncio.sleep(0)  # let wait_for read the stored status
        assert not waiting.done()
        store.finish_gate.set()
        status = await waiting
        assert status["status"] == "completed"
        assert events.statuses(task_id) == ["queued", "running", "completed"]


async def test_a_task_claimed_before_its_schedule_returns_still_says_queued_first():
    store = GatedReturnsStore()
    async with InMemoryTaskManager(fast_config(), store=store) as manager:
        events = EventRecorder(manager.events)
        started = asyncio.Event()

        async def handler(payload):
            started.set()

        await manager.register_task("early", handler)
        store.add_gate.clear()  # the row is claimable, the caller not yet answered
        scheduling = asyncio.create_task(manager.schedule_task("early", {}))
        await asyncio.wait_for(started.wait(), WAIT)
        store.add_gate.set()
        task_id = await scheduling
        await manager.wait_for(task_id, timeout=WAIT)
        assert events.statuses(task_id) == ["queued", "running", "completed"]
