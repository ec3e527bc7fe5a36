"""The planned rollback: drain the workers of a SQLite queue, export its unfinished tasks,
switch the backend in a settings file taskyard reads, and record why."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import socket
import time
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from taskyard.framework.errors import ConfigurationError, OperationRefused
from taskyard.framework.files import atomic_write
from taskyard.framework.models import (
    ACTIVE_STATUSES,
    iso,
    utcnow,
)
from taskyard.framework.operations import StoreOperations
from taskyard.ops.migration.export_format import UNFINISHED, ExportSummary, read_tasks, write_export
from taskyard.ops.workers import StopReport, stop_workers

# -- rollback ------------------------------------------------------------------------------

ROLLBACK_MARKER = "# Written by `taskyard rollback`."
_EXPLANATION = (
    "# taskyard reads this file after settings.toml and .secrets.toml. To switch back,",
    "# run `taskyard rollback --to <backend>` again, or delete this file. History:",
)
_HISTORY = re.compile(r"^# \d{4}-\d\d-\d\dT")


DrainReport = StopReport
"""What draining the workers did (see :class:`taskyard.ops.workers.StopReport`)."""


async def drain_workers(
    store: StoreOperations,
    *,
    timeout: float,
    stale_after: float,
    poll: float = 0.05,
) -> DrainReport:
    """Ask every dedicated worker sharing ``store``, on any host, to stop through the
    queue (``taskyard workers stop --all``: running handlers finish within their
    shutdown timeout, the rest return to the queue) and wait until each has said
    goodbye (its record is gone) or ``timeout`` passes.

    An application that runs tasks itself (its worker record's role) is never stopped:
    it is listed in ``applications``, for its own process manager to restart.
    """
    return await stop_workers(
        store, everyone=True, stale_after=stale_after, wait=timeout, poll=poll
    )


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

    Refuses (OperationRefused) a file taskyard did not write, so an operator's own
    settings are never rewritten."""
    target = Path(path)
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    history: list[str] = []
    if target.exists():
        text = target.read_text(encoding="utf-8")
        if not text.startswith(ROLLBACK_MARKER):
            raise OperationRefused(
                f"{target} was not written by taskyard rollback; name another file with "
                "--settings-file (taskyard keeps its switch in a file of its own)"
            )
        try:
            parsed = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{target} is not valid TOML ({exc})") from exc
        for env, sections in parsed.items():
            if not isinstance(sections, dict) or not all(
                isinstance(values_, dict) for values_ in sections.values()
            ):
                raise ConfigurationError(f"{target}: [{env}] is not a table of sections")
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
    return atomic_write(target, content, mode=0o644)


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
    store: StoreOperations,
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
    source: str = "",
    rollback_log: str | os.PathLike[str] | None = None,
) -> RollbackReport:
    """Drain the workers of ``store`` (see :func:`drain_workers`), export its unfinished
    tasks to ``export_path``, switch ``environment``'s backend to ``to_backend`` in
    ``settings_file`` and record the reason with a timestamp in the rollback log next
    to the database.

    The unfinished tasks stay in the database as they are: they run again once the
    backend is switched back, none lost; the export file is the record of what waited
    (and can rebuild a lost database with ``taskyard import``). ``source`` names the
    store in the export's header (default: where the store is); ``rollback_log`` is
    the log (default: next to the database file, :func:`rollback_log_path`)."""
    if not reason.strip():
        raise OperationRefused("a rollback needs a reason (--reason)")
    seconds: dict[str, float] = {}
    at = utcnow()
    clock = time.perf_counter()
    await store.open()
    try:
        database = (await store.storage_info()).path
        drain = await drain_workers(store, timeout=drain_timeout, stale_after=stale_after)
        seconds["drain"] = time.perf_counter() - clock
        clock = time.perf_counter()
        summary = None
        if export_path is not None:
            records = await read_tasks(store, ACTIVE_STATUSES)
            summary = write_export(
                export_path, records, scope=UNFINISHED, source=source or database
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
    log = Path(rollback_log) if rollback_log is not None else rollback_log_path(database)
    seconds["switch"] = time.perf_counter() - clock
    report = RollbackReport(
        at=stamp,
        environment=environment,
        from_backend=from_backend,
        to_backend=to_backend,
        reason=reason,
        by=_operator(),
        database=database,
        settings_file=str(written),
        rollback_log=str(log),
        export=summary,
        drain=drain,
        seconds=seconds,
    )
    record_rollback(log, report.to_dict())
    return report


@dataclass
class RollbackOutcome:
    """What :func:`roll_back` did: ``report`` for machines, ``lines`` for people."""

    report: dict[str, Any]
    lines: list[str]


async def roll_back(
    store: StoreOperations | None,
    *,
    environment: str,
    current: str,
    canary: str | None,
    target: str,
    reason: str,
    settings_file: Path,
    export_path: Path | None = None,
    drain_timeout: float,
    stale_after: float,
    source: str = "",
    rollback_log: Path | None = None,
) -> RollbackOutcome:
    """The planned rollback of ``environment`` from ``current`` (with ``canary``, when
    one is rolled out) to ``target``, switched in ``settings_file``.

    With ``store`` (an unopened store on the queue the settings use), the workers are
    drained and the unfinished tasks exported first (:func:`planned_rollback`). Without
    one (no queue to drain: in-memory, or no database yet) only the switch is written,
    with the reason. Raises OperationRefused (no reason; a settings file taskyard did not
    write) and StoreError."""
    if not reason.strip():
        raise OperationRefused("a rollback needs a reason (--reason): it is recorded with the time")
    extra: dict[str, Any] = {"canary_backend": ""} if canary is not None else {}
    lines: list[str] = []
    if store is None:
        write_rollback_settings(
            settings_file,
            environment=environment,
            values={"backend": target, **extra},
            comment=f"{iso(utcnow())} switch from {current} to {target} "
            f"(environment {environment}): {' '.join(reason.split())}",
        )
        lines.append(f"{settings_file}: {environment} now uses {target}")
        if current == "in-memory":
            lines.append(
                "restart the application: as it stops, it hands its in-memory tasks "
                "over (stop_and_hand_over, see docs/migration-guide.md)"
            )
        return RollbackOutcome({"settings_file": str(settings_file), "to_backend": target}, lines)
    report = await planned_rollback(
        store,
        to_backend=target,
        from_backend=current if canary is None else f"{current} + canary {canary}",
        environment=environment,
        reason=reason,
        settings_file=settings_file,
        export_path=export_path,
        drain_timeout=drain_timeout,
        stale_after=stale_after,
        extra_settings=extra,
        source=source,
        rollback_log=rollback_log,
    )
    drain = report.drain
    lines.append(
        f"workers: {len(drain.stopped)} stopped"
        + (f", {len(drain.stale)} stale" if drain.stale else "")
    )
    lines += [
        f"warning: worker {w} did not stop within the drain timeout" for w in drain.still_running
    ]
    lines += [
        f"note: {w} runs tasks from the queue but is not a taskyard worker; "
        "restart it to apply the switch"
        for w in drain.applications
    ]
    if report.export is not None:
        counts = ", ".join(f"{n} {s}" for s, n in report.export.by_status.items())
        lines.append(
            f"exported {report.export.tasks} unfinished task(s) "
            f"({counts or 'none'}) to {report.export.path}"
        )
    lines.append(f"{report.settings_file}: {environment} now uses {target}")
    lines.append(f"reason recorded in {report.rollback_log}")
    return RollbackOutcome(report.to_dict(), lines)
