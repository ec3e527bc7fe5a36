"""Prometheus metrics: `taskyard metrics` once, and `taskyard worker --metrics-port` live,
both read back with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework import EngineConfig
from taskyard.framework.models import TaskEvent, TaskStatus
from taskyard.ops.metrics import WorkerMetrics

from .conftest import HOUR, Cli, Queue, Worker, task, wait_until


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> sorted labels -> value."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_parse_and_match_the_database(cli: Cli, queue: Queue) -> None:
    queue.add(
        [task("completed", task_type="email", finished_ago=60, duration=d) for d in (1, 2, 3, 4)]
        + [task("failed", task_type="email", finished_ago=60, duration=5, attempts=3)]
        + [task("completed", task_type="resize", finished_ago=2 * HOUR)]
        + [task("queued", task_type="resize", due_ago=100), task("queued", due_ago=-HOUR)]
    )
    queue.heartbeat("host:1", silent_for=2)
    queue.heartbeat("host:2", silent_for=HOUR)
    text = cli.ok("metrics").stdout
    metrics = parse(text)

    in_db = queue.query("SELECT type, status, COUNT(*) FROM taskyard_tasks GROUP BY 1, 2")
    gauges = {
        dict(labels)["type"] + "/" + dict(labels)["status"]: value
        for labels, value in metrics["taskyard_queue_tasks"].items()
        if value
    }
    assert gauges == {f"{t}/{s}": float(n) for t, s, n in in_db}
    assert metrics["taskyard_database_up"][()] == 1.0
    assert metrics["taskyard_queued_due_tasks"][()] == 1.0
    assert metrics["taskyard_queued_delayed_tasks"][()] == 1.0
    assert 99 < metrics["taskyard_oldest_queued_age_seconds"][()] < HOUR
    assert metrics["taskyard_window_failure_ratio"][()] == pytest.approx(1 / 5)
    finished = metrics["taskyard_window_finished_tasks"]
    assert finished[(("status", "completed"), ("type", "email"))] == 4.0
    assert finished[(("status", "completed"), ("type", "resize"))] == 0.0  # two hours ago
    assert metrics["taskyard_window_retried_tasks"][()] == 1.0
    assert metrics["taskyard_window_retry_attempts"][()] == 2.0
    quantiles = metrics["taskyard_task_processing_seconds"]
    assert quantiles[(("quantile", "0.5"),)] == pytest.approx(3.0)
    assert quantiles[(("quantile", "0.99"),)] == pytest.approx(5.0)
    assert metrics["taskyard_task_processing_seconds_count"][()] == 5.0
    assert metrics["taskyard_task_processing_seconds_sum"][()] == pytest.approx(15.0)
    assert metrics["taskyard_workers"] == {(("state", "active"),): 1.0, (("state", "stale"),): 1.0}
    beats = metrics["taskyard_worker_last_heartbeat_timestamp_seconds"]
    assert {dict(labels)["worker_id"] for labels in beats} == {"host:1", "host:2"}
    assert metrics["taskyard_database_size_bytes"][()] == queue.path.stat().st_size
    for family in text_string_to_metric_families(text):  # conventions: counters only end in _total
        assert family.name.startswith("taskyard_")
        assert family.type in ("gauge", "summary")


def test_metrics_of_a_broken_database_say_it_is_down(cli: Cli, queue: Queue) -> None:
    queue.path.write_bytes(b"not a database at all" * 50)
    result = cli("metrics")
    assert result.exit_code == 1
    assert parse(result.stdout)["taskyard_database_up"][()] == 0.0
    assert "not a SQLite database" in result.stderr


def test_a_worker_serves_its_metrics_while_it_works(
    queue: Queue, workers: list[Worker], tmp_path: Path
) -> None:
    worker = Worker(queue.path, "--metrics-port", "0", max_concurrency="4")
    workers.append(worker)
    [address] = [line.split()[-1] for line in worker.lines if "metrics at" in line]
    assert address.startswith("http://127.0.0.1:") and address.endswith("/metrics")

    async def schedule() -> list[str]:
        manager = QueuedTaskManager(EngineConfig(run_worker=False), db_path=queue.path)
        await manager.register_task("work", lambda payload: None)
        async with manager:
            return await manager.schedule_many(
                {"task_type": "work", "payload": {"n": n}} for n in range(40)
            )

    asyncio.run(schedule())

    def scrape() -> dict:
        with urllib.request.urlopen(address, timeout=10) as response:
            return parse(response.read().decode())

    completed = (("status", "completed"), ("type", "work"))
    wait_until(lambda: scrape().get("taskyard_tasks_total", {}).get(completed) == 40.0)
    metrics = scrape()
    assert metrics["taskyard_tasks_total"][(("status", "running"), ("type", "work"))] == 40.0
    assert metrics["taskyard_task_duration_seconds_count"][(("type", "work"),)] == 40.0
    assert metrics["taskyard_queue_tasks"][completed] == 40.0  # the database, read at the scrape
    assert metrics["taskyard_workers"][(("state", "active"),)] == 1.0
    assert metrics["taskyard_worker_concurrency"][()] == 4.0
    assert worker.stop() == 0


def test_worker_metrics_count_transitions_and_time_attempts(tmp_path: Path) -> None:
    manager = QueuedTaskManager(db_path=tmp_path / "q.db")
    metrics = WorkerMetrics(manager)  # no database: only what this process did
    try:
        metrics.on_event(TaskEvent("a", "email", TaskStatus.RUNNING, 1))
        metrics.on_event(TaskEvent("a", "email", TaskStatus.QUEUED, 1, error="retry"))
        metrics.on_event(TaskEvent("a", "email", TaskStatus.RUNNING, 2))
        metrics.on_event(TaskEvent("a", "email", TaskStatus.COMPLETED, 2))
        from prometheus_client import generate_latest

        samples = parse(generate_latest(metrics.registry).decode())
    finally:
        metrics.close()
    assert samples["taskyard_tasks_total"][(("status", "running"), ("type", "email"))] == 2.0
    assert samples["taskyard_tasks_total"][(("status", "completed"), ("type", "email"))] == 1.0
    assert samples["taskyard_task_duration_seconds_count"][(("type", "email"),)] == 2.0
    assert "taskyard_queue_tasks" not in samples
    assert json.dumps(manager.worker_info())  # what the gauges read


def test_without_prometheus_client_the_error_says_how_to_install_it(
    cli: Cli, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    result = cli("metrics")
    assert result.exit_code == 2
    assert "pip install 'taskyard[metrics]'" in result.stderr
    assert cli("status").exit_code == 0  # nothing else needs it
