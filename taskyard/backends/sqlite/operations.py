"""The SQLite store's answers to the store-operations interface
(:class:`~taskyard.framework.operations.StoreOperations`): every query the operations
tools need, against taskyard's tables, in one place.

:class:`SqliteOperations` is a base of :class:`~taskyard.backends.sqlite.SqliteStore`;
its methods run plain functions on the store's connection, in aiosqlite's thread
(reads outside any transaction, writes in one short transaction). The queries
themselves are in :mod:`~taskyard.backends.sqlite.queries`, backups in
:mod:`~taskyard.backends.sqlite.backups`, and what works on a file that is not open as a
store in :mod:`~taskyard.backends.sqlite.files`.
"""

from __future__ import annotations

import abc
import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

from taskyard.backends.sqlite.backups import copy_snapshot, restore_into, verify_backup_file
from taskyard.backends.sqlite.files import file_size, init_file, require_file, wal_path
from taskyard.backends.sqlite.queries import (
    filters,
    integrity,
    page_bytes,
    read_figures,
    scratch_cycle,
    storage_info,
    task_filter_sql,
    workers,
)
from taskyard.framework.errors import (
    OperationRefused,
    TaskNotFound,
)
from taskyard.framework.models import TaskRecord, TaskStatus
from taskyard.framework.operations import (
    CANCELLABLE,
    PURGEABLE,
    RETRYABLE,
    AuditEntry,
    BackupCheck,
    CheckpointFigures,
    InitFigures,
    IntegrityFindings,
    ProgressCallback,
    QueueFigures,
    StorageInfo,
    StoreOperations,
    TaskFilter,
    TaskPage,
    WorkerRecord,
    decode_cursor,
    encode_cursor,
    no_progress,
)
from taskyard.framework.store import Capability

# -- the interface ----------------------------------------------------------------------------

T = TypeVar("T")


