"""taskyard.settings: layers, environments, validation, the EngineConfig and logging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskyard.framework.errors import ConfigurationError
from taskyard.framework.events import EventBus
from taskyard.framework.models import TaskEvent, TaskStatus
from taskyard.settings import (
    BACKENDS,
    canonical_backend,
    configure_logging,
    engine_config_from_settings,
    environment_of,
    load_settings,
    redact_dsn,
    settings_as_dict,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- environments ---------------------------------------------------------------------------


def test_the_test_session_runs_in_the_testing_environment() -> None:
    settings = load_settings()
    assert environment_of(settings) == "testing"
    assert settings.task_execution.backend == "in-memory"
    assert settings.logging.enabled is False


@pytest.mark.parametrize(
    ("environment", "backend"),
    [("development", "sqlite"), ("testing", "in-memory"), ("production", "sqlite")],
)
def test_sqlite_is_the_default_backend_but_testing_keeps_in_memory(
    environment: str, backend: str
) -> None:
    settings = load_settings(environment=environment)
    assert environment_of(settings) == environment
    assert settings.task_execution.backend == backend
    assert settings.task_execution.max_concurrency == 10
    assert settings.runs.max_history == 1000


def test_environments_change_only_what_differs() -> None:
    development = load_settings(environment="development")
    production = load_settings(environment="production")
    assert development.logging.level == "INFO"  # per-task lines are DEBUG: quiet by default
    assert development.logging.serialize is False
    assert development.task_execution.sqlite_synchronous == "NORMAL"
    assert production.logging.serialize is True
    assert production.logging.level == "INFO"
    assert production.task_execution.sqlite_synchronous == "NORMAL"  # FULL is opt-in
    assert production.task_execution.lease_seconds == 30.0


def test_taskyard_env_switches_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKYARD_ENV", "production")
    assert environment_of(load_settings()) == "production"


def test_without_taskyard_env_the_environment_is_development(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TASKYARD_ENV")
    assert environment_of(load_settings()) == "development"


def test_an_explicit_environment_wins_over_taskyard_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKYARD_ENV", "production")
    settings = load_settings(environment="development")
    assert environment_of(settings) == "development"
    assert settings.logging.serialize is False  # production's would be True


def test_an_unknown_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKYARD_ENV", "prodution")
    with pytest.raises(ConfigurationError, match=r"TASKYARD_ENV = 'prodution'.*production"):
        load_settings()


def test_an_environment_defined_by_a_user_file_is_accepted(tmp_path: Path) -> None:
    staging = write(tmp_path / "staging.toml", "[staging.task_execution]\nmax_concurrency = 3\n")
    settings = load_settings(environment="staging", settings_files=[staging])
    assert settings.task_execution.max_concurrency == 3
    assert settings.task_execution.backend == "sqlite"  # [default] still applies


# -- layers ---------------------------------------------------------------------------------


def test_an_environment_variable_overrides_a_nested_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKYARD_TASK_EXECUTION__BACKEND", "queue")
    monkeypatch.setenv("TASKYARD_TASK_EXECUTION__MAX_CONCURRENCY", "20")
    monkeypatch.setenv("TASKYARD_TASK_EXECUTION__TASK_TIMEOUTS", '@json {"ResizeImage": 60}')
    te = load_settings().task_execution
    assert te.backend == "queue"
    assert te.max_concurrency == 20
    assert dict(te.task_timeouts) == {"ResizeImage": 60}
    assert te.poll_interval == 0.05  # the rest of the section is kept


def test_settings_toml_and_secrets_in_the_working_directory_are_layered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "settings.toml", "[testing.task_execution]\nmax_concurrency = 4\n")
    write(
        tmp_path / ".secrets.toml",
        '[testing.task_execution]\npostgres_dsn = "postgresql://app:s3cret@db:5432/app"\n',
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TASKYARD_SETTINGS_FILES")
    te = load_settings().task_execution
    assert te.max_concurrency == 4
    assert te.postgres_dsn == "postgresql://app:s3cret@db:5432/app"
    assert te.default_max_attempts == 3


def test_taskyard_settings_files_replaces_the_working_directory_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "settings.toml", "[testing.task_execution]\nmax_concurrency = 4\n")
    first = write(tmp_path / "a.toml", "[default.task_execution]\nmax_concurrency = 5\n")
    second = write(tmp_path / "b.toml", "[testing.runs]\nmax_history = 7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKYARD_SETTINGS_FILES", f"{first}, {second}")
    settings = load_settings()
    assert settings.task_execution.max_concurrency == 5
    assert settings.runs.max_history == 7


def test_the_working_directory_is_not_read_while_taskyard_settings_files_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "settings.toml", "[testing.task_execution]\nmax_concurrency = 4\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().task_execution.max_concurrency == 10


def test_later_files_win(tmp_path: Path) -> None:
    first = write(tmp_path / "a.toml", "[testing.task_execution]\nmax_concurrency = 5\n")
    second = write(tmp_path / "b.toml", "[testing.task_execution]\nmax_concurrency = 6\n")
    settings = load_settings(settings_files=[first, second])
    assert settings.task_execution.max_concurrency == 6


def test_a_named_settings_file_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match=r"missing\.toml"):
        load_settings(settings_files=[tmp_path / "missing.toml"])
    monkeypatch.setenv("TASKYARD_SETTINGS_FILES", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigurationError, match=r"TASKYARD_SETTINGS_FILES.*gone.toml"):
        load_settings()


def test_a_top_level_section_without_an_environment_is_refused(tmp_path: Path) -> None:
    flat = write(tmp_path / "flat.toml", '[task_execution]\nbackend = "in-memory"\n')
    with pytest.raises(ConfigurationError, match=r"\[default.task_execution\]"):
        load_settings(settings_files=[flat])


def test_overrides_change_single_keys_and_win_over_everything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKYARD_TASK_EXECUTION__MAX_CONCURRENCY", "20")
    settings = load_settings(
        overrides={
            "task_execution": {"max_concurrency": 2, "task_timeouts": {"slow": 9}},
            "runs.max_history": 5,
        }
    )
    assert settings.task_execution.max_concurrency == 2
    assert dict(settings.task_execution.task_timeouts) == {"slow": 9}
    assert settings.runs.max_history == 5
    assert settings.task_execution.lease_seconds == 30.0


def test_mode_names_are_read_in_any_case() -> None:
    settings = load_settings(
        overrides={"task_execution.sqlite_synchronous": "full", "logging.level": "warning"}
    )
    assert settings.task_execution.sqlite_synchronous == "FULL"
    assert settings.logging.level == "WARNING"


# -- validation -----------------------------------------------------------------------------


def test_a_wrong_backend_name_is_refused_naming_key_value_and_choices() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(overrides={"task_execution.backend": "redis"})
    message = str(caught.value)
    assert "task_execution.backend" in message
    assert "'redis'" in message
    for name in (*BACKENDS, "queue"):
        assert f'"{name}"' in message
    assert "TASKYARD_TASK_EXECUTION__BACKEND" in message


def test_a_wrong_backend_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKYARD_TASK_EXECUTION__BACKEND", "sqlite3")
    with pytest.raises(ConfigurationError, match=r"task_execution.backend = 'sqlite3'"):
        load_settings()


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("task_execution.max_concurrency", -1, "an integer of at least 1"),
        ("task_execution.max_concurrency", 0, "an integer of at least 1"),
        ("task_execution.max_concurrency", True, "an integer of at least 1"),
        ("task_execution.max_concurrency", 2.5, "an integer of at least 1"),
        ("task_execution.poll_interval", 0, "greater than 0"),
        ("task_execution.lease_seconds", -3.0, "greater than 0"),
        ("task_execution.default_max_attempts", 0, "an integer of at least 1"),
        ("task_execution.default_timeout_seconds", -1, "or 0 for no timeout"),
        ("task_execution.retry_jitter", 1.5, "between 0 and 1"),
        ("task_execution.retry_multiplier", 0.5, "at least 1"),
        ("task_execution.run_worker", "yes", "true or false"),
        ("task_execution.task_timeouts", {"slow": -1}, "table of task type = seconds"),
        ("task_execution.postgres_dsn", "mysql://x", "postgresql://"),
        ("runs.max_history", 0, "an integer of at least 1"),
        ("logging.level", "LOUD", "one of TRACE, DEBUG"),
    ],
)
def test_a_wrong_value_is_refused_naming_key_value_and_what_is_allowed(
    key: str, value: object, allowed: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(overrides={key: value})
    message = str(caught.value)
    assert f"{key} = {value!r}" in message
    assert allowed in message


def test_a_string_where_a_number_goes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKYARD_TASK_EXECUTION__MAX_CONCURRENCY", "ten")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "task_execution.max_concurrency = 'ten'" in str(caught.value)
    assert "an integer of at least 1" in str(caught.value)


def test_a_bad_synchronous_mode_is_refused() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(overrides={"task_execution.sqlite_synchronous": "OFF"})
    assert "task_execution.sqlite_synchronous = 'OFF'" in str(caught.value)
    assert '"NORMAL" or "FULL"' in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "bad.toml",
        "[testing.task_execution]\nmax_concurrency = -1\nretry_jitter = 3\n",
    )
    with pytest.raises(ConfigurationError) as caught:
        load_settings(settings_files=[bad])
    message = str(caught.value)
    assert "task_execution.max_concurrency = -1" in message
    assert "task_execution.retry_jitter = 3" in message


def test_a_misspelt_key_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ConfigurationError, match=r"did you mean task_execution\.max_concurrency"):
        load_settings(overrides={"task_execution.max_concurency": 3})


def test_queue_is_an_alias_of_sqlite() -> None:
    assert load_settings(overrides={"task_execution.backend": "queue"})
    assert canonical_backend("queue") == "sqlite"
    assert canonical_backend("sqlite-with-fallback") == "sqlite-with-fallback"
    with pytest.raises(ConfigurationError, match=r"task_execution\.backend = 'redis'"):
        canonical_backend("redis")


# -- reading --------------------------------------------------------------------------------


def test_settings_as_dict_has_lower_case_keys_and_keeps_application_sections(
    tmp_path: Path,
) -> None:
    app = write(tmp_path / "app.toml", "[default.reports]\nRows = 3\n")
    data = settings_as_dict(load_settings(settings_files=[app]))
    assert set(data) == {
        "task_execution",
        "runs",
        "logging",
        "operations",
        "maintenance",
        "concurrency_limits",
        "dashboard",
        "reports",
    }
    assert data["task_execution"]["backend"] == "in-memory"
    assert data["reports"] == {"Rows": 3}
    assert json.loads(json.dumps(data)) == data  # plain values only


def test_engine_config_follows_the_task_execution_section() -> None:
    settings = load_settings(
        overrides={
            "task_execution": {
                "max_concurrency": 7,
                "run_worker": False,
                "default_timeout_seconds": 0,
                "task_timeouts": {"ResizeImage": 12},
                "retry_initial_delay": 0.25,
                "retry_multiplier": 3,
                "retry_max_delay": 9,
                "retry_jitter": 0,
                "shutdown_timeout": 4,
            }
        }
    )
    config = engine_config_from_settings(settings_as_dict(settings)["task_execution"])
    assert config.concurrency == 7
    assert config.run_worker is False
    assert config.default_timeout is None
    assert dict(config.task_timeouts) == {"ResizeImage": 12.0}
    assert config.retry.initial == 0.25
    assert config.retry.multiplier == 3.0
    assert config.retry.max_delay == 9.0
    assert config.retry.jitter == 0.0
    assert config.shutdown_timeout == 4.0
    assert config.poll_interval == 0.05
    assert config.default_max_attempts == 3


def test_engine_config_refuses_an_incomplete_section() -> None:
    section = settings_as_dict(load_settings())["task_execution"]
    del section["lease_seconds"]
    with pytest.raises(ConfigurationError, match=r"task_execution\.lease_seconds is missing"):
        engine_config_from_settings(section)
    section = settings_as_dict(load_settings())["task_execution"]
    section["max_concurrency"] = 0
    with pytest.raises(ConfigurationError, match="concurrency"):
        engine_config_from_settings(section)


def test_redact_dsn_hides_only_the_password() -> None:
    assert redact_dsn("postgresql://app:s3cret@db:5432/app") == "postgresql://app:***@db:5432/app"
    assert redact_dsn("postgresql://127.0.0.1:5432/test") == "postgresql://127.0.0.1:5432/test"
    assert redact_dsn("postgresql://app@db/app?password=s3cret&sslmode=require") == (
        "postgresql://app@db/app?password=***&sslmode=require"
    )
    assert redact_dsn("host=db user=app password=s3cret") == "host=db user=app password=***"


# -- logging --------------------------------------------------------------------------------


@pytest.fixture
def silence_afterwards():
    yield
    configure_logging({"logging": {"enabled": False}})


def emit_taskyard_warning() -> None:
    """Make taskyard itself log: an event subscriber that raises is logged by the bus."""

    def broken(event: TaskEvent) -> None:
        raise RuntimeError("subscriber broke")

    bus = EventBus()
    bus.subscribe(broken)
    bus.publish(TaskEvent(task_id="t1", type="demo", status=TaskStatus.QUEUED, attempts=0))


@pytest.mark.usefixtures("silence_afterwards")
def test_configure_logging_sends_taskyard_records_to_the_sink(tmp_path: Path) -> None:
    log = tmp_path / "taskyard.log"
    settings = load_settings(
        overrides={"logging": {"enabled": True, "sink": str(log), "serialize": True}}
    )
    assert len(configure_logging(settings)) == 1
    emit_taskyard_warning()
    configure_logging({"logging": {"enabled": False}})  # closes the file
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [r["record"]["name"] for r in records] == ["taskyard.framework.events"]
    assert "subscriber" in records[0]["record"]["message"]


@pytest.mark.usefixtures("silence_afterwards")
def test_configure_logging_respects_the_level_and_can_switch_off(tmp_path: Path) -> None:
    log = tmp_path / "taskyard.log"
    quiet = {"logging": {"enabled": True, "sink": str(log), "level": "CRITICAL"}}
    configure_logging(quiet)
    emit_taskyard_warning()
    assert configure_logging({"logging": {"enabled": False}}) == []
    emit_taskyard_warning()
    assert not log.exists()  # nothing was written, so the file was never created


def test_postgres_dsn_is_needed_only_by_the_postgres_backend() -> None:
    assert load_settings().task_execution.postgres_dsn == ""  # no backend here needs one
    with pytest.raises(
        ConfigurationError, match=r"task_execution\.postgres_dsn is empty"
    ) as caught:
        load_settings(overrides={"task_execution.backend": "postgres"})
    assert "TASKYARD_TASK_EXECUTION__POSTGRES_DSN" in str(caught.value)
    with pytest.raises(ConfigurationError, match="postgres_dsn is empty"):
        load_settings(overrides={"task_execution.canary_backend": "postgres"})
    chosen = load_settings(
        overrides={
            "task_execution.backend": "postgres",
            "task_execution.postgres_dsn": "postgresql://db/app",
        }
    )
    assert chosen.task_execution.postgres_dsn == "postgresql://db/app"


# -- misspelt variables, sections and environments (issue 9, item 4) ---------------------------


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        ("TASKYARD_TASK_EXECUTION__BACKNED", "TASKYARD_TASK_EXECUTION__BACKEND"),
        ("TASKYARD_TASK_EXECUTION__MAX_CONCURENCY", "TASKYARD_TASK_EXECUTION__MAX_CONCURRENCY"),
        ("TASKYARD_TASK_EXECUTON__BACKEND", "TASKYARD_TASK_EXECUTION__BACKEND"),
        ("TASKYARD_TASK_EXECUTION_BACKEND", "TASKYARD_TASK_EXECUTION__BACKEND"),
        ("TASKYARD_EVN", "TASKYARD_ENV"),
    ],
)
def test_a_misspelt_environment_variable_is_refused_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, variable: str, suggestion: str
) -> None:
    monkeypatch.setenv(variable, "in-memory")
    with pytest.raises(ConfigurationError, match=f"did you mean {suggestion}") as refused:
        load_settings(environment="development", settings_files=[])
    assert variable in str(refused.value)


def test_variables_of_the_application_s_own_sections_and_other_tools_pass(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    own = tmp_path / "settings.toml"
    own.write_text("[default.reports]\nrows = 10\n[development.task_execution]\nprefetch = 1\n")
    monkeypatch.setenv("TASKYARD_REPORTS__ROWS", "20")
    monkeypatch.setenv("TASKYARD_TEST_EXEC_LOG", "/tmp/x.log")  # no taskyard name alike
    settings = load_settings(environment="development", settings_files=[own])
    assert settings.task_execution.prefetch == 1


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[development.task_exec]\nbackend = 'in-memory'\n",
            r"did you mean \[development\.task_execution\]",
        ),
        ("[developmnet.task_execution]\nbackend = 'in-memory'\n", r"did you mean \[development\]"),
        ("[default.task_execution]\nbackend = 'in_memory'\n", 'did you mean "in-memory"'),
    ],
)
def test_a_misspelt_section_environment_or_backend_is_refused_with_a_suggestion(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(toml)
    with pytest.raises(ConfigurationError, match=message):
        load_settings(environment="development", settings_files=[path])


def test_an_environment_of_one_s_own_unlike_the_standard_names_is_accepted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(
        "[staging.task_execution]\nbackend = 'in-memory'\n[production-eu.runs]\nmax_history = 5\n"
    )
    settings = load_settings(environment="staging", settings_files=[path])
    assert settings.task_execution.backend == "in-memory"


# -- periodic schedules ----------------------------------------------------------------------


def test_schedule_tables_are_read_with_their_payload_keys_as_written(tmp_path: Path) -> None:
    from taskyard.settings import schedules_from_settings

    path = write(
        tmp_path / "settings.toml",
        "[default.schedules.nightly_report]\n"
        'cron = "0 3 * * *"\n'
        'task_type = "report"\n'
        'timezone = "Europe/Berlin"\n'
        'missed = "once"\n'
        'payload = { Format = "pdf", recipients = ["ops"] }\n'
        "[testing.schedules.heartbeat]\n"
        "every = 30\n"
        'task_type = "ping"\n',
    )
    [heartbeat, nightly] = sorted(
        schedules_from_settings(load_settings(settings_files=[path])), key=lambda s: s.name
    )
    assert nightly.name == "nightly_report" and nightly.cron == "0 3 * * *"
    assert nightly.timezone == "Europe/Berlin" and nightly.missed == "once"
    assert nightly.payload == {"Format": "pdf", "recipients": ["ops"]}
    assert heartbeat.every == 30.0 and heartbeat.task_type == "ping"


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('cron = "0 3 * *"\ntask_type = "r"\n', "schedules.bad: schedule 'bad': cron"),
        ('cron = "0 3 * * *"\ntask_type = "r"\nmised = "all"\n', "unknown key(s) mised"),
        ('every = 5\ntask_type = "r"\ntimezone = "Berlin"\n', "not an IANA zone"),
        ("every = 5\n", "task_type is missing"),
    ],
)
def test_a_bad_schedule_table_is_refused_at_start_up(tmp_path: Path, table: str, says: str) -> None:
    path = write(tmp_path / "settings.toml", "[default.schedules.bad]\n" + table)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(settings_files=[path])
    assert says in str(caught.value)
