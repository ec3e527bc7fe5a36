"""The queue's schema on PostgreSQL: refuse what is not ours, create or upgrade what is.

Reads come before writes: a server that is not PostgreSQL, a schema holding another
application's tables, or one written by a newer taskyard is refused with nothing
changed. Migrations run in one transaction under a transaction-level advisory lock
keyed by the schema name, and the version is read again once the lock is held, so any
number of processes starting at once migrate once.
"""

from __future__ import annotations

import re
import zlib

import asyncpg

from taskyard.framework.errors import (
    ConfigurationError,
    ForeignDatabase,
    NotADatabase,
    SchemaMismatch,
    SchemaTooNew,
)
from taskyard.framework.migrations import Migration, shipped_migrations

VERSION_TABLE = "taskyard_schema_version"
MIN_SERVER_VERSION = 130000
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")


def migrations() -> list[Migration]:
    """The versioned migrations shipped in the package, in order."""
    return shipped_migrations("taskyard.backends.postgres")


SCHEMA_VERSION = migrations()[-1].version

EXPECTED_COLUMNS = {
    "taskyard_tasks": {
        "seq", "id", "type", "status", "priority", "attempts", "max_attempts", "payload",
        "result", "error", "created_at", "updated_at", "run_after", "started_at",
        "finished_at", "timeout", "idempotency_key", "lease_token", "lease_expires_at",
        "worker_id", "trace_context", "tracebacks", "concurrency_key",
        "on_dependency_failure", "waiting_on", "has_dependents", "workflow_id",
    },
    "taskyard_dependencies": {"depends_on", "task_id"},
    "taskyard_runs": {"run_id", "module_id", "status", "created_at", "data"},
    "taskyard_workers": {
        "worker_id", "hostname", "pid", "started_at", "last_heartbeat", "info",
        "stop_requested_at",
    },
    "taskyard_audit": {"seq", "at", "actor", "action", "target", "count", "detail"},
    "taskyard_state": {"key", "value"},
    "taskyard_schedules": {
        "name", "definition", "enabled", "next_fire_at", "last_fire_at", "last_task_id",
        "created_at", "updated_at",
    },
}  # fmt: skip


def quoted_schema(name: str) -> str:
    """The schema name as a quoted identifier, after checking it is a plain lower-case
    name (identifiers cannot be query parameters)."""
    if not isinstance(name, str) or not _SCHEMA_NAME.fullmatch(name):
        raise ConfigurationError(
            f"task_execution.postgres_schema = {name!r} is not allowed: it must be a lower-case "
            'name of letters, digits and _ (at most 48), such as "taskyard"'
        )
    return f'"{name}"'


def lock_key(schema: str) -> int:
    """The advisory lock that serialises migrations of one schema (a signed 64-bit key)."""
    return int.from_bytes(
        zlib.crc32(f"taskyard:{schema}".encode()).to_bytes(4, "big") + b"tyrd", "big", signed=True
    )


async def check_server(conn: asyncpg.Connection, where: str) -> None:
    """Refuse a server that is not PostgreSQL (a look-alike speaking its protocol)."""
    try:
        banner = str(await conn.fetchval("SELECT version()"))
        number = int(await conn.fetchval("SELECT current_setting('server_version_num')"))
    except (asyncpg.PostgresError, ValueError, TypeError) as exc:
        raise NotADatabase(
            f"{where}: the server does not answer like PostgreSQL ({exc}); taskyard wrote "
            "nothing. Point task_execution.postgres_dsn at a PostgreSQL server."
        ) from exc
    if not banner.startswith("PostgreSQL") or any(
        other in banner for other in ("CockroachDB", "Redshift", "YugabyteDB")
    ):
        raise NotADatabase(
            f"{where}: the server is not PostgreSQL ({banner[:80]!r}); taskyard wrote nothing. "
            "Point task_execution.postgres_dsn at a PostgreSQL server."
        )
    if number < MIN_SERVER_VERSION:
        raise NotADatabase(
            f"{where}: PostgreSQL {number} is too old; taskyard needs 13 or newer (nothing was "
            "changed)."
        )


async def stored_version(conn: asyncpg.Connection, schema: str, where: str) -> int:
    """The schema version of an existing queue, 0 when none of its tables exists yet.

    Raises ForeignDatabase or SchemaTooNew without writing anything."""
    tables = {
        row[0]
        for row in await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
            schema,
        )
    }
    ours = tables & {VERSION_TABLE, *EXPECTED_COLUMNS}
    if not ours:
        return 0  # a new schema, or one holding only other tables: none is in the way
    if VERSION_TABLE not in tables:
        raise ForeignDatabase(
            f"{where}: schema {schema!r} already has a table named {sorted(ours)[0]} that is "
            "not a taskyard queue's (no taskyard_schema_version); taskyard left it unchanged. "
            "Set task_execution.postgres_schema to another schema."
        )
    version = int(
        await conn.fetchval(f'SELECT COALESCE(MAX(version), 0) FROM "{schema}".{VERSION_TABLE}')
    )
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{where}: schema {schema!r} has queue schema version {version}, and this taskyard "
            f"knows up to {SCHEMA_VERSION}; upgrade taskyard to open it (nothing was changed)."
        )
    return version


async def check_columns(conn: asyncpg.Connection, schema: str, where: str) -> None:
    rows = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = $1",
        schema,
    )
    present: dict[str, set[str]] = {}
    for table, column in rows:
        present.setdefault(table, set()).add(column)
    for table, expected in EXPECTED_COLUMNS.items():
        missing = expected - present.get(table, set())
        if missing:
            raise SchemaMismatch(
                f"{where}: schema {schema!r} says it is taskyard queue schema version "
                f"{SCHEMA_VERSION}, but table {table} lacks {', '.join(sorted(missing))}; "
                "restore it from a backup or set task_execution.postgres_schema elsewhere."
            )


async def migrate(conn: asyncpg.Connection, schema: str, where: str) -> list[int]:
    """Check the server and the schema, then bring the schema to SCHEMA_VERSION under
    the advisory lock; returns the versions applied (empty when up to date)."""
    await check_server(conn, where)
    quoted = quoted_schema(schema)
    applied: list[int] = []
    if await stored_version(conn, schema, where) < SCHEMA_VERSION:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema))
            version = await stored_version(conn, schema, where)  # again, under the lock
            if version < SCHEMA_VERSION:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {quoted}.{VERSION_TABLE} (version integer"
                    " PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL"
                    " DEFAULT now())"
                )
                for migration in migrations():
                    if migration.version <= version:
                        continue
                    await conn.execute(migration.sql.replace("{schema}", quoted))
                    await conn.execute(
                        f"INSERT INTO {quoted}.{VERSION_TABLE} (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                    applied.append(migration.version)
    await check_columns(conn, schema, where)
    return applied
