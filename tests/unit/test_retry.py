"""RetryPolicy: exponential growth, the cap, jitter bounds, fractional seconds."""

import random

import pytest

from taskyard.framework.retry import RetryPolicy


def test_delays_grow_exponentially_from_the_initial_delay():
    policy = RetryPolicy(initial=0.5, multiplier=3, max_delay=1000, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 13.5, 40.5]


def test_delays_are_capped_at_max_delay():
    policy = RetryPolicy(initial=1, multiplier=2, max_delay=5, jitter=0)
    assert [policy.base_delay(n) for n in range(1, 7)] == [1, 2, 4, 5, 5, 5]


def test_a_huge_attempt_number_is_capped_instead_of_overflowing():
    policy = RetryPolicy(initial=1, multiplier=10, max_delay=60, jitter=0)
    assert policy.delay(10_000) == 60


def test_delays_are_fractional_seconds_never_truncated():
    policy = RetryPolicy(initial=0.01, multiplier=2, max_delay=0.05, jitter=0)
    assert [policy.delay(n) for n in range(1, 5)] == pytest.approx([0.01, 0.02, 0.04, 0.05])
    assert isinstance(policy.delay(1), float)


@pytest.mark.parametrize("attempt", [0, -3])
def test_attempts_below_one_use_the_initial_delay(attempt):
    assert RetryPolicy(initial=0.25, jitter=0).delay(attempt) == 0.25


@pytest.mark.parametrize("attempt", [1, 3, 8])
def test_jitter_stays_within_its_fraction_of_the_delay(attempt):
    policy = RetryPolicy(initial=0.2, multiplier=2, max_delay=10, jitter=0.25)
    base = policy.base_delay(attempt)
    rng = random.Random(1234)
    samples = [policy.delay(attempt, rng) for _ in range(2000)]
    assert all(base * 0.75 <= sample <= base * 1.25 for sample in samples)
    assert min(samples) < base * 0.8 and max(samples) > base * 1.2, "jitter does not spread"
    assert len(set(samples)) > 1900


def test_jitter_is_reproducible_with_a_seeded_rng():
    policy = RetryPolicy(initial=1, jitter=0.5)
    first = [policy.delay(2, random.Random(7)) for _ in range(3)]
    assert first == [policy.delay(2, random.Random(7))] * 3


def test_full_jitter_never_goes_negative():
    policy = RetryPolicy(initial=1, multiplier=1, max_delay=1, jitter=1)
    rng = random.Random(99)
    assert all(policy.delay(1, rng) >= 0 for _ in range(1000))


def test_zero_jitter_is_exact_and_a_zero_delay_stays_zero():
    assert RetryPolicy(initial=0.3, jitter=0).delay(1) == 0.3
    assert RetryPolicy(initial=0, jitter=0.5).delay(4) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": -1}, "negative"),
        ({"max_delay": -0.5}, "negative"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)
