"""Shared helpers of the migration tests: polling with a deadline, never sleeping."""

from __future__ import annotations

import functools

from taskyard.testing import wait_until

until = functools.partial(wait_until, timeout=30.0)
"""taskyard.testing.wait_until with the migration tests' deadline."""
