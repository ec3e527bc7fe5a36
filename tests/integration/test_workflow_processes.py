"""Workflows across real processes on one SQLite file and on one PostgreSQL schema:
fan-in exactly once, a concurrency limit that holds across workers, a chain that
survives a SIGKILL, and the fan-in race with the last two members of every group
finished at once by two processes."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskyard.backends.sqlite import QueuedTaskManager, SqliteStore
from taskyard.framework import EngineConfig
from taskyard.framework.engine import TaskEngine
from taskyard.framework.models import TaskRecord, TaskStatus, new_task_id, utcnow
from taskyard.framework.store import TaskStore
from taskyard.framework.workflows import chain, chord, schedule_workflow, step
from taskyard.testing import wait_until
from tests.pg_support import postgres_dsn, require_postgres, schema_for
from tests.windows_sim import python_path

from .workflow_app import HANDLERS

__all__ = ["postgres_dsn"]
pytestmark = pytest.mark.slow
BACKENDS = ["sqlite", "postgres"]

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.workflow_app:HANDLERS"


class Workers:
    """`taskyard worker` processes on one database, reaped at the end."""

    def __init__(self, tmp_path: Path, backend: str, dsn: str = "", schema: str = "") -> None:
        self.backend, self.dsn, self.schema = backend, dsn, schema
        self.db = tmp_path / "queue.db"
        self.log = tmp_path / "executions.log"
        self.processes: list[subprocess.Popen[bytes]] = []

    def env(self, limits: dict[str, int] | None = None, **settings: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_")}
        env.update(
            TASKYARD_ENV="testing",
            TASKYARD_TASK_EXECUTION__BACKEND=self.backend,
            TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH=str(self.db),
            TASKYARD_TASK_EXECUTION__POSTGRES_DSN=self.dsn,
            TASKYARD_TASK_EXECUTION__POSTGRES_SCHEMA=self.schema or "taskyard",
            TASKYARD_TEST_EXEC_LOG=str(self.log),
            PYTHONPATH=python_path(),
        )
        if limits is not None:
            env["TASKYARD_CONCURRENCY_LIMITS"] = "@json " + json.dumps(limits)
        env.update({f"TASKYARD_TASK_EXECUTION__{k.upper()}": v for k, v in settings.items()})
        return env

    def start(
        self, limits: dict[str, int] | None = None, **settings: str
    ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "taskyard", "worker", "--app", APP],
            cwd=ROOT,
            env=self.env(limits, **settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until the worker is up (or died)
        assert b"taskyard worker ready" in line, line + process.stdout.read()
        return process

    def producer(self) -> TaskEngine:
        """A manager that only schedules and reads (a web process), with the handlers."""
        config = EngineConfig(run_worker=False, poll_interval=0.05)
        if self.backend == "postgres":
            from taskyard.backends.postgres import PostgresTaskManager

            return PostgresTaskManager(config, dsn=self.dsn, schema=self.schema, pool_size=2)
        return QueuedTaskManager(config, db_path=self.db)

    def store(self) -> TaskStore:
        if self.backend == "postgres":
            from taskyard.backends.postgres import PostgresStore

            return PostgresStore(self.dsn, schema_name=self.schema, pool_size=2)
        return SqliteStore(self.db)

    def lines(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split() for line in self.log.read_text().splitlines()]

    def runs(self) -> collections.Counter[str]:
        return collections.Counter(words[1] for words in self.lines() if words[0] == "run")

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture(params=BACKENDS)
def workers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workers]:
    if request.param == "postgres":
        require_postgres()
        dsn = request.getfixturevalue("postgres_dsn")
        pool = Workers(tmp_path, "postgres", dsn, schema_for(request.node.nodeid))
    else:
        pool = Workers(tmp_path, "sqlite")
    try:
        yield pool
    finally:
        pool.close()


async def registered(manager: TaskEngine) -> TaskEngine:
    for task_type, handler in HANDLERS.items():
        await manager.register_task(task_type, handler)
    return manager


async def test_every_chord_callback_runs_exactly_once_under_three_workers(
    workers: Workers,
) -> None:
    for _ in range(3):
        workers.start(poll_interval="0.02", max_concurrency="2")
    async with await registered(workers.producer()) as manager:
        callbacks = []
        for g in range(40):
            members = [("member", {"name": f"m{g}.{i}", "n": i}) for i in range(10)]
            callbacks.append(
                await schedule_workflow(manager, chord(members, ("callback", {"name": f"cb{g}"})))
            )
        for callback_id in callbacks:
            info = await manager.wait_for(callback_id, timeout=120)
            assert (info["status"], info["result"]) == ("completed", sum(range(10)))
    runs = workers.runs()
    assert len(runs) == 40 * 10 + 40
    assert {name: count for name, count in runs.items() if count != 1} == {}


async def test_a_limit_of_one_per_key_holds_across_three_workers(workers: Workers) -> None:
    for _ in range(3):  # one task at a time each: every worker must take part
        workers.start(limits={"customer-": 1}, max_concurrency="1", poll_interval="0.02")
    async with await registered(workers.producer()) as manager:
        ids = await manager.schedule_many(
            [
                {"task_type": "keyed", "payload": {"key": key}, "concurrency_key": key}
                for key in ("customer-1", "customer-2", "customer-3")  # key by key: every
                for _ in range(15)  # worker's next task in line has the key already running
            ]
        )
        for task_id in ids:
            assert (await manager.wait_for(task_id, timeout=120))["status"] == "completed"
    holders: dict[str, str | None] = collections.defaultdict(lambda: None)
    pids = set()
    for event, key, pid in workers.lines():
        if event == "start":
            assert holders[key] is None, f"{key} ran in {holders[key]} and {pid} at once"
            holders[key] = pid
            pids.add(pid)
        else:
            assert holders[key] == pid
            holders[key] = None
    assert len(pids) > 1  # more than one worker took part: the limit held between them


async def test_a_chain_survives_a_worker_killed_mid_chain(workers: Workers) -> None:
    lease = {"lease_seconds": "1.0", "poll_interval": "0.05"}
    victim = workers.start(**lease)
    async with await registered(workers.producer()) as manager:
        names = ["a", "b", "hang", "c", "d"]
        last = await schedule_workflow(
            manager, chain(*[step("step", {"name": name, "n": n}) for n, name in enumerate(names)])
        )
        await wait_until(
            lambda: workers.runs()["hang"] >= 1, timeout=60, message="the chain reaching 'hang'"
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        workers.start(**lease)
        info = await manager.wait_for(last, timeout=60)
    assert (info["status"], info["result"]) == ("completed", [0, 1, 2, 3, 4])
    assert workers.runs() == {"a": 1, "b": 1, "hang": 2, "c": 1, "d": 1}


FINISHER = """
import asyncio, json, sys, time
from pathlib import Path
from taskyard.backends.sqlite import SqliteStore
from taskyard.framework.models import Outcome, TaskStatus, utcnow

