"""`taskyard health`: exit 0 ok, 1 degraded, 2 down, each from a situation that causes it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from taskyard.backends.sqlite.store import SqliteStore
from taskyard.ops.health import HealthState, HealthThresholds, check_health

from .conftest import DAY, HOUR, Cli, Queue, task


def health(cli: Cli, **env: str) -> tuple[int, dict]:
    result = cli("health", "--json", env={f"TASKYARD_{k.upper()}": v for k, v in env.items()})
    return result.exit_code, json.loads(result.stdout)


def failing_checks(report: dict) -> list[str]:
    return [check["name"] for check in report["checks"] if check["state"] != "ok"]


def test_a_working_queue_is_ok(cli: Cli, queue: Queue) -> None:
    queue.add([task("completed", finished_ago=60 * i) for i in range(1, 30)])
    queue.add([task("failed", finished_ago=120)])  # one failure in 30 is not a problem
    queue.add([task("queued", due_ago=5)])  # just arrived
    queue.heartbeat("host:1", silent_for=1)
    code, report = health(cli)
    assert code == 0, report
    assert report["state"] == "ok" and report["reasons"] == []
    result = cli("health")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "ok"


def test_a_backlog_no_worker_takes_is_degraded(cli: Cli, queue: Queue) -> None:
    queue.add([task("queued", due_ago=HOUR)])  # scheduled an hour ago; nothing ran it
    code, report = health(cli)
    assert code == 1
    assert failing_checks(report) == ["oldest_queued_age"]
    assert "has waited 60.0 min" in report["reasons"][0]
    # the threshold comes from the settings: a day is fine, 0 turns the check off
    assert health(cli, operations__max_oldest_queued_age=str(DAY))[0] == 0
    assert health(cli, operations__max_oldest_queued_age="0")[0] == 0


def test_a_task_scheduled_for_later_is_not_late(cli: Cli, queue: Queue) -> None:
    queue.add([task("queued", due_ago=-DAY, created_ago=DAY)])
    assert health(cli)[0] == 0


def test_many_failures_in_the_window_are_degraded(cli: Cli, queue: Queue) -> None:
    queue.add([task("completed", finished_ago=60) for _ in range(18)])
    queue.add([task("failed", finished_ago=60, attempts=3) for _ in range(12)])  # 40 %
    code, report = health(cli)
    assert code == 1
    assert failing_checks(report) == ["failure_rate"]
    assert "12 of 30 tasks" in report["reasons"][0]
    assert health(cli, operations__max_failure_rate="0.5")[0] == 0
    assert health(cli, operations__failure_rate_min_tasks="31")[0] == 0  # too few to judge


def test_old_failures_outside_the_window_do_not_count(cli: Cli, queue: Queue) -> None:
    queue.add([task("failed", finished_ago=2 * HOUR, attempts=3) for _ in range(30)])
    assert health(cli)[0] == 0


def test_a_crashed_worker_is_degraded(cli: Cli, queue: Queue) -> None:
    queue.heartbeat("host:1", silent_for=1)
    queue.heartbeat("host:2", silent_for=10 * 60)  # crashed ten minutes ago
    code, report = health(cli)
    assert code == 1
    assert failing_checks(report) == ["stale_workers"]
    assert "host:2" in report["reasons"][0] and "host:1" not in report["reasons"][0]
    assert health(cli, operations__max_stale_workers="1")[0] == 0


def test_leases_nobody_recovers_are_degraded(cli: Cli, queue: Queue) -> None:
    queue.add([task("queued", due_ago=DAY) for _ in range(2)])
    queue.claim(2, lease_expired_ago=10 * 60)  # the worker died; no other worker runs
    code, report = health(cli)
    assert code == 1
    assert "expired_leases" in failing_checks(report)
    assert "2 running task(s)" in " ".join(report["reasons"])
    cli.ok("maintenance", "recover-leases")
    assert "expired_leases" not in failing_checks(health(cli)[1])


def test_a_wal_that_checkpoints_cannot_shrink_is_degraded(cli: Cli, queue: Queue) -> None:
    reader = queue.connect()
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM taskyard_tasks").fetchone()  # holds a snapshot
        queue.add([task("completed", payload={"pad": "x" * 500}) for _ in range(400)])
        code, report = health(cli, operations__max_wal_bytes=str(64 * 1024))
        assert code == 1
        assert failing_checks(report) == ["wal_size"]
    finally:
        reader.close()
    cli.ok("maintenance", "checkpoint", "--mode", "truncate")
    assert health(cli, operations__max_wal_bytes=str(64 * 1024))[0] == 0


def test_a_file_that_is_not_a_database_is_down(cli: Cli, queue: Queue) -> None:
    queue.path.write_bytes(b"these are the minutes of the meeting\n" * 100)
    code, report = health(cli)
    assert code == 2
    assert report["state"] == "down"
    assert "not a SQLite database" in report["reasons"][0]
    assert queue.path.read_bytes().startswith(b"these are the minutes")  # left unchanged


def test_a_missing_database_is_down(cli: Cli, tmp_path: Path) -> None:
    result = cli("health", env={"TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH": str(tmp_path / "x.db")})
    assert result.exit_code == 2
    assert "down" in result.stdout and "there is no queue database" in result.stdout
    assert not (tmp_path / "x.db").exists()


def test_a_database_of_another_application_is_down(cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "crm.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    result = cli("health", env={"TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH": str(other)})
    assert result.exit_code == 2
    assert "another application" in result.stdout


def test_a_spill_file_left_by_the_fallback_backend_is_degraded(cli: Cli, queue: Queue) -> None:
    spill = queue.path.with_name(queue.path.name + ".spill.jsonl")
    spill.write_text('{"format": "taskyard-spill", "version": 1, "tasks": 3}\n', "utf-8")
    code, report = health(cli)
    assert code == 1
    assert failing_checks(report) == ["spill_files"]
    assert "3 task(s)" in report["reasons"][0]


def test_the_python_api_gives_the_same_verdict(queue: Queue) -> None:
    queue.add([task("queued", due_ago=HOUR)])

    async def judge(thresholds: HealthThresholds) -> tuple[HealthState, int, tuple[str, str]]:
        report = await check_health(SqliteStore(queue.path), thresholds, spills_of=queue.path)
        assert report.status is not None
        store = SqliteStore(queue.path)
        await store.open()
        try:
            return report.state, report.status.queued_due, await store.health()
        finally:
            await store.close()

    assert asyncio.run(judge(HealthThresholds())) == (HealthState.DEGRADED, 1, ("ok", ""))
    relaxed = HealthThresholds(max_oldest_queued_age=2 * HOUR)
    assert asyncio.run(judge(relaxed))[0] is HealthState.OK  # the store answers either way
