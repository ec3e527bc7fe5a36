"""The canary backend: a share of new tasks to the new store, found wherever they went."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskyard.backends.canary import CanaryStore, CanaryTaskManager, routes_to_canary
from taskyard.backends.memory import InMemoryStore
from taskyard.backends.sqlite import SqliteStore
from taskyard.framework import ConfigurationError, EngineConfig
from taskyard.providers import Container
from taskyard.settings import load_settings

CONFIG = EngineConfig(concurrency=8, poll_interval=0.02)


def test_routing_is_deterministic_and_takes_about_the_share() -> None:
    keys = [f"task-{n}" for n in range(20_000)]
    chosen = [routes_to_canary(key, 0.1) for key in keys]
    assert chosen == [routes_to_canary(key, 0.1) for key in keys]
    assert 0.09 < sum(chosen) / len(keys) < 0.11
    assert not any(routes_to_canary(key, 0.0) for key in keys)
    assert all(routes_to_canary(key, 1.0) for key in keys)
    # raising the share only adds keys: a task never moves back to the stable store
    assert all(routes_to_canary(k, 0.5) for k, c in zip(keys, chosen, strict=True) if c)


async def echo(payload: dict[str, int]) -> int:
    return payload["n"]


async def test_tasks_split_by_share_run_and_are_found_wherever_they_went(tmp_path: Path) -> None:
    stable, canary = InMemoryStore(), SqliteStore(tmp_path / "q.db")
    manager = CanaryTaskManager(CONFIG, stable=stable, canary=canary, share=0.25)
    await manager.register_task("echo", echo)
    async with manager:
        ids = await manager.schedule_many(
            {"task_type": "echo", "payload": {"n": n}} for n in range(400)
        )
        delayed = await manager.schedule_many(
            {"task_type": "echo", "payload": {"n": n}, "delay": 3600} for n in range(40)
        )
        for task_id in ids:
            info = await manager.wait_for(task_id, timeout=30)
            assert info["result"] == int(info["payload"]["n"])
        in_canary = {r.id for r in await canary.list_tasks(limit=1000)}
        in_stable = set(stable.tasks)
        for task_id in delayed:
            assert await manager.cancel_task(task_id)
            assert (await manager.get_task_status(task_id))["status"] == "cancelled"
        counts = await manager.count_by_status()
    assert in_canary.isdisjoint(in_stable)
    assert in_canary | in_stable == set(ids) | set(delayed)
    assert 0.15 < len(in_canary) / 440 < 0.35
    assert in_canary == {i for i in [*ids, *delayed] if routes_to_canary(i, 0.25)}
    assert counts == {
        "waiting": 0,
        "queued": 0,
        "running": 0,
        "completed": 400,
        "failed": 0,
        "cancelled": 40,
    }


async def test_share_zero_sends_nothing_new_but_still_runs_the_canarys_tasks(
    tmp_path: Path,
) -> None:
    db = tmp_path / "q.db"
    first = CanaryTaskManager(CONFIG, stable=InMemoryStore(), canary=SqliteStore(db), share=1.0)
    await first.register_task("echo", echo)
    async with first:
        parked = await first.schedule_task("echo", {"n": 7}, delay=3600)
    # back out of the canary: share 0, the parked task is made due and still runs
    stable = InMemoryStore()
    second = CanaryTaskManager(CONFIG, stable=stable, canary=SqliteStore(db), share=0.0)
    await second.register_task("echo", echo)
    async with second:
        fresh = await second.schedule_many(
            {"task_type": "echo", "payload": {"n": n}} for n in range(50)
        )
        assert set(fresh) <= set(stable.tasks)
        store = SqliteStore(db)
        await store.open()
        try:
            await store.execute_write(
                lambda conn: conn.execute("UPDATE taskyard_tasks SET run_after = 0")
            )
        finally:
            await store.close()
        info = await second.wait_for(parked, timeout=30)
    assert info["status"] == "completed" and info["result"] == 7


async def test_the_same_idempotency_key_meets_in_the_same_store() -> None:
    stable, canary = InMemoryStore(), InMemoryStore()
    manager = CanaryTaskManager(CONFIG, stable=stable, canary=canary, share=0.5)
    await manager.register_task("echo", echo)
    async with manager:
        ids = {await manager.schedule_task("echo", {"n": 1}, idempotency_key="k") for _ in range(5)}
    assert len(ids) == 1
    assert len(stable.tasks) + len(canary.tasks) == 1


def test_the_container_builds_the_canary_from_the_settings(tmp_path: Path) -> None:
    settings = load_settings(
        overrides={
            "task_execution.backend": "in-memory",
            "task_execution.canary_backend": "sqlite",
            "task_execution.canary_share": 0.1,
            "task_execution.queue_db_path": str(tmp_path / "q.db"),
            "runs.keep_in_database": False,
        }
    )
    container = Container(settings=settings)
    manager = container.task_manager()
    store = manager.store
    assert isinstance(store, CanaryStore)
    assert isinstance(store.stable, InMemoryStore) and isinstance(store.canary, SqliteStore)
    assert store.share == 0.1 and store.canary.path == tmp_path / "q.db"
    ops = container.ops_store()
    assert isinstance(ops, SqliteStore) and ops.path == tmp_path / "q.db"


def test_a_canary_of_the_backend_in_use_is_refused() -> None:
    settings = load_settings(
        overrides={
            "task_execution.backend": "in-memory",
            "task_execution.canary_backend": "in-memory",
        }
    )
    with pytest.raises(ConfigurationError, match="canary_backend = 'in-memory' is the backend"):
        Container(settings=settings).task_manager()


def test_a_bad_share_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigurationError, match=r"task_execution\.canary_share = 1\.5"):
        load_settings(overrides={"task_execution.canary_share": 1.5})


def test_a_canary_store_is_durable_only_when_both_sides_are(tmp_path: Path) -> None:
    both = CanaryStore(SqliteStore(tmp_path / "a.db"), SqliteStore(tmp_path / "b.db"), share=0.5)
    mixed = CanaryStore(InMemoryStore(), SqliteStore(tmp_path / "b.db"), share=0.5)
    assert "durable" in both.capabilities and "durable" not in mixed.capabilities
    with pytest.raises(ValueError, match="share"):
        CanaryStore(InMemoryStore(), InMemoryStore(), share=2)
