"""`taskyard maintenance ...` on real queue files."""

from __future__ import annotations

import sqlite3
import threading

from taskyard.ops.database import file_size, wal_path

from .conftest import DAY, HOUR, Cli, Queue, task


def test_prune_removes_exactly_what_the_retention_says(cli: Cli, queue: Queue) -> None:
    gone = queue.add(
        [
            task("completed", finished_ago=7 * DAY + HOUR),  # retention_days = 7
            task("cancelled", finished_ago=8 * DAY),
            task("failed", finished_ago=30 * DAY + HOUR, attempts=3),  # failed: 30 days
        ]
    )
    kept = queue.add(
        [
            task("completed", finished_ago=7 * DAY - HOUR),
            task("cancelled", finished_ago=DAY),
            task("failed", finished_ago=30 * DAY - HOUR, attempts=3),
            task("failed", finished_ago=8 * DAY, attempts=3),  # kept longer than completed
            task("queued", due_ago=60 * DAY, created_ago=60 * DAY),  # never pruned
            task("queued", due_ago=60 * DAY, created_ago=60 * DAY),
        ]
    )
    queue.claim(1)  # and a running one, started long ago: never pruned either
    queue.heartbeat("gone:1", silent_for=DAY + HOUR)  # worker_retention_days = 1
    queue.heartbeat("stale:2", silent_for=HOUR)  # stale, but kept for the operator to see
    queue.heartbeat("alive:3")

    dry = cli.ok("maintenance", "prune", "--dry-run").stdout
    assert "would delete 2 completed or cancelled task(s)" in dry
    assert "1 failed task(s)" in dry and "1 worker record(s)" in dry
    assert len(queue.statuses()) == 9

    result = cli.ok("maintenance", "prune").stdout
    assert "deleted 2 completed or cancelled task(s) older than 7 day(s)" in result
    assert "1 failed task(s) older than 30 day(s)" in result
    assert set(queue.statuses()) == {record.id for record in kept}
    assert not set(queue.statuses()) & {record.id for record in gone}
    workers = {row[0] for row in queue.query("SELECT worker_id FROM taskyard_workers")}
    assert workers == {"stale:2", "alive:3"}


def test_prune_follows_the_settings(cli: Cli, queue: Queue) -> None:
    young = queue.add([task("completed", finished_ago=2 * DAY)])
    queue.add([task("failed", finished_ago=2 * DAY, attempts=3)])
    env = {"TASKYARD_MAINTENANCE__RETENTION_DAYS": "1.5"}
    cli.ok("maintenance", "prune", env=env)
    assert young[0].id not in queue.statuses()
    assert list(queue.statuses().values()) == ["failed"]
    bad = cli("maintenance", "prune", env={"TASKYARD_MAINTENANCE__RETENTION_DAYS": "-1"})
    assert bad.exit_code == 2 and "maintenance.retention_days" in bad.stderr


def test_checkpoint_truncate_empties_the_wal(cli: Cli, queue: Queue) -> None:
    worker = queue.connect()  # another process's open connection keeps the WAL file
    try:
        worker.execute("SELECT 1 FROM taskyard_tasks").fetchall()
        queue.add([task("completed") for _ in range(50)])
        assert file_size(wal_path(queue.path)) > 0
        out = cli.ok("maintenance", "checkpoint", "--mode", "truncate").stdout
        assert "checkpoint truncate" in out
        assert wal_path(queue.path).exists() and file_size(wal_path(queue.path)) == 0
    finally:
        worker.close()
    passive = cli.ok("maintenance", "checkpoint").stdout
    assert passive.startswith("checkpoint passive")
    assert cli("maintenance", "checkpoint", "--mode", "hard").exit_code == 2


def test_a_checkpoint_a_reader_blocks_fails(cli: Cli, queue: Queue) -> None:
    queue.add([task("completed")])
    reader = queue.connect()
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM taskyard_tasks").fetchone()
        queue.add([task("completed") for _ in range(20)])  # after the reader's snapshot
        result = cli(
            "maintenance",
            "checkpoint",
            "--mode",
            "full",
            env={"TASKYARD_TASK_EXECUTION__SQLITE_BUSY_TIMEOUT": "0.05"},
        )
    finally:
        reader.close()
    assert result.exit_code == 1
    assert "could not finish" in result.stderr


