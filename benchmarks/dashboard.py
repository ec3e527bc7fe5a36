"""The dashboard on a big queue: task-list and overview latency with 1,000,000 tasks in
a SQLite file.

    python -m benchmarks.dashboard                      # 1,000,000 tasks (filling: ~1-2 min)
    python -m benchmarks.dashboard --tasks 100000 --db /tmp/dash.db   # kept, reused
    python -m benchmarks.dashboard --postgres postgresql://postgres@127.0.0.1:5432/test

The file is filled through the store's own import (a realistic mix: 90 % completed,
5 % failed, 3 % queued, 1 % cancelled, 1 % delayed; five task types; created over the
last 7 days, the newest 20,000 finished within the last hour). Each figure is the median
(and the worst) of ``--repeats`` timed calls after one untimed warm-up, each a request
through the whole application (httpx over ASGI, in process: routing, the store's reads,
the template) or a store call alone. Target: task list and overview under 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from taskyard.backends.sqlite import SqliteStore
from taskyard.framework.models import TaskRecord, TaskStatus, new_task_id
from taskyard.framework.operations import StoreOperations, TaskFilter
from taskyard.web import DashboardConfig, create_app
from taskyard.web.security import Tokens

TOKEN = "benchmark-token-0123456789"
TYPES = ("mail", "resize", "report", "sync", "webhook")
TARGET_MS = 200.0


def mix(index: int, count: int, now: datetime) -> TaskRecord:
    """Task ``index`` of ``count``: older first, the newest finished within the hour."""
    age = timedelta(days=7) * (count - index) / count
    created = now - age
    recent = count - index <= 20_000
    finished = now - timedelta(seconds=(count - index) * 0.18) if recent else created
    bucket = index % 100
    status = (
        TaskStatus.FAILED if bucket < 5
        else TaskStatus.QUEUED if bucket < 9
        else TaskStatus.CANCELLED if bucket < 10
        else TaskStatus.COMPLETED
    )  # fmt: skip
    terminal = status.is_terminal
    delayed = status is TaskStatus.QUEUED and bucket == 8
    return TaskRecord(
        id=new_task_id(),
        type=TYPES[index % len(TYPES)],
        payload={"customer": f"customer-{index % 5000}", "order": index, "note": "x" * 40},
        status=status,
        attempts=3 if status is TaskStatus.FAILED else (1 if terminal else 0),
        max_attempts=3,
        result={"ok": True} if status is TaskStatus.COMPLETED else None,
        error=f"ConnectionError: upstream {index % 50} refused" if bucket < 5 else None,
        created_at=created,
        updated_at=finished if terminal else created,
        run_after=created + timedelta(days=8) if delayed else created,
        started_at=finished - timedelta(milliseconds=40 + index % 200) if terminal else None,
        finished_at=finished if terminal else None,
    )


async def fill(store: StoreOperations, count: int, chunk: int = 10_000) -> float:
    started = time.perf_counter()
    now = datetime.now(UTC)
    for first in range(0, count, chunk):
        last = min(first + chunk, count)
        await store.import_records([mix(i, count, now) for i in range(first, last)])
        if first and first % 200_000 == 0:
            print(f"  filled {first:,}", flush=True)
    await store.optimize()
    return time.perf_counter() - started


async def timed(call: Callable[[], Awaitable[Any]], repeats: int) -> tuple[float, float]:
    await call()  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        await call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000, max(seconds) * 1000


async def measure(
    make: Callable[[], StoreOperations], repeats: int
) -> list[tuple[str, float, float]]:
    rows: list[tuple[str, float, float]] = []
    store = make()
    await store.open()
    first = await store.page_tasks(TaskFilter(), limit=50)
    cursor = first.next_cursor
    for _ in range(19):  # page 20
        page = await store.page_tasks(TaskFilter(), limit=50, after=cursor)
        cursor = page.next_cursor
    now = time.time()
    store_calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "store: page 1 (no filter)": lambda: store.page_tasks(TaskFilter(), limit=50),
        "store: page 21 by cursor": lambda: store.page_tasks(TaskFilter(), limit=50, after=cursor),
        "store: page, status=failed": lambda: store.page_tasks(
            TaskFilter(statuses=(TaskStatus.FAILED,)), limit=50
        ),
        "store: page, type + last hour": lambda: store.page_tasks(
            TaskFilter(task_type="mail", since=now - 3600), limit=50
        ),
        "store: page, text 'customer-42,'": lambda: store.page_tasks(
            TaskFilter(text='"customer-42",'), limit=50
        ),
        "store: page, text that no task has": lambda: store.page_tasks(
            TaskFilter(text="no-such-text"), limit=50
        ),
        "store: queue_figures (overview)": lambda: store.queue_figures(
            now=time.time(), window=3600
        ),
        "store: finished_series (charts)": lambda: store.finished_series(
            since=time.time() - 3600, until=time.time(), buckets=30
        ),
        "store: count for a bulk confirm (failed, type)": lambda: store.count_matching(
            TaskFilter(statuses=(TaskStatus.FAILED,), task_type="mail")
        ),
    }
    for name, call in store_calls.items():
        rows.append((name, *await timed(call, repeats)))
    await store.close()

    app = create_app(make(), DashboardConfig(Tokens(TOKEN)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers
        ) as http:

            def get(url: str) -> Callable[[], Awaitable[Any]]:
                async def call() -> None:
                    response = await http.get(url)
                    assert response.status_code == 200, (url, response.status_code)

                return call

            pages = {
                "GET /tasks (the task list)": "/tasks",
                "GET /tasks?status=failed": "/tasks?status=failed",
                "GET /tasks?type=mail&q=customer-42": "/tasks?type=mail&q=customer-42",
                "GET /live/overview (what refreshes)": "/live/overview",
                "GET / (the overview page)": "/",
            }
            for name, url in pages.items():
                rows.append((name, *await timed(get(url), repeats)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--db", type=Path, default=None, help="reuse or keep this file")
    parser.add_argument(
        "--postgres", default="", help="a DSN: measure PostgreSQL (schema dashboard_bench, kept)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        path = args.db or Path(scratch) / "dashboard.db"

        def make() -> StoreOperations:
            if args.postgres:
                from taskyard.backends.postgres import PostgresStore

                return PostgresStore(args.postgres, schema_name="dashboard_bench")
            return SqliteStore(path)

        async def run() -> list[tuple[str, float, float]]:
            store = make()
            await store.open()
            held = await store.count_tasks()
            if held < args.tasks:
                print(f"filling {store!r} with {args.tasks - held:,} tasks ...", flush=True)
                seconds = await fill(store, args.tasks - held)
                print(f"  filled in {seconds:.0f} s", flush=True)
            total = await store.count_tasks()
            size = (await store.storage_info()).size_bytes
            await store.optimize()
            await store.close()
            print(f"{total:,} tasks, {size / 2**20:.0f} MiB", flush=True)
            return await measure(make, args.repeats)

        rows = asyncio.run(run())  # a --db file is kept; the scratch one goes
    print("\n| call | median ms | worst ms |\n| --- | ---: | ---: |")
    for name, median, worst in rows:
        print(f"| {name} | {median:.1f} | {worst:.1f} |")
    judged = ("GET /tasks (", "GET /live", "GET / (")
    misses = [name for name, median, _ in rows if name.startswith(judged) and median > TARGET_MS]
    verdict = "MISS " + ", ".join(misses) if misses else "PASS"
    print(f"\ntarget: task list and overview under {TARGET_MS:.0f} ms: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
