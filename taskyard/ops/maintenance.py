"""Keeping a queue in shape: checkpoints, VACUUM, ANALYZE, integrity checks, pruning of
old tasks and of forgotten workers, and recovery of expired leases.

Every function takes an open store offering
:class:`~taskyard.framework.operations.StoreOperations` and is safe while workers run:
they only wait for locks (up to the busy timeout). Checkpoints and VACUUM need a store
kept in a file (:attr:`~taskyard.framework.store.Capability.FILE_MAINTENANCE`); other
stores refuse them with OperationNotSupported. VACUUM is the exception worth knowing:
it rewrites the whole file, holds the write lock meanwhile (workers' writes wait, and
fail after their busy timeout) and needs free disk space about the size of the
database; run it in a quiet hour.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from taskyard.framework.errors import ConfigurationError
from taskyard.framework.models import TaskRecord, TaskStatus, utcnow
from taskyard.framework.operations import StoreOperations
from taskyard.framework.store import Capability
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


async def checkpoint(store: StoreOperations, mode: str = "passive") -> CheckpointResult:
    """Copy the WAL into the database file (``PRAGMA wal_checkpoint``).

    ``passive`` copies what it can without waiting; ``full`` waits for writers and
    copies everything; ``restart`` also makes the next writer start the WAL from the
    beginning; ``truncate`` also truncates the WAL file to zero bytes."""
    mode = mode.lower()
    if mode not in CHECKPOINT_MODES:
        raise ConfigurationError(
            f"checkpoint mode {mode!r} is not one of {', '.join(CHECKPOINT_MODES)}"
        )
    if Capability.FILE_MAINTENANCE not in store.capabilities:
        raise store.unsupported("checkpoint", "a checkpoint")
    figures = await store.checkpoint(mode)
    return CheckpointResult(
        mode,
        figures.busy,
        figures.wal_frames,
        figures.checkpointed_frames,
        figures.wal_bytes_before,
        figures.wal_bytes_after,
    )


@dataclass(frozen=True)
class VacuumResult:
    size_before: int
    size_after: int
    seconds: float
    checkpoint: CheckpointResult | None
    """The checkpoint after a file's vacuum (None for a server's tables)."""
    statements: list[str] = field(default_factory=list)
    """What a server database ran (``VACUUM (ANALYZE)`` per table)."""


async def vacuum(store: StoreOperations) -> VacuumResult:
    """A store kept in a file (FILE_MAINTENANCE): rebuild the file without its free
    pages, then checkpoint the WAL that VACUUM filled (truncating it when no reader is
    in the way). A store of tables on a server (TABLE_MAINTENANCE): reclaim their dead
    rows and refresh their statistics while workers run (PostgreSQL: ``VACUUM
    (ANALYZE)``); the sizes are the store's before and after."""
    started = time.perf_counter()
    if Capability.FILE_MAINTENANCE not in store.capabilities:
        if Capability.TABLE_MAINTENANCE not in store.capabilities:
            raise store.unsupported("vacuum", "a vacuum")
        before = (await store.storage_info()).size_bytes
        statements = await store.vacuum_tables()
        after = (await store.storage_info()).size_bytes
        logger.info("taskyard: {}", "; ".join(statements))
        return VacuumResult(before, after, time.perf_counter() - started, None, statements)
    before, after = await store.vacuum()
    after_checkpoint = await checkpoint(store, "truncate")
    logger.info("taskyard: VACUUM took the database from {} to {} bytes", before, after)
    return VacuumResult(before, after, time.perf_counter() - started, after_checkpoint)


async def optimize(store: StoreOperations) -> list[str]:
    """Fresh statistics for the query planner (SQLite: ``ANALYZE`` then ``PRAGMA
    optimize``; PostgreSQL: ``ANALYZE``, then ``REINDEX CONCURRENTLY`` of bloated
    indexes). Returns what was run."""
    return await store.optimize()


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


async def integrity_check(store: StoreOperations, *, quick: bool = False) -> IntegrityResult:
    """The store's own check of every page and index (``quick``: without matching
    indexes to tables, much faster), then taskyard's invariants."""
    findings = await store.check_integrity(quick=quick)
    return IntegrityResult(findings.storage, findings.invariants, quick)


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
    store: StoreOperations,
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
    workers = await store.forget_workers(
        silent_since=now - worker_retention_days * DAY, dry_run=dry_run
    )
    return PruneResult(finished, failed, workers, dry_run)


async def recover_leases(store: StoreOperations) -> list[TaskRecord]:
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
