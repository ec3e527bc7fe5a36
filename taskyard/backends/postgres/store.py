"""The PostgreSQL task store, over asyncpg.

Round trips are what cost here (each is a commit with ``synchronous_commit = on``), so
every write is one statement in autocommit, and what arrives together shares it:

- ``add``: callers arriving while an insert is in flight join the next one, and all of
  their records go in one ``INSERT ... SELECT FROM unnest(...)`` (group commit); a
  throttled ``pg_notify`` rides in the same statement;
- ``claim``: one CTE picks due, queued tasks ``ORDER BY priority, seq LIMIT n FOR UPDATE
  SKIP LOCKED``, and the ``UPDATE ... RETURNING`` that leases them joins on it;
- ``finish`` and ``renew_leases``: one ``UPDATE ... FROM unnest(...)`` per batch.

Wake-ups: one dedicated connection (not from the pool) LISTENs on the schema's
channel and calls the engine's wake-up; while it is down (re-opened with backoff)
:meth:`changed_elsewhere` says yes at every poll, so polling covers the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from loguru import logger

from taskyard.backends.postgres import schedules, schema
from taskyard.backends.postgres.errors import translate
from taskyard.backends.postgres.operations import PostgresOperations
from taskyard.framework.dsn import redact_dsn
from taskyard.framework.errors import (
    DependencyError,
    ManagerStateError,
    StoreError,
    StoreUnavailable,
    TaskyardError,
)
from taskyard.framework.models import (
    MAX_TRACEBACKS,
    Outcome,
    TaskRecord,
    TaskStatus,
    dumps,
    keep_tracebacks,
    trace_context_from_text,
    trace_context_text,
)
from taskyard.framework.schedules import ScheduleRecord
from taskyard.framework.store import Capability
from taskyard.framework.workflows import cancelled_because, check_batch, settles

TERMINAL = ("completed", "failed", "cancelled")

COLUMNS = (
    "seq, id, type, status, priority, attempts, max_attempts, payload, result, error, "
    "created_at, updated_at, run_after, started_at, finished_at, timeout, idempotency_key, "
    "lease_token, lease_expires_at, worker_id, trace_context, tracebacks::text, "
    "concurrency_key, on_dependency_failure, workflow_id"
)
APPLICATION_NAME = "taskyard"
"""Every connection of the store says so (``pg_stat_activity.application_name``)."""
SAFETY_POLL = 5.0
"""Even with LISTEN up, say "changed" this often: a notification can be lost in a
reconnect that nobody noticed."""


def _status(value: str) -> TaskStatus:
    return TaskStatus(value)


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: an error message that has one keeps it visibly."""
    return None if value is None else value.replace("\x00", "\\x00")


