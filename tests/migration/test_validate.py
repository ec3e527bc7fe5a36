"""`validate`: every check can fail, and the scratch task leaves no trace."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from taskyard.backends.sqlite import SqliteStore
from taskyard.framework.models import TaskRecord
from taskyard.ops.migration import init_database
from taskyard.ops.validate import validate_backend, validate_database


async def add_tasks(db: Path, count: int, *, delay: bool = False) -> None:
    store = SqliteStore(db)
    await store.open()
    try:
        records = [
            TaskRecord(id=f"t{n:05d}", type="job", payload={"n": n, "pad": "x" * 200})
            for n in range(count)
        ]
        if delay:
            for record in records:
                record.run_after = record.run_after.replace(year=2100)
        await store.add(records)
    finally:
        await store.close()


def rows(db: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT * FROM taskyard_tasks ORDER BY seq").fetchall()
    finally:
        conn.close()


def statuses(report) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {check.name: check.status for check in report.checks}


async def test_a_fresh_database_passes_every_check(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    init_database(db)
    report = await validate_database(db)
    assert statuses(report) == {
        "file": "ok",
        "schema": "ok",
        "wal": "ok",
        "integrity": "ok",
        "tasks": "ok",
        "workers": "ok",
        "scratch": "ok",
    }
    assert report.ok and report.exit_code == 0
    assert report.to_dict()["checks"][0]["name"] == "file"
    assert report.lines()[-1] == "result: ok"


async def test_the_scratch_task_leaves_no_trace(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    init_database(db)
    await add_tasks(db, 50, delay=True)
    before = rows(db)
    report = await validate_database(db)
    assert report.check("scratch").status == "ok"
    assert rows(db) == before
    assert report.check("tasks").data["queued"] == 50


async def test_a_missing_database_fails_and_is_not_created(tmp_path: Path) -> None:
    report = await validate_database(tmp_path / "nowhere.db")
    assert statuses(report) == {"file": "fail"}
    assert "taskyard db init" in report.check("file").detail
    assert report.exit_code == 1
    assert not (tmp_path / "nowhere.db").exists()


async def test_a_file_that_is_not_sqlite_fails(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    db.write_text("hello, not a database\n")
    report = await validate_database(db)
    assert statuses(report) == {"file": "fail"}
    assert "not a SQLite database" in report.check("file").detail


async def test_a_foreign_database_fails_the_schema_check(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    report = await validate_database(db)
    assert statuses(report) == {"file": "ok", "schema": "fail"}
    assert "another application" in report.check("schema").detail


async def test_a_database_out_of_wal_mode_fails(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    init_database(db)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    report = await validate_database(db, scratch=False)
    assert report.check("wal").status == "fail"
    assert report.check("scratch").status == "skip"
    assert report.exit_code == 1
    init_database(db)  # db init puts it back
    assert (await validate_database(db, scratch=False)).check("wal").status == "ok"


async def test_a_damaged_database_fails(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    init_database(db)
    await add_tasks(db, 3000)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    with db.open("r+b") as handle:  # scribble over pages in the middle of the file
        for page in range(pages // 2, pages // 2 + 5):
            handle.seek(page * page_size + 100)
            handle.write(b"\xff" * 2000)
    report = await validate_database(db, scratch=False)
    assert report.exit_code == 1
    failed = [check.name for check in report.checks if check.status == "fail"]
    assert failed and set(failed) <= {"integrity", "database", "schema"}


async def test_stale_workers_and_due_work_without_workers_warn(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    init_database(db)
    await add_tasks(db, 3)
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO taskyard_workers (worker_id, hostname, pid, started_at, last_heartbeat)"
        " VALUES ('host:1', 'host', 1, ?, ?)",
        (time.time() - 600, time.time() - 600),
    )
    conn.commit()
    conn.close()
    report = await validate_database(db, stale_after=30)
    workers = report.check("workers")
    assert workers.status == "warn"
    assert workers.data == {"alive": [], "stale": ["host:1"]}
    assert "3 task(s) are due and no worker runs them" in workers.detail
    assert report.exit_code == 0  # warnings do not fail


async def test_in_memory_has_nothing_durable_unless_a_database_was_left(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    report = await validate_backend("in-memory", db_path=db)
    assert statuses(report) == {"backend": "ok"} and report.database is None
    init_database(db)
    await add_tasks(db, 4)
    report = await validate_backend("in-memory", db_path=db)
    assert report.check("workers").status == "warn"
    assert "4 unfinished task(s) wait here" in report.check("workers").detail
    assert report.exit_code == 0


@pytest.mark.parametrize("backend", ["sqlite", "sqlite-with-fallback"])
async def test_the_sqlite_backends_validate_their_file(tmp_path: Path, backend: str) -> None:
    db = tmp_path / "q.db"
    init_database(db)
    report = await validate_backend(backend, db_path=db)
    assert report.ok and report.check("scratch").status == "ok"
    report = await validate_backend("in-memory", db_path=db, canary="sqlite")
    assert report.backend == "in-memory + canary sqlite" and report.check("wal").status == "ok"
