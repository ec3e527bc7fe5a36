"""The dependency-injector container: settings choose the backend, code never does.

::

    container = Container()                    # settings from Dynaconf, TASKYARD_ENV
    orchestrator = container.orchestrator()    # receives the manager the settings select
    async with container.task_manager() as manager:
        ...

Tests swap parts with the container's own overriding, never by monkeypatching::

    container = Container(settings=load_settings(overrides={"task_execution.backend": "x"}))
    with container.config.task_execution.max_concurrency.override(2): ...
    with container.task_manager.override(providers.Object(fake_manager)): ...

Adding a backend means replacing its entry in :attr:`Container.task_manager`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NoReturn, Self

from dependency_injector import containers, providers

from taskyard.backends.memory import InMemoryTaskManager
from taskyard.framework.errors import BackendNotAvailable
from taskyard.framework.events import EventBus
from taskyard.framework.orchestrator import TaskOrchestrator
from taskyard.framework.protocol import TaskManager
from taskyard.framework.runs import RunRegistry
from taskyard.settings import (
    canonical_backend,
    engine_config_from_settings,
    load_settings,
    settings_as_dict,
)

__all__ = ["Container", "backend_not_available", "run_task_manager", "selector_key"]


def selector_key(backend: str) -> str:
    """The entry of :attr:`Container.task_manager` for a backend name:
    ``sqlite-with-fallback`` -> ``sqlite_with_fallback``."""
    return backend.replace("-", "_")


def backend_not_available(name: str) -> NoReturn:
    """The provider of a backend that is not built yet."""
    raise BackendNotAvailable(
        f"the {name!r} backend (task_execution.backend) is not available yet; use "
        '"in-memory": set task_execution.backend = "in-memory" in your settings, or '
        "TASKYARD_TASK_EXECUTION__BACKEND=in-memory"
    )


async def run_task_manager(task_manager: TaskManager) -> AsyncIterator[TaskManager]:
    """A Resource: starts the manager on ``init_resources()``, stops it (draining
    within the shutdown timeout) on ``shutdown_resources()``."""
    await task_manager.start()
    try:
        yield task_manager
    finally:
        await task_manager.stop()


class Container(containers.DeclarativeContainer):
    """taskyard's wiring. ``Container()`` loads the settings of the environment named by
    ``TASKYARD_ENV`` (validated); ``Container(settings=load_settings(...))`` takes the
    Dynaconf settings given. Keyword arguments other than ``settings`` override
    providers, as for any dependency-injector container.

    Providers:

    ``config``
        the settings as plain dicts (``config.task_execution.backend()``); strict, so a
        misspelt option raises instead of giving None.
    ``settings``
        the Dynaconf object itself (an application's own sections live there too).
    ``engine_config``
        the :class:`~taskyard.framework.engine.EngineConfig` of ``task_execution``.
    ``events``, ``registry``
        the :class:`EventBus` and the :class:`RunRegistry` (``runs.*``), singletons.
    ``backend``
        the canonical backend name (``queue`` is ``sqlite``).
    ``task_manager``
        a Selector on ``backend``, one entry per backend (``in_memory``, ``sqlite``,
        ``sqlite_with_fallback``, ``postgres``), each a singleton.
    ``task_manager_lifecycle``
        a Resource that starts and stops the selected manager.
    ``orchestrator``
        the :class:`TaskOrchestrator` over the selected manager and the registry.
    """

    config = providers.Configuration(strict=True)
    settings: providers.Object[Any] = providers.Object(None)

    engine_config = providers.Singleton(engine_config_from_settings, config.task_execution)
    events = providers.Singleton(EventBus)
    registry = providers.Singleton(
        RunRegistry,
        history_file=config.runs.history_file,
        max_history=config.runs.max_history,
    )

    backend = providers.Callable(canonical_backend, config.task_execution.backend)
    task_manager = providers.Selector(
        providers.Callable(selector_key, backend),
        in_memory=providers.Singleton(
            InMemoryTaskManager, engine_config, registry=registry, events=events
        ),
        # Becomes providers.Singleton(QueuedTaskManager, engine_config,
        # db_path=config.task_execution.queue_db_path, ..., registry=registry,
        # events=events) when the SQLite backend lands.
        sqlite=providers.Callable(backend_not_available, "sqlite"),
        sqlite_with_fallback=providers.Callable(backend_not_available, "sqlite-with-fallback"),
        postgres=providers.Callable(backend_not_available, "postgres"),
    )
    task_manager_lifecycle = providers.Resource(run_task_manager, task_manager)

    orchestrator = providers.Singleton(
        TaskOrchestrator, task_manager=task_manager, registry=registry
    )

    def __new__(cls, *, settings: Any = None, **overriding_providers: Any) -> Self:
        container = super().__new__(cls)
        if settings is None:
            settings = load_settings()
        container.settings.set_provides(settings)
        container.config.from_dict(settings_as_dict(settings))
        if overriding_providers:
            container.override_providers(**overriding_providers)
        return container
