"""What the operations tools need to know, as one value the command line builds from the
settings' ``task_execution``, ``operations`` and ``maintenance`` sections (plain
mappings: this module reads no settings itself)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from taskyard.framework.dsn import redact_dsn
from taskyard.framework.errors import ConfigurationError
from taskyard.ops.health import HealthThresholds

FILE_BACKENDS = ("sqlite", "sqlite-with-fallback")
QUEUE_BACKENDS = (*FILE_BACKENDS, "postgres")
"""The backends whose queue the operations commands reach from outside the workers."""

Needs = Literal["queue", "file", "nothing"]
"""What a command needs the settings to describe: a queue (SQLite file or PostgreSQL
schema), a SQLite file (backups), or nothing in particular (migration commands)."""


@dataclass(frozen=True)
class OpsConfig:
    """The one reading of the settings behind every operations command."""

    db_path: Path
    busy_timeout: float = 5.0
    synchronous: str = "NORMAL"
    environment: str = ""
    backend: str = "sqlite"
    canary: str | None = None
    lease_seconds: float = 30.0
    shutdown_timeout: float = 30.0
    thresholds: HealthThresholds = field(default_factory=HealthThresholds)
    retention_days: float = 7.0
    failed_retention_days: float = 30.0
    worker_retention_days: float = 1.0
    backup_dir: Path | None = None
    keep_backups: int = 10
    postgres_where: str = ""
    """The PostgreSQL queue (DSN without its password, and schema), when one is used."""

    @property
    def window(self) -> float:
        return self.thresholds.window

    @property
    def stale_after(self) -> float:
        return self.thresholds.stale_worker_after

    @property
    def uses_file(self) -> bool:
        """Whether the backend (or the canary being rolled out) keeps its tasks in the
        queue file."""
        return any(name.startswith("sqlite") for name in (self.backend, self.canary or ""))

    @property
    def uses_postgres(self) -> bool:
        """Whether the backend (or the canary being rolled out) is PostgreSQL."""
        return "postgres" in (self.backend, self.canary)

    @property
    def uses_database(self) -> bool:
        """Whether the backend (or the canary) keeps its tasks where the operations
        commands reach them: the queue file or a PostgreSQL schema."""
        return self.uses_file or self.uses_postgres

    @property
    def location(self) -> str:
        """Where the queue is, for people: the file, the PostgreSQL schema, or both."""
        parts = [str(self.db_path)] if self.uses_file or not self.uses_postgres else []
        if self.uses_postgres:
            parts.append(self.postgres_where)
        return " and ".join(parts)

    @property
    def queue(self) -> str:
        """The queue the commands work on, for messages and export headers (both sides
        of a canary between SQLite and PostgreSQL; never a password)."""
        parts = []
        if self.uses_file or not self.uses_postgres:
            parts.append(f"sqlite:{self.db_path}")
        if self.uses_postgres:
            parts.append(f"postgres:{self.postgres_where}")
        return " + ".join(parts)

    @property
    def backups(self) -> Path:
        """The backup folder: ``maintenance.backup_dir``, else ``backups`` next to the
        database."""
        return self.backup_dir or self.db_path.parent / "backups"

    @classmethod
    def from_sections(
        cls,
        settings: Mapping[str, Any],
        *,
        backend: str,
        canary: str | None = None,
        environment: str = "",
        needs: Needs = "queue",
    ) -> OpsConfig:
        """From the plain settings dict (``settings_as_dict``), the effective backend and
        the canary being rolled out.

        Raises ConfigurationError for a backend whose tasks the command cannot reach
        (``needs``: "queue", a SQLite file or a PostgreSQL schema; "file", a SQLite
        file)."""
        if needs == "file" and backend == "postgres":
            raise ConfigurationError(
                "the backup commands copy a SQLite queue file; task_execution.backend is "
                "postgres: back it up with the server's tools (pg_dump --schema=<schema> "
                "--format=custom, pg_restore); `taskyard backup create` prints the command"
            )
        if needs != "nothing" and backend not in QUEUE_BACKENDS:
            if backend == "in-memory":
                raise ConfigurationError(
                    "task_execution.backend is in-memory: its tasks live inside the process "
                    "that runs them, so there is nothing to inspect or maintain from outside "
                    "it. The operations commands work on the SQLite queue file: set "
                    "task_execution.backend = sqlite (or TASKYARD_TASK_EXECUTION__BACKEND="
                    "sqlite) and task_execution.queue_db_path, or postgres and "
                    "task_execution.postgres_dsn"
                )
            raise ConfigurationError(
                f"the operations commands work on the SQLite backends' queue file or a "
                f"PostgreSQL schema; task_execution.backend is {backend}"
            )
        try:
            task_execution = settings["task_execution"]
            operations = settings["operations"]
            maintenance = settings["maintenance"]
            return cls(
                db_path=Path(task_execution["queue_db_path"]),
                busy_timeout=float(task_execution["sqlite_busy_timeout"]),
                synchronous=str(task_execution["sqlite_synchronous"]),
                environment=environment,
                backend=backend,
                canary=canary,
                lease_seconds=float(task_execution["lease_seconds"]),
                shutdown_timeout=float(task_execution["shutdown_timeout"]),
                thresholds=HealthThresholds(
                    max_oldest_queued_age=float(operations["max_oldest_queued_age"]),
                    max_failure_rate=float(operations["max_failure_rate"]),
                    failure_rate_min_tasks=int(operations["failure_rate_min_tasks"]),
                    max_wal_bytes=int(operations["max_wal_bytes"]),
                    max_stale_workers=int(operations["max_stale_workers"]),
                    window=float(operations["window"]),
                    stale_worker_after=float(operations["stale_worker_after"]),
                ),
                retention_days=float(maintenance["retention_days"]),
                failed_retention_days=float(maintenance["failed_retention_days"]),
                worker_retention_days=float(maintenance["worker_retention_days"]),
                backup_dir=Path(maintenance["backup_dir"]) if maintenance["backup_dir"] else None,
                keep_backups=int(maintenance["keep_backups"]),
                postgres_where=_postgres_where(task_execution),
            )
        except KeyError as exc:
            raise ConfigurationError(f"the setting {exc.args[0]} is missing") from exc


def _postgres_where(task_execution: Mapping[str, Any]) -> str:
    dsn = str(task_execution.get("postgres_dsn") or "")
    if not dsn:
        return ""
    return f"{redact_dsn(dsn)} (schema {task_execution.get('postgres_schema') or 'taskyard'})"
