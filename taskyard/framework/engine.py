"""The worker engine: every rule of task execution, written once, over a TaskStore.

Retries with backoff and jitter, timeouts, cancellation, the concurrency limit,
priorities and ``run_after``, leases and their heartbeat, graceful stop and the
status events live here; a backend only stores (:mod:`taskyard.framework.store`).

Speed comes from batching: claims take as many tasks as there are free slots in one
store call, and outcomes are flushed to the store in batches by one writer task, so
a busy engine makes a handful of store calls per batch, not per task. And from
deciding locally: the worker claims only when something it can run is due as far as
this process knows (what it scheduled, put back, claimed, and what ``next_due`` said
after a claim left nothing due), and asks the store again only when
``changed_elsewhere()`` says another process wrote. Scheduling a task for later costs
the worker nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import math
import os
import socket
import time
import traceback
from collections import OrderedDict
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType, TracebackType
from typing import Any, Self

from loguru import logger

from taskyard.framework import tracing
from taskyard.framework.errors import (
    InvalidTaskOptions,
    ManagerStateError,
    PermanentFailure,
    Retry,
    StoreError,
    StoreUnavailable,
    TaskNotFound,
    UnknownTaskType,
)
from taskyard.framework.events import EventBus
from taskyard.framework.models import (
    ACTIVE_STATUSES,
    EARLIEST_RUN_AFTER,
    LATEST_RUN_AFTER,
    MAX_ATTEMPTS_LIMIT,
    PRIORITY_RANGE,
    TERMINAL_STATUSES,
    Outcome,
    TaskEvent,
    TaskRecord,
    TaskStatus,
    clip_traceback,
    detached,
    dumps,
    iso,
    new_task_id,
    shown,
    text_problem,
    to_epoch,
    utcnow,
)
from taskyard.framework.protocol import Handler
from taskyard.framework.retry import RetryPolicy
from taskyard.framework.runs import Run, RunRegistry, RunStatus, owner_tag
from taskyard.framework.store import Capability, TaskStore
from taskyard.framework.threads import DaemonThreadPool
from taskyard.framework.workflows import (
    CANCEL,
    JOIN_TASK_TYPE,
    TaskContext,
    check_batch,
    check_dependency_options,
    join_results,
)

_EMPTY: Mapping[str, float] = MappingProxyType({})
_NO_LIMITS: Mapping[str, int] = MappingProxyType({})

STOP_WRITE_GRACE = 1.0
"""Seconds ``stop()`` gives the store, beyond its timeout, to write the last outcomes."""
PAUSE_READ = 1.0
"""Seconds a worker trusts its last reading of the store's intake pause."""


@dataclass(frozen=True)
class EngineConfig:
    """How the engine runs. The settings' ``task_execution`` keys map onto these."""

    concurrency: int = 10
    """Handlers running at once in this process."""
    prefetch: int = 0
    """Tasks claimed ahead of a free slot, so that claiming overlaps the handlers that run
    now. A prefetched task holds its lease (it shows ``running``) while it waits, is not
    overtaken by a higher-priority task scheduled after it was claimed, and goes back to
    the queue at stop. 0 (the default) claims only for free slots."""
    run_worker: bool = True
    """Claim and run tasks; False makes a producer-only manager (a web process), which
    accepts tasks of any type (workers elsewhere hold the handlers)."""
    task_types: frozenset[str] | None = None
    """The task types a manager accepts beyond those it registered (None: any type on a
    producer-only manager, none on a worker); a schedule of another type is refused."""
    poll_interval: float = 0.5
    """Seconds between cheap checks for work written by other processes."""
    lease_seconds: float = 30.0
    """How long a claim holds without a heartbeat; a crashed worker's tasks return after it."""
    heartbeat_interval: float | None = None
    """Seconds between lease renewals; a third of the lease by default."""
    recover_interval: float | None = None
    """Seconds between sweeps for expired leases; half the lease (at most 5 s) by default."""
    default_max_attempts: int = 3
    default_timeout: float | None = None
    task_timeouts: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    concurrency_limits: Mapping[str, int] = field(default_factory=lambda: _NO_LIMITS)
    """Tasks running at once per concurrency key prefix or task type, across every
    process (:func:`~taskyard.framework.workflows.concurrency_limit`)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    shutdown_timeout: float = 30.0
    worker_id: str | None = None
    run_schedules: bool = True
    """Fire the store's periodic schedules (a worker does; see add_schedule)."""
    tracked_tasks: int = 100_000
    """Unfinished tasks scheduled through this manager that it follows for ``wait_all()``
    and the active-task calls (the newest ones; a producer-only manager never sees its
    tasks finish, so this must be bounded)."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.lease_seconds <= 0 or self.poll_interval <= 0:
            raise ValueError("lease_seconds and poll_interval must be positive")
        if self.default_max_attempts < 1:
            raise ValueError("default_max_attempts must be at least 1")

    @property
    def heartbeat(self) -> float:
        return self.heartbeat_interval or self.lease_seconds / 3

    @property
    def recovery(self) -> float:
        return self.recover_interval or min(self.lease_seconds / 2, 5.0)


@dataclass(slots=True)
class _Registration:
    handler: Handler
    is_async: bool
    timeout: float | None
    max_attempts: int | None
    wants_context: bool = False


@dataclass(slots=True)
class _Running:
    record: TaskRecord
    task: asyncio.Task[None]
    stop_reason: str | None = None  # "cancelled", "lease-lost", "shutdown", "timeout"
    thread: Future[Any] | None = None  # a sync handler's call, while it runs
    deadline: float | None = None  # loop time at which the attempt times out
    timeout: float | None = None


class _DebugGate:
    """Whether a DEBUG record of this module could reach a loguru sink.

    loguru decides that per call, after inspecting the caller's frame: about a
    microsecond, three times per task, even when taskyard's logging is disabled (the
    default for a library). This asks loguru once, and again at most once a second, so
    enabling logging takes effect within a second (and at once for an engine started
    after it)."""

    __slots__ = ("_on", "_until")

    def __init__(self) -> None:
        self._on = True
        self._until = 0.0

    def refresh(self) -> bool:
        self._until = time.monotonic() + 1.0
        self._on = _debug_reachable()
        return self._on

    def __call__(self) -> bool:
        if time.monotonic() < self._until:
            return self._on
        return self.refresh()


def _debug_reachable() -> bool:
    """loguru's own test (``Logger._log``): a handler at DEBUG or below, and this module
    not disabled by ``logger.disable``. True when loguru's internals look different."""
    try:
        core = logger._core  # type: ignore[attr-defined]
        if not core.handlers or core.min_level > _DEBUG_LEVEL:
            return False
        dotted = __name__ + "."
        for prefix, status in core.activation_list:
            if dotted[: len(prefix)] == prefix:
                return bool(status)
        return True
    except Exception:
        return True


_DEBUG_LEVEL = 10


class _State:
    NEW, RUNNING, STOPPING, STOPPED = "new", "running", "stopping", "stopped"


