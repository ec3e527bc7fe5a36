"""Reading loaded settings: plain dicts, the environment's name, the backend a value
names, and the engine's configuration."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from dynaconf import Dynaconf

from taskyard.framework.dsn import redact_dsn as _redact_dsn
from taskyard.framework.engine import EngineConfig
from taskyard.framework.errors import ConfigurationError
from taskyard.framework.retry import RetryPolicy
from taskyard.settings.validators import BACKEND_ALIASES, BACKEND_CHOICES, BACKENDS

SECTIONS = ("task_execution", "runs", "logging", "operations", "maintenance", "dashboard")
"""The top-level sections taskyard owns; an application may add its own beside them."""

_DYNACONF_OPTIONS = frozenset({"load_dotenv"})  # Dynaconf keeps this option as a setting


def environment_of(settings: Dynaconf) -> str:
    """The name of the environment ``settings`` were loaded for, lower case."""
    return str(settings.current_env).lower()


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def settings_as_dict(settings: Dynaconf | Mapping[str, Any]) -> dict[str, Any]:
    """Plain nested dicts: top-level keys lower case (Dynaconf upper-cases them), and the
    keys of taskyard's sections lower case too. This is what the container's
    ``config`` holds."""
    data = settings.as_dict() if hasattr(settings, "as_dict") else dict(settings)
    result: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).lower()
        if name in _DYNACONF_OPTIONS:
            continue
        if name in SECTIONS and isinstance(value, Mapping):
            value = {str(k).lower(): v for k, v in value.items()}
        result[name] = _plain(value)
    return result


def redact_dsn(dsn: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` (and
    ``?password=`` or ``password=`` in a keyword DSN); see :mod:`taskyard.framework.dsn`."""
    return _redact_dsn(dsn)


def canonical_backend(name: Any) -> str:
    """The backend a ``task_execution.backend`` value names (``queue`` is ``sqlite``)."""
    if isinstance(name, str):
        if name in BACKENDS:
            return name
        if name in BACKEND_ALIASES:
            return BACKEND_ALIASES[name]
    raise ConfigurationError(
        f"task_execution.backend = {name!r} is not allowed: it must be one of {BACKEND_CHOICES}"
    )


def engine_config_from_settings(
    task_execution: Mapping[str, Any], concurrency_limits: Mapping[str, Any] | None = None
) -> EngineConfig:
    """The :class:`EngineConfig` the ``task_execution`` section (and the
    ``concurrency_limits`` table) describe."""
    try:
        timeout = float(task_execution["default_timeout_seconds"])
        return EngineConfig(
            concurrency=int(task_execution["max_concurrency"]),
            prefetch=int(task_execution.get("prefetch", 0)),
            run_worker=bool(task_execution["run_worker"]),
            task_types=(
                frozenset(str(name) for name in task_execution["task_types"])
                if task_execution.get("task_types")
                else None
            ),
            poll_interval=float(task_execution["poll_interval"]),
            lease_seconds=float(task_execution["lease_seconds"]),
            default_max_attempts=int(task_execution["default_max_attempts"]),
            default_timeout=timeout if timeout > 0 else None,
            task_timeouts=MappingProxyType(
                {
                    str(task_type): float(seconds)
                    for task_type, seconds in dict(task_execution["task_timeouts"]).items()
                }
            ),
            retry=RetryPolicy(
                initial=float(task_execution["retry_initial_delay"]),
                multiplier=float(task_execution["retry_multiplier"]),
                max_delay=float(task_execution["retry_max_delay"]),
                jitter=float(task_execution["retry_jitter"]),
            ),
            shutdown_timeout=float(task_execution["shutdown_timeout"]),
            concurrency_limits=MappingProxyType(
                {str(name): int(limit) for name, limit in dict(concurrency_limits or {}).items()}
            ),
        )
    except KeyError as exc:
        raise ConfigurationError(f"task_execution.{exc.args[0]} is missing") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"the task_execution settings are not usable: {exc}") from exc