async def main(where, leases, go):
    if where.startswith("postgres"):
        from taskyard.backends.postgres import PostgresStore
        dsn, schema = where.rsplit("#", 1)
        store = PostgresStore(dsn, schema_name=schema, pool_size=1)
    else:
        store = SqliteStore(where)
    await store.open()
    while not Path(go).exists():  # the two finishers start together
        time.sleep(0.001)
    for task_id, token in leases:  # one transaction per member, interleaved with the other
        outcome = Outcome(task_id, token, TaskStatus.COMPLETED, utcnow(), 1, "1")
        assert await store.finish([outcome]) == [True]
    print(store.releases)
    await store.close()

asyncio.run(main(sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), sys.argv[3]))
"""


async def test_the_fan_in_race_between_two_processes_never_loses_or_doubles_a_callback(
    tmp_path: Path, workers: Workers
) -> None:
    store = workers.store()
    await store.open()
    where = f"{workers.dsn}#{workers.schema}" if workers.backend == "postgres" else str(workers.db)
    try:
        now = utcnow()

        def record(task_type: str, depends_on: tuple[str, ...] = ()) -> TaskRecord:
            return TaskRecord(
                id=new_task_id(),
                type=task_type,
                payload={},
                created_at=now,
                updated_at=now,
                run_after=now,
                depends_on=depends_on,
            )

        groups = [[record("member") for _ in range(20)] for _ in range(200)]
        callbacks = [record("callback", tuple(m.id for m in g)) for g in groups]
        await store.add([m for g in groups for m in g] + callbacks)
        claimed = {
            r.id: r
            for r in await store.claim(
                limit=4000, now=utcnow(), worker_id="t", lease_seconds=600, types={"member"}
            )
        }
        from taskyard.framework.models import Outcome

        await store.finish(
            [
                Outcome(m.id, claimed[m.id].lease_token or "", TaskStatus.COMPLETED, utcnow())
                for g in groups
                for m in g[:18]
            ]
        )
        go = tmp_path / "go"
        finishers = []
        for index in (18, 19):
            leases = tmp_path / f"leases-{index}.json"
            leases.write_text(
                json.dumps([[g[index].id, claimed[g[index].id].lease_token] for g in groups])
            )
            finishers.append(
                subprocess.Popen(
                    [sys.executable, "-c", FINISHER, where, str(leases), str(go)],
                    cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": python_path()},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        go.touch()
        released = 0
        for finisher in finishers:
            out, err = finisher.communicate(timeout=120)
            assert finisher.returncode == 0, err
            released += int(out.strip())
        assert released == 200  # each callback released once, by one of the two
        ready = await store.claim(
            limit=1000, now=utcnow(), worker_id="t", lease_seconds=60, types={"callback"}
        )
        assert sorted(r.id for r in ready) == sorted(c.id for c in callbacks)
        counts = await store.count_by_status()
        assert counts[TaskStatus.WAITING] == 0
    finally:
        await store.close()