class TaskEngine:
    """A :class:`~taskyard.framework.protocol.TaskManager` over any :class:`TaskStore`."""

    def __init__(
        self,
        store: TaskStore,
        config: EngineConfig | None = None,
        *,
        registry: RunRegistry | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.store = store
        self.config = config or EngineConfig()
        self.registry = registry
        self.events = events or EventBus()
        self.worker_id = self.config.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.role = "application"
        """What the heartbeat says this process is: ``worker`` when
        :func:`taskyard.worker.serve` runs it (``taskyard workers stop`` stops those)."""
        self.stop_requested = asyncio.Event()
        """Set when the heartbeat reads a stop request (``taskyard workers stop``)."""
        self._handlers: dict[str, _Registration] = {
            JOIN_TASK_TYPE: _Registration(join_results, True, None, 1, wants_context=True)
        }
        self._releases_seen = store.releases  # waiting tasks the store has released
        self._blocked = False  # due tasks the last claim could not take (keys at their limit)
        self._state = _State.NEW
        self._lifecycle = asyncio.Lock()
        self._running: dict[str, _Running] = {}
        self._ready: dict[str, TaskRecord] = {}  # prefetched, waiting for a slot
        self._reserved = 0  # slots of tasks being added as claimed (_claimed_on_add)
        self._claim_in_flight = False  # a claim is in flight
        self._outcomes: list[tuple[TaskRecord, Outcome]] = []
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        # Events follow the store: a task's QUEUED event is published once its add returns,
        # its outcome's once the write returns. Another coroutine may see the store first
        # (a claim, a status read), so these say what is still to be published.
        self._adding: dict[str, TaskRecord] = {}  # added, QUEUED not yet published
        self._writing: set[str] = set()  # outcome written, its event not yet published
        # Tasks scheduled through this manager and not yet seen finished (for wait_all and
        # the active-task calls), oldest first; bounded, because a producer-only manager
        # never sees its tasks finish unless someone asks.
        self._scheduled_here: OrderedDict[str, None] = OrderedDict()
        self._finished_here = asyncio.Event()  # a task ended here (wait_all)
        self._adhoc: dict[str, asyncio.Task[None]] = {}
        self._debug = _DebugGate()
        # attempt deadlines, earliest first, and the one timer that watches them (a timer
        # per attempt costs more than the attempt itself when the handler is quick)
        self._deadlines: list[tuple[float, int, _Running]] = []
        self._deadline_seq = 0
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._warned_untracked = False
        self._abandoned = False
        self._abandoned_records: list[TaskRecord] = []
        self._background: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        # what the claim loop knows about due work (see _claim_loop)
        self._due_now = True
        # how many due tasks this engine added since its last claim began, when those are
        # all that made _due_now true (None: something else did, or it cannot tell)
        self._due_local: int | None = None
        self._next_at: float | None = None  # epoch seconds: the earliest known delayed task
        self._next_known = False  # _next_at includes the store's answer to next_due
        self._next_poll = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._outcome_ready = asyncio.Event()
        self._intake = asyncio.Event()
        self._intake.set()
        self._pool: DaemonThreadPool | None = None
        self._claim_error: str | None = None  # why the last claim failed, until one works
        self._held = False  # an operator paused intake in the store (intake_paused)
        self._held_read_at = -math.inf
        self.stats: dict[str, int] = {
            "scheduled": 0,
            "claimed": 0,
            "completed": 0,
            "failed": 0,
            "retried": 0,
            "cancelled": 0,
            "timed_out": 0,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._state == _State.RUNNING

    async def start(self) -> None:
        async with self._lifecycle:
            if self._state == _State.RUNNING:
                return
            await self.store.open()
            self._debug.refresh()
            self._state = _State.RUNNING
            self._wake = asyncio.Event()
            self.store.set_wakeup(self._notice_elsewhere)
            self._outcome_ready = asyncio.Event()
            self._abandoned = False
            self._background = [self._loop_task(self._flush_outcomes(), "taskyard-flush")]
            if self.config.run_worker:
                self._pool = DaemonThreadPool(self.config.concurrency + 4, name="taskyard")
                try:  # a queue paused before this worker started is honoured at once
                    await self._read_pause()
                except Exception as exc:
                    _log_unexpected(exc, "reading the intake pause")
                self._background += [
                    self._loop_task(self._pause_loop(), "taskyard-pause"),
                    self._loop_task(self._claim_loop(), "taskyard-claim"),
                    self._loop_task(self._heartbeat_loop(), "taskyard-heartbeat"),
                    self._loop_task(self._recover_loop(), "taskyard-recover"),
                ]
                if self.config.run_schedules:  # periodic schedules: taskyard.framework.schedules
                    self._background.append(
                        self._loop_task(self._schedule_loop(), "taskyard-schedules")
                    )
            if not self.config.run_worker and Capability.DURABLE not in self.store.capabilities:
                logger.warning(
                    "taskyard: this manager runs no worker (run_worker = false) on {}, which "
                    "no other process can read: the tasks it accepts will never run. Use a "
                    "durable backend (sqlite) or set run_worker = true",
                    self.store,
                )
            logger.debug("taskyard engine {} started on {}", self.worker_id, self.store)

    def _notice_elsewhere(self) -> None:
        """The store heard of a write by another process: look for work now (a claim,
        and the store asked again what is due next)."""
        self._work_may_be_due()

    def _loop_task(self, loop: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.create_task(self._guarded(loop), name=name)

    async def _guarded(self, loop: Coroutine[Any, Any, None]) -> None:
        """Run a background loop; if it is cancelled while the manager still runs, the
        program is ending without ``stop()`` (``asyncio.run`` cancels every task on its way
        out): release what this manager holds and close the store, so that its thread
        does not keep the process alive."""
        try:
            await loop
        except asyncio.CancelledError:
            if self._state == _State.RUNNING and not self._abandoned:
                self._abandoned = True
                await self._abandon()
            raise

    async def _abandon(self) -> None:
        """The event loop is closing with the manager still running: give claimed tasks
        back to the queue (their attempt not counted), write what is pending and close the
        store, all within the shutdown timeout. Whatever cannot be written by then runs
        again once its lease expires."""
        self._state = _State.STOPPING
        logger.warning(
            "taskyard: the event loop is closing and the task manager was never stopped; "
            "releasing its tasks (use `async with manager:` or `await manager.stop()`)"
        )
        try:
            async with asyncio.timeout(max(self.config.shutdown_timeout, 1.0)):
                # cancel every handler, including one a cancelled handler's slot started
                # after the loop had cancelled the rest
                running = [entry.task for entry in self._running.values()]
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                held = {
                    record.id: record
                    for record in [
                        *self._ready.values(),
                        *self._abandoned_records,
                        *(entry.record for entry in self._running.values()),  # never started
                    ]
                }
                self._running.clear()
                for record in held.values():
                    outcome = self._outcome(
                        record, TaskStatus.QUEUED, run_after=record.run_after, release=True
                    )
                    self._outcomes.append((record, outcome))
                self._ready.clear()
                await self._flush_pending(give_up_at=time.monotonic())
                if self.config.run_worker:
                    with contextlib.suppress(StoreError):
                        await self.store.forget_worker(self.worker_id)
        except BaseException as exc:  # the loop is closing: never hang it
            logger.error("taskyard: releasing tasks at exit failed ({!r})", exc)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            with contextlib.suppress(BaseException):
                await self.store.close()
            self._state = _State.STOPPED

    async def stop(self, timeout: float | None = None) -> None:
        await self._shutdown(timeout)
        self._intake.set()  # calls held by pause_intake() go on, and fail: stopped

    async def _shutdown(
        self, timeout: float | None, before_close: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """stop() without releasing held intake; ``before_close`` runs once the engine is
        quiet and the store still open."""
        async with self._lifecycle:
            if self._state != _State.RUNNING:
                return
            self._state = _State.STOPPING
            # One deadline for the whole stop: handlers get the timeout, and the writes
            # that follow get what is left of it plus STOP_WRITE_GRACE, however the
            # store behaves.
            deadline = max(self.config.shutdown_timeout if timeout is None else timeout, 0.0)
            end = time.monotonic() + deadline
            write_end = end + STOP_WRITE_GRACE
            self._wake.set()
            claim_loop = [t for t in self._background if t.get_name() == "taskyard-claim"]
            if claim_loop:  # it stops at its next turn; a store call in flight is cut short
                await asyncio.wait(claim_loop, timeout=max(write_end - time.monotonic(), 0))
                for task in claim_loop:
                    task.cancel()
            await self._drain(max(end - time.monotonic(), 0.0))
            if self._deadline_timer is not None:
                self._deadline_timer.cancel()
                self._deadline_timer = None
            self._deadlines.clear()
            self._outcome_ready.set()
            # let the writer finish what it is writing: cancelled mid-write, a batch is lost
            # (bounded: a store that keeps refusing must not make stop() hang)
            flush = [t for t in self._background if t.get_name() == "taskyard-flush"]
            if flush:
                await asyncio.wait(flush, timeout=max(write_end - time.monotonic(), 0.01))
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            self._background = []
            await self._flush_pending(give_up_at=write_end)
            if self.config.run_worker:
                with contextlib.suppress(StoreError, TimeoutError):
                    await asyncio.wait_for(
                        self.store.forget_worker(self.worker_id),
                        max(write_end - time.monotonic(), 0.01),
                    )
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            try:
                if before_close is not None:
                    await before_close()
            finally:
                await self.store.close()
                self._state = _State.STOPPED
            logger.debug("taskyard engine {} stopped", self.worker_id)

    async def _drain(self, deadline: float) -> None:
        """Give prefetched tasks back, let running handlers and ad-hoc runs finish until
        the deadline, cancel the rest."""
        for record in self._ready.values():
            outcome = self._outcome(
                record, TaskStatus.QUEUED, run_after=record.run_after, release=True
            )
            self._outcomes.append((record, outcome))
        self._ready.clear()
        pending = [r.task for r in self._running.values()] + list(self._adhoc.values())
        if pending:
            _, late = await asyncio.wait(pending, timeout=max(deadline, 0))
            for entry in list(self._running.values()):
                if entry.task in late:
                    entry.stop_reason = "shutdown"
            for task in late:
                task.cancel()
            if late:
                logger.info("taskyard: {} handler(s) cancelled at shutdown", len(late))
                # bounded too: a handler that swallows its cancellation is abandoned
                _, stuck = await asyncio.wait(late, timeout=STOP_WRITE_GRACE / 2)
                for entry in [e for e in self._running.values() if e.task in stuck]:
                    logger.error(
                        "taskyard task {} ({}): its handler ignores cancellation and is "
                        "abandoned; the task's lease is left to expire",
                        entry.record.id,
                        entry.record.type,
                    )
                    del self._running[entry.record.id]

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _ensure_started(self) -> None:
        if self._state == _State.RUNNING:
            return
        if self._state == _State.STOPPING:
            raise ManagerStateError("the task manager is stopping; it accepts no new tasks")
        if self._state == _State.STOPPED:
            raise ManagerStateError("the task manager is stopped; call start() to use it again")
        await self.start()

    # -- registration and scheduling ---------------------------------------------------------

    async def register_task(
        self,
        task_type: str,
        handler: Handler,
        *,
        timeout: float | None = None,
        max_attempts: int | None = None,
    ) -> None:
        if not isinstance(task_type, str) or not task_type:
            raise InvalidTaskOptions(f"task_type must be a non-empty str, not {shown(task_type)}")
        _check_text("task_type", task_type)
        if not callable(handler):
            raise InvalidTaskOptions(f"the handler for {task_type!r} is not callable")
        if timeout is not None and not _positive_number(timeout):
            raise InvalidTaskOptions(f"timeout must be a positive number, not {shown(timeout)}")
        if max_attempts is not None:
            _check_max_attempts(max_attempts)
        self._handlers[task_type] = _Registration(
            handler=handler,
            is_async=_is_async_callable(handler),
            timeout=timeout,
            max_attempts=max_attempts,
            wants_context=_wants_context(handler),
        )
        self._work_may_be_due()

    @property
    def registered_types(self) -> frozenset[str]:
        """The types the application registered (the built-in group task aside)."""
        return frozenset(self._handlers) - {JOIN_TASK_TYPE}

    def build_record(
        self,
        task_type: str,
        payload: Any = None,
        *,
        priority: int = 5,
        run_after: datetime | None = None,
        delay: float | timedelta | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        task_id: str | None = None,
        now: datetime | None = None,
        depends_on: Iterable[str] | None = None,
        on_dependency_failure: str = CANCEL,
        concurrency_key: str | None = None,
        workflow_id: str | None = None,
    ) -> TaskRecord:
        """Validate one schedule request and build its record; raises SchedulingError."""
        registration = self._handlers.get(task_type)
        if registration is None:
            self._check_unregistered(task_type)
        low, high = PRIORITY_RANGE
        if (
            isinstance(priority, bool)
            or not isinstance(priority, int)
            or not low <= priority <= high
        ):
            raise InvalidTaskOptions(
                f"priority must be an int from {low} to {high}, not {shown(priority)}"
            )
        now = now or utcnow()
        due = _due_time(now, run_after, delay)
        if max_attempts is None:
            registered = registration.max_attempts if registration is not None else None
            max_attempts = registered or self.config.default_max_attempts
        _check_max_attempts(max_attempts)
        if timeout is not None:
            if not _positive_number(timeout):
                raise InvalidTaskOptions(f"timeout must be a positive number, not {shown(timeout)}")
            timeout = float(timeout)  # stores keep seconds as a double
        if idempotency_key is not None:
            if not isinstance(idempotency_key, str):
                raise InvalidTaskOptions(
                    f"idempotency_key must be a str, not {shown(idempotency_key)}"
                )
            _check_text("idempotency_key", idempotency_key)
        if task_id is not None:
            if not isinstance(task_id, str) or not task_id or len(task_id) > 200:
                raise InvalidTaskOptions(
                    "task_id must be a non-empty str of at most 200 characters, not "
                    f"{shown(task_id)}"
                )
            _check_text("task_id", task_id)
        if payload is None:
            payload = {}
        parents = check_dependency_options(depends_on, on_dependency_failure, concurrency_key)
        self._check_capable(parents, concurrency_key)
        if concurrency_key is not None:
            _check_text("concurrency_key", concurrency_key)
        payload_json = dumps(payload, what="payload")
        return TaskRecord(
            id=task_id or new_task_id(),
            type=task_type,
            payload=payload,
            payload_json=payload_json,
            priority=priority,
            max_attempts=max_attempts,
            created_at=now,
            updated_at=now,
            run_after=due,
            timeout=timeout,
            idempotency_key=idempotency_key,
            depends_on=parents,
            on_dependency_failure=on_dependency_failure,
            concurrency_key=concurrency_key,
            workflow_id=workflow_id,
        )

    def _check_unregistered(self, task_type: str) -> None:
        """A type with no handler here: a producer-only manager takes it (if the settings'
        ``task_types`` list, when given, names it); a worker refuses it."""
        if not isinstance(task_type, str) or not task_type:
            raise InvalidTaskOptions(f"task_type must be a non-empty str, not {shown(task_type)}")
        _check_text("task_type", task_type)
        allowed = self.config.task_types
        if allowed is not None:
            if task_type in allowed:
                return
            names = ", ".join(sorted({*allowed, *self._handlers})) or "none"
            raise UnknownTaskType(
                f"task type {task_type!r} is not in task_execution.task_types and has no "
                f"handler here (accepted: {names}); add it to task_types or register it"
            )
        if not self.config.run_worker:
            return
        known = ", ".join(sorted(self._handlers)) or "none"
        raise UnknownTaskType(
            f"no handler is registered for task type {task_type!r} (registered: {known}); "
            "call register_task first, or set task_execution.run_worker = false for a "
            "manager that only schedules"
        )

    def _check_capable(self, parents: tuple[str, ...], concurrency_key: str | None) -> None:
        needs = [
            (Capability.WORKFLOWS, "depends_on") if parents else None,
            (Capability.CONCURRENCY_KEYS, "concurrency_key") if concurrency_key else None,
        ]
        for need in needs:
            if need is not None and need[0] not in self.store.capabilities:
                raise InvalidTaskOptions(
                    f"{need[1]} needs a store with the {need[0]} capability, and "
                    f"{self.store!r} lacks it; use the in-memory, sqlite or postgres backend"
                )

    async def schedule_task(
        self,
        task_type: str,
        payload: Any = None,
        *,
        priority: int = 5,
        run_after: datetime | None = None,
        delay: float | timedelta | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        task_id: str | None = None,
        depends_on: Iterable[str] | None = None,
        on_dependency_failure: str = CANCEL,
        concurrency_key: str | None = None,
    ) -> str:
        record = self.build_record(
            task_type,
            payload,
            priority=priority,
            run_after=run_after,
            delay=delay,
            max_attempts=max_attempts,
            timeout=timeout,
            idempotency_key=idempotency_key,
            task_id=task_id,
            depends_on=depends_on,
            on_dependency_failure=on_dependency_failure,
            concurrency_key=concurrency_key,
        )
        return (await self._add([record]))[0]

    async def schedule_many(self, requests: Iterable[Mapping[str, Any]]) -> list[str]:
        """Schedule several tasks in one store write. Each request is a mapping of
        ``schedule_task``'s arguments (``task_type`` and ``payload`` included). Every
        request is validated before anything is stored."""
        now = utcnow()
        records = [self.build_record(**dict(request), now=now) for request in requests]
        return await self._add(records) if records else []

    async def _add(self, records: list[TaskRecord]) -> list[str]:
        if not self._intake.is_set():
            await self._intake.wait()  # paused while the tasks move to another store
        if self._state != _State.RUNNING:
            await self._ensure_started()
        check_batch(records)
        claimed = self._claimed_on_add(records)
        adding = self._adding
        for record in records:
            adding[record.id] = record
        try:
            with tracing.producing(records):  # OpenTelemetry, when configured: a no-op check
                ids = await self.store.add(records)
        except BaseException:
            for record in records:
                adding.pop(record.id, None)
            raise
        finally:
            self._reserved -= claimed
        self.stats["scheduled"] += len(records)
        if claimed:
            self._launch_added(records)
            return ids
        runs_here = self._handlers if self.config.run_worker else {}
        for record, task_id in zip(records, ids, strict=True):
            if adding.pop(record.id, None) is None:  # a claim published QUEUED already
                self._track(task_id)
                continue
            if record.id != task_id:  # an idempotency key matched an existing task
                continue
            self._track(task_id)
            self._publish(record, TaskStatus.WAITING if record.depends_on else TaskStatus.QUEUED)
            if record.type in runs_here:
                self._note_due(to_epoch(record.run_after))
        return ids

    def _claimed_on_add(self, records: list[TaskRecord]) -> int:
        """Claim new tasks in the write that adds them, when this worker would claim them
        next anyway: they are due, plain (no key, no dependency, no idempotency key), run
        here, and fit in the free slots beside every other task known to be due (only
        tasks this engine added since its last claim began; if anything else may be due,
        an earlier or higher-priority task could be skipped, and the claim loop decides).
        Never while a claim is in flight: that claim may fill the free slots. Saves a
        claim, a write, per task scheduled while the worker has room. Returns how many
        slots the batch holds (all of it, or none)."""
        if (
            not self.config.run_worker
            or self._claim_in_flight
            or self._ready
            or self._held
            or self._state != _State.RUNNING
            or len(records) > self._free_slots()
            or Capability.CLAIM_ON_ADD not in self.store.capabilities
        ):
            return 0
        if self._due_now and (
            self._due_local is None or self._due_local + len(records) > self._free_slots()
        ):
            return 0  # other due work may come first: the claim loop decides
        now = time.time()
        if self._next_at is not None and self._next_at <= now:
            return 0  # a delayed task came due: the claim loop takes it first
        handlers = self._handlers
        for record in records:
            if (
                record.type not in handlers
                or record.depends_on
                or record.concurrency_key is not None
                or record.idempotency_key is not None
                or to_epoch(record.run_after) > now
            ):
                return 0
        moment = datetime.fromtimestamp(now, UTC)
        expires = moment + timedelta(seconds=self.config.lease_seconds)
        token = new_task_id()
        for record in records:
            record.status = TaskStatus.RUNNING
            record.attempts = 1
            record.started_at = record.updated_at = moment
            record.lease_token = token
            record.lease_expires_at = expires
            record.worker_id = self.worker_id
        self._reserved += len(records)
        return len(records)

    def _launch_added(self, records: list[TaskRecord]) -> None:
        """Run tasks the store added as claimed (:meth:`_claimed_on_add`). If the engine
        began to stop meanwhile, they go back to the queue (at worst, their lease expires
        and another worker runs them)."""
        for record in records:
            self._adding.pop(record.id, None)
            self._track(record.id)
            # the handler's own copy, as a claim's read from the store would give
            record.payload = detached(record.payload, record.payload_json)
            record.attempts = 0  # the QUEUED event says what a claim would have seen
            self._publish(record, TaskStatus.QUEUED)
            record.attempts = 1
            if self._state == _State.RUNNING:
                self._launch(record)
                continue
            outcome = self._outcome(
                record, TaskStatus.QUEUED, run_after=record.run_after, release=True
            )
            self._outcomes.append((record, outcome))
            self._outcome_ready.set()

    async def add_schedule(
        self, name: str, task_type: str, payload: Any = None, **fields: Any
    ) -> dict[str, Any]:
        """Declare periodic schedule ``name`` in the store (or update it when its fields
        changed): ``cron`` (5 fields, or 6 with seconds first) or ``every`` (seconds or a
        timedelta), ``timezone``, ``missed`` (skip, once, all), ``max_backfill``,
        ``priority``, ``max_attempts``, ``enabled``. Returns the schedule as a dict.
        Raises InvalidSchedule naming a wrong field. See :mod:`taskyard.framework.schedules`."""
        from taskyard.framework import schedules

        schedule = schedules.make_schedule(name, task_type, payload, **fields)
        await self._ensure_started()
        record, _ = await schedules.declare(self.store, schedule)
        return record.to_json()

    async def _schedule_loop(self) -> None:
        from taskyard.framework.schedules import ScheduleRunner

        runner = ScheduleRunner(
            self.store,
            poll_interval=self.config.poll_interval,
            default_max_attempts=self.config.default_max_attempts,
            on_fired=lambda ids: self._work_may_be_due(),  # tasks the engine did not add
            active=lambda: self._state == _State.RUNNING and self._intake.is_set(),
        )
        await runner.run()

    # -- reading and cancelling --------------------------------------------------------------

    async def get_task_status(self, task_id: str) -> dict[str, Any] | None:
        await self._ensure_started()
        record = await self.store.get(task_id)
        if record is None:
            return None
        if record.status.is_terminal:
            self._scheduled_here.pop(task_id, None)
        return record.to_status()

    async def cancel_task(self, task_id: str) -> bool:
        await self._ensure_started()
        before = await self.store.cancel(task_id, now=utcnow())
        if before not in (TaskStatus.WAITING, TaskStatus.QUEUED, TaskStatus.RUNNING):
            return False
        self._ready.pop(task_id, None)
        self._after_settling()
        entry = self._running.get(task_id)
        if entry is not None:
            entry.stop_reason = "cancelled"
            entry.task.cancel()
        self.stats["cancelled"] += 1
        record = await self.store.get(task_id)
        if record is not None:
            self._publish(record, TaskStatus.CANCELLED)
        logger.debug("taskyard task {} cancelled (was {})", task_id, before)
        return True

    async def cancel_workflow(self, workflow_id: str) -> list[str]:
        """Cancel every task of the workflow that has not finished (running ones
        cooperatively); returns the ids cancelled. Raises TaskNotFound for an unknown id."""
        await self._ensure_started()
        records = await self.store.workflow_tasks(workflow_id)
        if not records:
            raise TaskNotFound(f"no workflow has the id {workflow_id!r}")
        cancelled = []
        for record in reversed(records):  # the last first: nothing is released meanwhile
            if not record.status.is_terminal and await self.cancel_task(record.id):
                cancelled.append(record.id)
        return cancelled

    async def wait_for(self, task_id: str, timeout: float | None = None) -> dict[str, Any]:
        await self._ensure_started()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(task_id, []).append(waiter)
            try:
                record = await self.store.get(task_id)
                if record is None:
                    raise TaskNotFound(f"no task has the id {task_id!r}")
                if self._has_ended(record):
                    self._scheduled_here.pop(task_id, None)
                    return record.to_status()
                wait = self.config.poll_interval
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(
                            f"task {task_id} is still {record.status} after {timeout} s"
                        )
                    wait = min(wait, remaining)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, wait)
            finally:
                waiters = self._waiters.get(task_id)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[task_id]

    def _has_ended(self, record: TaskRecord) -> bool:
        """Whether a task read from the store has ended, as far as waiting goes: terminal
        there, and its outcome's event published here (not still being written)."""
        return record.status.is_terminal and record.id not in self._writing

    async def list_tasks(
        self,
        *,
        status: TaskStatus | str | None = None,
        task_type: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        await self._ensure_started()
        statuses = None if status is None else [TaskStatus(status)]
        records = await self.store.list_tasks(
            statuses=statuses, task_type=task_type, limit=limit, offset=offset
        )
        return [record.to_status() for record in records]

    async def count_by_status(self) -> dict[str, int]:
        await self._ensure_started()
        counts = await self.store.count_by_status()
        return {str(status): counts.get(status, 0) for status in TaskStatus}

    async def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded" | "down", "reason": ..., ...}``: whether the store
        takes work (a fallback store says ``degraded`` with why and how much memory holds)."""
        if self._state != _State.RUNNING:
            status, reason = "down", f"the task manager is {self._state}"
        else:
            status, reason = await self.store.health()
            if self.config.run_worker and not self._claiming():
                status, reason = "down", "this worker's claim loop has stopped"
            elif self._claim_error is not None and status == "ok":
                status, reason = "degraded", f"claiming tasks fails: {self._claim_error}"
        report: dict[str, Any] = {
            "status": status,
            "reason": reason,
            "store": repr(self.store),
            "running_here": len(self._running),
        }
        report.update(await self.store.health_details())
        return report

    # -- moving to another store ---------------------------------------------------------------

    def pause_intake(self) -> None:
        """Hold new tasks: ``schedule_task`` and ``schedule_many`` wait until
        :meth:`resume_intake`, and then go to the store the manager runs on by then (or
        fail with ManagerStateError if it was stopped meanwhile)."""
        self._intake.clear()

    def resume_intake(self) -> None:
        """Let held and new schedule calls through again."""
        self._intake.set()

    @property
    def intake_paused(self) -> bool:
        return not self._intake.is_set()

    async def drain_and_export(
        self,
        timeout: float | None = None,
        *,
        statuses: Collection[TaskStatus] | None = ACTIVE_STATUSES,
    ) -> list[TaskRecord]:
        """Quiesce the manager and return its tasks, for a move to another store.

        Pauses intake, stops claiming, lets running handlers finish within ``timeout``
        seconds (the shutdown timeout by default) and gives the rest back to the queue
        with that attempt not counted, writes every outcome, then reads the tasks of
        ``statuses`` (every unfinished one by default, None for all) and stops. Intake
        stays paused: move the records, then :meth:`switch_store`, ``start()`` and
        :meth:`resume_intake` to go on, or ``stop()`` to refuse the held calls.
        """
        self.pause_intake()
        wanted = None if statuses is None else sorted(statuses)
        exported: list[TaskRecord] = []

        async def export() -> None:
            exported.extend(await self.store.snapshot(wanted))

        async with self._lifecycle:
            running = self._state == _State.RUNNING
        if running:
            await self._shutdown(timeout, before_close=export)
        else:  # never started, or stopped: the store holds what there is
            await self.store.open()
            try:
                await export()
            finally:
                await self.store.close()
        return exported

    async def import_tasks(self, records: Sequence[TaskRecord]) -> list[bool]:
        """Store tasks exactly as given (ids, statuses, attempts, times), as
        :meth:`TaskStore.import_records` does, and wake the worker to run what arrived.
        Returns, per record, whether it was stored (False: the id was already there)."""
        await self._ensure_started()
        stored = await self.store.import_records(records) if records else []
        self._work_may_be_due()
        return stored

    def switch_store(self, store: TaskStore) -> None:
        """Run on ``store`` from the next ``start()``; only while the manager is not
        running (after :meth:`drain_and_export` or ``stop()``)."""
        if self._state in (_State.RUNNING, _State.STOPPING):
            raise ManagerStateError(
                f"the task manager is {self._state}; drain or stop it before switching its store"
            )
        self.store = store

    # -- the older interface -----------------------------------------------------------------

    def start_task(self, run: Run, coro: Coroutine[Any, Any, Any]) -> str:
        if self._state in (_State.STOPPING, _State.STOPPED):
            coro.close()
            raise ManagerStateError(f"the task manager is {self._state}; it starts no new runs")
        run.parameters.setdefault("_adhoc", True)
        run.parameters["_owner"] = owner_tag()
        run.mark_running()
        if self.registry is not None:
            self.registry.add_run(run)
        self._adhoc[run.run_id] = asyncio.create_task(
            self._run_adhoc(run, coro), name=f"taskyard-run-{run.run_id}"
        )
        return run.run_id

    async def _run_adhoc(self, run: Run, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            run.mark_finished(RunStatus.CANCELLED)
        except Exception as exc:
            run.mark_finished(RunStatus.FAILED, error_message=_describe(exc))
            logger.warning("taskyard run {} failed: {}", run.run_id, run.error_message)
        else:
            run.mark_finished(RunStatus.COMPLETED)
        finally:
            self._adhoc.pop(run.run_id, None)
            if self.registry is not None:
                self.registry.save_run(run)

    async def wait_all(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._adhoc or self._scheduled_here:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"{self.get_active_task_count()} task(s) still active")
            if self._adhoc:
                await asyncio.wait(list(self._adhoc.values()), timeout=remaining)
                continue
            # A task that ends here leaves _scheduled_here as its event is published: wait
            # for that, without a store read per task. One that ends in another process
            # publishes nothing here: each poll_interval, the store is asked about the
            # oldest (and, while those are finished, the next ones).
            self._finished_here.clear()
            wait = self.config.poll_interval
            if remaining is not None:
                wait = min(wait, remaining)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished_here.wait(), wait)
                continue
            while self._scheduled_here:
                task_id = next(iter(self._scheduled_here))
                record = await self.store.get(task_id)
                if record is not None and not self._has_ended(record):
                    break
                self._scheduled_here.pop(task_id, None)

    def _track(self, task_id: str) -> None:
        self._scheduled_here[task_id] = None
        if len(self._scheduled_here) > self.config.tracked_tasks:
            # the oldest, in O(1): a dict's front, after many deletions, is found by a scan
            self._scheduled_here.popitem(last=False)
            if not self._warned_untracked:
                self._warned_untracked = True
                logger.warning(
                    "taskyard: more than {} unfinished tasks scheduled here; wait_all() and "
                    "the active-task calls now follow only the newest of them",
                    self.config.tracked_tasks,
                )

    def get_active_task_ids(self) -> list[str]:
        return [*self._adhoc, *self._scheduled_here]

    def get_active_task_count(self) -> int:
        return len(self._adhoc) + len(self._scheduled_here)

    def is_task_active(self, task_id: str) -> bool:
        return task_id in self._adhoc or task_id in self._scheduled_here

    # -- the worker --------------------------------------------------------------------------

    def _free_slots(self) -> int:
        return self.config.concurrency - len(self._running) - self._reserved

    async def _stopping_soon(self) -> None:
        while self._state == _State.RUNNING:
            self._wake.clear()
            await self._wake.wait()

    async def _claim_loop(self) -> None:
        """Claim for free slots when something is due, and only then.

        Whether something is due is decided locally (:meth:`_note_due`): tasks this
        process scheduled or put back, and the store's answer to ``next_due`` after a
        claim that left nothing due. The store is asked again only when
        ``changed_elsewhere()`` says another process may have written (checked every
        ``poll_interval``). Wake-ups that arrive while a claim is in flight coalesce
        into one more turn of the loop.
        """
        loop = asyncio.get_running_loop()
        self._due_now, self._next_at, self._next_known = True, None, False
        self._due_local = None
        self._next_poll = loop.time() + self.config.poll_interval
        failures = 0
        try:
            while self._state == _State.RUNNING:
                self._wake.clear()
                if loop.time() >= self._next_poll:
                    await self._poll()
                    continue
                if self._next_at is not None and self._next_at <= time.time():
                    # a delayed task came due; which one is next is not known any more
                    self._due_now, self._next_at, self._next_known = True, None, False
                    self._due_local = None
                want = self._free_slots() + self.config.prefetch - len(self._ready)
                if want > 0 and self._due_now and self._handlers:
                    if self._held:  # an operator paused intake; _pause_loop watches
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), self.config.poll_interval)
                        continue
                    try:
                        await self._claim(want)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        # Whatever goes wrong, the loop goes on: a worker that stops
                        # claiming while its heartbeat says it lives would hold up the
                        # queue unseen. Claim again, and ask again what is next.
                        self._due_now, self._next_known = True, False
                        self._due_local = None
                        failures += 1
                        self._claim_error = _describe(exc)
                        if isinstance(exc, StoreError):
                            logger.warning("taskyard: claiming failed ({}); retrying", exc)
                        else:
                            logger.opt(exception=exc).error(
                                "taskyard: claiming failed unexpectedly ({}); retrying", exc
                            )
                        pause = min(self.config.poll_interval * 2 ** min(failures - 1, 6), 5.0)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stopping_soon(), pause)
                        continue
                    failures = 0
                    self._claim_error = None
                    continue
                if self._state != _State.RUNNING:
                    break
                await self._idle(loop)
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    async def _claim(self, want: int) -> None:
        """One claim of up to ``want`` tasks, and, when it left nothing due and the next
        due time is not known, the store's answer to ``next_due``. Raises what the
        store raised (the loop records it and claims again after a pause)."""
        self._due_now, self._due_local = False, 0
        types = frozenset(self._handlers)
        claimed_at = utcnow()
        self._claim_in_flight = True  # its slots are spoken for: nothing is claimed on add
        try:
            claimed = await self.store.claim(
                limit=want,
                now=claimed_at,
                worker_id=self.worker_id,
                lease_seconds=self.config.lease_seconds,
                types=types,
                limits=self.config.concurrency_limits,
            )
        finally:
            self._claim_in_flight = False
        if claimed:
            self._ready.update((record.id, record) for record in claimed)
            self._start_ready()
        if self.store.held_back:
            # due tasks left behind keys at their limit: a finish here (or a write
            # elsewhere, the poll) may free one, and then the loop claims again
            self._blocked = True
        if len(claimed) >= want:
            self._due_now = True  # more may be due: claim again once a slot frees
            self._due_local = None
        elif self._due_now:
            pass  # a task came due during the claim: claim again before asking what is next
        elif not self._next_known:
            # nothing else is due now: learn when something will be
            due = await self.store.next_due(types)
            if due is not None and due <= claimed_at and self.store.held_back:
                # due already, yet not taken: its key is at its limit (or another worker
                # holds it). Claiming again at once would spin; a finish here, or a write
                # elsewhere (the poll), frees it.
                self._blocked, self._next_known = True, True
            else:
                self._learn_next(due)

    async def _poll(self) -> None:
        """The periodic cheap check for work written by other processes."""
        self._next_poll = asyncio.get_running_loop().time() + self.config.poll_interval
        try:
            changed = await self.store.changed_elsewhere()
        except Exception as exc:  # cannot tell: claim, and the claim reports what fails
            _log_unexpected(exc, "checking for work written elsewhere")
            changed = True
        if changed:
            self._due_now, self._next_known = True, False
            self._due_local = None

    def _learn_next(self, due: datetime | None) -> None:
        """The store's earliest queued ``run_after`` (None: nothing queued), read after a
        claim left nothing due. Known from now on only if it lies ahead: a task that
        came due since the claim is claimed next, and the store asked again after it."""
        if due is None:
            self._next_known = True
            return
        at = to_epoch(due)
        if at <= time.time():
            self._due_now, self._next_known = True, False
            self._due_local = None
            return
        self._next_known = True
        if self._next_at is None or at < self._next_at:
            self._next_at = at

    def _note_due(self, at: float) -> None:
        """A task this worker can run is queued with ``run_after`` ``at`` (epoch seconds):
        wake the claim loop if it is due, or due before anything known so far."""
        if at <= time.time():
            if self._due_local is not None:
                self._due_local += 1
            if not self._due_now:
                self._due_now = True
                self._wake.set()
        elif self._next_at is None or at < self._next_at:
            self._next_at = at
            self._wake.set()  # the idle wait may have to end sooner

    def _work_may_be_due(self) -> None:
        """Something changed that local bookkeeping cannot follow (new handlers, imported
        tasks): claim, and ask the store what is next."""
        self._due_now, self._next_known = True, False
        self._due_local = None
        self._wake.set()

    def _after_settling(self) -> None:
        """After a finish, cancel or lease sweep: claim again when the store released
        waiting tasks, or when due tasks were blocked (a key's slot may have freed)."""
        if self.store.releases != self._releases_seen or self._blocked:
            self._releases_seen = self.store.releases
            self._blocked = False
            self._work_may_be_due()

    async def _read_pause(self) -> None:
        """Read the store's intake pause (logged when it changes; a resume wakes the
        claim loop)."""
        held = await self.store.intake_paused()
        self._held_read_at = time.monotonic()
        if held != self._held:
            logger.info(
                "taskyard worker {}: intake {} by an operator",
                self.worker_id,
                "paused" if held else "resumed",
            )
            self._held = held
            if not held:
                self._wake.set()

    async def _pause_loop(self) -> None:
        """Watch the store's intake pause beside the claim loop, so a claim never waits
        for it."""
        while True:
            await asyncio.sleep(PAUSE_READ)
            try:
                await self._read_pause()
            except Exception as exc:  # the loop goes on whatever fails
                _log_unexpected(exc, "reading the intake pause")

    def _start_ready(self) -> None:
        """Start claimed tasks while slots are free."""
        while self._ready and len(self._running) < self.config.concurrency:
            self._launch(self._ready.pop(next(iter(self._ready))))

    async def _idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for a wake-up, the next delayed task or the next poll; one timer serves
        every wait until its moment changes."""
        at = self._next_poll
        if self._next_at is not None:
            at = min(at, loop.time() + max(self._next_at - time.time(), 0.0))
        timer = self._timer
        if timer is None or abs(timer.when() - at) > 0.001:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(at, self._on_timer)
        await self._wake.wait()

    def _on_timer(self) -> None:
        self._timer = None
        self._wake.set()

    def _launch(self, record: TaskRecord) -> None:
        self.stats["claimed"] += 1
        scheduled = self._adding.pop(record.id, None)
        if scheduled is not None:  # claimed before its schedule_task returned: events in order
            self._publish(scheduled, TaskStatus.QUEUED)
        self._publish(record, TaskStatus.RUNNING)
        task = asyncio.create_task(self._execute(record), name=f"taskyard-task-{record.id}")
        self._running[record.id] = _Running(record=record, task=task)

    async def _execute(self, record: TaskRecord) -> None:
        registration = self._handlers.get(record.type)
        outcome: Outcome | None = None
        entry = self._running.get(record.id)
        attempt = tracing.consuming(record)  # OpenTelemetry, when configured: a no-op check
        try:
            if registration is None:
                raise PermanentFailure(f"no handler is registered for task type {record.type!r}")
            outcome = await self._attempt(record, registration, entry)
        except asyncio.CancelledError:
            reason = entry.stop_reason if entry else None
            if reason == "timeout" and entry is not None and entry.timeout is not None:
                # as asyncio.timeout did: the attempt fails (a sync handler's thread runs on)
                self.stats["timed_out"] += 1
                outcome = self._failure(record, f"timed out after {entry.timeout:g} s")
            elif entry is not None and entry.thread is not None and not entry.thread.done():
                # A sync handler cannot be interrupted: its thread runs on. Giving the
                # task back now would let another worker run it beside that thread, so
                # its lease is left to expire instead (after this process exits, the
                # thread being a daemon).
                logger.warning(
                    "taskyard task {} ({}): its sync handler is still running and is "
                    "abandoned ({}); the task's lease is left to expire",
                    record.id,
                    record.type,
                    reason or "cancelled",
                )
                outcome = None
            elif reason == "shutdown":
                outcome = self._outcome(
                    record, TaskStatus.QUEUED, run_after=record.run_after, release=True
                )
            elif reason is None:  # cancelled from outside: the program is ending unstopped
                self._abandoned_records.append(record)
                outcome = None
            else:  # cancelled or lease lost: the store already says what happened
                outcome = None
        except Exception as exc:  # a bug of the engine's own: the attempt fails, visibly
            logger.opt(exception=exc).error(
                "taskyard task {} ({}): the engine failed around the handler",
                record.id,
                record.type,
            )
            outcome = self._outcome(
                record, TaskStatus.FAILED, error=f"taskyard failed to run it: {_describe(exc)}"
            )
        finally:
            attempt.done(outcome)
            self._running.pop(record.id, None)
            if self._ready and self._state == _State.RUNNING:
                self._start_ready()
            if self._due_now:
                self._wake.set()  # a slot is free and more may be due
        if outcome is not None:
            self._outcomes.append((record, outcome))
            self._outcome_ready.set()

    async def _attempt(
        self, record: TaskRecord, registration: _Registration, entry: _Running | None
    ) -> Outcome:
        timeout = (
            record.timeout
            or registration.timeout
            or self.config.task_timeouts.get(record.type)
            or self.config.default_timeout
        )
        if timeout is not None and entry is not None:
            self._watch_deadline(entry, timeout)
        try:
            args: tuple[Any, ...] = (record.payload,)
            if registration.wants_context:
                args = (record.payload, await self._context(record))
            if registration.is_async:
                result = await registration.handler(*args)
            else:
                assert self._pool is not None
                call = self._pool.submit(registration.handler, *args)
                if entry is not None:
                    entry.thread = call
                result = await asyncio.wrap_future(call)
        except TimeoutError as exc:  # the handler's own: a time-out arrives as a cancellation
            return self._failure(record, "TimeoutError raised by the handler", exc=exc)
        except Retry as request:
            return self._failure(record, str(request), delay=request.delay)
        except PermanentFailure as exc:
            tracing.record_exception(exc)
            error = str(exc) or "permanent failure"
            trace = _traceback_entry(record, error, exc)
            return self._outcome(record, TaskStatus.FAILED, error=error, traceback=trace)
        except Exception as exc:
            tracing.record_exception(exc)
            return self._failure(record, _describe(exc), exc=exc)
        try:
            result_json = dumps(result, what="result")
        except Exception as exc:  # PayloadError, or anything a strange object raises
            return self._outcome(
                record,
                TaskStatus.FAILED,
                error=f"the handler's result cannot be stored: {_describe(exc)}",
            )
        return self._outcome(record, TaskStatus.COMPLETED, result=result, result_json=result_json)

    def _watch_deadline(self, entry: _Running, timeout: float) -> None:
        """Time the attempt out after ``timeout`` seconds. One timer watches every
        deadline: it is moved only when an earlier deadline arrives (with one timeout
        for all, never), and entries of finished attempts are dropped in bulk."""
        loop = asyncio.get_running_loop()
        entry.timeout = timeout
        entry.deadline = deadline = loop.time() + timeout
        self._deadline_seq += 1
        heapq.heappush(self._deadlines, (deadline, self._deadline_seq, entry))
        if len(self._deadlines) > 2 * len(self._running) + 1024:
            self._deadlines = [item for item in self._deadlines if self._is_current(item[2])]
            heapq.heapify(self._deadlines)
        timer = self._deadline_timer
        if timer is None or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._deadline_timer = loop.call_at(deadline, self._on_deadline)

    def _is_current(self, entry: _Running) -> bool:
        return self._running.get(entry.record.id) is entry

    def _on_deadline(self) -> None:
        self._deadline_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        while deadlines:
            deadline, _, entry = deadlines[0]
            if not self._is_current(entry):
                heapq.heappop(deadlines)
                continue
            if deadline > now:
                self._deadline_timer = loop.call_at(deadline, self._on_deadline)
                return
            heapq.heappop(deadlines)
            if entry.stop_reason is None:
                entry.stop_reason = "timeout"
                entry.task.cancel()

    async def _context(self, record: TaskRecord) -> TaskContext:
        """The second argument of a handler that declares one (one store read)."""
        return TaskContext(
            task_id=record.id,
            task_type=record.type,
            attempt=record.attempts,
            dependency_results=await self.store.dependency_results(record.id),
            schedule_slot=await self._schedule_slot(record),
            workflow_id=record.workflow_id,
        )

    async def _schedule_slot(self, record: TaskRecord) -> datetime | None:
        """The slot a schedule fired ``record`` for. The idempotency key says so (a claim
        does not carry it: it is read only for a task whose payload names a slot)."""
        from taskyard.framework.schedules import SLOT_PAYLOAD_KEY, schedule_slot

        if not (isinstance(record.payload, dict) and SLOT_PAYLOAD_KEY in record.payload):
            return None
        stored = record if record.idempotency_key else await self.store.get(record.id)
        fired = None if stored is None else schedule_slot(stored)
        return None if fired is None else fired[1]

    def _failure(
        self,
        record: TaskRecord,
        error: str,
        *,
        delay: float | None = None,
        exc: BaseException | None = None,
    ) -> Outcome:
        entry = None if exc is None else _traceback_entry(record, error, exc)
        if record.attempts >= record.max_attempts:
            return self._outcome(
                record,
                TaskStatus.FAILED,
                error=f"{error} (attempt {record.attempts} of {record.max_attempts})",
                traceback=entry,
            )
        if delay is None:
            delay = self.config.retry.delay(record.attempts)
        now = utcnow()
        latest = (LATEST_RUN_AFTER - now).total_seconds()
        if not math.isfinite(delay) or delay >= latest:  # Retry(delay=1e308)
            delay = max(latest - 1.0, 0.0)
        return self._outcome(
            record,
            TaskStatus.QUEUED,
            error=error,
            run_after=now + timedelta(seconds=delay),
            now=now,
            traceback=entry,
        )

    def _outcome(
        self,
        record: TaskRecord,
        status: TaskStatus,
        *,
        error: str | None = None,
        result: Any = None,
        result_json: str | None = None,
        run_after: datetime | None = None,
        release: bool = False,
        now: datetime | None = None,
        traceback: dict[str, Any] | None = None,
    ) -> Outcome:
        return Outcome(
            task_id=record.id,
            lease_token=record.lease_token or "",
            status=status,
            finished_at=now or utcnow(),
            result=result,
            result_json=result_json,
            error=error,
            run_after=run_after,
            release=release,
            traceback=traceback,
        )

    async def _flush_outcomes(self) -> None:
        """The one writer of outcomes: takes everything pending and writes it in one call."""
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            await self._flush_pending()
            if self._state != _State.RUNNING and not self._running:
                return  # stopping, and no handler is left to report: stop() flushes the rest

    async def _flush_pending(self, give_up_at: float | None = None) -> None:
        """Write pending outcomes, retrying with backoff while the store refuses. With
        ``give_up_at`` (at stop), outcomes still unwritten then are dropped with an error:
        their tasks keep their lease in the store and run again once it expires."""
        backoff = 0.05
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            ids = [record.id for record, _ in batch]
            self._writing.update(ids)  # wait_for waits for these events, not just the store
            try:
                writing = self.store.finish([outcome for _, outcome in batch])
                if give_up_at is None:
                    applied = await writing
                else:
                    try:
                        applied = await asyncio.wait_for(
                            writing, max(give_up_at - time.monotonic(), 0.01)
                        )
                    except TimeoutError:
                        raise StoreUnavailable("the store did not answer in time") from None
            except Exception as exc:  # StoreError, or a store's bug: keep them, retry
                if not isinstance(exc, StoreError):
                    _log_unexpected(exc, f"recording {len(batch)} outcome(s)")
                self._outcomes[:0] = batch
                if give_up_at is not None and time.monotonic() >= give_up_at:
                    logger.error(
                        "taskyard: {} outcome(s) could not be written before stop ({}); "
                        "those tasks run again once their lease expires",
                        len(self._outcomes),
                        exc,
                    )
                    self._outcomes = []
                    return
                if isinstance(exc, StoreError):
                    logger.warning("taskyard: recording {} outcome(s) failed ({})", len(batch), exc)
                if give_up_at is not None:
                    backoff = min(backoff, max(give_up_at - time.monotonic(), 0.0))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            except BaseException:
                self._outcomes[:0] = batch  # cancelled mid-write: keep them for the next try
                raise
            finally:
                self._writing.difference_update(ids)
            backoff = 0.05
            self._after_settling()
            for (record, outcome), ok in zip(batch, applied, strict=True):
                if ok:
                    self._after_outcome(record, outcome)
                    if outcome.status is TaskStatus.QUEUED and record.type in self._handlers:
                        self._note_due(to_epoch(outcome.run_after or outcome.finished_at))

    def _after_outcome(self, record: TaskRecord, outcome: Outcome) -> None:
        if outcome.release:
            record.attempts -= 1
            record.status = TaskStatus.QUEUED
            self._publish(record, TaskStatus.QUEUED)
            return
        record.error = outcome.error
        record.result = outcome.result
        trace = "" if outcome.traceback is None else "\n" + outcome.traceback["traceback"]
        if outcome.status is TaskStatus.QUEUED:
            self.stats["retried"] += 1
            logger.debug(
                "taskyard task {} ({}) attempt {} failed, retrying at {}: {}{}",
                record.id,
                record.type,
                record.attempts,
                outcome.run_after,
                outcome.error,
                trace,
            )
        elif outcome.status is TaskStatus.FAILED:
            self.stats["failed"] += 1
            logger.warning(
                "taskyard task {} ({}) failed after {} attempt(s): {}{}",
                record.id,
                record.type,
                record.attempts,
                outcome.error,
                trace,
            )
        else:
            self.stats["completed"] += 1
        self._publish(record, outcome.status)

    def _publish(self, record: TaskRecord, status: TaskStatus) -> None:
        if status in TERMINAL_STATUSES:
            self._scheduled_here.pop(record.id, None)
            self._finished_here.set()
            waiters = self._waiters.pop(record.id, None)
            if waiters:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        if self._debug():
            # one line per transition; the keyword arguments also land in the record's
            # "extra" (JSON sinks)
            logger.debug(
                "taskyard task {task_id} ({task_type}) attempt {attempt}: {status}",
                task_id=record.id,
                task_type=record.type,
                attempt=record.attempts,
                status=str(status),
            )
        if self.events.has_subscribers:  # an event object only for someone who listens
            self.events.publish(
                TaskEvent(
                    task_id=record.id,
                    type=record.type,
                    status=status,
                    attempts=record.attempts,
                    error=record.error,
                    result=record.result if status is TaskStatus.COMPLETED else None,
                )
            )

    def worker_info(self) -> dict[str, object]:
        """What this worker says about itself in its heartbeat."""
        return {
            "role": self.role,
            "concurrency": self.config.concurrency,
            "running": len(self._running),
            "task_types": sorted(self.registered_types),
            "claim_error": self._claim_error,
            "intake_paused": self._held,
            **self.stats,
        }

    def _claiming(self) -> bool:
        """Whether the claim loop still runs (a heartbeat must not outlive it)."""
        return any(
            not task.done() for task in self._background if task.get_name() == "taskyard-claim"
        )

    async def _heartbeat_loop(self) -> None:
        fresh = True
        while True:
            try:
                if fresh:  # a record left by a dead process with this id: not ours to obey
                    await self.store.forget_worker(self.worker_id)
                    fresh = False
                if self._claiming():
                    asked = await self.store.record_worker(self.worker_id, self.worker_info())
                    if asked and not self.stop_requested.is_set():
                        logger.info("taskyard worker {} was asked to stop", self.worker_id)
                        self.stop_requested.set()
                else:
                    logger.error("taskyard: the claim loop has stopped; no heartbeat sent")
            except Exception as exc:
                _log_unexpected(exc, "recording the worker heartbeat")
            await asyncio.sleep(self.config.heartbeat)
            leases = (
                [
                    (entry.record.id, entry.record.lease_token or "")
                    for entry in self._running.values()
                ]
                + [(record.id, record.lease_token or "") for record in self._ready.values()]
                + [(record.id, outcome.lease_token) for record, outcome in self._outcomes]
            )
            if not leases:
                continue
            until = utcnow() + timedelta(seconds=self.config.lease_seconds)
            try:
                lost = await self.store.renew_leases(leases, until=until)
            except Exception as exc:
                _log_unexpected(exc, f"renewing {len(leases)} lease(s)")
                continue
            for task_id in lost:
                self._ready.pop(task_id, None)
                entry = self._running.get(task_id)
                if entry is not None:
                    logger.warning("taskyard task {} lost its lease; stopping it", task_id)
                    entry.stop_reason = "lease-lost"
                    entry.task.cancel()

    async def _recover_loop(self) -> None:
        while True:
            try:
                recovered = await self.store.recover_expired(now=utcnow())
            except Exception as exc:  # the loop goes on whatever fails
                _log_unexpected(exc, "recovering expired leases")
            else:
                for record in recovered:
                    logger.warning(
                        "taskyard task {} ({}) lease expired; now {}",
                        record.id,
                        record.type,
                        record.status,
                    )
                    self._publish(record, record.status)
                    if record.status is TaskStatus.QUEUED and record.type in self._handlers:
                        self._note_due(to_epoch(record.run_after))
                if recovered:
                    self._after_settling()
            await asyncio.sleep(self.config.recovery)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} store={self.store!r} state={self._state}>"


# -- helpers -------------------------------------------------------------------------------


def _wants_context(handler: Any) -> bool:
    """Whether ``handler`` takes a second positional argument (the TaskContext)."""
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return False
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
    return positional >= 2


def _is_async_callable(handler: Any) -> bool:
    while hasattr(handler, "func") and not inspect.isfunction(handler):  # functools.partial
        handler = handler.func
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def _positive_number(value: Any) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value)) and value > 0
    except OverflowError:  # an int beyond any float
        return False


def _check_max_attempts(value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_ATTEMPTS_LIMIT
    ):
        raise InvalidTaskOptions(
            f"max_attempts must be an int from 1 to {MAX_ATTEMPTS_LIMIT}, not {shown(value)}"
        )


def _check_text(name: str, value: str) -> None:
    problem = text_problem(value)
    if problem is not None:
        raise InvalidTaskOptions(f"{name} {problem}; pass valid Unicode text")


def _check_due(moment: datetime, given: str) -> datetime:
    if not EARLIEST_RUN_AFTER <= moment < LATEST_RUN_AFTER:
        raise InvalidTaskOptions(
            f"{given} puts the task at {moment.isoformat()}, outside the times taskyard "
            f"accepts ({EARLIEST_RUN_AFTER.isoformat()} up to, not including, "
            f"{LATEST_RUN_AFTER.isoformat()})"
        )
    return moment


def _due_time(
    now: datetime, run_after: datetime | None, delay: float | timedelta | None
) -> datetime:
    if run_after is not None and delay is not None:
        raise InvalidTaskOptions("give run_after or delay, not both")
    if run_after is not None:
        if not isinstance(run_after, datetime):
            raise InvalidTaskOptions(f"run_after must be a datetime, not {shown(run_after)}")
        if run_after.tzinfo is None or run_after.utcoffset() is None:
            raise InvalidTaskOptions(
                f"run_after {run_after.isoformat()} is naive; pass an aware datetime, "
                "for instance datetime.now(UTC) + timedelta(minutes=5)"
            )
        given = f"run_after {run_after.isoformat()}"
        try:
            moment = run_after.astimezone(UTC)
        except OverflowError:  # within a day of year 1 or 9999, in its own zone
            moment = datetime.max.replace(tzinfo=UTC)
        return _check_due(moment, given)
    if delay is None:
        return now
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        try:
            seconds = float(delay)
        except OverflowError:  # an int beyond any float: as far away as can be
            seconds = math.inf if delay > 0 else -math.inf
    else:
        raise InvalidTaskOptions(f"delay must be seconds or a timedelta, not {shown(delay)}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidTaskOptions(
            f"delay must be a finite number of seconds >= 0, not {shown(delay)}"
        )
    latest = (LATEST_RUN_AFTER - now).total_seconds()
    if seconds >= latest:
        raise InvalidTaskOptions(
            f"delay {shown(delay)} puts the task at or after {LATEST_RUN_AFTER.isoformat()}, the "
            "latest time taskyard accepts"
        )
    return now + timedelta(seconds=seconds)


def _log_unexpected(exc: Exception, doing: str) -> None:
    """A StoreError is expected (a warning); anything else is a bug, logged with its
    traceback. Either way the loop that called this goes on."""
    if isinstance(exc, StoreError):
        logger.warning("taskyard: {} failed ({}); retrying", doing, exc)
    else:
        logger.opt(exception=exc).error("taskyard: {} failed unexpectedly ({})", doing, exc)


def _traceback_entry(record: TaskRecord, error: str, exc: BaseException) -> dict[str, Any]:
    """The ``tracebacks`` entry of a failed attempt: where the handler raised, formatted
    the way Python prints it (chained causes included), bounded in size."""
    text = "".join(traceback.format_exception(exc)).rstrip("\n")
    return {
        "attempt": record.attempts,
        "failed_at": iso(utcnow()),
        "error": error,
        "traceback": clip_traceback(text),
    }


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
