"""Periodic schedules: cron expressions and intervals that fire once per slot, whatever runs.

The rules live here, once, for every store:

- a :class:`Schedule` is declared in code (``manager.add_schedule``) or in the settings
  (``[default.schedules.NAME]``) and validated by :func:`make_schedule`, which names the
  field that is wrong and shows the fix;
- its *slots* (the fire times) come from a cron expression (5 fields, or 6 with seconds
  first), read with ``cronsim`` in the schedule's IANA time zone, or from an interval of
  ``every`` seconds counted from the Unix epoch (so every process computes the same slots);
- :func:`plan` decides, at ``now``, which due slots to fire under the schedule's
  ``missed`` policy and where the next fire time moves;
- :class:`ScheduleRunner` is the loop a worker runs: it asks the store for the schedules
  and fires the due ones through :meth:`TaskStore.fire_schedule
  <taskyard.framework.store.TaskStore.fire_schedule>`.

The store does the atomic part: firing creates the slot's task, whose idempotency key is
:func:`slot_key` (``schedule:NAME@SLOT``), and advances the next fire time in one
transaction, conditional on the next fire time the firer read. Any number of processes
may race for a slot; one wins, the others see the condition fail and re-read.

Daylight saving time, for a cron schedule whose zone has it: a slot in the hour that
does not exist on the spring-forward day fires at the first instant after the gap (02:30
daily in Europe/Berlin fires at 03:00 CEST that day); a slot in the hour that happens
twice on the fall-back day fires once, at its first occurrence.

The slot a task serves is stored in the task's idempotency key, independent of its
payload: :func:`schedule_slot` reads it back from a task record (a handler's context can
hand it on). For handlers, which receive only their payload, a dict payload also carries
it as ``payload["schedule_slot"]`` (ISO 8601, UTC); the task's ``run_after`` is the slot
time too (or the firing time, for a slot fired late).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loguru import logger

from taskyard.framework.errors import (
    InvalidSchedule,
    OperationNotSupported,
    PayloadError,
    ScheduleNotFound,
    StoreError,
)
from taskyard.framework.models import (
    MAX_ATTEMPTS_LIMIT,
    PRIORITY_RANGE,
    JSONValue,
    TaskRecord,
    dumps,
    new_task_id,
    shown,
    text_problem,
    utcnow,
)

if TYPE_CHECKING:
    from taskyard.framework.store import TaskStore

__all__ = [
    "DEFAULT_MAX_BACKFILL",
    "MISSED_POLICIES",
    "SLOT_PAYLOAD_KEY",
    "Clock",
    "Schedule",
    "ScheduleRecord",
    "ScheduleRunner",
    "declare",
    "make_schedule",
    "plan",
    "schedule_from_settings",
    "schedule_slot",
    "slot_key",
    "slots_after",
]

MISSED_POLICIES = ("skip", "once", "all")
DEFAULT_MAX_BACKFILL = 100
"""Slots ``missed = "all"`` fires at most in one catch-up (the most recent ones)."""
MAX_GRACE = timedelta(seconds=60)
"""A slot is *missed* when it is later than this, or than half its period if shorter."""
SLOT_KEY_PREFIX = "schedule:"
SLOT_PAYLOAD_KEY = "schedule_slot"
"""The key a fired task's dict payload carries its slot under (ISO 8601, UTC)."""
MAX_NAME = 200

Clock = Callable[[], datetime]
"""Returns the current time as an aware datetime; injectable for tests."""

_CRON_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_CRON_FIELDS_SECONDS = ("second", *_CRON_FIELDS)


@dataclass(frozen=True)
class Schedule:
    """A periodic schedule's declared fields (what ``add_schedule`` takes)."""

    name: str
    task_type: str
    payload: JSONValue = None
    cron: str | None = None
    every: float | None = None
    """Seconds between slots (slots are whole multiples of it since the Unix epoch)."""
    timezone: str = "UTC"
    missed: str = "skip"
    max_backfill: int = DEFAULT_MAX_BACKFILL
    priority: int = 5
    max_attempts: int | None = None
    enabled: bool = True

    def definition(self) -> dict[str, Any]:
        """The fields that define when and what it fires (``enabled`` is state, not
        definition): compared to tell a re-declaration that changes something."""
        return {
            "task_type": self.task_type,
            "payload": self.payload,
            "cron": self.cron,
            "every": self.every,
            "timezone": self.timezone,
            "missed": self.missed,
            "max_backfill": self.max_backfill,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
        }

    @property
    def expression(self) -> str:
        """``cron`` as written, or ``every N s``."""
        if self.cron is not None:
            return self.cron
        return f"every {self.every:g}s"

    def next_slot(self, after: datetime) -> datetime:
        """The first slot strictly after ``after`` (UTC)."""
        return slots_after(self, after, 1)[0]


