"""taskyard's command line: a thin shell over the container and the settings.

``taskyard [--env NAME] [--settings FILE ...] COMMAND``. The root callback loads and
validates the settings once (a bad setting exits with status 2 and a message naming
the key) and turns logging on as the ``logging`` section says.

Adding a command: write a function taking ``ctx: typer.Context`` and decorate it with
``@app.command()`` (or build a ``typer.Typer()`` and ``app.add_typer(sub, name="db")``);
``cli_state(ctx).container()`` gives the container of the chosen environment and files,
``cli_state(ctx).settings()`` the validated settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from dynaconf import Dynaconf
from rich.console import Console
from rich.markup import escape

from taskyard import __version__
from taskyard.demo import DEMO_OVERRIDES, Outage, plan_demo, print_report, run_demo
from taskyard.framework.engine import TaskEngine
from taskyard.framework.errors import ConfigurationError, TaskyardError
from taskyard.framework.events import EventBus
from taskyard.framework.models import TaskRecord, TaskStatus
from taskyard.framework.protocol import TaskManager
from taskyard.ops import backup as ops_backup
from taskyard.ops import database as ops_database
from taskyard.ops import health as ops_health
from taskyard.ops import inspect as ops_inspect
from taskyard.ops import maintenance as ops_maintenance
from taskyard.ops import metrics as ops_metrics
from taskyard.ops import progress as ops_progress
from taskyard.ops import render as ops_render
from taskyard.ops import tasks as ops_tasks
from taskyard.ops import units as ops_units
from taskyard.ops.config import FILE_BACKENDS, OpsConfig
from taskyard.providers import Container, effective_backend
from taskyard.settings import (
    SECTIONS,
    configure_logging,
    environment_of,
    load_settings,
    redact_dsn,
    settings_as_dict,
)

__all__ = ["CliState", "app", "cli_state", "main"]

CONFIGURATION_EXIT_CODE = 2

app = typer.Typer(
    name="taskyard",
    help="taskyard: a durable async task manager. Settings come from TASKYARD_ENV, "
    "settings.toml and TASKYARD_* variables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass
class CliState:
    """What the root options chose; commands read the settings and container from it."""

    environment: str | None = None
    settings_files: list[Path] | None = None
    _settings: Dynaconf | None = field(default=None, repr=False)

    def settings(self, overrides: Mapping[str, Any] | None = None) -> Dynaconf:
        """The validated settings; with ``overrides``, a fresh copy that has them."""
        if overrides:
            return load_settings(
                environment=self.environment,
                settings_files=self.settings_files,
                overrides=overrides,
            )
        if self._settings is None:
            self._settings = load_settings(
                environment=self.environment, settings_files=self.settings_files
            )
        return self._settings

    def container(self, overrides: Mapping[str, Any] | None = None) -> Container:
        return Container(settings=self.settings(overrides))


def cli_state(ctx: typer.Context) -> CliState:
    """The :class:`CliState` of the running command."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` to stderr; returns the Exit to raise."""
    Console(stderr=True).print(f"[bold red]taskyard:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def configuration_failure(exc: ConfigurationError) -> typer.Exit:
    return fail(f"configuration error: {exc}", CONFIGURATION_EXIT_CODE)


@app.callback()
def root(
    ctx: typer.Context,
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            help="Settings environment (development, testing, production); "
            "default: TASKYARD_ENV, else development.",
        ),
    ] = None,
    settings: Annotated[
        list[Path] | None,
        typer.Option(
            "--settings",
            help="A settings file layered over the defaults (repeatable); replaces "
            "./settings.toml and TASKYARD_SETTINGS_FILES.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    state = CliState(environment=env, settings_files=list(settings) if settings else None)
    ctx.obj = state
    if ctx.invoked_subcommand == "version":
        return
    try:
        loaded = state.settings()
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc
    setup_logging(loaded)


def setup_logging(settings: Dynaconf | Mapping[str, Any]) -> None:
    """The CLI owns its process: taskyard's sink replaces loguru's default one."""
    configure_logging(settings, drop_default_sink=True)


def main() -> None:
    """The ``taskyard`` console script."""
    app()


# -- small commands --------------------------------------------------------------------------


@app.command()
def version() -> None:
    """Print taskyard's version."""
    typer.echo(f"taskyard {__version__}")


@app.command("settings")
def show_settings(ctx: typer.Context) -> None:
    """Print the effective settings of the environment as JSON (passwords hidden)."""
    loaded = cli_state(ctx).settings()
    data = settings_as_dict(loaded)
    shown: dict[str, Any] = {"environment": environment_of(loaded)}
    for section in SECTIONS:
        shown[section] = data.get(section, {})
    dsn = shown["task_execution"].get("postgres_dsn")
    if isinstance(dsn, str):
        shown["task_execution"]["postgres_dsn"] = redact_dsn(dsn)
    typer.echo(json.dumps(shown, indent=2, sort_keys=True))


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
    bus = getattr(manager, "events", None)
    events = bus if isinstance(bus, EventBus) else container.events()
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


# -- workers --------------------------------------------------------------------------------


@app.command()
def worker(
    ctx: typer.Context,
    app_path: Annotated[
        str | None,
        typer.Option(
            "--app",
            "-A",
            help="Handlers to run: 'package.module:attribute', a mapping of task type to "
            "handler or a function taking the manager. Default: task_execution.worker_app.",
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Handlers at once (task_execution.max_concurrency).")
    ] = None,
    shutdown_timeout: Annotated[
        float | None,
        typer.Option(min=0, help="Seconds running handlers get at SIGTERM/SIGINT."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve Prometheus metrics at http://127.0.0.1:PORT/metrics while working "
            "(0: a free port; needs taskyard[metrics]).",
        ),
    ] = None,
) -> None:
    """Run tasks from the configured queue until SIGTERM or SIGINT, then stop gracefully:
    no new claims, running handlers finish within the shutdown timeout, the rest go back
    to the queue."""
    from taskyard.worker import load_registrar, serve

    state = cli_state(ctx)
    overrides: dict[str, Any] = {"task_execution.run_worker": True}
    if concurrency is not None:
        overrides["task_execution.max_concurrency"] = concurrency
    try:
        container = state.container(overrides)
        target = app_path or container.config.task_execution.worker_app()
        if not target:
            raise ConfigurationError(
                "no handlers to run: pass --app package.module:attribute or set "
                "task_execution.worker_app"
            )
        registrar = load_registrar(target)
        manager = container.task_manager()
        exporter = None if metrics_port is None else serve_metrics(container, manager, metrics_port)
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc
    try:
        asyncio.run(serve(manager, registrar, shutdown_timeout=shutdown_timeout))
    finally:
        if exporter is not None:
            exporter.close()


# -- operations: status, metrics, health, tasks, maintenance, backups -----------------------
# Thin commands over taskyard.ops; exit status 0 on success, 1 on failure, 2 on a bad
# configuration (health: 0 ok, 1 degraded, 2 down).


def ops_config(ctx: typer.Context) -> OpsConfig:
    """The operations settings; exits with status 2 when they do not describe a queue file."""
    try:
        data = settings_as_dict(cli_state(ctx).settings())
        return OpsConfig.from_sections(data, backend=effective_backend(data["task_execution"]))
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc


@contextlib.contextmanager
def ops_errors() -> Iterator[None]:
    """taskyard errors become a message and exit status 1 (2 for configuration errors)."""
    try:
        yield
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc
    except TaskyardError as exc:
        raise fail(str(exc)) from exc


def serve_metrics(
    container: Container, manager: TaskManager, port: int
) -> ops_metrics.WorkerMetrics:
    """Start serving a worker's metrics on 127.0.0.1 (the queue's too, on the SQLite
    backends); prints the address. Raises ConfigurationError."""
    if not isinstance(manager, TaskEngine):
        raise ConfigurationError(f"{type(manager).__name__} has no worker metrics")
    backend = container.backend()
    config = (
        OpsConfig.from_sections(container.config(), backend=backend)
        if backend in FILE_BACKENDS
        else None
    )
    exporter = ops_metrics.WorkerMetrics(
        manager,
        db_path=None if config is None else config.db_path,
        window=3600.0 if config is None else config.window,
        stale_after=60.0 if config is None else config.stale_after,
        busy_timeout=5.0 if config is None else config.busy_timeout,
    )
    try:
        bound = exporter.serve(port)
    except OSError as exc:
        exporter.close()
        raise ConfigurationError(f"cannot serve metrics on 127.0.0.1:{port}: {exc}") from exc
    print(f"taskyard worker metrics at http://127.0.0.1:{bound}/metrics", flush=True)
    return exporter


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


@app.command("status")
def status_command(
    ctx: typer.Context,
    as_json: JsonOption = False,
    window: Annotated[
        str | None,
        typer.Option(
            help="History behind rates and times, such as 15m or 1h (default: operations.window)."
        ),
    ] = None,
) -> None:
    """The queue at a glance: depth by status and type, the oldest due task, the last
    window's outcomes, rates, throughput, retries and processing times, the workers."""
    config = ops_config(ctx)
    with ops_errors():
        seconds = ops_units.parse_duration(window) if window else config.window
        snapshot = asyncio.run(
            ops_inspect.status_of_file(
                config.db_path,
                window=seconds,
                stale_after=config.stale_after,
                busy_timeout=config.busy_timeout,
            )
        )
    if as_json:
        print_json(snapshot.to_dict())
    else:
        Console().print(ops_render.status_tables(snapshot))


@app.command("metrics")
def metrics_command(ctx: typer.Context) -> None:
    """Print the queue's metrics once, in the Prometheus text format (for a textfile
    collector or a look); `taskyard worker --metrics-port N` serves them live."""
    config = ops_config(ctx)
    with ops_errors():
        collector = ops_metrics.QueueCollector(
            ops_metrics.file_reader(
                config.db_path,
                window=config.window,
                stale_after=config.stale_after,
                busy_timeout=config.busy_timeout,
            )
        )
        text = ops_metrics.render(collector)
    typer.echo(text, nl=False)
    if collector.last_error is not None:
        raise fail(collector.last_error)


@app.command("health")
def health_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Check the queue: exit 0 ok, 1 degraded, 2 down, with the reasons. Thresholds:
    the operations settings."""
    config = ops_config(ctx)
    report = asyncio.run(
        ops_health.check_health(config.db_path, config.thresholds, busy_timeout=config.busy_timeout)
    )
    if as_json:
        print_json(report.to_dict())
    else:
        console = Console(highlight=False, soft_wrap=True)
        for line in ops_render.health_lines(report):
            console.print(line)
    raise typer.Exit(int(report.state))


tasks_app = typer.Typer(
    help="Look at and act on tasks: list, show, cancel, retry, purge.", no_args_is_help=True
)
app.add_typer(tasks_app, name="tasks")

StatusOption = Annotated[
    list[TaskStatus] | None,
    typer.Option("--status", "-s", help="Only tasks in this status (repeatable)."),
]


@tasks_app.command("list")
def tasks_list(
    ctx: typer.Context,
    status: StatusOption = None,
    task_type: Annotated[str | None, typer.Option("--type", "-t", help="Only this type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Tasks per page.")] = 50,
    page: Annotated[int, typer.Option(min=1, help="Which page, from 1.")] = 1,
    as_json: JsonOption = False,
) -> None:
    """Tasks in scheduling order, a page at a time."""
    config = ops_config(ctx)

    async def run() -> tuple[list[Any], int]:
        async with ops_database.open_queue(config.db_path, busy_timeout=config.busy_timeout) as q:
            return await ops_tasks.list_tasks(
                q,
                statuses=status or None,
                task_type=task_type,
                limit=limit,
                offset=(page - 1) * limit,
            )

    with ops_errors():
        records, total = asyncio.run(run())
    pages = max(-(-total // limit), 1)
    if as_json:
        print_json(
            {
                "page": page,
                "pages": pages,
                "total": total,
                "tasks": [ops_tasks.record_details(r) for r in records],
            }
        )
        return
    console = Console()
    console.print(ops_render.task_table(records, title=f"tasks: page {page} of {pages}"))
    console.print(f"{total} matching task(s)", highlight=False)


@tasks_app.command("show")
def tasks_show(ctx: typer.Context, task_id: str, as_json: JsonOption = False) -> None:
    """Everything about one task."""
    config = ops_config(ctx)

    async def run() -> TaskRecord:
        async with ops_database.open_queue(config.db_path, busy_timeout=config.busy_timeout) as q:
            return await ops_tasks.show_task(q, task_id)

    with ops_errors():
        details = ops_tasks.record_details(asyncio.run(run()))
    if as_json:
        print_json(details)
    else:
        Console().print(ops_render.details_table(details))


@tasks_app.command("cancel")
def tasks_cancel(ctx: typer.Context, task_id: str) -> None:
    """Cancel a queued or running task (a running one stops at its worker's next
    heartbeat; its result is discarded)."""
    config = ops_config(ctx)

    async def run() -> TaskStatus:
        async with ops_database.open_queue(config.db_path, busy_timeout=config.busy_timeout) as q:
            return await ops_tasks.cancel_task(q, task_id)

    with ops_errors():
        before = asyncio.run(run())
    typer.echo(f"task {task_id} cancelled (it was {before})")


@tasks_app.command("retry")
def tasks_retry(ctx: typer.Context, task_id: str) -> None:
    """Queue a failed or cancelled task again, due now, its attempts reset."""
    config = ops_config(ctx)

    async def run() -> TaskRecord:
        async with ops_database.open_queue(config.db_path, busy_timeout=config.busy_timeout) as q:
            return await ops_tasks.retry_task(q, task_id)

    with ops_errors():
        record = asyncio.run(run())
    typer.echo(f"task {task_id} ({record.type}) is queued again with its attempts reset")


@tasks_app.command("purge")
def tasks_purge(
    ctx: typer.Context,
    status: Annotated[
        list[TaskStatus],
        typer.Option("--status", "-s", help="completed, failed or cancelled (repeatable)."),
    ],
    older_than: Annotated[
        str, typer.Option(help="Finished longer ago than this: 90m, 12h, 7d, 2w.")
    ],
    task_type: Annotated[str | None, typer.Option("--type", "-t", help="Only this type.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Count, delete nothing.")] = False,
) -> None:
    """Delete finished tasks of the given statuses older than --older-than."""
    config = ops_config(ctx)

    async def run() -> ops_tasks.PurgeResult:
        async with ops_database.open_queue(config.db_path, busy_timeout=config.busy_timeout) as q:
            with ops_progress.progress_reporter("purge", unit="tasks") as progress:
                return await ops_tasks.purge_tasks(
                    q,
                    statuses=status,
                    older_than=ops_units.parse_duration(older_than),
                    task_type=task_type,
                    dry_run=dry_run,
                    progress=progress,
                )

    with ops_errors():
        result = asyncio.run(run())
    verb = "would delete" if dry_run else "deleted"
    count = result.matched if dry_run else result.deleted
    typer.echo(f"{verb} {count} task(s)")


maintenance_app = typer.Typer(
    help="Keep the queue file in shape: checkpoint, vacuum, optimize, integrity-check, "
    "prune, recover-leases.",
    no_args_is_help=True,
)
app.add_typer(maintenance_app, name="maintenance")


@maintenance_app.command("checkpoint")
def maintenance_checkpoint(
    ctx: typer.Context,
    mode: Annotated[
        str, typer.Option(help="passive (never waits), full, restart or truncate.")
    ] = "passive",
) -> None:
    """Copy the WAL into the database file (PRAGMA wal_checkpoint)."""
    config = ops_config(ctx)

    async def run() -> ops_maintenance.CheckpointResult:
        async with ops_database.open_queue(config.db_path, busy_timeout=config.busy_timeout) as q:
            return await ops_maintenance.checkpoint(q, mode)

    with ops_errors():
        result = asyncio.run(run())
    typer.echo(
        f"checkpoint {result.mode}: {result.checkpointed_frames} of {result.wal_frames} WAL "
        f"frame(s) copied; WAL {result.wal_bytes_before} -> {result.wal_bytes_after} bytes"
    )
    if result.busy:
        raise fail(
            f"the {result.mode} checkpoint could not finish: another connection was "
            "reading or writing; try again"
        )


@maintenance_app.command("vacuum")
def maintenance_vacuum(ctx: typer.Context) -> None:
    """Rebuild the file without its free pages (holds the write lock meanwhile; needs free
    disk space about the database's size)."""
    config = ops_config(ctx)

    async def run() -> ops_maintenance.VacuumResult:
        async with ops_database.open_queue(config.db_path, busy_timeout=config.busy_timeout) as q:
            with ops_progress.progress_reporter("vacuum") as progress:
                progress(0, 0)
                return await ops_maintenance.vacuum(q)

    with ops_errors():
        result = asyncio.run(run())
    typer.echo(
        f"vacuum: {ops_units.bytes_text(result.size_before)} -> "
        f"{ops_units.bytes_text(result.size_after)} in {result.seconds:.1f} s"
    )


@maintenance_app.command("optimize")
def maintenance_optimize(ctx: typer.Context) -> None:
    """ANALYZE and PRAGMA optimize: fresh statistics for the query planner."""
    config = ops_config(ctx)

    async def run() -> list[str]:
        async with ops_database.open_queue(config.db_path, busy_timeout=config.busy_timeout) as q:
            return await ops_maintenance.optimize(q)

    with ops_errors():
        done = asyncio.run(run())
    typer.echo("optimize: ran " + " and ".join(done))


@maintenance_app.command("integrity-check")
def maintenance_integrity_check(
    ctx: typer.Context,
    quick: Annotated[bool, typer.Option(help="PRAGMA quick_check: faster, less thorough.")] = False,
) -> None:
    """SQLite's integrity check, then taskyard's own invariants. Exit 1 on a problem."""
    config = ops_config(ctx)

    async def run() -> ops_maintenance.IntegrityResult:
        async with ops_database.open_queue(config.db_path, busy_timeout=config.busy_timeout) as q:
            with ops_progress.progress_reporter("integrity check") as progress:
                progress(0, 0)
                return await ops_maintenance.integrity_check(q, quick=quick)

    with ops_errors():
        result = asyncio.run(run())
    for line in result.sqlite:
        typer.echo(f"sqlite: {line}")
    for line in result.taskyard or ["ok"]:
        typer.echo(f"taskyard: {line}")
    if not result.ok:
        raise typer.Exit(1)


@maintenance_app.command("prune")
def maintenance_prune(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option(help="Count, delete nothing.")] = False,
) -> None:
    """Delete finished tasks past their retention (maintenance.retention_days; failed
    ones after maintenance.failed_retention_days) and long-silent workers' records."""
    config = ops_config(ctx)

    async def run() -> ops_maintenance.PruneResult:
        async with ops_database.open_queue(config.db_path, busy_timeout=config.busy_timeout) as q:
            with ops_progress.progress_reporter("prune", unit="tasks") as progress:
                return await ops_maintenance.prune(
                    q,
                    retention_days=config.retention_days,
                    failed_retention_days=config.failed_retention_days,
                    worker_retention_days=config.worker_retention_days,
                    dry_run=dry_run,
                    progress=progress,
                )

    with ops_errors():
        result = asyncio.run(run())
    verb = "would delete" if dry_run else "deleted"
    finished = result.finished.matched if dry_run else result.finished.deleted
    failed = result.failed.matched if dry_run else result.failed.deleted
    typer.echo(
        f"prune: {verb} {finished} completed or cancelled task(s) older than "
        f"{config.retention_days:g} day(s), {failed} failed task(s) older than "
        f"{config.failed_retention_days:g} day(s), and {len(result.workers)} worker "
        "record(s)"
    )


@maintenance_app.command("recover-leases")
def maintenance_recover_leases(ctx: typer.Context) -> None:
    """Put running tasks whose lease expired back in the queue (or fail them when their
    attempts are spent); workers do this on their own every few seconds."""
    config = ops_config(ctx)

    async def run() -> list[TaskRecord]:
        async with ops_database.open_queue(config.db_path, busy_timeout=config.busy_timeout) as q:
            return await ops_maintenance.recover_leases(q)

    with ops_errors():
        recovered = asyncio.run(run())
    for record in recovered:
        typer.echo(f"{record.id} ({record.type}): {record.status}")
    typer.echo(f"recovered {len(recovered)} task(s)")


backup_app = typer.Typer(
    help="Online backups of the queue file: create, list, restore, prune.", no_args_is_help=True
)
app.add_typer(backup_app, name="backup")


@backup_app.command("create")
def backup_create(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="The backup file (default: a new, dated file in maintenance.backup_dir).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Back up the queue while workers run (SQLite's online backup API), then verify the
    copy (integrity check, schema, task counts)."""
    config = ops_config(ctx)
    destination = output or config.backups / ops_backup.backup_name(config.db_path)

    async def run() -> ops_backup.BackupResult:
        async with ops_database.open_queue(config.db_path, busy_timeout=config.busy_timeout) as q:
            with ops_progress.progress_reporter("backup", unit="pages") as progress:
                return await ops_backup.create_backup(q, destination, progress=progress)

    with ops_errors():
        result = asyncio.run(run())
    if as_json:
        print_json(result.to_dict())
        return
    typer.echo(
        f"backup written to {result.path}: {result.verification.tasks} task(s), "
        f"{ops_units.bytes_text(result.bytes)}, integrity ok, in {result.seconds:.2f} s"
    )


@backup_app.command("list")
def backup_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The backups in maintenance.backup_dir, oldest first."""
    config = ops_config(ctx)
    backups = ops_backup.list_backups(config.db_path, config.backups)
    if as_json:
        print_json([backup.to_dict() for backup in backups])
        return
    Console().print(ops_render.backups_table(backups))
    typer.echo(f"{len(backups)} file(s) in {config.backups}")


@backup_app.command("restore")
def backup_restore(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(dir_okay=False, help="The backup to restore.")],
    force: Annotated[bool, typer.Option(help="Restore even while workers are active.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Replace the queue with a backup (verified first). Refuses while workers are
    active unless --force; the replaced queue is kept in the backup folder."""
    config = ops_config(ctx)

    async def run() -> ops_backup.RestoreResult:
        with ops_progress.progress_reporter("restore", unit="pages") as progress:
            return await ops_backup.restore_backup(
                file,
                config.db_path,
                backup_dir=config.backups,
                stale_after=config.stale_after,
                force=force,
                busy_timeout=config.busy_timeout,
                progress=progress,
            )

    with ops_errors():
        result = asyncio.run(run())
    if as_json:
        print_json(result.to_dict())
        return
    typer.echo(f"{result.database} restored from {result.restored_from}: {result.tasks} task(s)")
    if result.kept_aside is not None:
        typer.echo(f"the replaced queue is kept at {result.kept_aside}")


@backup_app.command("prune")
def backup_prune(
    ctx: typer.Context,
    keep: Annotated[
        int | None,
        typer.Option(
            min=0, help="How many newest backups to keep (default: maintenance.keep_backups)."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="List, delete nothing.")] = False,
) -> None:
    """Delete all but the newest backups (copies kept aside by restores stay)."""
    config = ops_config(ctx)
    with ops_errors():
        doomed = ops_backup.prune_backups(
            config.db_path,
            config.backups,
            keep=config.keep_backups if keep is None else keep,
            dry_run=dry_run,
        )
    verb = "would delete" if dry_run else "deleted"
    for backup in doomed:
        typer.echo(f"{verb} {backup.path}")
    typer.echo(f"{verb} {len(doomed)} backup(s)")


# -- migration and rollback: db init, export, import, rollback, validate --------------------
# Thin commands over taskyard.ops.migration and taskyard.ops.validate. Exit status 0 on
# success, 1 when something failed (a refused file, a failed validation check), 2 on a
# bad configuration. `validate` runs by itself after `db init --validate`, `import` and
# `rollback`, and its exit status becomes theirs.


@dataclass(frozen=True)
class QueueSettings:
    """What the migration commands read from the settings."""

    environment: str
    backend: str
    canary: str | None
    db_path: Path
    synchronous: str
    busy_timeout: float
    lease_seconds: float
    shutdown_timeout: float

    @property
    def uses_database(self) -> bool:
        return any(name.startswith("sqlite") for name in (self.backend, self.canary or ""))


def queue_settings(ctx: typer.Context) -> QueueSettings:
    """The migration commands' settings; exits with status 2 when they are bad."""
    from taskyard.providers import canary_backend, effective_backend

    try:
        loaded = cli_state(ctx).settings()
        section = settings_as_dict(loaded)["task_execution"]
        return QueueSettings(
            environment=environment_of(loaded),
            backend=effective_backend(section),
            canary=canary_backend(section),
            db_path=Path(section["queue_db_path"]),
            synchronous=str(section["sqlite_synchronous"]),
            busy_timeout=float(section["sqlite_busy_timeout"]),
            lease_seconds=float(section["lease_seconds"]),
            shutdown_timeout=float(section["shutdown_timeout"]),
        )
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc


IN_MEMORY_HINT = (
    "the in-memory backend keeps its tasks inside the application's process, where this "
    "command cannot reach them; move them from inside the application with "
    "taskyard.ops.migration.migrate_in_flight(manager, store) (see docs/migration-guide.md)"
)


def validation_of(settings: QueueSettings, *, scratch: bool = True) -> Any:
    """The ValidationReport of what the settings select."""
    from taskyard.ops.validate import validate_backend

    return asyncio.run(
        validate_backend(
            settings.backend,
            canary=settings.canary,
            db_path=settings.db_path,
            busy_timeout=settings.busy_timeout,
            synchronous=settings.synchronous,
            stale_after=settings.lease_seconds,
            scratch=scratch,
        )
    )


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        typer.echo(line)


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


db_app = typer.Typer(help="The queue database: create or upgrade it.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("init")
def db_init(
    ctx: typer.Context,
    validate: Annotated[
        bool, typer.Option("--validate", help="Then run `taskyard validate`.")
    ] = False,
) -> None:
    """Create the database at task_execution.queue_db_path, or upgrade it to this
    taskyard's schema. Running it again changes nothing."""
    from taskyard.framework.errors import TaskyardError
    from taskyard.ops.migration import init_database

    settings = queue_settings(ctx)
    try:
        report = init_database(
            settings.db_path,
            synchronous=settings.synchronous,
            busy_timeout=settings.busy_timeout,
        )
    except TaskyardError as exc:
        raise fail(str(exc)) from exc
    typer.echo(report.describe())
    if validate:
        checked = validation_of(settings)
        echo_lines(checked.lines())
        raise typer.Exit(checked.exit_code)


@app.command("export")
def export_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(dir_okay=False, help="The JSON Lines file to write.")],
    include_finished: Annotated[
        bool, typer.Option("--all", help="Every task, history too (default: unfinished ones).")
    ] = False,
) -> None:
    """Write the queue's unfinished tasks (--all: every task) to FILE as versioned JSON
    Lines, readable by `taskyard import`. One consistent read: safe while workers run."""
    from taskyard.backends.sqlite import SqliteStore
    from taskyard.framework.errors import TaskyardError
    from taskyard.ops.migration import export_tasks

    settings = queue_settings(ctx)
    if not settings.uses_database:
        raise fail(IN_MEMORY_HINT, CONFIGURATION_EXIT_CODE)
    if not settings.db_path.exists():
        raise fail(f"there is no queue database at {settings.db_path}; nothing to export")

    async def run() -> Any:
        store = SqliteStore(
            settings.db_path, synchronous=settings.synchronous, busy_timeout=settings.busy_timeout
        )
        await store.open()
        try:
            return await export_tasks(
                store, file, include_finished=include_finished, source=f"sqlite:{store.path}"
            )
        finally:
            await store.close()

    try:
        summary = asyncio.run(run())
    except TaskyardError as exc:
        raise fail(str(exc)) from exc
    counts = ", ".join(f"{n} {status}" for status, n in summary.by_status.items()) or "none"
    typer.echo(f"exported {summary.tasks} task(s) ({counts}) to {summary.path}")


@app.command("import")
def import_command(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(dir_okay=False, help="A file written by `taskyard export`.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Read the tasks of FILE into the configured queue with their ids, statuses,
    priorities, run_after, attempts and payloads. The whole file is checked first: a
    damaged or foreign file is refused with its line number, and nothing is imported.
    Tasks already present are left alone, so importing twice adds nothing twice."""
    from taskyard.backends.sqlite import SqliteStore
    from taskyard.framework.errors import TaskyardError
    from taskyard.ops.migration import import_records, read_export

    settings = queue_settings(ctx)
    if not settings.uses_database:
        raise fail(IN_MEMORY_HINT, CONFIGURATION_EXIT_CODE)
    try:
        export = read_export(file)
    except TaskyardError as exc:
        raise fail(str(exc)) from exc

    async def run() -> Any:
        store = SqliteStore(
            settings.db_path, synchronous=settings.synchronous, busy_timeout=settings.busy_timeout
        )
        await store.open()
        try:
            return await import_records(store, export.records)
        finally:
            await store.close()

    try:
        report = asyncio.run(run())
    except TaskyardError as exc:
        raise fail(f"{exc}; nothing was imported") from exc
    checked = validation_of(settings)
    if as_json:
        echo_json(
            {"import": {"file": str(file), **report.to_dict()}, "validation": checked.to_dict()}
        )
        raise typer.Exit(checked.exit_code)
    else:
        typer.echo(
            f"imported {report.imported} task(s) from {file} into {settings.db_path}; "
            f"{report.already_present} already present (of {report.read} in the file)"
        )
        if report.conflicts:
            typer.echo(
                f"{len(report.conflicts)} task(s) not imported: another task holds their "
                f"idempotency key ({', '.join(report.conflicts[:5])})"
            )
    echo_lines(checked.lines())
    raise typer.Exit(checked.exit_code)


@app.command("validate")
def validate_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    scratch: Annotated[
        bool,
        typer.Option(
            "--scratch/--no-scratch",
            help="Enqueue, claim and complete a scratch task (deleted in the same commit).",
        ),
    ] = True,
) -> None:
    """Check the queue database: the file, its schema version, WAL mode, integrity, the
    workers' heartbeats, and a scratch enqueue, claim and complete that leaves no trace.
    Exit status 0 when every check passed (warnings allowed), 1 when one failed."""
    report = validation_of(queue_settings(ctx), scratch=scratch)
    if as_json:
        typer.echo(report.to_json())
    else:
        echo_lines(report.lines())
    raise typer.Exit(report.exit_code)


def rollback_settings_file(state: CliState, chosen: Path | None) -> Path:
    """The settings file a rollback writes: one the settings loader reads, last."""
    from taskyard.settings import LOCAL_SETTINGS_FILE, settings_files_in_use

    files, from_cwd = settings_files_in_use(state.settings_files)
    if from_cwd:
        local = Path(LOCAL_SETTINGS_FILE).resolve()
        if chosen is not None and chosen.resolve() != local:
            raise fail(
                f"taskyard reads {LOCAL_SETTINGS_FILE} from the working directory last; "
                f"{chosen} would not be read. Leave out --settings-file, or name the file "
                "in TASKYARD_SETTINGS_FILES"
            )
        return local
    if chosen is None or chosen.resolve() not in files:
        named = ", ".join(str(path) for path in files) or "none"
        raise fail(
            "the settings files come from --settings or TASKYARD_SETTINGS_FILES "
            f"({named}); pass --settings-file naming the one of them taskyard may "
            "write its switch to (list it last)"
        )
    return chosen.resolve()


@app.command("rollback")
def rollback_command(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The backend to switch to, such as in-memory.")],
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded with the time.")],
    export_queue_state: Annotated[
        Path | None,
        typer.Option(
            "--export-queue-state",
            dir_okay=False,
            help="Write the unfinished tasks to this JSON Lines file.",
        ),
    ] = None,
    settings_file: Annotated[
        Path | None,
        typer.Option(
            "--settings-file",
            dir_okay=False,
            help="The settings file to write the switch to (default: ./settings.local.toml).",
        ),
    ] = None,
    drain_timeout: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Seconds to wait for the workers to stop (default: shutdown_timeout + 10).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Planned rollback: stop the workers of this host (SIGTERM: running handlers finish
    within their shutdown timeout), export the unfinished tasks, switch the environment's
    backend in a settings file taskyard reads, and record the reason with a timestamp.
    The tasks stay in the database and run again once the backend is switched back."""
    import os
    from dataclasses import replace

    from taskyard.backends.sqlite import SqliteStore
    from taskyard.framework.errors import TaskyardError
    from taskyard.ops.migration import planned_rollback, write_rollback_settings
    from taskyard.providers import effective_backend
    from taskyard.settings import canonical_backend

    state = cli_state(ctx)
    settings = queue_settings(ctx)
    try:
        target = canonical_backend(to)
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc
    if not reason.strip():
        raise fail("a rollback needs a reason (--reason): it is recorded with the time")
    current = settings.backend
    if target == current and settings.canary is None:
        raise fail(f"the {settings.environment} environment already uses {current}")
    pinned = os.environ.get("TASKYARD_TASK_EXECUTION__BACKEND")
    if pinned is not None:
        raise fail(
            f"TASKYARD_TASK_EXECUTION__BACKEND={pinned} is set here and wins over any settings "
            "file. For an emergency rollback that variable is the switch; unset it to record "
            "a planned one"
        )
    written_to = rollback_settings_file(state, settings_file)
    extra = {"canary_backend": ""} if settings.canary is not None else {}
    if not settings.uses_database or not settings.db_path.exists():
        if export_queue_state is not None and settings.uses_database:
            raise fail(f"there is no queue database at {settings.db_path}; nothing to export")
        if export_queue_state is not None:
            raise fail(IN_MEMORY_HINT, CONFIGURATION_EXIT_CODE)
        from taskyard.framework.models import iso, utcnow

        try:
            write_rollback_settings(
                written_to,
                environment=settings.environment,
                values={"backend": target, **extra},
                comment=f"{iso(utcnow())} switch from {current} to {target} "
                f"(environment {settings.environment}): {' '.join(reason.split())}",
            )
        except TaskyardError as exc:
            raise fail(str(exc)) from exc
        if not as_json:
            typer.echo(f"{written_to}: {settings.environment} now uses {target}")
        if current == "in-memory" and not as_json:
            typer.echo(
                "restart the application: as it stops, it hands its in-memory tasks "
                "over (stop_and_hand_over, see docs/migration-guide.md)"
            )
        report_dict: dict[str, Any] = {"settings_file": str(written_to), "to_backend": target}
    else:
        store = SqliteStore(
            settings.db_path, synchronous=settings.synchronous, busy_timeout=settings.busy_timeout
        )
        try:
            report = asyncio.run(
                planned_rollback(
                    store,
                    to_backend=target,
                    from_backend=current
                    if settings.canary is None
                    else f"{current} + canary {settings.canary}",
                    environment=settings.environment,
                    reason=reason,
                    settings_file=written_to,
                    export_path=export_queue_state,
                    drain_timeout=settings.shutdown_timeout + 10
                    if drain_timeout is None
                    else drain_timeout,
                    stale_after=settings.lease_seconds,
                    extra_settings=extra,
                )
            )
        except TaskyardError as exc:
            raise fail(str(exc)) from exc
        report_dict = report.to_dict()
        if not as_json:
            drain = report.drain
            typer.echo(
                f"workers: {len(drain.stopped)} stopped"
                + (f", {len(drain.stale)} stale" if drain.stale else "")
            )
            for worker in drain.still_running:
                typer.echo(f"warning: worker {worker} did not stop within the drain timeout")
            for worker in drain.elsewhere:
                typer.echo(f"warning: worker {worker} runs on another host: stop it there")
            for worker in drain.applications:
                typer.echo(
                    f"note: {worker} runs tasks from the queue but is not a taskyard worker; "
                    "restart it to apply the switch"
                )
            if report.export is not None:
                counts = ", ".join(f"{n} {s}" for s, n in report.export.by_status.items())
                typer.echo(
                    f"exported {report.export.tasks} unfinished task(s) "
                    f"({counts or 'none'}) to {report.export.path}"
                )
            typer.echo(f"{report.settings_file}: {settings.environment} now uses {target}")
            typer.echo(f"reason recorded in {report.rollback_log}")
    try:
        reloaded = load_settings(environment=state.environment, settings_files=state.settings_files)
        now_uses = effective_backend(settings_as_dict(reloaded)["task_execution"])
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc
    if now_uses != target:
        raise fail(
            f"{written_to} says {target}, but the settings still select {now_uses}: a file "
            "read after it, or a TASKYARD_ variable, wins"
        )
    checked = validation_of(replace(settings, backend=target, canary=None))
    if as_json:
        echo_json({"rollback": report_dict, "validation": checked.to_dict()})
    else:
        echo_lines(checked.lines())
    raise typer.Exit(checked.exit_code)
