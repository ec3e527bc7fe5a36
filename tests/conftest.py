"""Session-wide isolation from the developer's environment.

Every ``TASKYARD_*`` variable is removed, ``TASKYARD_ENV`` is forced to ``testing`` and
``TASKYARD_SETTINGS_FILES`` is set empty (so a ``settings.toml`` in the working
directory is not read), once at import and again around every test: a test that
changes them with ``monkeypatch`` gets them back afterwards.

Backend fixtures live with the tests that use them (``tests/contract/``), not here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping

import pytest

ISOLATED_ENVIRONMENT = {"TASKYARD_ENV": "testing", "TASKYARD_SETTINGS_FILES": ""}


def _isolate(environ: MutableMapping[str, str]) -> None:
    for name in [name for name in environ if name.startswith("TASKYARD_")]:
        del environ[name]
    environ.update(ISOLATED_ENVIRONMENT)


_isolate(os.environ)


@pytest.fixture(autouse=True)
def _taskyard_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    # Relative paths in the settings (queue_db_path = "taskyard.db") land in a scratch
    # folder, never in the checkout.
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    for name in [name for name in os.environ if name.startswith("TASKYARD_")]:
        monkeypatch.delenv(name)
    for name, value in ISOLATED_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    yield
