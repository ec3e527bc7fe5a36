"""EventBus: fan-out in order, unsubscribe, a raising subscriber does not stop the others."""

from taskyard.framework.events import EventBus
from taskyard.framework.models import TaskEvent, TaskStatus


def event(status: TaskStatus = TaskStatus.QUEUED) -> TaskEvent:
    return TaskEvent(task_id="t1", type="email", status=status, attempts=0)


def test_every_subscriber_gets_every_event_in_order():
    bus = EventBus()
    first: list[TaskEvent] = []
    second: list[TaskEvent] = []
    bus.subscribe(first.append)
    bus.subscribe(second.append)
    sent = [event(TaskStatus.QUEUED), event(TaskStatus.RUNNING), event(TaskStatus.COMPLETED)]
    for item in sent:
        bus.publish(item)
    assert first == sent and second == sent


def test_a_raising_subscriber_does_not_stop_the_others():
    bus = EventBus()
    seen: list[TaskEvent] = []

    def broken(item: TaskEvent) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(seen.append)
    bus.subscribe(broken)
    bus.subscribe(lambda item: seen.append(item))
    bus.publish(event())
    bus.publish(event(TaskStatus.RUNNING))
    assert [item.status for item in seen] == ["queued", "queued", "running", "running"]


def test_unsubscribe_stops_delivery_and_is_safe_twice():
    bus = EventBus()
    seen: list[TaskEvent] = []
    assert not bus.has_subscribers
    unsubscribe = bus.subscribe(seen.append)
    assert bus.has_subscribers
    bus.publish(event())
    unsubscribe()
    unsubscribe()
    bus.publish(event(TaskStatus.RUNNING))
    assert len(seen) == 1
    assert not bus.has_subscribers


def test_a_subscriber_may_unsubscribe_while_an_event_is_delivered():
    bus = EventBus()
    seen: list[str] = []
    unsubscribe = None

    def once(item: TaskEvent) -> None:
        seen.append("once")
        assert unsubscribe is not None
        unsubscribe()

    unsubscribe = bus.subscribe(once)
    bus.subscribe(lambda item: seen.append("always"))
    bus.publish(event())
    bus.publish(event())
    assert seen == ["once", "always", "always"]


def test_events_are_stamped_with_an_aware_time():
    stamped = event()
    assert stamped.at.utcoffset() is not None and stamped.at.utcoffset().total_seconds() == 0
