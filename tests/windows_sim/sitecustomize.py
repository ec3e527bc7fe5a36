"""Windows' constraints, simulated on POSIX for every Python process started with this
folder on ``PYTHONPATH`` (``site`` imports ``sitecustomize`` at start-up, so child
processes inherit it):

- ``os.register_at_fork`` and ``os.fork`` do not exist (importing must not need them);
- event loops have no signal support: ``add_signal_handler`` raises
  ``NotImplementedError``, as on every Windows loop.

``TASKYARD_SIMULATED_WINDOWS=1`` is set so a test can check the simulation is active.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

for _name in ("register_at_fork", "fork"):
    if hasattr(os, _name):
        delattr(os, _name)


class SignallessEventLoop(asyncio.SelectorEventLoop):
    """A selector loop without ``add_signal_handler``, like Windows' loops."""

    def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:  # type: ignore[override]
        raise NotImplementedError("simulated Windows: this event loop has no signal handlers")

    def remove_signal_handler(self, sig: int) -> bool:
        raise NotImplementedError("simulated Windows: this event loop has no signal handlers")


class SignallessPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return SignallessEventLoop()


asyncio.set_event_loop_policy(SignallessPolicy())
os.environ["TASKYARD_SIMULATED_WINDOWS"] = "1"
