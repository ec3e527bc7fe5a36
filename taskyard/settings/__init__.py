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
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dynaconf import Dynaconf, ValidationError, Validator
from loguru import logger

from taskyard.framework.engine import EngineConfig
from taskyard.framework.errors import ConfigurationError
from taskyard.framework.retry import RetryPolicy

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
    "settings_as_dict",
    "settings_files_in_use",
    "validate",
]

DEFAULT_SETTINGS_FILE = Path(__file__).with_name("default_settings.toml")
ENVVAR_PREFIX = "TASKYARD"
ENV_SWITCHER = "TASKYARD_ENV"
SETTINGS_FILES_ENVVAR = "TASKYARD_SETTINGS_FILES"
DEFAULT_ENVIRONMENT = "development"
ENVIRONMENTS = ("development", "testing", "production")
LOCAL_SETTINGS_FILE = "settings.local.toml"
"""Read last from the working directory: the file ``taskyard rollback`` writes."""
USER_SETTINGS_FILES = ("settings.toml", ".secrets.toml", LOCAL_SETTINGS_FILE)
SECTIONS = ("task_execution", "runs", "logging", "operations", "maintenance")
"""The top-level sections taskyard owns; an application may add its own beside them."""

BACKENDS = ("in-memory", "sqlite", "sqlite-with-fallback", "postgres")
BACKEND_ALIASES: Mapping[str, str] = MappingProxyType({"queue": "sqlite"})
SYNCHRONOUS_MODES = ("NORMAL", "FULL")
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")

# Dynaconf replaces its whole file list with the files named by the variable called
# ENVVAR_FOR_DYNACONF (SETTINGS_FILE_FOR_DYNACONF by default) when it is set. taskyard
# reads TASKYARD_SETTINGS_FILES itself, so it points Dynaconf at a name nobody sets.
_UNUSED_DYNACONF_ENVVAR = "TASKYARD_INTERNAL_DYNACONF_SETTINGS_FILE"
_DYNACONF_OPTIONS = frozenset({"load_dotenv"})  # Dynaconf keeps this option as a setting


# -- value checks ---------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _int_at_least(minimum: int) -> Callable[[Any], bool]:
    return lambda value: _is_int(value) and value >= minimum


def _positive(value: Any) -> bool:
    return _is_number(value) and value > 0


def _not_negative(value: Any) -> bool:
    return _is_number(value) and value >= 0


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _non_empty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _is_backend(value: Any) -> bool:
    return isinstance(value, str) and (value in BACKENDS or value in BACKEND_ALIASES)


def _is_postgres_url(value: Any) -> bool:
    return _non_empty_str(value) and urlsplit(value).scheme in ("postgresql", "postgres")


def _is_timeout_table(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(key, str) and _positive(seconds) for key, seconds in value.items()
    )


def _rule(key: str, check: Callable[[Any], bool], allowed: str) -> Validator:
    """A validator whose failure message names the key, the value and what is allowed."""
    envvar = f"{ENVVAR_PREFIX}_{key.upper().replace('.', '__')}"
    message = (
        f"{key} = {{value!r}} is not allowed (environment {{env}}): it must be {allowed}. "
        f"Fix it in your settings file or in {envvar}."
    )
    return Validator(
        key,
        must_exist=True,
        condition=check,
        messages={
            "condition": message,
            "must_exist_true": (f"{key} is missing (environment {{env}}); it must be {allowed}."),
        },
    )


_BACKEND_CHOICES = ", ".join(f'"{name}"' for name in (*BACKENDS, *BACKEND_ALIASES))

