"""Every name a public __all__ lists exists, and the lists hold no duplicates."""

import importlib

import pytest

PACKAGES = ["taskyard", "taskyard.framework", "taskyard.backends", "taskyard.testing"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist(name):
    module = importlib.import_module(name)
    missing = [member for member in module.__all__ if not hasattr(module, member)]
    assert missing == []


@pytest.mark.parametrize("name", PACKAGES)
def test_all_has_no_duplicates_and_is_sorted(name):
    exported = importlib.import_module(name).__all__
    assert len(exported) == len(set(exported))
    assert list(exported) == sorted(exported)


def test_top_level_names_are_the_framework_objects():
    import taskyard
    import taskyard.framework

    for member in taskyard.__all__:
        if member != "__version__":
            assert getattr(taskyard, member) is getattr(taskyard.framework, member)
    assert isinstance(taskyard.__version__, str) and taskyard.__version__


def test_the_contract_suite_is_not_collected_by_itself():
    from taskyard.testing import TaskManagerContract

    assert not TaskManagerContract.__name__.startswith("Test")
