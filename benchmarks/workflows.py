"""What workflows and concurrency keys cost here: the figures of the README's Workflows
section.

    python benchmarks/workflows.py [--runs 3]

On a fresh SQLite file (and in memory, for reference), each run measures:

chain
    a 1,000-step chain (each step adds one to the previous result), scheduling to the
    last result: one release per step, each in the transaction that finishes the step.
group
    a 5,000-member group and its join task, scheduling to the list of results.
release
    the store alone: 5,000 members of one fan-in finished in batches of 50, so each
    finish settles its one dependent (a countdown; the last one releases it). Reported
    per finished task, next to the same finishes of tasks without dependents.
keyed claim
    claim + finish of 20 tasks while 50,000 keyed tasks wait behind 10 keys at a limit
    of 1, next to the same with no keyed backlog.

The table shows the median of ``--runs``. Not a test: nothing here runs under pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taskyard.backends.memory import InMemoryStore, InMemoryTaskManager
from taskyard.backends.sqlite import QueuedTaskManager, SqliteStore
from taskyard.framework import EngineConfig
from taskyard.framework.engine import TaskEngine
from taskyard.framework.models import Outcome, TaskRecord, TaskStatus, new_task_id, utcnow
from taskyard.framework.store import TaskStore
from taskyard.framework.workflows import TaskContext, chain, group, schedule_workflow

CONFIG = EngineConfig(concurrency=50, poll_interval=0.05)


async def inc(payload: dict[str, Any], context: TaskContext) -> int:
    return int(context.previous or 0) + 1


async def one(payload: dict[str, Any]) -> int:
    return 1


def manager(kind: str, folder: Path) -> TaskEngine:
    if kind == "sqlite":
        return QueuedTaskManager(CONFIG, db_path=folder / "q.db")
    return InMemoryTaskManager(CONFIG)


async def run_shape(kind: str, folder: Path, shape: Any) -> float:
    async with manager(kind, folder) as engine:
        await engine.register_task("inc", inc)
        await engine.register_task("one", one)
        start = time.perf_counter()
        last = await schedule_workflow(engine, shape)
        info = await engine.wait_for(last, timeout=600)
        assert info["status"] == "completed", info
        return time.perf_counter() - start


def records(count: int, **fields: Any) -> list[TaskRecord]:
    now = utcnow()
    return [
        TaskRecord(
            id=new_task_id(),
            type="t",
            payload={},
            created_at=now,
            updated_at=now,
            run_after=now,
            **fields,
        )
        for _ in range(count)
    ]


async def finish_all(store: TaskStore, count: int) -> float:
    start = time.perf_counter()
    done = 0
    while done < count:
        claimed = await store.claim(limit=50, now=utcnow(), worker_id="b", lease_seconds=60)
        await store.finish(
            [Outcome(r.id, r.lease_token or "", TaskStatus.COMPLETED, utcnow()) for r in claimed]
        )
        done += len(claimed)
    return (time.perf_counter() - start) / count


async def release_cost(kind: str, folder: Path, fan_in: bool) -> float:
    store: TaskStore = SqliteStore(folder / "r.db") if kind == "sqlite" else InMemoryStore()
    await store.open()
    try:
        members = records(5000)
        extra = records(1, depends_on=tuple(m.id for m in members)) if fan_in else []
        extra = [TaskRecord(**{**_fields(r), "type": "callback"}) for r in extra]
        await store.add([*members, *extra])
        return await finish_all(store, 5000)
    finally:
        await store.close()


def _fields(record: TaskRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in TaskRecord.__slots__}


async def keyed_claim(kind: str, folder: Path, backlog: int) -> float:
    store: TaskStore = SqliteStore(folder / "k.db") if kind == "sqlite" else InMemoryStore()
    await store.open()
    try:
        await store.add(records(2000))
        for start in range(0, backlog, 10_000):
            batch = records(min(10_000, backlog - start))
            for index, record in enumerate(batch):
                record.concurrency_key = f"key-{index % 10}"
            await store.add(batch)
        begin = time.perf_counter()
        for _ in range(50):
            claimed = await store.claim(limit=20, now=utcnow(), worker_id="b", lease_seconds=60)
            await store.finish(
                [
                    Outcome(r.id, r.lease_token or "", TaskStatus.COMPLETED, utcnow())
                    for r in claimed
                ]
            )
        return (time.perf_counter() - begin) / 50
    finally:
        await store.close()


async def median(runs: int, measure: Callable[[Path], Awaitable[float]]) -> float:
    figures = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            figures.append(await measure(Path(folder)))
    return statistics.median(figures)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    for kind in ("sqlite", "in-memory"):
        seconds = await median(
            args.runs, lambda f, k=kind: run_shape(k, f, chain(*[("inc", {})] * 1000))
        )
        rows.append((kind, "1,000-step chain", f"{seconds:.2f} s ({seconds:.2f} ms per step)"))
        seconds = await median(
            args.runs, lambda f, k=kind: run_shape(k, f, group(*[("one", {})] * 5000))
        )
        rows.append((kind, "5,000-member group", f"{seconds:.2f} s"))
        plain = await median(args.runs, lambda f, k=kind: release_cost(k, f, False))
        fan = await median(args.runs, lambda f, k=kind: release_cost(k, f, True))
        rows.append(
            (
                kind,
                "finish, per task",
                f"{fan * 1e6:.0f} us with a dependent to settle, {plain * 1e6:.0f} us without",
            )
        )
        none = await median(args.runs, lambda f, k=kind: keyed_claim(k, f, 0))
        big = await median(args.runs, lambda f, k=kind: keyed_claim(k, f, 50_000))
        rows.append(
            (
                kind,
                "claim+finish of 20",
                f"{big * 1e3:.2f} ms with 50,000 keyed tasks waiting, {none * 1e3:.2f} ms without",
            )
        )
    width = max(len(row[1]) for row in rows)
    for kind, what, figure in rows:
        print(f"{kind:10} {what:{width}}  {figure}")


if __name__ == "__main__":
    asyncio.run(main())
