"""The store-operations interface: what the operations tools (``taskyard status``,
``tasks``, ``maintenance``, ``backup``, ``export``/``import``, ``validate``, rollback)
ask of a store, beside the engine's :class:`~taskyard.framework.store.TaskStore`.

:class:`StoreOperations` extends :class:`~taskyard.framework.store.TaskStore`: a store
that offers operations derives from it (``class MyStore(StoreOperations)``). Every
method is answered by the store from its own schema, so :mod:`taskyard.ops` holds no
query and knows no database dialect; a second database means a second package under
``backends/``, nothing else.

Times are Unix epoch seconds (``float``) throughout, as the operations tools count in
seconds. Every method may raise :class:`~taskyard.framework.errors.StoreError` (or a
subclass) when the storage fails.

Some operations only make sense for some stores; they are named by a
:class:`~taskyard.framework.store.Capability` in the store's ``capabilities``, and a
store without it refuses them with :class:`~taskyard.framework.errors.OperationNotSupported`
(the default implementations here do exactly that):

- :attr:`Capability.FILE_MAINTENANCE`: :meth:`~StoreOperations.checkpoint` and
  :meth:`~StoreOperations.vacuum` (a store kept in a file with a write-ahead log);
- :attr:`Capability.FILE_BACKUP`: :meth:`~StoreOperations.backup_to`,
  :meth:`~StoreOperations.verify_backup` and :meth:`~StoreOperations.restore_from`
  (online copies of the store to a file and back).
- :attr:`Capability.TABLE_MAINTENANCE`: :meth:`~StoreOperations.vacuum_tables` (a
  server database's vacuum of its tables, while workers run);
- :attr:`Capability.TABLE_STATISTICS`: :meth:`~StoreOperations.table_statistics` (live
  and dead rows and sizes per table, for ``status`` and ``metrics``).

A new store (PostgreSQL, say) joins by deriving from :class:`StoreOperations`,
implementing its abstract methods with its own queries, declaring the capabilities it
has (a server database has no FILE_MAINTENANCE or FILE_BACKUP: the defaults refuse those
for it), and passing :class:`taskyard.testing.operations.StoreOperationsContract` (one
``ops_store`` fixture). The container's ``ops_store`` then hands it to every command.

:class:`ComposedOperations` answers for a store made of other stores;
:mod:`taskyard.framework.figures` computes :class:`QueueFigures` in Python, for stores
that hold their tasks in memory and for composed stores.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskyard.framework.errors import OperationNotSupported
from taskyard.framework.models import TaskRecord, TaskStatus
from taskyard.framework.store import TaskStore

__all__ = [
    "FINISHED",
    "STATUSES",
    "BackupCheck",
    "CheckpointFigures",
    "ComposedOperations",
    "InitFigures",
    "IntegrityFindings",
    "ProgressCallback",
    "QueueFigures",
    "StorageInfo",
    "StoreOperations",
    "TableStatistics",
    "WorkerRecord",
    "no_progress",
]

STATUSES = tuple(str(status) for status in TaskStatus)
FINISHED = ("completed", "failed", "cancelled")

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: called as a long operation advances (total 0: unknown)."""


def no_progress(done: int, total: int) -> None:
    """A progress callback that ignores its calls."""


@dataclass(frozen=True)
class WorkerRecord:
    """A worker's heartbeat record, as :meth:`StoreOperations.list_workers` returns it."""

    worker_id: str
    hostname: str
    pid: int
    started_at: float
    last_heartbeat: float
    info: dict[str, Any] = field(default_factory=dict)
    stop_requested_at: float | None = None
    """When ``taskyard workers stop`` asked it to stop (None: not asked)."""

    @property
    def role(self) -> str:
        """``worker`` (a ``taskyard worker`` process, which stops when asked) or
        ``application`` (a program that runs tasks itself: left to its own manager)."""
        return "worker" if self.info.get("role") == "worker" else "application"


@dataclass(frozen=True)
class StorageInfo:
    """Where and how big the store is. Figures a store does not have are 0 (an
    in-memory store has no file, no WAL and no pages)."""

    path: str
    """The file, or another description of where the tasks are (never a password)."""
    size_bytes: int = 0
    wal_bytes: int = 0
    schema_version: int = 0
    page_size: int = 0
    page_count: int = 0
    freelist_count: int = 0


