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
from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskyard.framework.errors import InvalidQuery, OperationNotSupported
from taskyard.framework.models import TaskRecord, TaskStatus, dumps, to_epoch
from taskyard.framework.store import TaskStore

if TYPE_CHECKING:
    from taskyard.framework.schedules import ScheduleRecord

__all__ = [
    "CANCELLABLE",
    "FINISHED",
    "RETRYABLE",
    "STATUSES",
    "AuditEntry",
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
    "TaskFilter",
    "TaskPage",
    "WorkerRecord",
    "ascii_lower",
    "bucket_of",
    "no_progress",
]

STATUSES = tuple(str(status) for status in TaskStatus)
FINISHED = ("completed", "failed", "cancelled")
RETRYABLE = (TaskStatus.FAILED, TaskStatus.CANCELLED)
"""The statuses :meth:`StoreOperations.retry` and :meth:`~StoreOperations.retry_matching`
queue again."""
CANCELLABLE = (TaskStatus.QUEUED, TaskStatus.RUNNING)
"""The statuses :meth:`~StoreOperations.cancel_matching` cancels."""
PURGEABLE = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
"""The statuses :meth:`~StoreOperations.purge_matching` deletes."""
MAX_FILTER_TEXT = 200
"""The longest text a :class:`TaskFilter` searches for."""

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


def ascii_lower(text: str) -> str:
    """``text`` with only the ASCII letters lowered: how every store compares the text of
    a :class:`TaskFilter` (SQLite's ``LIKE`` folds exactly these)."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks a page, a count or a bulk action is about; every field narrows it (an
    empty filter: every task). :meth:`matches` is the meaning every store implements."""

    statuses: tuple[TaskStatus, ...] | None = None
    """Any of these statuses (None: any status)."""
    task_type: str | None = None
    """Exactly this type."""
    since: float | None = None
    """Created at or after this time."""
    until: float | None = None
    """Created before this time."""
    text: str | None = None
    """Found in the payload's JSON text or in the error, ignoring ASCII case."""
    ids: tuple[str, ...] | None = None
    """Only these tasks (an action on one task, or on a selection)."""

    def __post_init__(self) -> None:
        if self.text is not None and (len(self.text) > MAX_FILTER_TEXT or "\x00" in self.text):
            raise InvalidQuery(
                f"the text to search for has {len(self.text)} characters; search for at "
                f"most {MAX_FILTER_TEXT} (and no NUL character)"
            )
        if self.statuses is not None:
            object.__setattr__(self, "statuses", tuple(TaskStatus(s) for s in self.statuses))

    def narrowed(self, allowed: Sequence[TaskStatus]) -> TaskFilter:
        """This filter limited to the ``allowed`` statuses (a bulk action's)."""
        wanted = tuple(s for s in (self.statuses or allowed) if s in allowed)
        return TaskFilter(wanted, self.task_type, self.since, self.until, self.text, self.ids)

    def matches(self, record: TaskRecord) -> bool:
        """Whether ``record`` is one of the tasks this filter names."""
        if self.statuses is not None and record.status not in self.statuses:
            return False
        if self.task_type is not None and record.type != self.task_type:
            return False
        if self.ids is not None and record.id not in self.ids:
            return False
        created = to_epoch(record.created_at)
        if self.since is not None and created < self.since:
            return False
        if self.until is not None and created >= self.until:
            return False
        if self.text:
            needle = ascii_lower(self.text)
            payload = record.payload_json or dumps(record.payload)
            if needle not in ascii_lower(payload) and needle not in ascii_lower(record.error or ""):
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "statuses": None if self.statuses is None else [str(s) for s in self.statuses],
            "task_type": self.task_type,
            "since": self.since,
            "until": self.until,
            "text": self.text,
            "ids": None if self.ids is None else list(self.ids),
        }


def bucket_of(finished: float, *, since: float, until: float, buckets: int) -> int | None:
    """The slice of :meth:`StoreOperations.finished_series` a finish time falls in."""
    if not since <= finished < until:
        return None
    return min(int((finished - since) * buckets / (until - since)), buckets - 1)


