"""Runs: the application's record of a piece of submitted work, and the registry of them."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from loguru import logger

from taskyard._platform import pid_alive
from taskyard.framework.errors import ConfigurationError
from taskyard.framework.files import atomic_write
from taskyard.framework.models import TaskStatus, iso, new_task_id, utcnow


class RunStatus(StrEnum):
    PENDING = "pending"
    WAITING = "waiting"  # its task waits for its dependencies
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)

    @classmethod
    def from_task_status(cls, status: TaskStatus) -> RunStatus:
        return cls(str(status))


INTERRUPTED = "interrupted: the process running it stopped before it finished"


@dataclass
class Run:
    """One run of a module (a unit of the application's work)."""

    module_id: str
    module_name: str = ""
    run_id: str = field(default_factory=new_task_id)
    status: RunStatus = RunStatus.PENDING
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_seconds: float | None = None
    progress_percent: float = 0.0
    items_processed: int = 0
    items_total: int | None = None
    exit_code: int | None = None
    error_message: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def mark_running(self, at: datetime | None = None) -> None:
        self.status = RunStatus.RUNNING
        self.started_at = self.started_at or at or utcnow()

    def mark_finished(
        self,
        status: RunStatus,
        *,
        at: datetime | None = None,
        error_message: str | None = None,
    ) -> None:
        self.status = status
        self.completed_at = at or utcnow()
        if self.started_at is not None:
            self.duration_seconds = (self.completed_at - self.started_at).total_seconds()
        if status is RunStatus.COMPLETED:
            self.exit_code = 0
            self.progress_percent = 100.0
        elif status is RunStatus.FAILED:
            self.exit_code = 1
        self.error_message = error_message

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        for key in ("created_at", "started_at", "completed_at"):
            data[key] = iso(getattr(self, key))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        values = dict(data)
        values["status"] = RunStatus(values["status"])
        for key in ("created_at", "started_at", "completed_at"):
            if values.get(key) is not None:
                values[key] = datetime.fromisoformat(values[key])
        return cls(**values)


class RunPersistence(Protocol):
    """Where a RunRegistry keeps its runs beyond the process: a JSON file, a database."""

    def load(self) -> list[Run]:
        """All runs kept."""
        ...

    def save(self, runs: Iterable[Run], changed: Iterable[Run]) -> None:
        """Persist; ``runs`` is everything, ``changed`` what changed since the last save."""
        ...

    def remove(self, runs: Iterable[Run], removed: Iterable[str]) -> None:
        """Forget the runs ``removed`` (ids); ``runs`` is everything that remains."""
        ...


class JsonFileRunPersistence:
    """Runs in one JSON file, rewritten atomically (temp file + rename), owner-only."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> list[Run]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [Run.from_dict(item) for item in data["runs"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"the run history file {self.path} is not a taskyard run history ({exc}); "
                "move it away or point runs.history_file elsewhere"
            ) from exc

    def remove(self, runs: Iterable[Run], removed: Iterable[str]) -> None:
        self.save(runs, [])

    def save(self, runs: Iterable[Run], changed: Iterable[Run]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"version": 1, "runs": [run.to_dict() for run in runs]})
        atomic_write(self.path, payload)


def owner_tag() -> str:
    """Who runs an ad-hoc run: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(run: Run) -> bool:
    """Whether the process that ran this ad-hoc run is still alive (same host only)."""
    host, _, pid = str(run.parameters.get("_owner", "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    return pid_alive(int(pid))


class RunRegistry:
    """The runs of this application, in memory and optionally persisted.

    An ad-hoc run (``start_task``) that was ``running`` when the process that owned it
    died is marked failed ("interrupted") when the registry loads, never left running
    forever. A submitted task's run is not: its task is durable on the SQLite backends
    and brings the run up to date through its events.
    """

    def __init__(
        self,
        persistence: RunPersistence | None = None,
        *,
        max_history: int = 1000,
        history_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if persistence is None and history_file:
            persistence = JsonFileRunPersistence(history_file)
        self._persistence = persistence
        self._max_history = max_history
        self._runs: dict[str, Run] = {}
        self._lock = threading.RLock()
        if persistence is not None:
            self._load(persistence)

    def _load(self, persistence: RunPersistence) -> None:
        interrupted: list[Run] = []
        for run in persistence.load():
            adhoc = run.parameters.get("_adhoc")
            if run.status is RunStatus.RUNNING and adhoc and not _owner_alive(run):
                run.mark_finished(RunStatus.FAILED, error_message=INTERRUPTED)
                interrupted.append(run)
            self._runs[run.run_id] = run
        if interrupted:
            logger.warning("taskyard: {} interrupted run(s) marked failed", len(interrupted))
            persistence.save(self._runs.values(), interrupted)

    def _persist(self, changed: Run) -> None:
        if self._persistence is not None:
            self._persistence.save(list(self._runs.values()), [changed])

    def add_run(self, run: Run) -> Run:
        with self._lock:
            self._runs[run.run_id] = run
            self._trim()
            self._persist(run)
        return run

    def update_run(self, run_id: str, **changes: Any) -> Run | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            for key, value in changes.items():
                if not hasattr(run, key):
                    raise AttributeError(f"Run has no field {key!r}")
                setattr(run, key, value)
            self._persist(run)
            return run

    def save_run(self, run: Run) -> None:
        """Persist a run changed in place (by the orchestrator or the manager)."""
        with self._lock:
            self._runs[run.run_id] = run
            self._persist(run)

    def get_run(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def get_active_runs(self) -> list[Run]:
        return [run for run in self._runs.values() if not run.status.is_terminal]

    def get_runs_by_module(self, module_id: str) -> list[Run]:
        return [run for run in self._runs.values() if run.module_id == module_id]

    def get_runs_by_status(self, status: RunStatus | str) -> list[Run]:
        wanted = RunStatus(status)
        return [run for run in self._runs.values() if run.status is wanted]

    def get_recent_runs(self, limit: int = 50) -> list[Run]:
        runs = sorted(self._runs.values(), key=lambda run: run.created_at, reverse=True)
        return runs[:limit]

    def cleanup_old_runs(self, max_age: timedelta | float = timedelta(days=7)) -> int:
        """Forget finished runs older than ``max_age``; returns how many."""
        age = max_age if isinstance(max_age, timedelta) else timedelta(seconds=max_age)
        cutoff = utcnow() - age
        with self._lock:
            old = [
                run_id
                for run_id, run in self._runs.items()
                if run.status.is_terminal and (run.completed_at or run.created_at) < cutoff
            ]
            for run_id in old:
                del self._runs[run_id]
            if old and self._persistence is not None:
                self._persistence.remove(list(self._runs.values()), old)
        return len(old)

    def __len__(self) -> int:
        return len(self._runs)

    def _trim(self) -> None:
        excess = len(self._runs) - self._max_history
        if excess <= 0:
            return
        finished = sorted(
            (run for run in self._runs.values() if run.status.is_terminal),
            key=lambda run: run.created_at,
        )
        removed = [run.run_id for run in finished[:excess]]
        for run_id in removed:
            del self._runs[run_id]
        if removed and self._persistence is not None:
            self._persistence.remove(list(self._runs.values()), removed)
