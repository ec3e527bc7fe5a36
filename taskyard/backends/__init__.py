"""Backends: each one a TaskStore and the engine over it. Imports framework only.

Optional drivers are imported only when their backend is chosen.
"""

from taskyard.backends.memory import InMemoryStore, InMemoryTaskManager

__all__ = ["InMemoryStore", "InMemoryTaskManager"]
