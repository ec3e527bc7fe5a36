"""The SQLite store's answers to the store-operations interface
(:class:`~taskyard.framework.operations.StoreOperations`): every query the operations
tools need, against taskyard's tables, in one place.

:class:`SqliteOperations` is a base of :class:`~taskyard.backends.sqlite.SqliteStore`;
its methods run plain functions on the store's connection, in aiosqlite's thread
(reads outside any transaction, writes in one short transaction). The module-level
helpers work on files that are not open as a store: :func:`read_connection` (a plain,
never-migrating connection, for a metrics scrape outside the event loop and for backup
files) and :func:`init_file` (``taskyard db init``).
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from taskyard.backends.sqlite import schema
from taskyard.backends.sqlite.errors import translate
from taskyard.framework.errors import (
    IntegrityError,
    OperationRefused,
    StoreUnavailable,
    TaskNotFound,
)
from taskyard.framework.models import Outcome, TaskRecord, TaskStatus, utcnow
from taskyard.framework.operations import (
    FINISHED,
    STATUSES,
    BackupCheck,
    CheckpointFigures,
    InitFigures,
    IntegrityFindings,
    ProgressCallback,
    QueueFigures,
    StorageInfo,
    StoreOperations,
    WorkerRecord,
    no_progress,
)
from taskyard.framework.store import Capability

T = TypeVar("T")

STEP_PAGES = 1024
"""Pages copied per backup step: 4 MiB with the default page size."""
SCRATCH_PREFIX = "taskyard-validate-"


# -- files --------------------------------------------------------------------------------


def file_size(path: Path) -> int:
    """The size of ``path`` in bytes, 0 when it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def companion_files(path: Path) -> list[Path]:
    """The database file and the WAL and shared-memory files SQLite keeps beside it."""
    return [path, wal_path(path), path.with_name(path.name + "-shm")]


def require_file(path: Path) -> None:
    """Raise StoreUnavailable when there is no database file at ``path``."""
    if not path.exists():
        raise StoreUnavailable(
            f"there is no queue database at {path}: nothing was scheduled there yet, or "
            "task_execution.queue_db_path names another file"
        )
    schema.check_header(path)


@contextlib.contextmanager
def read_connection(
    path: str | os.PathLike[str], *, busy_timeout: float = 5.0, read_only: bool = False
) -> Iterator[sqlite3.Connection]:
    """A plain connection to an existing taskyard queue file, checked like the store
    checks it (not a database, foreign, too new, mismatched tables), never migrated.

    ``read_only`` opens the file with ``mode=ro``: for a backup copy, which must stay
    exactly as it is. sqlite3 errors raised inside the block become taskyard errors.
    """
    path = Path(path)
    require_file(path)
    try:
        if read_only:
            conn = sqlite3.connect(
                f"{path.absolute().as_uri()}?mode=ro",
                uri=True,
                timeout=busy_timeout,
                isolation_level=None,
            )
        else:
            conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if schema.stored_version(conn, path) == 0:
            raise StoreUnavailable(f"{path} is an empty database, not a taskyard queue yet")
        schema.check_columns(conn, path)
        yield conn
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc
    finally:
        conn.close()


