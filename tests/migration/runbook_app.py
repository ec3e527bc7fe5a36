"""An application on taskyard, for the runbook tests: it gets its manager from the
container (the settings choose the backend), like any service would.

Commands on stdin, one per line, each answered by one line on stdout::

    schedule TYPE N [DELAY [RELEASE_FILE]]   -> the task id
    status ID                                -> the status as JSON

SIGTERM stops it the way a service should: ``stop_and_hand_over`` with a store built
from the settings as they are now, so an application switched from in-memory to SQLite
takes its queue along. It prints ``ready BACKEND`` once started and ``stopped REPORT``
at the end. The handlers are the integration tests' (they log every execution).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from taskyard.ops.migration import stop_and_hand_over
from taskyard.providers import Container
from taskyard.worker import stop_on_signals
from tests.integration.worker_app import HANDLERS


async def serve() -> None:
    container = Container()
    manager = container.task_manager()
    for task_type, handler in HANDLERS.items():
        await manager.register_task(task_type, handler)
    await manager.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stop_on_signals(stop)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", container.backend(), flush=True)

    async def commands() -> None:
        while line := await reader.readline():
            words = line.decode().split()
            if words[0] == "schedule":
                payload: dict[str, str] = {"n": words[2]}
                if len(words) > 4:
                    payload["release"] = words[4]
                delay = float(words[3]) if len(words) > 3 else None
                print(await manager.schedule_task(words[1], payload, delay=delay), flush=True)
            elif words[0] == "status":
                print(json.dumps(await manager.get_task_status(words[1])), flush=True)

    reading = asyncio.create_task(commands())
    await stop.wait()
    reading.cancel()
    deadline = float(os.environ.get("RUNBOOK_HANDOVER_DEADLINE", "30"))
    target = Container().handover_store()
    report = await stop_and_hand_over(manager, target, deadline=deadline)
    print("stopped", json.dumps(None if report is None else report.to_dict()), flush=True)


if __name__ == "__main__":
    asyncio.run(serve())
