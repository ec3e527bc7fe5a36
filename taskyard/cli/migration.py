"""``taskyard db init``, ``export``, ``import``, ``validate`` and ``rollback``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from taskyard.cli.root import (
    CONFIGURATION_EXIT_CODE,
    CliState,
    app,
    cli_state,
    configuration_failure,
    fail,
    on_queue,
    ops_config,
    ops_errors,
    ops_store,
    print_json,
)
from taskyard.framework.errors import ConfigurationError
from taskyard.framework.models import TaskStatus
from taskyard.framework.operations import StoreOperations
from taskyard.ops.config import OpsConfig
from taskyard.providers import effective_backend
from taskyard.settings import (
    load_settings,
    settings_as_dict,
)

# -- migration and rollback: db init, export, import, rollback, validate --------------------
# Thin commands over taskyard.ops.migration and taskyard.ops.validate. Exit status 0 on
# success, 1 when something failed (a refused file, a failed validation check), 2 on a
# bad configuration. `validate` runs by itself after `db init --validate`, `import` and
# `rollback`, and its exit status becomes theirs.


def queue_settings(ctx: typer.Context) -> OpsConfig:
    """The migration commands' settings (any backend); exits with status 2 when bad."""
    return ops_config(ctx, needs="nothing")


IN_MEMORY_HINT = (
    "the in-memory backend keeps its tasks inside the application's process, where this "
    "command cannot reach them; move them from inside the application with "
    "taskyard.ops.migration.migrate_in_flight(manager, store) (see docs/migration-guide.md)"
)


def postgres_store(ctx: typer.Context) -> StoreOperations:
    """A new, unopened store on the PostgreSQL queue the settings describe (exit 2 when
    they describe none, or asyncpg is missing)."""
    from taskyard.providers import durable_ops_store

    try:
        task_execution = settings_as_dict(cli_state(ctx).settings())["task_execution"]
        store = durable_ops_store("postgres", task_execution)
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc
    assert store is not None
    return store


def validation_of(ctx: typer.Context, settings: OpsConfig, *, scratch: bool = True) -> Any:
    """The ValidationReport of what ``settings`` select (the PostgreSQL queue too, when
    the backend or the canary is postgres)."""
    from taskyard.ops.validate import validate_backend

    server = postgres_store(ctx) if settings.uses_postgres else None
    with ops_errors():
        return asyncio.run(
            validate_backend(
                settings.backend,
                canary=settings.canary,
                db_path=settings.db_path,
                busy_timeout=settings.busy_timeout,
                synchronous=settings.synchronous,
                stale_after=settings.lease_seconds,
                scratch=scratch,
                server_store=server,
                server=settings.postgres_where,
            )
        )


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        typer.echo(line)


db_app = typer.Typer(
    rich_markup_mode=None,
    help="The queue database (SQLite file or PostgreSQL schema): create or upgrade it.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")


