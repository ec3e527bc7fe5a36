"""`taskyard dashboard` and `taskyard worker --dashboard-port` as real processes."""

from __future__ import annotations

import re
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskyard.cli import app
from taskyard.testing import poll_until

from .conftest import APP, Processes

pytestmark = pytest.mark.slow


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""


def test_a_public_address_without_a_token_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["dashboard", "--host", "0.0.0.0", "--port", "0"],
        env={
            "TASKYARD_TASK_EXECUTION__BACKEND": "sqlite",
            "TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH": str(tmp_path / "q.db"),
        },
    )
    assert result.exit_code == 2, result.output
    assert "without a token" in result.output and "dashboard.token" in result.output


def test_a_missing_queue_is_named_before_serving(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["dashboard", "--port", "0"],
        env={
            "TASKYARD_TASK_EXECUTION__BACKEND": "sqlite",
            "TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH": str(tmp_path / "missing.db"),
        },
    )
    assert result.exit_code == 1 and "missing.db" in result.output


def test_without_a_configured_token_one_is_generated_and_printed(tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    try:
        processes.start("worker", "--app", APP, ready="taskyard worker ready")
        dashboard, output = processes.start(
            "dashboard", "--port", "0", ready="taskyard dashboard ready",
            TASKYARD_DASHBOARD__TOKEN="", TASKYARD_DASHBOARD__READ_ONLY_TOKEN="",
        )  # fmt: skip
        found = re.search(r"at (http://127\.0\.0\.1:\d+/)\?token=([\w-]{16,})", output)
        assert found, output
        url, token = found[1], found[2]
        assert get(url)[0] == 401
        status, page = get(f"{url}tasks", token)
        assert status == 200 and "Tasks" in page
        dashboard.send_signal(signal.SIGTERM)
        assert dashboard.wait(timeout=30) == 0
    finally:
        processes.close()


def test_a_worker_serves_the_dashboard_too(tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    try:
        worker, output = processes.start(
            "worker", "--app", APP, "--dashboard-port", "0", ready="taskyard worker ready"
        )
        found = re.search(r"taskyard dashboard at (http://127\.0\.0\.1:\d+/)", output)
        assert found, output
        assert get(found[1])[0] == 401
        poll_until(  # it sees its own heartbeat
            lambda: "worker-active" in get(found[1], "admin-token-0123456789")[1],
            timeout=30,
            message="the worker's own heartbeat on its dashboard",
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        processes.close()
