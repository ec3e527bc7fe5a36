"""The TaskManager contract: the behaviour every backend must show, identically.

:class:`TaskManagerContract` is a mixin of pytest test methods (in the manner of huey's
``StorageTests``). A backend joins by subclassing it in a test module and providing
one fixture, ``make_manager``::

    # conftest.py
    import pytest
    from taskyard.testing import ManagerFactory

    def my_backend(config, location):
        # an unstarted TaskManager; `location` is an empty directory for its files
        return MyTaskManager(config, db_path=location / "queue.db")

    @pytest.fixture
    async def make_manager(tmp_path):
        async with ManagerFactory(my_backend, tmp_path) as factory:
            yield factory

    # test_my_backend.py
    from taskyard.testing import TaskManagerContract

    class TestMyBackend(TaskManagerContract):
        pass

The fixture's value is awaited as ``await make_manager(**config_overrides)`` and
returns a *started* manager. The overrides are :class:`EngineConfig` field names
(``concurrency``, ``retry``, ``default_timeout``, ``lease_seconds``, ``poll_interval``,
``run_worker``, ...) applied over :func:`~taskyard.testing.fast_config`. One more
keyword is reserved: ``same_store=True`` opens the new manager on the storage
location of the manager made just before it (the suite stops that one first), which
is how the suite checks what a store kept across a restart. The fixture stops every
manager it made at teardown. :class:`~taskyard.testing.ManagerFactory` does all of
this from a *backend factory* ``(config, location) -> unstarted manager``: call it
twice with the same ``location`` and it must reach the same storage (for a
process-local store, sharing the store object is enough; see
:func:`~taskyard.testing.in_memory_backend`).

The managers must be :class:`~taskyard.testing.ContractManager` s, which every
:class:`~taskyard.framework.engine.TaskEngine` is (the suite reads ``events``,
``store.capabilities``, ``started``, ``schedule_many`` and ``count_by_status``).
Tests of a feature a backend may lack check ``store.capabilities`` and skip
explicitly, saying which :class:`~taskyard.framework.store.Capability` is missing.

Requirements: pytest and pytest-asyncio (every test is a coroutine marked
``asyncio``). The suite never sleeps to synchronise: handlers set events, tests
wait with ``wait_for`` or :func:`~taskyard.testing.wait_until`, and no test checks
wall-clock durations.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest

from taskyard.framework.errors import (
    InvalidTaskOptions,
    ManagerStateError,
    PayloadError,
    PermanentFailure,
    Retry,
    SchedulingError,
    TaskNotFound,
    TaskyardError,
    UnknownTaskType,
)
from taskyard.framework.models import (
    LATEST_RUN_AFTER,
    MAX_ATTEMPTS_LIMIT,
    MAX_JSON_BYTES,
    MAX_NESTING,
    MAX_TRACEBACK_CHARS,
    MAX_TRACEBACKS,
    PRIORITY_RANGE,
    STATUS_KEYS,
    TaskRecord,
    TaskStatus,
    utcnow,
)
from taskyard.framework.retry import RetryPolicy
from taskyard.framework.runs import Run, RunRegistry, RunStatus
from taskyard.framework.store import Capability
from taskyard.testing.helpers import ContractManager, EventRecorder, MakeManager, wait_until
from taskyard.testing.workflows import WorkflowContract

WAIT = 5.0
"""Seconds any wait in the suite allows before it fails (a hang, not a slow machine)."""
EPSILON = timedelta(milliseconds=1)
"""Tolerance for timestamps a store keeps as floating-point seconds."""
STATUSES = frozenset({"queued", "running", "completed", "failed", "cancelled"})

Payload = dict[str, Any]


class _Custom:
    def __repr__(self) -> str:
        return "<custom object>"


def nested(depth: int, leaf: Any = 0) -> Any:
    """``leaf`` inside ``depth`` alternating lists and dicts (built without recursion)."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


BAD_PAYLOADS: dict[str, Any] = {
    "set": {"tags": {"a", "b"}},
    "bytes": {"blob": b"\x00\x01"},
    "nan": {"ratio": float("nan")},
    "infinity": {"ratio": float("inf")},
    "non-str-key": {1: "one"},
    "custom-object": {"thing": _Custom()},
    "datetime": {"when": datetime(2024, 1, 1, tzinfo=UTC)},
    "tuple": {"pair": (1, 2)},
    "nested-set": {"a": [{"b": {3}}]},
    "nested-10000-deep": nested(10_000),
    "nested-one-too-deep": nested(MAX_NESTING + 1),
    "lone-surrogate": {"text": "\ud800"},
    "nul-character": {"text": "a\x00b"},
    "lone-surrogate-key": {"\udfff": 1},
    "int-of-5000-digits": {"n": 10**5000},
    "too-large": {"blob": "x" * MAX_JSON_BYTES},
}

_LATER = datetime.now(UTC) + timedelta(hours=1)
BAD_OPTIONS: dict[str, dict[str, Any]] = {
    "negative-delay": {"delay": -1},
    "negative-timedelta": {"delay": timedelta(seconds=-0.5)},
    "nan-delay": {"delay": float("nan")},
    "float-priority": {"priority": 1.5},
    "str-priority": {"priority": "1"},
    "bool-priority": {"priority": True},
    "run_after-and-delay": {"run_after": _LATER, "delay": 5},
    "naive-run_after": {"run_after": datetime.now() + timedelta(hours=1)},
    "max_attempts-0": {"max_attempts": 0},
    "max_attempts-negative": {"max_attempts": -2},
    "max_attempts-float": {"max_attempts": 2.0},
    "empty-task_id": {"task_id": ""},
    "int-task_id": {"task_id": 42},
    "surrogate-task_id": {"task_id": "\ud800"},
    "nul-task_id": {"task_id": "a\x00"},
    "surrogate-idempotency_key": {"idempotency_key": "\udbff"},
    "priority-2**63": {"priority": 2**63},
    "priority-above-range": {"priority": PRIORITY_RANGE[1] + 1},
    "priority-below-range": {"priority": PRIORITY_RANGE[0] - 1},
    "max_attempts-2**63": {"max_attempts": 2**63},
    "run_after-datetime.max": {"run_after": datetime.max.replace(tzinfo=UTC)},
    "run_after-9999-12-31T23:59-05:00": {
        "run_after": datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5)))
    },
    "run_after-year-1": {"run_after": datetime.min.replace(tzinfo=UTC)},
    "run_after-at-the-latest": {"run_after": LATEST_RUN_AFTER},
    "delay-1e308": {"delay": 1e308},
    "delay-timedelta.max": {"delay": timedelta.max},
}


