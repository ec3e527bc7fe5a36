"""The export file format (versioned JSON Lines), reading a store for it, and importing
records into a store. The format is described in :mod:`taskyard.ops.migration`."""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from taskyard import __version__
from taskyard.framework.engine import TaskEngine
from taskyard.framework.errors import ExportFileError
from taskyard.framework.files import atomic_write
from taskyard.framework.models import (
    ACTIVE_STATUSES,
    TaskRecord,
    TaskStatus,
    iso,
    record_from_json,
    record_to_json,
    utcnow,
)
from taskyard.framework.operations import StoreOperations
from taskyard.framework.store import TaskStore

EXPORT_FORMAT = "taskyard-export"
EXPORT_VERSION = 1
UNFINISHED = "unfinished"
ALL = "all"


# -- reading a store -----------------------------------------------------------------------


async def read_tasks(
    store: TaskStore, statuses: Collection[TaskStatus] | None = ACTIVE_STATUSES
) -> list[TaskRecord]:
    """The tasks of ``statuses`` (None: all) in scheduling order: the store's
    :meth:`~taskyard.framework.store.TaskStore.snapshot` (one read on SQLite, a
    consistent snapshot even while workers run)."""
    return await store.snapshot(None if statuses is None else sorted(statuses))


# -- export files --------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSummary:
    path: str
    tasks: int
    scope: str
    by_status: dict[str, int]


@dataclass(frozen=True)
class ExportFile:
    header: dict[str, Any]
    records: list[TaskRecord]


def _by_status(records: Iterable[TaskRecord]) -> dict[str, int]:
    counts = dict.fromkeys((str(status) for status in TaskStatus), 0)
    for record in records:
        counts[str(record.status)] += 1
    return {status: count for status, count in counts.items() if count}


def export_lines(records: Sequence[TaskRecord], *, scope: str, source: str) -> Iterator[str]:
    """The lines of an export file (without newlines): the header, then one per task."""
    header = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "created_at": iso(utcnow()),
        "taskyard": __version__,
        "source": source,
        "scope": scope,
        "tasks": len(records),
        "by_status": _by_status(records),
    }
    yield json.dumps(header, ensure_ascii=False)
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
    for record in records:
        yield encode(record_to_json(record))


def write_export(
    path: str | os.PathLike[str],
    records: Sequence[TaskRecord],
    *,
    scope: str = UNFINISHED,
    source: str = "",
) -> ExportSummary:
    """Write ``records`` as an export file, atomically (a temporary file renamed into
    place once it is on disk), readable by its owner only."""
    target = atomic_write(
        path, (line + "\n" for line in export_lines(records, scope=scope, source=source))
    )
    return ExportSummary(str(target), len(records), scope, _by_status(records))


async def export_tasks(
    store: TaskStore,
    path: str | os.PathLike[str],
    *,
    include_finished: bool = False,
    source: str = "",
) -> ExportSummary:
    """Export the store's unfinished tasks (``include_finished``: every task) to ``path``."""
    statuses = None if include_finished else ACTIVE_STATUSES
    records = await read_tasks(store, statuses)
    return write_export(
        path, records, scope=ALL if include_finished else UNFINISHED, source=source or repr(store)
    )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode(raw: bytes, number: int, path: str | os.PathLike[str]) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExportFileError.at(path, number, f"not UTF-8 text ({exc.reason})") from None
    if not text.strip():
        raise ExportFileError.at(path, number, "an empty line")
    try:
        return json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:
        raise ExportFileError.at(path, number, f"not valid JSON ({exc})") from None


