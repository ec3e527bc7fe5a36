"""Tables and targets: what the run prints, and what ``--json`` writes."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks import container_bench as cb
from benchmarks.common import ROOT, Latency, Memory, Throughput

RAW_SINGLE = "raw sqlite3, 1 commit/task"
RAW_LIFECYCLE = "raw sqlite3, 3 commits/task"
END_TO_END = {"4", "5", "7"}
"""Phases whose tasks run to completion: the 3-commit lifecycle is their naive limit."""

PHASE_TITLES = {
    "1": "durable enqueue, one call at a time",
    "2": "durable enqueue, 64 concurrent callers",
    "3": "bulk enqueue, chunks of 1000",
    "4": "put then drain, one process",
    "5": "drain by worker processes",
    "6": "pickup latency",
    "7": "realistic handler (sleep 5 ms, concurrency 50)",
    "8": "worker memory by queue depth",
    "9": "PostgreSQL: raw asyncpg, taskyard, procrastinate, pgqueuer",
    "10": "through the container, default settings",
    "11": "no cost grows with work done",
}
SHORT_TITLES = {
    "1": "enqueue, sequential",
    "2": "enqueue, 64 callers",
    "3": "bulk enqueue",
    "4": "put+drain, 1 process",
    "5": "drain, worker procs",
    "7": "realistic handler",
}

RSS_SLACK_MIB = 20
"""Phase 8: allowed RSS growth from 10k to 1M queued. SQLite's page cache is capped at
16 MB by taskyard (cache_size = -16000), so a deep file may fill it; anything that grew
with depth would show as hundreds of MiB at 1M tasks."""


@dataclass
class Target:
    name: str
    measured: str
    passed: bool | None  # None: not measured in this run


@dataclass
class Results:
    tasks: int
    repeats: int
    machine: dict[str, str]
    throughput: list[Throughput] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    memory: list[Memory] = field(default_factory=list)
    growth: list[cb.Growth] = field(default_factory=list)
    seconds: float = 0.0

    def find(self, phase: str, system: str) -> Throughput | None:
        for result in self.throughput:
            if result.phase == phase and result.system == system:
                return result
        return None

    def rate(self, phase: str, system: str) -> float | None:
        result = self.find(phase, system)
        return None if result is None else result.rate

    def limit(self, system: str) -> float | None:
        return self.rate("1" if system == RAW_SINGLE else "4", system)

    def best_peer(self, phase: str) -> float | None:
        rates = [
            r.rate for r in self.throughput if r.phase == phase and r.kind == "peer" and r.rate
        ]
        return max(rates) if rates else None


def machine_info() -> dict[str, str]:
    import taskyard
    from benchmarks.peers import versions

    cpu = "?"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    info = {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "taskyard": f"{taskyard.__version__} ({commit})",
        "aiosqlite": version("aiosqlite"),
        "load average at start": " ".join(f"{load:.2f}" for load in os.getloadavg()),
    }
    info.update({name: v for name, v in versions().items() if name != "sqlite"})
    return info


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "—"
    return f"{value / reference:.2f}x"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def throughput_table(results: Results) -> Table:
    table = Table(title=f"Throughput, tasks/s (median of {results.repeats}, N = {results.tasks:,})")
    for column, justify in [
        ("phase", "left"),
        ("system", "left"),
        ("tasks/s", "right"),
        ("x raw 1-commit", "right"),
        ("x raw 3-commit", "right"),
        ("x best peer", "right"),
        ("runs", "right"),
        ("note", "left"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    raw_single = results.limit(RAW_SINGLE)
    raw_lifecycle = results.limit(RAW_LIFECYCLE)
    phases = sorted({r.phase for r in results.throughput} - {"9", "10"}, key=int)
    for index, phase in enumerate(phases):
        if index:
            table.add_section()
        best = results.best_peer(phase)
        for r in (r for r in results.throughput if r.phase == phase):
            runs = f"{min(r.rates):,.0f}-{max(r.rates):,.0f}" if len(r.rates) > 1 else ""
            table.add_row(
                f"{phase} {SHORT_TITLES.get(phase, '')}" if r is _first(results, phase) else "",
                r.system,
                _rate(r.rate),
                _ratio(r.rate, raw_single),
                _ratio(r.rate, raw_lifecycle) if phase in END_TO_END else "—",
                _ratio(r.rate, best) if r.kind != "raw" else "—",
                runs,
                r.na or r.note,
            )
    return table


def postgres_table(results: Results) -> Table:
    """Phase 9 against its own limits: the raw asyncpg figure of the same kind of work."""
    from benchmarks import postgres as pg

    table = Table(title="Phase 9: PostgreSQL, tasks/s (median; runs interleaved)")
    for column in ("system", "tasks/s", "x raw asyncpg", "runs", "note"):
        table.add_column(column, justify="right" if column in ("tasks/s", "x raw asyncpg",
                                                               "runs") else "left")  # fmt: skip
    for r in (r for r in results.throughput if r.phase == "9"):
        if "drain" in r.system:
            reference = results.rate("9", pg.RAW_PG_DRAIN)
        elif "callers" in r.system:
            reference = results.rate("9", pg.RAW_PG_CALLERS)
        else:
            reference = results.rate("9", pg.RAW_PG_SINGLE)
        runs = f"{min(r.rates):,.0f}-{max(r.rates):,.0f}" if len(r.rates) > 1 else ""
        table.add_row(r.system, _rate(r.rate), _ratio(r.rate, reference), runs, r.na or r.note)
    return table


def postgres_targets(results: Results, check: Callable[..., None]) -> None:
    from benchmarks import postgres as pg

    def rate(system: str) -> float | None:
        return results.rate("9", system)

    def at_least(name: str, ours: str, reference: str, factor: float, unit: str) -> None:
        check(
            name,
            (rate(ours), rate(reference)),
            lambda a, b: Target(name, f"{a:,.0f} vs {b:,.0f}/s = {a / b:.2f}x {unit}",
                                a >= factor * b),
        )  # fmt: skip

    at_least("pg enqueue one at a time >= 0.8x raw single INSERT", pg.TY_SEQ, pg.RAW_PG_SINGLE,
             0.8, "raw")  # fmt: skip
    at_least("pg enqueue, 64 callers >= 3x raw 64 callers", pg.TY_CALLERS, pg.RAW_PG_CALLERS, 3,
             "raw")  # fmt: skip
    at_least("pg drain by 2 processes >= 0.5x raw batched drain", pg.TY_DRAIN, pg.RAW_PG_DRAIN,
             0.5, "raw")  # fmt: skip
    at_least("pg drain >= 1.5x pgqueuer", pg.TY_DRAIN, pg.PGQ_DRAIN, 1.5, "pgqueuer")
    at_least("pg drain >= 10x procrastinate", pg.TY_DRAIN, pg.PROC_DRAIN, 10, "procrastinate")
    for quiet, loud, what in ((pg.TY_SEQ_QUIET, pg.TY_SEQ, "one at a time"),
                              (pg.TY_CALLERS_QUIET, pg.TY_CALLERS, "64 callers")):  # fmt: skip
        label = f"NOTIFY costs enqueue ({what}) <= 10%"

        def verdict(on: float, off: float, label: str = label) -> Target:
            cost = f"{on:,.0f} on vs {off:,.0f}/s off = {1 - on / off:+.0%}"
            return Target(label, cost, on >= 0.9 * off)

        check(label, (rate(loud), rate(quiet)), verdict)
    name = "pg cross-process pickup p50 < 10 ms with NOTIFY"
    found = [lat.percentile(50) * 1000 for lat in results.latency
             if lat.system == "taskyard postgres" and lat.note == "NOTIFY on"]  # fmt: skip
    check(name, (found[0] if found else None,), lambda p50: Target(name, f"{p50:.1f} ms", p50 < 10))


def _first(results: Results, phase: str) -> Throughput:
    return next(r for r in results.throughput if r.phase == phase)


def latency_table(results: Results) -> Table:
    table = Table(title="Phase 6: pickup latency (enqueue call → handler start)")
    for column in ("system", "where", "poll interval", "samples", "p50 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column in ("system", "where") else "right")
    table.add_column("note")
    for lat in results.latency:
        table.add_row(
            lat.system,
            lat.where,
            "—" if lat.poll_interval is None else f"{lat.poll_interval * 1000:g} ms",
            str(len(lat.samples)),
            f"{lat.percentile(50) * 1000:.2f}",
            f"{lat.percentile(99) * 1000:.2f}",
            f"{max(lat.samples) * 1000:.2f}",
            lat.note,
        )
    return table


def memory_table(results: Results) -> Table:
    table = Table(title="Phase 8: one taskyard worker process (concurrency 10, no-op handler)")
    for column in ("queued at start", "processed", "VmRSS MiB", "VmHWM MiB", "fill s", "run s"):
        table.add_column(column, justify="right")
    for m in results.memory:
        table.add_row(
            f"{m.depth:,}",
            f"{m.processed:,}",
            f"{m.rss_kib / 1024:.1f}",
            f"{m.hwm_kib / 1024:.1f}",
            f"{m.fill_seconds:.1f}",
            f"{m.run_seconds:.1f}",
        )
    return table


def container_table(results: Results) -> Table:
    """Phase 10: one row per scenario, sqlite and in-memory side by side."""
    table = Table(
        title=f"Phase 10: through the container, default settings (median of {results.repeats},"
        f" N = {results.tasks:,}); CPU = process CPU per task, aiosqlite's thread included"
    )
    for column in (
        "concurrency",
        "scenario",
        "sqlite tasks/s",
        "x raw 1-commit",
        "sqlite CPU us/task",
        "in-memory tasks/s",
        "in-memory CPU us/task",
        "sqlite / in-memory",
    ):
        table.add_column(
            column, justify="left" if column in ("concurrency", "scenario") else "right"
        )
    raw_single = results.limit(RAW_SINGLE)
    bare = results.find("10", cb.BARE_CREATE_TASK)
    if bare is not None:
        table.add_row("—", cb.BARE_CREATE_TASK, "", "", "", _rate(bare.rate), _cpu(bare), "")
    for concurrency in (None, 100):
        label = "10 (shipped)" if concurrency is None else str(concurrency)
        first = True
        for scenario in cb.SCENARIOS:
            sqlite = results.find("10", f"{cb.row_label('sqlite', concurrency)}: {scenario}")
            memory = results.find("10", f"{cb.row_label('in-memory', concurrency)}: {scenario}")
            if sqlite is None and memory is None:
                continue
            if first:
                table.add_section()
            table.add_row(
                label if first else "",
                scenario,
                _rate(sqlite.rate if sqlite else None),
                _ratio(sqlite.rate if sqlite else None, raw_single),
                _cpu(sqlite),
                _rate(memory.rate if memory else None),
                _cpu(memory),
                _ratio(sqlite.rate if sqlite else None, memory.rate if memory else None),
            )
            first = False
    return table


def _cpu(result: Throughput | None) -> str:
    return "—" if result is None or result.cpu is None else f"{result.cpu:.1f}"


def growth_table(results: Results) -> Table:
    table = Table(
        title="Phase 11: enqueue one at a time (worker running, tasks delayed), empty queue"
        " vs after DEPTH more scheduled by the same manager"
    )
    for column in (
        "backend",
        "depth",
        "empty: tasks/s",
        "deep: tasks/s",
        "deep / empty",
        "fill, first 10% chunks",
        "fill, last 10% chunks",
        "fill s",
    ):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for g in results.growth:
        table.add_row(
            g.backend,
            f"{g.depth:,}",
            _rate(g.empty_rate),
            _rate(g.deep_rate),
            f"{g.ratio:.2f}x",
            _rate(g.first_chunk_rate),
            _rate(g.last_chunk_rate),
            f"{g.fill_seconds:.1f}",
        )
    return table


def issue_targets(results: Results) -> list[Target]:
    """The ratio targets of issue 13, from this run's figures."""
    out: list[Target] = []
    raw_single = results.limit(RAW_SINGLE)
    raw_lifecycle = results.limit(RAW_LIFECYCLE)

    def row(backend: str, scenario: str, concurrency: int | None = None) -> float | None:
        return results.rate("10", f"{cb.row_label(backend, concurrency)}: {scenario}")

    def ratio(name: str, value: float | None, reference: float | None, minimum: float) -> None:
        if value is None or not reference:
            out.append(Target(name, "not measured", None))
        else:
            out.append(Target(name, f"{value / reference:.2f}x", value >= minimum * reference))

    delayed = row("sqlite", cb.DELAYED)
    ratio(
        "container sqlite, one at a time, delayed >= 0.25x raw 1-commit", delayed, raw_single, 0.25
    )
    producer = row("sqlite", cb.DELAYED_PRODUCER)
    name = "... and within 1.5x of producer-only (producer-only / worker running)"
    if delayed is None or producer is None:
        out.append(Target(name, "not measured", None))
    else:
        out.append(Target(name, f"{producer / delayed:.2f}x", producer <= 1.5 * delayed))
    ratio(
        "container sqlite, 64 producers then all done >= 0.35x raw 1-commit",
        row("sqlite", cb.PRODUCERS_DONE),
        raw_single,
        0.35,
    )
    ratio(
        "schedule_many put-then-drain sqlite >= 2x raw 3-commit (phase 4)",
        results.rate("4", "taskyard sqlite"),
        raw_lifecycle,
        2.0,
    )
    ratio(
        "container in-memory, 64 producers >= 0.3x bare create_task",
        row("in-memory", cb.PRODUCERS_DONE),
        results.rate("10", cb.BARE_CREATE_TASK),
        0.3,
    )
    ratio(
        "container sqlite end-to-end >= 0.5x in-memory (64 producers)",
        row("sqlite", cb.PRODUCERS_DONE),
        row("in-memory", cb.PRODUCERS_DONE),
        0.5,
    )
    ratio(
        "realistic handler: in-memory >= 0.85x ideal 10,000/s (phase 7)",
        results.rate("7", "taskyard in-memory"),
        10_000.0,
        0.85,
    )
    ratio(
        "realistic handler: in-memory / bare asyncio sleepers (phase 7, for reference)",
        results.rate("7", "taskyard in-memory"),
        results.rate("7", "bare asyncio, 50 coroutines sleeping"),
        0.85,
    )
    ratio(
        "realistic handler: sqlite >= 0.8x in-memory, default settings (phase 7)",
        results.rate("7", "taskyard sqlite"),
        results.rate("7", "taskyard in-memory"),
        0.8,
    )
    ratio(
        "two worker processes >= 1.3x one (phase 5)",
        results.rate("5", "taskyard sqlite, 2 worker processes"),
        results.rate("5", "taskyard sqlite, 1 worker process"),
        1.3,
    )
    enqueue = results.rate("1", "taskyard sqlite")
    ratio("enqueue one at a time >= best peer (phase 1)", enqueue, results.best_peer("1"), 1.0)
    ratio("enqueue one at a time >= 0.6x raw 1-commit (phase 1)", enqueue, raw_single, 0.6)
    for g in results.growth:
        out.append(
            Target(
                f"{g.backend}: enqueue after {g.depth:,} within 20% of empty (phase 11)",
                f"{g.ratio:.2f}x",
                g.ratio >= 0.8,
            )
        )
    return out


