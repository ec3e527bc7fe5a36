"""``taskyard schedules``: the queue's periodic schedules, managed live."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from taskyard.cli.root import JsonOption, app, on_queue, print_json
from taskyard.framework.operations import StoreOperations
from taskyard.ops import schedules as ops_schedules

schedules_app = typer.Typer(
    help="Periodic schedules (cron or intervals): list, pause, resume, run now, remove. "
    "Workers pick changes up at their next poll, without a restart.",
    no_args_is_help=True,
)
app.add_typer(schedules_app, name="schedules")

NameArgument = Annotated[str, typer.Argument(help="The schedule's name.")]


@schedules_app.command("list")
def schedules_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Name, expression, zone, next and last fire, the last task's status, lag."""

    async def run(q: StoreOperations) -> list[dict[str, Any]]:
        return await ops_schedules.describe(q)

    shown = on_queue(ctx, run)
    if as_json:
        print_json(shown)
        return
    if not shown:
        typer.echo("no schedules")
    for item in shown:
        state = "enabled" if item["enabled"] else "paused"
        typer.echo(
            f"{item['name']}  {item['expression']}  {item['timezone']}  {state}"
            f"  next {item['next_fire_at']}  last {item['last_fire_at'] or '-'}"
            f" ({item['last_status'] or '-'})"
            + (f"  late {item['lag_seconds']:g} s" if item["lag_seconds"] else "")
        )


@schedules_app.command("pause")
def schedules_pause(ctx: typer.Context, name: NameArgument) -> None:
    """Stop firing NAME until `resume`; tasks already fired still run."""

    async def run(q: StoreOperations) -> object:
        return await ops_schedules.pause(q, name)

    on_queue(ctx, run)
    typer.echo(f"{name}: paused")


@schedules_app.command("resume")
def schedules_resume(ctx: typer.Context, name: NameArgument) -> None:
    """Fire NAME again from its next slot (the slots of the pause are not fired)."""

    async def run(q: StoreOperations) -> Any:
        return await ops_schedules.resume(q, name)

    record = on_queue(ctx, run)
    typer.echo(f"{name}: resumed, next fire {record.next_fire_at.isoformat()}")


@schedules_app.command("run-now")
def schedules_run_now(ctx: typer.Context, name: NameArgument, as_json: JsonOption = False) -> None:
    """Create one task of NAME now (its slot time is now); the next fire stays."""

    async def run(q: StoreOperations) -> str:
        return await ops_schedules.run_schedule_now(q, name)

    task_id = on_queue(ctx, run)
    if as_json:
        print_json({"name": name, "task_id": task_id})
    else:
        typer.echo(f"{name}: task {task_id} scheduled")


@schedules_app.command("remove")
def schedules_remove(ctx: typer.Context, name: NameArgument) -> None:
    """Delete NAME; the tasks it fired stay. Code or settings that still declare it
    declare it again when a worker starts."""

    async def run(q: StoreOperations) -> None:
        await ops_schedules.remove(q, name)

    on_queue(ctx, run)
    typer.echo(f"{name}: removed")