@dataclass
class ScheduleRecord:
    """A schedule as a store keeps it: its fields and its state."""

    schedule: Schedule
    next_fire_at: datetime
    """The next slot to fire (UTC); firing advances it."""
    enabled: bool = True
    last_fire_at: datetime | None = None
    """The slot fired last (None: never fired)."""
    last_task_id: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    @property
    def name(self) -> str:
        return self.schedule.name

    def definition_json(self) -> str:
        """The definition as JSON text, for stores."""
        return json.dumps(self.schedule.definition(), sort_keys=True, separators=(",", ":"))

    def to_json(self) -> dict[str, Any]:
        """A plain dict for listings and ``--json`` output."""
        return {
            "name": self.name,
            **self.schedule.definition(),
            "expression": self.schedule.expression,
            "enabled": self.enabled,
            "next_fire_at": self.next_fire_at.isoformat(),
            "last_fire_at": None if self.last_fire_at is None else self.last_fire_at.isoformat(),
            "last_task_id": self.last_task_id,
        }


def schedule_from_definition(name: str, text: str) -> Schedule:
    """The :class:`Schedule` a store's definition JSON describes."""
    data = json.loads(text)
    return Schedule(name=name, **data)


# -- declaration and validation -------------------------------------------------------------


def make_schedule(
    name: str,
    task_type: str,
    payload: Any = None,
    *,
    cron: str | None = None,
    every: float | timedelta | None = None,
    timezone: str = "UTC",
    missed: str = "skip",
    max_backfill: int = DEFAULT_MAX_BACKFILL,
    priority: int = 5,
    max_attempts: int | None = None,
    enabled: bool = True,
) -> Schedule:
    """Validate a declaration; raises :class:`InvalidSchedule` naming the field."""
    _check_name("name", name)
    _check_name("task_type", task_type)
    if payload is None:
        payload = {}
    try:
        payload = json.loads(dumps(payload, what="payload"))
    except PayloadError as exc:
        raise InvalidSchedule(f"schedule {name!r}: {exc}") from None
    if (cron is None) == (every is None):
        raise InvalidSchedule(
            f'schedule {name!r}: give exactly one of cron (for example cron="0 3 * * *") '
            "or every (seconds, or a timedelta)"
        )
    if not isinstance(timezone, str):
        raise InvalidSchedule(
            f"schedule {name!r}: timezone must be an IANA zone name such as "
            f'"Europe/Berlin", not {shown(timezone)}'
        )
    zone = _zone(name, timezone)
    seconds: float | None = None
    if every is not None:
        if isinstance(every, timedelta):
            seconds = every.total_seconds()
        elif isinstance(every, int | float) and not isinstance(every, bool):
            seconds = float(every)
        else:
            raise InvalidSchedule(
                f"schedule {name!r}: every must be a number of seconds or a timedelta, "
                f"not {shown(every)}"
            )
        if not math.isfinite(seconds) or seconds < 0.001 or seconds > 366 * 86400:
            raise InvalidSchedule(
                f"schedule {name!r}: every must be from 0.001 seconds to a year, not {shown(every)}"
            )
    if cron is not None:
        cron = _check_cron(name, cron, zone)
    if missed not in MISSED_POLICIES:
        raise InvalidSchedule(
            f"schedule {name!r}: missed must be one of {', '.join(MISSED_POLICIES)}, "
            f"not {shown(missed)}"
        )
    if isinstance(max_backfill, bool) or not isinstance(max_backfill, int) or max_backfill < 1:
        raise InvalidSchedule(
            f"schedule {name!r}: max_backfill must be a whole number of slots, at least 1, "
            f"not {shown(max_backfill)}"
        )
    low, high = PRIORITY_RANGE
    if isinstance(priority, bool) or not isinstance(priority, int) or not low <= priority <= high:
        raise InvalidSchedule(
            f"schedule {name!r}: priority must be an int from {low} to {high}, not "
            f"{shown(priority)}"
        )
    if max_attempts is not None and (
        isinstance(max_attempts, bool)
        or not isinstance(max_attempts, int)
        or not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT
    ):
        raise InvalidSchedule(
            f"schedule {name!r}: max_attempts must be an int from 1 to {MAX_ATTEMPTS_LIMIT} "
            f"or None, not {shown(max_attempts)}"
        )
    if not isinstance(enabled, bool):
        raise InvalidSchedule(f"schedule {name!r}: enabled must be true or false")
    return Schedule(
        name=name,
        task_type=task_type,
        payload=payload,
        cron=cron,
        every=seconds,
        timezone=timezone,
        missed=missed,
        max_backfill=max_backfill,
        priority=priority,
        max_attempts=max_attempts,
        enabled=enabled,
    )