def targets(results: Results) -> list[Target]:
    out: list[Target] = []

    def check(name: str, inputs: tuple[float | None, ...], verdict: Callable[..., Target]) -> None:
        if any(value is None for value in inputs):
            out.append(Target(name, "not measured", None))
        else:
            out.append(verdict(*inputs))

    def floor(name: str, phase: str, minimum: float) -> None:
        check(
            name,
            (results.rate(phase, "taskyard sqlite"),),
            lambda rate: Target(name, f"{rate:,.0f}/s", rate >= minimum),
        )

    floor("durable enqueue >= 10,000/s one at a time (phase 1, sqlite)", "1", 10_000)
    floor("durable enqueue >= 40,000/s from 64 concurrent callers (phase 2)", "2", 40_000)
    floor("put-then-drain >= 25,000 tasks/s in one process (phase 4)", "4", 25_000)
    name = "put-then-drain far above huey (>= 3x huey in-process, phase 4)"
    check(
        name,
        (results.rate("4", "taskyard sqlite"), results.rate("4", "huey SqliteHuey")),
        lambda ours, huey: Target(name, f"{ours / huey:.2f}x huey", ours >= 3 * huey),
    )
    name = "two worker processes faster than one (>= 1.1x, phase 5)"
    check(
        name,
        (
            results.rate("5", "taskyard sqlite, 1 worker process"),
            results.rate("5", "taskyard sqlite, 2 worker processes"),
        ),
        lambda one, two: Target(
            name, f"{two:,.0f} vs {one:,.0f}/s = {two / one:.2f}x", two >= 1.1 * one
        ),
    )
    name = "in-process pickup p50 < 1 ms (phase 6, sqlite)"
    inproc = [
        lat.percentile(50) * 1000
        for lat in results.latency
        if lat.system == "taskyard sqlite" and lat.where == "in-process"
    ]
    check(
        name, (inproc[0] if inproc else None,), lambda p50: Target(name, f"{p50:.2f} ms", p50 < 1)
    )
    name = "realistic handler: sqlite >= 80% of in-memory (phase 7)"
    check(
        name,
        (results.rate("7", "taskyard in-memory"), results.rate("7", "taskyard sqlite")),
        lambda memory, sqlite: Target(
            name,
            f"{sqlite:,.0f} vs {memory:,.0f}/s = {sqlite / memory:.0%}",
            sqlite >= 0.8 * memory,
        ),
    )
    if any(r.phase == "9" for r in results.throughput):
        postgres_targets(results, check)
    name = f"worker memory flat in depth (RSS growth <= {RSS_SLACK_MIB} MiB, phase 8)"
    if len(results.memory) >= 2:
        shallow = min(results.memory, key=lambda m: m.depth)
        deep = max(results.memory, key=lambda m: m.depth)
        growth = (deep.rss_kib - shallow.rss_kib) / 1024
        measured = f"{shallow.rss_kib / 1024:.1f} -> {deep.rss_kib / 1024:.1f} MiB ({growth:+.1f})"
        out.append(Target(name, measured, growth <= RSS_SLACK_MIB))
    else:
        out.append(Target(name, "not run (--with-rss)", None))
    return out


