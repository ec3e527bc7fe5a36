"""Hypothesis throws arbitrary arguments and payloads at ``schedule_task``.

Each call must end one of two ways: a typed :class:`SchedulingError` with nothing
stored, or an id whose status gives back exactly what was scheduled (payload,
priority, max_attempts, timeout, run_after). Runs over the in-memory store and SQLite
(the fallback and canary stores share SQLite's and memory's rules). The default run
tries a modest number of inputs; the ``slow`` one many more.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskyard.backends.memory import InMemoryTaskManager
from taskyard.backends.sqlite import QueuedTaskManager
from taskyard.framework import EngineConfig, SchedulingError, TaskEngine
from taskyard.testing.contract import nested

# -- strategies -----------------------------------------------------------------------------

SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udbffb", "nul\x00"])
TEXT = st.one_of(st.text(max_size=20), SURROGATES)
INTS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, -(2**63) - 1, 2**31, -(2**31) - 1]),
    st.integers(min_value=4200, max_value=5000).map(lambda digits: 10**digits),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
JSON_LEAVES = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)
NOT_JSON = st.one_of(
    st.binary(max_size=4),
    st.sets(st.integers(), max_size=2),
    st.tuples(st.integers()),
    st.datetimes(),
    st.builds(object),
)
KEYS = st.one_of(TEXT, st.integers(), st.none())
VALUES = st.recursive(
    st.one_of(JSON_LEAVES, NOT_JSON),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=20,
)
JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=30,
)
DEEP = st.integers(min_value=90, max_value=3000).map(lambda depth: nested(depth))
PAYLOADS = st.one_of(
    st.dictionaries(st.text(max_size=10), JSON, max_size=5),  # mostly valid
    JSON,
    VALUES,
    st.dictionaries(TEXT, VALUES, max_size=5),
    DEEP,
)

OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
MOMENTS = st.one_of(
    st.datetimes(datetime(1970, 1, 2), datetime(2199, 12, 30), timezones=OFFSETS),
    st.datetimes(timezones=OFFSETS),
    st.datetimes(),  # naive
    st.sampled_from(
        [
            datetime.max.replace(tzinfo=UTC),
            datetime.min.replace(tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5))),
            datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        ]
    ),
)
DELAYS = st.one_of(
    FLOATS,
    INTS,
    st.timedeltas(),
    st.sampled_from([timedelta.max, timedelta.min, 1e308, -0.0]),
    TEXT,
)
NUMBERS = st.one_of(INTS, FLOATS, st.booleans(), TEXT)
PLAUSIBLE = st.fixed_dictionaries(
    {},
    optional={
        "priority": st.integers(-(2**31), 2**31 - 1),
        "max_attempts": st.integers(1, 2**31 - 1),
        "timeout": st.floats(1e-3, 1e9),
        "task_id": st.text(min_size=1, max_size=100),
        "idempotency_key": st.text(max_size=30),
    },
).flatmap(
    lambda options: st.one_of(
        st.just(options),
        st.builds(lambda when: {**options, "run_after": when}, MOMENTS),
        st.builds(lambda delay: {**options, "delay": delay}, st.floats(0, 1e9)),
    )
)
HOSTILE = st.fixed_dictionaries(
    {},
    optional={
        "priority": st.one_of(st.integers(-(2**31), 2**31 - 1), NUMBERS),
        "run_after": MOMENTS,
        "delay": st.one_of(st.floats(0, 1e9), DELAYS),
        "max_attempts": st.one_of(st.integers(1, 2**31 - 1), NUMBERS),
        "timeout": st.one_of(st.floats(1e-3, 1e9), NUMBERS),
        "idempotency_key": st.one_of(TEXT, st.integers()),
        "task_id": st.one_of(TEXT, st.integers(), st.text(min_size=190, max_size=210)),
    },
)
OPTIONS = st.one_of(PLAUSIBLE, HOSTILE)

# -- the check ------------------------------------------------------------------------------


async def noop(payload: Any) -> None:
    return None


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON kind all the way down (1 is not 1.0, False is not 0)."""
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(same(value, b[key]) for key, value in a.items())
        )
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return type(a) is type(b) and a == b


class Fuzz:
    """One started manager per backend, on one event loop, for all examples."""

    def __init__(self, managers: dict[str, TaskEngine], loop: asyncio.AbstractEventLoop):
        self.managers = managers
        self.loop = loop
        self.tried = 0
        self.stored = 0
        self.refused = 0
        self._ids = itertools.count()

    def check(self, payload: Any, options: dict[str, Any]) -> None:
        for manager in self.managers.values():
            self.loop.run_until_complete(self._check(manager, payload, dict(options)))

    async def _check(self, manager: TaskEngine, payload: Any, options: dict[str, Any]) -> None:
        self.tried += 1
        if "idempotency_key" in options and isinstance(options["idempotency_key"], str):
            options["idempotency_key"] += f"-{next(self._ids)}"  # never an earlier task's
        if "task_id" in options and isinstance(options["task_id"], str):
            options["task_id"] = f"{next(self._ids)}-" + options["task_id"]
        before = sum((await manager.count_by_status()).values())
        asked = datetime.now(UTC)
        try:
            task_id = await manager.schedule_task("noop", payload, **options)
        except SchedulingError:
            self.refused += 1
            after = sum((await manager.count_by_status()).values())
            assert after == before, "a refused call stored something"
            return
        # anything else raised fails the test: only typed refusals are allowed
        self.stored += 1
        status = await manager.get_task_status(task_id)
        assert status is not None
        assert same(status["payload"], {} if payload is None else payload), status["payload"]
        assert status["priority"] == options.get("priority", 5)
        if "max_attempts" in options:
            assert status["max_attempts"] == options["max_attempts"]
        if "task_id" in options:
            assert task_id == options["task_id"]
        run_after = datetime.fromisoformat(status["run_after"])
        if options.get("run_after") is not None:
            assert run_after == options["run_after"]
        elif options.get("delay") is not None:
            delay = options["delay"]
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
            slack = timedelta(seconds=5)
            assert asked + timedelta(seconds=seconds) - slack <= run_after
            assert run_after <= datetime.now(UTC) + timedelta(seconds=seconds) + slack


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    config = EngineConfig(run_worker=False)
    managers: dict[str, TaskEngine] = {
        "in-memory": InMemoryTaskManager(config),
        "sqlite": QueuedTaskManager(config, db_path=folder / "q.db"),
    }
    loop = asyncio.new_event_loop()
    for manager in managers.values():
        loop.run_until_complete(manager.register_task("noop", noop))
        loop.run_until_complete(manager.start())
    state = Fuzz(managers, loop)
    try:
        yield state
    finally:
        for manager in managers.values():
            loop.run_until_complete(manager.stop())
        loop.close()
        print(
            f"\nfuzz: {state.tried} schedule_task calls, {state.stored} stored and round-"
            f"tripped exactly, {state.refused} refused with a SchedulingError"
        )


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@fuzz_settings(150)
@given(payload=PAYLOADS, options=OPTIONS)
def test_schedule_task_refuses_with_a_typed_error_or_stores_exactly(
    fuzz: Fuzz, payload: Any, options: dict[str, Any]
) -> None:
    fuzz.check(payload, options)


@pytest.mark.slow
@fuzz_settings(2500)
@given(payload=PAYLOADS, options=OPTIONS)
def test_schedule_task_under_many_more_inputs(
    fuzz: Fuzz, payload: Any, options: dict[str, Any]
) -> None:
    fuzz.check(payload, options)
