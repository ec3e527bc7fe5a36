"""``python -m report_service``: imports ``main`` as a module, so that wiring finds it."""

from report_service.main import main

main()
