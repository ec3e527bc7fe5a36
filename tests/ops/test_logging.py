"""Logging with loguru: every transition with task id, type and attempt; production
writes JSON lines to a rotated file, development readable lines to stderr."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from taskyard.backends.memory import InMemoryTaskManager
from taskyard.framework import EngineConfig, RetryPolicy
from taskyard.ops import tasks as ops_tasks
from taskyard.settings import configure_logging, load_settings

from .conftest import DAY, Cli, Queue, task


def test_every_transition_is_logged_with_id_type_and_attempt() -> None:
    records: list[dict[str, Any]] = []
    logger.enable("taskyard")
    handler = logger.add(
        lambda message: records.append(message.record), level="DEBUG", filter="taskyard"
    )
    attempts: list[int] = []

    async def flaky(payload: dict[str, Any]) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("upstream down")
        return "ok"

    async def run() -> str:
        manager = InMemoryTaskManager(
            EngineConfig(poll_interval=0.01, retry=RetryPolicy(initial=0.01, jitter=0))
        )
        await manager.register_task("fetch", flaky)
        async with manager:
            task_id = await manager.schedule_task("fetch", {"url": "x"})
            await manager.wait_for(task_id, timeout=30)
        return task_id

    try:
        task_id = asyncio.run(run())
    finally:
        logger.remove(handler)
        logger.disable("taskyard")
    transitions = [
        (r["extra"]["status"], r["extra"]["attempt"], r["extra"]["task_type"])
        for r in records
        if r["extra"].get("task_id") == task_id
    ]
    assert transitions == [
        ("queued", 0, "fetch"),
        ("running", 1, "fetch"),
        ("queued", 1, "fetch"),  # the retry
        ("running", 2, "fetch"),
        ("completed", 2, "fetch"),
    ]
    messages = [r["message"] for r in records if r["extra"].get("task_id") == task_id]
    assert messages[-1] == f"taskyard task {task_id} (fetch) attempt 2: completed"


def test_production_writes_json_lines_to_a_rotated_file(
    cli: Cli, queue: Queue, tmp_path: Path
) -> None:
    records = queue.add([task("queued", due_ago=-DAY) for _ in range(3)])
    log = tmp_path / "logs" / "taskyard.log"
    env = {"TASKYARD_LOGGING__SINK": str(log), "TASKYARD_LOGGING__ROTATION": "200 B"}
    for record in records:
        cli.ok("--env", "production", "tasks", "cancel", record.id, env=env)
    files = sorted(log.parent.iterdir())
    assert len(files) >= 2  # rotated: each JSON line is larger than 200 bytes
    lines = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    cancelled = {line["record"]["message"] for line in lines}
    for record in records:
        assert f"taskyard task {record.id} cancelled by an operator (was queued)" in cancelled
    assert {line["record"]["level"]["name"] for line in lines} == {"INFO"}


def test_development_writes_readable_lines_to_stderr(
    queue: Queue, capsys: pytest.CaptureFixture[str]
) -> None:
    [record] = queue.add([task("failed", attempts=3)])
    configure_logging(load_settings(environment="development"))

    async def retry() -> None:
        async with queue.store() as store:
            await ops_tasks.retry_task(store, record.id)

    try:
        asyncio.run(retry())
    finally:
        configure_logging({"logging": {"enabled": False}})
    [line] = [line for line in capsys.readouterr().err.splitlines() if record.id in line]
    assert "| INFO     | taskyard.ops.tasks" in line
    assert line.rstrip().endswith(f"taskyard task {record.id} (work) queued again by an operator")
    assert not line.startswith("{")
