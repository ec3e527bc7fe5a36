"""A live queue moved sqlite -> postgres -> sqlite with the in-flight migration, and the
same moves through export files: ids, statuses, attempts and every other field intact,
nothing lost, nothing run twice.

The queue holds tasks in every state; at each move some are running (handlers blocked
on an event) and are cut off with a zero deadline: they go back to the queue with that
attempt not counted, and run to completion exactly once at the end.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import pytest

from taskyard.backends.postgres import PostgresStore
from taskyard.backends.sqlite import QueuedTaskManager, SqliteStore
from taskyard.framework import EngineConfig, PermanentFailure, Retry, RetryPolicy
from taskyard.framework.engine import TaskEngine
from taskyard.framework.models import TaskStatus
from taskyard.ops.migration import export_tasks, import_file, migrate_in_flight
from tests.pg_support import postgres_dsn, schema_for

from .helpers import until

__all__ = ["postgres_dsn"]
pytestmark = pytest.mark.postgres

RUNNING = 8  # the concurrency: this many are running at each move
MIX = {"ok": 300, "fail": 100, "retry": 150, "later": 200, "cancelled": 100}
QUEUED = 400
TOTAL = RUNNING + QUEUED + sum(MIX.values())
CONFIG = EngineConfig(
    concurrency=RUNNING,
    poll_interval=0.02,
    retry=RetryPolicy(initial=0.01, max_delay=0.01, jitter=0),
    shutdown_timeout=5,
)
CHANGED_BY_RUNNING = {"status", "attempts", "started_at", "updated_at"}


class Handlers:
    def __init__(self) -> None:
        self.released = False
        self.runs: collections.Counter[int] = collections.Counter()

    async def register(self, manager: TaskEngine) -> None:
        for name in ("block", "ok", "fail", "retry", "later"):
            await manager.register_task(name, getattr(self, name))

    async def block(self, payload: dict[str, Any]) -> str:
        await until(lambda: self.released, message="released")
        self.runs[payload["n"]] += 1
        return "released"

    async def ok(self, payload: dict[str, Any]) -> Any:
        self.runs[payload["n"]] += 1
        return {"echo": payload, "note": "fini ✓"}

    later = ok

    async def fail(self, payload: dict[str, Any]) -> None:
        raise PermanentFailure(f"refused {payload['n']}")

    async def retry(self, payload: dict[str, Any]) -> None:
        raise Retry("come back in an hour", delay=3600)


def request(kind: str, n: int) -> dict[str, Any]:
    options: dict[str, Any] = {
        "task_type": kind,
        "payload": {"n": n, "text": 'é€😀 \u2028 "q"', "big": 2**53 + n, "ratio": n / 7},
        "priority": n % 10,
        "max_attempts": 2 + n % 4,
    }
    if n % 13 == 0:
        options["idempotency_key"] = f"key-{n}"
    if kind in ("later", "cancelled"):
        options["task_type"] = "later"
        options["delay"] = 3600 + n
    return options


async def fill(manager: TaskEngine) -> set[str]:
    """TOTAL tasks in every state on a running manager; returns the running ones' ids."""
    n = iter(range(TOTAL))
    kinds = ("ok", "fail", "retry")
    await manager.schedule_many(
        [request(kind, next(n)) for kind in kinds for _ in range(MIX[kind])]
    )

    async def settled() -> bool:
        counts = await manager.store.count_by_status()
        return (
            counts[TaskStatus.COMPLETED] == MIX["ok"]
            and counts[TaskStatus.FAILED] == MIX["fail"]
            and counts[TaskStatus.QUEUED] == MIX["retry"]
        )

    await until(settled, message="ok, fail and retry tasks settled")
    await manager.schedule_many(request("later", next(n)) for _ in range(MIX["later"]))
    cancelled = await manager.schedule_many(
        request("cancelled", next(n)) for _ in range(MIX["cancelled"])
    )
    for task_id in cancelled:
        assert await manager.cancel_task(task_id)
    blocked = await manager.schedule_many(
        {**request("block", next(n)), "priority": -1} for _ in range(RUNNING)
    )

    async def all_running() -> bool:
        found = [await manager.get_task_status(task_id) for task_id in blocked]
        return all((info or {}).get("status") == "running" for info in found)

    await until(all_running, message="blocked tasks running")
    await manager.schedule_many(request("ok", next(n)) for _ in range(QUEUED))
    return set(blocked)


def lines_of(path: Path) -> dict[str, dict[str, Any]]:
    tasks = path.read_text(encoding="utf-8").split("\n")[1:-1]  # U+2028 is no line break
    return {r["id"]: r for r in map(json.loads, tasks)}


async def exported(store: SqliteStore | PostgresStore, path: Path) -> dict[str, dict[str, Any]]:
    await store.open()
    try:
        await export_tasks(store, path, include_finished=True)
    finally:
        await store.close()
    return lines_of(path)


def assert_same(
    before: dict[str, Any], after: dict[str, Any], *, were_running: set[str], uncounted: int
) -> None:
    """Nothing lost, nothing added; every field equal but the ones a cut-off run changes
    (it is queued again, its attempt not counted: ``uncounted`` attempts fewer)."""
    assert set(after) == set(before) and len(after) == TOTAL
    for task_id, old in before.items():
        new = after[task_id]
        if task_id in were_running:
            assert new["status"] == "queued"
            assert new["attempts"] == old["attempts"] - uncounted
            new = {k: v for k, v in new.items() if k not in CHANGED_BY_RUNNING}
            old = {k: v for k, v in old.items() if k not in CHANGED_BY_RUNNING}
        assert new == old


