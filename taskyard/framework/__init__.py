"""The vocabulary every other part of taskyard speaks. Imports nothing else of taskyard."""

from taskyard.framework.engine import EngineConfig, TaskEngine
from taskyard.framework.errors import (
    BackendNotAvailable,
    ConfigurationError,
    ExportFileError,
    ForeignDatabase,
    IntegrityError,
    InvalidTaskOptions,
    ManagerStateError,
    MigrationError,
    NotADatabase,
    OperationNotSupported,
    OperationRefused,
    PayloadError,
    PermanentFailure,
    Retry,
    SchedulingError,
    SchemaError,
    SchemaMismatch,
    SchemaTooNew,
    StoreError,
    StoreFull,
    StoreUnavailable,
    TaskNotFound,
    TaskyardError,
    UnknownTaskType,
)
from taskyard.framework.events import EventBus
from taskyard.framework.models import Outcome, TaskEvent, TaskRecord, TaskStatus
from taskyard.framework.operations import StoreOperations
from taskyard.framework.orchestrator import TaskOrchestrator
from taskyard.framework.protocol import Handler, TaskManager
from taskyard.framework.retry import RetryPolicy
from taskyard.framework.runs import (
    JsonFileRunPersistence,
    Run,
    RunPersistence,
    RunRegistry,
    RunStatus,
)
from taskyard.framework.store import Capability, TaskStore

__all__ = [
    "BackendNotAvailable",
    "Capability",
    "ConfigurationError",
    "EngineConfig",
    "EventBus",
    "ExportFileError",
    "ForeignDatabase",
    "Handler",
    "IntegrityError",
    "InvalidTaskOptions",
    "JsonFileRunPersistence",
    "ManagerStateError",
    "MigrationError",
    "NotADatabase",
    "OperationNotSupported",
    "OperationRefused",
    "Outcome",
    "PayloadError",
    "PermanentFailure",
    "Retry",
    "RetryPolicy",
    "Run",
    "RunPersistence",
    "RunRegistry",
    "RunStatus",
    "SchedulingError",
    "SchemaError",
    "SchemaMismatch",
    "SchemaTooNew",
    "StoreError",
    "StoreFull",
    "StoreOperations",
    "StoreUnavailable",
    "TaskEngine",
    "TaskEvent",
    "TaskManager",
    "TaskNotFound",
    "TaskOrchestrator",
    "TaskRecord",
    "TaskStatus",
    "TaskStore",
    "TaskyardError",
    "UnknownTaskType",
]
