"""Handlers for the worker process the dashboard tests start."""

from __future__ import annotations

from typing import Any


async def ok(payload: Any) -> Any:
    return {"echo": payload}


def boom(payload: Any) -> Any:
    raise ValueError(f"boom: the handler refused {payload!r}")


HANDLERS = {"ok": ok, "boom": boom, "boom2": boom}