def read_export(path: str | os.PathLike[str]) -> ExportFile:
    """Read and check a whole export file.

    Raises ExportFileError with the line number and the reason for a file that is not a
    taskyard export, has a version this taskyard cannot read, holds a damaged task, the
    same id twice, or fewer or more tasks than its header announces (cut short)."""
    records: list[TaskRecord] = []
    ids: set[str] = set()
    keys: dict[str, str] = {}
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise ExportFileError.at(path, 0, f"cannot be read ({exc.strerror or exc})") from None
    with handle:
        first = handle.readline().removeprefix(codecs.BOM_UTF8)  # PowerShell 5 writes one
        if not first:
            raise ExportFileError.at(path, 1, "the file is empty, not a taskyard export")
        header = _decode(first, 1, path)
        if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
            raise ExportFileError.at(
                path, 1, f'not a taskyard export (line 1 has no "format": "{EXPORT_FORMAT}")'
            )
        version = header.get("version")
        if version != EXPORT_VERSION:
            raise ExportFileError.at(
                path,
                1,
                f"export format version {version!r}; this taskyard ({__version__}) reads "
                f"version {EXPORT_VERSION}",
            )
        announced = header.get("tasks")
        if isinstance(announced, bool) or not isinstance(announced, int) or announced < 0:
            raise ExportFileError.at(
                path, 1, f"the header's task count {announced!r} is not a count"
            )
        number = 1
        for raw in handle:
            number += 1
            if not raw.endswith(b"\n"):
                raise ExportFileError.at(path, number, "the line is cut short (no newline)")
            data = _decode(raw, number, path)
            try:
                record = record_from_json(data)
            except ValueError as exc:
                raise ExportFileError.at(path, number, f"not a valid task: {exc}") from None
            if record.id in ids:
                raise ExportFileError.at(path, number, f"task {record.id} appears twice")
            key = record.idempotency_key
            if key is not None:
                if key in keys:
                    raise ExportFileError.at(
                        path,
                        number,
                        f"idempotency key {key!r} of task {record.id} is also task {keys[key]}'s",
                    )
                keys[key] = record.id
            ids.add(record.id)
            records.append(record)
    if len(records) != announced:
        raise ExportFileError.at(
            path,
            number + 1,
            f"the header announces {announced} task(s) but the file holds {len(records)}"
            + (": it was cut short" if len(records) < announced else ""),
        )
    return ExportFile(header=header, records=records)


# -- importing -----------------------------------------------------------------------------


@dataclass
class ImportReport:
    read: int
    imported: int
    already_present: int
    conflicts: list[str] = field(default_factory=list)
    """Ids not stored because the target holds another task with their idempotency key."""
    by_status: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _store_of(target: TaskStore | TaskEngine) -> TaskStore:
    return target.store if isinstance(target, TaskEngine) else target


async def import_records(
    target: TaskStore | TaskEngine, records: Sequence[TaskRecord]
) -> ImportReport:
    """Store ``records`` exactly as they are in one store call (one transaction on
    SQLite); ids already present are left alone. A TaskEngine target is started if need
    be and woken, so it runs what arrived."""
    if isinstance(target, TaskEngine):
        stored = await target.import_tasks(records)
    else:
        stored = await target.import_records(records) if records else []
    store = _store_of(target)
    report = ImportReport(
        read=len(records),
        imported=sum(stored),
        already_present=0,
        by_status=_by_status(r for r, ok in zip(records, stored, strict=True) if ok),
    )
    skipped = [record.id for record, ok in zip(records, stored, strict=True) if not ok]
    present = await _present(store, skipped)
    report.already_present = sum(1 for task_id in skipped if task_id in present)
    report.conflicts = [task_id for task_id in skipped if task_id not in present]
    return report


async def _present(store: TaskStore, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` the store holds (one query where the store offers operations)."""
    if not ids:
        return set()
    if isinstance(store, StoreOperations):
        return await store.present(ids)
    return {task_id for task_id in ids if await store.get(task_id) is not None}


async def import_file(target: TaskStore | TaskEngine, path: str | os.PathLike[str]) -> ImportReport:
    """Check the whole export file, then import it (see :func:`import_records`).
    Raises ExportFileError, with nothing imported, for a damaged or foreign file."""
    export = read_export(path)
    return await import_records(target, export.records)
