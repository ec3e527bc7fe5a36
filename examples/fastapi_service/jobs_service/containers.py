"""The service's container: taskyard's Container with the service's settings file.

Settings come from ``examples/fastapi_service/settings.toml`` layered over taskyard's
defaults; TASKYARD_ENV picks the environment (development: SQLite, testing: in-memory,
production: PostgreSQL).
"""

from __future__ import annotations

from pathlib import Path

from dependency_injector import containers

from taskyard.providers import Container
from taskyard.settings import load_settings

SETTINGS_FILE = Path(__file__).resolve().parent.parent / "settings.toml"


class ApplicationContainer(Container):
    """Everything taskyard provides (``task_manager``, ``task_manager_lifecycle``,
    ``config``, ...). The web module is wired: its ``Provide[...]`` markers resolve
    against this container."""

    wiring_config = containers.WiringConfiguration(modules=[".web"])


def create_container(environment: str | None = None) -> ApplicationContainer:
    return ApplicationContainer(
        settings=load_settings(environment=environment, settings_files=[SETTINGS_FILE])
    )