_SETTINGS_KEYS = frozenset(
    {
        "task_type",
        "payload",
        "cron",
        "every",
        "timezone",
        "missed",
        "max_backfill",
        "priority",
        "max_attempts",
        "enabled",
    }
)


def schedule_from_settings(name: str, table: Mapping[str, Any]) -> Schedule:
    """The schedule a ``[default.schedules.NAME]`` settings table declares."""
    if not isinstance(table, Mapping):
        raise InvalidSchedule(
            f'schedules.{name} must be a table (cron = "0 3 * * *", task_type = "..."), '
            f"not {shown(table)}"
        )
    fields = {str(key).lower(): value for key, value in table.items()}
    unknown = sorted(set(fields) - _SETTINGS_KEYS)
    if unknown:
        raise InvalidSchedule(
            f"schedules.{name}: unknown key(s) {', '.join(unknown)}; the keys are "
            f"{', '.join(sorted(_SETTINGS_KEYS))}"
        )
    if "task_type" not in fields:
        raise InvalidSchedule(f'schedules.{name}: task_type is missing; add task_type = "..."')
    task_type = fields.pop("task_type")
    payload = fields.pop("payload", None)
    return make_schedule(name, task_type, payload, **fields)


def _check_name(what: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise InvalidSchedule(
            f"schedule {what} must be a non-empty str of at most {MAX_NAME} characters, "
            f"not {shown(value)}"
        )
    problem = text_problem(value)
    if problem is not None:
        raise InvalidSchedule(f"schedule {what} {problem}; pass valid Unicode text")


def _zone(name: str, timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(
            f"schedule {name!r}: timezone {timezone!r} is not an IANA zone name; use one "
            'such as "UTC", "Europe/Berlin" or "America/New_York"'
        ) from None


def _check_cron(name: str, cron: Any, zone: ZoneInfo) -> str:
    from cronsim import CronSim, CronSimError

    if not isinstance(cron, str):
        raise InvalidSchedule(
            f'schedule {name!r}: cron must be a str such as "0 3 * * *", not {shown(cron)}'
        )
    parts = cron.split()
    if len(parts) not in (5, 6):
        raise InvalidSchedule(
            f"schedule {name!r}: cron {cron!r} has {len(parts)} field(s); give 5 (minute "
            'hour day-of-month month day-of-week, e.g. "0 3 * * *") or 6 with seconds '
            'first (e.g. "*/10 * * * * *")'
        )
    names = _CRON_FIELDS_SECONDS if len(parts) == 6 else _CRON_FIELDS
    for index, part in enumerate(parts):
        probe = ["*"] * len(parts)
        probe[index] = part
        try:
            CronSim(" ".join(probe), datetime(2000, 1, 1, tzinfo=zone))
        except CronSimError as exc:
            raise InvalidSchedule(
                f"schedule {name!r}: cron {cron!r}: the {names[index]} field {part!r} is "
                f"wrong ({exc}); see `man 5 crontab` for its syntax"
            ) from None
    normal = " ".join(parts)
    try:
        next(iter(CronSim(normal, datetime(2000, 1, 1, tzinfo=zone))))
    except (CronSimError, StopIteration) as exc:
        raise InvalidSchedule(
            f"schedule {name!r}: cron {cron!r} never fires ({exc or 'no such date'}); "
            "check the day-of-month and month fields"
        ) from None
    return normal


# -- slot arithmetic ------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def slots_after(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The first ``count`` slots strictly after ``after``, as UTC datetimes."""
    after = after.astimezone(UTC)
    if schedule.every is not None:
        step = round(schedule.every * 1_000_000)
        elapsed = (after - _EPOCH) // _US
        first = (elapsed // step + 1) * step
        return [_EPOCH + timedelta(microseconds=first + i * step) for i in range(count)]
    from cronsim import CronSim

    zone = ZoneInfo(schedule.timezone)
    assert schedule.cron is not None
    # cronsim counts in whole seconds; start from the second that holds ``after``
    start = after.replace(microsecond=0).astimezone(zone)
    slots: list[datetime] = []
    for moment in CronSim(schedule.cron, start):
        slot = moment.astimezone(UTC)
        if slot <= after:
            continue
        if slots and slot <= slots[-1]:
            continue  # the fall-back day's repeated hour: the first occurrence only
        slots.append(slot)
        if len(slots) == count:
            break
    return slots


def _latest_at_or_before(schedule: Schedule, moment: datetime) -> datetime | None:
    """The last slot at or before ``moment``."""
    moment = moment.astimezone(UTC)
    if schedule.every is not None:
        step = round(schedule.every * 1_000_000)
        elapsed = (moment - _EPOCH) // _US
        return _EPOCH + timedelta(microseconds=(elapsed // step) * step)
    from cronsim import CronSim

    zone = ZoneInfo(schedule.timezone)
    assert schedule.cron is not None
    start = (moment.replace(microsecond=0) + timedelta(seconds=1)).astimezone(zone)
    for found in CronSim(schedule.cron, start, reverse=True):
        slot = found.astimezone(UTC)
        if slot <= moment:
            return slot
    return None  # pragma: no cover - a valid expression has earlier slots


def _grace(schedule: Schedule, slot: datetime) -> timedelta:
    period = schedule.next_slot(slot) - slot
    return min(MAX_GRACE, period / 2)


@dataclass(frozen=True)
class Plan:
    """What firing a schedule at ``now`` does: the slots to fire and the next fire time."""

    fire: tuple[datetime, ...]
    next_fire_at: datetime
    due: int
    """Slots that had come (fired or dropped)."""

    @property
    def dropped(self) -> int:
        return self.due - len(self.fire)


def plan(schedule: Schedule, next_fire_at: datetime, now: datetime) -> Plan | None:
    """What to fire at ``now`` when the stored next fire time is ``next_fire_at``; None
    while it is not due.

    The due slots are those from ``next_fire_at`` to ``now``. The latest of them is *on
    time* when it is late by at most its grace (half its period, at most a minute) and
    then always fires; every other due slot was *missed* (no worker ran at its time).
    Missed slots fire by the ``missed`` policy: ``skip`` drops them, ``once`` fires the
    latest of them (one catch-up), ``all`` fires every one, the most recent
    ``max_backfill`` of the due slots at most. The next fire time becomes the first slot
    after ``now``, so a schedule never fires a slot twice nor an older one later.
    """
    now = now.astimezone(UTC)
    if next_fire_at > now:
        return None
    latest = _latest_at_or_before(schedule, now)
    if latest is None or latest < next_fire_at:  # the stored time is off the slot grid
        latest = next_fire_at
    want = schedule.max_backfill if schedule.missed == "all" else 2
    due = [latest]  # newest first
    while len(due) < want:
        earlier = _previous(schedule, due[-1])
        if earlier is None or earlier < next_fire_at:
            break
        due.append(earlier)
    total = len(due) if len(due) < want else _count_due(schedule, next_fire_at, due[-1], len(due))
    on_time = now - latest <= _grace(schedule, latest)
    if schedule.missed == "all":
        chosen = due
    elif schedule.missed == "once":
        chosen = due[:2] if on_time else due[:1]
    else:
        chosen = due[:1] if on_time else []
    return Plan(fire=tuple(reversed(chosen)), next_fire_at=schedule.next_slot(now), due=total)


def _count_due(schedule: Schedule, first: datetime, oldest: datetime, counted: int) -> int:
    """How many slots from ``first`` to ``now`` there were, given ``counted`` of them down
    to ``oldest`` (exact for intervals; a cron walk stops counting at 1 000)."""
    if schedule.every is not None:
        step = timedelta(microseconds=round(schedule.every * 1_000_000))
        return counted + (oldest - first) // step
    cursor = oldest
    while counted < 1_000:
        earlier = _previous(schedule, cursor)
        if earlier is None or earlier < first:
            break
        counted += 1
        cursor = earlier
    return counted


def _previous(schedule: Schedule, slot: datetime) -> datetime | None:
    return _latest_at_or_before(schedule, slot - _US)


def slot_key(name: str, slot: datetime) -> str:
    """The idempotency key of the task that serves ``slot`` of schedule ``name``."""
    return f"{SLOT_KEY_PREFIX}{name}@{slot.astimezone(UTC).isoformat()}"


def schedule_slot(record: TaskRecord) -> tuple[str, datetime] | None:
    """``(schedule name, slot time)`` of a task a schedule fired, or None for another
    task. Read from the task's idempotency key (:func:`slot_key`)."""
    key = record.idempotency_key
    if key is None or not key.startswith(SLOT_KEY_PREFIX) or "@" not in key:
        return None
    name, _, when = key[len(SLOT_KEY_PREFIX) :].rpartition("@")
    try:
        slot = datetime.fromisoformat(when)
    except ValueError:
        return None
    if slot.tzinfo is None:
        return None
    return name, slot.astimezone(UTC)


def slot_record(
    schedule: Schedule, slot: datetime, *, now: datetime, default_max_attempts: int
) -> TaskRecord:
    """The task that serves ``slot``: due at once (its ``run_after`` is the slot). A dict
    payload also gets ``schedule_slot`` (the slot, ISO 8601 UTC) so that a handler, which
    receives only its payload, knows which period it serves."""
    payload = schedule.payload
    if isinstance(payload, dict):
        payload = {**payload, SLOT_PAYLOAD_KEY: slot.astimezone(UTC).isoformat()}
    payload_json = dumps(payload, what="payload")
    return TaskRecord(
        id=new_task_id(),
        type=schedule.task_type,
        payload=json.loads(payload_json),
        payload_json=payload_json,
        priority=schedule.priority,
        max_attempts=schedule.max_attempts or default_max_attempts,
        created_at=now,
        updated_at=now,
        run_after=min(slot, now),
        idempotency_key=slot_key(schedule.name, slot),
    )


# -- declaring into a store and firing ------------------------------------------------------


async def declare(
    store: TaskStore, schedule: Schedule, *, now: datetime | None = None
) -> tuple[ScheduleRecord, str]:
    """Store ``schedule``, or update the stored one of that name when its fields differ.

    Returns the stored record and what happened: ``created``, ``updated`` (logged) or
    ``unchanged``. A re-declaration keeps the schedule's last fire and, when its timing
    did not change, its next fire time; ``enabled`` is only applied when the schedule is
    new (``pause``/``resume`` made at run time survive a restart).
    """
    now = now or utcnow()
    for _ in range(5):
        stored = await store.get_schedule(schedule.name)
        if stored is None:
            record = ScheduleRecord(
                schedule=schedule,
                next_fire_at=schedule.next_slot(now),
                enabled=schedule.enabled,
                created_at=now,
                updated_at=now,
            )
            if await store.insert_schedule(record):
                logger.info(
                    "taskyard schedule {!r} created: {}", schedule.name, schedule.expression
                )
                return record, "created"
            continue  # another process declared it first: compare with theirs
        if stored.schedule.definition() == schedule.definition():
            return stored, "unchanged"
        timing_same = (stored.schedule.cron, stored.schedule.every, stored.schedule.timezone) == (
            schedule.cron,
            schedule.every,
            schedule.timezone,
        )
        after = stored.last_fire_at or now
        updated = replace(
            stored,
            schedule=replace(schedule, enabled=stored.enabled),
            next_fire_at=stored.next_fire_at
            if timing_same
            else schedule.next_slot(max(after, now)),
            updated_at=now,
        )
        if await store.update_schedule(updated, expected_next=stored.next_fire_at):
            logger.info(
                "taskyard schedule {!r} updated: {} -> {}",
                schedule.name,
                stored.schedule.definition(),
                schedule.definition(),
            )
            return updated, "updated"
    raise StoreError(f"schedule {schedule.name!r} kept changing while it was declared; retry")


async def fire(
    store: TaskStore,
    record: ScheduleRecord,
    now: datetime,
    *,
    default_max_attempts: int = 3,
) -> tuple[list[str] | None, Plan | None]:
    """Fire what is due of ``record`` at ``now``. Returns the ids of the tasks created
    (``[]`` when the due slots were all dropped, ``None`` when another process fired or
    changed it first: the record read is stale) and the plan (None: nothing was due)."""
    step = plan(record.schedule, record.next_fire_at, now)
    if step is None:
        return [], None
    tasks = [
        slot_record(record.schedule, slot, now=now, default_max_attempts=default_max_attempts)
        for slot in step.fire
    ]
    ids = await store.fire_schedule(
        record.name,
        expected_next=record.next_fire_at,
        records=tasks,
        next_fire_at=step.next_fire_at,
        last_fire_at=step.fire[-1] if step.fire else None,
        now=now,
    )
    if ids is None:
        return None, step
    if step.dropped:
        logger.info(
            "taskyard schedule {!r}: {} missed slot(s) not fired (missed = {!r})",
            record.name,
            step.dropped,
            record.schedule.missed,
        )
    for slot, task_id in zip(step.fire, ids, strict=True):
        logger.debug("taskyard schedule {!r} fired slot {} as task {}", record.name, slot, task_id)
    return ids, step


async def run_now(
    store: TaskStore, name: str, *, now: datetime | None = None, default_max_attempts: int = 3
) -> str:
    """Create one task for schedule ``name`` now (its slot is ``now``), without moving
    its next fire time. Raises ScheduleNotFound."""
    now = now or utcnow()
    stored = await store.get_schedule(name)
    if stored is None:
        raise ScheduleNotFound(
            f"no schedule is named {name!r}; `taskyard schedules list` shows them"
        )
    task = slot_record(stored.schedule, now, now=now, default_max_attempts=default_max_attempts)
    return (await store.add([task]))[0]


class ScheduleRunner:
    """The firing loop a worker runs beside its claim loop.

    Every turn it reads the store's schedules, fires the enabled ones that are due, then
    sleeps until the earliest next fire time, at most ``poll_interval`` seconds (another
    process, or the CLI, may have changed them). Store errors are logged and retried on
    the next turn: a firing is one transaction, so nothing is half done.
    """

    def __init__(
        self,
        store: TaskStore,
        *,
        poll_interval: float = 1.0,
        default_max_attempts: int = 3,
        clock: Clock = utcnow,
        on_fired: Callable[[Sequence[str]], None] | None = None,
        active: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.active = active
        """Fires only while this returns True (the engine: running, intake not paused)."""
        self.poll_interval = poll_interval
        self.default_max_attempts = default_max_attempts
        self.clock = clock
        self.on_fired = on_fired
        self.fired = 0
        self._failing: str | None = None

    async def turn(self) -> datetime | None:
        """Fire what is due now; returns the earliest next fire time of an enabled
        schedule (None: there is none, or firing is held by ``active``)."""
        if self.active is not None and not self.active():
            return None
        earliest: datetime | None = None
        for record in await self.store.list_schedules():
            current: ScheduleRecord | None = record
            upcoming: datetime | None = None
            for _ in range(3):  # lost a race: re-read and go again
                if current is None or not current.enabled:
                    upcoming = None
                    break
                upcoming = current.next_fire_at
                ids, step = await fire(
                    self.store,
                    current,
                    self.clock(),
                    default_max_attempts=self.default_max_attempts,
                )
                if ids is not None:
                    if step is not None:
                        upcoming = step.next_fire_at
                    if ids:
                        self.fired += len(ids)
                        if self.on_fired is not None:
                            self.on_fired(ids)
                    break
                current = await self.store.get_schedule(record.name)
            if upcoming is not None:
                earliest = upcoming if earliest is None else min(earliest, upcoming)
        return earliest

    async def run(self) -> None:
        """Turn until cancelled. A store that keeps no schedules ends the loop quietly."""
        while True:
            try:
                earliest = await self.turn()
                if self._failing is not None:
                    logger.info("taskyard schedules: firing works again")
                    self._failing = None
            except OperationNotSupported:
                logger.debug("taskyard schedules: {!r} keeps none; not firing", self.store)
                return
            except Exception as exc:  # a store error, or a bug: retried, never silent
                earliest = None
                if self._failing != str(exc):
                    logger.warning("taskyard schedules: firing failed, retrying: {}", exc)
                    self._failing = str(exc)
            wait = self.poll_interval
            if earliest is not None:
                wait = min(wait, max((earliest - self.clock()).total_seconds(), 0.0))
            await asyncio.sleep(max(wait, 0.005))
