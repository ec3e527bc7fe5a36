"""Prometheus metrics: the queue as the database holds it, and what a worker process did.

prometheus-client is an optional dependency (``pip install 'taskyard[metrics]'``),
imported only when metrics are asked for.

From the database (:class:`QueueCollector`; ``taskyard metrics`` prints them once, and a
worker's ``/metrics`` includes them, read at each scrape):

========================================================  =======  ====================
name                                                      type     labels
========================================================  =======  ====================
``taskyard_database_up``                                  gauge    1, or 0 when unreadable
``taskyard_queue_tasks``                                  gauge    type, status
``taskyard_queued_due_tasks`` / ``_delayed_tasks``        gauge
``taskyard_oldest_queued_age_seconds``                    gauge    (0 when none waits)
``taskyard_waiting_retry_tasks``                          gauge
``taskyard_expired_lease_tasks``                          gauge
``taskyard_window_seconds``                               gauge    the window's length
``taskyard_window_finished_tasks``                        gauge    type, status
``taskyard_window_failure_ratio``                         gauge    (absent when none ran)
``taskyard_window_throughput_tasks_per_second``           gauge
``taskyard_window_retried_tasks``                         gauge
``taskyard_window_retry_attempts``                        gauge
``taskyard_task_processing_seconds``                      summary  quantile 0.5/0.95/0.99
``taskyard_workers``                                      gauge    state (active, stale)
``taskyard_worker_last_heartbeat_timestamp_seconds``      gauge    worker_id, hostname
``taskyard_schedules``                                    gauge    state (enabled, paused)
``taskyard_schedule_lag_seconds``                         gauge    most overdue enabled schedule
``taskyard_database_size_bytes`` / ``_wal_size_bytes``    gauge
========================================================  =======  ====================

The queue's contents are gauges (they go up and down), so none of them ends in
``_total``; the window's figures are gauges over the last ``window`` seconds.

From a worker process (:class:`WorkerMetrics`, served by ``taskyard worker
--metrics-port N`` on 127.0.0.1), counting what this process did since it started:

- ``taskyard_tasks_total{type,status}``: counter of status changes (``running`` is a
  claim, ``queued`` a scheduling or a retry, the others are outcomes);
- ``taskyard_task_duration_seconds{type}``: histogram of attempt durations, claim to
  outcome;
- ``taskyard_worker_running_tasks`` and ``taskyard_worker_concurrency``: gauges.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from loguru import logger

from taskyard.framework.errors import ConfigurationError, TaskyardError
from taskyard.framework.models import TaskEvent, TaskStatus
from taskyard.framework.operations import FINISHED, StoreOperations
from taskyard.ops.inspect import PERCENTILES, QueueStatus, status_of

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from taskyard.framework.engine import TaskEngine

INSTALL_HINT = "pip install 'taskyard[metrics]'"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
LOCALHOST = "127.0.0.1"


def prometheus() -> ModuleType:
    """The prometheus_client module, or ConfigurationError telling how to install it."""
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigurationError(
            f"metrics need the prometheus-client package, which is not installed: {INSTALL_HINT}"
        ) from exc
    return prometheus_client


def status_families(status: QueueStatus) -> list[Metric]:
    """The metric families of one queue status."""
    from prometheus_client.core import (
        GaugeMetricFamily,
        SummaryMetricFamily,
    )
    from prometheus_client.samples import Sample

    def gauge(name: str, doc: str, value: float, unit: str = "") -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, value=value, unit=unit)

    families: list[Metric] = [
        gauge("taskyard_database_up", "Whether the queue database answered.", 1)
    ]

    tasks = GaugeMetricFamily(
        "taskyard_queue_tasks",
        "Tasks stored in the queue, by type and status.",
        labels=["type", "status"],
    )
    for task_type, counts in status.depth_by_type.items():
        for state, count in counts.items():
            tasks.add_metric([task_type, state], count)
    families.append(tasks)
    families += [
        gauge(
            "taskyard_queued_due_tasks", "Queued tasks whose run_after has come.", status.queued_due
        ),
        gauge(
            "taskyard_queued_delayed_tasks",
            "Queued tasks scheduled for later.",
            status.queued_delayed,
        ),
        gauge(
            "taskyard_oldest_queued_age_seconds",
            "How long the longest-waiting due task has waited since it became due.",
            status.oldest_queued_age or 0.0,
        ),
        gauge(
            "taskyard_waiting_retry_tasks",
            "Queued tasks that already had an attempt.",
            status.waiting_retry,
        ),
        gauge(
            "taskyard_expired_lease_tasks",
            "Running tasks whose lease expired (their worker stopped responding).",
            status.expired_leases,
        ),
        gauge(
            "taskyard_window_seconds",
            "The length of the window of the window_ metrics.",
            status.window.seconds,
        ),
    ]

    window = status.window
    finished = GaugeMetricFamily(
        "taskyard_window_finished_tasks",
        "Tasks that finished within the window, by type and final status.",
        labels=["type", "status"],
    )
    zero = dict.fromkeys(FINISHED, 0)  # every type the queue holds, so no series vanishes
    for task_type in sorted({*status.depth_by_type, *window.finished_by_type}):
        for state, count in window.finished_by_type.get(task_type, zero).items():
            finished.add_metric([task_type, state], count)
    families.append(finished)
    if window.failure_rate is not None:
        families.append(
            gauge(
                "taskyard_window_failure_ratio",
                "Failed / (completed + failed) within the window.",
                window.failure_rate,
            )
        )
    families += [
        gauge(
            "taskyard_window_throughput_tasks_per_second",
            "Completed and failed tasks per second over the window.",
            window.throughput,
        ),
        gauge(
            "taskyard_window_retried_tasks",
            "Tasks finished within the window that needed more than one attempt.",
            window.retried_tasks,
        ),
        gauge(
            "taskyard_window_retry_attempts",
            "Attempts beyond the first of the tasks finished within the window.",
            window.retries,
        ),
    ]

    processing = window.processing
    summary = SummaryMetricFamily(
        "taskyard_task_processing_seconds",
        "Claim-to-finish seconds of the last attempt of tasks completed or failed within "
        "the window.",
        count_value=processing.count,
        sum_value=processing.total,
    )
    for percent in PERCENTILES:
        value = getattr(processing, f"p{percent}")
        if value is not None:
            summary.samples.append(
                Sample(summary.name, {"quantile": str(percent / 100)}, value, None, None)
            )
    families.append(summary)

    workers = GaugeMetricFamily("taskyard_workers", "Workers by heartbeat state.", labels=["state"])
    workers.add_metric(["active"], len(status.active_workers))
    workers.add_metric(["stale"], len(status.stale_workers))
    families.append(workers)
    heartbeats = GaugeMetricFamily(
        "taskyard_worker_last_heartbeat_timestamp_seconds",
        "When each worker last recorded a heartbeat (Unix time).",
        labels=["worker_id", "hostname"],
    )
    for worker in status.workers:
        heartbeats.add_metric([worker.worker_id, worker.hostname], worker.last_heartbeat)
    families.append(heartbeats)
    if status.schedules:
        schedules = GaugeMetricFamily(
            "taskyard_schedules", "Periodic schedules by state.", labels=["state"]
        )
        schedules.add_metric(["enabled"], status.schedules["enabled"])
        schedules.add_metric(["paused"], status.schedules["paused"])
        families.append(schedules)
        families.append(
            gauge(
                "taskyard_schedule_lag_seconds",
                "How overdue the most overdue enabled schedule's next slot is (0: on time).",
                status.schedules["max_lag_seconds"],
            )
        )
    families += [
        gauge(
            "taskyard_database_size_bytes", "Size of the database file.", status.database.size_bytes
        ),
        gauge(
            "taskyard_database_wal_size_bytes", "Size of the WAL file.", status.database.wal_bytes
        ),
    ]
    if status.tables:  # a store on a server (PostgreSQL): its tables' rows and sizes
        dead = GaugeMetricFamily(
            "taskyard_table_dead_rows",
            "Dead rows of each of taskyard's tables, not yet reclaimed by a vacuum.",
            labels=["table"],
        )
        live = GaugeMetricFamily(
            "taskyard_table_live_rows", "Live rows of each of taskyard's tables.", labels=["table"]
        )
        size = GaugeMetricFamily(
            "taskyard_table_size_bytes",
            "Size of each of taskyard's tables, with indexes and TOAST.",
            labels=["table"],
        )
        for name, stats in status.tables.items():
            dead.add_metric([name], stats.dead_rows)
            live.add_metric([name], stats.live_rows)
            size.add_metric([name], stats.size_bytes)
        families += [dead, live, size]
    return families


def down_families() -> list[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    return [GaugeMetricFamily("taskyard_database_up", "Whether the queue database answered.", 0)]


class QueueCollector:
    """A prometheus-client collector that reads the queue at each collection.

    ``read`` returns the current :class:`QueueStatus`; a TaskyardError it raises makes
    the collection report ``taskyard_database_up 0`` (and is logged), not fail."""

    def __init__(self, read: Callable[[], QueueStatus]) -> None:
        self.read = read
        self.last_error: str | None = None

    def collect(self) -> Iterator[Metric]:
        try:
            status = self.read()
        except TaskyardError as exc:
            self.last_error = str(exc)
            logger.warning("taskyard metrics: the queue database did not answer: {}", exc)
            yield from down_families()
            return
        self.last_error = None
        yield from status_families(status)


def store_reader(
    make_store: Callable[[], StoreOperations],
    *,
    window: float = 3600.0,
    stale_after: float = 60.0,
) -> Callable[[], QueueStatus]:
    """Reads the status of the queue on a store of its own (``make_store()`` builds an
    unopened one, as the container's ``ops_store`` does), opened and closed for each
    read, in the calling thread (a scrape runs in the HTTP server's thread, not the
    event loop)."""

    def read() -> QueueStatus:
        return asyncio.run(status_of(make_store(), window=window, stale_after=stale_after))

    return read


def render(collector: QueueCollector) -> str:
    """The collector's metrics in the Prometheus text format."""
    client = prometheus()
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text: bytes = client.generate_latest(registry)
    return text.decode("utf-8")


class WorkerMetrics:
    """Metrics of a worker process, served over HTTP on localhost while it works::

    metrics = WorkerMetrics(manager, queue=container.ops_store)
    port = metrics.serve(9464)
    ...
    metrics.close()
    """

    def __init__(
        self,
        manager: TaskEngine,
        *,
        queue: Callable[[], StoreOperations] | None = None,
        window: float = 3600.0,
        stale_after: float = 60.0,
    ) -> None:
        client = prometheus()
        self.manager = manager
        self.registry: CollectorRegistry = client.CollectorRegistry(auto_describe=False)
        self.transitions = client.Counter(
            "taskyard_tasks",
            "Status changes this worker process made, by task type and new status.",
            ["type", "status"],
            registry=self.registry,
        )
        self.durations = client.Histogram(
            "taskyard_task_duration_seconds",
            "Seconds from claim to outcome of each attempt this worker process ran.",
            ["type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        running = client.Gauge(
            "taskyard_worker_running_tasks",
            "Handlers running in this worker process.",
            registry=self.registry,
        )
        running.set_function(lambda: float(self._info("running")))
        concurrency = client.Gauge(
            "taskyard_worker_concurrency",
            "Handlers this worker process runs at once at most.",
            registry=self.registry,
        )
        concurrency.set_function(lambda: float(self._info("concurrency")))
        self.collector: QueueCollector | None = None
        if queue is not None:
            self.collector = QueueCollector(
                store_reader(queue, window=window, stale_after=stale_after)
            )
            self.registry.register(self.collector)
        self._started: dict[str, float] = {}
        self._unsubscribe = manager.events.subscribe(self.on_event)
        self._server: WSGIServer | None = None
        self._thread: Any = None

    def _info(self, key: str) -> int:
        value = self.manager.worker_info().get(key, 0)
        return value if isinstance(value, int) else 0

    def on_event(self, event: TaskEvent) -> None:
        """Count a status change; time an attempt from its claim to its outcome."""
        self.transitions.labels(event.type, str(event.status)).inc()
        if event.status is TaskStatus.RUNNING:
            if (
                len(self._started) > 100_000
            ):  # outcomes this process never saw (cancelled elsewhere)
                self._started.pop(next(iter(self._started)))
            self._started[event.task_id] = time.monotonic()
            return
        started = self._started.pop(event.task_id, None)
        if started is not None:
            self.durations.labels(event.type).observe(time.monotonic() - started)

    def serve(self, port: int, addr: str = LOCALHOST) -> int:
        """Serve ``/metrics`` on ``addr:port`` (0 picks a free port); returns the port."""
        client = prometheus()
        self._server, self._thread = client.start_http_server(
            port, addr=addr, registry=self.registry
        )
        return int(self._server.server_port)

    def close(self) -> None:
        self._unsubscribe()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None
