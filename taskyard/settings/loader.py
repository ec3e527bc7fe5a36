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

from taskyard.framework.errors import ConfigurationError, InvalidSchedule
from taskyard.framework.schedules import Schedule, schedule_from_settings
from taskyard.settings.conversion import SECTIONS
from taskyard.settings.validators import (
    BACKEND_ALIASES,
    BACKEND_CHOICES,
    BACKENDS,
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
    _check_backend_names(settings)
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
    schedules_from_settings(settings)  # [default.schedules.NAME] tables, checked at start-up
    for key in _UPPER_CASE_KEYS:  # written in any case, read in one
        settings.set(key, _upper(settings.get(key)))


def _check_backend_names(settings: Dynaconf) -> None:
    """A backend name that is close to a real one gets a "did you mean"."""
    for key in ("task_execution.backend", "task_execution.canary_backend"):
        value = settings.get(key)
        if not isinstance(value, str) or not value or value in (*BACKENDS, *BACKEND_ALIASES):
            continue
        near = _close(value.strip().lower().replace("_", "-"), (*BACKENDS, *BACKEND_ALIASES))
        if near:
            envvar = f"{ENVVAR_PREFIX}_{key.upper().replace('.', '__')}"
            raise ConfigurationError(
                f"{key} = {value!r} is not allowed (environment {settings.current_env}); "
                f'did you mean "{near}"? It must be one of {BACKEND_CHOICES}. Fix it in your '
                f"settings file or in {envvar}."
            )


def schedules_from_settings(settings: Dynaconf | Mapping[str, Any]) -> list[Schedule]:
    """The periodic schedules the settings declare (``[default.schedules.NAME]`` tables,
    the fields of ``add_schedule``); ConfigurationError naming the key of a bad one."""
    tables = settings.get("schedules") or settings.get("SCHEDULES") or {}
    if not isinstance(tables, Mapping):
        raise ConfigurationError(
            "schedules must be a table of schedules ([default.schedules.NAME]), not "
            f"{type(tables).__name__}"
        )
    found: list[Schedule] = []
    problems: list[str] = []
    for name, table in tables.items():
        try:
            found.append(schedule_from_settings(str(name), _plain_table(table)))
        except InvalidSchedule as exc:
            problems.append(f"schedules.{name}: {exc}")
    if problems:
        raise ConfigurationError(_problems("invalid taskyard schedules", problems))
    return found


def _plain_table(table: Any) -> Any:
    if isinstance(table, Mapping):
        return {str(key): _plain_table(value) for key, value in table.items()}
    if isinstance(table, list | tuple):
        return [_plain_table(value) for value in table]
    return table


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


_SPECIAL_TABLES = frozenset({"default", "global", "dynaconf_merge"})


def _close(name: str, choices: Iterable[str], cutoff: float = 0.75) -> str | None:
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def _check_environment(env: str, files: Iterable[Path], chosen_by: str) -> None:
    """Refuse an environment no file defines, top-level taskyard sections (which Dynaconf
    would silently read as environments), misspelt environment and section names, and
    ``TASKYARD_*`` variables that name no setting (Dynaconf would ignore them)."""
    known = set(ENVIRONMENTS)
    own_sections: set[str] = set()  # the application's own sections, beside taskyard's
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
        for name, table in tables.items():
            lowered = name.lower()
            if lowered in SECTIONS:
                raise ConfigurationError(
                    f"{path} has a top-level [{name}] table; taskyard's settings files use "
                    f"environments: write [default.{name}] or [development.{name}] and so on"
                )
            standard = {*ENVIRONMENTS, *_SPECIAL_TABLES}
            near = _close(lowered, standard, cutoff=0.8)
            if lowered not in standard and near and not lowered.startswith(near):
                raise ConfigurationError(
                    f"{path} has an environment [{name}]; did you mean [{near}]? (An "
                    f"environment of your own needs a name unlike {', '.join(ENVIRONMENTS)}.)"
                )
            known.add(lowered)
            for section in table if isinstance(table, dict) else ():
                lowered_section = section.lower()
                if lowered_section in SECTIONS or not isinstance(table[section], dict):
                    continue
                near = _close(lowered_section, SECTIONS)
                if near:
                    raise ConfigurationError(
                        f"{path} has a section [{name}.{section}], which taskyard does not "
                        f"read; did you mean [{name}.{near}]?"
                    )
                own_sections.add(lowered_section)
    known -= _SPECIAL_TABLES
    if env not in known and not trust:
        name = f"{chosen_by} = {env!r}" if chosen_by else f"the environment {env!r}"
        hint = _close(env, known)
        raise ConfigurationError(
            f"{name} is not a settings environment"
            + (f"; did you mean {hint!r}?" if hint else "")
            + " Known: "
            + ", ".join(sorted(known))
        )
    _check_variables(own_sections)


def _check_variables(own_sections: Iterable[str]) -> None:
    """Every ``TASKYARD_<SECTION>__<KEY>`` variable must name a taskyard key (or a section
    of the application's own settings files); a variable that looks like a misspelt one
    (``TASKYARD_TASK_EXECUTION_BACKEND``, ``TASKYARD_EVN``) is refused too. Dynaconf
    would ignore them without a word, and ``TASKYARD_TASK_EXECUTION__BACKEND`` is the
    emergency rollback switch."""
    shipped = tomllib.loads(DEFAULT_SETTINGS_FILE.read_text(encoding="utf-8"))["default"]
    prefix = f"{ENVVAR_PREFIX}_"
    top_level = {ENV_SWITCHER, SETTINGS_FILES_ENVVAR, _UNUSED_DYNACONF_ENVVAR}
    sections = {f"{prefix}{section.upper()}" for section in SECTIONS}
    own = {f"{prefix}{section.upper()}" for section in own_sections}
    problems: list[str] = []
    for variable in sorted(os.environ):
        if not variable.startswith(prefix) or variable in top_level:
            continue
        head, sep, key = variable.partition("__")
        if sep:
            if head in own:
                continue
            if head not in sections:
                near = _close(head[len(prefix) :], {n[len(prefix) :] for n in sections | own})
                hint = f"; did you mean {prefix}{near}__{key}?" if near else ""
                problems.append(f"{variable} names no taskyard settings section{hint}")
                continue
            section = head[len(prefix) :].lower()
            name = key.lower().split("__")[0]
            if name not in shipped[section]:
                near = _close(name, shipped[section])
                hint = f"; did you mean {head}__{near.upper()}?" if near else ""
                problems.append(f"{variable} is not a taskyard setting{hint}")
            continue
        for section in sorted(sections):
            if variable.startswith(f"{section}_"):
                key = variable[len(section) + 1 :]
                problems.append(
                    f"{variable} is not a taskyard setting; did you mean {section}__{key}? "
                    "(two underscores between the section and the key)"
                )
                break
        else:  # compared without the prefix, which every candidate shares
            names = {name[len(prefix) :] for name in top_level - {_UNUSED_DYNACONF_ENVVAR}}
            near = _close(variable[len(prefix) :], names, cutoff=0.6)
            if near:
                problems.append(
                    f"{variable} is not a taskyard variable; did you mean {prefix}{near}?"
                )
    if problems:
        raise ConfigurationError(_problems("unknown taskyard environment variables", problems))


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
        whole = dotted.endswith("task_timeouts") or dotted == "concurrency_limits"
        if isinstance(value, Mapping) and value and not whole:
            yield from _flatten(value, f"{dotted}.")
        else:
            yield dotted, value
