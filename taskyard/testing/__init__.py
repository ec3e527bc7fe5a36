"""The TaskManager contract suite and its helpers, for taskyard's own backends and for
anyone writing one. See :mod:`taskyard.testing.contract` for how a backend joins."""

import pytest

pytest.register_assert_rewrite(
    "taskyard.testing.contract",
    "taskyard.testing.operations",
    "taskyard.testing.schedules",
    "taskyard.testing.workflows",
)

from taskyard.testing.contract import TaskManagerContract  # noqa: E402
from taskyard.testing.helpers import (  # noqa: E402
    BackendFactory,
    ContractManager,
    EventRecorder,
    MakeManager,
    ManagerFactory,
    fast_config,
    in_memory_backend,
    poll_until,
    wait_until,
)
from taskyard.testing.operations import StoreOperationsContract  # noqa: E402
from taskyard.testing.schedules import ScheduleContract  # noqa: E402

__all__ = [
    "BackendFactory",
    "ContractManager",
    "EventRecorder",
    "MakeManager",
    "ManagerFactory",
    "ScheduleContract",
    "StoreOperationsContract",
    "TaskManagerContract",
    "fast_config",
    "in_memory_backend",
    "poll_until",
    "wait_until",
]
