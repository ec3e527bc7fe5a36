"""A peer's worker process for phase 9, run by the benchmark itself:

    python -m benchmarks.pg_peers procrastinate|pgqueuer DSN

It prepares the peer's worker, prints ``loaded``, waits for a ``go`` line on stdin,
then works until the queue is empty (procrastinate ``wait=False``, pgqueuer's drain
mode), set up for throughput as each one's documentation recommends: procrastinate
with an async task and ``concurrency``; pgqueuer with batches of PEER_BATCH.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from benchmarks.common import DRAIN_CONCURRENCY
from benchmarks.postgres import PEER_BATCH, procrastinate_app


async def procrastinate_worker(dsn: str) -> None:
    app = procrastinate_app(dsn)
    async with app.open_async():
        print("loaded", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await app.run_worker_async(concurrency=min(DRAIN_CONCURRENCY, 20), wait=False)


async def pgqueuer_worker(dsn: str) -> None:
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(dsn)
    manager = QueueManager(Queries(AsyncpgDriver(conn)))

    @manager.entrypoint("noop")
    async def noop(job: object) -> None:
        return None

    print("loaded", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    try:
        await manager.run(batch_size=PEER_BATCH, mode=QueueExecutionMode.drain)
    finally:
        await conn.close()


def main() -> None:
    system, dsn = sys.argv[1], sys.argv[2]
    worker = {"procrastinate": procrastinate_worker, "pgqueuer": pgqueuer_worker}[system]
    asyncio.run(worker(dsn))


if __name__ == "__main__":
    main()
