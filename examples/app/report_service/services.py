"""Application code. It receives a TaskOrchestrator and knows nothing of backends."""

from __future__ import annotations

from typing import Any

from taskyard import Run, TaskOrchestrator

REPORT_TASK = "build_report"


async def build_report(payload: dict[str, Any]) -> dict[str, Any]:
    """The task handler: in a real service, queries and a PDF; here, a checksum."""
    rows = int(payload["rows"])
    return {"report": payload["name"], "rows": rows, "checksum": sum(range(rows))}


class ReportService:
    def __init__(self, orchestrator: TaskOrchestrator, module_id: str = "reports") -> None:
        self.orchestrator = orchestrator
        self.module_id = module_id

    async def setup(self) -> None:
        await self.orchestrator.task_manager.register_task(REPORT_TASK, build_report)

    async def request(self, name: str, rows: int) -> Run:
        """Queue one report; the returned run follows its task (queued, running, ...)."""
        return await self.orchestrator.submit(
            self.module_id,
            REPORT_TASK,
            {"name": name, "rows": rows},
            module_name="Regional reports",
            items_total=rows,
        )
