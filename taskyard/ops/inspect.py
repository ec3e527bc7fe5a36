"""What the queue holds and how it is doing: the snapshot behind ``taskyard status``,
``taskyard metrics`` and ``taskyard health``.

:func:`read_status` reads everything in one read transaction (one consistent picture,
while workers keep writing) on a plain ``sqlite3`` connection; :func:`queue_status`
runs it in a :class:`~taskyard.backends.sqlite.SqliteStore`'s thread, and
:func:`status_of_file` opens the file for it::

    status = await status_of_file("taskyard.db", window=3600)
    status.depth["queued"], status.oldest_queued_age, status.window.failure_rate

Definitions:

- *depth*: tasks stored, by status (and by type and status);
- *due* / *delayed*: queued tasks whose ``run_after`` has come, or not yet;
- *oldest queued age*: how long the longest-waiting due task has waited since it became
  due (``now - run_after``; a task scheduled for tomorrow is not late);
- the *window* (the last ``window`` seconds, by ``finished_at``): tasks that finished
  completed, failed or cancelled; success and failure rates over completed + failed
  (cancelled tasks count for neither); throughput, completed + failed per second;
  retried tasks (``attempts > 1``) and retries (attempts beyond the first); processing
  time, ``finished_at - started_at`` of the completed and failed tasks (the last
  attempt's), as nearest-rank percentiles;
- *workers*: the heartbeats workers record; a worker is *active* when its last
  heartbeat is at most ``stale_after`` seconds old, else *stale* (a worker that stops
  cleanly removes its record; a stale one crashed or hangs).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taskyard.backends.sqlite.store import SqliteStore
from taskyard.framework.models import TaskStatus, from_epoch, iso
from taskyard.ops.database import file_size, open_queue, wal_path

STATUSES = tuple(str(status) for status in TaskStatus)
FINISHED = ("completed", "failed", "cancelled")
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
        """Completed + failed tasks per second over the window."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            **self.finished,
            "by_type": self.finished_by_type,
            "success_rate": self.success_rate,
            "failure_rate": self.failure_rate,
            "throughput_per_second": self.throughput,
            "retried_tasks": self.retried_tasks,
            "retries": self.retries,
            "processing_seconds": asdict(self.processing),
        }


@dataclass(frozen=True)
class DatabaseInfo:
    path: str
    size_bytes: int
    wal_bytes: int
    schema_version: int
    page_size: int
    page_count: int
    freelist_count: int


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
        }


