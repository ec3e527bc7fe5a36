"""The jobs themselves: what the worker process runs. Plain functions of the payload,
no web framework and no taskyard import: the same code runs in a test, in a worker, or
in a script."""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry import trace

RENDER_REPORT = "render_report"

tracer = trace.get_tracer("jobs_service.jobs")


async def render_report(payload: dict[str, Any]) -> dict[str, Any]:
    """Render a report of ``pages`` pages (``seconds`` of work each); ``fail`` makes it
    raise, to show a failed attempt in the status and in the trace."""
    pages = int(payload.get("pages", 1))
    with tracer.start_as_current_span("render pages") as span:  # a child of taskyard's span
        span.set_attribute("report.pages", pages)
        for _ in range(pages):
            await asyncio.sleep(float(payload.get("seconds", 0.0)))
        if payload.get("fail"):
            raise ValueError(f"cannot render {payload.get('title', 'the report')!r}")
    return {"title": payload.get("title", ""), "pages": pages}


HANDLERS = {RENDER_REPORT: render_report}
