"""The FastAPI service in examples/fastapi_service.

In-process: the container's manager is overridden with an in-memory one that runs the
handlers (the container's own mechanism, as tests/test_examples.py does), and requests
go through httpx's ASGI transport with the app's lifespan around them. End to end
(slow): uvicorn and a `taskyard worker` process on one SQLite file, a job submitted over
HTTP, its status polled to `completed`, and the spans both processes wrote forming one
trace: the HTTP request, the enqueue, the handler run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dependency_injector import providers

from taskyard import EngineConfig, RetryPolicy
from taskyard.backends.memory import InMemoryTaskManager
from taskyard.testing import wait_until

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fastapi_service"


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The example's package on sys.path; yields its web module."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from jobs_service import web

    yield web


@pytest.fixture
async def client(service: Any) -> AsyncIterator[tuple[httpx.AsyncClient, InMemoryTaskManager]]:
    manager = InMemoryTaskManager(EngineConfig(poll_interval=0.01, retry=RetryPolicy(initial=0.01)))
    container = service.create_container("testing")
    try:
        with container.task_manager.override(providers.Object(manager)):
            app = service.create_app(container)
            async with app.router.lifespan_context(app):
                assert manager.started  # the lifespan started the injected manager
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://jobs") as http:
                    yield http, manager
            assert not manager.started  # ... and stopped it
    finally:
        container.unwire()


async def until_finished(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def finished() -> bool:
        found.update((await http.get(url)).json())
        return found["status"] in ("completed", "failed", "cancelled")

    await wait_until(finished, timeout=10, message=f"{url} finished")
    return found


async def test_a_job_is_submitted_run_and_reported(client: Any) -> None:
    http, manager = client
    response = await http.post("/jobs", json={"title": "Q3", "pages": 3, "priority": 2})
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status_url"] == f"/jobs/{accepted['id']}"
    status = await until_finished(http, accepted["status_url"])
    assert status["status"] == "completed"
    assert status["result"] == {"title": "Q3", "pages": 3}
    assert status["priority"] == 2 and status["type"] == "render_report"
    assert manager.tasks[accepted["id"]].payload["title"] == "Q3"  # the injected manager


async def test_a_failing_job_reports_its_error(client: Any) -> None:
    http, _ = client
    accepted = (await http.post("/jobs", json={"title": "bad", "fail": True})).json()
    status = await until_finished(http, accepted["status_url"])
    assert status["status"] == "failed"
    assert "cannot render 'bad'" in status["error"]
    assert status["attempts"] == status["max_attempts"]


async def test_a_queued_job_is_cancelled_and_a_finished_one_is_not(client: Any) -> None:
    http, _ = client
    later = (await http.post("/jobs", json={"title": "later", "delay": 3600})).json()
    response = await http.delete(f"/jobs/{later['id']}")
    assert response.status_code == 200 and response.json() == {"id": later["id"], "cancelled": True}
    assert (await http.get(later["status_url"])).json()["status"] == "cancelled"
    again = await http.delete(f"/jobs/{later['id']}")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


async def test_unknown_jobs_and_bad_requests(client: Any) -> None:
    http, manager = client
    assert (await http.get("/jobs/nope")).status_code == 404
    assert (await http.delete("/jobs/nope")).status_code == 404
    for bad in ({}, {"title": ""}, {"title": "x", "pages": 0}, {"title": "x", "priority": 10}):
        assert (await http.post("/jobs", json=bad)).status_code == 422
    assert manager.tasks == {}  # nothing refused was queued


def test_every_environment_selects_its_backend(service: Any) -> None:
    expected = {"development": "sqlite", "testing": "in-memory", "production": "postgres"}
    for environment, backend in expected.items():
        container = service.create_container(environment)
        container.unwire()
        assert container.backend() == backend
        assert container.config.task_execution.worker_app() == "jobs_service.worker:register"
        # the web process is producer-only wherever another process runs the handlers
        assert container.engine_config().run_worker is (environment == "testing")


# -- end to end ------------------------------------------------------------------------------


class Processes:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.spans = tmp_path / "spans.jsonl"
        self.started: list[subprocess.Popen[str]] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_")}
        env.update(
            TASKYARD_ENV="development",
            TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH=str(self.tmp_path / "jobs.db"),
            TASKYARD_SERVICE__TRACE_EXPORTER="jsonl",
            TASKYARD_SERVICE__SPANS_FILE=str(self.spans),
            TASKYARD_LOGGING__LEVEL="INFO",
            PYTHONPATH=os.pathsep.join([str(EXAMPLE), str(ROOT)]),
        )
        return env

    def start(self, *args: str, log: str) -> subprocess.Popen[str]:
        with open(self.tmp_path / log, "w") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=EXAMPLE,  # where settings.toml is, as the README runs them
                env=self.env(),
                stdout=subprocess.PIPE,
                stderr=output,
                text=True,
            )
        self.started.append(process)
        return process

    def web(self) -> str:
        """Start uvicorn on a free port; its base URL."""
        process = self.start(
            "uvicorn", "--factory", "jobs_service.web:create_app", "--port", "0", log="web.log"
        )
        log = self.tmp_path / "web.log"

        def address() -> str | None:
            found = re.search(r"Uvicorn running on (http://\S+)", log.read_text())
            if found is None and process.poll() is not None:
                raise AssertionError(f"uvicorn exited: {log.read_text()}")
            return None if found is None else found[1]

        found: list[str] = []

        async def listening() -> bool:
            url = address()
            if url is not None:
                found.append(url)
            return url is not None

        asyncio.run(wait_until(listening, timeout=60, message="uvicorn listening"))
        return found[0]

    def worker(self) -> None:
        process = self.start("taskyard", "worker", log="worker.log")
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until the worker is up (or died)
        assert "taskyard worker ready" in line, (self.tmp_path / "worker.log").read_text()

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()

    def read_spans(self) -> list[dict[str, Any]]:
        if not self.spans.exists():
            return []
        return [json.loads(line) for line in self.spans.read_text().splitlines()]


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    made = Processes(tmp_path)
    try:
        yield made
    finally:
        made.close()


@pytest.mark.slow
async def test_end_to_end_over_http_with_a_worker_process_and_one_trace(
    processes: Processes,
) -> None:
    base = await asyncio.to_thread(processes.web)
    await asyncio.to_thread(processes.worker)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        response = await http.post("/jobs", json={"title": "e2e", "pages": 2})
        assert response.status_code == 202
        job = response.json()
        status = await until_finished(http, job["status_url"])
    assert status["status"] == "completed"
    assert status["result"] == {"title": "e2e", "pages": 2}

    def by_name(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {span["name"]: span for span in spans}

    async def all_written() -> bool:  # the worker exports its span as the attempt ends
        return {"POST /jobs", "send render_report", "process render_report"} <= set(
            by_name(processes.read_spans())
        )

    await wait_until(all_written, timeout=10, message="the spans of both processes")
    spans = by_name(processes.read_spans())
    request, send, process = (
        spans["POST /jobs"],
        spans["send render_report"],
        spans["process render_report"],
    )
    trace_id = request["context"]["trace_id"]
    assert send["context"]["trace_id"] == trace_id == process["context"]["trace_id"]
    assert send["parent_id"] == request["context"]["span_id"]
    assert process["parent_id"] == send["context"]["span_id"]
    assert request["kind"] == "SpanKind.SERVER"
    assert send["kind"] == "SpanKind.PRODUCER"
    assert process["kind"] == "SpanKind.CONSUMER"
    assert request["resource"]["attributes"]["service.name"] == "jobs-service-web"
    assert process["resource"]["attributes"]["service.name"] == "jobs-service-worker"
    assert process["attributes"]["messaging.message.id"] == job["id"]
    assert spans["render pages"]["parent_id"] == process["context"]["span_id"]
