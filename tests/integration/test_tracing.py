"""OpenTelemetry across the queue: a producer process and a worker process, each with the
SDK's in-memory exporter (tests/otel_support.py), share one trace through the database;
and without a configured provider (or without the package) nothing is imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.pg_support import postgres_dsn

__all__ = ["postgres_dsn"]

ROOT = Path(__file__).resolve().parents[2]


def side(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.otel_support", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def check_trace_crosses(backend: str, where: str) -> None:
    produced = side("produce", backend, where)
    ok_id, boom_id, batch_a, batch_b = produced["ids"]
    senders = {span["attributes"].get("messaging.message.id"): span for span in produced["spans"]}
    request = next(span for span in produced["spans"] if span["name"] == "POST /jobs")
    for task_id, name in ((ok_id, "send ok"), (boom_id, "send boom")):
        sender = senders[task_id]
        assert sender["name"] == name and sender["kind"] == "PRODUCER"
        assert sender["parent_id"] == request["span_id"]
        assert sender["trace_id"] == request["trace_id"]
    batch = next(
        span
        for span in produced["spans"]
        if span["attributes"].get("messaging.batch.message_count")
    )
    assert batch["attributes"]["messaging.batch.message_count"] == 2

    worked = side("work", backend, where, json.dumps(produced["ids"]))
    assert worked["statuses"] == ["completed", "failed", "completed", "completed"]
    consumers = {
        span["attributes"]["messaging.message.id"]: span
        for span in worked["spans"]
        if span["kind"] == "CONSUMER"
    }
    assert set(consumers) == set(produced["ids"])
    # the worker's spans continue the producer's trace: the context came through the store
    for task_id in (ok_id, boom_id):
        consumer, sender = consumers[task_id], senders[task_id]
        assert consumer["trace_id"] == request["trace_id"]
        assert consumer["parent_id"] == sender["span_id"]
        assert consumer["links"] == [sender["span_id"]]
    for task_id in (batch_a, batch_b):
        assert consumers[task_id]["trace_id"] == batch["trace_id"]
        assert consumers[task_id]["parent_id"] == batch["span_id"]
    ok, boom = consumers[ok_id], consumers[boom_id]
    assert ok["name"] == "process ok" and ok["status"] == "UNSET"
    assert ok["attributes"] == {
        "messaging.system": "taskyard",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "ok",
        "messaging.message.id": ok_id,
        "taskyard.task.attempt": 1,
        "taskyard.task.priority": 5,
        "taskyard.task.max_attempts": 1,
        "taskyard.task.outcome": "completed",
    }
    # the handler's own span is a child of the attempt's
    inner = [span for span in worked["spans"] if span["name"] == "inside the handler"]
    assert ok["span_id"] in {span["parent_id"] for span in inner}
    # a failure: ERROR status, the exception recorded
    assert boom["status"] == "ERROR"
    assert boom["attributes"]["taskyard.task.outcome"] == "failed"
    assert boom["attributes"]["taskyard.task.priority"] == 3
    assert boom["attributes"]["error.type"] == "ValueError"
    [event] = boom["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.message"] == "boom 2"
    # metrics: low-cardinality attributes only
    assert worked["metrics"]
    for point in worked["metrics"]:
        assert "messaging.message.id" not in point["attributes"]
        assert set(point["attributes"]) <= {
            "messaging.system",
            "messaging.operation.name",
            "messaging.destination.name",
            "taskyard.task.outcome",
            "taskyard.task.attempt",
        }


@pytest.mark.slow
def test_a_trace_crosses_the_queue_on_sqlite(tmp_path: Path) -> None:
    check_trace_crosses("sqlite", str(tmp_path / "queue.db"))


@pytest.mark.slow
@pytest.mark.postgres
def test_a_trace_crosses_the_queue_on_postgres(postgres_dsn: str) -> None:
    check_trace_crosses("postgres", postgres_dsn)


_NOTHING_IMPORTED = """
import asyncio, sys
{prelude}
import taskyard
from taskyard.backends.memory import InMemoryTaskManager
from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework.engine import EngineConfig

async def echo(payload):
    return payload

async def main():
    config = EngineConfig(poll_interval=0.05)
    for manager in (InMemoryTaskManager(config), QueuedTaskManager(config, db_path=sys.argv[1])):
        async with manager:
            await manager.register_task("echo", echo)
            first = await manager.schedule_task("echo", {{"n": 1}})
            [second] = await manager.schedule_many([{{"task_type": "echo", "payload": {{}}}}])
            for task_id in (first, second):
                status = await manager.wait_for(task_id, timeout=30)
                assert status["status"] == "completed", status
            record = await manager.store.get(first)
            assert record.trace_context is None, record.trace_context

asyncio.run(main())
loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
print(",".join(loaded) or "none")
"""

_BLOCK_OPENTELEMETRY = """
import importlib.abc
class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, _NotInstalled())
"""

_API_WITHOUT_PROVIDER = """
from opentelemetry import trace  # imported by the application, but no provider set
"""


@pytest.mark.parametrize(
    ("prelude", "expected"),
    [
        pytest.param(_BLOCK_OPENTELEMETRY, "none", id="not-installed"),
        pytest.param("", "none", id="installed-not-configured"),
    ],
)
def test_without_a_provider_nothing_is_imported(
    tmp_path: Path, prelude: str, expected: str
) -> None:
    script = textwrap.dedent(_NOTHING_IMPORTED.format(prelude=prelude))
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "queue.db")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == expected


def test_the_api_without_a_provider_stores_no_context(tmp_path: Path) -> None:
    """The application imported opentelemetry.trace but set no provider: the hooks see the
    API's proxy, trace nothing and keep no context (the script asserts it), and import no
    more of OpenTelemetry than the application did."""
    script = textwrap.dedent(_NOTHING_IMPORTED.format(prelude=_API_WITHOUT_PROVIDER))
    before = subprocess.run(
        [sys.executable, "-c", _API_WITHOUT_PROVIDER + _PRINT_LOADED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "queue.db")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == before.stdout.strip()


_PRINT_LOADED = """
import sys
print(",".join(sorted(name for name in sys.modules if name.startswith("opentelemetry"))))
"""
