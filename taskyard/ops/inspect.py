"""What the queue holds and how it is doing: the snapshot behind ``taskyard status``,
``taskyard metrics`` and ``taskyard health``.

The store reads its figures in one consistent read while workers keep writing
(:meth:`~taskyard.framework.operations.StoreOperations.queue_figures`);
:func:`status_from_figures` derives the rates and percentiles, :func:`queue_status`
does both on an open store, and :func:`status_of` opens the store for it::

    status = await status_of(container.ops_store(), window=3600)
    status.depth["queued"], status.oldest_queued_age, status.window.failure_rate

Definitions:

- *depth*: tasks stored, by status (and by type and status);
- *due* / *delayed*: queued tasks whose ``run_after`` has come, or not yet;
- *oldest queued age*: how long the longest-waiting due task has waited since it became
  due (``now - run_after``; a task scheduled for tomorrow is not late);
- the *window* (the last ``window`` seconds, by ``finished_at``): tasks that finished
  completed, failed or cancelled; success and failure rates over completed + failed
  (cancelled tasks count for neither); throughput, completed + failed per second over
  the time the window covers (from the earliest start of those tasks, if later than the
  window's start, to now);
  retried tasks (``attempts > 1``) and retries (attempts beyond the first); processing
  time, ``finished_at - started_at`` of the completed and failed tasks (the last
  attempt's), as nearest-rank percentiles;
- *workers*: the heartbeats workers record; a worker is *active* when its last
  heartbeat is at most ``stale_after`` seconds old, else *stale* (a worker that stops
  cleanly removes its record; a stale one crashed or hangs).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from taskyard.framework.errors import OperationNotSupported
from taskyard.framework.models import from_epoch, iso
from taskyard.framework.operations import (
    FINISHED,
    STATUSES,
    QueueFigures,
    StorageInfo,
    StoreOperations,
    TableStatistics,
)
from taskyard.framework.store import Capability
from taskyard.ops.database import opened
from taskyard.ops.schedules import schedule_figures

PERCENTILES = (50, 95, 99)


def percentile(ordered: list[float], percent: int) -> float | None:
    """The nearest-rank percentile of an ascending list (None when it is empty)."""
    if not ordered:
        return None
    rank = max(-(-percent * len(ordered) // 100), 1)  # ceil(percent * n / 100), exactly
    return ordered[rank - 1]


@dataclass(frozen=True)
class WorkerStatus:
    worker_id: str
    hostname: str
    pid: int
    started_at: float
    last_heartbeat: float
    seconds_since_heartbeat: float
    active: bool
    info: dict[str, Any]

    @property
    def state(self) -> str:
        return "active" if self.active else "stale"

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "hostname": self.hostname,
            "pid": self.pid,
            "started_at": iso(from_epoch(self.started_at)),
            "last_heartbeat": iso(from_epoch(self.last_heartbeat)),
            "seconds_since_heartbeat": self.seconds_since_heartbeat,
            "state": self.state,
            "info": self.info,
        }


@dataclass(frozen=True)
class ProcessingTimes:
    """Seconds from the last claim to the finish, of the window's completed and failed
    tasks."""

    count: int = 0
    total: float = 0.0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, durations: list[float]) -> ProcessingTimes:
        ordered = sorted(max(duration, 0.0) for duration in durations)
        if not ordered:
            return cls()
        p50, p95, p99 = (percentile(ordered, percent) for percent in PERCENTILES)
        return cls(len(ordered), sum(ordered), p50, p95, p99, ordered[-1])


@dataclass(frozen=True)
class WindowStats:
    """What finished in the last ``seconds``."""

    seconds: float
    finished: dict[str, int]
    """completed, failed and cancelled counts."""
    finished_by_type: dict[str, dict[str, int]]
    retried_tasks: int
    """Finished tasks that needed more than one attempt."""
    retries: int
    """Attempts beyond the first, summed over the finished tasks."""
    processing: ProcessingTimes
    covered: float | None = None
    """Seconds the window actually covers: from the earliest start of its processed
    tasks (or the window's start, if later) to now. None: the whole window."""

    @property
    def processed(self) -> int:
        return self.finished["completed"] + self.finished["failed"]

    @property
    def success_rate(self) -> float | None:
        return self.finished["completed"] / self.processed if self.processed else None

    @property
    def failure_rate(self) -> float | None:
        return self.finished["failed"] / self.processed if self.processed else None

    @property
    def throughput(self) -> float:
        """Completed + failed tasks per second over the time the window covers (200
        tasks done in the last 3 s of an hour's window are 66 a second, not 0.06)."""
        span = self.seconds if self.covered is None else self.covered
        return self.processed / span if span > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            **self.finished,
            "by_type": self.finished_by_type,
            "success_rate": self.success_rate,
            "failure_rate": self.failure_rate,
            "throughput_per_second": self.throughput,
            "covered_seconds": self.seconds if self.covered is None else self.covered,
            "retried_tasks": self.retried_tasks,
            "retries": self.retries,
            "processing_seconds": asdict(self.processing),
        }


DatabaseInfo = StorageInfo
"""Where the queue is and how big (the store's :class:`StorageInfo`)."""


