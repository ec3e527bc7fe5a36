"""Every backend in conftest.BACKENDS against the TaskManager contract."""

from taskyard.testing import TaskManagerContract


class TestContract(TaskManagerContract):
    pass