@dataclass(frozen=True)
class QueueFigures:
    """The raw figures behind ``taskyard status``, ``metrics`` and ``health``, read at
    ``now`` in one consistent read. :mod:`taskyard.ops.inspect` derives the rates and
    percentiles."""

    now: float
    window: float
    depth_by_type: dict[str, dict[str, int]]
    """type -> status -> tasks stored (every status present, 0 when none)."""
    queued_due: int
    queued_delayed: int
    waiting_retry: int
    """Queued tasks that already had an attempt."""
    oldest_due: tuple[str, float] | None
    """``(task id, run_after)`` of the queued, due task with the earliest run_after."""
    expired_leases: int
    """Running tasks whose lease expired before ``now``."""
    oldest_expired_lease: float | None
    """The earliest expiry among them."""
    finished_by_type: dict[str, dict[str, int]]
    """type -> completed/failed/cancelled -> tasks that finished within the window."""
    retried_tasks: int
    retries: int
    processing_seconds: list[float]
    """``finished_at - started_at`` of the window's completed and failed tasks."""
    workers: list[WorkerRecord]
    storage: StorageInfo
    first_started: float | None = None
    """The earliest ``started_at`` of the window's completed and failed tasks: a rate
    over the window divides by the time from then (or the window's start, if later)
    to ``now``, not by the whole window. None: unknown, the whole window counts."""


@dataclass(frozen=True)
class IntegrityFindings:
    storage: list[str]
    """What the store's own check said: ``["ok"]`` when fine."""
    invariants: list[str]
    """Broken taskyard invariants, each with how many tasks break it."""


@dataclass(frozen=True)
class CheckpointFigures:
    busy: bool
    wal_frames: int
    checkpointed_frames: int
    wal_bytes_before: int
    wal_bytes_after: int


@dataclass(frozen=True)
class InitFigures:
    location: str
    """The file (or another description of where the tasks are; never a password)."""
    created: bool
    from_version: int
    to_version: int
    applied: list[int]


@dataclass(frozen=True)
class TableStatistics:
    """One table of a store kept on a database server, as
    :meth:`StoreOperations.table_statistics` gives it."""

    live_rows: int
    dead_rows: int
    """Rows deleted or updated but not reclaimed yet (they slow claims as they pile up)."""
    size_bytes: int
    """With indexes and TOAST."""
    last_vacuum: float | None
    """The last vacuum, manual or automatic (epoch seconds), or None: never."""


@dataclass(frozen=True)
class BackupCheck:
    """What a check of a backup file found."""

    integrity: list[str]
    schema_version: int
    counts: dict[str, int]


