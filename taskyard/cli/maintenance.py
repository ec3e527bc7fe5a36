"""``taskyard maintenance``: checkpoint, vacuum, optimize, integrity-check, prune,
recover-leases."""

from __future__ import annotations

from typing import Annotated

import typer

from taskyard.cli.root import (
    app,
    fail,
    on_queue,
    ops_config,
)
from taskyard.framework.models import TaskRecord
from taskyard.framework.operations import StoreOperations
from taskyard.ops import maintenance as ops_maintenance
from taskyard.ops import progress as ops_progress
from taskyard.ops import units as ops_units

maintenance_app = typer.Typer(
    rich_markup_mode=None,  # help text as written: no markup eats "[metrics]"
    help="Keep the queue in shape: checkpoint, vacuum, optimize, integrity-check, "
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
    """Copy the WAL into the database file (PRAGMA wal_checkpoint; SQLite only)."""

    async def run(q: StoreOperations) -> ops_maintenance.CheckpointResult:
        return await ops_maintenance.checkpoint(q, mode)

    result = on_queue(ctx, run)
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
    """SQLite: rebuild the file without its free pages (holds the write lock meanwhile;
    needs free disk space about the database's size). PostgreSQL: VACUUM (ANALYZE) of
    taskyard's tables, while workers run."""

    async def run(q: StoreOperations) -> ops_maintenance.VacuumResult:
        with ops_progress.progress_reporter("vacuum") as progress:
            progress(0, 0)
            return await ops_maintenance.vacuum(q)

    result = on_queue(ctx, run)
    for statement in result.statements:
        typer.echo(f"ran {statement}")
    typer.echo(
        f"vacuum: {ops_units.bytes_text(result.size_before)} -> "
        f"{ops_units.bytes_text(result.size_after)} in {result.seconds:.1f} s"
    )


@maintenance_app.command("optimize")
def maintenance_optimize(ctx: typer.Context) -> None:
    """Fresh statistics for the query planner: SQLite, ANALYZE and PRAGMA optimize;
    PostgreSQL, ANALYZE and REINDEX CONCURRENTLY where the indexes are bloated."""

    async def run(q: StoreOperations) -> list[str]:
        return await ops_maintenance.optimize(q)

    done = on_queue(ctx, run)
    typer.echo("optimize: ran " + " and ".join(done))


@maintenance_app.command("integrity-check")
def maintenance_integrity_check(
    ctx: typer.Context,
    quick: Annotated[bool, typer.Option(help="PRAGMA quick_check: faster, less thorough.")] = False,
) -> None:
    """The database's own check (SQLite's integrity check; on PostgreSQL, that every
    index is valid), then taskyard's own invariants. Exit 1 on a problem."""
    config = ops_config(ctx)
    label = "postgres" if config.uses_postgres and not config.uses_file else "sqlite"

    async def run(q: StoreOperations) -> ops_maintenance.IntegrityResult:
        with ops_progress.progress_reporter("integrity check") as progress:
            progress(0, 0)
            return await ops_maintenance.integrity_check(q, quick=quick)

    result = on_queue(ctx, run)
    for line in result.sqlite:
        typer.echo(f"{label}: {line}")
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

    async def run(q: StoreOperations) -> ops_maintenance.PruneResult:
        with ops_progress.progress_reporter("prune", unit="tasks") as progress:
            return await ops_maintenance.prune(
                q,
                retention_days=config.retention_days,
                failed_retention_days=config.failed_retention_days,
                worker_retention_days=config.worker_retention_days,
                dry_run=dry_run,
                progress=progress,
            )

    result = on_queue(ctx, run)
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

    async def run(q: StoreOperations) -> list[TaskRecord]:
        return await ops_maintenance.recover_leases(q)

    recovered = on_queue(ctx, run)
    for record in recovered:
        typer.echo(f"{record.id} ({record.type}): {record.status}")
    typer.echo(f"recovered {len(recovered)} task(s)")
