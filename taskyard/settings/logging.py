"""Logging set-up from the ``logging`` section of the settings."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from typing import Any

from dynaconf import Dynaconf
from loguru import logger

from taskyard.settings.conversion import settings_as_dict

# -- logging --------------------------------------------------------------------------------

_handler_ids: list[int] = []


def configure_logging(
    settings: Dynaconf | Mapping[str, Any],
    *,
    drop_default_sink: bool = False,
    terminal_level: str | None = None,
) -> list[int]:
    """Send taskyard's log records where the ``logging`` section says, replacing what an
    earlier call set up; with ``enabled = false`` taskyard is silent again. Returns the
    loguru handler ids added. The library never calls this itself: the CLI or the
    application does.

    loguru's default stderr sink (handler 0) would write taskyard's records a second
    time; ``drop_default_sink=True`` removes it, for programs that leave all their
    logging to these settings (the CLI does).

    ``terminal_level`` raises the level of a stderr or stdout sink to at least that
    (the CLI's one-shot commands print what they did; INFO records would repeat it). A
    file sink keeps the configured level, and its file is created only once a record
    is written, so a command that logs nothing leaves no file behind.
    """
    section = settings_as_dict(settings).get("logging") or {}
    for handler_id in _handler_ids:
        logger.remove(handler_id)
    _handler_ids.clear()
    if not section.get("enabled", False):
        logger.disable("taskyard")
        return []
    if drop_default_sink:
        with contextlib.suppress(ValueError):  # already removed
            logger.remove(0)
    level = str(section.get("level", "INFO")).upper()
    serialize = bool(section.get("serialize", False))
    sink = str(section.get("sink", "stderr"))
    options: dict[str, Any] = {
        "level": level,
        "serialize": serialize,
        "filter": "taskyard",
        "backtrace": False,
        "diagnose": False,
    }
    if sink in ("stderr", "stdout"):
        if terminal_level is not None and logger.level(terminal_level).no > logger.level(level).no:
            options["level"] = terminal_level
        handler_id = logger.add(sys.stderr if sink == "stderr" else sys.stdout, **options)
    else:
        handler_id = logger.add(
            sink,
            rotation=str(section.get("rotation", "10 MB")),
            retention=section.get("retention", 10),
            encoding="utf-8",
            delay=True,
            **options,
        )
    _handler_ids.append(handler_id)
    logger.enable("taskyard")
    return [handler_id]
