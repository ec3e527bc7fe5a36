"""PostgresTaskManager: the worker engine over the PostgreSQL store."""

from __future__ import annotations

from taskyard.backends.postgres.store import PostgresStore
from taskyard.framework.engine import EngineConfig, TaskEngine
from taskyard.framework.events import EventBus
from taskyard.framework.runs import RunRegistry


class PostgresTaskManager(TaskEngine):
    """Any number of worker processes, on any number of hosts, sharing one PostgreSQL
    schema."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        dsn: str,
        schema: str = "taskyard",
        pool_size: int = 10,
        notify: bool = True,
        registry: RunRegistry | None = None,
        events: EventBus | None = None,
    ) -> None:
        store = PostgresStore(dsn, schema_name=schema, pool_size=pool_size, notify=notify)
        super().__init__(store, config, registry=registry, events=events)
