"""The runbook, played with real processes: an application on the in-memory backend with
work in flight is migrated to SQLite, restarted there, rolled back to in-memory (planned),
and switched back, with the tasks left in SQLite picked up again. Then the emergency
rollback: a variable and a restart, and nothing lost when the backend comes back.

Every execution is logged (``tests/integration/worker_app.py``), so "nothing lost,
nothing run twice" is counted, not assumed.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskyard.testing import poll_until
from tests.windows_sim import python_path

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = """\
[production.task_execution]
backend = "{backend}"
queue_db_path = "queue.db"
max_concurrency = 3
poll_interval = 0.05
lease_seconds = {lease}
shutdown_timeout = 1.0
worker_app = "tests.integration.worker_app:HANDLERS"

[production.logging]
enabled = false
"""


def wait_until(condition: Callable[[], object], what: str) -> None:
    poll_until(condition, message=what)


class App:
    """The runbook application (``runbook_app.py``) in its own process."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        assert process.stdout is not None and process.stdin is not None
        self.stdout, self.stdin = process.stdout, process.stdin
        ready = self.stdout.readline().split()
        assert ready[:1] == ["ready"], ready
        self.backend = ready[1]

    def send(self, line: str) -> str:
        self.stdin.write(line + "\n")
        self.stdin.flush()
        return self.stdout.readline().strip()

    def schedule(self, task_type: str, n: str, delay: float = 0, release: str = "") -> str:
        return self.send(f"schedule {task_type} {n} {delay} {release}".strip())

    def status(self, task_id: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.send(f"status {task_id}"))
        return data

    def stop(self) -> dict[str, Any] | None:
        """SIGTERM, as a service manager would; returns the hand-over report."""
        self.stdin.close()
        self.process.send_signal(signal.SIGTERM)
        lines = self.stdout.read().splitlines()
        assert self.process.wait(timeout=60) == 0, lines
        [stopped] = [line for line in lines if line.startswith("stopped ")]
        report: dict[str, Any] | None = json.loads(stopped.removeprefix("stopped "))
        return report


