"""`taskyard status`: the table for people, `--json` for machines, checked against what
the database holds (read here with sqlite3 directly)."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

from taskyard.backends.sqlite import SCHEMA_VERSION
from taskyard.framework.models import TaskStatus
from taskyard.ops.inspect import percentile

from .conftest import DAY, HOUR, Cli, Queue, task

STATUSES = ["waiting", "queued", "running", "completed", "failed", "cancelled"]


def nearest_rank(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(Fraction(percent, 100) * len(ordered)) - 1]


def populate(queue: Queue) -> None:
    queue.add(
        [
            task("completed", task_type="email", finished_ago=60 * i, duration=i)
            for i in range(1, 21)
        ]
        + [task("completed", task_type="resize", finished_ago=600, duration=0.5, attempts=2)]
        + [task("failed", task_type="resize", finished_ago=900, attempts=3, error="boom")]
        + [task("failed", task_type="email", finished_ago=2 * HOUR, attempts=3)]  # outside 1 h
        + [task("cancelled", task_type="email", finished_ago=120)]
        + [task("queued", task_type="email", due_ago=20 * DAY, created_ago=20 * DAY)]
        + [task("queued", task_type="email", due_ago=300, created_ago=400)]
        + [task("queued", task_type="resize", due_ago=30)]
        + [task("queued", task_type="resize", due_ago=-HOUR)]  # scheduled for later
        + [task("queued", task_type="email", due_ago=-DAY, attempts=1)]  # a retry, later
    )
    queue.claim(1)  # the first in scheduling order, 20 days late: a worker runs it now
    queue.heartbeat("host-a:1", silent_for=5)
    queue.heartbeat("host-b:2", silent_for=2 * HOUR)


def expected_from_database(queue: Queue, now: float, window: float, stale: float) -> dict:
    depth = dict.fromkeys(STATUSES, 0)
    by_type: dict[str, dict[str, int]] = {}
    for task_type, status, count in queue.query(
        "SELECT type, status, COUNT(*) FROM taskyard_tasks GROUP BY 1, 2"
    ):
        depth[status] += count
        by_type.setdefault(task_type, dict.fromkeys(STATUSES, 0))[status] = count
    queued = queue.query("SELECT id, run_after, attempts FROM taskyard_tasks WHERE status='queued'")
    due = [row for row in queued if row[1] <= now]
    oldest = min(due, key=lambda row: row[1])
    finished = queue.query(
        "SELECT type, status, attempts, started_at, finished_at FROM taskyard_tasks"
        " WHERE finished_at >= ?",
        (now - window,),
    )
    counts = {
        s: sum(1 for r in finished if r[1] == s) for s in ("completed", "failed", "cancelled")
    }
    durations = [r[4] - r[3] for r in finished if r[1] in ("completed", "failed")]
    processed = counts["completed"] + counts["failed"]
    workers = queue.query("SELECT worker_id, last_heartbeat FROM taskyard_workers")
    return {
        "depth": depth,
        "depth_by_type": by_type,
        "queued_due": len(due),
        "queued_delayed": len(queued) - len(due),
        "oldest_queued_id": oldest[0],
        "oldest_queued_age_seconds": now - oldest[1],
        "waiting_retry": sum(1 for row in queued if row[2] > 0),
        "window": {
            **counts,
            "failure_rate": counts["failed"] / processed,
            "success_rate": counts["completed"] / processed,
            # over the time the window covers: since the first of its tasks started
            "throughput_per_second": processed
            / min(window, now - min(r[3] for r in finished if r[1] != "cancelled")),
            "retried_tasks": sum(1 for r in finished if r[2] > 1),
            "retries": sum(r[2] - 1 for r in finished if r[2] > 1),
            "p50": nearest_rank(durations, 50),
            "p95": nearest_rank(durations, 95),
            "p99": nearest_rank(durations, 99),
            "count": len(durations),
        },
        "active": sorted(w for w, beat in workers if now - beat <= stale),
        "stale": sorted(w for w, beat in workers if now - beat > stale),
    }


def test_status_json_matches_what_the_database_holds(cli: Cli, queue: Queue) -> None:
    populate(queue)
    shown = json.loads(cli.ok("status", "--json").stdout)
    now = shown["generated_at_epoch"]
    expected = expected_from_database(queue, now, window=HOUR, stale=60.0)

    assert shown["depth"] == expected["depth"]
    assert shown["tasks"] == sum(expected["depth"].values()) == 29
    assert shown["depth_by_type"] == expected["depth_by_type"]
    assert shown["depth"]["running"] == 1
    assert shown["queued_due"] == expected["queued_due"] == 2
    assert shown["queued_delayed"] == expected["queued_delayed"] == 2
    assert shown["waiting_retry"] == expected["waiting_retry"] == 1
    assert shown["oldest_queued_id"] == expected["oldest_queued_id"]
    assert math.isclose(shown["oldest_queued_age_seconds"], expected["oldest_queued_age_seconds"])
    assert 299 < shown["oldest_queued_age_seconds"] < 400  # waited since due, not since created

    window = shown["window"]
    wanted = expected["window"]
    assert window["seconds"] == HOUR
    for key in ("completed", "failed", "cancelled", "retried_tasks", "retries"):
        assert window[key] == wanted[key], key
    assert (window["completed"], window["failed"], window["cancelled"]) == (21, 1, 1)
    for key in ("failure_rate", "success_rate", "throughput_per_second"):
        assert math.isclose(window[key], wanted[key]), key
    processing = window["processing_seconds"]
    assert processing["count"] == wanted["count"] == 22
    for key in ("p50", "p95", "p99"):
        assert math.isclose(processing[key], wanted[key], abs_tol=1e-6), key
    # 0.5, 1, 1 (the failed one), 2 ... 20: the 11th and the 22nd of 22
    assert math.isclose(processing["p50"], 9.0, abs_tol=1e-6)
    assert math.isclose(processing["p99"], 20.0, abs_tol=1e-6)
    assert window["by_type"]["resize"] == {"completed": 1, "failed": 1, "cancelled": 0}

    assert [w["worker_id"] for w in shown["workers"] if w["state"] == "active"] == expected[
        "active"
    ]
    assert [w["worker_id"] for w in shown["workers"] if w["state"] == "stale"] == expected["stale"]
    assert (shown["workers_active"], shown["workers_stale"]) == (1, 1)
    assert shown["database"]["schema_version"] == SCHEMA_VERSION
    assert shown["database"]["size_bytes"] == queue.path.stat().st_size


def test_status_window_option_changes_the_window(cli: Cli, queue: Queue) -> None:
    queue.add([task("completed", finished_ago=10 * 60), task("completed", finished_ago=30 * 60)])
    short = json.loads(cli.ok("status", "--json", "--window", "15m").stdout)["window"]
    default = json.loads(cli.ok("status", "--json").stdout)["window"]
    configured = json.loads(
        cli.ok("status", "--json", env={"TASKYARD_OPERATIONS__WINDOW": "300"}).stdout
    )["window"]
    assert (short["seconds"], short["completed"]) == (900, 1)
    assert (default["seconds"], default["completed"]) == (HOUR, 2)
    assert (configured["seconds"], configured["completed"]) == (300, 0)
    assert configured["failure_rate"] is None  # nothing processed: no rate, not 0


def test_status_table_shows_the_sections(cli: Cli, queue: Queue) -> None:
    populate(queue)
    output = cli.ok("status").stdout
    for heading in ("queue", "tasks by type", "last 60.0 min", "workers", "database"):
        assert heading in output
    assert "host-a:1" in output and "stale" in output
    assert "resize" in output and "email" in output


def test_status_of_an_empty_queue(cli: Cli) -> None:
    shown = json.loads(cli.ok("status", "--json").stdout)
    assert shown["tasks"] == 0
    assert shown["oldest_queued_age_seconds"] is None
    assert shown["window"]["processing_seconds"]["p99"] is None
    assert shown["workers"] == []


def test_status_of_a_missing_file_fails_without_creating_it(cli: Cli, tmp_path) -> None:
    missing = tmp_path / "nowhere" / "queue.db"
    result = cli("status", env={"TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH": str(missing)})
    assert result.exit_code == 1
    assert "there is no queue database" in result.stderr
    assert not missing.exists()


def test_the_in_memory_backend_has_nothing_to_inspect_from_outside(
    cli: Cli, tmp_path: Path
) -> None:
    # (a queue file left behind by a rollback would be read: tests/migration/test_cli.py)
    env = {
        "TASKYARD_TASK_EXECUTION__BACKEND": "in-memory",
        "TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH": str(tmp_path / "never-made.db"),
    }
    for command in (["status"], ["metrics"], ["health"], ["tasks", "list"], ["backup", "create"]):
        result = cli(*command, env=env)
        assert result.exit_code == 2, command
        assert "nothing to inspect" in result.stderr


def test_percentile_is_the_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 95, 99)] == [50.0, 95.0, 99.0]
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0], 95) == 11.0
    assert TaskStatus.QUEUED in TaskStatus  # the vocabulary the status speaks
