"""The per-request fast path: its structure stays as lean as measured in bench/README.md
(one FastAPI dependant for require_token/optional_token, a header check equivalent to
RFC 6750's token68 grammar, request.auth built lazily) without changing behaviour."""

from __future__ import annotations

import re
from typing import Annotated, Any

import httpx
import pytest
from _asgi import drive, http_scope
from fastapi import APIRouter, Depends, FastAPI, WebSocket
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.authentication import AuthCredentials
from starlette.requests import Request

from asgi_auth0._bearer import parse_authorization
from asgi_auth0._claims import Claims
from asgi_auth0._errors import InvalidRequestError
from asgi_auth0._middleware import Auth0Middleware
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.fastapi import (
    SCHEME_NAME,
    bearer_scheme,
    optional_token,
    require_permissions,
    require_scopes,
    require_token,
)
from asgi_auth0.testing import LocalIssuer


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def route_dependant(app: FastAPI, path: str) -> Dependant:
    """What FastAPI resolves on every request to ``path``, built as FastAPI builds it."""
    for route in app.router.routes:
        if isinstance(route, (APIRoute, APIWebSocketRoute)) and route.path == path:
            return get_dependant(path=route.path_format, call=route.endpoint)
    raise AssertionError(f"no route {path}")


def count_dependants(dependant: Dependant) -> int:
    return sum(1 + count_dependants(sub) for sub in dependant.dependencies)


# -- one dependant per request for require_token and optional_token -------------------


def test_require_token_and_optional_token_are_each_one_dependant() -> None:
    # Every level of dependency costs FastAPI several microseconds per request; the
    # token dependencies used to nest Security(bearer_scheme), which doubled that.
    app = FastAPI()

    @app.get("/me")
    async def me(claims: Annotated[Claims, Depends(require_token)]) -> None: ...

    @app.get("/maybe")
    async def maybe(claims: Annotated[Claims | None, Depends(optional_token)]) -> None: ...

    @app.websocket("/ws")
    async def ws(
        websocket: WebSocket, claims: Annotated[Claims, Depends(require_token)]
    ) -> None: ...

    for path, dependency in (("/me", require_token), ("/maybe", optional_token), ("/ws", None)):
        dependant = route_dependant(app, path)
        assert count_dependants(dependant) == 1, path
        (sub,) = dependant.dependencies
        assert sub.call is (dependency or require_token)
        assert sub.dependencies == []


def test_require_token_in_router_dependencies_is_one_dependant() -> None:
    router = APIRouter(dependencies=[Depends(require_token)])

    @router.get("/stats")
    async def stats() -> None: ...

    (route,) = router.routes
    assert isinstance(route, APIRoute)
    assert count_dependants(route.dependant) == 1
    assert route.dependant.dependencies[0].call is require_token


def test_scope_requirements_nest_exactly_one_security_dependant() -> None:
    # FastAPI only puts scopes into a security requirement through Security(...), and
    # users write Depends(require_scopes(...)): two dependants is the floor. More
    # would be a regression.
    app = FastAPI()

    @app.get("/read")
    async def read(claims: Annotated[Claims, Depends(require_scopes("read:x"))]) -> None: ...

    @app.get("/delete")
    async def delete(claims: Annotated[Claims, Depends(require_permissions("del:x"))]) -> None: ...

    for path, scope in (("/read", "read:x"), ("/delete", "del:x")):
        dependant = route_dependant(app, path)
        assert count_dependants(dependant) == 2
        (inner,) = dependant.dependencies[0].dependencies
        # A private twin of bearer_scheme: the same OpenAPI scheme, but it does not
        # enforce the declared names as OAuth scopes (permissions are not scopes).
        assert inner.call is not bearer_scheme
        assert inner.call.model is bearer_scheme.model
        assert inner.call.scheme_name == SCHEME_NAME
        assert inner.own_oauth_scopes == [scope]


def test_the_token_dependencies_are_the_same_openapi_scheme_as_bearer_scheme() -> None:
    app = FastAPI()

    @app.get("/both")
    async def both(
        claims: Annotated[Claims, Depends(require_token)],
        scoped: Annotated[Claims, Depends(require_scopes("read:x"))],
        maybe: Annotated[Claims | None, Depends(optional_token)],
    ) -> None: ...

    @app.get("/token-first")
    async def token_only(claims: Annotated[Claims, Depends(require_token)]) -> None: ...

    schema = app.openapi()
    # One scheme, merged by name: the scopes of require_scopes, nothing duplicated.
    assert schema["paths"]["/both"]["get"]["security"] == [{SCHEME_NAME: ["read:x"]}]
    assert schema["paths"]["/token-first"]["get"]["security"] == [{SCHEME_NAME: []}]
    assert schema["components"]["securitySchemes"] == {
        SCHEME_NAME: {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An Auth0 access token (JWT) in the Authorization header.",
        }
    }
    assert require_token.model is bearer_scheme.model
    assert optional_token.model is bearer_scheme.model


