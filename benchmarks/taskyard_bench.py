"""taskyard's side of every phase: ``in-memory`` (InMemoryTaskManager) and ``sqlite``
(QueuedTaskManager, synchronous NORMAL, a fresh file per run).

Every function returns the seconds the measured part took; managers are started before
the clock starts (opening the file and the schema check are not the workload) and
stopped after it stops.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from benchmarks.common import (
    CALLERS,
    CHUNK,
    DRAIN_CONCURRENCY,
    REALISTIC_CONCURRENCY,
    REALISTIC_SLEEP,
    WORKER_POLL,
    Memory,
    children,
    payload,
    proc_status,
    wait_until,
)
from benchmarks.worker import register
from taskyard.backends.memory import InMemoryTaskManager
from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework import EngineConfig, TaskEngine

Backend = Literal["in-memory", "sqlite"]
BACKENDS: tuple[Backend, ...] = ("in-memory", "sqlite")


def make_manager(backend: Backend, folder: Path, config: EngineConfig) -> TaskEngine:
    if backend == "in-memory":
        return InMemoryTaskManager(config)
    return QueuedTaskManager(config, db_path=folder / "queue.db", synchronous="NORMAL")


async def _started(backend: Backend, folder: Path, config: EngineConfig) -> TaskEngine:
    manager = make_manager(backend, folder, config)
    await register(manager)
    await manager.start()
    return manager


def _requests(first: int, last: int, task_type: str = "noop") -> list[dict[str, Any]]:
    return [{"task_type": task_type, "payload": payload(i)} for i in range(first, last)]


async def _schedule_in_chunks(
    manager: TaskEngine, tasks: int, chunk: int = CHUNK, task_type: str = "noop"
) -> None:
    for first in range(0, tasks, chunk):
        await manager.schedule_many(_requests(first, min(first + chunk, tasks), task_type))


async def _expect(manager: TaskEngine, status: str, tasks: int) -> None:
    counts = await manager.count_by_status()
    if counts[status] != tasks:
        raise AssertionError(f"expected {tasks} {status} tasks, the store says {counts}")


# -- phases 1-3: durable enqueue ------------------------------------------------------------


async def enqueue_sequential(backend: Backend, folder: Path, tasks: int) -> float:
    manager = await _started(backend, folder, EngineConfig(run_worker=False))
    try:
        start = time.perf_counter()
        for i in range(tasks):
            await manager.schedule_task("noop", payload(i))
        elapsed = time.perf_counter() - start
        await _expect(manager, "queued", tasks)
        return elapsed
    finally:
        await manager.stop()


async def enqueue_concurrent(backend: Backend, folder: Path, tasks: int) -> float:
    manager = await _started(backend, folder, EngineConfig(run_worker=False))

    async def caller(first: int) -> None:
        for i in range(first, tasks, CALLERS):
            await manager.schedule_task("noop", payload(i))

    try:
        start = time.perf_counter()
        await asyncio.gather(*(caller(k) for k in range(CALLERS)))
        elapsed = time.perf_counter() - start
        await _expect(manager, "queued", tasks)
        return elapsed
    finally:
        await manager.stop()


async def enqueue_bulk(backend: Backend, folder: Path, tasks: int) -> float:
    manager = await _started(backend, folder, EngineConfig(run_worker=False))
    try:
        start = time.perf_counter()
        await _schedule_in_chunks(manager, tasks)
        elapsed = time.perf_counter() - start
        await _expect(manager, "queued", tasks)
        return elapsed
    finally:
        await manager.stop()


# -- phases 4 and 7: put then drain in one process ------------------------------------------


async def _slow(payload: dict[str, Any]) -> None:
    await asyncio.sleep(REALISTIC_SLEEP)


async def put_then_drain(
    backend: Backend, folder: Path, tasks: int, *, realistic: bool = False, prefetch: int = 0
) -> float:
    """schedule_many in chunks, then wait_all while the same process's worker drains."""
    concurrency = REALISTIC_CONCURRENCY if realistic else DRAIN_CONCURRENCY
    config = EngineConfig(concurrency=concurrency, prefetch=prefetch)
    manager = await _started(backend, folder, config)
    task_type = "noop"
    if realistic:
        task_type = "slow"
        await manager.register_task(task_type, _slow)
    try:
        start = time.perf_counter()
        await _schedule_in_chunks(manager, tasks, task_type=task_type)
        await manager.wait_all()
        elapsed = time.perf_counter() - start
        await _expect(manager, "completed", tasks)
        return elapsed
    finally:
        await manager.stop()


# -- phase 5: worker processes --------------------------------------------------------------


async def _fill(db: Path, tasks: int, chunk: int = CHUNK) -> None:
    manager = QueuedTaskManager(EngineConfig(run_worker=False), db_path=db, synchronous="NORMAL")
    await register(manager)
    async with manager:
        await _schedule_in_chunks(manager, tasks, chunk)


def _active(conn: sqlite3.Connection) -> int:
    """Queued plus running, each counted on its own partial index (a cheap read)."""
    row = conn.execute(
        "SELECT (SELECT COUNT(*) FROM taskyard_tasks WHERE status = 'queued')"
        " + (SELECT COUNT(*) FROM taskyard_tasks WHERE status = 'running')"
    ).fetchone()
    return int(row[0])


