"""The dashboard: an ASGI application (Starlette) over the store-operations interface.

Pages: the overview (``/``, its live part ``/live/overview`` refreshed by htmx), the
task list (``/tasks``, filtered and keyset-paged), a task (``/tasks/{id}``), bulk
actions with a confirmation (``/bulk/{action}``), the audit log (``/audit``). Actions
are POSTs (CSRF-checked, admin token only): retry, cancel and purge one task or a
filter's tasks, pause and resume intake; each is written to the store's audit log.

Everything the pages show comes from the store, so history survives restarts. Every
value is escaped (Jinja2 autoescaping) and the pages forbid inline scripts
(Content-Security-Policy), so a payload of ``<script>`` is shown, never run.

``create_app(store, config)`` takes an unopened store (the container's ``ops_store``):
the application opens it at start-up and closes it at shutdown.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from loguru import logger
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskyard.framework.errors import InvalidQuery, TaskyardError
from taskyard.framework.models import TaskStatus, from_epoch, iso
from taskyard.framework.operations import (
    CANCELLABLE,
    PURGEABLE,
    RETRYABLE,
    STATUSES,
    AuditEntry,
    StoreOperations,
    TaskFilter,
)
from taskyard.ops.database import spill_files
from taskyard.ops.health import Check, HealthReport, HealthState, HealthThresholds, evaluate
from taskyard.ops.inspect import queue_status
from taskyard.ops.units import seconds_text
from taskyard.web import charts
from taskyard.web.security import COOKIE, Role, Tokens, csrf_token

__all__ = ["DashboardConfig", "create_app"]

BATCH = 1000
"""Tasks a bulk action changes per transaction."""
SERIES_BUCKETS = 30
ACTIONS: dict[str, tuple[TaskStatus, ...]] = {
    "retry": RETRYABLE,
    "cancel": CANCELLABLE,
    "purge": PURGEABLE,
}
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


@dataclass(frozen=True)
class DashboardConfig:
    tokens: Tokens
    window: float = 3600.0
    """Seconds of history behind the overview's rates, charts and percentiles."""
    stale_after: float = 60.0
    thresholds: HealthThresholds = field(default_factory=HealthThresholds)
    refresh_seconds: float = 3.0
    page_size: int = 50
    spills_of: Path | None = None
    """The SQLite queue file, to look for spill files next to it (health)."""


def _when(seconds: float | None) -> str:
    moment = from_epoch(seconds) if seconds is not None else None
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else seconds_text(seconds)


def _stamp(moment: datetime | None) -> str:
    """A time to the millisecond, UTC, for people."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("taskyard.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["age"] = _age
    env.filters["when"] = _when
    env.filters["iso"] = lambda moment: "" if moment is None else iso(moment)
    env.filters["stamp"] = _stamp
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
    env.filters["percent"] = lambda value: "-" if value is None else f"{value * 100:.1f} %"
    return env


class SecurityHeaders:
    """Adds the Content-Security-Policy and friends to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, with_headers)


# -- filters from the query string -----------------------------------------------------------


