"""Backups of a queue file with SQLite's online backup API, safe while workers run.

**Create.** The copy is taken page by page (so it can report progress) inside one read
transaction on the source: in WAL mode that pins a snapshot, so the copy is exactly the
queue as it was at that instant, workers keep writing meanwhile, and the backup never
has to restart because of their writes (without the pinned snapshot, the backup API
restarts the copy after every foreign write, and never finishes under a busy worker).
The copy is written to a temporary name, switched to a self-contained rollback-journal
file, verified (opened read-only: ``PRAGMA integrity_check``, the schema, and the
number of tasks in each status against the snapshot), and only then renamed to its
final name. Backups are readable by their owner only: payloads may be private.

**Restore.** The backup is verified first. Active workers (a heartbeat within
``stale_after`` seconds) make a restore refuse, unless forced. The live queue is first
copied aside (``<name>-before-restore-<time>.db`` in the backup folder), then the backup
is copied *into* the live file through the backup API, so connections other processes
hold stay valid and see the restored content. Worker records of the backup's time are
dropped (workers write theirs again). Tasks that were running when the backup was
taken come back after their lease expires, as after a crash: at least once.

Backup names: ``<database stem>-<UTC time>.db`` in the backup folder, so that a name
sorts by time; ``list`` and ``prune`` read the names, never the file times.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loguru import logger

from taskyard._platform import remove
from taskyard.framework.errors import (
    IntegrityError,
    OperationRefused,
    SchemaError,
    StoreError,
)
from taskyard.framework.operations import StoreOperations
from taskyard.framework.store import Capability
from taskyard.ops.database import companion_files, opened
from taskyard.ops.progress import ProgressCallback, no_progress

TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
BEFORE_RESTORE = "before-restore"


def backup_name(db_path: Path, moment: datetime | None = None, *, kind: str = "") -> str:
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    middle = f"-{kind}" if kind else ""
    return f"{db_path.stem}{middle}-{moment.strftime(TIME_FORMAT)}.db"


def _pattern(db_path: Path) -> re.Pattern[str]:
    return re.compile(
        rf"^{re.escape(db_path.stem)}(?:-(?P<kind>{BEFORE_RESTORE}))?"
        r"-(?P<time>\d{8}T\d{6}\.\d{6}Z)\.db$"
    )


@dataclass(frozen=True)
class Verification:
    """What a check of a backup file found."""

    path: Path
    integrity: list[str]
    schema_version: int
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        return self.integrity == ["ok"]

    @property
    def tasks(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class BackupResult:
    path: Path
    source: Path
    bytes: int
    pages: int
    seconds: float
    verification: Verification

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "source": str(self.source),
            "bytes": self.bytes,
            "pages": self.pages,
            "seconds": self.seconds,
            "tasks": self.verification.tasks,
            "counts": self.verification.counts,
            "integrity": self.verification.integrity,
            "schema_version": self.verification.schema_version,
        }


def _require_backups(store: StoreOperations, operation: str) -> None:
    if Capability.FILE_BACKUP not in store.capabilities:
        raise store.unsupported("backup", operation)


async def verify_backup(store: StoreOperations, path: str | os.PathLike[str]) -> Verification:
    """Open a backup of ``store``'s kind read-only and check it: the integrity check, a
    taskyard schema this version can open, the tasks it holds (``store`` need not be
    open). Raises SchemaError for a file that is no taskyard queue; a damaged one gives
    ``ok`` False."""
    _require_backups(store, "checking a backup")
    path = Path(path)
    check = await store.verify_backup(path)
    return Verification(path, check.integrity, check.schema_version, check.counts)


async def create_backup(
    store: StoreOperations,
    destination: str | os.PathLike[str],
    *,
    progress: ProgressCallback = no_progress,
) -> BackupResult:
    """Back up the open store's queue to ``destination`` (a new file), verified.

    Raises OperationRefused when ``destination`` exists, IntegrityError when the copy
    does not verify (nothing is left at ``destination`` then)."""
    _require_backups(store, "a backup")
    destination = Path(destination)
    source = Path((await store.storage_info()).path)
    if destination.exists():
        raise OperationRefused(f"{destination} already exists; choose another name")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    started = time.perf_counter()
    fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # owner-only
    os.close(fd)
    try:
        counts, pages = await store.backup_to(partial, progress=progress)
        verification = await verify_backup(store, partial)
        if not verification.ok or verification.counts != counts:
            raise IntegrityError(
                f"the backup of {source} did not verify (integrity: "
                f"{'; '.join(verification.integrity)}; tasks {verification.counts}, "
                f"expected {counts}); nothing was kept"
            )
        os.replace(partial, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    verification = Verification(
        destination, verification.integrity, verification.schema_version, verification.counts
    )
    result = BackupResult(
        path=destination,
        source=source,
        bytes=destination.stat().st_size,
        pages=pages,
        seconds=time.perf_counter() - started,
        verification=verification,
    )
    logger.info(
        "taskyard: backed up {} to {} ({} tasks, {} bytes)",
        source,
        destination,
        verification.tasks,
        result.bytes,
    )
    return result


@dataclass(frozen=True)
class BackupFile:
    path: Path
    taken_at: datetime
    bytes: int
    kind: str
    """``backup``, or ``before-restore`` for the copy a restore kept aside."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "taken_at": self.taken_at.isoformat(),
            "bytes": self.bytes,
            "kind": self.kind,
        }


