"""Keeping a queue file in shape: checkpoints, VACUUM, ANALYZE, integrity checks, pruning
of old tasks and of forgotten workers, and recovery of expired leases.

Every function takes an open :class:`~taskyard.backends.sqlite.SqliteStore` and is safe
while workers run: they only wait for locks (up to the busy timeout). VACUUM is the
exception worth knowing: it rewrites the whole file, holds the write lock meanwhile
(workers' writes wait, and fail after their busy timeout) and needs free disk space
about the size of the database; run it in a quiet hour.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from taskyard.backends.sqlite.store import SqliteStore
from taskyard.framework.errors import ConfigurationError
from taskyard.framework.models import TaskRecord, TaskStatus, utcnow
from taskyard.ops.database import file_size, wal_path
from taskyard.ops.progress import ProgressCallback, no_progress
from taskyard.ops.tasks import PurgeResult, purge_tasks

CHECKPOINT_MODES = ("passive", "full", "restart", "truncate")
DAY = 86400.0


@dataclass(frozen=True)
class CheckpointResult:
    mode: str
    busy: bool
    """The checkpoint could not finish: a reader or writer was in the way."""
    wal_frames: int
    checkpointed_frames: int
    wal_bytes_before: int
    wal_bytes_after: int


async def checkpoint(store: SqliteStore, mode: str = "passive") -> CheckpointResult:
    """Copy the WAL into the database file (``PRAGMA wal_checkpoint``).

    ``passive`` copies what it can without waiting; ``full`` waits for writers and
    copies everything; ``restart`` also makes the next writer start the WAL from the
    beginning; ``truncate`` also truncates the WAL file to zero bytes."""
    mode = mode.lower()
    if mode not in CHECKPOINT_MODES:
        raise ConfigurationError(
            f"checkpoint mode {mode!r} is not one of {', '.join(CHECKPOINT_MODES)}"
        )
    wal = wal_path(store.path)
    before = file_size(wal)

    def run(conn: sqlite3.Connection) -> tuple[int, int, int]:
        # the mode is one of four constants, checked above: not user text in the SQL
        busy, frames, done = conn.execute(f"PRAGMA wal_checkpoint({mode.upper()})").fetchone()
        return int(busy), int(frames), int(done)

    busy, frames, done = await store.execute_read(run)
    return CheckpointResult(mode, bool(busy), frames, done, before, file_size(wal))


@dataclass(frozen=True)
class VacuumResult:
    size_before: int
    size_after: int
    seconds: float
    checkpoint: CheckpointResult


async def vacuum(store: SqliteStore) -> VacuumResult:
    """Rebuild the database file without its free pages, then checkpoint the WAL that
    VACUUM filled (truncating it when no reader is in the way)."""
    started = time.perf_counter()

    def pages(conn: sqlite3.Connection) -> int:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        return int(size) * int(count)

    before = await store.execute_read(pages)

    def run(conn: sqlite3.Connection) -> None:
        conn.execute("VACUUM")

    await store.execute_read(run)  # outside any transaction, as VACUUM must be
    after_checkpoint = await checkpoint(store, "truncate")
    after = await store.execute_read(pages)
    logger.info("taskyard: VACUUM took the database from {} to {} bytes", before, after)
    return VacuumResult(before, after, time.perf_counter() - started, after_checkpoint)


async def optimize(store: SqliteStore) -> list[str]:
    """``ANALYZE`` then ``PRAGMA optimize``: fresh statistics for the query planner.
    Returns what was run."""

    def run(conn: sqlite3.Connection) -> None:
        conn.execute("ANALYZE")
        conn.execute("PRAGMA optimize")

    await store.execute_read(run)
    return ["ANALYZE", "PRAGMA optimize"]


@dataclass(frozen=True)
class IntegrityResult:
    sqlite: list[str]
    """What ``PRAGMA integrity_check`` (or ``quick_check``) said: ``["ok"]`` when fine."""
    taskyard: list[str]
    """Broken taskyard invariants, each with how many tasks break it."""
    quick: bool

    @property
    def ok(self) -> bool:
        return self.sqlite == ["ok"] and not self.taskyard


INVARIANTS = {
    "running tasks without a lease": (
        "status = 'running' AND (lease_token IS NULL OR lease_expires_at IS NULL)"
    ),
    "queued tasks holding a lease": "status = 'queued' AND lease_token IS NOT NULL",
    "finished tasks without finished_at": (
        "status IN ('completed', 'failed', 'cancelled') AND finished_at IS NULL"
    ),
    "tasks with more attempts than allowed": "attempts > max_attempts",
    "tasks whose payload is not JSON": "json_valid(payload) = 0",
}


async def integrity_check(store: SqliteStore, *, quick: bool = False) -> IntegrityResult:
    """SQLite's own check of every page and index (``quick``: without matching indexes
    to tables, much faster), then taskyard's invariants."""

    def run(conn: sqlite3.Connection) -> IntegrityResult:
        pragma = "quick_check" if quick else "integrity_check"
        try:
            found = [str(row[0]) for row in conn.execute(f"PRAGMA {pragma}(100)")]
        except sqlite3.DatabaseError as exc:  # damaged beyond what the check can walk
            return IntegrityResult([f"{pragma} stopped: {exc}"], ["not checked"], quick)
        broken: list[str] = []
        for name, condition in INVARIANTS.items():
            # the conditions are the constants above
            try:
                count = conn.execute(f"SELECT COUNT(*) FROM taskyard_tasks WHERE {condition}")
                number = int(count.fetchone()[0])
            except sqlite3.DatabaseError as exc:
                broken.append(f"cannot check {name}: {exc}")
                continue
            if number:
                broken.append(f"{number} {name}")
        return IntegrityResult(found, broken, quick)

    result: IntegrityResult = await store.execute_read(run)
    return result


