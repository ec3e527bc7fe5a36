"""taskyard's web dashboard: an ASGI application over the store-operations interface
(``pip install taskyard[dashboard]``; ``taskyard dashboard`` serves it).

:func:`create_app` builds it over an unopened store; :mod:`taskyard.web.security` holds
the tokens, roles and CSRF checks; :func:`serve` runs it with uvicorn until stopped.
Static assets (htmx) ship inside the package: no CDN.
"""

from taskyard.web.app import DashboardConfig, create_app
from taskyard.web.server import serve

__all__ = ["DashboardConfig", "create_app", "serve"]