@dataclass(frozen=True)
class QueueStatus:
    """One consistent picture of a queue."""

    now: float
    database: DatabaseInfo
    depth: dict[str, int]
    depth_by_type: dict[str, dict[str, int]]
    queued_due: int
    queued_delayed: int
    oldest_queued_age: float | None
    oldest_queued_id: str | None
    waiting_retry: int
    """Queued tasks that already had an attempt (a retry waiting for its turn)."""
    expired_leases: int
    """Running tasks whose lease has expired: their worker stopped responding."""
    oldest_expired_lease_age: float | None
    window: WindowStats
    workers: list[WorkerStatus] = field(default_factory=list)
    stale_after: float = 60.0
    tables: dict[str, TableStatistics] = field(default_factory=dict)
    """Per table, live and dead rows and size, where the store reports them
    (:attr:`~taskyard.framework.store.Capability.TABLE_STATISTICS`: PostgreSQL)."""
    schedules: dict[str, Any] = field(default_factory=dict)
    """Periodic schedules: ``total``, ``enabled``, ``paused``, ``max_lag_seconds`` (how
    overdue the latest enabled schedule is; it grows while no worker runs). Empty for a
    store that keeps none."""

    @property
    def total(self) -> int:
        return sum(self.depth.values())

    @property
    def active_workers(self) -> list[WorkerStatus]:
        return [worker for worker in self.workers if worker.active]

    @property
    def stale_workers(self) -> list[WorkerStatus]:
        return [worker for worker in self.workers if not worker.active]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (``taskyard status --json``)."""
        return {
            "generated_at": iso(from_epoch(self.now)),
            "generated_at_epoch": self.now,
            "database": asdict(self.database),
            "tasks": self.total,
            "depth": self.depth,
            "depth_by_type": self.depth_by_type,
            "queued_due": self.queued_due,
            "queued_delayed": self.queued_delayed,
            "oldest_queued_age_seconds": self.oldest_queued_age,
            "oldest_queued_id": self.oldest_queued_id,
            "waiting_retry": self.waiting_retry,
            "expired_leases": self.expired_leases,
            "oldest_expired_lease_age_seconds": self.oldest_expired_lease_age,
            "window": self.window.to_dict(),
            "workers": [worker.to_dict() for worker in self.workers],
            "workers_active": len(self.active_workers),
            "workers_stale": len(self.stale_workers),
            "stale_worker_after_seconds": self.stale_after,
            "tables": {name: asdict(stats) for name, stats in self.tables.items()},
            "schedules": self.schedules,
        }


def status_from_figures(figures: QueueFigures, *, stale_after: float = 60.0) -> QueueStatus:
    """The :class:`QueueStatus` the store's figures describe. Pure: no I/O."""
    now = figures.now
    depth = dict.fromkeys(STATUSES, 0)
    for counts in figures.depth_by_type.values():
        for status, count in counts.items():
            depth[status] += count
    finished = dict.fromkeys(FINISHED, 0)
    for counts in figures.finished_by_type.values():
        for status, count in counts.items():
            finished[status] += count
    workers = []
    for worker in figures.workers:
        silent = max(now - worker.last_heartbeat, 0.0)
        workers.append(
            WorkerStatus(
                worker_id=worker.worker_id,
                hostname=worker.hostname,
                pid=worker.pid,
                started_at=worker.started_at,
                last_heartbeat=worker.last_heartbeat,
                seconds_since_heartbeat=silent,
                active=silent <= stale_after,
                info=worker.info,
            )
        )
    oldest = figures.oldest_due
    oldest_expiry = figures.oldest_expired_lease
    return QueueStatus(
        now=now,
        database=figures.storage,
        depth=depth,
        depth_by_type=dict(sorted(figures.depth_by_type.items())),
        queued_due=figures.queued_due,
        queued_delayed=figures.queued_delayed,
        oldest_queued_age=None if oldest is None else max(now - oldest[1], 0.0),
        oldest_queued_id=None if oldest is None else oldest[0],
        waiting_retry=figures.waiting_retry,
        expired_leases=figures.expired_leases,
        oldest_expired_lease_age=None if oldest_expiry is None else now - oldest_expiry,
        window=WindowStats(
            seconds=figures.window,
            finished=finished,
            finished_by_type=dict(sorted(figures.finished_by_type.items())),
            retried_tasks=figures.retried_tasks,
            retries=figures.retries,
            processing=ProcessingTimes.of(figures.processing_seconds),
            covered=(
                None
                if figures.first_started is None
                else min(figures.window, max(now - figures.first_started, 1e-3))
            ),
        ),
        workers=workers,
        stale_after=stale_after,
    )


async def queue_status(
    store: StoreOperations,
    *,
    window: float = 3600.0,
    stale_after: float = 60.0,
    now: float | None = None,
) -> QueueStatus:
    """The status of an open store's queue."""
    figures = await store.queue_figures(now=time.time() if now is None else now, window=window)
    status = status_from_figures(figures, stale_after=stale_after)
    if Capability.TABLE_STATISTICS in store.capabilities:
        status = dataclasses.replace(status, tables=await store.table_statistics())
    try:
        schedules = await schedule_figures(store, now=from_epoch(figures.now))
    except OperationNotSupported:
        return status
    return dataclasses.replace(status, schedules=schedules)


async def status_of(
    store: StoreOperations,
    *,
    window: float = 3600.0,
    stale_after: float = 60.0,
) -> QueueStatus:
    """Open ``store`` (an unopened one: an operations store), read its status, close it."""
    async with opened(store) as queue:
        return await queue_status(queue, window=window, stale_after=stale_after)