def ts(status: dict[str, Any], key: str) -> datetime:
    """A status timestamp, parsed; asserts it is an aware UTC ISO 8601 string."""
    value = status[key]
    assert isinstance(value, str), f"{key} is {value!r}, not an ISO 8601 string"
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == timedelta(0), f"{key} {value} is not timezone-aware UTC"
    return moment


def capabilities(manager: ContractManager) -> frozenset[str]:
    return frozenset(manager.store.capabilities)


def require(manager: ContractManager, capability: str) -> None:
    """Skip the calling test, explicitly, when the backend lacks ``capability``."""
    if capability not in capabilities(manager):
        pytest.skip(f"backend lacks capability {capability}")


async def noop(payload: Payload) -> None:
    return None


async def echo(payload: Payload) -> Payload:
    return payload


async def hang(payload: Payload) -> None:
    await asyncio.Event().wait()


async def _done(manager: ContractManager, task_id: str) -> dict[str, Any]:
    return await manager.wait_for(task_id, timeout=WAIT)


async def _nothing_stored(manager: ContractManager, task_id: str) -> None:
    assert await manager.get_task_status(task_id) is None
    counts = await manager.count_by_status()
    assert sum(counts.values()) == 0, f"a refused request stored something: {counts}"


class TaskManagerContract(WorkflowContract):
    """The contract suite; see the module docstring for the ``make_manager`` fixture."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    # -- order: priority, scheduling order, run_after, delay ---------------------------------

    async def test_lower_priority_runs_first_then_scheduling_order(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager(concurrency=1)
        gate, blocking = asyncio.Event(), asyncio.Event()
        order: list[str] = []

        async def blocker(payload: Payload) -> None:
            blocking.set()
            await gate.wait()

        async def record(payload: Payload) -> None:
            order.append(payload["name"])

        await manager.register_task("blocker", blocker)
        await manager.register_task("record", record)
        await manager.schedule_task("blocker", {}, priority=-100)
        await asyncio.wait_for(blocking.wait(), WAIT)
        plan = [("c", 5), ("a", 1), ("d", 5), ("f", 9), ("b", 1), ("z", -3), ("e", 5)]
        ids = [
            await manager.schedule_task("record", {"name": name}, priority=priority)
            for name, priority in plan
        ]
        gate.set()
        for task_id in ids:
            assert (await _done(manager, task_id))["status"] == "completed"
        assert order == ["z", "a", "b", "c", "d", "e", "f"]

    @pytest.mark.parametrize(
        "delay", [0.15, timedelta(milliseconds=150)], ids=["seconds", "timedelta"]
    )
    async def test_delay_holds_the_task_back(
        self, make_manager: MakeManager, delay: float | timedelta
    ) -> None:
        manager = await make_manager()
        await manager.register_task("noop", noop)
        task_id = await manager.schedule_task("noop", {}, delay=delay)
        status = await _done(manager, task_id)
        assert status["status"] == "completed"
        held = ts(status, "run_after") - ts(status, "created_at")
        assert abs(held - timedelta(seconds=0.15)) <= EPSILON, "the delay was not kept exactly"
        assert ts(status, "started_at") >= ts(status, "run_after") - EPSILON

    async def test_run_after_holds_the_task_back(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        await manager.register_task("noop", noop)
        plus_two = timezone(timedelta(hours=2))
        soon = datetime.now(plus_two) + timedelta(milliseconds=100)
        much_later = datetime.now(plus_two) + timedelta(hours=1)
        soon_id = await manager.schedule_task("noop", {}, run_after=soon)
        later_id = await manager.schedule_task("noop", {}, run_after=much_later)
        now_id = await manager.schedule_task("noop", {})

        status = await _done(manager, soon_id)
        assert abs(ts(status, "run_after") - soon) <= EPSILON
        assert ts(status, "started_at") >= soon - EPSILON
        assert (await _done(manager, now_id))["status"] == "completed"

        held = await manager.get_task_status(later_id)
        assert held is not None
        assert held["status"] == "queued"
        assert held["attempts"] == 0 and held["started_at"] is None
        assert abs(ts(held, "run_after") - much_later) <= EPSILON

    async def test_run_after_in_the_past_runs_now(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        await manager.register_task("echo", echo)
        task_id = await manager.schedule_task(
            "echo", {"n": 1}, run_after=datetime.now(UTC) - timedelta(days=1)
        )
        status = await _done(manager, task_id)
        assert status["status"] == "completed" and status["result"] == {"n": 1}

    async def test_naive_run_after_is_refused_clearly(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        await manager.register_task("noop", noop)
        naive = datetime.now() + timedelta(minutes=5)
        with pytest.raises(InvalidTaskOptions, match="naive") as refused:
            await manager.schedule_task("noop", {}, run_after=naive, task_id="naive")
        assert "aware" in str(refused.value)
        await _nothing_stored(manager, "naive")

    # -- retries and failures ----------------------------------------------------------------

    async def test_a_failing_handler_is_retried_until_it_succeeds(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        events = EventRecorder(manager.events)
        calls = 0

        async def flaky(payload: Payload) -> dict[str, int]:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise ValueError(f"boom {calls}")
            return {"calls": calls}

        await manager.register_task("flaky", flaky)
        task_id = await manager.schedule_task("flaky", {}, max_attempts=3)
        status = await _done(manager, task_id)
        assert status["status"] == "completed"
        assert status["attempts"] == 3 and status["result"] == {"calls": 3}
        assert status["error"] is None
        assert events.statuses(task_id) == [
            "queued", "running", "queued", "running", "queued", "running", "completed",
        ]  # fmt: skip
        assert [e.attempts for e in events.for_task(task_id) if e.status == "running"] == [1, 2, 3]
        retry = events.first(task_id, "queued", nth=2)
        assert retry.error is not None and "boom 1" in retry.error

    async def test_backoff_is_exponential_capped_and_fractional(
        self, make_manager: MakeManager
    ) -> None:
        policy = RetryPolicy(initial=0.01, multiplier=2, max_delay=0.05, jitter=0)
        manager = await make_manager(retry=policy)
        events = EventRecorder(manager.events)
        task_id = f"backoff-{uuid.uuid4().hex}"
        raised_at: list[datetime] = []
        due: list[datetime] = []

        async def failing(payload: Payload) -> None:
            status = await manager.get_task_status(task_id)
            assert status is not None
            if status["attempts"] > 1:
                due.append(ts(status, "run_after"))
            raised_at.append(utcnow())
            raise ValueError("again")

        await manager.register_task("failing", failing)
        await manager.schedule_task("failing", {}, max_attempts=5, task_id=task_id)
        status = await _done(manager, task_id)
        assert status["status"] == "failed" and status["attempts"] == 5
        retries = [e for e in events.for_task(task_id) if e.status == "queued"][1:]
        expected = [0.01, 0.02, 0.04, 0.05]  # initial * 2 ** (n - 1), capped at max_delay
        assert len(due) == len(retries) == len(expected)
        for n, seconds in enumerate(expected):
            decided_at = due[n] - timedelta(seconds=seconds)
            # the retry was decided after the handler raised and before it was announced
            assert raised_at[n] - EPSILON <= decided_at <= retries[n].at + EPSILON, (
                f"retry {n + 1}: run_after {due[n]} is not failure time + {seconds} s"
            )

    async def test_exhausted_attempts_fail_with_the_error_kept(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        events = EventRecorder(manager.events)

        async def broken(payload: Payload) -> None:
            raise ValueError("kaput: disk on fire")

        await manager.register_task("broken", broken)
        task_id = await manager.schedule_task("broken", {"x": 1}, max_attempts=2)
        status = await _done(manager, task_id)
        assert status["status"] == "failed"
        assert status["attempts"] == 2 and status["max_attempts"] == 2
        assert "kaput: disk on fire" in status["error"]
        assert status["result"] is None and status["finished_at"] is not None
        assert events.statuses(task_id) == ["queued", "running", "queued", "running", "failed"]
        failed = events.first(task_id, "failed")
        assert failed.error is not None and "kaput" in failed.error

    async def test_retry_raised_by_the_handler_uses_its_delay(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        events = EventRecorder(manager.events)
        task_id = f"retry-{uuid.uuid4().hex}"
        raised_at: list[datetime] = []
        due: list[datetime] = []

        async def patient(payload: Payload) -> str:
            if not raised_at:
                raised_at.append(utcnow())
                raise Retry("not ready yet", delay=0.12)
            status = await manager.get_task_status(task_id)
            assert status is not None
            due.append(ts(status, "run_after"))
            return "ready"

        await manager.register_task("patient", patient)
        await manager.schedule_task("patient", {}, task_id=task_id)
        status = await _done(manager, task_id)
        assert status["status"] == "completed" and status["attempts"] == 2
        retry = events.first(task_id, "queued", nth=2)
        assert retry.error is not None and "not ready yet" in retry.error
        decided_at = due[0] - timedelta(seconds=0.12)
        assert raised_at[0] - EPSILON <= decided_at <= retry.at + EPSILON

    async def test_retry_request_fails_once_attempts_are_exhausted(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()

        async def always_later(payload: Payload) -> None:
            raise Retry("still not ready", delay=0.01)

        await manager.register_task("later", always_later)
        task_id = await manager.schedule_task("later", {}, max_attempts=2)
        status = await _done(manager, task_id)
        assert status["status"] == "failed" and status["attempts"] == 2
        assert "still not ready" in status["error"]

    async def test_permanent_failure_skips_retries(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        events = EventRecorder(manager.events)
        calls: list[Payload] = []

        async def hopeless(payload: Payload) -> None:
            calls.append(payload)
            raise PermanentFailure("the input is malformed")

        await manager.register_task("hopeless", hopeless)
        task_id = await manager.schedule_task("hopeless", {}, max_attempts=5)
        status = await _done(manager, task_id)
        assert status["status"] == "failed" and status["attempts"] == 1
        assert "the input is malformed" in status["error"]
        assert len(calls) == 1
        assert events.statuses(task_id) == ["queued", "running", "failed"]

    async def test_a_taskyard_error_raised_by_a_handler_is_an_ordinary_failure(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        calls = 0

        async def schedules_badly(payload: Payload) -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                await manager.schedule_task("inner", {"bad": {1, 2}})  # raises PayloadError
            return "second time lucky"

        await manager.register_task("inner", noop)
        await manager.register_task("outer", schedules_badly)
        task_id = await manager.schedule_task("outer", {}, max_attempts=2)
        status = await _done(manager, task_id)
        assert status["status"] == "completed" and status["attempts"] == 2
        assert status["result"] == "second time lucky"

    async def test_max_attempts_defaults_come_from_the_type_then_the_engine(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager(default_max_attempts=2)

        async def broken(payload: Payload) -> None:
            raise ValueError("no")

        await manager.register_task("engine-default", broken)
        await manager.register_task("type-default", broken, max_attempts=1)
        by_engine = await _done(manager, await manager.schedule_task("engine-default", {}))
        by_type = await _done(manager, await manager.schedule_task("type-default", {}))
        by_task = await _done(
            manager, await manager.schedule_task("type-default", {}, max_attempts=3)
        )
        assert (by_engine["max_attempts"], by_engine["attempts"]) == (2, 2)
        assert (by_type["max_attempts"], by_type["attempts"]) == (1, 1)
        assert (by_task["max_attempts"], by_task["attempts"]) == (3, 3)
        assert {by_engine["status"], by_type["status"], by_task["status"]} == {"failed"}

    async def test_a_result_json_cannot_represent_fails_the_task(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()

        async def returns_set(payload: Payload) -> Any:
            return {"ids": {1, 2}}

        def returns_tuple(payload: Payload) -> Any:
            return (1, 2)

        await manager.register_task("set", returns_set)
        await manager.register_task("tuple", returns_tuple)
        for task_type in ("set", "tuple"):
            status = await _done(manager, await manager.schedule_task(task_type, {}))
            assert status["status"] == "failed", task_type
            assert status["result"] is None
            assert "result" in status["error"] and "JSON" in status["error"]
            assert task_type in status["error"]  # names what it got

    # -- timeouts ----------------------------------------------------------------------------

    async def test_a_timeout_counts_as_a_failed_attempt(self, make_manager: MakeManager) -> None:
        manager = await make_manager(default_timeout=0.05)
        events = EventRecorder(manager.events)
        calls = 0

        async def slow_once(payload: Payload) -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                await asyncio.Event().wait()  # never set: the timeout ends it
            return "second attempt"

        await manager.register_task("slow-once", slow_once)
        await manager.register_task("hang", hang)
        retried = await _done(manager, await manager.schedule_task("slow-once", {}))
        assert retried["status"] == "completed" and retried["attempts"] == 2
        assert retried["result"] == "second attempt"
        retry = events.first(retried["id"], "queued", nth=2)
        assert retry.error is not None and "timed out" in retry.error

        exhausted = await _done(manager, await manager.schedule_task("hang", {}, max_attempts=1))
        assert exhausted["status"] == "failed" and exhausted["attempts"] == 1
        assert "timed out" in exhausted["error"]

    async def test_a_sync_handler_times_out_too(self, make_manager: MakeManager) -> None:
        manager = await make_manager(default_timeout=0.05)
        release = threading.Event()
        calls: list[int] = []

        def blocking_once(payload: Payload) -> str:
            calls.append(1)
            if len(calls) == 1:
                release.wait(WAIT)
            return "done"

        await manager.register_task("blocking", blocking_once)
        try:
            status = await _done(manager, await manager.schedule_task("blocking", {}))
        finally:
            release.set()
        assert status["status"] == "completed" and status["attempts"] == 2

    async def test_a_type_timeout_overrides_the_engine_default(
        self, make_manager: MakeManager
    ) -> None:
        async def works(payload: Payload) -> str:
            await asyncio.sleep(payload["seconds"])  # the handler's work, longer than 0.03 s
            return "worked"

        strict = await make_manager(default_timeout=0.03)
        await strict.register_task("patient", works, timeout=WAIT)
        status = await _done(strict, await strict.schedule_task("patient", {"seconds": 0.12}))
        assert status["status"] == "completed" and status["attempts"] == 1

        lenient = await make_manager(default_timeout=None)
        await lenient.register_task("strict", hang, timeout=0.03)
        status = await _done(lenient, await lenient.schedule_task("strict", {}, max_attempts=1))
        assert status["status"] == "failed" and "timed out" in status["error"]

    async def test_a_task_timeout_overrides_the_type_timeout(
        self, make_manager: MakeManager
    ) -> None:
        async def works(payload: Payload) -> str:
            await asyncio.sleep(payload["seconds"])  # the handler's work, longer than 0.03 s
            return "worked"

        manager = await make_manager(default_timeout=None)
        await manager.register_task("lenient", hang, timeout=WAIT)
        await manager.register_task("strict", works, timeout=0.03)
        cut_short = await _done(
            manager, await manager.schedule_task("lenient", {}, timeout=0.03, max_attempts=1)
        )
        assert cut_short["status"] == "failed" and "timed out" in cut_short["error"]
        allowed = await _done(
            manager, await manager.schedule_task("strict", {"seconds": 0.12}, timeout=WAIT)
        )
        assert allowed["status"] == "completed" and allowed["attempts"] == 1

    # -- cancellation ------------------------------------------------------------------------

    async def test_a_cancelled_queued_task_never_starts(self, make_manager: MakeManager) -> None:
        manager = await make_manager(concurrency=1)
        events = EventRecorder(manager.events)
        gate, blocking = asyncio.Event(), asyncio.Event()
        started: list[str] = []

        async def blocker(payload: Payload) -> None:
            blocking.set()
            await gate.wait()

        async def victim(payload: Payload) -> None:
            started.append(payload["name"])

        await manager.register_task("blocker", blocker)
        await manager.register_task("victim", victim)
        await manager.schedule_task("blocker", {})
        await asyncio.wait_for(blocking.wait(), WAIT)
        doomed = await manager.schedule_task("victim", {"name": "doomed"})
        assert await manager.cancel_task(doomed) is True
        gate.set()
        after = await manager.schedule_task("victim", {"name": "after"})
        assert (await _done(manager, after))["status"] == "completed"

        status = await _done(manager, doomed)
        assert status["status"] == "cancelled"
        assert status["attempts"] == 0 and status["started_at"] is None
        assert status["finished_at"] is not None
        assert started == ["after"]
        assert events.statuses(doomed) == ["queued", "cancelled"]
        assert await manager.cancel_task(doomed) is False

    async def test_a_running_async_handler_is_cancelled(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        events = EventRecorder(manager.events)
        entered, cancelled = asyncio.Event(), asyncio.Event()

        async def long(payload: Payload) -> None:
            entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        await manager.register_task("long", long)
        await manager.register_task("noop", noop)
        task_id = await manager.schedule_task("long", {}, max_attempts=3)
        await asyncio.wait_for(entered.wait(), WAIT)
        assert await manager.cancel_task(task_id) is True
        status = await _done(manager, task_id)
        assert status["status"] == "cancelled" and status["result"] is None
        await asyncio.wait_for(cancelled.wait(), WAIT)

        later = await manager.schedule_task("noop", {})
        assert (await _done(manager, later))["status"] == "completed"
        status = await _done(manager, task_id)
        assert status["status"] == "cancelled" and status["attempts"] == 1, "it was retried"
        assert events.statuses(task_id) == ["queued", "running", "cancelled"]

    async def test_a_running_sync_handler_result_is_discarded(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        entered, release, returning = threading.Event(), threading.Event(), threading.Event()

        def stubborn(payload: Payload) -> dict[str, bool]:
            entered.set()
            release.wait(WAIT)
            returning.set()
            return {"late": True}

        await manager.register_task("stubborn", stubborn)
        await manager.register_task("noop", noop)
        try:
            task_id = await manager.schedule_task("stubborn", {})
            await wait_until(entered.is_set, message="the sync handler started")
            assert await manager.cancel_task(task_id) is True
        finally:
            release.set()
        await wait_until(returning.is_set, message="the sync handler returned")
        later = await manager.schedule_task("noop", {})
        assert (await _done(manager, later))["status"] == "completed"
        status = await _done(manager, task_id)
        assert status["status"] == "cancelled"
        assert status["result"] is None and status["error"] is None

    async def test_cancelling_a_finished_or_unknown_task_returns_false(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()

        async def broken(payload: Payload) -> None:
            raise PermanentFailure("no")

        await manager.register_task("echo", echo)
        await manager.register_task("broken", broken)
        completed = await manager.schedule_task("echo", {"n": 1})
        failed = await manager.schedule_task("broken", {})
        await _done(manager, completed)
        await _done(manager, failed)
        assert await manager.cancel_task(completed) is False
        assert await manager.cancel_task(failed) is False
        assert await manager.cancel_task("no-such-task") is False
        assert (await _done(manager, completed))["status"] == "completed"
        assert (await _done(manager, failed))["status"] == "failed"

    # -- threads and concurrency -------------------------------------------------------------

    async def test_sync_handlers_run_off_the_event_loop(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        loop_thread = threading.get_ident()
        threads: dict[str, int] = {}

        def sync_handler(payload: Payload) -> str:
            threads["sync"] = threading.get_ident()
            return "sync"

        async def async_handler(payload: Payload) -> str:
            threads["async"] = threading.get_ident()
            return "async"

        class AsyncCallable:
            async def __call__(self, payload: Payload) -> str:
                threads["callable"] = threading.get_ident()
                return "callable"

        async def with_prefix(prefix: str, payload: Payload) -> str:
            threads["partial"] = threading.get_ident()
            return prefix

        await manager.register_task("sync", sync_handler)
        await manager.register_task("async", async_handler)
        await manager.register_task("callable", AsyncCallable())
        await manager.register_task("partial", functools.partial(with_prefix, "partial"))
        for task_type in ("sync", "async", "callable", "partial"):
            status = await _done(manager, await manager.schedule_task(task_type, {}))
            assert status["status"] == "completed" and status["result"] == task_type
        assert threads["sync"] != loop_thread
        assert threads["async"] == threads["callable"] == threads["partial"] == loop_thread

    async def test_the_concurrency_limit_bounds_async_handlers(
        self, make_manager: MakeManager
    ) -> None:
        limit = 3
        manager = await make_manager(concurrency=limit)
        full, release = asyncio.Event(), asyncio.Event()
        current = peak = 0

        async def worker(payload: Payload) -> None:
            nonlocal current, peak
            current += 1
            peak = max(peak, current)
            if current == limit:
                full.set()
            try:
                await release.wait()
            finally:
                current -= 1

        await manager.register_task("worker", worker)
        ids = [await manager.schedule_task("worker", {"n": n}) for n in range(10)]
        await asyncio.wait_for(full.wait(), WAIT)
        running = [await manager.get_task_status(task_id) for task_id in ids]
        assert sum(1 for s in running if s and s["status"] == "running") == limit
        release.set()
        for task_id in ids:
            assert (await _done(manager, task_id))["status"] == "completed"
        assert peak == limit

    async def test_the_concurrency_limit_bounds_sync_handlers(
        self, make_manager: MakeManager
    ) -> None:
        limit = 2
        manager = await make_manager(concurrency=limit)
        lock, full, release = threading.Lock(), threading.Event(), threading.Event()
        state = {"current": 0, "peak": 0}

        def worker(payload: Payload) -> None:
            with lock:
                state["current"] += 1
                state["peak"] = max(state["peak"], state["current"])
                if state["current"] == limit:
                    full.set()
            try:
                release.wait(WAIT)
            finally:
                with lock:
                    state["current"] -= 1

        await manager.register_task("worker", worker)
        try:
            ids = [await manager.schedule_task("worker", {"n": n}) for n in range(8)]
            await wait_until(full.is_set, message=f"{limit} handlers running")
        finally:
            release.set()
        for task_id in ids:
            assert (await _done(manager, task_id))["status"] == "completed"
        assert state["peak"] == limit

    # -- refusals ----------------------------------------------------------------------------

    async def test_an_unregistered_task_type_is_refused(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        await manager.register_task("known", noop)
        with pytest.raises(UnknownTaskType, match="mystery") as refused:
            await manager.schedule_task("mystery", {}, task_id="refused")
        assert isinstance(refused.value, SchedulingError)
        await _nothing_stored(manager, "refused")

    async def test_a_producer_only_manager_accepts_any_task_type(
        self, make_manager: MakeManager
    ) -> None:
        producer = await make_manager(run_worker=False)
        task_id = await producer.schedule_task("resize_video", {"path": "a.mp4"})
        status = await producer.get_task_status(task_id)
        assert status is not None
        assert status["type"] == "resize_video" and status["status"] == "queued"

    async def test_a_task_types_list_limits_what_a_producer_accepts(
        self, make_manager: MakeManager
    ) -> None:
        producer = await make_manager(run_worker=False, task_types=frozenset({"send_email"}))
        with pytest.raises(UnknownTaskType, match="task_types") as refused:
            await producer.schedule_task("send_emial", {}, task_id="refused")
        assert "send_email" in str(refused.value)
        await _nothing_stored(producer, "refused")
        await producer.schedule_task("send_email", {}, task_id="accepted")
        assert await producer.get_task_status("accepted") is not None

    @pytest.mark.parametrize("payload", list(BAD_PAYLOADS.values()), ids=list(BAD_PAYLOADS))
    async def test_a_payload_json_cannot_represent_exactly_is_refused(
        self, make_manager: MakeManager, payload: Any
    ) -> None:
        manager = await make_manager()
        await manager.register_task("noop", noop)
        with pytest.raises(PayloadError, match="payload") as refused:
            await manager.schedule_task("noop", payload, task_id="refused")
        assert isinstance(refused.value, SchedulingError)
        assert isinstance(refused.value, TaskyardError)
        await _nothing_stored(manager, "refused")

    @pytest.mark.parametrize("options", list(BAD_OPTIONS.values()), ids=list(BAD_OPTIONS))
    async def test_bad_options_are_refused(
        self, make_manager: MakeManager, options: dict[str, Any]
    ) -> None:
        manager = await make_manager()
        await manager.register_task("noop", noop)
        with pytest.raises(InvalidTaskOptions) as refused:
            await manager.schedule_task("noop", {}, **{"task_id": "refused", **options})
        assert isinstance(refused.value, SchedulingError)
        name = next(iter(options))
        assert name in str(refused.value), f"the message does not name {name}"
        await _nothing_stored(manager, "refused")

    async def test_values_at_the_limits_are_stored_exactly(self, make_manager: MakeManager) -> None:
        manager = await make_manager(run_worker=False)
        await manager.register_task("noop", noop)
        latest = LATEST_RUN_AFTER - timedelta(microseconds=1)
        cases: list[tuple[Payload, dict[str, Any]]] = [
            ({"deep": nested(MAX_NESTING - 1)}, {"priority": PRIORITY_RANGE[0]}),
            ({"big": 2**63, "small": -(2**200)}, {"priority": PRIORITY_RANGE[1]}),
            ({"text": "\U0001f600 \u00e9"}, {"max_attempts": MAX_ATTEMPTS_LIMIT}),
            ({}, {"run_after": latest}),
        ]
        for payload, options in cases:
            task_id = await manager.schedule_task("noop", payload, **options)
            status = await manager.get_task_status(task_id)
            assert status is not None
            assert status["payload"] == payload
            for name, value in options.items():
                if name == "run_after":
                    assert ts(status, "run_after") == value
                else:
                    assert status[name] == value, name

    async def test_one_callers_bad_input_never_fails_anothers(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager(run_worker=False)
        await manager.register_task("noop", noop)
        calls = [manager.schedule_task("noop", {"n": n}) for n in range(20)]
        calls.insert(7, manager.schedule_task("noop", {"n": "bad"}, priority=2**63))
        results = await asyncio.gather(*calls, return_exceptions=True)
        refused = results.pop(7)
        assert isinstance(refused, InvalidTaskOptions), refused
        assert all(isinstance(task_id, str) for task_id in results), results
        counts = await manager.count_by_status()
        assert counts["queued"] == 20

    async def test_a_result_that_cannot_be_stored_fails_the_attempt_at_once(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager(lease_seconds=60)

        async def deep(payload: Payload) -> Any:
            return nested(5_000)

        await manager.register_task("deep", deep, max_attempts=1)
        status = await _done(manager, await manager.schedule_task("deep", {}))
        assert status["status"] == "failed"
        assert "result" in status["error"] and "deep" in status["error"], status["error"]
        assert status["result"] is None

    # -- stop ----------------------------------------------------------------------------------

    async def test_stop_waits_for_running_handlers(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        entered, release = asyncio.Event(), asyncio.Event()
        finished: list[bool] = []

        async def work(payload: Payload) -> str:
            entered.set()
            await release.wait()
            finished.append(True)
            return "finished"

        await manager.register_task("work", work)
        task_id = await manager.schedule_task("work", {})
        await asyncio.wait_for(entered.wait(), WAIT)
        stopping = asyncio.create_task(manager.stop(timeout=WAIT))
        await wait_until(lambda: not manager.started, message="the manager began stopping")
        assert not stopping.done(), "stop returned while a handler was still running"
        release.set()
        await asyncio.wait_for(stopping, WAIT)
        assert finished == [True]

        reopened = await make_manager(same_store=True, run_worker=False)
        status = await reopened.get_task_status(task_id)
        assert status is not None
        assert status["status"] == "completed" and status["result"] == "finished"

    async def test_stop_cancels_late_handlers_and_requeues_them(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager(concurrency=1)
        events = EventRecorder(manager.events)
        entered, cancelled = asyncio.Event(), asyncio.Event()
        calls: list[int] = []

        async def stubborn(payload: Payload) -> None:
            calls.append(payload["n"])
            entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        await manager.register_task("stubborn", stubborn)
        first = await manager.schedule_task("stubborn", {"n": 1})
        await asyncio.wait_for(entered.wait(), WAIT)
        second = await manager.schedule_task("stubborn", {"n": 2})
        await manager.stop(timeout=0.05)

        assert cancelled.is_set() and calls == [1]
        assert events.statuses(first) == ["queued", "running", "queued"]
        assert events.for_task(first)[-1].attempts == 0, "the interrupted attempt counted"
        assert events.statuses(second) == ["queued"]

        reopened = await make_manager(same_store=True)
        for task_id in (first, second):  # no handler registered yet: nothing is claimed
            status = await reopened.get_task_status(task_id)
            assert status is not None
            assert (status["status"], status["attempts"]) == ("queued", 0)
        await reopened.register_task("stubborn", echo)
        for task_id, n in ((first, 1), (second, 2)):
            status = await _done(reopened, task_id)
            assert status["status"] == "completed" and status["result"] == {"n": n}
            assert status["attempts"] == 1

    async def test_prefetched_tasks_wait_for_a_slot_can_be_cancelled_and_go_back_at_stop(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager(concurrency=1, prefetch=3)
        entered = asyncio.Event()
        started: list[int] = []

        async def hold(payload: Payload) -> None:
            started.append(payload["n"])
            entered.set()
            await asyncio.Event().wait()

        await manager.register_task("hold", hold)
        ids = [await manager.schedule_task("hold", {"n": n}) for n in range(4)]
        await asyncio.wait_for(entered.wait(), WAIT)

        async def all_claimed() -> bool:
            return (await manager.count_by_status())["running"] == 4

        await wait_until(all_claimed, message="the worker claimed three tasks ahead")
        assert started == [0], "a prefetched task started beyond the concurrency limit"
        assert await manager.cancel_task(ids[2]) is True
        await manager.stop(timeout=0.05)
        assert started == [0]

        reopened = await make_manager(same_store=True)
        statuses = {task_id: await reopened.get_task_status(task_id) for task_id in ids}
        cancelled = statuses[ids[2]]
        assert cancelled is not None and cancelled["status"] == "cancelled"
        for task_id in (ids[0], ids[1], ids[3]):
            status = statuses[task_id]
            assert status is not None
            assert (status["status"], status["attempts"]) == ("queued", 0)
        await reopened.register_task("hold", echo)
        for task_id in (ids[0], ids[1], ids[3]):
            assert (await _done(reopened, task_id))["status"] == "completed"
        assert (await reopened.get_task_status(ids[2]) or {}).get("status") == "cancelled"

    async def test_nothing_new_starts_after_stop(self, make_manager: MakeManager) -> None:
        manager = await make_manager(concurrency=1)
        entered = asyncio.Event()
        calls: list[int] = []

        async def stubborn(payload: Payload) -> None:
            calls.append(payload["n"])
            entered.set()
            await asyncio.Event().wait()

        await manager.register_task("stubborn", stubborn)
        await manager.schedule_task("stubborn", {"n": 1})
        await asyncio.wait_for(entered.wait(), WAIT)
        queued = await manager.schedule_task("stubborn", {"n": 2})
        await manager.stop(timeout=0.05)

        with pytest.raises(ManagerStateError):
            await manager.schedule_task("stubborn", {"n": 3})
        coro = asyncio.sleep(0)
        with pytest.raises(ManagerStateError):
            manager.start_task(Run(module_id="late"), coro)
        try:  # reading may be refused; it must not bring the worker back
            await manager.get_task_status(queued)
        except ManagerStateError:
            pass
        assert not manager.started
        assert calls == [1]

    # -- status --------------------------------------------------------------------------------

    async def test_the_status_dict_has_exactly_the_documented_shape(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        task_id = f"shape-{uuid.uuid4().hex}"
        while_running: dict[str, Any] = {}

        async def look(payload: Payload) -> dict[str, str]:
            status = await manager.get_task_status(task_id)
            assert status is not None
            while_running.update(status)
            return {"ok": "yes"}

        await manager.register_task("look", look)
        held_id = await manager.schedule_task(
            "look", {"held": True}, delay=3600, priority=7, max_attempts=2
        )
        await manager.schedule_task("look", {"a": [1, 2]}, task_id=task_id, max_attempts=4)
        done = await _done(manager, task_id)
        held = await manager.get_task_status(held_id)
        assert held is not None

        for status in (held, while_running, done):
            assert set(status) == set(STATUS_KEYS)
            assert status["status"] in STATUSES
            for key in ("created_at", "updated_at", "run_after"):
                ts(status, key)

        assert held["id"] == held_id and held["type"] == "look"
        assert (held["status"], held["priority"], held["attempts"]) == ("queued", 7, 0)
        assert held["payload"] == {"held": True} and held["max_attempts"] == 2
        assert held["result"] is None and held["error"] is None
        assert held["started_at"] is None and held["finished_at"] is None
        assert ts(held, "run_after") > ts(held, "created_at")

        assert (while_running["status"], while_running["attempts"]) == ("running", 1)
        assert while_running["finished_at"] is None
        assert ts(while_running, "started_at") >= ts(while_running, "created_at")

        assert (done["status"], done["attempts"], done["max_attempts"]) == ("completed", 1, 4)
        assert done["payload"] == {"a": [1, 2]} and done["result"] == {"ok": "yes"}
        assert done["error"] is None
        assert ts(done, "created_at") <= ts(done, "started_at") <= ts(done, "finished_at")
        assert ts(done, "updated_at") >= ts(done, "created_at")

    async def test_unknown_ids_and_waiting(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        await manager.register_task("noop", noop)
        assert await manager.get_task_status("no-such-task") is None
        with pytest.raises(TaskNotFound):
            await manager.wait_for("no-such-task", timeout=WAIT)
        held = await manager.schedule_task("noop", {}, delay=3600)
        with pytest.raises(TimeoutError):
            await manager.wait_for(held, timeout=0.05)
        status = await manager.get_task_status(held)
        assert status is not None and status["status"] == "queued"

    async def test_events_follow_each_status_change(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        events = EventRecorder(manager.events)
        await manager.register_task("echo", echo)
        task_id = await manager.schedule_task("echo", {"n": 5})
        await _done(manager, task_id)
        assert events.statuses(task_id) == ["queued", "running", "completed"]
        completed = events.first(task_id, "completed")
        assert (completed.type, completed.attempts, completed.result) == ("echo", 1, {"n": 5})
        assert {str(e.status) for e in events.events} <= STATUSES

    async def test_capabilities_are_declared(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        declared = manager.store.capabilities
        assert isinstance(declared, frozenset | set)
        assert all(isinstance(name, str) for name in declared)

    # -- the older calls -----------------------------------------------------------------------

    async def test_start_task_runs_a_coroutine_and_keeps_its_run(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        registry = RunRegistry()
        manager.registry = registry

        async def succeeds() -> int:
            return 42

        async def fails() -> None:
            raise ValueError("the report broke")

        good, bad = Run(module_id="report"), Run(module_id="report")
        assert manager.start_task(good, succeeds()) == good.run_id
        assert manager.start_task(bad, fails()) == bad.run_id
        assert registry.get_run(good.run_id) is good and good.status is RunStatus.RUNNING
        await manager.wait_all(timeout=WAIT)

        assert registry.get_run(good.run_id) is good
        assert (good.status, good.exit_code, good.error_message) == (RunStatus.COMPLETED, 0, None)
        assert good.completed_at is not None and good.started_at is not None
        assert bad.status is RunStatus.FAILED and bad.exit_code != 0
        assert bad.error_message is not None and "the report broke" in bad.error_message
        assert registry.get_runs_by_status(RunStatus.FAILED) == [bad]

    async def test_stop_cancels_a_late_ad_hoc_run(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        registry = RunRegistry()
        manager.registry = registry
        run = Run(module_id="endless")
        manager.start_task(run, asyncio.Event().wait())
        await manager.stop(timeout=0.05)
        assert run.status is RunStatus.CANCELLED
        assert registry.get_run(run.run_id) is run

    async def test_active_tasks_are_tracked_until_done(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        entered, release = asyncio.Event(), asyncio.Event()

        async def work(payload: Payload) -> None:
            entered.set()
            await release.wait()

        await manager.register_task("work", work)
        task_id = await manager.schedule_task("work", {})
        run_id = manager.start_task(Run(module_id="adhoc"), release.wait())
        assert manager.is_task_active(task_id) and manager.is_task_active(run_id)
        assert sorted(manager.get_active_task_ids()) == sorted([task_id, run_id])
        assert manager.get_active_task_count() == 2
        assert not manager.is_task_active("no-such-task")

        await asyncio.wait_for(entered.wait(), WAIT)
        with pytest.raises(TimeoutError):
            await manager.wait_all(timeout=0.05)
        release.set()
        await manager.wait_all(timeout=WAIT)
        assert manager.get_active_task_count() == 0
        assert manager.get_active_task_ids() == []
        assert not manager.is_task_active(task_id) and not manager.is_task_active(run_id)
        assert (await _done(manager, task_id))["status"] == "completed"

    # -- ids, idempotency, batches, payloads ---------------------------------------------------

    async def test_an_idempotency_key_schedules_once(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        calls: list[Payload] = []

        async def once(payload: Payload) -> None:
            calls.append(payload)

        await manager.register_task("once", once)
        first = await manager.schedule_task("once", {"n": 1}, idempotency_key="order-42")
        again = await manager.schedule_task("once", {"n": 2}, idempotency_key="order-42")
        other = await manager.schedule_task("once", {"n": 3}, idempotency_key="order-43")
        assert again == first and other != first
        status = await _done(manager, first)
        assert status["payload"] == {"n": 1}
        await _done(manager, other)
        assert sum((await manager.count_by_status()).values()) == 2
        assert sorted(call["n"] for call in calls) == [1, 3]

    async def test_a_caller_chosen_task_id_is_kept(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        await manager.register_task("echo", echo)
        task_id = await manager.schedule_task("echo", {"n": 1}, task_id="invoice-2024-0001")
        assert task_id == "invoice-2024-0001"
        status = await _done(manager, "invoice-2024-0001")
        assert status["id"] == "invoice-2024-0001" and status["result"] == {"n": 1}

    async def test_schedule_many_schedules_all_or_nothing(self, make_manager: MakeManager) -> None:
        manager = await make_manager()
        await manager.register_task("echo", echo)
        ids = await manager.schedule_many(
            [
                {"task_type": "echo", "payload": {"n": 1}},
                {"task_type": "echo", "payload": {"n": 2}, "priority": 1},
                {"task_type": "echo", "payload": {"n": 3}, "task_id": "third"},
            ]
        )
        assert len(ids) == 3 and len(set(ids)) == 3 and ids[2] == "third"
        results = [(await _done(manager, task_id))["result"] for task_id in ids]
        assert results == [{"n": 1}, {"n": 2}, {"n": 3}]

        with pytest.raises(PayloadError):
            await manager.schedule_many(
                [
                    {"task_type": "echo", "payload": {"n": 4}, "task_id": "valid"},
                    {"task_type": "echo", "payload": {"n": {4}}, "task_id": "invalid"},
                ]
            )
        with pytest.raises(UnknownTaskType):
            await manager.schedule_many(
                [
                    {"task_type": "echo", "payload": {"n": 5}, "task_id": "valid"},
                    {"task_type": "mystery", "payload": {}},
                ]
            )
        assert await manager.get_task_status("valid") is None
        assert await manager.get_task_status("invalid") is None
        assert sum((await manager.count_by_status()).values()) == 3

    async def test_the_handler_gets_the_payload_and_cannot_change_what_is_stored(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        original: Payload = {
            "name": "ünïcode ✓",
            "items": [1, 2.5, {"deep": [True, None]}],
            "big": 2**62,
            "empty": {},
        }
        payload = copy.deepcopy(original)
        received: list[Payload] = []

        async def meddle(payload: Payload) -> Payload:
            received.append(copy.deepcopy(payload))
            payload["items"].append("meddled")
            payload["added"] = True
            if len(received) == 1:
                raise ValueError("try again")
            return {"name": payload["name"], "list": [1]}

        await manager.register_task("meddle", meddle)
        task_id = await manager.schedule_task("meddle", payload)
        payload["name"] = "changed by the caller after scheduling"
        status = await _done(manager, task_id)
        assert status["status"] == "completed"
        assert received == [original, original]
        assert status["payload"] == original

        status["payload"]["name"] = "changed through a status dict"
        status["result"]["list"].append(2)
        again = await manager.get_task_status(task_id)
        assert again is not None
        assert again["payload"] == original
        assert again["result"] == {"name": original["name"], "list": [1]}

    # -- trace context -----------------------------------------------------------------------

    async def test_the_trace_context_is_kept_with_the_task(self, make_manager: MakeManager) -> None:
        """A task's W3C trace context (what the OpenTelemetry hook sets when it is
        scheduled) is stored with it and handed back by reads, claims and imports, and
        across a restart on a durable store; a task without one has None."""
        manager = await make_manager(run_worker=False)
        context = {
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "vendor=value",
        }
        suffix = uuid.uuid4().hex
        traced = TaskRecord(id=f"traced-{suffix}", type="traced", payload={}, trace_context=context)
        plain = TaskRecord(id=f"plain-{suffix}", type="traced", payload={})
        assert await manager.store.add([traced, plain]) == [traced.id, plain.id]
        finished = TaskRecord(
            id=f"imported-{suffix}",
            type="traced",
            payload={},
            status=TaskStatus.COMPLETED,
            attempts=1,
            finished_at=utcnow(),
            trace_context=dict(context),
        )
        assert await manager.store.import_records([finished]) == [True]

        async def kept(store_manager: ContractManager) -> dict[str, Any]:
            records = [await store_manager.store.get(r.id) for r in (traced, plain, finished)]
            return {r.id: r.trace_context for r in records if r is not None}

        expected = {traced.id: context, plain.id: None, finished.id: context}
        assert await kept(manager) == expected
        claimed = await manager.store.claim(
            limit=10, now=utcnow(), worker_id="contract", lease_seconds=60, types={"traced"}
        )
        assert {r.id: r.trace_context for r in claimed} == {traced.id: context, plain.id: None}
        if Capability.DURABLE in manager.store.capabilities:
            reopened = await make_manager(same_store=True, run_worker=False)
            assert await kept(reopened) == expected

    # -- tracebacks of failed attempts -----------------------------------------------------------

    async def test_each_failed_attempt_keeps_where_the_handler_raised(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()

        def innermost(n: int) -> float:
            return 1 / n

        def middle(n: int) -> float:
            return innermost(n)

        async def divide(payload: Payload) -> float:
            return middle(payload["n"])

        await manager.register_task("divide", divide)
        task_id = await manager.schedule_task("divide", {"n": 0}, max_attempts=3)
        status = await _done(manager, task_id)
        assert status["status"] == "failed"
        entries = status["tracebacks"]
        assert [entry["attempt"] for entry in entries] == [1, 2, 3]
        for entry in entries:
            assert entry["error"].startswith("ZeroDivisionError: division by zero")
            assert "in innermost" in entry["traceback"] and "in middle" in entry["traceback"]
            assert entry["traceback"].endswith("ZeroDivisionError: division by zero")
            assert datetime.fromisoformat(entry["failed_at"]).tzinfo is not None

        async def succeed(payload: Payload) -> str:
            return "ok"

        await manager.register_task("succeed", succeed)
        done = await _done(manager, await manager.schedule_task("succeed", {}))
        assert done["tracebacks"] == []

    async def test_tracebacks_are_bounded_and_move_with_the_task(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        attempts = MAX_TRACEBACKS + 2

        async def loud(payload: Payload) -> None:
            raise ValueError("x" * (3 * MAX_TRACEBACK_CHARS))

        await manager.register_task("loud", loud)
        task_id = await manager.schedule_task("loud", {}, max_attempts=attempts)
        status = await _done(manager, task_id)
        entries = status["tracebacks"]
        assert [entry["attempt"] for entry in entries] == list(range(3, attempts + 1))
        for entry in entries:
            assert len(entry["traceback"]) <= MAX_TRACEBACK_CHARS + 100
            assert "characters cut" in entry["traceback"]
            assert entry["traceback"].startswith("Traceback (most recent call last)")

        records = await manager.store.snapshot(None)
        other = await make_manager()  # a fresh store: the task moves there intact
        assert await other.store.import_records(records) == [True]
        moved = await other.get_task_status(task_id)
        assert moved is not None and moved["tracebacks"] == entries

    # -- durability ------------------------------------------------------------------------------

    async def test_a_queued_task_survives_a_restart(self, make_manager: MakeManager) -> None:
        producer = await make_manager(run_worker=False)
        require(producer, Capability.DURABLE)
        await producer.register_task("echo", echo)
        task_id = await producer.schedule_task("echo", {"kept": True}, priority=2)
        await producer.stop()

        worker = await make_manager(same_store=True)
        await worker.register_task("echo", echo)
        status = await _done(worker, task_id)
        assert status["status"] == "completed" and status["result"] == {"kept": True}
        assert status["priority"] == 2 and status["attempts"] == 1
