"""The task vocabulary every backend speaks: statuses, records, outcomes, JSON and time."""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from taskyard._platform import register_at_fork
from taskyard.framework.errors import PayloadError

JSONValue = Any
"""A value made of dict (str keys), list, str, int, float (finite), bool and None."""


class TaskStatus(StrEnum):
    """The only statuses a task can have."""

    WAITING = "waiting"  # for its dependencies (``depends_on``) to finish
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # attempts exhausted or permanent failure: the dead-letter state
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
ACTIVE_STATUSES = frozenset({TaskStatus.WAITING, TaskStatus.QUEUED, TaskStatus.RUNNING})

#: The allowed transitions. Stores enforce them in their writes: a claim takes only queued
#: tasks, an outcome applies only to a running task that still holds its lease, a cancel
#: touches only waiting, queued or running ones. A waiting task leaves that status in the
#: store transaction that finishes its last dependency: to queued, or to cancelled when a
#: dependency ended failed or cancelled and its policy is "cancel"
#: (:mod:`taskyard.framework.workflows`).
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.WAITING: frozenset({TaskStatus.QUEUED, TaskStatus.CANCELLED}),
    TaskStatus.QUEUED: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED}),
    TaskStatus.RUNNING: frozenset(
        {TaskStatus.QUEUED, TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}

STATUS_KEYS = (
    "id",
    "type",
    "status",
    "priority",
    "attempts",
    "max_attempts",
    "payload",
    "result",
    "error",
    "created_at",
    "updated_at",
    "run_after",
    "started_at",
    "finished_at",
    "tracebacks",
)


MAX_TRACEBACKS = 5
"""Failed attempts whose traceback a task keeps (the newest)."""
MAX_TRACEBACK_CHARS = 8000
"""The longest traceback kept; a longer one keeps its start and its end (where the
exception was raised), with the middle cut."""


def clip_traceback(text: str) -> str:
    """``text`` within MAX_TRACEBACK_CHARS: the first quarter and the last three quarters
    of what fits, and a line saying how much was cut."""
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text
    head = MAX_TRACEBACK_CHARS // 4
    tail = MAX_TRACEBACK_CHARS - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n... {cut} characters cut ...\n{text[-tail:]}"


def keep_tracebacks(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest MAX_TRACEBACKS entries."""
    return entries[-MAX_TRACEBACKS:]


# -- time ----------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_epoch(moment: datetime) -> float:
    """Seconds since the epoch: the one representation stores compare on."""
    return moment.timestamp()


def from_epoch(seconds: float | None) -> datetime | None:
    """The aware UTC time of ``seconds``; a value outside what ``datetime`` can hold
    (written before the API bounded times) reads as the nearest representable time, so
    one odd row never stops a reader."""
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        return _FAR_PAST if seconds < 0 else _FAR_FUTURE


_FAR_PAST = datetime.min.replace(tzinfo=UTC)
_FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


# -- limits: what every store accepts (checked once, here and in the engine) ------------

EARLIEST_RUN_AFTER = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest ``run_after`` accepted (the epoch; anything past runs at once anyway)."""
LATEST_RUN_AFTER = datetime(2200, 1, 1, tzinfo=UTC)
"""The latest ``run_after`` accepted: stores keep times as seconds since the epoch in a
double, which holds every microsecond exactly until about 2242."""
MAX_NESTING = 100
"""The deepest a payload or a result may nest lists and dicts."""
MAX_JSON_BYTES = 16 * 1024 * 1024
"""The largest payload or result, as UTF-8 JSON."""
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
"""``priority`` is a 32-bit signed int, like the column every SQL store gives it."""
MAX_ATTEMPTS_LIMIT = 2**31 - 1
"""``max_attempts`` is between 1 and this."""


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for a message: shortened, and never raising (an int of more digits
    than ``str()`` makes, an object whose ``__repr__`` fails)."""
    try:
        text = repr(value)
    except Exception:
        if isinstance(value, int):
            return f"an int of {value.bit_length()} bits"
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


_NUL_PROBLEM = (
    "holds a NUL character (\\x00), which PostgreSQL cannot store in text; remove it, or "
    "encode binary data (base64)"
)


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text by every store (a NUL character, a lone
    surrogate), or None."""
    if "\x00" in value:
        return _NUL_PROBLEM
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"has the character {value[exc.start]!r} at {exc.start}, which UTF-8 cannot encode"
    return None


# -- JSON ----------------------------------------------------------------------------------


_EXACT = frozenset({str, int, bool, type(None)})
"""Types that JSON round-trips exactly whatever their value (floats must be finite)."""


def _check_exact(value: Any, path: str, depth: int = 0) -> None:
    """Refuse anything whose JSON round trip would not give back an equal value, and
    anything nested deeper than :data:`MAX_NESTING`."""
    if type(value) is dict and depth < MAX_NESTING:
        # the common payload, a flat dict, checked without recursion
        for key, item in value.items():
            kind = type(item)
            if (
                type(key) is not str
                or "\x00" in key
                or kind not in _EXACT
                or (kind is str and "\x00" in item)
            ):
                break
        else:
            return
    if isinstance(value, str):
        if "\x00" in value:  # lone surrogates are caught on the encoded text, at once
            raise PayloadError(f"{path} {_NUL_PROBLEM}")
        return
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError(f"{path} is {shown(value)}, which JSON cannot represent")
        return
    if isinstance(value, dict | list) and depth >= MAX_NESTING:
        raise PayloadError(f"{path} nests lists and dicts more than {MAX_NESTING} deep; flatten it")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(
                    f"{path} has the key {shown(key)} of type {type(key).__name__}; JSON object "
                    "keys must be str"
                )
            if "\x00" in key:
                raise PayloadError(f"{path} has a key that {_NUL_PROBLEM}")
            _check_exact(item, f"{path}[{key!r}]", depth + 1)
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_exact(item, f"{path}[{index}]", depth + 1)
        return
    raise PayloadError(
        f"{path} is a {type(value).__name__}, which JSON cannot represent exactly; "
        "convert it to str, int, float, bool, None, list or dict first"
    )


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: JSONValue, *, what: str = "payload") -> str:
    """Encode ``value`` as compact JSON, refusing (PayloadError) anything that would not
    round-trip exactly, nest deeper than :data:`MAX_NESTING`, exceed
    :data:`MAX_JSON_BYTES` or hold text UTF-8 cannot encode."""
    if value is None:
        return "null"
    _check_exact(value, what)
    try:
        text = _ENCODER.encode(value)
    except (ValueError, RecursionError) as exc:  # an int of more digits than str() makes
        raise PayloadError(f"{what} cannot be encoded as JSON ({exc})") from None
    size = len(text)
    if not text.isascii():
        problem = text_problem(text)
        if problem is not None:
            raise PayloadError(f"{what} {problem}; pass valid Unicode text")
        if size * 4 > MAX_JSON_BYTES:
            size = len(text.encode("utf-8"))
    if size > MAX_JSON_BYTES:
        raise PayloadError(
            f"{what} is {size} bytes as JSON, more than the {MAX_JSON_BYTES} allowed; "
            "store large data elsewhere and pass a reference"
        )
    return text


_DECODER = json.JSONDecoder()


def loads(text: str | None) -> JSONValue:
    return None if text is None else _DECODER.decode(text)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def detached(value: JSONValue, text: str | None) -> JSONValue:
    """A value equal to ``value`` that shares nothing mutable with it: what decoding its
    JSON ``text`` would give (``value`` passed :func:`dumps`, which gave ``text``).

    Scalars and flat dicts and lists of exact scalars are copied shallowly, which is
    cheaper than decoding and gives the same value (subclasses such as an IntEnum are
    decoded, to give exactly what a durable store would)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        for item in value.values():
            if type(item) not in _SCALARS:
                break
        else:
            return dict(value)
    elif kind is list:
        for item in value:
            if type(item) not in _SCALARS:
                break
        else:
            return list(value)
    return loads(text if text is not None else dumps(value))


def new_task_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: time-ordered, so ids scheduled together sit
    together in a B-tree index (each insert touches the newest index page instead of a
    random one). Within one millisecond the 74 random bits count up (RFC 9562 method 3),
    so the ids one process makes are strictly increasing."""
    global _last
    with _id_lock:
        millis = time.time_ns() // 1_000_000
        rand = _entropy.getrandbits(74)
        if (millis, rand) <= _last:
            millis, rand = _last[0], _last[1] + 1
            if rand >> 74:
                millis, rand = millis + 1, 0
        _last = (millis, rand)
    value = (
        (millis & _MS_MASK) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0x2 << 62 | (rand & _LOW_62)
    )
    return f"{value:032x}"


_last = (0, 0)
_id_lock = threading.Lock()
# Seeded from the OS, and again in every forked child, so two processes never share a
# sequence; ids need to be unique, not unpredictable, and this saves a system call per id.
_entropy = random.Random(os.urandom(32))


def _reseed_after_fork() -> None:
    global _last
    _entropy.seed(os.urandom(32))
    _last = (0, 0)


register_at_fork(_reseed_after_fork)  # no fork (nor the function) on Windows
_MS_MASK = (1 << 48) - 1
_LOW_62 = (1 << 62) - 1


# -- records -------------------------------------------------------------------------------


@dataclass(slots=True)
class TaskRecord:
    """One task as a store keeps it. Times are aware UTC datetimes."""

    id: str
    type: str
    payload: JSONValue
    priority: int = 5
    status: TaskStatus = TaskStatus.QUEUED
    attempts: int = 0
    max_attempts: int = 3
    result: JSONValue = None
    error: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    run_after: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    timeout: float | None = None
    idempotency_key: str | None = None
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    worker_id: str | None = None
    seq: int = 0
    """Scheduling order, assigned by the store: equal priorities run in this order."""
    payload_json: str | None = None
    """The payload as compact JSON, when the engine has already encoded it."""
    trace_context: dict[str, str] | None = None
    """The W3C trace context (``traceparent``, maybe ``tracestate``) of the span that
    scheduled the task, when tracing was on; every store keeps it, exports carry it."""
    tracebacks: list[dict[str, Any]] = field(default_factory=list)
    """One entry per failed attempt, the newest MAX_TRACEBACKS: ``attempt``,
    ``failed_at`` (ISO 8601), ``error`` and the formatted ``traceback``. Stores replace
    the list, never change it in place."""
    depends_on: tuple[str, ...] = ()
    """Tasks that must finish before this one runs (set at scheduling; a store fills it
    in on reads that need it: :meth:`~taskyard.framework.store.TaskStore.dependencies`)."""
    on_dependency_failure: str = "cancel"
    """``cancel`` (cascading) or ``run``, when a dependency ends failed or cancelled."""
    concurrency_key: str | None = None
    """Tasks sharing a key run at most the configured limit at once, across processes."""
    workflow_id: str | None = None
    """The workflow (chain, group, chord) this task belongs to: the id of its last task."""

    def copy(self) -> TaskRecord:
        """A shallow copy (payload and result are shared: stores copy them as JSON)."""
        clone: TaskRecord = _copy_record(self)
        return clone

    def to_status(self) -> dict[str, Any]:
        """The public status dict: plain values, aware ISO 8601 timestamps."""
        return {
            "id": self.id,
            "type": self.type,
            "status": str(self.status),
            "priority": self.priority,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "payload": self.payload,
            "result": self.result,
            "error": self.error,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "run_after": iso(self.run_after),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "tracebacks": [dict(entry) for entry in self.tracebacks],
        }


_RECORD_FIELDS = tuple(TaskRecord.__slots__)


def _make_copier() -> Any:
    """``copy`` as straight-line code (one attribute read and write per field): the
    stores copy a record per task, and a loop of getattr/setattr costs three times as
    much."""
    lines = ["def copy_record(record):", "    clone = new(TaskRecord)"]
    lines += [f"    clone.{name} = record.{name}" for name in _RECORD_FIELDS]
    lines.append("    return clone")
    namespace: dict[str, Any] = {"new": object.__new__, "TaskRecord": TaskRecord}
    exec("\n".join(lines), namespace)  # built from the dataclass's own fields
    return namespace["copy_record"]


_copy_record = _make_copier()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the engine decided about one claimed attempt.

    ``status`` is QUEUED (retry at ``run_after``, or released at shutdown when
    ``release`` is set), COMPLETED, FAILED or CANCELLED. A store applies it only while
    the task still holds ``lease_token``.
    """

    task_id: str
    lease_token: str
    status: TaskStatus
    finished_at: datetime
    result: JSONValue = None
    result_json: str | None = None
    error: str | None = None
    run_after: datetime | None = None
    release: bool = False
    """Give the attempt back (shutdown): the attempt does not count."""
    traceback: dict[str, Any] | None = None
    """A failed attempt's entry for the task's ``tracebacks`` (see TaskRecord): the
    store appends it, keeping the newest MAX_TRACEBACKS."""


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A status change, published by the engine after the store accepted it."""

    task_id: str
    type: str
    status: TaskStatus
    attempts: int
    error: str | None = None
    result: JSONValue = None
    at: datetime = field(default_factory=utcnow)


def as_timedelta(value: float | int | timedelta) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


# -- JSON forms of records (exports, imports, spill files) ---------------------------------

WORKFLOW_JSON_KEYS = ("depends_on", "on_dependency_failure", "concurrency_key", "workflow_id")
"""Optional fields of a record's JSON form, written only when they differ from the
defaults (so files of tasks without workflows are as before)."""
RECORD_JSON_KEYS = (
    *STATUS_KEYS,
    "timeout",
    "idempotency_key",
    "trace_context",
    *WORKFLOW_JSON_KEYS,
)
"""The fields of a record's JSON form: the status dict plus what scheduling set
(``trace_context`` and the workflow keys may be absent: files written before them)."""

_REQUIRED_TIMES = ("created_at", "updated_at", "run_after")
_OPTIONAL_TIMES = ("started_at", "finished_at")


def record_to_json(record: TaskRecord) -> dict[str, Any]:
    """A record as a JSON object (``RECORD_JSON_KEYS``, ``trace_context`` only when the
    task has one). Leases, the worker and ``seq``
    belong to the store that held it and are left out."""
    data = record.to_status()
    data["timeout"] = record.timeout
    data["idempotency_key"] = record.idempotency_key
    if record.trace_context:  # only when tracing was on: older readers know no such key
        data["trace_context"] = record.trace_context
    if record.depends_on:
        data["depends_on"] = list(record.depends_on)
    if record.on_dependency_failure != "cancel":
        data["on_dependency_failure"] = record.on_dependency_failure
    if record.concurrency_key is not None:
        data["concurrency_key"] = record.concurrency_key
    if record.workflow_id is not None:
        data["workflow_id"] = record.workflow_id
    return data


MAX_TRACE_CONTEXT_BYTES = 4096
"""The largest trace context kept with a task, as JSON (a traceparent is 55 characters;
W3C lets tracestate reach 512)."""


def check_trace_context(value: Any) -> dict[str, str] | None:
    """``value`` if it is a trace context a store can keep (None, or a small dict of str
    to str); ValueError naming what is wrong otherwise."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        raise ValueError(f"trace_context must be an object of strings or null, not {shown(value)}")
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if len(text) > MAX_TRACE_CONTEXT_BYTES or any(
        text_problem(part) is not None for pair in value.items() for part in pair
    ):
        raise ValueError(
            f"trace_context must be valid text of at most {MAX_TRACE_CONTEXT_BYTES} bytes"
        )
    return value


def trace_id(value: dict[str, str] | None) -> str | None:
    """The trace id (32 hex digits) of a W3C ``traceparent`` in ``value``, or None: what
    an operator pastes into a tracing UI to find the request that scheduled a task."""
    parts = (value or {}).get("traceparent", "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1].lower()
    return None


def trace_context_text(value: dict[str, str] | None) -> str | None:
    """A trace context as the text a SQL store keeps (None stays NULL)."""
    return None if not value else json.dumps(value, separators=(",", ":"))


def trace_context_from_text(text: str | None) -> dict[str, str] | None:
    """The trace context :func:`trace_context_text` wrote; a damaged value reads as none
    (a trace is a diagnostic: it never stops a task from running)."""
    if not text:
        return None
    try:
        value = json.loads(text)
        return check_trace_context(value)
    except ValueError:
        return None


def parse_time(value: Any, what: str = "time") -> datetime | None:
    """An aware ISO 8601 string (or None) as a UTC datetime; ValueError otherwise."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be an ISO 8601 string, not {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} {value!r} has no timezone")
    return moment.astimezone(UTC)


