"""``taskyard health``: ok, degraded or down, with the reasons, as exit codes 0, 1, 2.

*down* means the queue cannot be used: the file is missing, is not a SQLite database,
is not a taskyard queue (or one of a newer taskyard), or cannot be read. *degraded*
means it works but needs an operator, each check against a threshold of the
``operations`` settings:

- a due task has waited longer than ``max_oldest_queued_age`` seconds (no worker, or
  too few, or stuck ones);
- over the window, more than ``max_failure_rate`` of the processed tasks failed (once
  at least ``failure_rate_min_tasks`` were processed, so one failure of one task does
  not page anyone);
- the WAL file is larger than ``max_wal_bytes`` (checkpoints cannot keep up, often
  because a reader holds a snapshot open for too long);
- more than ``max_stale_workers`` workers stopped sending heartbeats without stopping
  cleanly;
- running tasks hold leases that expired more than ``stale_worker_after`` seconds ago
  (no live worker recovers them);
- a ``sqlite-with-fallback`` process left a spill file of tasks not yet in the
  database.

A threshold of 0 turns its check off (for ``max_stale_workers``, use a large number).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from taskyard.framework.errors import TaskyardError
from taskyard.framework.operations import StoreOperations
from taskyard.ops.database import spill_files
from taskyard.ops.inspect import QueueStatus, status_of
from taskyard.ops.units import bytes_text, percent_text, seconds_text


class HealthState(IntEnum):
    """The states, valued as their exit codes."""

    OK = 0
    DEGRADED = 1
    DOWN = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class HealthThresholds:
    max_oldest_queued_age: float = 600.0
    max_failure_rate: float = 0.25
    failure_rate_min_tasks: int = 20
    max_wal_bytes: int = 64 * 1024 * 1024
    max_stale_workers: int = 0
    window: float = 3600.0
    stale_worker_after: float = 60.0


@dataclass(frozen=True)
class Check:
    name: str
    state: HealthState
    detail: str


@dataclass
class HealthReport:
    state: HealthState
    checks: list[Check] = field(default_factory=list)
    status: QueueStatus | None = None

    @property
    def reasons(self) -> list[str]:
        return [check.detail for check in self.checks if check.state is not HealthState.OK]

    @property
    def summary(self) -> str:
        if self.state is HealthState.OK:
            return "ok"
        return f"{self.state}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "exit_code": int(self.state),
            "reasons": self.reasons,
            "checks": [
                {"name": check.name, "state": str(check.state), "detail": check.detail}
                for check in self.checks
            ],
        }


def evaluate(
    status: QueueStatus, thresholds: HealthThresholds, spills: dict[Path, int] | None = None
) -> HealthReport:
    """The health a status shows, against the thresholds. Pure: no I/O."""
    checks: list[Check] = []

    def check(name: str, bad: bool, problem: str, fine: str) -> None:
        state = HealthState.DEGRADED if bad else HealthState.OK
        checks.append(Check(name, state, problem if bad else fine))

    age = status.oldest_queued_age
    limit = thresholds.max_oldest_queued_age
    check(
        "oldest_queued_age",
        bool(limit) and age is not None and age > limit,
        f"the oldest due task ({status.oldest_queued_id}) has waited {seconds_text(age)}, over "
        f"the {seconds_text(limit)} allowed (operations.max_oldest_queued_age): are workers "
        "running and keeping up?",
        "no due task waits"
        if age is None
        else f"the oldest due task has waited {seconds_text(age)}",
    )

    rate = status.window.failure_rate
    processed = status.window.processed
    enough = processed >= thresholds.failure_rate_min_tasks
    check(
        "failure_rate",
        0 < thresholds.max_failure_rate < 1
        and enough
        and rate is not None
        and rate > thresholds.max_failure_rate,
        f"{status.window.finished['failed']} of {processed} tasks processed in the last "
        f"{seconds_text(status.window.seconds)} failed ({percent_text(rate)}, over "
        f"{percent_text(thresholds.max_failure_rate)}, operations.max_failure_rate)",
        f"{percent_text(rate)} of {processed} tasks failed in the last "
        f"{seconds_text(status.window.seconds)}"
        + ("" if enough else f" (checked from {thresholds.failure_rate_min_tasks} tasks)"),
    )

    wal = status.database.wal_bytes
    check(
        "wal_size",
        bool(thresholds.max_wal_bytes) and wal > thresholds.max_wal_bytes,
        f"the WAL file is {bytes_text(wal)}, over {bytes_text(thresholds.max_wal_bytes)} "
        "(operations.max_wal_bytes): a long reader may block checkpoints; try "
        "`taskyard maintenance checkpoint --mode truncate`",
        f"the WAL file is {bytes_text(wal)}",
    )

    stale = status.stale_workers
    check(
        "stale_workers",
        len(stale) > thresholds.max_stale_workers,
        f"{len(stale)} worker(s) sent no heartbeat for over "
        f"{seconds_text(status.stale_after)}: "
        + ", ".join(f"{w.worker_id} ({seconds_text(w.seconds_since_heartbeat)} ago)" for w in stale)
        + " (crashed or hung; `taskyard maintenance prune` forgets old ones)",
        f"{len(status.active_workers)} active worker(s), {len(stale)} stale",
    )

    lease_age = status.oldest_expired_lease_age
    check(
        "expired_leases",
        lease_age is not None and lease_age > thresholds.stale_worker_after,
        f"{status.expired_leases} running task(s) hold leases that expired up to "
        f"{seconds_text(lease_age)} ago and no worker recovered them: start a worker or run "
        "`taskyard maintenance recover-leases`",
        f"{status.expired_leases} expired lease(s)",
    )

    if spills:
        held = sum(spills.values())
        names = ", ".join(str(path) for path in spills)
        checks.append(
            Check(
                "spill_files",
                HealthState.DEGRADED,
                f"{held} task(s) wait in spill file(s) of sqlite-with-fallback ({names}); "
                "the next start of that backend imports them",
            )
        )

    worst = max((c.state for c in checks), default=HealthState.OK)
    return HealthReport(state=worst, checks=checks, status=status)


async def check_health(
    store: StoreOperations,
    thresholds: HealthThresholds | None = None,
    *,
    spills_of: Path | None = None,
) -> HealthReport:
    """Open ``store`` (an unopened operations store) and judge it; with ``spills_of``, a
    queue file, also look for the spill files sqlite-with-fallback left for it. Never
    raises for a broken queue: that is the ``down`` state, with the error as the
    reason."""
    thresholds = thresholds or HealthThresholds()
    try:
        status = await status_of(
            store, window=thresholds.window, stale_after=thresholds.stale_worker_after
        )
    except TaskyardError as exc:
        return HealthReport(
            state=HealthState.DOWN, checks=[Check("database", HealthState.DOWN, str(exc))]
        )
    report = evaluate(status, thresholds, None if spills_of is None else spill_files(spills_of))
    report.checks.insert(
        0,
        Check(
            "database",
            HealthState.OK,
            f"{status.database.path} answers (schema version "
            f"{status.database.schema_version}, {status.total} tasks)",
        ),
    )
    return report
