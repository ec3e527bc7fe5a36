"""Export files: versioned JSON Lines, checked whole before anything is imported."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from taskyard.backends.memory import InMemoryStore
from taskyard.backends.sqlite import SqliteStore
from taskyard.framework.models import TaskRecord, TaskStatus, record_from_json, record_to_json
from taskyard.ops.migration import (
    ExportFileError,
    export_tasks,
    import_file,
    read_export,
    write_export,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def record(n: int, **changes: object) -> TaskRecord:
    values: dict[str, object] = {
        "id": f"task-{n:05d}",
        "type": "send_email",
        "payload": {"to": f"user{n}@example.com", "n": n, "ratio": n / 3, "tags": ["a", "é"]},
        "priority": n % 7,
        "created_at": T0 + timedelta(seconds=n),
        "updated_at": T0 + timedelta(seconds=n),
        "run_after": T0 + timedelta(seconds=n),
    }
    values.update(changes)
    return TaskRecord(**values)  # type: ignore[arg-type]


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def rewrite(path: Path, number: int, text: str | None) -> None:
    """Replace line ``number`` (1-based) with ``text``, or drop it when None."""
    content = lines(path)
    if text is None:
        del content[number - 1]
    else:
        content[number - 1] = text
    path.write_text("\n".join(content) + "\n", encoding="utf-8")


@pytest.fixture
def export(tmp_path: Path) -> Path:
    records = [
        record(1),
        record(2, status=TaskStatus.RUNNING, attempts=1, started_at=T0),
        record(3, idempotency_key="order-3", timeout=12.5, max_attempts=5),
        record(
            4,
            status=TaskStatus.COMPLETED,
            attempts=2,
            result={"sent": True},
            error="SMTPError: try again",
            started_at=T0,
            finished_at=T0 + timedelta(minutes=1),
        ),
    ]
    path = tmp_path / "tasks.jsonl"
    write_export(path, records, scope="all", source="test")
    return path


def test_the_json_form_round_trips_every_field() -> None:
    original = record(
        7,
        status=TaskStatus.FAILED,
        attempts=3,
        max_attempts=3,
        result=None,
        error="boom",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=1),
        timeout=2.0,
        idempotency_key="k",
    )
    again = record_from_json(json.loads(json.dumps(record_to_json(original))))
    assert record_to_json(again) == record_to_json(original)
    assert again.run_after == original.run_after and again.run_after.tzinfo is not None


def test_an_export_has_a_header_then_one_task_per_line(export: Path) -> None:
    header, *tasks = (json.loads(line) for line in lines(export))
    assert header["format"] == "taskyard-export"
    assert header["version"] == 1
    assert header["tasks"] == 4
    assert header["scope"] == "all"
    assert header["by_status"] == {"queued": 2, "running": 1, "completed": 1}
    assert [task["id"] for task in tasks] == [f"task-0000{n}" for n in (1, 2, 3, 4)]
    assert export.stat().st_mode & 0o077 == 0  # payloads may be personal: owner only


def test_reading_gives_back_every_field(export: Path) -> None:
    read = read_export(export)
    assert [record_to_json(r) for r in read.records] == [
        json.loads(line) for line in lines(export)[1:]
    ]
    assert read.records[2].idempotency_key == "order-3"
    assert read.records[2].timeout == 12.5
    assert read.records[3].result == {"sent": True}


@pytest.mark.parametrize(
    ("number", "text", "reason"),
    [
        (1, '{"format": "something-else", "version": 1}', "not a taskyard export"),
        (1, "PK\u0003\u0004 binary", "not valid JSON"),
        (1, '{"format": "taskyard-export", "version": 2, "tasks": 4}', "version 2"),
        (1, '{"format": "taskyard-export", "version": 1, "tasks": "four"}', "task count"),
        (3, '{"id": "task-00002", "type": "x"', "not valid JSON"),
        (3, "", "an empty line"),
        (3, "[1, 2]", "must be a JSON object"),
        (4, '{"id": "task-00003"}', "missing field(s)"),
        (2, None, "announces 4 task(s) but the file holds 3"),
    ],
)
def test_a_damaged_or_foreign_file_is_refused_with_line_and_reason(
    export: Path, number: int, text: str | None, reason: str
) -> None:
    rewrite(export, number, text)
    with pytest.raises(ExportFileError) as caught:
        read_export(export)
    assert caught.value.line == (5 if text is None else number)
    assert reason in caught.value.reason
    assert f"line {caught.value.line}" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("status", "paused", "status 'paused' is not one of"),
        ("priority", "high", "priority must be an integer"),
        ("attempts", -1, "attempts must be at least 0"),
        ("max_attempts", 0, "max_attempts must be at least 1"),
        ("run_after", "2026-01-02T03:04:05", "has no timezone"),
        ("created_at", None, "created_at must be a time"),
        ("timeout", -3, "timeout must be a positive number"),
        ("id", "", "id must be a non-empty string"),
        ("surprise", 1, "unknown field(s): surprise"),
    ],
)
def test_a_bad_field_is_named(export: Path, field: str, value: object, reason: str) -> None:
    task = json.loads(lines(export)[2])
    task[field] = value
    rewrite(export, 3, json.dumps(task))
    with pytest.raises(ExportFileError) as caught:
        read_export(export)
    assert caught.value.line == 3
    assert reason in caught.value.reason


def test_nan_is_not_json(export: Path) -> None:
    rewrite(export, 2, lines(export)[1].replace('"ratio":0.3333333333333333', '"ratio":NaN'))
    with pytest.raises(ExportFileError, match="line 2: not valid JSON"):
        read_export(export)


def test_the_same_id_twice_is_refused(export: Path) -> None:
    rewrite(export, 3, lines(export)[1])
    with pytest.raises(ExportFileError) as caught:
        read_export(export)
    assert (caught.value.line, caught.value.reason) == (3, "task task-00001 appears twice")


def test_a_file_cut_mid_line_is_refused(export: Path) -> None:
    data = export.read_bytes()
    export.write_bytes(data[: len(data) - 20])
    with pytest.raises(ExportFileError) as caught:
        read_export(export)
    assert caught.value.line == 5
    assert "cut short" in caught.value.reason


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportFileError, match="cannot be read"):
        read_export(tmp_path / "nowhere.jsonl")


async def test_importing_twice_adds_nothing_twice(export: Path, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.db")
    await store.open()
    try:
        first = await import_file(store, export)
        second = await import_file(store, export)
        counts = await store.count_by_status()
        imported = {r.id: r for r in await store.list_tasks()}
    finally:
        await store.close()
    assert (first.read, first.imported, first.already_present) == (4, 4, 0)
    assert (second.read, second.imported, second.already_present) == (4, 0, 4)
    assert counts[TaskStatus.QUEUED] == 3  # the running one is stored as queued
    assert counts[TaskStatus.COMPLETED] == 1
    running = imported["task-00002"]
    assert (running.status, running.attempts, running.started_at) == (TaskStatus.QUEUED, 1, T0)


async def test_a_damaged_file_imports_nothing(export: Path, tmp_path: Path) -> None:
    rewrite(export, 5, '{"id": "task-00004", "type": "x", "status": "??"}')
    store = SqliteStore(tmp_path / "q.db")
    await store.open()
    try:
        with pytest.raises(ExportFileError):
            await import_file(store, export)
        assert sum((await store.count_by_status()).values()) == 0
    finally:
        await store.close()


async def test_export_takes_the_unfinished_tasks_by_default(export: Path) -> None:
    store = InMemoryStore()
    await import_file(store, export)
    unfinished = await export_tasks(store, export.with_name("unfinished.jsonl"))
    everything = await export_tasks(store, export.with_name("all.jsonl"), include_finished=True)
    assert (unfinished.tasks, unfinished.scope, unfinished.by_status) == (
        3,
        "unfinished",
        {"queued": 3},
    )
    assert (everything.tasks, everything.scope) == (4, "all")


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_an_idempotency_key_held_by_another_task_is_reported(
    tmp_path: Path, kind: str
) -> None:
    from taskyard.ops.migration import import_records

    store = SqliteStore(tmp_path / "q.db") if kind == "sqlite" else InMemoryStore()
    await store.open()
    try:
        await store.add([record(1, idempotency_key="order-1")])
        report = await import_records(
            store, [record(1), record(2, idempotency_key="order-1"), record(3)]
        )
    finally:
        await store.close()
    assert (report.imported, report.already_present, report.conflicts) == (1, 1, ["task-00002"])
