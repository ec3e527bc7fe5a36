"""taskyard's settings: Dynaconf layers, validated at start-up. Imports framework only.

Layers, later ones win:

1. the defaults shipped in ``default_settings.toml`` (``[default]`` and the environment);
2. the application's files: ``settings.toml``, ``.secrets.toml`` and
   ``settings.local.toml`` (written by ``taskyard rollback``) in the working
   directory, or instead the files named by ``TASKYARD_SETTINGS_FILES`` (comma
   separated; set but empty means none), or the ``settings_files`` argument;
3. environment variables ``TASKYARD_<SECTION>__<KEY>``, parsed as TOML values
   (``TASKYARD_TASK_EXECUTION__MAX_CONCURRENCY=20``);
4. the ``overrides`` argument.

``TASKYARD_ENV`` (or the ``environment`` argument, which wins) picks the environment;
``development`` by default. Every file uses environment tables:
``[default.task_execution]``, ``[production.task_execution]``, and so on.

A bad value raises :class:`~taskyard.framework.errors.ConfigurationError` naming the
key, the value and what is allowed, before anything runs.

Modules: :mod:`~taskyard.settings.loader` (the layers and the checks that run before
anything starts), :mod:`~taskyard.settings.validators` (one rule per key),
:mod:`~taskyard.settings.conversion` (reading loaded settings) and
:mod:`~taskyard.settings.logging` (the log sinks).
"""

from taskyard.settings.conversion import (
    SECTIONS,
    canonical_backend,
    engine_config_from_settings,
    environment_of,
    redact_dsn,
    settings_as_dict,
)
from taskyard.settings.loader import (
    DEFAULT_ENVIRONMENT,
    DEFAULT_SETTINGS_FILE,
    ENV_SWITCHER,
    ENVIRONMENTS,
    LOCAL_SETTINGS_FILE,
    SETTINGS_FILES_ENVVAR,
    load_settings,
    schedules_from_settings,
    settings_files_in_use,
    validate,
)
from taskyard.settings.logging import configure_logging
from taskyard.settings.validators import BACKEND_ALIASES, BACKENDS, ENVVAR_PREFIX, VALIDATORS

__all__ = [
    "BACKENDS",
    "BACKEND_ALIASES",
    "DEFAULT_ENVIRONMENT",
    "DEFAULT_SETTINGS_FILE",
    "ENVIRONMENTS",
    "ENVVAR_PREFIX",
    "ENV_SWITCHER",
    "LOCAL_SETTINGS_FILE",
    "SECTIONS",
    "SETTINGS_FILES_ENVVAR",
    "VALIDATORS",
    "canonical_backend",
    "configure_logging",
    "engine_config_from_settings",
    "environment_of",
    "load_settings",
    "redact_dsn",
    "schedules_from_settings",
    "settings_as_dict",
    "settings_files_in_use",
    "validate",
]
