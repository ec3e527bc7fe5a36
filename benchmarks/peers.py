"""The Python peers, each through its public API, on the same disk at synchronous NORMAL:

* huey ``SqliteHuey`` (storage subclassed only to set ``synchronous = NORMAL``; its
  messages are pickled by huey itself); the consumer runs in its own process;
* persist-queue ``SQLiteAckQueue`` (``multithreading=True``, JSON serializer, its
  connections set to ``synchronous = NORMAL``): put, get, ack;
* litequeue ``LiteQueue`` (it sets WAL and NORMAL itself): put, pop, done.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import persistqueue.serializers.json
from litequeue import LiteQueue  # type: ignore[import-untyped]
from persistqueue import SQLiteAckQueue

from benchmarks.common import CALLERS, CHUNK, WORKER_POLL, children, payload, wait_until
from benchmarks.huey_app import make_huey

HUEY = "huey SqliteHuey"
PERSIST_QUEUE = "persist-queue SQLiteAckQueue"
LITEQUEUE = "litequeue LiteQueue"


def _threads(put: Callable[[int], object], tasks: int) -> float:
    """``tasks`` puts from CALLERS threads; seconds from the first put to the last."""

    def caller(first: int) -> None:
        for i in range(first, tasks, CALLERS):
            put(i)

    with ThreadPoolExecutor(CALLERS) as pool:
        start = time.perf_counter()
        for future in [pool.submit(caller, k) for k in range(CALLERS)]:
            future.result()
        return time.perf_counter() - start


# -- huey -----------------------------------------------------------------------------------


def huey_enqueue(folder: Path, tasks: int, *, concurrent: bool = False) -> float:
    app = make_huey(str(folder / "huey.db"))
    app.huey.storage.conn  # noqa: B018 - open the connection before the clock starts
    if concurrent:
        elapsed = _threads(lambda i: app.noop(payload(i)), tasks)
    else:
        start = time.perf_counter()
        for i in range(tasks):
            app.noop(payload(i))
        elapsed = time.perf_counter() - start
    if (pending := app.huey.pending_count()) != tasks:
        raise AssertionError(f"huey holds {pending} of {tasks}")
    app.huey.storage.close()
    return elapsed


def huey_put_then_drain(folder: Path, tasks: int) -> float:
    """Enqueue, then dequeue and execute in this process (what a consumer worker does)."""
    app = make_huey(str(folder / "huey.db"))
    huey = app.huey
    huey.storage.conn  # noqa: B018
    start = time.perf_counter()
    for i in range(tasks):
        app.noop(payload(i))
    done = 0
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
        done += 1
    elapsed = time.perf_counter() - start
    if done != tasks:
        raise AssertionError(f"huey executed {done} of {tasks}")
    huey.storage.close()
    return elapsed


def huey_consumer(folder: Path, tasks: int, workers: int) -> float:
    """Enqueue, then start a consumer with ``workers`` worker processes; time until the
    queue is empty (polled every 10 ms). huey deletes a task when it dequeues it and
    records nothing for a None result, so "empty" is the closest to "all done" huey
    offers; it flatters huey by at most one no-op execution."""
    db = str(folder / "huey.db")
    app = make_huey(db)
    for i in range(tasks):
        app.noop(payload(i))
    argument_sets = [["--db", db, "--workers", str(workers), "--delay", str(WORKER_POLL)]]
    with children("benchmarks.huey_consumer", argument_sets, folder) as consumers:
        start = time.perf_counter()
        consumers[0].go()
        wait_until(lambda: app.huey.pending_count() == 0, timeout=600, interval=0.01)
        elapsed = time.perf_counter() - start
    app.huey.storage.close()
    return elapsed


def huey_latency(folder: Path, samples: int) -> list[float]:
    """A consumer process polling every WORKER_POLL s; the task returns time.time()."""
    db = str(folder / "huey.db")
    app = make_huey(db)
    argument_sets = [["--db", db, "--workers", "1", "--delay", str(WORKER_POLL)]]
    latencies: list[float] = []
    with children("benchmarks.huey_consumer", argument_sets, folder) as consumers:
        consumers[0].go()
        time.sleep(0.5)  # the consumer forks its worker
        for k in range(samples):
            time.sleep(random.random() * WORKER_POLL)
            before = time.time()
            result = app.stamp(payload(k))
            started = result.get(blocking=True, timeout=30, backoff=1.0, max_delay=0.002)
            latencies.append(float(started) - before)
    app.huey.storage.close()
    return latencies


# -- persist-queue --------------------------------------------------------------------------


def _persist_queue(folder: Path) -> SQLiteAckQueue:
    queue = SQLiteAckQueue(
        str(folder / "pq"),
        multithreading=True,
        auto_resume=False,
        serializer=persistqueue.serializers.json,
    )
    connections: list[sqlite3.Connection] = [queue._putter, queue._getter]  # type: ignore[list-item]
    for conn in {id(c): c for c in connections}.values():
        conn.execute("PRAGMA synchronous = NORMAL")
    return queue


def persist_queue_enqueue(folder: Path, tasks: int, *, concurrent: bool = False) -> float:
    queue = _persist_queue(folder)
    try:
        if concurrent:
            elapsed = _threads(lambda i: queue.put(payload(i)), tasks)
        else:
            start = time.perf_counter()
            for i in range(tasks):
                queue.put(payload(i))
            elapsed = time.perf_counter() - start
        if (size := queue._count()) != tasks:
            raise AssertionError(f"persist-queue holds {size} of {tasks}")
        return elapsed
    finally:
        queue.close()


def persist_queue_put_then_drain(folder: Path, tasks: int) -> float:
    queue = _persist_queue(folder)
    try:
        start = time.perf_counter()
        for i in range(tasks):
            queue.put(payload(i))
        done = 0
        while queue.qsize():
            item = queue.get(block=False, raw=True)
            queue.ack(id=item["pqid"])
            done += 1
        elapsed = time.perf_counter() - start
        if done != tasks or queue.acked_count() != tasks:
            raise AssertionError(f"persist-queue acked {queue.acked_count()} of {tasks}")
        return elapsed
    finally:
        queue.close()


# -- litequeue ------------------------------------------------------------------------------


def _litequeue(folder: Path) -> LiteQueue:
    return LiteQueue(str(folder / "litequeue.db"))


def litequeue_enqueue(folder: Path, tasks: int, *, concurrent: bool = False) -> float:
    queue = _litequeue(folder)
    try:
        if concurrent:
            elapsed = _threads(lambda i: queue.put(json.dumps(payload(i))), tasks)
        else:
            start = time.perf_counter()
            for i in range(tasks):
                queue.put(json.dumps(payload(i)))
            elapsed = time.perf_counter() - start
        if (size := queue.qsize()) != tasks:
            raise AssertionError(f"litequeue holds {size} of {tasks}")
        return elapsed
    finally:
        queue.close()


def litequeue_bulk(folder: Path, tasks: int) -> float:
    """put() inside the queue's own ``transaction()``, one per chunk."""
    queue = _litequeue(folder)
    try:
        start = time.perf_counter()
        for first in range(0, tasks, CHUNK):
            with queue.transaction():
                for i in range(first, min(first + CHUNK, tasks)):
                    queue.put(json.dumps(payload(i)))
        elapsed = time.perf_counter() - start
        if (size := queue.qsize()) != tasks:
            raise AssertionError(f"litequeue holds {size} of {tasks}")
        return elapsed
    finally:
        queue.close()


def litequeue_put_then_drain(folder: Path, tasks: int) -> float:
    queue = _litequeue(folder)
    try:
        start = time.perf_counter()
        for i in range(tasks):
            queue.put(json.dumps(payload(i)))
        done = 0
        while (message := queue.pop()) is not None:
            json.loads(message.data)
            queue.done(message.message_id)
            done += 1
        elapsed = time.perf_counter() - start
        if done != tasks:
            raise AssertionError(f"litequeue completed {done} of {tasks}")
        return elapsed
    finally:
        queue.close()


def versions() -> dict[str, str]:
    return {name: version(name) for name in ("huey", "persist-queue", "litequeue")} | {
        "sqlite": sqlite3.sqlite_version
    }
