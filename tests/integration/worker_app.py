"""Handlers for the worker processes the integration tests start.

Every execution appends ``<n> <pid>`` to the file named by TASKYARD_TEST_EXEC_LOG with
one O_APPEND write, so a task run twice shows up twice, whichever processes ran it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any


def record(payload: dict[str, Any]) -> None:
    line = f"{payload['n']} {os.getpid()}\n".encode()
    fd = os.open(
        os.environ["TASKYARD_TEST_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
    )
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def count(payload: dict[str, Any]) -> Any:
    record(payload)
    return payload["n"]


async def slot(payload: dict[str, Any]) -> str:
    """A periodic schedule's task: logs ``<slot> <pid>``."""
    line = f"{payload['schedule_slot']} {os.getpid()}\n".encode()
    fd = os.open(
        os.environ["TASKYARD_TEST_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
    )
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return str(payload["schedule_slot"])


async def hang_once(payload: dict[str, Any]) -> str:
    """The first execution anywhere hangs (until its process dies); later ones finish."""
    marker = Path(os.environ["TASKYARD_TEST_EXEC_LOG"] + ".hung")
    record(payload)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return "finished by a second worker"
    os.close(fd)
    await asyncio.Event().wait()
    return "unreachable"


async def wait_for_release(payload: dict[str, Any]) -> str:
    """Runs until a file named in the payload exists."""
    record(payload)
    release = Path(payload["release"])
    while not release.exists():
        await asyncio.sleep(0.01)
    return "released"


HANDLERS = {
    "count": count,
    "hang_once": hang_once,
    "wait_for_release": wait_for_release,
    "slot": slot,
}
