"""What every benchmark shares: the workload's constants, result records, timing and
the child processes (taskyard workers, huey consumers) that start on a "go" line."""

from __future__ import annotations

import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

ROOT = Path(__file__).resolve().parents[1]

CALLERS = 64
"""Phase 2: concurrent callers (coroutines for taskyard, threads for the peers)."""
CHUNK = 1000
"""Phase 3 and the fills: tasks per bulk call."""
DRAIN_CONCURRENCY = 100
"""Phases 4, 5 and 8: handlers running at once in a taskyard worker."""
REALISTIC_CONCURRENCY = 50
REALISTIC_SLEEP = 0.005
WORKER_POLL = 0.05
"""Seconds between a worker process's checks for work written by another process."""
SLOW_RUN = 10.0
"""A system whose run takes longer than this is not repeated (its figure is one run)."""

Kind = Literal["raw", "taskyard", "peer"]


def payload(i: int) -> dict[str, int]:
    """The workload: small JSON tasks."""
    return {"n": i}


@dataclass
class Throughput:
    """One system in one phase: tasks/s of each repeat, or why it does not apply."""

    phase: str
    system: str
    kind: Kind
    rates: list[float] = field(default_factory=list)
    na: str | None = None
    note: str = ""
    cpu_us: list[float] = field(default_factory=list)
    """Process CPU microseconds per task of each repeat, where measured (phase 9)."""

    @property
    def rate(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None

    @property
    def cpu(self) -> float | None:
        return statistics.median(self.cpu_us) if self.cpu_us else None


@dataclass
class Latency:
    """Pickup latencies (seconds) of one system: enqueue call to handler start."""

    system: str
    where: str
    samples: list[float]
    poll_interval: float | None = None
    note: str = ""

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index]


@dataclass
class Memory:
    """Phase 8: a worker's memory by queue depth."""

    depth: int
    processed: int
    rss_kib: int
    hwm_kib: int
    fill_seconds: float
    run_seconds: float


def repeat(
    phase: str,
    system: str,
    kind: Kind,
    run: Callable[[], float],
    *,
    tasks: int,
    repeats: int,
    note: str = "",
    echo: Callable[[str], None] | None = None,
) -> Throughput:
    """Run ``run`` (which returns the seconds ``tasks`` took) ``repeats`` times."""
    result = Throughput(phase, system, kind, note=note)
    for _ in range(repeats):
        seconds = run()
        result.rates.append(tasks / seconds)
        if seconds > SLOW_RUN and repeats > 1:
            result.note = f"{note}; 1 run only: it took {seconds:.0f} s".lstrip("; ")
            break
    if echo is not None:
        runs = ", ".join(f"{rate:,.0f}" for rate in result.rates)
        echo(f"  phase {phase} {system}: {result.rate:,.0f} tasks/s (runs: {runs})")
    return result


def not_applicable(phase: str, system: str, kind: Kind, reason: str) -> Throughput:
    return Throughput(phase, system, kind, na=reason)


@contextmanager
def workdir() -> Iterator[Path]:
    """A fresh temporary folder on the same disk as a real queue would be. What earlier
    runs wrote is flushed to the disk first (``sync``, outside any timing): otherwise the
    kernel's writeback of their files competes with this run's commits."""
    if hasattr(os, "sync"):  # not on Windows
        os.sync()
    with tempfile.TemporaryDirectory(prefix="taskyard-bench-") as folder:
        yield Path(folder)


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting after {timeout:g} s")
        time.sleep(interval)


class Child:
    """A benchmark child process (``python -m module args``): it imports and prepares
    everything, prints ``loaded``, and starts its real work when it reads ``go``, so
    interpreter start-up stays out of the measured time."""

    def __init__(self, module: str, *args: str, log: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.log = log
        self.command = " ".join(["python -m", module, *args])
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
        )
        self.pid = self.process.pid

    def _stdout(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    def wait_for_line(self, expected: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        stdout = self._stdout()
        while True:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([stdout], [], [], max(remaining, 0))
            if not ready:
                raise TimeoutError(f"{self.command} did not say {expected!r}")
            line = stdout.readline()
            if not line:
                raise RuntimeError(
                    f"{self.command} exited ({self.process.wait()}):\n{self.log.read_text()}"
                )
            if expected in line:
                return

    def cpu_seconds(self) -> float:
        """The CPU time the child has used so far (user + system, all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self._log_file.close()


@contextmanager
def children(module: str, argument_sets: list[list[str]], folder: Path) -> Iterator[list[Child]]:
    """Start one child per argument list, wait until all are loaded, stop them all after;
    a child that logged a traceback makes the measurement fail."""
    started: list[Child] = []
    try:
        for index, args in enumerate(argument_sets):
            started.append(Child(module, *args, log=folder / f"child-{index}.log"))
        for child in started:
            child.wait_for_line("loaded")
        yield started
    finally:
        for child in started:
            child.stop()
    for child in started:
        text = child.log.read_text(errors="replace")
        if "Traceback" in text:
            raise RuntimeError(f"{module} (pid {child.pid}) logged an error:\n{text[-3000:]}")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) of a process, from /proc."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values