def _traceback_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A tracebacks entry PostgreSQL can store (jsonb holds no NUL character)."""
    return {key: _text(value) if isinstance(value, str) else value for key, value in entry.items()}


def _traceback_json(entry: dict[str, Any]) -> str:
    return json.dumps(_traceback_entry(entry))


def row_to_record(row: Sequence[Any]) -> TaskRecord:
    return TaskRecord(
        seq=row[0],
        id=row[1],
        type=row[2],
        status=_status(row[3]),
        priority=row[4],
        attempts=row[5],
        max_attempts=row[6],
        payload=json.loads(row[7]),
        payload_json=row[7],
        result=None if row[8] is None else json.loads(row[8]),
        error=row[9],
        created_at=row[10],
        updated_at=row[11],
        run_after=row[12],
        started_at=row[13],
        finished_at=row[14],
        timeout=row[15],
        idempotency_key=row[16],
        lease_token=row[17],
        lease_expires_at=row[18],
        worker_id=row[19],
        trace_context=trace_context_from_text(row[20]),
        tracebacks=json.loads(row[21]),
        concurrency_key=row[22],
        on_dependency_failure=row[23],
        workflow_id=row[24],
    )


def _claim_columns(record: TaskRecord) -> tuple[Any, ...]:
    """A new task's status and lease columns: queued, or running under the lease of the
    engine that claims it as it is added (Capability.CLAIM_ON_ADD)."""
    if record.status is TaskStatus.RUNNING:
        return (
            "running",
            record.started_at,
            record.lease_token,
            record.lease_expires_at,
            record.worker_id,
        )
    return ("queued", None, None, None, None)


def _close_abandoned(attempt: asyncio.Future[asyncpg.Connection]) -> None:
    """Close the connection of a connect whose caller was cancelled (its error, if it
    failed, is read here, so that asyncio does not report it as never retrieved)."""
    if attempt.cancelled() or attempt.exception() is not None:
        return
    attempt.result().terminate()


class PostgresStore(PostgresOperations):
    """Tasks in one PostgreSQL schema, shared by any number of processes on any hosts."""

    capabilities = frozenset(
        {
            Capability.DURABLE,
            Capability.MULTI_PROCESS,
            Capability.TABLE_MAINTENANCE,
            Capability.TABLE_STATISTICS,
            Capability.WORKFLOWS,
            Capability.CONCURRENCY_KEYS,
            Capability.CLAIM_ON_ADD,
        }
    )

    def __init__(
        self,
        dsn: str,
        *,
        schema_name: str = "taskyard",
        pool_size: int = 10,
        notify: bool = True,
        notify_interval: float = 0.005,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        open_retry: float = 0.0,
    ) -> None:
        self.dsn = dsn
        self.open_retry = open_retry
        self.schema = schema_name
        self._q = schema.quoted_schema(schema_name)
        self.pool_size = max(1, int(pool_size))
        self.notify = notify
        self.notify_interval = notify_interval
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.where = f"PostgreSQL queue {redact_dsn(dsn)} (schema {schema_name})"
        self.channel = f"taskyard_{schema_name}"
        self.migrations_applied: list[int] = []
        self._pool: asyncpg.Pool | None = None
        self._closing = False
        # group commit of adds
        self._adds: list[tuple[Sequence[TaskRecord], asyncio.Future[list[str]]]] = []
        self._add_writer: asyncio.Task[None] | None = None
        self._add_busy = False
        # NOTIFY throttle
        self._last_notify = 0.0
        self._trailing: asyncio.TimerHandle | None = None
        # LISTEN
        self._listen_task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._listening = False
        self._listen_error = "not connected yet"
        self._changed = True
        self._last_safety = 0.0
        self._wakeup: Callable[[], None] | None = None
        # health
        self._down_reason: str | None = None
        t = f"{self._q}.taskyard_tasks"
        self.tasks_table = t
        self._sql_add = (
            "WITH ins AS ("
            f" INSERT INTO {t} (id, type, priority, attempts, max_attempts, payload,"
            " created_at, updated_at, run_after, timeout, idempotency_key, trace_context,"
            " concurrency_key, on_dependency_failure, workflow_id, status, started_at,"
            " lease_token, lease_expires_at, worker_id)"
            " SELECT i, ty, p, a, m, pl::json, c, u, r, tm, k, tc, ck, od, w, st, sa, lt, le, wi"
            " FROM unnest("
            "$1::text[], $2::text[], $3::int[], $4::int[], $5::int[], $6::text[],"
            " $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::float8[],"
            " $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],"
            " $16::text[], $17::timestamptz[], $18::text[], $19::timestamptz[], $20::text[])"
            " AS x(i, ty, p, a, m, pl, c, u, r, tm, k, tc, ck, od, w, st, sa, lt, le, wi)"
            " ON CONFLICT DO NOTHING RETURNING id),"
            " wake AS (SELECT pg_notify($21, '') WHERE $22::bool)"
            " SELECT id FROM ins WHERE (SELECT count(*) FROM wake) >= 0"
        )
        self._sql_add_one = (  # the same for one task, without the arrays
            "WITH ins AS ("
            f" INSERT INTO {t} (id, type, priority, attempts, max_attempts, payload,"
            " created_at, updated_at, run_after, timeout, idempotency_key, trace_context,"
            " concurrency_key, on_dependency_failure, workflow_id, status, started_at,"
            " lease_token, lease_expires_at, worker_id)"
            " VALUES ($1, $2, $3, $4, $5, $6::json, $7, $8, $9, $10, $11, $12, $13, $14, $15,"
            " $16, $17, $18, $19, $20) ON CONFLICT DO NOTHING RETURNING id),"
            " wake AS (SELECT pg_notify($21, '') WHERE $22::bool)"
            " SELECT id FROM ins WHERE (SELECT count(*) FROM wake) >= 0"
        )
        # The claim of tasks without a key, and (same statement) whether keyed tasks are
        # due: only then does a claim take the keyed path below.
        self._sql_claim = (
            f"WITH next AS (SELECT seq FROM {t}"
            " WHERE status = 'queued' AND concurrency_key IS NULL AND run_after <= $1"
            " AND ($5::text[] IS NULL OR type = ANY($5::text[]))"
            " ORDER BY priority, seq LIMIT $6 FOR UPDATE SKIP LOCKED),"
            f" claimed AS (UPDATE {t} AS t SET status = 'running', attempts = t.attempts + 1,"
            " started_at = $1, updated_at = $1, lease_token = $2, lease_expires_at = $3,"
            " worker_id = $4 FROM next WHERE t.seq = next.seq"
            " RETURNING t.seq, t.id, t.type, t.priority, t.attempts, t.max_attempts, t.payload,"
            " t.run_after, t.timeout, t.created_at, t.trace_context),"
            f" keyed AS (SELECT EXISTS (SELECT 1 FROM {t} WHERE status = 'queued'"
            " AND concurrency_key IS NOT NULL AND run_after <= $1"
            " AND ($5::text[] IS NULL OR type = ANY($5::text[]))) AS due)"
            " SELECT claimed.*, keyed.due FROM keyed LEFT JOIN claimed ON true"
        )
        # Keyed tasks, run under a transaction-level advisory lock that every keyed claim
        # of the schema takes first: claims of keyed tasks follow one another, and each
        # counts the running tasks of a key in a snapshot taken after the previous one
        # committed, so a limit holds across processes and hosts. Distinct waiting keys
        # are visited by a skip-scan (one index probe per key), at most $6 tasks per key,
        # so a backlog behind a key at its limit is not walked.
        self._sql_claim_keyed = (
            "WITH RECURSIVE keys(k) AS ("
            f"  (SELECT concurrency_key FROM {t} WHERE status = 'queued'"
            "    AND concurrency_key IS NOT NULL ORDER BY concurrency_key LIMIT 1)"
            "  UNION ALL"
            f"  SELECT (SELECT concurrency_key FROM {t} WHERE status = 'queued'"
            "    AND concurrency_key > keys.k ORDER BY concurrency_key LIMIT 1)"
            "  FROM keys WHERE keys.k IS NOT NULL),"
            " cand AS (SELECT c.seq, c.priority, c.type, c.concurrency_key, row_number() OVER"
            "   (PARTITION BY c.concurrency_key ORDER BY c.priority, c.seq) AS rank"
            "  FROM keys CROSS JOIN LATERAL ("
            f"   SELECT seq, priority, type, concurrency_key FROM {t}"
            "    WHERE status = 'queued' AND concurrency_key = keys.k AND run_after <= $1"
            "    AND ($5::text[] IS NULL OR type = ANY($5::text[]))"
            "    ORDER BY priority, seq LIMIT $6) AS c"
            "  WHERE keys.k IS NOT NULL),"
            f" running AS (SELECT concurrency_key, count(*) AS n FROM {t}"
            "  WHERE status = 'running' AND concurrency_key IN (SELECT k FROM keys)"
            "  GROUP BY concurrency_key),"
            " next AS (SELECT cand.seq FROM cand LEFT JOIN running AS r"
            "  ON r.concurrency_key = cand.concurrency_key"
            "  WHERE cand.rank + COALESCE(r.n, 0) <= COALESCE("
            "   (SELECT l.value::int FROM json_each_text($7::json) AS l WHERE l.key <> ''"
            "     AND left(cand.concurrency_key, length(l.key)) = l.key"
            "     ORDER BY length(l.key) DESC LIMIT 1),"
            "   (SELECT l.value::int FROM json_each_text($7::json) AS l"
            "     WHERE l.key = cand.type),"
            "   (SELECT l.value::int FROM json_each_text($7::json) AS l WHERE l.key = ''), 1)"
            "  ORDER BY cand.priority, cand.seq LIMIT $6)"
            f" UPDATE {t} AS t SET status = 'running', attempts = t.attempts + 1,"
            " started_at = $1, updated_at = $1, lease_token = $2, lease_expires_at = $3,"
            " worker_id = $4 FROM next WHERE t.seq = next.seq"
            " RETURNING t.seq, t.id, t.type, t.priority, t.attempts, t.max_attempts, t.payload,"
            " t.run_after, t.timeout, t.created_at, t.trace_context"
        )
        self._keyed_lock = schema.lock_key(f"{schema_name}:keyed")
        # finish and renew join the batch to the table by id (unique index) and match the
        # token, nothing else: a lease token is set by a claim and cleared by every move
        # out of RUNNING, so it implies the status. A `status = 'running'` condition here
        # would invite the planner, when its statistics say few tasks run (after a fill),
        # to scan the partial lease index once per batch row: quadratic, seconds per flush.
        self._sql_finish = (
            f"UPDATE {t} AS t SET status = o.status,"
            " attempts = CASE WHEN o.release THEN t.attempts - 1 ELSE t.attempts END,"
            " result = CASE WHEN o.status = 'queued' THEN t.result ELSE o.result::json END,"
            " error = CASE WHEN o.release THEN t.error ELSE o.error END,"
            " run_after = CASE WHEN o.status = 'queued' THEN o.run_after ELSE t.run_after END,"
            " finished_at = CASE WHEN o.status = 'queued' THEN t.finished_at ELSE o.at END,"
            " updated_at = o.at, lease_token = NULL, lease_expires_at = NULL,"
            " worker_id = CASE WHEN o.status = 'queued' THEN NULL ELSE t.worker_id END,"
            # a failed attempt's traceback entry is appended, the newest MAX_TRACEBACKS kept
            " tracebacks = CASE WHEN o.tb IS NULL THEN t.tracebacks ELSE (CASE WHEN"
            f" jsonb_array_length(t.tracebacks) >= {MAX_TRACEBACKS} THEN t.tracebacks - 0"
            " ELSE t.tracebacks END) || jsonb_build_array(o.tb::jsonb) END"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
            " $6::timestamptz[], $7::timestamptz[], $8::bool[], $9::text[])"
            " AS o(id, token, status, result, error, at, run_after, release, tb)"
            " WHERE t.id = o.id AND t.lease_token = o.token"
        )
        # A task that others depend on is finished on the settling path (a transaction);
        # the flag is set by the scheduler of a dependent with a write to this very row,
        # so a finish waiting on that write re-checks it and steps aside.
        self._sql_finish_plain = self._sql_finish + " AND NOT t.has_dependents RETURNING t.id"
        self._sql_finish += " RETURNING t.id, t.status"
        self._sql_renew = (
            f"UPDATE {t} AS t SET lease_expires_at = $3"
            " FROM unnest($1::text[], $2::text[]) AS l(id, token)"
            " WHERE t.id = l.id AND t.lease_token = l.token"
            " RETURNING t.id"
        )
        self._sql_recover = (
            f"UPDATE {t} SET"
            " status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,"
            " finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE finished_at END,"
            " error = CASE WHEN attempts >= max_attempts"
            " THEN 'lease expired: the worker running it stopped responding' ELSE error END,"
            " run_after = CASE WHEN attempts >= max_attempts THEN run_after ELSE $1 END,"
            " worker_id = CASE WHEN attempts >= max_attempts THEN worker_id ELSE NULL END,"
            " updated_at = $1, lease_token = NULL, lease_expires_at = NULL"
            " WHERE status = 'running' AND lease_expires_at < $1"
            f" RETURNING {COLUMNS}"
        )
        self._sql_import = (
            f"INSERT INTO {t} (id, type, status, priority, attempts, max_attempts, payload,"
            " result, error, created_at, updated_at, run_after, started_at, finished_at,"
            " timeout, idempotency_key, trace_context, tracebacks, concurrency_key,"
            " on_dependency_failure, workflow_id)"
            " SELECT i, ty, s, p, a, m, pl::json, re::json, e, c, u, r, st, f, tm, k, tc,"
            " tb::jsonb, ck, od, w"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[], $6::int[],"
            " $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[],"
            " $12::timestamptz[], $13::timestamptz[], $14::timestamptz[], $15::float8[],"
            " $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[])"
            " AS x(i, ty, s, p, a, m, pl, re, e, c, u, r, st, f, tm, k, tc, tb, ck, od, w)"
            " ON CONFLICT DO NOTHING RETURNING id"
        )
        self.deps_table = f"{self._q}.taskyard_dependencies"

    def __repr__(self) -> str:
        return f"<PostgresStore {self.where}>"

    # -- lifecycle -------------------------------------------------------------------------

    def _server_settings(self, role: str = "") -> dict[str, str]:
        name = f"{APPLICATION_NAME}-{role}" if role else APPLICATION_NAME
        return {"application_name": name}

    async def _connect(self, role: str) -> asyncpg.Connection:
        """A connection of its own (LISTEN, runs). Cancelled while connecting (the store
        closing), the attempt is left to finish and its connection closed: cancelling
        asyncpg mid-handshake leaves a future with an error that nobody reads, which
        asyncio prints as "Future exception was never retrieved"."""
        attempt = asyncio.ensure_future(
            asyncpg.connect(
                self.dsn,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                server_settings=self._server_settings(role),
            )
        )
        try:
            conn: asyncpg.Connection = await asyncio.shield(attempt)
        except asyncio.CancelledError:
            attempt.add_done_callback(_close_abandoned)
            raise
        except Exception as exc:
            raise translate(exc, self.where) from exc
        return conn

    async def open(self) -> None:
        """Connect, check and migrate the schema, and start listening. While the server
        cannot be reached, keep trying with backoff for up to ``open_retry`` seconds
        (a worker started before its database); other refusals are raised at once."""
        if self._pool is not None:
            return
        deadline = time.monotonic() + self.open_retry
        backoff = 0.2
        while True:
            try:
                await self._open()
                return
            except StoreUnavailable as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                logger.warning("taskyard: {}; trying again in {:.1f} s", exc, min(backoff, left))
                await asyncio.sleep(min(backoff, left))
                backoff = min(backoff * 2, 5.0)

    async def _open(self) -> None:
        self._closing = False
        conn = await self._connect("migrate")
        try:
            self.migrations_applied = await schema.migrate(conn, self.schema, self.where)
        except TaskyardError:
            raise
        except Exception as exc:
            raise translate(exc, self.where) from exc
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
        if self.migrations_applied:
            logger.info(
                "taskyard: {} migrated to schema version(s) {}", self.where,
                self.migrations_applied,
            )  # fmt: skip
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=min(2, self.pool_size),
                max_size=self.pool_size,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                server_settings=self._server_settings(),
                max_inactive_connection_lifetime=300.0,
            )
        except Exception as exc:
            raise translate(exc, self.where) from exc
        self._down_reason = None
        if self.notify:
            self._listen_task = asyncio.create_task(
                self._listen_loop(), name="taskyard-postgres-listen"
            )

    async def close(self) -> None:
        if self._pool is None:
            return
        self._closing = True
        writer = self._add_writer
        if writer is not None:
            await asyncio.gather(writer, return_exceptions=True)
        if self._trailing is not None:
            self._trailing.cancel()
            self._trailing = None
        if self._listen_task is not None:
            self._listen_task.cancel()
            await asyncio.gather(self._listen_task, return_exceptions=True)
            self._listen_task = None
        pool, self._pool = self._pool, None
        try:
            await asyncio.wait_for(pool.close(), timeout=5.0)
        except (TimeoutError, Exception):
            pool.terminate()

    # -- connections -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; driver errors leave as taskyard errors, and the store's
        health follows: a connection error marks it down, a success up again."""
        pool = self._pool
        if pool is None:
            raise ManagerStateError(f"{self!r} is not open")
        try:
            async with pool.acquire() as conn:
                yield conn
        except TaskyardError:
            raise
        except Exception as exc:
            error = translate(exc, self.where)
            if isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError) or (
                isinstance(exc, asyncpg.PostgresError)
                and str(getattr(exc, "sqlstate", ""))[:2] in ("08", "57")
            ):
                if self._down_reason is None:
                    logger.warning("taskyard: {}", error)
                self._down_reason = str(error)
            raise error from exc
        else:
            if self._down_reason is not None:
                logger.info("taskyard: {} answers again", self.where)
                self._down_reason = None

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._conn() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows

    # -- wake-ups --------------------------------------------------------------------------

    def set_wakeup(self, wake: Callable[[], None]) -> None:
        self._wakeup = wake

    def _notified(self, *_: Any) -> None:
        self._changed = True
        if self._wakeup is not None:
            self._wakeup()

    def _want_notify(self) -> bool:
        """Whether this statement carries the NOTIFY: at most one per ``notify_interval``
        per process; a suppressed one is sent once the interval has passed."""
        if not self.notify:
            return False
        now = time.monotonic()
        if now - self._last_notify >= self.notify_interval:
            self._last_notify = now
            return True
        if self._trailing is None:
            delay = self.notify_interval - (now - self._last_notify)
            self._trailing = asyncio.get_running_loop().call_later(delay, self._send_trailing)
        return False

    def _send_trailing(self) -> None:
        self._trailing = None
        if self._pool is None or self._closing:
            return
        self._last_notify = time.monotonic()
        task = asyncio.ensure_future(self._notify_now())
        task.add_done_callback(lambda done: done.exception() if not done.cancelled() else None)

    async def _notify_now(self) -> None:
        with contextlib.suppress(StoreError):
            async with self._conn() as conn:
                await conn.execute("SELECT pg_notify($1, '')", self.channel)

    async def _listen_loop(self) -> None:
        """Keep one LISTEN connection open; re-open it with backoff when it is lost."""
        backoff = 0.1
        while not self._closing:
            conn: asyncpg.Connection | None = None
            try:
                conn = await self._connect("listen")
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(self.channel, self._notified)
                self._listener, self._listening = conn, True
                self._listen_error = ""
                self._notified()  # whatever was written while nobody listened
                backoff = 0.1
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), SAFETY_POLL)
                    if not lost.is_set():
                        await conn.fetchval("SELECT 1", timeout=self.connect_timeout)
                self._listen_error = "the LISTEN connection was closed by the server"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._listen_error = str(translate(exc, self.where))
            finally:
                self._listening = False
                self._listener = None
                if conn is not None:
                    conn.terminate()
            if self._closing:
                return
            logger.debug("taskyard: LISTEN lost ({}); polling until it is back", self._listen_error)
            self._notified()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def changed_elsewhere(self) -> bool:
        now = time.monotonic()
        if not self._listening or self._changed or now - self._last_safety >= SAFETY_POLL:
            self._changed = False
            self._last_safety = now
            return True
        return False

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up (else the engine polls)."""
        return self._listening

    async def health(self) -> tuple[str, str]:
        try:
            async with self._conn() as conn:
                await conn.fetchval("SELECT 1")
        except (StoreError, ManagerStateError) as exc:
            return "down", str(exc)
        if self.notify and not self._listening:
            return "degraded", (
                f"{self.where}: no LISTEN connection ({self._listen_error}); workers poll "
                "for new tasks until it is re-opened"
            )
        return "ok", ""

    # -- TaskStore: writes -----------------------------------------------------------------

    async def add(self, records: Sequence[TaskRecord]) -> list[str]:
        """Group commit: a caller that finds no insert in flight sends its own at once
        (no hop through a task); callers arriving meanwhile queue up, and the writer
        task sends everything queued in the next statement, and so on."""
        if self._pool is None or self._closing:
            raise ManagerStateError(f"{self!r} is not open")
        if any(record.depends_on for record in records):
            return await self._add_linked(records)
        if self._add_busy:
            future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
            self._adds.append((records, future))
            return await future
        self._add_busy = True
        try:
            return await self._insert(records)
        finally:
            if self._adds:
                self._add_writer = asyncio.create_task(self._write_adds(), name="taskyard-pg-add")
            else:
                self._add_busy = False

    async def _write_adds(self) -> None:
        """Group commit: everything that queued up while the last insert was in flight
        goes in the next one."""
        try:
            while self._adds:
                batch, self._adds = self._adds, []
                records = [record for records, _ in batch for record in records]
                try:
                    ids = await self._insert(records)
                except BaseException as exc:
                    error = exc if isinstance(exc, Exception) else StoreError("store closed")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                start = 0
                for part, future in batch:
                    if not future.done():
                        future.set_result(ids[start : start + len(part)])
                    start += len(part)
        finally:
            self._add_writer = None
            self._add_busy = False

    async def _add_linked(self, records: Sequence[TaskRecord]) -> list[str]:
        """Tasks with dependencies: inserted, linked and given their status in one
        transaction (:meth:`_link`)."""
        check_batch(records)
        async with self._conn() as conn, conn.transaction():
            ids, inserted = await self._insert_on(conn, records)
            await self._link(conn, [r for r in records if r.depends_on and r.id in inserted])
        return ids

    async def _link(
        self, conn: asyncpg.Connection, records: Sequence[TaskRecord], *, imported: bool = False
    ) -> None:
        """Store the dependencies of new tasks and set each one's status from theirs:
        waiting, queued (all finished) or cancelled (one failed and its policy says so).

        The dependencies are flagged (``has_dependents``) with an update of their own rows,
        in id order: a finish of one of them waits for this transaction, then sees the
        flag and settles its dependents, this one's included; a dependency that finished
        first is seen finished here. An imported task's dependencies that are not here
        finished before it was exported, and are left out."""
        if not records:
            return
        parents = sorted({parent for record in records for parent in record.depends_on})
        rows = await conn.fetch(
            f"UPDATE {self.tasks_table} AS t SET has_dependents = true FROM (SELECT id FROM"
            f" {self.tasks_table} WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE) AS p"
            " WHERE t.id = p.id RETURNING t.id, t.status",
            parents,
        )
        status_of = {row[0]: TaskStatus(row[1]) for row in rows}
        missing = [parent for parent in parents if parent not in status_of]
        if missing and not imported:
            raise DependencyError(
                f"depends_on names {missing[0]}"
                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}, which this "
                "store does not hold; schedule the dependencies first (or earlier in the same "
                "batch)"
            )
        pairs = [(p, r.id) for r in records for p in r.depends_on if p in status_of]
        await conn.execute(
            f"INSERT INTO {self.deps_table} (depends_on, task_id)"
            " SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
            [parent for parent, _ in pairs],
            [child for _, child in pairs],
        )
        columns: list[list[Any]] = [[], [], [], []]
        for record in records:
            status, waiting, error = TaskStatus.QUEUED, 0, None
            for parent in record.depends_on:
                parent_status = status_of.get(parent)
                if parent_status is None:
                    continue
                if not parent_status.is_terminal:
                    waiting += 1
                elif settles(parent_status, record.on_dependency_failure) is not None:
                    status, error = TaskStatus.CANCELLED, cancelled_because(parent, parent_status)
                    break
            if status is TaskStatus.QUEUED and waiting:
                status = TaskStatus.WAITING
            for column, value in zip(
                columns, (record.id, str(status), waiting, error), strict=True
            ):
                column.append(value)
        await conn.execute(
            f"UPDATE {self.tasks_table} AS t SET status = x.s, waiting_on = x.w,"
            " error = COALESCE(x.e, t.error),"
            " finished_at = CASE WHEN x.s = 'cancelled' THEN t.updated_at ELSE t.finished_at END"
            " FROM unnest($1::text[], $2::text[], $3::int[], $4::text[]) AS x(id, s, w, e)"
            " WHERE t.id = x.id",
            *columns,
        )

    async def _settle(
        self, conn: asyncpg.Connection, finished: Sequence[tuple[str, str]], now: datetime
    ) -> int:
        """Tasks in ``finished`` just ended (id, status), in this transaction: cancel or
        count down their waiting dependents, cascading
        (:func:`~taskyard.framework.workflows.settles`); returns how many became queued.

        Each round is one read of the dependents through the dependency table's key
        (locking them in id order, so concurrent finishers of one fan-in queue up on the
        dependent's row instead of deadlocking) and one update per kind of change. The
        countdown is ``waiting_on - n`` on the row as it is once locked: the last of two
        finishers committing at once sees the other's decrement, so a dependent is
        released exactly once."""
        released = 0
        work = list(finished)
        while work:
            rows = await conn.fetch(
                f"SELECT t.id, t.on_dependency_failure, f.status, f.id"
                " FROM unnest($1::text[], $2::text[]) AS f(id, status)"
                f" JOIN {self.deps_table} AS d ON d.depends_on = f.id"
                f" JOIN {self.tasks_table} AS t ON t.id = d.task_id"
                " WHERE t.status = 'waiting' ORDER BY t.id FOR UPDATE OF t",
                [task_id for task_id, _ in work],
                [status for _, status in work],
            )
            cancel: dict[str, str] = {}
            countdown: Counter[str] = Counter()
            for child, policy, parent_status, parent in rows:
                if settles(TaskStatus(parent_status), policy) is not None:
                    cancel.setdefault(child, cancelled_because(parent, TaskStatus(parent_status)))
                else:
                    countdown[child] += 1
            for child in cancel:
                countdown.pop(child, None)
            if cancel:
                await conn.execute(
                    f"UPDATE {self.tasks_table} AS t SET status = 'cancelled', waiting_on = 0,"
                    " finished_at = $1, updated_at = $1, error = x.e"
                    " FROM unnest($2::text[], $3::text[]) AS x(id, e) WHERE t.id = x.id",
                    now,
                    list(cancel),
                    list(cancel.values()),
                )
            if countdown:
                statuses = await conn.fetch(
                    f"UPDATE {self.tasks_table} AS t SET waiting_on = t.waiting_on - x.n,"
                    " status = CASE WHEN t.waiting_on - x.n <= 0 THEN 'queued' ELSE 'waiting'"
                    " END, updated_at = $1"
                    " FROM unnest($2::text[], $3::int[]) AS x(id, n) WHERE t.id = x.id"
                    " RETURNING t.status",
                    now,
                    list(countdown),
                    list(countdown.values()),
                )
                released += sum(1 for row in statuses if row[0] == "queued")
            work = [(child, "cancelled") for child in cancel]
        if released and self.notify:
            await conn.execute("SELECT pg_notify($1, '')", self.channel)
        return released

    async def _insert(self, records: Sequence[TaskRecord]) -> list[str]:
        async with self._conn() as conn:
            ids, _ = await self._insert_on(conn, records)
        return ids

    async def _insert_on(
        self, conn: asyncpg.Connection, records: Sequence[TaskRecord]
    ) -> tuple[list[str], set[str]]:
        rows_of: list[tuple[Any, ...]] = [
            (
                record.id, record.type, record.priority, record.attempts, record.max_attempts,
                record.payload_json or dumps(record.payload), record.created_at,
                record.updated_at, record.run_after, record.timeout, record.idempotency_key,
                trace_context_text(record.trace_context),
                record.concurrency_key, record.on_dependency_failure, record.workflow_id,
                *_claim_columns(record),
            )
            for record in records
        ]  # fmt: skip
        args: list[Any]
        if len(rows_of) == 1:
            sql, args = self._sql_add_one, list(rows_of[0])
        else:
            sql, args = self._sql_add, [list(column) for column in zip(*rows_of, strict=True)]
        # tasks claimed as they are added (Capability.CLAIM_ON_ADD) wake no other worker
        wake = any(record.status is not TaskStatus.RUNNING for record in records)
        rows = await conn.fetch(sql, *args, self.channel, wake and self._want_notify())
        inserted = {row[0] for row in rows}
        keys = [
            record.idempotency_key
            for record in records
            if record.id not in inserted and record.idempotency_key
        ]
        known: dict[str, str] = {}
        if keys:
            found = await conn.fetch(
                f"SELECT idempotency_key, id FROM {self.tasks_table}"
                " WHERE idempotency_key = ANY($1::text[])",
                keys,
            )
            known = {row[0]: row[1] for row in found}
        ids = [
            record.id
            if record.id in inserted or not record.idempotency_key
            else known.get(record.idempotency_key, record.id)
            for record in records
        ]
        return ids, inserted

    async def import_records(self, records: Sequence[TaskRecord]) -> list[bool]:
        if not records:
            return []
        columns: list[list[Any]] = [[] for _ in range(21)]
        for record in records:
            status = record.status
            if status in (TaskStatus.RUNNING, TaskStatus.WAITING):  # no lease here; _link
                status = TaskStatus.QUEUED  # decides what a waiting one waits for
            values = (
                record.id, record.type, str(status), record.priority, record.attempts,
                record.max_attempts, record.payload_json or dumps(record.payload),
                None if record.result is None else dumps(record.result, what="result"),
                _text(record.error), record.created_at, record.updated_at, record.run_after,
                record.started_at, record.finished_at, record.timeout, record.idempotency_key,
                trace_context_text(record.trace_context),
                json.dumps([_traceback_entry(e) for e in keep_tracebacks(record.tracebacks)]),
                record.concurrency_key, record.on_dependency_failure, record.workflow_id,
            )  # fmt: skip
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(self._sql_import, *columns)
            inserted = {row[0] for row in rows}
            waiting = [
                r
                for r in records
                if r.status is TaskStatus.WAITING and r.depends_on and r.id in inserted
            ]
            await self._link(conn, waiting, imported=True)
        stored: list[bool] = []
        seen: set[str] = set()
        for record in records:
            stored.append(record.id in inserted and record.id not in seen)
            seen.add(record.id)
        return stored

    async def claim(
        self,
        *,
        limit: int,
        now: datetime,
        worker_id: str,
        lease_seconds: float,
        types: Collection[str] | None = None,
        limits: Mapping[str, int] | None = None,
    ) -> list[TaskRecord]:
        """Tasks without a key in one statement (which also says whether keyed tasks are
        due); then, only if some are and room is left, keyed ones in a transaction under
        the schema's keyed-claim lock (see ``_sql_claim_keyed``). Within one claim, tasks
        without a key come first."""
        if limit <= 0:
            return []
        token = uuid.uuid4().hex
        expires = now + timedelta(seconds=lease_seconds)
        wanted = None if types is None else sorted(types)
        found = await self._fetch(self._sql_claim, now, token, expires, worker_id, wanted, limit)
        rows = [row for row in found if row[0] is not None]
        self.held_back = False
        if found and found[0][-1] and len(rows) < limit:
            room = limit - len(rows)
            async with self._conn() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", self._keyed_lock)
                keyed = await conn.fetch(
                    self._sql_claim_keyed, now, token, expires, worker_id, wanted,
                    room, json.dumps(dict(limits or {})),
                )  # fmt: skip
            self.held_back = len(keyed) < room  # due keyed tasks left at their limit
            rows += keyed
        records = [
            TaskRecord(
                seq=row[0],
                id=row[1],
                type=row[2],
                status=TaskStatus.RUNNING,
                priority=row[3],
                attempts=row[4],
                max_attempts=row[5],
                payload=json.loads(row[6]),
                payload_json=row[6],
                created_at=row[9],
                updated_at=now,
                run_after=row[7],
                started_at=now,
                timeout=row[8],
                lease_token=token,
                lease_expires_at=expires,
                trace_context=trace_context_from_text(row[10]),
                worker_id=worker_id,
            )
            for row in rows
        ]
        records.sort(key=lambda record: (record.priority, record.seq))
        return records

    async def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []
        columns: list[list[Any]] = [[] for _ in range(9)]
        for outcome in outcomes:
            queued = outcome.status is TaskStatus.QUEUED
            values = (
                outcome.task_id, outcome.lease_token, str(outcome.status),
                None if queued else outcome.result_json, _text(outcome.error),
                outcome.finished_at,
                (outcome.run_after or outcome.finished_at) if queued else None,
                bool(outcome.release),
                None if outcome.traceback is None else _traceback_json(outcome.traceback),
            )  # fmt: skip
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        rows = await self._fetch(self._sql_finish_plain, *columns)
        applied = {row[0] for row in rows}
        rest = [i for i, outcome in enumerate(outcomes) if outcome.task_id not in applied]
        if rest:  # tasks with dependents (or leases lost): settled in the same transaction
            async with self._conn() as conn, conn.transaction():
                done = await conn.fetch(
                    self._sql_finish, *[[column[i] for i in rest] for column in columns]
                )
                applied |= {row[0] for row in done}
                ended = [(row[0], row[1]) for row in done if row[1] in TERMINAL]
                released = await self._settle(conn, ended, outcomes[0].finished_at)
            self.releases += released
        return [outcome.task_id in applied for outcome in outcomes]

    async def renew_leases(
        self, leases: Sequence[tuple[str, str]], *, until: datetime
    ) -> list[str]:
        if not leases:
            return []
        ids = [task_id for task_id, _ in leases]
        tokens = [token for _, token in leases]
        rows = await self._fetch(self._sql_renew, ids, tokens, until)
        held = {row[0] for row in rows}
        return [task_id for task_id in ids if task_id not in held]

    async def cancel(self, task_id: str, *, now: datetime) -> TaskStatus | None:
        async with self._conn() as conn, conn.transaction():
            found = await conn.fetchval(
                f"SELECT status FROM {self.tasks_table} WHERE id = $1 FOR UPDATE", task_id
            )
            if found is None:
                return None
            before = TaskStatus(found)
            if before.is_terminal:
                return before
            await conn.execute(
                f"UPDATE {self.tasks_table} SET status = 'cancelled', finished_at = $1,"
                " updated_at = $1, lease_token = NULL, lease_expires_at = NULL, waiting_on = 0"
                " WHERE id = $2",
                now,
                task_id,
            )
            released = await self._settle(conn, [(task_id, "cancelled")], now)
        self.releases += released
        return before

    async def recover_expired(self, *, now: datetime) -> list[TaskRecord]:
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(self._sql_recover, now)
            failed = [(row[1], "failed") for row in rows if row[3] == "failed"]
            released = await self._settle(conn, failed, now) if failed else 0
        self.releases += released
        return [row_to_record(row) for row in rows]

    async def record_worker(self, worker_id: str, info: dict[str, object]) -> bool:
        async with self._conn() as conn:
            stop = await conn.fetchval(
                f"INSERT INTO {self._q}.taskyard_workers (worker_id, hostname, pid, started_at,"
                " last_heartbeat, info) VALUES ($1, $2, $3, $4, $4, $5::json)"
                " ON CONFLICT (worker_id) DO UPDATE SET last_heartbeat = $4, info = $5::json"
                " RETURNING stop_requested_at",
                worker_id,
                socket.gethostname(),
                os.getpid(),
                datetime.now(UTC),
                json.dumps(info),
            )
        return stop is not None

    async def forget_worker(self, worker_id: str) -> None:
        async with self._conn() as conn:
            await conn.execute(
                f"DELETE FROM {self._q}.taskyard_workers WHERE worker_id = $1", worker_id
            )

    # -- TaskStore: reads ------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord | None:
        rows = await self._fetch(f"SELECT {COLUMNS} FROM {self.tasks_table} WHERE id = $1", task_id)
        return row_to_record(rows[0]) if rows else None

    async def next_due(self, types: Collection[str] | None = None) -> datetime | None:
        wanted = None if types is None else sorted(types)
        rows = await self._fetch(
            f"SELECT MIN(run_after) FROM {self.tasks_table} WHERE status = 'queued'"
            " AND ($1::text[] IS NULL OR type = ANY($1::text[]))",
            wanted,
        )
        value: datetime | None = rows[0][0] if rows else None
        return value

    async def count_by_status(self) -> dict[TaskStatus, int]:
        counts = dict.fromkeys(TaskStatus, 0)
        rows = await self._fetch(f"SELECT status, COUNT(*) FROM {self.tasks_table} GROUP BY status")
        for status, count in rows:
            counts[TaskStatus(status)] = int(count)
        return counts

    def _filter(
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

    async def list_tasks(
        self,
        *,
        statuses: Sequence[TaskStatus] | None = None,
        task_type: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[TaskRecord]:
        where, params = self._filter(statuses, task_type)
        n = len(params)
        rows = await self._fetch(
            f"SELECT {COLUMNS} FROM {self.tasks_table}{where}"
            f" ORDER BY seq LIMIT ${n + 1} OFFSET ${n + 2}",
            *params,
            limit,
            offset,
        )
        return [row_to_record(row) for row in rows]

    async def snapshot(
        self, statuses: Sequence[TaskStatus] | None = None, *, page: int = 10_000
    ) -> list[TaskRecord]:
        """Every task (of ``statuses``) in one read: one consistent snapshot."""
        where, params = self._filter(statuses, None)
        async with self._conn() as conn, conn.transaction(isolation="repeatable_read"):
            rows = await conn.fetch(
                f"SELECT {COLUMNS} FROM {self.tasks_table}{where} ORDER BY seq", *params
            )
            edges = await conn.fetch(  # what waiting tasks wait for
                f"SELECT d.task_id, d.depends_on FROM {self.tasks_table} AS t"
                f" JOIN {self.deps_table} AS d ON d.task_id = t.id"
                f" JOIN {self.tasks_table} AS p ON p.id = d.depends_on"
                " WHERE t.status = 'waiting' ORDER BY p.seq"
            )
        waits: dict[str, list[str]] = {}
        for child, parent in edges:
            waits.setdefault(child, []).append(parent)
        records = [row_to_record(row) for row in rows]
        for record in records:
            record.depends_on = tuple(waits.get(record.id, ()))
        return records

    # -- workflows -------------------------------------------------------------------------

    async def dependencies(self, task_id: str) -> list[str]:
        rows = await self._fetch(
            f"SELECT d.depends_on FROM {self.deps_table} AS d"
            f" JOIN {self.tasks_table} AS t ON t.id = d.depends_on"
            " WHERE d.task_id = $1 ORDER BY t.seq",
            task_id,
        )
        return [row[0] for row in rows]

    async def dependents(self, task_id: str) -> list[str]:
        rows = await self._fetch(
            f"SELECT d.task_id FROM {self.deps_table} AS d"
            f" JOIN {self.tasks_table} AS t ON t.id = d.task_id"
            " WHERE d.depends_on = $1 ORDER BY t.seq",
            task_id,
        )
        return [row[0] for row in rows]

    async def dependency_results(self, task_id: str) -> dict[str, Any]:
        rows = await self._fetch(
            f"SELECT t.id, t.result FROM {self.deps_table} AS d"
            f" JOIN {self.tasks_table} AS t ON t.id = d.depends_on"
            " WHERE d.task_id = $1 ORDER BY t.seq",
            task_id,
        )
        return {row[0]: None if row[1] is None else json.loads(row[1]) for row in rows}

    async def workflow_tasks(self, workflow_id: str) -> list[TaskRecord]:
        async with self._conn() as conn, conn.transaction(isolation="repeatable_read"):
            rows = await conn.fetch(
                f"SELECT {COLUMNS} FROM {self.tasks_table} WHERE workflow_id = $1 ORDER BY seq",
                workflow_id,
            )
            edges = await conn.fetch(
                f"SELECT d.task_id, d.depends_on FROM {self.tasks_table} AS t"
                f" JOIN {self.deps_table} AS d ON d.task_id = t.id"
                f" JOIN {self.tasks_table} AS p ON p.id = d.depends_on"
                " WHERE t.workflow_id = $1 ORDER BY p.seq",
                workflow_id,
            )
        waits: dict[str, list[str]] = {}
        for child, parent in edges:
            waits.setdefault(child, []).append(parent)
        records = [row_to_record(row) for row in rows]
        for record in records:
            record.depends_on = tuple(waits.get(record.id, ()))
        return records

    async def workflow_ids(self, *, limit: int = 50) -> list[str]:
        rows = await self._fetch(
            f"SELECT workflow_id FROM {self.tasks_table} WHERE workflow_id IS NOT NULL"
            " GROUP BY workflow_id ORDER BY MAX(seq) DESC LIMIT $1",
            limit,
        )
        return [row[0] for row in rows]

    # -- periodic schedules ------------------------------------------------------------------

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        async with self._conn() as conn:
            return await schedules.read_one(conn, self._q, name)

    async def list_schedules(self) -> list[ScheduleRecord]:
        async with self._conn() as conn:
            return await schedules.read_all(conn, self._q)

    async def insert_schedule(self, record: ScheduleRecord) -> bool:
        async with self._conn() as conn:
            return await schedules.insert(conn, self._q, record)

    async def update_schedule(
        self, record: ScheduleRecord, *, expected_next: datetime | None = None
    ) -> bool:
        async with self._conn() as conn:
            return await schedules.update(conn, self._q, record, expected_next)

    async def remove_schedule(self, name: str) -> bool:
        async with self._conn() as conn:
            return await schedules.remove(conn, self._q, name)

    async def fire_schedule(
        self,
        name: str,
        *,
        expected_next: datetime,
        records: Sequence[TaskRecord],
        next_fire_at: datetime,
        last_fire_at: datetime | None,
        now: datetime,
    ) -> list[str] | None:
        async with self._conn() as conn, conn.transaction():
            if not await schedules.advance(conn, self._q, name, expected_next, next_fire_at, now):
                return None
            ids = (await self._insert_on(conn, records))[0] if records else []
            if last_fire_at is not None:
                await schedules.fired(conn, self._q, name, last_fire_at, ids)
        if ids and self._wakeup is not None:
            self._wakeup()
        return ids
