"""The queries of the store operations: plain functions on a sqlite3 connection, run in
the store's thread by :class:`~taskyard.backends.sqlite.operations.SqliteOperations`."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskyard.backends.sqlite.files import file_size, wal_path
from taskyard.framework.errors import (
    IntegrityError,
)
from taskyard.framework.models import Outcome, TaskRecord, TaskStatus, utcnow
from taskyard.framework.operations import (
    FINISHED,
    STATUSES,
    IntegrityFindings,
    QueueFigures,
    StorageInfo,
    TaskFilter,
    WorkerRecord,
)

SCRATCH_PREFIX = "taskyard-validate-"


# -- reads ----------------------------------------------------------------------------------


def filters(statuses: Sequence[TaskStatus] | None, task_type: str | None) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if statuses is not None:
        where.append("status IN (SELECT value FROM json_each(?))")
        params.append(json.dumps([str(status) for status in statuses]))
    if task_type is not None:
        where.append("type = ?")
        params.append(task_type)
    return (" WHERE " + " AND ".join(where)) if where else "", params


def task_filter_sql(task_filter: TaskFilter) -> tuple[list[str], list[Any]]:
    """The WHERE clauses (ANDed) and parameters of a :class:`TaskFilter`."""
    where: list[str] = []
    params: list[Any] = []
    if task_filter.statuses is not None:
        where.append("status IN (SELECT value FROM json_each(?))")
        params.append(json.dumps([str(status) for status in task_filter.statuses]))
    if task_filter.task_type is not None:
        where.append("type = ?")
        params.append(task_filter.task_type)
    if task_filter.ids is not None:
        where.append("id IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(list(task_filter.ids)))
    if task_filter.since is not None:
        where.append("created_at >= ?")
        params.append(task_filter.since)
    if task_filter.until is not None:
        where.append("created_at < ?")
        params.append(task_filter.until)
    if task_filter.text:
        text = task_filter.text
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append("(payload LIKE ? ESCAPE '\\' OR error LIKE ? ESCAPE '\\')")
        params += [f"%{escaped}%"] * 2
    return where, params


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
        WorkerRecord(worker_id, hostname, pid, started_at, heartbeat, _json_object(info), stop)
        for worker_id, hostname, pid, started_at, heartbeat, info, stop in conn.execute(
            "SELECT worker_id, hostname, pid, started_at, last_heartbeat, info,"
            " stop_requested_at FROM taskyard_workers ORDER BY started_at, worker_id"
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


def depth_by_type_rows(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
    """Running and finished tasks per type and status without reading the table: the
    running through their partial index, the finished through
    ``taskyard_tasks_finished_types`` alone (an index-only scan in its order)."""
    rows: list[tuple[str, str, int]] = conn.execute(  # queued ones: counted by _figures
        "SELECT type, status, COUNT(*) FROM taskyard_tasks WHERE status = 'running' GROUP BY type"
    ).fetchall()
    rows += conn.execute(  # a finished task has its finished_at (an invariant the
        # integrity check holds): counted from taskyard_tasks_finished_types alone
        "SELECT type, status, COUNT(*) FROM taskyard_tasks"
        " INDEXED BY taskyard_tasks_finished_types WHERE finished_at IS NOT NULL"
        " AND status IN ('completed', 'failed', 'cancelled') GROUP BY status, type"
    ).fetchall()
    return rows


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
    for task_type, status, count in depth_by_type_rows(conn):
        by_type.setdefault(task_type, dict.fromkeys(STATUSES, 0))[status] = count
    due = delayed = waiting_retry = 0
    for task_type, count, due_here, retry_here in conn.execute(  # one pass over the queued
        "SELECT type, COUNT(*), SUM(run_after <= ?), SUM(attempts > 0) FROM taskyard_tasks"
        " WHERE status = 'queued' GROUP BY type",
        (now,),
    ):
        by_type.setdefault(task_type, dict.fromkeys(STATUSES, 0))["queued"] = count
        due += due_here
        delayed += count - due_here
        waiting_retry += retry_here
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
        " FROM taskyard_tasks WHERE finished_at >= ? AND +status IN"  # + : by finished_at
        " ('completed', 'failed', 'cancelled') GROUP BY type, status",
        (since,),
    ):
        finished_by_type.setdefault(task_type, dict.fromkeys(FINISHED, 0))[status] = count
        retried += retried_here
        retries += retries_here
    spans = conn.execute(  # +status: read the window through the finished_at index
        "SELECT started_at, finished_at FROM taskyard_tasks WHERE finished_at >= ?"
        " AND +status IN ('completed', 'failed') AND started_at IS NOT NULL",
        (since,),
    ).fetchall()
    durations = [finished - started for started, finished in spans]
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
        first_started=min((started for started, _ in spans), default=None),
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


def integrity(conn: sqlite3.Connection, quick: bool) -> IntegrityFindings:
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


def page_bytes(conn: sqlite3.Connection) -> int:
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    count = conn.execute("PRAGMA page_count").fetchone()[0]
    return int(size) * int(count)


# -- the self-test --------------------------------------------------------------------------


def scratch_cycle(conn: sqlite3.Connection) -> dict[str, Any]:
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
