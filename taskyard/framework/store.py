"""The narrow storage interface the worker engine runs on.

A backend is a :class:`TaskStore`: it only stores. Retries, backoff, timeouts,
priorities, leases and cancellation are decided by the engine
(:mod:`taskyard.framework.engine`), once, for every backend.

Every method may raise :class:`~taskyard.framework.errors.StoreError` (or a
subclass); stores translate their driver's errors into those at this boundary.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskyard.framework.errors import OperationNotSupported
from taskyard.framework.models import Outcome, TaskRecord, TaskStatus

if TYPE_CHECKING:
    from taskyard.framework.schedules import ScheduleRecord


class Capability:
    """Names for what a store can do beyond the contract's core."""

    DURABLE = "durable"
    """Tasks survive a restart of the process."""
    MULTI_PROCESS = "multi-process"
    """Several processes may schedule and run tasks on the same store."""
    FILE_MAINTENANCE = "file-maintenance"
    """The store is a file with a write-ahead log: checkpoint and vacuum apply
    (:class:`~taskyard.framework.operations.StoreOperations`)."""
    FILE_BACKUP = "file-backup"
    """The store can be copied online into a file, checked there, and restored from it."""
    TABLE_MAINTENANCE = "table-maintenance"
    """The store is tables on a database server that reclaims dead rows in place:
    :meth:`~taskyard.framework.operations.StoreOperations.vacuum_tables` applies."""
    TABLE_STATISTICS = "table-statistics"
    """The store reports its tables' live and dead rows and sizes
    (:meth:`~taskyard.framework.operations.StoreOperations.table_statistics`)."""
    WORKFLOWS = "workflows"
    """The store keeps dependencies (``depends_on``) and releases a waiting task in the
    transaction that finishes its last dependency (:mod:`taskyard.framework.workflows`)."""
    CONCURRENCY_KEYS = "concurrency-keys"
    """The store's claim honours concurrency limits per key, across processes."""
    CLAIM_ON_ADD = "claim-on-add"
    """:meth:`TaskStore.add` stores a record given as ``running`` (attempt 1, with its
    lease token, expiry and worker id) as claimed, in the write that adds it: the engine
    claims a task it schedules for its own free slot without a second write."""


