"""The application's orchestrator: submits work as runs and keeps them in step with tasks."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from taskyard.framework.engine import TaskEngine
from taskyard.framework.events import EventBus
from taskyard.framework.models import TaskEvent, TaskStatus
from taskyard.framework.protocol import TaskManager
from taskyard.framework.runs import Run, RunRegistry, RunStatus
from taskyard.framework.workflows import Shape, StepLike, chain, chord, expand, group, step


class TaskOrchestrator:
    """Receives its :class:`TaskManager` by injection and never names a backend.

    Each submitted task becomes a :class:`Run` whose ``run_id`` is the task id; the
    run follows the task's status events (queued, running, completed with exit code
    0, failed with the error, cancelled).
    """

    def __init__(
        self,
        task_manager: TaskManager,
        registry: RunRegistry,
        events: EventBus | None = None,
    ) -> None:
        self.task_manager = task_manager
        self.registry = registry
        if events is None and isinstance(task_manager, TaskEngine):
            events = task_manager.events
        self._unsubscribe: Callable[[], None] | None = (
            events.subscribe(self._on_event) if events is not None else None
        )

    def close(self) -> None:
        """Stop following task events."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_event(self, event: TaskEvent) -> None:
        run = self.registry.get_run(event.task_id)
        if run is None:
            return
        _follow(run, event.status, at=event.at, error=event.error)
        self.registry.save_run(run)

    async def submit(
        self,
        module_id: str,
        task_type: str,
        payload: dict[str, Any] | None = None,
        *,
        module_name: str = "",
        items_total: int | None = None,
        **options: Any,
    ) -> Run:
        """Schedule ``task_type`` as a run of ``module_id``; options go to schedule_task."""
        run = Run(
            module_id=module_id,
            module_name=module_name or module_id,
            parameters=dict(payload or {}),
            items_total=items_total,
            status=RunStatus.QUEUED,
        )
        self.registry.add_run(run)
        try:
            await self.task_manager.schedule_task(
                task_type, payload or {}, task_id=run.run_id, **options
            )
        except BaseException:
            run.mark_finished(RunStatus.FAILED, error_message="refused by the task manager")
            self.registry.save_run(run)
            raise
        return run

    async def submit_workflow(
        self,
        module_id: str,
        shape: Shape | StepLike,
        *,
        module_name: str = "",
        items_total: int | None = None,
    ) -> Run:
        """Schedule a workflow (:meth:`chain`, :meth:`group`, :meth:`chord`, composed as
        deep as needed) in one store write, as one run whose ``run_id`` is the workflow's
        id: the id of its last task, which ``wait_for_run`` follows. The run is waiting
        until that task is released, and finishes with it (its error says which step
        failed). ``cancel_run`` cancels every step that has not finished."""
        if not isinstance(self.task_manager, TaskEngine):
            raise TypeError("workflows need a taskyard TaskEngine as the task manager")
        requests, last = expand(shape)
        run = Run(
            module_id=module_id,
            module_name=module_name or module_id,
            run_id=last,
            parameters={"_workflow": True, "steps": len(requests)},
            items_total=items_total,
            status=RunStatus.WAITING,
        )
        self.registry.add_run(run)
        try:
            await self.task_manager.schedule_many(requests)
        except BaseException:
            run.mark_finished(RunStatus.FAILED, error_message="refused by the task manager")
            self.registry.save_run(run)
            raise
        return run

    chain = staticmethod(chain)
    group = staticmethod(group)
    chord = staticmethod(chord)
    step = staticmethod(step)

    def start_run(self, run: Run, coro: Coroutine[Any, Any, Any]) -> str:
        """Run an ad-hoc coroutine as ``run`` (the older ``start_task`` path)."""
        return self.task_manager.start_task(run, coro)

    async def get_run(self, run_id: str) -> Run | None:
        run = self.registry.get_run(run_id)
        if run is not None and not run.status.is_terminal:
            await self._refresh(run)
        return run

    async def cancel_run(self, run_id: str) -> bool:
        run = self.registry.get_run(run_id)
        if run is None or run.status.is_terminal:
            return False
        if run.parameters.get("_adhoc"):
            return False
        if run.parameters.get("_workflow") and isinstance(self.task_manager, TaskEngine):
            return bool(await self.task_manager.cancel_workflow(run_id))
        return await self.task_manager.cancel_task(run_id)

    async def wait_for_run(self, run_id: str, timeout: float | None = None) -> Run:
        run = self.registry.get_run(run_id)
        if run is None:
            raise KeyError(run_id)
        if not run.parameters.get("_adhoc"):
            await self.task_manager.wait_for(run_id, timeout=timeout)
            await self._refresh(run)
        return run

    def list_runs(self, status: RunStatus | str | None = None) -> list[Run]:
        if status is None:
            return self.registry.get_recent_runs(limit=len(self.registry))
        return self.registry.get_runs_by_status(status)

    async def _refresh(self, run: Run) -> None:
        """Bring a run up to date from its task (a task run by another process)."""
        info = await self.task_manager.get_task_status(run.run_id)
        if info is None:
            return
        status = TaskStatus(info["status"])
        if RunStatus.from_task_status(status) is run.status:
            return
        run.started_at = run.started_at or _parse(info["started_at"])
        at = _parse(info["finished_at"] if status.is_terminal else info["started_at"])
        _follow(run, status, at=at, error=info["error"])
        self.registry.save_run(run)


def _follow(run: Run, task_status: TaskStatus, *, at: datetime | None, error: str | None) -> None:
    """Bring ``run`` to its task's status: running, finished (with the error), or queued
    again (a retry, with the last attempt's error)."""
    status = RunStatus.from_task_status(task_status)
    if status is RunStatus.RUNNING:
        run.mark_running(at)
    elif status.is_terminal:
        run.mark_finished(status, at=at, error_message=error)
    else:
        run.status = status
        run.error_message = error


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