def hold_exclusive_lock(
    path: Path, *, seconds: float, locked: threading.Event, release: threading.Event
) -> None:
    """Hold an exclusive lock on the database for ``seconds`` (or until ``release`` is
    set), as a long writer or a stuck process would; sets ``locked`` once it holds it (or
    failed to). Blocks: run it in a thread. For demonstrations of the fallback."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(seconds)
        conn.execute("COMMIT")
    finally:
        locked.set()
        conn.close()


def init_file(
    path: str | os.PathLike[str], *, synchronous: str = "NORMAL", busy_timeout: float = 5.0
) -> InitFigures:
    """Create the queue database at ``path``, or upgrade it to this taskyard's schema;
    idempotent. Refuses (SchemaError) a file that is not a taskyard queue, unchanged."""
    target = Path(path)
    existed = target.exists() and target.stat().st_size > 0
    schema.prepare_file(target)
    try:
        conn = sqlite3.connect(target, isolation_level=None, timeout=busy_timeout)
    except sqlite3.Error as exc:
        raise translate(exc, target) from exc
    try:
        before = schema.stored_version(conn, target)
        applied = schema.open_queue(
            conn, target, synchronous=synchronous, busy_timeout=busy_timeout
        )
    except sqlite3.Error as exc:
        raise translate(exc, target) from exc
    finally:
        conn.close()
    return InitFigures(
        location=str(target),
        created=not existed or before == 0,
        from_version=before,
        to_version=schema.SCHEMA_VERSION,
        applied=applied,
    )


# -- reads ----------------------------------------------------------------------------------


def _filters(statuses: Sequence[TaskStatus] | None, task_type: str | None) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if statuses is not None:
        where.append("status IN (SELECT value FROM json_each(?))")
        params.append(json.dumps([str(status) for status in statuses]))
    if task_type is not None:
        where.append("type = ?")
        params.append(task_type)
    return (" WHERE " + " AND ".join(where)) if where else "", params


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    """Tasks per status (every status, 0 when none)."""
    counts = dict.fromkeys(STATUSES, 0)
    for status, count in conn.execute(
        "SELECT status, COUNT(*) FROM taskyard_tasks GROUP BY status"
    ):
        counts[str(status)] = int(count)
    return counts


def _json_object(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def workers(conn: sqlite3.Connection) -> list[WorkerRecord]:
    """The workers' heartbeat records, oldest start first."""
    return [
        WorkerRecord(worker_id, hostname, pid, started_at, heartbeat, _json_object(info))
        for worker_id, hostname, pid, started_at, heartbeat, info in conn.execute(
            "SELECT worker_id, hostname, pid, started_at, last_heartbeat, info"
            " FROM taskyard_workers ORDER BY started_at, worker_id"
        )
    ]


def storage_info(conn: sqlite3.Connection, path: Path) -> StorageInfo:
    version = conn.execute("SELECT MAX(version) FROM taskyard_schema_version").fetchone()[0]
    return StorageInfo(
        path=str(path),
        size_bytes=file_size(path),
        wal_bytes=file_size(wal_path(path)),
        schema_version=int(version or 0),
        page_size=int(conn.execute("PRAGMA page_size").fetchone()[0]),
        page_count=int(conn.execute("PRAGMA page_count").fetchone()[0]),
        freelist_count=int(conn.execute("PRAGMA freelist_count").fetchone()[0]),
    )


def read_figures(
    conn: sqlite3.Connection, path: Path, *, now: float, window: float
) -> QueueFigures:
    """The queue's figures at ``now``, read in one read transaction (one consistent
    picture while workers keep writing). A plain function on a sqlite3 connection."""
    conn.execute("BEGIN")
    try:
        return _figures(conn, path, now, window)
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _figures(conn: sqlite3.Connection, path: Path, now: float, window: float) -> QueueFigures:
    by_type: dict[str, dict[str, int]] = {}
    for task_type, status, count in conn.execute(
        "SELECT type, status, COUNT(*) FROM taskyard_tasks GROUP BY type, status"
    ):
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
    finished_by_type: dict[str, dict[str, int]] = {}
    retried = retries = 0
    for task_type, status, count, retried_here, retries_here in conn.execute(
        "SELECT type, status, COUNT(*), SUM(attempts > 1), SUM(MAX(attempts - 1, 0))"
        " FROM taskyard_tasks WHERE finished_at >= ? AND status IN"
        " ('completed', 'failed', 'cancelled') GROUP BY type, status",
        (since,),
    ):
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
    return QueueFigures(
        now=now,
        window=window,
        depth_by_type=by_type,
        queued_due=due,
        queued_delayed=delayed,
        waiting_retry=waiting_retry,
        oldest_due=None if oldest is None else (oldest[0], oldest[1]),
        expired_leases=expired,
        oldest_expired_lease=oldest_expiry,
        finished_by_type=finished_by_type,
        retried_tasks=retried,
        retries=retries,
        processing_seconds=durations,
        workers=workers(conn),
        storage=storage_info(conn, path),
    )


