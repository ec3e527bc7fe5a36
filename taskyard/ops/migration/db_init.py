"""``taskyard db init``: create the queue database, or upgrade it to this taskyard's schema."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from taskyard.backends.sqlite import schema
from taskyard.backends.sqlite.errors import translate

# -- the database --------------------------------------------------------------------------


@dataclass(frozen=True)
class InitReport:
    path: str
    created: bool
    from_version: int
    to_version: int
    applied: list[int]

    def describe(self) -> str:
        if self.created:
            return f"created {self.path} (schema version {self.to_version})"
        if self.applied:
            return (
                f"upgraded {self.path} from schema version {self.from_version} to "
                f"{self.to_version} (migrations {', '.join(map(str, self.applied))})"
            )
        return f"{self.path} is already at schema version {self.to_version}; nothing to do"


def init_database(
    path: str | os.PathLike[str], *, synchronous: str = "NORMAL", busy_timeout: float = 5.0
) -> InitReport:
    """Create the queue database at ``path``, or upgrade it to this taskyard's schema;
    idempotent. Refuses (SchemaError) a file that is not a taskyard queue, unchanged."""
    target = Path(path)
    existed = target.exists() and target.stat().st_size > 0
    schema.prepare_file(target)
    try:
        conn = sqlite3.connect(target, isolation_level=None, timeout=busy_timeout)
    except sqlite3.Error as exc:
        raise translate(exc, target) from exc
    try:
        before = schema.stored_version(conn, target)
        applied = schema.open_queue(
            conn, target, synchronous=synchronous, busy_timeout=busy_timeout
        )
    except sqlite3.Error as exc:
        raise translate(exc, target) from exc
    finally:
        conn.close()
    return InitReport(
        path=str(target),
        created=not existed or before == 0,
        from_version=before,
        to_version=schema.SCHEMA_VERSION,
        applied=applied,
    )
