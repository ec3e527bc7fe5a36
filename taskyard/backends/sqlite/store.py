"""The SQLite task store, over aiosqlite.

Speed comes from counting hops to aiosqlite's thread (each costs about 0.1 ms):
every write is an *operation* (a plain function on the ``sqlite3`` connection) put
on one queue, and whatever operations arrive together run in the thread as one
call, in one ``BEGIN IMMEDIATE`` transaction: group commit. Each caller gets its own
result (or its own error) and returns only once that transaction committed. Reads
are single hops outside any write transaction (WAL lets them run beside writers of
other processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from taskyard.backends.sqlite import schedules, schema
from taskyard.backends.sqlite.errors import is_busy, translate
from taskyard.backends.sqlite.operations import SqliteOperations
from taskyard.framework.errors import (
    ConfigurationError,
    DatabaseMoved,
    DependencyError,
    ManagerStateError,
    StoreUnavailable,
    TaskyardError,
)
from taskyard.framework.models import (
    MAX_TRACEBACKS,
    Outcome,
    TaskRecord,
    TaskStatus,
    dumps,
    from_epoch,
    keep_tracebacks,
    loads,
    to_epoch,
    trace_context_from_text,
    trace_context_text,
)
from taskyard.framework.schedules import ScheduleRecord
from taskyard.framework.workflows import cancelled_because, check_batch, settles

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]

COLUMNS = (
    "seq, id, type, status, priority, attempts, max_attempts, payload, result, error, "
    "created_at, updated_at, run_after, started_at, finished_at, timeout, idempotency_key, "
    "lease_token, lease_expires_at, worker_id, trace_context, tracebacks, concurrency_key, "
    "on_dependency_failure, workflow_id"
)
_INSERT = (
    "INSERT INTO taskyard_tasks (id, type, status, priority, attempts, max_attempts, payload,"
    " created_at, updated_at, run_after, timeout, idempotency_key, trace_context,"
    " concurrency_key, on_dependency_failure, workflow_id, started_at, lease_token,"
    " lease_expires_at, worker_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)
"""A new task: queued, or (Capability.CLAIM_ON_ADD) running, claimed by the engine that
adds it, with its lease."""


def _status(value: str) -> TaskStatus:
    return TaskStatus(value)


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
        result=loads(row[8]),
        error=row[9],
        created_at=from_epoch(row[10]),  # type: ignore[arg-type]
        updated_at=from_epoch(row[11]),  # type: ignore[arg-type]
        run_after=from_epoch(row[12]),  # type: ignore[arg-type]
        started_at=from_epoch(row[13]),
        finished_at=from_epoch(row[14]),
        timeout=row[15],
        idempotency_key=row[16],
        lease_token=row[17],
        lease_expires_at=from_epoch(row[18]),
        worker_id=row[19],
        trace_context=trace_context_from_text(row[20]),
        tracebacks=json.loads(row[21]),
        concurrency_key=row[22],
        on_dependency_failure=row[23],
        workflow_id=row[24],
    )


def _insert_row(record: TaskRecord) -> tuple[Any, ...]:
    payload = record.payload_json or dumps(record.payload)
    claimed = record.status is TaskStatus.RUNNING
    return (
        record.id,
        record.type,
        "running" if claimed else "queued",
        record.priority,
        record.attempts,
        record.max_attempts,
        payload,
        to_epoch(record.created_at),
        to_epoch(record.updated_at),
        to_epoch(record.run_after),
        record.timeout,
        record.idempotency_key,
        trace_context_text(record.trace_context),
        record.concurrency_key,
        record.on_dependency_failure,
        record.workflow_id,
        to_epoch(record.started_at) if claimed and record.started_at else None,
        record.lease_token if claimed else None,
        to_epoch(record.lease_expires_at) if claimed and record.lease_expires_at else None,
        record.worker_id if claimed else None,
    )


def _types_clause(
    types: Collection[str] | None, placeholder: str = "?"
) -> tuple[str, tuple[Any, ...]]:
    """The filter on task types (none when ``types`` is None), as one JSON parameter."""
    if types is None:
        return "", ()
    clause = f" AND type IN (SELECT value FROM json_each({placeholder}))"
    return clause, (json.dumps(sorted(types)),)


# -- operations: plain functions run inside aiosqlite's thread ------------------------------


class AddOperation:
    """Insert new tasks. Plain ones (no idempotency key) from several callers in one
    transaction are inserted together, with one ``executemany`` (see :func:`run_batch`)."""

    __slots__ = ("plain", "records")

    def __init__(self, records: Sequence[TaskRecord]) -> None:
        self.records = records
        self.plain = not any(record.idempotency_key or record.depends_on for record in records)

    def __call__(self, conn: sqlite3.Connection) -> list[str]:
        if self.plain:
            conn.executemany(_INSERT, [_insert_row(record) for record in self.records])
            return [record.id for record in self.records]
        ids: list[str] = []
        for record in self.records:
            if conn.execute(_INSERT, _insert_row(record)).rowcount:
                if record.depends_on:
                    _link(conn, record)
                ids.append(record.id)
                continue
            row = conn.execute(
                "SELECT id FROM taskyard_tasks WHERE idempotency_key = ? OR id = ?",
                (record.idempotency_key, record.id),
            ).fetchone()
            ids.append(row[0])
        return ids


op_add = AddOperation


def _link(conn: sqlite3.Connection, record: TaskRecord, *, imported: bool = False) -> None:
    """Store a new task's dependencies and set its status from theirs: waiting, queued
    (all finished) or cancelled (one failed and its policy says so). One read of the
    dependencies' statuses, one insert of the edges. An imported task's dependencies
    that are not here finished before it was exported, and are left out."""
    parents = list(record.depends_on)
    found = dict(
        conn.execute(
            "SELECT id, status FROM taskyard_tasks WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(parents),),
        ).fetchall()
    )
    missing = [parent for parent in parents if parent not in found]
    if imported:
        parents, missing = [parent for parent in parents if parent in found], []
    if missing:
        raise DependencyError(
            f"task {record.id} depends on {missing[0]}, which this store does not hold"
            f"{f' (nor {len(missing) - 1} more)' if len(missing) > 1 else ''}; schedule "
            "the dependencies first (or earlier in the same batch)"
        )
    conn.executemany(
        "INSERT INTO taskyard_dependencies (depends_on, task_id) VALUES (?, ?)",
        [(parent, record.id) for parent in parents],
    )
    unfinished = 0
    for parent in parents:
        status = TaskStatus(found[parent])
        if not status.is_terminal:
            unfinished += 1
        elif settles(status, record.on_dependency_failure) is not None:
            conn.execute(
                "UPDATE taskyard_tasks SET status = 'cancelled', finished_at = updated_at,"
                " error = ? WHERE id = ?",
                (cancelled_because(parent, status), record.id),
            )
            return
    if unfinished:
        conn.execute(
            "UPDATE taskyard_tasks SET status = 'waiting', waiting_on = ? WHERE id = ?",
            (unfinished, record.id),
        )


def settle(conn: sqlite3.Connection, finished: Sequence[tuple[str, TaskStatus]], now: float) -> int:
    """Tasks in ``finished`` just ended with these statuses: cancel or count down their
    waiting dependents, cascading (:func:`~taskyard.framework.workflows.settles`).
    Returns how many became queued. Each finished task costs one read of its dependents
    through the dependency table's primary key, and each dependent one update by id."""
    released = 0
    work = list(finished)
    while work:
        parent, status = work.pop()
        rows = conn.execute(
            "SELECT t.id, t.on_dependency_failure FROM taskyard_dependencies AS d"
            " JOIN taskyard_tasks AS t ON t.id = d.task_id"
            " WHERE d.depends_on = ? AND t.status = 'waiting'",
            (parent,),
        ).fetchall()
        for child, policy in rows:
            if settles(status, policy) is not None:
                conn.execute(
                    "UPDATE taskyard_tasks SET status = 'cancelled', waiting_on = 0,"
                    " finished_at = ?1, updated_at = ?1, error = ?2 WHERE id = ?3",
                    (now, cancelled_because(parent, status), child),
                )
                work.append((child, TaskStatus.CANCELLED))
                continue
            row = conn.execute(
                "UPDATE taskyard_tasks SET waiting_on = waiting_on - 1,"
                " status = CASE WHEN waiting_on <= 1 THEN 'queued' ELSE 'waiting' END,"
                " updated_at = ?1 WHERE id = ?2 AND status = 'waiting' RETURNING status",
                (now, child),
            ).fetchone()
            if row is not None and row[0] == "queued":
                released += 1
    return released


