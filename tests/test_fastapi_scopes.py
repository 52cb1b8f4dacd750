"""FastAPI's own scope pattern on asgi_auth0 dependencies (``Security(dep, scopes=[...])``
is enforced, not only published), the OpenAPI requirements for ``any_of`` and
``optional_token``, the type of ``rejection_handler`` and the names
``require_scopes``/``require_permissions`` accept."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from _asgi import Message, drive, ws_scope
from _typecheckers import assert_mypy_strict_passes
from fastapi import APIRouter, Depends, FastAPI, Security, WebSocket
from fastapi.security import SecurityScopes
from starlette.requests import Request

import asgi_auth0.fastapi
from asgi_auth0._claims import Claims
from asgi_auth0._errors import ConfigError
from asgi_auth0._middleware import Auth0Middleware
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.fastapi import (
    bearer_scheme,
    configure_openapi,
    optional_token,
    require_permissions,
    require_scopes,
    require_token,
)
from asgi_auth0.testing import LocalIssuer

# -- names given to require_scopes / require_permissions -----------------------------------


@pytest.mark.parametrize("factory", [require_scopes, require_permissions])
@pytest.mark.parametrize("given", [["read:a", "read:b"], ("read:a",), {"read:a"}])
def test_a_list_of_names_is_a_config_error_saying_what_to_do(
    factory: Callable[..., Any], given: object
) -> None:
    # Before: TypeError: unhashable type: 'list' (a tuple got "not a valid scope
    # token", which does not say what to do either).
    with pytest.raises(ConfigError, match="separate argument") as caught:
        factory(given)
    assert factory.__name__ in str(caught.value)


@pytest.mark.parametrize("factory", [require_scopes, require_permissions])
@pytest.mark.parametrize("given", [5, None, b"read:a", True])
def test_a_name_that_is_not_a_string_is_a_config_error(
    factory: Callable[..., Any], given: object
) -> None:
    with pytest.raises(ConfigError, match="names must be strings"):
        factory("read:a", given)


# -- scopes declared with FastAPI's Security(..., scopes=[...]) ---------------------------


async def current_user(
    security_scopes: SecurityScopes, claims: Annotated[Claims, Depends(require_token)]
) -> Claims:
    # FastAPI's documented pattern: a user's own dependency under Security(scopes=...).
    return claims


def scoped_app(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI()

    @app.get("/token")
    async def token(
        claims: Annotated[Claims, Security(require_token, scopes=["delete:items"])],
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.get("/scopes")
    async def scopes(
        claims: Annotated[Claims, Security(require_scopes("read:items"), scopes=["admin"])],
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.get("/scopes-any")
    async def scopes_any(
        claims: Annotated[
            Claims, Security(require_scopes("read:a", "read:b", any_of=True), scopes=["admin"])
        ],
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.get("/permissions")
    async def permissions(
        claims: Annotated[Claims, Security(require_permissions("delete:items"), scopes=["admin"])],
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.get("/optional")
    async def optional(
        claims: Annotated[Claims | None, Security(optional_token, scopes=["admin"])],
    ) -> dict[str, Any]:
        return {"sub": None if claims is None else claims.sub}

    @app.get("/bearer", dependencies=[Security(bearer_scheme, scopes=["admin"])])
    async def bearer_route() -> dict[str, Any]:
        return {}

    @app.get("/bearer-unscoped", dependencies=[Security(bearer_scheme)])
    async def bearer_unscoped() -> dict[str, Any]:
        return {}

    @app.get("/parent")
    async def parent(
        claims: Annotated[Claims, Security(current_user, scopes=["admin"])],
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    router = APIRouter(dependencies=[Security(require_token, scopes=["admin"])])

    @router.get("/router/stats")
    async def stats() -> dict[str, Any]:
        return {}

    app.include_router(router)

    @app.websocket("/ws")
    async def ws(
        websocket: WebSocket,
        claims: Annotated[Claims, Security(require_token, scopes=["chat:join"])],
    ) -> None:
        await websocket.accept()
        await websocket.close()

    app.add_middleware(Auth0Middleware, verifier=verifier)
    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "scope", "permissions", "status", "challenge_scope"),
    [
        # The audit's case: OpenAPI advertised delete:items, read:items got 200.
        ("/token", "read:items", None, 403, "delete:items"),
        ("/token", "read:items delete:items", None, 200, None),
        ("/token", None, ["delete:items"], 403, "delete:items"),  # a permission is no scope
        ("/scopes", "read:items", None, 403, "admin read:items"),
        ("/scopes", "admin", None, 403, "admin read:items"),
        ("/scopes", "admin read:items", None, 200, None),
        ("/scopes-any", "read:b", None, 403, "admin"),
        ("/scopes-any", "admin", None, 403, "read:a read:b admin"),
        ("/scopes-any", "admin read:b", None, 200, None),
        ("/permissions", None, ["delete:items"], 403, "admin"),
        ("/permissions", "admin", None, 403, "delete:items"),
        # The permission's name is not required as a scope: a private scheme carries it.
        ("/permissions", "admin", ["delete:items"], 200, None),
        ("/optional", "read:items", None, 403, "admin"),
        ("/optional", "admin", None, 200, None),
        ("/bearer", "read:items", None, 403, "admin"),
        ("/bearer", "admin", None, 200, None),
        ("/parent", "read:items", None, 403, "admin"),
        ("/parent", "admin", None, 200, None),
        ("/router/stats", "read:items", None, 403, "admin"),
        ("/router/stats", "admin", None, 200, None),
    ],
)
async def test_declared_scopes_are_required_oauth_scopes(
    verifier: TokenVerifier,
    issuer: LocalIssuer,
    path: str,
    scope: str | None,
    permissions: list[str] | None,
    status: int,
    challenge_scope: str | None,
) -> None:
    token = issuer.token(scope=scope, permissions=permissions)
    async with client(scoped_app(verifier)) as c:
        r = await c.get(path, headers=bearer(token))
    assert r.status_code == status, r.text
    if status == 403:
        # The middleware's RFC 6750 answer, as for require_scopes; not FastAPI's.
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="api", error="insufficient_scope", ')
        assert challenge.endswith(f'scope="{challenge_scope}"')
        assert r.json()["error"] == "insufficient_scope"


async def _report(
    _read: Annotated[Claims, Depends(require_scopes("read:reports"))],
    _export: Annotated[Claims, Depends(require_scopes("export:reports"))],
    _perm: Annotated[Claims, Depends(require_permissions("audit"))],
    _one_of: Annotated[Claims, Depends(require_scopes("x", "y", any_of=True))],
) -> dict[str, Any]:
    return {}


async def _declared(
    _a: Annotated[Claims, Depends(require_scopes("a"))],
    _d: Annotated[Claims, Security(require_token, scopes=["d"])],
) -> dict[str, Any]:
    return {}


async def _in_router(_a: Annotated[Claims, Depends(require_scopes("a"))]) -> dict[str, Any]:
    return {}


def sibling_app(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=verifier)
    app.add_api_route("/report", _report)
    app.add_api_route("/declared", _declared)
    router = APIRouter(dependencies=[Depends(require_scopes("r"))])
    router.add_api_route("/in", _in_router)
    app.include_router(
        router, prefix="/router", dependencies=[Security(require_token, scopes=["i"])]
    )
    return app


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "scope", "challenge_scope"),
    [
        # Each dependency named only its own: a client asking for exactly that scope
        # got the other one's 403 next. The failing one comes first, then the rest.
        ("/report", "read:reports x", "export:reports read:reports"),
        ("/report", "export:reports x", "read:reports export:reports"),
        ("/report", "x", "read:reports export:reports"),
        # Permissions are no OAuth scopes, and any_of names are alternatives: neither
        # is added to another's shortfall; an any_of shortfall names its alternatives
        # (RFC 6750 has no "one of"), then the rest.
        ("/report", "read:reports export:reports", "x y read:reports export:reports"),
        ("/declared", "d", "a d"),
        ("/declared", "a", "d a"),
        # The router's and include_router's requirements count too.
        # (include_router's dependencies run first, then the router's, the route's.)
        ("/router/in", "a i", "r i a"),
        ("/router/in", "r i", "a i r"),
        ("/router/in", "a r", "i r a"),
    ],
)
async def test_a_scope_shortfall_names_every_scope_the_route_requires(
    verifier: TokenVerifier, issuer: LocalIssuer, path: str, scope: str, challenge_scope: str
) -> None:
    token = issuer.token(scope=scope, permissions=["audit"])
    async with client(sibling_app(verifier)) as c:
        r = await c.get(path, headers=bearer(token))
        ok = await c.get(
            path,
            headers=bearer(
                issuer.token(scope=" ".join([*challenge_scope.split(), "x"]), permissions=["audit"])
            ),
        )
    assert r.status_code == 403, r.text
    assert r.headers["www-authenticate"].endswith(f'scope="{challenge_scope}"')
    # What the challenge names is enough (with "x", for the one-of on /report).
    assert ok.status_code == 200, ok.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path",
    ["/token", "/scopes", "/permissions", "/optional", "/bearer", "/parent", "/router/stats"],
)
async def test_declared_scopes_need_a_token(verifier: TokenVerifier, path: str) -> None:
    # Security(optional_token, scopes=[...]) included: the scopes make the token required.
    async with client(scoped_app(verifier)) as c:
        r = await c.get(path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="api"'
    assert r.json()["reason"] == "missing_token"


# Module level: the route's annotations are strings, resolved in the module's globals.
UNSATISFIABLE = "read:bulk write:bulk"


@pytest.mark.anyio
async def test_a_declared_scope_no_token_can_have_is_logged_once(
    verifier: TokenVerifier,
    issuer: LocalIssuer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One string holding two scopes: every request is a 403 that looks like the
    # caller's fault, so the application's log has to say whose mistake it is.
    unsatisfiable = UNSATISFIABLE
    # "Once" is per process; each backend's run starts from nothing reported.
    monkeypatch.setattr(asgi_auth0.fastapi, "_REPORTED", set())
    app = FastAPI()

    @app.get("/bulk")
    async def bulk(
        claims: Annotated[Claims, Security(require_token, scopes=[UNSATISFIABLE, "admin"])],
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.get("/fine")
    async def fine(
        claims: Annotated[Claims, Security(require_token, scopes=["admin"])],
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    app.add_middleware(Auth0Middleware, verifier=verifier)
    caplog.set_level(logging.ERROR, logger="asgi_auth0.fastapi")
    async with client(app) as c:
        fine_short = await c.get("/fine", headers=bearer(issuer.token(scope="read:items")))
        assert fine_short.status_code == 403
        assert not caplog.records  # a plain shortfall is the caller's, not the code's
        # Even a token whose scope claim reads the same string cannot have it.
        token = issuer.token(scope=f"{unsatisfiable} admin")
        first, second = [await c.get("/bulk", headers=bearer(token)) for _ in range(2)]
    assert first.status_code == second.status_code == 403
    errors = [r for r in caplog.records if r.name == "asgi_auth0.fastapi"]
    assert len(errors) == 1, "logged once per name, not per request"
    assert repr(unsatisfiable) in errors[0].getMessage()
    assert "'admin'" not in errors[0].getMessage()


@pytest.mark.anyio
async def test_a_permission_required_of_a_token_without_the_claim_is_explained_once(
    verifier: TokenVerifier,
    issuer: LocalIssuer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Auth0 writes no permissions claim unless the API's RBAC settings ask for it: the
    # 403 alone, with the scope the token does carry, points the wrong way.
    monkeypatch.setattr(asgi_auth0.fastapi, "_REPORTED", set())
    app = FastAPI()

    @app.get("/admin")
    async def admin(
        claims: Annotated[Claims, Depends(require_permissions("read:admin"))],
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    app.add_middleware(Auth0Middleware, verifier=verifier)
    caplog.set_level(logging.WARNING, logger="asgi_auth0.fastapi")
    async with client(app) as c:
        short = await c.get("/admin", headers=bearer(issuer.token(permissions=["read:x"])))
        assert short.status_code == 403
        assert not caplog.records  # a token with the claim simply lacks the permission
        token = issuer.token(scope="read:admin")  # RBAC off: the name is in scope only
        first, second = [await c.get("/admin", headers=bearer(token)) for _ in range(2)]
    assert first.status_code == second.status_code == 403
    warnings = [r for r in caplog.records if r.name == "asgi_auth0.fastapi"]
    assert len(warnings) == 1, "logged once, not per request"
    assert "Add Permissions in the Access Token" in warnings[0].getMessage()


@pytest.mark.anyio
async def test_without_declared_scopes_nothing_changes(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    # Security(bearer_scheme) alone only declares the scheme, as before.
    async with client(scoped_app(verifier)) as c:
        anon = await c.get("/bearer-unscoped")
        ok = await c.get("/bearer-unscoped", headers=bearer(issuer.token()))
    assert anon.status_code == ok.status_code == 200


@pytest.mark.anyio
async def test_declared_scopes_on_a_websocket_route(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    async def connect(scope: str) -> list[Message]:
        token = issuer.token(scope=scope)
        handshake = ws_scope([(b"authorization", f"Bearer {token}".encode())])
        return await drive(scoped_app(verifier), handshake, [{"type": "websocket.connect"}])

    short = await connect("chat:read")
    assert short[0]["type"] == "websocket.http.response.start"
    assert short[0]["status"] == 403
    assert dict(short[0]["headers"])[b"www-authenticate"].endswith(b'scope="chat:join"')
    ok = await connect("chat:join")
    assert [m["type"] for m in ok] == ["websocket.accept", "websocket.close"]


@pytest.mark.anyio
async def test_a_hand_call_declares_no_scopes(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    # ``await require_token(request)`` inside an endpoint still works as documented.
    app = FastAPI()

    @app.get("/hand")
    async def hand(request: Request) -> dict[str, Any]:
        claims = await require_token(request)
        maybe = await optional_token(request)
        return {"sub": claims.sub, "same": maybe is claims}

    app.add_middleware(Auth0Middleware, verifier=verifier)
    async with client(app) as c:
        r = await c.get("/hand", headers=bearer(issuer.token(sub="auth0|h")))
    assert r.json() == {"sub": "auth0|h", "same": True}


# -- OpenAPI: any_of alternatives and optional tokens --------------------------------------


def openapi_app(*, configure: bool = True, **middleware: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/any")
    async def any_route(
        claims: Annotated[Claims, Depends(require_scopes("read:a", "read:b", any_of=True))],
    ) -> None: ...

    @app.get("/any-declared")
    async def any_declared(
        claims: Annotated[
            Claims, Security(require_scopes("read:a", "read:b", any_of=True), scopes=["admin"])
        ],
    ) -> None: ...

    @app.get("/any-and-all", dependencies=[Depends(require_scopes("read:c"))])
    async def any_and_all(
        claims: Annotated[Claims, Depends(require_permissions("p:1", "p:2", any_of=True))],
    ) -> None: ...

    @app.get("/any-met", dependencies=[Depends(require_scopes("read:a"))])
    async def any_met(
        claims: Annotated[Claims, Depends(require_scopes("read:a", "read:b", any_of=True))],
    ) -> None: ...

    @app.get("/two-groups")
    async def two_groups(
        x: Annotated[Claims, Depends(require_scopes("a", "b", any_of=True))],
        y: Annotated[Claims, Depends(require_scopes("c", "d", any_of=True))],
    ) -> None: ...

    @app.get("/too-many")
    async def too_many(
        a: Annotated[Claims, Depends(require_scopes("a1", "a2", "a3", any_of=True))],
        b: Annotated[Claims, Depends(require_scopes("b1", "b2", "b3", any_of=True))],
        c: Annotated[Claims, Depends(require_scopes("c1", "c2", any_of=True))],
    ) -> None:
        """Too many."""

    @app.get("/optional")
    async def optional(claims: Annotated[Claims | None, Depends(optional_token)]) -> None: ...

    @app.get("/optional-scoped")
    async def optional_scoped(
        claims: Annotated[Claims | None, Security(optional_token, scopes=["admin"])],
    ) -> None: ...

    @app.get("/optional-and-token", dependencies=[Depends(require_token)])
    async def optional_and_token(
        claims: Annotated[Claims | None, Depends(optional_token)],
    ) -> None: ...

    router = APIRouter(prefix="/r", dependencies=[Depends(optional_token)])

    @router.get("/any")
    async def router_any(
        claims: Annotated[Claims, Depends(require_scopes("read:a", "read:b", any_of=True))],
    ) -> None: ...

    @router.get("/optional")
    async def router_optional() -> None: ...

    app.include_router(router)
    if middleware:
        app.add_middleware(Auth0Middleware, **middleware)
    if configure:
        configure_openapi(app)
    return app


def security_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {path: item["get"].get("security") for path, item in schema["paths"].items()}


def test_any_of_is_published_as_alternatives() -> None:
    app = openapi_app()
    first = security_of(app.openapi())
    # FastAPI caches its document and configure_openapi rewrites that same object: a
    # second build must not rewrite the rewritten requirements again.
    assert security_of(app.openapi()) == first
    assert first["/any"] == [{"Auth0": ["read:a"]}, {"Auth0": ["read:b"]}]
    assert first["/r/any"] == [{"Auth0": ["read:a"]}, {"Auth0": ["read:b"]}]
    # Declared scopes and all-of requirements are in every alternative.
    assert first["/any-declared"] == [
        {"Auth0": ["admin", "read:a"]},
        {"Auth0": ["admin", "read:b"]},
    ]
    assert first["/any-and-all"] == [{"Auth0": ["read:c", "p:1"]}, {"Auth0": ["read:c", "p:2"]}]
    # read:a is needed anyway, and it satisfies the any_of.
    assert first["/any-met"] == [{"Auth0": ["read:a"]}]
    assert first["/two-groups"] == [
        {"Auth0": ["a", "c"]},
        {"Auth0": ["a", "d"]},
        {"Auth0": ["b", "c"]},
        {"Auth0": ["b", "d"]},
    ]


def test_too_many_alternatives_are_described_in_words() -> None:
    operation = openapi_app().openapi()["paths"]["/too-many"]["get"]
    # 3 * 3 * 2 = 18 alternatives: the merged requirement stays, the description says it.
    assert operation["security"] == [{"Auth0": ["a1", "a2", "a3", "b1", "b2", "b3", "c1", "c2"]}]
    assert operation["description"].startswith("Too many.\n\nNeeds one scope of each group:")
    assert "`a1` or `a2` or `a3`; `b1` or `b2` or `b3`; `c1` or `c2`" in operation["description"]


def test_an_optional_token_is_published_as_optional() -> None:
    security = security_of(openapi_app().openapi())
    assert security["/optional"] == [{}, {"Auth0": []}]
    assert security["/r/optional"] == [{}, {"Auth0": []}]
    # Scopes make the token required; so does another dependency that requires one.
    assert security["/optional-scoped"] == [{"Auth0": ["admin"]}]
    assert security["/optional-and-token"] == [{"Auth0": []}]


def test_a_fail_closed_middleware_still_requires_the_optional_token(
    verifier: TokenVerifier,
) -> None:
    app = openapi_app(verifier=verifier, require_token=True, public_paths=["/optional"])
    security = security_of(app.openapi())
    assert security["/optional"] == [{}, {"Auth0": []}]  # public: the token is optional
    assert security["/r/optional"] == [{"Auth0": []}]  # behind the middleware: required
    assert security_of(app.openapi()) == security


def test_without_configure_openapi_fastapi_publishes_its_own_form() -> None:
    # The rewrite is configure_openapi's; FastAPI alone merges and cannot say "optional".
    security = security_of(openapi_app(configure=False).openapi())
    assert security["/any"] == [{"Auth0": ["read:a", "read:b"]}]
    assert security["/optional"] == [{"Auth0": []}]


# -- rejection_handler's type ------------------------------------------------------------

_USER_APP = """\
from fastapi import FastAPI
from starlette.applications import Starlette

from asgi_auth0 import AuthenticationRejected, rejection_handler

app = FastAPI()
app.add_exception_handler(AuthenticationRejected, rejection_handler)
plain = Starlette(exception_handlers={AuthenticationRejected: rejection_handler})
"""


@pytest.mark.timeout(60)
def test_registering_rejection_handler_as_documented_passes_mypy_strict(
    tmp_path: Path,
) -> None:
    # The README's registration line failed `mypy --strict` in user code with
    # [arg-type]: the handler returned `Response | None`, which is neither of
    # Starlette's handler types.
    (tmp_path / "user_app.py").write_text(_USER_APP)
    # Only the user's file is judged; the library has its own mypy run.
    assert_mypy_strict_passes(tmp_path, ["user_app.py"], "--follow-imports=silent")
