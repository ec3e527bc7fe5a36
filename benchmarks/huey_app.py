"""huey for the benchmarks: a SqliteHuey at synchronous NORMAL (like every other system
here) and its tasks, defined in this module so that the benchmark process and the
consumer process (:mod:`benchmarks.huey_consumer`) name them alike."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from huey import SqliteHuey  # type: ignore[import-untyped]
from huey.api import TaskWrapper  # type: ignore[import-untyped]
from huey.storage import SqliteStorage  # type: ignore[import-untyped]


class NormalSyncStorage(SqliteStorage):  # type: ignore[misc]
    """huey's SQLite storage, WAL as by default, with ``synchronous = NORMAL``.

    huey's own ``fsync`` option offers only OFF (False) or FULL (True); NORMAL is what
    taskyard, litequeue and the raw limits use, so huey gets it too."""

    def _create_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._create_connection()
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn


@dataclass
class HueyApp:
    huey: SqliteHuey
    noop: TaskWrapper
    stamp: TaskWrapper


def make_huey(path: str) -> HueyApp:
    huey = SqliteHuey("bench", filename=path, storage_class=NormalSyncStorage)

    def noop(payload: dict[str, Any]) -> None:
        return None

    def stamp(payload: dict[str, Any]) -> float:
        return time.time()

    return HueyApp(
        huey=huey,
        noop=huey.task(name="noop")(noop),
        stamp=huey.task(name="stamp")(stamp),
    )
