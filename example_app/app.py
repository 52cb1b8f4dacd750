"""The example API: one route per kind of protection asgi_auth0 offers.

Copy from here. ``create_app(config)`` builds the whole application from an
:class:`~asgi_auth0.Auth0Config`; nothing in this module reads the environment or
knows whether the tokens come from a real Auth0 tenant or the offline dev issuer
(``python -m example_app`` decides that, see ``__main__.py``).

Routes:

============================  ==========================================================
``GET  /api/public``          anyone; says who you are if you sent a valid token
``GET  /api/private``         any valid access token (401 without one)
``GET  /api/messages``        a token with the OAuth scope ``read:messages`` (else 403)
``GET  /api/admin``           a token with the Auth0 RBAC permission ``read:admin``
``WS   /ws``                  an authenticated WebSocket echo; closes when the token expires
``GET  /health``              the key cache's state (503 while no signing key is usable)
============================  ==========================================================

The middleware runs fail closed (``require_token=True``): every path not in
:data:`PUBLIC_PATHS` needs a valid token, so a route added later without a dependency
is protected, not open. The dependencies on the routes above still give each endpoint
its typed claims and its scope checks, and document them in OpenAPI.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, RedirectResponse

from asgi_auth0 import (
    Auth0Config,
    Auth0Middleware,
    Claims,
    IssuerKeySets,
    JWKSCache,
    TokenVerifier,
    configure_openapi,
    optional_token,
    require_permissions,
    require_scopes,
    require_token,
)

from .docs import DOCS_URL, local_swagger_assets, offline_swagger_ui

__all__ = ["ADMIN_PERMISSION", "MESSAGES_SCOPE", "PUBLIC_PATHS", "app_from_env", "create_app"]

#: The OAuth scope ``GET /api/messages`` needs (define it on your Auth0 API).
MESSAGES_SCOPE = "read:messages"
#: The Auth0 RBAC permission ``GET /api/admin`` needs (enable RBAC and "Add
#: Permissions in the Access Token" on your Auth0 API).
ADMIN_PERMISSION = "read:admin"
#: The paths anyone may call without a token: the public route, the health check, and
#: what Swagger UI needs before anyone has logged in (its page, assets, OAuth2 redirect
#: page and the OpenAPI document). Everything else needs a valid token. Each is named
#: as narrowly as it can be: "/docs/*" would also open any route added under /docs
#: later, unnoticed.
PUBLIC_PATHS = (
    "/",
    "/api/public",
    "/health",
    DOCS_URL,
    DOCS_URL + "/assets/*",
    DOCS_URL + "/oauth2-redirect",
    "/openapi.json",
)
# RFC 6455 close code for "the message violates the server's policy": used when the
# token that opened a WebSocket expires.
_WS_POLICY_VIOLATION = 1008

_MESSAGES = (
    {"id": 1, "text": "Tokens are verified locally: no call to Auth0 per request."},
    {"id": 2, "text": "The signing keys are cached and refreshed in the background."},
)


def create_app(config: Auth0Config, *, description: str | None = None) -> FastAPI:
    """The example API, protected by ``config``'s issuer and audience.

    ``description`` is shown at the top of Swagger UI (``/docs``).
    """
    # Building the verifier here, instead of passing config= to the middleware, gives
    # the app a handle on the key cache: the lifespan runs its background refresher
    # and /health reports its state.
    verifier = TokenVerifier(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncGenerator[None, None]:
        # The key cache's background refresher lives exactly as long as the app: it
        # refreshes keys before they go stale, so no request waits on Auth0. (The
        # middleware has already loaded them during startup.) Running it here rather
        # than with Auth0Middleware(background_refresh=True) lets this lifespan stop
        # it before closing the verifier it owns.
        try:
            async with verifier.key_set.running():
                yield
        finally:
            await verifier.aclose()  # closes the key cache's HTTP client

    assets = local_swagger_assets()
    app = FastAPI(
        title="asgi_auth0 example API",
        description=description or _default_description(config),
        lifespan=lifespan,
        docs_url=None if assets is not None else DOCS_URL,
        redoc_url=None,
    )
    if assets is not None:
        offline_swagger_ui(app, assets)
    # Fail closed: a route someone adds later and forgets to protect still needs a token.
    app.add_middleware(
        Auth0Middleware, verifier=verifier, require_token=True, public_paths=list(PUBLIC_PATHS)
    )
    # The verifier (and its key cache) for code outside the routes, e.g. tests that
    # run the app without a lifespan and close it themselves.
    app.state.verifier = verifier
    # Documents 401/403 on protected routes; with config.client_id, Swagger UI's
    # "Authorize" logs in through Auth0 (authorization code + PKCE).
    configure_openapi(app, config)

    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/api/public", summary="Public: no token needed")
    async def public(claims: Annotated[Claims | None, Depends(optional_token)]) -> dict[str, Any]:
        """Open to everyone. A valid token is still verified (an invalid one gets 401)."""
        return {"message": "Hello from a public endpoint.", "sub": claims.sub if claims else None}

    @app.get("/api/private", summary="Private: any valid token")
    async def private(claims: Annotated[Claims, Depends(require_token)]) -> dict[str, Any]:
        """Any valid access token for this API."""
        return {
            "message": "Hello from a private endpoint.",
            "sub": claims.sub,
            "scopes": sorted(claims.scopes),
            "permissions": sorted(claims.permissions),
        }

    @app.get("/api/messages", summary=f"Needs scope {MESSAGES_SCOPE}")
    async def messages(
        claims: Annotated[Claims, Depends(require_scopes(MESSAGES_SCOPE))],
    ) -> dict[str, Any]:
        """Needs the OAuth scope ``read:messages``."""
        return {"sub": claims.sub, "messages": list(_MESSAGES)}

    @app.get("/api/admin", summary=f"Needs permission {ADMIN_PERMISSION}")
    async def admin(
        claims: Annotated[Claims, Depends(require_permissions(ADMIN_PERMISSION))],
    ) -> dict[str, Any]:
        """Needs the Auth0 RBAC permission ``read:admin``."""
        return {"sub": claims.sub, "permissions": sorted(claims.permissions)}

    @app.websocket("/ws")
    async def echo(websocket: WebSocket, claims: Annotated[Claims, Depends(require_token)]) -> None:
        """Echoes text frames. The handshake needs a valid token (the middleware
        answers 401/403 before the socket is accepted otherwise)."""
        await websocket.accept()
        await websocket.send_json({"hello": claims.sub, "scopes": sorted(claims.scopes)})
        # A token is checked once, at the handshake; without this a connection would
        # outlive its token. Close it when the token expires.
        with anyio.move_on_after(max(0.0, float(claims["exp"]) - time.time())):
            try:
                while True:
                    text = await websocket.receive_text()
                    await websocket.send_json({"sub": claims.sub, "echo": text})
            except WebSocketDisconnect:
                return
        await websocket.close(code=_WS_POLICY_VIOLATION, reason="token expired")

    @app.get("/health", summary="Signing-key cache state")
    async def health() -> JSONResponse:
        """The signing-key cache's state. 503 while no key set is usable (the issuer
        was never reached, or has failed for longer than ``jwks_max_stale``).

        With several issuers (``additional_issuers``), one that is down makes the
        status ``degraded`` but not 503: the others' tokens are still served, and
        every replica sees the same outage, so a load balancer pulling them all
        would take the working issuers down too.
        """
        key_sets = _key_set_status(verifier.key_set)
        usable = [s["state"] in ("fresh", "stale", "empty") for s in key_sets]
        return JSONResponse(
            {"status": "ok" if all(usable) else "degraded", "key_sets": key_sets},
            status_code=200 if any(usable) else 503,
        )

    return app


def app_from_env() -> FastAPI:
    """The example API for the Auth0 tenant named by ``AUTH0_*`` environment variables.

    For a production-style server: ``uvicorn --factory example_app.app:app_from_env``.
    """
    return create_app(Auth0Config.from_env())


def _key_set_status(key_set: JWKSCache | IssuerKeySets) -> list[dict[str, Any]]:
    """Each key cache's status as JSON-ready dicts: one per accepted issuer (a config
    with ``additional_issuers`` has a cache for each)."""
    result = key_set.status()
    snapshots = result.values() if isinstance(result, Mapping) else (result,)
    return [snapshot.as_dict() for snapshot in snapshots]


def _default_description(config: Auth0Config) -> str:
    if config.client_id:
        how = "Click **Authorize** to log in through Auth0 (authorization code with PKCE)."
    else:
        how = "Click **Authorize** and paste an access token issued for this API's audience."
    return (
        f"Routes protected by asgi_auth0 for issuer `{config.issuer}` and audience "
        f"`{', '.join(config.audiences)}`. {how}"
    )
