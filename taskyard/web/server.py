"""Serving the dashboard with uvicorn, on a socket bound before it starts (so port 0
means a free port, known at once) and stopped by an event (the worker's own stop, or
SIGTERM/SIGINT for ``taskyard dashboard``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from typing import Any

from taskyard.framework.errors import ConfigurationError

__all__ = ["DashboardServer", "serve"]


class DashboardServer:
    """An ASGI app on ``host:port``, bound now (ConfigurationError when it cannot be)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.app = app
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as exc:
            self.socket.close()
            raise ConfigurationError(
                f"the dashboard cannot listen on {host}:{port} ({exc}); choose another "
                "--port (0: a free one) or --host"
            ) from exc
        self.socket.listen(128)
        self.port: int = self.socket.getsockname()[1]

    def url(self, token: str | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={token}" if token else "")

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set."""
        import uvicorn

        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", access_log=False)
        server = uvicorn.Server(config)
        # The process's signals belong to its owner (the worker or serve() below).
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        serving = asyncio.create_task(server.serve(sockets=[self.socket]))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            server.should_exit = True
            stopping.cancel()
            await serving
            self.socket.close()


async def serve(app: Any, host: str, port: int, *, announce: Any = print, token: str) -> None:
    """``taskyard dashboard``: serve until SIGTERM or SIGINT, after announcing the login
    URL through ``announce``."""
    server = DashboardServer(app, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        announce(f"taskyard dashboard at {server.url(token)}")
        await server.run(stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
