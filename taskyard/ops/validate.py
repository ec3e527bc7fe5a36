"""``taskyard validate``: is the queue in a state to be trusted with work?

Checks, in order, each ``ok``, ``warn``, ``fail`` or ``skip``:

``file``       the database exists, is a SQLite file, and it and its folder are writable;
``schema``     it is a taskyard queue at this taskyard's schema version, tables complete;
``wal``        the journal mode is WAL (readers beside writers, crash-safe commits);
``integrity``  ``PRAGMA integrity_check`` says ok;
``tasks``      how many tasks are in each status (information);
``workers``    the workers' heartbeats: alive, stale (died), none while work is due;
``scratch``    a scratch task is enqueued, claimed and completed through the store's own
               statements and deleted, in one transaction that commits: the write path
               works end to end, and the user's tasks hold no trace of it.

A report passes (exit code 0) unless a check failed; warnings do not fail it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taskyard.backends.sqlite import schema
from taskyard.backends.sqlite.errors import translate
from taskyard.backends.sqlite.store import SqliteStore, op_add, op_claim, op_finish
from taskyard.framework.errors import (
    ConfigurationError,
    IntegrityError,
    SchemaError,
    StoreError,
    TaskyardError,
)
from taskyard.framework.models import Outcome, TaskRecord, TaskStatus, utcnow

__all__ = ["Check", "ValidationReport", "scratch_cycle", "validate_backend", "validate_database"]

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
SCRATCH_PREFIX = "taskyard-validate-"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ValidationReport:
    backend: str
    database: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.status != FAIL for check in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def warnings(self) -> int:
        return sum(1 for check in self.checks if check.status == WARN)

    def check(self, name: str) -> Check:
        return next(check for check in self.checks if check.name == name)

    def add(self, name: str, status: str, detail: str, **data: Any) -> Check:
        check = Check(name, status, detail, data)
        self.checks.append(check)
        return check

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "backend": self.backend,
            "database": self.database,
            "warnings": self.warnings,
            "checks": [asdict(check) for check in self.checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def lines(self) -> list[str]:
        where = f" {self.database}" if self.database else ""
        out = [f"taskyard validate: {self.backend}{where}"]
        out += [f"  {c.status:<5} {c.name:<10} {c.detail}" for c in self.checks]
        verdict = "ok" if self.ok else "FAILED"
        if self.warnings:
            verdict += f" ({self.warnings} warning{'s' if self.warnings != 1 else ''})"
        out.append(f"result: {verdict}")
        return out


# -- the database checks -------------------------------------------------------------------


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection that never creates the file."""
    try:
        return sqlite3.connect(
            f"{path.absolute().as_uri()}?mode=rw",
            uri=True,
            timeout=busy_timeout,
            isolation_level=None,
        )
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc


def _check_file(report: ValidationReport, path: Path) -> bool:
    if not path.exists():
        report.add("file", FAIL, f"there is no database at {path}; create it: taskyard db init")
        return False
    try:
        schema.check_header(path)
    except (SchemaError, ConfigurationError, StoreError) as exc:
        report.add("file", FAIL, str(exc))
        return False
    problems = []
    if not os.access(path, os.R_OK | os.W_OK):
        problems.append(f"{path} is not readable and writable by this user")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        problems.append(f"its folder {path.parent} is not writable (SQLite keeps its WAL there)")
    size = path.stat().st_size
    wal = path.with_name(path.name + "-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0
    if problems:
        report.add("file", FAIL, "; ".join(problems), size=size, wal_size=wal_size)
        return False
    report.add("file", OK, f"{size:,} bytes (WAL {wal_size:,} bytes)", size=size, wal_size=wal_size)
    return True


def _check_schema(report: ValidationReport, conn: sqlite3.Connection, path: Path) -> bool:
    try:
        version = schema.stored_version(conn, path)
        if version == 0:
            report.add(
                "schema", FAIL, "an empty database, not a taskyard queue yet: taskyard db init"
            )
            return False
        if version < schema.SCHEMA_VERSION:
            report.add(
                "schema",
                FAIL,
                f"schema version {version}; this taskyard uses {schema.SCHEMA_VERSION}: "
                "upgrade it with taskyard db init",
                version=version,
            )
            return False
        schema.check_columns(conn, path)
    except (SchemaError, sqlite3.Error) as exc:
        error = translate(exc, path) if isinstance(exc, sqlite3.Error) else exc
        report.add("schema", FAIL, str(error))
        return False
    report.add("schema", OK, f"taskyard queue schema version {version}", version=version)
    return True


def _check_wal(report: ValidationReport, conn: sqlite3.Connection) -> None:
    mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    if mode == "wal":
        report.add("wal", OK, "journal_mode = wal", journal_mode=mode)
    else:
        report.add(
            "wal",
            FAIL,
            f"journal_mode = {mode}, not wal: readers would block writers and a crash could "
            "tear a commit; taskyard db init switches it",
            journal_mode=mode,
        )


def _check_integrity(report: ValidationReport, conn: sqlite3.Connection) -> None:
    started = time.perf_counter()
    rows = [row[0] for row in conn.execute("PRAGMA integrity_check(20)")]
    seconds = time.perf_counter() - started
    if rows == ["ok"]:
        report.add("integrity", OK, f"integrity_check: ok ({seconds * 1000:.0f} ms)")
    else:
        report.add(
            "integrity",
            FAIL,
            "integrity_check: "
            + " ".join("; ".join(rows[:5]).split())
            + ": restore the latest backup",
            problems=rows,
        )


def _check_tasks(report: ValidationReport, conn: sqlite3.Connection) -> dict[str, int]:
    counts = dict.fromkeys((str(status) for status in TaskStatus), 0)
    for status, count in conn.execute(
        "SELECT status, COUNT(*) FROM taskyard_tasks GROUP BY status"
    ):
        counts[status] = count
    due = conn.execute(
        "SELECT COUNT(*) FROM taskyard_tasks WHERE status = 'queued' AND run_after <= ?",
        (time.time(),),
    ).fetchone()[0]
    counts_text = ", ".join(f"{count} {status}" for status, count in counts.items())
    report.add("tasks", OK, f"{counts_text}; {due} due now", due=due, **counts)
    counts["due"] = due
    return counts


def _check_workers(
    report: ValidationReport,
    conn: sqlite3.Connection,
    counts: dict[str, int],
    *,
    stale_after: float,
    expect_workers: bool,
) -> None:
    now = time.time()
    rows = conn.execute(
        "SELECT worker_id, last_heartbeat FROM taskyard_workers ORDER BY worker_id"
    ).fetchall()
    alive = [worker for worker, beat in rows if now - beat <= stale_after]
    stale = [worker for worker, beat in rows if now - beat > stale_after]
    data = {"alive": alive, "stale": stale}
    parts = [f"{len(alive)} alive" + (f" ({', '.join(alive)})" if alive else "")]
    if stale:
        parts.append(
            f"{len(stale)} stale (no heartbeat for over {stale_after:g} s: "
            f"{', '.join(stale)}); their tasks come back when their leases expire"
        )
    status = WARN if stale else OK
    unfinished = counts["queued"] + counts["running"]
    if not alive and expect_workers and counts["due"]:
        status = WARN
        parts.append(f"{counts['due']} task(s) are due and no worker runs them: taskyard worker")
    elif not alive and not expect_workers and unfinished:
        status = WARN
        parts.append(
            f"{unfinished} unfinished task(s) wait here; they run once a backend that uses "
            "this database is selected again"
        )
    report.add("workers", status, "; ".join(parts), **data)


def _scratch(conn: sqlite3.Connection) -> dict[str, Any]:
    """Enqueue, claim and complete a scratch task with the store's own statements, then
    delete it; raises (the transaction rolls back) if any step misbehaves."""
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


async def scratch_cycle(store: SqliteStore) -> dict[str, Any]:
    """The ``scratch`` check on an open store; returns what it did, raises StoreError."""
    started = time.perf_counter()
    done: dict[str, Any] = await store.execute_write(_scratch)
    done["seconds"] = time.perf_counter() - started
    return done


async def _check_scratch(
    report: ValidationReport, path: Path, *, busy_timeout: float, synchronous: str
) -> None:
    store = SqliteStore(path, synchronous=synchronous, busy_timeout=busy_timeout)
    try:
        await store.open()
        done = await scratch_cycle(store)
    except TaskyardError as exc:
        report.add("scratch", FAIL, f"enqueue, claim and complete failed: {exc}")
        return
    finally:
        await store.close()
    report.add(
        "scratch",
        OK,
        f"enqueue, claim and complete in {done['seconds'] * 1000:.1f} ms; nothing left behind",
        seconds=done["seconds"],
    )


async def validate_database(
    path: str | os.PathLike[str],
    *,
    backend: str = "sqlite",
    busy_timeout: float = 5.0,
    synchronous: str = "NORMAL",
    stale_after: float = 30.0,
    scratch: bool = True,
    expect_workers: bool = True,
    report: ValidationReport | None = None,
) -> ValidationReport:
    """Run every check on the queue database at ``path``; never creates it."""
    target = Path(path)
    report = report or ValidationReport(backend=backend, database=str(target))
    if not _check_file(report, target):
        return report
    try:
        conn = _connect(target, busy_timeout)
    except StoreError as exc:
        report.add("schema", FAIL, str(exc))
        return report
    try:
        if not _check_schema(report, conn, target):
            return report
        _check_wal(report, conn)
        _check_integrity(report, conn)
        counts = _check_tasks(report, conn)
        _check_workers(report, conn, counts, stale_after=stale_after, expect_workers=expect_workers)
    except sqlite3.Error as exc:
        report.add("database", FAIL, str(translate(exc, target)))
        return report
    finally:
        conn.close()
    if scratch:
        await _check_scratch(report, target, busy_timeout=busy_timeout, synchronous=synchronous)
    else:
        report.add("scratch", SKIP, "not run (--no-scratch)")
    return report


async def validate_backend(
    backend: str,
    *,
    db_path: str | os.PathLike[str],
    canary: str | None = None,
    busy_timeout: float = 5.0,
    synchronous: str = "NORMAL",
    stale_after: float = 30.0,
    scratch: bool = True,
) -> ValidationReport:
    """Validate what the settings select: the SQLite database of the SQLite backends (or
    of a canary's SQLite side). On the in-memory backend there is nothing durable to
    check; a database left at ``db_path`` (after a rollback) is checked all the same,
    since its tasks wait there to be picked up again."""
    uses_sqlite = any(name.startswith("sqlite") for name in (backend, canary or ""))
    label = backend if canary is None else f"{backend} + canary {canary}"
    report = ValidationReport(backend=label, database=str(db_path))
    if uses_sqlite:
        return await validate_database(
            db_path,
            busy_timeout=busy_timeout,
            synchronous=synchronous,
            stale_after=stale_after,
            scratch=scratch,
            report=report,
        )
    report.add(
        "backend",
        OK,
        f"{backend}: tasks live in the application's memory; nothing durable to check",
    )
    if Path(db_path).exists():
        return await validate_database(
            db_path,
            busy_timeout=busy_timeout,
            synchronous=synchronous,
            stale_after=stale_after,
            scratch=scratch,
            expect_workers=False,
            report=report,
        )
    report.database = None
    return report
