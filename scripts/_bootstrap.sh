# Sourced by the other scripts: cd to the repository root and make sure .venv exists
# with the project installed (editable) with the extras named in $TASKYARD_EXTRAS.
# Idempotent: the install is redone only when pyproject.toml or the extras change.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV=".venv"
EXTRAS="${TASKYARD_EXTRAS:-}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

target="."
if [ -n "$EXTRAS" ]; then
    target=".[$EXTRAS]"
fi
stamp="$VENV/.taskyard-install-$(printf '%s' "$EXTRAS" | tr -c 'a-z0-9' '_')"
fingerprint="$("$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$fingerprint" ]; then
    echo "==> installing $target into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$target"
    printf '%s\n' "$fingerprint" > "$stamp"
fi
