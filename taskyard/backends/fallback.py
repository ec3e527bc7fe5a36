"""``sqlite-with-fallback``: SQLite, with an in-memory safety net.

Normally exactly the ``sqlite`` backend. When SQLite cannot take a write (locked past
the busy timeout, an I/O error, a read-only file or folder, a full database or disk,
a file that cannot be opened at start-up), the store *degrades*: new tasks are kept
in memory under the ids they would have had and run as usual, and a recovery loop
probes SQLite with backoff. Once SQLite takes writes again, what memory holds moves
into SQLite (ids, priorities, run_after, attempts, payloads and final statuses
intact), and memory lets each task go only after the insert committed. Stopping
while degraded writes what memory holds to a spill file next to the database, which
the next start imports once.

Guarantees and limits (also in the README): nothing accepted is lost while this
process lives or stops cleanly; a *crash* of the process while degraded loses the
tasks held only in memory (they were never durable), and an outcome of a task taken
from SQLite that could not be written before the crash is lost too, so that task
runs again after its lease expires (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from loguru import logger

from taskyard._platform import remove, state_dir
from taskyard.backends.memory import InMemoryStore
from taskyard.backends.sqlite.store import SqliteStore
from taskyard.framework.engine import EngineConfig, TaskEngine
from taskyard.framework.errors import ConfigurationError, StoreError, StoreUnavailable
from taskyard.framework.events import EventBus
from taskyard.framework.files import atomic_write
from taskyard.framework.models import (
    Outcome,
    TaskRecord,
    TaskStatus,
    from_epoch,
    iso,
    record_from_json,
    record_to_json,
    to_epoch,
)
from taskyard.framework.operations import ComposedOperations, StoreOperations
from taskyard.framework.runs import RunRegistry
from taskyard.framework.store import Capability, TaskStore

SPILL_FORMAT = "taskyard-spill"
SPILL_VERSION = 1


@dataclass
class FallbackStats:
    fallbacks: int = 0
    """Tasks accepted into memory because SQLite could not take them."""
    degradations: int = 0
    """Switches from ok to degraded."""
    moved: int = 0
    """Tasks moved from memory into SQLite."""
    spilled: int = 0
    imported_from_spill: int = 0


class FallbackStore(ComposedOperations):
    """A :class:`SqliteStore` with an :class:`InMemoryStore` behind it."""

    capabilities = frozenset(
        {
            Capability.DURABLE,
            Capability.MULTI_PROCESS,
            Capability.WORKFLOWS,
            Capability.CONCURRENCY_KEYS,
        }
    )
    """Workflows and concurrency keys live in SQLite only: a task with ``depends_on`` or a
    ``concurrency_key`` is never accepted into memory (while degraded, scheduling one
    raises StoreUnavailable), so every edge and every keyed claim stays in one
    transaction of one store."""

    def __init__(
        self,
        primary: SqliteStore,
        *,
        probe_initial: float = 0.05,
        probe_max: float = 2.0,
    ) -> None:
        self.primary = primary
        self.memory = InMemoryStore()
        self.stats = FallbackStats()
        self.reason: str | None = None
        self._probe_initial = probe_initial
        self._probe_max = probe_max
        self._recovery: asyncio.Task[None] | None = None
        self._moving: dict[str, TaskRecord] = {}
        self._deferred: list[Outcome] = []
        self._refused: dict[str, str] = {}  # task id -> why SQLite refuses it
        self._open = False
        self._recovered = False
        self.spill_dirs: list[Path] = [primary.path.parent, _state_dir()]

    def __repr__(self) -> str:
        state = "ok" if self.reason is None else f"degraded: {self.reason}"
        return f"<FallbackStore {self.primary.path} {state}>"

    @property
    def degraded(self) -> bool:
        return self.reason is not None

    def spill_candidates(self) -> list[Path]:
        """Where a spill file may be: next to the database, else in the state folder."""
        name = self.primary.path.name + ".spill.jsonl"
        here = self.primary.path.parent.absolute()
        tag = hashlib.sha256(str(self.primary.path.absolute()).encode()).hexdigest()[:12]
        return [
            folder / (name if folder.absolute() == here else f"{tag}-{name}")
            for folder in self.spill_dirs
        ]

    @property
    def spill_path(self) -> Path:
        """The spill file that exists, or the one a stop would write first."""
        candidates = self.spill_candidates()
        return next((path for path in candidates if path.exists()), candidates[0])

    # -- state -----------------------------------------------------------------------------

    def _degrade(self, error: BaseException) -> None:
        if self.reason is None:
            self.reason = str(error)
            self.stats.degradations += 1
            logger.warning(
                "taskyard: SQLite cannot take writes ({}); keeping new tasks in memory "
                "until it recovers",
                error,
            )
        if self._open and (self._recovery is None or self._recovery.done()):
            self._recovery = asyncio.create_task(self._recover(), name="taskyard-fallback-probe")

    @property
    def held_in_memory(self) -> int:
        """Unfinished tasks that only memory holds."""
        return sum(1 for record in self.memory.tasks.values() if not record.status.is_terminal)

    async def health_details(self) -> dict[str, object]:
        return {"held_in_memory": self.held_in_memory}

    def operation_parts(self) -> Sequence[StoreOperations]:
        return (self.primary, self.memory) if self.primary_open else (self.memory,)

    async def health(self) -> tuple[str, str]:
        if not self._open:
            return "down", "the store is not open"
        if self.degraded:
            return "degraded", f"{self.reason}; {self.held_in_memory} task(s) held in memory"
        return await self.primary.health()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        self._open = True
        try:
            await self.primary.open()
        except (StoreUnavailable, OSError) as exc:
            self._degrade(exc)
        except BaseException:
            self._open = False
            raise
        try:
            spilled = self._read_spill()
            if spilled:
                await self.memory.import_records(spilled)
                self.stats.imported_from_spill += len(spilled)
                logger.info("taskyard: {} task(s) read back from {}", len(spilled), self.spill_path)
                if not self.degraded:
                    try:
                        await self._move_to_primary()
                    except StoreError as exc:  # kept in memory; the recovery loop retries
                        self._degrade(exc)
                if not self.memory.tasks:
                    self._remove_spills()
                else:
                    self._degrade(StoreUnavailable("spilled tasks are waiting for SQLite"))
        except BaseException:
            # never leave SQLite's thread running behind a failed open: the process
            # could not exit
            self._open = False
            await self.primary.close()
            raise

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        with contextlib.suppress(StoreError):
            if not self.degraded or await self._probe():
                await self._apply_deferred()
                await self._move_to_primary(include_running=True)
        if self.memory.tasks or self._deferred:
            self._write_spill()
        else:
            self._remove_spills()
        await self.primary.close()

    # -- recovery --------------------------------------------------------------------------

    async def _probe(self) -> bool:
        try:
            await self.primary.open()
            await self.primary.execute_write(lambda conn: None)
        except (StoreError, OSError):
            return False
        return True

    async def _recover(self) -> None:
        delay = self._probe_initial
        while self._open and self.degraded:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._probe_max)
            if not await self._probe():
                continue
            try:
                await self._apply_deferred()
                await self._move_to_primary()
            except StoreError as exc:
                logger.info("taskyard: SQLite not writable yet ({})", exc)
                self.reason = str(exc)  # health says what fails now, not what failed first
                continue
            if (
                not self._deferred
                and self.memory.tasks
                and set(self.memory.tasks) <= set(self._refused)
            ):
                logger.error(
                    "taskyard: SQLite takes writes again, but refuses {} task(s) held in "
                    "memory; they stay there (and in the spill file at stop)",
                    len(self._refused),
                )
                return
            if not self._deferred and not self.memory.tasks:
                logger.warning("taskyard: SQLite takes writes again; back to normal")
                self.reason = None
                self._recovered = True  # tells the engine to look at SQLite again
                self._remove_spills()
                return
            delay = self._probe_initial  # something still runs in memory: come back soon

    async def _move_to_primary(self, *, include_running: bool = False) -> None:
        """Move memory's tasks into SQLite: queued and finished ones (running ones once
        they finish). Memory lets them go only after the insert committed."""
        ids = [
            task_id
            for task_id, record in self.memory.tasks.items()
            if (include_running or record.status is not TaskStatus.RUNNING)
            and task_id not in self._refused
        ]
        if not ids:
            return
        records = detached = self.memory.detach(ids)
        self._moving.update((record.id, record) for record in records)
        stopped: StoreUnavailable | None = None
        try:
            await self.primary.import_records(records)
        except StoreUnavailable:
            await self.memory.import_records(records)  # keep them; try again later
            raise
        except StoreError as exc:
            # One record SQLite refuses must not hold back the others: move them one by
            # one, and keep only the refused ones in memory.
            records, stopped = await self._move_one_by_one(records, exc)
        except BaseException:
            await self.memory.import_records(records)
            raise
        finally:
            for record in detached:
                self._moving.pop(record.id, None)
        self.stats.moved += len(records)
        cancelled = [r for r in records if r.status is TaskStatus.CANCELLED]
        for record in cancelled:  # cancelled while the insert was in flight
            await self.primary.cancel(record.id, now=record.updated_at)
        logger.info("taskyard: moved {} task(s) from memory into SQLite", len(records))
        if stopped is not None:
            raise stopped

    async def _move_one_by_one(
        self, records: list[TaskRecord], first_error: StoreError
    ) -> tuple[list[TaskRecord], StoreUnavailable | None]:
        """Import each record alone. Returns those stored, and the StoreUnavailable that
        stopped the walk (if SQLite stopped taking writes meanwhile); everything not
        stored goes back to memory, and a record SQLite refuses for itself is logged,
        named in ``reason`` and not tried again by this process."""
        moved: list[TaskRecord] = []
        back: list[TaskRecord] = []
        stopped: StoreUnavailable | None = None
        for record in records:
            if stopped is not None:
                back.append(record)
                continue
            try:
                await self.primary.import_records([record])
            except StoreUnavailable as error:
                stopped = error
                back.append(record)
            except StoreError as error:
                back.append(record)
                self._refused[record.id] = str(error)
                logger.error("taskyard task {}: SQLite refuses it ({})", record.id, error)
            else:
                moved.append(record)
        if back:
            await self.memory.import_records(back)
        if self._refused:
            task_id, why = next(iter(self._refused.items()))
            self.reason = (
                f"SQLite refuses {len(self._refused)} task(s) held in memory, for instance "
                f"{task_id}: {why} (first error: {first_error})"
            )
        return moved, stopped

    async def _apply_deferred(self) -> None:
        if not self._deferred:
            return
        outcomes, self._deferred = self._deferred, []
        try:
            applied = await self.primary.finish(outcomes)
        except BaseException:
            self._deferred[:0] = outcomes
            raise
        lost = sum(1 for ok in applied if not ok)
        if lost:
            logger.warning("taskyard: {} deferred outcome(s) found their lease gone", lost)

    # -- spill file ------------------------------------------------------------------------

    def _remove_spills(self) -> None:
        for path in self.spill_candidates():
            try:
                remove(path)  # retried while another process (an antivirus) holds it
            except OSError as exc:
                logger.warning(
                    "taskyard: cannot delete the imported spill file {} ({}); delete it, "
                    "or its tasks are offered again (known ids are skipped)",
                    path,
                    exc,
                )

    def _write_spill(self) -> None:
        records = list(self.memory.tasks.values())
        header = {"format": SPILL_FORMAT, "version": SPILL_VERSION, "tasks": len(records)}
        lines = [json.dumps(header)]
        lines += [json.dumps(record_to_json(record)) for record in records]
        lines += [json.dumps({"deferred_outcome": outcome_to_json(o)}) for o in self._deferred]
        text = "\n".join(lines) + "\n"
        errors: list[str] = []
        for path in self.spill_candidates():
            try:
                _write_private(path, text)
            except OSError as exc:
                errors.append(f"{path}: {exc}")
                continue
            self.stats.spilled += len(records)
            logger.warning(
                "taskyard: stopped while degraded; {} task(s) written to {}", len(records), path
            )
            return
        raise StoreUnavailable(
            f"stopped while degraded and could not write the {len(records)} task(s) held in "
            f"memory anywhere ({'; '.join(errors)}); they are lost"
        )

    def _read_spill(self) -> list[TaskRecord]:
        records: list[TaskRecord] = []
        for path in self.spill_candidates():
            if path.exists():
                records += self._read_spill_file(path)
        return records

    def _read_spill_file(self, path: Path) -> list[TaskRecord]:
        records: list[TaskRecord] = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    data = json.loads(line)
                    if number == 1:
                        if data.get("format") != SPILL_FORMAT or data.get("version") != 1:
                            raise ValueError(f"not a taskyard spill file version 1: {data}")
                    elif "deferred_outcome" in data:
                        self._deferred.append(outcome_from_json(data["deferred_outcome"]))
                    else:
                        records.append(record_from_json(data))
                except (ValueError, KeyError, TypeError) as exc:
                    raise ConfigurationError(
                        f"{path}, line {number}: {exc}; move the file away to start without it"
                    ) from exc
        return records

    # -- TaskStore -------------------------------------------------------------------------

    def _in_memory(self, task_id: str) -> bool:
        return task_id in self.memory.tasks

    async def add(self, records: Sequence[TaskRecord]) -> list[str]:
        sqlite_only = any(r.depends_on or r.concurrency_key for r in records)
        if not self.degraded:
            try:
                return await self.primary.add(records)
            except StoreUnavailable as exc:
                self._degrade(exc)
                if sqlite_only:
                    raise
        if sqlite_only:
            raise StoreUnavailable(
                f"{self.primary.path} cannot be written now ({self.reason}), and tasks with "
                "depends_on or a concurrency_key are kept in SQLite only; retry once it "
                "is back (taskyard health says when)"
            )
        self.stats.fallbacks += len(records)
        return await self.memory.add(records)

    async def import_records(self, records: Sequence[TaskRecord]) -> list[bool]:
        if not self.degraded:
            try:
                return await self.primary.import_records(records)
            except StoreUnavailable as exc:
                self._degrade(exc)
        self.stats.fallbacks += len(records)
        return await self.memory.import_records(records)

    async def claim(
        self,
        *,
        limit: int,
        now: datetime,
        worker_id: str,
        lease_seconds: float,
        types: Collection[str] | None = None,
        limits: Mapping[str, int] | None = None,
    ) -> list[TaskRecord]:
        claimed = await self.memory.claim(
            limit=limit,
            now=now,
            worker_id=worker_id,
            lease_seconds=lease_seconds,
            types=types,
            limits=limits,
        )
        if len(claimed) < limit and not self.degraded:
            try:
                claimed += await self.primary.claim(
                    limit=limit - len(claimed),
                    now=now,
                    worker_id=worker_id,
                    lease_seconds=lease_seconds,
                    types=types,
                    limits=limits,
                )
            except StoreUnavailable as exc:
                self._degrade(exc)
        self.held_back = self.memory.held_back or self.primary.held_back
        return claimed

    async def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        local = [self._in_memory(outcome.task_id) for outcome in outcomes]
        in_memory = await self.memory.finish([o for o in outcomes if self._in_memory(o.task_id)])
        elsewhere = [o for o, m in zip(outcomes, local, strict=True) if not m]
        in_primary: list[bool] = []
        if elsewhere:
            if not self.degraded:
                try:
                    in_primary = await self.primary.finish(elsewhere)
                except StoreUnavailable as exc:
                    self._degrade(exc)
            if self.degraded and not in_primary:
                # SQLite is down: the outcome waits in memory and is written on recovery
                # (or spilled at stop); the task still holds its lease in SQLite.
                self._deferred.extend(elsewhere)
                in_primary = [True] * len(elsewhere)
        memory_results, primary_results = iter(in_memory), iter(in_primary)
        self._count_releases()
        return [next(memory_results) if m else next(primary_results) for m in local]

    async def renew_leases(
        self, leases: Sequence[tuple[str, str]], *, until: datetime
    ) -> list[str]:
        local = [lease for lease in leases if self._in_memory(lease[0])]
        lost = await self.memory.renew_leases(local, until=until)
        elsewhere = [lease for lease in leases if not self._in_memory(lease[0])]
        if elsewhere and not self.degraded:
            try:
                lost += await self.primary.renew_leases(elsewhere, until=until)
            except StoreUnavailable as exc:
                self._degrade(exc)
        return lost

    async def cancel(self, task_id: str, *, now: datetime) -> TaskStatus | None:
        moving = self._moving.get(task_id)
        if moving is not None:
            before = moving.status
            if not before.is_terminal:
                moving.status = TaskStatus.CANCELLED
                moving.updated_at = moving.finished_at = now
            return before
        if self._in_memory(task_id):
            return await self.memory.cancel(task_id, now=now)
        cancelled = await self.primary.cancel(task_id, now=now)
        self._count_releases()
        return cancelled

    def _count_releases(self) -> None:
        self.releases = self.primary.releases + self.memory.releases

    async def dependencies(self, task_id: str) -> list[str]:
        return [] if self._in_memory(task_id) else await self.primary.dependencies(task_id)

    async def dependents(self, task_id: str) -> list[str]:
        return [] if self._in_memory(task_id) else await self.primary.dependents(task_id)

    async def dependency_results(self, task_id: str) -> dict[str, Any]:
        if self._in_memory(task_id):
            return {}
        return await self.primary.dependency_results(task_id)

    async def workflow_tasks(self, workflow_id: str) -> list[TaskRecord]:
        return await self.primary.workflow_tasks(workflow_id)

    async def workflow_ids(self, *, limit: int = 50) -> list[str]:
        return await self.primary.workflow_ids(limit=limit)

    async def get(self, task_id: str) -> TaskRecord | None:
        record = self.memory.tasks.get(task_id) or self._moving.get(task_id)
        if record is not None:
            return await self.memory.get(task_id) or record.copy()
        if self.degraded and not self.primary_open:
            return None
        return await self.primary.get(task_id)

    @property
    def primary_open(self) -> bool:
        return self.primary.is_open

    async def recover_expired(self, *, now: datetime) -> list[TaskRecord]:
        recovered = await self.memory.recover_expired(now=now)
        if not self.degraded:
            try:
                recovered += await self.primary.recover_expired(now=now)
            except StoreUnavailable as exc:
                self._degrade(exc)
        self._count_releases()
        return recovered

    async def next_due(self, types: Collection[str] | None = None) -> datetime | None:
        due = [await self.memory.next_due(types)]
        if not self.degraded:
            with contextlib.suppress(StoreError):
                due.append(await self.primary.next_due(types))
        return min((d for d in due if d is not None), default=None)

    async def changed_elsewhere(self) -> bool:
        if self.degraded:
            return False
        if self._recovered:
            self._recovered = False
            return True
        try:
            return await self.primary.changed_elsewhere()
        except StoreError:
            return False

    async def count_by_status(self) -> dict[TaskStatus, int]:
        counts = await self.memory.count_by_status()
        for record in self._moving.values():
            counts[record.status] += 1
        if self.primary_open:
            with contextlib.suppress(StoreError):
                for status, count in (await self.primary.count_by_status()).items():
                    counts[status] += count
        return counts

    async def list_tasks(
        self,
        *,
        statuses: Sequence[TaskStatus] | None = None,
        task_type: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[TaskRecord]:
        found: list[TaskRecord] = []
        if self.primary_open:
            with contextlib.suppress(StoreError):
                found = await self.primary.list_tasks(
                    statuses=statuses, task_type=task_type, limit=limit + offset, offset=0
                )
        found += await self.memory.list_tasks(
            statuses=statuses, task_type=task_type, limit=limit + offset, offset=0
        )
        found.sort(key=lambda record: record.created_at)
        return found[offset : offset + limit]

    async def record_worker(self, worker_id: str, info: dict[str, object]) -> bool:
        if not self.degraded:
            with contextlib.suppress(StoreUnavailable):
                return await self.primary.record_worker(worker_id, info)
        return False

    async def forget_worker(self, worker_id: str) -> None:
        if not self.degraded:
            with contextlib.suppress(StoreUnavailable):
                await self.primary.forget_worker(worker_id)

    # -- periodic schedules: kept in SQLite only (firing waits while it is down) ------

    def schedule_part(self) -> TaskStore:
        return self.primary


def _state_dir() -> Path:
    return state_dir()


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only."""
    atomic_write(path, text, folder_mode=0o700)


