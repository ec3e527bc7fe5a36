"""Runs kept in the queue's PostgreSQL schema, so they survive restarts with the tasks.

:class:`~taskyard.framework.runs.RunPersistence` is synchronous and called on the event
loop, and asyncpg is asynchronous: the persistence owns a small thread with its own
event loop and connection. ``load`` waits for its answer (once, at start-up); ``save``
and ``remove`` only hand the change to the thread, which writes it (a run that cannot
be written now, the server being away, is kept and written with the next change or
retry), so the caller's loop never waits for the server. The thread holds no
connection between writes (runs change rarely), so nothing is left open when the
registry is dropped without being closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterable
from typing import Any

import asyncpg
from loguru import logger

from taskyard.backends.postgres import schema
from taskyard.backends.postgres.errors import translate
from taskyard.framework.dsn import redact_dsn
from taskyard.framework.errors import TaskyardError
from taskyard.framework.runs import Run

RETRY_EVERY = 1.0


class PostgresRunPersistence:
    """A :class:`~taskyard.framework.runs.RunPersistence` in ``<schema>.taskyard_runs``."""

    def __init__(self, dsn: str, *, schema_name: str = "taskyard", timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.schema = schema_name
        self._q = schema.quoted_schema(schema_name)
        self.timeout = timeout
        self.where = f"PostgreSQL queue {redact_dsn(dsn)} (schema {schema_name})"
        self._dirty: dict[str, Run] = {}
        self._removed: set[str] = set()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._writing: asyncio.Lock | None = None
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="taskyard-pg-runs", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._open())
        except BaseException:
            self.close()
            raise

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout * 3)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await asyncpg.connect(
            self.dsn,
            timeout=self.timeout,
            command_timeout=self.timeout,
            server_settings={"application_name": "taskyard-runs"},
        )
        try:
            yield conn
        finally:
            if conn.is_closed():
                conn.terminate()
            else:
                await conn.close(timeout=self.timeout)

    async def _open(self) -> None:
        try:
            async with self._connection() as conn:
                await schema.migrate(conn, self.schema, self.where)
        except TaskyardError:
            raise
        except Exception as exc:
            raise translate(exc, self.where) from exc

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self._flush())
        except Exception as exc:
            logger.warning("taskyard: runs not written at close: {}", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def load(self) -> list[Run]:
        async def run() -> list[Run]:
            try:
                async with self._connection() as conn:
                    rows = await conn.fetch(
                        f"SELECT data FROM {self._q}.taskyard_runs ORDER BY created_at"
                    )
            except Exception as exc:
                raise translate(exc, self.where) from exc
            return [Run.from_dict(json.loads(row[0])) for row in rows]

        result: list[Run] = self._call(run())
        return result

    def save(self, runs: Iterable[Run], changed: Iterable[Run]) -> None:
        with self._lock:
            for run in changed:
                self._dirty[run.run_id] = Run.from_dict(run.to_dict())
                self._removed.discard(run.run_id)
        self._schedule()

    def remove(self, runs: Iterable[Run], removed: Iterable[str]) -> None:
        with self._lock:
            for run_id in removed:
                self._removed.add(run_id)
                self._dirty.pop(run_id, None)
        self._schedule()

    def _schedule(self) -> None:
        asyncio.run_coroutine_threadsafe(self._flush(), self._loop)

    async def _flush(self) -> None:
        if self._writing is None:
            self._writing = asyncio.Lock()
        async with self._writing:
            await self._write_dirty()

    async def _write_dirty(self) -> None:
        while True:
            with self._lock:
                dirty, self._dirty = self._dirty, {}
                removed, self._removed = self._removed, set()
            if not dirty and not removed:
                return
            try:
                async with self._connection() as conn, conn.transaction():
                    if dirty:
                        runs = list(dirty.values())
                        await conn.execute(
                            f"INSERT INTO {self._q}.taskyard_runs (run_id, module_id, status,"
                            " created_at, data) SELECT * FROM unnest($1::text[], $2::text[],"
                            " $3::text[], $4::timestamptz[], $5::json[])"
                            " ON CONFLICT (run_id) DO UPDATE SET status = excluded.status,"
                            " data = excluded.data",
                            [run.run_id for run in runs],
                            [run.module_id for run in runs],
                            [str(run.status) for run in runs],
                            [run.created_at for run in runs],
                            [json.dumps(run.to_dict()) for run in runs],
                        )
                    if removed:
                        await conn.execute(
                            f"DELETE FROM {self._q}.taskyard_runs WHERE run_id = ANY($1::text[])",
                            sorted(removed),
                        )
            except Exception as exc:
                logger.warning(
                    "taskyard: {} run change(s) not written yet: {}",
                    len(dirty) + len(removed),
                    translate(exc, self.where),
                )
                with self._lock:
                    for run_id, run in dirty.items():
                        self._dirty.setdefault(run_id, run)
                    self._removed |= removed - set(self._dirty)
                await asyncio.sleep(RETRY_EVERY)