_IMPORT = (
    f"INSERT INTO taskyard_tasks ({COLUMNS.removeprefix('seq, ')})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, ?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)


def _import_row(record: TaskRecord) -> tuple[Any, ...]:
    status = record.status
    if status in (TaskStatus.RUNNING, TaskStatus.WAITING):  # no lease here; _link decides
        status = TaskStatus.QUEUED
    return (
        record.id,
        record.type,
        str(status),
        record.priority,
        record.attempts,
        record.max_attempts,
        record.payload_json or dumps(record.payload),
        None if record.result is None else dumps(record.result, what="result"),
        record.error,
        to_epoch(record.created_at),
        to_epoch(record.updated_at),
        to_epoch(record.run_after),
        None if record.started_at is None else to_epoch(record.started_at),
        None if record.finished_at is None else to_epoch(record.finished_at),
        record.timeout,
        record.idempotency_key,
        trace_context_text(record.trace_context),
        json.dumps(keep_tracebacks(record.tracebacks), ensure_ascii=False),
        record.concurrency_key,
        record.on_dependency_failure,
        record.workflow_id,
    )


def op_import(records: Sequence[TaskRecord]) -> Operation:
    def run(conn: sqlite3.Connection) -> list[bool]:
        stored: list[bool] = []
        for record in records:
            stored.append(bool(conn.execute(_IMPORT, _import_row(record)).rowcount))
            if stored[-1] and record.status is TaskStatus.WAITING and record.depends_on:
                _link(conn, record, imported=True)
        return stored

    return run


def claimed_record(row: Sequence[Any], now: datetime) -> TaskRecord:
    """A claimed row (CLAIMED columns) as a record: only what the engine needs is
    converted; updated_at and started_at are the claim's time."""
    return TaskRecord(
        seq=row[0],
        id=row[1],
        type=row[2],
        status=TaskStatus.RUNNING,
        priority=row[3],
        attempts=row[4],
        max_attempts=row[5],
        payload=json.loads(row[6]),
        payload_json=row[6],
        created_at=datetime.fromtimestamp(row[10], UTC),
        updated_at=now,
        run_after=datetime.fromtimestamp(row[7], UTC),
        started_at=now,
        timeout=row[8],
        lease_token=row[9],
        trace_context=trace_context_from_text(row[11]),
    )


CLAIMED = (
    "seq, id, type, priority, attempts, max_attempts, payload, run_after, timeout, lease_token,"
    " created_at, trace_context"
)


_ANY_DUE = (
    "SELECT 1 FROM taskyard_tasks INDEXED BY taskyard_tasks_due"
    " WHERE status = 'queued' AND run_after <= ? LIMIT 1"
)


_CLAIM_SET = (
    "UPDATE taskyard_tasks SET status = 'running', attempts = attempts + 1,"
    " started_at = ?1, updated_at = ?1, lease_token = ?2, lease_expires_at = ?3,"
    " worker_id = ?4"
)
"""What a claim writes (?1 now, ?2 the lease token, ?3 its expiry, ?4 the worker)."""

_ANY_KEYED = (
    "SELECT 1 FROM taskyard_tasks INDEXED BY taskyard_tasks_keyed"
    " WHERE status = 'queued' AND concurrency_key IS NOT NULL LIMIT 1"
)


def op_claim(
    limit: int,
    now: float,
    worker_id: str,
    expires: float,
    types: Collection[str] | None,
    limits: Mapping[str, int] | None = None,
    held: list[bool] | None = None,
) -> Operation:
    type_filter, type_param = _types_clause(types, "?7")
    plain_filter, _ = _types_clause(types, "?6")
    # INDEXED BY: the plan must walk the ready index in order and stop at LIMIT, never
    # sort the whole queue (the planner might prefer another index for the type filter).
    # Tasks with a concurrency key come from their own index: its distinct keys are
    # visited by a skip-scan (one index seek per key, the recursive CTE), and of each key
    # at most LIMIT tasks are read, in order; of those, a key keeps only as many as its
    # limit leaves beside its running tasks (the limit is workflows.concurrency_limit,
    # computed here from the JSON object ?6). So a claim costs O(keys waiting x (log n +
    # LIMIT)), however many tasks wait behind a key at its limit.
    sql = (
        "WITH RECURSIVE keys(k) AS ("
        "  SELECT (SELECT MIN(concurrency_key) FROM taskyard_tasks"
        "    INDEXED BY taskyard_tasks_keyed"
        "    WHERE status = 'queued' AND concurrency_key IS NOT NULL)"
        "  UNION ALL"
        "  SELECT (SELECT MIN(concurrency_key) FROM taskyard_tasks"
        "    INDEXED BY taskyard_tasks_keyed"
        "    WHERE status = 'queued' AND concurrency_key > keys.k)"
        "  FROM keys WHERE keys.k IS NOT NULL),"
        " keyed AS ("
        "  SELECT t.seq, t.priority, t.type, t.concurrency_key, ROW_NUMBER() OVER"
        "    (PARTITION BY t.concurrency_key ORDER BY t.priority, t.seq) AS rank"
        "  FROM keys JOIN taskyard_tasks AS t ON t.seq IN ("
        "    SELECT seq FROM taskyard_tasks INDEXED BY taskyard_tasks_keyed"
        "    WHERE status = 'queued' AND concurrency_key = keys.k AND run_after <= ?1"
        f"   {type_filter} ORDER BY priority, seq LIMIT ?5)"
        "  WHERE keys.k IS NOT NULL)"
        f" {_CLAIM_SET}"
        " WHERE seq IN (SELECT seq FROM ("
        "  SELECT seq, priority FROM (SELECT seq, priority FROM taskyard_tasks"
        "    INDEXED BY taskyard_tasks_ready"
        f"   WHERE status = 'queued' AND run_after <= ?1 AND concurrency_key IS NULL{type_filter}"
        "    ORDER BY priority, seq LIMIT ?5)"
        "  UNION ALL"
        "  SELECT seq, priority FROM keyed AS k"
        "  WHERE k.rank + (SELECT COUNT(*) FROM taskyard_tasks AS r"
        "      INDEXED BY taskyard_tasks_running_keys"
        "      WHERE r.status = 'running' AND r.concurrency_key = k.concurrency_key)"
        "    <= COALESCE("
        "      (SELECT l.value FROM json_each(?6) AS l"
        "        WHERE l.key <> '' AND substr(k.concurrency_key, 1, length(l.key)) = l.key"
        "        ORDER BY length(l.key) DESC LIMIT 1),"
        "      (SELECT l.value FROM json_each(?6) AS l WHERE l.key = k.type),"
        "      (SELECT l.value FROM json_each(?6) AS l WHERE l.key = ''), 1)"
        "  ORDER BY priority, seq LIMIT ?5))"
        f" RETURNING {CLAIMED}"
    )
    # No task with a concurrency key waiting (the common case, found in O(log n) on the
    # keyed index): the plain claim, one walk of the ready index (134 -> ~80 µs for one).
    plain = (
        f"{_CLAIM_SET}"
        " WHERE seq IN (SELECT seq FROM taskyard_tasks INDEXED BY taskyard_tasks_ready"
        f"  WHERE status = 'queued' AND run_after <= ?1 AND concurrency_key IS NULL{plain_filter}"
        "  ORDER BY priority, seq LIMIT ?5)"
        f" RETURNING {CLAIMED}"
    )
    limits_json = json.dumps(dict(limits or {}))

    def run(conn: sqlite3.Connection) -> list[TaskRecord]:
        # Nothing due, in O(log n) on the due index: return before the ready index is
        # walked, which would visit every queued task that is not due yet.
        if conn.execute(_ANY_DUE, (now,)).fetchone() is None:
            return []
        token = uuid.uuid4().hex
        keyed = conn.execute(_ANY_KEYED).fetchone() is not None
        common = (now, token, expires, worker_id, limit)
        if keyed:
            rows = conn.execute(sql, (*common, limits_json, *type_param)).fetchall()
        else:
            rows = conn.execute(plain, (*common, *type_param)).fetchall()
        if held is not None and keyed:  # due keyed tasks left behind: keys at their limit
            held[0] = len(rows) < limit and bool(
                conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM taskyard_tasks INDEXED BY taskyard_tasks_keyed"
                    " WHERE status = 'queued' AND concurrency_key IS NOT NULL"
                    " AND run_after <= ?)",
                    (now,),
                ).fetchone()[0]
            )
        elif held is not None:
            held[0] = False
        moment = datetime.fromtimestamp(now, UTC)
        records = [claimed_record(row, moment) for row in rows]
        records.sort(key=lambda record: (record.priority, record.seq))
        return records

    return run


