"""The SQLite store's periodic schedules: the ``taskyard_schedules`` table (migration 6).

Reads are plain functions on a connection; writes are operations for the store's
group-commit queue. Firing (:func:`op_fire`) updates the schedule's next fire time under
the condition that it still holds what the firer read, and inserts the slot's task in the
same transaction, so racing processes fire a slot once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from taskyard.framework.models import from_epoch, to_epoch
from taskyard.framework.schedules import ScheduleRecord, schedule_from_definition

_COLUMNS = (
    "name, definition, enabled, next_fire_at, last_fire_at, last_task_id, created_at, updated_at"
)
_SAME_TIME = "ABS(next_fire_at - ?) < 0.0000005"  # REAL seconds: equal to the microsecond

Operation = Callable[[sqlite3.Connection], Any]


def _record(row: Sequence[Any]) -> ScheduleRecord:
    schedule = schedule_from_definition(row[0], row[1])
    record = ScheduleRecord(
        schedule=schedule,
        enabled=bool(row[2]),
        next_fire_at=_time(row[3]),
        last_fire_at=from_epoch(row[4]),
        last_task_id=row[5],
        created_at=_time(row[6]),
        updated_at=_time(row[7]),
    )
    return record


def _time(value: float) -> datetime:
    moment = from_epoch(value)
    assert moment is not None
    return moment


def read_one(conn: sqlite3.Connection, name: str) -> ScheduleRecord | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM taskyard_schedules WHERE name = ?", (name,)
    ).fetchone()
    return None if row is None else _record(row)


def read_all(conn: sqlite3.Connection) -> list[ScheduleRecord]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM taskyard_schedules ORDER BY name").fetchall()
    return [_record(row) for row in rows]


def op_insert(record: ScheduleRecord) -> Operation:
    def run(conn: sqlite3.Connection) -> bool:
        cursor = conn.execute(
            f"INSERT INTO taskyard_schedules ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING",
            (
                record.name,
                record.definition_json(),
                int(record.enabled),
                to_epoch(record.next_fire_at),
                None if record.last_fire_at is None else to_epoch(record.last_fire_at),
                record.last_task_id,
                to_epoch(record.created_at),
                to_epoch(record.updated_at),
            ),
        )
        return bool(cursor.rowcount)

    return run


def op_update(record: ScheduleRecord, expected_next: datetime | None) -> Operation:
    def run(conn: sqlite3.Connection) -> bool:
        sql = (
            "UPDATE taskyard_schedules SET definition = ?, enabled = ?, next_fire_at = ?,"
            " updated_at = ? WHERE name = ?"
        )
        params: list[Any] = [
            record.definition_json(),
            int(record.enabled),
            to_epoch(record.next_fire_at),
            to_epoch(record.updated_at),
            record.name,
        ]
        if expected_next is not None:
            sql += f" AND {_SAME_TIME}"
            params.append(to_epoch(expected_next))
        return bool(conn.execute(sql, params).rowcount)

    return run


def op_remove(name: str) -> Operation:
    def run(conn: sqlite3.Connection) -> bool:
        return bool(conn.execute("DELETE FROM taskyard_schedules WHERE name = ?", (name,)).rowcount)

    return run


def op_fire(
    name: str,
    expected_next: datetime,
    add: Operation,
    next_fire_at: datetime,
    last_fire_at: datetime | None,
    now: datetime,
) -> Operation:
    """``add`` is the store's insert operation for the slot's tasks (it returns ids)."""

    def run(conn: sqlite3.Connection) -> list[str] | None:
        moved = conn.execute(
            "UPDATE taskyard_schedules SET next_fire_at = ?, updated_at = ?"
            f" WHERE name = ? AND enabled = 1 AND {_SAME_TIME}",
            (to_epoch(next_fire_at), to_epoch(now), name, to_epoch(expected_next)),
        ).rowcount
        if not moved:
            return None
        ids: list[str] = add(conn)
        if last_fire_at is not None:
            conn.execute(
                "UPDATE taskyard_schedules SET last_fire_at = ?,"
                " last_task_id = COALESCE(?, last_task_id) WHERE name = ?",
                (to_epoch(last_fire_at), ids[-1] if ids else None, name),
            )
        return ids

    return run
