#!/usr/bin/env bash
# Lint, type-check and test taskyard. Creates .venv on first use.
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh tests/unit -x   # extra arguments go to pytest
# Every run measures branch coverage of taskyard/ and prints it; the whole suite (no
# arguments) must reach [tool.coverage.report] fail_under in pyproject.toml.
set -euo pipefail

TASKYARD_EXTRAS=test
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"

echo "==> ruff check"
.venv/bin/ruff check taskyard tests examples
echo "==> mypy"
.venv/bin/mypy
echo "==> mypy --platform win32 (the Windows side of taskyard/, checked without Windows)"
.venv/bin/mypy --platform win32
echo "==> pytest (with branch coverage of taskyard/)"
coverage=(--cov --cov-report=term)
if [ "$#" -gt 0 ]; then
    coverage+=(--cov-fail-under=0)  # a partial run covers less: report it, do not judge it
fi
.venv/bin/pytest "${coverage[@]}" "$@"
if [ "$#" -eq 0 ]; then
    # Windows simulated (tests/windows_sim/sitecustomize.py, inherited by every child
    # process): no os.register_at_fork, event loops without signal support
    echo "==> pytest: the worker tests again, under simulated Windows"
    PYTHONPATH="$PWD/tests/windows_sim" .venv/bin/pytest -p no:cacheprovider -q \
        tests/integration/test_sqlite_processes.py tests/integration/test_windows_simulation.py \
        tests/ops/test_workers.py tests/migration/test_runbook.py
fi
