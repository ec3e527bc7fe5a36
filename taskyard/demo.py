"""``taskyard demo``: a few thousand tasks of several kinds on the backend the settings
select, with a progress bar and a final report. The command itself is in
:mod:`taskyard.cli`; this module is the workload, its handlers and its report."""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from taskyard.backends.fallback import FallbackStore
from taskyard.backends.sqlite.files import hold_exclusive_lock
from taskyard.framework.engine import TaskEngine
from taskyard.framework.events import EventBus
from taskyard.framework.models import TaskEvent, TaskStatus
from taskyard.framework.protocol import TaskManager

DEMO_OVERRIDES: dict[str, Any] = {
    "task_execution": {
        "run_worker": True,
        "poll_interval": 0.05,
        "retry_initial_delay": 0.02,
        "retry_multiplier": 2.0,
        "retry_max_delay": 0.2,
        "retry_jitter": 0.1,
        "shutdown_timeout": 5.0,
    }
}
"""What the demo changes so that it finishes in seconds: tiny retry delays."""

# Per 20 tasks: the kind of each, so that every kind appears from 20 tasks on.
DEMO_PATTERN = (
    ["resize_image"] * 7
    + ["send_email"] * 5
    + ["flaky"] * 2
    + ["always_fails"]
    + ["slow"]
    + ["delayed"] * 2
    + ["cancelled"] * 2
)
FLAKY_FAILURES = 2
FLAKY_ATTEMPTS = 3
ALWAYS_FAILS_ATTEMPTS = 2
CANCELLED_DELAY = 3600.0
DEMO_SCHEDULE = "demo_heartbeat"
DEMO_SCHEDULE_EVERY = 0.25
DEMO_SCHEDULE_RUNS = 3
"""The demo declares a periodic schedule and waits until it has fired this many slots."""


@dataclass(frozen=True)
class DemoTask:
    kind: str
    task_type: str
    payload: dict[str, Any]
    priority: int
    delay: float | None
    expected: TaskStatus
    expected_attempts: int | None


def plan_demo(total: int, seed: int) -> list[DemoTask]:
    """The tasks the demo schedules, in scheduling order; the same for the same seed."""
    rng = random.Random(seed)
    kinds = [DEMO_PATTERN[index % len(DEMO_PATTERN)] for index in range(total)]
    rng.shuffle(kinds)
    plan: list[DemoTask] = []
    for index, kind in enumerate(kinds):
        priority = rng.randint(1, 9)
        if kind == "resize_image":
            payload: dict[str, Any] = {
                "image": f"photos/{index:05d}.jpg",
                "width": rng.choice([1920, 2560, 4032]),
                "height": rng.choice([1080, 1440, 3024]),
            }
            plan.append(DemoTask(kind, kind, payload, priority, None, TaskStatus.COMPLETED, 1))
        elif kind == "send_email":
            payload = {"to": f"user{index}@example.com", "subject": f"Receipt #{index}"}
            plan.append(DemoTask(kind, kind, payload, priority, None, TaskStatus.COMPLETED, 1))
        elif kind == "flaky":
            plan.append(
                DemoTask(
                    kind,
                    kind,
                    {"key": index},
                    priority,
                    None,
                    TaskStatus.COMPLETED,
                    FLAKY_ATTEMPTS,
                )
            )
        elif kind == "always_fails":
            plan.append(
                DemoTask(
                    kind,
                    kind,
                    {"key": index},
                    priority,
                    None,
                    TaskStatus.FAILED,
                    ALWAYS_FAILS_ATTEMPTS,
                )
            )
        elif kind == "slow":
            payload = {"seconds": round(rng.uniform(0.1, 0.3), 3)}
            plan.append(DemoTask(kind, kind, payload, priority, None, TaskStatus.COMPLETED, 1))
        elif kind == "delayed":
            delay = round(rng.uniform(0.05, 0.5), 3)
            payload = {"image": f"later/{index:05d}.jpg", "width": 800, "height": 600}
            plan.append(
                DemoTask(kind, "resize_image", payload, priority, delay, TaskStatus.COMPLETED, 1)
            )
        else:  # cancelled right after scheduling: held back so that it is surely queued
            payload = {"to": f"unsubscribed{index}@example.com", "subject": "Never sent"}
            plan.append(
                DemoTask(
                    kind,
                    "send_email",
                    payload,
                    priority,
                    CANCELLED_DELAY,
                    TaskStatus.CANCELLED,
                    0,
                )
            )
    return plan


