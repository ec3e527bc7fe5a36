"""Handlers for the worker processes the operations tests start."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any


async def work(payload: dict[str, Any]) -> Any:
    await asyncio.sleep(0.001)
    return payload["n"]


async def gate(payload: dict[str, Any]) -> str:
    """Runs until the file named in the payload exists."""
    release = Path(payload["release"])
    while not release.exists():
        await asyncio.sleep(0.01)
    return "released"


HANDLERS = {"work": work, "gate": gate}