class Deployment:
    """One application folder: settings files, the queue database, its processes."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        self.dir.mkdir()
        self.log = self.dir / "executions.log"
        self.processes: list[subprocess.Popen[str]] = []
        self.settings("in-memory")

    def settings(self, backend: str, lease: float = 5.0) -> None:
        (self.dir / "settings.toml").write_text(SETTINGS.format(backend=backend, lease=lease))

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_")}
        env.update(
            TASKYARD_ENV="production",
            TASKYARD_TEST_EXEC_LOG=str(self.log),
            PYTHONPATH=python_path(),
            **extra,
        )
        return env

    def taskyard(self, *args: str, expect: int = 0) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "taskyard", *args],
            cwd=self.dir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == expect, done.stdout + done.stderr
        return done.stdout

    def spawn(self, *args: str, **env: str) -> subprocess.Popen[str]:
        errors = open(self.dir / f"process-{len(self.processes)}.err", "w")
        try:
            process = subprocess.Popen(
                [sys.executable, *args],
                cwd=self.dir,
                env=self.env(**env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        finally:
            errors.close()
        self.processes.append(process)
        return process

    def app(self, **env: str) -> App:
        return App(self.spawn("-m", "tests.migration.runbook_app", **env))

    def worker(self) -> subprocess.Popen[str]:
        process = self.spawn("-m", "taskyard", "worker")
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "taskyard worker ready" in line, line
        return process

    def executions(self) -> collections.Counter[str]:
        if not self.log.exists():
            return collections.Counter()
        return collections.Counter(line.split()[0] for line in self.log.read_text().splitlines())

    def statuses(self) -> collections.Counter[str]:
        conn = sqlite3.connect(self.dir / "queue.db")
        try:
            rows = conn.execute("SELECT status, COUNT(*) FROM taskyard_tasks GROUP BY status")
            return collections.Counter(dict(rows.fetchall()))
        finally:
            conn.close()

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None and not pipe.closed:
                    pipe.close()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    deploy = Deployment(tmp_path / "app")
    try:
        yield deploy
    finally:
        deploy.close()


def started(deploy: Deployment, *names: str) -> Callable[[], bool]:
    return lambda: all(deploy.executions()[name] >= 1 for name in names)


def test_the_runbook_migrate_restart_roll_back_and_switch_back(deployment: Deployment) -> None:
    deploy = deployment
    release_1, release_2 = deploy.dir / "release-1", deploy.dir / "release-2"
    assert "created queue.db" in deploy.taskyard("db", "init", "--validate")

    # -- an application on the in-memory backend, with work in flight ----------------------
    app = deploy.app()
    assert app.backend == "in-memory"
    blocked = [app.schedule("wait_for_release", f"b{i}", 0, str(release_1)) for i in range(3)]
    wait_until(started(deploy, "b0", "b1", "b2"), "three handlers running")
    queued = [app.schedule("count", f"c{i}") for i in range(10)]  # behind the full slots
    delayed = [app.schedule("count", f"d{i}", 1.0) for i in range(2)]
    assert {app.status(i)["status"] for i in blocked} == {"running"}
    assert {app.status(i)["status"] for i in queued + delayed} == {"queued"}

    # -- migrate: the settings now select sqlite; the restart hands the queue over ---------
    deploy.settings("sqlite")
    app.process.send_signal(signal.SIGTERM)  # the handlers get their deadline to finish...
    release_1.touch()  # ...and finish within it
    report = app.stop()
    assert report is not None
    assert (report["exported"], report["imported"], report["conflicts"]) == (15, 15, [])

    # -- restart on sqlite: every task accepted before the switch runs ---------------------
    worker = deploy.worker()
    wait_until(lambda: deploy.statuses()["completed"] == 15, "the migrated tasks to finish")
    names = [f"b{i}" for i in range(3)] + [f"c{i}" for i in range(10)] + ["d0", "d1"]
    assert deploy.executions() == collections.Counter(names)  # each exactly once
    assert "1 alive" in deploy.taskyard("validate")

    # -- work in flight on sqlite, then the planned rollback -------------------------------
    app = deploy.app(TASKYARD_TASK_EXECUTION__RUN_WORKER="false")  # a producer, like a web app
    assert app.backend == "sqlite"
    running = [app.schedule("wait_for_release", f"e{i}", 0, str(release_2)) for i in range(3)]
    wait_until(started(deploy, "e0", "e1", "e2"), "the worker running three handlers")
    waiting = [app.schedule("count", f"f{i}") for i in range(5)]
    out = deploy.taskyard(
        "rollback", "--to", "in-memory", "--export-queue-state", "queue-state.jsonl",
        "--reason", "error rate after the 2.3 deploy", "--json",
    )  # fmt: skip
    result = json.loads(out)
    rollback, validation = result["rollback"], result["validation"]
    assert worker.wait(timeout=30) == 0  # drained: SIGTERM, handlers cut off at 1 s
    assert len(rollback["drain"]["stopped"]) == 1 and rollback["drained"]
    assert rollback["export"]["tasks"] == 8 and rollback["export"]["by_status"] == {"queued": 8}
    state = (deploy.dir / "queue-state.jsonl").read_text().split("\n")[1:-1]
    exported = [json.loads(line)["id"] for line in state]
    assert sorted(exported) == sorted(running + waiting)
    assert (
        validation["ok"] and "8 unfinished task(s) wait here" in validation["checks"][-2]["detail"]
    )
    assert json.loads(deploy.taskyard("settings"))["task_execution"]["backend"] == "in-memory"
    log = (deploy.dir / "queue.db.rollbacks.jsonl").read_text().splitlines()
    [entry] = [json.loads(line) for line in log]
    assert entry["reason"] == "error rate after the 2.3 deploy"
    assert app.stop() is None  # a durable store keeps its own tasks: nothing to hand over

    # -- after the rollback: the application runs on in-memory ------------------------------
    app = deploy.app()
    assert app.backend == "in-memory"
    fresh = [app.schedule("count", f"g{i}") for i in range(2)]
    wait_until(lambda: {app.status(i)["status"] for i in fresh} == {"completed"}, "g tasks")
    later = [app.schedule("count", f"h{i}", 1.0) for i in range(2)]
    assert deploy.statuses()["queued"] == 8  # what SQLite held still waits there

    # -- switch back: the in-memory tasks are handed over, SQLite's are picked up again -----
    deploy.taskyard("rollback", "--to", "sqlite", "--reason", "fixed in 2.3.1")
    report = app.stop()
    assert report is not None and (report["exported"], report["imported"]) == (4, 4)
    release_2.touch()
    worker = deploy.worker()
    wait_until(lambda: deploy.statuses()["completed"] == 15 + 8 + 4, "everything to finish")
    once = names + [f"f{i}" for i in range(5)] + ["g0", "g1", "h0", "h1"]
    twice = ["e0", "e1", "e2"]  # cut off by the drain, run again: at least once
    assert deploy.executions() == collections.Counter(once + twice * 2)
    assert sum(deploy.statuses().values()) == 27
    assert "result: ok" in deploy.taskyard("validate")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert later


def test_emergency_rollback_is_a_variable_and_a_restart(deployment: Deployment) -> None:
    deploy = deployment
    deploy.settings("sqlite", lease=1.0)
    release = deploy.dir / "release"
    deploy.taskyard("db", "init")
    worker = deploy.worker()
    app = deploy.app(TASKYARD_TASK_EXECUTION__RUN_WORKER="false")
    running = app.schedule("wait_for_release", "r0", 0, str(release))
    wait_until(started(deploy, "r0"), "the handler running")
    queued = [app.schedule("count", f"q{i}", 3600) for i in range(4)]
    app.stop()
    worker.kill()  # the incident: the worker dies mid-task
    worker.wait(timeout=30)

    # the emergency rollback: one variable, a restart
    app = deploy.app(TASKYARD_TASK_EXECUTION__BACKEND="in-memory")
    assert app.backend == "in-memory"
    meanwhile = app.schedule("count", "m0")
    wait_until(lambda: app.status(meanwhile)["status"] == "completed", "work on in-memory")
    report = app.stop()  # still in-memory, but the queue database exists: parked there
    assert report is not None and (report["exported"], report["imported"]) == (1, 1)

    # back on sqlite: the task that was running when the worker died, and the queued ones
    release.touch()
    conn = sqlite3.connect(deploy.dir / "queue.db")
    # the queued ones were delayed by an hour; make them due now rather than wait
    conn.execute("UPDATE taskyard_tasks SET run_after = 0 WHERE status = 'queued'")
    conn.commit()
    conn.close()
    worker = deploy.worker()
    wait_until(lambda: deploy.statuses()["completed"] == 6, "the tasks left in SQLite")
    assert deploy.executions() == collections.Counter(
        {"r0": 2, "m0": 1, **{f"q{i}": 1 for i in range(4)}}
    )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert running and queued
