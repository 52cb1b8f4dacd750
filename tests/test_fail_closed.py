"""``Auth0Middleware(require_token=True, public_paths=...)``: fail closed.

Every path needs a valid token except the listed public ones; near misses of a public
path (trailing slash, case, a longer name, the subtree's own root) need one too. The
OpenAPI document says the same, and a real uvicorn serves it the same way.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from _asgi import drive, http_scope, ws_scope
from fastapi import Depends, FastAPI
from fastapi.security import APIKeyHeader
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_auth0._claims import Claims
from asgi_auth0._errors import ConfigError
from asgi_auth0._middleware import Auth0Middleware, fail_closed_policies
from asgi_auth0._public import PublicPaths, route_path
from asgi_auth0._signing import PrivateKey
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.fastapi import configure_openapi, optional_token, require_scopes
from asgi_auth0.testing import LocalIssuer

PUBLIC = ("/health", "/static/*")
# Module level: with postponed annotations FastAPI resolves dependencies from here.
API_KEY = APIKeyHeader(name="x-api-key", auto_error=False)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Reached:
    """Counts the requests the application itself got to see."""

    def __init__(self) -> None:
        self.paths: list[str] = []


def starlette_app(verifier: TokenVerifier, reached: Reached, **options: Any) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        reached.paths.append(request.url.path)
        claims = request.state.claims
        return JSONResponse({"sub": None if claims is None else claims.sub})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        claims = websocket.state.claims
        await websocket.send_json({"sub": None if claims is None else claims.sub})
        await websocket.close()

    options.setdefault("require_token", True)
    options.setdefault("public_paths", PUBLIC)
    return Starlette(
        routes=[
            Route("/{path:path}", echo),
            WebSocketRoute("/ws/{path:path}", ws),
        ],
        middleware=[Middleware(Auth0Middleware, verifier=verifier, **options)],
    )


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


# -- configuration -----------------------------------------------------------------------


def test_public_paths_without_require_token_is_refused(verifier: TokenVerifier) -> None:
    # Listing public paths only means something if the rest is closed; silently
    # serving everything anonymously would be the worst reading.
    with pytest.raises(ConfigError, match="require_token=True"):
        Auth0Middleware(Starlette(), verifier=verifier, public_paths=["/health"])


def test_a_single_string_is_not_read_as_a_list_of_characters(verifier: TokenVerifier) -> None:
    with pytest.raises(ConfigError, match="not a single string"):
        Auth0Middleware(
            Starlette(),
            verifier=verifier,
            require_token=True,
            public_paths="/health",  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    "entry",
    [
        "health",  # not a path
        "",
        "/health?x=1",  # the query string is never part of the matched path
        "/health#top",
        "/caf%C3%A9",  # the matched path is decoded: this would never match
        "/static*",  # "*" only as a whole final segment
        "/*/admin",
        "/a b",
        "/health\n",
        "/items/{item_id}",  # a route template matches no request path
        "/items/{item_id",  # half a template is refused as well
        "/items/item_id}",
        "/a*b",  # "*" inside the final segment
        b"/health",
        5,
    ],
)
def test_bad_public_path_entries_are_refused(verifier: TokenVerifier, entry: Any) -> None:
    with pytest.raises(ConfigError):
        Auth0Middleware(Starlette(), verifier=verifier, require_token=True, public_paths=[entry])


def test_an_iterator_of_paths_is_refused(verifier: TokenVerifier) -> None:
    # configure_openapi reads the setting again after the middleware has: a generator
    # would document every public path as protected.
    with pytest.raises(ConfigError, match="not an iterator"):
        Auth0Middleware(
            Starlette(),
            verifier=verifier,
            require_token=True,
            public_paths=(p for p in ["/health"]),
        )


def test_require_token_must_be_a_bool(verifier: TokenVerifier) -> None:
    with pytest.raises(ConfigError, match="require_token"):
        Auth0Middleware(Starlette(), verifier=verifier, require_token="yes")  # type: ignore[arg-type]


def test_public_path_matching() -> None:
    public = PublicPaths(["/health", "/static/*", "/health"])
    assert public.entries == ("/health", "/static/*")
    assert "/health" in public
    assert "/static/" in public
    assert "/static/css/site.css" in public
    for near_miss in ("/health/", "/Health", "/healthz", "/static", "/staticx/a", "//health", ""):
        assert near_miss not in public, near_miss
    assert public.covers_template("/static/{name}")
    assert not public.covers_template("/health/{id}")


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("/health", "", "/health"),
        ("/api/health", "/api", "/health"),
        ("/api", "/api", ""),
        ("/apiary/health", "/api", "/apiary/health"),  # not below the root path
        ("/health", "/api", "/health"),  # a server that does not prefix the path
    ],
)
def test_route_path_strips_the_root_path_like_the_router(
    path: str, root: str, expected: str
) -> None:
    assert route_path({"path": path, "root_path": root}) == expected


def test_route_path_without_a_root_path_key_is_the_path() -> None:
    # root_path is optional in an ASGI scope; a server that leaves it out must not turn
    # every request into an error.
    assert route_path({"path": "/health"}) == "/health"


def test_public_paths_that_are_not_a_collection_are_refused(verifier: TokenVerifier) -> None:
    with pytest.raises(ConfigError, match="collection of path strings"):
        Auth0Middleware(Starlette(), verifier=verifier, require_token=True, public_paths=5)  # type: ignore[arg-type]


# -- requests ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_token_outside_the_public_paths_is_401_before_the_app(
    verifier: TokenVerifier,
) -> None:
    reached = Reached()
    async with client(starlette_app(verifier, reached)) as c:
        r = await c.get("/me")
    assert r.status_code == 401
    # The bare challenge of RFC 6750 §3.1: no error code for a request without a token.
    assert r.headers["www-authenticate"] == f'Bearer realm="{verifier.config.realm}"'
    assert r.json()["reason"] == "missing_token"
    assert reached.paths == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path", ["/health/", "/Health", "/healthz", "/static", "/staticx/a", "/", "/api/health"]
)
async def test_near_misses_of_public_paths_need_a_token(verifier: TokenVerifier, path: str) -> None:
    reached = Reached()
    sent = await drive(starlette_app(verifier, reached), http_scope(path=path), [])
    assert sent[0]["status"] == 401
    assert reached.paths == []


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/health", "/static/", "/static/css/site.css"])
async def test_public_paths_serve_anonymous_requests(verifier: TokenVerifier, path: str) -> None:
    reached = Reached()
    async with client(starlette_app(verifier, reached)) as c:
        r = await c.get(path)
    assert r.status_code == 200
    assert r.json() == {"sub": None}
    assert reached.paths == [path]


@pytest.mark.anyio
async def test_public_paths_are_matched_below_the_root_path(verifier: TokenVerifier) -> None:
    reached = Reached()
    app = starlette_app(verifier, reached)
    scope = http_scope(path="/api/health", root_path="/api")
    sent = await drive(app, scope, [{"type": "http.request", "body": b""}])
    assert sent[0]["status"] == 200
    scope = http_scope(path="/api/me", root_path="/api")
    sent = await drive(app, scope, [])
    assert sent[0]["status"] == 401


@pytest.mark.anyio
async def test_a_valid_token_reaches_every_path(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    reached = Reached()
    token = issuer.token(sub="auth0|alice")
    async with client(starlette_app(verifier, reached)) as c:
        for path in ("/me", "/health"):
            r = await c.get(path, headers=bearer(token))
            assert r.status_code == 200
            assert r.json() == {"sub": "auth0|alice"}
    assert reached.paths == ["/me", "/health"]


@pytest.mark.anyio
async def test_an_invalid_token_on_a_public_path_is_still_rejected(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    reached = Reached()
    async with client(starlette_app(verifier, reached)) as c:
        r = await c.get("/health", headers=bearer(issuer.token(expires_in=-3600)))
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert reached.paths == []


@pytest.mark.anyio
async def test_another_scheme_is_no_token(verifier: TokenVerifier) -> None:
    reached = Reached()
    async with client(starlette_app(verifier, reached)) as c:
        r = await c.get("/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401
    assert r.json()["reason"] == "missing_token"


@pytest.mark.anyio
async def test_without_require_token_anonymous_requests_go_through(
    verifier: TokenVerifier,
) -> None:
    # The default stays as DESIGN.md describes: anonymous requests continue.
    reached = Reached()
    app = starlette_app(verifier, reached, require_token=False, public_paths=())
    async with client(app) as c:
        r = await c.get("/me")
    assert r.status_code == 200
    assert reached.paths == ["/me"]


@pytest.mark.anyio
async def test_websocket_without_a_token_is_denied_outside_the_public_paths(
    verifier: TokenVerifier,
) -> None:
    app = starlette_app(verifier, Reached(), public_paths=("/ws/public",))
    sent = await drive(
        app, ws_scope(path="/ws/private", denial=True), [{"type": "websocket.connect"}]
    )
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 401
    sent = await drive(
        app, ws_scope(path="/ws/private", denial=False), [{"type": "websocket.connect"}]
    )
    assert sent == [{"type": "websocket.close", "code": 1008}]
    sent = await drive(
        app,
        ws_scope(path="/ws/public", denial=True),
        [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}],
    )
    assert sent[0]["type"] == "websocket.accept"
    assert json.loads(sent[1]["text"]) == {"sub": None}


@pytest.mark.anyio
async def test_lifespan_passes_through(verifier: TokenVerifier) -> None:
    app = starlette_app(verifier, Reached())
    sent = await drive(
        app,
        {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
        [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
    )
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


# -- FastAPI: dependencies and OpenAPI -----------------------------------------------------


def fastapi_app(verifier: TokenVerifier | None = None, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health(claims: Annotated[Claims | None, Depends(optional_token)]) -> dict[str, Any]:
        return {"ok": True, "sub": None if claims is None else claims.sub}

    @app.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        return {"sub": request.state.claims.sub}

    @app.get("/messages")
    async def messages(
        claims: Annotated[Claims, Depends(require_scopes("read:messages"))],
    ) -> list[str]:
        return ["hello"]

    @app.get("/keyed")
    async def keyed(key: Annotated[str | None, Depends(API_KEY)]) -> dict[str, Any]:
        return {}

    @app.get("/static/{name}")
    async def static(name: str) -> dict[str, Any]:
        return {"name": name}

    if verifier is not None:
        app.add_middleware(Auth0Middleware, verifier=verifier, **options)
    return app


@pytest.mark.anyio
async def test_dependencies_keep_working_behind_a_fail_closed_middleware(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    app = fastapi_app(verifier, require_token=True, public_paths=["/health"])
    async with client(app) as c:
        assert (await c.get("/health")).json() == {"ok": True, "sub": None}
        assert (await c.get("/me")).status_code == 401
        r = await c.get("/me", headers=bearer(issuer.token(sub="auth0|bob")))
        assert r.json() == {"sub": "auth0|bob"}
        r = await c.get("/messages", headers=bearer(issuer.token(scope="write:messages")))
        assert r.status_code == 403
        assert 'scope="read:messages"' in r.headers["www-authenticate"]


def test_openapi_documents_the_fail_closed_routes(verifier: TokenVerifier) -> None:
    app = fastapi_app(verifier, require_token=True, public_paths=["/health", "/static/*"])
    configure_openapi(app)
    spec = app.openapi()
    paths = spec["paths"]
    assert paths["/me"]["get"]["security"] == [{"Auth0": []}]
    assert "401" in paths["/me"]["get"]["responses"]
    # A route's own scopes stay; another scheme's requirement now needs a token too.
    assert paths["/messages"]["get"]["security"] == [{"Auth0": ["read:messages"]}]
    assert paths["/keyed"]["get"]["security"] == [{"APIKeyHeader": [], "Auth0": []}]
    # Public routes: no added requirement (the optional dependency declares its own).
    assert "security" not in paths["/static/{name}"]["get"]
    assert "401" not in paths["/static/{name}"]["get"]["responses"]
    assert spec["components"]["securitySchemes"]["Auth0"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An Auth0 access token (JWT) in the Authorization header.",
    }
    # Building it again changes nothing (FastAPI caches the document; ours is idempotent).
    assert app.openapi() == spec


def test_openapi_finds_a_middleware_that_wraps_the_app(verifier: TokenVerifier) -> None:
    app = fastapi_app()
    configure_openapi(app)
    assert "security" not in app.openapi()["paths"]["/me"]["get"]
    Auth0Middleware(app, verifier=verifier, require_token=True, public_paths=["/health"])
    assert [p.entries for p in fail_closed_policies(app)] == [("/health",)]
    app.openapi_schema = None  # FastAPI caches the document
    assert app.openapi()["paths"]["/me"]["get"]["security"] == [{"Auth0": []}]


def test_a_fail_open_middleware_that_wraps_the_app_adds_no_policy(
    verifier: TokenVerifier,
) -> None:
    # Only require_token=True closes routes; a plain wrap must not make the docs claim
    # that every route needs a token.
    app = fastapi_app()
    configure_openapi(app)
    Auth0Middleware(app, verifier=verifier)
    assert fail_closed_policies(app) == []
    assert "security" not in app.openapi()["paths"]["/me"]["get"]


def test_openapi_is_unchanged_without_require_token(verifier: TokenVerifier) -> None:
    app = fastapi_app(verifier)
    configure_openapi(app)
    assert fail_closed_policies(app) == []
    paths = app.openapi()["paths"]
    assert "security" not in paths["/me"]["get"]
    assert paths["/keyed"]["get"]["security"] == [{"APIKeyHeader": []}]


def test_openapi_uses_the_oauth2_scheme_with_a_client_id(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    app = fastapi_app(verifier, require_token=True, public_paths=["/health"])
    configure_openapi(app, issuer.config(client_id="abc123"))
    spec = app.openapi()
    scheme = spec["components"]["securitySchemes"]["Auth0"]
    assert scheme["type"] == "oauth2"
    assert "read:messages" in scheme["flows"]["authorizationCode"]["scopes"]


# -- end to end: a real uvicorn ----------------------------------------------------------


@pytest.fixture
def served(auth0_rsa_key: PrivateKey) -> Iterator[tuple[str, LocalIssuer]]:
    with LocalIssuer(private_key=auth0_rsa_key) as real_issuer:
        app = FastAPI()

        @app.get("/health")
        async def health() -> dict[str, bool]:
            return {"ok": True}

        @app.get("/me")
        async def me(request: Request) -> dict[str, Any]:
            return {"sub": request.state.claims.sub}

        app.add_middleware(
            Auth0Middleware,
            config=real_issuer.config(),
            require_token=True,
            public_paths=["/health"],
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False)
        uv = uvicorn.Server(config)
        thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{port}", real_issuer
        finally:
            uv.should_exit = True
            thread.join(timeout=15)
            sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.mark.e2e
def test_a_real_server_fails_closed(served: tuple[str, LocalIssuer]) -> None:
    url, real_issuer = served
    with httpx.Client(base_url=url, timeout=10) as c:
        assert c.get("/health").json() == {"ok": True}
        r = c.get("/me")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer realm=")
        r = c.get("/me", headers=bearer(real_issuer.token(sub="auth0|carol")))
        assert r.status_code == 200
        assert r.json() == {"sub": "auth0|carol"}
        # A near miss of the public path is closed too, through a real router.
        assert c.get("/health/").status_code == 401