# -- maintenance ------------------------------------------------------------------------------

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


def _integrity(conn: sqlite3.Connection, quick: bool) -> IntegrityFindings:
    pragma = "quick_check" if quick else "integrity_check"
    try:
        found = [str(row[0]) for row in conn.execute(f"PRAGMA {pragma}(100)")]
    except sqlite3.DatabaseError as exc:  # damaged beyond what the check can walk
        return IntegrityFindings([f"{pragma} stopped: {exc}"], ["not checked"])
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
    return IntegrityFindings(found, broken)


def _pages(conn: sqlite3.Connection) -> int:
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    count = conn.execute("PRAGMA page_count").fetchone()[0]
    return int(size) * int(count)


# -- backups --------------------------------------------------------------------------------


def _copy(
    source: sqlite3.Connection, target_path: Path, progress: ProgressCallback
) -> tuple[dict[str, int], int]:
    """Copy ``source`` into a new file at ``target_path`` from one pinned snapshot.
    Returns the task counts of that snapshot and the pages copied. Runs in the store's
    thread."""
    source.execute("BEGIN")
    try:
        counts = count_by_status(source)  # the read that starts the snapshot copied
        target = sqlite3.connect(target_path, isolation_level=None)
        try:
            pages = [0]

            def step(status: int, remaining: int, total: int) -> None:
                pages[0] = total
                progress(total - remaining, total)

            source.backup(target, pages=STEP_PAGES, progress=step)
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            target.close()
    finally:
        if source.in_transaction:
            source.execute("COMMIT")
    return counts, pages[0]


def verify_backup_file(path: Path) -> BackupCheck:
    """Open a backup read-only and check it (see :meth:`SqliteOperations.verify_backup`)."""
    with read_connection(path, read_only=True) as conn:
        version = schema.stored_version(conn, path)
        try:
            integrity = [str(row[0]) for row in conn.execute("PRAGMA integrity_check(100)")]
        except sqlite3.DatabaseError as exc:  # damaged beyond what the check can walk
            integrity = [f"integrity_check stopped: {exc}"]
        counts = count_by_status(conn) if integrity == ["ok"] else {}
    return BackupCheck(integrity, version, counts)