class SqliteOperations(StoreOperations):
    """The store operations of :class:`~taskyard.backends.sqlite.SqliteStore`."""

    capabilities = frozenset(
        {
            Capability.DURABLE,
            Capability.MULTI_PROCESS,
            Capability.FILE_MAINTENANCE,
            Capability.FILE_BACKUP,
            Capability.WORKFLOWS,
            Capability.CONCURRENCY_KEYS,
            Capability.CLAIM_ON_ADD,
        }
    )
    path: Path
    synchronous: str
    busy_timeout: float

    @abc.abstractmethod
    async def execute_read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read-only ``fn(conn, *args)`` in the store's thread."""

    @abc.abstractmethod
    async def execute_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` inside one short write transaction."""

    async def open_existing(self) -> None:
        require_file(self.path)
        await self.open()

    async def initialize(self) -> InitFigures:
        return init_file(self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout)

    async def snapshot(
        self, statuses: Sequence[TaskStatus] | None = None, *, page: int = 10_000
    ) -> list[TaskRecord]:
        """Every task (of ``statuses``) in one read: a consistent snapshot while workers
        run."""
        from taskyard.backends.sqlite.store import COLUMNS, row_to_record

        wanted = None if statuses is None else sorted(statuses)
        where, params = filters(wanted, None)
        sql = f"SELECT {COLUMNS} FROM taskyard_tasks{where} ORDER BY seq"

        def run(conn: sqlite3.Connection) -> list[TaskRecord]:
            conn.execute("BEGIN")
            try:
                records = [row_to_record(row) for row in conn.execute(sql, params)]
                edges: dict[str, list[str]] = {}
                for child, parent in conn.execute(  # what waiting tasks wait for
                    "SELECT d.task_id, d.depends_on FROM taskyard_tasks AS t"
                    " JOIN taskyard_dependencies AS d ON d.task_id = t.id"
                    " JOIN taskyard_tasks AS p ON p.id = d.depends_on"
                    " WHERE t.status = 'waiting' ORDER BY p.seq"
                ):
                    edges.setdefault(child, []).append(parent)
            finally:
                conn.execute("COMMIT")
            for record in records:
                record.depends_on = tuple(edges.get(record.id, ()))
            return records

        return await self.execute_read(run)

    async def count_tasks(
        self, *, statuses: Sequence[TaskStatus] | None = None, task_type: str | None = None
    ) -> int:
        where, params = filters(statuses, task_type)

        def run(conn: sqlite3.Connection) -> int:
            return int(
                conn.execute(f"SELECT COUNT(*) FROM taskyard_tasks{where}", params).fetchone()[0]
            )

        return await self.execute_read(run)

    async def present(self, ids: Collection[str]) -> set[str]:
        if not ids:
            return set()

        def run(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "SELECT id FROM taskyard_tasks WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(ids)),),
            )
            return {row[0] for row in rows}

        return await self.execute_read(run)

    async def queue_figures(self, *, now: float, window: float) -> QueueFigures:
        path = self.path

        def run(conn: sqlite3.Connection) -> QueueFigures:
            return read_figures(conn, path, now=now, window=window)

        return await self.execute_read(run)

    async def list_workers(self) -> list[WorkerRecord]:
        return await self.execute_read(workers)

    async def request_worker_stop(self, worker_ids: Collection[str]) -> list[str]:
        wanted = sorted(set(worker_ids))
        now = time.time()

        def run(conn: sqlite3.Connection) -> list[str]:
            asked: list[str] = []
            for worker_id in wanted:  # one short transaction; a handful of workers
                row = conn.execute(
                    "UPDATE taskyard_workers SET stop_requested_at ="
                    " COALESCE(stop_requested_at, ?) WHERE worker_id = ? RETURNING worker_id",
                    (now, worker_id),
                ).fetchone()
                if row is not None:
                    asked.append(str(row[0]))
            return asked

        return await self.execute_write(run) if wanted else []

    async def page_tasks(
        self, task_filter: TaskFilter, *, limit: int, after: str | None = None
    ) -> TaskPage:
        from taskyard.backends.sqlite.store import COLUMNS, row_to_record

        where, params = task_filter_sql(task_filter)
        if after is not None:
            where.append("(created_at, id) < (?, ?)")  # keyset: read on from the cursor
            params += list(decode_cursor(after))
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        sql = (
            f"SELECT {COLUMNS}, created_at FROM taskyard_tasks"
            f" INDEXED BY taskyard_tasks_newest{clause}"
            " ORDER BY created_at DESC, id DESC LIMIT ?"
        )

        def run(conn: sqlite3.Connection) -> list[tuple[TaskRecord, float]]:
            rows = conn.execute(sql, [*params, limit + 1]).fetchall()
            return [(row_to_record(row[:-1]), float(row[-1])) for row in rows]

        found = await self.execute_read(run)
        tasks = [record for record, _ in found[:limit]]
        cursor = None
        if len(found) > limit:  # the raw created_at: a datetime would round it
            cursor = encode_cursor((found[limit - 1][1], found[limit - 1][0].id))
        return TaskPage(tasks, cursor)

    async def count_matching(self, task_filter: TaskFilter) -> int:
        where, params = task_filter_sql(task_filter)
        clause = (" WHERE " + " AND ".join(where)) if where else ""

        def run(conn: sqlite3.Connection) -> int:
            sql = f"SELECT COUNT(*) FROM taskyard_tasks{clause}"
            return int(conn.execute(sql, params).fetchone()[0])

        return await self.execute_read(run)

    async def finished_series(
        self, *, since: float, until: float, buckets: int
    ) -> list[dict[str, int]]:
        def run(conn: sqlite3.Connection) -> list[dict[str, int]]:
            series = [{"completed": 0, "failed": 0} for _ in range(buckets)]
            rows = conn.execute(
                "SELECT MIN(CAST((finished_at - ?1) * ?3 / (?2 - ?1) AS INTEGER), ?3 - 1),"
                " status, COUNT(*) FROM taskyard_tasks WHERE finished_at >= ?1"
                " AND finished_at < ?2 AND status IN ('completed', 'failed') GROUP BY 1, 2",
                (since, until, buckets),
            )
            for bucket, status, count in rows:
                series[int(bucket)][str(status)] += int(count)
            return series

        return await self.execute_read(run)

    @staticmethod
    def _chosen(task_filter: TaskFilter, limit: int) -> tuple[str, list[Any]]:
        """``seq IN (...)``: up to ``limit`` of the tasks the filter matches, newest first."""
        where, params = task_filter_sql(task_filter)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        return (
            f"seq IN (SELECT seq FROM taskyard_tasks{clause}"
            f" ORDER BY created_at DESC, id DESC LIMIT {int(limit)})",
            params,
        )

    async def retry_matching(self, task_filter: TaskFilter, *, now: float, limit: int) -> int:
        chosen, params = self._chosen(task_filter.narrowed(RETRYABLE), limit)
        sql = (
            "UPDATE taskyard_tasks SET status = 'queued', attempts = 0, run_after = ?,"
            " updated_at = ?, started_at = NULL, finished_at = NULL, result = NULL,"
            " error = NULL, lease_token = NULL, lease_expires_at = NULL, worker_id = NULL"
            f" WHERE {chosen} AND status IN ('failed', 'cancelled')"
        )

        def run(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, [now, now, *params]).rowcount

        return await self.execute_write(run)

    async def cancel_matching(self, task_filter: TaskFilter, *, now: float, limit: int) -> int:
        chosen, params = self._chosen(task_filter.narrowed(CANCELLABLE), limit)
        sql = (
            "UPDATE taskyard_tasks SET status = 'cancelled', finished_at = ?, updated_at = ?,"
            " lease_token = NULL, lease_expires_at = NULL"
            f" WHERE {chosen} AND status IN ('queued', 'running')"
        )

        def run(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, [now, now, *params]).rowcount

        return await self.execute_write(run)

    async def purge_matching(self, task_filter: TaskFilter, *, limit: int) -> int:
        chosen, params = self._chosen(task_filter.narrowed(PURGEABLE), limit)
        sql = (
            f"DELETE FROM taskyard_tasks WHERE {chosen}"
            " AND status IN ('completed', 'failed', 'cancelled')"
        )

        def run(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, params).rowcount

        return await self.execute_write(run)

    async def set_intake_paused(self, paused: bool) -> None:
        def run(conn: sqlite3.Connection) -> None:
            if paused:
                conn.execute(
                    "INSERT INTO taskyard_state (key, value) VALUES ('intake_paused', '1')"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                )
            else:
                conn.execute("DELETE FROM taskyard_state WHERE key = 'intake_paused'")

        await self.execute_write(run)

    async def intake_paused(self) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT value FROM taskyard_state WHERE key = 'intake_paused'"
            ).fetchone()
            return row is not None and row[0] == "1"

        return await self.execute_read(run)

    async def record_action(self, entry: AuditEntry) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO taskyard_audit (at, actor, action, target, count, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    entry.at,
                    entry.actor,
                    entry.action,
                    entry.target,
                    entry.count,
                    json.dumps(entry.detail, default=str),
                ),
            )

        await self.execute_write(run)

    async def list_actions(self, *, limit: int = 100) -> list[AuditEntry]:
        def run(conn: sqlite3.Connection) -> list[AuditEntry]:
            rows = conn.execute(
                "SELECT at, actor, action, target, count, detail FROM taskyard_audit"
                " ORDER BY seq DESC LIMIT ?",
                (limit,),
            )
            return [
                AuditEntry(at, actor, action, target, count, json.loads(detail))
                for at, actor, action, target, count, detail in rows
            ]

        return await self.execute_read(run)

    async def retry(self, task_id: str, *, now: float) -> TaskRecord:
        from taskyard.backends.sqlite.store import COLUMNS, row_to_record

        def run(conn: sqlite3.Connection) -> TaskRecord | TaskStatus | None:
            row = conn.execute(
                "UPDATE taskyard_tasks SET status = 'queued', attempts = 0, run_after = ?1,"
                " updated_at = ?1, started_at = NULL, finished_at = NULL, result = NULL,"
                " error = NULL, lease_token = NULL, lease_expires_at = NULL, worker_id = NULL"
                " WHERE id = ?2 AND status IN ('failed', 'cancelled')"
                f" RETURNING {COLUMNS}",
                (now, task_id),
            ).fetchone()
            if row is not None:
                return row_to_record(row)
            found = conn.execute(
                "SELECT status FROM taskyard_tasks WHERE id = ?", (task_id,)
            ).fetchone()
            return None if found is None else TaskStatus(found[0])

        result = await self.execute_write(run)
        if result is None:
            raise TaskNotFound(f"no task has the id {task_id!r}")
        if isinstance(result, TaskStatus):
            raise OperationRefused(
                f"task {task_id} is {result}; only failed or cancelled tasks can be retried"
            )
        return result

    @staticmethod
    def _finished_where(
        statuses: Sequence[TaskStatus], before: float, task_type: str | None
    ) -> tuple[str, tuple[Any, ...]]:
        where = (
            "status IN (SELECT value FROM json_each(?1)) AND COALESCE(finished_at, updated_at) < ?2"
            + (" AND type = ?3" if task_type is not None else "")
        )
        params: tuple[Any, ...] = (json.dumps(sorted(str(s) for s in statuses)), before)
        if task_type is not None:
            params += (task_type,)
        return where, params

    async def count_finished(
        self, *, statuses: Sequence[TaskStatus], before: float, task_type: str | None = None
    ) -> int:
        where, params = self._finished_where(statuses, before, task_type)

        def run(conn: sqlite3.Connection) -> int:
            sql = f"SELECT COUNT(*) FROM taskyard_tasks WHERE {where}"
            return int(conn.execute(sql, params).fetchone()[0])

        return await self.execute_read(run)

    async def delete_finished(
        self,
        *,
        statuses: Sequence[TaskStatus],
        before: float,
        task_type: str | None = None,
        limit: int,
    ) -> int:
        where, params = self._finished_where(statuses, before, task_type)
        sql = (
            "DELETE FROM taskyard_tasks WHERE seq IN"
            f" (SELECT seq FROM taskyard_tasks WHERE {where} LIMIT {int(limit)}) RETURNING id"
        )

        def run(conn: sqlite3.Connection) -> int:
            deleted = [row[0] for row in conn.execute(sql, params).fetchall()]
            conn.execute(  # what the deleted (finished) tasks waited for
                "DELETE FROM taskyard_dependencies WHERE task_id IN"
                " (SELECT value FROM json_each(?))",
                (json.dumps(deleted),),
            )
            return len(deleted)

        return await self.execute_write(run)

    async def forget_workers(self, *, silent_since: float, dry_run: bool = False) -> list[str]:
        def silent(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT worker_id FROM taskyard_workers WHERE last_heartbeat < ?"
                " ORDER BY worker_id",
                (silent_since,),
            )
            return [str(row[0]) for row in rows]

        def forget(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "DELETE FROM taskyard_workers WHERE last_heartbeat < ? RETURNING worker_id",
                (silent_since,),
            )
            return sorted(str(row[0]) for row in rows)

        return await (self.execute_read(silent) if dry_run else self.execute_write(forget))

    async def self_test(self) -> dict[str, Any]:
        started = time.perf_counter()
        done: dict[str, Any] = await self.execute_write(scratch_cycle)
        done["seconds"] = time.perf_counter() - started
        return done

    async def check_integrity(self, *, quick: bool = False) -> IntegrityFindings:
        return await self.execute_read(integrity, quick)

    async def optimize(self) -> list[str]:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("ANALYZE")
            conn.execute("PRAGMA optimize")

        await self.execute_read(run)
        return ["ANALYZE", "PRAGMA optimize"]

    async def storage_info(self) -> StorageInfo:
        return await self.execute_read(storage_info, self.path)

    async def checkpoint(self, mode: str) -> CheckpointFigures:
        wal = wal_path(self.path)
        before = file_size(wal)
        pragma = {"passive": "PASSIVE", "full": "FULL", "restart": "RESTART"}.get(
            mode, "TRUNCATE"
        )  # one of four constants: never user text in the SQL

        patience = int(self.busy_timeout * 1000)

        def run(conn: sqlite3.Connection) -> tuple[int, int, int]:
            # A FULL, RESTART or TRUNCATE checkpoint waits for readers and writers through
            # SQLite's busy handler, which the store's connection otherwise leaves off (its
            # own waits are shorter: store.waiting): on for this statement only.
            conn.execute(f"PRAGMA busy_timeout = {patience}")
            try:
                row = conn.execute(f"PRAGMA wal_checkpoint({pragma})").fetchone()
            finally:
                conn.execute("PRAGMA busy_timeout = 0")
            busy, frames, done = row
            return int(busy), int(frames), int(done)

        busy, frames, done = await self.execute_read(run)
        return CheckpointFigures(bool(busy), frames, done, before, file_size(wal))

    async def vacuum(self) -> tuple[int, int]:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("VACUUM")

        before = await self.execute_read(page_bytes)
        await self.execute_read(run)  # outside any transaction, as VACUUM must be
        return before, await self.execute_read(page_bytes)

    async def backup_to(
        self, path: str | os.PathLike[str], *, progress: ProgressCallback = no_progress
    ) -> tuple[dict[str, int], int]:
        return await self.execute_read(copy_snapshot, Path(path), progress)

    async def verify_backup(self, path: str | os.PathLike[str]) -> BackupCheck:
        return verify_backup_file(Path(path))

    async def restore_from(
        self, path: str | os.PathLike[str], *, progress: ProgressCallback = no_progress
    ) -> dict[str, int]:
        return await self.execute_read(restore_into, Path(path), progress)
