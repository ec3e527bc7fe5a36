"""`taskyard tasks show` (dependencies) and `taskyard workflows list | show | cancel` on a
real queue file."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework import EngineConfig
from taskyard.framework.models import Outcome, TaskStatus, utcnow
from taskyard.framework.workflows import chain, group, schedule_workflow

from .conftest import Cli, Queue


async def _noop(payload: dict[str, Any]) -> None:
    return None


def schedule(queue: Queue, shape: Any) -> str:
    async def run() -> str:
        manager = QueuedTaskManager(EngineConfig(run_worker=False), db_path=queue.path)
        async with manager:
            for task_type in ("fetch", "resize", "publish"):
                await manager.register_task(task_type, _noop)
            return await schedule_workflow(manager, shape)

    return asyncio.run(run())


def complete_due(queue: Queue) -> list[str]:
    """Run what is due once, as a worker would: claim it and complete it."""

    async def run() -> list[str]:
        async with queue.store() as store:
            claimed = await store.claim(limit=100, now=utcnow(), worker_id="w:1", lease_seconds=30)
            await store.finish(
                [
                    Outcome(r.id, r.lease_token or "", TaskStatus.COMPLETED, utcnow(), 1, "1")
                    for r in claimed
                ]
            )
            return [r.id for r in claimed]

    return asyncio.run(run())


SHAPE = chain(("fetch", {}), group(("resize", {"w": 100}), ("resize", {"w": 200})), ("publish", {}))


def test_tasks_show_prints_dependencies_and_dependents(cli: Cli, queue: Queue) -> None:
    last = schedule(queue, SHAPE)
    shown = json.loads(cli.ok("workflows", "show", last, "--json").stdout)
    fetch, small, large, join, publish = (step["id"] for step in shown["steps"])
    assert publish == last
    about = json.loads(cli.ok("tasks", "show", join, "--json").stdout)
    assert about["status"] == "waiting"
    assert (about["depends_on"], about["dependents"]) == ([small, large], [publish])
    assert about["workflow_id"] == last and about["on_dependency_failure"] == "cancel"
    text = cli.ok("tasks", "show", fetch, env={"COLUMNS": "200"}).stdout
    assert "dependents" in text and small in text and large in text


def test_workflows_show_prints_a_tree_with_each_steps_status(cli: Cli, queue: Queue) -> None:
    last = schedule(queue, SHAPE)
    complete_due(queue)  # fetch
    complete_due(queue)  # the two resizes
    shown = json.loads(cli.ok("workflows", "show", last, "--json").stdout)
    assert shown["status"] == "running"
    assert [(s["type"], s["status"], s["stage"]) for s in shown["steps"]] == [
        ("fetch", "completed", 1),
        ("resize", "completed", 2),
        ("resize", "completed", 2),
        ("taskyard.group", "queued", 3),
        ("publish", "waiting", 4),
    ]
    tree = cli.ok("workflows", "show", last, env={"COLUMNS": "200"}).stdout
    lines = tree.splitlines()
    assert f"workflow {last}: running (5 steps)" in lines[0]
    assert "stage 2: 2 in parallel" in tree
    assert any("publish" in line and "waiting" in line for line in lines)
    missing = cli("workflows", "show", "nope")
    assert missing.exit_code == 1 and "no workflow has the id 'nope'" in missing.stderr


def test_workflows_list_and_cancel(cli: Cli, queue: Queue) -> None:
    first = schedule(queue, SHAPE)
    second = schedule(queue, chain(("fetch", {}), ("publish", {})))
    complete_due(queue)  # both fetches
    listed = json.loads(cli.ok("workflows", "list", "--json").stdout)["workflows"]
    assert [w["workflow_id"] for w in listed] == [second, first]
    assert listed[0]["counts"] == {"queued": 1, "completed": 1}
    assert listed[1]["counts"] == {"queued": 2, "waiting": 2, "completed": 1}
    table = cli.ok("workflows", "list", env={"COLUMNS": "200"}).stdout
    assert first in table and "2 workflow(s)" in table
    result = cli.ok("workflows", "cancel", first)
    assert "4 step(s) cancelled" in result.stdout
    shown = json.loads(cli.ok("workflows", "show", first, "--json").stdout)
    assert shown["status"] == "cancelled"
    assert shown["counts"] == {"completed": 1, "cancelled": 4}
    assert queue.statuses()[second] == "queued"  # another workflow is left alone


def test_a_purge_takes_the_dependencies_of_the_tasks_it_deletes(cli: Cli, queue: Queue) -> None:
    last = schedule(queue, chain(("fetch", {}), ("publish", {})))
    assert queue.query("SELECT COUNT(*) FROM taskyard_dependencies") == [(1,)]
    complete_due(queue)
    complete_due(queue)
    assert queue.statuses()[last] == "completed"
    result = cli.ok("tasks", "purge", "-s", "completed", "--older-than", "0m")
    assert "deleted 2 task(s)" in result.stdout
    assert queue.query("SELECT COUNT(*) FROM taskyard_dependencies") == [(0,)]
