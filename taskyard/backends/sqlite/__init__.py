"""The ``sqlite`` backend: a durable queue in one SQLite file, over aiosqlite."""

from taskyard.backends.sqlite.manager import QueuedTaskManager
from taskyard.backends.sqlite.runs import SqliteRunPersistence
from taskyard.backends.sqlite.schema import SCHEMA_VERSION
from taskyard.backends.sqlite.store import SqliteStore

__all__ = ["SCHEMA_VERSION", "QueuedTaskManager", "SqliteRunPersistence", "SqliteStore"]
