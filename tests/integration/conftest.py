"""Fixtures for the integration tests: real faults on real files."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def chattr() -> Iterator[Callable[[Path, bool], None]]:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: cannot make a file immutable here")
    touched: list[Path] = []

    def set_immutable(path: Path, immutable: bool) -> None:
        result = subprocess.run(
            ["chattr", "+i" if immutable else "-i", str(path)], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"this file system refuses chattr: {result.stderr.strip()}")
        touched.append(path)

    yield set_immutable
    for path in touched:
        subprocess.run(["chattr", "-i", str(path)], check=False)
