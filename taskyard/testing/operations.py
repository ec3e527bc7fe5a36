"""The store-operations contract: what every :class:`~taskyard.framework.operations.StoreOperations`
answers, the same way on every store.

A store joins by a fixture named ``ops_store`` that yields an *open*, empty store::

    @pytest.fixture
    async def ops_store(tmp_path):
        store = MyStore(...)
        await store.open()
        yield store
        await store.close()

    class TestMyStoreOperations(StoreOperationsContract):
        pass

Operations behind a capability are checked both ways: done when the store declares the
capability, refused with OperationNotSupported when it does not.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskyard.framework.errors import (
    InvalidQuery,
    OperationNotSupported,
    OperationRefused,
    TaskNotFound,
)
from taskyard.framework.models import Outcome, TaskRecord, TaskStatus, new_task_id
from taskyard.framework.operations import AuditEntry, StoreOperations, TaskFilter
from taskyard.framework.store import Capability

__all__ = ["StoreOperationsContract", "record"]

HOUR = 3600.0


def record(
    status: TaskStatus = TaskStatus.QUEUED,
    *,
    task_type: str = "work",
    due_ago: float = 60.0,
    finished_ago: float | None = None,
    attempts: int = 0,
    lease_expired_ago: float | None = None,
    created_ago: float | None = None,
    payload: Any = None,
    error: str | None = None,
) -> TaskRecord:
    """A task as :meth:`TaskStore.import_records` takes it, in ``status``, due
    ``due_ago`` seconds ago (negative: in the future), finished ``finished_ago`` seconds
    ago (finished statuses; default one minute)."""
    now = datetime.now(UTC)
    finished = None
    started = None
    if status.is_terminal:
        finished = now - timedelta(seconds=60.0 if finished_ago is None else finished_ago)
        started = finished - timedelta(seconds=2)
    lease = None if lease_expired_ago is None else now - timedelta(seconds=lease_expired_ago)
    return TaskRecord(
        id=new_task_id(),
        type=task_type,
        status=status,
        payload={"n": 1} if payload is None else payload,
        attempts=attempts,
        max_attempts=3,
        created_at=now
        - timedelta(seconds=abs(due_ago) + 1 if created_ago is None else created_ago),
        updated_at=finished or now,
        run_after=now - timedelta(seconds=due_ago),
        started_at=started,
        finished_at=finished,
        error=error or ("boom" if status is TaskStatus.FAILED else None),
        lease_token="lease" if lease is not None else None,
        lease_expires_at=lease,
        worker_id="w" if lease is not None else None,
    )


class StoreOperationsContract:
    """Mix into a test class; needs the ``ops_store`` fixture (an open, empty store)."""

    async def test_counts_and_presence_follow_the_filters(self, ops_store: StoreOperations) -> None:
        kept = [record(), record(task_type="mail"), record(TaskStatus.COMPLETED)]
        assert await ops_store.import_records(kept) == [True, True, True]
        assert await ops_store.count_tasks() == 3
        assert await ops_store.count_tasks(statuses=[TaskStatus.QUEUED]) == 2
        assert await ops_store.count_tasks(statuses=[TaskStatus.QUEUED], task_type="mail") == 1
        assert await ops_store.count_tasks(statuses=[TaskStatus.FAILED]) == 0
        assert await ops_store.present([kept[0].id, "no-such-task"]) == {kept[0].id}
        assert await ops_store.present([]) == set()

    async def test_snapshot_returns_every_task_of_the_statuses(
        self, ops_store: StoreOperations
    ) -> None:
        tasks = [record(), record(TaskStatus.FAILED), record()]
        await ops_store.import_records(tasks)
        queued = await ops_store.snapshot([TaskStatus.QUEUED])
        assert sorted(task.id for task in queued) == sorted([tasks[0].id, tasks[2].id])
        assert len(await ops_store.snapshot()) == 3

    async def test_a_task_added_as_claimed_is_held_under_its_lease(
        self, ops_store: StoreOperations
    ) -> None:
        """Capability.CLAIM_ON_ADD: ``add`` stores a record given as running (attempt 1,
        a lease) as claimed, in that write: no claim takes it, its lease finishes it,
        and once that lease has expired, recovery puts it back in the queue."""
        if Capability.CLAIM_ON_ADD not in ops_store.capabilities:
            pytest.skip(f"backend lacks capability {Capability.CLAIM_ON_ADD}")
        now = datetime.now(UTC)

        def claimed(token: str, expires: datetime) -> TaskRecord:
            return TaskRecord(
                id=new_task_id(), type="work", payload={"n": 1}, status=TaskStatus.RUNNING,
                attempts=1, created_at=now, updated_at=now, run_after=now, started_at=now,
                lease_token=token, lease_expires_at=expires, worker_id="w1",
            )  # fmt: skip

        held = claimed("lease-held", now + timedelta(minutes=5))
        lapsed = claimed("lease-lapsed", now - timedelta(seconds=1))
        assert await ops_store.add([held, lapsed]) == [held.id, lapsed.id]
        stored = await ops_store.get(held.id)
        assert stored is not None
        assert (stored.status, stored.attempts) == (TaskStatus.RUNNING, 1)
        assert (stored.lease_token, stored.worker_id) == ("lease-held", "w1")
        taken = await ops_store.claim(limit=10, now=now, worker_id="w2", lease_seconds=60)
        assert taken == []
        recovered = await ops_store.recover_expired(now=datetime.now(UTC))
        assert [(task.id, task.status) for task in recovered] == [(lapsed.id, TaskStatus.QUEUED)]
        done = Outcome(held.id, "lease-held", TaskStatus.COMPLETED, datetime.now(UTC))
        assert await ops_store.finish([done]) == [True]
        finished = await ops_store.get(held.id)
        assert finished is not None
        assert (finished.status, finished.attempts) == (TaskStatus.COMPLETED, 1)

    async def test_retry_requeues_a_failed_task_and_refuses_others(
        self, ops_store: StoreOperations
    ) -> None:
        failed, queued = record(TaskStatus.FAILED, attempts=3), record()
        await ops_store.import_records([failed, queued])
        now = time.time()
        again = await ops_store.retry(failed.id, now=now)
        assert again.status is TaskStatus.QUEUED and again.attempts == 0
        assert again.error is None and again.finished_at is None
        stored = await ops_store.get(failed.id)
        assert stored is not None and stored.status is TaskStatus.QUEUED
        with pytest.raises(OperationRefused, match="only failed or cancelled"):
            await ops_store.retry(queued.id, now=now)
        with pytest.raises(TaskNotFound):
            await ops_store.retry("no-such-task", now=now)

    async def test_finished_tasks_are_counted_and_deleted_in_batches(
        self, ops_store: StoreOperations
    ) -> None:
        old = [record(TaskStatus.COMPLETED, finished_ago=2 * HOUR) for _ in range(5)]
        recent = record(TaskStatus.COMPLETED, finished_ago=60)
        other = record(TaskStatus.FAILED, finished_ago=2 * HOUR)
        await ops_store.import_records([*old, recent, other, record()])
        cutoff = time.time() - HOUR
        completed = [TaskStatus.COMPLETED]
        assert await ops_store.count_finished(statuses=completed, before=cutoff) == 5
        assert await ops_store.delete_finished(statuses=completed, before=cutoff, limit=3) == 3
        assert await ops_store.delete_finished(statuses=completed, before=cutoff, limit=3) == 2
        assert await ops_store.count_finished(statuses=completed, before=cutoff) == 0
        assert await ops_store.count_tasks() == 3  # the recent, the failed, the queued

    async def test_queue_figures_describe_the_queue(self, ops_store: StoreOperations) -> None:
        late = record(due_ago=HOUR)
        await ops_store.import_records(
            [
                late,
                record(due_ago=10, attempts=1),
                record(due_ago=-HOUR),
                record(TaskStatus.COMPLETED, attempts=2, task_type="mail"),
                record(TaskStatus.FAILED, finished_ago=3 * HOUR),
            ]
        )
        figures = await ops_store.queue_figures(now=time.time(), window=HOUR)
        assert figures.depth_by_type["work"]["queued"] == 3
        assert figures.depth_by_type["mail"]["completed"] == 1
        assert (figures.queued_due, figures.queued_delayed, figures.waiting_retry) == (2, 1, 1)
        assert figures.oldest_due is not None and figures.oldest_due[0] == late.id
        assert figures.finished_by_type == {"mail": {"completed": 1, "failed": 0, "cancelled": 0}}
        assert (figures.retried_tasks, figures.retries) == (1, 1)
        assert [round(seconds) for seconds in figures.processing_seconds] == [2]
        mail = next(r for r in await ops_store.snapshot() if r.type == "mail")
        assert mail.started_at is not None and figures.first_started is not None
        assert figures.first_started == pytest.approx(mail.started_at.timestamp())
        assert figures.storage.path

    async def test_the_self_test_leaves_no_trace(self, ops_store: StoreOperations) -> None:
        await ops_store.import_records([record()])
        done: dict[str, Any] = await ops_store.self_test()
        assert done["task_id"]
        assert await ops_store.count_tasks() == 1
        assert await ops_store.present([done["task_id"]]) == set()

    async def test_a_sound_store_passes_its_integrity_check(
        self, ops_store: StoreOperations
    ) -> None:
        await ops_store.import_records([record(), record(TaskStatus.COMPLETED)])
        findings = await ops_store.check_integrity()
        assert findings.storage == ["ok"] and findings.invariants == []
        assert isinstance(await ops_store.optimize(), list)

    async def test_worker_records_can_be_listed_and_forgotten(
        self, ops_store: StoreOperations
    ) -> None:
        await ops_store.record_worker("w-1", {"hostname": "here", "pid": 1})
        listed = [worker.worker_id for worker in await ops_store.list_workers()]
        assert listed == ["w-1"]
        assert await ops_store.forget_workers(silent_since=time.time() - HOUR) == []
        forgotten = await ops_store.forget_workers(silent_since=time.time() + 1, dry_run=True)
        assert forgotten == listed
        assert await ops_store.forget_workers(silent_since=time.time() + 1) == listed
        assert await ops_store.list_workers() == []

    async def test_a_worker_is_asked_to_stop_through_its_heartbeat(
        self, ops_store: StoreOperations
    ) -> None:
        assert await ops_store.record_worker("w-1", {"role": "worker"}) is False
        await ops_store.record_worker("w-2", {})
        assert await ops_store.request_worker_stop(["w-1", "nobody"]) == ["w-1"]
        first = {worker.worker_id: worker for worker in await ops_store.list_workers()}
        assert first["w-1"].role == "worker" and first["w-2"].role == "application"
        assert first["w-1"].stop_requested_at is not None
        assert first["w-2"].stop_requested_at is None
        assert await ops_store.request_worker_stop(["w-1"]) == ["w-1"]  # asked again: kept
        again = {worker.worker_id: worker for worker in await ops_store.list_workers()}
        assert again["w-1"].stop_requested_at == first["w-1"].stop_requested_at
        assert await ops_store.record_worker("w-1", {"role": "worker"}) is True
        assert await ops_store.record_worker("w-2", {}) is False
        await ops_store.forget_worker("w-1")  # the worker said goodbye
        assert [worker.worker_id for worker in await ops_store.list_workers()] == ["w-2"]
        assert await ops_store.request_worker_stop([]) == []

    async def test_file_maintenance_is_done_or_refused_by_capability(
        self, ops_store: StoreOperations
    ) -> None:
        if Capability.FILE_MAINTENANCE in ops_store.capabilities:
            figures = await ops_store.checkpoint("passive")
            assert figures.wal_frames >= figures.checkpointed_frames >= 0
            before, after = await ops_store.vacuum()
            assert before > 0 and after > 0
        else:
            with pytest.raises(OperationNotSupported, match="export and import"):
                await ops_store.checkpoint("passive")
            with pytest.raises(OperationNotSupported):
                await ops_store.vacuum()

    async def test_table_maintenance_is_done_or_refused_by_capability(
        self, ops_store: StoreOperations
    ) -> None:
        await ops_store.import_records([record(), record(TaskStatus.COMPLETED)])
        if Capability.TABLE_MAINTENANCE in ops_store.capabilities:
            assert await ops_store.vacuum_tables()  # says what it ran
        else:
            with pytest.raises(OperationNotSupported):
                await ops_store.vacuum_tables()
        if Capability.TABLE_STATISTICS in ops_store.capabilities:
            tables = await ops_store.table_statistics()
            assert tables and all(t.size_bytes > 0 and t.dead_rows >= 0 for t in tables.values())
            assert sum(t.live_rows for t in tables.values()) >= 2 or (
                Capability.TABLE_MAINTENANCE not in ops_store.capabilities
            )  # estimates, exact right after a vacuum
        else:
            with pytest.raises(OperationNotSupported):
                await ops_store.table_statistics()

    async def test_backups_are_done_or_refused_by_capability(
        self, ops_store: StoreOperations, tmp_path: Any
    ) -> None:
        await ops_store.import_records([record(), record(TaskStatus.COMPLETED)])
        target = tmp_path / "copy.db"
        if Capability.FILE_BACKUP not in ops_store.capabilities:
            with pytest.raises(OperationNotSupported):
                await ops_store.backup_to(target)
            with pytest.raises(OperationNotSupported):
                await ops_store.restore_from(target)
            return
        target.touch(mode=0o600)
        counts, pages = await ops_store.backup_to(target)
        assert counts["queued"] == 1 and counts["completed"] == 1 and pages > 0
        check = await ops_store.verify_backup(target)
        assert check.integrity == ["ok"] and check.counts == counts
        await ops_store.import_records([record()])
        assert (await ops_store.restore_from(target))["queued"] == 1
        assert await ops_store.count_tasks() == 2

    async def test_pages_are_newest_first_and_follow_the_filter(
        self, ops_store: StoreOperations
    ) -> None:
        tasks = [
            record(created_ago=100 - n, task_type="mail" if n % 2 else "work") for n in range(7)
        ]
        await ops_store.import_records(tasks)
        newest_first = [task.id for task in reversed(tasks)]
        seen: list[str] = []
        after = None
        while True:
            page = await ops_store.page_tasks(TaskFilter(), limit=3, after=after)
            seen += [task.id for task in page.tasks]
            if page.next_cursor is None:
                break
            after = page.next_cursor
        assert seen == newest_first
        mail = await ops_store.page_tasks(TaskFilter(task_type="mail"), limit=10)
        assert [task.id for task in mail.tasks] == [
            t.id for t in reversed(tasks) if t.type == "mail"
        ]
        assert mail.next_cursor is None
        since = time.time() - 96.5  # created 96, 95, 94 seconds ago: the last three
        recent = await ops_store.page_tasks(TaskFilter(since=since), limit=10)
        assert [task.id for task in recent.tasks] == newest_first[:3]
        older = await ops_store.page_tasks(TaskFilter(until=since), limit=10)
        assert len(older.tasks) == 4
        with pytest.raises(InvalidQuery, match="first page"):
            await ops_store.page_tasks(TaskFilter(), limit=3, after="not a cursor")

    async def test_text_is_found_in_payloads_and_errors_ignoring_case(
        self, ops_store: StoreOperations
    ) -> None:
        by_payload = record(payload={"customer": "ACME_corp 100%"})
        by_error = record(TaskStatus.FAILED, error="Connection Refused by acme")
        other = record(payload={"customer": "globex"})
        await ops_store.import_records([by_payload, by_error, other])
        found = await ops_store.page_tasks(TaskFilter(text="acme"), limit=10)
        assert {task.id for task in found.tasks} == {by_payload.id, by_error.id}
        assert await ops_store.count_matching(TaskFilter(text="acme")) == 2
        # LIKE's wildcards are searched for as text, not as patterns
        assert await ops_store.count_matching(TaskFilter(text="e_c")) == 1
        assert await ops_store.count_matching(TaskFilter(text="100%")) == 1
        assert await ops_store.count_matching(TaskFilter(text="a%c")) == 0
        # only ASCII letters are folded (as SQLite's LIKE does), the same on every store
        await ops_store.import_records([record(payload={"name": "Émile"})])
        assert await ops_store.count_matching(TaskFilter(text="MILE")) == 1
        assert await ops_store.count_matching(TaskFilter(text="émile")) == 0
        failed = TaskFilter(statuses=(TaskStatus.FAILED,), text="acme")
        assert await ops_store.count_matching(failed) == 1
        with pytest.raises(InvalidQuery, match="at most"):
            TaskFilter(text="x" * 1000)

    async def test_bulk_actions_change_exactly_the_matching_tasks(
        self, ops_store: StoreOperations
    ) -> None:
        failed_mail = [record(TaskStatus.FAILED, task_type="mail", attempts=3) for _ in range(5)]
        failed_work = record(TaskStatus.FAILED, task_type="work", attempts=3)
        queued_mail = record(task_type="mail")
        done_mail = record(TaskStatus.COMPLETED, task_type="mail")
        await ops_store.import_records([*failed_mail, failed_work, queued_mail, done_mail])
        now = time.time()
        mail = TaskFilter(task_type="mail")
        assert await ops_store.retry_matching(mail, now=now, limit=3) == 3
        assert await ops_store.retry_matching(mail, now=now, limit=3) == 2
        assert await ops_store.retry_matching(mail, now=now, limit=3) == 0
        for task in failed_mail:
            stored = await ops_store.get(task.id)
            assert stored is not None and stored.status is TaskStatus.QUEUED
            assert stored.attempts == 0 and stored.error is None
        untouched = await ops_store.get(failed_work.id)
        assert untouched is not None and untouched.status is TaskStatus.FAILED
        assert await ops_store.cancel_matching(mail, now=now, limit=100) == 6
        assert (
            await ops_store.count_matching(
                TaskFilter(statuses=(TaskStatus.CANCELLED,), task_type="mail")
            )
            == 6
        )
        one = TaskFilter(ids=(failed_work.id,))
        assert await ops_store.retry_matching(one, now=now, limit=100) == 1
        assert await ops_store.count_matching(TaskFilter(ids=(failed_work.id, "nothing"))) == 1
        assert await ops_store.purge_matching(mail, limit=100) == 7  # cancelled + completed
        assert await ops_store.count_tasks() == 1
        assert (
            await ops_store.purge_matching(TaskFilter(statuses=(TaskStatus.QUEUED,)), limit=9) == 0
        )

    async def test_intake_pause_and_the_audit_log_are_kept(
        self, ops_store: StoreOperations
    ) -> None:
        assert await ops_store.intake_paused() is False
        await ops_store.set_intake_paused(True)
        assert await ops_store.intake_paused() is True
        await ops_store.set_intake_paused(True)
        await ops_store.set_intake_paused(False)
        assert await ops_store.intake_paused() is False
        assert await ops_store.list_actions() == []
        first = AuditEntry(time.time(), "admin", "retry", "task-1", 1, {"why": "<b>"})
        second = AuditEntry(time.time(), "admin", "purge", "type=mail", 40, {})
        await ops_store.record_action(first)
        await ops_store.record_action(second)
        assert await ops_store.list_actions() == [second, first]
        assert await ops_store.list_actions(limit=1) == [second]

    async def test_finished_tasks_are_counted_per_slice_of_time(
        self, ops_store: StoreOperations
    ) -> None:
        await ops_store.import_records(
            [
                record(TaskStatus.COMPLETED, finished_ago=50),
                record(TaskStatus.COMPLETED, finished_ago=55),
                record(TaskStatus.FAILED, finished_ago=10),
                record(TaskStatus.CANCELLED, finished_ago=10),
                record(TaskStatus.COMPLETED, finished_ago=500),
                record(),
            ]
        )
        now = time.time()
        series = await ops_store.finished_series(since=now - 60, until=now, buckets=3)
        assert series == [
            {"completed": 2, "failed": 0},
            {"completed": 0, "failed": 0},
            {"completed": 0, "failed": 1},
        ]
