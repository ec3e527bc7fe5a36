"""The public face: the interface applications already call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    from taskyard.framework.runs import Run

Handler = Callable[[Any], Any] | Callable[[Any], Awaitable[Any]] | Callable[[Any, Any], Any]
"""A sync or async callable that takes the payload and returns a JSON-representable result.
One that declares a second parameter also receives a
:class:`~taskyard.framework.workflows.TaskContext` (task id, attempt, dependency results)."""


@runtime_checkable
class TaskManager(Protocol):
    """What an application depends on. Every backend provides exactly this."""

    async def register_task(
        self,
        task_type: str,
        handler: Handler,
        *,
        timeout: float | None = None,
        max_attempts: int | None = None,
    ) -> None:
        """Register ``handler`` for ``task_type``, replacing any earlier one.

        A coroutine function runs on the event loop; any other callable runs in a
        thread pool, never on the loop. ``timeout`` (seconds) and ``max_attempts``
        override the settings' defaults for this type.
        Raises ``InvalidTaskOptions`` for an empty type or a non-callable handler.
        """
        ...

    async def schedule_task(
        self,
        task_type: str,
        payload: Any = None,
        *,
        priority: int = 5,
        run_after: datetime | None = None,
        delay: float | timedelta | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        task_id: str | None = None,
        depends_on: Iterable[str] | None = None,
        on_dependency_failure: str = "cancel",
        concurrency_key: str | None = None,
    ) -> str:
        """Accept a task and return its id; it is stored (durably, on durable backends)
        once this returns.

        Lower ``priority`` runs first, equal priorities in scheduling order.
        ``run_after`` (an aware datetime) or ``delay`` (seconds or timedelta) hold the
        task back. Scheduling an ``idempotency_key`` already known returns the existing
        task's id and stores nothing.
        Raises ``UnknownTaskType``, ``PayloadError`` or ``InvalidTaskOptions``
        (nothing is stored then), ``ManagerStateError`` while stopping or once
        stopped, ``StoreError`` when the store cannot take it.

        ``depends_on`` (task ids) holds the task ``waiting`` until each has finished;
        when one ends failed or cancelled, ``on_dependency_failure="cancel"`` cancels
        this task (and what depends on it), ``"run"`` runs it anyway. An unknown id
        raises ``DependencyError``. Tasks with the same ``concurrency_key`` run at most
        the configured limit at once, across processes (``[default.concurrency_limits]``).
        Both need a store with that capability (``InvalidTaskOptions`` otherwise).
        """
        ...

    async def get_task_status(self, task_id: str) -> dict[str, Any] | None:
        """The status dict (``id, type, status, priority, attempts, max_attempts,
        payload, result, error, created_at, updated_at, run_after, started_at,
        finished_at``; aware ISO 8601 UTC times), or None for an unknown id."""
        ...

    async def cancel_task(self, task_id: str) -> bool:
        """Cancel a waiting, queued or running task. Returns True when it was cancelled, False
        when it had already finished or is unknown. A queued task never starts; a
        running async handler is cancelled; a running sync handler's result is
        discarded. The task ends ``cancelled``."""
        ...

    async def wait_for(self, task_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the task is terminal and return its status dict.

        Raises ``TaskNotFound`` for an unknown id and ``TimeoutError`` when it is
        still unfinished after ``timeout`` seconds."""
        ...

    async def start(self) -> None:
        """Open the store and, if this manager runs a worker, start claiming."""
        ...

    async def stop(self, timeout: float | None = None) -> None:
        """Stop claiming, let running handlers finish until ``timeout`` (the settings'
        shutdown timeout by default), then cancel the rest, which return to
        ``queued`` with the interrupted attempt not counted. Safe to call twice.
        Once stopped, nothing new starts: calls other than ``start()`` raise
        ``ManagerStateError`` instead of starting the manager again."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    # -- the older calls, kept with their old meaning ------------------------------------

    def start_task(self, run: Run, coro: Coroutine[Any, Any, Any]) -> str:
        """Run an ad-hoc coroutine now, keeping ``run`` up to date in the RunRegistry
        (running, then completed with exit_code 0, failed with error_message, or
        cancelled). Returns the run id."""
        ...

    async def wait_all(self, timeout: float | None = None) -> None:
        """Wait for every ad-hoc run and every task scheduled through this manager to
        finish. Raises ``TimeoutError`` after ``timeout`` seconds."""
        ...

    def get_active_task_count(self) -> int:
        """How many ad-hoc runs and tasks scheduled through this manager are unfinished."""
        ...

    def get_active_task_ids(self) -> list[str]:
        """Their ids."""
        ...

    def is_task_active(self, task_id: str) -> bool:
        """Whether that run or task is unfinished, as far as this manager knows."""
        ...
