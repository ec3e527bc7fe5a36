"""The periodic schedules of a queue, managed live (``taskyard schedules``): list them with
their next and last fire and the last task's status, pause, resume, fire one now, remove.
Workers read the store every poll, so a change here applies without a restart.

Written over the store's schedule methods (:class:`~taskyard.framework.store.TaskStore`)
and the rules of :mod:`taskyard.framework.schedules`; no query here."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from taskyard.framework.errors import ScheduleNotFound
from taskyard.framework.models import utcnow
from taskyard.framework.schedules import ScheduleRecord, run_now
from taskyard.framework.store import TaskStore

__all__ = ["describe", "pause", "remove", "resume", "run_schedule_now", "schedule_figures"]


async def _get(store: TaskStore, name: str) -> ScheduleRecord:
    record = await store.get_schedule(name)
    if record is None:
        known = ", ".join(r.name for r in await store.list_schedules()) or "none"
        raise ScheduleNotFound(
            f"no schedule is named {name!r} (schedules: {known}); `taskyard schedules list` "
            "shows them"
        )
    return record


def lag_seconds(record: ScheduleRecord, now: datetime) -> float:
    """How late an enabled schedule's next slot is (0 while it is not due)."""
    if not record.enabled:
        return 0.0
    return max((now - record.next_fire_at).total_seconds(), 0.0)


async def describe(store: TaskStore, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """What ``taskyard schedules list`` shows: one plain dict per schedule, with the status
    of the task it fired last and its lag."""
    now = now or utcnow()
    shown: list[dict[str, Any]] = []
    for record in await store.list_schedules():
        last_status = None
        if record.last_task_id is not None:
            task = await store.get(record.last_task_id)
            last_status = None if task is None else str(task.status)
        shown.append(
            {
                **record.to_json(),
                "last_status": last_status,
                "lag_seconds": round(lag_seconds(record, now), 3),
            }
        )
    return shown


async def schedule_figures(store: TaskStore, *, now: datetime | None = None) -> dict[str, Any]:
    """For ``status`` and ``metrics``: how many schedules, how many enabled, and the
    largest lag of an enabled one (seconds its next slot is overdue: a queue whose workers
    are all down shows it growing)."""
    now = now or utcnow()
    records = await store.list_schedules()
    enabled = [record for record in records if record.enabled]
    return {
        "total": len(records),
        "enabled": len(enabled),
        "paused": len(records) - len(enabled),
        "max_lag_seconds": round(max((lag_seconds(r, now) for r in enabled), default=0.0), 3),
    }


async def pause(store: TaskStore, name: str, *, now: datetime | None = None) -> ScheduleRecord:
    """Stop firing ``name`` until resumed. Idempotent."""
    now = now or utcnow()
    record = await _get(store, name)
    paused = replace(record, enabled=False, updated_at=now)
    await store.update_schedule(paused)
    return paused


async def resume(store: TaskStore, name: str, *, now: datetime | None = None) -> ScheduleRecord:
    """Fire ``name`` again from its next slot after now: the slots of the pause are not
    fired (a pause is a decision, not an outage). Idempotent for an enabled schedule."""
    now = now or utcnow()
    record = await _get(store, name)
    if record.enabled:
        return record
    resumed = replace(
        record, enabled=True, next_fire_at=record.schedule.next_slot(now), updated_at=now
    )
    await store.update_schedule(resumed)
    return resumed


async def run_schedule_now(store: TaskStore, name: str, *, now: datetime | None = None) -> str:
    """Create one task of ``name`` now (its slot is now); its next fire stays."""
    await _get(store, name)
    return await run_now(store, name, now=now)


async def remove(store: TaskStore, name: str) -> None:
    """Delete ``name``; the tasks it fired stay. A worker whose code or settings still
    declare it declares it again when it starts."""
    await _get(store, name)
    await store.remove_schedule(name)
