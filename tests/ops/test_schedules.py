"""``taskyard schedules``: list, pause, resume, run-now, remove on a real queue file, while
a worker in this process fires them; ``status`` and ``metrics`` count them and their lag."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework.engine import EngineConfig
from taskyard.framework.schedules import ScheduleRecord, declare, make_schedule, schedule_slot
from taskyard.testing import wait_until

from .conftest import Cli, Queue


def declared(queue: Queue, *schedules: ScheduleRecord) -> None:
    async def run() -> None:
        async with queue.store() as store:
            for record in schedules:
                assert await store.insert_schedule(record)

    asyncio.run(run())


def hourly(name: str, *, overdue: float = 0.0) -> ScheduleRecord:
    schedule = make_schedule(name, "work", {"n": 1}, cron="0 * * * *", timezone="Europe/Berlin")
    now = datetime.now(UTC)
    due = now - timedelta(seconds=overdue) if overdue else schedule.next_slot(now)
    return ScheduleRecord(schedule=schedule, next_fire_at=due)


def listed(cli: Cli) -> dict[str, dict[str, object]]:
    return {item["name"]: item for item in json.loads(cli.ok("schedules", "list", "--json").stdout)}


def test_list_pause_resume_remove(queue: Queue, cli: Cli) -> None:
    assert cli.ok("schedules", "list").stdout.strip() == "no schedules"
    declared(queue, hourly("hourly"), hourly("late", overdue=120))
    shown = listed(cli)
    assert shown["hourly"]["expression"] == "0 * * * *"
    assert shown["hourly"]["timezone"] == "Europe/Berlin"
    assert shown["hourly"]["enabled"] is True and shown["hourly"]["last_fire_at"] is None
    assert shown["hourly"]["lag_seconds"] == 0
    assert float(shown["late"]["lag_seconds"]) >= 120  # type: ignore[arg-type]
    assert "hourly  0 * * * *  Europe/Berlin  enabled" in cli.ok("schedules", "list").stdout

    assert "late: paused" in cli.ok("schedules", "pause", "late").stdout
    assert listed(cli)["late"]["enabled"] is False
    assert listed(cli)["late"]["lag_seconds"] == 0, "a paused schedule is not late"
    resumed = cli.ok("schedules", "resume", "late").stdout
    assert "late: resumed, next fire" in resumed
    after = listed(cli)["late"]
    assert after["enabled"] is True and after["lag_seconds"] == 0, "resumed from the next slot"
    assert datetime.fromisoformat(str(after["next_fire_at"])) > datetime.now(UTC)

    cli.ok("schedules", "remove", "late")
    assert set(listed(cli)) == {"hourly"}
    result = cli("schedules", "pause", "late")
    assert result.exit_code == 1 and "no schedule is named 'late'" in result.output
    assert "hourly" in result.output, "the message lists the schedules there are"


def test_run_now_adds_a_task_and_keeps_the_next_fire(queue: Queue, cli: Cli) -> None:
    record = hourly("hourly")
    declared(queue, record)
    before = listed(cli)["hourly"]["next_fire_at"]
    task_id = json.loads(cli.ok("schedules", "run-now", "hourly", "--json").stdout)["task_id"]
    statuses = queue.statuses()
    assert statuses == {task_id: "queued"}
    assert listed(cli)["hourly"]["next_fire_at"] == before


def test_status_and_metrics_count_schedules_and_lag(queue: Queue, cli: Cli) -> None:
    declared(queue, hourly("a"), hourly("b", overdue=300), hourly("c"))
    cli.ok("schedules", "pause", "c")
    figures = json.loads(cli.ok("status", "--json").stdout)["schedules"]
    assert figures["total"] == 3 and figures["enabled"] == 2 and figures["paused"] == 1
    assert figures["max_lag_seconds"] >= 300
    text = cli.ok("status").stdout
    assert "2 enabled, 1 paused" in text and "late" in text
    metrics = cli.ok("metrics").stdout
    assert 'taskyard_schedules{state="enabled"} 2.0' in metrics
    assert 'taskyard_schedules{state="paused"} 1.0' in metrics
    lag = [line for line in metrics.splitlines() if line.startswith("taskyard_schedule_lag")]
    assert lag and float(lag[0].split()[-1]) >= 300


async def test_a_running_worker_follows_pause_and_resume_live(queue: Queue, cli: Cli) -> None:
    ran: list[str] = []
    manager = QueuedTaskManager(EngineConfig(poll_interval=0.05), db_path=queue.path)

    async def work(payload: dict[str, object]) -> None:
        ran.append(str(payload["schedule_slot"]))

    await manager.register_task("work", work)
    async with manager:
        await declare(manager.store, make_schedule("fast", "work", every=0.1))
        await wait_until(lambda: len(ran) >= 2, message="the schedule fired")
        await asyncio.to_thread(cli.ok, "schedules", "pause", "fast")
        paused = await manager.store.get_schedule("fast")
        assert paused is not None and not paused.enabled
        # the clock passes three of its slots: what is tested is that none fires
        later = paused.next_fire_at + timedelta(seconds=0.3)
        await wait_until(lambda: datetime.now(UTC) > later, message="three slots passed")
        tasks = await manager.store.list_tasks(task_type="work", limit=10_000)
        slots = [schedule_slot(t) for t in tasks]
        assert [s for s in slots if s is not None and s[1] >= paused.next_fire_at] == []
        await asyncio.to_thread(cli.ok, "schedules", "resume", "fast")
        count = len(ran)
        await wait_until(lambda: len(ran) >= count + 2, message="it fires again after resume")
        tasks = await manager.store.list_tasks(task_type="work", limit=10_000)
    keys = [t.idempotency_key for t in tasks]
    assert len(keys) == len(set(keys))
