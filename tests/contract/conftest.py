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
from taskyard.testing import BackendFactory, ManagerFactory, in_memory_backend

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
}


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
async def make_manager(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[ManagerFactory]:
    async with ManagerFactory(BACKENDS[request.param], tmp_path) as factory:
        yield factory
