"""Runs on the SQLite backends live in the queue file: they survive restarts, and an
ad-hoc run whose process died is marked failed ("interrupted") at the next start."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from taskyard.framework.runs import INTERRUPTED, Run, RunStatus
from taskyard.providers import Container
from taskyard.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def container_on(db: Path) -> Container:
    return Container(
        settings=load_settings(
            overrides={
                "task_execution.backend": "sqlite",
                "task_execution.queue_db_path": str(db),
                "task_execution.poll_interval": 0.05,
            }
        )
    )


async def test_submitted_runs_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    first = container_on(db)
    orchestrator = first.orchestrator()

    async def build_report(payload: dict[str, int]) -> int:
        return payload["rows"] * 2

    manager = orchestrator.task_manager
    await manager.register_task("build_report", build_report)
    async with manager:
        run = await orchestrator.submit("reports", "build_report", {"rows": 21})
        done = await orchestrator.wait_for_run(run.run_id, timeout=10)
    assert done.status is RunStatus.COMPLETED
    assert done.exit_code == 0

    again = container_on(db).registry()
    kept = again.get_run(run.run_id)
    assert kept is not None
    assert kept.status is RunStatus.COMPLETED
    assert kept.module_id == "reports"
    assert kept.parameters == {"rows": 21}
    assert kept.exit_code == 0


async def test_an_adhoc_run_of_a_killed_process_is_marked_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    script = (
        "import asyncio, sys\n"
        "from tests.integration.test_durable_runs import container_on\n"
        "from taskyard.framework.runs import Run\n"
        "from pathlib import Path\n"
        "async def main():\n"
        f"    container = container_on(Path({str(db)!r}))\n"
        "    manager = container.task_manager()\n"
        "    async with manager:\n"
        "        run = Run(module_id='import', module_name='nightly import')\n"
        "        manager.start_task(run, asyncio.Event().wait())\n"
        "        print(run.run_id, flush=True)\n"
        "        await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_")}
    env.update(TASKYARD_ENV="testing", TASKYARD_SETTINGS_FILES="", PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        run_id = process.stdout.readline().decode().strip()
        assert run_id, "the child never started its run"
        registry = container_on(db).registry()
        live = registry.get_run(run_id)
        assert live is not None
        assert live.status is RunStatus.RUNNING  # its process is alive: left alone
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()

    registry = container_on(db).registry()
    run = registry.get_run(run_id)
    assert run is not None
    assert run.status is RunStatus.FAILED
    assert run.error_message == INTERRUPTED
    assert run.completed_at is not None


async def test_a_finished_adhoc_run_is_kept_as_it_ended(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    manager = container_on(db).task_manager()
    async with manager:
        run = Run(module_id="cleanup")

        async def work() -> None:
            await asyncio.sleep(0)

        manager.start_task(run, work())
        await manager.wait_all(timeout=10)
    kept = container_on(db).registry().get_run(run.run_id)
    assert kept is not None
    assert kept.status is RunStatus.COMPLETED
    assert kept.exit_code == 0
