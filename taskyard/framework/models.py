"""The task vocabulary every backend speaks: statuses, records, outcomes, JSON and time."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from taskyard.framework.errors import PayloadError

JSONValue = Any
"""A value made of dict (str keys), list, str, int, float (finite), bool and None."""


class TaskStatus(StrEnum):
    """The only statuses a task can have."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # attempts exhausted or permanent failure: the dead-letter state
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
ACTIVE_STATUSES = frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING})

#: The allowed transitions; the engine is the only writer of transitions and checks them here.
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
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
)


# -- time ----------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_epoch(moment: datetime) -> float:
    """Seconds since the epoch: the one representation stores compare on."""
    return moment.timestamp()


def from_epoch(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


# -- JSON ----------------------------------------------------------------------------------


def _check_exact(value: Any, path: str) -> None:
    """Refuse anything whose JSON round trip would not give back an equal value."""
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError(f"{path} is {value!r}, which JSON cannot represent")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(
                    f"{path} has the key {key!r} of type {type(key).__name__}; JSON object "
                    "keys must be str"
                )
            _check_exact(item, f"{path}[{key!r}]")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_exact(item, f"{path}[{index}]")
        return
    raise PayloadError(
        f"{path} is a {type(value).__name__}, which JSON cannot represent exactly; "
        "convert it to str, int, float, bool, None, list or dict first"
    )


def dumps(value: JSONValue, *, what: str = "payload") -> str:
    """Encode ``value`` as compact JSON, refusing anything that would not round-trip."""
    _check_exact(value, what)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(text: str | None) -> JSONValue:
    return None if text is None else json.loads(text)


def new_task_id() -> str:
    return uuid.uuid4().hex


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

    def copy(self) -> TaskRecord:
        return replace(self)

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
        }


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
