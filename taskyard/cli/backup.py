"""``taskyard backup``: create, list, restore and prune online backups."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from taskyard.cli.root import (
    JsonOption,
    app,
    on_queue,
    ops_config,
    ops_errors,
    ops_store,
    print_json,
)
from taskyard.framework.operations import StoreOperations
from taskyard.ops import backup as ops_backup
from taskyard.ops import progress as ops_progress
from taskyard.ops import render as ops_render
from taskyard.ops import units as ops_units

backup_app = typer.Typer(
    rich_markup_mode=None,  # help text as written: no markup eats "[metrics]"
    help="Online backups of the queue file: create, list, restore, prune.",
    no_args_is_help=True,
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

    async def run(q: StoreOperations) -> ops_backup.BackupResult:
        with ops_progress.progress_reporter("backup", unit="pages") as progress:
            return await ops_backup.create_backup(q, destination, progress=progress)

    result = on_queue(ctx, run)
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
    config = ops_config(ctx, needs="file")
    backups = ops_backup.list_backups(config.db_path, config.backups)
    if as_json:
        print_json([backup.to_dict() for backup in backups])
        return
    ops_render.console().print(ops_render.backups_table(backups))
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
    config = ops_config(ctx, needs="file")
    store = ops_store(ctx)

    async def run() -> ops_backup.RestoreResult:
        with ops_progress.progress_reporter("restore", unit="pages") as progress:
            return await ops_backup.restore_backup(
                store,
                file,
                config.db_path,
                backup_dir=config.backups,
                stale_after=config.stale_after,
                force=force,
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
    config = ops_config(ctx, needs="file")
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
