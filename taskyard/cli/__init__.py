"""taskyard's command line, one module per command group.

``taskyard.cli.root`` holds the Typer app, the root options and the helpers every command
uses (:func:`cli_state`, :func:`fail`, :func:`ops_errors`, :func:`print_json`); the other
modules each add one command group to it. Importing this package registers them all, in
the order ``taskyard --help`` lists them.
"""

from taskyard.cli.root import CliState, app, cli_state, main

# isort: off
# imported for their commands, in the order `taskyard --help` lists them
from taskyard.cli import demo, worker, inspection, tasks, workflows  # noqa: F401
from taskyard.cli import workers, schedules, maintenance, backup, migration, dashboard  # noqa: F401

# isort: on

__all__ = ["CliState", "app", "cli_state", "main"]