class TaskStore(abc.ABC):
    """Storage for tasks. Implementations keep this contract; the engine does the rest."""

    capabilities: frozenset[str] = frozenset()

    releases: int = 0
    """How many waiting tasks this store object has released to queued so far (the
    engine wakes its claim loop when this grows)."""

    held_back: bool = False
    """Whether the last claim left due tasks behind because their concurrency keys were
    at their limit (the engine then waits for a slot to free instead of claiming again
    at once)."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare the store (connect, create or check the schema). Called once by start()."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Called once by stop(); must be safe to call twice."""

    @abc.abstractmethod
    async def add(self, records: Sequence[TaskRecord]) -> list[str]:
        """Store new queued tasks, durably once this returns.

        Returns the id each record ended up with, in order: a record whose
        ``idempotency_key`` is already known yields the existing task's id and stores
        nothing. ``record.seq`` is assigned by the store.

        A record with ``depends_on`` (stores with :attr:`Capability.WORKFLOWS`) is stored
        ``waiting`` while any of those tasks is unfinished, ``queued`` when all have
        finished, or ``cancelled`` when one ended failed or cancelled and its policy says
        so (:func:`~taskyard.framework.workflows.settles`). A dependency must be stored
        already or come earlier in ``records``; otherwise DependencyError is raised and
        nothing of ``records`` is stored.
        """

    @abc.abstractmethod
    async def import_records(self, records: Sequence[TaskRecord]) -> list[bool]:
        """Store tasks exactly as given (status, attempts, result, times included), for
        moves between stores and imports. A record whose id is already stored is left
        alone. Returns, per record, whether it was stored. Running records are stored
        as queued (their lease belongs to no one here)."""

    @abc.abstractmethod
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
        """Atomically take up to ``limit`` queued tasks whose ``run_after <= now`` (and,
        when ``types`` is given, whose type is one of them: a worker claims only what it
        can run).

        A task with a ``concurrency_key`` is taken only while fewer than
        :func:`~taskyard.framework.workflows.concurrency_limit` tasks with that key are
        running (counting the ones this claim takes), decided inside the claim's
        transaction; tasks behind it with other keys (or none) are still taken.

        Order: lowest priority value first, then scheduling order (``seq``). Each
        claimed task becomes RUNNING, its ``attempts`` grows by one, ``started_at`` is
        set, and it gets a fresh ``lease_token`` valid until ``now + lease_seconds``.
        No task is handed to two claimers while its lease holds.
        """

    @abc.abstractmethod
    async def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Apply each outcome if the task still holds the outcome's lease token.

        Returns, per outcome, whether it was applied. A task whose lease was taken
        away (expired and rescued, or cancelled) is left untouched. A task that ends here
        settles its waiting dependents in the same transaction (:meth:`add`).
        """

    @abc.abstractmethod
    async def renew_leases(
        self, leases: Sequence[tuple[str, str]], *, until: datetime
    ) -> list[str]:
        """Extend the leases ``(task_id, lease_token)`` to ``until``.

        Returns the ids whose lease is no longer held (cancelled, or rescued by
        another worker): the engine stops those handlers.
        """

    @abc.abstractmethod
    async def cancel(self, task_id: str, *, now: datetime) -> TaskStatus | None:
        """Cancel a waiting, queued or running task (its waiting dependents settle in the
        same transaction).

        Returns the status the task had before (QUEUED or RUNNING) when it was
        cancelled, the terminal status when it had already finished, or None for an
        unknown id. A running task's lease is revoked, so its worker's result is
        discarded.
        """

    @abc.abstractmethod
    async def get(self, task_id: str) -> TaskRecord | None:
        """Return a copy of the task, or None."""

    @abc.abstractmethod
    async def recover_expired(self, *, now: datetime) -> list[TaskRecord]:
        """Return tasks whose lease expired before ``now`` to QUEUED, or to FAILED when
        their attempts are exhausted; only tasks still holding the expired token.

        Returns the recovered tasks as they are now.
        """

    @abc.abstractmethod
    async def next_due(self, types: Collection[str] | None = None) -> datetime | None:
        """The earliest ``run_after`` of a queued task (of one of ``types``, when given),
        or None when nothing is queued."""

    # -- workflows (stores with Capability.WORKFLOWS; the defaults hold nothing) -----------

    async def dependencies(self, task_id: str) -> list[str]:
        """The ids ``task_id`` depends on, in scheduling order."""
        return []

    async def dependents(self, task_id: str) -> list[str]:
        """The ids that depend on ``task_id``, in scheduling order."""
        return []

    async def dependency_results(self, task_id: str) -> dict[str, Any]:
        """The result of each task ``task_id`` depends on, by id (one read)."""
        return {}

    async def workflow_tasks(self, workflow_id: str) -> list[TaskRecord]:
        """The tasks of a workflow, in scheduling order, each with ``depends_on`` filled."""
        return []

    async def workflow_ids(self, *, limit: int = 50) -> list[str]:
        """The newest workflows' ids, newest first."""
        return []

    async def record_worker(self, worker_id: str, info: dict[str, object]) -> bool:
        """Record that ``worker_id`` is alive (a heartbeat), with ``info`` about it.
        Returns True when the worker was asked to stop (``taskyard workers stop``:
        ``StoreOperations.request_worker_stop``). Stores that cannot be shared by
        processes need not keep anything (and return False)."""
        return False

    async def forget_worker(self, worker_id: str) -> None:  # noqa: B027
        """The worker stopped cleanly."""

    async def health(self) -> tuple[str, str]:
        """``(state, reason)``: ``ok``, ``degraded`` or ``down``. The default checks
        that the store answers a read."""
        try:
            await self.count_by_status()
        except Exception as exc:
            return "down", str(exc)
        return "ok", ""

    async def health_details(self) -> dict[str, object]:
        """Figures that explain :meth:`health`, added to the manager's health report (a
        fallback store: ``held_in_memory``, the unfinished tasks only memory holds). The
        default has none."""
        return {}

    def set_wakeup(self, wake: Callable[[], None]) -> None:  # noqa: B027 - optional hook
        """Stores that hear of writes by other processes (PostgreSQL's LISTEN) call
        ``wake`` when they do, so the engine claims at once instead of at its next poll.
        Called by the engine at start; the default ignores it."""

    async def intake_paused(self) -> bool:
        """Whether an operator paused the intake of the workers on this store
        (:meth:`~taskyard.framework.operations.StoreOperations.set_intake_paused`): the
        engine claims nothing while it is. Cheap; the default: never paused."""
        return False

    async def changed_elsewhere(self) -> bool:
        """Whether another process may have written since the last call (cheap).

        Single-process stores return False; the engine then relies on its own wake-ups.
        """
        return False

    @abc.abstractmethod
    async def count_by_status(self) -> dict[TaskStatus, int]:
        """How many tasks are in each status."""

    async def snapshot(
        self, statuses: Sequence[TaskStatus] | None = None, *, page: int = 10_000
    ) -> list[TaskRecord]:
        """Every task (of ``statuses``, when given) as copies, in ``list_tasks`` order: for
        exports and moves to another store. Consistent while nothing else writes; the
        default pages through ``list_tasks``, a store may answer in one read."""
        records: list[TaskRecord] = []
        seen: set[str] = set()
        offset = 0
        while True:
            batch = await self.list_tasks(statuses=statuses, limit=page, offset=offset)
            offset += len(batch)
            for record in batch:
                if record.id not in seen:
                    seen.add(record.id)
                    records.append(record)
            if len(batch) < page:
                return records

    @abc.abstractmethod
    async def list_tasks(
        self,
        *,
        statuses: Sequence[TaskStatus] | None = None,
        task_type: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[TaskRecord]:
        """Tasks in scheduling order, optionally filtered."""

    # -- periodic schedules (taskyard.framework.schedules decides; the store keeps state) --
    #
    # A store keeps each schedule's definition, next fire time, last fire and enabled flag,
    # durably when the store is durable. Times compare to the microsecond. The defaults
    # refuse (OperationNotSupported): every shipped store implements these, and the
    # contract suite's schedules part holds them to the same behaviour.

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        """The schedule named ``name`` as stored, or None."""
        raise OperationNotSupported(f"{type(self).__name__} keeps no periodic schedules")

    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""
        raise OperationNotSupported(f"{type(self).__name__} keeps no periodic schedules")

    async def insert_schedule(self, record: ScheduleRecord) -> bool:
        """Store a new schedule. Returns False, storing nothing, when one of that name
        exists (another process declared it first)."""
        raise OperationNotSupported(f"{type(self).__name__} keeps no periodic schedules")

    async def update_schedule(
        self, record: ScheduleRecord, *, expected_next: datetime | None = None
    ) -> bool:
        """Overwrite a stored schedule's definition, ``enabled``, ``next_fire_at`` and
        ``updated_at`` (its last fire stays). With ``expected_next``, only while its
        stored next fire time is that one. Returns whether it was updated (False: no
        such schedule, or the condition failed)."""
        raise OperationNotSupported(f"{type(self).__name__} keeps no periodic schedules")

    async def remove_schedule(self, name: str) -> bool:
        """Delete the schedule; its tasks stay. Returns whether it existed."""
        raise OperationNotSupported(f"{type(self).__name__} keeps no periodic schedules")

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
        """Fire schedule ``name``, atomically: when it is enabled and its stored next fire
        time is ``expected_next``, add ``records`` (as :meth:`add` does: a known
        idempotency key yields the existing task), set its next fire time to
        ``next_fire_at`` and, when ``last_fire_at`` is given, its last fire and last task
        (the last record's id) — all in one transaction, or nothing. Returns the tasks'
        ids, or None when the condition failed (another process fired, paused, removed or
        changed it since it was read): nothing was written then."""
        raise OperationNotSupported(f"{type(self).__name__} keeps no periodic schedules")
