"""What the contract suite needs around a backend: the manager factory behind the
``make_manager`` fixture, an in-memory backend factory that can be reopened, an event
recorder and a poll-with-deadline helper. Nothing here imports pytest."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from taskyard.backends.memory import InMemoryStore, InMemoryTaskManager
from taskyard.framework.engine import EngineConfig
from taskyard.framework.events import EventBus
from taskyard.framework.models import TaskEvent, TaskStatus
from taskyard.framework.protocol import TaskManager
from taskyard.framework.retry import RetryPolicy
from taskyard.framework.runs import RunRegistry
from taskyard.framework.store import TaskStore


class ContractManager(TaskManager, Protocol):
    """A :class:`TaskManager` with the engine's extras the suite inspects.

    Every :class:`~taskyard.framework.engine.TaskEngine` (any ``TaskStore`` behind it)
    is one.
    """

    events: EventBus
    store: TaskStore
    registry: RunRegistry | None

    @property
    def started(self) -> bool: ...

    async def schedule_many(self, requests: Sequence[Mapping[str, Any]]) -> list[str]: ...

    async def count_by_status(self) -> dict[str, int]: ...

    async def cancel_workflow(self, workflow_id: str) -> list[str]: ...


BackendFactory = Callable[[EngineConfig, Path], ContractManager]
"""``(config, location) -> unstarted manager``. ``location`` is an existing empty
directory the backend may put its files in; called again with the same ``location``,
the factory must return a manager on the same storage (that is how the suite reopens
a store)."""


class MakeManager(Protocol):
    """The ``make_manager`` fixture's value."""

    def __call__(
        self, *, same_store: bool = False, **config_overrides: Any
    ) -> Awaitable[ContractManager]: ...


def fast_config(**overrides: Any) -> EngineConfig:
    """Engine settings for tests: quick polls and retries, no jitter."""
    values: dict[str, Any] = {
        "concurrency": 4,
        "poll_interval": 0.05,
        "lease_seconds": 10.0,
        "retry": RetryPolicy(initial=0.01, multiplier=2, max_delay=0.05, jitter=0),
        "default_max_attempts": 3,
        "shutdown_timeout": 2.0,
    }
    values.update(overrides)
    return EngineConfig(**values)


class ManagerFactory:
    """The ``make_manager`` fixture: ``await factory(**config_overrides)`` builds a manager
    with :func:`fast_config` plus the overrides (``EngineConfig`` field names), starts it
    and returns it; ``same_store=True`` opens it on the storage location of the manager
    made just before instead of a fresh one. :meth:`aclose` stops every manager made,
    newest first.

    Usage in a ``conftest.py``::

        @pytest.fixture
        async def make_manager(tmp_path):
            async with ManagerFactory(my_backend, tmp_path) as factory:
                yield factory
    """

    def __init__(
        self,
        backend: BackendFactory,
        root: Path,
        *,
        config: EngineConfig | None = None,
        stop_timeout: float = 1.0,
    ) -> None:
        self.backend = backend
        self.root = Path(root)
        self.config = config or fast_config()
        self.stop_timeout = stop_timeout
        self.managers: list[ContractManager] = []
        self.locations: list[Path] = []

    async def __call__(
        self, *, same_store: bool = False, **config_overrides: Any
    ) -> ContractManager:
        config = dataclasses.replace(self.config, **config_overrides)
        if same_store:
            if not self.locations:
                raise RuntimeError("same_store=True needs a manager made before it")
            location = self.locations[-1]
        else:
            location = self.root / f"store-{len(self.locations)}"
            location.mkdir(parents=True)
        self.locations.append(location)
        manager = self.backend(config, location)
        self.managers.append(manager)
        await manager.start()
        return manager

    async def aclose(self) -> None:
        """Stop every manager made (a stopped one is left alone), newest first."""
        errors: list[BaseException] = []
        while self.managers:
            manager = self.managers.pop()
            try:
                await manager.stop(timeout=self.stop_timeout)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


_memory_stores: weakref.WeakValueDictionary[Path, InMemoryStore] = weakref.WeakValueDictionary()


def in_memory_backend(config: EngineConfig, location: Path) -> InMemoryTaskManager:
    """The in-memory backend as a :data:`BackendFactory`: managers made for the same
    ``location`` share one store for as long as one of them is alive (nothing survives
    the process: the store lacks ``Capability.DURABLE``)."""
    store = _memory_stores.get(location)
    if store is None:
        store = InMemoryStore()
        _memory_stores[location] = store
    return InMemoryTaskManager(config, store=store)


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 5.0,
    interval: float = 0.005,
    message: str = "the condition",
) -> None:
    """The one poll-until helper of the tests: poll ``predicate`` (sync or async) until it
    is true; AssertionError naming ``message`` after ``timeout`` seconds. Never a sleep
    as synchronisation: the deadline only bounds a wait for something that happens."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} did not hold within {timeout} s")
        await asyncio.sleep(interval)


def poll_until(
    predicate: Callable[[], object],
    *,
    timeout: float = 60.0,
    interval: float = 0.02,
    message: str = "the condition",
) -> None:
    """:func:`wait_until` for code without an event loop (tests driving subprocesses):
    blocks between polls."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} did not hold within {timeout} s")
        time.sleep(interval)


class EventRecorder:
    """Records what an :class:`EventBus` publishes, from now until :meth:`close`."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[TaskEvent] = []
        self._unsubscribe = bus.subscribe(self.events.append)

    def for_task(self, task_id: str) -> list[TaskEvent]:
        return [event for event in self.events if event.task_id == task_id]

    def statuses(self, task_id: str) -> list[str]:
        """The statuses published for ``task_id``, in order, as plain strings."""
        return [str(event.status) for event in self.for_task(task_id)]

    def first(self, task_id: str, status: TaskStatus | str, *, nth: int = 1) -> TaskEvent:
        """The ``nth`` event with ``status`` for ``task_id``; AssertionError when missing."""
        matching = [event for event in self.for_task(task_id) if event.status == status]
        if len(matching) < nth:
            raise AssertionError(
                f"no event #{nth} {status} for {task_id}: {self.statuses(task_id)}"
            )
        return matching[nth - 1]

    def close(self) -> None:
        self._unsubscribe()
