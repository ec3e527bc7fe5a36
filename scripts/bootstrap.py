"""Set up and run taskyard from any shell, Windows' PowerShell included (stdlib only).

    py -3 scripts/bootstrap.py test [pytest args]   # like scripts/test.sh
    py -3 scripts/bootstrap.py demo [demo args]     # like scripts/demo.sh
    python3 scripts/bootstrap.py test tests/unit -x

Creates ``.venv`` on first use and installs the project (with the ``test`` extra for
``test``), again only when ``pyproject.toml`` changes: what ``scripts/_bootstrap.sh``
does for the bash scripts, with ``.venv\\Scripts`` on Windows and ``.venv/bin`` elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if sys.platform == "win32" else "bin")
EXE = ".exe" if sys.platform == "win32" else ""


def tool(name: str) -> str:
    return str(BIN / f"{name}{EXE}")


def ensure_venv(extras: str) -> None:
    python = tool("python")
    if not Path(python).exists():
        print(f"==> creating {VENV} with Python {sys.version.split()[0]}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    target = f".[{extras}]" if extras else "."
    stamp = VENV / f".taskyard-install-{extras or '_'}"
    fingerprint = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text(encoding="utf-8").strip() != fingerprint:
        print(f"==> installing {target} into {VENV}", flush=True)
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-e", target],
            cwd=ROOT,
            check=True,
        )  # fmt: skip
        stamp.write_text(fingerprint + "\n", encoding="utf-8")


def run(*command: str) -> None:
    print("==> " + " ".join([Path(command[0]).stem, *command[1:]]), flush=True)
    done = subprocess.run(command, cwd=ROOT)
    if done.returncode:
        sys.exit(done.returncode)


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("test", "demo"):
        sys.exit(__doc__)
    command, rest = argv[0], argv[1:]
    if command == "demo":
        ensure_venv("")
        run(tool("taskyard"), "demo", *rest)
        return
    ensure_venv("test")
    run(tool("ruff"), "check", "taskyard", "tests", "examples")
    run(tool("mypy"))
    run(tool("mypy"), "--platform", "win32")
    coverage = ["--cov", "--cov-report=term"] + (["--cov-fail-under=0"] if rest else [])
    run(tool("pytest"), *coverage, *rest)
    if not rest and sys.platform != "win32":  # Windows simulated: see scripts/test.sh
        simulated = [
            "tests/integration/test_sqlite_processes.py",
            "tests/integration/test_windows_simulation.py",
            "tests/ops/test_workers.py",
            "tests/migration/test_runbook.py",
        ]
        os.environ["PYTHONPATH"] = str(ROOT / "tests" / "windows_sim")
        run(tool("pytest"), "-p", "no:cacheprovider", "-q", *simulated)


if __name__ == "__main__":
    main(sys.argv[1:])
