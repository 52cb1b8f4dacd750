"""FastAPI dependencies, their rejections (same answer as the middleware's, with no
handler registered), WebSocket routes, and the OpenAPI / Swagger UI integration."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import httpx
import pytest
from _asgi import drive, ws_scope
from fastapi import APIRouter, Depends, FastAPI, WebSocket
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from asgi_auth0._claims import Claims
from asgi_auth0._config import Auth0Config
from asgi_auth0._errors import ConfigError
from asgi_auth0._middleware import Auth0Middleware, MiddlewareNotInstalledError
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.fastapi import (
    SCHEME_NAME,
    AuthenticationRejected,
    configure_openapi,
    optional_token,
    rejection_handler,
    require_permissions,
    require_scopes,
    require_token,
    swagger_ui_init_oauth,
)
from asgi_auth0.testing import LocalIssuer

Message = dict[str, Any]
ClaimsDep = Annotated[Claims, Depends(require_token)]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def build_app(verifier: TokenVerifier | None, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me(claims: ClaimsDep) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.get("/maybe")
    async def maybe(claims: Annotated[Claims | None, Depends(optional_token)]) -> dict[str, Any]:
        return {"sub": None if claims is None else claims.sub}

    @app.get("/read")
    async def read(
        claims: Annotated[Claims, Depends(require_scopes("read:messages", "read:users"))],
    ) -> list[str]:
        return ["ok"]

    @app.get("/read-any")
    async def read_any(
        claims: Annotated[
            Claims, Depends(require_scopes("read:messages", "read:users", any_of=True))
        ],
    ) -> list[str]:
        return ["ok"]

    @app.get("/delete")
    async def delete(
        claims: Annotated[Claims, Depends(require_permissions("delete:messages"))],
    ) -> list[str]:
        return ["ok"]

    @app.get("/delete-any")
    async def delete_any(
        claims: Annotated[
            Claims, Depends(require_permissions("delete:messages", "admin", any_of=True))
        ],
    ) -> list[str]:
        return ["ok"]

    @app.get("/public")
    async def public() -> dict[str, str]:
        return {"hello": "world"}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, claims: ClaimsDep) -> None:
        await websocket.accept()
        await websocket.send_json({"sub": claims.sub})
        await websocket.close()

    @app.websocket("/ws-scoped")
    async def ws_scoped(
        websocket: WebSocket,
        claims: Annotated[Claims, Depends(require_scopes("chat:join"))],
    ) -> None:
        await websocket.accept()
        await websocket.close()

    router = APIRouter(dependencies=[Depends(require_scopes("admin:all"))])

    @router.get("/admin/stats")
    async def stats() -> dict[str, int]:
        return {"users": 1}

    app.include_router(router)
    if verifier is not None:
        app.add_middleware(Auth0Middleware, verifier=verifier, **options)
    return app


def client(app: Any, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


# -- HTTP routes ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_wrapping_the_app_directly_answers_like_add_middleware(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    # Auth0Middleware(app) puts us outside FastAPI's ServerErrorMiddleware, which would
    # otherwise turn a dependency's rejection into a 500.
    wrapped = Auth0Middleware(build_app(None), verifier=verifier)
    async with client(wrapped, raise_app_exceptions=False) as c:
        anon = await c.get("/me")
        short = await c.get("/read", headers=bearer(issuer.token(scope="read:messages")))
        ok = await c.get("/me", headers=bearer(issuer.token(sub="auth0|w")))
    assert anon.status_code == 401
    assert anon.headers["www-authenticate"] == 'Bearer realm="api"'
    assert anon.json()["reason"] == "missing_token"
    assert short.status_code == 403
    assert short.json()["error"] == "insufficient_scope"
    assert ok.json() == {"sub": "auth0|w"}


@pytest.mark.anyio
async def test_require_token(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    async with client(build_app(verifier)) as c:
        anon = await c.get("/me")
        ok = await c.get("/me", headers=bearer(issuer.token(sub="auth0|a")))
        basic = await c.get("/me", headers={"Authorization": "Basic eDp5"})
    assert ok.json() == {"sub": "auth0|a"}
    for r in (anon, basic):
        # RFC 6750 §3.1: no credentials, bare challenge; FastAPI's own
        # {"detail": "Not authenticated"} must never show up.
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="api"'
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {
            "error": None,
            "error_description": "Authentication required.",
            "reason": "missing_token",
        }


@pytest.mark.anyio
async def test_optional_token(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    async with client(build_app(verifier)) as c:
        anon = await c.get("/maybe")
        ok = await c.get("/maybe", headers=bearer(issuer.token(sub="auth0|b")))
        bad = await c.get("/maybe", headers=bearer(issuer.expired_token()))
    assert anon.json() == {"sub": None}
    assert ok.json() == {"sub": "auth0|b"}
    # An invalid token is never downgraded to anonymous.
    assert bad.status_code == 401
    assert bad.json()["reason"] == "token_expired"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "scope", "permissions", "status"),
    [
        ("/read", "read:messages read:users", None, 200),
        ("/read", "read:messages", None, 403),
        ("/read", None, ["read:messages", "read:users"], 403),  # permissions are not scopes
        ("/read-any", "read:users", None, 200),
        ("/read-any", "write:users", None, 403),
        ("/delete", None, ["delete:messages"], 200),
        ("/delete", "delete:messages", None, 403),  # scopes are not permissions
        ("/delete-any", None, ["admin"], 200),
        ("/delete-any", None, ["other"], 403),
        ("/admin/stats", "admin:all", None, 200),
        ("/admin/stats", "admin", None, 403),
    ],
)
async def test_scope_and_permission_requirements(
    verifier: TokenVerifier,
    issuer: LocalIssuer,
    path: str,
    scope: str | None,
    permissions: list[str] | None,
    status: int,
) -> None:
    token = issuer.token(scope=scope, permissions=permissions)
    async with client(build_app(verifier)) as c:
        r = await c.get(path, headers=bearer(token))
        anon = await c.get(path)
    assert r.status_code == status
    assert anon.status_code == 401
    if status == 403:
        is_permission = path.startswith("/delete")
        assert r.json() == {
            "error": "insufficient_scope",
            "error_description": (
                "The access token lacks a required permission."
                if is_permission
                else "The access token lacks a required scope."
            ),
            "reason": "insufficient_permission" if is_permission else "insufficient_scope",
        }


@pytest.mark.anyio
async def test_insufficient_scope_names_every_required_scope(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    async with client(build_app(verifier)) as c:
        r = await c.get("/read", headers=bearer(issuer.token(scope="read:messages")))
        p = await c.get("/delete-any", headers=bearer(issuer.token()))
    assert r.headers["www-authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", '
        'error_description="The access token lacks a required scope.", '
        'scope="read:messages read:users"'
    )
    # Listed sorted (the route wrote "delete:messages", "admin"): the same whichever
    # order other code in the process wrote the same names in first.
    assert p.headers["www-authenticate"].endswith('scope="admin delete:messages"')


@pytest.mark.anyio
async def test_middleware_and_dependency_rejections_look_the_same(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    async with client(build_app(verifier)) as c:
        by_middleware = await c.get("/read", headers=bearer(issuer.expired_token()))
        by_dependency = await c.get("/read", headers=bearer(issuer.token()))
    for r in (by_middleware, by_dependency):
        assert r.headers["content-type"] == "application/json"
        assert set(r.json()) == {"error", "error_description", "reason"}
        assert r.headers["www-authenticate"].startswith('Bearer realm="api", error=')
    assert (by_middleware.status_code, by_dependency.status_code) == (401, 403)


@pytest.mark.anyio
async def test_dependencies_honour_the_response_hook(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    from asgi_auth0._challenge import problem_json_response

    async with client(build_app(verifier, on_error=problem_json_response)) as c:
        r = await c.get("/read", headers=bearer(issuer.token()))
        anon = await c.get("/me")
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["required_scopes"] == ["read:messages", "read:users"]
    assert anon.headers["content-type"] == "application/problem+json"
    assert anon.headers["www-authenticate"] == 'Bearer realm="api"'


@pytest.mark.anyio
async def test_without_the_middleware_the_error_says_so(issuer: LocalIssuer) -> None:
    async with client(build_app(None)) as c:
        with pytest.raises(MiddlewareNotInstalledError, match="Auth0Middleware is not installed"):
            await c.get("/me", headers=bearer(issuer.token()))
        public = await c.get("/public")
    assert issubclass(MiddlewareNotInstalledError, RuntimeError)
    assert not issubclass(MiddlewareNotInstalledError, KeyError)
    assert public.status_code == 200


class SwallowErrors:
    """A middleware that turns every exception into a 500 (as some error reporters do)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception:
            await PlainTextResponse("swallowed", status_code=500)(scope, receive, send)


