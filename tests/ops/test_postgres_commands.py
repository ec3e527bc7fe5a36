"""The operations commands on ``backend = "postgres"``, through the CLI's own runner, on
a real server: the same commands as on SQLite, answered by the PostgreSQL store.

The DSN carries a password (the test server trusts local connections, so any password
is accepted): no command may print it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from typer.testing import CliRunner, Result

from taskyard.backends.postgres import PostgresStore
from taskyard.backends.sqlite import SqliteStore
from taskyard.cli import app
from taskyard.framework.models import TaskRecord, TaskStatus, utcnow
from tests.pg_support import postgres_dsn

from .conftest import task

__all__ = ["postgres_dsn"]
pytestmark = pytest.mark.postgres

SECRET = "n0t-shown-Pw"


def with_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}:{SECRET}@{host}"))


class Queue:
    """One PostgreSQL schema, the settings that select it, and the CLI on it."""

    def __init__(self, dsn: str, tmp_path: Path) -> None:
        self.dsn = with_password(dsn)
        self.schema = "cli_" + uuid.uuid4().hex[:12]
        self.tmp_path = tmp_path
        self.env = {
            "TASKYARD_TASK_EXECUTION__BACKEND": "postgres",
            "TASKYARD_TASK_EXECUTION__POSTGRES_DSN": self.dsn,
            "TASKYARD_TASK_EXECUTION__POSTGRES_SCHEMA": self.schema,
            "TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH": str(tmp_path / "queue.db"),
        }
        self.runner = CliRunner()

    def __call__(self, *args: str, expect: int = 0, **env: str) -> Result:
        result = self.runner.invoke(app, list(args), env={**self.env, **env})
        text = result.stdout + result.stderr
        assert result.exit_code == expect, f"exit {result.exit_code}: {text}"
        assert SECRET not in text
        return result

    def store(self) -> PostgresStore:
        return PostgresStore(self.dsn, schema_name=self.schema, pool_size=2)

    def add(self, records: list[TaskRecord]) -> None:
        async def run() -> None:
            store = self.store()
            await store.open()
            try:
                await store.import_records(records)
            finally:
                await store.close()

        asyncio.run(run())

    def get(self, task_id: str) -> TaskRecord | None:
        async def run() -> TaskRecord | None:
            store = self.store()
            await store.open()
            try:
                return await store.get(task_id)
            finally:
                await store.close()

        return asyncio.run(run())


@pytest.fixture
def queue(postgres_dsn: str, tmp_path: Path) -> Iterator[Queue]:
    made = Queue(postgres_dsn, tmp_path)
    made("db", "init")
    yield made

    async def drop() -> None:
        store = made.store()
        await store.open()
        try:
            await store.drop_schema()
        finally:
            await store.close()

    asyncio.run(drop())


def test_db_init_creates_the_schema_then_changes_nothing(queue: Queue) -> None:
    again = queue("db", "init", "--validate")
    assert "already at schema version" in again.stdout
    assert f"(schema {queue.schema})" in again.stdout and "***" in again.stdout
    assert "result: ok" in again.stdout


def test_commands_on_a_missing_schema_say_to_run_db_init(queue: Queue) -> None:
    result = queue("status", expect=1, TASKYARD_TASK_EXECUTION__POSTGRES_SCHEMA="not_made_yet")
    assert "taskyard db init" in result.stderr


def test_status_and_metrics_report_dead_rows_and_table_sizes(queue: Queue) -> None:
    queue.add([task(), task(TaskStatus.COMPLETED, finished_ago=10), task(TaskStatus.FAILED)])
    status = json.loads(queue("status", "--json").stdout)
    assert status["depth"]["queued"] == 1 and status["tasks"] == 3
    assert status["window"]["completed"] == 1 and status["window"]["failed"] == 1
    assert queue.schema in status["database"]["path"] and status["database"]["wal_bytes"] == 0
    tables = status["tables"]
    assert set(tables) == {"taskyard_tasks", "taskyard_runs", "taskyard_workers"}
    assert tables["taskyard_tasks"]["size_bytes"] > 0
    assert tables["taskyard_tasks"]["dead_rows"] >= 0
    text = queue("status").stdout
    assert "dead rows" in text and "taskyard_tasks" in text and "free pages" not in text
    metrics = queue("metrics").stdout
    assert 'taskyard_table_dead_rows{table="taskyard_tasks"}' in metrics
    assert 'taskyard_table_size_bytes{table="taskyard_tasks"}' in metrics


def test_health_is_ok_on_the_queue_and_down_when_the_server_is_not_there(queue: Queue) -> None:
    ok = json.loads(queue("health", "--json").stdout)
    assert ok["state"] == "ok"
    gone = queue.dsn.replace(":5432/", ":1/")
    down = queue("health", expect=2, TASKYARD_TASK_EXECUTION__POSTGRES_DSN=gone)
    assert "down" in down.stdout and "***" in down.stdout


def test_tasks_list_show_cancel_retry_and_purge(queue: Queue) -> None:
    queued, failed, old = (
        task(),
        task(TaskStatus.FAILED, error="boom"),
        task(TaskStatus.COMPLETED, finished_ago=30 * 86400),
    )
    queue.add([queued, failed, old])
    listed = json.loads(queue("tasks", "list", "--json").stdout)
    assert listed["total"] == 3
    only_failed = json.loads(queue("tasks", "list", "--status", "failed", "--json").stdout)
    assert [t["id"] for t in only_failed["tasks"]] == [failed.id]
    shown = json.loads(queue("tasks", "show", failed.id, "--json").stdout)
    assert (shown["status"], shown["error"]) == ("failed", "boom")
    queue("tasks", "retry", failed.id)
    retried = queue.get(failed.id)
    assert retried is not None and (retried.status, retried.attempts) == (TaskStatus.QUEUED, 0)
    assert "cancelled (it was queued)" in queue("tasks", "cancel", queued.id).stdout
    queue("tasks", "retry", queued.id)  # cancelled tasks can be retried too
    refused = queue("tasks", "retry", queued.id, expect=1)
    assert "only failed or cancelled" in refused.stderr
    dry = queue("tasks", "purge", "--status", "completed", "--older-than", "7d", "--dry-run")
    assert "would delete 1 task(s)" in dry.stdout and queue.get(old.id) is not None
    queue("tasks", "purge", "--status", "completed", "--older-than", "7d")
    assert queue.get(old.id) is None
    assert queue("tasks", "show", "nope", expect=1).stderr


def test_maintenance_prune_vacuum_optimize_recover_and_checks(queue: Queue) -> None:
    old = task(TaskStatus.COMPLETED, finished_ago=30 * 86400)
    expired = task(TaskStatus.QUEUED, due_ago=120)
    queue.add([old, expired, task(TaskStatus.FAILED, finished_ago=60 * 86400)])

    async def lease_that_expired() -> None:
        store = queue.store()
        await store.open()
        try:
            past = utcnow() - timedelta(seconds=60)
            claimed = await store.claim(limit=5, now=past, worker_id="gone", lease_seconds=1)
            assert [r.id for r in claimed] == [expired.id]
        finally:
            await store.close()

    asyncio.run(lease_that_expired())
    prune = queue("maintenance", "prune").stdout
    assert "deleted 1 completed or cancelled task(s)" in prune and "1 failed task(s)" in prune
    assert queue.get(old.id) is None
    recovered = queue("maintenance", "recover-leases").stdout
    assert f"{expired.id} (work): queued" in recovered and "recovered 1 task(s)" in recovered
    vacuum = queue("maintenance", "vacuum").stdout
    assert f'ran VACUUM (ANALYZE) "{queue.schema}".taskyard_tasks' in vacuum
    assert "vacuum: " in vacuum
    assert "ANALYZE" in queue("maintenance", "optimize").stdout
    checked = queue("maintenance", "integrity-check").stdout
    assert "postgres: ok" in checked and "taskyard: ok" in checked
    refused = queue("maintenance", "checkpoint", expect=1)
    assert "checkpoints its write-ahead log by itself" in refused.stderr


def test_backup_create_names_the_pg_dump_command_and_file_commands_refuse(queue: Queue) -> None:
    refused = queue("backup", "create", expect=1)
    message = " ".join(refused.stderr.split())
    assert f"--schema={queue.schema} --format=custom" in message
    assert "pg_dump --dbname=postgresql://postgres@127.0.0.1:5432/" in message
    for args in (("backup", "list"), ("backup", "prune"), ("backup", "restore", "x.db")):
        assert "pg_dump" in queue(*args, expect=2).stderr


def test_export_import_and_validate_between_postgres_and_sqlite(queue: Queue) -> None:
    records = [task(), task(TaskStatus.FAILED, attempts=3), task(TaskStatus.COMPLETED)]
    queue.add(records)
    out = queue.tmp_path / "all.jsonl"
    exported = queue("export", str(out), "--all").stdout
    assert "exported 3 task(s)" in exported
    header = json.loads(out.read_text().splitlines()[0])
    assert header["source"].startswith("postgres:") and SECRET not in out.read_text()
    sqlite = {"TASKYARD_TASK_EXECUTION__BACKEND": "sqlite"}
    imported = queue("import", str(out), **sqlite).stdout
    assert "imported 3 task(s)" in imported and "result: ok" in imported

    async def from_sqlite() -> dict[str, tuple[str, int]]:
        store = SqliteStore(queue.tmp_path / "queue.db")
        await store.open()
        try:
            return {r.id: (str(r.status), r.attempts) for r in await store.snapshot(None)}
        finally:
            await store.close()

    assert asyncio.run(from_sqlite()) == {r.id: (str(r.status), r.attempts) for r in records}
    fresh = {"TASKYARD_TASK_EXECUTION__POSTGRES_SCHEMA": queue.schema + "_b"}
    queue("db", "init", **fresh)
    into_pg = queue("import", str(out), **fresh).stdout
    assert "imported 3 task(s)" in into_pg and f"(schema {queue.schema}_b)" in into_pg
    report = json.loads(queue("validate", "--json", **fresh).stdout)
    assert report["ok"] and report["backend"] == "postgres"
    names = [check["name"] for check in report["checks"]]
    assert names == ["schema", "integrity", "tasks", "workers", "scratch"]
    assert queue("export", str(out), "--all", **fresh).exit_code == 0


def test_a_canary_between_sqlite_and_postgres_is_seen_whole(queue: Queue) -> None:
    canary = {
        "TASKYARD_TASK_EXECUTION__BACKEND": "sqlite",
        "TASKYARD_TASK_EXECUTION__CANARY_BACKEND": "postgres",
        "TASKYARD_TASK_EXECUTION__CANARY_SHARE": "0.5",
    }
    init = queue("db", "init", **canary).stdout
    assert "created" in init and "already at schema version" in init  # the file, the schema
    queue.add([task(), task()])
    status = json.loads(queue("status", "--json", **canary).stdout)
    assert status["depth"]["queued"] == 2  # the schema's tasks, beside the file's (none)
    report = json.loads(queue("validate", "--json", **canary).stdout)
    assert report["ok"], report
    assert "postgres scratch" in [check["name"] for check in report["checks"]]


def test_rollback_from_postgres_drains_exports_and_switches(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue.add([task(), task(TaskStatus.COMPLETED)])
    queue("db", "init", TASKYARD_TASK_EXECUTION__BACKEND="sqlite")  # the file to go back to
    monkeypatch.chdir(queue.tmp_path)
    monkeypatch.delenv("TASKYARD_SETTINGS_FILES")
    (queue.tmp_path / "settings.toml").write_text(
        '[testing.task_execution]\nbackend = "postgres"\nqueue_db_path = "queue.db"\n'
    )
    del queue.env["TASKYARD_TASK_EXECUTION__BACKEND"]
    result = queue(
        "rollback", "--to", "sqlite", "--reason", "back to the file",
        "--export-queue-state", "state.jsonl", "--json",
    )  # fmt: skip
    data = json.loads(result.stdout)
    assert data["rollback"]["export"]["tasks"] == 1
    assert data["rollback"]["to_backend"] == "sqlite" and data["validation"]["ok"]
    assert 'backend = "sqlite"' in (queue.tmp_path / "settings.local.toml").read_text()
    log = (queue.tmp_path / "taskyard.rollbacks.jsonl").read_text()
    assert "back to the file" in log and SECRET not in log
    assert "postgres:" in (queue.tmp_path / "state.jsonl").read_text().splitlines()[0]


def test_a_switch_to_postgres_without_a_dsn_is_refused_before_anything_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TASKYARD_SETTINGS_FILES")
    (tmp_path / "settings.toml").write_text('[testing.task_execution]\nbackend = "sqlite"\n')
    result = CliRunner().invoke(app, ["rollback", "--to", "postgres", "--reason", "grow"])
    assert result.exit_code == 2 and "postgres_dsn is empty" in result.stderr
    assert not (tmp_path / "settings.local.toml").exists()
