"""Runs and the RunRegistry: every method, and the JSON history file."""

import json
import os
import socket
import stat
import subprocess
import sys
from datetime import timedelta

import pytest

from taskyard.framework.errors import ConfigurationError
from taskyard.framework.models import TaskStatus, utcnow
from taskyard.framework.runs import (
    INTERRUPTED,
    JsonFileRunPersistence,
    Run,
    RunRegistry,
    RunStatus,
)


def finished(module_id: str = "m", status: RunStatus = RunStatus.COMPLETED, **fields) -> Run:
    run = Run(module_id=module_id, **fields)
    run.mark_running()
    run.mark_finished(status)
    return run


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- Run -----------------------------------------------------------------------------------------


def test_a_run_moves_from_pending_to_running_to_completed():
    run = Run(module_id="import", module_name="Nightly import")
    assert run.status is RunStatus.PENDING and run.started_at is None
    run.mark_running()
    first_start = run.started_at
    assert run.status is RunStatus.RUNNING and first_start is not None
    run.mark_running()
    assert run.started_at == first_start, "a second mark_running moved the start"
    run.mark_finished(RunStatus.COMPLETED, at=first_start + timedelta(seconds=2.5))
    assert (run.status, run.exit_code, run.progress_percent) == (RunStatus.COMPLETED, 0, 100.0)
    assert run.duration_seconds == 2.5 and run.error_message is None


def test_failed_and_cancelled_runs():
    failed = finished(status=RunStatus.FAILED)
    failed.mark_finished(RunStatus.FAILED, error_message="boom")
    assert (failed.exit_code, failed.error_message) == (1, "boom")
    cancelled = finished(status=RunStatus.CANCELLED)
    assert cancelled.exit_code is None and cancelled.status.is_terminal
    never_started = Run(module_id="m")
    never_started.mark_finished(RunStatus.CANCELLED)
    assert never_started.duration_seconds is None


def test_run_status_follows_task_status():
    for status in TaskStatus:
        assert RunStatus.from_task_status(status) == str(status)
    assert not RunStatus.PENDING.is_terminal and not RunStatus.QUEUED.is_terminal
    assert RunStatus.CANCELLED.is_terminal


def test_a_run_round_trips_through_a_dict():
    run = finished(module_name="Report", parameters={"month": "2024-05"}, items_total=10)
    data = run.to_dict()
    assert data["status"] == "completed" and data["created_at"].endswith("+00:00")
    json.dumps(data)  # plain JSON
    assert Run.from_dict(data) == run


# -- the registry ---------------------------------------------------------------------------------


def test_add_get_update_and_save():
    registry = RunRegistry()
    run = registry.add_run(Run(module_id="m"))
    assert registry.get_run(run.run_id) is run and len(registry) == 1
    assert registry.get_run("nope") is None
    updated = registry.update_run(run.run_id, progress_percent=40.0, items_processed=4)
    assert updated is run and (run.progress_percent, run.items_processed) == (40.0, 4)
    assert registry.update_run("nope", progress_percent=1.0) is None
    with pytest.raises(AttributeError, match="colour"):
        registry.update_run(run.run_id, colour="blue")
    replacement = Run(module_id="m", run_id=run.run_id)
    registry.save_run(replacement)
    assert registry.get_run(run.run_id) is replacement and len(registry) == 1


def test_queries_by_state_module_status_and_recency():
    registry = RunRegistry()
    active = registry.add_run(Run(module_id="a", status=RunStatus.RUNNING))
    queued = registry.add_run(Run(module_id="b", status=RunStatus.QUEUED))
    done = registry.add_run(finished("a"))
    failed = registry.add_run(finished("b", RunStatus.FAILED))
    assert {run.run_id for run in registry.get_active_runs()} == {active.run_id, queued.run_id}
    assert registry.get_runs_by_module("a") == [active, done]
    assert registry.get_runs_by_module("zzz") == []
    assert registry.get_runs_by_status(RunStatus.FAILED) == [failed]
    assert registry.get_runs_by_status("queued") == [queued]
    with pytest.raises(ValueError):
        registry.get_runs_by_status("sleeping")


def test_recent_runs_newest_first_with_a_limit():
    registry = RunRegistry()
    now = utcnow()
    runs = [registry.add_run(Run(module_id=f"m{i}", created_at=now + timedelta(seconds=i)))
            for i in range(5)]  # fmt: skip
    assert registry.get_recent_runs() == runs[::-1]
    assert registry.get_recent_runs(limit=2) == [runs[4], runs[3]]


def test_cleanup_forgets_only_old_finished_runs():
    registry = RunRegistry()
    old_done = finished()
    old_done.completed_at = utcnow() - timedelta(days=10)
    old_running = Run(module_id="m", status=RunStatus.RUNNING)
    old_running.created_at = utcnow() - timedelta(days=10)
    recent_done = finished()
    for run in (old_done, old_running, recent_done):
        registry.add_run(run)
    assert registry.cleanup_old_runs(timedelta(days=7)) == 1
    assert registry.get_run(old_done.run_id) is None
    assert registry.get_run(old_running.run_id) is old_running
    assert registry.get_run(recent_done.run_id) is recent_done
    assert registry.cleanup_old_runs(timedelta(days=7)) == 0
    assert registry.cleanup_old_runs(0.0) == 1  # seconds work too
    assert registry.get_run(recent_done.run_id) is None


