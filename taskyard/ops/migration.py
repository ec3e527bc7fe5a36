"""Moving tasks between backends: export files, imports, the in-flight migration, rollback.

Export files are versioned JSON Lines, UTF-8, owner-readable only (payloads may hold
personal data)::

    {"format": "taskyard-export", "version": 1, "scope": "unfinished", "tasks": 2, ...}
    {"id": "...", "type": "send_email", "status": "queued", "priority": 5, ...}
    {"id": "...", "type": "resize_image", "status": "running", "attempts": 1, ...}

Line 1 is the header; each further line is one task in the JSON form of
:func:`taskyard.framework.models.record_to_json`, in scheduling order. An import reads
and checks the whole file before it stores anything (a damaged or foreign file is
refused naming the line and the reason), then stores every task in one store call (one
transaction on SQLite), each with its id, status, priority, run_after, attempts,
payload, result and times. Ids already present are left alone, so importing a file
twice adds nothing twice. A task that was running when it was exported is stored as
queued: it runs again, at least once.

The in-flight migration (:func:`migrate_in_flight`) moves a running manager's tasks to
another store from inside the application: in-memory state exists nowhere else.
:func:`import_runs` is the other way in: it turns a RunRegistry's queued and running
runs into tasks. :func:`planned_rollback` drains the workers of a SQLite queue, exports
its unfinished tasks, and switches the backend through a settings file the operator
can read, recording why.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import re
import signal
import socket
import sqlite3
import tempfile
import time
import tomllib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taskyard import __version__
from taskyard.backends.sqlite import schema
from taskyard.backends.sqlite.errors import translate
from taskyard.backends.sqlite.store import COLUMNS, SqliteStore, row_to_record
from taskyard.framework.engine import TaskEngine
from taskyard.framework.errors import TaskyardError
from taskyard.framework.models import (
    ACTIVE_STATUSES,
    TaskRecord,
    TaskStatus,
    iso,
    record_from_json,
    record_to_json,
    utcnow,
)
from taskyard.framework.runs import Run, RunRegistry, RunStatus
from taskyard.framework.store import Capability, TaskStore

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "ROLLBACK_MARKER",
    "DrainReport",
    "ExportFile",
    "ExportFileError",
    "ExportSummary",
    "ImportReport",
    "InitReport",
    "MigrationError",
    "MigrationReport",
    "RollbackReport",
    "drain_workers",
    "export_tasks",
    "import_file",
    "import_records",
    "import_runs",
    "init_database",
    "migrate_in_flight",
    "planned_rollback",
    "read_export",
    "read_tasks",
    "record_rollback",
    "rollback_log_path",
    "stop_and_hand_over",
    "write_export",
    "write_rollback_settings",
]

EXPORT_FORMAT = "taskyard-export"
EXPORT_VERSION = 1
UNFINISHED = "unfinished"
ALL = "all"


class ExportFileError(TaskyardError):
    """The file is not a taskyard export this version can read, or it is damaged; nothing
    was imported."""

    def __init__(self, path: str | os.PathLike[str], line: int, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}, line {line}: {reason}; nothing was imported")


class MigrationError(TaskyardError):
    """A move between stores failed; the tasks stayed where they were."""


# -- reading a store -----------------------------------------------------------------------


async def read_tasks(
    store: TaskStore, statuses: Collection[TaskStatus] | None = ACTIVE_STATUSES
) -> list[TaskRecord]:
    """The tasks of ``statuses`` (None: all) in scheduling order. On SQLite this is one
    read, a consistent snapshot even while workers run."""
    wanted = None if statuses is None else sorted(statuses)
    if isinstance(store, SqliteStore):
        sql = f"SELECT {COLUMNS} FROM taskyard_tasks"
        params: tuple[Any, ...] = ()
        if wanted is not None:
            sql += " WHERE status IN (SELECT value FROM json_each(?))"
            params = (json.dumps([str(status) for status in wanted]),)
        sql += " ORDER BY seq"

        def run(conn: sqlite3.Connection) -> list[TaskRecord]:
            return [row_to_record(row) for row in conn.execute(sql, params)]

        return await store.execute_read(run)
    return await store.snapshot(wanted)


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
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for line in export_lines(records, scope=scope, source=source):
                handle.write(line)
                handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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
        raise ExportFileError(path, number, f"not UTF-8 text ({exc.reason})") from None
    if not text.strip():
        raise ExportFileError(path, number, "an empty line")
    try:
        return json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:
        raise ExportFileError(path, number, f"not valid JSON ({exc})") from None


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
        raise ExportFileError(path, 0, f"cannot be read ({exc.strerror or exc})") from None
    with handle:
        first = handle.readline()
        if not first:
            raise ExportFileError(path, 1, "the file is empty, not a taskyard export")
        header = _decode(first, 1, path)
        if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
            raise ExportFileError(
                path, 1, f'not a taskyard export (line 1 has no "format": "{EXPORT_FORMAT}")'
            )
        version = header.get("version")
        if version != EXPORT_VERSION:
            raise ExportFileError(
                path,
                1,
                f"export format version {version!r}; this taskyard ({__version__}) reads "
                f"version {EXPORT_VERSION}",
            )
        announced = header.get("tasks")
        if isinstance(announced, bool) or not isinstance(announced, int) or announced < 0:
            raise ExportFileError(path, 1, f"the header's task count {announced!r} is not a count")
        number = 1
        for raw in handle:
            number += 1
            if not raw.endswith(b"\n"):
                raise ExportFileError(path, number, "the line is cut short (no newline)")
            data = _decode(raw, number, path)
            try:
                record = record_from_json(data)
            except ValueError as exc:
                raise ExportFileError(path, number, f"not a valid task: {exc}") from None
            if record.id in ids:
                raise ExportFileError(path, number, f"task {record.id} appears twice")
            key = record.idempotency_key
            if key is not None:
                if key in keys:
                    raise ExportFileError(
                        path,
                        number,
                        f"idempotency key {key!r} of task {record.id} is also task {keys[key]}'s",
                    )
                keys[key] = record.id
            ids.add(record.id)
            records.append(record)
    if len(records) != announced:
        raise ExportFileError(
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
    """Which of ``ids`` the store holds (one query on SQLite)."""
    if not ids:
        return set()
    if isinstance(store, SqliteStore):

        def run(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "SELECT id FROM taskyard_tasks WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(ids)),),
            )
            return {row[0] for row in rows}

        return await store.execute_read(run)
    return {task_id for task_id in ids if await store.get(task_id) is not None}


async def import_file(target: TaskStore | TaskEngine, path: str | os.PathLike[str]) -> ImportReport:
    """Check the whole export file, then import it (see :func:`import_records`).
    Raises ExportFileError, with nothing imported, for a damaged or foreign file."""
    export = read_export(path)
    return await import_records(target, export.records)


def _payload_of(run: Run) -> dict[str, Any]:
    return {key: value for key, value in run.parameters.items() if not key.startswith("_")}


async def import_runs(
    runs: RunRegistry | Iterable[Run],
    target: TaskStore | TaskEngine,
    task_types: Mapping[str, str] | Callable[[Run], str | None],
    *,
    priority: int = 5,
    max_attempts: int = 3,
) -> ImportReport:
    """Turn queued and running runs into queued tasks of ``target``: the way in for work
    the application only knows as runs (an old manager's RunRegistry, a history file).

    Each run becomes the task whose id is its ``run_id`` (so the orchestrator's runs
    keep following it), of the type ``task_types`` gives for it (a mapping of module id
    to task type, or a function of the run; None skips the run), with the run's
    parameters (keys starting with ``_`` left out) as payload. Runs already imported are
    left alone; the report's ``read`` counts the runs that had a task type.
    """
    pick = task_types.get if isinstance(task_types, Mapping) else None
    active = runs.get_active_runs() if isinstance(runs, RunRegistry) else list(runs)
    now = utcnow()
    records: list[TaskRecord] = []
    for run in active:
        if run.status not in (RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING):
            continue
        task_type = pick(run.module_id) if pick is not None else task_types(run)  # type: ignore[operator]
        if not task_type:
            continue
        records.append(
            TaskRecord(
                id=run.run_id,
                type=task_type,
                payload=_payload_of(run),
                priority=priority,
                max_attempts=max_attempts,
                created_at=run.created_at,
                updated_at=now,
                run_after=now,
            )
        )
    return await import_records(target, records)


# -- the in-flight migration ---------------------------------------------------------------


@dataclass
class MigrationReport:
    exported: int
    imported: int
    already_present: int
    conflicts: list[str]
    by_status: dict[str, int]
    export_path: str | None
    resumed: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def migrate_in_flight(
    manager: TaskEngine,
    target: TaskStore,
    *,
    deadline: float | None = None,
    include_finished: bool = True,
    export_path: str | os.PathLike[str] | None = None,
    resume: bool = True,
) -> MigrationReport:
    """Move a running manager's tasks to ``target`` from inside the application.

    Pauses intake (schedule calls wait), lets running handlers finish within
    ``deadline`` seconds (the shutdown timeout by default; the rest go back to the queue,
    that attempt not counted), reads every task (``include_finished=False``: only the
    unfinished ones), writes them to ``export_path`` when given (a record of the move),
    and imports them into ``target`` in one transaction.

    With ``resume`` the manager then runs on ``target`` and the held schedule calls go
    there: the application goes on without a restart, and restarts later with settings
    that select the new backend. Without it the manager stays stopped (a hand-over at
    shutdown) and held calls fail with ManagerStateError.

    If the import fails, the manager goes on with its old store, nothing lost, and
    MigrationError is raised.
    """
    started = time.perf_counter()
    statuses = None if include_finished else ACTIVE_STATUSES
    old_store = manager.store
    records = await manager.drain_and_export(deadline, statuses=statuses)
    written: str | None = None
    try:
        if export_path is not None:
            written = write_export(
                export_path,
                records,
                scope=ALL if include_finished else UNFINISHED,
                source=repr(old_store),
            ).path
        await target.open()
        try:
            report = await import_records(target, records)
        finally:
            if not resume:
                await target.close()
    except Exception as exc:
        manager.switch_store(old_store)
        await manager.start()
        manager.resume_intake()
        raise MigrationError(
            f"moving {len(records)} task(s) to {target!r} failed ({exc}); the manager goes on "
            f"with {old_store!r}, nothing was lost"
        ) from exc
    if resume:
        manager.switch_store(target)
        await manager.start()
    manager.resume_intake()
    return MigrationReport(
        exported=len(records),
        imported=report.imported,
        already_present=report.already_present,
        conflicts=report.conflicts,
        by_status=_by_status(records),
        export_path=written,
        resumed=resume,
        seconds=time.perf_counter() - started,
    )


async def stop_and_hand_over(
    manager: TaskEngine,
    target: TaskStore | None,
    *,
    deadline: float | None = None,
    export_path: str | os.PathLike[str] | None = None,
) -> MigrationReport | None:
    """Stop the manager at the application's shutdown, handing its tasks over to
    ``target`` when that is the move being made: from a store that does not survive the
    process (in-memory) to one that does. Otherwise (a durable store keeps its tasks by
    itself; ``target`` None or not durable: nowhere to move to) it just stops. Returns
    the hand-over's report, or None.

    Call it with ``Container().handover_store()``, built from the settings as they are
    *now*: an application switched from in-memory to SQLite takes its queue along when
    it restarts, and one rolled back to in-memory parks its tasks in the queue database
    at each stop, where they run once SQLite is back."""
    leaving = Capability.DURABLE not in manager.store.capabilities
    if not leaving or target is None or Capability.DURABLE not in target.capabilities:
        await manager.stop(deadline)
        return None
    return await migrate_in_flight(
        manager, target, deadline=deadline, export_path=export_path, resume=False
    )


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


# -- rollback ------------------------------------------------------------------------------

ROLLBACK_MARKER = "# Written by `taskyard rollback`."
_EXPLANATION = (
    "# taskyard reads this file after settings.toml and .secrets.toml. To switch back,",
    "# run `taskyard rollback --to <backend>` again, or delete this file. History:",
)
_HISTORY = re.compile(r"^# \d{4}-\d\d-\d\dT")


@dataclass
class DrainReport:
    stopped: list[str] = field(default_factory=list)
    """Workers of this host that were asked to stop and did."""
    still_running: list[str] = field(default_factory=list)
    """Workers of this host that were asked to stop and had not within the timeout."""
    elsewhere: list[str] = field(default_factory=list)
    """Workers with a fresh heartbeat on other hosts: stop them there."""
    stale: list[str] = field(default_factory=list)
    """Heartbeats older than the staleness limit: workers that died."""
    applications: list[str] = field(default_factory=list)
    """Processes of this host that run tasks but are not ``taskyard worker`` (an
    application with ``run_worker = true``): not stopped; restart them to switch."""

    @property
    def drained(self) -> bool:
        return not self.still_running and not self.elsewhere


def _is_taskyard_worker(pid: int) -> bool:
    """Whether ``pid`` runs ``taskyard worker`` (its command line, where /proc tells;
    elsewhere every process with a heartbeat counts as a worker)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return not Path("/proc/self/cmdline").exists()
    words = [Path(os.fsdecode(word)).name for word in argv]
    starts = [i for i, word in enumerate(words) if word in ("taskyard", "taskyard.exe")]
    return bool(starts) and "worker" in words[starts[0] + 1 :]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _worker_rows(store: SqliteStore) -> list[tuple[str, str, int, float]]:
    def run(conn: sqlite3.Connection) -> list[tuple[str, str, int, float]]:
        return conn.execute(
            "SELECT worker_id, hostname, pid, last_heartbeat FROM taskyard_workers"
        ).fetchall()

    return await store.execute_read(run)


async def drain_workers(
    store: SqliteStore,
    *,
    timeout: float,
    stale_after: float,
    poll: float = 0.05,
    signum: int = signal.SIGTERM,
) -> DrainReport:
    """Ask the workers of this host that share ``store`` to stop (SIGTERM: running
    handlers finish within their shutdown timeout, the rest return to the queue) and
    wait until each has said goodbye (its heartbeat row is gone) or ``timeout`` passes.

    Only ``taskyard worker`` processes are stopped: an application that runs tasks
    itself is listed in ``applications``, for its own process manager to restart.
    """
    report = DrainReport()
    host, me = socket.gethostname(), os.getpid()
    now = time.time()
    waiting: dict[str, int] = {}
    for worker_id, hostname, pid, beat in await _worker_rows(store):
        if now - beat > stale_after:
            report.stale.append(worker_id)
        elif hostname != host:
            report.elsewhere.append(worker_id)
        elif pid != me and _pid_alive(pid):
            if _is_taskyard_worker(pid):
                os.kill(pid, signum)
                waiting[worker_id] = pid
            else:
                report.applications.append(worker_id)
        else:
            report.stale.append(worker_id)
    deadline = time.monotonic() + timeout
    while waiting:
        present = {row[0] for row in await _worker_rows(store)}
        for worker_id in [w for w in waiting if w not in present or not _pid_alive(waiting[w])]:
            report.stopped.append(worker_id)
            del waiting[worker_id]
        if not waiting or time.monotonic() >= deadline:
            break
        await asyncio.sleep(poll)
    report.still_running = sorted(waiting)
    return report


def rollback_log_path(db_path: str | os.PathLike[str]) -> Path:
    """The rollback log of a queue database: JSON lines next to it."""
    path = Path(db_path)
    return path.with_name(path.name + ".rollbacks.jsonl")


def record_rollback(log: str | os.PathLike[str], entry: Mapping[str, Any]) -> None:
    """Append one entry to the rollback log (one JSON object per line, fsynced)."""
    path = Path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(dict(entry), ensure_ascii=False) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    raise ValueError(f"cannot write {value!r} to a settings file")


def write_rollback_settings(
    path: str | os.PathLike[str],
    *,
    environment: str,
    values: Mapping[str, Any],
    comment: str,
) -> Path:
    """Set ``[<environment>.task_execution]`` keys in the taskyard-written settings file
    ``path``, keeping its other tables and its history of comments, atomically.

    Refuses (TaskyardError) a file taskyard did not write, so an operator's own
    settings are never rewritten."""
    target = Path(path)
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    history: list[str] = []
    if target.exists():
        text = target.read_text(encoding="utf-8")
        if not text.startswith(ROLLBACK_MARKER):
            raise TaskyardError(
                f"{target} was not written by taskyard rollback; name another file with "
                "--settings-file (taskyard keeps its switch in a file of its own)"
            )
        try:
            parsed = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise TaskyardError(f"{target} is not valid TOML ({exc})") from exc
        for env, sections in parsed.items():
            if not isinstance(sections, dict) or not all(
                isinstance(values_, dict) for values_ in sections.values()
            ):
                raise TaskyardError(f"{target}: [{env}] is not a table of sections")
            tables[env] = {name: dict(values_) for name, values_ in sections.items()}
        history = [line for line in text.splitlines() if _HISTORY.match(line)]
    section = tables.setdefault(environment, {}).setdefault("task_execution", {})
    section.update(values)
    lines = [ROLLBACK_MARKER, *_EXPLANATION, *history, f"# {comment}"]
    for env in sorted(tables):
        for name in sorted(tables[env]):
            lines.append("")
            lines.append(f"[{env}.{name}]")
            for key, value in tables[env][name].items():
                lines.append(f"{key} = {_toml_value(value)}")
    content = "\n".join(lines) + "\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


@dataclass
class RollbackReport:
    at: str
    environment: str
    from_backend: str
    to_backend: str
    reason: str
    by: str
    database: str
    settings_file: str
    rollback_log: str
    export: ExportSummary | None
    drain: DrainReport
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["drained"] = self.drain.drained
        return data


def _operator() -> str:
    with contextlib.suppress(Exception):
        return f"{getpass.getuser()}@{socket.gethostname()}"
    return socket.gethostname()


async def planned_rollback(
    store: SqliteStore,
    *,
    to_backend: str,
    from_backend: str,
    environment: str,
    reason: str,
    settings_file: str | os.PathLike[str],
    export_path: str | os.PathLike[str] | None,
    drain_timeout: float,
    stale_after: float,
    extra_settings: Mapping[str, Any] | None = None,
) -> RollbackReport:
    """Drain the workers of ``store`` (see :func:`drain_workers`), export its unfinished
    tasks to ``export_path``, switch ``environment``'s backend to ``to_backend`` in
    ``settings_file`` and record the reason with a timestamp in the rollback log next
    to the database.

    The unfinished tasks stay in the database as they are: they run again once the
    backend is switched back, none lost; the export file is the record of what waited
    (and can rebuild a lost database with ``taskyard import``)."""
    if not reason.strip():
        raise TaskyardError("a rollback needs a reason (--reason)")
    seconds: dict[str, float] = {}
    at = utcnow()
    clock = time.perf_counter()
    await store.open()
    try:
        drain = await drain_workers(store, timeout=drain_timeout, stale_after=stale_after)
        seconds["drain"] = time.perf_counter() - clock
        clock = time.perf_counter()
        summary = None
        if export_path is not None:
            records = await read_tasks(store, ACTIVE_STATUSES)
            summary = write_export(
                export_path, records, scope=UNFINISHED, source=f"sqlite:{store.path}"
            )
        seconds["export"] = time.perf_counter() - clock
    finally:
        await store.close()
    clock = time.perf_counter()
    stamp = iso(at) or ""
    written = write_rollback_settings(
        settings_file,
        environment=environment,
        values={"backend": to_backend, **(extra_settings or {})},
        comment=f"{stamp} rollback from {from_backend} to {to_backend} "
        f"(environment {environment}) by {_operator()}: {' '.join(reason.split())}",
    )
    log = rollback_log_path(store.path)
    seconds["switch"] = time.perf_counter() - clock
    report = RollbackReport(
        at=stamp,
        environment=environment,
        from_backend=from_backend,
        to_backend=to_backend,
        reason=reason,
        by=_operator(),
        database=str(store.path),
        settings_file=str(written),
        rollback_log=str(log),
        export=summary,
        drain=drain,
        seconds=seconds,
    )
    record_rollback(log, report.to_dict())
    return report
