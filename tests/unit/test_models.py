"""The task vocabulary: statuses and transitions, the exact-JSON codec, records, time."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from taskyard.framework.errors import PayloadError, SchedulingError
from taskyard.framework.models import (
    ACTIVE_STATUSES,
    STATUS_KEYS,
    TERMINAL_STATUSES,
    TRANSITIONS,
    TaskRecord,
    TaskStatus,
    as_timedelta,
    dumps,
    from_epoch,
    iso,
    loads,
    new_task_id,
    to_epoch,
    utcnow,
)

# -- statuses ----------------------------------------------------------------------------------


def test_the_six_statuses_and_only_those():
    assert {str(status) for status in TaskStatus} == {
        "waiting",
        "queued",
        "running",
        "completed",
        "failed",
        "cancelled",
    }
    assert TERMINAL_STATUSES | ACTIVE_STATUSES == set(TaskStatus)
    assert not TERMINAL_STATUSES & ACTIVE_STATUSES
    assert [s for s in TaskStatus if s.is_terminal] == [
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
    ]


def test_transitions_end_at_terminal_statuses():
    assert set(TRANSITIONS) == set(TaskStatus)
    for status in TERMINAL_STATUSES:
        assert TRANSITIONS[status] == frozenset()
    assert TRANSITIONS[TaskStatus.QUEUED] == {TaskStatus.RUNNING, TaskStatus.CANCELLED}
    assert TaskStatus.QUEUED in TRANSITIONS[TaskStatus.RUNNING]  # a retry or a release
    # released by its last dependency, or cancelled (by hand or by the cascade)
    assert TRANSITIONS[TaskStatus.WAITING] == {TaskStatus.QUEUED, TaskStatus.CANCELLED}


# -- the JSON codec ------------------------------------------------------------------------------


def test_dumps_writes_compact_json_that_round_trips_exactly():
    value = {
        "name": "ünïcode ✓",
        "n": 3,
        "ratio": 0.1,
        "big": 2**70,
        "flags": [True, False, None],
        "nested": {"empty": {}, "list": []},
    }
    text = dumps(value)
    assert " " not in text.replace("ünïcode ✓", "")
    assert "ünïcode ✓" in text  # not escaped
    assert loads(text) == value
    assert json.loads(text) == value


def test_dumps_accepts_top_level_scalars_and_lists():
    for value in (None, True, 0, -1.5, "text", [1, "two", [3.0]]):
        assert loads(dumps(value)) == value


def test_loads_of_none_is_none():
    assert loads(None) is None


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ({"tags": {"a"}}, ["payload['tags']", "set"]),
        ({"blob": b"x"}, ["payload['blob']", "bytes"]),
        ({"pair": (1, 2)}, ["payload['pair']", "tuple"]),
        ({"when": datetime(2024, 1, 1, tzinfo=UTC)}, ["payload['when']", "datetime"]),
        ({"ratio": float("nan")}, ["payload['ratio']", "nan"]),
        ({"ratio": float("-inf")}, ["payload['ratio']", "-inf"]),
        ({1: "one"}, ["payload", "1", "int", "keys must be str"]),
        ({"a": [{"b": [0, {2}]}]}, ["payload['a'][0]['b'][1]", "set"]),
        ({"a": {None: 1}}, ["payload['a']", "None", "NoneType"]),
        (object(), ["payload", "object"]),
    ],
    ids=["set", "bytes", "tuple", "datetime", "nan", "inf", "int-key", "deep", "none-key", "obj"],
)
def test_dumps_refuses_what_json_cannot_represent_and_names_the_path(value, fragments):
    with pytest.raises(PayloadError) as refused:
        dumps(value)
    message = str(refused.value)
    for fragment in fragments:
        assert fragment in message
    assert isinstance(refused.value, SchedulingError)


def test_dumps_names_what_it_encodes():
    with pytest.raises(PayloadError, match=r"^result\['x'\] is a set"):
        dumps({"x": {1}}, what="result")


def test_a_bool_key_is_refused_too():
    with pytest.raises(PayloadError, match="bool"):
        dumps({True: 1})


# -- records -------------------------------------------------------------------------------------


def test_the_status_dict_has_the_documented_keys_and_aware_times():
    created = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    record = TaskRecord(
        id="t1",
        type="email",
        payload={"to": "a@example.com"},
        priority=2,
        created_at=created,
        updated_at=created,
        run_after=created + timedelta(seconds=1.5),
    )
    status = record.to_status()
    assert tuple(status) == STATUS_KEYS
    assert status["status"] == "queued" and type(status["status"]) is str
    assert status["created_at"] == "2024-05-01T10:00:00+00:00"
    assert status["run_after"] == "2024-05-01T10:00:01.500000+00:00"
    assert status["started_at"] is None and status["finished_at"] is None
    assert (status["priority"], status["attempts"], status["max_attempts"]) == (2, 0, 3)


def test_a_record_copy_is_independent_at_the_top_level():
    record = TaskRecord(id="t1", type="x", payload={})
    copy = record.copy()
    copy.status = TaskStatus.RUNNING
    copy.attempts = 2
    assert (record.status, record.attempts) == (TaskStatus.QUEUED, 0)


def test_new_task_ids_are_unique_hex():
    ids = {new_task_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(task_id) == 32 and int(task_id, 16) >= 0 for task_id in ids)


# -- time ----------------------------------------------------------------------------------------


def test_utcnow_is_aware_utc():
    assert utcnow().utcoffset() == timedelta(0)


def test_epoch_round_trip_keeps_microseconds():
    moment = datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC)
    assert from_epoch(to_epoch(moment)) == moment
    assert from_epoch(None) is None


def test_iso_converts_to_utc():
    local = datetime(2024, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert iso(local) == "2024-01-01T06:30:00+00:00"
    assert iso(None) is None


def test_as_timedelta_takes_seconds_or_a_timedelta():
    assert as_timedelta(1.25) == timedelta(seconds=1.25)
    assert as_timedelta(3) == timedelta(seconds=3)
    span = timedelta(minutes=2)
    assert as_timedelta(span) is span


def test_task_ids_are_uuid7_and_strictly_increasing() -> None:
    import uuid

    from taskyard.framework.models import new_task_id

    ids = [new_task_id() for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(task_id) == 32 for task_id in ids)
    parsed = [uuid.UUID(task_id) for task_id in ids[:100]]
    assert {value.version for value in parsed} == {7}
    assert {value.variant for value in parsed} == {uuid.RFC_4122}