class DemoHandlers:
    """The demo's task handlers. ``flaky`` counts attempts per payload key."""

    def __init__(self) -> None:
        self.flaky_attempts: Counter[int] = Counter()
        self.slots: list[str] = []

    async def resize_image(self, payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {
            "thumbnail": payload["image"].replace(".jpg", ".thumb.jpg"),
            "width": payload["width"] // 8,
            "height": payload["height"] // 8,
        }

    def send_email(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Synchronous, so it runs in the engine's thread pool."""
        time.sleep(0.001)  # the SMTP round trip
        digest = hashlib.sha256(f"{payload['to']}|{payload['subject']}".encode()).hexdigest()
        return {"message_id": f"<{digest[:16]}@taskyard.demo>"}

    async def flaky(self, payload: dict[str, Any]) -> dict[str, Any]:
        key = int(payload["key"])
        self.flaky_attempts[key] += 1
        attempt = self.flaky_attempts[key]
        if attempt <= FLAKY_FAILURES:
            raise ConnectionError(f"upstream unavailable (attempt {attempt})")
        return {"succeeded_on_attempt": attempt}

    async def always_fails(self, payload: dict[str, Any]) -> None:
        raise ValueError(f"record {payload['key']} is corrupt")

    async def slow(self, payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(float(payload["seconds"]))
        return {"slept": payload["seconds"]}

    async def heartbeat(self, payload: dict[str, Any]) -> str:
        """The periodic schedule's task: notes the slot it serves."""
        self.slots.append(str(payload["schedule_slot"]))
        return str(payload["schedule_slot"])

    async def register(self, manager: TaskManager) -> None:
        await manager.register_task("heartbeat", self.heartbeat)
        await manager.register_task("resize_image", self.resize_image)
        await manager.register_task("send_email", self.send_email)
        await manager.register_task("flaky", self.flaky, max_attempts=FLAKY_ATTEMPTS)
        await manager.register_task(
            "always_fails", self.always_fails, max_attempts=ALWAYS_FAILS_ATTEMPTS
        )
        await manager.register_task("slow", self.slow)


@dataclass
class DemoProgress:
    """Counts terminal events as the engine publishes them (subscribers must be quick)."""

    total: int
    finished: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    scheduled: int = 0

    def on_event(self, event: TaskEvent) -> None:
        if event.type == "heartbeat":  # the periodic schedule's, reported on their own
            return
        if event.status.is_terminal:
            self.finished[str(event.status)] += 1
        elif event.status is TaskStatus.QUEUED and event.error is not None:
            self.retries += 1

    @property
    def done(self) -> int:
        return sum(self.finished.values())

    def line(self) -> str:
        percent = 100 * self.done / self.total if self.total else 100.0
        counts = ", ".join(
            f"{status} {self.finished[status]}" for status in ("completed", "failed", "cancelled")
        )
        scheduling = (
            f"; {self.scheduled}/{self.total} scheduled" if self.scheduled < self.total else ""
        )
        return f"{self.done}/{self.total} finished ({percent:.0f}%): {counts}{scheduling}"


@dataclass
class DemoResult:
    backend: str
    environment: str
    elapsed: float
    rows: list[tuple[DemoTask, dict[str, Any] | None]]
    timed_out: bool
    fallback: dict[str, int] = field(default_factory=dict)
    schedule_slots: list[str] = field(default_factory=list)
    """The slots the demo's periodic schedule fired and ran (once each)."""
    scheduled: bool = False
    """Whether the demo declared its periodic schedule (a TaskEngine manager)."""

    def mismatches(self) -> list[str]:
        problems: list[str] = []
        if self.scheduled and len(self.schedule_slots) < DEMO_SCHEDULE_RUNS:
            problems.append(
                f"the periodic schedule ran {len(self.schedule_slots)} slot(s), expected at "
                f"least {DEMO_SCHEDULE_RUNS}"
            )
        if len(set(self.schedule_slots)) != len(self.schedule_slots):
            problems.append("the periodic schedule ran a slot twice")
        for task, status in self.rows:
            if status is None:
                problems.append(f"{task.kind}: the task is unknown to the manager")
                continue
            if status["status"] != str(task.expected):
                problems.append(
                    f"{task.kind} {status['id']}: {status['status']}, expected {task.expected}"
                    + (f" ({status['error']})" if status["error"] else "")
                )
            elif task.expected_attempts is not None and (
                status["attempts"] != task.expected_attempts
            ):
                problems.append(
                    f"{task.kind} {status['id']}: {status['attempts']} attempt(s), "
                    f"expected {task.expected_attempts}"
                )
        return problems


async def run_demo(
    manager: TaskManager,
    events: EventBus,
    plan: list[DemoTask],
    *,
    backend: str,
    environment: str,
    timeout: float,
    console: Console,
    outage: Outage | None = None,
) -> DemoResult:
    progress = DemoProgress(total=len(plan))
    unsubscribe = events.subscribe(progress.on_event)
    handlers = DemoHandlers()
    timed_out = False
    try:
        async with manager:
            await handlers.register(manager)
            if isinstance(manager, TaskEngine):
                await manager.add_schedule(
                    DEMO_SCHEDULE, "heartbeat", every=DEMO_SCHEDULE_EVERY, missed="skip"
                )
            started = time.perf_counter()
            ids: list[str] = []

            async def schedule_then_wait() -> None:
                for index, task in enumerate(plan):
                    if outage is not None and index == len(plan) // 3:
                        await outage.begin(console)
                    task_id = await manager.schedule_task(
                        task.task_type, task.payload, priority=task.priority, delay=task.delay
                    )
                    if task.expected is TaskStatus.CANCELLED:
                        await manager.cancel_task(task_id)
                    ids.append(task_id)
                    progress.scheduled += 1
                await manager.wait_all(timeout=timeout)

            # the progress shows from the first task on, scheduling included
            waiting = asyncio.create_task(schedule_then_wait())
            await show_progress(console, progress, waiting)
            try:
                await waiting
            except TimeoutError:
                timed_out = True
            elapsed = time.perf_counter() - started
            if outage is not None:
                await outage.end()
                await wait_for_recovery(manager, timeout)
            if isinstance(manager, TaskEngine):
                await _schedule_runs(manager, handlers, timeout)
            statuses = [await manager.get_task_status(task_id) for task_id in ids]
            fallback = _fallback_of(manager)
            stats = dict(vars(fallback.stats)) if fallback is not None else {}
    finally:
        unsubscribe()
        if outage is not None:
            await outage.end()
    return DemoResult(
        backend=backend,
        environment=environment,
        elapsed=elapsed,
        rows=list(zip(plan, statuses, strict=True)),
        timed_out=timed_out,
        fallback=stats,
        schedule_slots=list(handlers.slots),
        scheduled=isinstance(manager, TaskEngine),
    )


async def _schedule_runs(manager: TaskEngine, handlers: DemoHandlers, timeout: float) -> None:
    """Wait (bounded) until the demo schedule has run its slots, then remove it: a demo
    leaves no schedule behind in a queue file that real workers may use later."""
    deadline = time.monotonic() + timeout
    while len(handlers.slots) < DEMO_SCHEDULE_RUNS and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await manager.store.remove_schedule(DEMO_SCHEDULE)


class Outage:
    """Another connection holds an exclusive lock on the database for a while: what a
    long-running writer, a backup tool or a stuck process does to a queue."""

    def __init__(self, db: Path, seconds: float) -> None:
        self.db = db
        self.seconds = seconds
        self._thread: asyncio.Future[None] | None = None
        self._locked = threading.Event()
        self._release = threading.Event()

    def _hold(self) -> None:
        hold_exclusive_lock(
            self.db, seconds=self.seconds, locked=self._locked, release=self._release
        )

    async def begin(self, console: Console) -> None:
        loop = asyncio.get_running_loop()
        self._thread = loop.run_in_executor(None, self._hold)
        await loop.run_in_executor(None, self._locked.wait)
        console.print(
            f"outage: the database is locked by another connection for {self.seconds:g} s",
            highlight=False,
        )

    async def end(self) -> None:
        if self._thread is not None:
            await self._thread
            self._thread = None


def _fallback_of(manager: TaskManager) -> FallbackStore | None:
    """The fallback store a manager runs on, if it does."""
    store = manager.store if isinstance(manager, TaskEngine) else None
    return store if isinstance(store, FallbackStore) else None


async def wait_for_recovery(manager: TaskManager, timeout: float) -> None:
    """Wait until a fallback manager has moved everything back into SQLite."""
    fallback = _fallback_of(manager)
    deadline = time.monotonic() + timeout
    while fallback is not None and fallback.degraded and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def show_progress(
    console: Console, progress: DemoProgress, waiting: asyncio.Task[None]
) -> None:
    """A progress bar on a terminal; a plain line every second otherwise (CI logs)."""
    if console.is_terminal:
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]tasks"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            row = bar.add_task("tasks", total=progress.total, detail="")
            while not waiting.done():
                detail = f"retries {progress.retries}, failed {progress.finished['failed']}"
                if progress.scheduled < progress.total:
                    detail += f", scheduled {progress.scheduled}"
                bar.update(row, completed=progress.done, detail=detail)
                await asyncio.wait([waiting], timeout=0.1)
            bar.update(row, completed=progress.done)
        return
    last = time.monotonic()
    printed = ""
    while not waiting.done():
        await asyncio.wait([waiting], timeout=0.2)
        if time.monotonic() - last >= 1.0:
            printed = f"progress: {progress.line()}"
            console.print(printed, highlight=False)
            last = time.monotonic()
    final = f"progress: {progress.line()}"
    if final != printed:  # the last line once, not twice
        console.print(final, highlight=False)


def print_report(console: Console, result: DemoResult, problems: list[str]) -> None:
    by_type: dict[str, Counter[str]] = {}
    for task, status in result.rows:
        counts = by_type.setdefault(task.task_type, Counter())
        counts["tasks"] += 1
        if status is not None:
            counts[status["status"]] += 1
            counts["retries"] += max(int(status["attempts"]) - 1, 0)
    table = Table(title="taskyard demo: tasks by type")
    table.add_column("type")
    for column in ("tasks", "completed", "failed", "cancelled", "retries"):
        table.add_column(column, justify="right")
    totals: Counter[str] = Counter()
    for task_type in sorted(by_type):
        counts = by_type[task_type]
        totals.update(counts)
        table.add_row(
            task_type,
            *(str(counts[c]) for c in ("tasks", "completed", "failed", "cancelled", "retries")),
        )
    table.add_section()
    table.add_row(
        "all",
        *(str(totals[c]) for c in ("tasks", "completed", "failed", "cancelled", "retries")),
        style="bold",
    )
    console.print(table)

    finished = sum(totals[c] for c in ("completed", "failed", "cancelled"))
    throughput = finished / result.elapsed if result.elapsed > 0 else 0.0
    summary = Table(title="summary", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    summary.add_row("backend", result.backend)
    summary.add_row("environment", result.environment)
    summary.add_row("tasks finished", f"{finished} of {totals['tasks']}")
    kinds = Counter(task.kind for task, _ in result.rows)
    summary.add_row("scheduled with a delay", str(kinds["delayed"] + kinds["cancelled"]))
    summary.add_row("cancelled right after scheduling", str(kinds["cancelled"]))
    summary.add_row("retries", str(totals["retries"]))
    if result.schedule_slots:
        summary.add_row(
            f"periodic schedule (every {DEMO_SCHEDULE_EVERY:g} s)",
            f"{len(result.schedule_slots)} slots fired, each once",
        )
    if result.fallback:
        summary.add_row("accepted into memory (fallback)", str(result.fallback["fallbacks"]))
        summary.add_row("moved back into SQLite", str(result.fallback["moved"]))
    summary.add_row("elapsed", f"{result.elapsed:.2f} s")
    summary.add_row("throughput", f"{throughput:,.0f} tasks/s")
    ok = not problems and not result.timed_out
    summary.add_row("result", "[green]as expected[/]" if ok else "[red]NOT as expected[/]")
    console.print(summary)
    if result.timed_out:
        console.print("[red]timed out waiting for the tasks to finish[/]")
    for problem in problems[:10]:
        console.print(f"[red]unexpected:[/] {escape(problem)}", highlight=False)
    if len(problems) > 10:
        console.print(f"[red]... and {len(problems) - 10} more[/]")
