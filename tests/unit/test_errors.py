"""The error tree: one root, drawn in the module docstring, docstrings as default messages;
control flow (Retry, PermanentFailure) outside the tree."""

import inspect
import re
from datetime import timedelta

import pytest

import taskyard
from taskyard.framework import errors
from taskyard.framework.errors import PermanentFailure, Retry, TaskyardError

CONTROL_FLOW = {Retry, PermanentFailure}
ERRORS = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, BaseException)
    and cls.__module__ == errors.__name__
    and cls not in CONTROL_FLOW
]


def drawn_tree() -> dict[str, str]:
    """Each class drawn in the errors module docstring -> the class drawn as its parent."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z][A-Za-z]+)(\s|$)", line.rstrip())
        if not match or not hasattr(errors, match["name"]):
            continue
        depth = len(match["indent"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[match["name"]] = stack[-1][1]
        stack.append((depth, match["name"]))
    return parents


def test_the_module_defines_a_tree_worth_checking():
    assert len(ERRORS) >= 15
    assert TaskyardError in ERRORS


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_every_error_derives_from_the_root(cls):
    assert issubclass(cls, TaskyardError)
    assert issubclass(cls, Exception)


@pytest.mark.parametrize("cls", sorted(CONTROL_FLOW, key=lambda c: c.__name__))
def test_control_flow_is_not_an_error(cls):
    assert issubclass(cls, Exception)
    assert not issubclass(cls, TaskyardError)


def test_the_drawn_tree_matches_the_classes():
    parents = drawn_tree()
    drawn = set(parents) | {"TaskyardError"}
    assert drawn == {cls.__name__ for cls in ERRORS}, "a class is missing from the drawing"
    for name, parent in parents.items():
        assert getattr(errors, name).__bases__ == (getattr(errors, parent),), name


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_the_docstring_is_the_default_message(cls):
    assert cls.__doc__ and cls.__doc__.strip()
    assert str(cls()) == cls.__doc__.strip()
    assert str(cls("something specific")) == "something specific"


def test_errors_can_be_caught_by_family():
    with pytest.raises(errors.SchedulingError):
        raise errors.PayloadError("payload['x'] is a set")
    with pytest.raises(errors.StoreUnavailable):
        raise errors.StoreFull()
    with pytest.raises(errors.ConfigurationError):
        raise errors.BackendNotAvailable()


def test_retry_takes_seconds_or_a_timedelta():
    assert Retry().delay == 0.0 and str(Retry()) == "retry requested"
    assert Retry("later", delay=1.5).delay == 1.5
    assert Retry(delay=timedelta(milliseconds=250)).delay == 0.25
    assert str(Retry("rate limited", delay=3)) == "rate limited"


@pytest.mark.parametrize("delay", [-1, timedelta(seconds=-0.1)])
def test_retry_refuses_a_negative_delay(delay):
    with pytest.raises(ValueError, match="negative"):
        Retry(delay=delay)


def test_the_errors_are_exported_from_the_package():
    for name in ("TaskyardError", "SchedulingError", "PayloadError", "Retry", "PermanentFailure"):
        assert getattr(taskyard, name) is getattr(errors, name)
