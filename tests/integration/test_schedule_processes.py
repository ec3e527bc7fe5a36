"""Periodic schedules across real `taskyard worker` processes on one SQLite file or one
PostgreSQL schema: each slot fires once whatever runs, is killed or restarts; an outage is
caught up by the policy."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from taskyard.backends.sqlite import SqliteStore
from taskyard.framework.models import TaskRecord
from taskyard.framework.schedules import schedule_slot
from taskyard.framework.store import TaskStore
from taskyard.testing import poll_until
from tests.pg_support import postgres_dsn

from .test_sqlite_processes import APP, ROOT, Workers

__all__ = ["postgres_dsn"]

pytestmark = pytest.mark.slow

SECOND = timedelta(seconds=1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def workers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workers]:
    """Worker processes on one SQLite file, or on one PostgreSQL schema."""
    pool: Workers
    if request.param == "postgres":
        from tests.pg_support import require_postgres, schema_for

        from .test_postgres_processes import Workers as PostgresWorkers

        require_postgres()
        dsn = request.getfixturevalue("postgres_dsn")
        pool = PostgresWorkers(tmp_path, dsn, schema_for(request.node.nodeid))  # type: ignore[assignment]
    else:
        pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.close()


def settings_file(tmp_path: Path, missed: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        "[default.schedules.tick]\n"
        "every = 1\n"
        'task_type = "slot"\n'
        f'missed = "{missed}"\n'
        'payload = { source = "settings" }\n',
        encoding="utf-8",
    )
    return path


def executed_slots(workers: Workers) -> collections.Counter[datetime]:
    if not workers.log.exists():
        return collections.Counter()
    return collections.Counter(
        datetime.fromisoformat(line.split()[0]) for line in workers.log.read_text().splitlines()
    )


async def fired_tasks(workers: Workers) -> list[TaskRecord]:
    store: TaskStore
    if hasattr(workers, "dsn"):
        from taskyard.backends.postgres import PostgresStore

        store = PostgresStore(workers.dsn, schema_name=workers.schema, pool_size=1)
    else:
        store = SqliteStore(workers.db)
    await store.open()
    try:
        return await store.list_tasks(task_type="slot", limit=100_000)
    finally:
        await store.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def wait_for_slots(workers: Workers, count: int, *, after: datetime | None = None) -> None:
    def enough() -> bool:
        slots = executed_slots(workers)
        return len([s for s in slots if after is None or s > after]) >= count

    poll_until(enough, timeout=60, message=f"{count} slot(s) executed")


async def test_three_workers_fire_each_slot_once_through_a_kill_and_restart(
    workers: Workers, tmp_path: Path
) -> None:
    start = ["--settings", str(settings_file(tmp_path, "all"))]
    pool = [start_worker(workers, start) for _ in range(3)]
    wait_for_slots(workers, 4)
    pool[1].send_signal(signal.SIGKILL)
    pool[1].wait(timeout=30)
    killed_at = datetime.now(UTC)
    wait_for_slots(workers, 3, after=killed_at)
    pool[1] = start_worker(workers, start)
    restarted_at = datetime.now(UTC)
    wait_for_slots(workers, 3, after=restarted_at)
    for process in pool:
        stop(process)

    tasks = await fired_tasks(workers)
    by_slot = collections.Counter(schedule_slot(t)[1] for t in tasks)  # type: ignore[index]
    assert by_slot and set(by_slot.values()) == {1}, "a slot fired twice"
    slots = sorted(by_slot)
    expected = [slots[0] + i * SECOND for i in range(len(slots))]
    assert slots == expected, "a slot was skipped while workers ran"
    assert len(slots) >= 10
    executed = executed_slots(workers)
    finished = {schedule_slot(t)[1] for t in tasks if str(t.status) == "completed"}  # type: ignore[index]
    assert {s: executed[s] for s in finished if executed[s] != 1} == {}, "a slot ran twice"
    assert len(finished) >= len(slots) - 3  # only the last slots may still be queued
    pids = {line.split()[1] for line in workers.log.read_text().splitlines()}
    assert len(pids) >= 2, "the slots were spread over the workers"


def start_worker(workers: Workers, root_args: list[str]) -> subprocess.Popen[bytes]:
    """`taskyard --settings FILE worker --app ...` (the settings go before the command)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "taskyard", *root_args, "worker", "--app", APP],
        cwd=ROOT,
        env=workers.env(poll_interval="0.1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    workers.processes.append(process)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert b"taskyard worker ready" in line, line + process.stdout.read()
    return process


@pytest.mark.parametrize("missed", ["skip", "once", "all"])
async def test_an_outage_of_five_slots_is_caught_up_by_policy(
    workers: Workers, tmp_path: Path, missed: str
) -> None:
    start = ["--settings", str(settings_file(tmp_path, missed))]
    worker = start_worker(workers, start)
    wait_for_slots(workers, 2)
    worker.send_signal(signal.SIGKILL)  # every worker down
    worker.wait(timeout=30)
    down_at = time.time()
    # the clock must pass five slots: that is what the test is about, not a synchronisation
    poll_until(lambda: time.time() >= down_at + 6.5, timeout=30, message="five slots passed")
    worker = start_worker(workers, start)
    up_at = datetime.now(UTC)
    wait_for_slots(workers, 2, after=up_at)
    stop(worker)

    tasks = await fired_tasks(workers)
    slots = {schedule_slot(t)[1]: t for t in tasks}  # type: ignore[index]
    assert len(slots) == len(tasks), "a slot fired twice"
    last_before = max(s for s, t in slots.items() if t.created_at.timestamp() < down_at)
    after_outage = sorted(s for s, t in slots.items() if t.created_at.timestamp() > down_at)
    assert after_outage and after_outage[0] > last_before
    # the first firing after the restart is one transaction at one time: `now` of that turn
    first_turn = slots[after_outage[0]].created_at
    latest = first_turn.replace(microsecond=0)  # the last slot due at that turn
    outage = [last_before + i * SECOND for i in range(1, int((latest - last_before) / SECOND))]
    assert len(outage) >= 5, (outage, down_at, first_turn)
    caught_up = [s for s in after_outage if s <= latest]
    if missed == "all":
        assert caught_up == [*outage, latest], "every missed slot fired"
    elif missed == "once":
        assert 1 <= len(caught_up) <= 2 and caught_up[-1] == latest, caught_up
        assert [s for s in caught_up if s < latest - SECOND] == []
    else:
        assert len(caught_up) <= 1 and all(s == latest for s in caught_up), caught_up
    # and the schedule goes on, one slot a second, after the catch-up
    rest = [s for s in after_outage if s > latest]
    assert rest == [latest + i * SECOND for i in range(1, len(rest) + 1)]
    assert len(rest) >= 1
