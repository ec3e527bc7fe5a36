"""Status events: the engine publishes, orchestrators and registries subscribe."""

from __future__ import annotations

from collections.abc import Callable

from loguru import logger

from taskyard.framework.models import TaskEvent

Subscriber = Callable[[TaskEvent], None]


class EventBus:
    """A synchronous fan-out. Subscribers run on the event loop and must be quick;
    one that raises is logged and does not stop the others."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add ``subscriber``; returns a function that removes it."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subscribers)

    def publish(self, event: TaskEvent) -> None:
        for subscriber in tuple(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                logger.exception("taskyard event subscriber {} failed", subscriber)