@pytest.mark.anyio
async def test_the_token_dependencies_can_be_overridden_and_called_by_hand(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    app = FastAPI()

    @app.get("/me")
    async def me(claims: Annotated[Claims, Depends(require_token)]) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.get("/by-hand")
    async def by_hand(request: Request) -> dict[str, Any]:
        claims = await require_token(request)
        maybe = await optional_token(request)
        return {"sub": claims.sub, "same": maybe is claims}

    app.add_middleware(Auth0Middleware, verifier=verifier)
    token = issuer.token(sub="auth0|hand")
    async with client(app) as c:
        r = await c.get("/by-hand", headers={"Authorization": f"Bearer {token}"})
        assert r.json() == {"sub": "auth0|hand", "same": True}
        anonymous = await c.get("/by-hand")
        assert anonymous.status_code == 401
        app.dependency_overrides[require_token] = lambda: Claims({"sub": "auth0|fake"})
        r = await c.get("/me")
    assert r.json() == {"sub": "auth0|fake"}
    assert "require_token" in repr(require_token)


# -- the Authorization header check ---------------------------------------------------

_TOKEN68 = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")


@pytest.mark.parametrize("byte", range(256))
def test_every_byte_inside_a_token_is_judged_as_the_token68_grammar_judges_it(byte: int) -> None:
    # The check is a bytes.translate deletion rather than this regular expression; the
    # two must agree on every byte, in the middle of a token and before its padding.
    for credentials in (b"ab" + bytes([byte]) + b"cd", b"ab" + bytes([byte]) + b"=="):
        value = b"Bearer " + credentials
        if byte in b" \t":
            continue  # separators: covered by the whitespace tests in test_bearer.py
        if _TOKEN68.fullmatch(credentials):
            assert parse_authorization(value) == credentials.decode("ascii")
        else:
            with pytest.raises(InvalidRequestError):
                parse_authorization(value)


async def _no_content(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _status_for(app: Any, value: bytes) -> int:
    sent = await drive(app, http_scope([(b"authorization", value)]), [])
    status: int = sent[0]["status"]
    return status


@pytest.mark.anyio
async def test_the_middleware_checks_token68_only_for_failing_tokens_yet_judges_alike(
    verifier: TokenVerifier,
) -> None:
    # The middleware skips the token68 pass for tokens the verifier accepts (they are
    # base64url segments) and checks it only when verification fails: every byte
    # must still give 400 exactly where the grammar says the credentials are malformed.
    app = Auth0Middleware(_no_content, verifier=verifier)
    assert app._token68_first is False  # the lazy path is the one under test here
    for byte in range(256):
        if byte in b" \t":
            continue
        for credentials in (b"ab" + bytes([byte]) + b"cd", b"ab" + bytes([byte]) + b"=="):
            expected = 401 if _TOKEN68.fullmatch(credentials) else 400
            assert await _status_for(app, b"Bearer " + credentials) == expected, credentials


class _AcceptsAnything(TokenVerifier):
    """A verifier subclass that trusts whatever it is given (opaque tokens, say)."""

    async def verify(self, token: str) -> Claims:
        return Claims({"sub": token})


@pytest.mark.anyio
async def test_a_verifier_subclass_gets_the_token68_check_up_front(
    issuer: LocalIssuer,
) -> None:
    # Only TokenVerifier's own verify() implies the syntax; anything else must not be
    # handed credentials the grammar refuses.
    app = Auth0Middleware(_no_content, verifier=_AcceptsAnything(issuer.config()))
    assert await _status_for(app, b"Bearer opaque-token") == 204
    assert await _status_for(app, b"Bearer not,token68") == 400
    assert await _status_for(app, b"Bearer caf\xe9") == 400


# -- request.auth is built lazily but behaves as before --------------------------------


@pytest.mark.anyio
async def test_request_auth_scopes_are_a_fresh_sorted_list_per_request(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    seen: list[AuthCredentials] = []
    app = FastAPI()

    @app.get("/auth")
    async def auth(request: Request) -> list[str]:
        seen.append(request.auth)
        scopes: list[str] = request.auth.scopes
        answer = list(scopes)
        scopes.append("added:by-the-app")  # must not leak into the next request
        return answer

    app.add_middleware(Auth0Middleware, verifier=verifier)
    token = issuer.token(scope="write:b read:a", permissions=["admin"])
    async with client(app) as c:
        first = await c.get("/auth", headers={"Authorization": f"Bearer {token}"})
        second = await c.get("/auth", headers={"Authorization": f"Bearer {token}"})
    assert first.json() == second.json() == ["authenticated", "read:a", "write:b"]
    assert all(isinstance(a, AuthCredentials) for a in seen)
    assert seen[0] is not seen[1]
    assert seen[0].scopes is not seen[1].scopes
    seen[1].scopes = ["replaced"]  # assignable, as on Starlette's own AuthCredentials
    assert seen[1].scopes == ["replaced"]
