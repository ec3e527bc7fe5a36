"""The in-flight migration: a running manager hands its tasks to another store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from taskyard.backends.memory import InMemoryStore, InMemoryTaskManager
from taskyard.backends.sqlite import QueuedTaskManager, SqliteStore
from taskyard.framework import EngineConfig, ManagerStateError, Run, RunRegistry, RunStatus
from taskyard.framework.models import TaskStatus
from taskyard.ops.migration import (
    MigrationError,
    import_runs,
    migrate_in_flight,
    read_export,
)

from .helpers import until

CONFIG = EngineConfig(concurrency=4, poll_interval=0.02, shutdown_timeout=5.0)


class Gate:
    """Handlers that block until released, and count their runs."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[Any] = []
        self.done: list[Any] = []

    async def blocked(self, payload: dict[str, Any]) -> str:
        self.started.append(payload["n"])
        await self.release.wait()
        self.done.append(payload["n"])
        return f"done {payload['n']}"

    async def quick(self, payload: dict[str, Any]) -> int:
        self.done.append(payload["n"])
        return int(payload["n"])


async def manager_with(gate: Gate, config: EngineConfig = CONFIG) -> InMemoryTaskManager:
    manager = InMemoryTaskManager(config)
    await manager.register_task("blocked", gate.blocked)
    await manager.register_task("quick", gate.quick)
    return manager


def running(manager: InMemoryTaskManager) -> int:
    return sum(1 for r in manager.tasks.values() if r.status is TaskStatus.RUNNING)


async def test_paused_intake_holds_schedule_calls_until_resumed() -> None:
    gate = Gate()
    async with await manager_with(gate) as manager:
        manager.pause_intake()
        assert manager.intake_paused
        call = asyncio.create_task(manager.schedule_task("quick", {"n": 1}))
        await asyncio.sleep(0)  # let it reach the gate (not a synchronisation: checked below)
        assert not call.done() and not manager.tasks
        manager.resume_intake()
        task_id = await call
        assert (await manager.wait_for(task_id, timeout=10))["status"] == "completed"


async def test_held_calls_fail_once_the_manager_stops() -> None:
    gate = Gate()
    manager = await manager_with(gate)
    await manager.start()
    manager.pause_intake()
    call = asyncio.create_task(manager.schedule_task("quick", {"n": 1}))
    await asyncio.sleep(0)
    await manager.stop()
    with pytest.raises(ManagerStateError):
        await call
    assert not manager.tasks


async def test_drain_and_export_lets_handlers_finish_within_the_deadline() -> None:
    gate = Gate()
    async with await manager_with(gate) as manager:
        ids = [await manager.schedule_task("blocked", {"n": n}) for n in range(2)]
        await until(lambda: len(gate.started) == 2)
        draining = asyncio.create_task(manager.drain_and_export(timeout=30))
        await until(lambda: manager.intake_paused)
        gate.release.set()
        exported = await draining
    assert exported == []  # both finished: nothing unfinished to move
    assert sorted(gate.done) == [0, 1]
    assert {manager.tasks[i].status for i in ids} == {TaskStatus.COMPLETED}


async def test_handlers_past_the_deadline_go_back_to_the_queue_uncounted() -> None:
    gate = Gate()
    async with await manager_with(gate) as manager:
        ids = [await manager.schedule_task("blocked", {"n": n}) for n in range(2)]
        await until(lambda: running(manager) == 2)
        exported = await manager.drain_and_export(timeout=0)
    assert sorted(r.id for r in exported) == sorted(ids)
    assert {(r.status, r.attempts) for r in exported} == {(TaskStatus.QUEUED, 0)}


async def test_switch_store_is_refused_while_running() -> None:
    async with await manager_with(Gate()) as manager:
        with pytest.raises(ManagerStateError):
            manager.switch_store(InMemoryStore())


async def test_live_migration_moves_every_task_and_goes_on_on_the_new_store(
    tmp_path: Path,
) -> None:
    gate = Gate()
    manager = await manager_with(gate)
    async with manager:
        blocked = [await manager.schedule_task("blocked", {"n": n}, priority=0) for n in range(4)]
        await until(lambda: running(manager) == 4)
        queued = [await manager.schedule_task("quick", {"n": n}) for n in range(10, 20)]
        delayed = await manager.schedule_task("quick", {"n": 99}, delay=3600)
        cancelled = await manager.schedule_task("quick", {"n": 98}, delay=3600)
        await manager.cancel_task(cancelled)
        manager.pause_intake()
        late = asyncio.create_task(manager.schedule_task("quick", {"n": 50}))
        report = await migrate_in_flight(
            manager, SqliteStore(tmp_path / "q.db"), deadline=0, export_path=tmp_path / "x.jsonl"
        )
        late_id = await late  # held during the move, then stored in SQLite
        assert isinstance(manager.store, SqliteStore)
        gate.release.set()
        for task_id in [*blocked, *queued, late_id]:
            info = await manager.wait_for(task_id, timeout=30)
            assert info["status"] == "completed", info
        assert (await manager.get_task_status(delayed))["status"] == "queued"
        assert (await manager.get_task_status(cancelled))["status"] == "cancelled"
    assert report.exported == report.imported == 16
    assert report.by_status == {"queued": 15, "cancelled": 1}
    assert report.resumed
    assert len(read_export(tmp_path / "x.jsonl").records) == 16
    assert sorted(gate.done) == sorted([0, 1, 2, 3, *range(10, 20), 50])


