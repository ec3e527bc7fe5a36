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

On PostgreSQL (:func:`validate_store`) the file and WAL checks give way to the server:
``schema`` (the queue's schema is there, at this taskyard's version), ``integrity``
(every index valid, taskyard's invariants), then ``tasks``, ``workers`` and ``scratch``
as above (the scratch task's transaction is rolled back).

A report passes (exit code 0) unless a check failed; warnings do not fail it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taskyard.backends.sqlite import SqliteStore
from taskyard.backends.sqlite.validation import (
    FAIL,
    OK,
    SKIP,
    WARN,
    FileReading,
    check_database_file,
)
from taskyard.framework.errors import TaskyardError
from taskyard.framework.models import TaskStatus
from taskyard.framework.operations import StoreOperations

__all__ = ["Check", "ValidationReport", "validate_backend", "validate_database", "validate_store"]


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


def _check_tasks(report: ValidationReport, reading: FileReading) -> dict[str, int]:
    counts = dict.fromkeys((str(status) for status in TaskStatus), 0)
    counts.update(reading.counts)
    counts_text = ", ".join(f"{count} {status}" for status, count in counts.items())
    report.add("tasks", OK, f"{counts_text}; {reading.due} due now", due=reading.due, **counts)
    counts["due"] = reading.due
    return counts


def _check_workers(
    report: ValidationReport,
    reading: FileReading,
    counts: dict[str, int],
    *,
    stale_after: float,
    expect_workers: bool,
) -> None:
    now = time.time()
    beats = sorted((worker.worker_id, worker.last_heartbeat) for worker in reading.workers)
    alive = [worker for worker, beat in beats if now - beat <= stale_after]
    stale = [worker for worker, beat in beats if now - beat > stale_after]
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


async def _check_scratch(report: ValidationReport, store: StoreOperations) -> None:
    try:
        await store.open_existing()
        done = await store.self_test()
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
    reading = check_database_file(report.add, target, busy_timeout=busy_timeout)
    if reading is None:
        return report
    counts = _check_tasks(report, reading)
    _check_workers(report, reading, counts, stale_after=stale_after, expect_workers=expect_workers)
    if scratch:
        store = SqliteStore(target, synchronous=synchronous, busy_timeout=busy_timeout)
        await _check_scratch(report, store)
    else:
        report.add("scratch", SKIP, "not run (--no-scratch)")
    return report


async def validate_store(
    store: StoreOperations,
    *,
    report: ValidationReport,
    stale_after: float = 30.0,
    scratch: bool = True,
    expect_workers: bool = True,
    prefix: str = "",
) -> ValidationReport:
    """Run the checks on a store kept on a database server (``store``, unopened; never
    created): its schema, its own consistency check and taskyard's invariants, the
    tasks, the workers' heartbeats and a scratch task. Check names get ``prefix``."""
    try:
        await store.open_existing()
    except TaskyardError as exc:
        report.add(f"{prefix}schema", FAIL, str(exc))
        return report
    try:
        info = await store.storage_info()
        report.add(
            f"{prefix}schema",
            OK,
            f"taskyard queue schema version {info.schema_version}",
            version=info.schema_version,
        )
        findings = await store.check_integrity()
        problems = [line for line in findings.storage if line != "ok"] + findings.invariants
        report.add(
            f"{prefix}integrity",
            FAIL if problems else OK,
            "; ".join(problems) if problems else "ok",
        )
        figures = await store.queue_figures(now=time.time(), window=0.0)
    except TaskyardError as exc:
        report.add(f"{prefix}integrity", FAIL, str(exc))
        return report
    finally:
        await store.close()
    counts: dict[str, int] = {}
    for by_status in figures.depth_by_type.values():
        for status, number in by_status.items():
            counts[status] = counts.get(status, 0) + number
    reading = FileReading(counts, figures.queued_due, figures.workers)
    before = len(report.checks)
    counted = _check_tasks(report, reading)
    _check_workers(report, reading, counted, stale_after=stale_after, expect_workers=expect_workers)
    if scratch:
        await _check_scratch(report, store)
    else:
        report.add("scratch", SKIP, "not run (--no-scratch)")
    for check in report.checks[before:]:
        check.name = prefix + check.name
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
    server_store: StoreOperations | None = None,
    server: str = "",
) -> ValidationReport:
    """Validate what the settings select: the SQLite database of the SQLite backends (or
    of a canary's SQLite side), and ``server_store`` (unopened: the PostgreSQL queue,
    described by ``server``) when the backend or the canary is postgres. On the
    in-memory backend there is nothing durable to check; a database left at ``db_path``
    (after a rollback) is checked all the same, since its tasks wait there to be picked
    up again."""
    uses_sqlite = any(name.startswith("sqlite") for name in (backend, canary or ""))
    uses_server = "postgres" in (backend, canary) and server_store is not None
    label = backend if canary is None else f"{backend} + canary {canary}"
    report = ValidationReport(backend=label, database=str(db_path))
    if uses_server and server_store is not None:
        if not uses_sqlite:
            report.database = server
            return await validate_store(
                server_store, report=report, stale_after=stale_after, scratch=scratch
            )
        await validate_database(
            db_path,
            busy_timeout=busy_timeout,
            synchronous=synchronous,
            stale_after=stale_after,
            scratch=scratch,
            report=report,
        )
        return await validate_store(
            server_store,
            report=report,
            stale_after=stale_after,
            scratch=scratch,
            prefix="postgres ",
        )
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
