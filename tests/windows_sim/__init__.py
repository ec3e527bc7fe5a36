"""Windows' constraints simulated on POSIX: put this folder on ``PYTHONPATH`` and its
``sitecustomize`` applies to every Python process started with it (see that module).

    PYTHONPATH=tests/windows_sim .venv/bin/pytest tests/integration/test_sqlite_processes.py
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDER = Path(__file__).resolve().parent


def python_path(*first: Path) -> str:
    """``PYTHONPATH`` for a child process: ``first``, this checkout, then what this
    process was given (so a simulation in force here is in force there too)."""
    parts = [str(path) for path in (*first, ROOT)]
    given = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    parts += [str(Path(part).resolve()) for part in given if part]  # children run elsewhere
    return os.pathsep.join(parts)
