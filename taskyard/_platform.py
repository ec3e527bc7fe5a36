"""What differs between POSIX and Windows, in one place.

Nothing else in taskyard calls ``os.kill``, ``loop.add_signal_handler`` or reads
``/proc``: it asks here.

- :func:`register_at_fork`: reseed after ``fork``; Windows has no fork (nor the function).
- :func:`install_stop_handlers`: call back on SIGTERM/SIGINT through the event loop where
  it can, else (Windows' loops, which have no ``add_signal_handler``) through
  ``signal.signal`` and ``call_soon_threadsafe``, for SIGINT and SIGBREAK (Ctrl+Break,
  what a service manager such as NSSM sends first). On Windows another process's
  "SIGTERM" is TerminateProcess, which nothing can catch: stop a worker gracefully with
  ``taskyard workers stop`` (through the queue) instead.
- :func:`pid_alive`: whether a process of this host is running (on Windows through
  ``OpenProcess``; ``os.kill(pid, 0)`` there raises for a dead pid and sends Ctrl+C to
  a live one).
- :func:`replace` and :func:`remove`: ``os.replace`` and unlink, retried briefly while
  another process (an antivirus, a reader) holds the file open: Windows' sharing
  violations (WinError 5 and 32).
- :func:`state_dir`: the per-user folder for taskyard's own files.
- :func:`is_network_path`: a UNC path, where SQLite's locking (and WAL) does not work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "IS_WINDOWS",
    "install_stop_handlers",
    "is_network_path",
    "make_private_folder",
    "pid_alive",
    "register_at_fork",
    "remove",
    "replace",
    "state_dir",
]

IS_WINDOWS = sys.platform == "win32"

StopCallback = Callable[[str], None]
"""Called on the event loop's thread with the name of the signal that arrived."""


def register_at_fork(after_in_child: Callable[[], object]) -> None:
    """``os.register_at_fork(after_in_child=...)`` where the OS can fork; nothing on
    Windows, which has neither ``fork`` nor the function."""
    register = getattr(os, "register_at_fork", None)
    if register is not None:
        register(after_in_child=after_in_child)


def _stop_signals() -> list[signal.Signals]:
    names = ("SIGINT", "SIGBREAK") if IS_WINDOWS else ("SIGTERM", "SIGINT")
    return [getattr(signal, name) for name in names if hasattr(signal, name)]


def install_stop_handlers(
    loop: asyncio.AbstractEventLoop, callback: StopCallback
) -> Callable[[], None]:
    """Call ``callback(signal name)`` on ``loop`` when a stop signal arrives. Returns the
    function that puts the previous handlers back. Off the main thread (where Python
    cannot install handlers) nothing is installed."""
    signums = _stop_signals()
    try:
        for signum in signums:
            loop.add_signal_handler(signum, callback, signum.name)
    except NotImplementedError:  # Windows' loops, and loops that do without signals
        for signum in signums:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signum)
        return _install_with_signal_module(loop, callback, signums)

    def uninstall() -> None:
        for signum in signums:
            loop.remove_signal_handler(signum)

    return uninstall


def _install_with_signal_module(
    loop: asyncio.AbstractEventLoop, callback: StopCallback, signums: list[signal.Signals]
) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(callback, signal.Signals(signum).name)

    for signum in signums:
        previous[signum] = signal.signal(signum, handler)

    def uninstall() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    return uninstall


# -- processes ------------------------------------------------------------------------------

PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
SYNCHRONIZE = 0x00100000
WAIT_TIMEOUT = 0x102
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_PARAMETER = 87


def pid_alive(pid: int, *, started_before: float | None = None) -> bool:
    """Whether process ``pid`` of this host runs. On Windows, where pids are reused
    quickly, a process that started after ``started_before`` (epoch seconds, when given)
    is another one: not alive."""
    if pid <= 0:
        return False
    if IS_WINDOWS:
        import _winapi

        return _windows_pid_alive(pid, started_before, _winapi)
    return _posix_pid_alive(pid)


