"""``taskyard worker``: run the configured handlers until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from taskyard.cli.root import (
    app,
    cli_state,
    configuration_failure,
)
from taskyard.framework.engine import TaskEngine
from taskyard.framework.errors import ConfigurationError
from taskyard.framework.protocol import TaskManager
from taskyard.ops import metrics as ops_metrics
from taskyard.ops.config import FILE_BACKENDS, QUEUE_BACKENDS, OpsConfig
from taskyard.providers import Container
from taskyard.settings import schedules_from_settings

# -- workers --------------------------------------------------------------------------------


@app.command()
def worker(
    ctx: typer.Context,
    app_path: Annotated[
        str | None,
        typer.Option(
            "--app",
            "-A",
            metavar="MODULE:ATTRIBUTE",
            help="Handlers to run: 'package.module:attribute', a mapping of task type to "
            "handler or a function taking the manager. Default: task_execution.worker_app.",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Handlers at once (task_execution.max_concurrency)."),
    ] = None,
    shutdown_timeout: Annotated[
        float | None,
        typer.Option(
            min=0, metavar="SECONDS", help="Seconds running handlers get at SIGTERM/SIGINT."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            metavar="PORT",
            help="Serve Prometheus metrics at http://127.0.0.1:PORT/metrics while working "
            "(0: a free port; needs taskyard[metrics]).",
        ),
    ] = None,
    dashboard_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve the web dashboard on dashboard.host:PORT while working (0: a free "
            "port; needs taskyard[dashboard]); prints its login URL.",
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
        declared = schedules_from_settings(container.settings())
        manager = container.task_manager()
        exporter = None if metrics_port is None else serve_metrics(container, manager, metrics_port)
        where = worker_location(container)
        web = None if dashboard_port is None else dashboard_server(ctx, dashboard_port)
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc

    async def run() -> None:
        stop = asyncio.Event()
        serving = None
        if web is not None:
            server, token = web
            serving = asyncio.create_task(server.run(stop))
            print(f"taskyard dashboard at {server.url(token)}", flush=True)
        try:
            await serve(
                manager,
                registrar,
                stop=stop,
                shutdown_timeout=shutdown_timeout,
                where=where,
                schedules=declared,
            )
        finally:
            stop.set()
            if serving is not None:
                await serving

    try:
        asyncio.run(run())
    except ConfigurationError as exc:  # the --app function could not register handlers
        raise configuration_failure(exc) from exc
    finally:
        if exporter is not None:
            exporter.close()


def worker_location(container: Container) -> str:
    """The backend, and the absolute path of its file on the SQLite backends (a relative
    queue_db_path is relative to the working directory)."""
    backend = container.backend()
    if backend not in FILE_BACKENDS:
        return f"backend {backend}"
    path = Path(container.config.task_execution.queue_db_path()).resolve()
    return f"backend {backend}, file {path}"


def dashboard_server(ctx: typer.Context, port: int) -> tuple[Any, str]:
    """The dashboard of a worker, bound to dashboard.host:``port``, and its login token.
    Raises ConfigurationError."""
    from taskyard.cli.dashboard import dashboard_for, dashboard_settings
    from taskyard.web.server import DashboardServer

    host = str(dashboard_settings(ctx)["host"])
    app, token = dashboard_for(ctx, host)
    return DashboardServer(app, host, port), token


def serve_metrics(
    container: Container, manager: TaskManager, port: int
) -> ops_metrics.WorkerMetrics:
    """Start serving a worker's metrics on 127.0.0.1 (the queue's too, on the SQLite and
    PostgreSQL backends); prints the address. Raises ConfigurationError."""
    if not isinstance(manager, TaskEngine):
        raise ConfigurationError(f"{type(manager).__name__} has no worker metrics")
    backend = container.backend()
    config = (
        OpsConfig.from_sections(container.config(), backend=backend)
        if backend in QUEUE_BACKENDS
        else None
    )
    exporter = ops_metrics.WorkerMetrics(
        manager,
        queue=None if config is None else container.ops_store,
        window=3600.0 if config is None else config.window,
        stale_after=60.0 if config is None else config.stale_after,
    )
    try:
        bound = exporter.serve(port)
    except OSError as exc:
        exporter.close()
        raise ConfigurationError(f"cannot serve metrics on 127.0.0.1:{port}: {exc}") from exc
    print(f"taskyard worker metrics at http://127.0.0.1:{bound}/metrics", flush=True)
    return exporter