@db_app.command("init")
def db_init(
    ctx: typer.Context,
    validate: Annotated[
        bool, typer.Option("--validate", help="Then run `taskyard validate`.")
    ] = False,
) -> None:
    """Create the database at task_execution.queue_db_path (on postgres: the schema
    task_execution.postgres_schema), or upgrade it to this taskyard's schema. Running it
    again changes nothing."""
    from taskyard.ops.migration import init_database
    from taskyard.ops.migration.db_init import initialize

    settings = queue_settings(ctx)
    reports = []
    with ops_errors():
        if settings.uses_file or not settings.uses_postgres:
            reports.append(
                init_database(
                    settings.db_path,
                    synchronous=settings.synchronous,
                    busy_timeout=settings.busy_timeout,
                )
            )
        if settings.uses_postgres:
            reports.append(asyncio.run(initialize(postgres_store(ctx))))
    for report in reports:
        typer.echo(report.describe())
    if validate:
        checked = validation_of(ctx, settings)
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
    from taskyard.ops.migration import ExportSummary, export_tasks

    settings = queue_settings(ctx)
    if not settings.uses_database:
        raise fail(IN_MEMORY_HINT, CONFIGURATION_EXIT_CODE)
    if settings.uses_file and not settings.db_path.exists():
        raise fail(f"there is no queue database at {settings.db_path}; nothing to export")

    async def run(store: StoreOperations) -> tuple[ExportSummary, int]:
        summary = await export_tasks(
            store, file, include_finished=include_finished, source=settings.queue
        )
        counts = await store.count_by_status()
        finished = sum(n for status, n in counts.items() if TaskStatus(status).is_terminal)
        return summary, finished

    summary, finished = on_queue(ctx, run, needs="nothing")
    counts = ", ".join(f"{n} {status}" for status, n in summary.by_status.items()) or "none"
    typer.echo(f"exported {summary.tasks} task(s) ({counts}) to {summary.path}")
    if not include_finished and finished:
        typer.echo(
            f"{finished} finished task(s) (completed, failed, cancelled) were left out; "
            "`taskyard export FILE --all` exports them too"
        )


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
    from taskyard.ops.migration import ImportReport, import_records, read_export

    settings = queue_settings(ctx)
    if not settings.uses_database:
        raise fail(IN_MEMORY_HINT, CONFIGURATION_EXIT_CODE)
    with ops_errors():
        export = read_export(file)

    async def run(store: StoreOperations) -> ImportReport:
        return await import_records(store, export.records)

    report = on_queue(ctx, run, create=True, suffix="; nothing was imported", needs="nothing")
    checked = validation_of(ctx, settings)
    if as_json:
        print_json(
            {"import": {"file": str(file), **report.to_dict()}, "validation": checked.to_dict()}
        )
        raise typer.Exit(checked.exit_code)
    else:
        typer.echo(
            f"imported {report.imported} task(s) from {file} into {settings.location}; "
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
    """Check the queue: the file, its schema version, WAL mode and integrity (on
    PostgreSQL: the schema, its indexes and taskyard's invariants), the workers'
    heartbeats, and a scratch enqueue, claim and complete that leaves no trace.
    Exit status 0 when every check passed (warnings allowed), 1 when one failed."""
    report = validation_of(ctx, queue_settings(ctx), scratch=scratch)
    if as_json:
        print_json(report.to_dict())
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


def redundant_switch(state: CliState, written_to: Path, target: str) -> str | None:
    """After switching back: whether the rollback's settings file now only repeats what
    the other files say, and how to remove it (it would otherwise override them for
    good); None when it still decides something."""
    from taskyard.settings import settings_files_in_use

    files, _ = settings_files_in_use(state.settings_files)
    rest = [path for path in files if path != written_to.resolve()]
    try:
        without = load_settings(environment=state.environment, settings_files=rest)
    except ConfigurationError:
        return None
    if effective_backend(settings_as_dict(without)["task_execution"]) != target:
        return None
    return (
        f"{written_to} still holds the rollback switch, and the other settings files now "
        f"select {target} by themselves; while it exists it overrides them. Remove it so "
        f"they decide again: rm {written_to}"
    )


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
    """Planned rollback: stop the queue's workers, on every host, through the queue (as
    `taskyard workers stop --all`: running handlers finish within their shutdown
    timeout; applications that run tasks themselves are left alone), export the
    unfinished tasks, switch the environment's backend in a settings file taskyard
    reads, and record the reason with a timestamp.
    The tasks stay in the database and run again once the backend is switched back."""
    import os
    from dataclasses import replace

    from taskyard.ops.migration import roll_back
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
    if target == "postgres" and not settings.postgres_where:
        raise fail(
            "task_execution.postgres_dsn is empty: set it (in .secrets.toml or "
            "TASKYARD_TASK_EXECUTION__POSTGRES_DSN) and create the schema with "
            "`taskyard db init` before switching to postgres",
            CONFIGURATION_EXIT_CODE,
        )
    pinned = os.environ.get("TASKYARD_TASK_EXECUTION__BACKEND")
    if pinned is not None:
        raise fail(
            f"TASKYARD_TASK_EXECUTION__BACKEND={pinned} is set here and wins over any settings "
            "file. For an emergency rollback that variable is the switch; unset it to record "
            "a planned one"
        )
    written_to = rollback_settings_file(state, settings_file)
    has_queue = settings.uses_postgres or (settings.uses_file and settings.db_path.exists())
    if not has_queue and export_queue_state is not None:
        if settings.uses_database:
            raise fail(f"there is no queue database at {settings.db_path}; nothing to export")
        raise fail(IN_MEMORY_HINT, CONFIGURATION_EXIT_CODE)
    store = ops_store(ctx) if has_queue else None
    with ops_errors():
        outcome = asyncio.run(
            roll_back(
                store,
                environment=settings.environment,
                current=current,
                canary=settings.canary,
                target=target,
                reason=reason,
                settings_file=written_to,
                export_path=export_queue_state,
                drain_timeout=settings.shutdown_timeout + 10
                if drain_timeout is None
                else drain_timeout,
                stale_after=settings.lease_seconds,
                source=settings.queue,
                rollback_log=None
                if settings.uses_file
                else written_to.with_name("taskyard.rollbacks.jsonl"),
            )
        )
    if not as_json:
        echo_lines(outcome.lines)
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
    leftover = redundant_switch(state, written_to, target)
    if leftover and not as_json:
        typer.echo(leftover)
    checked = validation_of(ctx, replace(settings, backend=target, canary=None))
    if as_json:
        print_json({"rollback": outcome.report, "validation": checked.to_dict()})
    else:
        echo_lines(checked.lines())
    raise typer.Exit(checked.exit_code)