class PassThrough:
    """A pure ASGI middleware that only passes everything on."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@pytest.mark.anyio
async def test_rejection_handler_for_apps_that_swallow_exceptions(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    # Added with add_middleware, the middleware registers the handler on the app
    # itself: SwallowErrors, inside it (below two more layers), never sees the
    # rejection.
    app = build_app(None)
    app.add_middleware(SwallowErrors)
    app.add_middleware(PassThrough)
    app.add_middleware(PassThrough)
    app.add_middleware(Auth0Middleware, verifier=verifier)
    async with client(app) as c:
        assert (await c.get("/me")).status_code == 401

    # Behind a wrapper it cannot look into, it cannot: the handler goes in by hand.
    def opaque_app_with(handler: bool) -> Auth0Middleware:
        app = build_app(None)
        app.add_middleware(SwallowErrors)
        if handler:
            app.add_exception_handler(AuthenticationRejected, rejection_handler)

        async def opaque(scope: Scope, receive: Receive, send: Send) -> None:
            await app(scope, receive, send)

        return Auth0Middleware(opaque, verifier=verifier)

    async with client(opaque_app_with(handler=False)) as c:
        assert (await c.get("/me")).text == "swallowed"
    async with client(opaque_app_with(handler=True)) as c:
        r = await c.get("/read", headers=bearer(issuer.token()))
    assert r.status_code == 403
    assert r.headers["www-authenticate"].endswith('scope="read:messages read:users"')
    assert r.json()["reason"] == "insufficient_scope"


@pytest.mark.anyio
async def test_rejections_pass_through_a_base_http_middleware(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    async def passthrough(request: Request, call_next: RequestResponseEndpoint) -> Response:
        return await call_next(request)

    app = build_app(None)
    app.add_middleware(BaseHTTPMiddleware, dispatch=passthrough)
    app.add_middleware(Auth0Middleware, verifier=verifier)
    async with client(app) as c:
        r = await c.get("/me")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="api"'


EVENTS: list[str] = []


async def db_session() -> AsyncIterator[str]:
    EVENTS.append("open")
    try:
        yield "db"
    except Exception as exc:
        EVENTS.append(f"rollback:{type(exc).__name__}")
        raise
    finally:
        EVENTS.append("close")


async def user_with_db(request: Request, db: Annotated[str, Depends(db_session)]) -> Claims:
    # The session is open before the token is required (FastAPI promises no order
    # between sibling dependencies); the dependency is called like any function.
    return await require_token(request)


@pytest.mark.anyio
async def test_a_yield_dependency_sees_the_rejection_and_cleans_up(
    verifier: TokenVerifier,
) -> None:
    EVENTS.clear()
    app = FastAPI()

    @app.get("/x")
    async def x(claims: Annotated[Claims, Depends(user_with_db)]) -> str:
        return "unreachable"

    app.add_middleware(Auth0Middleware, verifier=verifier)
    async with client(app) as c:
        r = await c.get("/x")
    assert r.status_code == 401
    assert EVENTS == ["open", "rollback:AuthenticationRejected", "close"]


@pytest.mark.parametrize(
    "factory",
    [
        require_scopes,
        require_permissions,
        lambda: require_scopes('read"x'),
        lambda: require_scopes("read x"),
        lambda: require_permissions("caf\u00e9"),
        lambda: require_scopes("ok", "bad\\"),
    ],
)
def test_bad_requirement_names_are_refused_at_definition(factory: Callable[[], Any]) -> None:
    with pytest.raises(ConfigError):
        factory()


# -- WebSocket routes ----------------------------------------------------------------------


async def drive_ws(
    app: Any, headers: list[tuple[bytes, bytes]], *, path: str = "/ws", denial: bool = True
) -> list[Message]:
    scope = ws_scope(headers, path, denial=denial)
    return await drive(app, scope, [{"type": "websocket.connect"}])


@pytest.mark.anyio
async def test_websocket_route_with_a_token(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    token = issuer.token(sub="auth0|ws")
    sent = await drive_ws(build_app(verifier), [(b"authorization", f"Bearer {token}".encode())])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert json.loads(sent[1]["text"]) == {"sub": "auth0|ws"}


@pytest.mark.anyio
async def test_websocket_route_without_a_token_is_denied_before_accept(
    verifier: TokenVerifier,
) -> None:
    sent = await drive_ws(build_app(verifier), [])
    assert [m["type"] for m in sent] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert sent[0]["status"] == 401
    assert (b"www-authenticate", b'Bearer realm="api"') in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["reason"] == "missing_token"

    # Answered inside the app by the handler the middleware registers there (Starlette's
    # close() says reason "").
    sent = await drive_ws(build_app(verifier), [], denial=False)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]


@pytest.mark.anyio
async def test_websocket_route_with_too_few_scopes_gets_403(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    header = [(b"authorization", f"Bearer {issuer.token(scope='chat:read')}".encode())]
    sent = await drive_ws(build_app(verifier), header, path="/ws-scoped")
    assert sent[0]["status"] == 403
    hdrs = dict(sent[0]["headers"])
    assert hdrs[b"www-authenticate"].endswith(b'scope="chat:join"')


async def token_after_connect(websocket: WebSocket) -> Claims:
    # A dependency that reads websocket.connect itself before requiring the token.
    await websocket.receive()
    return await require_token(websocket)


def late_app(verifier: TokenVerifier, *, handler: bool = False) -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws-received")
    async def received(
        websocket: WebSocket, claims: Annotated[Claims, Depends(token_after_connect)]
    ) -> None:
        await websocket.accept()

    @app.websocket("/ws-late")
    async def late(websocket: WebSocket) -> None:
        await websocket.accept()
        await require_token(websocket)  # called by hand, after accept

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, claims: ClaimsDep) -> None:
        await websocket.accept()

    app.add_middleware(Auth0Middleware, verifier=verifier)
    if handler:
        app.add_exception_handler(AuthenticationRejected, rejection_handler)
    return app


@pytest.mark.anyio
async def test_websocket_rejection_after_the_app_read_connect(verifier: TokenVerifier) -> None:
    # drive_ws hands out one websocket.connect; reading a second would hang (and fail).
    sent = await drive_ws(late_app(verifier), [], path="/ws-received")
    assert [m["type"] for m in sent] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert sent[0]["status"] == 401


@pytest.mark.anyio
async def test_websocket_rejection_after_accept_is_a_close(verifier: TokenVerifier) -> None:
    sent = await drive_ws(late_app(verifier), [], path="/ws-late")
    assert sent == [
        {"type": "websocket.accept", "subprotocol": None, "headers": []},
        {"type": "websocket.close", "code": 1008, "reason": ""},
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/ws", "/ws-received", "/ws-late"])
async def test_rejection_handler_on_websockets(verifier: TokenVerifier, path: str) -> None:
    app = late_app(verifier, handler=True)
    sent = await drive_ws(app, [], path=path)
    if path == "/ws-late":
        assert sent[-1] == {"type": "websocket.close", "code": 1008, "reason": ""}
    else:
        assert sent[0]["type"] == "websocket.http.response.start"
        assert sent[0]["status"] == 401
        assert (b"www-authenticate", b'Bearer realm="api"') in sent[0]["headers"]
    if path == "/ws":
        sent = await drive_ws(app, [], path=path, denial=False)
        assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]


# -- OpenAPI and Swagger UI ----------------------------------------------------------------


def operation(schema: dict[str, Any], path: str) -> dict[str, Any]:
    op: dict[str, Any] = schema["paths"][path]["get"]
    return op


def test_protected_operations_carry_the_security_requirement(verifier: TokenVerifier) -> None:
    schema = build_app(verifier).openapi()
    assert schema["components"]["securitySchemes"] == {
        SCHEME_NAME: {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An Auth0 access token (JWT) in the Authorization header.",
        }
    }
    assert operation(schema, "/me")["security"] == [{SCHEME_NAME: []}]
    assert operation(schema, "/read")["security"] == [
        {SCHEME_NAME: ["read:messages", "read:users"]}
    ]
    assert operation(schema, "/delete")["security"] == [{SCHEME_NAME: ["delete:messages"]}]
    assert operation(schema, "/admin/stats")["security"] == [{SCHEME_NAME: ["admin:all"]}]
    assert "security" not in operation(schema, "/public")


def test_configure_openapi_documents_400_401_and_403(verifier: TokenVerifier) -> None:
    app = build_app(verifier)
    configure_openapi(app, verifier.config)
    schema = app.openapi()
    me = operation(schema, "/me")["responses"]
    read = operation(schema, "/read")["responses"]
    assert set(me) == {"200", "400", "401"}
    assert set(read) == {"200", "400", "401", "403"}
    assert "invalid_request" in me["400"]["description"]
    assert "WWW-Authenticate" in read["403"]["headers"]
    ref = read["401"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    assert schema["components"]["schemas"][name]["required"] == [
        "error",
        "error_description",
        "reason",
    ]
    assert set(operation(schema, "/public")["responses"]) == {"200"}
    # No client id: the bearer scheme stays.
    assert schema["components"]["securitySchemes"][SCHEME_NAME]["type"] == "http"
    assert app.swagger_ui_init_oauth is None
    # Idempotent: asking again changes nothing.
    assert app.openapi() == schema


def test_configure_openapi_keeps_responses_a_route_declares(verifier: TokenVerifier) -> None:
    app = FastAPI()

    @app.get("/x", responses={401: {"description": "Log in first"}})
    async def x(claims: ClaimsDep) -> None:
        return None

    configure_openapi(app)
    assert operation(app.openapi(), "/x")["responses"]["401"] == {"description": "Log in first"}


def test_oauth2_scheme_with_a_client_id(verifier: TokenVerifier) -> None:
    config = Auth0Config(
        domain="tenant.eu.auth0.com", audience="https://api.example.test", client_id="abcXYZ123"
    )
    app = build_app(verifier)
    configure_openapi(app, config)
    schema = app.openapi()
    assert schema["components"]["securitySchemes"][SCHEME_NAME] == {
        "type": "oauth2",
        "description": "Log in with Auth0 (authorization code with PKCE).",
        "flows": {
            "authorizationCode": {
                "authorizationUrl": "https://tenant.eu.auth0.com/authorize",
                "tokenUrl": "https://tenant.eu.auth0.com/oauth/token",
                "scopes": {
                    s: s
                    for s in (
                        "admin",
                        "admin:all",
                        "delete:messages",
                        "read:messages",
                        "read:users",
                    )
                },
            }
        },
    }
    assert operation(schema, "/read")["security"] == [
        {SCHEME_NAME: ["read:messages", "read:users"]}
    ]
    assert app.swagger_ui_init_oauth == {
        "clientId": "abcXYZ123",
        "usePkceWithAuthorizationCodeGrant": True,
        "additionalQueryStringParams": {"audience": "https://api.example.test"},
    }


def test_oauth2_urls_from_an_issuer_url() -> None:
    config = Auth0Config(
        issuer="https://login.example.test/", audience="https://api", client_id="cid"
    )
    app = FastAPI()

    @app.get("/x")
    async def x(claims: ClaimsDep) -> None:
        return None

    configure_openapi(app, config)
    flow = app.openapi()["components"]["securitySchemes"][SCHEME_NAME]["flows"]
    assert flow["authorizationCode"]["authorizationUrl"] == "https://login.example.test/authorize"
    assert flow["authorizationCode"]["tokenUrl"] == "https://login.example.test/oauth/token"


@pytest.mark.parametrize(
    "issuer",
    [
        "https://kc.example.test/realms/myrealm",  # Keycloak
        "https://dev-1.okta.example.test/oauth2/default",  # Okta
        "https://login.microsoftonline.example.test/tid/v2.0",  # Entra ID
        "https://cognito-idp.example.test/eu-west-1_pool",  # Cognito
    ],
)
def test_an_issuer_with_a_path_needs_its_login_urls(issuer: str) -> None:
    # /authorize and /oauth/token are Auth0's: guessed for these issuers, "Authorize"
    # in Swagger UI went to a 404 at the issuer (found by a user audit).
    config = Auth0Config(issuer=issuer, audience="https://api", client_id="cid")
    with pytest.raises(ConfigError, match="authorization_url= and token_url="):
        configure_openapi(FastAPI(), config)
    app = FastAPI()

    @app.get("/x")
    async def x(claims: ClaimsDep) -> None:
        return None

    configure_openapi(
        app,
        config,
        authorization_url=f"{issuer}/protocol/openid-connect/auth",
        token_url=f"{issuer}/protocol/openid-connect/token",
    )
    scheme = app.openapi()["components"]["securitySchemes"][SCHEME_NAME]
    flow = scheme["flows"]["authorizationCode"]
    assert flow["authorizationUrl"] == f"{issuer}/protocol/openid-connect/auth"
    assert flow["tokenUrl"] == f"{issuer}/protocol/openid-connect/token"
    assert "Auth0" not in scheme["description"]
    assert app.swagger_ui_init_oauth is not None
    assert app.swagger_ui_init_oauth["usePkceWithAuthorizationCodeGrant"] is True


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"authorization_url": "https://idp.example.test/auth"}, "both"),
        ({"token_url": "https://idp.example.test/token"}, "both"),
        (
            {"authorization_url": "http://idp.example.test/a", "token_url": "https://i/t"},
            "authorization_url",
        ),
    ],
)
def test_login_urls_are_checked(kwargs: dict[str, str], needle: str) -> None:
    config = Auth0Config(domain="t.auth0.com", audience="https://api", client_id="cid")
    with pytest.raises(ConfigError, match=needle):
        configure_openapi(FastAPI(), config, **kwargs)


def test_login_urls_without_a_client_id_are_a_mistake() -> None:
    config = Auth0Config(domain="t.auth0.com", audience="https://api")
    with pytest.raises(ConfigError, match="client_id"):
        configure_openapi(
            FastAPI(),
            config,
            authorization_url="https://t.auth0.com/authorize",
            token_url="https://t.auth0.com/oauth/token",
        )


def test_the_same_requirement_is_the_same_dependency() -> None:
    assert require_scopes("read:messages") is require_scopes("read:messages")
    assert require_scopes("a", "b", any_of=True) is require_scopes("a", "b", any_of=True)
    assert require_scopes("a") is not require_scopes("a", any_of=True)
    assert require_scopes("a") is not require_permissions("a")
    # One requirement whatever the order of its names (a set of scopes), so that a
    # test's override written in another order than the route's still reaches it.
    assert require_scopes("a", "b") is require_scopes("b", "a")
    assert require_permissions("x", "y", any_of=True) is require_permissions("y", "x", any_of=True)
    # Its repr says what it requires, the names sorted, as published.
    assert "require_scopes('read:c')" in repr(require_scopes("read:c"))
    assert "require_scopes('x:a', 'x:b')" in repr(require_scopes("x:b", "x:a"))
    assert "any_of=True" in repr(require_permissions("p", any_of=True))


@pytest.mark.anyio
async def test_dependency_overrides_reach_requirements_written_inline(
    verifier: TokenVerifier,
) -> None:
    # How teams fake auth in tests: override the dependency. build_app writes
    # require_scopes(...) inline in each route, as the README does.
    fake = Claims({"sub": "faked", "scope": "", "permissions": []})

    async def faked() -> Claims:
        return fake

    app = build_app(verifier)
    for dependency in (
        require_token,
        # build_app writes ("read:messages", "read:users"): the order does not matter.
        require_scopes("read:users", "read:messages"),
        require_permissions("delete:messages"),
    ):
        app.dependency_overrides[dependency] = faked
    async with client(app) as c:
        me, read, delete = [await c.get(p) for p in ("/me", "/read", "/delete")]
        read_any = await c.get("/read-any")  # not overridden: still enforced
    assert me.json() == {"sub": "faked"}
    assert (read.status_code, delete.status_code) == (200, 200)
    assert read_any.status_code == 401


def test_configure_openapi_keeps_a_swagger_setup_given_to_fastapi() -> None:
    config = Auth0Config(domain="t.auth0.com", audience="https://api", client_id="cid")
    mine = {"clientId": "other", "appName": "Mine"}
    app = FastAPI(swagger_ui_init_oauth=mine)
    configure_openapi(app, config)
    assert app.swagger_ui_init_oauth is mine


def test_swagger_ui_init_oauth_needs_a_client_id() -> None:
    with pytest.raises(ConfigError, match="client_id"):
        swagger_ui_init_oauth(Auth0Config(domain="t.auth0.com", audience="https://api"))


@pytest.mark.anyio
async def test_swagger_ui_page_sets_up_pkce(verifier: TokenVerifier) -> None:
    config = Auth0Config(domain="t.auth0.com", audience="https://api", client_id="cid")
    app = build_app(verifier)
    configure_openapi(app, config)
    async with client(app) as c:
        docs = await c.get("/docs")
        spec = await c.get("/openapi.json")
    assert docs.status_code == 200
    assert '"usePkceWithAuthorizationCodeGrant": true' in docs.text
    assert '"clientId": "cid"' in docs.text
    assert spec.json()["components"]["securitySchemes"][SCHEME_NAME]["type"] == "oauth2"


def test_configure_openapi_needs_fastapi() -> None:
    from starlette.applications import Starlette

    with pytest.raises(TypeError):
        configure_openapi(Starlette())  # type: ignore[arg-type]
