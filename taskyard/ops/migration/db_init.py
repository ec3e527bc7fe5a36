"""``taskyard db init``: create the queue database, or upgrade it to this taskyard's schema."""

from __future__ import annotations

import os
from dataclasses import dataclass

from taskyard.backends.sqlite.files import init_file
from taskyard.framework.operations import InitFigures, StoreOperations

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


def report_of(figures: InitFigures) -> InitReport:
    return InitReport(
        path=figures.location,
        created=figures.created,
        from_version=figures.from_version,
        to_version=figures.to_version,
        applied=figures.applied,
    )


async def initialize(store: StoreOperations) -> InitReport:
    """Create ``store``'s storage, or upgrade it to this taskyard's schema; idempotent.
    Refuses (SchemaError) storage that is not a taskyard queue, unchanged."""
    return report_of(await store.initialize())


def init_database(
    path: str | os.PathLike[str], *, synchronous: str = "NORMAL", busy_timeout: float = 5.0
) -> InitReport:
    """:func:`initialize` for the SQLite queue file at ``path``, without an event loop."""
    return report_of(init_file(path, synchronous=synchronous, busy_timeout=busy_timeout))
