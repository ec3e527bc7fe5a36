"""Handlers for the workflow process tests. Each execution appends one line to the file
named by TASKYARD_TEST_EXEC_LOG with one O_APPEND write (so lines of several processes
never mix): ``run <name> <pid>``, or ``start``/``end <key> <pid>`` around keyed work."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from taskyard.framework.workflows import TaskContext


def log(*words: object) -> None:
    line = (" ".join(str(word) for word in words) + "\n").encode()
    fd = os.open(
        os.environ["TASKYARD_TEST_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
    )
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def member(payload: dict[str, Any]) -> int:
    log("run", payload["name"], os.getpid())
    return int(payload["n"])


async def callback(payload: dict[str, Any], context: TaskContext) -> int:
    log("run", payload["name"], os.getpid())
    return sum(context.previous)


async def keyed(payload: dict[str, Any]) -> None:
    """Holds its key for a moment: long enough for another worker to try the same key."""
    log("start", payload["key"], os.getpid())
    await asyncio.sleep(0.02)
    log("end", payload["key"], os.getpid())


async def step(payload: dict[str, Any], context: TaskContext) -> list[int]:
    """A chain step: the previous steps' numbers plus its own. The step named ``hang``
    hangs on its first execution anywhere (until its process is killed)."""
    log("run", payload["name"], os.getpid())
    if payload["name"] == "hang":
        marker = Path(os.environ["TASKYARD_TEST_EXEC_LOG"] + ".hung")
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            await asyncio.Event().wait()
    return [*(context.previous or []), int(payload["n"])]


HANDLERS = {"member": member, "callback": callback, "keyed": keyed, "step": step}
