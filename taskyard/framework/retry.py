"""Exponential backoff with jitter, in fractional seconds."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``delay(n) = min(initial * multiplier ** (n - 1), max_delay)``, then spread by
    ``± jitter`` (a fraction of the delay). ``n`` is the attempt that just failed."""

    initial: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.initial < 0 or self.max_delay < 0:
            raise ValueError("retry delays must not be negative")
        if self.multiplier < 1:
            raise ValueError("retry multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("retry jitter must be between 0 and 1")

    def base_delay(self, attempt: int) -> float:
        exponent = max(attempt - 1, 0)
        try:
            delay = self.initial * self.multiplier**exponent
        except OverflowError:
            delay = self.max_delay
        return min(delay, self.max_delay)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = self.base_delay(attempt)
        if not self.jitter or not base:
            return base
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))
