"""Loading taskyard's settings: the Dynaconf layers, the files, the environment, and the
checks that run before anything starts."""

from __future__ import annotations

import codecs
import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dynaconf import Dynaconf, ValidationError

from taskyard.framework.errors import ConfigurationError
from taskyard.settings.conversion import SECTIONS
from taskyard.settings.validators import (
    ENVVAR_PREFIX,
    VALIDATORS,
    _upper,
    required_for_backend,
)

DEFAULT_SETTINGS_FILE = Path(__file__).with_name("default_settings.toml")
ENV_SWITCHER = "TASKYARD_ENV"
SETTINGS_FILES_ENVVAR = "TASKYARD_SETTINGS_FILES"
DEFAULT_ENVIRONMENT = "development"
ENVIRONMENTS = ("development", "testing", "production")
LOCAL_SETTINGS_FILE = "settings.local.toml"
"""Read last from the working directory: the file ``taskyard rollback`` writes."""
USER_SETTINGS_FILES = ("settings.toml", ".secrets.toml", LOCAL_SETTINGS_FILE)

# Dynaconf replaces its whole file list with the files named by the variable called
# ENVVAR_FOR_DYNACONF (SETTINGS_FILE_FOR_DYNACONF by default) when it is set. taskyard
# reads TASKYARD_SETTINGS_FILES itself, so it points Dynaconf at a name nobody sets.
_UNUSED_DYNACONF_ENVVAR = "TASKYARD_INTERNAL_DYNACONF_SETTINGS_FILE"


# -- loading --------------------------------------------------------------------------------