def _append_traceback(entry: str) -> str:
    """SQL that appends a failed attempt's traceback entry (the parameter ``entry``, JSON
    or NULL for none) to ``tracebacks``, keeping the newest MAX_TRACEBACKS."""
    return (
        f"tracebacks = CASE WHEN {entry} IS NULL THEN tracebacks"
        f" WHEN json_array_length(tracebacks) >= {MAX_TRACEBACKS}"
        f" THEN json_insert(json_remove(tracebacks, '$[0]'), '$[#]', json({entry}))"
        f" ELSE json_insert(tracebacks, '$[#]', json({entry})) END"
    )


Tally = list[int]
"""A one-element counter an operation adds its released dependents to."""


def op_finish(outcomes: Sequence[Outcome], tally: Tally | None = None) -> Operation:
    def run(conn: sqlite3.Connection) -> list[bool]:
        applied: list[bool] = []
        for outcome in outcomes:
            at = to_epoch(outcome.finished_at)
            entry = (
                None
                if outcome.traceback is None
                else json.dumps(outcome.traceback, ensure_ascii=False)
            )
            if outcome.status is TaskStatus.QUEUED:
                run_after = to_epoch(outcome.run_after or outcome.finished_at)
                if outcome.release:
                    cursor = conn.execute(
                        "UPDATE taskyard_tasks SET status = 'queued', attempts = attempts - 1,"
                        " run_after = ?, updated_at = ?, lease_token = NULL,"
                        " lease_expires_at = NULL, worker_id = NULL"
                        " WHERE id = ? AND lease_token = ? AND status = 'running'",
                        (run_after, at, outcome.task_id, outcome.lease_token),
                    )
                else:
                    cursor = conn.execute(
                        "UPDATE taskyard_tasks SET status = 'queued', error = ?1, run_after = ?2,"
                        " updated_at = ?3, lease_token = NULL, lease_expires_at = NULL,"
                        f" worker_id = NULL, {_append_traceback('?6')}"
                        " WHERE id = ?4 AND lease_token = ?5 AND status = 'running'",
                        (outcome.error, run_after, at, outcome.task_id, outcome.lease_token, entry),
                    )
            else:
                result = outcome.result_json
                cursor = conn.execute(
                    "UPDATE taskyard_tasks SET status = ?1, result = ?2, error = ?3,"
                    " finished_at = ?4, updated_at = ?4, lease_token = NULL,"
                    f" lease_expires_at = NULL, {_append_traceback('?7')}"
                    " WHERE id = ?5 AND lease_token = ?6 AND status = 'running'",
                    (
                        str(outcome.status),
                        result,
                        outcome.error,
                        at,
                        outcome.task_id,
                        outcome.lease_token,
                        entry,
                    ),
                )
                if cursor.rowcount == 1:
                    released = settle(conn, [(outcome.task_id, outcome.status)], at)
                    if tally is not None:
                        tally[0] += released
            applied.append(cursor.rowcount == 1)
        return applied

    return run


