"""A server-side ``statement_timeout`` set low under a running `taskyard worker`: its
statements are cancelled by the server, the worker carries on (backing off, never
dying), and once the timeout is sane again every task completes, none lost, none
completed twice."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.pg_support import ADMIN_DSN, postgres_dsn

from .test_postgres_processes import (
    APP,
    ROOT,
    Workers,
    counts,
    producer,
    registered,
    wait_for_counts,
)

__all__ = ["postgres_dsn"]
pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TIMEOUT_MESSAGE = "canceling statement due to statement timeout"


async def set_database_timeout(dsn: str, value: str | None) -> None:
    """The database's default ``statement_timeout`` for new connections (None: reset),
    set from the admin database (the timeout would cancel this very statement)."""
    database = urlsplit(dsn).path.lstrip("/")
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        if value is None:
            await conn.execute(f'ALTER DATABASE "{database}" RESET statement_timeout')
        else:
            await conn.execute(f"ALTER DATABASE \"{database}\" SET statement_timeout = '{value}'")
    finally:
        await conn.close()


async def terminate_taskyard_connections(dsn: str) -> int:
    """Cut every taskyard connection to the database, from the admin database."""
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND application_name LIKE 'taskyard%'",
            urlsplit(dsn).path.lstrip("/"),
        )
    finally:
        await conn.close()
    return len(rows)


async def test_a_low_statement_timeout_cancels_statements_and_the_worker_carries_on(
    postgres_dsn: str, tmp_path: Path
) -> None:
    schema, tasks = "timed_out", 3000
    pool = Workers(tmp_path, postgres_dsn, schema)
    output = tmp_path / "worker.out"
    with output.open("wb") as sink:  # a file, not a pipe: the worker's warnings never block it
        worker = subprocess.Popen(
            [sys.executable, "-m", "taskyard", "worker", "--app", APP],
            cwd=ROOT,
            env={
                **pool.env(lease_seconds="2.0", poll_interval="0.05", max_concurrency="8"),
                "TASKYARD_LOGGING__ENABLED": "true",  # its warnings show the cancelled statements
                "TASKYARD_LOGGING__LEVEL": "WARNING",
            },
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while b"taskyard worker ready" not in output.read_bytes():
            assert worker.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "the worker never got ready"
            await asyncio.sleep(0.05)
        async with await registered(producer(postgres_dsn, schema)) as manager:
            await manager.schedule_many(
                [{"task_type": "count", "payload": {"n": n}} for n in range(tasks)]
            )
        deadline = time.monotonic() + 60
        while len(pool.executions()) < tasks * 0.2:
            assert time.monotonic() < deadline, "the worker stalled"
            await asyncio.sleep(0.01)

        # the fault: every new connection to the database gets a 1 ms statement timeout,
        # and the worker's connections are cut so that it reconnects into it
        await set_database_timeout(postgres_dsn, "1ms")
        try:
            assert await terminate_taskyard_connections(postgres_dsn) >= 2  # pool, LISTEN
            deadline = time.monotonic() + 60
            while TIMEOUT_MESSAGE not in output.read_text(errors="replace"):
                assert worker.poll() is None, "the worker died of a statement timeout"
                assert time.monotonic() < deadline, "no statement was ever cancelled"
                await asyncio.sleep(0.05)
            assert worker.poll() is None
        finally:
            await set_database_timeout(postgres_dsn, None)
        await terminate_taskyard_connections(postgres_dsn)  # back to sane connections

        seen = await wait_for_counts(postgres_dsn, schema, tasks, timeout=120, workers=pool)
        assert seen == {"completed": tasks}  # nothing lost, nothing left running
        executions = pool.executions()
        assert len(executions) == tasks
        # a handler whose outcome could not be written runs again once its lease expires;
        # the completion is recorded once (the counts above)
        assert set(executions.values()) <= {1, 2}
        assert worker.poll() is None
        assert await counts(postgres_dsn, schema) == {"completed": tasks}
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(timeout=30)