def _posix_pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    return True


def _windows_pid_alive(pid: int, started_before: float | None, winapi: Any) -> bool:
    """``OpenProcess`` + ``WaitForSingleObject(handle, 0)``; ``winapi`` is ``_winapi``
    (a fake in the tests)."""
    try:
        handle = winapi.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION | SYNCHRONIZE, False, pid)
    except OSError as exc:
        # access denied: a process of another user (a service): it exists
        return getattr(exc, "winerror", None) == ERROR_ACCESS_DENIED
    try:
        if winapi.WaitForSingleObject(handle, 0) != WAIT_TIMEOUT:
            return False  # signalled: it exited
        if started_before is not None:
            started = _windows_start_time(handle)
            if started is not None and started > started_before + 1.0:
                return False  # the pid was reused by a newer process
        return True
    finally:
        winapi.CloseHandle(handle)


def _windows_start_time(handle: int) -> float | None:
    """The creation time of a process (epoch seconds), through ``GetProcessTimes``."""
    try:
        import ctypes

        windll = ctypes.windll  # type: ignore[attr-defined,unused-ignore]
    except (ImportError, AttributeError):
        return None
    times = [ctypes.c_ulonglong() for _ in range(4)]
    if not windll.kernel32.GetProcessTimes(handle, *[ctypes.byref(t) for t in times]):
        return None
    # FILETIME: 100 ns ticks since 1601-01-01
    return float(times[0].value / 10_000_000 - 11_644_473_600)


# -- files ----------------------------------------------------------------------------------

SHARING_VIOLATIONS = (5, 32)  # ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION


def _retrying(action: Callable[[], None], wait: float) -> None:
    deadline = time.monotonic() + wait
    delay = 0.01
    while True:
        try:
            action()
            return
        except PermissionError as exc:
            if getattr(exc, "winerror", None) not in SHARING_VIOLATIONS:
                raise
            if time.monotonic() >= deadline:
                raise
        time.sleep(delay)  # a retry back-off, not a synchronisation
        delay = min(delay * 2, 0.2)


def remove(path: str | os.PathLike[str], *, wait: float = 2.0) -> None:
    """Delete ``path`` if it exists, retried for up to ``wait`` seconds while Windows
    refuses because another process holds it open."""
    _retrying(lambda: Path(path).unlink(missing_ok=True), wait)


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, wait: float = 2.0) -> None:
    """``os.replace``, retried for up to ``wait`` seconds while Windows refuses because
    another process holds ``dst`` open (elsewhere: one attempt)."""
    _retrying(lambda: os.replace(src, dst), wait)


def state_dir() -> Path:
    """The per-user folder for taskyard's own files (spill files): ``%LOCALAPPDATA%``
    on Windows, ``$XDG_STATE_HOME`` or ``~/.local/state`` elsewhere."""
    if IS_WINDOWS:
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "taskyard"


def make_private_folder(path: Path) -> None:
    """Create ``path`` (and its parents) when missing. On Windows with Python 3.12.4 or
    newer the new folders get an owner-only ACL (``mode=0o700`` does that there; older
    versions ignore the mode, and files then inherit the parent folder's ACL: see the
    README's Windows section). Elsewhere the umask decides, as before (the files in it
    are created 0600)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700 if IS_WINDOWS else 0o777)


def is_network_path(path: str | os.PathLike[str], *, windows: bool = IS_WINDOWS) -> bool:
    """A UNC path (``\\\\server\\share\\...`` or ``//server/share/...``) on Windows
    (elsewhere a network share is mounted like any folder: the caller cannot tell)."""
    if not windows:
        return False
    text = os.fspath(path)
    for prefix in ("\\\\?\\UNC\\", "//?/UNC/"):
        if text.upper().startswith(prefix.upper()):
            return True
    if text.startswith(("\\\\?\\", "//?/", "\\\\.\\", "//./")):
        return False  # a local device or long path
    return text.startswith(("\\\\", "//")) and len(text) > 2 and text[2] not in "\\/"
