"""Handlers for the worker processes the fault suite starts.

Each execution appends ``<event> <n> <pid>`` lines to the file named by
TASKYARD_TEST_EXEC_LOG, one O_APPEND write each (``start`` on entry, ``end`` just before
returning), so a run that a SIGKILL cut short shows a ``start`` without its ``end``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any


def log(event: str, payload: dict[str, Any]) -> None:
    line = f"{event} {payload['n']} {os.getpid()}\n".encode()
    fd = os.open(
        os.environ["TASKYARD_TEST_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
    )
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def work(payload: dict[str, Any]) -> Any:
    """A short piece of work: long enough for kills to land mid-run."""
    log("start", payload)
    await asyncio.sleep(payload.get("seconds", 0.02))
    log("end", payload)
    return payload["n"]


def hang_sync(payload: dict[str, Any]) -> str:
    """A sync handler that never returns until a file named in the payload exists
    (it checks once: the first run hangs for good, a later one finishes)."""
    log("start", payload)
    if not Path(payload["release"]).exists():
        threading.Event().wait()  # no timeout: only the process's end stops this thread
    log("end", payload)
    return "released"


HANDLERS = {"work": work, "hang_sync": hang_sync}
