"""``taskyard tasks``: list, show, cancel, retry and purge tasks."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from taskyard.cli.root import (
    JsonOption,
    app,
    fail,
    on_queue,
    print_json,
)
from taskyard.framework.models import TaskRecord, TaskStatus
from taskyard.framework.operations import StoreOperations
from taskyard.ops import progress as ops_progress
from taskyard.ops import render as ops_render
from taskyard.ops import tasks as ops_tasks
from taskyard.ops import units as ops_units
from taskyard.ops import workflows as ops_workflows

tasks_app = typer.Typer(
    rich_markup_mode=None,  # help text as written: no markup eats "[metrics]"
    help="Look at and act on tasks: list, show, cancel, retry, purge.",
    no_args_is_help=True,
)
app.add_typer(tasks_app, name="tasks")

StatusOption = Annotated[
    list[TaskStatus] | None,
    typer.Option(
        "--status", "-s", metavar="STATUS", help="Only tasks in this status (repeatable)."
    ),
]


@tasks_app.command("list")
def tasks_list(
    ctx: typer.Context,
    status: StatusOption = None,
    task_type: Annotated[
        str | None, typer.Option("--type", "-t", metavar="TYPE", help="Only this type.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=10_000, metavar="N", help="Tasks per page.")
    ] = 50,
    page: Annotated[int, typer.Option(min=1, metavar="N", help="Which page, from 1.")] = 1,
    newest_first: Annotated[
        bool, typer.Option("--newest-first", help="The newest tasks first (page 1: the newest).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Tasks in scheduling order (or the newest first), a page at a time."""

    async def run(q: StoreOperations) -> tuple[list[Any], int]:
        return await ops_tasks.list_tasks(
            q,
            statuses=status or None,
            task_type=task_type,
            limit=limit,
            offset=(page - 1) * limit,
            newest_first=newest_first,
        )

    records, total = on_queue(ctx, run)
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
    console = ops_render.console()
    width = console.width if console.is_terminal else None
    title = f"tasks: page {page} of {pages}" + (", newest first" if newest_first else "")
    console.print(ops_render.task_table(records, title=title, width=width))
    console.print(f"{total} matching task(s)", highlight=False)


@tasks_app.command("show")
def tasks_show(ctx: typer.Context, task_id: str, as_json: JsonOption = False) -> None:
    """Everything about one task, with the tasks it depends on and those depending on it."""

    async def run(q: StoreOperations) -> tuple[TaskRecord, dict[str, Any]]:
        return await ops_tasks.show_task(q, task_id), await ops_workflows.task_links(q, task_id)

    record, links = on_queue(ctx, run)
    details = {**ops_tasks.record_details(record), **links}
    if as_json:
        print_json(details)
    else:
        ops_render.console().print(ops_render.details_table(details))


@tasks_app.command("cancel")
def tasks_cancel(ctx: typer.Context, task_id: str) -> None:
    """Cancel a queued or running task (a running one stops at its worker's next
    heartbeat; its result is discarded)."""

    async def run(q: StoreOperations) -> TaskStatus:
        return await ops_tasks.cancel_task(q, task_id)

    before = on_queue(ctx, run)
    typer.echo(f"task {task_id} cancelled (it was {before})")


@tasks_app.command("retry")
def tasks_retry(
    ctx: typer.Context,
    task_id: Annotated[str | None, typer.Argument(help="One task to retry.")] = None,
    status: Annotated[
        TaskStatus | None,
        typer.Option("--status", "-s", help="Every task in this status: failed or cancelled."),
    ] = None,
    task_type: Annotated[
        str | None, typer.Option("--type", "-t", help="With --status: only this type.")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="With --status: list, retry nothing.")] = False,
) -> None:
    """Queue a failed or cancelled task again, due now, its attempts reset; or, with
    --status (and --type), every such task."""
    if (task_id is None) == (status is None):
        raise fail("give a task id, or --status failed (or cancelled) [--type T]", 2)
    if task_id is not None:
        if task_type is not None or dry_run:
            raise fail("--type and --dry-run go with --status, not with a task id", 2)

        async def one(q: StoreOperations) -> TaskRecord:
            return await ops_tasks.retry_task(q, task_id)

        record = on_queue(ctx, one)
        typer.echo(f"task {task_id} ({record.type}) is queued again with its attempts reset")
        return
    assert status is not None

    async def many(q: StoreOperations) -> list[str]:
        return await ops_tasks.retry_matching(
            q, status=status, task_type=task_type, dry_run=dry_run
        )

    ids = on_queue(ctx, many)
    for retried in ids:
        typer.echo(retried)
    what = f"{status} task(s)" + (f" of type {task_type}" if task_type else "")
    verb = "would queue again" if dry_run else "queued again"
    typer.echo(f"{verb} {len(ids)} {what}")


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
    task_type: Annotated[
        str | None, typer.Option("--type", "-t", metavar="TYPE", help="Only this type.")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Count, delete nothing.")] = False,
) -> None:
    """Delete finished tasks of the given statuses older than --older-than."""

    async def run(q: StoreOperations) -> ops_tasks.PurgeResult:
        with ops_progress.progress_reporter("purge", unit="tasks") as progress:
            return await ops_tasks.purge_tasks(
                q,
                statuses=status,
                older_than=ops_units.parse_duration(older_than),
                task_type=task_type,
                dry_run=dry_run,
                progress=progress,
            )

    result = on_queue(ctx, run)
    verb = "would delete" if dry_run else "deleted"
    count = result.matched if dry_run else result.deleted
    typer.echo(f"{verb} {count} task(s)")
