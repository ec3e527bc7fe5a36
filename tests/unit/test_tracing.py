"""taskyard.framework.tracing in one process, with the SDK's in-memory exporter and
reader; OpenTelemetry's globals are reset after each test (opentelemetry-test-utils), so
no other test runs with a provider. Across processes: tests/integration/test_tracing.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, context, metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.test.globals_test import reset_metrics_globals, reset_trace_globals

from taskyard import EngineConfig, PermanentFailure, Retry, RetryPolicy
from taskyard.backends.memory import InMemoryTaskManager
from taskyard.framework import tracing
from taskyard.framework.models import TaskRecord


class Telemetry:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        trace.set_tracer_provider(provider)
        self.reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[self.reader]))

    def spans(self, kind: trace.SpanKind | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return [span for span in found if kind is None or span.kind is kind]

    def points(self, name: str) -> list[dict[str, Any]]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found += [dict(p.attributes or {}) for p in metric.data.data_points]
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    reset_trace_globals()
    reset_metrics_globals()
    try:
        yield Telemetry()
    finally:
        reset_trace_globals()
        reset_metrics_globals()


def manager(**config: Any) -> InMemoryTaskManager:
    return InMemoryTaskManager(
        EngineConfig(poll_interval=0.01, retry=RetryPolicy(initial=0.001, jitter=0), **config)
    )


async def test_the_consumer_span_continues_the_producer_span(telemetry: Telemetry) -> None:
    async def echo(payload: dict[str, Any]) -> dict[str, Any]:
        with trace.get_tracer("app").start_as_current_span("handler work"):
            return payload

    async with manager() as queue:
        await queue.register_task("echo", echo)
        with trace.get_tracer("app").start_as_current_span("request") as request:
            task_id = await queue.schedule_task("echo", {"n": 1}, priority=2)
        assert (await queue.wait_for(task_id, timeout=5))["status"] == "completed"
        stored = queue.tasks[task_id].trace_context
    [send] = telemetry.spans(trace.SpanKind.PRODUCER)
    [process] = telemetry.spans(trace.SpanKind.CONSUMER)
    [work] = [span for span in telemetry.spans() if span.name == "handler work"]
    assert (
        stored is not None and stored["traceparent"].split("-")[2] == f"{send.context.span_id:016x}"
    )
    assert send.name == "send echo" and send.parent is not None
    assert send.parent.span_id == request.get_span_context().span_id
    assert dict(send.attributes or {}) == {
        "messaging.system": "taskyard",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "echo",
        "messaging.message.id": task_id,
        "taskyard.task.priority": 2,
    }
    assert process.name == "process echo" and process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert process.status.status_code is trace.StatusCode.UNSET
    assert process.attributes is not None
    assert process.attributes["taskyard.task.outcome"] == "completed"
    assert work.parent is not None and work.parent.span_id == process.context.span_id
    assert telemetry.points("messaging.client.sent.messages") == [
        {
            "messaging.system": "taskyard",
            "messaging.operation.name": "send",
            "messaging.destination.name": "echo",
        }
    ]
    [duration] = telemetry.points("messaging.process.duration")
    assert duration["taskyard.task.outcome"] == "completed"
    assert "messaging.message.id" not in duration


async def test_a_sync_handler_runs_inside_the_attempts_span(telemetry: Telemetry) -> None:
    def blocking(payload: dict[str, Any]) -> None:
        with trace.get_tracer("app").start_as_current_span("in a thread"):
            return None

    async with manager() as queue:
        await queue.register_task("blocking", blocking)
        task_id = await queue.schedule_task("blocking")
        assert (await queue.wait_for(task_id, timeout=5))["status"] == "completed"
    [process] = telemetry.spans(trace.SpanKind.CONSUMER)
    [inner] = [span for span in telemetry.spans() if span.name == "in a thread"]
    assert inner.parent is not None and inner.parent.span_id == process.context.span_id


async def test_schedule_many_is_one_producer_span(telemetry: Telemetry) -> None:
    async def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    async with manager(run_worker=False) as queue:
        await queue.register_task("a", echo)
        await queue.register_task("b", echo)
        ids = await queue.schedule_many(
            [{"task_type": "a"}, {"task_type": "b"}, {"task_type": "a"}]
        )
        contexts = {str(queue.tasks[task_id].trace_context) for task_id in ids}
    [send] = telemetry.spans(trace.SpanKind.PRODUCER)
    assert send.name == "send"  # two types: no single destination
    assert send.attributes is not None
    assert send.attributes["messaging.batch.message_count"] == 3
    assert "messaging.destination.name" not in send.attributes
    assert len(contexts) == 1 and f"{send.context.span_id:016x}" in contexts.pop()
    sent = {
        p["messaging.destination.name"] for p in telemetry.points("messaging.client.sent.messages")
    }
    assert sent == {"a", "b"}


async def test_failures_set_error_and_record_the_exception(telemetry: Telemetry) -> None:
    calls: dict[str, int] = {}

    async def flaky(payload: dict[str, Any]) -> str:
        calls["flaky"] = calls.get("flaky", 0) + 1
        if calls["flaky"] == 1:
            raise KeyError("first time")
        if calls["flaky"] == 2:
            raise Retry("again", delay=0.001)
        return "ok"

    async def hopeless(payload: dict[str, Any]) -> None:
        raise PermanentFailure("never")

    async def slow(payload: dict[str, Any]) -> None:
        await asyncio.sleep(60)

    async with manager() as queue:
        await queue.register_task("flaky", flaky, max_attempts=3)
        await queue.register_task("hopeless", hopeless)
        await queue.register_task("slow", slow, timeout=0.01, max_attempts=1)
        ids = [await queue.schedule_task(name) for name in ("flaky", "hopeless", "slow")]
        statuses = [(await queue.wait_for(task_id, timeout=5))["status"] for task_id in ids]
    assert statuses == ["completed", "failed", "failed"]
    spans = telemetry.spans(trace.SpanKind.CONSUMER)
    seen = [
        (
            span.name,
            (span.attributes or {})["taskyard.task.attempt"],
            (span.attributes or {})["taskyard.task.outcome"],
            span.status.status_code.name,
            [event.attributes["exception.type"] for event in span.events if event.attributes],
        )
        for span in spans
    ]
    assert sorted(seen) == [
        ("process flaky", 1, "retried", "ERROR", ["KeyError"]),
        ("process flaky", 2, "retried", "ERROR", []),  # Retry is control flow, not an error
        ("process flaky", 3, "completed", "UNSET", []),
        ("process hopeless", 1, "failed", "ERROR", ["taskyard.framework.errors.PermanentFailure"]),
        ("process slow", 1, "failed", "ERROR", []),
    ]
    hopeless_span = next(span for span in spans if span.name == "process hopeless")
    assert hopeless_span.status.description == "never"
    assert (hopeless_span.attributes or {})["error.type"] == (
        "taskyard.framework.errors.PermanentFailure"
    )


async def test_a_cancelled_attempt_ends_its_span(telemetry: Telemetry) -> None:
    started = asyncio.Event()

    async def wait(payload: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    async with manager() as queue:
        await queue.register_task("wait", wait)
        task_id = await queue.schedule_task("wait")
        await asyncio.wait_for(started.wait(), 5)
        assert await queue.cancel_task(task_id)
        assert (await queue.wait_for(task_id, timeout=5))["status"] == "cancelled"
        await queue.wait_all(timeout=5)
    [span] = telemetry.spans(trace.SpanKind.CONSUMER)
    assert (span.attributes or {})["taskyard.task.outcome"] == "cancelled"


async def test_a_task_without_a_usable_context_starts_a_trace_of_its_own(
    telemetry: Telemetry,
) -> None:
    async def echo(payload: dict[str, Any]) -> None:
        return None

    async with manager() as queue:
        await queue.register_task("echo", echo)
        damaged = TaskRecord(id="damaged", type="echo", payload={}, trace_context={"x": "y"})
        untraced = TaskRecord(id="untraced", type="echo", payload={})
        await queue.store.add([damaged, untraced])
        for task_id in ("damaged", "untraced"):
            assert (await queue.wait_for(task_id, timeout=5))["status"] == "completed"
    for span in telemetry.spans(trace.SpanKind.CONSUMER):
        assert span.parent is None and list(span.links) == []


async def test_oversized_baggage_is_left_behind_but_the_trace_travels(
    telemetry: Telemetry,
) -> None:
    async def echo(payload: dict[str, Any]) -> None:
        return None

    async with manager(run_worker=False) as queue:
        await queue.register_task("echo", echo)
        token = context.attach(baggage.set_baggage("big", "x" * 8000))
        try:
            task_id = await queue.schedule_task("echo")
        finally:
            context.detach(token)
        stored = queue.tasks[task_id].trace_context
        small_token = context.attach(baggage.set_baggage("user", "42"))
        try:
            with_baggage = await queue.schedule_task("echo")
        finally:
            context.detach(small_token)
        kept = queue.tasks[with_baggage].trace_context
    assert stored is not None and set(stored) == {"traceparent"}
    assert kept is not None and kept.get("baggage") == "user=42"


async def test_without_a_provider_nothing_is_traced() -> None:
    reset_trace_globals()
    assert not tracing.enabled()
    record = TaskRecord(id="x", type="t", payload={})
    with tracing.producing([record]):
        tracing.consuming(record).done(None)
    assert record.trace_context is None
    tracing.record_exception(ValueError("ignored"))
    async with manager() as queue:

        async def echo(payload: dict[str, Any]) -> None:
            return None

        await queue.register_task("echo", echo)
        task_id = await queue.schedule_task("echo")
        assert (await queue.wait_for(task_id, timeout=5))["status"] == "completed"
        assert queue.tasks[task_id].trace_context is None
