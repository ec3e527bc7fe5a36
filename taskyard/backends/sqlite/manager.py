"""QueuedTaskManager: the worker engine over the SQLite store."""

from __future__ import annotations

import os

from taskyard.backends.sqlite.store import SqliteStore
from taskyard.framework.engine import EngineConfig, TaskEngine
from taskyard.framework.events import EventBus
from taskyard.framework.runs import RunRegistry


class QueuedTaskManager(TaskEngine):
    """The durable embedded default: tasks survive restarts, and any number of worker
    processes may share the file."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        db_path: str | os.PathLike[str],
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
        registry: RunRegistry | None = None,
        events: EventBus | None = None,
    ) -> None:
        store = SqliteStore(db_path, synchronous=synchronous, busy_timeout=busy_timeout)
        super().__init__(store, config, registry=registry, events=events)

    @property
    def db_path(self) -> str:
        assert isinstance(self.store, SqliteStore)
        return str(self.store.path)
