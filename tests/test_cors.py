"""CORS with ``Auth0Middleware``, as the README advises: ``CORSMiddleware`` outside it.

A browser page on another origin can only use the API if preflights succeed without a
token and every answer, 401/403/400 included, carries the CORS headers; otherwise the
page sees a bare "CORS error" instead of the RFC 6750 challenge. The same apps with the
middleware order reversed show why the order matters.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from example_support import serving
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from asgi_auth0 import Auth0Config, Auth0Middleware, Claims, require_scopes
from asgi_auth0.testing import LocalIssuer, TokenFactory

pytestmark = pytest.mark.anyio

ORIGIN = "https://app.example.com"
FROM_PAGE = {"Origin": ORIGIN}
PREFLIGHT = {
    **FROM_PAGE,
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "authorization",
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def build(config: Auth0Config, *, cors_outside: bool, **auth: Any) -> FastAPI:
    app = FastAPI()
    cors = {
        "allow_origins": [ORIGIN],
        "allow_methods": ["GET"],
        "allow_headers": ["Authorization"],
        "expose_headers": ["WWW-Authenticate"],
    }
    # Starlette runs the middleware added last first (outermost).
    if cors_outside:
        app.add_middleware(Auth0Middleware, config=config, **auth)
        app.add_middleware(CORSMiddleware, **cors)
    else:
        app.add_middleware(CORSMiddleware, **cors)
        app.add_middleware(Auth0Middleware, config=config, **auth)

    @app.get("/me")
    async def me() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/messages")
    async def messages(
        claims: Annotated[Claims, Depends(require_scopes("read:messages"))],
    ) -> dict[str, str | None]:
        return {"sub": claims.sub}

    return app


@pytest.fixture(params=[{"require_token": True}, {}], ids=["fail-closed", "default"])
def auth(request: pytest.FixtureRequest) -> dict[str, Any]:
    options: dict[str, Any] = request.param
    return options


@pytest.fixture
async def outside(
    auth0_config: Auth0Config, auth: dict[str, Any]
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(build(auth0_config, cors_outside=True, **auth)) as client:
        yield client


def assert_cors(response: httpx.Response) -> None:
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-expose-headers"] == "WWW-Authenticate"


async def test_a_preflight_needs_no_token(outside: httpx.AsyncClient) -> None:
    for path in ("/me", "/messages", "/no-such-route"):
        response = await outside.options(path, headers=PREFLIGHT)
        assert response.status_code == 200, path
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in response.headers["access-control-allow-headers"].lower()


async def test_a_disallowed_origin_gets_no_cors_headers_whatever_the_token(
    outside: httpx.AsyncClient, auth0_token: TokenFactory
) -> None:
    elsewhere = {"Origin": "https://evil.example.net"}
    preflight = await outside.options("/me", headers={**PREFLIGHT, **elsewhere})
    assert preflight.status_code == 400
    ok = await outside.get("/me", headers={**elsewhere, **bearer(auth0_token())})
    assert ok.status_code == 200
    assert "access-control-allow-origin" not in ok.headers


async def test_rejections_carry_cors_headers_so_the_page_can_read_them(
    outside: httpx.AsyncClient,
    auth: dict[str, Any],
    auth0_issuer: LocalIssuer,
    auth0_token: TokenFactory,
) -> None:
    if auth:  # fail closed: no token at all is the middleware's own 401
        missing = await outside.get("/me", headers=FROM_PAGE)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        assert_cors(missing)
    expired = await outside.get(
        "/me", headers={**FROM_PAGE, **bearer(auth0_issuer.expired_token())}
    )
    assert expired.status_code == 401
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]
    assert_cors(expired)
    # A dependency's rejection travels to the middleware, which answers inside CORS.
    no_scope = await outside.get("/messages", headers={**FROM_PAGE, **bearer(auth0_token())})
    assert no_scope.status_code == 403
    assert 'error="insufficient_scope"' in no_scope.headers["www-authenticate"]
    assert_cors(no_scope)
    malformed = await outside.get("/me", headers={**FROM_PAGE, "Authorization": "Bearer a b"})
    assert malformed.status_code == 400
    assert_cors(malformed)
    ok = await outside.get("/me", headers={**FROM_PAGE, **bearer(auth0_token())})
    assert ok.status_code == 200
    assert_cors(ok)


async def test_cors_inside_the_middleware_breaks_browsers(
    auth0_config: Auth0Config, auth0_issuer: LocalIssuer
) -> None:
    # The order the README warns against: a fail-closed API refuses every preflight,
    # and its rejections carry no CORS headers at all.
    app = build(auth0_config, cors_outside=False, require_token=True)
    async with serving(app) as client:
        preflight = await client.options("/me", headers=PREFLIGHT)
        assert preflight.status_code == 401
        assert "access-control-allow-origin" not in preflight.headers
        expired = await client.get(
            "/me", headers={**FROM_PAGE, **bearer(auth0_issuer.expired_token())}
        )
        assert expired.status_code == 401
        assert "access-control-allow-origin" not in expired.headers


# -- the warning for the reversed order --------------------------------------------------

CORS_WARNING = "CORSMiddleware runs"


def cors_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "asgi_auth0.middleware" and CORS_WARNING in r.getMessage()
    ]


@pytest.mark.parametrize(
    ("auth", "consequence"),
    [
        ({"require_token": True}, "every CORS preflight outside public_paths is answered 401"),
        (
            {},
            "its own answers (401/400 for a bad token, 503 in an outage) reach browsers "
            "without CORS headers",
        ),
    ],
)
async def test_cors_inside_is_reported_at_startup(
    auth0_config: Auth0Config,
    caplog: pytest.LogCaptureFixture,
    auth: dict[str, Any],
    consequence: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_auth0.middleware")
    async with serving(build(auth0_config, cors_outside=False, **auth)):
        pass
    [message] = cors_warnings(caplog)
    assert consequence in message
    # Both ways of adding middleware, whose orders are opposite: add_middleware runs
    # the last added first, Starlette(middleware=[...]) the first listed.
    assert "app.add_middleware(CORSMiddleware, ...) after Auth0Middleware" in message
    assert "list it before Auth0Middleware in Starlette(middleware=[...])" in message


async def test_cors_inside_a_directly_wrapped_app_is_reported(
    auth0_config: Auth0Config, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_auth0.middleware")
    app = FastAPI()
    app.add_middleware(CORSMiddleware, allow_origins=[ORIGIN])
    Auth0Middleware(app, config=auth0_config, require_token=True)
    assert len(cors_warnings(caplog)) == 1


@pytest.mark.parametrize("how", ["add_middleware", "wrapped"])
async def test_cors_on_an_app_mounted_inside_is_reported(
    auth0_config: Auth0Config, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    # CORS on the API app, the middleware on the app it is mounted in: the same
    # mistake (every preflight 401 when fail closed), one level down; the API app
    # added CORS itself, or was mounted wrapped in it.
    caplog.set_level(logging.WARNING, logger="asgi_auth0.middleware")
    api = FastAPI()
    app = FastAPI()
    if how == "add_middleware":
        api.add_middleware(CORSMiddleware, allow_origins=[ORIGIN])
        app.mount("/api", api)
    else:
        app.mount("/api", CORSMiddleware(api, allow_origins=[ORIGIN]))
    app.add_middleware(Auth0Middleware, config=auth0_config, require_token=True)
    async with serving(app):
        pass
    [message] = cors_warnings(caplog)
    assert "in an app mounted inside Auth0Middleware" in message
    assert "every CORS preflight outside public_paths is answered 401" in message
    assert (
        "Unless a CORSMiddleware also runs outside Auth0Middleware, add one to the outer app"
        in message
    )
    # Both ways of adding middleware, whose orders are opposite.
    assert "listed before it in Starlette(middleware=[...])" in message


async def test_cors_outside_or_absent_is_not_reported(
    auth0_config: Auth0Config, caplog: pytest.LogCaptureFixture, auth: dict[str, Any]
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_auth0.middleware")
    async with serving(build(auth0_config, cors_outside=True, **auth)):
        pass
    Auth0Middleware(FastAPI(), config=auth0_config, **auth)
    assert cors_warnings(caplog) == []
