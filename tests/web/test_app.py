"""The dashboard application in process (httpx over ASGI, no browser): tokens, roles,
CSRF, filters, actions and the audit log, on a real SQLite queue."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from taskyard.backends.sqlite import SqliteStore
from taskyard.framework.errors import ConfigurationError, InvalidQuery
from taskyard.framework.models import TaskStatus
from taskyard.framework.operations import TaskFilter
from taskyard.testing.operations import record
from taskyard.web import DashboardConfig, create_app
from taskyard.web.app import describe, filter_from, filter_params
from taskyard.web.security import Role, Tokens, check_bind, csrf_token, is_loopback, new_token

ADMIN = "admin-token-0123456789"
READ_ONLY = "read-only-token-0123456789"


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "q.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def client(queue: SqliteStore) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(SqliteStore(queue.path), DashboardConfig(Tokens(ADMIN, READ_ONLY)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as http:
            yield http


def as_admin(http: httpx.AsyncClient) -> httpx.AsyncClient:
    http.headers["authorization"] = f"Bearer {ADMIN}"
    return http


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, page
    return found[1]


async def test_tokens_grant_roles_and_nothing_else() -> None:
    tokens = Tokens(ADMIN, READ_ONLY)
    assert tokens.role_of(ADMIN) is Role.ADMIN and Role.ADMIN.can_act
    assert tokens.role_of(READ_ONLY) is Role.READ_ONLY and not Role.READ_ONLY.can_act
    assert tokens.role_of("") is None and tokens.role_of(ADMIN + "x") is None
    assert Tokens(ADMIN).role_of("") is None
    assert csrf_token(ADMIN) != csrf_token(READ_ONLY)
    assert len(new_token()) >= 16 and new_token() != new_token()


def test_listening_beyond_loopback_needs_a_configured_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    check_bind("127.0.0.1", "")
    check_bind("0.0.0.0", ADMIN)
    with pytest.raises(ConfigurationError, match=r"dashboard\.token"):
        check_bind("0.0.0.0", "")


def test_filters_round_trip_through_the_query_string() -> None:
    params = {"status": "failed", "type": "mail", "since": "2026-01-31T09:00", "q": "acme"}
    task_filter = filter_from(params)
    assert task_filter.statuses == (TaskStatus.FAILED,) and task_filter.text == "acme"
    assert filter_from(filter_params(task_filter)) == task_filter
    assert describe(TaskFilter()) == "every task"
    with pytest.raises(InvalidQuery, match="none of"):
        filter_from({"status": "lost"})
    with pytest.raises(InvalidQuery, match="not a time"):
        filter_from({"until": "yesterday"})


async def test_without_a_token_every_page_is_401(client: httpx.AsyncClient) -> None:
    for path in ("/", "/tasks", "/audit", "/live/overview", "/tasks/x"):
        response = await client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/?token=wrong-wrong-wrong")).status_code == 401
    assert (await client.post("/intake/pause")).status_code == 401


async def test_the_login_url_sets_a_strict_http_only_cookie(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/tasks?token={ADMIN}")
    assert response.status_code == 303 and response.headers["location"] == "/tasks"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = await client.get("/tasks")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


async def test_pages_show_the_queue_escaped(client: httpx.AsyncClient, queue: SqliteStore) -> None:
    hostile = record(TaskStatus.FAILED, payload={"x": "<script>alert(1)</script>"})
    await queue.import_records([hostile, record(task_type="mail")])
    http = as_admin(client)
    overview = (await http.get("/")).text
    assert 'data-status="failed">1<' in overview and 'hx-get="/live/overview"' in overview
    assert (await http.get("/live/overview")).status_code == 200
    listing = (await http.get("/tasks")).text
    assert listing.count("data-id=") == 2
    page = (await http.get(f"/tasks/{hostile.id}")).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert (await http.get("/tasks/no-such-task")).status_code == 404
    assert (await http.get("/tasks?status=lost")).status_code == 400
    assert (await http.get("/tasks?after=garbage")).status_code == 400
    for later in ("/schedules", "/workflows"):
        assert "Not available" in (await http.get(later)).text


async def test_the_task_list_pages_by_cursor(client: httpx.AsyncClient, queue: SqliteStore) -> None:
    await queue.import_records([record(created_ago=n) for n in range(60)])
    http = as_admin(client)
    first = (await http.get("/tasks")).text
    assert first.count("data-id=") == 50
    older = re.search(r'href="(/tasks\?after=[^"]+)" id="older"', first)
    assert older
    second = (await http.get(older[1].replace("&amp;", "&"))).text
    assert second.count("data-id=") == 10 and 'id="older"' not in second


async def test_a_bulk_retry_confirms_a_count_and_is_audited(
    client: httpx.AsyncClient, queue: SqliteStore
) -> None:
    chosen = [record(TaskStatus.FAILED, task_type="mail") for _ in range(3)]
    other = record(TaskStatus.FAILED, task_type="work")
    await queue.import_records([*chosen, other])
    http = as_admin(client)
    confirm = (await http.get("/bulk/retry?type=mail")).text
    assert 'id="confirm-count">3<' in confirm
    form = {"csrf": csrf_of(confirm), "type": "mail", "expected": "3"}
    done = await http.post("/bulk/retry", data=form)
    assert 'id="done-count">3<' in done.text
    assert await queue.count_matching(TaskFilter(statuses=(TaskStatus.QUEUED,))) == 3
    stored = await queue.get(other.id)
    assert stored is not None and stored.status is TaskStatus.FAILED
    [entry] = await queue.list_actions()
    assert (entry.action, entry.count, entry.actor) == ("bulk retry", 3, "admin")
    assert "type=mail" in (await http.get("/audit")).text
    assert (await http.get("/bulk/explode")).status_code == 404


async def test_one_task_is_retried_cancelled_and_purged(
    client: httpx.AsyncClient, queue: SqliteStore
) -> None:
    failed, queued = record(TaskStatus.FAILED), record()
    await queue.import_records([failed, queued])
    http = as_admin(client)
    csrf = csrf_of((await http.get(f"/tasks/{failed.id}")).text)
    assert (await http.post(f"/tasks/{failed.id}/retry", data={"csrf": csrf})).status_code == 303
    assert (await http.post(f"/tasks/{queued.id}/cancel", data={"csrf": csrf})).status_code == 303
    response = await http.post(f"/tasks/{queued.id}/purge", data={"csrf": csrf})
    assert response.headers["location"] == "/tasks"
    assert await queue.present([failed.id, queued.id]) == {failed.id}
    assert [e.action for e in await queue.list_actions()] == ["purge", "cancel", "retry"]
    assert (await http.post(f"/tasks/{failed.id}/explode", data={"csrf": csrf})).status_code == 404


async def test_actions_need_the_admin_token_and_a_csrf_token(
    client: httpx.AsyncClient, queue: SqliteStore
) -> None:
    failed = record(TaskStatus.FAILED)
    await queue.import_records([failed])
    client.headers["authorization"] = f"Bearer {READ_ONLY}"
    page = (await client.get(f"/tasks/{failed.id}")).text
    assert 'id="retry"' not in page
    refused = await client.post(f"/tasks/{failed.id}/retry", data={"csrf": csrf_token(READ_ONLY)})
    assert refused.status_code == 403 and "read-only" in refused.text
    http = as_admin(client)
    assert (await http.post(f"/tasks/{failed.id}/retry", data={})).status_code == 403
    forged = await http.post(
        f"/tasks/{failed.id}/retry",
        data={"csrf": csrf_token(ADMIN)},
        headers={"origin": "http://evil.example"},
    )
    assert forged.status_code == 403
    stored = await queue.get(failed.id)
    assert stored is not None and stored.status is TaskStatus.FAILED
    assert await queue.list_actions() == []


async def test_intake_is_paused_and_resumed(client: httpx.AsyncClient, queue: SqliteStore) -> None:
    http = as_admin(client)
    csrf = csrf_of((await http.get("/")).text)
    assert (await http.post("/intake/pause", data={"csrf": csrf})).status_code == 303
    assert await queue.intake_paused() is True
    assert "Intake is paused" in (await http.get("/")).text
    await http.post("/intake/resume", data={"csrf": csrf})
    assert await queue.intake_paused() is False
    assert (await http.post("/intake/explode", data={"csrf": csrf})).status_code == 404
    assert [e.action for e in await queue.list_actions()] == ["resume", "pause"]


async def test_a_queue_that_fails_shows_down(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.db")
    await store.open()
    await store.close()
    app = create_app(store, DashboardConfig(Tokens(ADMIN)))
    async with app.router.lifespan_context(app):
        (tmp_path / "q.db").write_bytes(b"not a database " * 4096)  # wrecked under it
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as http:
            page = await http.get("/", headers={"authorization": f"Bearer {ADMIN}"})
    assert page.status_code == 200
    assert 'id="health-state">down<' in page.text