async def test_a_live_queue_moves_to_postgres_and_back_intact(
    tmp_path: Path, postgres_dsn: str, request: pytest.FixtureRequest
) -> None:
    handlers = Handlers()
    schema = schema_for(request.node.nodeid)
    first_db, second_db = tmp_path / "first.db", tmp_path / "second.db"

    # 1. a queue on sqlite, with work in every state and handlers running
    on_sqlite = QueuedTaskManager(CONFIG, db_path=first_db)
    await handlers.register(on_sqlite)
    async with on_sqlite:
        blocked = await fill(on_sqlite)
        before = await exported(SqliteStore(first_db), tmp_path / "before.jsonl")
        assert {before[i]["status"] for i in blocked} == {"running"}
        # 2. sqlite -> postgres in flight: the manager goes on on postgres by itself
        report = await migrate_in_flight(
            on_sqlite,
            PostgresStore(postgres_dsn, schema_name=schema, pool_size=3),
            deadline=0,
            export_path=tmp_path / "hop1.jsonl",
        )
        assert (report.exported, report.imported, report.conflicts) == (TOTAL, TOTAL, [])
        assert isinstance(on_sqlite.store, PostgresStore) and report.resumed
        hop1 = lines_of(tmp_path / "hop1.jsonl")
        assert_same(before, hop1, were_running=blocked, uncounted=1)

        async def running_again() -> bool:
            counts = await on_sqlite.store.count_by_status()
            return counts[TaskStatus.RUNNING] == RUNNING

        await until(running_again, message="the blocked tasks running on postgres")
        on_postgres = on_sqlite
        # 3. postgres -> sqlite in flight, cut off again
        back = await migrate_in_flight(
            on_postgres, SqliteStore(second_db), deadline=0, export_path=tmp_path / "hop2.jsonl"
        )
        assert (back.exported, back.imported) == (TOTAL, TOTAL)
        assert isinstance(on_postgres.store, SqliteStore)
        hop2 = lines_of(tmp_path / "hop2.jsonl")
        assert_same(hop1, hop2, were_running=blocked, uncounted=0)
        handlers.released = True

        async def all_done() -> bool:
            counts = await on_postgres.store.count_by_status()
            return counts[TaskStatus.QUEUED] == MIX["retry"] + MIX["later"]

        await until(all_done, message="the moved tasks to finish on sqlite")
    after = await exported(SqliteStore(second_db), tmp_path / "after.jsonl")
    assert set(after) == set(before)
    for task_id, old in before.items():
        new = after[task_id]
        if old["status"] in ("completed", "failed", "cancelled") or old["type"] in (
            "retry",
            "later",
        ):
            assert new == old  # finished or waiting: untouched by two moves
        else:
            assert (new["status"], new["attempts"]) == ("completed", 1)
    # every ok/block task ran exactly once, wherever it ran
    assert set(handlers.runs.values()) == {1}
    assert len(handlers.runs) == MIX["ok"] + RUNNING + QUEUED


async def test_export_files_move_a_queue_to_postgres_and_back(
    tmp_path: Path, postgres_dsn: str, request: pytest.FixtureRequest
) -> None:
    """The offline path (`taskyard export` / `taskyard import`): a running task travels
    as running and arrives queued with its attempt counted; nothing else changes."""
    handlers = Handlers()
    db = tmp_path / "queue.db"
    on_sqlite = QueuedTaskManager(CONFIG, db_path=db)
    await handlers.register(on_sqlite)
    async with on_sqlite:
        blocked = await fill(on_sqlite)
        before = await exported(SqliteStore(db), tmp_path / "from-sqlite.jsonl")
        await on_sqlite.stop(timeout=0)
    pg = PostgresStore(postgres_dsn, schema_name=schema_for(request.node.nodeid), pool_size=2)
    await pg.open()
    try:
        report = await import_file(pg, tmp_path / "from-sqlite.jsonl")
        assert (report.imported, report.already_present) == (TOTAL, 0)
        again = await import_file(pg, tmp_path / "from-sqlite.jsonl")
        assert (again.imported, again.already_present) == (0, TOTAL)
        await export_tasks(pg, tmp_path / "from-postgres.jsonl", include_finished=True)
    finally:
        await pg.close()
    on_postgres = lines_of(tmp_path / "from-postgres.jsonl")
    for task_id, old in before.items():
        new = on_postgres[task_id]
        if task_id in blocked:
            assert (old["status"], new["status"]) == ("running", "queued")
            assert new["attempts"] == old["attempts"] == 1  # counted once, kept
            keep = set(new) - {"status", "updated_at"}
            assert {k: new[k] for k in keep} == {k: old[k] for k in keep}
        else:
            assert new == old
    back = SqliteStore(tmp_path / "back.db")
    await back.open()
    try:
        assert (await import_file(back, tmp_path / "from-postgres.jsonl")).imported == TOTAL
    finally:
        await back.close()
    assert await exported(SqliteStore(tmp_path / "back.db"), tmp_path / "b.jsonl") == on_postgres
