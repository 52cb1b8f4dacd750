"""An example FastAPI application protected by asgi_auth0.

``python -m example_app`` (or ``make demo``) runs it: offline with an embedded dev
issuer when no ``AUTH0_*`` variable is set, else against your Auth0 tenant. The
application itself is :func:`create_app` in :mod:`example_app.app`.
"""

from .app import ADMIN_PERMISSION, MESSAGES_SCOPE, PUBLIC_PATHS, app_from_env, create_app

__all__ = ["ADMIN_PERMISSION", "MESSAGES_SCOPE", "PUBLIC_PATHS", "app_from_env", "create_app"]
