"""Task inspection for operators: list, show, cancel, retry and purge, on an open
:class:`~taskyard.backends.sqlite.SqliteStore` (see :func:`taskyard.ops.database.open_queue`).

Writes are short transactions; a purge deletes in batches, each its own transaction,
so workers sharing the file wait at most for one batch.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger

from taskyard.backends.sqlite.store import COLUMNS, SqliteStore, row_to_record
from taskyard.framework.errors import OperationRefused, TaskNotFound
from taskyard.framework.models import TaskRecord, TaskStatus, from_epoch, iso, utcnow
from taskyard.ops.progress import ProgressCallback, no_progress

RETRYABLE = (TaskStatus.FAILED, TaskStatus.CANCELLED)
PURGEABLE = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
BATCH = 2000
"""Rows a purge deletes per transaction."""


def record_details(record: TaskRecord) -> dict[str, Any]:
    """Everything about a task an operator may need: the status dict plus the lease,
    the worker, the timeout and the idempotency key."""
    return {
        **record.to_status(),
        "timeout": record.timeout,
        "idempotency_key": record.idempotency_key,
        "worker_id": record.worker_id,
        "lease_expires_at": iso(record.lease_expires_at),
        "seq": record.seq,
    }


async def list_tasks(
    store: SqliteStore,
    *,
    statuses: Sequence[TaskStatus] | None = None,
    task_type: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[TaskRecord], int]:
    """A page of tasks in scheduling order, and how many match in all."""
    records = await store.list_tasks(
        statuses=statuses, task_type=task_type, limit=limit, offset=offset
    )
    total: int = await store.execute_read(_count, statuses, task_type)
    return records, total


def _count(
    conn: sqlite3.Connection, statuses: Sequence[TaskStatus] | None, task_type: str | None
) -> int:
    where: list[str] = []
    params: list[Any] = []
    if statuses is not None:
        where.append("status IN (SELECT value FROM json_each(?))")
        params.append(json.dumps([str(status) for status in statuses]))
    if task_type is not None:
        where.append("type = ?")
        params.append(task_type)
    sql = "SELECT COUNT(*) FROM taskyard_tasks"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return int(conn.execute(sql, params).fetchone()[0])


async def show_task(store: SqliteStore, task_id: str) -> TaskRecord:
    """The task, or TaskNotFound."""
    record = await store.get(task_id)
    if record is None:
        raise TaskNotFound(f"no task has the id {task_id!r}")
    return record


async def cancel_task(store: SqliteStore, task_id: str) -> TaskStatus:
    """Cancel a queued or running task; returns the status it had. A running task's
    lease is revoked: its worker stops the handler at its next heartbeat and its
    result is discarded. Raises TaskNotFound, or OperationRefused for a finished task."""
    before = await store.cancel(task_id, now=utcnow())
    if before is None:
        raise TaskNotFound(f"no task has the id {task_id!r}")
    if before.is_terminal:
        raise OperationRefused(f"task {task_id} is already {before}; nothing to cancel")
    logger.info("taskyard task {} cancelled by an operator (was {})", task_id, before)
    return before


async def retry_task(store: SqliteStore, task_id: str) -> TaskRecord:
    """Put a failed or cancelled task back in the queue, due now, with its attempts,
    error, result and times reset. Raises TaskNotFound, or OperationRefused for a task
    in another status."""
    now = time.time()

    def run(conn: sqlite3.Connection) -> TaskRecord | TaskStatus | None:
        row = conn.execute(
            "UPDATE taskyard_tasks SET status = 'queued', attempts = 0, run_after = ?1,"
            " updated_at = ?1, started_at = NULL, finished_at = NULL, result = NULL,"
            " error = NULL, lease_token = NULL, lease_expires_at = NULL, worker_id = NULL"
            " WHERE id = ?2 AND status IN ('failed', 'cancelled')"
            f" RETURNING {COLUMNS}",
            (now, task_id),
        ).fetchone()
        if row is not None:
            return row_to_record(row)
        found = conn.execute(
            "SELECT status FROM taskyard_tasks WHERE id = ?", (task_id,)
        ).fetchone()
        return None if found is None else TaskStatus(found[0])

    result = await store.execute_write(run)
    if result is None:
        raise TaskNotFound(f"no task has the id {task_id!r}")
    if isinstance(result, TaskStatus):
        raise OperationRefused(
            f"task {task_id} is {result}; only failed or cancelled tasks can be retried"
        )
    logger.info("taskyard task {} ({}) queued again by an operator", task_id, result.type)
    return result


@dataclass(frozen=True)
class PurgeResult:
    matched: int
    deleted: int
    dry_run: bool


async def purge_tasks(
    store: SqliteStore,
    *,
    statuses: Sequence[TaskStatus],
    older_than: float,
    task_type: str | None = None,
    dry_run: bool = False,
    now: float | None = None,
    progress: ProgressCallback = no_progress,
) -> PurgeResult:
    """Delete finished tasks of ``statuses`` that finished more than ``older_than``
    seconds ago, in batches of short transactions. Queued and running tasks are never
    purged (cancel them first)."""
    refused = [str(status) for status in statuses if status not in PURGEABLE]
    if refused or not statuses:
        raise OperationRefused(
            f"cannot purge {', '.join(refused) or 'no status'}: purge takes finished "
            "statuses only (completed, failed, cancelled); cancel active tasks first"
        )
    cutoff = (time.time() if now is None else now) - older_than
    where = (
        "status IN (SELECT value FROM json_each(?1)) AND COALESCE(finished_at, updated_at) < ?2"
        + (" AND type = ?3" if task_type is not None else "")
    )
    params: tuple[Any, ...] = (json.dumps(sorted(str(s) for s in statuses)), cutoff)
    if task_type is not None:
        params += (task_type,)

    def count(conn: sqlite3.Connection) -> int:
        return int(
            conn.execute(f"SELECT COUNT(*) FROM taskyard_tasks WHERE {where}", params).fetchone()[0]
        )

    def delete_batch(conn: sqlite3.Connection) -> int:
        return conn.execute(
            "DELETE FROM taskyard_tasks WHERE seq IN"
            f" (SELECT seq FROM taskyard_tasks WHERE {where} LIMIT {BATCH})",
            params,
        ).rowcount

    matched = await store.execute_read(count)
    if dry_run or not matched:
        return PurgeResult(matched, 0, dry_run)
    deleted = 0
    progress(0, matched)
    while True:
        removed = await store.execute_write(delete_batch)
        deleted += removed
        progress(min(deleted, matched), matched)
        if removed < BATCH:
            break
    logger.info(
        "taskyard: purged {} task(s) ({}) finished before {}",
        deleted,
        ", ".join(str(status) for status in statuses),
        iso(from_epoch(cutoff)),
    )
    return PurgeResult(matched, deleted, False)
