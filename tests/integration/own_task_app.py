"""A process whose own worker runs the task it schedules: ``python -m
tests.integration.own_task_app N``. Builds its manager with ``Container()`` from the
``TASKYARD_*`` environment (backend, file or DSN, lease), schedules ``hang_once`` with
payload ``{"n": N}``, prints the task's id, and waits until it is killed. With a free slot
the engine claims that task in the write that adds it (Capability.CLAIM_ON_ADD)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from taskyard.framework.models import TaskRecord
from taskyard.providers import Container
from tests.integration.worker_app import HANDLERS

ROOT = Path(__file__).resolve().parents[2]


async def main(name: str) -> None:
    manager = Container().task_manager()
    for task_type, handler in HANDLERS.items():
        await manager.register_task(task_type, handler)
    print(await manager.schedule_task("hang_once", {"n": name}), flush=True)
    await asyncio.Event().wait()


def spawn(env: dict[str, str], name: str) -> tuple[subprocess.Popen[bytes], str]:
    """Run this module in a process with ``env``; return the process and the id of the
    task it scheduled (it prints the id once the task is stored)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.own_task_app", name],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().decode().strip()


def assert_claimed_by(record: TaskRecord | None, process: subprocess.Popen[bytes]) -> None:
    """The row went in running, attempt 1, under the lease of ``process``'s worker."""
    assert record is not None
    assert (record.status, record.attempts) == ("running", 1)
    assert record.worker_id is not None and record.worker_id.endswith(f":{process.pid}")
    assert record.lease_token is not None and record.lease_expires_at is not None


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
