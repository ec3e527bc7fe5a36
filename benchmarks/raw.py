"""The physical limits: plain ``sqlite3`` on the same disk, WAL, synchronous NORMAL.

* one INSERT committed per task: the limit of a durable enqueue, one call at a time;
* a three-commit lifecycle per task (insert; claim UPDATE; complete UPDATE), each a
  commit of its own: the limit of a naive queue that stores every transition at once;
* ``executemany`` in one transaction per chunk: the limit of a bulk enqueue.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from benchmarks.common import CHUNK, payload

SCHEMA = """
CREATE TABLE q (
    id      INTEGER PRIMARY KEY,
    status  TEXT NOT NULL DEFAULT 'queued',
    payload TEXT NOT NULL,
    result  TEXT
);
CREATE INDEX q_ready ON q (id) WHERE status = 'queued';
"""

_INSERT = "INSERT INTO q (payload) VALUES (?)"
_CLAIM = (
    "UPDATE q SET status = 'running'"
    " WHERE id = (SELECT id FROM q WHERE status = 'queued' ORDER BY id LIMIT 1)"
    " RETURNING id, payload"
)
_COMPLETE = "UPDATE q SET status = 'completed', result = ? WHERE id = ?"


def connect(folder: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        folder / "raw.db", isolation_level=None
    )  # autocommit: a statement is a commit
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(SCHEMA)
    return conn


def single_commits(folder: Path, tasks: int) -> float:
    conn = connect(folder)
    try:
        start = time.perf_counter()
        for i in range(tasks):
            conn.execute(_INSERT, (json.dumps(payload(i)),))
        return time.perf_counter() - start
    finally:
        conn.close()


def lifecycle(folder: Path, tasks: int) -> float:
    """Insert every task (a commit each), then claim and complete each (two commits)."""
    conn = connect(folder)
    try:
        start = time.perf_counter()
        for i in range(tasks):
            conn.execute(_INSERT, (json.dumps(payload(i)),))
        done = 0
        while (row := conn.execute(_CLAIM).fetchone()) is not None:
            json.loads(row[1])
            conn.execute(_COMPLETE, ("null", row[0]))
            done += 1
        elapsed = time.perf_counter() - start
        if done != tasks:
            raise AssertionError(f"raw lifecycle completed {done} of {tasks}")
        return elapsed
    finally:
        conn.close()


def bulk(folder: Path, tasks: int) -> float:
    conn = connect(folder)
    try:
        start = time.perf_counter()
        for first in range(0, tasks, CHUNK):
            rows = [(json.dumps(payload(i)),) for i in range(first, min(first + CHUNK, tasks))]
            conn.execute("BEGIN")
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()
