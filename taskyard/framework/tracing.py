"""OpenTelemetry traces and metrics across the queue (the ``taskyard[otel]`` extra).

When the application has configured an OpenTelemetry tracer provider, scheduling opens
a PRODUCER span (``send <task type>``) around the store write and keeps its W3C trace
context with each task (:attr:`TaskRecord.trace_context`, in every store, carried by
exports, imports, the fallback's spill and moves between stores). Each attempt, in
whichever process claims it, runs inside a CONSUMER span (``process <task type>``)
whose parent is that context, with a link to it as well, so the handler's work shows in
the trace of the request that scheduled it. The consumer span carries the task id,
type, attempt, priority and outcome; a failure sets its status to ERROR and records the
exception. With a meter provider configured, two instruments follow the same
conventions, with low-cardinality attributes only (type, outcome, attempt; never ids):
``messaging.client.sent.messages`` and ``messaging.process.duration``.

Names follow the OpenTelemetry semantic conventions for messaging, version 1.44.0
(``messaging.*``; still "development" upstream), with ``messaging.system = taskyard``
and the task type as ``messaging.destination.name``. What the conventions do not name
is under ``taskyard.task.*``.

Without the extra, or with the extra but no provider configured, nothing here imports
OpenTelemetry: :func:`enabled` looks ``opentelemetry.trace`` up in ``sys.modules`` (an
application that configured a provider has imported it) and the hooks return a shared
no-op object. That check is the whole cost.

The engine calls three hooks: :func:`producing` around storing new tasks (anything that
creates tasks, periodic schedule firings included, calls the same function),
:func:`consuming` when an attempt starts (its ``done(outcome)`` when the outcome is
decided), and :func:`record_exception` where a handler's exception becomes an outcome.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from taskyard.framework.models import (
    MAX_TRACE_CONTEXT_BYTES,
    Outcome,
    TaskRecord,
    TaskStatus,
)

if TYPE_CHECKING:  # pragma: no cover - types only
    from opentelemetry.trace import Span

__all__ = [
    "SEMCONV_VERSION",
    "SYSTEM",
    "consuming",
    "enabled",
    "producing",
    "record_exception",
]

SEMCONV_VERSION = "1.44.0"
"""The version of the messaging semantic conventions the names follow."""
SYSTEM = "taskyard"
"""``messaging.system`` on every span and measurement."""

_TRACER_NAME = "taskyard"


_DEFAULT_PROVIDERS = frozenset(
    {"ProxyTracerProvider", "NoOpTracerProvider", "_ProxyMeterProvider", "NoOpMeterProvider"}
)
_UNSET = object()


def _configured(module_name: str, attribute: str, getter: str) -> Any:
    """The global provider of ``module_name`` when the application configured one, else
    None; imports nothing. The API keeps the provider set with ``set_*_provider`` in a
    module global: reading it is the fast path (the getter reads the environment on each
    call while nothing is set); an API without that global is asked through ``getter``."""
    module = sys.modules.get(module_name)
    if module is None:
        return None
    provider = getattr(module, attribute, _UNSET)
    if provider is _UNSET:
        provider = getattr(module, getter)()
    if provider is None or type(provider).__name__ in _DEFAULT_PROVIDERS:
        return None
    return provider


def enabled() -> bool:
    """Whether a tracer provider is configured (no import; a look-up or two)."""
    return _configured("opentelemetry.trace", "_TRACER_PROVIDER", "get_tracer_provider") is not None


def _meter_provider() -> Any:
    return _configured("opentelemetry.metrics._internal", "_METER_PROVIDER", "get_meter_provider")


class _Nothing:
    """The hooks' value when tracing is off: every method does nothing."""

    __slots__ = ()

    def __enter__(self) -> _Nothing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def done(self, outcome: Outcome | None) -> None:
        return None


_NOTHING = _Nothing()


def producing(records: Sequence[TaskRecord]) -> _Nothing | _Producing:
    """``with producing(records): <store the records>``: a PRODUCER span around the
    write; on entry each record's ``trace_context`` is set to the span's context. Call it
    wherever tasks are created (schedule_task, schedule_many, schedule firings)."""
    if not records or not enabled():
        return _NOTHING
    return _Producing(records)


def consuming(record: TaskRecord) -> _Nothing | _Consuming:
    """``attempt = consuming(record)`` ... ``attempt.done(outcome)``, in the task that runs
    the attempt: a CONSUMER span, current until ``done``, continuing the task's trace."""
    if not enabled():
        return _NOTHING
    return _Consuming(record)


def record_exception(exc: BaseException) -> None:
    """Record ``exc`` on the current attempt's span (nothing when tracing is off)."""
    if enabled():
        from opentelemetry import trace

        span = trace.get_current_span()
        if span.is_recording():
            span.record_exception(exc)
            span.set_attribute("error.type", _error_type(exc))


