"""Every backend in conftest.BACKENDS against the schedules part of the contract."""

from taskyard.testing import ScheduleContract


class TestSchedules(ScheduleContract):
    pass