def record_from_json(data: Any) -> TaskRecord:
    """The record a :func:`record_to_json` object describes, checked field by field.

    Raises ValueError naming the first field that is missing, unknown or of the wrong
    kind, so a damaged line is refused instead of stored half right.
    """
    if not isinstance(data, dict):
        raise ValueError(f"a task must be a JSON object, not {type(data).__name__}")
    unknown = sorted(set(data) - set(RECORD_JSON_KEYS))
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(map(str, unknown))}")
    missing = [key for key in STATUS_KEYS if key not in data and key != "tracebacks"]
    trace_context = check_trace_context(data.get("trace_context"))
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")

    def text(key: str, *, optional: bool = False) -> Any:
        value = data.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or (not optional and not value):
            raise ValueError(f"{key} must be a non-empty string, not {value!r}")
        return value

    def integer(key: str, minimum: int, maximum: int = PRIORITY_RANGE[1]) -> int:
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer, not {shown(value)}")
        if value < minimum:
            raise ValueError(f"{key} must be at least {minimum}, not {shown(value)}")
        if value > maximum:
            raise ValueError(f"{key} must be at most {maximum}, not {shown(value)}")
        return value

    try:
        status = TaskStatus(data["status"])
    except ValueError:
        allowed = ", ".join(str(status) for status in TaskStatus)
        raise ValueError(f"status {data['status']!r} is not one of {allowed}") from None
    timeout = data.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ValueError(f"timeout must be a positive number of seconds or null, not {timeout!r}")
    try:
        payload_json = dumps(data["payload"], what="payload")
        dumps(data["result"], what="result")
    except PayloadError as exc:
        raise ValueError(str(exc)) from None
    depends_on = data.get("depends_on", [])
    if not isinstance(depends_on, list) or not all(
        isinstance(parent, str) and parent for parent in depends_on
    ):
        raise ValueError(f"depends_on must be a list of task ids, not {shown(depends_on)}")
    policy = data.get("on_dependency_failure", "cancel")
    if policy not in ("cancel", "run"):
        raise ValueError(f"on_dependency_failure must be 'cancel' or 'run', not {shown(policy)}")
    times = {key: parse_time(data[key], key) for key in (*_REQUIRED_TIMES, *_OPTIONAL_TIMES)}
    for key in _REQUIRED_TIMES:
        if times[key] is None:
            raise ValueError(f"{key} must be a time, not null")
    return TaskRecord(
        id=text("id"),
        type=text("type"),
        payload=data["payload"],
        payload_json=payload_json,
        priority=integer("priority", PRIORITY_RANGE[0]),
        status=status,
        attempts=integer("attempts", 0),
        max_attempts=integer("max_attempts", 1, MAX_ATTEMPTS_LIMIT),
        result=data["result"],
        error=text("error", optional=True),
        timeout=None if timeout is None else float(timeout),
        idempotency_key=text("idempotency_key", optional=True),
        created_at=times["created_at"],  # type: ignore[arg-type]
        updated_at=times["updated_at"],  # type: ignore[arg-type]
        run_after=times["run_after"],  # type: ignore[arg-type]
        started_at=times["started_at"],
        finished_at=times["finished_at"],
        trace_context=trace_context,
        tracebacks=_tracebacks_from_json(data.get("tracebacks", [])),
        depends_on=tuple(depends_on),
        on_dependency_failure=policy,
        concurrency_key=text("concurrency_key", optional=True),
        workflow_id=text("workflow_id", optional=True),
    )


def _tracebacks_from_json(value: Any) -> list[dict[str, Any]]:
    """The ``tracebacks`` of a record's JSON form (absent in files of older taskyards)."""
    if not isinstance(value, list):
        raise ValueError(f"tracebacks must be a list, not {type(value).__name__}")
    entries: list[dict[str, Any]] = []
    for index, entry in enumerate(value):
        if (
            not isinstance(entry, dict)
            or set(entry) != {"attempt", "failed_at", "error", "traceback"}
            or isinstance(entry["attempt"], bool)
            or not isinstance(entry["attempt"], int)
            or not isinstance(entry["traceback"], str)
            or not isinstance(entry["error"], str | None)
        ):
            raise ValueError(
                f"tracebacks[{index}] must be an object of attempt (int), failed_at, error "
                "and traceback (str)"
            )
        parse_time(entry["failed_at"], f"tracebacks[{index}].failed_at")
        entries.append({**entry, "traceback": clip_traceback(entry["traceback"])})
    return keep_tracebacks(entries)
