"""Real worker processes on one SQLite file: `taskyard worker`, spawned and killed."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework import EngineConfig
from taskyard.testing import wait_until
from tests.windows_sim import python_path

from .own_task_app import assert_claimed_by, spawn
from .worker_app import HANDLERS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.worker_app:HANDLERS"


class Workers:
    """Starts `taskyard worker` processes on one database and reaps them at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "queue.db"
        self.log = tmp_path / "executions.log"
        self.processes: list[subprocess.Popen[bytes]] = []

    def env(self, **settings: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_")}
        env.update(
            TASKYARD_ENV="testing",
            TASKYARD_TASK_EXECUTION__BACKEND="sqlite",
            TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH=str(self.db),
            TASKYARD_TEST_EXEC_LOG=str(self.log),
            PYTHONPATH=python_path(),
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

    def run_python(self, code: str) -> None:
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=self.env(), check=True)

    def executions(self) -> collections.Counter[str]:
        if not self.log.exists():
            return collections.Counter()
        return collections.Counter(line.split()[0] for line in self.log.read_text().splitlines())

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.close()


def producer(db: Path, **config: object) -> QueuedTaskManager:
    """A manager that only schedules and reads (a web process)."""
    return QueuedTaskManager(
        EngineConfig(run_worker=False, poll_interval=0.05, **config),  # type: ignore[arg-type]
        db_path=db,
    )


async def registered(manager: QueuedTaskManager) -> QueuedTaskManager:
    for task_type, handler in HANDLERS.items():
        await manager.register_task(task_type, handler)
    return manager


async def test_a_task_outlives_its_producer(workers: Workers) -> None:
    workers.run_python(
        "import asyncio\n"
        "from tests.integration.test_sqlite_processes import producer, registered\n"
        "from pathlib import Path\n"
        "async def main():\n"
        f"    async with await registered(producer(Path({str(workers.db)!r}))) as m:\n"
        "        task_id = await m.schedule_task('count', {'n': 'survivor'})\n"
        "        print(task_id)\n"
        "asyncio.run(main())\n"
    )
    workers.start()
    async with await registered(producer(workers.db)) as manager:
        [task] = await manager.list_tasks()
        info = await manager.wait_for(task["id"], timeout=30)
    assert info["status"] == "completed", info["error"]
    assert info["result"] == "survivor"
    assert workers.executions() == {"survivor": 1}


@pytest.mark.parametrize("count", [2, 4])
async def test_every_task_runs_exactly_once_across_workers(workers: Workers, count: int) -> None:
    tasks = 3000
    async with await registered(producer(workers.db)) as manager:
        ids = await manager.schedule_many(
            [{"task_type": "count", "payload": {"n": n}} for n in range(tasks)]
        )
        for _ in range(count):
            workers.start()
        for task_id in ids:
            await manager.wait_for(task_id, timeout=60)
        counts = await manager.count_by_status()
    executions = workers.executions()
    assert counts["completed"] == tasks
    assert len(executions) == tasks
    duplicates = {n: c for n, c in executions.items() if c != 1}
    assert duplicates == {}
    pids = {line.split()[1] for line in workers.log.read_text().splitlines()}
    assert len(pids) <= count


async def test_sigkill_mid_task_is_finished_by_another_worker(workers: Workers) -> None:
    lease = {"lease_seconds": "1.0", "poll_interval": "0.05"}
    victim = workers.start(**lease)
    async with await registered(producer(workers.db)) as manager:
        task_id = await manager.schedule_task("hang_once", {"n": "hostage"})
        await wait_until(  # the victim has started it
            lambda: workers.executions()["hostage"] >= 1,
            timeout=30,
            message="the first worker starting the task",
        )
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
    """A process with a free slot claims the task it schedules in the same write
    (Capability.CLAIM_ON_ADD): the row goes in running, under that process's lease, which
    expires when the process dies, and another worker runs the task."""
    lease = {"lease_seconds": "1.0", "poll_interval": "0.05"}
    app, task_id = spawn(workers.env(**lease), "claimed-on-add")
    workers.processes.append(app)
    await wait_until(
        lambda: workers.executions()["claimed-on-add"] >= 1,
        timeout=30,
        message="the scheduling process starting its own task",
    )
    async with await registered(producer(workers.db)) as manager:
        assert_claimed_by(await manager.store.get(task_id), app)
        app.send_signal(signal.SIGKILL)
        app.wait(timeout=10)
        workers.start(**lease)
        info = await manager.wait_for(task_id, timeout=30)
    assert (info["status"], info["attempts"]) == ("completed", 2)
    assert info["result"] == "finished by a second worker"
    assert workers.executions()["claimed-on-add"] == 2


async def test_sigterm_returns_unfinished_work_to_the_queue(
    workers: Workers, tmp_path: Path
) -> None:
    worker = workers.start(shutdown_timeout="0.2")
    release = tmp_path / "release"
    async with await registered(producer(workers.db)) as manager:
        task_id = await manager.schedule_task(
            "wait_for_release", {"n": "held", "release": str(release)}
        )
        await wait_until(
            lambda: workers.executions()["held"] >= 1,
            timeout=30,
            message="the worker starting the task",
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        info = await manager.get_task_status(task_id)
        assert info is not None
        assert info["status"] == "queued"
        assert info["attempts"] == 0  # the interrupted attempt is given back
        release.touch()
        workers.start()
        info = await manager.wait_for(task_id, timeout=30)
    assert info["status"] == "completed"
    assert info["attempts"] == 1