@dataclass(frozen=True)
class PruneResult:
    finished: PurgeResult
    """Completed and cancelled tasks older than the retention."""
    failed: PurgeResult
    """Failed tasks older than the failed retention."""
    workers: list[str] = field(default_factory=list)
    """Worker records forgotten (silent for longer than the worker retention)."""
    dry_run: bool = False


async def prune(
    store: SqliteStore,
    *,
    retention_days: float,
    failed_retention_days: float,
    worker_retention_days: float,
    dry_run: bool = False,
    now: float | None = None,
    progress: ProgressCallback = no_progress,
) -> PruneResult:
    """Delete completed and cancelled tasks that finished more than ``retention_days``
    ago, failed tasks older than ``failed_retention_days`` (kept longer: someone may
    want to look at them, or retry them), and the records of workers silent for more
    than ``worker_retention_days``. Queued and running tasks are never touched."""
    now = time.time() if now is None else now
    finished = await purge_tasks(
        store,
        statuses=[TaskStatus.COMPLETED, TaskStatus.CANCELLED],
        older_than=retention_days * DAY,
        dry_run=dry_run,
        now=now,
        progress=progress,
    )
    failed = await purge_tasks(
        store,
        statuses=[TaskStatus.FAILED],
        older_than=failed_retention_days * DAY,
        dry_run=dry_run,
        now=now,
        progress=progress,
    )
    cutoff = now - worker_retention_days * DAY

    def silent_workers(conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute(
            "SELECT worker_id FROM taskyard_workers WHERE last_heartbeat < ? ORDER BY worker_id",
            (cutoff,),
        )
        return [str(row[0]) for row in rows]

    def forget(conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute(
            "DELETE FROM taskyard_workers WHERE last_heartbeat < ? RETURNING worker_id",
            (cutoff,),
        )
        return sorted(str(row[0]) for row in rows)

    workers = (
        await store.execute_read(silent_workers) if dry_run else (await store.execute_write(forget))
    )
    return PruneResult(finished, failed, workers, dry_run)


async def recover_leases(store: SqliteStore) -> list[TaskRecord]:
    """Return running tasks whose lease expired to the queue (or to failed, when their
    attempts are spent): what every worker does every few seconds, for when none runs."""
    recovered = await store.recover_expired(now=utcnow())
    for record in recovered:
        logger.warning(
            "taskyard task {} ({}) lease expired; now {} (recovered by an operator)",
            record.id,
            record.type,
            record.status,
        )
    return recovered


def describe_records(records: list[TaskRecord]) -> list[dict[str, Any]]:
    return [
        {"id": r.id, "type": r.type, "status": str(r.status), "attempts": r.attempts}
        for r in records
    ]
