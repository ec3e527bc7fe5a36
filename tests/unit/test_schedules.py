"""The schedule rules of taskyard.framework.schedules, on an injected clock: slots, time
zones and DST, missed-run policies, validation."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from taskyard.backends.memory import InMemoryStore
from taskyard.framework.errors import InvalidSchedule
from taskyard.framework.models import TaskRecord
from taskyard.framework.schedules import (
    ScheduleRunner,
    declare,
    make_schedule,
    plan,
    schedule_from_settings,
    schedule_slot,
    slot_key,
    slots_after,
)

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)  # type: ignore[misc]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_daily_0230_in_berlin_fires_once_on_the_spring_forward_day() -> None:
    daily = make_schedule("d", "t", cron="30 2 * * *", timezone="Europe/Berlin")
    slots = slots_after(daily, berlin(2026, 3, 28, 0, 0), 3)
    # 02:30 does not exist on 29 March 2026: the slot is the first instant after the gap
    assert slots == [berlin(2026, 3, 28, 2, 30), utc(2026, 3, 29, 1, 0), berlin(2026, 3, 30, 2, 30)]
    assert slots[1].astimezone(BERLIN).hour == 3
    on_the_day = [s for s in slots if s.astimezone(BERLIN).date().isoformat() == "2026-03-29"]
    assert len(on_the_day) == 1


def test_daily_0230_in_berlin_fires_once_on_the_fall_back_day() -> None:
    daily = make_schedule("d", "t", cron="30 2 * * *", timezone="Europe/Berlin")
    slots = slots_after(daily, berlin(2026, 10, 24, 12, 0), 2)
    # 02:30 happens twice on 25 October 2026 (CEST, then CET): it fires at the first only
    assert slots == [utc(2026, 10, 25, 0, 30), berlin(2026, 10, 26, 2, 30)]
    assert slots_after(daily, utc(2026, 10, 25, 0, 30), 1) == [berlin(2026, 10, 26, 2, 30)]


def test_hourly_schedule_across_fall_back_keeps_each_real_hour_once() -> None:
    hourly = make_schedule("h", "t", cron="0 * * * *", timezone="Europe/Berlin")
    slots = slots_after(hourly, utc(2026, 10, 24, 23, 30), 4)
    assert slots == [utc(2026, 10, 25, h) for h in range(4)]
    assert len(set(slots)) == 4


def test_leap_days() -> None:
    leap = make_schedule("l", "t", cron="0 12 29 2 *")
    assert slots_after(leap, utc(2025, 1, 1), 2) == [utc(2028, 2, 29, 12), utc(2032, 2, 29, 12)]
    last_of_feb = make_schedule("m", "t", cron="0 0 28-29 2 *")
    assert slots_after(last_of_feb, utc(2028, 2, 28, 1), 2) == [utc(2028, 2, 29), utc(2029, 2, 28)]


def test_every_seven_minutes_restarts_at_the_hour() -> None:
    seventh = make_schedule("s", "t", cron="*/7 * * * *")
    slots = slots_after(seventh, utc(2026, 5, 1, 9, 50), 4)
    assert slots == [utc(2026, 5, 1, 9, 56), utc(2026, 5, 1, 10, 0), utc(2026, 5, 1, 10, 7),
                     utc(2026, 5, 1, 10, 14)]  # fmt: skip


def test_six_fields_have_seconds_first() -> None:
    seconds = make_schedule("s", "t", cron="*/15 * * * * *")
    assert slots_after(seconds, utc(2026, 5, 1, 9, 0, 50), 3) == [
        utc(2026, 5, 1, 9, 1, 0),
        utc(2026, 5, 1, 9, 1, 15),
        utc(2026, 5, 1, 9, 1, 30),
    ]
    micro = utc(2026, 5, 1, 9, 0, 50) + timedelta(microseconds=1)
    assert slots_after(seconds, micro, 1) == [utc(2026, 5, 1, 9, 1, 0)]


def test_intervals_count_from_the_epoch_so_every_process_agrees() -> None:
    every = make_schedule("e", "t", every=timedelta(minutes=10))
    assert slots_after(every, utc(2026, 5, 1, 9, 3), 2) == [
        utc(2026, 5, 1, 9, 10),
        utc(2026, 5, 1, 9, 20),
    ]
    assert slots_after(every, utc(2026, 5, 1, 9, 10), 1) == [utc(2026, 5, 1, 9, 20)]
    fractional = make_schedule("f", "t", every=0.25)
    assert slots_after(fractional, utc(2026, 5, 1, 9, 0, 0), 2) == [
        utc(2026, 5, 1, 9) + timedelta(seconds=0.25),
        utc(2026, 5, 1, 9) + timedelta(seconds=0.5),
    ]


def _plan(missed: str, now: datetime, **extra: object):  # type: ignore[no-untyped-def]
    schedule = make_schedule("p", "t", every=60, missed=missed, **extra)  # type: ignore[arg-type]
    return plan(schedule, utc(2026, 1, 1, 0, 0), now)


def test_not_due_plans_nothing() -> None:
    assert _plan("skip", utc(2025, 12, 31, 23, 59, 59)) is None


@pytest.mark.parametrize("missed", ["skip", "once", "all"])
def test_an_on_time_slot_fires_under_every_policy(missed: str) -> None:
    step = _plan(missed, utc(2026, 1, 1, 0, 0, 2))
    assert step is not None
    assert step.fire == (utc(2026, 1, 1),) and step.next_fire_at == utc(2026, 1, 1, 0, 1)


def test_missed_slots_by_policy() -> None:
    # down from 00:00 to 00:05:40: slots 00:00..00:05 came, 00:05 is late by 40 s > 30 s
    now = utc(2026, 1, 1, 0, 5, 40)
    skip, once, every = _plan("skip", now), _plan("once", now), _plan("all", now)
    assert skip is not None and once is not None and every is not None
    assert skip.fire == () and skip.due == 6 and skip.dropped == 6
    assert once.fire == (utc(2026, 1, 1, 0, 5),)
    assert every.fire == tuple(utc(2026, 1, 1, 0, m) for m in range(6))
    assert {skip.next_fire_at, once.next_fire_at, every.next_fire_at} == {utc(2026, 1, 1, 0, 6)}


def test_missed_with_the_latest_slot_on_time() -> None:
    now = utc(2026, 1, 1, 0, 5, 10)  # 00:05 is on time; 00:00..00:04 were missed
    skip, once = _plan("skip", now), _plan("once", now)
    assert skip is not None and once is not None
    assert skip.fire == (utc(2026, 1, 1, 0, 5),)
    assert once.fire == (utc(2026, 1, 1, 0, 4), utc(2026, 1, 1, 0, 5))


def test_max_backfill_keeps_the_most_recent_slots() -> None:
    step = _plan("all", utc(2026, 1, 1, 2, 0, 50), max_backfill=3)
    assert step is not None
    assert step.fire == (utc(2026, 1, 1, 1, 58), utc(2026, 1, 1, 1, 59), utc(2026, 1, 1, 2, 0))
    assert step.due == 121 and step.dropped == 118


def test_a_long_outage_of_a_fine_cron_schedule_is_planned_quickly() -> None:
    fine = make_schedule("f", "t", cron="* * * * * *", missed="once")
    step = plan(fine, utc(2026, 1, 1), utc(2026, 1, 8) + timedelta(seconds=0.7))
    assert step is not None and step.fire == (utc(2026, 1, 8),)
    assert step.due >= 1_000 and step.next_fire_at == utc(2026, 1, 8, 0, 0, 1)


def test_slot_keys_round_trip() -> None:
    slot = berlin(2026, 3, 29, 3, 0)
    key = slot_key("nightly@eu", slot)
    record = TaskRecord(id="x", type="t", payload={}, idempotency_key=key)
    assert schedule_slot(record) == ("nightly@eu", slot)
    assert schedule_slot(TaskRecord(id="y", type="t", payload={})) is None
    other = TaskRecord(id="z", type="t", payload={}, idempotency_key="schedule:x@not-a-time")
    assert schedule_slot(other) is None


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"cron": "61 * * * *"}, "minute field '61'"),
        ({"cron": "0 25 * * *"}, "hour field '25'"),
        ({"cron": "0 0 * 13 *"}, "month field '13'"),
        ({"cron": "0 0 * * 8"}, "day-of-week field '8'"),
        ({"cron": "61 0 0 * * *"}, "second field '61'"),
        ({"cron": "* * * *"}, "has 4 field(s)"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"cron": "* * * * *", "every": 5}, "exactly one of cron"),
        ({}, "exactly one of cron"),
        ({"every": 0}, "every must be"),
        ({"every": "5"}, "every must be a number"),
        ({"every": 5, "timezone": "Mars/Olympus"}, "not an IANA zone"),
        ({"every": 5, "missed": "sometimes"}, "missed must be one of skip, once, all"),
        ({"every": 5, "max_backfill": 0}, "max_backfill"),
        ({"every": 5, "priority": "high"}, "priority"),
        ({"every": 5, "max_attempts": 0}, "max_attempts"),
    ],
)
def test_bad_declarations_name_the_field(fields: dict[str, object], says: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        make_schedule("s", "t", **fields)  # type: ignore[arg-type]
    assert says in str(caught.value)


def test_settings_tables() -> None:
    schedule = schedule_from_settings(
        "nightly_report",
        {"cron": "0 3 * * *", "task_type": "report", "payload": {"a": 1}, "timezone": "UTC"},
    )
    assert schedule.cron == "0 3 * * *" and schedule.payload == {"a": 1}
    with pytest.raises(InvalidSchedule, match="unknown key"):
        schedule_from_settings("x", {"cron": "0 3 * * *", "task_type": "r", "crn": "1"})
    with pytest.raises(InvalidSchedule, match="task_type is missing"):
        schedule_from_settings("x", {"cron": "0 3 * * *"})


async def test_the_runner_fires_on_an_injected_clock() -> None:
    store = InMemoryStore()
    now = [utc(2026, 1, 1, 0, 0, 30)]
    await declare(store, make_schedule("m", "t", every=60, missed="all"), now=now[0])
    runner = ScheduleRunner(store, clock=lambda: now[0])
    assert await runner.turn() == utc(2026, 1, 1, 0, 1)
    assert store.tasks == {}
    now[0] = utc(2026, 1, 1, 0, 3, 5)
    assert await runner.turn() == utc(2026, 1, 1, 0, 4)
    slots = sorted(schedule_slot(task)[1] for task in store.tasks.values())  # type: ignore[index]
    assert slots == [utc(2026, 1, 1, 0, m) for m in (1, 2, 3)]
    assert await runner.turn() == utc(2026, 1, 1, 0, 4)
    assert len(store.tasks) == 3, "a second turn at the same time fires nothing"


async def test_the_runner_holds_its_fire_while_not_active() -> None:
    store = InMemoryStore()
    now = utc(2026, 1, 1, 0, 1, 0)
    await declare(store, make_schedule("m", "t", every=60), now=now - timedelta(seconds=30))
    active = [False]
    runner = ScheduleRunner(store, clock=lambda: now, active=lambda: active[0])
    assert await runner.turn() is None and store.tasks == {}, "held: a drain is under way"
    active[0] = True
    await runner.turn()
    assert len(store.tasks) == 1


async def test_a_handler_context_names_the_slot_its_schedule_fired_it_for(tmp_path) -> None:
    from datetime import UTC, datetime

    from taskyard.backends.sqlite import QueuedTaskManager
    from taskyard.framework.schedules import ScheduleRecord, fire, make_schedule
    from taskyard.testing import fast_config

    slot = datetime.now(UTC).replace(microsecond=0)  # due at once
    seen = []

    async def report(payload, context):
        seen.append((context.schedule_slot, context.attempt))

    async def plain(payload, context):
        seen.append((context.schedule_slot, context.attempt))

    async with QueuedTaskManager(fast_config(), db_path=tmp_path / "q.db") as manager:
        await manager.register_task("report", report)
        await manager.register_task("plain", plain)
        store = manager.store
        schedule = make_schedule("nightly", "report", {"kind": "daily"}, every=86_400)
        assert await store.insert_schedule(ScheduleRecord(schedule=schedule, next_fire_at=slot))
        stored = await store.get_schedule("nightly")
        fired, _ = await fire(store, stored, slot)
        assert fired is not None and len(fired) == 1
        await manager.wait_for(fired[0], timeout=10)
        other = await manager.schedule_task("plain", {"schedule_slot": "not a schedule's"})
        await manager.wait_for(other, timeout=10)
    assert seen == [(slot, 1), (None, 1)]