def _error_type(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _version() -> str:
    from taskyard import __version__  # the package is initialised by the time a span starts

    return __version__


def _tracer() -> Any:
    """taskyard's tracer from the global provider, made once per provider."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if _tracer_of[0] is not provider:
        _tracer_of[:] = [provider, provider.get_tracer(_TRACER_NAME, _version(), _SCHEMA_URL)]
    return _tracer_of[1]


_tracer_of: list[Any] = [None, None]
_SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"


def _carrier(span: Span) -> dict[str, str] | None:
    from opentelemetry import propagate, trace

    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    if not carrier:
        return None
    if len(json.dumps(carrier, separators=(",", ":"))) > MAX_TRACE_CONTEXT_BYTES:
        # baggage too large to keep with every task: the trace itself still travels
        carrier = {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")}
    return carrier or None


class _Producing:
    __slots__ = ("_records", "_scope", "_span")

    def __init__(self, records: Sequence[TaskRecord]) -> None:
        self._records = records

    def __enter__(self) -> _Producing:
        from opentelemetry import trace

        records = self._records
        types = {record.type for record in records}
        destination = next(iter(types)) if len(types) == 1 else None
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
        }
        if destination is not None:
            attributes["messaging.destination.name"] = destination
        if len(records) == 1:
            attributes["messaging.message.id"] = records[0].id
            attributes["taskyard.task.priority"] = records[0].priority
        else:
            attributes["messaging.batch.message_count"] = len(records)
        name = "send" if destination is None else f"send {destination}"
        self._span = _tracer().start_span(name, kind=trace.SpanKind.PRODUCER, attributes=attributes)
        self._scope = trace.use_span(self._span, end_on_exit=False)
        self._scope.__enter__()
        carrier = _carrier(self._span)
        for record in records:
            record.trace_context = carrier
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from opentelemetry.trace import Status, StatusCode

        try:
            if exc is not None:
                self._span.record_exception(exc)
                self._span.set_attribute("error.type", _error_type(exc))
                self._span.set_status(Status(StatusCode.ERROR, str(exc) or type(exc).__name__))
        finally:
            self._scope.__exit__(exc_type, exc, tb)
            self._span.end()
        if exc is None:
            _count_sent(self._records, None)


def _count_sent(records: Sequence[TaskRecord], error: str | None) -> None:
    provider = _meter_provider()
    if provider is None:
        return
    counter = _instruments(provider)[0]
    by_type: dict[str, int] = {}
    for record in records:
        by_type[record.type] = by_type.get(record.type, 0) + 1
    for task_type, count in by_type.items():
        counter.add(count, _metric_attributes("send", task_type))


_OUTCOMES = {
    TaskStatus.COMPLETED: "completed",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELLED: "cancelled",
}


def _outcome_name(outcome: Outcome | None) -> str:
    if outcome is None:
        return "cancelled"  # cancelled, or the lease was lost: the store says what happened
    if outcome.status is TaskStatus.QUEUED:
        return "released" if outcome.release else "retried"
    return _OUTCOMES.get(outcome.status, str(outcome.status))


class _Consuming:
    """The CONSUMER span of one attempt: started and made current on creation (in the
    task that runs the attempt), ended by :meth:`done`."""

    __slots__ = ("_record", "_span", "_started", "_token")

    def __init__(self, record: TaskRecord) -> None:
        from opentelemetry import context, propagate, trace

        self._record = record
        # An empty context, not the current one: a task scheduled without tracing starts
        # a trace of its own instead of joining whatever the engine's loop had current.
        parent = context.Context()
        links = []
        if record.trace_context:
            extracted = propagate.extract(record.trace_context, context=parent)
            creation = trace.get_current_span(extracted).get_span_context()
            if creation.is_valid:
                parent = extracted
                links.append(trace.Link(creation))
        attributes = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": record.type,
            "messaging.message.id": record.id,
            "taskyard.task.attempt": record.attempts,
            "taskyard.task.priority": record.priority,
            "taskyard.task.max_attempts": record.max_attempts,
        }
        self._started = time.perf_counter()
        self._span = _tracer().start_span(
            f"process {record.type}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )
        self._token = context.attach(trace.set_span_in_context(self._span, parent))

    def done(self, outcome: Outcome | None) -> None:
        """End the span with the attempt's outcome (None: cancelled, or its lease lost)."""
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        name = _outcome_name(outcome)
        try:
            self._span.set_attribute("taskyard.task.outcome", name)
            if outcome is not None and outcome.status is not TaskStatus.COMPLETED:
                if outcome.error and not outcome.release:
                    self._span.set_status(Status(StatusCode.ERROR, outcome.error))
        finally:
            context.detach(self._token)
            self._span.end()
        provider = _meter_provider()
        if provider is not None:
            attributes = _metric_attributes("process", self._record.type)
            attributes["taskyard.task.outcome"] = name
            attributes["taskyard.task.attempt"] = self._record.attempts
            _instruments(provider)[1].record(time.perf_counter() - self._started, attributes)


def _metric_attributes(operation: str, task_type: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
        "messaging.destination.name": task_type,
    }


_made: dict[int, tuple[Any, Any]] = {}


def _instruments(provider: Any) -> tuple[Any, Any]:
    """(sent counter, process duration histogram) of ``provider``, made once."""
    made = _made.get(id(provider))
    if made is None:
        meter = provider.get_meter(_TRACER_NAME, _version(), schema_url=_SCHEMA_URL)
        made = (
            meter.create_counter(
                "messaging.client.sent.messages",
                unit="{message}",
                description="Tasks taskyard stored (scheduled).",
            ),
            meter.create_histogram(
                "messaging.process.duration",
                unit="s",
                description="How long a handler ran, per attempt.",
            ),
        )
        _made[id(provider)] = made
    return made
