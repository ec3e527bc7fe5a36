"""Quiet by default, and a worker that says what it runs (issue 9, items 6 and 7)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from loguru import logger
from rich.console import Console

from taskyard.backends.memory import InMemoryTaskManager
from taskyard.framework import EngineConfig
from taskyard.ops import render as ops_render
from taskyard.settings import configure_logging, load_settings
from taskyard.worker import load_registrar, serve

from .conftest import Cli, Queue, task


def test_development_logs_no_line_per_task_by_default(tmp_path: Path) -> None:
    log = tmp_path / "dev.log"
    settings = load_settings(environment="development", overrides={"logging.sink": str(log)})
    assert settings.logging.level == "INFO"
    configure_logging(settings)

    async def noop(payload: dict[str, int]) -> None:
        return None

    async def run() -> None:
        async with InMemoryTaskManager(EngineConfig(poll_interval=0.01)) as manager:
            await manager.register_task("noop", noop)
            ids = [await manager.schedule_task("noop", {"n": n}) for n in range(200)]
            for task_id in ids:
                await manager.wait_for(task_id, timeout=30)

    try:
        asyncio.run(run())
    finally:
        configure_logging({"logging": {"enabled": False}})
    lines = log.read_text().splitlines() if log.exists() else []
    assert len(lines) < 5, lines  # was 4 lines a task at DEBUG


def test_a_read_only_command_creates_no_log_file(
    cli: Cli, queue: Queue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue.add([task("queued")])
    monkeypatch.chdir(tmp_path)
    cli.ok("status", env={"TASKYARD_ENV": "production"})  # production logs to taskyard.log
    assert not (tmp_path / "taskyard.log").exists()


def test_one_shot_commands_do_not_repeat_their_output_as_log_lines(
    cli: Cli, queue: Queue, tmp_path: Path
) -> None:
    [failed] = queue.add([task("failed", attempts=3, error="boom")])
    retried = cli.ok("tasks", "retry", failed.id)
    assert failed.id in retried.stdout
    assert "INFO" not in retried.stderr and "queued again" not in retried.stderr
    backup = cli.ok("backup", "create", "--output", str(tmp_path / "b.db"))
    assert "INFO" not in backup.stderr


async def test_the_worker_s_start_line_names_backend_file_concurrency_and_handlers() -> None:
    messages: list[str] = []
    logger.enable("taskyard")
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="INFO")
    stop = asyncio.Event()
    manager = InMemoryTaskManager(EngineConfig(concurrency=7))
    try:
        serving = asyncio.create_task(
            serve(
                manager,
                load_registrar("tests.ops.worker_app:HANDLERS"),
                stop=stop,
                install_signal_handlers=False,
                where="backend sqlite, file /srv/queue.db",
            )
        )
        while not manager.started:
            await asyncio.sleep(0.01)
        stop.set()
        await serving
    finally:
        logger.remove(sink)
        logger.disable("taskyard")
    [started] = [message for message in messages if "worker started" in message]
    assert "backend sqlite, file /srv/queue.db" in started
    assert "concurrency 7" in started and "2 handler(s): gate, work" in started
    assert "<" not in started  # no object repr


def test_worker_app_naming_a_handler_says_what_app_must_name(cli: Cli) -> None:
    result = cli("worker", "--app", "tests.ops.worker_app:work")
    assert result.exit_code == 2, result.output
    assert "--app must name either a mapping of task type to handler" in result.stderr
    assert "Traceback" not in result.output and "subscriptable" in result.stderr


def test_retry_every_failed_task_of_a_type_at_once(cli: Cli, queue: Queue) -> None:
    email = queue.add([task("failed", task_type="email", attempts=3) for _ in range(3)])
    other = queue.add([task("failed", task_type="resize", attempts=3), task("completed")])
    dry = cli.ok("tasks", "retry", "--status", "failed", "--type", "email", "--dry-run")
    assert "would queue again 3 failed task(s) of type email" in dry.stdout
    assert set(queue.statuses().values()) == {"failed", "completed"}
    done = cli.ok("tasks", "retry", "--status", "failed", "--type", "email")
    assert "queued again 3 failed task(s) of type email" in done.stdout
    statuses = queue.statuses()
    assert {statuses[record.id] for record in email} == {"queued"}
    assert [statuses[record.id] for record in other] == ["failed", "completed"]
    assert cli("tasks", "retry").exit_code == 2  # neither an id nor --status
    assert cli("tasks", "retry", "--status", "queued").exit_code == 1  # not retryable


def test_an_export_that_left_finished_tasks_out_mentions_all(
    cli: Cli, queue: Queue, tmp_path: Path
) -> None:
    queue.add([task("completed"), task("failed", attempts=3)])
    result = cli.ok("export", str(tmp_path / "out.jsonl"))
    assert "exported 0 task(s)" in result.stdout
    assert "2 finished task(s)" in result.stdout and "--all" in result.stdout


def test_throughput_divides_by_the_time_the_window_covers(cli: Cli, queue: Queue) -> None:
    # 200 tasks that ran over the last ~3 s of an hour's window
    queue.add([task("completed", finished_ago=0.015 * n, duration=0.01) for n in range(200)])
    shown = json.loads(cli.ok("status", "--json").stdout)["window"]
    assert shown["completed"] == 200
    assert shown["covered_seconds"] < 60  # not the hour
    assert shown["throughput_per_second"] == pytest.approx(200 / shown["covered_seconds"])
    assert shown["throughput_per_second"] > 10  # was 200 / 3600 = 0.06


def test_the_task_table_at_80_columns_says_what_it_left_out_and_cuts_with_an_ellipsis() -> None:
    records = [task("failed", task_type="resize_image", attempts=3, error="E" * 200)]
    narrow = Console(width=80, file=io.StringIO(), color_system=None)
    narrow.print(ops_render.task_table(records, title="tasks", width=80))
    text = narrow.file.getvalue()  # type: ignore[attr-defined]
    header = next(line for line in text.splitlines() if line.strip().startswith("id"))
    for column in ("id", "type", "status", "tries", "error"):
        assert column in header.split(), header
    assert "(updated left out at this width; --json shows every column)" in text
    assert "E…" in text  # the cut error says it was cut
    assert all(len(line) <= 80 for line in text.splitlines())
    wide = Console(width=140, file=io.StringIO(), color_system=None)
    wide.print(ops_render.task_table(records, title="tasks", width=140))
    assert "left out" not in wide.file.getvalue()  # type: ignore[attr-defined]


def test_newest_first_and_one_line_rows_when_not_a_terminal(cli: Cli, queue: Queue) -> None:
    records = queue.add([task("failed", attempts=3, error="x" * 150) for _ in range(5)])
    newest = json.loads(cli.ok("tasks", "list", "--newest-first", "--limit", "2", "--json").stdout)
    assert [t["id"] for t in newest["tasks"]] == [records[4].id, records[3].id]
    last = cli.ok("tasks", "list", "--newest-first", "--limit", "2", "--page", "3", "--json")
    assert [t["id"] for t in json.loads(last.stdout)["tasks"]] == [records[0].id]
    piped = cli.ok("tasks", "list", env={"COLUMNS": "80"}).stdout  # CliRunner: not a terminal
    rows = [line for line in piped.splitlines() if records[0].id in line]
    assert len(rows) == 1 and "x" * 150 in rows[0]  # the whole row, on one line