VALIDATORS: tuple[Validator, ...] = (
    _rule("task_execution.backend", _is_backend, f"one of {_BACKEND_CHOICES}"),
    _rule("task_execution.max_concurrency", _int_at_least(1), "an integer of at least 1"),
    _rule("task_execution.prefetch", _int_at_least(0), "an integer of at least 0"),
    _rule("task_execution.run_worker", _is_bool, "true or false"),
    _rule("task_execution.poll_interval", _positive, "a number of seconds greater than 0"),
    _rule("task_execution.lease_seconds", _positive, "a number of seconds greater than 0"),
    _rule("task_execution.default_max_attempts", _int_at_least(1), "an integer of at least 1"),
    _rule(
        "task_execution.default_timeout_seconds",
        _not_negative,
        "a number of seconds greater than 0, or 0 for no timeout",
    ),
    _rule(
        "task_execution.task_timeouts",
        _is_timeout_table,
        "a table of task type = seconds (each greater than 0)",
    ),
    _rule("task_execution.retry_initial_delay", _not_negative, "a number of seconds >= 0"),
    _rule(
        "task_execution.retry_multiplier",
        lambda value: _is_number(value) and value >= 1,
        "a number of at least 1",
    ),
    _rule("task_execution.retry_max_delay", _not_negative, "a number of seconds >= 0"),
    _rule(
        "task_execution.retry_jitter",
        lambda value: _is_number(value) and 0 <= value <= 1,
        "a number between 0 and 1",
    ),
    _rule("task_execution.shutdown_timeout", _not_negative, "a number of seconds >= 0"),
    _rule("task_execution.queue_db_path", _non_empty_str, "a non-empty file path"),
    _rule(
        "task_execution.sqlite_synchronous",
        lambda value: _upper(value) in SYNCHRONOUS_MODES,
        '"NORMAL" or "FULL"',
    ),
    _rule("task_execution.sqlite_busy_timeout", _not_negative, "a number of seconds >= 0"),
    _rule("task_execution.queue_fallback_enabled", _is_bool, "true or false"),
    _rule(
        "task_execution.postgres_dsn",
        _is_postgres_url,
        "a postgresql:// URL",
    ),
    _rule(
        "task_execution.canary_backend",
        lambda value: value == "" or _is_backend(value),
        f'"" (no canary) or one of {_BACKEND_CHOICES}',
    ),
    _rule(
        "task_execution.canary_share",
        lambda value: _is_number(value) and 0 <= value <= 1,
        "a number between 0 and 1 (0.1 sends 10 % of new tasks to the canary backend)",
    ),
    _rule("runs.history_file", lambda value: isinstance(value, str), 'a file path, or "" for none'),
    _rule("runs.max_history", _int_at_least(1), "an integer of at least 1"),
    _rule("runs.keep_in_database", _is_bool, "true or false"),
    _rule(
        "task_execution.worker_app",
        lambda value: isinstance(value, str) and (value == "" or ":" in value),
        '"package.module:attribute", or "" for none',
    ),
    _rule("logging.enabled", _is_bool, "true or false"),
    _rule(
        "logging.level",
        lambda value: _upper(value) in LOG_LEVELS,
        "one of " + ", ".join(LOG_LEVELS),
    ),
    _rule("logging.serialize", _is_bool, "true or false"),
    _rule("logging.sink", _non_empty_str, '"stderr", "stdout" or a file path'),
    _rule("logging.rotation", _non_empty_str, 'a size or an interval, such as "10 MB"'),
    _rule(
        "logging.retention",
        lambda value: _non_empty_str(value) or (_is_int(value) and value >= 1),
        'a number of files (an integer of at least 1) or a duration, such as "14 days"',
    ),
    _rule("operations.window", _positive, "a number of seconds greater than 0"),
    _rule("operations.stale_worker_after", _positive, "a number of seconds greater than 0"),
    _rule(
        "operations.max_oldest_queued_age",
        _not_negative,
        "a number of seconds >= 0 (0 turns the check off)",
    ),
    _rule(
        "operations.max_failure_rate",
        lambda value: _is_number(value) and 0 <= value <= 1,
        "a number between 0 and 1 (0 or 1 turns the check off)",
    ),
    _rule("operations.failure_rate_min_tasks", _int_at_least(1), "an integer of at least 1"),
    _rule(
        "operations.max_wal_bytes",
        _int_at_least(0),
        "a number of bytes, an integer >= 0 (0 turns the check off)",
    ),
    _rule("operations.max_stale_workers", _int_at_least(0), "an integer >= 0"),
    _rule("maintenance.retention_days", _positive, "a number of days greater than 0"),
    _rule("maintenance.failed_retention_days", _positive, "a number of days greater than 0"),
    _rule("maintenance.worker_retention_days", _positive, "a number of days greater than 0"),
    _rule(
        "maintenance.backup_dir",
        lambda value: isinstance(value, str),
        'a folder path, or "" for a backups folder next to the database',
    ),
    _rule("maintenance.keep_backups", _int_at_least(1), "an integer of at least 1"),
)


# -- loading --------------------------------------------------------------------------------


def load_settings(
    *,
    environment: str | None = None,
    settings_files: Sequence[str | os.PathLike[str]] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Dynaconf:
    """Load and validate taskyard's settings; see the module docstring for the layers.

    ``environment`` wins over ``TASKYARD_ENV``. ``settings_files`` replaces the files of
    the working directory and ``TASKYARD_SETTINGS_FILES``; every file named explicitly
    must exist. ``overrides`` is a mapping of nested tables or dotted keys
    (``{"task_execution.backend": "in-memory"}``) applied last.

    Raises ConfigurationError for a missing file, an unknown environment, an unknown
    key in taskyard's sections, or a bad value.
    """
    files = _user_files(settings_files)
    chosen_by = ENV_SWITCHER if not environment and os.environ.get(ENV_SWITCHER) else ""
    env = (environment or os.environ.get(ENV_SWITCHER) or DEFAULT_ENVIRONMENT).strip().lower()
    _check_environment(env, files, chosen_by)
    settings = Dynaconf(
        envvar_prefix=ENVVAR_PREFIX,
        environments=True,
        env_switcher=ENV_SWITCHER,
        env=env,
        settings_files=[str(DEFAULT_SETTINGS_FILE), *(str(path) for path in files)],
        envvar=_UNUSED_DYNACONF_ENVVAR,
        merge_enabled=True,
        ignore_unknown_envvars=True,
        load_dotenv=False,
        includes=[],
        preload=[],
    )
    if settings.current_env.lower() != env:
        settings.setenv(env)  # an explicit environment wins over TASKYARD_ENV
    for key, value in _flatten(overrides or {}):
        settings.set(key, value)
    validate(settings)
    return settings


def validate(settings: Dynaconf) -> None:
    """Check every taskyard key of ``settings``; raises ConfigurationError listing all
    the problems found."""
    settings.validators.register(*VALIDATORS)
    try:
        settings.validators.validate_all()
    except ValidationError as exc:
        problems = [message for _, message in exc.details] or [str(exc)]
        raise ConfigurationError(_problems("invalid taskyard settings", problems)) from exc
    _check_unknown_keys(settings)
    for key in _UPPER_CASE_KEYS:  # written in any case, read in one
        settings.set(key, _upper(settings.get(key)))


_UPPER_CASE_KEYS = ("task_execution.sqlite_synchronous", "logging.level")


def _problems(title: str, problems: Sequence[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{title}:\n" + "\n".join(f"  - {problem}" for problem in problems)


def settings_files_in_use(
    explicit: Sequence[str | os.PathLike[str]] | None = None,
) -> tuple[list[Path], bool]:
    """The user settings files :func:`load_settings` reads now (``explicit`` as its
    ``settings_files``), and whether they come from the working directory (then
    ``settings.local.toml`` there is read once it exists)."""
    from_cwd = explicit is None and SETTINGS_FILES_ENVVAR not in os.environ
    return _user_files(explicit), from_cwd


def _user_files(explicit: Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    if explicit is not None:
        named = [Path(path) for path in explicit]
        source = "settings_files"
    elif SETTINGS_FILES_ENVVAR in os.environ:
        raw = os.environ[SETTINGS_FILES_ENVVAR]
        named = [Path(part.strip()) for part in raw.split(",") if part.strip()]
        source = SETTINGS_FILES_ENVVAR
    else:
        return [path.resolve() for path in map(Path, USER_SETTINGS_FILES) if path.is_file()]
    missing = [str(path) for path in named if not path.is_file()]
    if missing:
        raise ConfigurationError(
            f"{source} names settings file(s) that do not exist: {', '.join(missing)}"
        )
    return [path.resolve() for path in named]


def _check_environment(env: str, files: Iterable[Path], chosen_by: str) -> None:
    """Refuse an environment no file defines, and top-level taskyard sections (which
    Dynaconf would silently read as environments)."""
    known = set(ENVIRONMENTS)
    trust = False
    for path in files:
        if path.suffix != ".toml":
            trust = True  # another format: its environments are not checked here
            continue
        try:
            tables = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read the settings file {path}: {exc}") from exc
        for name in tables:
            if name.lower() in SECTIONS:
                raise ConfigurationError(
                    f"{path} has a top-level [{name}] table; taskyard's settings files use "
                    f"environments: write [default.{name}] or [development.{name}] and so on"
                )
            known.add(name.lower())
    known -= {"default", "global", "dynaconf_merge"}
    if env not in known and not trust:
        name = f"{chosen_by} = {env!r}" if chosen_by else f"the environment {env!r}"
        raise ConfigurationError(
            f"{name} is not a settings environment; known: " + ", ".join(sorted(known))
        )


def _check_unknown_keys(settings: Dynaconf) -> None:
    shipped = tomllib.loads(DEFAULT_SETTINGS_FILE.read_text(encoding="utf-8"))["default"]
    problems: list[str] = []
    for section in SECTIONS:
        values = settings.get(section) or {}
        allowed = set(shipped[section])
        for key in values:
            if str(key).lower() not in allowed:
                close = difflib.get_close_matches(str(key).lower(), sorted(allowed), n=1)
                hint = f"; did you mean {section}.{close[0]}?" if close else ""
                problems.append(f"{section}.{key} is not a taskyard setting{hint}")
    if problems:
        raise ConfigurationError(_problems("unknown taskyard settings", problems))


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Nested tables to dotted keys, so an override changes one key, not a whole table.
    ``task_timeouts`` is a value of its own and stays whole."""
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not dotted.endswith("task_timeouts"):
            yield from _flatten(value, f"{dotted}.")
        else:
            yield dotted, value


# -- reading --------------------------------------------------------------------------------


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
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def canonical_backend(name: Any) -> str:
    """The backend a ``task_execution.backend`` value names (``queue`` is ``sqlite``)."""
    if isinstance(name, str):
        if name in BACKENDS:
            return name
        if name in BACKEND_ALIASES:
            return BACKEND_ALIASES[name]
    raise ConfigurationError(
        f"task_execution.backend = {name!r} is not allowed: it must be one of {_BACKEND_CHOICES}"
    )


def engine_config_from_settings(task_execution: Mapping[str, Any]) -> EngineConfig:
    """The :class:`EngineConfig` the ``task_execution`` section describes."""
    try:
        timeout = float(task_execution["default_timeout_seconds"])
        return EngineConfig(
            concurrency=int(task_execution["max_concurrency"]),
            prefetch=int(task_execution.get("prefetch", 0)),
            run_worker=bool(task_execution["run_worker"]),
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
        )
    except KeyError as exc:
        raise ConfigurationError(f"task_execution.{exc.args[0]} is missing") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"the task_execution settings are not usable: {exc}") from exc


# -- logging --------------------------------------------------------------------------------

_handler_ids: list[int] = []


def configure_logging(
    settings: Dynaconf | Mapping[str, Any], *, drop_default_sink: bool = False
) -> list[int]:
    """Send taskyard's log records where the ``logging`` section says, replacing what an
    earlier call set up; with ``enabled = false`` taskyard is silent again. Returns the
    loguru handler ids added. The library never calls this itself: the CLI or the
    application does.

    loguru's default stderr sink (handler 0) would write taskyard's records a second
    time; ``drop_default_sink=True`` removes it, for programs that leave all their
    logging to these settings (the CLI does).
    """
    section = settings_as_dict(settings).get("logging") or {}
    for handler_id in _handler_ids:
        logger.remove(handler_id)
    _handler_ids.clear()
    if not section.get("enabled", False):
        logger.disable("taskyard")
        return []
    if drop_default_sink:
        with contextlib.suppress(ValueError):  # already removed
            logger.remove(0)
    level = str(section.get("level", "INFO")).upper()
    serialize = bool(section.get("serialize", False))
    sink = str(section.get("sink", "stderr"))
    options: dict[str, Any] = {
        "level": level,
        "serialize": serialize,
        "filter": "taskyard",
        "backtrace": False,
        "diagnose": False,
    }
    if sink in ("stderr", "stdout"):
        handler_id = logger.add(sys.stderr if sink == "stderr" else sys.stdout, **options)
    else:
        handler_id = logger.add(
            sink,
            rotation=str(section.get("rotation", "10 MB")),
            retention=section.get("retention", 10),
            encoding="utf-8",
            **options,
        )
    _handler_ids.append(handler_id)
    logger.enable("taskyard")
    return [handler_id]
