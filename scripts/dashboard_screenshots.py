"""Take the dashboard screenshots of docs/images: a queue with an hour of history, a live
worker and the dashboard, photographed by headless Chromium.

    .venv/bin/python scripts/dashboard_screenshots.py [docs/images]
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taskyard.backends.sqlite import SqliteStore  # noqa: E402
from taskyard.framework.models import TaskRecord, TaskStatus, new_task_id  # noqa: E402
from tests.web.conftest import ADMIN, APP, Processes, dashboard_url  # noqa: E402

TYPES = {"ok": 0.02, "boom": 0.6, "boom2": 0.3}


def history(count: int) -> list[TaskRecord]:
    """``count`` tasks that finished over the last hour, a few failed, a few waiting."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    records = []
    for index in range(count):
        task_type = rng.choice(list(TYPES))
        finished = now - timedelta(seconds=3600 * (1 - index / count) ** 1.5)
        started = finished - timedelta(milliseconds=rng.lognormvariate(3.5, 0.6))
        failed = rng.random() < TYPES[task_type] * 0.1
        status = TaskStatus.FAILED if failed else TaskStatus.COMPLETED
        records.append(
            TaskRecord(
                id=new_task_id(),
                type=task_type,
                payload={"order": 1000 + index, "customer": f"customer-{index % 97}"},
                status=status,
                attempts=3 if failed else 1,
                max_attempts=3,
                result=None if failed else {"echo": index},
                error=f"ValueError: boom: order {1000 + index} refused" if failed else None,
                created_at=started - timedelta(seconds=1),
                updated_at=finished,
                run_after=started - timedelta(seconds=1),
                started_at=started,
                finished_at=finished,
            )
        )
    for index in range(40):
        records.append(
            TaskRecord(
                id=new_task_id(),
                type="later",
                payload={"order": index},
                created_at=now,
                run_after=now + timedelta(hours=2),
            )
        )
    return records


async def fill(db: Path) -> None:
    store = SqliteStore(db)
    await store.open()
    await store.import_records(history(4000))
    await store.close()


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "images")
    target.mkdir(parents=True, exist_ok=True)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory() as scratch:
        processes = Processes(Path(scratch))
        asyncio.run(fill(processes.db))
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in ("--headless=new", "--no-sandbox", "--window-size=1400,1500"):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            processes.start("worker", "--app", APP, ready="taskyard worker ready")
            _, output = processes.start("dashboard", "--port", "0", ready="dashboard ready")
            url = dashboard_url(output)
            driver.get(f"{url}?token={ADMIN}")
            driver.save_screenshot(str(target / "dashboard-overview.png"))
            driver.get(f"{url}tasks?status=failed")
            driver.find_element("css selector", "#tasks td a").click()
            driver.save_screenshot(str(target / "dashboard-task.png"))
        finally:
            driver.quit()
            processes.close()
    print(f"screenshots in {target}")


if __name__ == "__main__":
    main()
