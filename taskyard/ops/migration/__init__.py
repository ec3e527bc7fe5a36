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
payload, result, times and trace context (``trace_context``, the W3C context of the
span that scheduled it; written only when the task has one, so a file without tracing
reads in any version). Ids already present are left alone, so importing a file
twice adds nothing twice. A task that was running when it was exported is stored as
queued: it runs again, at least once.

The in-flight migration (:func:`migrate_in_flight`) moves a running manager's tasks to
another store from inside the application: in-memory state exists nowhere else.
:func:`import_runs` is the other way in: it turns a RunRegistry's queued and running
runs into tasks. :func:`planned_rollback` drains the workers of a SQLite queue, exports
its unfinished tasks, and switches the backend through a settings file the operator
can read, recording why.

Modules: :mod:`.export_format` (the file format, reading a store for it, imports),
:mod:`.in_flight` (the in-flight migration and run imports), :mod:`.rollback` and
:mod:`.db_init` (``taskyard db init``).
"""

from taskyard.framework.errors import ExportFileError, MigrationError
from taskyard.ops.migration.db_init import InitReport, init_database
from taskyard.ops.migration.export_format import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    ExportFile,
    ExportSummary,
    ImportReport,
    export_tasks,
    import_file,
    import_records,
    read_export,
    read_tasks,
    write_export,
)
from taskyard.ops.migration.in_flight import (
    MigrationReport,
    import_runs,
    migrate_in_flight,
    stop_and_hand_over,
)
from taskyard.ops.migration.rollback import (
    ROLLBACK_MARKER,
    DrainReport,
    RollbackOutcome,
    RollbackReport,
    drain_workers,
    planned_rollback,
    record_rollback,
    roll_back,
    rollback_log_path,
    write_rollback_settings,
)

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
    "RollbackOutcome",
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
    "roll_back",
    "rollback_log_path",
    "stop_and_hand_over",
    "write_export",
    "write_rollback_settings",
]
