"""Real `taskyard worker` processes on one PostgreSQL database: spawned, killed, cut off
from the server, and carried through a server restart."""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from taskyard.backends.postgres import PostgresStore, PostgresTaskManager
from taskyard.backends.postgres.schema import SCHEMA_VERSION
from taskyard.framework import EngineConfig
from tests.pg_support import postgres_dsn, require_postgres, schema_for

from .own_task_app import assert_claimed_by, spawn
from .worker_app import HANDLERS

__all__ = ["postgres_dsn"]
pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.worker_app:HANDLERS"


class Workers:
    """Starts `taskyard worker` processes on one PostgreSQL schema and reaps them."""

    def __init__(self, tmp_path: Path, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self.log = tmp_path / "executions.log"
        self.processes: list[subprocess.Popen[bytes]] = []

    def env(self, **settings: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_")}
        env.update(
            TASKYARD_ENV="testing",
            TASKYARD_TASK_EXECUTION__BACKEND="postgres",
            TASKYARD_TASK_EXECUTION__POSTGRES_DSN=self.dsn,
            TASKYARD_TASK_EXECUTION__POSTGRES_SCHEMA=self.schema,
            TASKYARD_TASK_EXECUTION__POSTGRES_POOL_SIZE="3",
            TASKYARD_TEST_EXEC_LOG=str(self.log),
            PYTHONPATH=str(ROOT),
        )
        env.update({f"TASKYARD_TASK_EXECUTION__{k.upper()}": v for k, v in settings.items()})
        return env

    def start(self, *args: str, **settings: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "taskyard", "worker", "--app", APP, *args],
            cwd=ROOT,
            env=self.env(**settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until the worker is up (or died)
        assert b"taskyard worker ready" in line, line + process.stdout.read()
        return process

    def executions(self) -> collections.Counter[str]:
        if not self.log.exists():
            return collections.Counter()
        return collections.Counter(line.split()[0] for line in self.log.read_text().splitlines())

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture
def workers(tmp_path: Path, postgres_dsn: str, request: pytest.FixtureRequest) -> Iterator[Workers]:
    pool = Workers(tmp_path, postgres_dsn, schema_for(request.node.nodeid))
    try:
        yield pool
    finally:
        pool.close()


def producer(dsn: str, schema: str) -> PostgresTaskManager:
    """A manager that only schedules (a web process)."""
    return PostgresTaskManager(
        EngineConfig(run_worker=False, poll_interval=0.05), dsn=dsn, schema=schema, pool_size=2
    )


async def registered(manager: PostgresTaskManager) -> PostgresTaskManager:
    for task_type, handler in HANDLERS.items():
        await manager.register_task(task_type, handler)
    return manager


async def counts(dsn: str, schema: str) -> dict[str, int]:
    """Tasks per status, read with a connection of its own (not a taskyard one)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f'SELECT status, COUNT(*) FROM "{schema}".taskyard_tasks GROUP BY status'
        )
    finally:
        await conn.close()
    return {row[0]: int(row[1]) for row in rows}


async def wait_for_counts(
    dsn: str, schema: str, completed: int, *, timeout: float, workers: Workers | None = None
) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        seen = await counts(dsn, schema)
        if seen.get("completed", 0) >= completed:
            return seen
        assert time.monotonic() < deadline, f"only {seen} after {timeout} s"
        if workers is not None:
            assert workers.alive(), "a worker died"
        await asyncio.sleep(0.1)


async def test_four_workers_run_twenty_thousand_tasks_exactly_once(workers: Workers) -> None:
    tasks, count = 20_000, 4
    # Every worker is up (and listening) before the first task exists: started one after
    # another behind a full queue, the first ones could drain it before the last is ready.
    for _ in range(count):
        workers.start(max_concurrency="20")
    async with await registered(producer(workers.dsn, workers.schema)) as manager:
        await manager.schedule_many(
            [{"task_type": "count", "payload": {"n": n}} for n in range(tasks)]
        )
    seen = await wait_for_counts(workers.dsn, workers.schema, tasks, timeout=240)
    assert seen == {"completed": tasks}
    executions = workers.executions()
    assert len(executions) == tasks
    assert {n: c for n, c in executions.items() if c != 1} == {}
    pids = collections.Counter(line.split()[1] for line in workers.log.read_text().splitlines())
    assert len(pids) == count  # the work was shared: every worker ran some of it


async def test_sigkill_mid_task_is_finished_by_another_worker(workers: Workers) -> None:
    lease = {"lease_seconds": "1.0", "poll_interval": "0.05"}
    victim = workers.start(**lease)
    async with await registered(producer(workers.dsn, workers.schema)) as manager:
        task_id = await manager.schedule_task("hang_once", {"n": "hostage"})
        deadline = time.monotonic() + 30
        while workers.executions()["hostage"] < 1:  # the victim has started it
            assert time.monotonic() < deadline, "the first worker never started the task"
            await asyncio.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        workers.start(**lease)
        info = await manager.wait_for(task_id, timeout=30)
    assert info["status"] == "completed"
    assert info["result"] == "finished by a second worker"
    assert info["attempts"] == 2
    assert workers.executions()["hostage"] == 2


async def test_a_task_claimed_as_it_was_added_survives_its_process_sigkill(
    workers: Workers,
) -> None:
    """The process that schedules the task claims it in the same INSERT
    (Capability.CLAIM_ON_ADD): killed mid-task, its lease expires and another worker
    runs the task."""
    lease = {"lease_seconds": "1.0", "poll_interval": "0.05"}
    app, task_id = spawn(workers.env(**lease), "claimed-on-add")
    workers.processes.append(app)
    deadline = time.monotonic() + 30
    while workers.executions()["claimed-on-add"] < 1:
        assert time.monotonic() < deadline, "the scheduling process never started its task"
        await asyncio.sleep(0.02)
    async with await registered(producer(workers.dsn, workers.schema)) as manager:
        assert_claimed_by(await manager.store.get(task_id), app)
        app.send_signal(signal.SIGKILL)
        app.wait(timeout=10)
        workers.start(**lease)
        info = await manager.wait_for(task_id, timeout=30)
    assert (info["status"], info["attempts"]) == ("completed", 2)
    assert workers.executions()["claimed-on-add"] == 2


async def terminate_taskyard_connections(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'taskyard%'"
            " AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return len(rows)


async def test_terminated_connections_lose_nothing_and_workers_carry_on(
    workers: Workers,
) -> None:
    tasks = 6000
    settings = {"lease_seconds": "2.0", "poll_interval": "0.05", "max_concurrency": "8"}
    for _ in range(2):
        workers.start(**settings)
    async with await registered(producer(workers.dsn, workers.schema)) as manager:
        await manager.schedule_many(
            [{"task_type": "count", "payload": {"n": n}} for n in range(tasks)]
        )
    killed = 0
    for share in (0.2, 0.5):  # twice, mid-run
        deadline = time.monotonic() + 60
        while len(workers.executions()) < tasks * share:
            assert time.monotonic() < deadline, "the workers stalled"
            await asyncio.sleep(0.01)
        killed += await terminate_taskyard_connections(workers.dsn)
    assert killed >= 4  # both workers' pools and LISTEN connections at least
    seen = await wait_for_counts(workers.dsn, workers.schema, tasks, timeout=120, workers=workers)
    assert seen == {"completed": tasks}  # nothing lost, nothing left running
    executions = workers.executions()
    assert len(executions) == tasks
    assert {n: c for n, c in executions.items() if c != 1} == {}  # nothing ran twice
    assert workers.alive()


async def test_ten_processes_starting_at_once_migrate_once(postgres_dsn: str) -> None:
    schema = "raced"
    code = (
        "import asyncio, sys\n"
        "from taskyard.backends.postgres import PostgresStore\n"
        "async def main():\n"
        f"    store = PostgresStore({postgres_dsn!r}, schema_name={schema!r}, pool_size=1)\n"
        "    await store.open()\n"
        "    print(store.migrations_applied, flush=True)\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(10)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0] * 10, outputs
    printed = sorted(out.decode().strip() for out, _ in outputs)
    assert printed == [str(list(range(1, SCHEMA_VERSION + 1)))] + ["[]"] * 9
    assert all(err.strip() == b"" for _, err in outputs), outputs
    conn = await asyncpg.connect(postgres_dsn)
    try:
        versions = await conn.fetch(f"SELECT version FROM {schema}.taskyard_schema_version")
    finally:
        await conn.close()
    assert [row[0] for row in versions] == list(range(1, SCHEMA_VERSION + 1))


# -- a throwaway cluster, stopped and restarted -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A PostgreSQL cluster of its own, run as the postgres OS user in a temp dir."""

    def __init__(self) -> None:
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        self.bin = Path(bindir)
        self.root = Path(tempfile.mkdtemp(prefix="taskyard-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        shutil.chown(self.root, "postgres", "postgres")
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c max_connections=60 -c fsync=off"
        )
        self.run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                 "-w", "start")  # fmt: skip

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with_server = (self.data / "postmaster.pid").exists()
        if with_server:
            subprocess.run(
                ["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D",
                 str(self.data), "-m", "immediate", "-w", "stop"],
                check=False, capture_output=True, timeout=60,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    require_postgres()
    if shutil.which("pg_config") is None:
        pytest.skip("pg_config is not installed: cannot start a throwaway PostgreSQL cluster")
    made = Cluster()
    made.start()
    try:
        yield made
    finally:
        made.remove()


async def test_a_server_restart_mid_run_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    workers = Workers(tmp_path, cluster.dsn, "taskyard")
    try:
        tasks = 4000
        settings = {"lease_seconds": "2.0", "poll_interval": "0.05", "max_concurrency": "8"}
        for _ in range(2):
            workers.start(**settings)
        async with await registered(producer(cluster.dsn, "taskyard")) as manager:
            await manager.schedule_many(
                [{"task_type": "count", "payload": {"n": n}} for n in range(tasks)]
            )
        watcher = PostgresStore(cluster.dsn, pool_size=1, connect_timeout=1.0)
        await watcher.open()
        try:
            deadline = time.monotonic() + 60
            while len(workers.executions()) < tasks * 0.3:
                assert time.monotonic() < deadline, "the workers stalled"
                await asyncio.sleep(0.01)
            cluster.stop()
            state, reason = await watcher.health()
            assert state == "down" and "retry later" in reason
            assert workers.alive()  # the workers wait for the server, they do not die
            cluster.start()
            deadline = time.monotonic() + 30
            while (await watcher.health())[0] != "ok":
                assert time.monotonic() < deadline, "the store never came back"
                await asyncio.sleep(0.1)
        finally:
            await watcher.close()
        seen = await wait_for_counts(cluster.dsn, "taskyard", tasks, timeout=120, workers=workers)
        assert seen == {"completed": tasks}
        executions = workers.executions()
        assert len(executions) == tasks
        # a handler whose outcome was lost with the server runs again once its lease
        # expires; a completion is never recorded twice
        assert set(executions.values()) <= {1, 2}
    finally:
        workers.close()


async def test_a_store_opened_before_its_server_starts_waits_for_it(cluster: Cluster) -> None:
    cluster.stop()
    store = PostgresStore(cluster.dsn, pool_size=1, connect_timeout=1.0, open_retry=60)
    opening = asyncio.create_task(store.open())
    try:
        done, _ = await asyncio.wait([opening], timeout=0.5)
        assert not done  # the server is down: still trying, no error
        await asyncio.to_thread(cluster.start)
        await asyncio.wait_for(opening, timeout=60)
        assert store.migrations_applied == list(range(1, SCHEMA_VERSION + 1))
        assert (await store.health())[0] in ("ok", "degraded")  # LISTEN may still be coming
    finally:
        opening.cancel()
        await store.close()