def page_key(record: TaskRecord) -> tuple[float, str]:
    """The order of :meth:`StoreOperations.page_tasks`, newest first: ``created_at``
    then ``id``, both descending."""
    return (to_epoch(record.created_at), record.id)


def encode_cursor(key: tuple[float, str]) -> str:
    """The cursor that continues after the task of ``key``."""
    return f"{key[0]!r}~{key[1]}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The key a cursor of :func:`encode_cursor` holds; InvalidQuery for anything else."""
    created, _, task_id = cursor.partition("~")
    try:
        seconds = float(created)
    except ValueError:
        seconds = float("nan")
    if not task_id or seconds != seconds or len(cursor) > 200:
        raise InvalidQuery(f"{cursor[:60]!r} is not a page cursor; start again from the first page")
    return seconds, task_id


@dataclass(frozen=True)
class TaskPage:
    """A page of :meth:`StoreOperations.page_tasks`."""

    tasks: list[TaskRecord]
    next_cursor: str | None
    """Pass as ``after`` for the next (older) page; None: this was the last."""


@dataclass(frozen=True)
class AuditEntry:
    """One operator action, as :meth:`StoreOperations.record_action` keeps it."""

    at: float
    actor: str
    """Who did it (the dashboard's token role, ``cli``...)."""
    action: str
    """``retry``, ``cancel``, ``purge``, ``pause``, ``resume``..."""
    target: str
    """A task id, or a description of the filter a bulk action ran on."""
    count: int = 1
    """Tasks changed."""
    detail: dict[str, Any] = field(default_factory=dict)


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

    @abc.abstractmethod
    async def page_tasks(
        self, task_filter: TaskFilter, *, limit: int, after: str | None = None
    ) -> TaskPage:
        """Up to ``limit`` tasks that ``task_filter`` matches, newest first (by
        ``created_at``, then id, both descending), starting after the cursor ``after``
        of the previous page. Keyset paging: a store reads from an index on the order
        and stops once the page is full, never skipping rows by offset. Raises
        InvalidQuery for a cursor it did not make."""

    @abc.abstractmethod
    async def count_matching(self, task_filter: TaskFilter) -> int:
        """How many tasks ``task_filter`` matches (the count a bulk action confirms)."""

    @abc.abstractmethod
    async def finished_series(
        self, *, since: float, until: float, buckets: int
    ) -> list[dict[str, int]]:
        """Tasks that finished completed or failed in ``[since, until)``, by
        ``finished_at``, in ``buckets`` equal slices, oldest first: one
        ``{"completed": n, "failed": n}`` per slice (throughput and failures over time)."""

    # -- changing tasks ---------------------------------------------------------------------

    @abc.abstractmethod
    async def retry_matching(self, task_filter: TaskFilter, *, now: float, limit: int) -> int:
        """:meth:`retry` up to ``limit`` of the failed or cancelled tasks that
        ``task_filter`` matches, in one short transaction. Returns how many (fewer than
        ``limit``: none are left)."""

    @abc.abstractmethod
    async def cancel_matching(self, task_filter: TaskFilter, *, now: float, limit: int) -> int:
        """Cancel up to ``limit`` of the queued or running tasks that ``task_filter``
        matches, in one short transaction, as ``cancel`` does (a running task's lease
        is revoked). Returns how many (fewer than ``limit``: none are left)."""

    @abc.abstractmethod
    async def purge_matching(self, task_filter: TaskFilter, *, limit: int) -> int:
        """Delete up to ``limit`` of the finished tasks ``task_filter`` matches, in one
        short transaction. Returns how many (fewer than ``limit``: none are left)."""

    # -- intake and the audit log -----------------------------------------------------------

    @abc.abstractmethod
    async def set_intake_paused(self, paused: bool) -> None:
        """Pause (or resume) the intake of every worker on this store: while paused,
        workers claim nothing (they read :meth:`intake_paused` before claiming);
        scheduling goes on and running tasks finish. Kept in the store, so it outlives
        processes."""

    @abc.abstractmethod
    async def record_action(self, entry: AuditEntry) -> None:
        """Add an operator's action to the store's audit log."""

    @abc.abstractmethod
    async def list_actions(self, *, limit: int = 100) -> list[AuditEntry]:
        """The audit log, newest first, up to ``limit`` entries."""

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

    @abc.abstractmethod
    def schedule_part(self) -> TaskStore:
        """The one part that keeps the periodic schedules (and fires them)."""

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        return await self.schedule_part().get_schedule(name)

    async def list_schedules(self) -> list[ScheduleRecord]:
        return await self.schedule_part().list_schedules()

    async def insert_schedule(self, record: ScheduleRecord) -> bool:
        return await self.schedule_part().insert_schedule(record)

    async def update_schedule(
        self, record: ScheduleRecord, *, expected_next: datetime | None = None
    ) -> bool:
        return await self.schedule_part().update_schedule(record, expected_next=expected_next)

    async def remove_schedule(self, name: str) -> bool:
        return await self.schedule_part().remove_schedule(name)

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
        return await self.schedule_part().fire_schedule(
            name,
            expected_next=expected_next,
            records=records,
            next_fire_at=next_fire_at,
            last_fire_at=last_fire_at,
            now=now,
        )

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

    async def page_tasks(
        self, task_filter: TaskFilter, *, limit: int, after: str | None = None
    ) -> TaskPage:
        key = None if after is None else decode_cursor(after)
        merged: list[TaskRecord] = []
        more = False
        for part in self.operation_parts():
            page = await part.page_tasks(task_filter, limit=limit, after=after)
            merged += page.tasks
            more = more or page.next_cursor is not None
        merged.sort(key=page_key, reverse=True)
        if key is not None:
            merged = [record for record in merged if page_key(record) < key]
        tasks = merged[:limit]
        more = more or len(merged) > limit
        return TaskPage(tasks, encode_cursor(page_key(tasks[-1])) if more and tasks else None)

    async def count_matching(self, task_filter: TaskFilter) -> int:
        return sum([await part.count_matching(task_filter) for part in self.operation_parts()])

    async def finished_series(
        self, *, since: float, until: float, buckets: int
    ) -> list[dict[str, int]]:
        series = [{"completed": 0, "failed": 0} for _ in range(buckets)]
        for part in self.operation_parts():
            found = await part.finished_series(since=since, until=until, buckets=buckets)
            for total, counts in zip(series, found, strict=True):
                for status, count in counts.items():
                    total[status] += count
        return series

    async def retry_matching(self, task_filter: TaskFilter, *, now: float, limit: int) -> int:
        done = 0
        for part in self.operation_parts():
            if done < limit:
                done += await part.retry_matching(task_filter, now=now, limit=limit - done)
        return done

    async def cancel_matching(self, task_filter: TaskFilter, *, now: float, limit: int) -> int:
        done = 0
        for part in self.operation_parts():
            if done < limit:
                done += await part.cancel_matching(task_filter, now=now, limit=limit - done)
        return done

    async def purge_matching(self, task_filter: TaskFilter, *, limit: int) -> int:
        done = 0
        for part in self.operation_parts():
            if done < limit:
                done += await part.purge_matching(task_filter, limit=limit - done)
        return done

    async def set_intake_paused(self, paused: bool) -> None:
        for part in self.operation_parts():
            await part.set_intake_paused(paused)

    async def intake_paused(self) -> bool:
        return any([await part.intake_paused() for part in self.operation_parts()])

    async def record_action(self, entry: AuditEntry) -> None:
        await self.operation_parts()[0].record_action(entry)

    async def list_actions(self, *, limit: int = 100) -> list[AuditEntry]:
        return await self.operation_parts()[0].list_actions(limit=limit)

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
