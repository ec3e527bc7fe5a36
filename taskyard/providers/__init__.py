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

Adding a backend means one more branch in :func:`make_store`; the engine, the manager and
the operations store follow from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, Self

from dependency_injector import containers, providers
from loguru import logger

from taskyard.backends.canary import CanaryStore
from taskyard.backends.fallback import FallbackStore
from taskyard.backends.memory import InMemoryStore
from taskyard.backends.sqlite import SqliteRunPersistence, SqliteStore
from taskyard.framework.engine import TaskEngine
from taskyard.framework.errors import BackendNotAvailable, ConfigurationError, StoreUnavailable
from taskyard.framework.events import EventBus
from taskyard.framework.operations import StoreOperations
from taskyard.framework.orchestrator import TaskOrchestrator
from taskyard.framework.protocol import TaskManager
from taskyard.framework.runs import RunRegistry
from taskyard.framework.store import TaskStore
from taskyard.settings import (
    canonical_backend,
    engine_config_from_settings,
    load_settings,
    settings_as_dict,
)

__all__ = [
    "Container",
    "backend_not_available",
    "canary_backend",
    "durable_ops_store",
    "effective_backend",
    "make_handover_store",
    "make_ops_store",
    "make_postgres_store",
    "make_registry",
    "make_selected_store",
    "make_store",
    "run_task_manager",
]


def backend_not_available(name: str) -> NoReturn:
    """The provider of a backend that is not built yet."""
    raise BackendNotAvailable(
        f"the {name!r} backend (task_execution.backend) is not available yet; use "
        '"in-memory": set task_execution.backend = "in-memory" in your settings, or '
        "TASKYARD_TASK_EXECUTION__BACKEND=in-memory"
    )


def effective_backend(task_execution: Mapping[str, Any]) -> str:
    """The backend the settings select: ``queue`` is ``sqlite``, and ``sqlite`` with
    ``queue_fallback_enabled = true`` is ``sqlite-with-fallback``."""
    backend = canonical_backend(task_execution["backend"])
    if backend == "sqlite" and task_execution.get("queue_fallback_enabled"):
        return "sqlite-with-fallback"
    return backend


def canary_backend(task_execution: Mapping[str, Any]) -> str | None:
    """The canary backend the settings name (``task_execution.canary_backend``), or None.
    Raises ConfigurationError when it is the backend already in use."""
    name = task_execution.get("canary_backend") or ""
    if not name:
        return None
    canary = canonical_backend(name)
    if canary == effective_backend(task_execution):
        raise ConfigurationError(
            f"task_execution.canary_backend = {name!r} is the backend already in use; "
            'name the backend being rolled out, or "" for no canary'
        )
    return canary


def sqlite_store(task_execution: Mapping[str, Any]) -> SqliteStore:
    """A new, unopened SQLite store on the settings' queue file."""
    return SqliteStore(
        task_execution["queue_db_path"],
        synchronous=str(task_execution["sqlite_synchronous"]),
        busy_timeout=float(task_execution["sqlite_busy_timeout"]),
    )


def postgres_backend() -> Any:
    """The ``taskyard.backends.postgres`` package, imported only when the backend is
    chosen; BackendNotAvailable (saying what to install) when asyncpg is missing."""
    try:
        import taskyard.backends.postgres as postgres
    except ImportError as exc:
        raise BackendNotAvailable(
            f"the 'postgres' backend needs asyncpg ({exc}); install it with "
            "pip install 'taskyard[postgres]', or choose another task_execution.backend"
        ) from exc
    return postgres


POSTGRES_OPEN_RETRY = 60.0
"""Seconds a manager's start waits (with backoff) for a PostgreSQL server that cannot be
reached yet: workers may start before their database. Other tools do not wait."""


def make_postgres_store(task_execution: Mapping[str, Any], *, open_retry: float = 0.0) -> TaskStore:
    """A new, unopened PostgreSQL store as ``task_execution.postgres_*`` describe it."""
    store: TaskStore = postgres_backend().PostgresStore(
        str(task_execution["postgres_dsn"]),
        schema_name=str(task_execution["postgres_schema"]),
        pool_size=int(task_execution["postgres_pool_size"]),
        open_retry=open_retry,
    )
    return store


def make_store(
    backend: str, task_execution: Mapping[str, Any], *, open_retry: float = 0.0
) -> TaskStore:
    """A new, unopened store of ``backend`` as the settings describe it (``open_retry``:
    how long a PostgreSQL store's open waits for an unreachable server)."""
    if backend == "postgres":
        return make_postgres_store(task_execution, open_retry=open_retry)
    if backend == "in-memory":
        return InMemoryStore()
    if backend in ("sqlite", "sqlite-with-fallback"):
        store = sqlite_store(task_execution)
        return FallbackStore(store) if backend == "sqlite-with-fallback" else store
    backend_not_available(backend)


