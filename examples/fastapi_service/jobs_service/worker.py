"""The worker process's entry point::

    taskyard worker --app jobs_service.worker:register

taskyard's CLI builds the manager from the same settings (``task_execution.run_worker``
forced on) and calls :func:`register` before starting it.
"""

from __future__ import annotations

from jobs_service import telemetry
from jobs_service.containers import create_container
from jobs_service.jobs import HANDLERS
from taskyard import TaskManager


async def register(manager: TaskManager) -> None:
    telemetry.configure(create_container().config.service(), role="worker")
    for task_type, handler in HANDLERS.items():
        await manager.register_task(task_type, handler)
