"""The platform module: the POSIX side for real, the Windows side with ``_winapi`` faked
(no Windows machine here; ``mypy --platform win32`` checks the types of that side)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskyard import _platform


class FakeWinapi:
    """``OpenProcess``/``WaitForSingleObject``/``CloseHandle`` over a table of pids."""

    def __init__(self, processes: dict[int, str]) -> None:
        self.processes = processes  # pid -> "running", "exited" or "denied"
        self.open_handles: set[int] = set()

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:
        state = self.processes.get(pid)
        if state is None:
            error = OSError(22, "The parameter is incorrect")
            error.winerror = _platform.ERROR_INVALID_PARAMETER  # type: ignore[attr-defined]
            raise error
        if state == "denied":
            error = PermissionError(13, "Access is denied")
            error.winerror = _platform.ERROR_ACCESS_DENIED  # type: ignore[attr-defined]
            raise error
        self.open_handles.add(pid)
        return pid

    def WaitForSingleObject(self, handle: int, milliseconds: int) -> int:
        assert milliseconds == 0  # never blocks
        return _platform.WAIT_TIMEOUT if self.processes[handle] == "running" else 0

    def CloseHandle(self, handle: int) -> None:
        self.open_handles.remove(handle)


@pytest.mark.parametrize(
    ("state", "alive"),
    [("running", True), ("exited", False), ("denied", True), (None, False)],
)
def test_windows_liveness_through_openprocess(state: str | None, alive: bool) -> None:
    winapi = FakeWinapi({} if state is None else {4242: state})
    assert _platform._windows_pid_alive(4242, None, winapi) is alive
    assert winapi.open_handles == set()  # every handle opened is closed


def test_windows_liveness_refuses_a_reused_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    winapi = FakeWinapi({7: "running"})
    monkeypatch.setattr(_platform, "_windows_start_time", lambda handle: 2000.0)
    assert _platform._windows_pid_alive(7, 1000.0, winapi) is False  # a newer process
    assert _platform._windows_pid_alive(7, 2500.0, winapi) is True
    monkeypatch.setattr(_platform, "_windows_start_time", lambda handle: None)
    assert _platform._windows_pid_alive(7, 1000.0, winapi) is True  # cannot tell: alive
    assert _platform._windows_start_time(7) is None  # no ctypes.windll here


def test_posix_liveness() -> None:
    assert _platform.pid_alive(os.getpid())
    assert not _platform.pid_alive(0) and not _platform.pid_alive(-1)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    assert not _platform.pid_alive(child.pid)  # reaped: gone


def test_register_at_fork_without_the_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "register_at_fork", raising=False)
    _platform.register_at_fork(lambda: None)  # Windows: nothing to do, no error


@pytest.mark.parametrize(
    ("path", "network"),
    [
        (r"\\server\share\queue.db", True),
        ("//server/share/queue.db", True),
        (r"\\?\UNC\server\share\queue.db", True),
        (r"\\?\C:\data\queue.db", False),
        (r"\\.\pipe\x", False),
        (r"C:\data\queue.db", False),
        ("queue.db", False),
    ],
)
def test_network_paths_on_windows(path: str, network: bool) -> None:
    assert _platform.is_network_path(path, windows=True) is network
    assert _platform.is_network_path(path, windows=False) is False


def test_state_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert _platform.state_dir() == tmp_path / "taskyard"


def sharing_violation() -> PermissionError:
    error = PermissionError(13, "The process cannot access the file")
    error.winerror = 32  # type: ignore[attr-defined]
    return error


def test_replace_retries_a_sharing_violation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source, target = tmp_path / "new", tmp_path / "old"
    source.write_text("new")
    target.write_text("old")
    real_replace = os.replace
    failures = [sharing_violation(), sharing_violation()]

    def held_open(src: Any, dst: Any) -> None:
        if failures:
            raise failures.pop()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", held_open)
    _platform.replace(source, target)
    assert target.read_text() == "new" and failures == []


def test_replace_gives_up_and_leaves_other_errors_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def always(src: Any, dst: Any) -> None:
        raise sharing_violation()

    monkeypatch.setattr(os, "replace", always)
    with pytest.raises(PermissionError):
        _platform.replace(tmp_path / "a", tmp_path / "b", wait=0.0)
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError):
        _platform.replace(tmp_path / "missing", tmp_path / "b")


async def test_stop_handlers_through_the_loop() -> None:
    called: list[str] = []
    uninstall = _platform.install_stop_handlers(asyncio.get_running_loop(), called.append)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        await _until(lambda: called)
    finally:
        uninstall()
    assert called == ["SIGINT"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class SignallessLoop(asyncio.SelectorEventLoop):
    def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:  # type: ignore[override]
        raise NotImplementedError

    def remove_signal_handler(self, sig: int) -> bool:
        raise NotImplementedError


def test_stop_handlers_without_loop_support() -> None:
    """The Windows way: ``signal.signal`` and ``call_soon_threadsafe``."""
    loop = SignallessLoop()
    called: list[str] = []
    before = signal.getsignal(signal.SIGTERM)

    async def main() -> None:
        uninstall = _platform.install_stop_handlers(loop, called.append)
        try:
            assert signal.getsignal(signal.SIGTERM) is not before
            os.kill(os.getpid(), signal.SIGTERM)
            await _until(lambda: called)
        finally:
            uninstall()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert called == ["SIGTERM"]
    assert signal.getsignal(signal.SIGTERM) is before


async def _until(condition: Any) -> None:
    from taskyard.testing import wait_until

    await wait_until(lambda: bool(condition()), message="the stop callback")


async def test_a_network_share_is_refused_for_sqlite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from functools import partial

    from taskyard.backends.sqlite import SqliteStore, schema
    from taskyard.framework.errors import ConfigurationError

    # the Windows reading of paths, on this machine
    monkeypatch.setattr(schema, "is_network_path", partial(_platform.is_network_path, windows=True))
    store = SqliteStore(Path("//fileserver/share/queue.db"))
    with pytest.raises(ConfigurationError, match=r"network share.*postgres"):
        await store.open()
    local = SqliteStore(tmp_path / "queue.db")
    await local.open()  # a local path still opens
    await local.close()


def test_a_settings_file_with_a_byte_order_mark_names_the_fix(tmp_path: Path) -> None:
    from taskyard.framework.errors import ConfigurationError
    from taskyard.settings.loader import load_settings

    settings = tmp_path / "settings.toml"
    settings.write_bytes(b"\xef\xbb\xbf[default.task_execution]\nmax_concurrency = 7\n")
    with pytest.raises(ConfigurationError, match=r"byte-order mark.*WriteAllText"):
        load_settings(environment="development", settings_files=[settings])


def test_an_export_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    from taskyard.ops.migration.export_format import read_export, write_export
    from taskyard.testing.operations import record

    path = tmp_path / "state.jsonl"
    tasks = [record(), record()]
    write_export(path, tasks)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as PowerShell 5 saves it
    assert [task.id for task in read_export(path).records] == [task.id for task in tasks]


def test_remove_retries_a_sharing_violation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    doomed = tmp_path / "spill.jsonl"
    doomed.write_text("x")
    real_unlink = Path.unlink
    failures = [sharing_violation()]

    def held_open(self: Path, missing_ok: bool = False) -> None:
        if failures:
            raise failures.pop()
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", held_open)
    _platform.remove(doomed)
    _platform.remove(doomed)  # gone already: nothing to do
    assert not doomed.exists() and failures == []