def read_status(
    conn: sqlite3.Connection,
    path: str | os.PathLike[str],
    *,
    window: float = 3600.0,
    stale_after: float = 60.0,
    now: float | None = None,
) -> QueueStatus:
    """The status of the queue on ``conn`` (the file at ``path``), read in one read
    transaction. Plain function on a sqlite3 connection: run it in the store's thread."""
    conn.execute("BEGIN")
    try:
        return _read(conn, Path(path), window, stale_after, time.time() if now is None else now)
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _read(
    conn: sqlite3.Connection, path: Path, window: float, stale: float, now: float
) -> QueueStatus:
    depth = dict.fromkeys(STATUSES, 0)
    by_type: dict[str, dict[str, int]] = {}
    for task_type, status, count in conn.execute(
        "SELECT type, status, COUNT(*) FROM taskyard_tasks GROUP BY type, status"
    ):
        depth[status] += count
        by_type.setdefault(task_type, dict.fromkeys(STATUSES, 0))[status] = count

    due, delayed, waiting_retry = conn.execute(
        "SELECT COALESCE(SUM(run_after <= ?1), 0), COALESCE(SUM(run_after > ?1), 0),"
        " COALESCE(SUM(attempts > 0), 0) FROM taskyard_tasks WHERE status = 'queued'",
        (now,),
    ).fetchone()
    oldest = conn.execute(
        "SELECT id, run_after FROM taskyard_tasks"
        " WHERE status = 'queued' AND run_after <= ? ORDER BY run_after LIMIT 1",
        (now,),
    ).fetchone()
    expired, oldest_expiry = conn.execute(
        "SELECT COUNT(*), MIN(lease_expires_at) FROM taskyard_tasks"
        " WHERE status = 'running' AND lease_expires_at < ?",
        (now,),
    ).fetchone()

    since = now - window
    finished = dict.fromkeys(FINISHED, 0)
    finished_by_type: dict[str, dict[str, int]] = {}
    retried = retries = 0
    for task_type, status, count, retried_here, retries_here in conn.execute(
        "SELECT type, status, COUNT(*), SUM(attempts > 1), SUM(MAX(attempts - 1, 0))"
        " FROM taskyard_tasks WHERE finished_at >= ? AND status IN"
        " ('completed', 'failed', 'cancelled') GROUP BY type, status",
        (since,),
    ):
        finished[status] += count
        finished_by_type.setdefault(task_type, dict.fromkeys(FINISHED, 0))[status] = count
        retried += retried_here
        retries += retries_here
    durations = [
        row[0]
        for row in conn.execute(
            "SELECT finished_at - started_at FROM taskyard_tasks WHERE finished_at >= ?"
            " AND status IN ('completed', 'failed') AND started_at IS NOT NULL",
            (since,),
        )
    ]

    workers = []
    for worker_id, hostname, pid, started_at, heartbeat, info in conn.execute(
        "SELECT worker_id, hostname, pid, started_at, last_heartbeat, info"
        " FROM taskyard_workers ORDER BY started_at, worker_id"
    ):
        silent = max(now - heartbeat, 0.0)
        workers.append(
            WorkerStatus(
                worker_id=worker_id,
                hostname=hostname,
                pid=pid,
                started_at=started_at,
                last_heartbeat=heartbeat,
                seconds_since_heartbeat=silent,
                active=silent <= stale,
                info=_json_object(info),
            )
        )

    version = conn.execute("SELECT MAX(version) FROM taskyard_schema_version").fetchone()[0]
    database = DatabaseInfo(
        path=str(path),
        size_bytes=file_size(path),
        wal_bytes=file_size(wal_path(path)),
        schema_version=int(version or 0),
        page_size=int(conn.execute("PRAGMA page_size").fetchone()[0]),
        page_count=int(conn.execute("PRAGMA page_count").fetchone()[0]),
        freelist_count=int(conn.execute("PRAGMA freelist_count").fetchone()[0]),
    )
    return QueueStatus(
        now=now,
        database=database,
        depth=depth,
        depth_by_type=dict(sorted(by_type.items())),
        queued_due=due,
        queued_delayed=delayed,
        oldest_queued_age=None if oldest is None else max(now - oldest[1], 0.0),
        oldest_queued_id=None if oldest is None else oldest[0],
        waiting_retry=waiting_retry,
        expired_leases=expired,
        oldest_expired_lease_age=None if oldest_expiry is None else now - oldest_expiry,
        window=WindowStats(
            seconds=window,
            finished=finished,
            finished_by_type=dict(sorted(finished_by_type.items())),
            retried_tasks=retried,
            retries=retries,
            processing=ProcessingTimes.of(durations),
        ),
        workers=workers,
        stale_after=stale,
    )


def _json_object(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def queue_status(
    store: SqliteStore, *, window: float = 3600.0, stale_after: float = 60.0
) -> QueueStatus:
    """The status of an open store's queue, read in the store's thread."""
    status: QueueStatus = await store.execute_read(
        _read_status_in_thread, store.path, window, stale_after
    )
    return status


def _read_status_in_thread(
    conn: sqlite3.Connection, path: Path, window: float, stale_after: float
) -> QueueStatus:
    return read_status(conn, path, window=window, stale_after=stale_after)


async def status_of_file(
    path: str | os.PathLike[str],
    *,
    window: float = 3600.0,
    stale_after: float = 60.0,
    busy_timeout: float = 5.0,
) -> QueueStatus:
    """Open the queue file at ``path``, read its status, close it."""
    async with open_queue(path, busy_timeout=busy_timeout) as store:
        return await queue_status(store, window=window, stale_after=stale_after)
