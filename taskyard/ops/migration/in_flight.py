"""The in-flight migration: moving a running manager's tasks to another store from inside
the application, and turning a RunRegistry's runs into tasks."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from taskyard.framework.engine import TaskEngine
from taskyard.framework.errors import MigrationError
from taskyard.framework.models import (
    ACTIVE_STATUSES,
    TaskRecord,
    utcnow,
)
from taskyard.framework.runs import Run, RunRegistry, RunStatus
from taskyard.framework.store import Capability, TaskStore
from taskyard.ops.migration.export_format import (
    ALL,
    UNFINISHED,
    ImportReport,
    _by_status,
    import_records,
    write_export,
)


def _payload_of(run: Run) -> dict[str, Any]:
    return {key: value for key, value in run.parameters.items() if not key.startswith("_")}


async def import_runs(
    runs: RunRegistry | Iterable[Run],
    target: TaskStore | TaskEngine,
    task_types: Mapping[str, str] | Callable[[Run], str | None],
    *,
    priority: int = 5,
    max_attempts: int = 3,
) -> ImportReport:
    """Turn queued and running runs into queued tasks of ``target``: the way in for work
    the application only knows as runs (an old manager's RunRegistry, a history file).

    Each run becomes the task whose id is its ``run_id`` (so the orchestrator's runs
    keep following it), of the type ``task_types`` gives for it (a mapping of module id
    to task type, or a function of the run; None skips the run), with the run's
    parameters (keys starting with ``_`` left out) as payload. Runs already imported are
    left alone; the report's ``read`` counts the runs that had a task type.
    """
    pick = task_types.get if isinstance(task_types, Mapping) else None
    active = runs.get_active_runs() if isinstance(runs, RunRegistry) else list(runs)
    now = utcnow()
    records: list[TaskRecord] = []
    for run in active:
        if run.status not in (
            RunStatus.PENDING,
            RunStatus.WAITING,
            RunStatus.QUEUED,
            RunStatus.RUNNING,
        ):
            continue
        task_type = pick(run.module_id) if pick is not None else task_types(run)  # type: ignore[operator]
        if not task_type:
            continue
        records.append(
            TaskRecord(
                id=run.run_id,
                type=task_type,
                payload=_payload_of(run),
                priority=priority,
                max_attempts=max_attempts,
                created_at=run.created_at,
                updated_at=now,
                run_after=now,
            )
        )
    return await import_records(target, records)


# -- the in-flight migration ---------------------------------------------------------------


@dataclass
class MigrationReport:
    exported: int
    imported: int
    already_present: int
    conflicts: list[str]
    by_status: dict[str, int]
    export_path: str | None
    resumed: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def migrate_in_flight(
    manager: TaskEngine,
    target: TaskStore,
    *,
    deadline: float | None = None,
    include_finished: bool = True,
    export_path: str | os.PathLike[str] | None = None,
    resume: bool = True,
) -> MigrationReport:
    """Move a running manager's tasks to ``target`` from inside the application.

    Pauses intake (schedule calls wait), lets running handlers finish within
    ``deadline`` seconds (the shutdown timeout by default; the rest go back to the queue,
    that attempt not counted), reads every task (``include_finished=False``: only the
    unfinished ones), writes them to ``export_path`` when given (a record of the move),
    and imports them into ``target`` in one transaction.

    With ``resume`` the manager then runs on ``target`` and the held schedule calls go
    there: the application goes on without a restart, and restarts later with settings
    that select the new backend. Without it the manager stays stopped (a hand-over at
    shutdown) and held calls fail with ManagerStateError.

    If the import fails, the manager goes on with its old store, nothing lost, and
    MigrationError is raised.
    """
    started = time.perf_counter()
    statuses = None if include_finished else ACTIVE_STATUSES
    old_store = manager.store
    records = await manager.drain_and_export(deadline, statuses=statuses)
    written: str | None = None
    try:
        if export_path is not None:
            written = write_export(
                export_path,
                records,
                scope=ALL if include_finished else UNFINISHED,
                source=repr(old_store),
            ).path
        await target.open()
        try:
            report = await import_records(target, records)
        finally:
            if not resume:
                await target.close()
    except Exception as exc:
        manager.switch_store(old_store)
        await manager.start()
        manager.resume_intake()
        raise MigrationError(
            f"moving {len(records)} task(s) to {target!r} failed ({exc}); the manager goes on "
            f"with {old_store!r}, nothing was lost"
        ) from exc
    if resume:
        manager.switch_store(target)
        await manager.start()
    manager.resume_intake()
    return MigrationReport(
        exported=len(records),
        imported=report.imported,
        already_present=report.already_present,
        conflicts=report.conflicts,
        by_status=_by_status(records),
        export_path=written,
        resumed=resume,
        seconds=time.perf_counter() - started,
    )


async def stop_and_hand_over(
    manager: TaskEngine,
    target: TaskStore | None,
    *,
    deadline: float | None = None,
    export_path: str | os.PathLike[str] | None = None,
) -> MigrationReport | None:
    """Stop the manager at the application's shutdown, handing its tasks over to
    ``target`` when that is the move being made: from a store that does not survive the
    process (in-memory) to one that does. Otherwise (a durable store keeps its tasks by
    itself; ``target`` None or not durable: nowhere to move to) it just stops. Returns
    the hand-over's report, or None.

    Call it with ``Container().handover_store()``, built from the settings as they are
    *now*: an application switched from in-memory to SQLite takes its queue along when
    it restarts, and one rolled back to in-memory parks its tasks in the queue database
    at each stop, where they run once SQLite is back."""
    leaving = Capability.DURABLE not in manager.store.capabilities
    if not leaving or target is None or Capability.DURABLE not in target.capabilities:
        await manager.stop(deadline)
        return None
    return await migrate_in_flight(
        manager, target, deadline=deadline, export_path=export_path, resume=False
    )