def list_backups(db_path: Path, backup_dir: Path) -> list[BackupFile]:
    """The backups of ``db_path`` in ``backup_dir``, oldest first."""
    if not backup_dir.is_dir():
        return []
    pattern = _pattern(db_path)
    found: list[BackupFile] = []
    for entry in backup_dir.iterdir():
        match = pattern.match(entry.name)
        if not match or not entry.is_file():
            continue
        taken = datetime.strptime(match["time"], TIME_FORMAT).replace(tzinfo=UTC)
        found.append(BackupFile(entry, taken, entry.stat().st_size, match["kind"] or "backup"))
    found.sort(key=lambda backup: (backup.taken_at, backup.path.name))
    return found


def prune_backups(
    db_path: Path, backup_dir: Path, *, keep: int, dry_run: bool = False
) -> list[BackupFile]:
    """Delete all but the ``keep`` newest backups (copies kept aside by restores are
    not counted and not deleted). Returns the backups deleted (or that would be)."""
    if keep < 0:
        raise OperationRefused(f"--keep must be 0 or more, not {keep}")
    backups = [b for b in list_backups(db_path, backup_dir) if b.kind == "backup"]
    doomed = backups[: max(len(backups) - keep, 0)]
    if not dry_run:
        for backup in doomed:
            remove(backup.path)  # retried while another process holds it open (Windows)
            logger.info("taskyard: deleted the backup {}", backup.path)
    return doomed


@dataclass(frozen=True)
class RestoreResult:
    restored_from: Path
    database: Path
    kept_aside: Path | None
    """The replaced queue, copied (or, if it was unreadable, moved) there."""
    tasks: int
    counts: dict[str, int]
    forced: bool
    active_workers: list[str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "restored_from": str(self.restored_from),
            "database": str(self.database),
            "kept_aside": None if self.kept_aside is None else str(self.kept_aside),
            "tasks": self.tasks,
            "counts": self.counts,
            "forced": self.forced,
            "active_workers": self.active_workers,
            "seconds": self.seconds,
        }


async def restore_backup(
    store: StoreOperations,
    backup: str | os.PathLike[str],
    db_path: str | os.PathLike[str],
    *,
    backup_dir: str | os.PathLike[str],
    stale_after: float = 60.0,
    force: bool = False,
    progress: ProgressCallback = no_progress,
) -> RestoreResult:
    """Replace the queue of ``store`` (unopened; its file is ``db_path``) with the
    backup, keeping the replaced one in ``backup_dir``. Raises OperationRefused (workers
    active, not forced; a backup that does not verify) and StoreError."""
    _require_backups(store, "a restore")
    backup, db_path, backup_dir = Path(backup), Path(db_path), Path(backup_dir)
    started = time.perf_counter()
    if db_path.exists() and backup.resolve() == db_path.resolve():
        raise OperationRefused(f"{backup} is the queue itself; name a backup of it")
    verification = await verify_backup(store, backup)
    if not verification.ok:
        raise OperationRefused(
            f"{backup} does not pass the integrity check ({'; '.join(verification.integrity)});"
            " nothing was restored"
        )
    aside_path = backup_dir / backup_name(db_path, kind=BEFORE_RESTORE)
    kept: Path | None = None
    active: list[str] = []
    existed = db_path.exists() and db_path.stat().st_size > 0
    if existed:
        try:
            async with opened(store) as queue:
                since = time.time() - stale_after
                active = sorted(
                    worker.worker_id
                    for worker in await queue.list_workers()
                    if worker.last_heartbeat >= since
                )
        except SchemaError as exc:
            kept, existed = _move_aside(db_path, aside_path, exc), False
    if active and not force:
        raise OperationRefused(
            f"{len(active)} worker(s) are active on {db_path} ({', '.join(active)}): stop "
            "them first, or restore with --force (their running tasks' results are then "
            "discarded and those tasks run again)"
        )
    async with opened(store, create=True) as queue:
        if existed:
            kept = (await create_backup(queue, aside_path)).path
        counts = await queue.restore_from(backup, progress=progress)
    if counts != verification.counts:
        raise IntegrityError(
            f"{db_path} holds {counts} after the restore, the backup held "
            f"{verification.counts}; the replaced queue is at {kept}"
        )
    logger.warning(
        "taskyard: {} restored from {} ({} tasks); the replaced queue is kept at {}",
        db_path,
        backup,
        verification.tasks,
        kept,
    )
    return RestoreResult(
        restored_from=backup,
        database=db_path,
        kept_aside=kept,
        tasks=verification.tasks,
        counts=counts,
        forced=force,
        active_workers=active,
        seconds=time.perf_counter() - started,
    )


def _move_aside(db_path: Path, aside_path: Path, reason: StoreError) -> Path:
    """A live file that cannot be opened as a queue is moved aside as it is."""
    aside_path.parent.mkdir(parents=True, exist_ok=True)
    for source, suffix in zip(companion_files(db_path), ("", "-wal", "-shm"), strict=True):
        if source.exists():
            os.replace(source, aside_path.with_name(aside_path.name + suffix))
    logger.warning(
        "taskyard: {} could not be opened ({}); moved to {}", db_path, reason, aside_path
    )
    return aside_path
