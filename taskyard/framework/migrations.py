"""Versioned schema migrations shipped as ``NNNN_name.sql`` files inside a store's package.

Dialect-free: each store reads its own folder with :func:`shipped_migrations` and runs the
SQL itself."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["Migration", "shipped_migrations"]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def shipped_migrations(package: str) -> list[Migration]:
    """The migrations in ``package``'s ``migrations`` folder, in version order."""
    found: list[Migration] = []
    for entry in (resources.files(package) / "migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    return found