class StoreOperations(TaskStore):
    """A :class:`TaskStore` with the operations the operations tools need. Documented
    once, here; an implementation keeps its docstrings short."""

    # -- opening ----------------------------------------------------------------------------

    async def open_existing(self) -> None:
        """Open the store for an operations tool, which must not create storage that is
        not there. Raises StoreUnavailable (nothing there) or SchemaError (not a
        taskyard queue, or one of a newer taskyard). The default opens the store."""
        await self.open()

    @abc.abstractmethod
    async def initialize(self) -> InitFigures:
        """Create the storage, or upgrade its schema to this taskyard's; idempotent.
        Returns what was there and what was done. Raises SchemaError for storage that
        is not a taskyard queue (left unchanged)."""

    # -- reading ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def count_tasks(
        self, *, statuses: Sequence[TaskStatus] | None = None, task_type: str | None = None
    ) -> int:
        """How many tasks match (``statuses``: any of them; ``task_type``: that type);
        the total behind a page of ``list_tasks`` with the same filters."""

    @abc.abstractmethod
    async def present(self, ids: Collection[str]) -> set[str]:
        """Which of ``ids`` the store holds (one read where the store can)."""

    @abc.abstractmethod
    async def queue_figures(self, *, now: float, window: float) -> QueueFigures:
        """Everything ``taskyard status`` shows, read at ``now`` over the last ``window``
        seconds, as one consistent picture while workers write."""

    @abc.abstractmethod
    async def list_workers(self) -> list[WorkerRecord]:
        """The workers' heartbeat records, oldest start first (a store that is not
        shared by processes keeps none: an empty list)."""

    @abc.abstractmethod
    async def request_worker_stop(self, worker_ids: Collection[str]) -> list[str]:
        """Ask the workers ``worker_ids`` to stop: each reads the request with its next
        heartbeat (:meth:`TaskStore.record_worker` returns True), drains as on SIGTERM
        and removes its record as it exits. Works from any host. Returns the ids that
        have a record, sorted (unknown ids are ignored); asking twice keeps the first
        request's time."""

    # -- changing tasks ---------------------------------------------------------------------

    @abc.abstractmethod
    async def retry(self, task_id: str, *, now: float) -> TaskRecord:
        """Queue a failed or cancelled task again, due at ``now``, with attempts, error,
        result, lease and times reset. Returns the task as it is now. Raises
        TaskNotFound for an unknown id, OperationRefused for a task in another status."""

    @abc.abstractmethod
    async def count_finished(
        self, *, statuses: Sequence[TaskStatus], before: float, task_type: str | None = None
    ) -> int:
        """How many tasks of ``statuses`` (finished ones) finished before ``before``
        (their ``updated_at`` when ``finished_at`` is missing), of ``task_type`` when
        given."""

    @abc.abstractmethod
    async def delete_finished(
        self,
        *,
        statuses: Sequence[TaskStatus],
        before: float,
        task_type: str | None = None,
        limit: int,
    ) -> int:
        """Delete up to ``limit`` of the tasks :meth:`count_finished` counts, in one
        short transaction. Returns how many were deleted (fewer than ``limit``: none
        are left)."""

    @abc.abstractmethod
    async def forget_workers(self, *, silent_since: float, dry_run: bool = False) -> list[str]:
        """Delete the records of workers whose last heartbeat is older than
        ``silent_since`` (``dry_run``: only list them). Returns their ids, sorted."""

    @abc.abstractmethod
    async def self_test(self) -> dict[str, Any]:
        """Enqueue, claim and complete a scratch task through the store's own write
        paths, then delete it, leaving no trace among the user's tasks. Returns what it
        did; raises StoreError (IntegrityError when a step misbehaves)."""

    # -- maintenance ------------------------------------------------------------------------

    @abc.abstractmethod
    async def check_integrity(self, *, quick: bool = False) -> IntegrityFindings:
        """The store's own consistency check (``quick``: a faster, shallower one), then
        taskyard's invariants (no running task without a lease, no queued one holding
        one, no finished one without ``finished_at``, attempts within the limit,
        payloads that are JSON)."""

    @abc.abstractmethod
    async def optimize(self) -> list[str]:
        """Refresh the statistics the store plans its queries with. Returns what was
        run, for the operator (an empty list: nothing to do)."""

    @abc.abstractmethod
    async def storage_info(self) -> StorageInfo:
        """Where the store is and how big (see :class:`StorageInfo`)."""

    # -- Capability.FILE_MAINTENANCE --------------------------------------------------------

    async def checkpoint(self, mode: str) -> CheckpointFigures:
        """Copy the write-ahead log into the file (``mode``: passive, full, restart or
        truncate, already checked by the caller). Needs FILE_MAINTENANCE."""
        raise self.unsupported("checkpoint", "a checkpoint")

    async def vacuum(self) -> tuple[int, int]:
        """Rebuild the file without its free pages. Returns the bytes of its pages before
        and after. Needs FILE_MAINTENANCE."""
        raise self.unsupported("vacuum", "a vacuum")

    # -- Capability.FILE_BACKUP -------------------------------------------------------------

    async def backup_to(
        self, path: str | os.PathLike[str], *, progress: ProgressCallback = no_progress
    ) -> tuple[dict[str, int], int]:
        """Copy the whole store, as of one instant, into the existing empty file
        ``path``, while workers keep writing. Returns the tasks per status of that
        instant and the pages copied. Needs FILE_BACKUP."""
        raise self.unsupported("backup", "a backup")

    async def verify_backup(self, path: str | os.PathLike[str]) -> BackupCheck:
        """Check a backup file of this kind of store, read-only (the store need not be
        open). Raises SchemaError for a file that is no taskyard queue. Needs
        FILE_BACKUP."""
        raise self.unsupported("backup", "checking a backup")

    async def restore_from(
        self, path: str | os.PathLike[str], *, progress: ProgressCallback = no_progress
    ) -> dict[str, int]:
        """Replace the store's content with the backup at ``path``, dropping the
        backup's worker records; connections other processes hold stay valid. Returns
        the tasks per status now. Needs FILE_BACKUP."""
        raise self.unsupported("restore", "a restore")

    # -- Capability.TABLE_MAINTENANCE -------------------------------------------------------

    async def vacuum_tables(self) -> list[str]:
        """Reclaim the dead rows of the store's tables and refresh their statistics, while
        workers run (PostgreSQL: ``VACUUM (ANALYZE)``). Returns what was run. Needs
        TABLE_MAINTENANCE."""
        raise OperationNotSupported(
            f"{self!r} keeps no tables on a database server (vacuum_tables); "
            "`taskyard maintenance vacuum` rebuilds a SQLite file instead"
        )

    # -- Capability.TABLE_STATISTICS --------------------------------------------------------

    async def table_statistics(self) -> dict[str, TableStatistics]:
        """Per table of the store (by name): live and dead rows, size, last vacuum.
        Needs TABLE_STATISTICS."""
        raise OperationNotSupported(
            f"{self!r} keeps no table statistics (table_statistics); see `taskyard status`"
        )

    def unsupported(self, what: str, operation: str) -> OperationNotSupported:
        """The error for an operation this store cannot do."""
        return OperationNotSupported(
            f"{operation} needs a store kept in a file; {self!r} cannot do it ({what}). "
            "Use the store's own tools, or export and import the tasks "
            "(taskyard export / taskyard import)"
        )


