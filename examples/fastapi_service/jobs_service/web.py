"""The web process: a FastAPI app that queues jobs and reports on them, and never runs
one (``task_execution.run_worker = false``: a producer-only manager). Run it with::

    uvicorn --factory jobs_service.web:create_app

Endpoints: ``POST /jobs`` (202, the job's id), ``GET /jobs/{id}`` (its status),
``DELETE /jobs/{id}`` (cancel it). The manager comes from the container through
dependency-injector's FastAPI integration (``@inject``, ``Provide``); the app's lifespan
starts it (the container's ``task_manager_lifecycle`` resource) and stops it.
"""

# No `from __future__ import annotations` here: FastAPI and dependency-injector read the
# Annotated[..., Depends(Provide[...])] markers from real annotations.
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, FastAPI, HTTPException, status
from pydantic import BaseModel, Field

from jobs_service import telemetry
from jobs_service.containers import ApplicationContainer, create_container
from jobs_service.jobs import HANDLERS, RENDER_REPORT
from taskyard import TaskManager

router = APIRouter()


class JobRequest(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    pages: int = Field(default=1, ge=1, le=1000)
    seconds: float = Field(default=0.0, ge=0, le=60, description="work per page")
    fail: bool = False
    priority: int = Field(default=5, ge=0, le=9, description="lower runs first")
    delay: float = Field(default=0.0, ge=0, description="seconds before it may start")


class JobAccepted(BaseModel):
    id: str
    status_url: str


Manager = Annotated[TaskManager, Depends(Provide[ApplicationContainer.task_manager])]


@router.post("/jobs", status_code=status.HTTP_202_ACCEPTED)
@inject
async def submit_job(job: JobRequest, manager: Manager) -> JobAccepted:
    """Queue a job; durable once this answers."""
    payload = job.model_dump(exclude={"priority", "delay"})
    task_id = await manager.schedule_task(
        RENDER_REPORT, payload, priority=job.priority, delay=job.delay or None
    )
    return JobAccepted(id=task_id, status_url=f"/jobs/{task_id}")


@router.get("/jobs/{job_id}")
@inject
async def job_status(job_id: str, manager: Manager) -> dict[str, Any]:
    """The job's status dict (status, attempts, result, error, times)."""
    found = await manager.get_task_status(job_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    return found


@router.delete("/jobs/{job_id}")
@inject
async def cancel_job(job_id: str, manager: Manager) -> dict[str, Any]:
    """Cancel a queued or running job: 409 when it already finished."""
    if await manager.cancel_task(job_id):
        return {"id": job_id, "cancelled": True}
    found = await manager.get_task_status(job_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is already {found['status']}")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    container: ApplicationContainer = app.state.container
    manager = container.task_manager()
    # This taskyard asks a producer-only manager to know the types it schedules; the
    # handlers never run in this process (run_worker = false).
    for task_type, handler in HANDLERS.items():
        await manager.register_task(task_type, handler)
    await container.init_resources()  # starts the manager
    try:
        yield
    finally:
        await container.shutdown_resources()  # stops it


def create_app(container: ApplicationContainer | None = None) -> FastAPI:
    """The app, over ``container`` (default: one from the settings; TASKYARD_ENV)."""
    container = container or create_container()
    app = FastAPI(title="jobs service", lifespan=lifespan)
    app.state.container = container
    app.include_router(router)
    provider = telemetry.configure(container.config.service(), role="web")
    if provider is not None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app
