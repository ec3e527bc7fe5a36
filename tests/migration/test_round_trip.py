"""10,000 tasks in every state: in-memory -> sqlite -> in-memory -> sqlite, nothing lost,
nothing duplicated, every field intact.

At each switch some tasks are running (handlers blocked on an event): the first and the
third switch drain the manager with a zero deadline, so those go back to the queue with
the attempt not counted; the second exports from the database while a worker holds them,
so they travel as running and arrive queued with the attempt counted. Every other field
of every task must come out of each hop exactly as it went in.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from taskyard.backends.memory import InMemoryTaskManager
from taskyard.backends.sqlite import QueuedTaskManager, SqliteStore
from taskyard.framework import EngineConfig, PermanentFailure, Retry, RetryPolicy
from taskyard.framework.engine import TaskEngine
from taskyard.framework.models import TaskStatus
from taskyard.ops.migration import (
    export_tasks,
    import_file,
    migrate_in_flight,
    read_export,
    write_export,
)

from .helpers import until

TOTAL = 10_000
RUNNING = 40  # the concurrency: this many are running at each switch
MIX = {"ok": 2000, "fail": 1000, "retry": 1500, "delayed": 2000, "cancelled": 1000}
QUEUED = TOTAL - RUNNING - sum(MIX.values())
CONFIG = EngineConfig(
    concurrency=RUNNING,
    poll_interval=0.02,
    retry=RetryPolicy(initial=0.01, max_delay=0.01, jitter=0),
    shutdown_timeout=5,
)
#: Fields a hop may change, and only for the tasks that were running at the switch.
CHANGED_BY_RUNNING = {"status", "attempts", "started_at", "updated_at"}


class Handlers:
    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def register(self, manager: TaskEngine) -> None:
        await manager.register_task("block", self.block)
        await manager.register_task("ok", self.ok)
        await manager.register_task("fail", self.fail)
        await manager.register_task("retry", self.retry)
        await manager.register_task("later", self.ok)

    async def block(self, payload: Any) -> str:
        await self.gate.wait()
        return "released"

    async def ok(self, payload: Any) -> Any:
        return {"echo": payload, "note": "fini ✓"}

    async def fail(self, payload: Any) -> None:
        raise PermanentFailure(f"refused {payload['n']}")

    async def retry(self, payload: Any) -> None:
        raise Retry("come back in an hour", delay=3600)


def payload(n: int) -> Any:
    if n % 11 == 0:
        return [n, "list payload", None]
    return {
        "n": n,
        "text": 'é€😀 \u2028 line\nbreak "quoted"',
        "nested": {"values": [1, 2.5, None, True, -0.0], "empty": {}},
        "big": 2**53 + n,
        "ratio": n / 7,
    }


def request(kind: str, n: int) -> dict[str, Any]:
    options: dict[str, Any] = {
        "task_type": kind,
        "payload": payload(n),
        "priority": n % 10,
        "max_attempts": 2 + n % 4,
    }
    if n % 13 == 0:
        options["idempotency_key"] = f"key-{n}"
    if n % 17 == 0:
        options["timeout"] = 30.0 + n % 5
    if kind in ("later", "cancelled"):
        options["task_type"] = "later"
        options["delay"] = 3600 + n
    return options


def lines_of(path: Path) -> dict[str, dict[str, Any]]:
    # split on newlines only: str.splitlines() would also split at the U+2028 in payloads
    tasks = path.read_text(encoding="utf-8").split("\n")[1:-1]
    return {r["id"]: r for r in map(json.loads, tasks)}


def assert_hop(
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    *,
    were_running: set[str],
    attempts_delta: int,
) -> None:
    """Nothing lost, nothing added, every field equal but those a running task changes."""
    assert len(after) == TOTAL and set(after) == set(before)
    for task_id, old in before.items():
        new = after[task_id]
        if task_id in were_running:
            assert {k: v for k, v in new.items() if k not in CHANGED_BY_RUNNING} == {
                k: v for k, v in old.items() if k not in CHANGED_BY_RUNNING
            }
            assert new["status"] == "queued"
            assert new["attempts"] == old["attempts"] + attempts_delta
        else:
            assert new == old


def statuses(tasks: dict[str, dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in tasks.values():
        counts[task["status"]] = counts.get(task["status"], 0) + 1
    return counts


async def fill(manager: InMemoryTaskManager, handlers: Handlers) -> set[str]:
    """Put TOTAL tasks in every state; returns the ids of the running ones."""
    n = iter(range(TOTAL))
    kinds = ("ok", "fail", "retry")
    finishing = [request(kind, next(n)) for kind in kinds for _ in range(MIX[kind])]
    await manager.schedule_many(finishing)

    def settled() -> bool:
        records = manager.tasks.values()
        return (
            sum(r.status.is_terminal for r in records) == MIX["ok"] + MIX["fail"]
            and sum(r.attempts == 1 and r.status is TaskStatus.QUEUED for r in records)
            == MIX["retry"]
        )

    await until(settled, message="ok, fail and retry tasks settled")
    await manager.schedule_many(request("later", next(n)) for _ in range(MIX["delayed"]))
    cancelled = await manager.schedule_many(
        request("cancelled", next(n)) for _ in range(MIX["cancelled"])
    )
    for task_id in cancelled:
        assert await manager.cancel_task(task_id)
    blocked = await manager.schedule_many(
        {**request("block", next(n)), "priority": -1} for _ in range(RUNNING)
    )
    await until(
        lambda: all(manager.tasks[i].status is TaskStatus.RUNNING for i in blocked),
        message="blocked tasks running",
    )
    await manager.schedule_many(request("ok", next(n)) for _ in range(QUEUED))
    assert len(manager.tasks) == TOTAL
    return set(blocked)


async def test_round_trips_lose_duplicate_and_change_nothing(tmp_path: Path) -> None:
    handlers = Handlers()
    first_db, second_db = tmp_path / "first.db", tmp_path / "second.db"

    # 1. in-memory -> sqlite, drained with a zero deadline: running ones go back uncounted
    memory = InMemoryTaskManager(CONFIG)
    await handlers.register(memory)
    async with memory:
        blocked = await fill(memory, handlers)
        records = await memory.drain_and_export(timeout=0, statuses=None)
        memory.resume_intake()
    hop0 = tmp_path / "hop0.jsonl"
    write_export(hop0, records, scope="all")
    assert statuses(lines_of(hop0)) == {
        "completed": MIX["ok"],
        "failed": MIX["fail"],
        "queued": MIX["retry"] + MIX["delayed"] + RUNNING + QUEUED,
        "cancelled": MIX["cancelled"],
    }
    store = SqliteStore(first_db)
    await store.open()
    try:
        report = await import_file(store, hop0)
        assert (report.imported, report.already_present) == (TOTAL, 0)
        await export_tasks(store, tmp_path / "hop1.jsonl", include_finished=True)
    finally:
        await store.close()
    hop1 = lines_of(tmp_path / "hop1.jsonl")
    assert_hop(lines_of(hop0), hop1, were_running=set(), attempts_delta=0)

    # 2. sqlite -> in-memory, exported while a worker holds the blocked tasks
    worker = QueuedTaskManager(CONFIG, db_path=first_db)
    await handlers.register(worker)
    async with worker:
        observer = SqliteStore(first_db)
        await observer.open()
        try:
            await until(
                lambda: _all_running(observer, blocked), message="blocked tasks running on sqlite"
            )
            await export_tasks(observer, tmp_path / "hop2.jsonl", include_finished=True)
        finally:
            await observer.close()
        await worker.stop(timeout=0)
    hop2 = lines_of(tmp_path / "hop2.jsonl")
    assert {hop2[i]["status"] for i in blocked} == {"running"}
    memory2 = InMemoryTaskManager(CONFIG)
    await handlers.register(memory2)
    await memory2.import_tasks(read_export(tmp_path / "hop2.jsonl").records)
    assert len(memory2.tasks) == TOTAL
    arrived = {i: memory2.tasks[i] for i in blocked}
    assert {(r.status, r.attempts) for r in arrived.values()} == {(TaskStatus.QUEUED, 1)}

    # 3. in-memory -> sqlite, the in-flight migration with running tasks cut off
    async with memory2:
        await until(
            lambda: all(memory2.tasks[i].status is TaskStatus.RUNNING for i in blocked),
            message="blocked tasks running in memory",
        )
        report3 = await migrate_in_flight(
            memory2,
            SqliteStore(second_db),
            deadline=0,
            export_path=tmp_path / "hop3.jsonl",
            resume=False,
        )
    assert (report3.exported, report3.imported) == (TOTAL, TOTAL)
    store = SqliteStore(second_db)
    await store.open()
    try:
        await export_tasks(store, tmp_path / "hop4.jsonl", include_finished=True)
    finally:
        await store.close()
    hop3, hop4 = lines_of(tmp_path / "hop3.jsonl"), lines_of(tmp_path / "hop4.jsonl")
    assert hop3 == hop4
    assert_hop(hop2, hop4, were_running=blocked, attempts_delta=0)
    for task_id in blocked:
        assert hop4[task_id]["attempts"] == 1  # counted at the second switch, not the third

    # every field of every other task is as it was at the first switch
    assert_hop(lines_of(hop0), hop4, were_running=blocked, attempts_delta=1)

    # importing the last hop into the first database again adds nothing
    store = SqliteStore(first_db)
    await store.open()
    try:
        again = await import_file(store, tmp_path / "hop4.jsonl")
        count = sum((await store.count_by_status()).values())
    finally:
        await store.close()
    assert (again.imported, again.already_present, count) == (0, TOTAL, TOTAL)
    handlers.gate.set()


async def _all_running(store: SqliteStore, ids: set[str]) -> bool:
    records = await store.list_tasks(statuses=[TaskStatus.RUNNING], limit=len(ids) + 1)
    return {r.id for r in records} == ids


async def test_a_waiting_workflow_moves_between_stores_still_waiting(tmp_path: Path) -> None:
    """An export keeps what waiting tasks wait for, their keys and their workflow: in the
    new store they wait again, and run once their dependencies finish there."""
    from taskyard.backends.memory import InMemoryStore
    from taskyard.framework.models import Outcome, utcnow
    from taskyard.framework.workflows import chain, group, schedule_workflow

    async def step(payload: dict[str, Any]) -> None:
        return None

    source = QueuedTaskManager(EngineConfig(run_worker=False), db_path=tmp_path / "from.db")
    async with source:
        await source.register_task("step", step)
        last = await schedule_workflow(
            source, chain(("step", {}), group(("step", {}), ("step", {})), ("step", {}))
        )
        first = await source.schedule_task("step", {}, concurrency_key="k-1")
        [head] = await source.store.claim(limit=1, now=utcnow(), worker_id="w", lease_seconds=9)
        await source.store.finish(
            [Outcome(head.id, head.lease_token or "", TaskStatus.COMPLETED, utcnow())]
        )
        summary = await export_tasks(source.store, tmp_path / "tasks.jsonl")
        workflow = await source.store.workflow_tasks(last)
    assert summary.by_status == {"waiting": 2, "queued": 3}
    for target in (SqliteStore(tmp_path / "to.db"), InMemoryStore()):
        await target.open()
        try:
            report = await import_file(target, tmp_path / "tasks.jsonl")
            assert report.imported == 5
            moved = {task.id: task for task in await target.workflow_tasks(last)}
            assert [moved[t.id].status for t in workflow[1:]] == [
                TaskStatus.QUEUED,
                TaskStatus.QUEUED,
                TaskStatus.WAITING,
                TaskStatus.WAITING,
            ]
            assert await target.dependencies(last) == [workflow[3].id]
            assert (await target.get(first)).concurrency_key == "k-1"  # type: ignore[union-attr]
            members = await target.claim(
                limit=5, now=utcnow(), worker_id="w", lease_seconds=9, types={"step"}
            )
            assert {m.id for m in members} == {workflow[1].id, workflow[2].id, first}
            await target.finish(
                [
                    Outcome(m.id, m.lease_token or "", TaskStatus.COMPLETED, utcnow())
                    for m in members
                ]
            )
            assert (await target.get(workflow[3].id)).status is TaskStatus.QUEUED  # type: ignore[union-attr]
        finally:
            await target.close()
