"""How long a rollback takes here: the figures of docs/runbook.md.

    python benchmarks/rollback.py [--tasks 100000] [--runs 3]

In a scratch folder, a SQLite queue holds ``--tasks`` unfinished tasks while a worker
(`taskyard worker`, concurrency 10, handlers that take 50 ms) runs on it. Then:

planned rollback
    ``taskyard rollback --to in-memory --export-queue-state FILE --reason ...`` as an
    operator types it, start to exit: the worker drained (SIGTERM, running handlers
    finish), every unfinished task exported, the settings switched, the reason logged,
    and the automatic validation (integrity check and scratch task included).
emergency rollback
    ``TASKYARD_TASK_EXECUTION__BACKEND=in-memory`` and a restart: the SQLite worker
    stopped (SIGTERM), a process started on in-memory, until it has run its first task.
switch back
    the worker started on SQLite again, until it has taken up the first of the tasks
    left there.

Each is run ``--runs`` times; the table shows the median and the spread. Not a test:
nothing here runs under pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taskyard.backends.sqlite import SqliteStore  # noqa: E402
from taskyard.framework.models import TaskRecord  # noqa: E402
from taskyard.ops.migration import init_database  # noqa: E402

SETTINGS = """\
[production.task_execution]
backend = "sqlite"
queue_db_path = "queue.db"
max_concurrency = 10
shutdown_timeout = 30.0
worker_app = "benchmarks.rollback:HANDLERS"

[production.logging]
enabled = false
"""


async def work(payload: dict[str, Any]) -> int:
    await asyncio.sleep(0.05)
    return int(payload["n"])


async def mark(payload: dict[str, Any]) -> str:
    Path(payload["file"]).touch()
    return "marked"


HANDLERS = {"work": work, "mark": mark}


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_")}
    return {**base, "TASKYARD_ENV": "production", "PYTHONPATH": str(ROOT), **extra}


def fill(db: Path, count: int) -> None:
    async def run() -> None:
        store = SqliteStore(db)
        await store.open()
        try:
            for start in range(0, count, 10_000):
                records = [
                    TaskRecord(id=f"task-{n:07d}", type="work", payload={"n": n, "pad": "x" * 64})
                    for n in range(start, min(start + 10_000, count))
                ]
                await store.add(records)
        finally:
            await store.close()

    init_database(db)
    asyncio.run(run())


def start_worker(folder: Path, **extra: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "taskyard", "worker"],
        cwd=folder,
        env=env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "taskyard worker ready" not in line:
        raise RuntimeError(f"the worker did not start: {line!r}")
    return process


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    if process.stdout is not None:
        process.stdout.close()


def wait_until(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("gave up waiting")
        time.sleep(0.005)


def taskyard(folder: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "taskyard", *args],
        cwd=folder,
        env=env(**extra),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"taskyard {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


def schedule_marker(folder: Path, marker: Path) -> None:
    """Schedule one `mark` task into the SQLite queue, ahead of the others."""
    code = (
        "import asyncio, sys\n"
        "from taskyard.backends.sqlite import SqliteStore\n"
        "from taskyard.framework.models import TaskRecord\n"
        "async def main():\n"
        "    store = SqliteStore('queue.db')\n"
        "    await store.open()\n"
        f"    rec = TaskRecord(id='marker', type='mark', payload={{'file': {str(marker)!r}}},"
        " priority=-1)\n"
        "    await store.add([rec])\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=folder, env=env(), check=True)


def one_run(count: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="taskyard-rollback-bench-") as scratch:
        folder = Path(scratch)
        (folder / "settings.toml").write_text(SETTINGS)
        fill(folder / "queue.db", count)
        worker = start_worker(folder)
        try:
            time.sleep(0.5)  # let it get busy: handlers in flight when the rollback starts
            started = time.perf_counter()
            done = taskyard(
                folder,
                "rollback", "--to", "in-memory", "--export-queue-state", "queue-state.jsonl",
                "--reason", "benchmark", "--json",
            )  # fmt: skip
            figures["planned rollback (total)"] = time.perf_counter() - started
            report = json.loads(done.stdout)["rollback"]
            for step, seconds in report["seconds"].items():
                figures[f"  of which {step}"] = seconds
            exported = report["export"]["tasks"]
            if exported < count - 1000:
                raise RuntimeError(f"only {exported} task(s) exported")
            figures["unfinished tasks exported"] = exported
            figures["export file (MB)"] = (folder / "queue-state.jsonl").stat().st_size / 1e6
        finally:
            stop(worker)
        (folder / "settings.local.toml").unlink()  # back to sqlite for the emergency case

        worker = start_worker(folder)
        try:
            time.sleep(0.5)
            started = time.perf_counter()
            stop(worker)
            marker = folder / "memory-marker"
            code = (
                "import asyncio\n"
                "from pathlib import Path\n"
                "from taskyard.providers import Container\n"
                "from benchmarks.rollback import HANDLERS\n"
                "async def main():\n"
                "    manager = Container().task_manager()\n"
                "    for t, h in HANDLERS.items():\n"
                "        await manager.register_task(t, h)\n"
                "    async with manager:\n"
                f"        i = await manager.schedule_task('mark', {{'file': {str(marker)!r}}})\n"
                "        await manager.wait_for(i, timeout=60)\n"
                "asyncio.run(main())\n"
            )
            subprocess.run(
                [sys.executable, "-c", code],
                cwd=folder,
                env=env(TASKYARD_TASK_EXECUTION__BACKEND="in-memory"),
                check=True,
            )
            figures["emergency rollback (stop, restart on in-memory, first task)"] = (
                time.perf_counter() - started
            )
        finally:
            stop(worker)

        marker = folder / "sqlite-marker"
        schedule_marker(folder, marker)
        started = time.perf_counter()
        worker = start_worker(folder)
        try:
            wait_until(marker.exists)
            figures["switch back (start on sqlite, first waiting task)"] = (
                time.perf_counter() - started
            )
        finally:
            stop(worker)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.tasks) for _ in range(args.runs)]
    print(
        f"taskyard rollback figures: {args.tasks:,} unfinished tasks, {args.runs} run(s), "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPU(s), {platform.machine()}"
    )
    width = max(len(name) for name in runs[0])
    for name in runs[0]:
        values = [run[name] for run in runs]
        median = statistics.median(values)
        if name.startswith(("unfinished", "export file")):
            print(f"  {name:<{width}}  {median:,.1f}")
        else:
            print(
                f"  {name:<{width}}  {median:6.2f} s   (min {min(values):.2f}, "
                f"max {max(values):.2f})"
            )


if __name__ == "__main__":
    main()
