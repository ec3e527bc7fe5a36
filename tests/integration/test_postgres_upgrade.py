"""A version-1 PostgreSQL queue with tasks in it upgrades in place: the tasks keep what
they had and gain the tracebacks of later versions (issue 9, item 2)."""

from __future__ import annotations

import asyncpg

from taskyard.backends.postgres import PostgresStore
from taskyard.backends.postgres.schema import SCHEMA_VERSION
from taskyard.framework.models import TaskRecord, TaskStatus, new_task_id
from tests.pg_support import postgres_dsn

__all__ = ["postgres_dsn"]


async def test_a_version_1_schema_with_tasks_is_upgraded_and_keeps_them(postgres_dsn: str) -> None:
    tasks = [
        TaskRecord(id=new_task_id(), type="divide", payload={"n": 0}),
        TaskRecord(
            id=new_task_id(), type="divide", payload={"n": 1}, status=TaskStatus.FAILED,
            attempts=2, max_attempts=2, error="ZeroDivisionError",
        ),
    ]  # fmt: skip
    store = PostgresStore(postgres_dsn, schema_name="upgraded", pool_size=1)
    await store.open()
    await store.import_records(tasks)
    await store.close()
    conn = await asyncpg.connect(postgres_dsn)
    try:  # back to what version 1 wrote
        await conn.execute("DROP TABLE upgraded.taskyard_schedules")
        await conn.execute("ALTER TABLE upgraded.taskyard_tasks DROP COLUMN tracebacks")
        await conn.execute("ALTER TABLE upgraded.taskyard_tasks DROP COLUMN trace_context")
        await conn.execute(  # and before workflows (their indexes go with the columns)
            "ALTER TABLE upgraded.taskyard_tasks DROP COLUMN concurrency_key,"
            " DROP COLUMN on_dependency_failure, DROP COLUMN waiting_on,"
            " DROP COLUMN has_dependents, DROP COLUMN workflow_id"
        )
        await conn.execute("DROP TABLE upgraded.taskyard_dependencies")
        await conn.execute(
            "CREATE INDEX taskyard_tasks_ready ON upgraded.taskyard_tasks (priority, seq)"
            " WHERE status = 'queued'"
        )
        for index in ("newest", "finished"):  # the dashboard's
            await conn.execute(f"DROP INDEX upgraded.taskyard_tasks_{index}")
        await conn.execute("DROP TABLE upgraded.taskyard_audit, upgraded.taskyard_state")
        await conn.execute("DELETE FROM upgraded.taskyard_schema_version WHERE version > 1")
    finally:
        await conn.close()
    store = PostgresStore(postgres_dsn, schema_name="upgraded", pool_size=1)
    await store.open()
    try:
        assert store.migrations_applied == list(range(2, SCHEMA_VERSION + 1))
        failed = await store.get(tasks[1].id)
        assert failed is not None
        assert (failed.status, failed.attempts, failed.error) == ("failed", 2, "ZeroDivisionError")
        assert failed.payload == {"n": 1} and failed.tracebacks == []
        assert await store.present([task.id for task in tasks]) == {task.id for task in tasks}
    finally:
        await store.close()
