"""taskyard: a durable async task manager for Python services.

One public protocol, :class:`TaskManager`, in front of interchangeable backends
(``in-memory``, ``sqlite``, ``sqlite-with-fallback``, ``postgres``), chosen by settings
and wired by :class:`taskyard.providers.Container`.
"""

from loguru import logger as _logger

from taskyard.framework import (
    ConfigurationError,
    DependencyError,
    EngineConfig,
    EventBus,
    InvalidSchedule,
    InvalidTaskOptions,
    ManagerStateError,
    PayloadError,
    PermanentFailure,
    Retry,
    RetryPolicy,
    Run,
    RunRegistry,
    RunStatus,
    ScheduleNotFound,
    SchedulingError,
    StoreError,
    TaskContext,
    TaskEngine,
    TaskEvent,
    TaskManager,
    TaskNotFound,
    TaskOrchestrator,
    TaskStatus,
    TaskStore,
    TaskyardError,
    UnknownTaskType,
    chain,
    chord,
    group,
    schedule_workflow,
    step,
)

_logger.disable("taskyard")  # a library adds no sinks; the CLI or the application enables it

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "DependencyError",
    "EngineConfig",
    "EventBus",
    "InvalidSchedule",
    "InvalidTaskOptions",
    "ManagerStateError",
    "PayloadError",
    "PermanentFailure",
    "Retry",
    "RetryPolicy",
    "Run",
    "RunRegistry",
    "RunStatus",
    "ScheduleNotFound",
    "SchedulingError",
    "StoreError",
    "TaskContext",
    "TaskEngine",
    "TaskEvent",
    "TaskManager",
    "TaskNotFound",
    "TaskOrchestrator",
    "TaskStatus",
    "TaskStore",
    "TaskyardError",
    "UnknownTaskType",
    "__version__",
    "chain",
    "chord",
    "group",
    "schedule_workflow",
    "step",
]
