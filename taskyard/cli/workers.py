"""``taskyard workers``: list the queue's workers and stop them through the queue."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from taskyard.cli.root import JsonOption, app, fail, on_queue, ops_config, print_json
from taskyard.framework.operations import StoreOperations, WorkerRecord
from taskyard.ops import workers as ops_workers

workers_app = typer.Typer(
    rich_markup_mode=None,  # help text as written: no markup eats "[metrics]"
    help="The workers sharing the queue: list them, stop them gracefully (any host, any OS).",
    no_args_is_help=True,
)
app.add_typer(workers_app, name="workers")


@workers_app.command("list")
def workers_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The workers' heartbeat records: role (worker or application), host, pid, state."""
    stale_after = ops_config(ctx).stale_after

    async def run(q: StoreOperations) -> list[WorkerRecord]:
        return await q.list_workers()

    shown = ops_workers.describe_workers(
        on_queue(ctx, run), now=time.time(), stale_after=stale_after
    )
    if as_json:
        print_json(shown)
        return
    if not shown:
        typer.echo("no workers")
    for worker in shown:
        typer.echo(
            f"{worker['worker_id']}  {worker['role']}  {worker['hostname']} pid {worker['pid']}"
            f"  {worker['state']} ({worker['seconds_since_heartbeat']} s ago)"
            + ("  stop requested" if worker["stop_requested"] else "")
        )


@workers_app.command("stop")
def workers_stop(
    ctx: typer.Context,
    worker_ids: Annotated[list[str] | None, typer.Argument(help="Workers to stop.")] = None,
    everyone: Annotated[bool, typer.Option("--all", help="Every worker of the queue.")] = False,
    host: Annotated[str | None, typer.Option(help="The workers of this host.")] = None,
    wait: Annotated[
        float,
        typer.Option(min=0, help="Seconds to wait for them to finish (0: only ask)."),
    ] = 60.0,
    include_applications: Annotated[
        bool,
        typer.Option(
            "--include-applications",
            help="Ask applications that run tasks themselves too (they decide what to do).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Ask workers to stop gracefully: each reads the request with its next heartbeat,
    stops claiming, lets running handlers finish within its shutdown timeout, returns
    the rest to the queue and exits 0. Exit status 1 when one is still running after
    --wait."""
    stale_after = ops_config(ctx).stale_after

    async def run(q: StoreOperations) -> ops_workers.StopReport:
        return await ops_workers.stop_workers(
            q,
            worker_ids=worker_ids or (),
            everyone=everyone,
            host=host,
            stale_after=stale_after,
            wait=wait,
            include_applications=include_applications,
        )

    report = on_queue(ctx, run)
    if as_json:
        print_json({**vars(report), "drained": report.drained})
    else:
        typer.echo(f"asked {len(report.asked)} worker(s) to stop")
        for worker_id in report.stopped:
            typer.echo(f"{worker_id}: stopped")
        for worker_id in report.applications:
            typer.echo(
                f"{worker_id}: an application, left alone (restart it with its own "
                "manager, or pass --include-applications)"
            )
        for worker_id in report.stale:
            typer.echo(f"{worker_id}: stale (its heartbeat stopped; it died)")
    if wait > 0 and report.still_running:
        raise fail(f"still running after {wait:g} s: {', '.join(report.still_running)}")
