"""Phase 9: PostgreSQL. Raw asyncpg limits, taskyard's postgres backend, and the peers
procrastinate and pgqueuer, on the same server, each system in a fresh database of its
own; ``ANALYZE`` after every fill and before every drain (the server here may run with
autovacuum off), and every commit durable (``synchronous_commit = on``).

The server: ``TASKYARD_BENCH_POSTGRES`` (a DSN of a database from which databases may
be created), by default ``postgresql://postgres@127.0.0.1:5432/test``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from benchmarks.common import CALLERS, CHUNK, DRAIN_CONCURRENCY, WORKER_POLL, children, payload

ADMIN_DSN = os.environ.get("TASKYARD_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
RAW_POOL = 16
"""Connections of the raw 64-caller pool (the server is shared: max_connections)."""
RAW_BATCH = 100
RAW_WORKERS = 4
PEER_BATCH = 100
TY_POOL = 10
PROCESSES = 2


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def available() -> str | None:
    """None when the server answers, else why not."""

    async def probe() -> None:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=3)
        await conn.close()

    try:
        run(probe())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new empty database for one run: its DSN; dropped afterwards."""
    name = f"taskyard_bench_{uuid.uuid4().hex[:10]}"
    run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(ADMIN_DSN)._replace(path=f"/{name}"))
    finally:
        run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def analyze(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def poll_until(check: Callable[[], Awaitable[bool]], timeout: float = 600) -> None:
    async def loop() -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"still waiting after {timeout:g} s")
            await asyncio.sleep(0.01)

    run(loop())


# -- raw asyncpg ----------------------------------------------------------------------------

RAW_SCHEMA = """
CREATE TABLE q (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status  text NOT NULL DEFAULT 'queued',
    payload json NOT NULL,
    result  json
);
CREATE INDEX q_ready ON q (id) WHERE status = 'queued';
"""
RAW_INSERT = "INSERT INTO q (payload) VALUES ($1)"


async def _raw_table(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(RAW_SCHEMA)
    finally:
        await conn.close()


def raw_single(tasks: int) -> float:
    """One INSERT per call, each its own commit, awaited one at a time."""

    async def go(dsn: str) -> float:
        await _raw_table(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            start = time.perf_counter()
            for i in range(tasks):
                await conn.execute(RAW_INSERT, json.dumps(payload(i)))
            return time.perf_counter() - start
        finally:
            await conn.close()

    with fresh_database() as dsn:
        return float(run(go(dsn)))


def raw_concurrent(tasks: int) -> float:
    """The same INSERT from 64 callers sharing a pool of RAW_POOL connections."""

    async def go(dsn: str) -> float:
        await _raw_table(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=RAW_POOL, max_size=RAW_POOL)
        numbers = iter(range(tasks))

        async def caller() -> None:
            for i in numbers:
                async with pool.acquire() as conn:
                    await conn.execute(RAW_INSERT, json.dumps(payload(i)))

        try:
            start = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(CALLERS)))
            return time.perf_counter() - start
        finally:
            await pool.close()

    with fresh_database() as dsn:
        return float(run(go(dsn)))


RAW_CLAIM = (
    "WITH next AS (SELECT id FROM q WHERE status = 'queued' ORDER BY id LIMIT $1"
    " FOR UPDATE SKIP LOCKED)"
    " UPDATE q SET status = 'running' FROM next WHERE q.id = next.id RETURNING q.id, q.payload"
)
RAW_ACK = (
    "UPDATE q SET status = 'completed', result = 'null'"
    " FROM unnest($1::bigint[]) AS done(id) WHERE q.id = done.id"
)


