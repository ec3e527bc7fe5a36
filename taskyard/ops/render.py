"""Readable output of the operations commands (rich tables); ``--json`` bypasses this."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

from taskyard.framework.models import TaskRecord, from_epoch, iso
from taskyard.framework.operations import FINISHED, STATUSES
from taskyard.ops.backup import BackupFile
from taskyard.ops.health import HealthReport, HealthState
from taskyard.ops.inspect import QueueStatus
from taskyard.ops.units import bytes_text, percent_text, seconds_text


def status_tables(status: QueueStatus) -> Group:
    """``taskyard status``: the queue, its types, the window, the workers, the file."""
    queue = Table(title="queue", show_header=False, title_justify="left")
    queue.add_column("what")
    queue.add_column("value", justify="right")
    for state in STATUSES:
        queue.add_row(state, str(status.depth[state]))
    queue.add_row("all", str(status.total), style="bold")
    queue.add_section()
    queue.add_row("queued and due", str(status.queued_due))
    queue.add_row("queued for later", str(status.queued_delayed))
    queue.add_row("waiting for a retry", str(status.waiting_retry))
    queue.add_row(
        "oldest due task waited",
        seconds_text(status.oldest_queued_age)
        + (f" ({status.oldest_queued_id})" if status.oldest_queued_id else ""),
    )
    queue.add_row("expired leases", str(status.expired_leases))

    types = Table(title="tasks by type", title_justify="left")
    types.add_column("type")
    for state in STATUSES:
        types.add_column(state, justify="right")
    for task_type, counts in status.depth_by_type.items():
        types.add_row(escape(task_type), *(str(counts[state]) for state in STATUSES))

    window = status.window
    last = Table(
        title=f"last {seconds_text(window.seconds)}", show_header=False, title_justify="left"
    )
    last.add_column("what")
    last.add_column("value", justify="right")
    for state in FINISHED:
        last.add_row(state, str(window.finished[state]))
    last.add_row("success rate", percent_text(window.success_rate))
    last.add_row("failure rate", percent_text(window.failure_rate))
    over = "" if window.covered is None else f" (over {seconds_text(window.covered)})"
    last.add_row("throughput", f"{window.throughput * 60:.1f} tasks/min{over}")
    last.add_row("retried tasks", str(window.retried_tasks))
    last.add_row("retry attempts", str(window.retries))
    processing = window.processing
    last.add_row("processing p50", seconds_text(processing.p50))
    last.add_row("processing p95", seconds_text(processing.p95))
    last.add_row("processing p99", seconds_text(processing.p99))

    workers = Table(
        title=f"workers (stale after {seconds_text(status.stale_after)})", title_justify="left"
    )
    for column in ("worker", "host", "pid", "state", "last heartbeat", "running", "types"):
        workers.add_column(column)
    for worker in status.workers:
        info = worker.info
        running = f"{info.get('running', '?')}/{info.get('concurrency', '?')}"
        state = "[green]active[/]" if worker.active else "[red]stale[/]"
        workers.add_row(
            escape(worker.worker_id),
            escape(worker.hostname),
            str(worker.pid),
            state,
            f"{seconds_text(worker.seconds_since_heartbeat)} ago",
            running,
            escape(", ".join(str(t) for t in info.get("task_types", []))),
        )
    if not status.workers:
        workers.add_row("(none)", "", "", "", "", "", "")

    schedules = Table(title="periodic schedules", show_header=False, title_justify="left")
    schedules.add_column("what")
    schedules.add_column("value")
    figures = status.schedules
    if figures:
        schedules.add_row("schedules", f"{figures['enabled']} enabled, {figures['paused']} paused")
        lag = figures["max_lag_seconds"]
        schedules.add_row("lag", "on time" if not lag else f"[red]{seconds_text(lag)} late[/]")
    else:
        schedules.add_row("schedules", "(kept by no store here)")

    database = status.database
    file = Table(title="database", show_header=False, title_justify="left")
    file.add_column("what")
    file.add_column("value")
    file.add_row("path", escape(database.path))
    file.add_row("size", bytes_text(database.size_bytes))
    if database.page_count:  # a file of pages with a WAL (SQLite)
        file.add_row("WAL", bytes_text(database.wal_bytes))
        file.add_row("free pages", f"{database.freelist_count} of {database.page_count}")
    file.add_row("schema version", str(database.schema_version))
    file.add_row("read at", str(iso(from_epoch(status.now))))
    if not status.tables:
        return Group(queue, types, last, workers, schedules, file)
    tables = Table(title="tables", title_justify="left")
    for column in ("table", "live rows", "dead rows", "size", "last vacuum"):
        tables.add_column(column, justify="left" if column in ("table", "last vacuum") else "right")
    for name, stats in status.tables.items():
        vacuumed = stats.last_vacuum
        tables.add_row(
            escape(name),
            str(stats.live_rows),
            str(stats.dead_rows),
            bytes_text(stats.size_bytes),
            "never" if vacuumed is None else f"{seconds_text(status.now - vacuumed)} ago",
        )
    return Group(queue, types, last, workers, schedules, file, tables)


def health_lines(report: HealthReport) -> list[str]:
    colour = {HealthState.OK: "green", HealthState.DEGRADED: "yellow", HealthState.DOWN: "red"}
    lines = [f"[bold {colour[report.state]}]{report.state}[/]"]
    for check in report.checks:
        lines.append(
            f"  [{colour[check.state]}]{check.state!s:8}[/] {check.name}: {escape(check.detail)}"
        )
    return lines


TASK_COLUMNS: tuple[tuple[str, int], ...] = (
    ("id", 32),
    ("type", 6),
    ("status", 9),
    ("tries", 5),
    ("updated", 11),
    ("error", 12),
)
"""The task table's columns and the least width each needs."""
_DROP_ORDER = ("updated", "tries", "type")
"""Which columns give way, in this order, when the width is short (id, status and error
always stay)."""


