"""The PostgreSQL store on the real server: schema refusals, batching, wake-ups, health."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from taskyard.backends.postgres import PostgresStore, PostgresTaskManager, redact_dsn
from taskyard.backends.postgres.schema import SCHEMA_VERSION
from taskyard.framework.engine import EngineConfig
from taskyard.framework.errors import (
    ConfigurationError,
    ForeignDatabase,
    NotADatabase,
    OperationNotSupported,
    SchemaTooNew,
    StoreUnavailable,
)
from taskyard.framework.models import Outcome, TaskRecord, TaskStatus, new_task_id, utcnow
from taskyard.testing import wait_until
from tests.pg_support import create_database, drop_database, postgres_dsn, schema_for

__all__ = ["postgres_dsn"]
pytestmark = pytest.mark.postgres


@pytest.fixture
async def store(postgres_dsn: str, request: pytest.FixtureRequest) -> AsyncIterator[PostgresStore]:
    made = PostgresStore(postgres_dsn, schema_name=schema_for(request.node.nodeid), pool_size=3)
    await made.open()
    try:
        yield made
    finally:
        await made.close()


async def sql(dsn: str, statement: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(statement, *args)
        return rows
    finally:
        await conn.close()


def record(**fields: object) -> TaskRecord:
    return TaskRecord(id=str(fields.pop("id", new_task_id())), type="t", payload={}, **fields)  # type: ignore[arg-type]


# -- schema ---------------------------------------------------------------------------------


async def test_a_new_schema_is_created_at_the_current_version(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn, schema_name="fresh_schema", pool_size=2)
    await store.open()
    try:
        assert store.migrations_applied == list(range(1, SCHEMA_VERSION + 1))
    finally:
        await store.close()
    again = PostgresStore(postgres_dsn, schema_name="fresh_schema", pool_size=2)
    await again.open()
    await again.close()
    assert again.migrations_applied == []
    options = await sql(
        postgres_dsn,
        "SELECT reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'fresh_schema' AND c.relname = 'taskyard_tasks'",
    )
    assert "autovacuum_vacuum_scale_factor=0.01" in options[0][0]


async def test_a_newer_schema_is_refused_unchanged(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn, schema_name="from_the_future", pool_size=2)
    await store.open()
    await store.close()
    await sql(
        postgres_dsn,
        "INSERT INTO from_the_future.taskyard_schema_version (version, name) VALUES ($1, 'x')",
        SCHEMA_VERSION + 1,
    )
    with pytest.raises(SchemaTooNew, match="upgrade taskyard"):
        await PostgresStore(postgres_dsn, schema_name="from_the_future").open()


async def test_a_foreign_table_in_the_way_is_refused_unchanged(postgres_dsn: str) -> None:
    await sql(postgres_dsn, "CREATE SCHEMA theirs")
    await sql(postgres_dsn, "CREATE TABLE theirs.taskyard_tasks (name text)")
    await sql(postgres_dsn, "CREATE TABLE theirs.invoices (n int)")
    with pytest.raises(ForeignDatabase, match="postgres_schema"):
        await PostgresStore(postgres_dsn, schema_name="theirs").open()
    tables = await sql(postgres_dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'theirs'")
    assert sorted(row[0] for row in tables) == ["invoices", "taskyard_tasks"]


async def test_other_tables_beside_ours_are_left_alone(postgres_dsn: str) -> None:
    await sql(postgres_dsn, "CREATE SCHEMA shared_schema")
    await sql(postgres_dsn, "CREATE TABLE shared_schema.invoices (n int)")
    store = PostgresStore(postgres_dsn, schema_name="shared_schema", pool_size=2)
    await store.open()
    await store.close()
    assert store.migrations_applied == list(range(1, SCHEMA_VERSION + 1))


async def test_a_version_4_schema_with_tasks_is_upgraded_to_keep_schedules(
    postgres_dsn: str,
) -> None:
    from datetime import UTC, datetime

    from taskyard.framework.schedules import ScheduleRecord, fire, make_schedule

    store = PostgresStore(postgres_dsn, schema_name="upgraded_schema", pool_size=2)
    await store.open()
    tasks = [record(), record(), record(idempotency_key="kept")]
    ids = await store.add(tasks)
    await store.close()
    # back to what version 4 wrote (5 adds the schedules, 6 the workflows)
    await sql(postgres_dsn, "DROP TABLE upgraded_schema.taskyard_schedules")
    await sql(
        postgres_dsn,
        "ALTER TABLE upgraded_schema.taskyard_tasks DROP COLUMN concurrency_key,"
        " DROP COLUMN on_dependency_failure, DROP COLUMN waiting_on,"
        " DROP COLUMN has_dependents, DROP COLUMN workflow_id",
    )
    await sql(postgres_dsn, "DROP TABLE upgraded_schema.taskyard_dependencies")
    await sql(
        postgres_dsn,
        "CREATE INDEX taskyard_tasks_ready ON upgraded_schema.taskyard_tasks (priority, seq)"
        " WHERE status = 'queued'",
    )
    await sql(postgres_dsn, "DELETE FROM upgraded_schema.taskyard_schema_version WHERE version > 4")
    store = PostgresStore(postgres_dsn, schema_name="upgraded_schema", pool_size=2)
    await store.open()
    try:
        assert store.migrations_applied == list(range(5, SCHEMA_VERSION + 1))
        assert await store.present(ids) == set(ids)
        slot = datetime(2030, 1, 1, tzinfo=UTC)
        schedule = make_schedule("tick", "t", every=60)
        assert await store.insert_schedule(ScheduleRecord(schedule=schedule, next_fire_at=slot))
        stored = await store.get_schedule("tick")
        assert stored is not None
        fired, _ = await fire(store, stored, slot)
        assert fired is not None and len(fired) == 1
        assert await store.present([*ids, *fired]) == {*ids, *fired}
    finally:
        await store.close()


async def test_a_server_that_is_not_postgresql_is_refused_before_anything_is_written() -> None:
    name, dsn = create_database()
    try:
        # a look-alike: version() answers as another product would
        await sql(dsn, "CREATE SCHEMA lookalike")
        await sql(
            dsn,
            "CREATE FUNCTION lookalike.version() RETURNS text LANGUAGE sql"
            " AS $$ SELECT 'CockroachDB CCL v23.1.0' $$",
        )
        await sql(dsn, f'ALTER DATABASE "{name}" SET search_path = lookalike, pg_catalog')
        with pytest.raises(NotADatabase, match="not PostgreSQL"):
            await PostgresStore(dsn).open()
        schemas = await sql(dsn, "SELECT nspname FROM pg_namespace WHERE nspname = 'taskyard'")
        assert schemas == []
    finally:
        drop_database(name)


async def test_a_bad_schema_name_is_refused_before_connecting() -> None:
    with pytest.raises(ConfigurationError, match="postgres_schema"):
        PostgresStore("postgresql://127.0.0.1:5432/test", schema_name='x"; DROP TABLE y; --')


async def test_an_unreachable_server_is_unavailable_and_the_password_never_shows() -> None:
    dsn = "postgresql://app:hunter2@127.0.0.1:9/nowhere?password=hunter2"
    store = PostgresStore(dsn, connect_timeout=2)
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(store)
    assert "app:***@127.0.0.1:9/nowhere" in str(caught.value)


def test_redact_dsn_hides_every_password() -> None:
    assert redact_dsn("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_dsn("postgresql://h/db?password=s3&sslmode=require") == (
        "postgresql://h/db?password=***&sslmode=require"
    )
    assert redact_dsn("host=h password='a b' user=u") == "host=h password=*** user=u"
    assert redact_dsn("postgresql://127.0.0.1:5432/test") == "postgresql://127.0.0.1:5432/test"


# -- the store's statements -------------------------------------------------------------------


async def test_concurrent_adds_share_one_statement(store: PostgresStore) -> None:
    records = [record(priority=n % 3) for n in range(64)]
    ids = await asyncio.gather(*(store.add([one]) for one in records))
    assert [i[0] for i in ids] == [one.id for one in records]
    rows = await sql(store.dsn, f"SELECT COUNT(DISTINCT xmin::text) FROM {store.tasks_table}")
    assert rows[0][0] < 64  # one transaction per group, not per caller


async def test_idempotency_keys_and_caller_ids_in_one_batch(store: PostgresStore) -> None:
    first = record(id="a", idempotency_key="k1")
    ids = await store.add([first, record(id="b", idempotency_key="k1"), record(id="a")])
    assert ids == ["a", "a", "a"]
    assert (await store.add([record(id="c", idempotency_key="k1")])) == ["a"]
    assert (await store.count_by_status())[TaskStatus.QUEUED] == 1


async def test_claims_skip_locked_rows_and_respect_order(store: PostgresStore) -> None:
    await store.add([record(id=f"p{n}", priority=n % 2) for n in range(6)])
    now = utcnow()
    first = await store.claim(limit=3, now=now, worker_id="w1", lease_seconds=5)
    assert [r.id for r in first] == ["p0", "p2", "p4"]  # priority, then scheduling order
    one, two = await asyncio.gather(
        store.claim(limit=2, now=now, worker_id="w2", lease_seconds=5),
        store.claim(limit=2, now=now, worker_id="w3", lease_seconds=5),
    )
    assert not {r.id for r in one} & {r.id for r in two}
    assert {r.id for r in one} | {r.id for r in two} == {"p1", "p3", "p5"}
    second = one + two
    # outcomes are applied by token, in one statement
    applied = await store.finish(
        [
            Outcome(r.id, r.lease_token or "", TaskStatus.COMPLETED, utcnow(), result_json="1")
            for r in first
        ]
        + [Outcome(second[0].id, "not-the-token", TaskStatus.COMPLETED, utcnow())]
    )
    assert applied == [True] * len(first) + [False]
    lost = await store.renew_leases(
        [(r.id, r.lease_token or "") for r in second] + [(first[0].id, "gone")],
        until=utcnow() + timedelta(seconds=30),
    )
    assert lost == [first[0].id]


async def test_expired_leases_come_back_by_the_token_rule(store: PostgresStore) -> None:
    past = utcnow() - timedelta(seconds=60)
    await store.add(
        [
            record(id="x", max_attempts=2, run_after=past),
            record(id="y", max_attempts=1, run_after=past),
        ]
    )
    claimed = await store.claim(limit=2, now=past, worker_id="dead", lease_seconds=1)
    assert len(claimed) == 2
    recovered = {r.id: r for r in await store.recover_expired(now=utcnow())}
    assert recovered["x"].status is TaskStatus.QUEUED and recovered["x"].lease_token is None
    assert recovered["y"].status is TaskStatus.FAILED
    assert "lease expired" in (recovered["y"].error or "")
    token = next(r.lease_token for r in claimed if r.id == "x")
    assert await store.finish([Outcome("x", token or "", TaskStatus.COMPLETED, utcnow())]) == [
        False
    ]


async def test_postgres_maintenance(store: PostgresStore) -> None:
    await store.add([record(id="q1"), record(id="q2")])
    assert (await store.vacuum_tables())[0].startswith("VACUUM (ANALYZE)")
    stats = await store.table_statistics()
    assert set(stats) == {"taskyard_tasks", "taskyard_runs", "taskyard_workers"}
    assert stats["taskyard_tasks"].size_bytes > 0 and stats["taskyard_tasks"].live_rows == 2
    assert stats["taskyard_tasks"].last_vacuum is not None
    assert await store.reindex() == [f"REINDEX TABLE CONCURRENTLY {store.tasks_table}"]
    assert all(sql.startswith("ANALYZE") for sql in await store.optimize())
    info = await store.storage_info()
    assert info.schema_version == SCHEMA_VERSION and "PostgreSQL queue" in info.path
    with pytest.raises(OperationNotSupported, match="pg_dump"):
        await store.backup_to("/nowhere")


async def test_operations_tools_do_not_create_a_queue(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn, schema_name="not_there_yet")
    with pytest.raises(StoreUnavailable, match="db init"):
        await store.open_existing()
    figures = await store.initialize()
    assert (figures.created, figures.from_version, figures.applied) == (
        True,
        0,
        list(range(1, SCHEMA_VERSION + 1)),
    )
    again = await store.initialize()
    assert (again.created, again.from_version, again.applied) == (False, SCHEMA_VERSION, [])
    await store.open_existing()
    await store.close()


# -- wake-ups and health ------------------------------------------------------------------------


async def test_notify_wakes_a_worker_of_another_store_at_once(postgres_dsn: str) -> None:
    schema = "wakeups"
    config = EngineConfig(poll_interval=30.0)  # only NOTIFY can wake it in time
    worker = PostgresTaskManager(config, dsn=postgres_dsn, schema=schema, pool_size=2)
    producer = PostgresTaskManager(
        EngineConfig(run_worker=False), dsn=postgres_dsn, schema=schema, pool_size=2
    )
    done = asyncio.Event()

    async def handler(payload: dict[str, object]) -> None:
        done.set()

    await worker.register_task("wake", handler)
    await producer.register_task("wake", handler)
    async with worker, producer:
        store = worker.store
        assert isinstance(store, PostgresStore)
        await wait_until(lambda: store.listening, timeout=10, message="LISTEN up")
        await asyncio.sleep(0)  # let the first idle poll start its 30 s wait
        await producer.schedule_task("wake", {})
        await asyncio.wait_for(done.wait(), timeout=10)


async def test_a_lost_listen_connection_is_reopened_and_health_says_so(
    store: PostgresStore,
) -> None:
    await wait_until(lambda: store.listening, timeout=10, message="LISTEN up")
    assert await store.health() == ("ok", "")
    changes: list[bool] = []
    store.set_wakeup(lambda: changes.append(True))
    await sql(
        store.dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'taskyard-listen' AND datname = current_database()",
    )
    await wait_until(lambda: not store.listening, timeout=10, message="LISTEN lost")
    assert await store.changed_elsewhere()  # polling covers the gap
    await wait_until(lambda: store.listening, timeout=10, message="LISTEN re-opened")
    assert changes  # whatever was written meanwhile is looked for
    assert (await store.health())[0] == "ok"


# -- runs ---------------------------------------------------------------------------------------


def test_runs_are_kept_in_the_database_across_registries(postgres_dsn: str) -> None:
    from taskyard.backends.postgres import PostgresRunPersistence
    from taskyard.framework.runs import Run, RunRegistry, RunStatus
    from taskyard.providers import make_registry

    persistence = PostgresRunPersistence(postgres_dsn, schema_name="runs_here")
    registry = RunRegistry(persistence)
    run = registry.add_run(Run(module_id="nightly", parameters={"day": 3}))
    run.mark_finished(RunStatus.COMPLETED)
    registry.save_run(run)
    gone = registry.add_run(Run(module_id="temporary"))
    registry.add_run(gone)
    persistence.remove([], [gone.run_id])
    persistence.close()  # writes what is pending

    settings = {"postgres_dsn": postgres_dsn, "postgres_schema": "runs_here"}
    again = make_registry({"max_history": 10, "history_file": ""}, settings, "postgres")
    found = again.get_run(run.run_id)
    assert found is not None and found.status is RunStatus.COMPLETED
    assert found.parameters == {"day": 3}
    assert again.get_run(gone.run_id) is None


async def test_finish_and_renew_look_tasks_up_by_id_whatever_the_statistics_say(
    store: PostgresStore,
) -> None:
    """After a fill and ANALYZE the planner believes nothing runs; a batch of outcomes
    must still be joined by id (linear), never by scanning the running tasks once per
    outcome (quadratic: seconds per flush with thousands of tasks running)."""
    await store.add([record() for _ in range(2000)])
    await sql(store.dsn, f"ANALYZE {store.tasks_table}")
    claimed = await store.claim(limit=1000, now=utcnow(), worker_id="w", lease_seconds=30)
    ids = [r.id for r in claimed]
    tokens = [r.lease_token for r in claimed]
    conn = await asyncpg.connect(store.dsn)
    try:
        for statement, args in (
            (store._sql_renew, (ids, tokens, utcnow())),
            (
                store._sql_finish,
                (
                    ids,
                    tokens,
                    ["completed"] * len(ids),
                    [None] * len(ids),
                    [None] * len(ids),
                    [utcnow()] * len(ids),
                    [None] * len(ids),
                    [False] * len(ids),
                    [None] * len(ids),  # no traceback
                ),
            ),
        ):
            for generic in (False, True):  # the custom plan, then the generic one
                if generic:
                    await conn.execute("SET plan_cache_mode = force_generic_plan")
                plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {statement}", *args))
                assert "taskyard_tasks_leases" not in plan, plan
                assert "taskyard_tasks_id_key" in plan or "Hash Join" in plan, plan
            await conn.execute("RESET plan_cache_mode")
    finally:
        await conn.close()


async def test_a_version_1_schema_with_tasks_is_upgraded_to_run_workflows(
    postgres_dsn: str,
) -> None:
    """Migration 0002 adds the waiting status, the dependency table and the key columns
    to a schema that already holds tasks: they keep every field and run, and a dependent
    scheduled afterwards waits for them."""
    from taskyard.backends.postgres import schema as pg_schema

    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute('CREATE SCHEMA "old_queue"')
        await conn.execute(
            'CREATE TABLE "old_queue".taskyard_schema_version (version integer PRIMARY KEY,'
            " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        first = pg_schema.migrations()[0]
        await conn.execute(first.sql.replace("{schema}", '"old_queue"'))
        await conn.execute(
            'INSERT INTO "old_queue".taskyard_schema_version (version, name) VALUES (1, $1)',
            first.name,
        )
        await conn.execute(
            'INSERT INTO "old_queue".taskyard_tasks (id, type, status, priority, max_attempts,'
            " payload, created_at, updated_at, run_after)"
            " SELECT 'old-' || n, 'old', s, 5, 3, json_build_object('n', n), now(), now(), now()"
            " FROM unnest(ARRAY[0, 1, 2], ARRAY['queued', 'completed', 'queued']) AS x(n, s)"
        )
    finally:
        await conn.close()
    manager = PostgresTaskManager(
        EngineConfig(poll_interval=0.05), dsn=postgres_dsn, schema="old_queue", pool_size=2
    )
    ran: list[int] = []

    async def old(payload: dict[str, int]) -> int:
        ran.append(payload["n"])
        return payload["n"]

    await manager.register_task("old", old)
    async with manager:
        assert manager.store.migrations_applied == list(range(2, SCHEMA_VERSION + 1))  # type: ignore[attr-defined]
        follow = await manager.schedule_task("old", {"n": 9}, depends_on=["old-0", "old-2"])
        info = await manager.wait_for(follow, timeout=30)
        assert info["status"] == "completed"
        assert await manager.store.dependencies(follow) == ["old-0", "old-2"]
        statuses = {t["id"]: t["status"] for t in await manager.list_tasks(limit=10)}
    assert sorted(ran[:2]) == [0, 2] and ran[2] == 9  # the dependent ran last
    assert statuses == {"old-0": "completed", "old-1": "completed", "old-2": "completed",
                        follow: "completed"}  # fmt: skip


async def test_a_store_closed_while_its_listener_connects_leaves_no_stray_error(
    postgres_dsn: str, request: pytest.FixtureRequest
) -> None:
    """close() right after open() cancels the LISTEN connection's connect mid-handshake;
    asyncio must have nothing to report (it used to print "Future exception was never
    retrieved: ConnectionError('unexpected connection_lost() call')")."""
    reported: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        for turns in range(12):  # closed at different steps of the handshake
            made = PostgresStore(
                postgres_dsn, schema_name=schema_for(request.node.nodeid), pool_size=1
            )
            await made.open()
            for _ in range(turns):
                await asyncio.sleep(0)
            await made.close()
        gc.collect()  # an abandoned future reports its error when it is collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert [str(context.get("message")) for context in reported] == []
