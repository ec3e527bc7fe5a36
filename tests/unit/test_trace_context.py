"""The trace context a task carries: its JSON form, export files, the fallback's spill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskyard.backends.fallback import FallbackTaskManager
from taskyard.framework import EngineConfig
from taskyard.framework.models import (
    MAX_TRACE_CONTEXT_BYTES,
    TaskRecord,
    check_trace_context,
    record_from_json,
    record_to_json,
    trace_context_from_text,
    trace_context_text,
)
from taskyard.ops.migration.export_format import read_export, write_export

CONTEXT = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


def traced(task_id: str = "t1") -> TaskRecord:
    return TaskRecord(id=task_id, type="traced", payload={"n": 1}, trace_context=dict(CONTEXT))


def test_the_json_form_carries_the_context_only_when_there_is_one() -> None:
    data = record_to_json(traced())
    assert data["trace_context"] == CONTEXT
    assert record_from_json(data).trace_context == CONTEXT
    plain = record_to_json(TaskRecord(id="t2", type="plain", payload={}))
    assert "trace_context" not in plain  # a file older taskyards can read
    assert record_from_json(plain).trace_context is None


@pytest.mark.parametrize(
    "bad",
    [
        "00-abc",
        {"traceparent": 1},
        {1: "x"},
        ["traceparent"],
        {"tracestate": "x" * MAX_TRACE_CONTEXT_BYTES},
        {"traceparent": "nul\x00"},
    ],
)
def test_a_damaged_context_is_refused_in_a_file_and_ignored_in_a_database(bad: object) -> None:
    data = record_to_json(traced())
    data["trace_context"] = bad
    with pytest.raises(ValueError, match="trace_context"):
        record_from_json(data)
    if not isinstance(bad, dict) or all(isinstance(key, str) for key in bad):
        assert trace_context_from_text(json.dumps(bad)) is None  # the task runs, untraced
    assert trace_context_from_text("{not json") is None


def test_text_form_round_trips() -> None:
    assert trace_context_text(None) is None
    assert trace_context_from_text(trace_context_text(CONTEXT)) == CONTEXT
    assert check_trace_context(None) is None


def test_export_files_carry_the_context(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    write_export(path, [traced("a"), TaskRecord(id="b", type="plain", payload={})])
    read = read_export(path)
    assert [record.trace_context for record in read.records] == [CONTEXT, None]


async def test_the_fallback_spill_carries_the_context(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # SQLite can never open the queue: memory holds all

    def make() -> FallbackTaskManager:
        manager = FallbackTaskManager(
            EngineConfig(run_worker=False), db_path=blocker / "queue.db", busy_timeout=0.1
        )
        manager.fallback.spill_dirs = [tmp_path / "state"]
        return manager

    async with make() as first:
        assert await first.store.add([traced("spilled")]) == ["spilled"]
    [spill] = (tmp_path / "state").iterdir()
    lines = [json.loads(line) for line in spill.read_text().splitlines()]
    assert lines[-1]["trace_context"] == CONTEXT
    async with make() as second:
        record = await second.store.get("spilled")
        assert record is not None and record.trace_context == CONTEXT


def test_an_operator_sees_the_trace_id() -> None:
    from taskyard.framework.models import trace_id
    from taskyard.ops.tasks import record_details

    assert record_details(traced())["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert record_details(TaskRecord(id="p", type="plain", payload={}))["trace_id"] is None
    assert trace_id({"traceparent": "garbage"}) is None
    assert trace_id({"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"}) is None
