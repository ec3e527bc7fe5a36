"""Worker processes: load the application's handlers, run until a signal or a stop request
through the queue, stop gracefully.

The handlers come from an import path, the way ``celery -A`` or arq's worker settings
do it: ``package.module:attribute`` where the attribute is either a mapping of task
type to handler, or a (sync or async) function that takes the manager and calls
``register_task`` itself.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from loguru import logger

from taskyard._platform import install_stop_handlers
from taskyard.framework.engine import TaskEngine
from taskyard.framework.errors import ConfigurationError
from taskyard.framework.protocol import TaskManager
from taskyard.framework.schedules import Schedule, declare

Registrar = Callable[[TaskManager], Any]


def load_registrar(import_path: str) -> Registrar:
    """Resolve ``module:attribute`` into a function that registers handlers on a manager.

    Raises ConfigurationError naming what is wrong with the path."""
    module_name, _, attribute = import_path.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"the worker's app {import_path!r} is not of the form 'package.module:attribute'"
        )
    if "" not in sys.path:
        sys.path.insert(0, "")  # the current folder, as `python -m` would have it
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for the worker: {exc}") from exc
    try:
        target = getattr(module, attribute)
    except AttributeError as exc:
        raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}") from exc

    if isinstance(target, Mapping):
        handlers = dict(target)

        async def register_all(manager: TaskManager) -> None:
            for task_type, handler in handlers.items():
                await manager.register_task(task_type, handler)

        return register_all
    if callable(target):
        return _checked_registrar(import_path, target)
    raise ConfigurationError(
        f"{import_path!r} is a {type(target).__name__}; it must be a mapping of task type to "
        "handler, or a function taking the manager"
    )


def _checked_registrar(import_path: str, target: Callable[..., Any]) -> Registrar:
    """A function named by ``--app`` must take the manager, and only that. A task handler
    (which takes a payload) named by mistake is told apart by its signature where it
    has one, and by what it does with the manager otherwise."""
    try:
        parameters = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):  # a builtin or an object without a signature
        parameters = None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if parameters is not None:
        required = [p for p in parameters if p.default is p.empty and p.kind in positional]
        takes_one = any(p.kind is p.VAR_POSITIONAL for p in parameters) or any(
            p.kind in positional for p in parameters
        )
        if len(required) > 1 or not takes_one:
            raise ConfigurationError(_not_a_registrar(import_path, target))

    async def registrar(manager: TaskManager) -> None:
        try:
            result = target(manager)
            if inspect.isawaitable(result):
                await result
        except (TypeError, AttributeError, KeyError) as exc:
            raise ConfigurationError(
                f"{_not_a_registrar(import_path, target)} (calling it with the manager "
                f"raised {type(exc).__name__}: {exc})"
            ) from exc

    return registrar


def _not_a_registrar(import_path: str, target: Any) -> str:
    name = getattr(target, "__name__", type(target).__name__)
    return (
        f"--app {import_path!r} names the function {name}, which does not register handlers. "
        "--app must name either a mapping of task type to handler (HANDLERS = "
        '{"send_email": send_email}) or a function that takes the task manager and calls '
        "await manager.register_task(task_type, handler) itself; a handler, which takes a "
        "payload, cannot be named there"
    )


async def register(manager: TaskManager, registrar: Registrar) -> None:
    result = registrar(manager)
    if inspect.isawaitable(result):
        await result
    if isinstance(manager, TaskEngine) and not manager.registered_types:
        raise ConfigurationError(
            "the worker's app registered no handlers: --app (or task_execution.worker_app) "
            "must name a mapping of task type to handler, or a function that calls "
            "manager.register_task for each"
        )


async def serve(
    manager: TaskManager,
    registrar: Registrar | None = None,
    *,
    stop: asyncio.Event | None = None,
    shutdown_timeout: float | None = None,
    install_signal_handlers: bool = True,
    where: str = "",
    schedules: Sequence[Schedule] = (),
) -> None:
    """Run ``manager`` as a worker until ``stop`` is set, a stop signal arrives
    (SIGTERM/SIGINT; SIGINT/SIGBREAK on Windows) or ``taskyard workers stop`` asks
    through the queue, then stop gracefully: no new claims, running handlers get
    ``shutdown_timeout`` seconds, the rest go back to ``queued``. ``where`` says what the
    worker runs on (the backend and its file), for the start line. ``schedules`` (from
    the settings) are declared once the manager started: created, or updated when
    changed."""
    stop = stop or asyncio.Event()
    uninstall = stop_on_signals(stop) if install_signal_handlers else None
    asked: asyncio.Event | None = None
    if isinstance(manager, TaskEngine):
        manager.role = "worker"  # so `taskyard workers stop` and rollback may stop it
        asked = manager.stop_requested
    try:
        if registrar is not None:
            await register(manager, registrar)
        await manager.start()
        if schedules and isinstance(manager, TaskEngine):  # the settings' [schedules] tables
            for schedule in schedules:
                await declare(manager.store, schedule)
        logger.info("taskyard worker started: {}", describe(manager, where))
        # a line supervisors and tests wait for
        print(f"taskyard worker ready{': ' + where if where else ''}", flush=True)
        await _first(stop, asked)
    finally:
        if uninstall is not None:
            uninstall()
        await manager.stop(timeout=shutdown_timeout)
        logger.info("taskyard worker stopped")


def describe(manager: TaskManager, where: str = "") -> str:
    """The worker's start line, for a person: what it runs on, how many handlers at once,
    which task types."""
    parts = [where] if where else []
    if isinstance(manager, TaskEngine):
        parts.insert(0, manager.worker_id)
        parts.append(f"concurrency {manager.config.concurrency}")
        types = sorted(manager.registered_types)
        parts.append(f"{len(types)} handler(s): {', '.join(types) or 'none'}")
    return ", ".join(parts)


def stop_on_signals(stop: asyncio.Event) -> Callable[[], None]:
    """Set ``stop`` when the process is asked to stop by a signal: SIGTERM or SIGINT, on
    Windows SIGINT or SIGBREAK (Ctrl+C, Ctrl+Break). Call it inside the running loop;
    works where the loop has no ``add_signal_handler`` (every Windows loop). Returns the
    function that puts the previous handlers back."""
    return install_stop_handlers(asyncio.get_running_loop(), partial(_on_signal, stop))


async def _first(*events: asyncio.Event | None) -> None:
    """Wait until one of ``events`` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events if event is not None]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def _on_signal(stop: asyncio.Event, name: str) -> None:
    logger.info("taskyard worker received {}; stopping gracefully", name)
    stop.set()