def _time(value: str, name: str) -> float | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidQuery(
            f"{name} {value[:40]!r} is not a time; use YYYY-MM-DDTHH:MM (UTC)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def filter_from(params: Any) -> TaskFilter:
    """The :class:`TaskFilter` a form or query string describes (InvalidQuery if bad)."""
    status = str(params.get("status") or "")
    if status and status not in STATUSES:
        raise InvalidQuery(f"status {status[:40]!r} is none of {', '.join(STATUSES)}")
    return TaskFilter(
        statuses=(TaskStatus(status),) if status else None,
        task_type=str(params.get("type") or "") or None,
        since=_time(str(params.get("since") or ""), "since"),
        until=_time(str(params.get("until") or ""), "until"),
        text=str(params.get("q") or "") or None,
    )


def _local(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def filter_params(task_filter: TaskFilter) -> dict[str, str]:
    """The query-string form of a filter (what :func:`filter_from` reads back)."""
    params = {
        "status": str(task_filter.statuses[0]) if task_filter.statuses else "",
        "type": task_filter.task_type or "",
        "since": _local(task_filter.since),
        "until": _local(task_filter.until),
        "q": task_filter.text or "",
    }
    return {key: value for key, value in params.items() if value}


def describe(task_filter: TaskFilter) -> str:
    """A filter in words, for the audit log and the confirmation."""
    parts = [f"{key}={value}" for key, value in filter_params(task_filter).items()]
    return ", ".join(parts) or "every task"


# -- the application ----------------------------------------------------------------------------


class Dashboard:
    """The routes, over one open store."""

    def __init__(self, store: StoreOperations, config: DashboardConfig) -> None:
        self.store = store
        self.config = config
        self.templates = _environment()

    # -- authentication -----------------------------------------------------------------------

    def _session(self, request: Request) -> tuple[Role, str] | None:
        header = request.headers.get("authorization", "")
        presented = header[7:].strip() if header.lower().startswith("bearer ") else None
        for token in (presented, request.cookies.get(COOKIE)):
            role = self.config.tokens.role_of(token)
            if role is not None and token is not None:
                return role, token
        return None

    def _unauthorized(self, message: str) -> Response:
        body = self.templates.get_template("denied.html").render(message=message, status=401)
        return HTMLResponse(body, 401, headers={"www-authenticate": "Bearer"})

    def _forbidden(self, message: str) -> Response:
        body = self.templates.get_template("denied.html").render(message=message, status=403)
        return HTMLResponse(body, 403)

    def guarded(
        self, handler: Callable[[Request, Role, str], Awaitable[Response]], *, acts: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the token check (and, for actions, the role and CSRF
        checks)."""

        async def endpoint(request: Request) -> Response:
            login = request.query_params.get("token")
            if login is not None and request.method == "GET":
                role = self.config.tokens.role_of(login)
                if role is None:
                    return self._unauthorized("That token is not valid for this dashboard.")
                response = RedirectResponse(request.url.path, 303)
                response.set_cookie(
                    COOKIE,
                    login,
                    httponly=True,
                    samesite="strict",
                    secure=request.url.scheme == "https",
                )
                return response
            session = self._session(request)
            if session is None:
                return self._unauthorized(
                    "Log in with the URL `taskyard dashboard` printed (…/?token=…), or send "
                    "an Authorization: Bearer header."
                )
            role, token = session
            if acts:
                if not role.can_act:
                    return self._forbidden(
                        "This is the read-only token: it sees everything and changes nothing."
                    )
                origin = request.headers.get("origin")
                expected = f"{request.url.scheme}://{request.url.netloc}"
                form = await request.form()
                if origin not in (None, "null", expected) or str(
                    form.get("csrf", "")
                ) != csrf_token(token):
                    return self._forbidden(
                        "The form's CSRF token is missing or wrong (or it came from another "
                        "site); reload the page and try again."
                    )
            try:
                return await handler(request, role, token)
            except InvalidQuery as exc:
                return self.page("error.html", request, role, token, message=str(exc), code=400)

        return endpoint

    def page(
        self, template: str, request: Request, role: Role, token: str, *, code: int = 200,
        **context: Any,
    ) -> HTMLResponse:  # fmt: skip
        body = self.templates.get_template(template).render(
            request=request,
            role=str(role),
            can_act=role.can_act,
            csrf=csrf_token(token),
            refresh=self.config.refresh_seconds,
            path=request.url.path,
            **context,
        )
        return HTMLResponse(body, code)

    async def audit(self, role: Role, action: str, target: str, count: int, **detail: Any) -> None:
        entry = AuditEntry(time.time(), str(role), action, target, count, detail)
        await self.store.record_action(entry)
        logger.info("taskyard dashboard: {} {} ({} task(s)) by {}", action, target, count, role)

    # -- pages ------------------------------------------------------------------------------

    async def live(self) -> dict[str, Any]:
        """What the overview shows, read now."""
        config = self.config
        try:
            status = await queue_status(
                self.store, window=config.window, stale_after=config.stale_after
            )
            now = status.now
            series = await self.store.finished_series(
                since=now - config.window, until=now, buckets=SERIES_BUCKETS
            )
            paused = await self.store.intake_paused()
        except TaskyardError as exc:
            report = HealthReport(HealthState.DOWN, [Check("database", HealthState.DOWN, str(exc))])
            return {"status": None, "health": report, "paused": False}
        spills = None if config.spills_of is None else spill_files(config.spills_of)
        report = evaluate(status, config.thresholds, spills)
        depth = [(name, status.depth[name]) for name in STATUSES]
        types = sorted(status.depth_by_type.items())
        return {
            "status": status,
            "health": report,
            "paused": paused,
            "depth_chart": charts.bars(depth, label="tasks by status"),
            "type_chart": charts.bars(
                [(name, sum(counts.values())) for name, counts in types],
                label="tasks by type",
            ),
            "throughput_chart": charts.columns(
                series,
                keys=("completed", "failed"),
                label="completed and failed tasks over time",
                seconds=config.window,
            ),
            "failure_chart": charts.columns(
                [
                    {"failed": 100 * p["failed"] / (p["completed"] + p["failed"])}
                    if p["completed"] + p["failed"] else {}
                    for p in series
                ],
                keys=("failed",),
                label="failure rate over time",
                seconds=config.window,
                unit=" %",
            ),
            "bucket_seconds": config.window / SERIES_BUCKETS,
        }  # fmt: skip

    async def overview(self, request: Request, role: Role, token: str) -> Response:
        return self.page("overview.html", request, role, token, **await self.live())

    async def overview_live(self, request: Request, role: Role, token: str) -> Response:
        return self.page("overview_live.html", request, role, token, **await self.live())

    async def tasks(self, request: Request, role: Role, token: str) -> Response:
        task_filter = filter_from(request.query_params)
        after = request.query_params.get("after") or None
        page = await self.store.page_tasks(task_filter, limit=self.config.page_size, after=after)
        params = filter_params(task_filter)
        next_url = None
        if page.next_cursor is not None:
            next_url = "/tasks?" + urlencode({**params, "after": page.next_cursor})
        return self.page(
            "tasks.html",
            request,
            role,
            token,
            tasks=page.tasks,
            filter=params,
            query=urlencode(params),
            statuses=STATUSES,
            next_url=next_url,
            first_page=after is None,
        )

    async def task(self, request: Request, role: Role, token: str) -> Response:
        task_id = request.path_params["task_id"]
        record = await self.store.get(task_id)
        if record is None:
            return self.page(
                "error.html", request, role, token, message=f"No task has the id {task_id!r}.",
                code=404,
            )  # fmt: skip
        details = record.to_status()
        return self.page(
            "task.html",
            request,
            role,
            token,
            task=record,
            details=details,
            tracebacks=details.get("tracebacks") or [],
            can_retry=record.status in RETRYABLE,
            can_cancel=record.status in CANCELLABLE,
            can_purge=record.status in PURGEABLE,
        )

    async def task_action(self, request: Request, role: Role, token: str) -> Response:
        task_id = request.path_params["task_id"]
        action = request.path_params["action"]
        allowed = ACTIONS.get(action)
        if allowed is None:
            return self.page(
                "error.html", request, role, token, message=f"no action {action!r}", code=404
            )
        done = await self._apply(action, TaskFilter(ids=(task_id,)))
        await self.audit(role, action, task_id, done)
        target = "/tasks" if action == "purge" and done else f"/tasks/{task_id}"
        return RedirectResponse(target, 303)

    async def _apply(self, action: str, task_filter: TaskFilter) -> int:
        """Run ``action`` on the filter's tasks in batches; returns how many it changed."""
        done = 0
        while True:
            now = time.time()
            if action == "retry":
                changed = await self.store.retry_matching(task_filter, now=now, limit=BATCH)
            elif action == "cancel":
                changed = await self.store.cancel_matching(task_filter, now=now, limit=BATCH)
            else:
                changed = await self.store.purge_matching(task_filter, limit=BATCH)
            done += changed
            if changed < BATCH:
                return done

    async def bulk_confirm(self, request: Request, role: Role, token: str) -> Response:
        action = request.path_params["action"]
        allowed = ACTIONS.get(action)
        if allowed is None:
            return self.page(
                "error.html", request, role, token, message=f"no action {action!r}", code=404
            )
        task_filter = filter_from(request.query_params)
        if task_filter.until is None or task_filter.until > time.time():
            # frozen now: tasks created after this confirmation are not part of it
            task_filter = TaskFilter(
                task_filter.statuses, task_filter.task_type, task_filter.since,
                float(int(time.time()) + 1), task_filter.text,
            )  # fmt: skip
        narrowed = task_filter.narrowed(allowed)
        count = await self.store.count_matching(narrowed)
        return self.page(
            "confirm.html",
            request,
            role,
            token,
            action=action,
            count=count,
            statuses=[str(status) for status in allowed],
            description=describe(task_filter),
            filter=filter_params(task_filter),
        )

    async def bulk_apply(self, request: Request, role: Role, token: str) -> Response:
        action = request.path_params["action"]
        allowed = ACTIONS.get(action)
        if allowed is None:
            return self.page(
                "error.html", request, role, token, message=f"no action {action!r}", code=404
            )
        form = await request.form()
        task_filter = filter_from(form)
        done = await self._apply(action, task_filter.narrowed(allowed))
        description = describe(task_filter)
        await self.audit(
            role, f"bulk {action}", description, done, expected=str(form.get("expected", ""))
        )
        return self.page(
            "done.html",
            request,
            role,
            token,
            action=action,
            count=done,
            description=description,
            query=urlencode(filter_params(task_filter)),
        )

    async def intake(self, request: Request, role: Role, token: str) -> Response:
        change = request.path_params["change"]
        if change not in ("pause", "resume"):
            return self.page(
                "error.html", request, role, token, message=f"no change {change!r}", code=404
            )
        pause = change == "pause"
        await self.store.set_intake_paused(pause)
        await self.audit(role, "pause" if pause else "resume", "intake", 0)
        return RedirectResponse("/", 303)

    async def audit_log(self, request: Request, role: Role, token: str) -> Response:
        entries = await self.store.list_actions(limit=200)
        return self.page("audit.html", request, role, token, entries=entries)

    async def later(self, request: Request, role: Role, token: str) -> Response:
        what = request.url.path.strip("/")
        return self.page("later.html", request, role, token, what=what)


def create_app(store: StoreOperations, config: DashboardConfig) -> Starlette:
    """The dashboard over ``store`` (unopened: opened at start-up, closed at shutdown)."""
    dashboard = Dashboard(store, config)
    guard = dashboard.guarded

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open_existing()
        try:
            yield
        finally:
            await store.close()

    static = Path(__file__).with_name("static")
    routes = [
        Route("/", guard(dashboard.overview)),
        Route("/live/overview", guard(dashboard.overview_live)),
        Route("/tasks", guard(dashboard.tasks)),
        Route("/tasks/{task_id}", guard(dashboard.task)),
        Route(
            "/tasks/{task_id}/{action}", guard(dashboard.task_action, acts=True), methods=["POST"]
        ),
        Route("/bulk/{action}", guard(dashboard.bulk_confirm)),
        Route("/bulk/{action}", guard(dashboard.bulk_apply, acts=True), methods=["POST"]),
        Route("/intake/{change:str}", guard(dashboard.intake, acts=True), methods=["POST"]),
        Route("/audit", guard(dashboard.audit_log)),
        Route("/schedules", guard(dashboard.later)),
        Route("/workflows", guard(dashboard.later)),
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(SecurityHeaders)
    return app
