"""`taskyard tasks list | show | cancel | retry | purge` on a real queue file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework import EngineConfig

from .conftest import DAY, Cli, Queue, task


def test_list_pages_through_the_tasks_in_scheduling_order(cli: Cli, queue: Queue) -> None:
    records = queue.add([task("queued", task_type=f"t{n % 2}") for n in range(7)])
    pages = [
        json.loads(cli.ok("tasks", "list", "--json", "--limit", "3", "--page", str(p)).stdout)
        for p in (1, 2, 3, 4)
    ]
    assert [page["total"] for page in pages] == [7, 7, 7, 7]
    assert [page["pages"] for page in pages] == [3, 3, 3, 3]
    listed = [t["id"] for page in pages for t in page["tasks"]]
    assert listed == [record.id for record in records]
    assert pages[3]["tasks"] == []


def test_list_filters_by_status_and_type(cli: Cli, queue: Queue) -> None:
    queue.add(
        [task("failed", task_type="email", attempts=3, error="smtp down") for _ in range(2)]
        + [task("failed", task_type="resize", attempts=3)]
        + [task("completed", task_type="email"), task("cancelled", task_type="email")]
    )
    failed = json.loads(cli.ok("tasks", "list", "-s", "failed", "--json").stdout)
    assert failed["total"] == 3 and {t["status"] for t in failed["tasks"]} == {"failed"}
    email = json.loads(cli.ok("tasks", "list", "-s", "failed", "-t", "email", "--json").stdout)
    assert email["total"] == 2 and {t["error"] for t in email["tasks"]} == {"smtp down"}
    both = json.loads(cli.ok("tasks", "list", "-s", "failed", "-s", "cancelled", "--json").stdout)
    assert both["total"] == 4
    table = cli.ok("tasks", "list", "-s", "failed", "-t", "email", env={"COLUMNS": "120"}).stdout
    assert "2 matching task(s)" in table and "smtp down" in table
    assert cli("tasks", "list", "-s", "finished").exit_code == 2  # not a status


def test_show_prints_everything_about_a_task(cli: Cli, queue: Queue) -> None:
    [record] = queue.add([task("failed", attempts=3, error="boom", payload={"to": "a@b.c"})])
    shown = json.loads(cli.ok("tasks", "show", record.id, "--json").stdout)
    assert shown["id"] == record.id
    assert shown["payload"] == {"to": "a@b.c"}
    assert (shown["status"], shown["attempts"], shown["error"]) == ("failed", 3, "boom")
    assert shown["finished_at"] == record.finished_at.isoformat()
    text = cli.ok("tasks", "show", record.id).stdout
    assert '{"to": "a@b.c"}' in text and "boom" in text
    missing = cli("tasks", "show", "nope")
    assert missing.exit_code == 1 and "no task has the id 'nope'" in missing.stderr


def test_cancel_a_queued_task_and_refuse_a_finished_one(cli: Cli, queue: Queue) -> None:
    queued, done = queue.add([task("queued", due_ago=-DAY), task("completed")])
    result = cli.ok("tasks", "cancel", queued.id)
    assert "was queued" in result.stdout
    assert queue.statuses()[queued.id] == "cancelled"
    refused = cli("tasks", "cancel", done.id)
    assert refused.exit_code == 1 and "already completed" in refused.stderr
    assert queue.statuses()[done.id] == "completed"
    assert cli("tasks", "cancel", "nope").exit_code == 1


def test_cancel_a_running_task_revokes_its_lease(cli: Cli, queue: Queue) -> None:
    queue.add([task("queued", due_ago=10)])
    [claimed] = queue.claim(1)
    assert "was running" in cli.ok("tasks", "cancel", claimed.id).stdout
    [(status, lease)] = queue.query(
        "SELECT status, lease_token FROM taskyard_tasks WHERE id = ?", (claimed.id,)
    )
    assert (status, lease) == ("cancelled", None)  # the worker's result will be discarded


def test_retry_puts_a_failed_task_back_and_a_worker_runs_it(cli: Cli, queue: Queue) -> None:
    failed, queued = queue.add(
        [task("failed", attempts=3, error="boom"), task("queued", due_ago=-DAY)]
    )
    assert "queued again" in cli.ok("tasks", "retry", failed.id).stdout
    [row] = queue.query(
        "SELECT status, attempts, error, finished_at, started_at FROM taskyard_tasks WHERE id=?",
        (failed.id,),
    )
    assert row == ("queued", 0, None, None, None)
    refused = cli("tasks", "retry", queued.id)
    assert refused.exit_code == 1 and "only failed or cancelled" in refused.stderr

    async def run_it() -> dict:
        manager = QueuedTaskManager(EngineConfig(poll_interval=0.02), db_path=queue.path)
        await manager.register_task("work", lambda payload: "done again")
        async with manager:
            return await manager.wait_for(failed.id, timeout=30)

    info = asyncio.run(run_it())
    assert (info["status"], info["attempts"], info["result"]) == ("completed", 1, "done again")


def test_retry_a_cancelled_task(cli: Cli, queue: Queue) -> None:
    [cancelled] = queue.add([task("cancelled")])
    cli.ok("tasks", "retry", cancelled.id)
    assert queue.statuses()[cancelled.id] == "queued"


def test_purge_deletes_only_old_tasks_of_the_statuses_named(cli: Cli, queue: Queue) -> None:
    old_failed = queue.add([task("failed", finished_ago=8 * DAY, attempts=3) for _ in range(3)])
    young_failed = queue.add([task("failed", finished_ago=6 * DAY, attempts=3)])
    old_done = queue.add([task("completed", finished_ago=30 * DAY)])
    old_queued = queue.add([task("queued", due_ago=30 * DAY, created_ago=30 * DAY)])
    dry = cli.ok("tasks", "purge", "--status", "failed", "--older-than", "7d", "--dry-run")
    assert "would delete 3 task(s)" in dry.stdout
    assert len(queue.statuses()) == 6
    result = cli.ok("tasks", "purge", "--status", "failed", "--older-than", "7d")
    assert "deleted 3 task(s)" in result.stdout
    remaining = set(queue.statuses())
    assert remaining == {r.id for r in young_failed + old_done + old_queued}
    assert not remaining & {r.id for r in old_failed}


def test_purge_refuses_active_statuses_and_bad_durations(cli: Cli, queue: Queue) -> None:
    queue.add([task("queued", due_ago=30 * DAY)])
    refused = cli("tasks", "purge", "--status", "queued", "--older-than", "1d")
    assert refused.exit_code == 1 and "finished statuses only" in refused.stderr
    bad = cli("tasks", "purge", "--status", "failed", "--older-than", "a week")
    assert bad.exit_code == 2 and "is not a duration" in bad.stderr
    assert len(queue.statuses()) == 1


def test_purge_in_batches_reports_progress_in_plain_lines(cli: Cli, queue: Queue) -> None:
    from taskyard.ops import tasks as ops_tasks

    queue.add([task("completed", finished_ago=2 * DAY) for _ in range(ops_tasks.BATCH + 5)])
    result = cli.ok("tasks", "purge", "-s", "completed", "--older-than", "1d")
    assert f"deleted {ops_tasks.BATCH + 5} task(s)" in result.stdout
    assert "purge ..." in result.stderr  # no terminal here: plain lines, no bar
    assert f"{ops_tasks.BATCH + 5}/{ops_tasks.BATCH + 5} tasks (100%)" in result.stderr
    assert queue.statuses() == {}


TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "app/tasks.py", line 12, in resize\n'
    "    return scale(image, 1 / factor)\n"
    "ZeroDivisionError: division by zero"
)


def test_show_and_export_carry_the_traceback_of_each_failed_attempt(
    cli: Cli, queue: Queue, tmp_path: Path
) -> None:
    record = task("failed", attempts=2, error="ZeroDivisionError: division by zero")
    record.tracebacks = [
        {"attempt": n, "failed_at": "2026-01-01T00:00:00+00:00", "error": record.error,
         "traceback": TRACEBACK}
        for n in (1, 2)
    ]  # fmt: skip
    queue.add([record])
    shown = json.loads(cli.ok("tasks", "show", record.id, "--json").stdout)
    assert shown["tracebacks"] == record.tracebacks
    text = cli.ok("tasks", "show", record.id, env={"COLUMNS": "120"}).stdout
    assert "attempt 2 failed at 2026-01-01" in text
    assert 'File "app/tasks.py", line 12, in resize' in text  # printed as Python prints it

    out = tmp_path / "out.jsonl"
    cli.ok("export", str(out), "--all")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    [exported] = [line for line in lines if line.get("id") == record.id]
    assert exported["tracebacks"] == record.tracebacks
