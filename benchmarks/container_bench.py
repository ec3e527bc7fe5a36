"""Phases 10 and 11: taskyard the way a new user runs it.

``Container().task_manager()`` with the shipped settings of the default environment
(``development``: concurrency 10, a 300 s timeout per attempt, poll 0.5 s), only the
backend and the queue file chosen here; the worker runs in the same process as the code
that schedules, and tasks are scheduled one ``await schedule_task(...)`` at a time, as a
web request would.

Phase 10 rows (each for ``sqlite`` and ``in-memory``, at the default concurrency and at
100): schedule one at a time with tasks delayed an hour (nothing runs; the worker must
not make the producer pay for it) next to a producer-only manager; schedule one at a
time, then all done; 64 concurrent producers, then all done; ``schedule_many`` in chunks
of 1000, then all done. A bare ``asyncio.create_task`` of the same no-op coroutines is
the reference for the engine's own cost.

Phase 11: no cost grows with work done. One manager (default settings, worker running,
tasks delayed so nothing runs) enqueues one at a time on an empty queue, then schedules
``depth`` more (``schedule_many``, chunks of 10,000), then enqueues one at a time again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import CALLERS, CHUNK, payload
from benchmarks.worker import noop, register
from taskyard.framework import TaskEngine
from taskyard.providers import Container
from taskyard.settings import load_settings

ENVIRONMENT = "development"
"""What ``Container()`` loads when TASKYARD_ENV is not set."""
DELAY = 3600.0
"""Seconds a "delayed" task waits: it never runs during the benchmark."""
GROWTH_SAMPLE = 5000
"""Phase 11: calls timed one at a time on the empty and on the deep queue."""
GROWTH_CHUNK = 10_000

BARE_CREATE_TASK = "asyncio.create_task, no queue"
DELAYED = "one at a time, tasks delayed (nothing runs)"
DELAYED_PRODUCER = "one at a time, tasks delayed, producer-only"
ONE_DONE = "one at a time, then all done"
PRODUCERS_DONE = f"{CALLERS} producers, then all done"
CHUNKS_DONE = f"schedule_many chunks of {CHUNK}, then all done"
SCENARIOS = (DELAYED, DELAYED_PRODUCER, ONE_DONE, PRODUCERS_DONE, CHUNKS_DONE)


def row_label(backend: str, concurrency: int | None) -> str:
    """The system name of a phase 10 row: ``container sqlite`` (shipped concurrency) or
    ``container sqlite, concurrency 100``."""
    return f"container {backend}" + ("" if concurrency is None else f", concurrency {concurrency}")


def container(
    backend: str, folder: Path, *, concurrency: int | None = None, run_worker: bool = True
) -> Container:
    """A Container over the shipped settings, with only the backend, the queue file (and
    what the row varies) set."""
    overrides: dict[str, Any] = {
        "task_execution.backend": backend,
        "task_execution.queue_db_path": str(folder / "queue.db"),
    }
    if concurrency is not None:
        overrides["task_execution.max_concurrency"] = concurrency
    if not run_worker:
        overrides["task_execution.run_worker"] = False
    settings = load_settings(environment=ENVIRONMENT, settings_files=[], overrides=overrides)
    return Container(settings=settings)


async def _started(
    backend: str, folder: Path, *, concurrency: int | None = None, run_worker: bool = True
) -> TaskEngine:
    manager = container(backend, folder, concurrency=concurrency, run_worker=run_worker)
    task_manager = manager.task_manager()
    assert isinstance(task_manager, TaskEngine)
    await register(task_manager)
    await task_manager.start()
    return task_manager


@dataclass
class Timed:
    """Seconds of the measured part, and the process CPU seconds it used."""

    seconds: float
    cpu: float


async def _timed(work: Callable[[], Awaitable[None]]) -> Timed:
    cpu, start = time.process_time(), time.perf_counter()
    await work()
    return Timed(time.perf_counter() - start, time.process_time() - cpu)


async def _timed_then_stop(
    manager: TaskEngine, work: Callable[[], Awaitable[None]], status: str, tasks: int
) -> Timed:
    """Time ``work``, check that the store holds ``tasks`` tasks in ``status``, and stop
    the manager whatever happened."""
    try:
        timed = await _timed(work)
        await _check(manager, status, tasks)
        return timed
    finally:
        await manager.stop()


async def _check(manager: TaskEngine, status: str, tasks: int) -> None:
    counts = await manager.count_by_status()
    if counts[status] != tasks:
        raise AssertionError(f"expected {tasks} {status} tasks, the store says {counts}")


# -- phase 10 -------------------------------------------------------------------------------


async def one_at_a_time_delayed(
    backend: str,
    folder: Path,
    tasks: int,
    *,
    concurrency: int | None = None,
    run_worker: bool = True,
) -> Timed:
    """``await schedule_task(..., delay=1 h)`` in a loop: nothing becomes due."""
    manager = await _started(backend, folder, concurrency=concurrency, run_worker=run_worker)

    async def work() -> None:
        for i in range(tasks):
            await manager.schedule_task("noop", payload(i), delay=DELAY)

    return await _timed_then_stop(manager, work, "queued", tasks)


async def one_at_a_time_done(
    backend: str, folder: Path, tasks: int, *, concurrency: int | None = None
) -> Timed:
    """``await schedule_task`` in a loop, then ``wait_all()``: first call to last
    completion."""
    manager = await _started(backend, folder, concurrency=concurrency)

    async def work() -> None:
        for i in range(tasks):
            await manager.schedule_task("noop", payload(i))
        await manager.wait_all()

    return await _timed_then_stop(manager, work, "completed", tasks)


async def producers_done(
    backend: str, folder: Path, tasks: int, *, concurrency: int | None = None
) -> Timed:
    """64 coroutines awaiting ``schedule_task`` in a loop, then ``wait_all()``."""
    manager = await _started(backend, folder, concurrency=concurrency)

    async def caller(first: int) -> None:
        for i in range(first, tasks, CALLERS):
            await manager.schedule_task("noop", payload(i))

    async def work() -> None:
        await asyncio.gather(*(caller(k) for k in range(CALLERS)))
        await manager.wait_all()

    return await _timed_then_stop(manager, work, "completed", tasks)


async def chunks_done(
    backend: str, folder: Path, tasks: int, *, concurrency: int | None = None
) -> Timed:
    """``schedule_many`` in chunks of 1000, then ``wait_all()``."""
    manager = await _started(backend, folder, concurrency=concurrency)

    async def work() -> None:
        for first in range(0, tasks, CHUNK):
            last = min(first + CHUNK, tasks)
            await manager.schedule_many(
                [{"task_type": "noop", "payload": payload(i)} for i in range(first, last)]
            )
        await manager.wait_all()

    return await _timed_then_stop(manager, work, "completed", tasks)


async def bare_create_task(folder: Path, tasks: int) -> Timed:
    """The reference: ``asyncio.create_task`` of the same no-op coroutine per task (no
    queue, no store, no bookkeeping), then all awaited."""

    async def work() -> None:
        running = [asyncio.create_task(noop(payload(i))) for i in range(tasks)]
        await asyncio.gather(*running)

    return await _timed(work)


def bare_sleepers(folder: Path, tasks: int, slots: int, sleep: float) -> float:
    """Phase 7's reference: ``slots`` coroutines that each await ``asyncio.sleep(sleep)``
    until ``tasks`` sleeps are done, with no queue at all. Below the ideal
    ``slots / sleep`` because the event loop's timers fire up to a millisecond late
    (epoll's resolution)."""

    async def run() -> float:
        done = 0

        async def slot() -> None:
            nonlocal done
            while done < tasks:
                done += 1
                await asyncio.sleep(sleep)

        start = time.perf_counter()
        await asyncio.gather(*(slot() for _ in range(slots)))
        return time.perf_counter() - start

    return asyncio.run(run())


# -- phase 11 -------------------------------------------------------------------------------


@dataclass
class Growth:
    """Phase 11's figures for one backend."""

    backend: str
    depth: int
    empty_rate: float
    deep_rate: float
    first_chunk_rate: float
    last_chunk_rate: float
    fill_seconds: float

    @property
    def ratio(self) -> float:
        return self.deep_rate / self.empty_rate


async def growth(
    backend: str, folder: Path, depth: int, echo: Callable[[str], None], sample: int = GROWTH_SAMPLE
) -> Growth:
    """Enqueue rate (one at a time, delayed tasks, worker running) on an empty queue and
    again after ``depth`` more tasks were scheduled by this same manager."""
    manager = await _started(backend, folder)

    async def one_at_a_time(first: int) -> float:
        start = time.perf_counter()
        for i in range(first, first + sample):
            await manager.schedule_task("noop", payload(i), delay=DELAY)
        return sample / (time.perf_counter() - start)

    try:
        empty = await one_at_a_time(0)
        chunk_rates: list[float] = []
        fill_start = time.perf_counter()
        done = 0
        while done < depth:
            size = min(GROWTH_CHUNK, depth - done)
            requests = [
                {"task_type": "noop", "payload": payload(i), "delay": DELAY}
                for i in range(done, done + size)
            ]
            start = time.perf_counter()
            await manager.schedule_many(requests)
            chunk_rates.append(size / (time.perf_counter() - start))
            done += size
            if done % (depth // 4 or depth) == 0:
                echo(f"  phase 11 {backend}: {done:,} scheduled")
        fill_seconds = time.perf_counter() - fill_start
        deep = await one_at_a_time(sample + depth)
        await _check(manager, "queued", depth + 2 * sample)
    finally:
        await manager.stop()
    tenth = max(1, len(chunk_rates) // 10)
    return Growth(
        backend,
        depth,
        empty,
        deep,
        sum(chunk_rates[:tenth]) / tenth,
        sum(chunk_rates[-tenth:]) / tenth,
        fill_seconds,
    )
