"""Fixtures of the dashboard tests: a real queue file, a real `taskyard worker` process,
the dashboard (`taskyard dashboard`) on a free loopback port, a producer that schedules
real tasks, and headless Chromium driven through Debian's chromedriver."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskyard.backends.sqlite import SqliteStore
from taskyard.framework.engine import EngineConfig, TaskEngine
from taskyard.framework.operations import StoreOperations
from taskyard.testing import poll_until
from tests.pg_support import create_database, drop_database, require_postgres

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.web.worker_app:HANDLERS"
ADMIN = "admin-token-0123456789"
READ_ONLY = "read-only-token-0123456789"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


class Processes:
    """`taskyard` processes on one queue file, their output in files, killed at the end."""

    def __init__(self, folder: Path, postgres_dsn: str | None = None) -> None:
        self.folder = folder
        self.db = folder / "queue.db"
        self.postgres_dsn = postgres_dsn
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def store(self) -> StoreOperations:
        """A new, unopened store on the queue these processes use."""
        if self.postgres_dsn is not None:
            from taskyard.backends.postgres import PostgresStore

            return PostgresStore(self.postgres_dsn)
        return SqliteStore(self.db)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_")}
        backend = "sqlite" if self.postgres_dsn is None else "postgres"
        env.update(
            TASKYARD_ENV="testing",
            TASKYARD_TASK_EXECUTION__BACKEND=backend,
            TASKYARD_TASK_EXECUTION__QUEUE_DB_PATH=str(self.db),
            TASKYARD_DASHBOARD__TOKEN=ADMIN,
            TASKYARD_DASHBOARD__READ_ONLY_TOKEN=READ_ONLY,
            TASKYARD_DASHBOARD__REFRESH_SECONDS="0.5",
            PYTHONPATH=str(ROOT),
        )
        if self.postgres_dsn is not None:
            env["TASKYARD_TASK_EXECUTION__POSTGRES_DSN"] = self.postgres_dsn
        env.update(extra)
        return env

    def start(self, *args: str, ready: str, **extra: str) -> tuple[subprocess.Popen[bytes], str]:
        out = self.folder / f"process-{len(self.running)}.out"
        with open(out, "wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "taskyard", *args],
                cwd=ROOT,
                env=self.env(**extra),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.running.append((process, out))

        def started() -> bool:
            assert process.poll() is None, out.read_text(errors="replace")
            return ready in out.read_text(errors="replace")

        poll_until(started, timeout=60, message=f"{ready!r} from taskyard {args[0]}")
        return process, out.read_text(errors="replace")

    def close(self) -> None:
        for process, _ in self.running:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def dashboard_url(output: str) -> str:
    found = re.search(r"taskyard dashboard at (http://127\.0\.0\.1:\d+/)", output)
    assert found, output
    return found[1]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A worker process and a dashboard process on one new queue (a SQLite file, or a
    PostgreSQL database of its own)."""
    folder = tmp_path_factory.mktemp("dashboard")
    database = None
    dsn = None
    if request.param == "postgres":
        require_postgres()
        database, dsn = create_database()
    processes = Processes(folder, dsn)
    try:
        processes.start("worker", "--app", APP, ready="taskyard worker ready")
        _, output = processes.start("dashboard", "--port", "0", ready="taskyard dashboard ready")
        yield {"processes": processes, "url": dashboard_url(output), "folder": folder}
    finally:
        processes.close()
        if database is not None:
            drop_database(database)


@pytest.fixture
async def producer(live: dict[str, Any]) -> AsyncIterator[TaskEngine]:
    """A producer-only manager on the live queue: it schedules, the worker runs."""
    manager = TaskEngine(live["processes"].store(), EngineConfig(run_worker=False))
    for task_type in ("ok", "boom", "boom2"):
        await manager.register_task(task_type, lambda payload: None)
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()


@pytest.fixture
async def reader(live: dict[str, Any]) -> AsyncIterator[StoreOperations]:
    """The queue as the database holds it, to compare the pages with."""
    store = live["processes"].store()
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _chromium_available() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists() and shutil.which("chromium") is not None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's), through Debian's chromedriver."""
    if not _chromium_available():
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing; .ci/run installs them")
        pytest.skip("needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1100",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where a test saves its screenshots (also copied to $DASHBOARD_SCREENSHOTS, if set)."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


def screenshot(driver: Any, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    extra = os.environ.get("DASHBOARD_SCREENSHOTS")
    if extra:
        shutil.copy(path, Path(extra) / path.name)
    return path
