#!/usr/bin/env bash
# Lint, type-check and test taskyard. Creates .venv on first use.
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh tests/unit -x   # extra arguments go to pytest
set -euo pipefail

TASKYARD_EXTRAS=test
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"

echo "==> ruff check"
.venv/bin/ruff check taskyard tests examples
echo "==> mypy"
.venv/bin/mypy
echo "==> pytest"
.venv/bin/pytest "$@"
