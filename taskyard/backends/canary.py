"""``canary``: two stores, a share of new tasks to the new one, for the "10 % first" step
of a rollout.

:class:`CanaryStore` sends each new task to the *canary* store (the backend being rolled
out) when a hash of its routing key falls under ``share``, else to the *stable* one (the
backend in use). The routing key is the idempotency key when there is one (so two
requests with the same key meet in the same store, which deduplicates them), else the
task id: deterministic, so a retried import or an id chosen by the caller lands where
it landed before. Workers claim from both, status and cancel find a task wherever it
went, and counts and listings cover both.

``share = 0`` sends nothing new to the canary while its tasks still run: the way to back
out of a canary without losing what it holds. Priorities order tasks within each store;
across the two, claims alternate.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from taskyard.framework.engine import EngineConfig, TaskEngine
from taskyard.framework.events import EventBus
from taskyard.framework.models import Outcome, TaskRecord, TaskStatus
from taskyard.framework.operations import ComposedOperations, StoreOperations
from taskyard.framework.runs import RunRegistry
from taskyard.framework.store import Capability, TaskStore

__all__ = ["CanaryStore", "CanaryTaskManager", "routes_to_canary"]

_SCALE = float(1 << 64)
_STATE_ORDER = {"ok": 0, "degraded": 1, "down": 2}


def routes_to_canary(key: str, share: float) -> bool:
    """Whether a task with routing ``key`` goes to the canary at ``share`` (0..1): the
    same answer for the same key, and about ``share`` of all keys."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE < share