def _completed(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COUNT(*) FROM taskyard_tasks WHERE status = 'completed'")
    return int(row.fetchone()[0])


WORKER_CPU: list[float] = []
"""Phase 5: the CPU seconds the worker processes of each run used, together (read by the
runner, which reports them as cores busy: why two processes on two cores are no faster)."""


def worker_processes(folder: Path, tasks: int, processes: int) -> float:
    """Fill the file, then start ``processes`` workers; time until the store says every
    task is completed (polled every 10 ms). Their CPU time goes to WORKER_CPU."""
    db = folder / "queue.db"
    asyncio.run(_fill(db, tasks))
    args = ["--db", str(db), "--concurrency", str(DRAIN_CONCURRENCY)]
    argument_sets = [[*args, "--poll-interval", str(WORKER_POLL)]] * processes
    conn = sqlite3.connect(db)
    try:
        with children("benchmarks.worker", argument_sets, folder) as workers:
            cpu = sum(worker.cpu_seconds() for worker in workers)
            start = time.perf_counter()
            for worker in workers:
                worker.go()
            wait_until(lambda: _active(conn) == 0, timeout=600, interval=0.01)
            elapsed = time.perf_counter() - start
            WORKER_CPU.append(sum(worker.cpu_seconds() for worker in workers) - cpu)
        if (done := _completed(conn)) != tasks:
            raise AssertionError(f"{processes} worker(s) completed {done} of {tasks}")
        return elapsed
    finally:
        conn.close()


# -- phase 6: pickup latency ----------------------------------------------------------------


async def latency_in_process(backend: Backend, folder: Path, samples: int) -> list[float]:
    """An idle worker in this process; latency = handler start - just before schedule_task
    (both time.perf_counter)."""
    started: dict[int, float] = {}
    ran = asyncio.Event()

    async def mark(payload: dict[str, Any]) -> None:
        started[payload["k"]] = time.perf_counter()
        ran.set()

    manager = await _started(backend, folder, EngineConfig(concurrency=10))
    await manager.register_task("mark", mark)
    latencies: list[float] = []
    try:
        for k in range(samples):
            await asyncio.sleep(0.002 + random.random() * 0.002)  # the worker is idle again
            ran.clear()
            before = time.perf_counter()
            await manager.schedule_task("mark", {"k": k})
            await asyncio.wait_for(ran.wait(), 10)
            latencies.append(started[k] - before)
        return latencies
    finally:
        await manager.stop()


def latency_across_processes(folder: Path, samples: int) -> list[float]:
    """A worker process (poll interval WORKER_POLL); latency = the handler's time.time()
    (its result) - time.time() just before schedule_task in this process."""
    db = folder / "queue.db"
    asyncio.run(_fill(db, 0))
    argument_sets = [["--db", str(db), "--concurrency", "10", "--poll-interval", str(WORKER_POLL)]]
    with children("benchmarks.worker", argument_sets, folder) as workers:
        workers[0].go()
        workers[0].wait_for_line("taskyard worker ready")
        return asyncio.run(_produce_stamps(db, samples))


async def _produce_stamps(db: Path, samples: int) -> list[float]:
    config = EngineConfig(run_worker=False, poll_interval=0.005)
    manager = QueuedTaskManager(config, db_path=db, synchronous="NORMAL")
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


# -- phase 8: worker memory by queue depth --------------------------------------------------


def worker_memory(folder: Path, depth: int, processed: int, echo: Callable[[str], None]) -> Memory:
    """Fill ``depth`` queued tasks, run one worker process (concurrency 10, no-op handler)
    until it has completed ``processed`` tasks, then read its VmRSS and VmHWM. A queue
    shallower than ``processed`` is topped up as it drains, so its depth stays near
    ``depth``."""
    db = folder / "queue.db"
    start = time.perf_counter()
    asyncio.run(_fill(db, depth, chunk=10_000))
    fill_seconds = time.perf_counter() - start
    echo(f"  phase 8: filled {depth:,} tasks in {fill_seconds:.1f} s")
    argument_sets = [["--db", str(db), "--concurrency", "10", "--poll-interval", "0.05"]]
    with children("benchmarks.worker", argument_sets, folder) as workers:
        worker = workers[0]
        start = time.perf_counter()
        worker.go()
        asyncio.run(_watch(db, depth, processed))
        run_seconds = time.perf_counter() - start
        status = proc_status(worker.pid)
    conn = sqlite3.connect(db)
    try:
        done = _completed(conn)
    finally:
        conn.close()
    return Memory(depth, done, status["VmRSS"], status["VmHWM"], fill_seconds, run_seconds)


async def _watch(db: Path, depth: int, processed: int) -> None:
    """Wait until about ``processed`` tasks are done, topping the queue up to ``depth``.

    Tasks are claimed in scheduling order (one priority), so "done" is read cheaply as
    the first queued seq minus one, on the claim index, instead of counting rows."""
    manager = QueuedTaskManager(EngineConfig(run_worker=False), db_path=db, synchronous="NORMAL")
    await register(manager)
    conn = sqlite3.connect(db)
    total = depth
    try:
        async with manager:
            while True:
                row = conn.execute(
                    "SELECT seq FROM taskyard_tasks WHERE status = 'queued'"
                    " ORDER BY priority, seq LIMIT 1"
                ).fetchone()
                done = (row[0] - 1) if row else total
                if done >= processed:
                    return
                if total - done < depth * 0.9:
                    missing = depth - (total - done)
                    await manager.schedule_many(_requests(total, total + missing))
                    total += missing
                await asyncio.sleep(0.02)
    finally:
        conn.close()
