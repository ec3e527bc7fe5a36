"""OpenTelemetry for both processes, as ``[*.service]`` says.

taskyard itself only needs a configured tracer provider: it then opens a PRODUCER span
when the web process schedules a job, stores the trace context with the task, and runs
each attempt in the worker inside a CONSUMER span of the same trace. This module sets the
provider up (the SDK is the application's choice, never taskyard's) and instruments
FastAPI, so one trace shows the HTTP request, the enqueue and the handler run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

EXPORTERS = ("none", "console", "jsonl", "otlp")


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span to a file as one JSON line (``span.to_json()``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(json.loads(span.to_json())) + "\n" for span in spans)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, lines.encode())  # one write: two processes may share the file
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS


def configure(service: Mapping[str, Any], role: str) -> TracerProvider | None:
    """Set the global tracer provider for this process (``role``: web or worker) as the
    ``service`` settings say; None when ``trace_exporter = "none"``."""
    kind = str(service["trace_exporter"])
    if kind not in EXPORTERS:
        raise ValueError(f"service.trace_exporter = {kind!r}: use one of {', '.join(EXPORTERS)}")
    if kind == "none":
        return None
    resource = Resource.create({"service.name": f"{service['name']}-{role}"})
    provider = TracerProvider(resource=resource)
    if kind == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif kind == "jsonl":
        if not service["spans_file"]:
            raise ValueError('service.trace_exporter = "jsonl" needs service.spans_file')
        provider.add_span_processor(
            SimpleSpanProcessor(JsonLinesSpanExporter(service["spans_file"]))
        )
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ValueError(
                'service.trace_exporter = "otlp" needs pip install opentelemetry-exporter-otlp'
            ) from exc
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider
