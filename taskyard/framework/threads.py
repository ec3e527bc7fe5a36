"""The threads sync handlers run in: daemon threads, so a handler that never returns
cannot keep the process alive after the engine stopped.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits,
so one handler stuck in a system call would keep a stopped worker alive for ever. The
engine gives such a handler up at its shutdown deadline (its task's lease expires and
the task runs again elsewhere); this pool lets the process exit regardless.

Like ``asyncio.to_thread``, a job runs in a copy of the submitter's context variables,
so a sync handler sees what the attempt set (the OpenTelemetry span of the attempt,
loguru's ``contextualize``).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...]] | None


class DaemonThreadPool(Executor):
    """At most ``max_workers`` daemon threads, started as work arrives and kept."""

    def __init__(self, max_workers: int, *, name: str = "taskyard") -> None:
        self.max_workers = max_workers
        self.name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if kwargs:
            raise TypeError("DaemonThreadPool.submit takes positional arguments only")
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the thread pool is shut down")
            self._jobs.put((future, contextvars.copy_context().run, (fn, *args)))
            if self._idle:
                self._idle -= 1  # a waiting thread takes it
            elif len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del job, future, fn, args
            with self._lock:
                self._idle += 1  # about to wait for the next job

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work; cancel queued jobs when asked; never wait for a running one
        unless ``wait`` (and then only for threads that return)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
        for _ in threads:
            self._jobs.put(None)
        if wait:
            for thread in threads:
                thread.join()
