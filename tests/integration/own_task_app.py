"""A process whose own worker runs the task it schedules: ``python -m
tests.integration.own_task_app N``. Builds its manager with ``Container()`` from the
``TASKYARD_*`` environment (backend, file or DSN, lease), schedules ``hang_once`` with
payload ``{"n": N}``, prints the task's id, and waits until it is killed. With a free slot
the engine claims that task in the write that adds it (Capability.CLAIM_ON_ADD)."""

from __future__ import annotations

import asyncio
import sys

from taskyard.providers import Container
from tests.integration.worker_app import HANDLERS


async def main(name: str) -> None:
    manager = Container().task_manager()
    for task_type, handler in HANDLERS.items():
        await manager.register_task(task_type, handler)
    print(await manager.schedule_task("hang_once", {"n": name}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
