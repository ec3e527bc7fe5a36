"""The in-memory backend: the old behaviour (nothing survives the process) and the public
test double. State is inspectable: ``store.tasks``, ``store.reset()``. It offers the
store operations too (:class:`~taskyard.framework.operations.StoreOperations`), answered
from the records it holds."""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from copy import deepcopy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from taskyard.framework.engine import EngineConfig, TaskEngine
from taskyard.framework.errors import (
    DependencyError,
    IntegrityError,
    OperationRefused,
    TaskNotFound,
)
from taskyard.framework.events import EventBus
from taskyard.framework.figures import figures_from_records
from taskyard.framework.models import (
    Outcome,
    TaskRecord,
    TaskStatus,
    detached,
    dumps,
    keep_tracebacks,
    loads,
    new_task_id,
    to_epoch,
    utcnow,
)
from taskyard.framework.operations import (
    CANCELLABLE,
    PURGEABLE,
    RETRYABLE,
    AuditEntry,
    InitFigures,
    IntegrityFindings,
    QueueFigures,
    StorageInfo,
    StoreOperations,
    TaskFilter,
    TaskPage,
    WorkerRecord,
    bucket_of,
    decode_cursor,
    encode_cursor,
    page_key,
)
from taskyard.framework.runs import RunRegistry
from taskyard.framework.schedules import ScheduleRecord
from taskyard.framework.store import Capability
from taskyard.framework.workflows import (
    cancelled_because,
    check_batch,
    concurrency_limit,
    settles,
)


def _schedule_copy(record: ScheduleRecord) -> ScheduleRecord:
    return replace(
        record, schedule=replace(record.schedule, payload=deepcopy(record.schedule.payload))
    )