def _restore_into(
    conn: sqlite3.Connection, backup: Path, progress: ProgressCallback
) -> dict[str, int]:
    """Copy the backup over the live database on ``conn`` (in the store's thread)."""
    try:
        source = sqlite3.connect(f"{backup.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise translate(exc, backup) from exc
    try:

        def step(status: int, remaining: int, total: int) -> None:
            progress(total - remaining, total)

        source.backup(conn, pages=STEP_PAGES, progress=step)
    finally:
        source.close()
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DELETE FROM taskyard_workers")  # heartbeats of the backup's time
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return count_by_status(conn)


# -- the self-test --------------------------------------------------------------------------


def _scratch(conn: sqlite3.Connection) -> dict[str, Any]:
    """Enqueue, claim and complete a scratch task with the store's own statements, then
    delete it; raises (the transaction rolls back) if any step misbehaves."""
    from taskyard.backends.sqlite.store import op_add, op_claim, op_finish

    token = uuid.uuid4().hex
    task_id, task_type = SCRATCH_PREFIX + token, f"taskyard.validate.{token}"
    now = utcnow()
    record = TaskRecord(
        id=task_id,
        type=task_type,
        payload={"validate": token},
        created_at=now,
        updated_at=now,
        run_after=now,
    )
    if op_add([record])(conn) != [task_id]:
        raise IntegrityError("the scratch task was not stored")
    at = now.timestamp()
    claimed = op_claim(1, at, "taskyard-validate", at + 60, frozenset({task_type}))(conn)
    if [claimed_record.id for claimed_record in claimed] != [task_id]:
        raise IntegrityError(f"claiming the scratch task returned {len(claimed)} task(s)")
    outcome = Outcome(
        task_id=task_id,
        lease_token=claimed[0].lease_token or "",
        status=TaskStatus.COMPLETED,
        finished_at=utcnow(),
        result=token,
        result_json=json.dumps(token),
    )
    if op_finish([outcome])(conn) != [True]:
        raise IntegrityError("completing the scratch task was refused")
    row = conn.execute(
        "SELECT status, attempts, result FROM taskyard_tasks WHERE id = ?", (task_id,)
    ).fetchone()
    if row is None or row[0] != "completed" or row[1] != 1 or json.loads(row[2]) != token:
        raise IntegrityError(f"the scratch task reads back as {row!r}")
    conn.execute("DELETE FROM taskyard_tasks WHERE id = ?", (task_id,))
    left = conn.execute(
        "SELECT COUNT(*) FROM taskyard_tasks WHERE id LIKE ?", (SCRATCH_PREFIX + "%",)
    ).fetchone()[0]
    if left:
        raise IntegrityError(f"{left} scratch task(s) left behind")
    return {"task_id": task_id}


# -- the interface ----------------------------------------------------------------------------


class SqliteOperations(StoreOperations):
    """The store operations of :class:`~taskyard.backends.sqlite.SqliteStore`."""

    capabilities = frozenset(
        {
            Capability.DURABLE,
            Capability.MULTI_PROCESS,
            Capability.FILE_MAINTENANCE,
            Capability.FILE_BACKUP,
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
        where, params = _filters(wanted, None)
        sql = f"SELECT {COLUMNS} FROM taskyard_tasks{where} ORDER BY seq"

        def run(conn: sqlite3.Connection) -> list[TaskRecord]:
            return [row_to_record(row) for row in conn.execute(sql, params)]

        return await self.execute_read(run)

    async def count_tasks(
        self, *, statuses: Sequence[TaskStatus] | None = None, task_type: str | None = None
    ) -> int:
        where, params = _filters(statuses, task_type)

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
            f" (SELECT seq FROM taskyard_tasks WHERE {where} LIMIT {int(limit)})"
        )

        def run(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, params).rowcount

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
        done: dict[str, Any] = await self.execute_write(_scratch)
        done["seconds"] = time.perf_counter() - started
        return done

    async def check_integrity(self, *, quick: bool = False) -> IntegrityFindings:
        return await self.execute_read(_integrity, quick)

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

        def run(conn: sqlite3.Connection) -> tuple[int, int, int]:
            busy, frames, done = conn.execute(f"PRAGMA wal_checkpoint({pragma})").fetchone()
            return int(busy), int(frames), int(done)

        busy, frames, done = await self.execute_read(run)
        return CheckpointFigures(bool(busy), frames, done, before, file_size(wal))

    async def vacuum(self) -> tuple[int, int]:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("VACUUM")

        before = await self.execute_read(_pages)
        await self.execute_read(run)  # outside any transaction, as VACUUM must be
        return before, await self.execute_read(_pages)

    async def backup_to(
        self, path: str | os.PathLike[str], *, progress: ProgressCallback = no_progress
    ) -> tuple[dict[str, int], int]:
        return await self.execute_read(_copy, Path(path), progress)

    async def verify_backup(self, path: str | os.PathLike[str]) -> BackupCheck:
        return verify_backup_file(Path(path))

    async def restore_from(
        self, path: str | os.PathLike[str], *, progress: ProgressCallback = no_progress
    ) -> dict[str, int]:
        return await self.execute_read(_restore_into, Path(path), progress)
