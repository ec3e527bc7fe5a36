"""TaskOrchestrator over an in-memory manager: runs follow their tasks through events."""

import asyncio

import pytest

from taskyard.backends.memory import InMemoryTaskManager
from taskyard.framework.errors import PermanentFailure, UnknownTaskType
from taskyard.framework.events import EventBus
from taskyard.framework.orchestrator import TaskOrchestrator
from taskyard.framework.runs import Run, RunRegistry, RunStatus
from taskyard.testing import fast_config

WAIT = 5.0


@pytest.fixture
async def manager():
    async with InMemoryTaskManager(fast_config()) as manager:
        yield manager


@pytest.fixture
def registry():
    return RunRegistry()


@pytest.fixture
def orchestrator(manager, registry):
    orchestrator = TaskOrchestrator(manager, registry)
    yield orchestrator
    orchestrator.close()


class Gate:
    """A handler that blocks until released, recording what it saw."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, payload):
        self.entered.set()
        await self.release.wait()
        return {"done": payload.get("n")}


async def test_a_submitted_run_goes_queued_running_completed(manager, registry, orchestrator):
    gate = Gate()
    await manager.register_task("report", gate)
    run = await orchestrator.submit("reports", "report", {"n": 3}, module_name="Reports",
                                    items_total=3)  # fmt: skip
    assert run.status is RunStatus.QUEUED
    assert registry.get_run(run.run_id) is run
    assert (await manager.get_task_status(run.run_id))["type"] == "report"
    assert (run.module_id, run.module_name, run.items_total) == ("reports", "Reports", 3)
    assert run.parameters == {"n": 3}

    await asyncio.wait_for(gate.entered.wait(), WAIT)
    assert run.status is RunStatus.RUNNING and run.started_at is not None
    gate.release.set()
    done = await orchestrator.wait_for_run(run.run_id, timeout=WAIT)
    assert done is run
    assert (run.status, run.exit_code, run.error_message) == (RunStatus.COMPLETED, 0, None)
    assert run.progress_percent == 100.0 and run.completed_at >= run.started_at
    assert run.duration_seconds is not None and run.duration_seconds >= 0


async def test_a_failing_task_fails_its_run_with_the_error(manager, orchestrator):
    async def broken(payload):
        raise PermanentFailure("the source file is missing")

    await manager.register_task("broken", broken)
    run = await orchestrator.submit("imports", "broken")
    await orchestrator.wait_for_run(run.run_id, timeout=WAIT)
    assert run.status is RunStatus.FAILED and run.exit_code == 1
    assert "the source file is missing" in run.error_message


async def test_a_retry_puts_the_run_back_in_the_queue_with_the_error(manager, orchestrator):
    seen: list[tuple[RunStatus, str | None]] = []
    calls = 0

    async def flaky(payload):
        nonlocal calls
        calls += 1
        seen.append((run.status, run.error_message))
        if calls == 1:
            raise ValueError("first try")
        return "ok"

    await manager.register_task("flaky", flaky)
    run = await orchestrator.submit("m", "flaky", max_attempts=2)
    await orchestrator.wait_for_run(run.run_id, timeout=WAIT)
    assert seen[0] == (RunStatus.RUNNING, None)
    assert seen[1][0] is RunStatus.RUNNING and "first try" in seen[1][1]
    assert run.status is RunStatus.COMPLETED and run.error_message is None


async def test_cancel_run_cancels_a_running_task(manager, orchestrator):
    gate = Gate()
    await manager.register_task("slow", gate)
    run = await orchestrator.submit("m", "slow")
    await asyncio.wait_for(gate.entered.wait(), WAIT)
    assert await orchestrator.cancel_run(run.run_id) is True
    assert run.status is RunStatus.CANCELLED and run.completed_at is not None
    assert (await manager.wait_for(run.run_id, timeout=WAIT))["status"] == "cancelled"
    assert await orchestrator.cancel_run(run.run_id) is False, "a finished run was cancelled"
    assert await orchestrator.cancel_run("no-such-run") is False


async def test_cancel_run_cancels_a_queued_task(manager, orchestrator):
    await manager.register_task("later", Gate())
    run = await orchestrator.submit("m", "later", delay=3600)
    assert await orchestrator.cancel_run(run.run_id) is True
    assert run.status is RunStatus.CANCELLED and run.started_at is None


async def test_an_ad_hoc_run_cannot_be_cancelled_or_waited_through_tasks(
    manager, registry, orchestrator
):
    manager.registry = registry
    release = asyncio.Event()
    run = Run(module_id="adhoc")
    assert orchestrator.start_run(run, release.wait()) == run.run_id
    assert registry.get_run(run.run_id) is run and run.status is RunStatus.RUNNING
    assert await orchestrator.cancel_run(run.run_id) is False
    assert await orchestrator.wait_for_run(run.run_id) is run  # returns at once
    release.set()
    await manager.wait_all(timeout=WAIT)
    assert run.status is RunStatus.COMPLETED


async def test_wait_for_run_of_an_unknown_run_raises_key_error(orchestrator):
    with pytest.raises(KeyError):
        await orchestrator.wait_for_run("no-such-run")


async def test_wait_for_run_times_out(manager, orchestrator):
    await manager.register_task("later", Gate())
    run = await orchestrator.submit("m", "later", delay=3600)
    with pytest.raises(TimeoutError):
        await orchestrator.wait_for_run(run.run_id, timeout=0.05)
    assert run.status is RunStatus.QUEUED


async def test_a_refused_submission_fails_its_run_and_raises(registry, orchestrator):
    with pytest.raises(UnknownTaskType):
        await orchestrator.submit("m", "unregistered", {"x": 1})
    [run] = registry.get_runs_by_module("m")
    assert run.status is RunStatus.FAILED
    assert run.error_message == "refused by the task manager"


async def test_list_runs_all_or_by_status(manager, orchestrator):
    async def broken(payload):
        raise PermanentFailure("no")

    await manager.register_task("ok", Gate())
    await manager.register_task("broken", broken)
    queued = await orchestrator.submit("m", "ok", delay=3600)
    failed = await orchestrator.submit("m", "broken")
    await orchestrator.wait_for_run(failed.run_id, timeout=WAIT)
    assert {run.run_id for run in orchestrator.list_runs()} == {queued.run_id, failed.run_id}
    assert orchestrator.list_runs(RunStatus.FAILED) == [failed]
    assert orchestrator.list_runs("queued") == [queued]
    assert orchestrator.list_runs(RunStatus.RUNNING) == []


async def test_get_run_catches_up_with_a_task_whose_events_it_missed(manager, registry):
    orchestrator = TaskOrchestrator(manager, registry, events=EventBus())  # hears nothing
    await manager.register_task("echo", lambda payload: payload)
    run = await orchestrator.submit("m", "echo", {"n": 1})
    await manager.wait_for(run.run_id, timeout=WAIT)
    assert run.status is RunStatus.QUEUED, "the run heard an event it should not have"
    refreshed = await orchestrator.get_run(run.run_id)
    assert refreshed is run
    assert run.status is RunStatus.COMPLETED and run.exit_code == 0
    assert run.started_at is not None and run.completed_at is not None
    assert await orchestrator.get_run("no-such-run") is None


async def test_close_stops_following_events(manager, registry):
    orchestrator = TaskOrchestrator(manager, registry)
    gate = Gate()
    await manager.register_task("slow", gate)
    run = await orchestrator.submit("m", "slow")
    await asyncio.wait_for(gate.entered.wait(), WAIT)
    assert run.status is RunStatus.RUNNING
    orchestrator.close()
    orchestrator.close()
    gate.release.set()
    await manager.wait_for(run.run_id, timeout=WAIT)
    assert run.status is RunStatus.RUNNING
    assert not manager.events.has_subscribers
