"""The PostgreSQL store's answers to the store-operations interface
(:class:`~taskyard.framework.operations.StoreOperations`): every query the operations
tools need, against the queue's schema, in one place. Also the PostgreSQL-only
maintenance (``VACUUM (ANALYZE)``, ``REINDEX CONCURRENTLY``, dead rows and sizes).

:class:`PostgresOperations` is a base of :class:`~taskyard.backends.postgres.PostgresStore`;
it uses the store's pooled connections (``_conn``/``_fetch``).
"""

from __future__ import annotations

import abc
import json
import shlex
import time
import uuid
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import asyncpg

from taskyard.backends.postgres import schema
from taskyard.framework.dsn import redact_dsn
from taskyard.framework.errors import (
    IntegrityError,
    OperationNotSupported,
    OperationRefused,
    StoreUnavailable,
    TaskNotFound,
)
from taskyard.framework.models import Outcome, TaskRecord, TaskStatus, utcnow
from taskyard.framework.operations import (
    CANCELLABLE,
    FINISHED,
    PURGEABLE,
    RETRYABLE,
    STATUSES,
    AuditEntry,
    InitFigures,
    IntegrityFindings,
    QueueFigures,
    StorageInfo,
    StoreOperations,
    TableStatistics,
    TaskFilter,
    TaskPage,
    WorkerRecord,
    ascii_lower,
    decode_cursor,
    encode_cursor,
)

SCRATCH_PREFIX = "taskyard-validate-"
TABLES = ("taskyard_tasks", "taskyard_runs", "taskyard_workers")
ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ASCII_LOWER = "abcdefghijklmnopqrstuvwxyz"

