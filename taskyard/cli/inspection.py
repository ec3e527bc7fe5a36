"""``taskyard status``, ``metrics`` and ``health``: the queue at a glance."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from taskyard.cli.root import (
    JsonOption,
    app,
    fail,
    on_queue,
    ops_config,
    ops_errors,
    ops_store,
    print_json,
)
from taskyard.framework.operations import StoreOperations
from taskyard.ops import health as ops_health
from taskyard.ops import inspect as ops_inspect
from taskyard.ops import metrics as ops_metrics
from taskyard.ops import render as ops_render
from taskyard.ops import units as ops_units


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

    async def run(q: StoreOperations) -> ops_inspect.QueueStatus:
        return await ops_inspect.queue_status(q, window=seconds, stale_after=config.stale_after)

    snapshot = on_queue(ctx, run)
    if as_json:
        print_json(snapshot.to_dict())
    else:
        ops_render.console().print(ops_render.status_tables(snapshot))


@app.command("metrics")
def metrics_command(ctx: typer.Context) -> None:
    """Print the queue's metrics once, in the Prometheus text format (for a textfile
    collector or a look); `taskyard worker --metrics-port N` serves them live."""
    config = ops_config(ctx)
    store = ops_store(ctx)
    with ops_errors():
        collector = ops_metrics.QueueCollector(
            ops_metrics.store_reader(
                lambda: store, window=config.window, stale_after=config.stale_after
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
        ops_health.check_health(
            ops_store(ctx),
            config.thresholds,
            spills_of=config.db_path if config.uses_file else None,
        )
    )
    if as_json:
        print_json(report.to_dict())
    else:
        console = Console(highlight=False, soft_wrap=True)
        for line in ops_render.health_lines(report):
            console.print(line)
    raise typer.Exit(int(report.state))
