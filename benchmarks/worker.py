"""A taskyard worker process for the benchmarks, run by the benchmark itself:

    python -m benchmarks.worker --db QUEUE.db [--concurrency 100] [--poll-interval 0.05]
    python -m benchmarks.worker --dsn postgresql://... [--no-notify] ...

It builds a QueuedTaskManager (or, with --dsn, a PostgresTaskManager), prints
``loaded``, waits for a ``go`` line on stdin, then runs :func:`taskyard.worker.serve` until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework import EngineConfig, TaskManager
from taskyard.worker import serve


async def noop(payload: dict[str, Any]) -> None:
    """The no-op handler of the throughput phases."""


async def stamp(payload: dict[str, Any]) -> float:
    """Phase 6: the wall-clock time the handler started, as the task's result."""
    return time.time()


async def register(manager: TaskManager) -> None:
    await manager.register_task("noop", noop)
    await manager.register_task("stamp", stamp)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db")
    parser.add_argument("--dsn", help="PostgreSQL: run on this database instead of a file")
    parser.add_argument("--no-notify", action="store_true", help="PostgreSQL: poll only")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    args = parser.parse_args(argv)
    config = EngineConfig(concurrency=args.concurrency, poll_interval=args.poll_interval)
    manager: TaskManager
    if args.dsn:
        from taskyard.backends.postgres import PostgresTaskManager

        manager = PostgresTaskManager(config, dsn=args.dsn, notify=not args.no_notify)
    else:
        manager = QueuedTaskManager(config, db_path=args.db, synchronous="NORMAL")
    print("loaded", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    asyncio.run(serve(manager, register, shutdown_timeout=5.0))


if __name__ == "__main__":
    main()
