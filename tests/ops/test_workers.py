"""``taskyard workers list`` and ``stop``: who is asked, who is left alone, and a worker
in this process that reads the request with its heartbeat and drains."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from taskyard.backends.sqlite import QueuedTaskManager, SqliteStore
from taskyard.framework.engine import EngineConfig
from taskyard.testing import wait_until
from taskyard.worker import serve

from .conftest import HOUR, Cli, Queue


def stop_requests(queue: Queue) -> dict[str, bool]:
    async def run() -> dict[str, bool]:
        store = SqliteStore(queue.path)
        await store.open()
        try:
            return {
                w.worker_id: w.stop_requested_at is not None for w in await store.list_workers()
            }
        finally:
            await store.close()

    return asyncio.run(run())


def test_workers_are_listed_with_their_role(queue: Queue, cli: Cli) -> None:
    assert cli.ok("workers", "list").stdout.strip() == "no workers"
    queue.heartbeat("w:1", role="worker")
    queue.heartbeat("app:2")
    queue.heartbeat("dead:3", role="worker", silent_for=HOUR)
    shown = {w["worker_id"]: w for w in json.loads(cli.ok("workers", "list", "--json").stdout)}
    assert {k: (v["role"], v["state"]) for k, v in shown.items()} == {
        "w:1": ("worker", "alive"),
        "app:2": ("application", "alive"),
        "dead:3": ("worker", "stale"),
    }
    assert "w:1  worker" in cli.ok("workers", "list").stdout


def test_stop_asks_workers_and_leaves_applications_alone(queue: Queue, cli: Cli) -> None:
    queue.heartbeat("w:1", role="worker")
    queue.heartbeat("app:2")
    queue.heartbeat("dead:3", role="worker", silent_for=HOUR)
    refused = cli("workers", "stop")
    assert refused.exit_code == 1 and "IDs, --all or --host" in refused.output
    unknown = cli("workers", "stop", "nobody")
    assert unknown.exit_code == 1 and "no worker has the id nobody" in unknown.output

    done = cli.ok("workers", "stop", "--all", "--wait", "0", "--json")
    report = json.loads(done.stdout)
    assert report["asked"] == ["w:1"] and report["applications"] == ["app:2"]
    assert report["stale"] == ["dead:3"]
    assert stop_requests(queue) == {"w:1": True, "app:2": False, "dead:3": False}

    cli.ok(
        "workers", "stop", "--host", socket.gethostname(), "--include-applications", "--wait", "0"
    )
    assert stop_requests(queue)["app:2"] is True
    # nobody drains these records: a wait that runs out says so, exit 1
    late = cli("workers", "stop", "w:1", "--wait", "0.2")
    assert late.exit_code == 1 and "still running after 0.2 s: w:1" in late.output


async def test_a_worker_reads_the_stop_request_and_drains(tmp_path: Path) -> None:
    config = EngineConfig(poll_interval=0.05, lease_seconds=0.6, shutdown_timeout=1.0)
    manager = QueuedTaskManager(config, db_path=tmp_path / "queue.db")
    done: list[int] = []

    async def work(payload: dict[str, int]) -> None:
        done.append(payload["n"])

    await manager.register_task("work", work)
    running = asyncio.create_task(serve(manager, install_signal_handlers=False))
    ids = [await manager.schedule_task("work", {"n": n}) for n in range(3)]
    store = SqliteStore(tmp_path / "queue.db")
    await store.open()
    try:
        await wait_until(lambda: len(done) == 3, message="three tasks run")
        [record] = await store.list_workers()
        assert record.role == "worker"
        assert await store.request_worker_stop([record.worker_id]) == [record.worker_id]
        await asyncio.wait_for(running, timeout=30)  # serve returned: drained, stopped
        assert manager.stop_requested.is_set()
        assert await store.list_workers() == []  # it said goodbye
        statuses = {(await store.get(task_id)).status for task_id in ids}  # type: ignore[union-attr]
        assert statuses == {"completed"}
    finally:
        await store.close()


async def test_a_stop_request_left_by_a_dead_process_does_not_stop_its_successor(
    tmp_path: Path,
) -> None:
    """Worker ids are host:pid, and a container's worker is pid 1 on every start."""
    store = SqliteStore(tmp_path / "queue.db")
    await store.open()
    try:
        await store.record_worker("box:1", {"role": "worker"})
        assert await store.request_worker_stop(["box:1"]) == ["box:1"]  # then it was killed
        config = EngineConfig(worker_id="box:1", poll_interval=0.05, lease_seconds=0.3)
        async with QueuedTaskManager(config, db_path=tmp_path / "queue.db") as manager:

            async def fresh_record() -> bool:
                workers = await store.list_workers()
                return [(w.worker_id, w.stop_requested_at) for w in workers] == [("box:1", None)]

            await wait_until(fresh_record, message="the successor's own record")
            [first] = await store.list_workers()

            async def beat_again() -> bool:
                [now] = await store.list_workers()
                return now.last_heartbeat > first.last_heartbeat

            await wait_until(beat_again, message="a second heartbeat")
            assert not manager.stop_requested.is_set()
    finally:
        await store.close()