def op_renew(leases: Sequence[tuple[str, str]], until: float) -> Operation:
    def run(conn: sqlite3.Connection) -> list[str]:
        lost: list[str] = []
        for task_id, token in leases:
            cursor = conn.execute(
                "UPDATE taskyard_tasks SET lease_expires_at = ?"
                " WHERE id = ? AND lease_token = ? AND status = 'running'",
                (until, task_id, token),
            )
            if cursor.rowcount != 1:
                lost.append(task_id)
        return lost

    return run


def op_cancel(task_id: str, now: float, tally: Tally | None = None) -> Operation:
    def run(conn: sqlite3.Connection) -> TaskStatus | None:
        row = conn.execute("SELECT status FROM taskyard_tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            return None
        before = TaskStatus(row[0])
        if before.is_terminal:
            return before
        conn.execute(
            "UPDATE taskyard_tasks SET status = 'cancelled', finished_at = ?1, updated_at = ?1,"
            " lease_token = NULL, lease_expires_at = NULL, waiting_on = 0 WHERE id = ?2",
            (now, task_id),
        )
        released = settle(conn, [(task_id, TaskStatus.CANCELLED)], now)
        if tally is not None:
            tally[0] += released
        return before

    return run


def op_recover(now: float, tally: Tally | None = None) -> Operation:
    def run(conn: sqlite3.Connection) -> list[TaskRecord]:
        failed = conn.execute(
            "UPDATE taskyard_tasks SET status = 'failed', finished_at = ?1, updated_at = ?1,"
            " error = 'lease expired: the worker running it stopped responding',"
            " lease_token = NULL, lease_expires_at = NULL"
            " WHERE status = 'running' AND lease_expires_at < ?1 AND attempts >= max_attempts"
            f" RETURNING {COLUMNS}",
            (now,),
        ).fetchall()
        queued = conn.execute(
            "UPDATE taskyard_tasks SET status = 'queued', run_after = ?1, updated_at = ?1,"
            " lease_token = NULL, lease_expires_at = NULL, worker_id = NULL"
            " WHERE status = 'running' AND lease_expires_at < ?1"
            f" RETURNING {COLUMNS}",
            (now,),
        ).fetchall()
        if failed:
            released = settle(conn, [(row[1], TaskStatus.FAILED) for row in failed], now)
            if tally is not None:
                tally[0] += released
        return [row_to_record(row) for row in [*failed, *queued]]

    return run


def op_record_worker(worker_id: str, info: dict[str, object], now: float) -> Operation:
    def run(conn: sqlite3.Connection) -> bool:
        row = conn.execute(
            "INSERT INTO taskyard_workers (worker_id, hostname, pid, started_at,"
            " last_heartbeat, info) VALUES (?1, ?2, ?3, ?4, ?4, ?5)"
            " ON CONFLICT (worker_id) DO UPDATE SET last_heartbeat = ?4, info = ?5"
            " RETURNING stop_requested_at",
            (worker_id, socket.gethostname(), os.getpid(), now, json.dumps(info)),
        ).fetchone()
        return row is not None and row[0] is not None

    return run


def is_transaction_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the transaction's (busy, full, I/O, read-only, a corrupt file),
    to be raised for every operation of the batch. Anything else an operation raises (a
    constraint, an out-of-range value, a bug) is that operation's own."""
    return isinstance(exc, sqlite3.OperationalError | sqlite3.InternalError) or (
        type(exc) is sqlite3.DatabaseError
    )


def run_batch(conn: sqlite3.Connection, operations: Sequence[Operation]) -> list[Any]:
    """Run operations in one immediate transaction; each gets its result or its error.

    The batch runs straight through first (plain inserts of every caller in one
    ``executemany``). If an operation raises an error of its own (a constraint, an
    integer SQLite cannot hold, a bug: anything but :func:`is_transaction_error`), the
    batch is rolled back and run again with a savepoint per operation, so that error is
    kept to its operation. An error of the transaction itself (busy, full, I/O,
    read-only) is raised for all of them, and nothing of the batch is committed.
    """
    if len(operations) == 1:
        only = operations[0]
        if isinstance(only, AddOperation) and only.plain and len(only.records) == 1:
            # one row: one statement is its own transaction (autocommit), which spares
            # the BEGIN and COMMIT statements of the common one-at-a-time enqueue
            record = only.records[0]
            conn.execute(_INSERT, _insert_row(record))
            return [[record.id]]
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            results = _run_straight(conn, operations)
        except Exception as exc:
            if len(operations) == 1 or is_transaction_error(exc):
                raise
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            results = _run_isolated(conn, operations)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


def _run_straight(conn: sqlite3.Connection, operations: Sequence[Operation]) -> list[Any]:
    plain = [op for op in operations if isinstance(op, AddOperation) and op.plain]
    if len(plain) > 1:
        rows = [_insert_row(record) for op in plain for record in op.records]
        conn.executemany(_INSERT, rows)
    merged = {id(op) for op in plain} if len(plain) > 1 else set()
    return [
        [record.id for record in op.records]  # type: ignore[attr-defined]
        if id(op) in merged
        else op(conn)
        for op in operations
    ]


def _run_isolated(conn: sqlite3.Connection, operations: Sequence[Operation]) -> list[Any]:
    results: list[Any] = []
    for operation in operations:
        conn.execute("SAVEPOINT taskyard_op")
        try:
            results.append(operation(conn))
        except Exception as exc:
            if is_transaction_error(exc):
                raise
            conn.execute("ROLLBACK TO taskyard_op")
            results.append(_Failed(exc))
        conn.execute("RELEASE taskyard_op")
    return results


async def in_thread(db: aiosqlite.Connection, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` in aiosqlite's own thread as one hop.

    aiosqlite runs each ``execute`` as one such hop; a whole transaction as one
    function costs one hop instead of several. This is the one use of aiosqlite's
    ``_execute``, kept here.
    """
    result: T = await db._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]
    return result


def waiting(fn: Callable[..., T], conn: sqlite3.Connection, patience: float, *args: Any) -> T:
    """``fn(conn, *args)``, tried again while another connection holds the lock, for up to
    ``patience`` seconds, after pauses of 0.1 ms doubling up to 2 ms.

    SQLite's own busy timeout sleeps 1, 2, 5, 10, 15, 20, 25 ms... between tries: two
    processes taking turns at the write lock then spend most of their time asleep (two
    worker processes on one file kept about one core busy). A failed try changed nothing
    (``run_batch`` rolls back), so trying again is safe.
    """
    deadline = time.monotonic() + patience
    pause = 0.0001
    while True:
        try:
            return fn(conn, *args)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.002)


INLINE_LIMIT = 32
"""Operations on at most this many tasks may commit on the event loop when idle."""
CHECKPOINT_EVERY = 1000
"""Inline commits between passive checkpoints, run by the thread's connection."""


_Pending = tuple[Operation, int, "asyncio.Future[Any]"]


def _file_identity(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class SqliteStore(SqliteOperations):
    """Tasks in one SQLite file (WAL), shared safely by several processes. The queries of
    the operations tools are in :mod:`taskyard.backends.sqlite.operations`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
        inline_writes: bool = True,
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.busy_timeout = busy_timeout
        if self.synchronous not in schema.SYNCHRONOUS_MODES:
            raise ConfigurationError(
                f"task_execution.sqlite_synchronous is {synchronous!r}; allowed: NORMAL, FULL"
            )
        self._db: aiosqlite.Connection | None = None
        self._raw: sqlite3.Connection | None = None
        self._pending: list[_Pending] = []
        self._claims: list[_Pending] = []  # claims go first (see _flush)
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None
        self._writing = False
        self.inline_writes = inline_writes and self.synchronous == "NORMAL"
        self._inline: sqlite3.Connection | None = None
        self._inline_commits = 0
        self._checkpoint: asyncio.Future[None] | None = None
        self._data_version: int | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of the open file
        self.write_error: str | None = None
        """Why the last write transaction failed, until one commits (for health)."""
        self.migrations_applied: list[int] = []
        self._tally: Tally = [0]

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path}>"

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` connected and :meth:`close` has not closed since."""
        return self._db is not None

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._db is not None:
            return
        schema.prepare_file(self.path)
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
        try:
            raw: sqlite3.Connection = db._conn  # aiosqlite's connection, used in its thread
            self.migrations_applied = await in_thread(
                db,
                schema.open_queue,
                raw,
                self.path,
                synchronous=self.synchronous,
                busy_timeout=self.busy_timeout,
            )
        except BaseException as exc:
            await db.close()
            if isinstance(exc, sqlite3.Error):
                raise translate(exc, self.path) from exc
            raise
        # from now on, waits for the lock are waiting()'s, in short steps
        await in_thread(db, raw.execute, "PRAGMA busy_timeout = 0")
        self._db, self._raw = db, raw
        self._identity = _file_identity(self.path)
        self.write_error = None
        if self.inline_writes:
            self._inline = self._open_inline()
        # The baseline for changed_elsewhere(), taken before the engine's first claim, so
        # a write by another process between that claim and the first check is noticed.
        await self.changed_elsewhere()

    async def close(self) -> None:
        if self._db is None:
            return
        await self._idle.wait()  # the last transaction settles
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        db, self._db, self._raw = self._db, None, None
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        await db.close()

    def _open_inline(self) -> sqlite3.Connection:
        """The event loop's own connection: no busy timeout, no checkpoints."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn

    def moved(self) -> DatabaseMoved | None:
        """The error to give when the open file is no longer the one at ``path`` (deleted,
        renamed or replaced while open), else None. One ``stat``: about a microsecond."""
        if self._identity is None:
            return None
        try:
            now = _file_identity(self.path)
        except FileNotFoundError:
            what = "was deleted or renamed"
        except OSError as exc:
            what = f"cannot be checked ({exc})"
        else:
            if now == self._identity:
                return None
            what = "was replaced by another file"
        return DatabaseMoved(
            f"{self.path} {what} while this process had it open; writes are refused so "
            "that nothing accepted goes into a file without a name. Put the database "
            "file (and its -wal) back at that path and restart this process"
        )

    async def health(self) -> tuple[str, str]:
        moved = self.moved()
        if moved is not None:
            return "down", str(moved)
        if self.write_error is not None:
            return "down", f"writes fail: {self.write_error}"
        return await super().health()

    # -- the two ways into the thread ------------------------------------------------------

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """One hop: run ``fn(conn, *args)`` in aiosqlite's thread."""
        if self._db is None:
            raise ManagerStateError(f"{self!r} is not open")
        try:
            result: T = await in_thread(self._db, waiting, fn, self._raw, self.busy_timeout, *args)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
        return result

    async def _write(self, operation: Operation, *, size: int = 1, claim: bool = False) -> Any:
        """Run ``operation`` in the next group-commit transaction; return once committed.

        Writes that arrive in the same turn of the event loop, or while a transaction is
        in flight, share one transaction, except that claims (``claim``) go first, in a
        transaction of their own, when more than a small batch of other writes waits
        beside them: the handlers a claim starts do not wait for the outcomes of the
        handlers that just ended (a small batch costs less than a commit of its own).
        ``size`` is how many tasks the operation touches: an idle store commits a small
        batch on the loop itself when it can do so without waiting (:meth:`_flush`), and
        hands everything else to aiosqlite's thread.
        """
        if self._db is None:
            raise ManagerStateError(f"{self!r} is not open")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        (self._claims if claim else self._pending).append((operation, size, future))
        if not self._writing:
            self._writing = True
            self._idle.clear()
            asyncio.get_running_loop().call_soon(self._flush)
        result = await future
        if isinstance(result, _Failed):
            raise translate(result.error, self.path) from result.error
        return result

    def _flush(self) -> None:
        """Commit what is pending: on the loop if the batch is small and the write lock is
        free this instant, else in aiosqlite's thread.

        With WAL and synchronous=NORMAL a commit appends a few pages to the log with no
        fsync: tens of microseconds, less than one hop to aiosqlite's thread (about
        0.1 ms). The loop's connection has no busy timeout, so when the lock is taken
        it gives up at once and the batch goes to the thread, which waits for the lock
        there; it never checkpoints (the thread's connection does). So the loop never
        waits for a lock or an fsync, and big batches, which cost real CPU, run where
        the loop can go on meanwhile.
        """
        if self._claims and sum(size for _, size, _ in self._pending) > INLINE_LIMIT:
            batch, self._claims = self._claims, []  # the rest in the next transaction
        else:
            batch, self._claims, self._pending = self._claims + self._pending, [], []
        if not batch:
            self._go_idle()
            return
        moved = self.moved()
        if moved is not None:
            self._settle(batch, error=moved)
            return
        if self._inline is not None and sum(size for _, size, _ in batch) <= INLINE_LIMIT:
            try:
                results = run_batch(self._inline, [operation for operation, _, _ in batch])
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    self._settle(batch, error=translate(exc, self.path), failed=exc)
                    return
            except Exception as exc:
                self._settle(batch, error=translate(exc, self.path), failed=exc)
                return
            else:
                self._inline_commits += 1
                if self._inline_commits % CHECKPOINT_EVERY == 0:
                    self._checkpoint = asyncio.ensure_future(self._passive_checkpoint())
                self._settle(batch, results=results)
                return
        self._writer = asyncio.create_task(self._in_thread(batch), name="taskyard-sqlite-writer")
        self._writer.add_done_callback(lambda task: self._writer_done(task, batch))

    def _writer_done(self, task: asyncio.Task[None], batch: list[_Pending]) -> None:
        """A writer cancelled before it ran (the event loop closing) settles nothing by
        itself: fail its callers, so that the store can still close."""
        if task.cancelled():
            closed = StoreUnavailable(f"{self.path}: the event loop closed before the write")
            self._settle(batch, error=closed)

    async def _in_thread(self, batch: list[_Pending]) -> None:
        try:
            assert self._db is not None
            operations = [operation for operation, _, _ in batch]
            results = await in_thread(
                self._db, waiting, run_batch, self._raw, self.busy_timeout, operations
            )
        except BaseException as exc:
            if isinstance(exc, Exception):
                self._settle(batch, error=translate(exc, self.path), failed=exc)
                return
            # cancelled (the event loop closing): the callers hear it; the writer ends
            # normally, so that _writer_done can tell it from a writer that never ran
            closed = StoreUnavailable(f"{self.path}: the store closed during the write")
            self._settle(batch, error=closed)
            return
        self._settle(batch, results=results)

    def _settle(
        self,
        batch: list[_Pending],
        *,
        results: list[Any] | None = None,
        error: BaseException | None = None,
        failed: BaseException | None = None,
    ) -> None:
        """Hand each caller its result (or the batch's error), then flush what queued up
        meanwhile, or go idle. ``failed``: the driver error, when the transaction itself
        failed (remembered for :meth:`health` until a transaction commits)."""
        if results is not None:
            self.write_error = None
        elif failed is not None and is_transaction_error(failed):
            self.write_error = str(error)
        for index, (_, _, future) in enumerate(batch):
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                assert results is not None
                future.set_result(results[index])
        if self._pending or self._claims:
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._go_idle()

    def _go_idle(self) -> None:
        self._writing = False
        self._idle.set()

    async def _passive_checkpoint(self) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

        with contextlib.suppress(TaskyardError):
            await self._read(run)

    # -- TaskStore -------------------------------------------------------------------------

    async def add(self, records: Sequence[TaskRecord]) -> list[str]:
        check_batch(records)
        ids: list[str] = await self._write(op_add(records), size=len(records))
        return ids

    async def import_records(self, records: Sequence[TaskRecord]) -> list[bool]:
        stored: list[bool] = await self._write(op_import(records), size=len(records))
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
        at = to_epoch(now)
        held = [False]
        claimed: list[TaskRecord] = await self._write(
            op_claim(limit, at, worker_id, at + lease_seconds, types, limits, held),
            size=limit,
            claim=True,
        )
        self.held_back = held[0]
        return claimed

    async def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        try:
            applied: list[bool] = await self._write(
                op_finish(outcomes, self._tally), size=len(outcomes)
            )
        finally:
            self.releases = self._tally[0]
        return applied

    async def renew_leases(
        self, leases: Sequence[tuple[str, str]], *, until: datetime
    ) -> list[str]:
        lost: list[str] = await self._write(op_renew(leases, to_epoch(until)))
        return lost

    async def cancel(self, task_id: str, *, now: datetime) -> TaskStatus | None:
        try:
            before: TaskStatus | None = await self._write(
                op_cancel(task_id, to_epoch(now), self._tally)
            )
        finally:
            self.releases = self._tally[0]
        return before

    async def recover_expired(self, *, now: datetime) -> list[TaskRecord]:
        try:
            recovered: list[TaskRecord] = await self._write(
                op_recover(to_epoch(now), self._tally), size=INLINE_LIMIT + 1
            )
        finally:
            self.releases = self._tally[0]
        return recovered

    # -- workflows ---------------------------------------------------------------------------

    async def dependencies(self, task_id: str) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT d.depends_on FROM taskyard_dependencies AS d"
                    " INDEXED BY taskyard_dependencies_task"
                    " JOIN taskyard_tasks AS t ON t.id = d.depends_on"
                    " WHERE d.task_id = ? ORDER BY t.seq",
                    (task_id,),
                )
            ]

        return await self._read(run)

    async def dependents(self, task_id: str) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT d.task_id FROM taskyard_dependencies AS d"
                    " JOIN taskyard_tasks AS t ON t.id = d.task_id"
                    " WHERE d.depends_on = ? ORDER BY t.seq",
                    (task_id,),
                )
            ]

        return await self._read(run)

    async def dependency_results(self, task_id: str) -> dict[str, Any]:
        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            return {
                parent: loads(result)
                for parent, result in conn.execute(
                    "SELECT t.id, t.result FROM taskyard_dependencies AS d"
                    " INDEXED BY taskyard_dependencies_task"
                    " JOIN taskyard_tasks AS t ON t.id = d.depends_on"
                    " WHERE d.task_id = ? ORDER BY t.seq",
                    (task_id,),
                )
            }

        return await self._read(run)

    async def workflow_tasks(self, workflow_id: str) -> list[TaskRecord]:
        def run(conn: sqlite3.Connection) -> list[TaskRecord]:
            conn.execute("BEGIN")
            try:
                records = [
                    row_to_record(row)
                    for row in conn.execute(
                        f"SELECT {COLUMNS} FROM taskyard_tasks WHERE workflow_id = ? ORDER BY seq",
                        (workflow_id,),
                    )
                ]
                edges: dict[str, list[str]] = {}
                for child, parent in conn.execute(
                    "SELECT d.task_id, d.depends_on FROM taskyard_tasks AS t"
                    " JOIN taskyard_dependencies AS d ON d.task_id = t.id"
                    " JOIN taskyard_tasks AS p ON p.id = d.depends_on"
                    " WHERE t.workflow_id = ? ORDER BY p.seq",
                    (workflow_id,),
                ):
                    edges.setdefault(child, []).append(parent)
            finally:
                conn.execute("COMMIT")
            for record in records:
                record.depends_on = tuple(edges.get(record.id, ()))
            return records

        return await self._read(run)

    async def workflow_ids(self, *, limit: int = 50) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT workflow_id FROM taskyard_tasks WHERE workflow_id IS NOT NULL"
                    " GROUP BY workflow_id ORDER BY MAX(seq) DESC LIMIT ?",
                    (limit,),
                )
            ]

        return await self._read(run)

    async def record_worker(self, worker_id: str, info: dict[str, object]) -> bool:
        asked: bool = await self._write(op_record_worker(worker_id, info, time.time()))
        return asked

    async def forget_worker(self, worker_id: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM taskyard_workers WHERE worker_id = ?", (worker_id,))

        await self._write(run)

    async def get(self, task_id: str) -> TaskRecord | None:
        def run(conn: sqlite3.Connection, task_id: str) -> TaskRecord | None:
            row = conn.execute(
                f"SELECT {COLUMNS} FROM taskyard_tasks WHERE id = ?", (task_id,)
            ).fetchone()
            return None if row is None else row_to_record(row)

        return await self._read(run, task_id)

    async def next_due(self, types: Collection[str] | None = None) -> datetime | None:
        clause, params = _types_clause(types)

        def run(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT MIN(run_after) FROM taskyard_tasks WHERE status = 'queued'" + clause,
                params,
            ).fetchone()
            return None if row is None else row[0]

        return from_epoch(await self._read(run))

    async def changed_elsewhere(self) -> bool:
        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])

        version = await self._read(run)
        changed = version != self._data_version  # no baseline yet: say yes, to be safe
        self._data_version = version
        return changed

    async def count_by_status(self) -> dict[TaskStatus, int]:
        def run(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            return conn.execute(
                "SELECT status, COUNT(*) FROM taskyard_tasks GROUP BY status"
            ).fetchall()

        counts = dict.fromkeys(TaskStatus, 0)
        for status, count in await self._read(run):
            counts[TaskStatus(status)] = count
        return counts

    async def list_tasks(
        self,
        *,
        statuses: Sequence[TaskStatus] | None = None,
        task_type: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[TaskRecord]:
        where: list[str] = []
        params: list[Any] = []
        if statuses is not None:
            where.append("status IN (SELECT value FROM json_each(?))")
            params.append(json.dumps([str(status) for status in statuses]))
        if task_type is not None:
            where.append("type = ?")
            params.append(task_type)
        sql = f"SELECT {COLUMNS} FROM taskyard_tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq LIMIT ? OFFSET ?"
        params += [limit, offset]

        def run(conn: sqlite3.Connection) -> list[TaskRecord]:
            return [row_to_record(row) for row in conn.execute(sql, params)]

        return await self._read(run)

    async def execute_read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read-only ``fn(conn, *args)`` in the store's thread (for ops tools)."""
        return await self._read(fn, *args)

    async def execute_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` inside the next group-commit transaction (for ops tools)."""
        result: T = await self._write(fn)
        return result

    # -- periodic schedules ------------------------------------------------------------------

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        return await self._read(schedules.read_one, name)

    async def list_schedules(self) -> list[ScheduleRecord]:
        return await self._read(schedules.read_all)

    async def insert_schedule(self, record: ScheduleRecord) -> bool:
        inserted: bool = await self._write(schedules.op_insert(record))
        return inserted

    async def update_schedule(
        self, record: ScheduleRecord, *, expected_next: datetime | None = None
    ) -> bool:
        updated: bool = await self._write(schedules.op_update(record, expected_next))
        return updated

    async def remove_schedule(self, name: str) -> bool:
        removed: bool = await self._write(schedules.op_remove(name))
        return removed

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
        operation = schedules.op_fire(
            name, expected_next, op_add(records), next_fire_at, last_fire_at, now
        )
        ids: list[str] | None = await self._write(operation, size=len(records))
        return ids
