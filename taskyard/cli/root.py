"""taskyard's command line: a thin shell over the container and the settings.

``taskyard [--env NAME] [--settings FILE ...] COMMAND``. The root callback loads and
validates the settings once (a bad setting exits with status 2 and a message naming
the key) and turns logging on as the ``logging`` section says.

Adding a command: in the module of its group (or a new module imported by
``taskyard/cli/__init__.py``), write a function taking ``ctx: typer.Context`` and
decorate it with ``@app.command()`` (or build a ``typer.Typer()`` and
``app.add_typer(sub, name="db")``);
``cli_state(ctx).container()`` gives the container of the chosen environment and files,
``cli_state(ctx).settings()`` the validated settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from dynaconf import Dynaconf
from rich.console import Console
from rich.markup import escape

from taskyard import __version__
from taskyard.framework.errors import ConfigurationError, TaskyardError
from taskyard.framework.operations import StoreOperations
from taskyard.ops.config import Needs, OpsConfig
from taskyard.ops.database import opened
from taskyard.providers import Container, canary_backend, effective_backend
from taskyard.providers import sqlite_store as sqlite_ops_store
from taskyard.settings import (
    SECTIONS,
    configure_logging,
    environment_of,
    load_settings,
    redact_dsn,
    settings_as_dict,
)

__all__ = ["CliState", "app", "cli_state", "main"]

CONFIGURATION_EXIT_CODE = 2
T = TypeVar("T")

app = typer.Typer(
    rich_markup_mode=None,  # help text as written: no markup eats "[metrics]"
    name="taskyard",
    help="taskyard: a durable async task manager. Settings come from TASKYARD_ENV, "
    "settings.toml and TASKYARD_* variables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass
class CliState:
    """What the root options chose; commands read the settings and container from it."""

    environment: str | None = None
    settings_files: list[Path] | None = None
    _settings: Dynaconf | None = field(default=None, repr=False)

    def settings(self, overrides: Mapping[str, Any] | None = None) -> Dynaconf:
        """The validated settings; with ``overrides``, a fresh copy that has them."""
        if overrides:
            return load_settings(
                environment=self.environment,
                settings_files=self.settings_files,
                overrides=overrides,
            )
        if self._settings is None:
            self._settings = load_settings(
                environment=self.environment, settings_files=self.settings_files
            )
        return self._settings

    def container(self, overrides: Mapping[str, Any] | None = None) -> Container:
        return Container(settings=self.settings(overrides))


def cli_state(ctx: typer.Context) -> CliState:
    """The :class:`CliState` of the running command."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` to stderr; returns the Exit to raise."""
    Console(stderr=True).print(f"[bold red]taskyard:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def configuration_failure(exc: ConfigurationError) -> typer.Exit:
    return fail(f"configuration error: {exc}", CONFIGURATION_EXIT_CODE)


@app.callback()
def root(
    ctx: typer.Context,
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            metavar="NAME",
            help="Settings environment (development, testing, production); "
            "default: TASKYARD_ENV, else development.",
        ),
    ] = None,
    settings: Annotated[
        list[Path] | None,
        typer.Option(
            "--settings",
            metavar="FILE",
            help="A settings file layered over the defaults (repeatable); replaces "
            "./settings.toml and TASKYARD_SETTINGS_FILES.",
            dir_okay=False,
        ),
    ] = None,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=lambda value: _print_version() if value else None,
            help="Print taskyard's version and exit.",
        ),
    ] = False,
) -> None:
    state = CliState(environment=env, settings_files=list(settings) if settings else None)
    ctx.obj = state
    if ctx.invoked_subcommand == "version":
        return
    try:
        loaded = state.settings()
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc
    setup_logging(loaded, long_running=ctx.invoked_subcommand in LONG_RUNNING_COMMANDS)


LONG_RUNNING_COMMANDS = frozenset({"worker"})
"""Commands whose INFO records are what a person watches; the others print what they
did on stdout, so on a terminal their log shows warnings and errors only."""


def _print_version() -> None:
    typer.echo(f"taskyard {__version__}")
    raise typer.Exit()


def setup_logging(settings: Dynaconf | Mapping[str, Any], *, long_running: bool = True) -> None:
    """The CLI owns its process: taskyard's sink replaces loguru's default one."""
    configure_logging(
        settings, drop_default_sink=True, terminal_level=None if long_running else "WARNING"
    )


