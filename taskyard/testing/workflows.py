"""The workflows part of the contract: dependencies, their failure policies, the shapes
(chain, group, chord), the fan-in race and concurrency keys. Part of
:class:`~taskyard.testing.TaskManagerContract`, so it runs on every backend; a backend
without :attr:`~taskyard.framework.store.Capability.WORKFLOWS` (or
``CONCURRENCY_KEYS``) must refuse the options instead, which is checked too."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from taskyard.framework.errors import DependencyError, InvalidTaskOptions, PermanentFailure
from taskyard.framework.models import Outcome, TaskRecord, TaskStatus, new_task_id, utcnow
from taskyard.framework.store import Capability, TaskStore
from taskyard.framework.workflows import (
    JOIN_TASK_TYPE,
    TaskContext,
    chain,
    chord,
    concurrency_limit,
    group,
    schedule_workflow,
    step,
)
from taskyard.testing.helpers import ContractManager, MakeManager, wait_until

WAIT = 5.0
LONG_WAIT = 120.0
"""For the 1,000-step chain and the 5,000-member group (a hang, not a slow machine)."""

Payload = dict[str, Any]


def _require(manager: ContractManager, capability: str) -> None:
    if capability not in manager.store.capabilities:
        pytest.skip(f"backend lacks capability {capability}")


async def _done(manager: ContractManager, task_id: str, timeout: float = WAIT) -> dict[str, Any]:
    return await manager.wait_for(task_id, timeout=timeout)


async def _status(manager: ContractManager, task_id: str) -> str:
    info = await manager.get_task_status(task_id)
    assert info is not None, f"task {task_id} is unknown"
    return str(info["status"])


def _record(task_type: str, *, depends_on: tuple[str, ...] = (), **fields: Any) -> TaskRecord:
    now = utcnow()
    return TaskRecord(
        id=new_task_id(),
        type=task_type,
        payload={},
        payload_json="{}",
        created_at=now,
        updated_at=now,
        run_after=now,
        depends_on=depends_on,
        **fields,
    )


async def _claim(store: TaskStore, limit: int, **options: Any) -> list[TaskRecord]:
    return await store.claim(
        limit=limit, now=utcnow(), worker_id="contract", lease_seconds=60, **options
    )


def _completed(record: TaskRecord, result: Any = None) -> Outcome:
    return Outcome(
        task_id=record.id,
        lease_token=record.lease_token or "",
        status=TaskStatus.COMPLETED,
        finished_at=utcnow(),
        result=result,
        result_json=None if result is None else str(result),
    )


class WorkflowContract:
    """Dependencies, shapes and concurrency keys (part of ``TaskManagerContract``)."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    # -- dependencies -------------------------------------------------------------------------

    async def test_a_dependent_waits_then_runs_with_its_dependencies_results(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        _require(manager, Capability.WORKFLOWS)
        gate = asyncio.Event()
        seen: list[TaskContext] = []

        async def first(payload: Payload) -> int:
            await gate.wait()
            return int(payload["n"])

        def second(payload: Payload, context: TaskContext) -> int:  # sync, in a thread
            seen.append(context)
            return int(sum(context.dependency_results.values())) * 10

        await manager.register_task("first", first)
        await manager.register_task("second", second)
        a = await manager.schedule_task("first", {"n": 1})
        b = await manager.schedule_task("first", {"n": 2})
        c = await manager.schedule_task("second", {}, depends_on=[a, b])
        assert await _status(manager, c) == "waiting"
        assert await manager.store.dependencies(c) == [a, b]
        assert await manager.store.dependents(a) == [c]
        gate.set()
        done = await _done(manager, c)
        assert (done["status"], done["result"], done["payload"]) == ("completed", 30, {})
        (context,) = seen
        assert (context.task_id, context.task_type, context.attempt) == (c, "second", 1)
        assert dict(context.dependency_results) == {a: 1, b: 2}
        assert context.schedule_slot is None

    async def test_a_dependency_already_finished_does_not_hold_the_task(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        _require(manager, Capability.WORKFLOWS)

        async def echo(payload: Payload, context: TaskContext) -> Any:
            return context.previous if context.previous is not None else payload["v"]

        await manager.register_task("echo", echo)
        a = await manager.schedule_task("echo", {"v": "x"})
        assert (await _done(manager, a))["result"] == "x"
        b = await manager.schedule_task("echo", {"v": "y"}, depends_on=[a])
        assert (await _done(manager, b))["result"] == "x"

    async def test_an_unknown_dependency_or_a_cycle_is_refused_and_nothing_stored(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager(run_worker=False)
        _require(manager, Capability.WORKFLOWS)

        async def noop(payload: Payload) -> None:
            return None

        await manager.register_task("noop", noop)
        with pytest.raises(DependencyError, match="does not hold"):
            await manager.schedule_task("noop", {}, depends_on=["no-such-task"])
        with pytest.raises(DependencyError, match="itself"):
            await manager.schedule_task("noop", {}, task_id="me", depends_on=["me"])
        later, earlier = new_task_id(), new_task_id()
        with pytest.raises(DependencyError, match="later in the same batch"):
            await manager.schedule_many(
                [
                    {"task_type": "noop", "task_id": earlier, "depends_on": [later]},
                    {"task_type": "noop", "task_id": later, "depends_on": [earlier]},
                ]
            )
        good = await manager.schedule_task("noop", {})
        with pytest.raises(DependencyError):  # all or nothing: the first one is not kept
            await manager.schedule_many(
                [
                    {"task_type": "noop", "depends_on": [good]},
                    {"task_type": "noop", "depends_on": ["missing"]},
                ]
            )
        counts = await manager.count_by_status()
        assert sum(counts.values()) == 1, counts
        bad_options: list[dict[str, Any]] = [
            {"on_dependency_failure": "retry"},
            {"depends_on": good},
        ]
        for bad in bad_options:
            with pytest.raises(InvalidTaskOptions):
                await manager.schedule_task("noop", {}, **bad)

    async def test_a_failed_dependency_cancels_its_dependents_in_cascade_unless_told_to_run(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        _require(manager, Capability.WORKFLOWS)
        gate = asyncio.Event()
        ran: list[str] = []

        async def broken(payload: Payload) -> None:
            await gate.wait()
            raise PermanentFailure("broken on purpose")

        async def record(payload: Payload, context: TaskContext) -> Any:
            ran.append(payload["name"])
            return dict(context.dependency_results)

        await manager.register_task("broken", broken)
        await manager.register_task("record", record)
        a = await manager.schedule_task("broken", {})
        b = await manager.schedule_task("record", {"name": "b"}, depends_on=[a])
        c = await manager.schedule_task("record", {"name": "c"}, depends_on=[b])
        d = await manager.schedule_task(
            "record", {"name": "d"}, depends_on=[a], on_dependency_failure="run"
        )
        gate.set()
        assert (await _done(manager, a))["status"] == "failed"
        for task_id, cause in ((b, a), (c, b)):
            info = await _done(manager, task_id)
            assert info["status"] == "cancelled"
            assert info["error"] == f"dependency {cause} ended " + (
                "failed" if cause == a else "cancelled"
            )
            assert info["attempts"] == 0
        info = await _done(manager, d)
        assert (info["status"], info["result"]) == ("completed", {a: None})
        assert ran == ["d"]
        # a task depending on one that already failed is cancelled at once
        late = await manager.schedule_task("record", {"name": "late"}, depends_on=[a])
        assert await _status(manager, late) == "cancelled"

    async def test_cancelling_a_dependency_or_a_waiting_task_cascades(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager(run_worker=False)
        _require(manager, Capability.WORKFLOWS)

        async def noop(payload: Payload) -> None:
            return None

        await manager.register_task("noop", noop)
        a = await manager.schedule_task("noop", {})
        b = await manager.schedule_task("noop", {}, depends_on=[a])
        c = await manager.schedule_task("noop", {}, depends_on=[b])
        keep = await manager.schedule_task("noop", {}, depends_on=[b], on_dependency_failure="run")
        assert await manager.cancel_task(b) is True  # a waiting task
        assert await _status(manager, b) == "cancelled"
        assert await _status(manager, c) == "cancelled"
        assert await _status(manager, keep) == "queued"  # its one dependency has ended
        assert await _status(manager, a) == "queued"
        x = await manager.schedule_task("noop", {})
        y = await manager.schedule_task("noop", {}, depends_on=[x])
        assert await manager.cancel_task(x) is True
        assert await _status(manager, y) == "cancelled"

    # -- shapes ---------------------------------------------------------------------------------

    async def test_chain_group_and_chord_compose_and_return_one_id(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        _require(manager, Capability.WORKFLOWS)

        async def add(payload: Payload, context: TaskContext) -> int:
            return int(context.previous or 0) + int(payload["n"])

        def total(payload: Payload, context: TaskContext) -> int:
            return sum(context.previous)

        await manager.register_task("add", add)
        await manager.register_task("total", total)
        flow = chain(
            ("add", {"n": 1}),
            step("add", {"n": 2}, priority=1),
            group(("add", {"n": 10}), chain(("add", {"n": 20}), ("add", {"n": 300}))),
        )
        last = await schedule_workflow(manager, flow)
        info = await _done(manager, last)
        assert (info["type"], info["result"]) == (JOIN_TASK_TYPE, [13, 323])
        tasks = await manager.store.workflow_tasks(last)
        assert len(tasks) == 6 and all(t.workflow_id == last for t in tasks)
        assert [t.id for t in tasks][-1] == last
        assert await manager.store.workflow_ids() == [last]

        callback = await schedule_workflow(
            manager, chord([("add", {"n": n}) for n in range(5)], ("total", {}))
        )
        assert (await _done(manager, callback))["result"] == sum(range(5))

    async def test_a_failed_step_cancels_the_rest_and_a_workflow_can_be_cancelled(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager()
        _require(manager, Capability.WORKFLOWS)
        gate = asyncio.Event()

        async def fail(payload: Payload) -> None:
            raise PermanentFailure("no")

        async def hold(payload: Payload) -> None:
            await gate.wait()

        async def fine(payload: Payload) -> str:
            return "ok"

        for name, handler in (("fail", fail), ("hold", hold), ("fine", fine)):
            await manager.register_task(name, handler)
        last = await schedule_workflow(manager, chord([("fine", {}), ("fail", {})], ("fine", {})))
        info = await _done(manager, last)
        assert info["status"] == "cancelled" and "ended cancelled" in info["error"]

        held = await schedule_workflow(manager, chain(("hold", {}), ("fine", {}), ("fine", {})))
        tasks = await manager.store.workflow_tasks(held)
        await wait_until(lambda: _running(manager, tasks[0].id), message="the first step running")
        cancelled = await manager.cancel_workflow(held)
        assert set(cancelled) == {task.id for task in tasks}
        gate.set()
        for task in tasks:
            assert (await _done(manager, task.id))["status"] == "cancelled"

    async def test_a_long_chain_and_a_wide_group(self, make_manager: MakeManager) -> None:
        manager = await make_manager(concurrency=50)
        _require(manager, Capability.WORKFLOWS)

        async def inc(payload: Payload, context: TaskContext) -> int:
            return int(context.previous or 0) + 1

        async def one(payload: Payload) -> int:
            return 1

        await manager.register_task("inc", inc)
        await manager.register_task("one", one)
        last = await schedule_workflow(manager, chain(*[("inc", {})] * 1000))
        assert (await _done(manager, last, LONG_WAIT))["result"] == 1000
        joined = await schedule_workflow(manager, group(*[("one", {})] * 5000))
        info = await _done(manager, joined, LONG_WAIT)
        assert info["result"] == [1] * 5000
        assert await manager.store.dependents(joined) == []

    async def test_fan_in_releases_each_callback_exactly_once_when_the_last_two_finish_together(
        self, make_manager: MakeManager
    ) -> None:
        """200 groups of 20: the last two members of every group finish in two concurrent
        finish calls (the same instant, as two workers would); every callback is released
        once, never twice, never lost."""
        manager = await make_manager(run_worker=False)
        _require(manager, Capability.WORKFLOWS)
        store = manager.store
        members = [[_record("member") for _ in range(20)] for _ in range(200)]
        callbacks = [
            _record("callback", depends_on=tuple(m.id for m in group_)) for group_ in members
        ]
        records = [m for group_ in members for m in group_] + callbacks
        await store.add(records)
        assert await _claim(store, 10, types={"callback"}) == []
        claimed = {r.id: r for r in await _claim(store, 4000, types={"member"})}
        assert len(claimed) == 4000
        await store.finish([_completed(claimed[m.id]) for g in members for m in g[:18]])
        assert await _claim(store, 10, types={"callback"}) == []
        releases = store.releases
        first, second = await asyncio.gather(
            store.finish([_completed(claimed[g[18].id], 1) for g in members]),
            store.finish([_completed(claimed[g[19].id], 2) for g in members]),
        )
        assert all(first) and all(second)
        assert store.releases - releases == 200
        ready = await _claim(store, 1000, types={"callback"})
        assert sorted(r.id for r in ready) == sorted(c.id for c in callbacks)
        assert await _claim(store, 1000, types={"callback"}) == []

    # -- concurrency keys -----------------------------------------------------------------------

    async def test_concurrency_keys_are_counted_in_the_claim(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager(run_worker=False)
        _require(manager, Capability.CONCURRENCY_KEYS)
        store = manager.store
        limits = {"cust-": 2, "cust-vip-": 3, "report": 1}
        assert concurrency_limit("sync", "cust-1", limits) == 2
        assert concurrency_limit("sync", "cust-vip-1", limits) == 3
        assert concurrency_limit("report", "r-1", limits) == 1
        assert concurrency_limit("other", "x", limits) == 1
        assert concurrency_limit("other", "x", {**limits, "": 7}) == 7
        assert concurrency_limit("report", "r-1", {**limits, "": 7}) == 1
        heavy = [_record("sync", concurrency_key="cust-1") for _ in range(5)]
        vip = [_record("sync", concurrency_key="cust-vip-1") for _ in range(4)]
        free = [_record("sync") for _ in range(2)]
        other = [_record("report", concurrency_key="r-1") for _ in range(2)]
        await store.add([*heavy, *vip, *free, *other])  # the heavy key first in line
        first = {r.id for r in await _claim(store, 100, limits=limits)}
        expected = {r.id for r in [*heavy[:2], *vip[:3], *free, other[0]]}
        assert first == expected
        assert await _claim(store, 100, limits=limits) == []  # every key at its limit
        running = {r.id: r for r in await manager.store.list_tasks(statuses=[TaskStatus.RUNNING])}
        await store.finish([_completed(running[heavy[0].id])])
        again = [r.id for r in await _claim(store, 100, limits=limits)]
        assert again == [heavy[2].id]

    async def test_a_limit_of_one_per_key_holds_while_other_keys_run(
        self, make_manager: MakeManager
    ) -> None:
        # the type's limit (1) wins over the default for every key ("": 4)
        manager = await make_manager(concurrency=8, concurrency_limits={"sync_customer": 1, "": 4})
        _require(manager, Capability.CONCURRENCY_KEYS)
        running: dict[str, int] = {}
        most: dict[str, int] = {}
        gate = asyncio.Event()

        async def sync_customer(payload: Payload) -> None:
            key = payload["customer"]
            running[key] = running.get(key, 0) + 1
            most[key] = max(most.get(key, 0), running[key])
            if key == "a":
                await gate.wait()
            running[key] -= 1

        await manager.register_task("sync_customer", sync_customer)
        ids = [
            await manager.schedule_task(
                "sync_customer", {"customer": key}, concurrency_key=f"customer-{key}"
            )
            for key in ("a", "a", "a", "b", "b", "c")
        ]
        for task_id in ids[3:]:  # behind the blocked key, the others run
            assert (await _done(manager, task_id))["status"] == "completed"
        assert await _status(manager, ids[1]) == "queued"
        gate.set()
        for task_id in ids[:3]:
            assert (await _done(manager, task_id))["status"] == "completed"
        assert most == {"a": 1, "b": 1, "c": 1}

    async def test_a_store_without_the_capability_refuses_the_options(
        self, make_manager: MakeManager
    ) -> None:
        manager = await make_manager(run_worker=False)

        async def noop(payload: Payload) -> None:
            return None

        await manager.register_task("noop", noop)
        parent = await manager.schedule_task("noop", {})
        lacking: list[tuple[str, dict[str, Any]]] = [
            (capability, options)
            for capability, options in (
                (Capability.WORKFLOWS, {"depends_on": [parent]}),
                (Capability.CONCURRENCY_KEYS, {"concurrency_key": "k"}),
            )
            if capability not in manager.store.capabilities
        ]
        if not lacking:
            pytest.skip("the backend has both capabilities")
        for capability, options in lacking:
            with pytest.raises(InvalidTaskOptions, match=str(capability)):
                await manager.schedule_task("noop", {}, **options)
        assert sum((await manager.count_by_status()).values()) == 1


def _running(manager: ContractManager, task_id: str) -> Any:
    async def check() -> bool:
        return await _status(manager, task_id) == "running"

    return check()
