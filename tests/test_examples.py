"""The example application in examples/app, tested in the default run.

Its container is overridden with the container's own mechanism: an
InMemoryTaskManager and a RunRegistry whose persistence records every save, so the
test sees each status a run passed through.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers

from taskyard import EngineConfig, Run, RunRegistry, RunStatus
from taskyard.backends.memory import InMemoryTaskManager

EXAMPLE_APP = Path(__file__).resolve().parents[1] / "examples" / "app"


class RecordingPersistence:
    """A RunPersistence that remembers the status of every run it was asked to save."""

    def __init__(self) -> None:
        self.saved: list[tuple[str, RunStatus]] = []

    def load(self) -> list[Run]:
        return []

    def save(self, runs: Iterable[Run], changed: Iterable[Run]) -> None:
        self.saved.extend((run.run_id, run.status) for run in changed)

    def history(self, run_id: str) -> list[RunStatus]:
        statuses = [status for saved_id, status in self.saved if saved_id == run_id]
        return [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] is not s]


@pytest.fixture
def report_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The example's package on sys.path; yields its containers module."""
    monkeypatch.syspath_prepend(str(EXAMPLE_APP))
    from report_service import containers

    yield containers


async def test_a_report_run_goes_from_queued_to_completed_in_the_registry(report_app: Any) -> None:
    from report_service.main import generate_reports

    persistence = RecordingPersistence()
    registry = RunRegistry(persistence)
    manager = InMemoryTaskManager(EngineConfig(poll_interval=0.01), registry=registry)
    container = report_app.create_container("testing")
    try:
        with container.override_providers(
            task_manager=providers.Object(manager), registry=providers.Object(registry)
        ):
            await container.init_resources()
            try:
                assert manager.started
                runs = await generate_reports(["north", "south"], rows=25)
            finally:
                await container.shutdown_resources()
    finally:
        container.unwire()
    assert not manager.started
    assert container.orchestrator().task_manager is manager
    assert len(runs) == 2
    for run in runs:
        stored = registry.get_run(run.run_id)
        assert stored is run
        assert stored.status is RunStatus.COMPLETED
        assert stored.exit_code == 0
        assert stored.module_id == "reports"
        assert persistence.history(run.run_id) == [
            RunStatus.QUEUED,
            RunStatus.RUNNING,
            RunStatus.COMPLETED,
        ]
        task = manager.tasks[run.run_id]
        assert task.result == {
            "report": run.parameters["name"],
            "rows": 25,
            "checksum": sum(range(25)),
        }


async def test_the_injected_rows_come_from_the_examples_settings(report_app: Any) -> None:
    from report_service.main import generate_reports

    manager = InMemoryTaskManager(EngineConfig(poll_interval=0.01))
    container = report_app.create_container("testing")
    try:
        with container.task_manager.override(providers.Object(manager)):
            async with manager:
                runs = await generate_reports(["east"])
    finally:
        container.unwire()
    assert runs[0].status is RunStatus.COMPLETED
    assert runs[0].parameters == {"name": "east", "rows": 10}  # [testing.reports]


async def test_the_example_runs_end_to_end_on_the_backend_its_settings_select(
    report_app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from report_service.main import REGIONS, amain

    assert await amain("testing") == 0
    out = capsys.readouterr().out
    for region in REGIONS:
        assert f"Regional reports / {region}: completed (exit 0)" in out


def test_every_environment_of_the_example_settings_is_valid(report_app: Any) -> None:
    for environment in ("development", "testing", "production"):
        container = report_app.create_container(environment)
        container.unwire()
        assert container.config.reports.module_id() == "reports"
        assert container.backend() == "in-memory"
    production = report_app.create_container("production")
    production.unwire()
    assert production.config.runs.history_file() == "/var/lib/report-service/runs.json"
    assert production.engine_config().concurrency == 16
    assert production.engine_config().task_timeouts == {"build_report": 120.0}