INVARIANTS = {
    "running tasks without a lease": (
        "status = 'running' AND (lease_token IS NULL OR lease_expires_at IS NULL)"
    ),
    "queued tasks holding a lease": "status = 'queued' AND lease_token IS NOT NULL",
    "finished tasks without finished_at": (
        "status IN ('completed', 'failed', 'cancelled') AND finished_at IS NULL"
    ),
    "tasks with more attempts than allowed": "attempts > max_attempts",
}
"""taskyard's invariants; payloads are JSON by the column's type."""


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _json_object(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class PostgresOperations(StoreOperations):
    """The store operations of :class:`~taskyard.backends.postgres.PostgresStore`."""

    schema: str
    where: str
    tasks_table: str
    _q: str
    migrations_applied: list[int]

    @abc.abstractmethod
    def _conn(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A pooled connection; driver errors leave as taskyard errors."""

    @abc.abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """One statement on a pooled connection."""

    @abc.abstractmethod
    async def _connect(self, role: str) -> asyncpg.Connection:
        """A connection of its own (not from the pool)."""

    dsn: str

    def dump_command(self, file: str = "") -> str:
        """The ``pg_dump`` command that backs up this queue's schema (the DSN without its
        password: pg_dump reads it from PGPASSWORD or ~/.pgpass)."""
        dsn = redact_dsn(self.dsn).replace(":***@", "@", 1)
        target = file or f"taskyard-{self.schema}.dump"
        return (
            f"pg_dump --dbname={shlex.quote(dsn)} --schema={shlex.quote(self.schema)} "
            f"--format=custom --file={shlex.quote(target)}"
        )

    def unsupported(self, what: str, operation: str) -> OperationNotSupported:
        if what in ("backup", "restore"):
            return OperationNotSupported(
                f"{operation} copies a SQLite file; {self.where} lives on a PostgreSQL "
                f"server, which backs it up consistently while workers run: "
                f"{self.dump_command()} (password from PGPASSWORD or ~/.pgpass); restore "
                "with pg_restore --dbname=<dsn> --clean --if-exists <file>; to move the "
                "queue, export and import the tasks (taskyard export / taskyard import)"
            )
        return OperationNotSupported(
            f"{operation} is a SQLite file operation; {self.where} lives on a PostgreSQL "
            f"server, which checkpoints its write-ahead log by itself ({what}). "
            "`taskyard maintenance vacuum` runs VACUUM (ANALYZE) of taskyard's tables; to "
            "move the queue, export and import the tasks (taskyard export / taskyard import)"
        )

    # -- opening ------------------------------------------------------------------------------

    async def open_existing(self) -> None:
        conn = await self._connect("ops")
        try:
            version = await schema.stored_version(conn, self.schema, self.where)
        finally:
            await conn.close()
        if version == 0:
            raise StoreUnavailable(
                f"{self.where}: there is no taskyard queue in schema {self.schema!r} yet; "
                "create it with `taskyard db init` or by starting a worker"
            )
        await self.open()

    async def initialize(self) -> InitFigures:
        conn = await self._connect("migrate")
        try:
            before = await schema.stored_version(conn, self.schema, self.where)
            applied = await schema.migrate(conn, self.schema, self.where)
        finally:
            await conn.close()
        return InitFigures(
            location=self.where,
            created=before == 0 and bool(applied),
            from_version=before,
            to_version=schema.SCHEMA_VERSION,
            applied=applied,
        )

    # -- reading ------------------------------------------------------------------------------

    def _filters(
        self, statuses: Sequence[TaskStatus] | None, task_type: str | None
    ) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if statuses is not None:
            params.append([str(status) for status in statuses])
            where.append(f"status = ANY(${len(params)}::text[])")
        if task_type is not None:
            params.append(task_type)
            where.append(f"type = ${len(params)}")
        return (" WHERE " + " AND ".join(where)) if where else "", params

    async def count_tasks(
        self, *, statuses: Sequence[TaskStatus] | None = None, task_type: str | None = None
    ) -> int:
        where, params = self._filters(statuses, task_type)
        rows = await self._fetch(f"SELECT COUNT(*) FROM {self.tasks_table}{where}", *params)
        return int(rows[0][0])

    async def present(self, ids: Collection[str]) -> set[str]:
        if not ids:
            return set()
        rows = await self._fetch(
            f"SELECT id FROM {self.tasks_table} WHERE id = ANY($1::text[])", list(ids)
        )
        return {row[0] for row in rows}

    async def list_workers(self) -> list[WorkerRecord]:
        async with self._conn() as conn:
            return await self._workers(conn)

    def _task_filter(self, task_filter: TaskFilter, params: list[Any]) -> list[str]:
        """The WHERE clauses (ANDed) of a :class:`TaskFilter`; appends to ``params``."""
        where: list[str] = []
        if task_filter.statuses is not None:
            params.append([str(status) for status in task_filter.statuses])
            where.append(f"status = ANY(${len(params)}::text[])")
        if task_filter.task_type is not None:
            params.append(task_filter.task_type)
            where.append(f"type = ${len(params)}")
        if task_filter.ids is not None:
            params.append(list(task_filter.ids))
            where.append(f"id = ANY(${len(params)}::text[])")
        if task_filter.since is not None:
            params.append(_at(task_filter.since))
            where.append(f"created_at >= ${len(params)}")
        if task_filter.until is not None:
            params.append(_at(task_filter.until))
            where.append(f"created_at < ${len(params)}")
        if task_filter.text:
            text = ascii_lower(task_filter.text)
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.append(f"%{escaped}%")
            n = len(params)
            fold = f"'{ASCII_UPPER}', '{ASCII_LOWER}'"  # ASCII case only, as every store
            # ILIKE (fast) finds a superset; translate (slow) keeps the ASCII-only folding
            found = [
                f"({column} ILIKE ${n} ESCAPE '\\'"
                f" AND translate({column}, {fold}) LIKE ${n} ESCAPE '\\')"
                for column in ("payload::text", "error")
            ]
            where.append(f"({found[0]} OR {found[1]})")
        return where

    async def page_tasks(
        self, task_filter: TaskFilter, *, limit: int, after: str | None = None
    ) -> TaskPage:
        from taskyard.backends.postgres.store import COLUMNS, row_to_record

        params: list[Any] = []
        where = self._task_filter(task_filter, params)
        if after is not None:
            created, task_id = decode_cursor(after)
            params += [_at(created), task_id]
            where.append(f"(created_at, id) < (${len(params) - 1}, ${len(params)})")
        params.append(limit + 1)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = await self._fetch(
            f"SELECT {COLUMNS} FROM {self.tasks_table}{clause}"
            f" ORDER BY created_at DESC, id DESC LIMIT ${len(params)}",
            *params,
        )
        tasks = [row_to_record(row) for row in rows[:limit]]
        cursor = None
        if len(rows) > limit:
            last = tasks[-1]
            cursor = encode_cursor((last.created_at.timestamp(), last.id))
        return TaskPage(tasks, cursor)

    async def count_matching(self, task_filter: TaskFilter) -> int:
        params: list[Any] = []
        where = self._task_filter(task_filter, params)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = await self._fetch(f"SELECT COUNT(*) FROM {self.tasks_table}{clause}", *params)
        return int(rows[0][0])

    async def finished_series(
        self, *, since: float, until: float, buckets: int
    ) -> list[dict[str, int]]:
        series = [{"completed": 0, "failed": 0} for _ in range(buckets)]
        rows = await self._fetch(
            "SELECT LEAST(FLOOR(EXTRACT(EPOCH FROM finished_at - $1) * $3 / $4)::int, $3 - 1),"
            f" status, COUNT(*) FROM {self.tasks_table} WHERE finished_at >= $1"
            " AND finished_at < $2 AND status IN ('completed', 'failed') GROUP BY 1, 2",
            _at(since),
            _at(until),
            buckets,
            float(until - since),
        )
        for bucket, status, count in rows:
            series[int(bucket)][str(status)] += int(count)
        return series

    def _chosen(self, task_filter: TaskFilter, limit: int, params: list[Any]) -> str:
        """``seq IN (...)``: up to ``limit`` of the tasks the filter matches, newest first."""
        where = self._task_filter(task_filter, params)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        return (
            f"seq IN (SELECT seq FROM {self.tasks_table}{clause}"
            f" ORDER BY created_at DESC, id DESC LIMIT {int(limit)})"
        )

    async def retry_matching(self, task_filter: TaskFilter, *, now: float, limit: int) -> int:
        params: list[Any] = [_at(now)]
        chosen = self._chosen(task_filter.narrowed(RETRYABLE), limit, params)
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"UPDATE {self.tasks_table} SET status = 'queued', attempts = 0,"
                " run_after = $1, updated_at = $1, started_at = NULL, finished_at = NULL,"
                " result = NULL, error = NULL, lease_token = NULL, lease_expires_at = NULL,"
                f" worker_id = NULL WHERE {chosen} AND status IN ('failed', 'cancelled')"
                " RETURNING seq",
                *params,
            )
            if rows:
                await conn.execute("SELECT pg_notify($1, '')", f"taskyard_{self.schema}")
        return len(rows)

    async def cancel_matching(self, task_filter: TaskFilter, *, now: float, limit: int) -> int:
        params: list[Any] = [_at(now)]
        chosen = self._chosen(task_filter.narrowed(CANCELLABLE), limit, params)
        rows = await self._fetch(
            f"UPDATE {self.tasks_table} SET status = 'cancelled', finished_at = $1,"
            " updated_at = $1, lease_token = NULL, lease_expires_at = NULL"
            f" WHERE {chosen} AND status IN ('queued', 'running') RETURNING seq",
            *params,
        )
        return len(rows)

    async def purge_matching(self, task_filter: TaskFilter, *, limit: int) -> int:
        params: list[Any] = []
        chosen = self._chosen(task_filter.narrowed(PURGEABLE), limit, params)
        rows = await self._fetch(
            f"DELETE FROM {self.tasks_table} WHERE {chosen}"
            " AND status IN ('completed', 'failed', 'cancelled') RETURNING seq",
            *params,
        )
        return len(rows)

    async def set_intake_paused(self, paused: bool) -> None:
        if paused:
            await self._fetch(
                f"INSERT INTO {self._q}.taskyard_state (key, value) VALUES ('intake_paused', '1')"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            )
        else:
            await self._fetch(f"DELETE FROM {self._q}.taskyard_state WHERE key = 'intake_paused'")

    async def intake_paused(self) -> bool:
        rows = await self._fetch(
            f"SELECT value FROM {self._q}.taskyard_state WHERE key = 'intake_paused'"
        )
        return bool(rows) and rows[0][0] == "1"

    async def record_action(self, entry: AuditEntry) -> None:
        await self._fetch(
            f"INSERT INTO {self._q}.taskyard_audit (at, actor, action, target, count, detail)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            entry.at,
            entry.actor,
            entry.action,
            entry.target,
            entry.count,
            json.dumps(entry.detail, default=str),
        )

    async def list_actions(self, *, limit: int = 100) -> list[AuditEntry]:
        rows = await self._fetch(
            f"SELECT at, actor, action, target, count, detail FROM {self._q}.taskyard_audit"
            " ORDER BY seq DESC LIMIT $1",
            limit,
        )
        return [
            AuditEntry(float(row[0]), row[1], row[2], row[3], int(row[4]),
                       _json_object(row[5]))
            for row in rows
        ]  # fmt: skip

    async def _workers(self, conn: asyncpg.Connection) -> list[WorkerRecord]:
        rows = await conn.fetch(
            "SELECT worker_id, hostname, pid, started_at, last_heartbeat, info,"
            f" stop_requested_at FROM {self._q}.taskyard_workers ORDER BY started_at, worker_id"
        )
        return [
            WorkerRecord(row[0], row[1], row[2], row[3].timestamp(), row[4].timestamp(),
                         _json_object(row[5]), _epoch(row[6]))
            for row in rows
        ]  # fmt: skip

    async def request_worker_stop(self, worker_ids: Collection[str]) -> list[str]:
        wanted = sorted(set(worker_ids))
        if not wanted:
            return []
        rows = await self._fetch(
            f"UPDATE {self._q}.taskyard_workers SET stop_requested_at ="
            " COALESCE(stop_requested_at, $1) WHERE worker_id = ANY($2::text[])"
            " RETURNING worker_id",
            datetime.now(UTC),
            wanted,
        )
        return sorted(str(row[0]) for row in rows)

    async def queue_figures(self, *, now: float, window: float) -> QueueFigures:
        """One REPEATABLE READ transaction: one consistent picture."""
        t = self.tasks_table
        at, since = _at(now), _at(now - window)
        async with self._conn() as conn, conn.transaction(isolation="repeatable_read",
                                                          readonly=True):  # fmt: skip
            by_type: dict[str, dict[str, int]] = {}
            for task_type, status, count in await conn.fetch(
                f"SELECT type, status, COUNT(*) FROM {t} GROUP BY type, status"
            ):
                by_type.setdefault(task_type, dict.fromkeys(STATUSES, 0))[status] = int(count)
            due, delayed, waiting = await conn.fetchrow(
                "SELECT COUNT(*) FILTER (WHERE run_after <= $1),"
                " COUNT(*) FILTER (WHERE run_after > $1), COUNT(*) FILTER (WHERE attempts > 0)"
                f" FROM {t} WHERE status = 'queued'",
                at,
            )
            oldest = await conn.fetchrow(
                f"SELECT id, run_after FROM {t} WHERE status = 'queued' AND run_after <= $1"
                " ORDER BY run_after LIMIT 1",
                at,
            )
            expired, oldest_expiry = await conn.fetchrow(
                f"SELECT COUNT(*), MIN(lease_expires_at) FROM {t}"
                " WHERE status = 'running' AND lease_expires_at < $1",
                at,
            )
            finished_by_type: dict[str, dict[str, int]] = {}
            retried = retries = 0
            for task_type, status, count, retried_here, retries_here in await conn.fetch(
                "SELECT type, status, COUNT(*), COUNT(*) FILTER (WHERE attempts > 1),"
                f" COALESCE(SUM(GREATEST(attempts - 1, 0)), 0) FROM {t}"
                " WHERE finished_at >= $1 AND status IN ('completed', 'failed', 'cancelled')"
                " GROUP BY type, status",
                since,
            ):
                finished_by_type.setdefault(task_type, dict.fromkeys(FINISHED, 0))[status] = int(
                    count
                )
                retried += int(retried_here)
                retries += int(retries_here)
            spans = await conn.fetch(
                "SELECT EXTRACT(EPOCH FROM finished_at - started_at), started_at FROM"
                f" {t} WHERE finished_at >= $1 AND status IN ('completed', 'failed')"
                " AND started_at IS NOT NULL",
                since,
            )
            durations = [float(row[0]) for row in spans]
            first_started = min((row[1].timestamp() for row in spans), default=None)
            workers = await self._workers(conn)
            storage = await self._storage(conn)
        return QueueFigures(
            now=now,
            window=window,
            depth_by_type=by_type,
            queued_due=int(due),
            queued_delayed=int(delayed),
            waiting_retry=int(waiting),
            oldest_due=None if oldest is None else (oldest[0], oldest[1].timestamp()),
            expired_leases=int(expired),
            oldest_expired_lease=_epoch(oldest_expiry),
            finished_by_type=finished_by_type,
            retried_tasks=retried,
            retries=retries,
            processing_seconds=durations,
            workers=workers,
            storage=storage,
            first_started=first_started,
        )

    async def storage_info(self) -> StorageInfo:
        async with self._conn() as conn:
            return await self._storage(conn)

    async def _storage(self, conn: asyncpg.Connection) -> StorageInfo:
        """The schema's size (tables, indexes, TOAST) and version; no WAL or pages of
        its own on a server."""
        size = await conn.fetchval(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relkind = 'r'",
            self.schema,
        )
        version = await conn.fetchval(
            f"SELECT COALESCE(MAX(version), 0) FROM {self._q}.{schema.VERSION_TABLE}"
        )
        return StorageInfo(path=self.where, size_bytes=int(size), schema_version=int(version))

    # -- changing tasks -----------------------------------------------------------------------

    async def retry(self, task_id: str, *, now: float) -> TaskRecord:
        from taskyard.backends.postgres.store import COLUMNS, row_to_record

        at = _at(now)
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"UPDATE {self.tasks_table} SET status = 'queued', attempts = 0,"
                " run_after = $1, updated_at = $1, started_at = NULL, finished_at = NULL,"
                " result = NULL, error = NULL, lease_token = NULL, lease_expires_at = NULL,"
                " worker_id = NULL WHERE id = $2 AND status IN ('failed', 'cancelled')"
                f" RETURNING {COLUMNS}",
                at,
                task_id,
            )
            if row is not None:
                await conn.execute("SELECT pg_notify($1, '')", f"taskyard_{self.schema}")
                return row_to_record(row)
            found = await conn.fetchval(
                f"SELECT status FROM {self.tasks_table} WHERE id = $1", task_id
            )
        if found is None:
            raise TaskNotFound(f"no task has the id {task_id!r}")
        raise OperationRefused(
            f"task {task_id} is {found}; only failed or cancelled tasks can be retried"
        )

    _FINISHED_WHERE = (
        "status = ANY($1::text[]) AND COALESCE(finished_at, updated_at) < $2"
        " AND ($3::text IS NULL OR type = $3)"
    )

    async def count_finished(
        self, *, statuses: Sequence[TaskStatus], before: float, task_type: str | None = None
    ) -> int:
        rows = await self._fetch(
            f"SELECT COUNT(*) FROM {self.tasks_table} WHERE {self._FINISHED_WHERE}",
            sorted(str(status) for status in statuses),
            _at(before),
            task_type,
        )
        return int(rows[0][0])

    async def delete_finished(
        self,
        *,
        statuses: Sequence[TaskStatus],
        before: float,
        task_type: str | None = None,
        limit: int,
    ) -> int:
        wanted = sorted(str(status) for status in statuses if status.is_terminal)
        rows = await self._fetch(
            f"WITH doomed AS (SELECT seq FROM {self.tasks_table} WHERE {self._FINISHED_WHERE}"
            " LIMIT $4 FOR UPDATE SKIP LOCKED),"
            f" gone AS (DELETE FROM {self.tasks_table} AS t USING doomed"
            " WHERE t.seq = doomed.seq RETURNING t.id),"
            f" edges AS (DELETE FROM {self._q}.taskyard_dependencies"
            " WHERE task_id IN (SELECT id FROM gone))"  # what the deleted tasks waited for
            " SELECT 1 FROM gone",
            wanted,
            _at(before),
            task_type,
            int(limit),
        )
        return len(rows)

    async def forget_workers(self, *, silent_since: float, dry_run: bool = False) -> list[str]:
        table = f"{self._q}.taskyard_workers"
        if dry_run:
            sql = f"SELECT worker_id FROM {table} WHERE last_heartbeat < $1"
        else:
            sql = f"DELETE FROM {table} WHERE last_heartbeat < $1 RETURNING worker_id"
        return sorted(str(row[0]) for row in await self._fetch(sql, _at(silent_since)))

    async def self_test(self) -> dict[str, Any]:
        """A scratch task through the store's own statements, in one transaction that
        is rolled back: nothing of it is ever visible to workers."""
        started = time.perf_counter()
        store: Any = self
        token = uuid.uuid4().hex
        task_id, task_type = SCRATCH_PREFIX + token, f"taskyard.validate.{token}"
        now = utcnow()
        async with self._conn() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                inserted = await conn.fetch(
                    store._sql_add_one, task_id, task_type, 5, 0, 1, json.dumps({"v": token}),
                    now, now, now, None, None, None, None, "cancel", None,
                    "queued", None, None, None, None, store.channel, False,
                )  # fmt: skip
                if [row[0] for row in inserted] != [task_id]:
                    raise IntegrityError("the scratch task was not stored")
                claimed = await conn.fetch(
                    store._sql_claim, now, token, now, "taskyard-validate", [task_type], 1
                )
                if [row[1] for row in claimed if row[0] is not None] != [task_id]:
                    raise IntegrityError(f"claiming the scratch task returned {len(claimed)}")
                outcome = Outcome(task_id, token, TaskStatus.COMPLETED, utcnow())
                done = await conn.fetch(
                    store._sql_finish, [task_id], [token], [str(outcome.status)],
                    [json.dumps(token)], [None], [outcome.finished_at], [None], [False], [None],
                )  # fmt: skip
                if [row[0] for row in done] != [task_id]:
                    raise IntegrityError("completing the scratch task was refused")
                row = await conn.fetchrow(
                    f"SELECT status, attempts, result FROM {self.tasks_table} WHERE id = $1",
                    task_id,
                )
                if row is None or tuple(row) != ("completed", 1, json.dumps(token)):
                    raise IntegrityError(f"the scratch task reads back as {row!r}")
            finally:
                await transaction.rollback()
        return {"task_id": task_id, "seconds": time.perf_counter() - started}

    # -- maintenance --------------------------------------------------------------------------

    async def check_integrity(self, *, quick: bool = False) -> IntegrityFindings:
        """The server keeps its own files consistent; taskyard checks its invariants
        and that every index of the schema is valid (not left over from a failed
        ``REINDEX CONCURRENTLY``)."""
        storage: list[str] = []
        broken: list[str] = []
        async with self._conn() as conn:
            invalid = await conn.fetch(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = $1 AND NOT i.indisvalid",
                self.schema,
            )
            storage = [f"invalid index {row[0]}" for row in invalid] or ["ok"]
            for name, condition in INVARIANTS.items():  # the conditions are constants
                sql = f"SELECT COUNT(*) FROM {self.tasks_table} WHERE {condition}"
                number = int(await conn.fetchval(sql))
                if number:
                    broken.append(f"{number} {name}")
        return IntegrityFindings(storage, broken)

    async def optimize(self) -> list[str]:
        """``ANALYZE`` of taskyard's tables, then ``REINDEX CONCURRENTLY`` of the tasks
        table when its indexes are more than twice the size of its live rows' share."""
        done = await self.analyze()
        if await self._indexes_bloated():
            done += await self.reindex()
        return done

    async def _indexes_bloated(self) -> bool:
        rows = await self._fetch(
            "SELECT pg_indexes_size(c.oid), pg_relation_size(c.oid),"
            " COALESCE(s.n_live_tup, 0), COALESCE(s.n_dead_tup, 0)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
            " WHERE n.nspname = $1 AND c.relname = 'taskyard_tasks'",
            self.schema,
        )
        if not rows:
            return False
        indexes, _, live, dead = (int(value) for value in rows[0])
        return indexes > 8 * 1024 * 1024 and dead > 2 * max(live, 1)

    async def vacuum_tables(self) -> list[str]:
        """``VACUUM (ANALYZE)`` of taskyard's tables; returns the statements run."""
        done: list[str] = []
        async with self._conn() as conn:
            for table in TABLES:
                sql = f"VACUUM (ANALYZE) {self._q}.{table}"
                await conn.execute(sql, timeout=None)
                done.append(sql)
        return done

    async def analyze(self) -> list[str]:
        """``ANALYZE`` of taskyard's tables: fresh statistics for the planner."""
        done: list[str] = []
        async with self._conn() as conn:
            for table in TABLES:
                sql = f"ANALYZE {self._q}.{table}"
                await conn.execute(sql)
                done.append(sql)
        return done

    async def reindex(self) -> list[str]:
        """``REINDEX TABLE CONCURRENTLY`` of the tasks table (its indexes bloat under a
        busy queue); no lock that blocks workers is taken."""
        sql = f"REINDEX TABLE CONCURRENTLY {self.tasks_table}"
        async with self._conn() as conn:
            await conn.execute(sql, timeout=None)
        return [sql]

    async def table_statistics(self) -> dict[str, TableStatistics]:
        """Per table: live and dead rows (the statistics collector's estimates), total
        size (with indexes and TOAST), the last (auto)vacuum: what ``status`` and
        ``metrics`` report on PostgreSQL."""
        rows = await self._fetch(
            "SELECT c.relname, COALESCE(s.n_live_tup, 0), COALESCE(s.n_dead_tup, 0),"
            " pg_total_relation_size(c.oid),"
            " EXTRACT(EPOCH FROM GREATEST(s.last_vacuum, s.last_autovacuum))::bigint"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
            " WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname = ANY($2::text[])",
            self.schema,
            list(TABLES),
        )
        return {
            row[0]: TableStatistics(
                live_rows=int(row[1]), dead_rows=int(row[2]), size_bytes=int(row[3]),
                last_vacuum=None if row[4] is None else float(row[4]),
            )
            for row in sorted(rows)
        }  # fmt: skip

    async def drop_schema(self) -> None:
        """Drop the whole schema (tests; irreversible)."""
        async with self._conn() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {self._q} CASCADE")


__all__ = ["PostgresOperations"]
