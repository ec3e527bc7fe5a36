"""``taskyard dashboard``: the web dashboard over the configured queue (needs
``taskyard[dashboard]``). ``taskyard worker --dashboard-port N`` serves it from a worker
(see :func:`dashboard_for`)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from taskyard.cli.root import app, cli_state, configuration_failure, ops_config, ops_errors
from taskyard.framework.errors import BackendNotAvailable, ConfigurationError
from taskyard.ops.database import opened
from taskyard.settings import settings_as_dict


def dashboard_settings(ctx: typer.Context) -> dict[str, Any]:
    try:
        section: dict[str, Any] = dict(settings_as_dict(cli_state(ctx).settings())["dashboard"])
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc
    return section


def dashboard_for(ctx: typer.Context, host: str) -> tuple[Any, str]:
    """The dashboard app over the configured queue (a new, unopened store), and the admin
    token to log in with (the configured one, else a fresh one). Raises
    ConfigurationError (a public address without a token, the extra not installed)."""
    try:
        from taskyard.web import DashboardConfig, create_app
        from taskyard.web.security import Tokens, check_bind, new_token
    except ImportError as exc:
        raise BackendNotAvailable(
            f"the dashboard needs its extra: pip install 'taskyard[dashboard]' ({exc})"
        ) from exc
    section = dashboard_settings(ctx)
    check_bind(host, section["token"])
    token = section["token"] or new_token()
    config = ops_config(ctx, needs="nothing")  # SQLite or PostgreSQL: checked below
    if config.backend == "in-memory":
        raise ConfigurationError(
            "task_execution.backend is in-memory: its tasks live inside the process that "
            "runs them, and a dashboard reads them from the database. Use the sqlite or "
            "postgres backend"
        )
    store = cli_state(ctx).container().ops_store()
    dashboard = DashboardConfig(
        tokens=Tokens(token, section["read_only_token"]),
        window=config.window,
        stale_after=config.stale_after,
        thresholds=config.thresholds,
        refresh_seconds=float(section["refresh_seconds"]),
        spills_of=config.db_path if config.uses_database else None,
    )
    return create_app(store, dashboard), token


@app.command("dashboard")
def dashboard_command(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: dashboard.host).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Port (default: dashboard.port; 0: a free one)."),
    ] = None,
) -> None:
    """Serve the web dashboard over the configured queue until SIGTERM or SIGINT: the
    overview, the tasks, actions and the audit log. Prints the login URL (with the
    generated token when dashboard.token is not set)."""
    from taskyard.web.server import serve

    section = dashboard_settings(ctx)
    chosen_host = host or str(section["host"])
    chosen_port = int(section["port"]) if port is None else port
    try:
        web, token = dashboard_for(ctx, chosen_host)
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc

    async def check() -> None:  # the queue must be there: say so now, not on the first page
        async with opened(cli_state(ctx).container().ops_store()):
            pass

    with ops_errors():
        asyncio.run(check())
        asyncio.run(serve(web, chosen_host, chosen_port, token=token, announce=_announce))


def _announce(line: str) -> None:
    typer.echo(line)
    typer.echo("taskyard dashboard ready")  # a line supervisors and tests wait for