def raw_drain(tasks: int) -> float:
    """Fill (unnest), ANALYZE, then RAW_WORKERS connections each claim RAW_BATCH rows with
    SKIP LOCKED and ack them in one statement, until the queue is empty."""

    async def go(dsn: str) -> float:
        await _raw_table(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            for first in range(0, tasks, CHUNK):
                rows = [json.dumps(payload(i)) for i in range(first, min(first + CHUNK, tasks))]
                await conn.execute(
                    "INSERT INTO q (payload) SELECT p::json FROM unnest($1::text[]) AS p", rows
                )
            await conn.execute("ANALYZE q")
        finally:
            await conn.close()
        connections = [await asyncpg.connect(dsn) for _ in range(RAW_WORKERS)]

        async def worker(conn: asyncpg.Connection) -> None:
            while rows := await conn.fetch(RAW_CLAIM, RAW_BATCH):
                for row in rows:
                    json.loads(row[1])
                await conn.execute(RAW_ACK, [row[0] for row in rows])

        try:
            start = time.perf_counter()
            await asyncio.gather(*(worker(conn) for conn in connections))
            elapsed = time.perf_counter() - start
            done = await connections[0].fetchval("SELECT COUNT(*) FROM q WHERE status='completed'")
            if done != tasks:
                raise AssertionError(f"raw drain completed {done} of {tasks}")
            return elapsed
        finally:
            for conn in connections:
                await conn.close()

    with fresh_database() as dsn:
        return float(run(go(dsn)))


# -- taskyard -------------------------------------------------------------------------------


def _manager(dsn: str, *, notify: bool = True, pool_size: int = TY_POOL, **config: Any) -> Any:
    from taskyard.backends.postgres import PostgresTaskManager
    from taskyard.framework import EngineConfig

    config.setdefault("run_worker", False)
    return PostgresTaskManager(EngineConfig(**config), dsn=dsn, pool_size=pool_size, notify=notify)


async def _noop(payload: dict[str, Any]) -> None:
    return None


def taskyard_sequential(tasks: int, *, notify: bool = True, worker: bool = False) -> float:
    """``await schedule_task`` one at a time on a producer-only manager; with ``worker``,
    on one whose worker runs in this process (default concurrency), then ``wait_all()``:
    a task scheduled while a slot is free is claimed in its INSERT
    (Capability.CLAIM_ON_ADD)."""

    async def go(dsn: str) -> float:
        manager = _manager(dsn, notify=notify, run_worker=worker)
        await manager.register_task("noop", _noop)
        async with manager:
            start = time.perf_counter()
            for i in range(tasks):
                await manager.schedule_task("noop", payload(i))
            if worker:
                await manager.wait_all()
            return time.perf_counter() - start

    with fresh_database() as dsn:
        return float(run(go(dsn)))


def taskyard_concurrent(tasks: int, *, notify: bool = True) -> float:
    async def go(dsn: str) -> float:
        manager = _manager(dsn, notify=notify)
        await manager.register_task("noop", _noop)
        numbers = iter(range(tasks))

        async def caller() -> None:
            for i in numbers:
                await manager.schedule_task("noop", payload(i))

        async with manager:
            start = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(CALLERS)))
            return time.perf_counter() - start

    with fresh_database() as dsn:
        return float(run(go(dsn)))


async def _fill_taskyard(dsn: str, tasks: int) -> None:
    manager = _manager(dsn)
    await manager.register_task("noop", _noop)
    async with manager:
        for first in range(0, tasks, CHUNK):
            await manager.schedule_many(
                [
                    {"task_type": "noop", "payload": payload(i)}
                    for i in range(first, min(first + CHUNK, tasks))
                ]
            )
    await analyze(dsn)


def taskyard_drain(folder: Path, tasks: int) -> float:
    """Fill, ANALYZE, then PROCESSES worker processes; until nothing is queued or running."""
    with fresh_database() as dsn:
        run(_fill_taskyard(dsn, tasks))
        args = ["--dsn", dsn, "--concurrency", str(DRAIN_CONCURRENCY), "--poll-interval",
                str(WORKER_POLL)]  # fmt: skip
        active = (
            "SELECT COUNT(*) FROM taskyard.taskyard_tasks WHERE status IN ('queued', 'running')"
        )
        with children("benchmarks.worker", [args] * PROCESSES, folder) as workers:
            start = time.perf_counter()
            for worker in workers:
                worker.go()
            poll_until(lambda: _is_zero(dsn, active))
            elapsed = time.perf_counter() - start
        done = run(
            count(dsn, "SELECT COUNT(*) FROM taskyard.taskyard_tasks WHERE status = 'completed'")
        )
        if done != tasks:
            raise AssertionError(f"taskyard drain completed {done} of {tasks}")
        return elapsed


async def _is_zero(dsn: str, sql: str) -> bool:
    return await count(dsn, sql) == 0


def taskyard_latency(folder: Path, samples: int, *, notify: bool) -> list[float]:
    """A worker process (poll WORKER_POLL; NOTIFY on or off); latency = the handler's
    time.time() - time.time() just before schedule_task here."""
    with fresh_database() as dsn:
        run(_fill_taskyard(dsn, 0))
        args = ["--dsn", dsn, "--concurrency", "10", "--poll-interval", str(WORKER_POLL)]
        if not notify:
            args.append("--no-notify")
        with children("benchmarks.worker", [args], folder) as workers:
            workers[0].go()
            workers[0].wait_for_line("taskyard worker ready")
            found: list[float] = run(_stamps(dsn, samples))
            return found


