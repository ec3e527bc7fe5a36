"""``taskyard workflows``: list, show and cancel workflows (chains, groups, chords)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from taskyard.cli.root import JsonOption, app, on_queue, print_json
from taskyard.framework.operations import StoreOperations
from taskyard.ops import workflows as ops_workflows

workflows_app = typer.Typer(
    help="Look at workflows (chains, groups, chords): list, show, cancel.",
    no_args_is_help=True,
)
app.add_typer(workflows_app, name="workflows")

_STYLE = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "queued": "blue",
    "waiting": "dim",
}


def _status(status: str) -> str:
    return f"[{_STYLE.get(status, 'default')}]{status}[/]"


@workflows_app.command("list")
def workflows_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """The newest workflows with their status and step counts."""

    async def run(q: StoreOperations) -> list[ops_workflows.Workflow]:
        return await ops_workflows.list_workflows(q, limit=limit)

    found = on_queue(ctx, run)
    if as_json:
        print_json({"workflows": [workflow.summary() for workflow in found]})
        return
    table = Table(title="workflows, newest first", title_justify="left")
    table.add_column("id", overflow="fold", min_width=12)
    for column in ("status", "steps", "stages"):
        table.add_column(column, no_wrap=True)
    table.add_column("by status", min_width=12)
    table.add_column("created (UTC)", no_wrap=True)
    for workflow in found:
        summary = workflow.summary()
        table.add_row(
            workflow.workflow_id,
            _status(workflow.status),
            str(summary["tasks"]),
            str(summary["stages"]),
            ", ".join(f"{count} {status}" for status, count in summary["counts"].items()),
            workflow.tasks[0].created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console = Console()
    console.print(table)
    console.print(f"{len(found)} workflow(s)", highlight=False)


@workflows_app.command("show")
def workflows_show(ctx: typer.Context, workflow_id: str, as_json: JsonOption = False) -> None:
    """A workflow as a tree: its stages in order, each step with its status (a stage's
    steps run in parallel; each stage waits for the steps it depends on)."""

    async def run(q: StoreOperations) -> ops_workflows.Workflow:
        return await ops_workflows.show_workflow(q, workflow_id)

    workflow = on_queue(ctx, run)
    if as_json:
        print_json(workflow.details())
        return
    tree = Tree(
        f"workflow [bold]{escape(workflow.workflow_id)}[/]: {_status(workflow.status)} "
        f"({len(workflow.tasks)} steps)"
    )
    for number, stage in enumerate(workflow.by_stage(), start=1):
        parent = tree if len(stage) == 1 else tree.add(f"stage {number}: {len(stage)} in parallel")
        for task in stage:
            line = f"{escape(task.type)} {escape(task.id)} {_status(str(task.status))}"
            if task.error:
                line += f" [dim]{escape(task.error)}[/]"
            parent.add(line if len(stage) > 1 else f"stage {number}: {line}")
    Console().print(tree)


@workflows_app.command("cancel")
def workflows_cancel(ctx: typer.Context, workflow_id: str) -> None:
    """Cancel every step of the workflow that has not finished."""

    async def run(q: StoreOperations) -> list[str]:
        return await ops_workflows.cancel_workflow(q, workflow_id)

    cancelled = on_queue(ctx, run)
    typer.echo(f"workflow {workflow_id}: {len(cancelled)} step(s) cancelled")