def targets_table(found: list[Target], title: str = "Targets") -> Table:
    table = Table(title=title)
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("result")
    for target in found:
        verdict = {True: "[green]PASS[/]", False: "[red]MISS[/]", None: "—"}[target.passed]
        table.add_row(target.name, target.measured, verdict)
    return table


def machine_table(info: dict[str, str]) -> Table:
    table = Table(title="Machine", show_header=False)
    table.add_column("key")
    table.add_column("value")
    for key, value in info.items():
        table.add_row(key, value)
    return table


def render(results: Results, console: Console) -> None:
    console.print(machine_table(results.machine))
    if results.throughput:
        console.print(throughput_table(results))
    if any(r.phase == "9" for r in results.throughput):
        console.print(postgres_table(results))
    if results.latency:
        console.print(latency_table(results))
    if results.memory:
        console.print(memory_table(results))
    if any(r.phase == "10" for r in results.throughput):
        console.print(container_table(results))
    if results.growth:
        console.print(growth_table(results))
    console.print(targets_table(targets(results)))
    console.print(targets_table(issue_targets(results), "Targets of issue 13 (ratios, this run)"))
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    console.print(f"whole run: {results.seconds:.0f} s; load average at the end: {load}")


def to_json(results: Results) -> dict[str, Any]:
    return {
        "tasks": results.tasks,
        "repeats": results.repeats,
        "seconds": results.seconds,
        "machine": results.machine,
        "throughput": [asdict(r) | {"median": r.rate} for r in results.throughput],
        "latency": [
            asdict(lat) | {"p50": lat.percentile(50), "p99": lat.percentile(99)}
            for lat in results.latency
        ],
        "memory": [asdict(m) for m in results.memory],
        "growth": [asdict(g) | {"ratio": g.ratio} for g in results.growth],
        "targets": [asdict(t) for t in targets(results)],
        "issue_targets": [asdict(t) for t in issue_targets(results)],
    }
