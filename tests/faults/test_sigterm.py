"""A sync handler that never returns must not keep a worker alive after SIGTERM."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework import EngineConfig
from taskyard.testing import wait_until

from .conftest import Workers
from .worker_app import HANDLERS

pytestmark = pytest.mark.slow

SHUTDOWN = 0.5


async def test_a_hung_sync_handler_does_not_keep_the_worker_alive(
    workers: Workers, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    producer = QueuedTaskManager(EngineConfig(run_worker=False), db_path=workers.db)
    for task_type, handler in HANDLERS.items():
        await producer.register_task(task_type, handler)
    async with producer:
        task_id = await producer.schedule_task("hang_sync", {"n": "stuck", "release": str(release)})
        worker = workers.start(shutdown_timeout=str(SHUTDOWN), lease_seconds="1.0")
        await wait_until(
            lambda: workers.starts()["stuck"] >= 1, timeout=30, message="the task started"
        )
        worker.send_signal(signal.SIGTERM)
        try:
            # Before the fix the interpreter joined the handler's thread at exit: for ever.
            code = worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the worker is still alive 30 s after SIGTERM")
        assert code == 0, workers.output(worker)
        # The abandoned attempt's lease expires; another worker runs the task again.
        release.touch()
        workers.start(lease_seconds="1.0", poll_interval="0.05")
        status = await producer.wait_for(task_id, timeout=30)
    assert status["status"] == "completed", status
    assert status["attempts"] == 2
    assert workers.starts()["stuck"] == 2
