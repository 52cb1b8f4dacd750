"""Swagger UI served from this machine, so ``/docs`` works offline.

FastAPI's built-in ``/docs`` page loads Swagger UI's JavaScript and CSS from a CDN.
The demo promises to work with no network, so when the ``fastapi-offline`` package
(in the project's dev extra) is installed its copy of the Swagger UI assets is served
from ``/docs/assets``. Without it, :func:`offline_swagger_ui` returns ``False`` and the
app keeps FastAPI's default page. Either way Swagger UI gets the app's
``swagger_ui_init_oauth`` (the Auth0 PKCE login) and its OAuth2 redirect page.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["DOCS_URL", "local_swagger_assets", "offline_swagger_ui"]

#: Where Swagger UI is served.
DOCS_URL = "/docs"
_ASSETS_URL = DOCS_URL + "/assets"
_ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")


def local_swagger_assets() -> Path | None:
    """The directory holding a local copy of Swagger UI's assets, if one is installed."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    static = Path(spec.origin).parent / "static"
    if all((static / name).is_file() for name in _ASSET_FILES):
        return static
    return None


def offline_swagger_ui(app: FastAPI, assets: Path) -> None:
    """Serve Swagger UI at ``/docs`` from ``assets``; ``app`` needs ``docs_url=None``."""
    if app.docs_url is not None:
        raise ValueError("create the app with docs_url=None to serve Swagger UI locally")
    app.mount(_ASSETS_URL, StaticFiles(directory=assets), name="swagger-ui-assets")
    redirect_url = app.swagger_ui_oauth2_redirect_url or DOCS_URL + "/oauth2-redirect"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_js_url=f"{root}{_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{_ASSETS_URL}/swagger-ui.css",
            # No favicon download either.
            swagger_favicon_url="data:,",
            # Read per request: configure_openapi() may set it after this call.
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