class InMemoryStore(StoreOperations):
    """Tasks in a dict, due tasks in a heap by (priority, seq), delayed ones by run_after.

    Records handed out are copies, and payloads are decoded from their JSON text, so a
    handler sees exactly what a durable store would give it.
    """

    capabilities = frozenset(
        {Capability.WORKFLOWS, Capability.CONCURRENCY_KEYS, Capability.CLAIM_ON_ADD}
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every task."""
        self.tasks: dict[str, TaskRecord] = {}
        self._by_key: dict[str, str] = {}
        self._ready: list[tuple[int, int, str]] = []  # due tasks without a key
        self._keyed: dict[str, list[tuple[int, int, str]]] = {}  # due tasks per key
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = itertools.count(1)
        self._children: dict[str, list[str]] = {}  # dependency -> its dependents
        self._unfinished: dict[str, int] = {}  # waiting task -> dependencies not finished
        self._running_keys: Counter[str] = Counter()  # concurrency key -> running tasks
        self.releases = 0
        self.workers: dict[str, WorkerRecord] = {}
        """The heartbeat records of the workers of this process, by id."""
        self.paused = False
        self.audit: list[AuditEntry] = []
        self.schedules: dict[str, ScheduleRecord] = {}
        """The periodic schedules, by name (kept for this process only: each process
        with its own in-memory store fires its own schedules)."""

    def __repr__(self) -> str:
        return f"<InMemoryStore tasks={len(self.tasks)}>"

    def _enqueue(self, record: TaskRecord) -> None:
        heapq.heappush(self._delayed, (to_epoch(record.run_after), record.seq, record.id))

    async def add(self, records: Sequence[TaskRecord]) -> list[str]:
        check_batch(records)
        batch = set()
        for record in records:  # refuse before storing anything
            for parent in record.depends_on:
                if parent not in self.tasks and parent not in batch:
                    raise DependencyError(
                        f"task {record.id} depends on {parent}, which this store does not "
                        "hold; schedule it first"
                    )
            batch.add(record.id)
        ids: list[str] = []
        for record in records:
            key = record.idempotency_key
            if key is not None and key in self._by_key:
                ids.append(self._by_key[key])
                continue
            if record.id in self.tasks:  # the same task again (an import, a retried call)
                ids.append(record.id)
                continue
            stored = record.copy()
            if stored.payload_json is None:
                stored.payload_json = dumps(stored.payload)
            # the store's own copy of the payload: the caller may change theirs
            stored.payload = detached(stored.payload, stored.payload_json)
            stored.seq = next(self._seq)
            record.seq = stored.seq
            self.tasks[stored.id] = stored
            if key is not None:
                self._by_key[key] = stored.id
            if stored.depends_on:
                self._wait(stored)
            if stored.status is TaskStatus.QUEUED:
                self._enqueue(stored)
            ids.append(stored.id)
        return ids

    def _wait(self, record: TaskRecord) -> None:
        """Link a new task to its dependencies: waiting, queued (all finished) or
        cancelled (one failed and its policy says so)."""
        unfinished = 0
        for parent_id in record.depends_on:
            self._children.setdefault(parent_id, []).append(record.id)
            parent = self.tasks[parent_id]
            if not parent.status.is_terminal:
                unfinished += 1
            elif settles(parent.status, record.on_dependency_failure) is not None:
                record.status = TaskStatus.CANCELLED
                record.finished_at = record.updated_at
                record.error = cancelled_because(parent_id, parent.status)
                return
        if unfinished:
            record.status = TaskStatus.WAITING
            self._unfinished[record.id] = unfinished

    def _settle(self, task_id: str, now: datetime) -> None:
        """``task_id`` just finished: release or cancel its waiting dependents, cascading.
        Costs one step per dependent."""
        work = [task_id]
        while work:
            parent_id = work.pop()
            parent_status = self.tasks[parent_id].status
            for child_id in self._children.get(parent_id, ()):
                child = self.tasks.get(child_id)
                if child is None or child.status is not TaskStatus.WAITING:
                    continue
                if settles(parent_status, child.on_dependency_failure) is not None:
                    self._unfinished.pop(child_id, None)
                    child.status = TaskStatus.CANCELLED
                    child.finished_at = child.updated_at = now
                    child.error = cancelled_because(parent_id, parent_status)
                    work.append(child_id)
                    continue
                left = self._unfinished[child_id] - 1
                if left:
                    self._unfinished[child_id] = left
                    continue
                del self._unfinished[child_id]
                child.status = TaskStatus.QUEUED
                child.updated_at = now
                self._enqueue(child)
                self.releases += 1

    def _left_running(self, record: TaskRecord) -> None:
        if record.concurrency_key is not None:
            self._running_keys[record.concurrency_key] -= 1
            if self._running_keys[record.concurrency_key] <= 0:
                del self._running_keys[record.concurrency_key]

    async def import_records(self, records: Sequence[TaskRecord]) -> list[bool]:
        stored: list[bool] = []
        for record in records:
            key = record.idempotency_key
            if record.id in self.tasks or (key is not None and key in self._by_key):
                stored.append(False)
                continue
            copy = record.copy()
            copy.seq = next(self._seq)
            if copy.status is TaskStatus.RUNNING:
                copy.status = TaskStatus.QUEUED
            if copy.status is TaskStatus.WAITING:
                # its dependencies that are not here finished before the export (a
                # finished task is not exported with the unfinished ones)
                copy.depends_on = tuple(p for p in copy.depends_on if p in self.tasks)
                copy.status = TaskStatus.QUEUED
            else:
                copy.depends_on = ()
            copy.lease_token = copy.lease_expires_at = copy.worker_id = None
            if copy.payload_json is None:
                copy.payload_json = dumps(copy.payload)
            copy.payload = detached(copy.payload, copy.payload_json)
            copy.result = detached(copy.result, None)
            self.tasks[copy.id] = copy
            if key is not None:
                self._by_key[key] = copy.id
            if copy.depends_on:
                self._wait(copy)
            if copy.status is TaskStatus.QUEUED:
                self._enqueue(copy)
            stored.append(True)
        return stored

    def detach(self, task_ids: Collection[str]) -> list[TaskRecord]:
        """Remove these tasks from the store and return them (a move elsewhere)."""
        moved = [self.tasks.pop(task_id) for task_id in task_ids if task_id in self.tasks]
        for record in moved:
            if record.idempotency_key is not None:
                self._by_key.pop(record.idempotency_key, None)
            self._children.pop(record.id, None)
            self._unfinished.pop(record.id, None)
        return moved

    def _promote(self, now: datetime) -> None:
        horizon = to_epoch(now)
        while self._delayed and self._delayed[0][0] <= horizon:
            _, seq, task_id = heapq.heappop(self._delayed)
            record = self.tasks.get(task_id)
            if record is not None and record.status is TaskStatus.QUEUED:
                key = record.concurrency_key
                heap = self._ready if key is None else self._keyed.setdefault(key, [])
                heapq.heappush(heap, (record.priority, seq, task_id))

    def _top(self, heap: list[tuple[int, int, str]]) -> tuple[int, int, str] | None:
        """The heap's first entry that is still a queued task (stale ones are dropped)."""
        while heap:
            entry = heap[0]
            record = self.tasks.get(entry[2])
            if record is not None and record.status is TaskStatus.QUEUED and record.seq == entry[1]:
                return entry
            heapq.heappop(heap)  # cancelled, claimed, or re-queued under another entry
        return None

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
        """Tasks without a key come from one heap, keyed ones from a heap per key; each
        pick takes the best head among the unkeyed heap and the heaps of keys below
        their limit, so a backlog behind a key at its limit is never walked."""
        self._promote(now)
        claimed: list[TaskRecord] = []
        skipped: list[tuple[list[tuple[int, int, str]], tuple[int, int, str]]] = []
        expires = now + timedelta(seconds=lease_seconds)
        token = new_task_id()  # one lease token per claim, as the SQLite store does
        held_back = False
        while len(claimed) < limit:
            best, source = self._top(self._ready), self._ready
            for key, heap in list(self._keyed.items()):
                head = self._top(heap)
                if head is None:
                    del self._keyed[key]
                    continue
                if best is not None and head >= best:
                    continue
                head_type = self.tasks[head[2]].type
                if self._running_keys[key] >= concurrency_limit(head_type, key, limits or {}):
                    held_back = True
                    continue
                best, source = head, heap
            if best is None:
                break
            heapq.heappop(source)
            record = self.tasks[best[2]]
            if types is not None and record.type not in types:
                skipped.append((source, best))
                continue
            if record.concurrency_key is not None:
                self._running_keys[record.concurrency_key] += 1
            record.status = TaskStatus.RUNNING
            record.attempts += 1
            record.started_at = now
            record.updated_at = now
            record.worker_id = worker_id
            record.lease_token = token
            record.lease_expires_at = expires
            claimed.append(self._copy_out(record))
        self.held_back = held_back
        for heap, entry in skipped:
            heapq.heappush(heap, entry)
            if heap is not self._ready:
                self._keyed.setdefault(self.tasks[entry[2]].concurrency_key or "", heap)
        return claimed

    def _copy_out(self, record: TaskRecord) -> TaskRecord:
        """A copy whose payload and result share nothing mutable with the store's, so a
        handler or a caller mutating them changes nothing here (as with a durable store)."""
        copy = record.copy()
        copy.payload = detached(record.payload, record.payload_json)
        copy.result = detached(record.result, None)
        return copy

    def _holds(self, task_id: str, token: str) -> TaskRecord | None:
        record = self.tasks.get(task_id)
        if record is None or record.status is not TaskStatus.RUNNING or record.lease_token != token:
            return None
        return record

    async def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        applied: list[bool] = []
        for outcome in outcomes:
            record = self._holds(outcome.task_id, outcome.lease_token)
            if record is None:
                applied.append(False)
                continue
            self._left_running(record)
            record.status = outcome.status
            record.updated_at = outcome.finished_at
            if outcome.traceback is not None:
                record.tracebacks = keep_tracebacks([*record.tracebacks, outcome.traceback])
            record.lease_token = None
            record.lease_expires_at = None
            record.worker_id = None
            if outcome.status is TaskStatus.QUEUED:
                if outcome.release:
                    record.attempts -= 1
                else:
                    record.error = outcome.error
                record.run_after = outcome.run_after or outcome.finished_at
                self._enqueue(record)
            else:
                record.finished_at = outcome.finished_at
                record.error = outcome.error
                record.result = _stored_result(outcome)
                self._settle(record.id, outcome.finished_at)
            applied.append(True)
        return applied

    async def renew_leases(
        self, leases: Sequence[tuple[str, str]], *, until: datetime
    ) -> list[str]:
        lost: list[str] = []
        for task_id, token in leases:
            record = self._holds(task_id, token)
            if record is None:
                lost.append(task_id)
            else:
                record.lease_expires_at = until
        return lost

    async def cancel(self, task_id: str, *, now: datetime) -> TaskStatus | None:
        record = self.tasks.get(task_id)
        if record is None:
            return None
        before = record.status
        if before.is_terminal:
            return before
        if before is TaskStatus.RUNNING:
            self._left_running(record)
        self._unfinished.pop(task_id, None)
        record.status = TaskStatus.CANCELLED
        record.updated_at = now
        record.finished_at = now
        record.lease_token = None
        record.lease_expires_at = None
        self._settle(task_id, now)
        return before

    async def get(self, task_id: str) -> TaskRecord | None:
        record = self.tasks.get(task_id)
        return None if record is None else self._copy_out(record)

    async def recover_expired(self, *, now: datetime) -> list[TaskRecord]:
        recovered: list[TaskRecord] = []
        for record in self.tasks.values():
            if (
                record.status is TaskStatus.RUNNING
                and record.lease_expires_at is not None
                and record.lease_expires_at < now
            ):
                record.lease_token = None
                record.lease_expires_at = None
                record.updated_at = now
                self._left_running(record)
                if record.attempts >= record.max_attempts:
                    record.status = TaskStatus.FAILED
                    record.finished_at = now
                    record.error = "lease expired: the worker running it stopped responding"
                    self._settle(record.id, now)
                else:
                    record.status = TaskStatus.QUEUED
                    record.run_after = now
                    self._enqueue(record)
                recovered.append(self._copy_out(record))
        return recovered

    async def next_due(self, types: Collection[str] | None = None) -> datetime | None:
        """The earliest run_after among the heads of the due heaps (tasks a claim left:
        keys at their limit, other types) and of the delayed heap."""
        due: list[datetime] = []
        for heap in (self._ready, *self._keyed.values()):
            head = self._top(heap)
            if head is not None:
                due.append(self.tasks[head[2]].run_after)
        while self._delayed:
            _, seq, task_id = self._delayed[0]
            record = self.tasks.get(task_id)
            if record is not None and record.status is TaskStatus.QUEUED and record.seq == seq:
                due.append(record.run_after)
                break
            heapq.heappop(self._delayed)
        return min(due, default=None)

    async def count_by_status(self) -> dict[TaskStatus, int]:
        counts = dict.fromkeys(TaskStatus, 0)
        for record in self.tasks.values():
            counts[record.status] += 1
        return counts

    async def list_tasks(
        self,
        *,
        statuses: Sequence[TaskStatus] | None = None,
        task_type: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[TaskRecord]:
        records = [
            record
            for record in self.tasks.values()
            if (statuses is None or record.status in statuses)
            and (task_type is None or record.type == task_type)
        ]
        records.sort(key=lambda record: (record.created_at, record.seq))
        return [self._copy_out(record) for record in records[offset : offset + limit]]

    # -- workflows -----------------------------------------------------------------------------

    async def dependencies(self, task_id: str) -> list[str]:
        record = self.tasks.get(task_id)
        return [] if record is None else list(record.depends_on)

    async def dependents(self, task_id: str) -> list[str]:
        return list(self._children.get(task_id, ()))

    async def dependency_results(self, task_id: str) -> dict[str, Any]:
        record = self.tasks.get(task_id)
        if record is None:
            return {}
        return {
            parent: deepcopy(self.tasks[parent].result)
            for parent in record.depends_on
            if parent in self.tasks
        }

    async def workflow_tasks(self, workflow_id: str) -> list[TaskRecord]:
        records = [r for r in self.tasks.values() if r.workflow_id == workflow_id]
        records.sort(key=lambda record: record.seq)
        return [self._copy_out(record) for record in records]

    async def workflow_ids(self, *, limit: int = 50) -> list[str]:
        newest: dict[str, int] = {}
        for record in self.tasks.values():
            if record.workflow_id is not None:
                newest[record.workflow_id] = max(newest.get(record.workflow_id, 0), record.seq)
        return sorted(newest, key=lambda wid: -newest[wid])[:limit]

    # -- StoreOperations: answered from the records held ------------------------------------

    def _matching(
        self, statuses: Sequence[TaskStatus] | None, task_type: str | None
    ) -> list[TaskRecord]:
        return [
            record
            for record in self.tasks.values()
            if (statuses is None or record.status in statuses)
            and (task_type is None or record.type == task_type)
        ]

    async def initialize(self) -> InitFigures:
        return InitFigures("in-memory", created=False, from_version=0, to_version=0, applied=[])

    async def count_tasks(
        self, *, statuses: Sequence[TaskStatus] | None = None, task_type: str | None = None
    ) -> int:
        return len(self._matching(statuses, task_type))

    async def present(self, ids: Collection[str]) -> set[str]:
        return {task_id for task_id in ids if task_id in self.tasks}

    async def queue_figures(self, *, now: float, window: float) -> QueueFigures:
        return figures_from_records(
            list(self.tasks.values()), now=now, window=window, storage=await self.storage_info()
        )

    async def record_worker(self, worker_id: str, info: dict[str, object]) -> bool:
        now = time.time()
        known = self.workers.get(worker_id)
        self.workers[worker_id] = WorkerRecord(
            worker_id,
            socket.gethostname(),
            os.getpid(),
            known.started_at if known else now,
            now,
            dict(info),
            known.stop_requested_at if known else None,
        )
        return known is not None and known.stop_requested_at is not None

    async def forget_worker(self, worker_id: str) -> None:
        self.workers.pop(worker_id, None)

    async def list_workers(self) -> list[WorkerRecord]:
        return sorted(self.workers.values(), key=lambda w: (w.started_at, w.worker_id))

    async def request_worker_stop(self, worker_ids: Collection[str]) -> list[str]:
        now = time.time()
        asked = sorted(set(worker_ids) & set(self.workers))
        for worker_id in asked:
            known = self.workers[worker_id]
            if known.stop_requested_at is None:
                self.workers[worker_id] = replace(known, stop_requested_at=now)
        return asked

    async def retry(self, task_id: str, *, now: float) -> TaskRecord:
        record = self.tasks.get(task_id)
        if record is None:
            raise TaskNotFound(f"no task has the id {task_id!r}")
        if record.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            raise OperationRefused(
                f"task {task_id} is {record.status}; only failed or cancelled tasks can be retried"
            )
        at = datetime.fromtimestamp(now, UTC)
        record.status = TaskStatus.QUEUED
        record.attempts = 0
        record.run_after = record.updated_at = at
        record.started_at = record.finished_at = None
        record.result = record.error = None
        record.lease_token = record.lease_expires_at = record.worker_id = None
        self._enqueue(record)
        return self._copy_out(record)

    def _finished_before(
        self, statuses: Sequence[TaskStatus], before: float, task_type: str | None
    ) -> list[TaskRecord]:
        return [
            record
            for record in self._matching(statuses, task_type)
            if to_epoch(record.finished_at or record.updated_at) < before
        ]

    async def count_finished(
        self, *, statuses: Sequence[TaskStatus], before: float, task_type: str | None = None
    ) -> int:
        return len(self._finished_before(statuses, before, task_type))

    def _filtered(self, task_filter: TaskFilter) -> list[TaskRecord]:
        """The matching records, newest first."""
        found = [record for record in self.tasks.values() if task_filter.matches(record)]
        found.sort(key=page_key, reverse=True)
        return found

    async def page_tasks(
        self, task_filter: TaskFilter, *, limit: int, after: str | None = None
    ) -> TaskPage:
        found = self._filtered(task_filter)
        if after is not None:
            key = decode_cursor(after)
            found = [record for record in found if page_key(record) < key]
        tasks = [self._copy_out(record) for record in found[:limit]]
        more = len(found) > limit
        return TaskPage(tasks, encode_cursor(page_key(tasks[-1])) if more else None)

    async def count_matching(self, task_filter: TaskFilter) -> int:
        return len(self._filtered(task_filter))

    async def finished_series(
        self, *, since: float, until: float, buckets: int
    ) -> list[dict[str, int]]:
        series = [{"completed": 0, "failed": 0} for _ in range(buckets)]
        for record in self.tasks.values():
            if record.finished_at is None or record.status not in (
                TaskStatus.COMPLETED,
                TaskStatus.FAILED,
            ):
                continue
            at = bucket_of(to_epoch(record.finished_at), since=since, until=until, buckets=buckets)
            if at is not None:
                series[at][str(record.status)] += 1
        return series

    async def retry_matching(self, task_filter: TaskFilter, *, now: float, limit: int) -> int:
        chosen = self._filtered(task_filter.narrowed(RETRYABLE))[:limit]
        for record in chosen:
            await self.retry(record.id, now=now)
        return len(chosen)

    async def cancel_matching(self, task_filter: TaskFilter, *, now: float, limit: int) -> int:
        chosen = self._filtered(task_filter.narrowed(CANCELLABLE))[:limit]
        at = datetime.fromtimestamp(now, UTC)
        for record in chosen:
            await self.cancel(record.id, now=at)
        return len(chosen)

    async def purge_matching(self, task_filter: TaskFilter, *, limit: int) -> int:
        chosen = self._filtered(task_filter.narrowed(PURGEABLE))[:limit]
        return len(self.detach([record.id for record in chosen]))

    async def set_intake_paused(self, paused: bool) -> None:
        self.paused = paused

    async def intake_paused(self) -> bool:
        return self.paused

    async def record_action(self, entry: AuditEntry) -> None:
        self.audit.append(entry)

    async def list_actions(self, *, limit: int = 100) -> list[AuditEntry]:
        return self.audit[::-1][:limit]

    async def delete_finished(
        self,
        *,
        statuses: Sequence[TaskStatus],
        before: float,
        task_type: str | None = None,
        limit: int,
    ) -> int:
        doomed = self._finished_before(statuses, before, task_type)[:limit]
        return len(self.detach([record.id for record in doomed]))

    async def forget_workers(self, *, silent_since: float, dry_run: bool = False) -> list[str]:
        silent = sorted(w for w, rec in self.workers.items() if rec.last_heartbeat < silent_since)
        if not dry_run:
            for worker_id in silent:
                del self.workers[worker_id]
        return silent

    async def self_test(self) -> dict[str, Any]:
        token = new_task_id()
        now = utcnow()
        task_type = f"taskyard.validate.{token}"
        record = TaskRecord(
            id=f"taskyard-validate-{token}",
            type=task_type,
            payload={"validate": token},
            payload_json=dumps({"validate": token}),
            created_at=now,
            updated_at=now,
            run_after=now,
        )
        await self.add([record])
        claimed = await self.claim(
            limit=1, now=now, worker_id="taskyard-validate", lease_seconds=60, types={task_type}
        )
        if [claimed_record.id for claimed_record in claimed] != [record.id]:
            raise IntegrityError(f"claiming the scratch task returned {len(claimed)} task(s)")
        outcome = Outcome(
            task_id=record.id,
            lease_token=claimed[0].lease_token or "",
            status=TaskStatus.COMPLETED,
            finished_at=now,
            result=token,
            result_json=dumps(token),
        )
        if await self.finish([outcome]) != [True]:
            raise IntegrityError("completing the scratch task was refused")
        self.detach([record.id])
        return {"task_id": record.id}

    async def check_integrity(self, *, quick: bool = False) -> IntegrityFindings:
        invariants: dict[str, Callable[[TaskRecord], bool]] = {
            "running tasks without a lease": lambda r: (
                r.status is TaskStatus.RUNNING
                and (r.lease_token is None or r.lease_expires_at is None)
            ),
            "queued tasks holding a lease": lambda r: (
                r.status is TaskStatus.QUEUED and r.lease_token is not None
            ),
            "finished tasks without finished_at": lambda r: (
                r.status.is_terminal and r.finished_at is None
            ),
            "tasks with more attempts than allowed": lambda r: r.attempts > r.max_attempts,
        }
        broken = []
        for name, breaks in invariants.items():
            number = sum(1 for record in self.tasks.values() if breaks(record))
            if number:
                broken.append(f"{number} {name}")
        return IntegrityFindings(["ok"], broken)

    async def optimize(self) -> list[str]:
        return []

    async def storage_info(self) -> StorageInfo:
        return StorageInfo(path="in-memory")

    # -- periodic schedules ------------------------------------------------------------------

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        record = self.schedules.get(name)
        return None if record is None else _schedule_copy(record)

    async def list_schedules(self) -> list[ScheduleRecord]:
        return [_schedule_copy(self.schedules[name]) for name in sorted(self.schedules)]

    async def insert_schedule(self, record: ScheduleRecord) -> bool:
        if record.name in self.schedules:
            return False
        self.schedules[record.name] = _schedule_copy(record)
        return True

    async def update_schedule(
        self, record: ScheduleRecord, *, expected_next: datetime | None = None
    ) -> bool:
        stored = self.schedules.get(record.name)
        if stored is None or (expected_next is not None and stored.next_fire_at != expected_next):
            return False
        self.schedules[record.name] = replace(
            _schedule_copy(record),
            last_fire_at=stored.last_fire_at,
            last_task_id=stored.last_task_id,
            created_at=stored.created_at,
        )
        return True

    async def remove_schedule(self, name: str) -> bool:
        return self.schedules.pop(name, None) is not None

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
        stored = self.schedules.get(name)
        if stored is None or not stored.enabled or stored.next_fire_at != expected_next:
            return None
        ids = await self.add(records)  # no await inside: nothing runs in between
        stored.next_fire_at = next_fire_at
        stored.updated_at = now
        if last_fire_at is not None:
            stored.last_fire_at = last_fire_at
            stored.last_task_id = ids[-1] if ids else stored.last_task_id
        return ids


def _stored_result(outcome: Outcome) -> object:
    """The store's own copy of an outcome's result (what its JSON text decodes to)."""
    text = outcome.result_json
    if text is None or text == "null":
        return None
    if outcome.result is None:  # an outcome read back from JSON carries only the text
        return loads(text)
    return detached(outcome.result, text)


class InMemoryTaskManager(TaskEngine):
    """The engine over an :class:`InMemoryStore`: fast, nothing survives the process."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        store: InMemoryStore | None = None,
        registry: RunRegistry | None = None,
        events: EventBus | None = None,
    ) -> None:
        super().__init__(store or InMemoryStore(), config, registry=registry, events=events)

    @property
    def tasks(self) -> dict[str, TaskRecord]:
        """The live records, by id (for tests: read, do not mutate)."""
        assert isinstance(self.store, InMemoryStore)
        return self.store.tasks

    def reset(self) -> None:
        """Forget every task (between tests)."""
        assert isinstance(self.store, InMemoryStore)
        self.store.reset()
