"""The one place where ``sqlite3`` errors become taskyard errors."""

from __future__ import annotations

import os
import sqlite3

from taskyard.framework.errors import (
    IntegrityError,
    NotADatabase,
    StoreError,
    StoreFull,
    StoreUnavailable,
    TaskyardError,
)

_UNAVAILABLE = {
    "SQLITE_BUSY": "the database is locked by another connection for longer than "
    "task_execution.sqlite_busy_timeout",
    "SQLITE_LOCKED": "the database is locked",
    "SQLITE_READONLY": "the database file or its folder is read-only",
    "SQLITE_IOERR": "a disk I/O error occurred",
    "SQLITE_CANTOPEN": "the database file cannot be opened",
    "SQLITE_PROTOCOL": "the database lock protocol failed",
}


def _folder_writable(path: object) -> bool:
    if not isinstance(path, str | os.PathLike):
        return True
    return os.access(os.path.dirname(os.path.abspath(path)) or ".", os.W_OK)


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says another connection holds the lock (SQLITE_BUSY or
    SQLITE_LOCKED, with any extended code): a write that may be tried again."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    return isinstance(exc, sqlite3.OperationalError) and name.startswith(
        ("SQLITE_BUSY", "SQLITE_LOCKED")
    )


def translate(exc: BaseException, path: object = "the queue database") -> TaskyardError:
    """The taskyard error for a driver error (returned, for ``raise ... from exc``)."""
    if isinstance(exc, TaskyardError):
        return exc
    name = getattr(exc, "sqlite_errorname", "") or ""
    base = name.split("_")[0:2]
    primary = "_".join(base) if base else ""
    text = str(exc)
    if primary == "SQLITE_FULL" or ("full" in text.lower() and "disk" in text.lower()):
        return StoreFull(
            f"{path}: the database or the disk is full ({text}); free space or raise the "
            "size limit. Tasks already accepted are kept."
        )
    if primary in _UNAVAILABLE:
        what = _UNAVAILABLE[primary]
        if primary == "SQLITE_CANTOPEN" and not _folder_writable(path):
            what += ": its folder is read-only (or not writable by this user)"
        return StoreUnavailable(f"{path}: {what} ({text}); retry later")
    if primary == "SQLITE_CORRUPT" or "malformed" in text:
        return StoreError(
            f"{path}: the database file is damaged ({text}); stop the workers and restore "
            "it from a backup (`taskyard backup restore`), or check it with `taskyard validate`"
        )
    if primary == "SQLITE_NOTADB" or "not a database" in text:
        return NotADatabase(f"{path} is not a SQLite database ({text})")
    if isinstance(exc, sqlite3.IntegrityError):
        return IntegrityError(f"{path}: {text}")
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return StoreUnavailable(f"{path}: {text}; retry later")
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"{path}: {type(exc).__name__}: {text}")
    return StoreError(f"{path}: {type(exc).__name__}: {text}")