class ComposedOperations(StoreOperations):
    """The store operations of a store made of other stores (the fallback's SQLite and
    memory, the canary's stable and canary stores): reads add up the parts, a change to
    one task goes to the part that holds it. Capabilities that only one part has are
    not offered by the whole."""

    @abc.abstractmethod
    def operation_parts(self) -> Sequence[StoreOperations]:
        """The parts to ask now, the durable one first."""

    async def initialize(self) -> InitFigures:
        results = [await part.initialize() for part in self.operation_parts()]
        return results[0]

    async def count_tasks(
        self, *, statuses: Sequence[TaskStatus] | None = None, task_type: str | None = None
    ) -> int:
        return sum(
            [
                await part.count_tasks(statuses=statuses, task_type=task_type)
                for part in self.operation_parts()
            ]
        )

    async def present(self, ids: Collection[str]) -> set[str]:
        found: set[str] = set()
        for part in self.operation_parts():
            found |= await part.present(ids)
        return found

    async def queue_figures(self, *, now: float, window: float) -> QueueFigures:
        from taskyard.framework.figures import merge_figures

        return merge_figures(
            [await part.queue_figures(now=now, window=window) for part in self.operation_parts()]
        )

    async def list_workers(self) -> list[WorkerRecord]:
        found: dict[str, WorkerRecord] = {}  # a worker heartbeats into every part: once
        for part in self.operation_parts():
            for worker in await part.list_workers():
                found.setdefault(worker.worker_id, worker)
        return sorted(found.values(), key=lambda worker: (worker.started_at, worker.worker_id))

    async def request_worker_stop(self, worker_ids: Collection[str]) -> list[str]:
        asked: set[str] = set()
        for part in self.operation_parts():
            asked |= set(await part.request_worker_stop(worker_ids))
        return sorted(asked)

    async def retry(self, task_id: str, *, now: float) -> TaskRecord:
        parts = self.operation_parts()
        for part in parts:
            if await part.present([task_id]):
                return await part.retry(task_id, now=now)
        return await parts[0].retry(task_id, now=now)  # raises TaskNotFound

    async def count_finished(
        self, *, statuses: Sequence[TaskStatus], before: float, task_type: str | None = None
    ) -> int:
        return sum(
            [
                await part.count_finished(statuses=statuses, before=before, task_type=task_type)
                for part in self.operation_parts()
            ]
        )

    async def delete_finished(
        self,
        *,
        statuses: Sequence[TaskStatus],
        before: float,
        task_type: str | None = None,
        limit: int,
    ) -> int:
        deleted = 0
        for part in self.operation_parts():
            if deleted < limit:
                deleted += await part.delete_finished(
                    statuses=statuses, before=before, task_type=task_type, limit=limit - deleted
                )
        return deleted

    async def forget_workers(self, *, silent_since: float, dry_run: bool = False) -> list[str]:
        forgotten: list[str] = []
        for part in self.operation_parts():
            forgotten += await part.forget_workers(silent_since=silent_since, dry_run=dry_run)
        return sorted(set(forgotten))

    async def self_test(self) -> dict[str, Any]:
        return await self.operation_parts()[0].self_test()

    async def check_integrity(self, *, quick: bool = False) -> IntegrityFindings:
        storage: list[str] = []
        invariants: list[str] = []
        for part in self.operation_parts():
            findings = await part.check_integrity(quick=quick)
            storage += [line for line in findings.storage if line != "ok"]
            invariants += findings.invariants
        return IntegrityFindings(storage or ["ok"], invariants)

    async def optimize(self) -> list[str]:
        done: list[str] = []
        for part in self.operation_parts():
            done += [step for step in await part.optimize() if step not in done]
        return done

    async def storage_info(self) -> StorageInfo:
        return await self.operation_parts()[0].storage_info()