# -- JSON forms of outcomes (spill files); records use framework.models' forms ------------


def outcome_to_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "task_id": outcome.task_id,
        "lease_token": outcome.lease_token,
        "status": str(outcome.status),
        "finished_at": iso(outcome.finished_at),
        "result_json": outcome.result_json,
        "error": outcome.error,
        "run_after": iso(outcome.run_after),
        "release": outcome.release,
    }


def outcome_from_json(data: dict[str, Any]) -> Outcome:
    return Outcome(
        task_id=data["task_id"],
        lease_token=data["lease_token"],
        status=TaskStatus(data["status"]),
        finished_at=_parse_time(data["finished_at"]) or _required(data, "finished_at"),
        result_json=data.get("result_json"),
        error=data.get("error"),
        run_after=_parse_time(data.get("run_after")),
        release=bool(data.get("release")),
    )


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError(f"time {value!r} has no timezone")
    return from_epoch(to_epoch(moment))


def _required(data: dict[str, Any], key: str) -> datetime:
    raise KeyError(f"{key} is missing")


class FallbackTaskManager(TaskEngine):
    """The engine over a :class:`FallbackStore`."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        db_path: str | os.PathLike[str],
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
        registry: RunRegistry | None = None,
        events: EventBus | None = None,
    ) -> None:
        primary = SqliteStore(db_path, synchronous=synchronous, busy_timeout=busy_timeout)
        super().__init__(FallbackStore(primary), config, registry=registry, events=events)

    @property
    def db_path(self) -> str:
        return str(self.fallback.primary.path)

    @property
    def fallback(self) -> FallbackStore:
        assert isinstance(self.store, FallbackStore)
        return self.store
