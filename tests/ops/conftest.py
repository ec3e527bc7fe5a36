"""Fixtures of the operations tests: real queue files in tmp_path, built through the
SQLite store, and the CLI's own test runner pointed at them."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from taskyard.backends.sqlite.store import SqliteStore, op_record_worker
from taskyard.cli import app
from taskyard.framework.models import TaskRecord, TaskStatus, new_task_id
from taskyard.settings import configure_logging, load_settings
from taskyard.testing import poll_until
from tests.windows_sim import python_path

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.ops.worker_app:HANDLERS"
HOUR = 3600.0
DAY = 86400.0


def ago(seconds: float, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(seconds=seconds)


def task(
    status: TaskStatus | str = TaskStatus.QUEUED,
    *,
    task_type: str = "work",
    finished_ago: float | None = None,
    duration: float = 1.0,
    attempts: int | None = None,
    max_attempts: int = 3,
    created_ago: float = 0.0,
    due_ago: float = 0.0,
    error: str | None = None,
    payload: Any = None,
) -> TaskRecord:
    """A task as a store would hold it after its life so far; times relative to now."""
    status = TaskStatus(status)
    now = datetime.now(UTC)
    finished = None if finished_ago is None else ago(finished_ago, now)
    if status.is_terminal and finished is None:
        finished = ago(60, now)
    started = None
    if finished is not None and status is not TaskStatus.CANCELLED:
        started = finished - timedelta(seconds=duration)
    if attempts is None:
        attempts = 0 if status in (TaskStatus.QUEUED, TaskStatus.CANCELLED) else 1
    created = ago(created_ago, now)
    if finished is not None:
        created = min(created, finished - timedelta(seconds=duration + 1))
    return TaskRecord(
        id=new_task_id(),
        type=task_type,
        payload={"n": 1} if payload is None else payload,
        status=status,
        attempts=attempts,
        max_attempts=max_attempts,
        error=error,
        result=1 if status is TaskStatus.COMPLETED else None,
        created_at=created,
        updated_at=finished or created,
        run_after=ago(due_ago, now) if status is TaskStatus.QUEUED else created,
        started_at=started,
        finished_at=finished,
    )


@dataclass
class Queue:
    """A queue file under test, built through the SQLite store."""

    path: Path
    ids: list[str] = field(default_factory=list)

    def add(self, records: Sequence[TaskRecord]) -> list[TaskRecord]:
        async def run() -> None:
            async with self.store() as store:
                stored = await store.import_records(records)
                assert all(stored)

        asyncio.run(run())
        self.ids += [record.id for record in records]
        return list(records)

    def claim(self, count: int, *, lease_expired_ago: float | None = None) -> list[TaskRecord]:
        """Claim like a worker would; with ``lease_expired_ago``, a worker that claimed,
        then died, so its lease ran out that long ago."""
        now = datetime.now(UTC)
        lease = 30.0
        at = (
            now if lease_expired_ago is None else now - timedelta(seconds=lease_expired_ago + lease)
        )

        async def run() -> list[TaskRecord]:
            async with self.store() as store:
                return await store.claim(limit=count, now=at, worker_id="w:1", lease_seconds=lease)

        return asyncio.run(run())

    def heartbeat(self, worker_id: str, *, silent_for: float = 0.0, **info: Any) -> None:
        """A worker's heartbeat, recorded ``silent_for`` seconds ago."""

        async def run() -> None:
            async with self.store() as store:
                info.setdefault("concurrency", 4)
                info.setdefault("running", 0)
                await store.execute_write(
                    op_record_worker(worker_id, info, time.time() - silent_for)
                )

        asyncio.run(run())

    def store(self) -> _OpenStore:
        return _OpenStore(self.path)

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def statuses(self) -> dict[str, str]:
        return dict(self.query("SELECT id, status FROM taskyard_tasks"))  # type: ignore[arg-type]


class _OpenStore:
    def __init__(self, path: Path) -> None:
        self.store = SqliteStore(path)

    async def __aenter__(self) -> SqliteStore:
        await self.store.open()
        return self.store

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    """An empty queue file."""
    made = Queue(tmp_path / "queue.db")
    made.add([])
    return made


class Cli:
    """``taskyard`` through typer's CliRunner, with the sqlite backend on a file."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.runner = CliRunner()
        self.env: dict[str, str] = {
            "TASKYARD_TASK_EXECUTION__BACKEND": "sqlite",
            "TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH": str(db),
        }

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self.runner.invoke(app, list(args), env={**self.env, **(env or {})})

    def ok(self, *args: str, env: dict[str, str] | None = None) -> Result:
        result = self(*args, env=env)
        assert result.exit_code == 0, (result.exit_code, result.output)
        return result


@pytest.fixture
def cli(queue: Queue) -> Iterator[Cli]:
    yield Cli(queue.path)
    configure_logging(load_settings())  # the CLI may have added sinks: back to testing's


class Worker:
    """A real ``taskyard worker`` process on a queue file."""

    def __init__(self, db: Path, *args: str, **settings: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_")}
        env.update(
            TASKYARD_ENV="testing",
            TASKYARD_TASK_EXECUTION__BACKEND="sqlite",
            TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH=str(db),
            PYTHONPATH=python_path(),
        )
        env.update({f"TASKYARD_TASK_EXECUTION__{k.upper()}": v for k, v in settings.items()})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "taskyard", "worker", "--app", APP, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        assert self.process.stdout is not None
        while True:  # blocks until the worker is up (or died)
            line = self.process.stdout.readline().decode()
            self.lines.append(line)
            if "taskyard worker ready" in line:
                break
            assert line, "".join(self.lines) + self.process.stdout.read().decode()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        code = self.process.wait(timeout=60)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.stop()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


wait_until = poll_until  # the subprocess tests poll without an event loop
