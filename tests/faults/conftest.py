"""The fault suite: real processes killed with SIGKILL, real file systems filled up or
made read-only, files deleted, renamed and corrupted under live processes, and hostile
input. Figures each scenario measures are printed (run with ``-s`` to see them)."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskyard.testing import poll_until
from tests.windows_sim import python_path

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.faults.worker_app:HANDLERS"


class Workers:
    """Starts `taskyard worker` processes on one database and reaps them at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "queue.db"
        self.log = tmp_path / "executions.log"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()
        self.outputs: dict[int, Path] = {}

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

    def spawn(self, *args: str, **settings: str) -> subprocess.Popen[bytes]:
        """A worker process; its output goes to a file (a pipe nobody reads could fill
        up and stall it), read with :meth:`output`."""
        out = self.db.with_name(f"worker-{len(self.processes)}.out")
        with open(out, "wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "taskyard", "worker", "--app", APP, *args],
                cwd=ROOT,
                env=self.env(**settings),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        self.outputs[process.pid] = out
        return process

    def output(self, process: subprocess.Popen[bytes]) -> str:
        return self.outputs[process.pid].read_text(errors="replace")

    def start(self, *args: str, **settings: str) -> subprocess.Popen[bytes]:
        process = self.spawn(*args, **settings)

        def ready() -> bool:
            assert process.poll() is None, self.output(process)  # it died: say why
            return "taskyard worker ready" in self.output(process)

        poll_until(ready, message="the worker's ready line")
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.kill()
        process.wait(timeout=30)
        self.killed.add(process.pid)

    def events(self) -> list[tuple[str, str, int]]:
        """``(event, n, pid)`` per line of the execution log."""
        if not self.log.exists():
            return []
        rows = []
        for line in self.log.read_text().splitlines():
            event, n, pid = line.split()
            rows.append((event, n, int(pid)))
        return rows

    def starts(self) -> collections.Counter[str]:
        return collections.Counter(n for event, n, _ in self.events() if event == "start")

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs mounted for the test (skips where mounting is not allowed)."""
    mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True, capture_output=True)
