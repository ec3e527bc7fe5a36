"""The dashboard in a real browser: headless Chromium against `taskyard dashboard` and a
`taskyard worker` process on one SQLite queue, with real tasks scheduled by a producer.
Each test saves screenshots of the pages it saw under its tmp folder."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from taskyard.framework.engine import TaskEngine
from taskyard.framework.models import TaskStatus
from taskyard.framework.operations import StoreOperations, TaskFilter
from taskyard.testing import poll_until, wait_until
from taskyard.web.security import csrf_token

from .conftest import ADMIN, READ_ONLY, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def login(driver: Any, url: str, token: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{url}?token={token}")
    assert driver.find_element("id", "role").text in ("admin", "read-only")


def text_of(driver: Any, css: str) -> str:
    """The text of the element, read in one script (the live part is swapped every
    refresh, so an element found first and read after may be gone)."""
    found: list[Any] = []

    def present() -> bool:  # after a click, the next page may still be loading
        found[:] = [
            driver.execute_script(
                "const node = document.querySelector(arguments[0]);"
                "return node === null ? null : node.innerText;",
                css,
            )
        ]
        return found[0] is not None

    poll_until(present, timeout=15, message=f"{css} on {driver.current_url}")
    return str(found[0])


async def finished(store: StoreOperations, ids: list[str]) -> None:
    async def all_done() -> bool:
        for task_id in ids:
            record = await store.get(task_id)
            if record is None or not record.status.is_terminal:
                return False
        return True

    await wait_until(all_done, timeout=60, message="the worker finishing the tasks")


async def schedule(producer: TaskEngine, task_type: str, count: int, **kw: Any) -> list[str]:
    return [
        await producer.schedule_task(task_type, {"n": n, "kind": task_type}, **kw)
        for n in range(count)
    ]


def status_code(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def test_a_wrong_token_gets_401(live: dict[str, Any], browser: Any, shots: Path) -> None:
    url = live["url"]
    assert status_code(url) == 401
    assert status_code(url, "not-the-token-at-all") == 401
    assert status_code(f"{url}tasks", ADMIN) == 200
    browser.delete_all_cookies()
    browser.get(f"{url}?token=wrong-token-wrong-token")
    assert "not valid" in text_of(browser, "#message")
    browser.get(f"{url}tasks")
    assert "Log in" in text_of(browser, "h1")
    screenshot(browser, shots, "login-refused")


async def test_the_overview_counts_match_the_database_and_update_live(
    live: dict[str, Any], browser: Any, producer: TaskEngine, reader: StoreOperations,
    shots: Path,
) -> None:  # fmt: skip
    ids = await schedule(producer, "ok", 6) + await schedule(producer, "boom", 3, max_attempts=1)
    await finished(reader, ids)
    login(browser, live["url"], ADMIN)

    def shown() -> dict[str, int]:
        cells = browser.execute_script(
            "return Array.from(document.querySelectorAll('#depth td[data-status]'),"
            " cell => [cell.dataset.status, cell.innerText]);"
        )
        return {status: int(count) for status, count in cells}

    async def matches() -> bool:
        expected = {str(k): v for k, v in (await reader.count_by_status()).items()}
        return shown() == expected

    await wait_until(matches, timeout=30, message="the overview's counts equal the database's")
    assert shown()["completed"] >= 6 and shown()["failed"] >= 3
    assert text_of(browser, "#health-state") in ("ok", "degraded")
    assert (
        browser.execute_script(
            "return document.querySelectorAll('#workers tr.worker-active').length"
        )
        >= 1
    )
    screenshot(browser, shots, "overview")

    # live: more tasks finish and the page shows them without being loaded again
    browser.execute_script("window.__notReloaded = true")
    before = shown()["completed"]
    more = await schedule(producer, "ok", 4)
    await finished(reader, more)
    await wait_until(
        lambda: shown()["completed"] == before + 4, timeout=30, message="the live update"
    )
    assert browser.execute_script("return window.__notReloaded") is True
    assert await matches()
    screenshot(browser, shots, "overview-updated")


async def test_a_failed_tasks_page_shows_its_error(
    live: dict[str, Any], browser: Any, producer: TaskEngine, reader: StoreOperations,
    shots: Path,
) -> None:  # fmt: skip
    [task_id] = await schedule(producer, "boom", 1, max_attempts=2)
    await finished(reader, [task_id])
    login(browser, live["url"], ADMIN)
    browser.get(f"{live['url']}tasks?status=failed&type=boom")
    assert browser.find_elements("css selector", f'tr[data-id="{task_id}"]')
    screenshot(browser, shots, "tasks-failed")
    browser.find_element("link text", task_id).click()
    assert text_of(browser, "#task-status") == "failed"
    error = text_of(browser, "#error")
    assert "ValueError" in error and "boom: the handler refused" in error
    assert "2" in text_of(browser, "#timeline")  # two attempts
    screenshot(browser, shots, "task-failed")


async def test_a_bulk_retry_retries_exactly_the_filtered_tasks(
    live: dict[str, Any], browser: Any, producer: TaskEngine, reader: StoreOperations,
    shots: Path,
) -> None:  # fmt: skip
    chosen = await schedule(producer, "boom2", 3, max_attempts=1)
    others = await schedule(producer, "boom", 2, max_attempts=1)
    await finished(reader, chosen + others)
    before = {task_id: await reader.get(task_id) for task_id in chosen + others}
    failed_boom2 = TaskFilter(statuses=(TaskStatus.FAILED,), task_type="boom2")
    expected = await reader.count_matching(failed_boom2)
    login(browser, live["url"], ADMIN)
    browser.get(f"{live['url']}tasks?status=failed&type=boom2")
    browser.find_element("id", "bulk-retry").click()
    assert int(text_of(browser, "#confirm-count")) == expected
    screenshot(browser, shots, "bulk-confirm")
    clicked = time.time()
    browser.find_element("id", "confirm-button").click()
    assert int(text_of(browser, "#done-count")) == expected
    screenshot(browser, shots, "bulk-done")

    async def ran_again() -> bool:  # each chosen task was queued and failed once more
        for task_id in chosen:
            record = await reader.get(task_id)
            if record is None or record.status is not TaskStatus.FAILED:
                return False
            if record.finished_at is None or record.finished_at.timestamp() < clicked:
                return False
        return True

    await wait_until(ran_again, timeout=60, message="the retried tasks running again")
    for task_id in others:
        assert await reader.get(task_id) == before[task_id]  # untouched
    browser.get(f"{live['url']}audit")
    assert "bulk retry" in text_of(browser, "#audit")
    screenshot(browser, shots, "audit")


async def test_the_read_only_token_sees_but_cannot_retry(
    live: dict[str, Any], browser: Any, producer: TaskEngine, reader: StoreOperations,
    shots: Path,
) -> None:  # fmt: skip
    [task_id] = await schedule(producer, "boom", 1, max_attempts=1)
    await finished(reader, [task_id])
    before = await reader.get(task_id)
    login(browser, live["url"], READ_ONLY)
    browser.get(f"{live['url']}tasks/{task_id}")
    assert text_of(browser, "#task-status") == "failed"
    assert browser.find_elements("id", "retry") == []
    screenshot(browser, shots, "task-read-only")
    browser.get(f"{live['url']}tasks")
    assert browser.find_elements("id", "bulk-retry") == []
    # a forged POST, with the read-only session's own valid CSRF token, is refused
    browser.execute_script(
        "const form = document.createElement('form');"
        "form.method = 'post'; form.action = arguments[0];"
        "const field = document.createElement('input');"
        "field.name = 'csrf'; field.value = arguments[1]; form.appendChild(field);"
        "document.body.appendChild(form); form.submit();",
        f"/tasks/{task_id}/retry",
        csrf_token(READ_ONLY),
    )
    await wait_until(lambda: "Not allowed" in text_of(browser, "h1"), timeout=15, message="403")
    assert "read-only token" in text_of(browser, "#message")
    screenshot(browser, shots, "read-only-refused")
    assert await reader.get(task_id) == before


async def test_a_script_in_a_payload_is_shown_not_run(
    live: dict[str, Any], browser: Any, producer: TaskEngine, reader: StoreOperations,
    shots: Path,
) -> None:  # fmt: skip
    hostile = (
        "<script>window.__pwned = 1; document.title = 'pwned'</script>"
        '<img src="x" onerror="window.__pwned = 2">'
    )
    task_id = await producer.schedule_task("boom", {"note": hostile}, max_attempts=1)
    await finished(reader, [task_id])
    login(browser, live["url"], ADMIN)
    browser.get(f"{live['url']}tasks?q=__pwned")
    assert browser.find_elements("css selector", f'tr[data-id="{task_id}"]')
    browser.get(f"{live['url']}tasks/{task_id}")
    assert "<script>window.__pwned = 1;" in text_of(browser, "#payload")
    assert "<script>" in text_of(browser, "#error")  # the error repeats the payload
    assert browser.execute_script("return window.__pwned") is None
    assert "pwned" not in browser.title
    screenshot(browser, shots, "task-script-payload")


async def test_intake_is_paused_and_resumed_from_the_overview(
    live: dict[str, Any], browser: Any, reader: StoreOperations, shots: Path
) -> None:
    login(browser, live["url"], ADMIN)
    browser.execute_script("document.querySelector('#intake button').click()")
    await wait_until(reader.intake_paused, timeout=10, message="the pause in the store")
    await wait_until(
        lambda: "Intake is paused" in text_of(browser, "#intake"), timeout=15, message="paused"
    )
    screenshot(browser, shots, "overview-paused")
    browser.execute_script("document.querySelector('#intake button').click()")
    await wait_until(
        lambda: "Intake is running" in text_of(browser, "#intake"), timeout=15, message="resumed"
    )
    assert await reader.intake_paused() is False
    actions = [entry.action for entry in await reader.list_actions(limit=2)]
    assert actions == ["resume", "pause"]
