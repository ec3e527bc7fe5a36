"""The application's container: taskyard's Container, extended with its own services.

Settings come from ``examples/app/settings.toml`` layered over taskyard's defaults;
TASKYARD_ENV picks the environment.
"""

from __future__ import annotations

from pathlib import Path

from dependency_injector import containers, providers

from report_service.services import ReportService
from taskyard.providers import Container
from taskyard.settings import load_settings

SETTINGS_FILE = Path(__file__).resolve().parent.parent / "settings.toml"


class ApplicationContainer(Container):
    """Everything taskyard provides (config, task_manager, orchestrator, registry, ...)
    plus the report service. ``main`` is wired: its ``Provide[...]`` markers resolve
    against the container created last."""

    wiring_config = containers.WiringConfiguration(modules=[".main"])

    report_service = providers.Singleton(
        ReportService,
        orchestrator=Container.orchestrator,
        module_id=Container.config.reports.module_id,
    )


def create_container(environment: str | None = None) -> ApplicationContainer:
    return ApplicationContainer(
        settings=load_settings(environment=environment, settings_files=[SETTINGS_FILE])
    )