def main() -> None:
    """The ``taskyard`` console script."""
    app()


# -- small commands --------------------------------------------------------------------------


@app.command()
def version() -> None:
    """Print taskyard's version."""
    typer.echo(f"taskyard {__version__}")


@app.command("settings")
def show_settings(ctx: typer.Context) -> None:
    """Print the effective settings of the environment as JSON (passwords hidden)."""
    loaded = cli_state(ctx).settings()
    data = settings_as_dict(loaded)
    shown: dict[str, Any] = {"environment": environment_of(loaded)}
    for section in SECTIONS:
        shown[section] = data.get(section, {})
    dsn = shown["task_execution"].get("postgres_dsn")
    if isinstance(dsn, str):
        shown["task_execution"]["postgres_dsn"] = redact_dsn(dsn)
    for key in ("token", "read_only_token"):
        if shown.get("dashboard", {}).get(key):
            shown["dashboard"][key] = "***"
    print_json(shown, sort_keys=True)


# -- shared by the operations commands ----------------------------------------------------
# Thin commands over taskyard.ops; exit status 0 on success, 1 on failure, 2 on a bad
# configuration (health: 0 ok, 1 degraded, 2 down).


def ops_config(ctx: typer.Context, *, needs: Needs = "queue") -> OpsConfig:
    """The one reading of the settings for the operations commands; exits with status 2
    when they are bad or do not describe what the command ``needs`` (a queue: a SQLite
    file or a PostgreSQL schema; a file; or nothing in particular)."""
    try:
        loaded = cli_state(ctx).settings()
        data = settings_as_dict(loaded)
        section = data["task_execution"]
        backend = effective_backend(section)
        parked = parked_queue(section, backend)
        if parked is not None and needs != "nothing" and not ctx.meta.get("taskyard.parked"):
            ctx.meta["taskyard.parked"] = True  # said once per command
            typer.echo(
                f"note: task_execution.backend is in-memory; this reads the SQLite queue "
                f"{parked} it left behind (its queued tasks run once you switch back)",
                err=True,
            )
        return OpsConfig.from_sections(
            data,
            backend=backend,
            canary=canary_backend(section),
            environment=environment_of(loaded),
            needs="nothing" if parked is not None else needs,
        )
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc


def parked_queue(task_execution: Mapping[str, Any], backend: str) -> Path | None:
    """The SQLite queue file an in-memory deployment left behind (rolled back from
    SQLite), which the operations commands still read; None otherwise."""
    if backend != "in-memory" or canary_backend(task_execution) is not None:
        return None
    path = Path(task_execution["queue_db_path"])
    return path.resolve() if path.is_file() else None


@contextlib.contextmanager
def ops_errors(suffix: str = "") -> Iterator[None]:
    """The one error handler of the commands: taskyard errors become a message (with
    ``suffix`` after it) and exit status 1, 2 for configuration errors."""
    try:
        yield
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc
    except TaskyardError as exc:
        raise fail(f"{exc}{suffix}") from exc


def ops_store(ctx: typer.Context) -> StoreOperations:
    """A new, unopened store on the configured queue: the container's ``ops_store``."""
    try:
        container = cli_state(ctx).container()
        section = container.config.task_execution()
        if parked_queue(section, effective_backend(section)) is not None:
            return sqlite_ops_store(section)
        store: StoreOperations = container.ops_store()
    except ConfigurationError as exc:
        raise configuration_failure(exc) from exc
    return store


def on_queue(
    ctx: typer.Context,
    work: Callable[[StoreOperations], Awaitable[T]],
    *,
    create: bool = False,
    suffix: str = "",
    needs: Needs = "queue",
) -> T:
    """The one way a command opens the queue: the container's ``ops_store`` (exit 2
    when the backend keeps no queue to open from here), opened (created when missing
    only with ``create``), ``await work(store)``, closed; taskyard errors handled by
    :func:`ops_errors`. With ``needs="nothing"`` the caller has checked the backend."""
    if needs != "nothing":
        ops_config(ctx, needs=needs)
    store = ops_store(ctx)

    async def run() -> T:
        async with opened(store, create=create) as queue:
            return await work(queue)

    with ops_errors(suffix):
        return asyncio.run(run())


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def print_json(data: Any, *, sort_keys: bool = False) -> None:
    """The one JSON printer of the commands: indented, values JSON lacks as text."""
    typer.echo(json.dumps(data, indent=2, sort_keys=sort_keys, default=str))
