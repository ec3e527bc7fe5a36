"""Every store shipped with taskyard against the store-operations contract."""

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from taskyard.backends.canary import CanaryStore
from taskyard.backends.fallback import FallbackStore
from taskyard.backends.memory import InMemoryStore
from taskyard.backends.sqlite import SqliteStore
from taskyard.framework.operations import StoreOperations
from taskyard.testing.operations import StoreOperationsContract
from tests.pg_support import postgres_dsn, require_postgres, schema_for

__all__ = ["postgres_dsn"]

STORES: dict[str, Callable[[Path], StoreOperations]] = {
    "in-memory": lambda path: InMemoryStore(),
    "sqlite": lambda path: SqliteStore(path / "q.db"),
    "sqlite-with-fallback": lambda path: FallbackStore(SqliteStore(path / "q.db")),
    "canary": lambda path: CanaryStore(SqliteStore(path / "q.db"), InMemoryStore(), share=0.5),
}


@pytest.fixture(params=[*STORES, "postgres"], ids=[*STORES, "postgres"])
async def ops_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreOperations]:
    if request.param == "postgres":
        require_postgres()
        from taskyard.backends.postgres import PostgresStore

        dsn = request.getfixturevalue("postgres_dsn")
        store: StoreOperations = PostgresStore(dsn, schema_name=schema_for(tmp_path), pool_size=2)
    else:
        store = STORES[request.param](tmp_path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


class TestStoreOperations(StoreOperationsContract):
    pass
