"""Windows, simulated: taskyard imports without ``os.register_at_fork``, and a worker under
event loops with no signal support (``tests/windows_sim/sitecustomize.py``, inherited by
every child process) starts, runs tasks and stops gracefully through
``taskyard workers stop``, with nothing lost."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework.engine import EngineConfig
from taskyard.framework.models import TaskStatus
from taskyard.testing import poll_until
from tests.integration.worker_app import HANDLERS
from tests.migration.test_runbook import Deployment
from tests.windows_sim import FOLDER, python_path

SIMULATION = FOLDER

PROBE = """
import asyncio, os
assert os.environ.get("TASKYARD_SIMULATED_WINDOWS") == "1", "sitecustomize not loaded"
assert not hasattr(os, "register_at_fork") and not hasattr(os, "fork")
import taskyard, taskyard.cli, taskyard.worker
from taskyard.framework.models import new_task_id
loop = asyncio.new_event_loop()
try:
    loop.add_signal_handler(2, print)
except NotImplementedError:
    print("no signal handlers", new_task_id() != new_task_id())
"""


class SimulatedWindows(Deployment):
    def env(self, **extra: str) -> dict[str, str]:
        env = super().env(**extra)
        env["PYTHONPATH"] = python_path(SIMULATION)
        return env


def test_taskyard_imports_without_register_at_fork(tmp_path: Path) -> None:
    deploy = SimulatedWindows(tmp_path / "app")
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=deploy.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no signal handlers True"


async def schedule(db: Path, *tasks: tuple[str, dict[str, str]]) -> list[str]:
    """Schedule from this process, as a producer that runs no worker."""
    manager = QueuedTaskManager(EngineConfig(run_worker=False), db_path=db)
    for task_type, handler in HANDLERS.items():
        await manager.register_task(task_type, handler)
    async with manager:
        return [await manager.schedule_task(kind, payload) for kind, payload in tasks]


def status(db: Path, task_id: str) -> str:
    async def read() -> str:
        manager = QueuedTaskManager(EngineConfig(run_worker=False), db_path=db)
        async with manager:
            found = await manager.get_task_status(task_id)
        assert found is not None
        return str(found["status"])

    return asyncio.run(read())


@pytest.mark.slow
def test_a_signalless_worker_runs_tasks_and_stops_through_the_queue(tmp_path: Path) -> None:
    deploy = SimulatedWindows(tmp_path / "app")
    deploy.settings("sqlite", lease=1.5)
    db = deploy.dir / "queue.db"
    try:
        deploy.taskyard("db", "init")
        worker = deploy.worker()  # waits for "taskyard worker ready"
        counted = asyncio.run(schedule(db, *[("count", {"n": f"c{i}"}) for i in range(5)]))
        poll_until(
            lambda: all(status(db, task_id) == "completed" for task_id in counted),
            message="the worker to run five tasks",
        )
        release = deploy.dir / "never"
        [held] = asyncio.run(
            schedule(db, ("wait_for_release", {"n": "h", "release": str(release)}))
        )
        poll_until(lambda: deploy.executions()["h"] == 1, message="the long handler to start")

        [listed] = json.loads(deploy.taskyard("workers", "list", "--json"))
        assert (listed["role"], listed["state"], listed["pid"]) == ("worker", "alive", worker.pid)
        stopped = json.loads(deploy.taskyard("workers", "stop", "--all", "--wait", "30", "--json"))
        assert stopped["asked"] == stopped["stopped"] == [listed["worker_id"]]
        assert stopped["drained"] and stopped["applications"] == []
        assert worker.wait(timeout=30) == 0  # drained as on SIGTERM, exit status 0
        # the handler cut off at the shutdown timeout went back to the queue, not failed
        assert status(db, held) == TaskStatus.QUEUED
        assert json.loads(deploy.taskyard("workers", "list", "--json")) == []
        assert sorted(deploy.executions()) == sorted([f"c{i}" for i in range(5)] + ["h"])
    finally:
        deploy.close()
