"""The engine under faults that are not the store's ordinary errors (issue 10): a claim
that raises something unexpected, a store that refuses every outcome at stop, a time a
store cannot convert."""

from __future__ import annotations

import asyncio
import threading

from taskyard.backends.memory import InMemoryStore, InMemoryTaskManager
from taskyard.framework.engine import STOP_WRITE_GRACE
from taskyard.framework.errors import StoreUnavailable
from taskyard.framework.models import from_epoch, to_epoch
from taskyard.framework.threads import DaemonThreadPool
from taskyard.testing import fast_config, wait_until

WAIT = 5.0


class ClaimBreaksStore(InMemoryStore):
    """``claim`` raises a plain ValueError (not a StoreError) until ``heal()``, as a
    store converting an out-of-range time did."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True
        self.failures = 0

    async def claim(self, **kwargs):  # type: ignore[no-untyped-def]
        if self.broken:
            self.failures += 1
            raise ValueError("year 10000 is out of range")
        return await super().claim(**kwargs)


async def test_the_claim_loop_survives_any_error_and_health_says_so_meanwhile() -> None:
    store = ClaimBreaksStore()
    async with InMemoryTaskManager(fast_config(), store=store) as manager:

        async def echo(payload):
            return payload["n"]

        await manager.register_task("echo", echo)
        task_id = await manager.schedule_task("echo", {"n": 1})
        await wait_until(lambda: store.failures >= 2, timeout=WAIT)
        health = await manager.health()
        assert health["status"] != "ok", health
        assert "year 10000" in health["reason"]
        info = manager.worker_info()
        assert "year 10000" in str(info["claim_error"])
        store.broken = False
        status = await manager.wait_for(task_id, timeout=WAIT)
        assert status["status"] == "completed"
        assert (await manager.health())["status"] == "ok"


class RefusesOutcomesStore(InMemoryStore):
    """Every outcome write fails, as on a corrupt or vanished file."""

    async def finish(self, outcomes):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("disk I/O error")


async def test_stop_is_bounded_by_its_timeout_when_outcomes_cannot_be_written() -> None:
    timeout = 2.0
    manager = InMemoryTaskManager(fast_config(concurrency=4), store=RefusesOutcomesStore())
    await manager.start()
    started = asyncio.Event()

    async def quick(payload):
        return 1

    async def endless(payload):
        started.set()
        await asyncio.Event().wait()

    await manager.register_task("quick", quick)
    await manager.register_task("endless", endless)
    await manager.schedule_task("quick", {})
    await manager.schedule_task("endless", {})
    await asyncio.wait_for(started.wait(), WAIT)
    # Before the fix: the drain, then the writer's grace, then a last flush, each up to the
    # timeout: about three times it.
    async with asyncio.timeout(timeout + STOP_WRITE_GRACE + 1.0):
        await manager.stop(timeout=timeout)
    assert not manager.started


def test_a_time_no_datetime_can_hold_reads_as_the_nearest_one() -> None:
    # 9999-12-31T23:59:59.999999 rounds up to this double; before the fix from_epoch
    # raised "year 10000 is out of range" wherever such a row was read.
    far = from_epoch(253402300800.0)
    assert far is not None and far.year == 9999
    past = from_epoch(-1e300)
    assert past is not None and past.year == 1
    moment = from_epoch(1_700_000_000.123456)
    assert moment is not None and to_epoch(moment) == 1_700_000_000.123456


def test_sync_handler_threads_never_keep_the_process_alive() -> None:
    pool = DaemonThreadPool(2, name="probe")
    release = threading.Event()
    hung = pool.submit(release.wait)
    done = pool.submit(lambda: 42)
    assert done.result(timeout=WAIT) == 42
    threads = [t for t in threading.enumerate() if t.name.startswith("probe-")]
    assert threads and all(t.daemon for t in threads)
    assert not hung.done()
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert hung.result(timeout=WAIT) is True


class EverythingBreaksOnceStore(InMemoryStore):
    """Each background call raises a plain RuntimeError (a store's bug) a few times."""

    def __init__(self) -> None:
        super().__init__()
        self.left = {"recover_expired": 3, "record_worker": 3, "renew_leases": 3, "finish": 3}

    def _maybe_break(self, name: str) -> None:
        if self.left[name] > 0:
            self.left[name] -= 1
            raise RuntimeError(f"{name} is broken")

    async def recover_expired(self, **kwargs):  # type: ignore[no-untyped-def]
        self._maybe_break("recover_expired")
        return await super().recover_expired(**kwargs)

    async def record_worker(self, *args):  # type: ignore[no-untyped-def]
        self._maybe_break("record_worker")
        return await super().record_worker(*args)

    async def renew_leases(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._maybe_break("renew_leases")
        return await super().renew_leases(*args, **kwargs)

    async def finish(self, outcomes):  # type: ignore[no-untyped-def]
        self._maybe_break("finish")
        return await super().finish(outcomes)


async def test_every_background_loop_survives_an_unexpected_error() -> None:
    store = EverythingBreaksOnceStore()
    config = fast_config(lease_seconds=0.3, heartbeat_interval=0.02, recover_interval=0.02)
    async with InMemoryTaskManager(config, store=store) as manager:
        release = asyncio.Event()

        async def slow(payload):
            await release.wait()  # long enough for heartbeats to renew its lease
            return payload["n"]

        await manager.register_task("slow", slow)
        task_id = await manager.schedule_task("slow", {"n": 7})
        await wait_until(
            lambda: (
                all(store.left[name] == 0 for name in ("recover_expired", "record_worker"))
                and store.left["renew_leases"] == 0
            ),
            timeout=WAIT,
        )
        release.set()
        status = await manager.wait_for(task_id, timeout=WAIT)
        assert status["status"] == "completed" and status["result"] == 7
        assert store.left["finish"] == 0  # the writer retried past its three failures
        loops = {task.get_name(): task for task in manager._background}
        assert not any(task.done() for task in loops.values()), loops


async def test_stop_is_bounded_even_when_a_handler_swallows_its_cancellation() -> None:
    manager = InMemoryTaskManager(fast_config())
    await manager.start()
    started = asyncio.Event()
    done = asyncio.Event()

    async def stubborn(payload):
        started.set()
        while not done.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue  # hostile: keeps running
        return "finally"

    await manager.register_task("stubborn", stubborn)
    task_id = await manager.schedule_task("stubborn", {})
    await asyncio.wait_for(started.wait(), WAIT)
    try:
        async with asyncio.timeout(0.2 + STOP_WRITE_GRACE + 1.0):
            await manager.stop(timeout=0.2)
        assert not manager.started
        record = manager.store.tasks[task_id]  # type: ignore[attr-defined]
        assert record.status == "running"  # abandoned: its lease is left to expire
    finally:
        done.set()  # let the stubborn handler end before the test's loop closes
        name = f"taskyard-task-{task_id}"
        await wait_until(
            lambda: not any(t.get_name() == name for t in asyncio.all_tasks()), timeout=WAIT
        )
