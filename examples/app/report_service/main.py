"""Run the report service once: ``cd examples/app && python -m report_service``."""

from __future__ import annotations

import asyncio

from dependency_injector.wiring import Provide, inject

from report_service.containers import ApplicationContainer, create_container
from report_service.services import ReportService
from taskyard import Run, RunStatus, TaskOrchestrator
from taskyard.settings import configure_logging

REGIONS = ("north", "south", "east", "west")


@inject
async def generate_reports(
    names: list[str],
    rows: int = Provide[ApplicationContainer.config.reports.default_rows],
    service: ReportService = Provide[ApplicationContainer.report_service],
    orchestrator: TaskOrchestrator = Provide[ApplicationContainer.orchestrator],
) -> list[Run]:
    """Queue one report per name and wait for them; returns the finished runs."""
    await service.setup()
    runs = [await service.request(name, rows) for name in names]
    return [await orchestrator.wait_for_run(run.run_id, timeout=60) for run in runs]


async def amain(environment: str | None = None) -> int:
    container = create_container(environment)
    # taskyard's log records, as the [*.logging] settings say; this program has no
    # other logging, so loguru's default sink goes (else each record shows twice)
    configure_logging(container.settings(), drop_default_sink=True)
    await container.init_resources()  # starts the task manager the settings select
    try:
        runs = await generate_reports(list(REGIONS))
    finally:
        await container.shutdown_resources()  # stops it, draining running tasks
        container.unwire()
    for run in runs:
        print(f"{run.module_name} / {run.parameters['name']}: {run.status} (exit {run.exit_code})")
    return 0 if all(run.status is RunStatus.COMPLETED for run in runs) else 1


def main() -> None:
    raise SystemExit(asyncio.run(amain()))
