"""Run the benchmarks: ``python -m benchmarks`` (or ``python benchmarks/run.py``).

The same workload (N small JSON tasks ``{"n": i}``, a no-op handler) through raw
sqlite3, taskyard (in-memory and sqlite) and huey, persist-queue and litequeue, on this
machine, in one invocation. See benchmarks/README.md for what each phase measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from benchmarks import container_bench as cb
from benchmarks import peers, raw
from benchmarks import taskyard_bench as ty
from benchmarks.common import (
    CALLERS,
    DRAIN_CONCURRENCY,
    REALISTIC_CONCURRENCY,
    REALISTIC_SLEEP,
    SLOW_RUN,
    WORKER_POLL,
    Kind,
    Latency,
    Throughput,
    not_applicable,
    repeat,
    workdir,
)
from benchmarks.report import (
    PHASE_TITLES,
    RAW_LIFECYCLE,
    RAW_SINGLE,
    Results,
    machine_info,
    render,
    to_json,
)

PHASE_NAMES = {
    "enqueue": "1",
    "concurrent": "2",
    "bulk": "3",
    "drain": "4",
    "processes": "5",
    "latency": "6",
    "realistic": "7",
    "rss": "8",
    "postgres": "9",
    "container": "10",
    "growth": "11",
}

CONTAINER_BACKENDS = ("sqlite", "in-memory")
CONTAINER_CONCURRENCIES = (None, DRAIN_CONCURRENCY)
"""Phase 10 runs at the shipped concurrency (None: the settings' 10) and at 100."""


class Bench:
    def __init__(self, tasks: int, repeats: int, console: Console) -> None:
        self.tasks = tasks
        self.repeats = repeats
        self.console = console

    def echo(self, text: str) -> None:
        self.console.log(text)

    def measure(
        self,
        phase: str,
        system: str,
        kind: Kind,
        run: Callable[[Path, int], float],
        *,
        tasks: int | None = None,
        note: str = "",
    ) -> Throughput:
        """Time ``run(folder, tasks)`` in a fresh folder, ``repeats`` times."""
        count = tasks or self.tasks

        def once() -> float:
            with workdir() as folder:
                return run(folder, count)

        return repeat(
            phase, system, kind, once, tasks=count, repeats=self.repeats, note=note, echo=self.echo
        )

    def measure_async(
        self,
        phase: str,
        system: str,
        run: Callable[[Path, int], Coroutine[Any, Any, float]],
        *,
        note: str = "",
    ) -> Throughput:
        return self.measure(
            phase, system, "taskyard", lambda folder, n: asyncio.run(run(folder, n)), note=note
        )

    # -- the phases -----------------------------------------------------------------------

    def limits(self) -> list[Throughput]:
        return [
            self.measure("1", RAW_SINGLE, "raw", raw.single_commits, note="the enqueue limit"),
            self.measure(
                "4",
                RAW_LIFECYCLE,
                "raw",
                raw.lifecycle,
                note="insert, claim, complete: each a commit (the naive queue)",
            ),
        ]

    def phase1(self) -> list[Throughput]:
        out = [
            self.measure_async(
                "1",
                f"taskyard {backend}",
                partial(ty.enqueue_sequential, backend),
                note="await schedule_task; producer-only manager"
                + ("; not durable" if backend == "in-memory" else ""),
            )
            for backend in ty.BACKENDS
        ]
        out += [
            self.measure("1", peers.HUEY, "peer", peers.huey_enqueue, note="task(...) call"),
            self.measure("1", peers.PERSIST_QUEUE, "peer", peers.persist_queue_enqueue),
            self.measure("1", peers.LITEQUEUE, "peer", peers.litequeue_enqueue),
        ]
        return out

    def phase2(self) -> list[Throughput]:
        out = [
            self.measure_async(
                "2",
                f"taskyard {backend}",
                partial(ty.enqueue_concurrent, backend),
                note=f"{CALLERS} coroutines awaiting schedule_task",
            )
            for backend in ty.BACKENDS
        ]
        threads = f"{CALLERS} threads"
        out += [
            self.measure(
                "2",
                peers.HUEY,
                "peer",
                partial(peers.huey_enqueue, concurrent=True),
                note=f"{threads}, one SqliteHuey (its storage locks)",
            ),
            self.measure(
                "2",
                peers.PERSIST_QUEUE,
                "peer",
                partial(peers.persist_queue_enqueue, concurrent=True),
                note=f"{threads}, one queue (multithreading=True)",
            ),
            self.measure(
                "2",
                peers.LITEQUEUE,
                "peer",
                partial(peers.litequeue_enqueue, concurrent=True),
                note=f"{threads}, one LiteQueue (check_same_thread=False; put autocommits)",
            ),
        ]
        return out

    def phase3(self) -> list[Throughput]:
        out = [
            self.measure("3", "raw sqlite3, executemany", "raw", raw.bulk, note="one commit/chunk")
        ]
        out += [
            self.measure_async(
                "3",
                f"taskyard {backend}",
                partial(ty.enqueue_bulk, backend),
                note="schedule_many",
            )
            for backend in ty.BACKENDS
        ]
        out += [
            not_applicable("3", peers.HUEY, "peer", "n/a: no bulk enqueue (a commit per task)"),
            not_applicable(
                "3", peers.PERSIST_QUEUE, "peer", "n/a: the ack queue forces a commit per put"
            ),
            self.measure(
                "3",
                peers.LITEQUEUE,
                "peer",
                peers.litequeue_bulk,
                note="put() inside queue.transaction()",
            ),
        ]
        return out

    def phase4(self) -> list[Throughput]:
        out = [
            self.measure_async(
                "4",
                f"taskyard {backend}",
                partial(ty.put_then_drain, backend),
                note=f"schedule_many, then wait_all; worker concurrency {DRAIN_CONCURRENCY}",
            )
            for backend in ty.BACKENDS
        ]
        out += [
            self.measure(
                "4", peers.HUEY, "peer", peers.huey_put_then_drain, note="enqueue; dequeue+execute"
            ),
            self.measure(
                "4",
                peers.PERSIST_QUEUE,
                "peer",
                peers.persist_queue_put_then_drain,
                note="put; get+ack",
            ),
            self.measure(
                "4", peers.LITEQUEUE, "peer", peers.litequeue_put_then_drain, note="put; pop+done"
            ),
        ]
        return out

    def phase5(self) -> list[Throughput]:
        out: list[Throughput] = []
        for count in (1, 2):
            label = f"{count} worker process" + ("es" if count > 1 else "")
            ty.WORKER_CPU.clear()
            result = self.measure(
                "5",
                f"taskyard sqlite, {label}",
                "taskyard",
                partial(ty.worker_processes, processes=count),
                note=f"until the store says all completed; concurrency {DRAIN_CONCURRENCY}"
                f" each, poll {WORKER_POLL * 1000:g} ms",
            )
            # the workers' CPU per task and the cores they kept busy: one process already
            # keeps most of two cores busy (its event loop and SQLite's thread)
            result.cpu_us = [cpu / self.tasks * 1e6 for cpu in ty.WORKER_CPU]
            if result.cpu is not None and result.rate is not None:
                cores = result.cpu * result.rate / 1e6
                result.note += f"; {result.cpu:.0f} CPU us/task, {cores:.2f} cores busy"
                self.echo(f"  phase 5 {label}: {cores:.2f} of {os.cpu_count()} cores busy")
            out.append(result)
        for count in (1, 2):
            label = f"{count} worker process" + ("es" if count > 1 else "")
            out.append(
                self.measure(
                    "5",
                    f"huey consumer, {label}",
                    "peer",
                    partial(peers.huey_consumer, workers=count),
                    note="until the queue is empty (huey keeps no completion record)",
                )
            )
        out += [
            not_applicable(
                "5",
                peers.PERSIST_QUEUE,
                "peer",
                "n/a: no worker; get() is a SELECT then a separate UPDATE, "
                "so two processes can take the same item",
            ),
            not_applicable(
                "5", peers.LITEQUEUE, "peer", "n/a: a queue library, no worker processes"
            ),
        ]
        return out

    def phase6(self, samples: int, cross_samples: int) -> list[Latency]:
        out: list[Latency] = []
        for backend in ty.BACKENDS:
            with workdir() as folder:
                found = asyncio.run(ty.latency_in_process(backend, folder, samples))
            out.append(
                Latency(
                    f"taskyard {backend}",
                    "in-process",
                    found,
                    note="perf_counter; idle worker; includes the durable commit",
                )
            )
            self.echo(f"  phase 6 {backend} in-process: p50 {out[-1].percentile(50) * 1e3:.2f} ms")
        with workdir() as folder:
            found = ty.latency_across_processes(folder, cross_samples)
        out.append(
            Latency(
                "taskyard sqlite",
                "worker process",
                found,
                WORKER_POLL,
                note="time.time() stamped by the handler",
            )
        )
        self.echo(f"  phase 6 sqlite across processes: p50 {out[-1].percentile(50) * 1e3:.1f} ms")
        with workdir() as folder:
            found = peers.huey_latency(folder, cross_samples)
        out.append(
            Latency(
                peers.HUEY,
                "consumer process",
                found,
                WORKER_POLL,
                note="consumer delay = poll interval, backoff 1",
            )
        )
        self.echo(f"  phase 6 huey across processes: p50 {out[-1].percentile(50) * 1e3:.1f} ms")
        return out

    def phase9(self, latency_samples: int) -> tuple[list[Throughput], list[Latency]]:
        from benchmarks import postgres

        reason = postgres.available()
        if reason is not None:
            self.echo(f"  phase 9 skipped: no PostgreSQL at {postgres.ADMIN_DSN} ({reason})")
            return [not_applicable("9", "PostgreSQL", "raw", f"n/a: no server ({reason})")], []
        return postgres.phase(self.tasks, self.repeats, workdir, self.echo, latency_samples)

    def phase7(self) -> list[Throughput]:
        reference = self.measure(
            "7",
            "bare asyncio, 50 coroutines sleeping",
            "raw",
            partial(cb.bare_sleepers, slots=REALISTIC_CONCURRENCY, sleep=REALISTIC_SLEEP),
            note="no queue: the event loop's own limit (timers fire up to 1 ms late)",
        )
        return [reference] + [
            self.measure_async(
                "7",
                f"taskyard {backend}" + (f", prefetch {prefetch}" if prefetch else ""),
                partial(ty.put_then_drain, backend, realistic=True, prefetch=prefetch),
                note="ideal: 50 / 5 ms = 10,000/s"
                + ("; claims overlap running handlers" if prefetch else "; default settings"),
            )
            for prefetch in (0, REALISTIC_CONCURRENCY)
            for backend in ty.BACKENDS
        ]

    def measure_timed(
        self,
        phase: str,
        system: str,
        run: Callable[[Path, int], Coroutine[Any, Any, cb.Timed]],
        *,
        note: str = "",
    ) -> Throughput:
        """As :meth:`measure`, for runs that also report their CPU time."""
        result = Throughput(phase, system, "taskyard", note=note)
        for _ in range(self.repeats):
            with workdir() as folder:
                timed = asyncio.run(run(folder, self.tasks))
            result.rates.append(self.tasks / timed.seconds)
            result.cpu_us.append(timed.cpu / self.tasks * 1e6)
            if timed.seconds > SLOW_RUN:
                result.note = f"{note}; 1 run only: it took {timed.seconds:.0f} s".lstrip("; ")
                break
        runs = ", ".join(f"{rate:,.0f}" for rate in result.rates)
        self.echo(
            f"  phase {phase} {system}: {result.rate:,.0f} tasks/s, "
            f"{result.cpu:.1f} CPU us/task (runs: {runs})"
        )
        return result

    def phase10(self) -> list[Throughput]:
        """Through the container, default settings (see benchmarks/container_bench.py)."""
        out = [
            self.measure_timed(
                "10",
                cb.BARE_CREATE_TASK,
                lambda folder, n: cb.bare_create_task(folder, n),
                note="the same no-op coroutines, no queue: the reference",
            )
        ]
        for concurrency in CONTAINER_CONCURRENCIES:
            for backend in CONTAINER_BACKENDS:
                label = cb.row_label(backend, concurrency)
                rows: list[tuple[str, Callable[[Path, int], Coroutine[Any, Any, cb.Timed]]]] = [
                    (
                        cb.DELAYED,
                        partial(cb.one_at_a_time_delayed, backend, concurrency=concurrency),
                    ),
                    (cb.ONE_DONE, partial(cb.one_at_a_time_done, backend, concurrency=concurrency)),
                    (
                        cb.PRODUCERS_DONE,
                        partial(cb.producers_done, backend, concurrency=concurrency),
                    ),
                    (cb.CHUNKS_DONE, partial(cb.chunks_done, backend, concurrency=concurrency)),
                ]
                if concurrency is None:
                    rows.insert(
                        1,
                        (
                            cb.DELAYED_PRODUCER,
                            partial(cb.one_at_a_time_delayed, backend, run_worker=False),
                        ),
                    )
                for scenario, run in rows:
                    out.append(self.measure_timed("10", f"{label}: {scenario}", run))
        return out


def phase11(bench: Bench, depth: int) -> list[cb.Growth]:
    out: list[cb.Growth] = []
    with workdir() as folder:
        found = asyncio.run(cb.growth("sqlite", folder, depth, bench.echo))
    bench.echo(
        f"  phase 11 sqlite: {found.empty_rate:,.0f}/s empty, {found.deep_rate:,.0f}/s after "
        f"{depth:,} ({found.ratio:.2f}x); fill {found.fill_seconds:.1f} s"
    )
    out.append(found)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per run (20000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; median (3)")
    parser.add_argument(
        "--only",
        default="",
        help="phases to run, by number or name, comma-separated: "
        + ", ".join(f"{n}={name}" for name, n in PHASE_NAMES.items()),
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--with-rss",
        action="store_true",
        help="run phase 8 (1,000,000 queued tasks; about a minute more)",
    )
    parser.add_argument("--rss-depth", type=int, default=1_000_000)
    parser.add_argument(
        "--growth-depth",
        type=int,
        default=1_000_000,
        help="phase 11: tasks scheduled between the two enqueue measurements (1000000)",
    )
    parser.add_argument("--latency-samples", type=int, default=300, help="in-process (300)")
    parser.add_argument("--cross-samples", type=int, default=100, help="across processes (100)")
    return parser.parse_args(argv)


def selected_phases(only: str, with_rss: bool) -> list[str]:
    if not only:
        return [p for p in PHASE_TITLES if p != "8" or with_rss]
    chosen: list[str] = []
    for item in only.split(","):
        item = item.strip().lower()
        phase = PHASE_NAMES.get(item, item)
        if phase not in PHASE_TITLES:
            raise SystemExit(f"unknown phase {item!r}; choose from {', '.join(PHASE_NAMES)}")
        chosen.append(phase)
    return sorted(set(chosen), key=int)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    phases = selected_phases(args.only, args.with_rss)
    console = Console(log_path=False, width=None if sys.stdout.isatty() else 200)
    bench = Bench(args.tasks, args.repeats, console)
    results = Results(args.tasks, args.repeats, machine_info())
    started = time.perf_counter()
    console.log(f"phases {', '.join(phases)}; N = {args.tasks:,}; repeats = {args.repeats}")
    results.throughput += bench.limits()
    runners: dict[str, Callable[[], None]] = {
        "1": lambda: results.throughput.extend(bench.phase1()),
        "2": lambda: results.throughput.extend(bench.phase2()),
        "3": lambda: results.throughput.extend(bench.phase3()),
        "4": lambda: results.throughput.extend(bench.phase4()),
        "5": lambda: results.throughput.extend(bench.phase5()),
        "6": lambda: results.latency.extend(bench.phase6(args.latency_samples, args.cross_samples)),
        "7": lambda: results.throughput.extend(bench.phase7()),
        "8": lambda: results.memory.extend(phase8(bench, args.rss_depth)),
        "9": lambda: _extend(results, bench.phase9(args.cross_samples)),
        "10": lambda: results.throughput.extend(bench.phase10()),
        "11": lambda: results.growth.extend(phase11(bench, args.growth_depth)),
    }
    for phase in phases:
        console.rule(f"phase {phase}: {PHASE_TITLES[phase]}")
        runners[phase]()
    results.throughput.sort(key=lambda r: int(r.phase))
    results.seconds = time.perf_counter() - started
    render(results, console)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(results), indent=2))
        console.log(f"results written to {args.json}")
    return 0


def _extend(results: Results, found: tuple[list[Throughput], list[Latency]]) -> None:
    results.throughput.extend(found[0])
    results.latency.extend(found[1])


def phase8(bench: Bench, depth: int) -> list[Any]:
    out = []
    for queued in (10_000, depth):
        with workdir() as folder:
            out.append(ty.worker_memory(folder, queued, 20_000, bench.echo))
        bench.echo(f"  phase 8 depth {queued:,}: VmRSS {out[-1].rss_kib / 1024:.1f} MiB")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
