"""A program that returns from ``asyncio.run`` without stopping its manager still exits,
and the tasks its manager had claimed go back to the queue (issue 9, item 1)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import asyncio
import sys

from loguru import logger

from taskyard.providers import Container

logger.enable("taskyard")
logger.remove()
logger.add(sys.stderr, level="INFO")

async def forever(payload):
    await asyncio.sleep(3600)

async def main():
    manager = Container().task_manager()
    await manager.register_task("forever", forever)
    first = await manager.schedule_task("forever", {})      # starts the manager
    second = await manager.schedule_task("forever", {})
    claimed = [first, second][: 1 + int(sys.argv[1])]        # running, and prefetched
    # (no claim in flight as the loop closes: one would hold its lease until it expires)
    while [(await manager.get_task_status(i))["status"] for i in claimed] != ["running"] * len(
        claimed
    ):
        await asyncio.sleep(0.01)
    print("returning without stop()", flush=True)

asyncio.run(main())
print("exited", flush=True)
"""


@pytest.mark.parametrize("prefetch", ["0", "1"])
def test_a_process_that_never_stops_its_manager_exits_and_releases_its_tasks(
    tmp_path: Path, prefetch: str
) -> None:
    db = tmp_path / "queue.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_")}
    env.update(
        TASKYARD_ENV="development",
        TASKYARD_TASK_EXECUTION__BACKEND="sqlite",
        TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH=str(db),
        TASKYARD_TASK_EXECUTION__MAX_CONCURRENCY="1",
        TASKYARD_TASK_EXECUTION__PREFETCH=prefetch,
        TASKYARD_TASK_EXECUTION__SHUTDOWN_TIMEOUT="5",
        TASKYARD_SETTINGS_FILES="",
        PYTHONPATH=str(ROOT),
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROGRAM, prefetch],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,  # a hang, not a speed limit: before the fix it never returned
        )
    except subprocess.TimeoutExpired as exc:  # the child is killed by subprocess.run
        pytest.fail(f"the process did not exit: {exc.stdout!r} {exc.stderr!r}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["returning without stop()", "exited"]
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT status, attempts, lease_token FROM taskyard_tasks ORDER BY seq"
        ).fetchall()
    # the running task and the waiting (or prefetched) one are queued again, the
    # interrupted attempt not counted, no lease left behind
    assert rows == [("queued", 0, None), ("queued", 0, None)], done.stderr
    assert "the task manager was never stopped" in done.stderr
