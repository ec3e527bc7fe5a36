"""Task inspection for operators: list, show, cancel, retry and purge, on an open store
that offers :class:`~taskyard.framework.operations.StoreOperations` (see
:func:`taskyard.ops.database.opened`).

Writes are short transactions; a purge deletes in batches, each its own transaction,
so workers sharing the file wait at most for one batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger

from taskyard.framework.errors import OperationRefused, TaskNotFound
from taskyard.framework.models import (
    TaskRecord,
    TaskStatus,
    from_epoch,
    iso,
    trace_id,
    utcnow,
)
from taskyard.framework.operations import StoreOperations
from taskyard.ops.progress import ProgressCallback, no_progress

RETRYABLE = (TaskStatus.FAILED, TaskStatus.CANCELLED)
PURGEABLE = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
BATCH = 2000
"""Rows a purge deletes per transaction."""


def record_details(record: TaskRecord) -> dict[str, Any]:
    """Everything about a task an operator may need: the status dict plus the lease,
    the worker, the timeout, the idempotency key and the trace id of the span that
    scheduled it (OpenTelemetry, when it was on)."""
    return {
        **record.to_status(),
        "timeout": record.timeout,
        "idempotency_key": record.idempotency_key,
        "worker_id": record.worker_id,
        "lease_expires_at": iso(record.lease_expires_at),
        "seq": record.seq,
        "trace_id": trace_id(record.trace_context),
    }


async def list_tasks(
    store: StoreOperations,
    *,
    statuses: Sequence[TaskStatus] | None = None,
    task_type: str | None = None,
    limit: int = 50,
    offset: int = 0,
    newest_first: bool = False,
) -> tuple[list[TaskRecord], int]:
    """A page of tasks in scheduling order (``newest_first``: the newest first, the
    ``offset`` counted from the newest), and how many match in all."""
    total = await store.count_tasks(statuses=statuses, task_type=task_type)
    if newest_first:
        end = max(total - offset, 0)
        start = max(end - limit, 0)
        records = (
            await store.list_tasks(
                statuses=statuses, task_type=task_type, limit=end - start, offset=start
            )
            if end > start
            else []
        )
        return records[::-1], total
    records = await store.list_tasks(
        statuses=statuses, task_type=task_type, limit=limit, offset=offset
    )
    return records, total


async def show_task(store: StoreOperations, task_id: str) -> TaskRecord:
    """The task, or TaskNotFound."""
    record = await store.get(task_id)
    if record is None:
        raise TaskNotFound(f"no task has the id {task_id!r}")
    return record


async def cancel_task(store: StoreOperations, task_id: str) -> TaskStatus:
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


async def retry_task(store: StoreOperations, task_id: str) -> TaskRecord:
    """Put a failed or cancelled task back in the queue, due now, with its attempts,
    error, result and times reset. Raises TaskNotFound, or OperationRefused for a task
    in another status."""
    result = await store.retry(task_id, now=time.time())
    logger.info("taskyard task {} ({}) queued again by an operator", task_id, result.type)
    return result


RETRYABLE = (TaskStatus.FAILED, TaskStatus.CANCELLED)


async def retry_matching(
    store: StoreOperations,
    *,
    status: TaskStatus,
    task_type: str | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Queue again every task of ``status`` (failed or cancelled), of ``task_type`` if
    given, as :func:`retry_task` does one; returns their ids (with ``dry_run``, the ids
    that would be retried). A task that changed status meanwhile is left alone."""
    if status not in RETRYABLE:
        raise OperationRefused(f"cannot retry {status} tasks: retry takes failed or cancelled ones")
    if dry_run:
        total = await store.count_tasks(statuses=[status], task_type=task_type)
        records = await store.list_tasks(
            statuses=[status], task_type=task_type, limit=max(total, 1), offset=0
        )
        return [record.id for record in records]
    retried: list[str] = []
    skipped: set[str] = set()
    while True:
        page = await store.list_tasks(
            statuses=[status], task_type=task_type, limit=BATCH + len(skipped), offset=0
        )
        todo = [record for record in page if record.id not in skipped]
        if not todo:
            break
        for record in todo:
            try:
                await store.retry(record.id, now=time.time())
            except OperationRefused:
                skipped.add(record.id)
                continue
            retried.append(record.id)
    if retried:
        logger.info(
            "taskyard: {} {} task(s){} queued again by an operator",
            len(retried),
            status,
            f" of type {task_type}" if task_type else "",
        )
    return retried


@dataclass(frozen=True)
class PurgeResult:
    matched: int
    deleted: int
    dry_run: bool


async def purge_tasks(
    store: StoreOperations,
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
    matched = await store.count_finished(statuses=statuses, before=cutoff, task_type=task_type)
    if dry_run or not matched:
        return PurgeResult(matched, 0, dry_run)
    deleted = 0
    progress(0, matched)
    while True:
        removed = await store.delete_finished(
            statuses=statuses, before=cutoff, task_type=task_type, limit=BATCH
        )
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
