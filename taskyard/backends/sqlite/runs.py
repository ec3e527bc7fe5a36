"""Runs kept in the queue's own database, so they survive restarts with the tasks."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from taskyard.backends.sqlite import schema
from taskyard.backends.sqlite.errors import translate
from taskyard.framework.models import to_epoch
from taskyard.framework.runs import Run


class SqliteRunPersistence:
    """A :class:`~taskyard.framework.runs.RunPersistence` on the queue file.

    Writes are small single-row upserts in WAL mode; they run on the caller's thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        synchronous: str = "NORMAL",
    ) -> None:
        self.path = Path(path)
        schema.prepare_file(self.path)
        try:
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=busy_timeout, check_same_thread=False
            )
            schema.open_queue(
                self._conn, self.path, synchronous=synchronous, busy_timeout=busy_timeout
            )
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    def close(self) -> None:
        self._conn.close()

    def load(self) -> list[Run]:
        try:
            rows = self._conn.execute(
                "SELECT data FROM taskyard_runs ORDER BY created_at"
            ).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
        return [Run.from_dict(json.loads(row[0])) for row in rows]

    def save(self, runs: Iterable[Run], changed: Iterable[Run]) -> None:
        rows = [
            (run.run_id, run.module_id, str(run.status), to_epoch(run.created_at),
             json.dumps(run.to_dict()))
            for run in changed
        ]  # fmt: skip
        if not rows:
            return
        try:
            self._conn.executemany(
                "INSERT INTO taskyard_runs (run_id, module_id, status, created_at, data)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET"
                " status = excluded.status, data = excluded.data",
                rows,
            )
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    def remove(self, runs: Iterable[Run], removed: Iterable[str]) -> None:
        try:
            self._conn.executemany(
                "DELETE FROM taskyard_runs WHERE run_id = ?", [(run_id,) for run_id in removed]
            )
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
