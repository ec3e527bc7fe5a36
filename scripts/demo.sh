#!/usr/bin/env bash
# Run the taskyard demo: a few thousand tasks on the backend the settings select.
# Creates .venv on first use. Extra arguments go to `taskyard demo` (--tasks 500 ...).
set -euo pipefail

TASKYARD_EXTRAS=""
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"

exec .venv/bin/taskyard demo "$@"
