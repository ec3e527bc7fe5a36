"""The workers of a queue: list them, and stop them through the queue, from any host and
on any OS (no signal: the worker's heartbeat reads the request, the worker drains as on
SIGTERM and removes its record as it exits)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from taskyard.framework.errors import OperationRefused
from taskyard.framework.operations import StoreOperations, WorkerRecord

__all__ = ["StopReport", "describe_workers", "request_stop", "stop_workers", "wait_for_goodbye"]


def describe_workers(
    workers: list[WorkerRecord], *, now: float, stale_after: float
) -> list[dict[str, Any]]:
    """What ``taskyard workers list`` shows: one plain dict per worker."""
    return [
        {
            "worker_id": worker.worker_id,
            "role": worker.role,
            "hostname": worker.hostname,
            "pid": worker.pid,
            "state": "stale" if now - worker.last_heartbeat > stale_after else "alive",
            "seconds_since_heartbeat": round(now - worker.last_heartbeat, 1),
            "running": worker.info.get("running"),
            "concurrency": worker.info.get("concurrency"),
            "stop_requested": worker.stop_requested_at is not None,
        }
        for worker in workers
    ]


@dataclass
class StopReport:
    asked: list[str] = field(default_factory=list)
    """Dedicated workers asked to stop."""
    stopped: list[str] = field(default_factory=list)
    """Of those, the ones that said goodbye (their record is gone) within the wait."""
    still_running: list[str] = field(default_factory=list)
    """Asked, and still there when the wait ended."""
    applications: list[str] = field(default_factory=list)
    """Applications that run tasks themselves: left alone, for their own manager."""
    stale: list[str] = field(default_factory=list)
    """Records whose heartbeat is older than the staleness limit: workers that died."""

    @property
    def drained(self) -> bool:
        return not self.still_running


async def request_stop(
    store: StoreOperations,
    *,
    worker_ids: Collection[str] = (),
    everyone: bool = False,
    host: str | None = None,
    stale_after: float,
    include_applications: bool = False,
) -> StopReport:
    """Ask the chosen workers (``worker_ids``, every one, or those of ``host``) to stop.
    Applications are left alone unless ``include_applications`` (they see the request
    in ``manager.stop_requested`` and decide). Raises OperationRefused when nothing is
    chosen or an id is unknown."""
    if not (worker_ids or everyone or host):
        raise OperationRefused("name the workers to stop: IDs, --all or --host HOST")
    workers = await store.list_workers()
    known = {worker.worker_id for worker in workers}
    unknown = sorted(set(worker_ids) - known)
    if unknown:
        raise OperationRefused(
            f"no worker has the id {', '.join(unknown)}; `taskyard workers list` shows them"
        )
    now = time.time()
    report = StopReport()
    chosen: list[str] = []
    for worker in workers:
        if not (
            everyone
            or worker.worker_id in worker_ids
            or (host is not None and worker.hostname == host)
        ):
            continue
        if now - worker.last_heartbeat > stale_after:
            report.stale.append(worker.worker_id)
        elif worker.role == "worker" or include_applications:
            chosen.append(worker.worker_id)
        else:
            report.applications.append(worker.worker_id)
    report.asked = await store.request_worker_stop(chosen) if chosen else []
    return report


async def wait_for_goodbye(
    store: StoreOperations, worker_ids: Collection[str], *, timeout: float, poll: float = 0.1
) -> tuple[list[str], list[str]]:
    """Wait until each of ``worker_ids`` has removed its record, or ``timeout`` passes.
    Returns ``(gone, still_there)``, both sorted."""
    waiting = set(worker_ids)
    deadline = time.monotonic() + timeout
    while waiting:
        present = {worker.worker_id for worker in await store.list_workers()}
        waiting &= present
        if not waiting or time.monotonic() >= deadline:
            break
        await asyncio.sleep(poll)  # polling the store with a deadline
    return sorted(set(worker_ids) - waiting), sorted(waiting)


async def stop_workers(
    store: StoreOperations,
    *,
    worker_ids: Collection[str] = (),
    everyone: bool = False,
    host: str | None = None,
    stale_after: float,
    wait: float,
    include_applications: bool = False,
    poll: float = 0.1,
) -> StopReport:
    """:func:`request_stop`, then wait up to ``wait`` seconds for the workers asked to
    say goodbye (0: do not wait)."""
    report = await request_stop(
        store,
        worker_ids=worker_ids,
        everyone=everyone,
        host=host,
        stale_after=stale_after,
        include_applications=include_applications,
    )
    if wait > 0 and report.asked:
        report.stopped, report.still_running = await wait_for_goodbye(
            store, report.asked, timeout=wait, poll=poll
        )
    else:
        report.still_running = list(report.asked)
    return report
