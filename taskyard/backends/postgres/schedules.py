"""The PostgreSQL store's periodic schedules: the ``taskyard_schedules`` table (migration 5).

Plain functions on a connection; ``q`` is the quoted schema name. Firing is
:func:`advance` (the conditional update on the next fire time the firer read) followed,
in the same transaction, by the slot's insert and :func:`fired`; under READ COMMITTED a
racing firer waits for the row, re-checks the condition, and updates nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from taskyard.framework.schedules import ScheduleRecord, schedule_from_definition

_COLUMNS = (
    "name, definition, enabled, next_fire_at, last_fire_at, last_task_id, created_at, updated_at"
)


def _record(row: Sequence[Any]) -> ScheduleRecord:
    return ScheduleRecord(
        schedule=schedule_from_definition(row[0], row[1]),
        enabled=bool(row[2]),
        next_fire_at=row[3],
        last_fire_at=row[4],
        last_task_id=row[5],
        created_at=row[6],
        updated_at=row[7],
    )


async def read_one(conn: asyncpg.Connection, q: str, name: str) -> ScheduleRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM {q}.taskyard_schedules WHERE name = $1", name
    )
    return None if row is None else _record(row)


async def read_all(conn: asyncpg.Connection, q: str) -> list[ScheduleRecord]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM {q}.taskyard_schedules ORDER BY name")
    return [_record(row) for row in rows]


async def insert(conn: asyncpg.Connection, q: str, record: ScheduleRecord) -> bool:
    row = await conn.fetchrow(
        f"INSERT INTO {q}.taskyard_schedules ({_COLUMNS})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING RETURNING 1",
        record.name,
        record.definition_json(),
        record.enabled,
        record.next_fire_at,
        record.last_fire_at,
        record.last_task_id,
        record.created_at,
        record.updated_at,
    )
    return row is not None


async def update(
    conn: asyncpg.Connection, q: str, record: ScheduleRecord, expected_next: datetime | None
) -> bool:
    row = await conn.fetchrow(
        f"UPDATE {q}.taskyard_schedules SET definition = $2, enabled = $3, next_fire_at = $4,"
        " updated_at = $5 WHERE name = $1"
        " AND ($6::timestamptz IS NULL OR next_fire_at = $6::timestamptz) RETURNING 1",
        record.name,
        record.definition_json(),
        record.enabled,
        record.next_fire_at,
        record.updated_at,
        expected_next,
    )
    return row is not None


async def remove(conn: asyncpg.Connection, q: str, name: str) -> bool:
    row = await conn.fetchrow(
        f"DELETE FROM {q}.taskyard_schedules WHERE name = $1 RETURNING 1", name
    )
    return row is not None


async def advance(
    conn: asyncpg.Connection,
    q: str,
    name: str,
    expected_next: datetime,
    next_fire_at: datetime,
    now: datetime,
) -> bool:
    row = await conn.fetchrow(
        f"UPDATE {q}.taskyard_schedules SET next_fire_at = $3, updated_at = $4"
        " WHERE name = $1 AND enabled AND next_fire_at = $2 RETURNING 1",
        name,
        expected_next,
        next_fire_at,
        now,
    )
    return row is not None


async def fired(
    conn: asyncpg.Connection, q: str, name: str, last_fire_at: datetime, ids: Sequence[str]
) -> None:
    await conn.execute(
        f"UPDATE {q}.taskyard_schedules SET last_fire_at = $2,"
        " last_task_id = COALESCE($3, last_task_id) WHERE name = $1",
        name,
        last_fire_at,
        ids[-1] if ids else None,
    )
