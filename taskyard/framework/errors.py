"""taskyard's exceptions.

Every error taskyard raises on purpose derives from :class:`TaskyardError`, and
each class's docstring is its default message::

    TaskyardError
    ├── ConfigurationError            a setting is missing or has a bad value
    │   └── BackendNotAvailable       the selected backend is not built or its driver is missing
    ├── SchedulingError               schedule_task refused the request; nothing was stored
    │   ├── UnknownTaskType           no handler registered for the type
    │   ├── PayloadError              the payload is not exactly representable as JSON
    │   ├── InvalidTaskOptions        priority / delay / run_after / max_attempts are wrong
    │   ├── DependencyError           depends_on names an unknown task or would make a cycle
    │   └── InvalidSchedule           a periodic schedule's fields are wrong (names the field)
    ├── ManagerStateError             the manager is stopping or stopped
    ├── TaskNotFound                  no task with that id
    ├── ScheduleNotFound              no periodic schedule with that name
    ├── OperationRefused              an operations command will not act (state, active workers)
    │   ├── OperationNotSupported     the store cannot do this operation (a capability it lacks)
    │   └── InvalidQuery              a filter or page cursor of an operations query is wrong
    ├── ExportFileError               a file given to import is not a taskyard export, or damaged
    ├── MigrationError                a move between stores failed; the tasks stayed where they were
    └── StoreError                    the storage failed (driver errors are translated to these)
        ├── StoreUnavailable          cannot be reached or written now (locked, I/O, read-only)
        │   ├── StoreFull             the database or the disk is full
        │   └── DatabaseMoved         the file was deleted, renamed or replaced under us
        ├── SchemaError               the database file cannot be used as a taskyard queue
        │   ├── NotADatabase          the file is not a SQLite database at all
        │   ├── ForeignDatabase       a SQLite database that is not a taskyard queue
        │   ├── SchemaTooNew          written by a newer taskyard than this one
        │   └── SchemaMismatch        says it is a taskyard queue, but its tables are not ours
        └── IntegrityError            the stored data breaks a taskyard invariant

Control flow is not an error: :class:`Retry` and :class:`PermanentFailure`,
raised by a handler, steer the engine and live outside this tree.
"""

from __future__ import annotations

import os
from datetime import timedelta


class TaskyardError(Exception):
    """A taskyard operation failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(TaskyardError):
    """A taskyard setting is missing or has a bad value; fix the setting and start again."""


class BackendNotAvailable(ConfigurationError):
    """The selected backend is not available; choose another task_execution.backend."""


class SchedulingError(TaskyardError):
    """The task was refused and nothing was stored."""


class UnknownTaskType(SchedulingError):
    """No handler is registered for this task type; call register_task first."""


class PayloadError(SchedulingError):
    """The payload cannot be stored exactly as JSON; pass dicts, lists, str, int, float,
    bool and None only."""


class InvalidTaskOptions(SchedulingError):
    """An option of schedule_task has a bad value."""


class DependencyError(SchedulingError):
    """depends_on names a task the store does not know, or would make a cycle; nothing was
    stored. Schedule the dependencies first (or list them earlier in the same batch)."""


class InvalidSchedule(SchedulingError):
    """The periodic schedule was refused and nothing was stored; fix the named field."""


class ManagerStateError(TaskyardError):
    """The task manager is not in a state that allows this call."""


class TaskNotFound(TaskyardError):
    """No task has this id."""


class ScheduleNotFound(TaskyardError):
    """No periodic schedule has this name; `taskyard schedules list` shows them."""


class OperationRefused(TaskyardError):
    """The operation was refused and nothing was changed; the message says why."""


class OperationNotSupported(OperationRefused):
    """This store cannot do this operation (it lacks the capability); the message says
    what to use instead."""


class InvalidQuery(OperationRefused):
    """A filter or a page cursor given to an operations query is wrong; the message says
    what is allowed."""


class ExportFileError(TaskyardError):
    """The file is not a taskyard export this version can read, or it is damaged; nothing
    was imported."""

    path: str = ""
    line: int = 0
    """The line at fault, from 1 (0: the file could not be read at all)."""
    reason: str = ""

    @classmethod
    def at(cls, path: str | os.PathLike[str], line: int, reason: str) -> ExportFileError:
        """The error for ``line`` of the file at ``path``."""
        error = cls(f"{path}, line {line}: {reason}; nothing was imported")
        error.path, error.line, error.reason = str(path), line, reason
        return error


class MigrationError(TaskyardError):
    """A move between stores failed; the tasks stayed where they were."""


class StoreError(TaskyardError):
    """The task store failed."""


class StoreUnavailable(StoreError):
    """The task store cannot take this operation right now (locked, I/O error, read-only);
    retry later or check the database file and its folder."""


class StoreFull(StoreUnavailable):
    """The database or the disk is full; free space or raise the size limit."""


class DatabaseMoved(StoreUnavailable):
    """The queue's database file is not where it was opened (deleted, renamed or replaced
    while in use), or its -wal/-shm files remain without it. Writes are refused so that
    nothing accepted goes into a file that no longer has a name: put the database file
    (and its -wal) back at its path, or restart once it is restored."""


class SchemaError(StoreError):
    """The database file cannot be used as a taskyard queue."""


class NotADatabase(SchemaError):
    """The file is not a SQLite database; point task_execution.queue_db_path at another path."""


class ForeignDatabase(SchemaError):
    """The file is a SQLite database of another application, not a taskyard queue; taskyard
    left it unchanged. Point task_execution.queue_db_path at another path."""


class SchemaTooNew(SchemaError):
    """The database was written by a newer taskyard; upgrade taskyard to open it."""


class SchemaMismatch(SchemaError):
    """The database says it is a taskyard queue but its tables do not match its schema
    version; restore it from a backup or point task_execution.queue_db_path elsewhere."""


class IntegrityError(StoreError):
    """The stored data breaks a taskyard invariant."""


# -- control flow, raised by handlers ------------------------------------------------------


class Retry(Exception):
    """Raised by a handler to ask for another attempt after ``delay`` (seconds or timedelta).

    The attempt still counts; when attempts are exhausted the task fails.
    """

    def __init__(self, message: str = "retry requested", *, delay: float | timedelta = 0.0):
        super().__init__(message)
        self.delay = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if self.delay < 0:
            raise ValueError("Retry delay must not be negative")


class PermanentFailure(Exception):
    """Raised by a handler to fail the task at once, without further attempts."""