def test_a_checkpoint_waits_for_a_reader_that_finishes_within_the_busy_timeout(
    cli: Cli, queue: Queue
) -> None:
    """The store's own waits for the lock are short retries (store.waiting), with
    SQLite's busy handler off; a checkpoint that must wait for a reader turns it on."""
    queue.add([task("completed")])
    reader = sqlite3.connect(queue.path, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM taskyard_tasks").fetchone()
    queue.add([task("completed") for _ in range(20)])  # after the reader's snapshot
    done = threading.Timer(1.0, reader.rollback)  # well within the 5 s busy timeout
    done.start()
    try:
        result = cli("maintenance", "checkpoint", "--mode", "full")
    finally:
        done.join()
        reader.close()
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("checkpoint full")


def test_vacuum_gives_free_pages_back(cli: Cli, queue: Queue) -> None:
    queue.add(
        [task("completed", finished_ago=30 * DAY, payload={"pad": "x" * 2000}) for _ in range(300)]
    )
    cli.ok("tasks", "purge", "-s", "completed", "--older-than", "1d")
    cli.ok("maintenance", "checkpoint", "--mode", "truncate")
    before = queue.path.stat().st_size
    [(free,)] = queue.query("PRAGMA freelist_count")
    assert free > 100
    out = cli.ok("maintenance", "vacuum").stdout
    assert out.startswith("vacuum: ")
    assert queue.path.stat().st_size < before / 4
    assert queue.query("PRAGMA freelist_count") == [(0,)]
    assert file_size(wal_path(queue.path)) == 0  # checkpointed after


def test_optimize_gathers_statistics(cli: Cli, queue: Queue) -> None:
    queue.add([task("queued", due_ago=1) for _ in range(20)])
    assert queue.query("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'") == []
    assert "ANALYZE" in cli.ok("maintenance", "optimize").stdout
    assert queue.query("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'") != []
    cli.ok("status")  # the queue still opens: sqlite_stat1 is not a foreign table


def test_integrity_check_passes_and_finds_broken_invariants(cli: Cli, queue: Queue) -> None:
    queue.add([task("completed"), task("queued", due_ago=5)])
    for quick in ([], ["--quick"]):
        out = cli.ok("maintenance", "integrity-check", *quick).stdout
        assert "sqlite: ok" in out and "taskyard: ok" in out
    conn = queue.connect()  # what a hand edit (or an old bug) could leave behind
    conn.execute("UPDATE taskyard_tasks SET status = 'running' WHERE status = 'queued'")
    conn.close()
    result = cli("maintenance", "integrity-check")
    assert result.exit_code == 1
    assert "taskyard: 1 running tasks without a lease" in result.stdout


def test_integrity_check_finds_a_damaged_file(cli: Cli, queue: Queue) -> None:
    queue.add([task("completed", payload={"pad": "y" * 3000}) for _ in range(40)])
    cli.ok("maintenance", "checkpoint", "--mode", "truncate")
    [(page_size,)] = queue.query("PRAGMA page_size")
    [(root,)] = queue.query(
        "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_taskyard_tasks_1'"
    )
    data = bytearray(queue.path.read_bytes())
    start = (root - 1) * page_size  # the id index's root page: garbage in, tables intact
    data[start + 8 : start + page_size] = b"\xff" * (page_size - 8)
    queue.path.write_bytes(bytes(data))
    result = cli("maintenance", "integrity-check")
    assert result.exit_code == 1
    first = result.stdout.splitlines()[0]
    assert first.startswith("sqlite: ") and first != "sqlite: ok"
    assert "malformed" in result.stdout or "index" in result.stdout


def test_recover_leases_puts_abandoned_tasks_back(cli: Cli, queue: Queue) -> None:
    queue.add(
        [task("queued", due_ago=DAY, max_attempts=3), task("queued", due_ago=DAY, max_attempts=1)]
    )
    claimed = queue.claim(2, lease_expired_ago=60)
    out = cli.ok("maintenance", "recover-leases").stdout
    assert "recovered 2 task(s)" in out
    statuses = queue.statuses()
    assert sorted(statuses[record.id] for record in claimed) == ["failed", "queued"]
    assert "recovered 0 task(s)" in cli.ok("maintenance", "recover-leases").stdout


def test_recover_leases_leaves_live_leases_alone(cli: Cli, queue: Queue) -> None:
    queue.add([task("queued", due_ago=5)])
    [claimed] = queue.claim(1)  # a live worker's lease: 30 s from now
    assert "recovered 0 task(s)" in cli.ok("maintenance", "recover-leases").stdout
    assert queue.statuses()[claimed.id] == "running"
