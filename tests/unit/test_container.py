"""taskyard.providers.Container: the settings choose, tests override, nothing is patched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers

from taskyard.backends.fallback import FallbackStore
from taskyard.backends.memory import InMemoryStore
from taskyard.backends.sqlite import SqliteStore
from taskyard.framework.engine import TaskEngine
from taskyard.framework.errors import ConfigurationError
from taskyard.framework.events import EventBus
from taskyard.framework.orchestrator import TaskOrchestrator
from taskyard.framework.runs import Run, RunRegistry, RunStatus
from taskyard.providers import Container
from taskyard.settings import load_settings


def test_by_default_the_container_builds_the_in_memory_manager() -> None:
    container = Container()
    assert container.config.task_execution.backend() == "in-memory"
    assert container.backend() == "in-memory"
    manager = container.task_manager()
    assert isinstance(manager, TaskEngine) and isinstance(manager.store, InMemoryStore)
    assert container.task_manager() is manager  # one manager per container


def test_the_manager_shares_the_containers_config_registry_and_events() -> None:
    container = Container()
    manager = container.task_manager()
    assert manager.config == container.engine_config()
    assert manager.config.poll_interval == 0.05  # the testing environment
    assert manager.registry is container.registry()
    assert manager.events is container.events()


def test_without_arguments_the_settings_come_from_taskyard_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKYARD_ENV", "production")
    container = Container()
    assert container.config.logging.serialize() is True
    assert container.engine_config().poll_interval == 0.5


def test_taskyard_env_testing_is_the_test_sessions_environment() -> None:
    container = Container()
    assert container.settings().current_env.lower() == "testing"
    assert container.config.logging.enabled() is False


def test_an_environment_variable_selects_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKYARD_TASK_EXECUTION__BACKEND", "postgres")
    monkeypatch.setenv("TASKYARD_TASK_EXECUTION__POSTGRES_DSN", "postgresql://127.0.0.1:5432/test")
    monkeypatch.setenv("TASKYARD_RUNS__KEEP_IN_DATABASE", "false")
    container = Container()
    assert container.backend() == "postgres"
    assert type(container.task_manager().store).__name__ == "PostgresStore"


def test_an_environment_variable_sets_the_engine_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKYARD_TASK_EXECUTION__MAX_CONCURRENCY", "3")
    monkeypatch.setenv("TASKYARD_TASK_EXECUTION__DEFAULT_TIMEOUT_SECONDS", "0")
    config = Container().engine_config()
    assert config.concurrency == 3
    assert config.default_timeout is None


def test_runs_settings_reach_the_registry(tmp_path: Path) -> None:
    history = tmp_path / "runs.json"
    container = Container(
        settings=load_settings(overrides={"runs": {"history_file": str(history)}})
    )
    registry = container.registry()
    assert isinstance(registry, RunRegistry)
    registry.add_run(Run(module_id="m"))
    assert history.is_file()


@pytest.mark.parametrize(
    ("backend", "fallback", "store_type"),
    [
        ("sqlite", False, SqliteStore),
        ("queue", False, SqliteStore),
        ("sqlite", True, FallbackStore),
        ("queue", True, FallbackStore),
        ("sqlite-with-fallback", False, FallbackStore),
    ],
)
def test_the_sqlite_backends_are_selected_by_name_and_fallback_flag(
    backend: str, fallback: bool, store_type: type, tmp_path: Path
) -> None:
    settings = load_settings(
        overrides={
            "task_execution.backend": backend,
            "task_execution.queue_fallback_enabled": fallback,
            "task_execution.queue_db_path": str(tmp_path / "q.db"),
        }
    )
    container = Container(settings=settings)
    manager = container.task_manager()
    assert type(manager) is TaskEngine  # one engine, over the store the settings select
    store = manager.store
    assert type(store) is store_type and container.store() is store
    sqlite = store.primary if isinstance(store, FallbackStore) else store
    assert sqlite.path == tmp_path / "q.db"
    assert container.orchestrator().task_manager is manager
    registry = container.registry()
    assert registry is manager.registry  # runs live in the same database


def test_postgres_is_wired_from_the_settings_and_never_shows_the_password() -> None:
    from taskyard.backends.postgres import PostgresStore

    container = Container(
        settings=load_settings(
            overrides={
                "task_execution.backend": "postgres",
                "task_execution.postgres_dsn": "postgresql://app:hunter2@db.internal:5433/jobs",
                "task_execution.postgres_schema": "queue_a",
                "task_execution.postgres_pool_size": 3,
                "runs.keep_in_database": False,
            }
        )
    )
    assert container.backend() == "postgres"
    store = container.orchestrator().task_manager.store
    assert isinstance(store, PostgresStore)
    assert (store.schema, store.pool_size) == ("queue_a", 3)
    assert "hunter2" not in repr(store) and "hunter2" not in store.where
    assert "app:***@db.internal:5433/jobs" in store.where
    assert isinstance(container.ops_store(), PostgresStore)  # the operations tools' store


def test_a_wrong_backend_name_fails_when_the_container_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKYARD_TASK_EXECUTION__BACKEND", "redis")
    with pytest.raises(ConfigurationError, match=r"task_execution.backend = 'redis'"):
        Container()


def test_a_wrong_number_fails_when_the_container_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKYARD_TASK_EXECUTION__MAX_CONCURRENCY", "-4")
    with pytest.raises(ConfigurationError, match=r"task_execution.max_concurrency = -4"):
        Container()


def test_a_wrong_backend_name_put_in_by_an_override_still_names_the_key() -> None:
    container = Container()
    with (
        container.config.task_execution.backend.override("redis"),
        pytest.raises(ConfigurationError, match=r"task_execution.backend = 'redis'"),
    ):
        container.task_manager()


def test_config_option_overrides_select_the_backend_and_are_undone() -> None:
    container = Container()
    with (
        container.config.task_execution.backend.override("postgres"),
        container.config.runs.keep_in_database.override(False),
    ):
        assert type(container.store()).__name__ == "PostgresStore"
    container.store.reset()  # a singleton: made again from the settings as they are now
    assert isinstance(container.task_manager().store, InMemoryStore)


def test_config_option_overrides_reach_the_engine_config() -> None:
    container = Container()
    with container.config.task_execution.max_concurrency.override(2):
        assert container.engine_config().concurrency == 2


def test_the_manager_can_be_replaced_by_a_fake_and_the_orchestrator_receives_it() -> None:
    container = Container()
    fake = FakeTaskManager()
    with container.task_manager.override(providers.Object(fake)):
        orchestrator = container.orchestrator()
    assert isinstance(orchestrator, TaskOrchestrator)
    assert orchestrator.task_manager is fake
    assert orchestrator.registry is container.registry()


def test_the_store_can_be_replaced_by_an_in_memory_one() -> None:
    container = Container(settings=load_settings(overrides={"task_execution.backend": "sqlite"}))
    stand_in = InMemoryStore()
    with container.store.override(providers.Object(stand_in)):
        assert container.orchestrator().task_manager.store is stand_in


def test_providers_can_be_overridden_when_the_container_is_built() -> None:
    registry = RunRegistry()
    container = Container(registry=providers.Object(registry))
    assert container.task_manager().registry is registry
    assert container.orchestrator().registry is registry


async def test_the_orchestrator_runs_a_task_on_the_selected_manager() -> None:
    container = Container()
    manager = container.task_manager()

    async def double(payload: dict[str, Any]) -> int:
        return int(payload["n"]) * 2

    await manager.register_task("double", double)
    await container.init_resources()
    try:
        assert manager.started
        orchestrator = container.orchestrator()
        run = await orchestrator.submit("maths", "double", {"n": 21})
        finished = await orchestrator.wait_for_run(run.run_id, timeout=10)
        status = await manager.get_task_status(run.run_id)
    finally:
        await container.shutdown_resources()
    assert finished.status is RunStatus.COMPLETED
    assert finished.exit_code == 0
    assert status is not None
    assert status["result"] == 42
    assert not manager.started


class FakeTaskManager:
    """Just enough of a manager for wiring tests: it records what it is asked."""

    def __init__(self) -> None:
        self.events = EventBus()
        self.scheduled: list[tuple[str, Any]] = []

    async def schedule_task(self, task_type: str, payload: Any = None, **options: Any) -> str:
        self.scheduled.append((task_type, payload))
        return str(options.get("task_id", "fake"))


async def test_the_orchestrator_schedules_through_the_injected_fake() -> None:
    container = Container()
    fake = FakeTaskManager()
    with container.task_manager.override(providers.Object(fake)):
        run = await container.orchestrator().submit("reports", "build", {"name": "q3"})
    assert fake.scheduled == [("build", {"name": "q3"})]
    assert container.registry().get_run(run.run_id) is run
    assert run.status is RunStatus.QUEUED


def test_concurrency_limits_reach_the_engine_config_with_their_case_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text(
        '[testing.concurrency_limits]\n"sync_customer" = 1\n"Tenant-" = 4\n', encoding="utf-8"
    )
    monkeypatch.setenv("TASKYARD_SETTINGS_FILES", str(settings))
    limits = Container().engine_config().concurrency_limits
    assert dict(limits) == {"sync_customer": 1, "Tenant-": 4}
    assert (
        dict(
            Container(settings=load_settings(settings_files=[])).engine_config().concurrency_limits
        )
        == {}
    )


@pytest.mark.parametrize("limits", ['{"sync_customer": 0}', '{"sync_customer": "one"}'])
def test_a_bad_concurrency_limit_is_refused_naming_the_table(
    monkeypatch: pytest.MonkeyPatch, limits: str
) -> None:
    monkeypatch.setenv("TASKYARD_CONCURRENCY_LIMITS", f"@json {limits}")
    with pytest.raises(ConfigurationError, match=r"concurrency_limits = .*at least 1"):
        Container()
