"""``python -m taskyard``: the command line."""

from taskyard.cli import main

main()
