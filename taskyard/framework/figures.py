"""Queue figures computed in Python: from plain records (what a store that holds its
tasks in memory answers) and across the parts of a composed store."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from taskyard.framework.models import TaskRecord, TaskStatus, to_epoch
from taskyard.framework.operations import (
    FINISHED,
    STATUSES,
    QueueFigures,
    StorageInfo,
    WorkerRecord,
)

__all__ = ["figures_from_records", "merge_figures"]


def _zeros(statuses: Iterable[str]) -> dict[str, int]:
    return dict.fromkeys(statuses, 0)


def figures_from_records(
    records: Iterable[TaskRecord],
    *,
    now: float,
    window: float,
    workers: Sequence[WorkerRecord] = (),
    storage: StorageInfo,
) -> QueueFigures:
    """The :class:`QueueFigures` of ``records``, computed in Python: what a store that
    holds its tasks in memory answers :meth:`StoreOperations.queue_figures` with."""
    by_type: dict[str, dict[str, int]] = {}
    finished_by_type: dict[str, dict[str, int]] = {}
    due = delayed = waiting_retry = expired = retried = retries = 0
    oldest: tuple[str, float] | None = None
    oldest_expiry: float | None = None
    durations: list[float] = []
    first_started: float | None = None
    since = now - window
    for record in records:
        status = str(record.status)
        by_type.setdefault(record.type, _zeros(STATUSES))[status] += 1
        if record.status is TaskStatus.QUEUED:
            run_after = to_epoch(record.run_after)
            if run_after <= now:
                due += 1
                if oldest is None or run_after < oldest[1]:
                    oldest = (record.id, run_after)
            else:
                delayed += 1
            waiting_retry += record.attempts > 0
        elif record.status is TaskStatus.RUNNING:
            expiry = record.lease_expires_at
            if expiry is not None and to_epoch(expiry) < now:
                expired += 1
                seconds = to_epoch(expiry)
                oldest_expiry = seconds if oldest_expiry is None else min(oldest_expiry, seconds)
        elif record.finished_at is not None and to_epoch(record.finished_at) >= since:
            finished_by_type.setdefault(record.type, _zeros(FINISHED))[status] += 1
            retried += record.attempts > 1
            retries += max(record.attempts - 1, 0)
            if record.status is not TaskStatus.CANCELLED and record.started_at is not None:
                started = to_epoch(record.started_at)
                durations.append(to_epoch(record.finished_at) - started)
                first_started = started if first_started is None else min(first_started, started)
    return QueueFigures(
        now=now,
        window=window,
        depth_by_type=by_type,
        queued_due=due,
        queued_delayed=delayed,
        waiting_retry=waiting_retry,
        oldest_due=oldest,
        expired_leases=expired,
        oldest_expired_lease=oldest_expiry,
        finished_by_type=finished_by_type,
        retried_tasks=retried,
        retries=retries,
        processing_seconds=durations,
        workers=list(workers),
        storage=storage,
        first_started=first_started,
    )


def merge_figures(parts: Sequence[QueueFigures]) -> QueueFigures:
    """The figures of several stores taken together (the storage is the first one's)."""
    first = parts[0]
    by_type: dict[str, dict[str, int]] = {}
    finished: dict[str, dict[str, int]] = {}
    for figures in parts:
        for task_type, counts in figures.depth_by_type.items():
            into = by_type.setdefault(task_type, _zeros(STATUSES))
            for status, count in counts.items():
                into[status] += count
        for task_type, counts in figures.finished_by_type.items():
            into = finished.setdefault(task_type, _zeros(FINISHED))
            for status, count in counts.items():
                into[status] += count
    due = [figures.oldest_due for figures in parts if figures.oldest_due is not None]
    expiries = [f.oldest_expired_lease for f in parts if f.oldest_expired_lease is not None]
    starts = [f.first_started for f in parts if f.first_started is not None]
    return QueueFigures(
        now=first.now,
        window=first.window,
        depth_by_type=by_type,
        queued_due=sum(f.queued_due for f in parts),
        queued_delayed=sum(f.queued_delayed for f in parts),
        waiting_retry=sum(f.waiting_retry for f in parts),
        oldest_due=min(due, key=lambda pair: pair[1]) if due else None,
        expired_leases=sum(f.expired_leases for f in parts),
        oldest_expired_lease=min(expiries) if expiries else None,
        finished_by_type=finished,
        retried_tasks=sum(f.retried_tasks for f in parts),
        retries=sum(f.retries for f in parts),
        processing_seconds=[s for f in parts for s in f.processing_seconds],
        workers=[w for f in parts for w in f.workers],
        storage=first.storage,
        first_started=min(starts) if starts else None,
    )
