"""Operations commands against a queue that a live process is using: nothing it writes
afterwards may be lost.

Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
included. A process whose locks are gone looks absent: the next other process to close
its last connection checkpoints and deletes the WAL, and what the first process commits
afterwards goes to a deleted file, visible to no one else. Opening a store in a process
that already has the file open (the run registry's connection, then the store's, as the
container does) must therefore never open and close the file outside SQLite.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from taskyard.backends.sqlite import SqliteRunPersistence, SqliteStore

from .conftest import ROOT, Queue, task


def count_elsewhere(db: Path) -> int:
    """The number of tasks another process sees."""
    code = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "print(conn.execute('SELECT COUNT(*) FROM taskyard_tasks').fetchone()[0])\n"
        "conn.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(db)], check=True, capture_output=True, text=True
    )
    return int(out.stdout)


def test_a_status_command_does_not_make_a_live_process_lose_its_writes(queue: Queue) -> None:
    async def live_process() -> tuple[int, int]:
        runs = SqliteRunPersistence(queue.path)  # opened first, as the container does
        store = SqliteStore(queue.path)
        await store.open()
        try:
            await store.add([task()])
            subprocess.run(  # an operator looks at the queue, and the command exits
                [sys.executable, "-m", "taskyard", "status", "--json"],
                cwd=ROOT,
                env={
                    "PATH": "/usr/bin:/bin",
                    "TASKYARD_ENV": "testing",
                    "TASKYARD_TASK_EXECUTION__BACKEND": "sqlite",
                    "TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH": str(queue.path),
                    "PYTHONPATH": str(ROOT),
                },
                check=True,
                capture_output=True,
            )
            await store.add([task()])  # written after the command closed its connection
            return count_elsewhere(queue.path), len(await store.list_tasks())
        finally:
            await store.close()
            runs.close()

    elsewhere, here = asyncio.run(live_process())
    assert here == 2
    assert elsewhere == 2
    assert count_elsewhere(queue.path) == 2
