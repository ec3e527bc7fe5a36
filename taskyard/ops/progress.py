"""Progress of long operations: a rich bar on a terminal, plain lines otherwise (CI logs,
pipes), on stderr so that stdout stays for results.

The operations take a plain callback, ``progress(done, total)``, and know nothing of
the display; :func:`progress_reporter` makes one. It may be called from another thread
(backups report from the store's thread).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from taskyard.framework.operations import ProgressCallback, no_progress

__all__ = ["ProgressCallback", "no_progress", "progress_reporter"]

PLAIN_INTERVAL = 1.0
"""Seconds between plain progress lines."""


@contextlib.contextmanager
def progress_reporter(
    description: str, *, unit: str = "", console: Console | None = None
) -> Iterator[ProgressCallback]:
    """A progress callback for the duration of the block."""
    console = console or Console(stderr=True)
    if console.is_terminal:
        columns = [
            SpinnerColumn(),
            TextColumn(f"[bold]{description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
        ]
        with Progress(*columns, console=console, transient=False) as bar:
            row = bar.add_task(description, total=None)

            def update(done: int, total: int) -> None:
                bar.update(row, completed=done, total=total or None)

            yield update
        return

    lock = threading.Lock()
    last: list[float] = [0.0]
    latest: list[tuple[int, int] | None] = [None]

    def line(done: int, total: int) -> str:
        if total:
            return f"{description}: {done}/{total} {unit} ({100 * done / total:.0f}%)".strip()
        return f"{description}: {done} {unit}".strip()

    def plain(done: int, total: int) -> None:
        with lock:
            first = latest[0] is None
            latest[0] = (done, total)
            now = time.monotonic()
            if first:
                console.print(f"{description} ...", highlight=False, soft_wrap=True)
                last[0] = now
            elif now - last[0] >= PLAIN_INTERVAL:
                last[0] = now
                console.print(line(done, total), highlight=False, soft_wrap=True)

    yield plain
    final = latest[0]
    if final is not None and final != (0, 0):
        console.print(line(*final), highlight=False, soft_wrap=True)
