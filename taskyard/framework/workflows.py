"""Workflows and concurrency keys: the rules, written once for every store.

**Dependencies.** A task scheduled with ``depends_on=[id, ...]`` is ``waiting`` until
each of those tasks has finished. The store keeps the edges and, in the same
transaction that finishes a task (an outcome, a cancel, a lease expiring into
``failed``), settles that task's dependents with :func:`settles`:

- a dependent whose policy is ``"cancel"`` (the default) is cancelled when the
  dependency ended ``failed`` or ``cancelled``; its own dependents then settle the same
  way (the cascade);
- otherwise its count of unfinished dependencies goes down by one, and at zero it
  becomes ``queued``.

Each release costs one indexed read of the finished task's dependents and one write
per dependent: finishing one member of a 5,000-member group touches one row, and the
group's callback is released by the member that finishes last, exactly once, because
the count lives in the store and changes inside the finishing transaction.

A task may depend only on tasks the store already holds, or on tasks listed earlier in
the same ``schedule_many`` batch, so no cycle can ever be formed; the store refuses an
unknown id (:class:`~taskyard.framework.errors.DependencyError`) and stores nothing.

**Concurrency keys.** Tasks scheduled with the same ``concurrency_key`` run at most
:func:`concurrency_limit` at once, counted by the store inside its claim statement, so
the limit holds across processes and machines; tasks over the limit stay queued and
tasks of other keys are claimed past them.

**Shapes.** :func:`chain`, :func:`group` and :func:`chord` build workflows out of
steps; :func:`expand` turns one into ``schedule_many`` requests whose last task's id
names the workflow (see :class:`~taskyard.framework.orchestrator.TaskOrchestrator`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from taskyard.framework.errors import DependencyError, InvalidTaskOptions
from taskyard.framework.models import TaskRecord, TaskStatus, new_task_id, shown

CANCEL = "cancel"
RUN = "run"
DEPENDENCY_POLICIES = (CANCEL, RUN)
"""What a waiting task does when a dependency ends failed or cancelled."""

DEFAULT_CONCURRENCY_LIMIT = 1
"""A concurrency key no setting names runs one task at a time."""

JOIN_TASK_TYPE = "taskyard.group"
"""The built-in task that closes a group: its result is the list of its members'
results, in the order the group lists them. Every engine registers it."""

MAX_DEPENDENCIES = 10_000
"""The most dependencies one task may have (a group's join has one per member)."""


# -- the rules -------------------------------------------------------------------------------


def settles(parent_status: TaskStatus, policy: str) -> TaskStatus | None:
    """What finishing a dependency with ``parent_status`` does to a waiting dependent with
    ``policy``: CANCELLED (cancel it now, cascading), or None (count the dependency as
    done; the dependent is queued once none is left)."""
    if policy == CANCEL and parent_status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        return TaskStatus.CANCELLED
    return None


def cancelled_because(parent_id: str, parent_status: TaskStatus) -> str:
    """The error a dependent cancelled by the cascade keeps."""
    return f"dependency {parent_id} ended {parent_status}"


def concurrency_limit(task_type: str, key: str, limits: Mapping[str, int]) -> int:
    """How many tasks with ``key`` may run at once: the limit of the longest (non-empty)
    name in ``limits`` that ``key`` starts with, else the limit named by ``task_type``,
    else the limit named ``""`` (a default for every key), else
    :data:`DEFAULT_CONCURRENCY_LIMIT`. Stores compute exactly this inside their claim."""
    best: str | None = None
    for name in limits:
        if name and key.startswith(name) and (best is None or len(name) > len(best)):
            best = name
    if best is not None:
        return limits[best]
    if task_type in limits:
        return limits[task_type]
    return limits.get("", DEFAULT_CONCURRENCY_LIMIT)


def check_limits(limits: Mapping[str, Any], where: str = "concurrency_limits") -> dict[str, int]:
    """``limits`` as a plain dict, or InvalidTaskOptions naming the bad entry."""
    checked: dict[str, int] = {}
    for name, value in limits.items():
        if not isinstance(name, str):
            raise InvalidTaskOptions(f"{where} has the key {shown(name)}; keys must be str")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidTaskOptions(
                f"{where}[{name!r}] = {shown(value)}; a limit is an integer of at least 1"
            )
        checked[name] = value
    return checked


def check_batch(records: Sequence[TaskRecord]) -> None:
    """Refuse, before the store sees them, dependencies that could form a cycle: a task
    depending on itself, or on a task listed later in the same batch."""
    if not any(record.depends_on for record in records):
        return  # the common case, without indexing the batch
    later = {record.id: index for index, record in enumerate(records)}
    for index, record in enumerate(records):
        for parent in record.depends_on:
            if parent == record.id:
                raise DependencyError(f"task {record.id} depends on itself: that is a cycle")
            if later.get(parent, -1) > index:
                raise DependencyError(
                    f"task {record.id} depends on {parent}, which comes later in the same "
                    "batch; list every task after the tasks it depends on (this also rules "
                    "out cycles)"
                )


def check_dependency_options(
    depends_on: Iterable[str] | None, on_dependency_failure: str, concurrency_key: str | None
) -> tuple[str, ...]:
    """The dependencies as a tuple without repeats, or InvalidTaskOptions."""
    if on_dependency_failure not in DEPENDENCY_POLICIES:
        raise InvalidTaskOptions(
            f"on_dependency_failure must be 'cancel' or 'run', not {shown(on_dependency_failure)}"
        )
    if concurrency_key is not None and (
        not isinstance(concurrency_key, str) or not concurrency_key
    ):
        raise InvalidTaskOptions(
            f"concurrency_key must be a non-empty str, not {shown(concurrency_key)}"
        )
    if depends_on is None:
        return ()
    if isinstance(depends_on, str | bytes):
        raise InvalidTaskOptions(
            f"depends_on must be a list of task ids, not the single value {shown(depends_on)}"
        )
    parents: dict[str, None] = {}
    for parent in depends_on:
        if not isinstance(parent, str) or not parent:
            raise InvalidTaskOptions(
                f"depends_on holds {shown(parent)}; each entry must be a task id (a str)"
            )
        parents[parent] = None
    if len(parents) > MAX_DEPENDENCIES:
        raise InvalidTaskOptions(
            f"depends_on names {len(parents)} tasks, more than the {MAX_DEPENDENCIES} allowed; "
            "depend on a group instead (its one task closes all of its members)"
        )
    return tuple(parents)


# -- what a handler may ask for ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler that declares a second parameter receives beside the payload."""

    task_id: str
    task_type: str
    attempt: int
    """1 on the first attempt."""
    dependency_results: Mapping[str, Any] = field(default_factory=dict)
    """The result of each task this one depends on, by id."""
    schedule_slot: datetime | None = None
    """The slot a periodic schedule fired this task for, when one did."""
    workflow_id: str | None = None

    @property
    def previous(self) -> Any:
        """The result of the one dependency (a chain's previous step, a chord's group);
        None when there is none. With several, use :attr:`dependency_results`."""
        if len(self.dependency_results) != 1:
            if not self.dependency_results:
                return None
            raise ValueError(
                f"task {self.task_id} has {len(self.dependency_results)} dependencies; "
                "read context.dependency_results"
            )
        return next(iter(self.dependency_results.values()))


async def join_results(payload: dict[str, Any], context: TaskContext) -> list[Any]:
    """The handler of :data:`JOIN_TASK_TYPE`: the members' results, in group order."""
    members: list[str] = payload["members"]
    return [context.dependency_results.get(member) for member in members]


# -- shapes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One task of a workflow: ``schedule_task``'s arguments."""

    task_type: str
    payload: Any = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chain:
    """Steps one after another; each receives the previous one's result
    (``context.previous``)."""

    parts: tuple[Shape, ...]


@dataclass(frozen=True)
class Group:
    """Steps in parallel; the group's result is the list of their results."""

    parts: tuple[Shape, ...]
    options: Mapping[str, Any] = field(default_factory=dict)


Shape = Step | Chain | Group
StepLike = Shape | tuple[str, Any] | tuple[str, Any, Mapping[str, Any]]


def step(task_type: str, payload: Any = None, **options: Any) -> Step:
    """A workflow step: a task type, its payload and ``schedule_task`` options."""
    return Step(task_type, payload, options)


def _shape(part: Any) -> Shape:
    if isinstance(part, Step | Chain | Group):
        return part
    if isinstance(part, tuple) and len(part) in (2, 3) and isinstance(part[0], str):
        options = part[2] if len(part) == 3 else {}
        if not isinstance(options, Mapping):
            raise InvalidTaskOptions(f"a step's options must be a dict, not {shown(options)}")
        return Step(part[0], part[1], dict(options))
    raise InvalidTaskOptions(
        f"a workflow part must be step(...), a (task_type, payload) tuple, chain(...) or "
        f"group(...), not {shown(part)}"
    )


def chain(*parts: StepLike) -> Chain:
    """Run ``parts`` one after another."""
    if not parts:
        raise InvalidTaskOptions("a chain needs at least one step")
    return Chain(tuple(_shape(part) for part in parts))


def group(*parts: StepLike, **options: Any) -> Group:
    """Run ``parts`` in parallel; ``options`` go to the task that closes the group."""
    if not parts:
        raise InvalidTaskOptions("a group needs at least one step")
    return Group(tuple(_shape(part) for part in parts), dict(options))


def chord(header: Group | Sequence[StepLike], callback: StepLike) -> Chain:
    """Run the group ``header``, then ``callback`` with the list of its results
    (``context.previous``)."""
    if not isinstance(header, Group):
        header = group(*header)
    return chain(header, callback)


_RESERVED = frozenset({"task_id", "depends_on", "workflow_id"})


def expand(shape: Shape | StepLike) -> tuple[list[dict[str, Any]], str]:
    """``schedule_many`` requests for ``shape`` (each task listed after those it depends
    on) and the id of its last task, which names the workflow."""
    requests: list[dict[str, Any]] = []

    def add(part: Shape, after: tuple[str, ...]) -> str:
        if isinstance(part, Step):
            clash = _RESERVED & set(part.options)
            if clash:
                raise InvalidTaskOptions(
                    f"a workflow step cannot set {', '.join(sorted(clash))}: the workflow "
                    "chooses ids and dependencies"
                )
            task_id = new_task_id()
            requests.append(
                {
                    **part.options,
                    "task_type": part.task_type,
                    "payload": part.payload,
                    "task_id": task_id,
                    "depends_on": after,
                }
            )
            return task_id
        if isinstance(part, Chain):
            for inner in part.parts:
                after = (add(inner, after),)
            return after[0]
        members = [add(inner, after) for inner in part.parts]
        return add(Step(JOIN_TASK_TYPE, {"members": members}, part.options), tuple(members))

    last = add(_shape(shape), ())
    for request in requests:
        request["workflow_id"] = last
    return requests, last


class _Scheduler(Protocol):
    async def schedule_many(self, requests: Sequence[Mapping[str, Any]]) -> list[str]: ...


async def schedule_workflow(manager: _Scheduler, shape: Shape | StepLike) -> str:
    """Schedule every task of ``shape`` in one store write (all or nothing) and return the
    workflow's id: the id of its last task, which ``wait_for`` follows."""
    requests, last = expand(shape)
    await manager.schedule_many(requests)
    return last
