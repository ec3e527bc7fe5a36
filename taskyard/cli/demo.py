"""``taskyard demo``: a few thousand tasks on the configured backend, then a report."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from taskyard.cli.root import (
    CliState,
    app,
    cli_state,
    configuration_failure,
    setup_logging,
)
from taskyard.demo import DEMO_OVERRIDES, Outage, plan_demo, print_report, run_demo
from taskyard.framework.engine import TaskEngine
from taskyard.framework.errors import ConfigurationError
from taskyard.providers import Container
from taskyard.settings import (
    environment_of,
)


# -- the demo -------------------------------------------------------------------------------
@app.command()
def demo(
    ctx: typer.Context,
    tasks: Annotated[int, typer.Option("--tasks", min=1, help="How many tasks.")] = 3000,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Handlers running at once.")
    ] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the task mix.")] = 7,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for every task to finish.")
    ] = 120.0,
    log_level: Annotated[
        str, typer.Option(help="taskyard's log level during the demo (when logging is on).")
    ] = "ERROR",
    db: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="Database file for the SQLite backends; default: a temporary file "
            "removed afterwards.",
        ),
    ] = None,
    inject_outage: Annotated[
        float,
        typer.Option(
            min=0,
            help="Hold an exclusive lock on the database for this many seconds while the "
            "demo runs, to show sqlite-with-fallback keep going (turns the fallback on).",
        ),
    ] = 0.0,
) -> None:
    """Schedule a few thousand tasks of several types on the backend the settings
    select, run them, and report. Exit status 0 when every task ended as expected."""
    with tempfile.TemporaryDirectory(prefix="taskyard-demo-") as scratch:
        run_demo_command(
            cli_state(ctx),
            tasks=tasks,
            concurrency=concurrency,
            seed=seed,
            timeout=timeout,
            log_level=log_level,
            db=db or Path(scratch) / "demo.db",
            inject_outage=inject_outage,
        )


def run_demo_command(
    state: CliState,
    *,
    tasks: int,
    concurrency: int,
    seed: int,
    timeout: float,
    log_level: str,
    db: Path,
    inject_outage: float = 0.0,
) -> None:
    overrides: dict[str, Any] = {
        "task_execution": {
            **DEMO_OVERRIDES["task_execution"],
            "max_concurrency": concurrency,
            "queue_db_path": str(db),
        },
        "logging": {"level": log_level},
    }
    if inject_outage:
        # the outage only shows through the fallback, and should switch over quickly
        overrides["task_execution"]["queue_fallback_enabled"] = True
        overrides["task_execution"]["sqlite_busy_timeout"] = 0.1
    try:
        settings = state.settings(overrides)
        setup_logging(settings)
        container = Container(settings=settings)
        if inject_outage and not container.backend().startswith("sqlite"):
            raise ConfigurationError(
                f"--inject-outage needs a SQLite backend, and task_execution.backend is "
                f"{container.backend()!r}; run with TASKYARD_TASK_EXECUTION__BACKEND=sqlite"
            )
        manager = container.task_manager()
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc
    console = Console()
    events = manager.events if isinstance(manager, TaskEngine) else container.events()
    result = asyncio.run(
        run_demo(
            manager,
            events,
            plan_demo(tasks, seed),
            backend=container.backend(),
            environment=environment_of(settings),
            timeout=timeout,
            console=console,
            outage=Outage(db, inject_outage) if inject_outage else None,
        )
    )
    problems = result.mismatches()
    print_report(console, result, problems)
    if problems or result.timed_out:
        raise typer.Exit(1)
