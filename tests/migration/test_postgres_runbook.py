"""The sqlite -> postgres -> sqlite move of the migration guide, played with real
processes: `taskyard worker` processes, a producer application and the CLI, with work
in flight at each switch (handlers running, tasks waiting).

Every execution is logged (``tests/integration/worker_app.py``), so "nothing lost,
nothing run twice" is counted, not assumed: a handler cut off by a drain runs again
(at least once); every other task runs exactly once, wherever it ends up.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from taskyard.testing import poll_until
from tests.pg_support import postgres_dsn

from .test_runbook import Deployment, started

__all__ = ["postgres_dsn"]
pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SETTINGS = """\
[production.task_execution]
backend = "sqlite"
queue_db_path = "queue.db"
postgres_schema = "{schema}"
max_concurrency = 3
poll_interval = 0.05
lease_seconds = 5.0
shutdown_timeout = 1.0
worker_app = "tests.integration.worker_app:HANDLERS"

[production.logging]
enabled = false
"""


class Move(Deployment):
    """A deployment whose DSN comes from its environment (as from .secrets.toml)."""

    def __init__(self, folder: Path, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema
        super().__init__(folder)
        (self.dir / "settings.toml").write_text(SETTINGS.format(schema=schema))

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(TASKYARD_TASK_EXECUTION__POSTGRES_DSN=self.dsn, **extra)

    def cli(self, *args: str, **env: str) -> str:
        """`taskyard ARGS` with extra variables (the base class's runs without)."""
        done = subprocess.run(
            [sys.executable, "-m", "taskyard", *args],
            cwd=self.dir,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def sqlite_statuses(self) -> dict[str, tuple[str, int]]:
        conn = sqlite3.connect(self.dir / "queue.db")
        try:
            rows = conn.execute("SELECT id, status, attempts FROM taskyard_tasks").fetchall()
        finally:
            conn.close()
        return {row[0]: (row[1], row[2]) for row in rows}

    def postgres(self, sql: str) -> list[Any]:
        async def run() -> list[Any]:
            conn = await asyncpg.connect(self.dsn)
            try:
                return list(await conn.fetch(sql))
            finally:
                await conn.close()

        return asyncio.run(run())

    def postgres_statuses(self) -> dict[str, tuple[str, int]]:
        rows = self.postgres(f'SELECT id, status, attempts FROM "{self.schema}".taskyard_tasks')
        return {row[0]: (row[1], row[2]) for row in rows}


def exported_ids(path: Path) -> dict[str, tuple[str, int]]:
    lines = path.read_text().split("\n")[1:-1]
    return {r["id"]: (r["status"], r["attempts"]) for r in map(json.loads, lines)}


def test_a_live_queue_moves_to_postgres_and_back_with_real_processes(
    tmp_path: Path, postgres_dsn: str
) -> None:
    deploy = Move(tmp_path / "app", postgres_dsn, "moved")
    try:
        release_1, release_2 = deploy.dir / "release-1", deploy.dir / "release-2"
        deploy.cli("db", "init")
        worker = deploy.worker()
        app = deploy.app(TASKYARD_TASK_EXECUTION__RUN_WORKER="false")
        assert app.backend == "sqlite"
        done = [app.schedule("count", f"a{i}") for i in range(5)]
        poll_until(lambda: deploy.executions()["a4"] == 1, message="a tasks to run")
        running = [app.schedule("wait_for_release", f"e{i}", 0, str(release_1)) for i in range(3)]
        poll_until(started(deploy, "e0", "e1", "e2"), message="three handlers running")
        waiting = [app.schedule("count", f"w{i}", 3600) for i in range(5)]
        assert app.stop() is None

        # -- sqlite -> postgres: the schema, the planned switch, the import ----------------
        created = deploy.cli("db", "init", TASKYARD_TASK_EXECUTION__BACKEND="postgres")
        assert "created PostgreSQL queue" in created and "(schema moved)" in created
        out = deploy.cli(
            "rollback", "--to", "postgres", "--reason", "one machine is not enough",
            "--export-queue-state", "to-postgres.jsonl", "--json",
        )  # fmt: skip
        result = json.loads(out)
        assert worker.wait(timeout=30) == 0  # drained through the queue
        assert result["validation"]["ok"] and result["validation"]["backend"] == "postgres"
        moving = exported_ids(deploy.dir / "to-postgres.jsonl")
        # the cut-off handlers travel queued, their attempt not counted; the rest as they were
        assert moving == {**dict.fromkeys(running, ("queued", 0)),
                          **dict.fromkeys(waiting, ("queued", 0))}  # fmt: skip
        imported = deploy.cli("import", "to-postgres.jsonl")
        assert "imported 8 task(s)" in imported and "result: ok" in imported
        before = deploy.sqlite_statuses()
        (deploy.dir / "queue.db").rename(deploy.dir / "queue-moved.db")
        assert deploy.postgres_statuses() == moving

        # -- on postgres: the moved tasks run there, once --------------------------------------
        worker = deploy.worker()
        release_1.touch()
        deploy.postgres(f'UPDATE "{deploy.schema}".taskyard_tasks SET run_after = now()')
        poll_until(
            lambda: {s for s, _ in deploy.postgres_statuses().values()} == {"completed"},
            message="the moved tasks to finish on postgres",
        )
        assert {a for _, a in deploy.postgres_statuses().values()} == {1}
        assert {before[i] for i in done} == {("completed", 1)}  # the history stays in the file
        app = deploy.app(TASKYARD_TASK_EXECUTION__RUN_WORKER="false")
        assert app.backend == "postgres"
        cut = [app.schedule("wait_for_release", f"g{i}", 0, str(release_2)) for i in range(2)]
        poll_until(started(deploy, "g0", "g1"), message="handlers running on postgres")
        later = [app.schedule("count", f"h{i}", 3600) for i in range(3)]
        assert app.stop() is None

        # -- and back: a fresh file, the switch, the import, the schema retired ----------------
        assert "created queue.db" in deploy.cli(
            "db", "init", TASKYARD_TASK_EXECUTION__BACKEND="sqlite"
        )
        out = deploy.cli(
            "rollback", "--to", "sqlite", "--reason", "back to one machine",
            "--export-queue-state", "to-sqlite.jsonl", "--json",
        )  # fmt: skip
        assert worker.wait(timeout=30) == 0
        assert json.loads(out)["validation"]["ok"]
        back = exported_ids(deploy.dir / "to-sqlite.jsonl")
        assert back == {**dict.fromkeys(cut, ("queued", 0)), **dict.fromkeys(later, ("queued", 0))}
        assert "imported 5 task(s)" in deploy.cli("import", "to-sqlite.jsonl")
        deploy.postgres(f'ALTER SCHEMA "{deploy.schema}" RENAME TO "{deploy.schema}_retired"')
        worker = deploy.worker()
        release_2.touch()
        conn = sqlite3.connect(deploy.dir / "queue.db")
        conn.execute("UPDATE taskyard_tasks SET run_after = 0 WHERE status = 'queued'")
        conn.commit()
        conn.close()
        poll_until(
            lambda: {s for s, _ in deploy.sqlite_statuses().values()} == {"completed"},
            message="the tasks moved back to finish on sqlite",
        )
        assert set(deploy.sqlite_statuses()) == set(back)
        assert "result: ok" in deploy.cli("validate")
        worker.terminate()
        assert worker.wait(timeout=30) == 0

        once = [f"a{i}" for i in range(5)] + [f"w{i}" for i in range(5)] + ["h0", "h1", "h2"]
        twice = ["e0", "e1", "e2", "g0", "g1"]  # cut off by a drain, run again
        executions: collections.Counter[str] = deploy.executions()
        assert executions == collections.Counter(once + twice * 2)
    finally:
        deploy.close()
