"""The validators of taskyard's settings: each failure names the key, the value and what
is allowed."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from dynaconf import Validator

ENVVAR_PREFIX = "TASKYARD"
BACKENDS = ("in-memory", "sqlite", "sqlite-with-fallback", "postgres")
BACKEND_ALIASES: Mapping[str, str] = MappingProxyType({"queue": "sqlite"})
SYNCHRONOUS_MODES = ("NORMAL", "FULL")
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


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


def _is_schema_name(value: Any) -> bool:
    return isinstance(value, str) and bool(re.fullmatch(r"[a-z_][a-z0-9_]{0,47}", value))


def _is_limit_table(value: Any) -> bool:
    return value is None or (
        isinstance(value, Mapping)
        and all(isinstance(key, str) and _int_at_least(1)(limit) for key, limit in value.items())
    )


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


BACKEND_CHOICES = ", ".join(f'"{name}"' for name in (*BACKENDS, *BACKEND_ALIASES))

VALIDATORS: tuple[Validator, ...] = (
    _rule("task_execution.backend", _is_backend, f"one of {BACKEND_CHOICES}"),
    _rule("task_execution.max_concurrency", _int_at_least(1), "an integer of at least 1"),
    _rule("task_execution.prefetch", _int_at_least(0), "an integer of at least 0"),
    _rule("task_execution.run_worker", _is_bool, "true or false"),
    _rule(
        "task_execution.task_types",
        lambda value: isinstance(value, list | tuple) and all(map(_non_empty_str, value)),
        'a list of task type names, such as ["send_email"], or [] for any type',
    ),
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
        lambda value: value == "" or _is_postgres_url(value),
        '"" (no PostgreSQL) or a postgresql:// URL',
    ),
    _rule(
        "task_execution.postgres_schema",
        _is_schema_name,
        'a lower-case schema name of letters, digits and _ (at most 48), such as "taskyard"',
    ),
    _rule("task_execution.postgres_pool_size", _int_at_least(1), "an integer of at least 1"),
    _rule(
        "task_execution.canary_backend",
        lambda value: value == "" or _is_backend(value),
        f'"" (no canary) or one of {BACKEND_CHOICES}',
    ),
    _rule(
        "task_execution.canary_share",
        lambda value: _is_number(value) and 0 <= value <= 1,
        "a number between 0 and 1 (0.1 sends 10 % of new tasks to the canary backend)",
    ),
    Validator(
        "concurrency_limits",
        condition=_is_limit_table,
        messages={
            "condition": (
                "concurrency_limits = {value!r} is not allowed (environment {env}): it must be "
                "a table of key prefix or task type = an integer of at least 1. Fix it in "
                "[default.concurrency_limits] of your settings file or in "
                f"{ENVVAR_PREFIX}_CONCURRENCY_LIMITS (@json and a JSON object)."
            )
        },
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
    _rule(
        "dashboard.token",
        lambda value: isinstance(value, str) and (value == "" or len(value) >= 16),
        '"" (one is generated at each start) or a secret of at least 16 characters',
    ),
    _rule(
        "dashboard.read_only_token",
        lambda value: isinstance(value, str) and (value == "" or len(value) >= 16),
        '"" (no read-only access) or a secret of at least 16 characters',
    ),
    _rule("dashboard.host", _non_empty_str, 'an address to listen on, such as "127.0.0.1"'),
    _rule(
        "dashboard.port",
        lambda value: _is_int(value) and 0 <= value <= 65535,
        "a port number, 0..65535 (0: a free port)",
    ),
    _rule("dashboard.refresh_seconds", _positive, "a number of seconds greater than 0"),
)


def required_for_backend(task_execution: Mapping[str, Any]) -> list[str]:
    """Problems of keys that only the chosen backend needs: ``postgres_dsn`` must be set
    when the backend (or the canary being rolled out) is postgres."""
    chosen = {task_execution.get("backend"), task_execution.get("canary_backend")}
    if "postgres" in chosen and not task_execution.get("postgres_dsn"):
        return [
            "task_execution.postgres_dsn is empty, and the postgres backend needs it: set it "
            "to the server's postgresql:// URL in your settings file or in "
            f"{ENVVAR_PREFIX}_TASK_EXECUTION__POSTGRES_DSN."
        ]
    return []