async def _stamps(dsn: str, samples: int) -> list[float]:
    from benchmarks.worker import register

    manager = _manager(dsn, poll_interval=0.002)
    await register(manager)
    latencies: list[float] = []
    async with manager:
        for k in range(samples):
            await asyncio.sleep(random.random() * WORKER_POLL)  # any phase of the worker's poll
            before = time.time()
            task_id = await manager.schedule_task("stamp", {"k": k})
            status = await manager.wait_for(task_id, timeout=30)
            latencies.append(float(status["result"]) - before)
    return latencies


# -- peers ----------------------------------------------------------------------------------


def procrastinate_app(dsn: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop(n: int) -> None:
        return None

    return app


async def _procrastinate_schema(dsn: str) -> None:
    app = procrastinate_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


def procrastinate_enqueue(tasks: int) -> float:
    async def go(dsn: str) -> float:
        await _procrastinate_schema(dsn)
        app = procrastinate_app(dsn)
        task = app.tasks["noop"]
        async with app.open_async():
            start = time.perf_counter()
            for i in range(tasks):
                await task.defer_async(n=i)
            return time.perf_counter() - start

    with fresh_database() as dsn:
        return float(run(go(dsn)))


def procrastinate_drain(folder: Path, tasks: int) -> float:
    async def fill(dsn: str) -> None:
        await _procrastinate_schema(dsn)
        app = procrastinate_app(dsn)
        task = app.tasks["noop"]
        async with app.open_async():
            for first in range(0, tasks, CHUNK):
                await task.batch_defer_async(
                    *({"n": i} for i in range(first, min(first + CHUNK, tasks)))
                )
        await analyze(dsn)

    with fresh_database() as dsn:
        run(fill(dsn))
        args = ["procrastinate", dsn]
        with children("benchmarks.pg_peers", [args] * PROCESSES, folder) as workers:
            start = time.perf_counter()
            for worker in workers:
                worker.go()
            active = "SELECT COUNT(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            poll_until(lambda: _is_zero(dsn, active))
            elapsed = time.perf_counter() - start
        return elapsed


async def _pgqueuer_install(dsn: str) -> None:
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(dsn)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()


def pgqueuer_enqueue(tasks: int) -> float:
    async def go(dsn: str) -> float:
        from pgqueuer import AsyncpgDriver, Queries

        await _pgqueuer_install(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            queries = Queries(AsyncpgDriver(conn))
            start = time.perf_counter()
            for i in range(tasks):
                await queries.enqueue("noop", json.dumps(payload(i)).encode())
            return time.perf_counter() - start
        finally:
            await conn.close()

    with fresh_database() as dsn:
        return float(run(go(dsn)))


def pgqueuer_drain(folder: Path, tasks: int) -> float:
    async def fill(dsn: str) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        await _pgqueuer_install(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            queries = Queries(AsyncpgDriver(conn))
            for first in range(0, tasks, CHUNK):
                size = min(first + CHUNK, tasks) - first
                await queries.enqueue(
                    ["noop"] * size,
                    [json.dumps(payload(i)).encode() for i in range(first, first + size)],
                    [0] * size,
                )
        finally:
            await conn.close()
        await analyze(dsn)

    with fresh_database() as dsn:
        run(fill(dsn))
        args = ["pgqueuer", dsn]
        with children("benchmarks.pg_peers", [args] * PROCESSES, folder) as workers:
            start = time.perf_counter()
            for worker in workers:
                worker.go()
            poll_until(lambda: _is_zero(dsn, "SELECT COUNT(*) FROM pgqueuer"))
            elapsed = time.perf_counter() - start
        return elapsed


# -- the phase ------------------------------------------------------------------------------

RAW_PG_SINGLE = "raw asyncpg, 1 INSERT/call"
RAW_PG_CALLERS = f"raw asyncpg, {CALLERS} callers, pool {RAW_POOL}"
RAW_PG_DRAIN = f"raw asyncpg, SKIP LOCKED drain, {RAW_WORKERS} workers x {RAW_BATCH}"
TY_SEQ = "taskyard postgres, sequential"
TY_SEQ_QUIET = "taskyard postgres, sequential, NOTIFY off"
TY_IN_PROCESS = "taskyard postgres, one at a time, then all done, worker in process"
TY_CALLERS = f"taskyard postgres, {CALLERS} callers"
TY_CALLERS_QUIET = f"taskyard postgres, {CALLERS} callers, NOTIFY off"
TY_DRAIN = f"taskyard postgres, drain by {PROCESSES} worker processes"
PROC_SEQ = "procrastinate, sequential defer"
PROC_DRAIN = f"procrastinate, drain by {PROCESSES} worker processes"
PGQ_SEQ = "pgqueuer, sequential enqueue"
PGQ_DRAIN = f"pgqueuer, drain by {PROCESSES} worker processes"
SEQUENTIAL_TASKS = 5_000
"""One-call-at-a-time enqueues are timed on at most this many tasks (a commit each)."""
PROCRASTINATE_DRAIN_TASKS = 2_000
"""procrastinate drains a few hundred tasks/s: a smaller queue keeps the run short."""


def phase(
    tasks: int,
    repeats: int,
    folder: Callable[[], Any],
    echo: Callable[[str], None],
    latency_samples: int,
) -> tuple[list[Any], list[Any]]:
    """Every system once per repeat, interleaved, so that a shared machine's drift hits
    them alike; returns (throughputs, latencies)."""
    from benchmarks.common import Latency, Throughput

    sequential = min(tasks, SEQUENTIAL_TASKS)
    plan: list[tuple[str, str, int, Callable[[int], float], str]] = [
        ("raw", RAW_PG_SINGLE, sequential, raw_single, "the enqueue limit; a commit per call"),
        ("raw", RAW_PG_CALLERS, tasks, raw_concurrent, "a commit per call"),
        ("raw", RAW_PG_DRAIN, tasks, raw_drain, "claim CTE + ack by unnest; the drain limit"),
        ("taskyard", TY_SEQ, sequential, taskyard_sequential, "await schedule_task"),
        ("taskyard", TY_SEQ_QUIET, sequential,
         lambda n: taskyard_sequential(n, notify=False), "polling only"),
        ("taskyard", TY_IN_PROCESS, sequential, partial(taskyard_sequential, worker=True),
         "claimed in the INSERT while a slot is free"),
        ("taskyard", TY_CALLERS, tasks, taskyard_concurrent, "group commit"),
        ("taskyard", TY_CALLERS_QUIET, tasks,
         lambda n: taskyard_concurrent(n, notify=False), "polling only"),
        ("taskyard", TY_DRAIN, tasks, lambda n: _in(folder, taskyard_drain, n),
         f"concurrency {DRAIN_CONCURRENCY} each; until nothing is queued or running"),
        ("peer", PROC_SEQ, min(sequential, 2_000), procrastinate_enqueue, "defer_async"),
        ("peer", PROC_DRAIN, min(tasks, PROCRASTINATE_DRAIN_TASKS),
         lambda n: _in(folder, procrastinate_drain, n), "run_worker_async(concurrency=20)"),
        ("peer", PGQ_SEQ, sequential, pgqueuer_enqueue, "Queries.enqueue"),
        ("peer", PGQ_DRAIN, tasks, lambda n: _in(folder, pgqueuer_drain, n),
         f"QueueManager.run(batch_size={PEER_BATCH}, mode=drain)"),
    ]  # fmt: skip
    results = {name: Throughput("9", name, kind, note=f"{note}; N = {n:,}")  # type: ignore[arg-type]
               for kind, name, n, _, note in plan}  # fmt: skip
    for round_ in range(repeats):
        for _, name, n, measure, _ in plan:
            rate = n / measure(n)
            results[name].rates.append(rate)
            echo(f"  phase 9 run {round_ + 1} {name}: {rate:,.0f}/s")
    latencies = []
    for notify in (True, False):
        samples = _in(folder, partial(_latency, samples=latency_samples, notify=notify))
        latency = Latency(
            "taskyard postgres", "worker process", samples, WORKER_POLL,
            note="NOTIFY on" if notify else "NOTIFY off: polling only",
        )  # fmt: skip
        latencies.append(latency)
        echo(f"  phase 9 pickup, {latency.note}: p50 {latency.percentile(50) * 1e3:.1f} ms")
    return list(results.values()), latencies


def _latency(folder: Path, *, samples: int, notify: bool) -> list[float]:
    return taskyard_latency(folder, samples, notify=notify)


def _in(folder: Callable[[], Any], run_it: Callable[..., Any], *args: Any) -> Any:
    with folder() as path:
        return run_it(path, *args)