def test_the_history_is_trimmed_to_max_history_oldest_finished_first():
    registry = RunRegistry(max_history=3)
    now = utcnow()
    oldest = registry.add_run(finished(created_at=now - timedelta(hours=3)))
    running = registry.add_run(Run(module_id="m", status=RunStatus.RUNNING,
                                   created_at=now - timedelta(hours=4)))  # fmt: skip
    middle = registry.add_run(finished(created_at=now - timedelta(hours=2)))
    newest = registry.add_run(finished(created_at=now - timedelta(hours=1)))
    assert len(registry) == 3
    assert registry.get_run(oldest.run_id) is None
    assert registry.get_run(running.run_id) is running, "an active run was trimmed"
    assert registry.get_run(middle.run_id) is middle and registry.get_run(newest.run_id) is newest


def test_active_runs_are_never_trimmed_even_over_the_limit():
    registry = RunRegistry(max_history=1)
    runs = [registry.add_run(Run(module_id="m", status=RunStatus.RUNNING)) for _ in range(3)]
    assert len(registry) == 3 and all(registry.get_run(run.run_id) for run in runs)


class RecordingPersistence:
    def __init__(self, runs: list[Run] | None = None) -> None:
        self.stored = list(runs or [])
        self.calls: list[tuple[str, list[str]]] = []

    def load(self) -> list[Run]:
        return list(self.stored)

    def save(self, runs, changed) -> None:
        self.stored = list(runs)
        self.calls.append(("save", [run.run_id for run in changed]))

    def remove(self, runs, removed) -> None:
        self.stored = list(runs)
        self.calls.append(("remove", list(removed)))


def test_a_persistence_is_told_what_changed_and_what_was_removed():
    persistence = RecordingPersistence()
    registry = RunRegistry(persistence, max_history=1)
    first = registry.add_run(finished())
    registry.update_run(first.run_id, items_processed=3)
    second = registry.add_run(finished())
    assert persistence.calls == [
        ("save", [first.run_id]),
        ("save", [first.run_id]),
        ("remove", [first.run_id]),
        ("save", [second.run_id]),
    ]
    assert [run.run_id for run in persistence.stored] == [second.run_id]


# -- the JSON history file and interrupted runs ------------------------------------------------


def test_the_history_file_persists_across_instances(tmp_path):
    path = tmp_path / "state" / "runs.json"
    registry = RunRegistry(history_file=path)
    run = registry.add_run(finished(module_name="Report", parameters={"k": [1, 2]}))
    registry.update_run(run.run_id, items_processed=7)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == 1 and [item["run_id"] for item in data["runs"]] == [run.run_id]

    again = RunRegistry(history_file=path)
    loaded = again.get_run(run.run_id)
    assert loaded is not None and loaded == run and loaded.items_processed == 7


def test_the_history_file_is_owner_only_and_written_atomically(tmp_path):
    path = tmp_path / "runs.json"
    registry = RunRegistry(history_file=path)
    for _ in range(3):
        registry.add_run(finished())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.json"], "a temp file was left"


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "runs.json"
    registry = RunRegistry(history_file=path)
    kept = registry.add_run(finished())
    before = path.read_bytes()

    def disk_error(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_error)
    with pytest.raises(OSError, match="No space"):
        registry.add_run(finished())
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.json"]
    assert [run.run_id for run in JsonFileRunPersistence(path).load()] == [kept.run_id]


def test_a_missing_file_is_an_empty_history(tmp_path):
    assert JsonFileRunPersistence(tmp_path / "absent.json").load() == []
    assert len(RunRegistry(history_file=tmp_path / "absent.json")) == 0


@pytest.mark.parametrize("content", ["not json", "[]", '{"runs": [{"status": "x"}]}'])
def test_a_file_that_is_not_a_run_history_is_refused_clearly(tmp_path, content):
    path = tmp_path / "runs.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not a taskyard run history") as refused:
        RunRegistry(history_file=path)
    assert str(path) in str(refused.value)


def test_interrupted_ad_hoc_runs_are_marked_failed_on_load(tmp_path):
    path = tmp_path / "runs.json"
    host = socket.gethostname()

    def adhoc(owner: str) -> Run:
        run = Run(module_id="m", parameters={"_adhoc": True, "_owner": owner})
        run.mark_running()
        return run

    orphan = adhoc(f"{host}:{dead_pid()}")
    alive_elsewhere = adhoc(f"{host}:{os.getppid()}")
    queued_task_run = Run(module_id="m", status=RunStatus.RUNNING)  # follows its task instead
    done = finished(parameters={"_adhoc": True})
    writer = RunRegistry(history_file=path)
    for run in (orphan, alive_elsewhere, queued_task_run, done):
        writer.add_run(run)

    loaded = RunRegistry(history_file=path)
    interrupted = loaded.get_run(orphan.run_id)
    assert interrupted is not None
    assert (interrupted.status, interrupted.error_message) == (RunStatus.FAILED, INTERRUPTED)
    assert interrupted.exit_code == 1 and interrupted.completed_at is not None
    assert loaded.get_run(alive_elsewhere.run_id).status is RunStatus.RUNNING
    assert loaded.get_run(queued_task_run.run_id).status is RunStatus.RUNNING
    assert loaded.get_run(done.run_id).status is RunStatus.COMPLETED

    reread = RunRegistry(history_file=path)  # the verdict was written back
    assert reread.get_run(orphan.run_id).status is RunStatus.FAILED


def test_cleanup_and_trim_reach_the_file(tmp_path):
    path = tmp_path / "runs.json"
    registry = RunRegistry(history_file=path, max_history=2)
    old = finished()
    old.completed_at = utcnow() - timedelta(days=30)
    registry.add_run(old)
    assert registry.cleanup_old_runs(timedelta(days=1)) == 1
    assert RunRegistry(history_file=path).get_run(old.run_id) is None

    now = utcnow()
    runs = [registry.add_run(finished(created_at=now + timedelta(seconds=i))) for i in range(3)]
    ids = {run.run_id for run in JsonFileRunPersistence(path).load()}
    assert ids == {runs[1].run_id, runs[2].run_id}