def load_settings(
    *,
    environment: str | None = None,
    settings_files: Sequence[str | os.PathLike[str]] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Dynaconf:
    """Load and validate taskyard's settings; see the module docstring for the layers.

    ``environment`` wins over ``TASKYARD_ENV``. ``settings_files`` replaces the files of
    the working directory and ``TASKYARD_SETTINGS_FILES``; every file named explicitly
    must exist. ``overrides`` is a mapping of nested tables or dotted keys
    (``{"task_execution.backend": "in-memory"}``) applied last.

    Raises ConfigurationError for a missing file, an unknown environment, an unknown
    key in taskyard's sections, or a bad value.
    """
    files = _user_files(settings_files)
    chosen_by = ENV_SWITCHER if not environment and os.environ.get(ENV_SWITCHER) else ""
    env = (environment or os.environ.get(ENV_SWITCHER) or DEFAULT_ENVIRONMENT).strip().lower()
    _check_environment(env, files, chosen_by)
    settings = Dynaconf(
        envvar_prefix=ENVVAR_PREFIX,
        environments=True,
        env_switcher=ENV_SWITCHER,
        env=env,
        settings_files=[str(DEFAULT_SETTINGS_FILE), *(str(path) for path in files)],
        envvar=_UNUSED_DYNACONF_ENVVAR,
        merge_enabled=True,
        ignore_unknown_envvars=True,
        load_dotenv=False,
        includes=[],
        preload=[],
    )
    if settings.current_env.lower() != env:
        settings.setenv(env)  # an explicit environment wins over TASKYARD_ENV
    for key, value in _flatten(overrides or {}):
        settings.set(key, value)
    validate(settings)
    return settings


def validate(settings: Dynaconf) -> None:
    """Check every taskyard key of ``settings``; raises ConfigurationError listing all
    the problems found."""
    settings.validators.register(*VALIDATORS)
    try:
        settings.validators.validate_all()
    except ValidationError as exc:
        problems = [message for _, message in exc.details] or [str(exc)]
        raise ConfigurationError(_problems("invalid taskyard settings", problems)) from exc
    _check_unknown_keys(settings)
    missing = required_for_backend(
        {str(key).lower(): value for key, value in (settings.get("task_execution") or {}).items()}
    )
    if missing:
        raise ConfigurationError(_problems("invalid taskyard settings", missing))
    for key in _UPPER_CASE_KEYS:  # written in any case, read in one
        settings.set(key, _upper(settings.get(key)))


_UPPER_CASE_KEYS = ("task_execution.sqlite_synchronous", "logging.level")


def _problems(title: str, problems: Sequence[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{title}:\n" + "\n".join(f"  - {problem}" for problem in problems)


def settings_files_in_use(
    explicit: Sequence[str | os.PathLike[str]] | None = None,
) -> tuple[list[Path], bool]:
    """The user settings files :func:`load_settings` reads now (``explicit`` as its
    ``settings_files``), and whether they come from the working directory (then
    ``settings.local.toml`` there is read once it exists)."""
    from_cwd = explicit is None and SETTINGS_FILES_ENVVAR not in os.environ
    return _user_files(explicit), from_cwd


def _user_files(explicit: Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    if explicit is not None:
        named = [Path(path) for path in explicit]
        source = "settings_files"
    elif SETTINGS_FILES_ENVVAR in os.environ:
        raw = os.environ[SETTINGS_FILES_ENVVAR]
        named = [Path(part.strip()) for part in raw.split(",") if part.strip()]
        source = SETTINGS_FILES_ENVVAR
    else:
        return [path.resolve() for path in map(Path, USER_SETTINGS_FILES) if path.is_file()]
    missing = [str(path) for path in named if not path.is_file()]
    if missing:
        raise ConfigurationError(
            f"{source} names settings file(s) that do not exist: {', '.join(missing)}"
        )
    return [path.resolve() for path in named]


def _check_environment(env: str, files: Iterable[Path], chosen_by: str) -> None:
    """Refuse an environment no file defines, and top-level taskyard sections (which
    Dynaconf would silently read as environments)."""
    known = set(ENVIRONMENTS)
    trust = False
    for path in files:
        if path.suffix != ".toml":
            trust = True  # another format: its environments are not checked here
            continue
        try:
            raw = path.read_bytes()
            if raw.startswith(codecs.BOM_UTF8):
                raise ConfigurationError(
                    f"the settings file {path} starts with a byte-order mark, which TOML "
                    "does not allow (Windows PowerShell 5 writes one with -Encoding utf8); "
                    "save it as UTF-8 without BOM, for instance in PowerShell: "
                    f"[IO.File]::WriteAllText('{path}', (Get-Content -Raw '{path}'))"
                )
            tables = tomllib.loads(raw.decode("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read the settings file {path}: {exc}") from exc
        for name in tables:
            if name.lower() in SECTIONS:
                raise ConfigurationError(
                    f"{path} has a top-level [{name}] table; taskyard's settings files use "
                    f"environments: write [default.{name}] or [development.{name}] and so on"
                )
            known.add(name.lower())
    known -= {"default", "global", "dynaconf_merge"}
    if env not in known and not trust:
        name = f"{chosen_by} = {env!r}" if chosen_by else f"the environment {env!r}"
        raise ConfigurationError(
            f"{name} is not a settings environment; known: " + ", ".join(sorted(known))
        )


def _check_unknown_keys(settings: Dynaconf) -> None:
    shipped = tomllib.loads(DEFAULT_SETTINGS_FILE.read_text(encoding="utf-8"))["default"]
    problems: list[str] = []
    for section in SECTIONS:
        values = settings.get(section) or {}
        allowed = set(shipped[section])
        for key in values:
            if str(key).lower() not in allowed:
                close = difflib.get_close_matches(str(key).lower(), sorted(allowed), n=1)
                hint = f"; did you mean {section}.{close[0]}?" if close else ""
                problems.append(f"{section}.{key} is not a taskyard setting{hint}")
    if problems:
        raise ConfigurationError(_problems("unknown taskyard settings", problems))


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Nested tables to dotted keys, so an override changes one key, not a whole table.
    ``task_timeouts`` is a value of its own and stays whole."""
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not dotted.endswith("task_timeouts"):
            yield from _flatten(value, f"{dotted}.")
        else:
            yield dotted, value