def task_columns(width: int, type_width: int = 6) -> tuple[list[str], list[str]]:
    """The task table's columns that fit in ``width`` characters, and those left out."""
    kept = [name for name, _ in TASK_COLUMNS]
    least = {**dict(TASK_COLUMNS), "type": type_width}

    def needed() -> int:
        return sum(least[name] for name in kept) + 2 * (len(kept) - 1)

    dropped: list[str] = []
    for name in _DROP_ORDER:
        if needed() <= width:
            break
        kept.remove(name)
        dropped.append(name)
    return kept, dropped


def task_table(records: Sequence[TaskRecord], *, title: str, width: int | None = None) -> Table:
    """The tasks, one row each. With ``width``, the columns that do not fit are left out
    and the caption says which (:func:`task_columns`); a long error ends in "…"."""
    type_width = min(max([len(record.type) for record in records] + [4]), 24)
    everything = [name for name, _ in TASK_COLUMNS]
    kept, dropped = (everything, []) if width is None else task_columns(width, type_width)
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        caption=(
            f"({', '.join(dropped)} left out at this width; --json shows every column)"
            if dropped
            else None
        ),
        caption_justify="left",
    )
    widths = {"id": 32, "type": type_width, "status": 9, "tries": 5, "updated": 11}
    if width is not None:  # the error takes what is left, and ends in "…" when cut
        used = sum(widths[name] for name in kept if name != "error") + 2 * (len(kept) - 1)
        widths["error"] = max(width - used - 1, dict(TASK_COLUMNS)["error"])
    options: dict[str, dict[str, Any]] = {
        "id": {"width": widths["id"]},
        "type": {"overflow": "ellipsis", "width": widths["type"]},
        "status": {"width": widths["status"]},
        "tries": {"justify": "right", "width": widths["tries"]},
        "updated": {"width": widths["updated"]},
        "error": {"overflow": "ellipsis", "max_width": widths.get("error")},
    }
    for name in kept:
        table.add_column(name, no_wrap=True, **options[name])
    for record in records:
        cells = {
            "id": record.id,
            "type": escape(record.type),
            "status": str(record.status),
            "tries": f"{record.attempts}/{record.max_attempts}",
            "updated": record.updated_at.strftime("%m-%d %H:%M"),
            "error": escape(record.error or ""),
        }
        table.add_row(*(cells[name] for name in kept))
    return table


def console() -> Console:
    """The console the commands print tables with. On a terminal it wraps to the
    terminal's width; elsewhere (a pipe, a file) it never wraps, so every row stays on
    one line for grep."""
    probe = Console()
    if probe.is_terminal:
        return probe
    return Console(width=100_000, soft_wrap=True)


def details_table(details: dict[str, Any]) -> Table:
    table = Table(show_header=False)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in details.items():
        if key == "tracebacks":
            for entry in value:  # as Python prints them, one row per failed attempt
                heading = f"attempt {entry['attempt']} failed at {entry['failed_at']}"
                table.add_row(f"traceback {entry['attempt']}", escape(heading))
                table.add_row("", escape(entry["traceback"]))
            continue
        if isinstance(value, dict | list):
            text = json.dumps(value, ensure_ascii=False)
        else:
            text = "" if value is None else str(value)
        table.add_row(key, escape(text))
    return table


def backups_table(backups: Sequence[BackupFile]) -> Table:
    table = Table(title="backups", title_justify="left")
    for column in ("taken at (UTC)", "kind", "size"):
        table.add_column(column, no_wrap=True)
    table.add_column("file", overflow="fold")
    for backup in backups:
        table.add_row(
            backup.taken_at.strftime("%Y-%m-%d %H:%M:%S"),
            backup.kind,
            bytes_text(backup.bytes),
            escape(str(backup.path)),
        )
    return table


def print_group(console: Console, *renderables: Any) -> None:
    for renderable in renderables:
        console.print(renderable)
