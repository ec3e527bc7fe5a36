"""Opening a store for the operations tools.

The tools work on a :class:`~taskyard.framework.operations.StoreOperations`, the store
the container's ``ops_store`` builds from the settings (the SQLite queue file on the
SQLite backends). :func:`opened` opens it without creating storage that is not there:
an operations tool pointed at the wrong path says so instead of leaving an empty queue
behind.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from taskyard.backends.fallback import FallbackStore
from taskyard.backends.sqlite import SqliteStore
from taskyard.backends.sqlite.files import companion_files, file_size, wal_path
from taskyard.framework.operations import StoreOperations

__all__ = ["companion_files", "file_size", "opened", "spill_files", "wal_path"]


@contextlib.asynccontextmanager
async def opened(store: StoreOperations, *, create: bool = False) -> AsyncIterator[StoreOperations]:
    """``store``, open (created when missing only with ``create``), closed on exit.
    Raises StoreError subclasses (nothing there, not a database, a foreign or newer
    schema)."""
    if create:
        await store.open()
    else:
        await store.open_existing()
    try:
        yield store
    finally:
        await store.close()


def spill_files(path: Path) -> dict[Path, int]:
    """Spill files a ``sqlite-with-fallback`` process left for this database (it wrote
    tasks there because SQLite could not take them at its stop), with the number of
    tasks each holds; the next start of that backend imports them."""
    candidates = FallbackStore(SqliteStore(path)).spill_candidates()  # no I/O: just paths
    return {candidate: _spilled_tasks(candidate) for candidate in candidates if candidate.exists()}


def _spilled_tasks(path: Path) -> int:
    try:
        with path.open(encoding="utf-8") as handle:
            header: Any = json.loads(handle.readline() or "{}")
    except (OSError, ValueError):
        return 0
    tasks = header.get("tasks") if isinstance(header, dict) else None
    return tasks if isinstance(tasks, int) else 0
