"""`taskyard backup create | list | restore | prune` on real queue files, with real
workers writing meanwhile."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
from pathlib import Path

from taskyard.backends.sqlite import QueuedTaskManager, SqliteStore
from taskyard.framework import EngineConfig
from taskyard.ops.backup import list_backups, verify_backup

from .conftest import Cli, Queue, Worker, task, wait_until
from .worker_app import HANDLERS


def read_only(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def counts(path: Path) -> dict[str, int]:
    return dict(read_only(path, "SELECT status, COUNT(*) FROM taskyard_tasks GROUP BY status"))


async def schedule(db: Path, requests: list[dict]) -> list[str]:
    manager = QueuedTaskManager(EngineConfig(run_worker=False), db_path=db)
    for task_type in HANDLERS:
        await manager.register_task(task_type, lambda payload: None)
    async with manager:
        return await manager.schedule_many(requests)


async def run_to_completion(db: Path, task_ids: list[str]) -> list[dict]:
    manager = QueuedTaskManager(
        EngineConfig(poll_interval=0.02, lease_seconds=2, concurrency=8), db_path=db
    )
    for task_type, handler in HANDLERS.items():
        await manager.register_task(task_type, handler)
    async with manager:
        return [await manager.wait_for(task_id, timeout=60) for task_id in task_ids]


def test_create_writes_a_verified_private_self_contained_copy(cli: Cli, queue: Queue) -> None:
    queue.add([task("completed") for _ in range(5)] + [task("queued", due_ago=1)])
    result = cli.ok("backup", "create", "--json")
    created = json.loads(result.stdout)
    path = Path(created["path"])
    assert path.parent == queue.path.parent / "backups"  # the default folder
    assert created["counts"] == {
        **dict.fromkeys(["waiting", "running", "failed", "cancelled"], 0),
        "completed": 5,
        "queued": 1,
    }
    assert created["integrity"] == ["ok"] and created["tasks"] == 6
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_only(path, "PRAGMA journal_mode") == [("delete",)]  # one file, no WAL
    assert counts(path) == counts(queue.path)
    assert asyncio.run(verify_backup(SqliteStore(queue.path), path)).ok
    assert "backup ..." in result.stderr and "pages (100%)" in result.stderr  # plain lines
    listed = json.loads(cli.ok("backup", "list", "--json").stdout)
    assert [entry["path"] for entry in listed] == [str(path)]
    assert list(path.parent.glob("*.partial")) == []


def test_create_refuses_to_overwrite(cli: Cli, queue: Queue, tmp_path: Path) -> None:
    target = tmp_path / "mine.db"
    target.write_text("keep me")
    result = cli("backup", "create", "--output", str(target))
    assert result.exit_code == 1 and "already exists" in result.stderr
    assert target.read_text() == "keep me"


def test_a_backup_taken_while_a_worker_processes_is_restorable_and_complete(
    cli: Cli, queue: Queue, workers: list[Worker], tmp_path: Path
) -> None:
    release = tmp_path / "release"
    requests = [{"task_type": "gate", "payload": {"release": str(release)}}]
    requests += [{"task_type": "work", "payload": {"n": n}} for n in range(1500)]
    ids = asyncio.run(schedule(queue.path, requests))
    worker = Worker(queue.path, max_concurrency="4", lease_seconds="2")
    workers.append(worker)
    wait_until(lambda: counts(queue.path).get("completed", 0) >= 100)

    backup = tmp_path / "backups" / "during.db"
    created = json.loads(cli.ok("backup", "create", "--output", str(backup), "--json").stdout)
    assert created["tasks"] == 1501
    assert created["counts"]["running"] >= 1  # taken while the worker was processing
    assert read_only(backup, f"SELECT status FROM taskyard_tasks WHERE id = '{ids[0]}'") == [
        ("running",)
    ]
    assert counts(backup) == {k: v for k, v in created["counts"].items() if v}

    refused = cli("backup", "restore", str(backup))  # the worker is active
    assert refused.exit_code == 1
    assert "1 worker(s) are active" in refused.stderr and "--force" in refused.stderr
    assert list_backups(queue.path, backup.parent) == []  # nothing was moved aside

    release.touch()
    wait_until(lambda: counts(queue.path) == {"completed": 1501})  # nothing the worker
    assert worker.stop() == 0  # wrote after the backup closed its connection was lost

    restored = tmp_path / "restored" / "queue.db"
    out = cli.ok(
        "backup",
        "restore",
        str(backup),
        "--json",
        env={"TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH": str(restored)},
    ).stdout
    report = json.loads(out)
    assert report["kept_aside"] is None  # there was nothing to replace
    assert report["tasks"] == 1501
    assert read_only(restored, "PRAGMA integrity_check") == [("ok",)]
    assert {row[0] for row in read_only(restored, "SELECT id FROM taskyard_tasks")} == set(ids)
    assert counts(restored) == counts(backup)
    assert read_only(restored, "SELECT COUNT(*) FROM taskyard_workers") == [(0,)]

    unfinished = [
        row[0]
        for row in read_only(restored, "SELECT id FROM taskyard_tasks WHERE status != 'completed'")
    ]
    assert ids[0] in unfinished
    finished = asyncio.run(run_to_completion(restored, unfinished))
    assert {info["status"] for info in finished} == {"completed"}
    assert counts(restored) == {"completed": 1501}


def test_restore_refuses_while_a_worker_is_active_unless_forced(
    cli: Cli, queue: Queue, tmp_path: Path
) -> None:
    queue.add([task("completed") for _ in range(3)])
    backup = Path(json.loads(cli.ok("backup", "create", "--json").stdout)["path"])

    async def scenario() -> tuple[int, str, dict, dict]:
        manager = QueuedTaskManager(EngineConfig(poll_interval=0.02), db_path=queue.path)
        for task_type, handler in HANDLERS.items():
            await manager.register_task(task_type, handler)
        async with manager:  # a live worker: it records heartbeats
            for n in range(2):
                await manager.wait_for(await manager.schedule_task("work", {"n": n}), timeout=30)
            refused = await asyncio.to_thread(cli, "backup", "restore", str(backup))
            assert counts(queue.path) == {"completed": 5}
            forced = await asyncio.to_thread(
                cli, "backup", "restore", str(backup), "--force", "--json"
            )
            assert forced.exit_code == 0, forced.output
            after = counts(queue.path)
            again = await manager.schedule_task("work", {"n": 9})  # the worker goes on
            info = await manager.wait_for(again, timeout=30)
        return refused.exit_code, refused.stderr, json.loads(forced.stdout), {**after, **info}

    code, message, report, after = asyncio.run(scenario())
    assert code == 1 and "worker(s) are active" in message
    assert report["forced"] is True and report["active_workers"]
    assert after["completed"] == 3 and after["status"] == "completed"
    aside = Path(report["kept_aside"])
    assert aside.name.startswith("queue-before-restore-") and aside.parent == backup.parent
    assert counts(aside) == {"completed": 5}  # the replaced queue, complete
    assert counts(queue.path) == {"completed": 4}
    kinds = [entry.kind for entry in list_backups(queue.path, backup.parent)]
    assert sorted(kinds) == ["backup", "before-restore"]


def test_restore_replaces_a_file_that_is_no_longer_a_database(
    cli: Cli, queue: Queue, tmp_path: Path
) -> None:
    queue.add([task("completed"), task("failed", attempts=3)])
    backup = Path(json.loads(cli.ok("backup", "create", "--json").stdout)["path"])
    queue.path.write_bytes(b"overwritten by a careless script\n" * 100)
    assert cli("health").exit_code == 2
    report = json.loads(cli.ok("backup", "restore", str(backup), "--json").stdout)
    assert Path(report["kept_aside"]).read_bytes().startswith(b"overwritten by")
    assert counts(queue.path) == {"completed": 1, "failed": 1}
    assert cli("health").exit_code == 0


def test_restore_refuses_a_damaged_backup(cli: Cli, queue: Queue, tmp_path: Path) -> None:
    queue.add([task("completed", payload={"pad": "z" * 3000}) for _ in range(30)])
    backup = Path(json.loads(cli.ok("backup", "create", "--json").stdout)["path"])
    [(root,)] = read_only(
        backup,
        "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_taskyard_tasks_1'",
    )
    data = bytearray(backup.read_bytes())
    data[(root - 1) * 4096 + 8 : root * 4096] = b"\xff" * (4096 - 8)
    backup.write_bytes(bytes(data))
    result = cli("backup", "restore", str(backup))
    assert result.exit_code == 1
    assert "integrity check" in result.stderr and "nothing was restored" in result.stderr
    assert counts(queue.path) == {"completed": 30}


def test_prune_keeps_the_newest_backups(cli: Cli, queue: Queue) -> None:
    queue.add([task("completed")])
    made = [json.loads(cli.ok("backup", "create", "--json").stdout)["path"] for _ in range(4)]
    cli.ok("backup", "restore", made[0])  # leaves a before-restore copy, never pruned
    dry = cli.ok("backup", "prune", "--keep", "2", "--dry-run").stdout
    assert "would delete 2 backup(s)" in dry
    assert all(Path(path).exists() for path in made)
    cli.ok("backup", "prune", "--keep", "2")
    assert [Path(path).exists() for path in made] == [False, False, True, True]
    cli.ok("backup", "prune", env={"TASKYARD_MAINTENANCE__KEEP_BACKUPS": "1"})
    remaining = json.loads(cli.ok("backup", "list", "--json").stdout)
    assert [(entry["kind"], entry["path"]) for entry in remaining] == [
        ("backup", made[3]),
        ("before-restore", remaining[1]["path"]),
    ]
    table = cli.ok("backup", "list").stdout
    assert "before-restore" in table and "2 file(s)" in table


def test_restore_refuses_the_queue_itself(cli: Cli, queue: Queue) -> None:
    queue.add([task("completed")])
    result = cli("backup", "restore", str(queue.path))
    assert result.exit_code == 1 and "is the queue itself" in result.stderr
    assert counts(queue.path) == {"completed": 1}
