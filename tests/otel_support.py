"""The two sides of a traced queue, each in a process of its own (run by
tests/integration/test_tracing.py): OpenTelemetry's global providers can be set once
per process, so the test process never configures them.

    python -m tests.otel_support produce BACKEND WHERE   # prints {"ids": ..., "spans": ...}
    python -m tests.otel_support work BACKEND WHERE IDS  # prints {"spans": ..., "metrics": ...}

BACKEND is ``sqlite`` (WHERE: a file) or ``postgres`` (WHERE: a DSN; schema ``traced``).
Each side configures the SDK with the in-memory span exporter and prints, as one JSON
line, the spans it finished.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from taskyard.framework.engine import EngineConfig, TaskEngine


def configure() -> tuple[InMemorySpanExporter, InMemoryMetricReader]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return exporter, reader


def manager(backend: str, where: str, *, run_worker: bool) -> TaskEngine:
    config = EngineConfig(run_worker=run_worker, poll_interval=0.05, default_max_attempts=1)
    if backend == "sqlite":
        from taskyard.backends.sqlite import QueuedTaskManager

        return QueuedTaskManager(config, db_path=where)
    from taskyard.backends.postgres.manager import PostgresTaskManager

    return PostgresTaskManager(config, dsn=where, schema="traced")


def span_json(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": None if span.parent is None else f"{span.parent.span_id:016x}",
        "links": [f"{link.context.span_id:016x}" for link in span.links],
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "events": [
            {"name": event.name, "attributes": dict(event.attributes or {})}
            for event in span.events
        ],
    }


async def ok(payload: dict[str, Any]) -> dict[str, Any]:
    with trace.get_tracer("handler").start_as_current_span("inside the handler"):
        return {"echo": payload}


async def boom(payload: dict[str, Any]) -> None:
    raise ValueError(f"boom {payload['n']}")


async def produce(backend: str, where: str) -> dict[str, Any]:
    exporter, _ = configure()
    async with manager(backend, where, run_worker=False) as producer:
        await producer.register_task("ok", ok)  # a producer-only manager still names its types
        await producer.register_task("boom", boom)
        with trace.get_tracer("web").start_as_current_span("POST /jobs"):
            ids = [
                await producer.schedule_task("ok", {"n": 1}),
                await producer.schedule_task("boom", {"n": 2}, priority=3),
            ]
        ids += await producer.schedule_many(
            [{"task_type": "ok", "payload": {"n": 3}}, {"task_type": "ok", "payload": {"n": 4}}]
        )
    return {"ids": ids, "spans": [span_json(span) for span in exporter.get_finished_spans()]}


async def work(backend: str, where: str, ids: list[str]) -> dict[str, Any]:
    exporter, reader = configure()
    async with manager(backend, where, run_worker=True) as worker:
        await worker.register_task("ok", ok)
        await worker.register_task("boom", boom)
        statuses = [await worker.wait_for(task_id, timeout=30) for task_id in ids]
    points: list[dict[str, Any]] = []
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points += [
                    {"name": metric.name, "attributes": dict(point.attributes or {})}
                    for point in metric.data.data_points
                ]
    return {
        "statuses": [status["status"] for status in statuses],
        "spans": [span_json(span) for span in exporter.get_finished_spans()],
        "metrics": points,
    }


def main(argv: list[str]) -> None:
    mode, backend, where, *rest = argv
    if mode == "produce":
        result = asyncio.run(produce(backend, where))
    else:
        result = asyncio.run(work(backend, where, json.loads(rest[0])))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
