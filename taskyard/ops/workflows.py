"""Workflows for operators: a task's dependencies, and a workflow's steps as a tree, on
an open store (:func:`taskyard.ops.database.opened`), through the store's own reads
(:meth:`~taskyard.framework.store.TaskStore.workflow_tasks` and friends)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from taskyard.framework.errors import TaskNotFound
from taskyard.framework.models import TaskRecord, TaskStatus, iso, utcnow
from taskyard.framework.store import TaskStore


@dataclass(frozen=True)
class Workflow:
    """A workflow's tasks in scheduling order, each with its stage: 1 for tasks without
    a dependency inside the workflow, else one more than its latest dependency's."""

    workflow_id: str
    tasks: list[TaskRecord]
    stages: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """The last task's status once it has finished; before, ``running`` when any step
        has started, else ``waiting``."""
        last = self.tasks[-1]
        if last.status.is_terminal:
            return str(last.status)
        if any(t.started_at is not None or t.status.is_terminal for t in self.tasks):
            return "running"
        return "waiting"

    def counts(self) -> dict[str, int]:
        counted = Counter(str(task.status) for task in self.tasks)
        return {str(status): counted[str(status)] for status in TaskStatus if counted[str(status)]}

    def by_stage(self) -> list[list[TaskRecord]]:
        stages: dict[int, list[TaskRecord]] = {}
        for task in self.tasks:
            stages.setdefault(self.stages[task.id], []).append(task)
        return [stages[number] for number in sorted(stages)]

    def summary(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "status": self.status,
            "tasks": len(self.tasks),
            "stages": max(self.stages.values()),
            "counts": self.counts(),
            "created_at": iso(self.tasks[0].created_at),
        }

    def details(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "steps": [
                {
                    "id": task.id,
                    "type": task.type,
                    "status": str(task.status),
                    "stage": self.stages[task.id],
                    "depends_on": list(task.depends_on),
                    "error": task.error,
                }
                for task in self.tasks
            ],
        }


async def task_links(store: TaskStore, task_id: str) -> dict[str, Any]:
    """``depends_on``, ``dependents``, ``workflow_id`` and ``concurrency_key`` of a task."""
    record = await store.get(task_id)
    if record is None:
        raise TaskNotFound(f"no task has the id {task_id!r}")
    return {
        "depends_on": await store.dependencies(task_id),
        "dependents": await store.dependents(task_id),
        "on_dependency_failure": record.on_dependency_failure,
        "workflow_id": record.workflow_id,
        "concurrency_key": record.concurrency_key,
    }


async def show_workflow(store: TaskStore, workflow_id: str) -> Workflow:
    """The workflow's tasks and stages, or TaskNotFound."""
    tasks = await store.workflow_tasks(workflow_id)
    if not tasks:
        raise TaskNotFound(
            f"no workflow has the id {workflow_id!r} (a workflow's id is its last task's: "
            "taskyard workflows list shows them)"
        )
    stages: dict[str, int] = {}
    for task in tasks:  # scheduling order lists every task after its dependencies
        stages[task.id] = 1 + max((stages.get(p, 0) for p in task.depends_on), default=0)
    return Workflow(workflow_id, tasks, stages)


async def list_workflows(store: TaskStore, *, limit: int = 20) -> list[Workflow]:
    """The newest workflows, newest first (one read per workflow)."""
    return [await show_workflow(store, wid) for wid in await store.workflow_ids(limit=limit)]


async def cancel_workflow(store: TaskStore, workflow_id: str) -> list[str]:
    """Cancel every step that has not finished, the last first (so none is released
    meanwhile); returns their ids. Running steps stop at their worker's next heartbeat."""
    workflow = await show_workflow(store, workflow_id)
    cancelled = []
    for task in reversed(workflow.tasks):
        if task.status.is_terminal:
            continue
        before = await store.cancel(task.id, now=utcnow())
        if before is not None and not before.is_terminal:
            cancelled.append(task.id)
    logger.info(
        "taskyard workflow {} cancelled by an operator ({} step(s))", workflow_id, len(cancelled)
    )
    return cancelled