class CanaryStore(ComposedOperations):
    """A stable store and a canary store behind one :class:`TaskStore`."""

    def __init__(self, stable: TaskStore, canary: TaskStore, *, share: float) -> None:
        if not 0 <= share <= 1:
            raise ValueError(f"share must be between 0 and 1, not {share!r}")
        self.stable = stable
        self.canary = canary
        self.share = share
        # Dependencies and concurrency limits cannot span two stores: neither is offered.
        self.capabilities = (stable.capabilities & canary.capabilities) - {
            Capability.WORKFLOWS,
            Capability.CONCURRENCY_KEYS,
        }
        self._owner: dict[str, TaskStore] = {}
        self._turn = 0

    def __repr__(self) -> str:
        return f"<CanaryStore {self.share:.0%} to {self.canary!r}, rest to {self.stable!r}>"

    def route(self, record: TaskRecord) -> TaskStore:
        """The store a new task goes to."""
        key = record.idempotency_key or record.id
        return self.canary if routes_to_canary(key, self.share) else self.stable

    @property
    def stores(self) -> tuple[TaskStore, TaskStore]:
        return self.stable, self.canary

    def operation_parts(self) -> Sequence[StoreOperations]:
        return [store for store in self.stores if isinstance(store, StoreOperations)]

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        await self.stable.open()
        try:
            await self.canary.open()
        except BaseException:
            await self.stable.close()
            raise

    async def close(self) -> None:
        try:
            await self.canary.close()
        finally:
            await self.stable.close()

    async def open_existing(self) -> None:
        """Both stores, for an operations tool: neither is created when missing."""
        done: list[TaskStore] = []
        try:
            for store in self.stores:
                if isinstance(store, StoreOperations):
                    await store.open_existing()
                else:
                    await store.open()
                done.append(store)
        except BaseException:
            for store in done:
                await store.close()
            raise

    # -- writes ----------------------------------------------------------------------------

    async def _split(self, records: Sequence[TaskRecord], import_: bool) -> list[object]:
        """Send each record to its store (one call per store), results in record order."""
        routed = [self.route(record) for record in records]
        results: list[object] = [None] * len(records)
        for store in self.stores:
            indexes = [i for i, target in enumerate(routed) if target is store]
            if not indexes:
                continue
            batch = [records[i] for i in indexes]
            answers: Sequence[object] = (
                await store.import_records(batch) if import_ else await store.add(batch)
            )
            for index, answer in zip(indexes, answers, strict=True):
                results[index] = answer
        return results

    async def add(self, records: Sequence[TaskRecord]) -> list[str]:
        return [str(task_id) for task_id in await self._split(records, import_=False)]

    async def import_records(self, records: Sequence[TaskRecord]) -> list[bool]:
        return [bool(stored) for stored in await self._split(records, import_=True)]

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
        # Priorities hold across both stores: take up to ``limit`` from each, keep the
        # best ``limit`` by (priority, scheduling time), and give the rest straight back
        # (a release: the attempt does not count, the task keeps its place).
        claimed: list[TaskRecord] = []
        for store in self.stores:
            got = await store.claim(
                limit=limit,
                now=now,
                worker_id=worker_id,
                lease_seconds=lease_seconds,
                types=types,
                limits=limits,
            )
            self._owner.update((record.id, store) for record in got)
            claimed += got
        if len(claimed) <= limit:
            return claimed
        claimed.sort(key=lambda record: (record.priority, record.created_at, record.seq))
        keep, give_back = claimed[:limit], claimed[limit:]
        for store in self.stores:
            mine = [record for record in give_back if self._owner.get(record.id) is store]
            if mine:
                await store.finish(
                    [
                        Outcome(
                            task_id=record.id,
                            lease_token=record.lease_token or "",
                            status=TaskStatus.QUEUED,
                            finished_at=now,
                            run_after=record.run_after,
                            release=True,
                        )
                        for record in mine
                    ]
                )
        for record in give_back:
            self._owner.pop(record.id, None)
        return keep

    async def _holder(self, task_id: str) -> TaskStore | None:
        """The store holding ``task_id``: the one that handed it out, else the one that
        has it."""
        owner = self._owner.get(task_id)
        if owner is not None:
            return owner
        for store in self.stores:
            if await store.get(task_id) is not None:
                return store
        return None

    async def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        holders = [await self._holder(outcome.task_id) for outcome in outcomes]
        applied = [False] * len(outcomes)
        for store in self.stores:
            indexes = [i for i, holder in enumerate(holders) if holder is store]
            if indexes:
                answers = await store.finish([outcomes[i] for i in indexes])
                for index, ok in zip(indexes, answers, strict=True):
                    applied[index] = ok
        for outcome in outcomes:
            self._owner.pop(outcome.task_id, None)
        return applied

    async def renew_leases(
        self, leases: Sequence[tuple[str, str]], *, until: datetime
    ) -> list[str]:
        lost: list[str] = []
        for store in self.stores:
            mine = [lease for lease in leases if self._owner.get(lease[0]) is store]
            if mine:
                lost += await store.renew_leases(mine, until=until)
        known = {lease[0] for lease in leases if lease[0] in self._owner}
        lost += [task_id for task_id, _ in leases if task_id not in known]
        return lost

    async def cancel(self, task_id: str, *, now: datetime) -> TaskStatus | None:
        store = await self._holder(task_id)
        if store is None:
            return None
        return await store.cancel(task_id, now=now)

    async def recover_expired(self, *, now: datetime) -> list[TaskRecord]:
        recovered: list[TaskRecord] = []
        for store in self.stores:
            recovered += await store.recover_expired(now=now)
        for record in recovered:
            self._owner.pop(record.id, None)
        return recovered

    async def record_worker(self, worker_id: str, info: dict[str, object]) -> bool:
        asked = False
        for store in self.stores:
            asked = await store.record_worker(worker_id, info) or asked
        return asked

    async def forget_worker(self, worker_id: str) -> None:
        for store in self.stores:
            await store.forget_worker(worker_id)

    # -- reads -----------------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord | None:
        for store in self.stores:
            record = await store.get(task_id)
            if record is not None:
                return record
        return None

    async def next_due(self, types: Collection[str] | None = None) -> datetime | None:
        due = [await store.next_due(types) for store in self.stores]
        return min((moment for moment in due if moment is not None), default=None)

    async def changed_elsewhere(self) -> bool:
        changed = await asyncio.gather(*(store.changed_elsewhere() for store in self.stores))
        return any(changed)

    async def health(self) -> tuple[str, str]:
        states = [await store.health() for store in self.stores]
        worst = max(states, key=lambda state: _STATE_ORDER.get(state[0], 2))
        if worst[0] == "ok":
            return "ok", ""
        which = "stable" if worst is states[0] else "canary"
        return worst[0], f"{which} store: {worst[1]}"

    async def count_by_status(self) -> dict[TaskStatus, int]:
        counts = dict.fromkeys(TaskStatus, 0)
        for store in self.stores:
            for status, count in (await store.count_by_status()).items():
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
        for store in self.stores:
            found += await store.list_tasks(
                statuses=statuses, task_type=task_type, limit=limit + offset, offset=0
            )
        found.sort(key=lambda record: record.created_at)
        return found[offset : offset + limit]

    async def snapshot(
        self, statuses: Sequence[TaskStatus] | None = None, *, page: int = 10_000
    ) -> list[TaskRecord]:
        records: list[TaskRecord] = []
        for store in self.stores:
            records += await store.snapshot(statuses, page=page)
        return records

    # -- periodic schedules: kept in the stable store, and fired there ------

    def schedule_part(self) -> TaskStore:
        return self.stable


class CanaryTaskManager(TaskEngine):
    """The engine over a :class:`CanaryStore`."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        stable: TaskStore,
        canary: TaskStore,
        share: float,
        registry: RunRegistry | None = None,
        events: EventBus | None = None,
    ) -> None:
        store = CanaryStore(stable, canary, share=share)
        super().__init__(store, config, registry=registry, events=events)

    @property
    def canary_store(self) -> CanaryStore:
        assert isinstance(self.store, CanaryStore)
        return self.store
