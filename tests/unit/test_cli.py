"""The command line, through typer's CliRunner (no terminal: plain progress lines)."""

from __future__ import annotations

import io
import itertools
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from taskyard import __version__
from taskyard.backends.memory import InMemoryTaskManager
from taskyard.cli import app
from taskyard.demo import DEMO_PATTERN, plan_demo, run_demo
from taskyard.framework.events import EventBus
from taskyard.framework.models import TaskStatus
from taskyard.testing import fast_config, wait_until


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"taskyard {__version__}"


def test_without_a_command_the_help_lists_the_commands(runner: CliRunner) -> None:
    result = runner.invoke(app, [])
    for command in ("demo", "settings", "version"):
        assert command in result.output


def test_settings_hide_the_dashboard_tokens(runner: CliRunner, monkeypatch) -> None:
    monkeypatch.setenv("TASKYARD_DASHBOARD__TOKEN", "a-secret-of-twenty-chars")
    result = runner.invoke(app, ["settings"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dashboard"]["token"] == "***"
    assert "a-secret-of-twenty-chars" not in result.output


def test_settings_prints_the_effective_settings_as_json(runner: CliRunner) -> None:
    result = runner.invoke(app, ["settings"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["environment"] == "testing"
    assert shown["task_execution"]["backend"] == "in-memory"
    assert shown["task_execution"]["poll_interval"] == 0.05
    assert set(shown) == {
        "environment",
        "task_execution",
        "runs",
        "logging",
        "operations",
        "maintenance",
        "dashboard",
    }


def test_env_option_chooses_the_environment(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--env", "production", "settings"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["environment"] == "production"
    assert shown["logging"]["serialize"] is True


def test_settings_option_layers_a_file_and_hides_passwords(
    runner: CliRunner, tmp_path: Path
) -> None:
    extra = tmp_path / "ops.toml"
    extra.write_text(
        "[testing.task_execution]\nmax_concurrency = 12\n"
        'postgres_dsn = "postgresql://ops:hunter2@db.internal:5432/jobs"\n',
        encoding="utf-8",
    )
    result = runner.invoke(app, ["--settings", str(extra), "settings"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["task_execution"]["max_concurrency"] == 12
    assert shown["task_execution"]["postgres_dsn"] == "postgresql://ops:***@db.internal:5432/jobs"
    assert "hunter2" not in result.output


def test_a_bad_setting_exits_2_naming_the_key(runner: CliRunner) -> None:
    result = runner.invoke(
        app, ["settings"], env={"TASKYARD_TASK_EXECUTION__MAX_CONCURRENCY": "many"}
    )
    assert result.exit_code == 2
    assert "task_execution.max_concurrency = 'many'" in result.stderr
    assert result.stdout == ""


def test_an_unknown_environment_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--env", "staging", "settings"])
    assert result.exit_code == 2
    assert "'staging' is not a settings environment" in result.stderr


def test_the_demo_runs_every_task_to_its_expected_status(runner: CliRunner) -> None:
    result = runner.invoke(app, ["demo", "--tasks", "120", "--concurrency", "20"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "progress: 120/120 finished (100%)" in out
    for task_type in ("resize_image", "send_email", "flaky", "always_fails", "slow"):
        assert task_type in out
    assert "in-memory" in out
    assert "120 of 120" in out
    assert "as expected" in out
    assert "NOT as expected" not in out
    assert "tasks/s" in out
    fired = out.split("periodic schedule (every 0.25 s)")[1].split()[1]
    assert int(fired) >= 3 and "slots fired, each once" in out


def test_the_demo_on_sqlite_keeps_going_through_an_injected_outage(
    runner: CliRunner, tmp_path: Path
) -> None:
    db = tmp_path / "demo.db"
    result = runner.invoke(
        app,
        ["demo", "--tasks", "90", "--inject-outage", "0.5", "--db", str(db)],
        env={"TASKYARD_TASK_EXECUTION__BACKEND": "sqlite"},
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "outage: the database is locked" in out
    assert "sqlite-with-fallback" in out
    assert "as expected" in out
    fallbacks = int(out.split("accepted into memory (fallback)")[1].split()[1])
    moved = int(out.split("moved back into SQLite")[1].split()[1])
    assert fallbacks > 0
    assert moved == fallbacks
    with sqlite3.connect(db) as conn:
        count = "SELECT COUNT(*) FROM taskyard_tasks WHERE type != 'heartbeat'"
        assert conn.execute(count).fetchone()[0] == 90
        # the demo's periodic schedule fired through the outage, then was removed
        assert (
            conn.execute("SELECT COUNT(*) FROM taskyard_tasks WHERE type = 'heartbeat'").fetchone()[
                0
            ]
            >= 3
        )
        assert conn.execute("SELECT COUNT(*) FROM taskyard_schedules").fetchone()[0] == 0


def test_the_outage_demo_needs_a_sqlite_backend(runner: CliRunner) -> None:
    result = runner.invoke(app, ["demo", "--tasks", "20", "--inject-outage", "1"])
    assert result.exit_code == 2
    assert "needs a SQLite backend" in result.stderr


def test_the_demo_refuses_a_backend_whose_settings_are_wrong(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        ["demo", "--tasks", "20"],
        env={
            "TASKYARD_TASK_EXECUTION__BACKEND": "postgres",
            "TASKYARD_TASK_EXECUTION__POSTGRES_DSN": "postgresql://127.0.0.1:5432/test",
            "TASKYARD_TASK_EXECUTION__POSTGRES_SCHEMA": "Not-A-Schema",
        },
    )
    assert result.exit_code == 2
    assert "task_execution.postgres_schema" in result.stderr


def test_the_demo_plan_mixes_every_kind_deterministically() -> None:
    plan = plan_demo(len(DEMO_PATTERN) * 5, seed=3)
    assert plan == plan_demo(len(DEMO_PATTERN) * 5, seed=3)
    kinds = {task.kind for task in plan}
    assert kinds == set(DEMO_PATTERN)
    cancelled = [task for task in plan if task.kind == "cancelled"]
    assert cancelled and all(task.expected is TaskStatus.CANCELLED for task in cancelled)
    assert all(task.delay for task in cancelled)  # held back, so still queued when cancelled
    assert {task.expected for task in plan if task.kind == "always_fails"} == {TaskStatus.FAILED}
    assert len({task.priority for task in plan}) > 1


def test_help_reads_as_written_and_version_is_an_option(runner: CliRunner) -> None:
    result = runner.invoke(app, ["worker", "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    assert "needs taskyard[metrics]" in " ".join(result.stdout.split())  # not eaten as markup
    assert "<bool>" not in result.stdout and "--app MODULE:ATTRIBUTE" in result.stdout
    listing = runner.invoke(app, ["--help"], env={"COLUMNS": "100"}).stdout
    [worker_line] = [line for line in listing.splitlines() if line.split()[:1] == ["worker"]]
    assert "SIGTERM" in worker_line  # the first sentence on its line, not cut at a docstring break
    assert runner.invoke(app, ["--version"]).stdout.startswith("taskyard ")


async def test_the_demo_shows_progress_while_it_is_still_scheduling() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    plan = plan_demo(40, seed=1)
    events = EventBus()

    class Watched(InMemoryTaskManager):
        scheduled = 0

        async def schedule_task(self, *args: Any, **kwargs: Any) -> str:
            self.scheduled += 1
            if self.scheduled == len(plan):  # the last one waits for a progress line
                await wait_until(lambda: "scheduled" in out.getvalue(), timeout=30)
            return await super().schedule_task(*args, **kwargs)

    manager = Watched(fast_config(concurrency=20), events=events)
    result = await run_demo(
        manager, events, plan, backend="in-memory", environment="testing", timeout=60,
        console=console,
    )  # fmt: skip
    assert not result.mismatches()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("progress:")]
    assert any(f"{len(plan) - 1}/{len(plan)} scheduled" in line for line in lines), lines
    assert all(a != b for a, b in itertools.pairwise(lines))  # no line twice
