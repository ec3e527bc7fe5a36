"""The migration commands through typer's CliRunner, on real database files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskyard.backends.sqlite import SCHEMA_VERSION, SqliteStore
from taskyard.cli import app
from taskyard.framework.models import TaskRecord
from taskyard.settings import load_settings

SQLITE = {"TASKYARD_TASK_EXECUTION__BACKEND": "sqlite"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def on(db: Path) -> dict[str, str]:
    return {**SQLITE, "TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH": str(db)}


def add(db: Path, count: int, **changes: object) -> list[str]:
    async def run() -> list[str]:
        store = SqliteStore(db)
        await store.open()
        try:
            records = [
                TaskRecord(id=f"t{n:04d}", type="job", payload={"n": n}, **changes)  # type: ignore[arg-type]
                for n in range(count)
            ]
            return await store.add(records)
        finally:
            await store.close()

    return asyncio.run(run())


def count(db: Path) -> int:
    async def run() -> int:
        store = SqliteStore(db)
        await store.open()
        try:
            return sum((await store.count_by_status()).values())
        finally:
            await store.close()

    return asyncio.run(run())


def test_db_init_creates_then_changes_nothing(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    first = runner.invoke(app, ["db", "init"], env=on(db))
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == f"created {db} (schema version {SCHEMA_VERSION})"
    again = runner.invoke(app, ["db", "init", "--validate"], env=on(db))
    assert again.exit_code == 0, again.output
    assert f"{db} is already at schema version {SCHEMA_VERSION}; nothing to do" in again.stdout
    assert "  ok    scratch" in again.stdout and again.stdout.rstrip().endswith("result: ok")


def test_db_init_refuses_a_foreign_file(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    db.write_text("not a database")
    result = runner.invoke(app, ["db", "init"], env=on(db))
    assert result.exit_code == 1
    assert "is not a SQLite database" in result.stderr
    assert db.read_text() == "not a database"


def test_export_and_import_move_tasks_between_databases(runner: CliRunner, tmp_path: Path) -> None:
    source, target = tmp_path / "a.db", tmp_path / "b.db"
    ids = add(source, 25)
    exported = runner.invoke(app, ["export", "tasks.jsonl"], env=on(source))
    assert exported.exit_code == 0, exported.output
    assert exported.stdout.strip() == "exported 25 task(s) (25 queued) to tasks.jsonl"
    first = runner.invoke(app, ["import", "tasks.jsonl"], env=on(target))
    assert first.exit_code == 0, first.output
    assert "imported 25 task(s) from tasks.jsonl" in first.stdout
    assert "result: ok" in first.stdout  # validate ran by itself
    second = runner.invoke(app, ["import", "--json", "tasks.jsonl"], env=on(target))
    assert second.exit_code == 0, second.output
    data = json.loads(second.stdout)
    assert (data["import"]["imported"], data["import"]["already_present"]) == (0, 25)
    assert data["validation"]["ok"] is True
    assert count(target) == 25
    again = runner.invoke(app, ["export", "--all", "b.jsonl"], env=on(target))
    assert again.exit_code == 0, again.output
    lines = Path("b.jsonl").read_text().split("\n")[1:-1]
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(ids)


def test_a_damaged_file_is_refused_with_its_line_and_nothing_imported(
    runner: CliRunner, tmp_path: Path
) -> None:
    add(tmp_path / "a.db", 5)
    runner.invoke(app, ["export", "tasks.jsonl"], env=on(tmp_path / "a.db"))
    lines = Path("tasks.jsonl").read_text().split("\n")
    lines[3] = lines[3].replace('"priority":5', '"priority":"urgent"')
    Path("tasks.jsonl").write_text("\n".join(lines))
    result = runner.invoke(app, ["import", "tasks.jsonl"], env=on(tmp_path / "b.db"))
    assert result.exit_code == 1
    assert "tasks.jsonl, line 4: not a valid task: priority must be an integer" in result.stderr
    assert "nothing was imported" in result.stderr
    assert not (tmp_path / "b.db").exists()


def test_export_and_import_refuse_the_in_memory_backend(runner: CliRunner) -> None:
    for command in (["export", "x.jsonl"], ["import", "x.jsonl"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2
        assert "migrate_in_flight" in result.stderr


def test_validate_reports_in_json_and_fails_on_a_missing_database(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["validate", "--json"], env=on(tmp_path / "none.db"))
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["checks"][0]["status"] == "fail"
    runner.invoke(app, ["db", "init"], env=on(tmp_path / "none.db"))
    result = runner.invoke(app, ["validate", "--no-scratch"], env=on(tmp_path / "none.db"))
    assert result.exit_code == 0
    assert "  skip  scratch" in result.stdout


@pytest.fixture
def sqlite_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An application folder whose settings.toml selects sqlite; the working directory's
    files are read (TASKYARD_SETTINGS_FILES unset)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TASKYARD_SETTINGS_FILES")
    (tmp_path / "settings.toml").write_text(
        '[testing.task_execution]\nbackend = "sqlite"\nqueue_db_path = "q.db"\n'
    )
    return tmp_path


def test_rollback_switches_through_settings_local_and_records_why(
    runner: CliRunner, sqlite_app: Path
) -> None:
    ids = add(sqlite_app / "q.db", 12)
    add(sqlite_app / "q.db", 0)
    result = runner.invoke(
        app,
        ["rollback", "--to", "in-memory", "--export-queue-state", "queue.jsonl",
         "--reason", "p99 latency doubled after deploy"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "exported 12 unfinished task(s) (12 queued) to queue.jsonl" in result.stdout
    assert "testing now uses in-memory" in result.stdout
    local = (sqlite_app / "settings.local.toml").read_text()
    assert local.startswith("# Written by `taskyard rollback`.")
    assert "p99 latency doubled after deploy" in local
    assert load_settings().task_execution.backend == "in-memory"
    [entry] = [json.loads(line) for line in Path("q.db.rollbacks.jsonl").read_text().splitlines()]
    assert entry["reason"] == "p99 latency doubled after deploy"
    assert (entry["from_backend"], entry["to_backend"]) == ("sqlite", "in-memory")
    assert entry["at"].endswith("+00:00")
    exported = [
        json.loads(line)["id"] for line in Path("queue.jsonl").read_text().split("\n")[1:-1]
    ]
    assert exported == ids
    assert count(sqlite_app / "q.db") == 12  # the tasks wait in the database
    assert "12 unfinished task(s) wait here" in result.stdout

    back = runner.invoke(app, ["rollback", "--to", "sqlite", "--reason", "fixed in 1.4.2"])
    assert back.exit_code == 0, back.output
    assert load_settings().task_execution.backend == "sqlite"
    history = [
        line
        for line in (sqlite_app / "settings.local.toml").read_text().splitlines()
        if line.startswith("# 20")
    ]
    assert len(history) == 2 and history[1].endswith("fixed in 1.4.2")


def test_rollback_refuses_before_touching_anything(
    runner: CliRunner, sqlite_app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(sqlite_app / "q.db", 3)
    result = runner.invoke(app, ["rollback", "--to", "in-memory", "--reason", "x"], env=SQLITE)
    assert result.exit_code == 1
    assert "TASKYARD_TASK_EXECUTION__BACKEND=sqlite is set here" in result.stderr
    (sqlite_app / "settings.local.toml").write_text('[testing.logging]\nlevel = "INFO"\n')
    result = runner.invoke(app, ["rollback", "--to", "in-memory", "--reason", "x"])
    assert result.exit_code == 1
    assert "was not written by taskyard rollback" in result.stderr
    monkeypatch.setenv("TASKYARD_SETTINGS_FILES", str(sqlite_app / "settings.toml"))
    result = runner.invoke(app, ["rollback", "--to", "in-memory", "--reason", "x"])
    assert result.exit_code == 1
    assert "pass --settings-file" in result.stderr
    result = runner.invoke(app, ["rollback", "--to", "sqlite", "--reason", "x"])
    assert result.exit_code == 1
    assert not Path("q.db.rollbacks.jsonl").exists()


def test_rollback_needs_a_reason(runner: CliRunner, sqlite_app: Path) -> None:
    result = runner.invoke(app, ["rollback", "--to", "in-memory", "--reason", "  "])
    assert result.exit_code == 1
    assert "needs a reason" in result.stderr


def test_settings_local_is_read_after_settings_toml(sqlite_app: Path) -> None:
    assert load_settings().task_execution.backend == "sqlite"
    (sqlite_app / "settings.local.toml").write_text(
        '[testing.task_execution]\nbackend = "in-memory"\n'
    )
    assert load_settings().task_execution.backend == "in-memory"
    assert load_settings().task_execution.queue_db_path == "q.db"


def test_after_a_rollback_inspection_reads_the_file_and_switching_back_says_what_remains(
    runner: CliRunner, sqlite_app: Path
) -> None:
    add(sqlite_app / "q.db", 5)
    away = runner.invoke(app, ["rollback", "--to", "in-memory", "--reason", "incident 7"])
    assert away.exit_code == 0, away.output
    status = runner.invoke(app, ["status", "--json"])
    assert status.exit_code == 0, status.output  # was 2: "backend is in-memory"
    assert json.loads(status.stdout)["depth"]["queued"] == 5
    assert "reads the SQLite queue" in status.stderr and "in-memory" in status.stderr
    listed = runner.invoke(app, ["tasks", "list", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout)["total"] == 5

    back = runner.invoke(app, ["rollback", "--to", "sqlite", "--reason", "fixed"])
    assert back.exit_code == 0, back.output
    local = sqlite_app / "settings.local.toml"
    assert f"rm {local}" in back.stdout and "overrides them" in back.stdout