async def test_hand_over_at_shutdown_then_restart_on_sqlite(tmp_path: Path) -> None:
    gate = Gate()
    manager = await manager_with(gate)
    await manager.start()
    ids = [await manager.schedule_task("quick", {"n": n}, delay=3600) for n in range(5)]
    report = await migrate_in_flight(
        manager, SqliteStore(tmp_path / "q.db"), deadline=1, include_finished=False, resume=False
    )
    assert report.imported == 5 and not report.resumed
    with pytest.raises(ManagerStateError):
        await manager.schedule_task("quick", {"n": 1})
    restarted = QueuedTaskManager(CONFIG, db_path=tmp_path / "q.db")
    async with restarted:
        statuses = [await restarted.get_task_status(i) for i in ids]
    assert [s and s["status"] for s in statuses] == ["queued"] * 5


class BrokenStore(InMemoryStore):
    async def import_records(self, records):  # type: ignore[no-untyped-def]
        raise OSError("disk on fire")


async def test_a_failed_import_leaves_the_manager_on_its_old_store() -> None:
    gate = Gate()
    manager = await manager_with(gate)
    async with manager:
        task_id = await manager.schedule_task("quick", {"n": 1}, delay=3600)
        old = manager.store
        with pytest.raises(MigrationError, match="nothing was lost"):
            await migrate_in_flight(manager, BrokenStore(), deadline=0)
        assert manager.store is old and manager.started and not manager.intake_paused
        assert (await manager.get_task_status(task_id))["status"] == "queued"
        other = await manager.schedule_task("quick", {"n": 2})
        assert (await manager.wait_for(other, timeout=10))["status"] == "completed"


async def test_queued_and_running_runs_become_tasks(tmp_path: Path) -> None:
    registry = RunRegistry()
    queued = registry.add_run(Run("reports", status=RunStatus.QUEUED, parameters={"rows": 3}))
    running_run = registry.add_run(
        Run("reports", status=RunStatus.RUNNING, parameters={"rows": 4, "_owner": "x:1"})
    )
    registry.add_run(Run("reports", status=RunStatus.COMPLETED))
    registry.add_run(Run("unknown", status=RunStatus.QUEUED))
    store = SqliteStore(tmp_path / "q.db")
    await store.open()
    try:
        first = await import_runs(registry, store, {"reports": "build_report"})
        second = await import_runs(registry, store, {"reports": "build_report"})
        tasks = {r.id: r for r in await store.list_tasks()}
    finally:
        await store.close()
    assert (first.read, first.imported) == (2, 2)
    assert (second.imported, second.already_present) == (0, 2)
    assert set(tasks) == {queued.run_id, running_run.run_id}
    assert tasks[running_run.run_id].payload == {"rows": 4}
    assert {(r.type, r.status, r.attempts) for r in tasks.values()} == {
        ("build_report", TaskStatus.QUEUED, 0)
    }


async def test_stop_and_hand_over_moves_only_from_memory_to_a_durable_store(
    tmp_path: Path,
) -> None:
    from taskyard.ops.migration import stop_and_hand_over

    gate = Gate()
    manager = await manager_with(gate)
    await manager.start()
    await manager.schedule_task("quick", {"n": 1}, delay=3600)
    assert await stop_and_hand_over(manager, InMemoryStore()) is None  # nothing durable
    assert not manager.started

    manager = await manager_with(gate)
    await manager.start()
    task_id = await manager.schedule_task("quick", {"n": 2}, delay=3600)
    report = await stop_and_hand_over(manager, SqliteStore(tmp_path / "q.db"), deadline=5)
    assert report is not None and report.imported == 1

    durable = QueuedTaskManager(CONFIG, db_path=tmp_path / "q.db")
    await durable.register_task("quick", gate.quick)
    await durable.start()
    assert (await durable.get_task_status(task_id))["status"] == "queued"
    other = SqliteStore(tmp_path / "other.db")
    assert await stop_and_hand_over(durable, other) is None  # a durable store keeps its own
    assert not (tmp_path / "other.db").exists()


def test_the_handover_store_is_the_queue_database_when_there_is_one(tmp_path: Path) -> None:
    from taskyard.ops.migration import init_database
    from taskyard.providers import Container
    from taskyard.settings import load_settings

    def handover(backend: str) -> object:
        settings = load_settings(
            overrides={
                "task_execution.backend": backend,
                "task_execution.queue_db_path": str(tmp_path / "q.db"),
            }
        )
        return Container(settings=settings).handover_store()

    assert handover("in-memory") is None  # no database: nowhere durable to go
    sqlite = handover("sqlite")
    assert isinstance(sqlite, SqliteStore) and sqlite.path == tmp_path / "q.db"
    init_database(tmp_path / "q.db")
    parked = handover("in-memory")  # rolled back to in-memory: park in the database
    assert isinstance(parked, SqliteStore) and parked.path == tmp_path / "q.db"
