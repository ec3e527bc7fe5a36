"""The ``postgres`` backend: a durable queue in one PostgreSQL schema, over asyncpg
(``pip install taskyard[postgres]``). Importing this package needs asyncpg; the
container imports it only when the backend is selected."""

from taskyard.backends.postgres.manager import PostgresTaskManager
from taskyard.backends.postgres.runs import PostgresRunPersistence
from taskyard.backends.postgres.schema import SCHEMA_VERSION
from taskyard.backends.postgres.store import PostgresStore
from taskyard.framework.dsn import redact_dsn

__all__ = [
    "SCHEMA_VERSION",
    "PostgresRunPersistence",
    "PostgresStore",
    "PostgresTaskManager",
    "redact_dsn",
]