def make_selected_store(task_execution: Mapping[str, Any]) -> TaskStore:
    """The one route from the settings to a store: the backend's store, or a
    :class:`CanaryStore` sending ``canary_share`` of new tasks to the canary backend's
    store and the rest to the backend in use. Raises ConfigurationError
    (BackendNotAvailable for a backend not built yet)."""
    wait = POSTGRES_OPEN_RETRY
    stable = make_store(effective_backend(task_execution), task_execution, open_retry=wait)
    canary = canary_backend(task_execution)
    if canary is None:
        return stable
    return CanaryStore(
        stable,
        make_store(canary, task_execution, open_retry=wait),
        share=float(task_execution["canary_share"]),
    )


def durable_ops_store(backend: str, task_execution: Mapping[str, Any]) -> StoreOperations | None:
    """A new store on the durable storage of ``backend`` (the SQLite file of the SQLite
    backends: the fallback's memory belongs to its process; the PostgreSQL schema), or
    None for a backend that keeps nothing outside its process."""
    if backend.startswith("sqlite"):
        return sqlite_store(task_execution)
    if backend == "postgres":
        store = make_postgres_store(task_execution)
        assert isinstance(store, StoreOperations)
        return store
    return None


def make_ops_store(task_execution: Mapping[str, Any]) -> StoreOperations:
    """A new store for the operations tools (status, tasks, maintenance, export,
    import, validate, rollback): the durable storage the settings select. With a canary
    between two durable backends (SQLite and PostgreSQL), a :class:`CanaryStore` over
    both (reads cover both, new tasks split by ``canary_share``); else the durable one
    of the backend and the canary, else an InMemoryStore: nothing durable to work on."""
    stable = durable_ops_store(effective_backend(task_execution), task_execution)
    canary_name = canary_backend(task_execution)
    canary = None if canary_name is None else durable_ops_store(canary_name, task_execution)
    if stable is not None and canary is not None:
        return CanaryStore(stable, canary, share=float(task_execution["canary_share"]))
    return stable or canary or InMemoryStore()


def make_handover_store(task_execution: Mapping[str, Any]) -> TaskStore | None:
    """Where an in-memory process hands its unfinished tasks at shutdown
    (:func:`taskyard.ops.migration.stop_and_hand_over`): the SQLite queue when the
    settings use it or when its file exists (a deployment rolled back to in-memory parks
    its tasks there, to run once SQLite is back), else None: nowhere durable."""
    store = make_ops_store(task_execution)
    if isinstance(store, SqliteStore) or Path(task_execution["queue_db_path"]).exists():
        return make_store("sqlite", task_execution)
    return None


def make_registry(
    runs: Mapping[str, Any], task_execution: Mapping[str, Any], backend: str
) -> RunRegistry:
    """The RunRegistry: runs in the queue's database on the SQLite and postgres backends (unless
    ``runs.keep_in_database = false``), else in ``runs.history_file`` or in memory."""
    max_history = int(runs["max_history"])
    if backend.startswith("sqlite") and runs.get("keep_in_database", True):
        try:
            persistence = SqliteRunPersistence(
                task_execution["queue_db_path"],
                busy_timeout=float(task_execution["sqlite_busy_timeout"]),
                synchronous=str(task_execution["sqlite_synchronous"]),
            )
        except StoreUnavailable as exc:
            if backend != "sqlite-with-fallback":
                raise
            logger.warning("taskyard: runs kept in memory only: {}", exc)
        else:
            return RunRegistry(persistence, max_history=max_history)
    if backend == "postgres" and runs.get("keep_in_database", True):
        try:
            pg_persistence = postgres_backend().PostgresRunPersistence(
                str(task_execution["postgres_dsn"]),
                schema_name=str(task_execution["postgres_schema"]),
            )
        except StoreUnavailable as exc:  # the server is away: the engine waits for it
            logger.warning("taskyard: runs kept in memory only: {}", exc)
        else:
            return RunRegistry(pg_persistence, max_history=max_history)
    return RunRegistry(history_file=runs["history_file"] or None, max_history=max_history)


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
    ``store``
        the store the settings select (:func:`make_selected_store`: the backend's, or a
        canary store when ``task_execution.canary_backend`` names a backend being rolled
        out), a singleton.
    ``task_manager``
        the :class:`~taskyard.framework.engine.TaskEngine` over ``store``, a singleton:
        one engine for every backend.
    ``ops_store``
        a new store on the selected durable storage, for operations tools.
    ``handover_store``
        where an in-memory process hands its tasks at shutdown, or None.
    ``task_manager_lifecycle``
        a Resource that starts and stops the selected manager.
    ``orchestrator``
        the :class:`TaskOrchestrator` over the selected manager and the registry.
    """

    config = providers.Configuration(strict=True)
    settings: providers.Object[Any] = providers.Object(None)

    engine_config = providers.Singleton(
        engine_config_from_settings, config.task_execution, config.concurrency_limits
    )
    events = providers.Singleton(EventBus)
    backend = providers.Callable(effective_backend, config.task_execution)
    registry = providers.Singleton(make_registry, config.runs, config.task_execution, backend)

    store = providers.Singleton(make_selected_store, config.task_execution)
    task_manager = providers.Singleton(
        TaskEngine, store, engine_config, registry=registry, events=events
    )
    ops_store = providers.Factory(make_ops_store, config.task_execution)
    handover_store = providers.Factory(make_handover_store, config.task_execution)
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
