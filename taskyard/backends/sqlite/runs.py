"""Runs kept in the queue's own database, so they survive restarts with the tasks."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from loguru import logger

from taskyard.backends.sqlite import schema
from taskyard.backends.sqlite.errors import translate
from taskyard.framework.models import to_epoch
from taskyard.framework.runs import Run

WRITE_WAIT = 0.05
"""Seconds a run write may wait for the lock: it runs on the event loop."""


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
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
        try:
            schema.open_queue(
                self._conn, self.path, synchronous=synchronous, busy_timeout=busy_timeout
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(WRITE_WAIT * 1000)}")
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, sqlite3.Error):
                raise translate(exc, self.path) from exc
            raise
        self._dirty: dict[str, Run] = {}

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
        """Upsert the changed runs. Writes run on the caller's thread (the event loop),
        so they never wait long for a lock: a run that cannot be written now is kept and
        written with the next save."""
        self._dirty.update((run.run_id, run) for run in changed)
        rows = [
            (run.run_id, run.module_id, str(run.status), to_epoch(run.created_at),
             json.dumps(run.to_dict()))
            for run in self._dirty.values()
        ]  # fmt: skip
        if not rows:
            return
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT INTO taskyard_runs (run_id, module_id, status, created_at, data)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET"
                    " status = excluded.status, data = excluded.data",
                    rows,
                )
        except sqlite3.OperationalError as exc:
            logger.warning("taskyard: {} run(s) not written yet: {}", len(rows), exc)
            return
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
        self._dirty.clear()

    def remove(self, runs: Iterable[Run], removed: Iterable[str]) -> None:
        try:
            self._conn.executemany(
                "DELETE FROM taskyard_runs WHERE run_id = ?", [(run_id,) for run_id in removed]
            )
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
