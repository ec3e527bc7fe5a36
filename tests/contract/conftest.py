"""The contract suite runs once per backend in BACKENDS.

A backend joins with one entry: its name and a factory
``(config: EngineConfig, location: Path) -> unstarted TaskManager``. ``location`` is an
empty directory for the backend's files; called again with the same ``location`` the
factory must reach the same storage (the suite reopens stores that way). For example::

    "sqlite": lambda config, path: QueuedTaskManager(config, db_path=path / "q.db"),
"""

from collections.abc import AsyncIterator

import pytest

from taskyard.backends.canary import CanaryTaskManager
from taskyard.backends.fallback import FallbackTaskManager
from taskyard.backends.sqlite import QueuedTaskManager, SqliteStore
from taskyard.framework.engine import EngineConfig
from taskyard.testing import BackendFactory, ManagerFactory, in_memory_backend
from tests.pg_support import postgres_dsn, require_postgres, schema_for

__all__ = ["postgres_dsn"]


def postgres_backend(dsn: str) -> BackendFactory:
    """``postgres``: one schema per storage location, in the module's own database."""
    from taskyard.backends.postgres import PostgresTaskManager

    def make(config: EngineConfig, location):  # type: ignore[no-untyped-def]
        return PostgresTaskManager(config, dsn=dsn, schema=schema_for(location), pool_size=4)

    return make


BACKENDS: dict[str, BackendFactory] = {
    "in-memory": in_memory_backend,
    "sqlite": lambda config, path: QueuedTaskManager(config, db_path=path / "q.db"),
    "sqlite-with-fallback": lambda config, path: FallbackTaskManager(config, db_path=path / "q.db"),
    "canary": lambda config, path: CanaryTaskManager(
        config,
        stable=SqliteStore(path / "stable.db"),
        canary=SqliteStore(path / "canary.db"),
        share=0.5,
    ),
    "postgres": lambda config, path: config,  # replaced by postgres_backend(dsn) below
}


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
async def make_manager(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[ManagerFactory]:
    backend = BACKENDS[request.param]
    if request.param == "postgres":
        require_postgres()
        backend = postgres_backend(request.getfixturevalue("postgres_dsn"))
    async with ManagerFactory(backend, tmp_path) as factory:
        yield factory
