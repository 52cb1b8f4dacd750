"""Misconfigurations a team makes putting asgi_auth0 in front of an API (audit 19).

The project promises to be impossible to misconfigure silently: a mistake should be a
``ConfigError`` at construction, a warning at startup, or a rejection whose log line
names the cause. Each test here pins one answer: the mistakes the catalogue found
silent or unexplained (now refused or explained), and the answers that already named
the cause and no other test file pinned.

Keys come from a LocalIssuer: as a static key set where no fetch is involved, over
its real HTTP server on 127.0.0.1 where the fetch is the point.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import fastapi.routing
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Security, WebSocket
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection

import asgi_auth0.fastapi
from asgi_auth0 import (
    Auth0Config,
    Auth0Middleware,
    Claims,
    ConfigError,
    InvalidTokenError,
    KeySetError,
    StaticKeySet,
    TokenVerifier,
    require_permissions,
    require_scopes,
    require_token,
)
from asgi_auth0._public import PublicPaths
from asgi_auth0._signing import PrivateKey
from asgi_auth0.testing import LocalIssuer

API = "https://api.example.com"
COGNITO = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123"
COGNITO_CLIENT = "3n4b5urk1ft4fl3mg5e62d9ado"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ENTRA = f"https://login.microsoftonline.com/{TENANT}/v2.0"
ENTRA_APP = "6e74172b-be56-4843-9ff4-e66a39bb12e3"


# -- helpers ---------------------------------------------------------------------------


def minting(
    key: PrivateKey, issuer: str = "https://tenant.example.test/", **kw: Any
) -> LocalIssuer:
    """An issuer that only mints (no server): its keys go in a StaticKeySet."""
    return LocalIssuer(issuer=issuer, private_key=key, kid="k1", **kw)


def static_verifier(minter: LocalIssuer, **overrides: Any) -> TokenVerifier:
    return TokenVerifier(minter.config(**overrides), key_set=StaticKeySet(minter.jwks))


def api(verifier: TokenVerifier, *scopes: str, **middleware: Any) -> FastAPI:
    """An app with /me (any token), /scoped (require_scopes(*scopes)) and /health."""
    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=verifier, **middleware)

    @app.get("/me")
    async def me(claims: Annotated[Claims, Depends(require_token)]) -> dict[str, str | None]:
        return {"sub": claims.sub}

    needed = require_scopes(*(scopes or ("read:messages",)))

    # A default, not Annotated[..., Depends(needed)]: with postponed annotations
    # FastAPI cannot see the local name in the annotation, and would read "claims"
    # as a required query parameter (422).
    @app.get("/scoped")
    async def scoped(claims: Claims = Depends(needed)) -> dict[str, bool]:  # noqa: B008
        return {"ok": True}

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return app


async def get(
    app: Any, path: str, token: str | None = None, *, root_path: str = ""
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(root_path + path, headers=headers)


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    """What an operator sees: asgi_auth0 records at ``level`` and above."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("asgi_auth0") and r.levelno >= level
    ]


def rejection_line(caplog: pytest.LogCaptureFixture) -> str:
    found = [line for line in lines(caplog) if line.startswith("request rejected:")]
    assert len(found) == 1, found
    return found[0]


@contextmanager
def server(key: PrivateKey, **kw: Any) -> Iterator[LocalIssuer]:
    with LocalIssuer(private_key=key, kid="k1", **kw) as issuer:
        yield issuer


# -- mistakes refused at construction (each was accepted, and let tokens in or none) --


@pytest.mark.anyio
async def test_cognito_in_aud_mode_lets_no_id_token_in(auth0_rsa_key: PrivateKey) -> None:
    try:
        config = Auth0Config(issuer=COGNITO, audience=COGNITO_CLIENT)
    except ConfigError as exc:  # the better answer: say so before any token arrives
        refused = str(exc)
    else:
        refused = ""
    if refused:
        assert "audience_claim" in refused
        return
    cognito = minting(auth0_rsa_key, COGNITO, audience=COGNITO_CLIENT)
    verifier = TokenVerifier(config, key_set=StaticKeySet(cognito.jwks))
    id_token = cognito.token(aud=COGNITO_CLIENT, token_use="id", email="a@example.com")
    with pytest.raises(InvalidTokenError):
        await verifier.verify(id_token)


@pytest.mark.parametrize(
    "settings",
    [
        {"domain": "tenant.eu.auth0.com", "audience": "https://tenant.eu.auth0.com/api/v2/"},
        {"domain": "tenant.eu.auth0.com", "audience": "https://tenant.eu.auth0.com/api/v2"},
        {"issuer": "https://login.acme.com/", "audience": "https://login.acme.com/api/v2/"},
    ],
)
def test_the_management_api_is_not_an_audience(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="Management API"):
        Auth0Config(**settings)


# websocket_query_param holding URL delimiters ('?access_token', 'access_token=', copied
# from a URL template) was accepted; the URL a browser builds by hand never carries that
# name, so every handshake was anonymous and the line said only missing_token.
@pytest.mark.parametrize(
    "name", ["?access_token", "access_token=", "token&v=1", "a\x00b", "access token", "#t"]
)
def test_a_query_parameter_name_with_url_delimiters_is_refused(
    auth0_rsa_key: PrivateKey, name: str
) -> None:
    verifier = static_verifier(minting(auth0_rsa_key))
    with pytest.raises(ConfigError, match=r"websocket_query_param .*give the parameter's name"):
        Auth0Middleware(FastAPI(), verifier=verifier, websocket_query_param=name)


@pytest.mark.parametrize("name", ["access_token", "t", "access.token~v-1", "AT_2"])
def test_a_query_parameter_name_of_unreserved_characters_is_accepted(
    auth0_rsa_key: PrivateKey, name: str
) -> None:
    verifier = static_verifier(minting(auth0_rsa_key))
    middleware = Auth0Middleware(FastAPI(), verifier=verifier, websocket_query_param=name)
    assert middleware._query_param == name


@pytest.mark.parametrize(
    "issuer",
    [
        "https://login.microsoftonline.com/{tenantid}/v2.0",
        "https://login.microsoftonline.com/common/v2.0",
        "https://login.microsoftonline.com/organizations/v2.0",
        "https://login.microsoftonline.com/consumers/v2.0",
    ],
)
def test_an_entra_tenant_placeholder_is_not_an_issuer(issuer: str) -> None:
    with pytest.raises(ConfigError, match="issuer"):
        Auth0Config(issuer=issuer, audience=ENTRA_APP)


@pytest.mark.parametrize("quoted", [f'"{API}"', f"'{API}'"])
def test_a_quoted_audience_is_refused(quoted: str) -> None:
    with pytest.raises(ConfigError, match="AUTH0_AUDIENCE"):
        Auth0Config.from_env({"AUTH0_DOMAIN": "tenant.eu.auth0.com", "AUTH0_AUDIENCE": quoted})


@pytest.mark.parametrize(
    "settings",
    [
        {
            "domain": "tenant.eu.auth0.com",
            "jwks_uri": "https://tenant.eu.auth0.com/.well-known/openid-configuration",
        },
        {
            "issuer": "https://sso.acme.com/realms/acme",
            "jwks_uri": "https://sso.acme.com/realms/acme/.well-known/openid-configuration",
        },
    ],
)
def test_the_discovery_url_is_not_a_jwks_uri(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="jwks_uri"):
        Auth0Config(audience=API, **settings)


def test_a_jwks_uri_of_another_auth0_tenant_is_refused() -> None:
    with pytest.raises(ConfigError, match="jwks_uri"):
        Auth0Config(
            domain="prod.eu.auth0.com",
            audience=API,
            jwks_uri="https://staging.eu.auth0.com/.well-known/jwks.json",
        )


class _Nobody(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        return None


# A leftover Starlette AuthenticationMiddleware inside Auth0Middleware overwrites
# scope['user']/['auth']: Starlette's @requires answered 403 to valid tokens, unlogged.
def test_an_authentication_middleware_inside_is_warned_about(
    auth0_rsa_key: PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_auth0")
    verifier = static_verifier(minting(auth0_rsa_key))
    inner = AuthenticationMiddleware(FastAPI(), backend=_Nobody())
    Auth0Middleware(inner, verifier=verifier)
    assert any("AuthenticationMiddleware" in line for line in lines(caplog, logging.WARNING))


def authentication_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        line
        for line in lines(caplog, logging.WARNING)
        if "runs inside Auth0Middleware and replaces the request.user" in line
    ]


@pytest.mark.anyio
async def test_an_authentication_middleware_added_first_is_warned_about_once(
    auth0_rsa_key: PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # The usual shape: added before Auth0Middleware, so it runs inside it. The warning
    # comes when Starlette builds the stack (the first request here), once.
    caplog.set_level(logging.WARNING, logger="asgi_auth0")
    issuer = minting(auth0_rsa_key, audience=API)
    app = FastAPI()
    app.add_middleware(AuthenticationMiddleware, backend=_Nobody())
    app.add_middleware(Auth0Middleware, verifier=static_verifier(issuer))
    for _ in range(2):
        assert (await get(app, "/health", issuer.token())).status_code == 404
    [warning] = authentication_warnings(caplog)
    assert warning.startswith("AuthenticationMiddleware runs inside Auth0Middleware")
    assert "Remove it: Auth0Middleware sets request.user and request.auth itself" in warning


class _OwnAuthentication(AuthenticationMiddleware):
    pass


def test_an_authentication_middleware_of_a_directly_wrapped_app_is_warned_about(
    auth0_rsa_key: PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_auth0")
    app = FastAPI()
    app.add_middleware(_OwnAuthentication, backend=_Nobody())
    Auth0Middleware(app, verifier=static_verifier(minting(auth0_rsa_key)))
    [warning] = authentication_warnings(caplog)
    assert warning.startswith("_OwnAuthentication runs inside")


def test_an_authentication_middleware_of_a_mounted_app_is_left_alone(
    auth0_rsa_key: PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # A mounted app with a login of its own (an admin site) may mean it: no warning.
    caplog.set_level(logging.WARNING, logger="asgi_auth0")
    admin = FastAPI()
    admin.add_middleware(AuthenticationMiddleware, backend=_Nobody())
    app = FastAPI()
    app.mount("/admin", admin)
    Auth0Middleware(app, verifier=static_verifier(minting(auth0_rsa_key)))
    assert authentication_warnings(caplog) == []


@pytest.mark.anyio
async def test_an_authentication_middleware_outside_or_none_is_not_warned_about(
    auth0_rsa_key: PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # Outside, it runs first and ours sets request.user/auth after it: no harm.
    caplog.set_level(logging.WARNING, logger="asgi_auth0")
    issuer = minting(auth0_rsa_key, audience=API)
    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=static_verifier(issuer))
    app.add_middleware(AuthenticationMiddleware, backend=_Nobody())
    assert (await get(app, "/health", issuer.token())).status_code == 404
    Auth0Middleware(FastAPI(), verifier=static_verifier(issuer))
    assert authentication_warnings(caplog) == []


# -- Depends(require_scopes): the factory, not a call of it ----------------------------


async def _user_of_uncalled(claims: Annotated[Claims, Depends(require_scopes)]) -> Claims:
    return claims


async def _direct(claims: Annotated[Claims, Depends(require_scopes)]) -> dict[str, Any]:
    return {}


async def _nested(user: Annotated[Claims, Depends(_user_of_uncalled)]) -> dict[str, Any]:
    return {}


async def _socket(websocket: WebSocket) -> None:
    await websocket.close()


async def _fine(claims: Annotated[Claims, Depends(require_scopes("read:a"))]) -> dict[str, Any]:
    return {}


def test_a_factory_used_uncalled_is_refused_with_the_routes_named(
    auth0_rsa_key: PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # FastAPI took Depends(require_scopes) without a word: it read the factory's
    # parameters as query parameters, so every request got 422 ("scopes" missing),
    # and one sending ?scopes=x a 500. Now the middleware refuses the app when built:
    # in a route, in a dependency's own dependency, in a router's dependencies and
    # those given to include_router, in a mounted app.
    caplog.set_level(logging.ERROR, logger="asgi_auth0")
    app = FastAPI()
    app.add_api_route("/direct", _direct)
    app.add_api_route("/nested", _nested)
    app.add_api_route("/fine", _fine)
    router = APIRouter(dependencies=[Depends(require_permissions)])
    router.add_api_websocket_route("/socket", _socket)
    mounted = FastAPI()
    mounted.include_router(router)
    app.mount("/v1", mounted)
    included = APIRouter()
    included.add_api_route("/x", _fine)
    app.include_router(included, prefix="/p", dependencies=[Depends(require_permissions)])
    deep = FastAPI()
    deep.add_api_route("/deep", _direct)
    holder = APIRouter()
    holder.mount("/m", deep)  # a mount inside an included router
    app.include_router(holder, prefix="/h")
    with pytest.raises(ConfigError) as refused:
        Auth0Middleware(app, verifier=static_verifier(minting(auth0_rsa_key)))
    named, _, rest = str(refused.value).partition(": the dependency is the factory itself")
    # FastAPI before 0.16x drops the mounts of an included router: /deep is not served.
    routed = hasattr(fastapi.routing, "iter_route_contexts")
    assert sorted(named.split("; ")) == [
        *(["GET /deep: Depends(require_scopes)"] if routed else []),
        "GET /direct: Depends(require_scopes)",
        "GET /nested: Depends(require_scopes)",
        "GET /p/x: Depends(require_permissions)",
        "WS /socket: Depends(require_permissions)",
    ]
    assert 'Call it with the names: Depends(require_scopes("read:messages"))' in rest
    assert any("Auth0Middleware is misconfigured" in line for line in lines(caplog, logging.ERROR))


def test_scopes_written_as_a_string_are_refused_with_the_routes_named(
    auth0_rsa_key: PrivateKey,
) -> None:
    # FastAPI takes Security(..., scopes="read:messages") as one scope per character:
    # every request got 403 with scope="r e a d : m s g", logged at INFO only (each
    # character is a valid scope token). A tuple missing its comma is the same slip.
    app = FastAPI()

    @app.get("/string")
    async def string(
        claims: Annotated[Claims, Security(require_token, scopes="read:messages")],  # type: ignore[arg-type]
    ) -> dict[str, Any]:
        return {}

    @app.get("/tuple", dependencies=[Security(require_token, scopes=("write:a"))])  # type: ignore[arg-type]
    async def tuple_() -> dict[str, Any]:
        return {}

    @app.get("/fine", dependencies=[Security(require_token, scopes=["read:messages", "a"])])
    async def fine() -> dict[str, Any]:
        return {}

    with pytest.raises(ConfigError) as refused:
        Auth0Middleware(app, verifier=static_verifier(minting(auth0_rsa_key)))
    named, _, rest = str(refused.value).partition(": Security(..., scopes=) was given a string")
    assert sorted(named.split("; ")) == ["GET /string: 'read:messages'", "GET /tuple: 'write:a'"]
    assert "Give a list: Security(require_token, scopes=['read:messages'])" in rest
    # A one-letter scope alone is taken as meant.
    alone = FastAPI()

    @alone.get("/x", dependencies=[Security(require_token, scopes=["a"])])
    async def x() -> dict[str, Any]:
        return {}

    Auth0Middleware(alone, verifier=static_verifier(minting(auth0_rsa_key)))


@pytest.mark.anyio
async def test_an_app_with_a_factory_used_uncalled_serves_no_request(
    auth0_rsa_key: PrivateKey,
) -> None:
    # Through add_middleware the stack is built at the first request (or at lifespan
    # startup): the ConfigError comes then, and no route answers as if all were well.
    issuer = minting(auth0_rsa_key, audience=API)
    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=static_verifier(issuer))

    @app.get("/items")
    async def items(claims: Annotated[Claims, Security(require_scopes)]) -> dict[str, Any]:
        return {}

    with pytest.raises(ConfigError, match=r"GET /items: Depends\(require_scopes\)"):
        await get(app, "/items", issuer.token())


def test_factories_called_as_documented_are_accepted(auth0_rsa_key: PrivateKey) -> None:
    app = FastAPI(dependencies=[Depends(require_token)])

    @app.get("/a")
    async def a(
        claims: Annotated[Claims, Depends(require_scopes("read:a", any_of=True))],
        other: Annotated[Claims, Security(require_permissions("p"), scopes=["s"])],
    ) -> dict[str, Any]:
        return {}

    Auth0Middleware(app, verifier=static_verifier(minting(auth0_rsa_key)))


# -- every request refused: the log line now says why (it did not) -------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("configured", "token_aud", "hint"),
    [
        (API + "/", API, "trailing slash"),  # Auth0 API identifier typed with a slash
        (API, API + "/", "trailing slash"),
        ("https://API.example.com", API, "case"),
        (f"api://{ENTRA_APP}", ENTRA_APP, "api://"),  # Entra v2 aud is the bare app id
    ],
)
async def test_an_audience_near_miss_is_named(
    auth0_rsa_key: PrivateKey, configured: str, token_aud: str, hint: str
) -> None:
    issuer = minting(auth0_rsa_key, audience=token_aud)
    verifier = static_verifier(issuer, audience=configured)
    with pytest.raises(InvalidTokenError) as caught:
        await verifier.verify(issuer.token())
    assert caught.value.reason == "invalid_audience"
    assert hint in (caught.value.detail or "")


@pytest.mark.anyio
async def test_an_audience_that_is_the_tokens_azp_is_named(auth0_rsa_key: PrivateKey) -> None:
    spa = "kXb3lQ9cV2mN8pR4sT6uW1yZ0aBcDeFg"
    issuer = minting(auth0_rsa_key, audience=API)
    verifier = static_verifier(issuer, audience=spa)
    with pytest.raises(InvalidTokenError) as caught:
        await verifier.verify(issuer.token(azp=spa))
    assert caught.value.reason == "invalid_audience"
    assert "azp" in (caught.value.detail or "")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "claims",
    [
        {"azp": ["web-frontend", "x"]},
        {"client_id": {"id": "svc"}},
        {"azp": {"nested": ["a"]}, "client_id": ["b"]},
    ],
)
async def test_an_azp_or_client_id_of_any_json_type_is_a_401_not_a_crash(
    auth0_rsa_key: PrivateKey, claims: dict[str, Any]
) -> None:
    # The hint looks the token's azp and client_id up among the configured audiences:
    # an issuer-signed token (a mapper's output) may hold an array or an object
    # there, which must not turn a wrong audience into a TypeError, so a 500.
    issuer = minting(auth0_rsa_key, audience="billing-api")
    verifier = static_verifier(issuer, audience=API)
    with pytest.raises(InvalidTokenError) as caught:
        await verifier.verify(issuer.token(**claims))
    assert caught.value.reason == "invalid_audience"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "marker", [{"nonce": "n-0S6_WzA2Mj"}, {"at_hash": "77QmUPtjPfzWtF2AnpK9RQ"}]
)
async def test_an_id_token_sent_as_an_access_token_is_named(
    auth0_rsa_key: PrivateKey, marker: dict[str, str]
) -> None:
    # A SPA that sends the ID token from its login: aud is the application's id.
    spa = "kXb3lQ9cV2mN8pR4sT6uW1yZ0aBcDeFg"
    issuer = minting(auth0_rsa_key, audience=API)
    verifier = static_verifier(issuer)
    with pytest.raises(InvalidTokenError) as caught:
        await verifier.verify(issuer.token(aud=spa, **marker))
    assert caught.value.reason == "invalid_audience"
    assert "looks like an OpenID Connect ID token" in (caught.value.detail or "")
    # Another API's access token (neither claim) gets no such guess.
    with pytest.raises(InvalidTokenError) as other:
        await verifier.verify(issuer.token(aud="https://other-api.example.com"))
    assert other.value.detail == f"aud does not name this API (this API's audience: {API!r})"


@pytest.mark.anyio
async def test_an_entra_v1_token_of_the_configured_tenant_is_named(
    auth0_rsa_key: PrivateKey,
) -> None:
    entra = minting(auth0_rsa_key, ENTRA, audience=ENTRA_APP)
    verifier = static_verifier(entra)
    v1 = entra.token(iss=f"https://sts.windows.net/{TENANT}/", ver="1.0", tid=TENANT)
    with pytest.raises(InvalidTokenError) as caught:
        await verifier.verify(v1)
    assert caught.value.reason == "invalid_issuer"
    detail = caught.value.detail or ""
    assert "v1" in detail
    # Taking the v1 issuer alone, the next refusal is the aud: v1 tokens carry the
    # Application ID URI there. The hint says both, and fits the log line whole.
    assert "Application ID URI" in detail
    assert len(detail) <= 600


@pytest.mark.anyio
async def test_an_issuer_near_miss_is_named(auth0_rsa_key: PrivateKey) -> None:
    okta = minting(auth0_rsa_key, "https://acme.okta.com/oauth2/default", audience="api://default")
    verifier = static_verifier(okta, issuer=okta.issuer + "/")
    with pytest.raises(InvalidTokenError) as caught:
        await verifier.verify(okta.token())
    assert caught.value.reason == "invalid_issuer"
    assert "trailing slash" in (caught.value.detail or "")


# require_scopes refusing a name the token carries in another form (an Auth0 RBAC
# permission, Entra's scp without the api:// prefix, Cognito's with the resource server
# prefix) or a token with no scope claim at all (Entra app-only, roles): every request
# was 403 'scope shortfall', and nothing pointed at the cause.
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("required", "claims", "hint"),
    [
        ("read:messages", {"scope": "openid", "permissions": ["read:messages"]}, "permission"),
        (f"api://{ENTRA_APP}/read", {"scp": "read"}, "'read'"),
        ("read", {"scope": "https://api.example.com/read"}, "https://api.example.com/read"),
        ("read:messages", {"roles": ["Messages.Read"]}, "no scope"),
    ],
)
async def test_a_scope_near_miss_is_named(
    auth0_rsa_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
    required: str,
    claims: dict[str, Any],
    hint: str,
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_auth0")
    issuer = minting(auth0_rsa_key, audience=API)
    app = api(static_verifier(issuer), required)
    response = await get(app, "/scoped", issuer.token(**claims))
    assert response.status_code == 403
    assert any(hint in line for line in lines(caplog)), lines(caplog)


def scope_hints(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "asgi_auth0.fastapi" and r.levelno == logging.WARNING
    ]


_SCOPE_HINTS = [
    pytest.param(
        ("read:messages",),
        {"scope": "openid", "permissions": ["read:messages"]},
        "require_scopes('read:messages') refused a token that has 'read:messages' in its "
        "permissions claim, not its scope (Auth0 RBAC): use "
        "require_permissions('read:messages'); every such request is refused with 403",
        id="auth0-permission",
    ),
    pytest.param(
        ("read:messages",),
        {"roles": ["Messages.Read"]},
        "require_scopes('read:messages') refused a token with no scope claim at all (an "
        "app-only token? Entra puts application permissions in roles: claims['roles']); "
        "every such request is refused with 403",
        id="entra-app-only",
    ),
    pytest.param(
        (f"api://{ENTRA_APP}/read",),
        {"scp": "read"},
        f"require_scopes('api://{ENTRA_APP}/read') refused a token whose scopes include "
        "'read': issuers such as Entra write scp without the resource prefix; use "
        "require_scopes('read'); every such request is refused with 403",
        id="entra-bare-scp",
    ),
    pytest.param(
        ("read",),
        {"scope": "openid https://api.example.com/read"},
        "require_scopes('read') refused a token whose scopes include "
        "'https://api.example.com/read': issuers such as Cognito prefix a resource "
        "server's scopes with its identifier; use "
        "require_scopes('https://api.example.com/read'); every such request is refused "
        "with 403",
        id="cognito-prefixed",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("required", "claims", "warning"), _SCOPE_HINTS)
async def test_a_scope_near_miss_is_warned_about_once_per_dependency_and_name(
    auth0_rsa_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
    required: tuple[str, ...],
    claims: dict[str, Any],
    warning: str,
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_auth0")
    issuer = minting(auth0_rsa_key, audience=API)
    app = api(static_verifier(issuer), *required)
    for _ in range(3):
        response = await get(app, "/scoped", issuer.token(**claims))
        assert response.status_code == 403
        assert response.json()["reason"] == "insufficient_scope"
    assert scope_hints(caplog) == [warning]


@pytest.mark.anyio
async def test_a_declared_scope_near_miss_is_warned_about(
    auth0_rsa_key: PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # Security(require_token, scopes=[...]) is the same requirement in FastAPI's words.
    caplog.set_level(logging.INFO, logger="asgi_auth0")
    issuer = minting(auth0_rsa_key, audience=API)
    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=static_verifier(issuer))

    @app.get("/declared")
    async def declared(
        claims: Annotated[Claims, Security(require_token, scopes=["read:messages"])],
    ) -> dict[str, bool]:
        return {"ok": True}

    token = issuer.token(scope="openid", permissions=["read:messages"])
    assert (await get(app, "/declared", token)).status_code == 403
    [warning] = scope_hints(caplog)
    assert warning.startswith(
        "Security(..., scopes=['read:messages']) refused a token that has 'read:messages' "
        "in its permissions claim, not its scope"
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    "claims",
    [
        {"scope": "openid write:messages", "permissions": ["write:messages"]},
        {"scp": "messages/write"},
        {"scope": "read:messages"},  # satisfied: nothing to say
    ],
)
async def test_a_plain_scope_shortfall_gets_no_hint(
    auth0_rsa_key: PrivateKey, caplog: pytest.LogCaptureFixture, claims: dict[str, Any]
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_auth0")
    issuer = minting(auth0_rsa_key, audience=API)
    app = api(static_verifier(issuer), "read:messages")
    response = await get(app, "/scoped", issuer.token(**claims))
    assert response.status_code == (200 if claims.get("scope") == "read:messages" else 403)
    assert scope_hints(caplog) == []


@pytest.mark.anyio
async def test_the_scope_hints_kept_in_memory_are_bounded(
    auth0_rsa_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_auth0")
    monkeypatch.setattr(asgi_auth0.fastapi, "_MAX_REPORTED", 2)
    issuer = minting(auth0_rsa_key, audience=API)
    token = issuer.token(scope="openid", permissions=["p0", "p1", "p2", "p3"])
    for i in range(4):
        app = api(static_verifier(issuer), f"p{i}")
        assert (await get(app, "/scoped", token)).status_code == 403
    assert len(asgi_auth0.fastapi._REPORTED) == 2
    assert len(scope_hints(caplog)) == 2


# Fail closed, a public path that differs from the request path by a trailing slash or
# by the root_path prefix was refused with only 'a token is required outside the public
# paths' (under a root_path, the path logged was the very one listed).
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("listed", "root_path", "hint"),
    [("/health/", "", "'/health/'"), ("/api/health", "/api", "root_path")],
)
async def test_a_public_path_near_miss_is_named(
    auth0_rsa_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
    listed: str,
    root_path: str,
    hint: str,
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_auth0")
    verifier = static_verifier(minting(auth0_rsa_key))
    app = api(verifier, require_token=True, public_paths=[listed])
    response = await get(app, "/health", root_path=root_path)
    assert response.status_code == 401
    assert hint in rejection_line(caplog)


_NEAR_MISSES = [
    pytest.param(
        ["/health/"],
        "",
        "/health",
        "public_paths lists '/health/', which differs from it only by a trailing slash",
        id="listed-with-a-slash",
    ),
    pytest.param(
        ["/health"],
        "",
        "/health/",
        "public_paths lists '/health', which differs from it only by a trailing slash",
        id="listed-without-the-slash",
    ),
    pytest.param(
        ["/static/*"],
        "",
        "/static",
        "public_paths lists '/static/*', which covers only the paths below '/static/': "
        "list '/static' too",
        id="subtree-root",
    ),
    pytest.param(
        ["/api/health"],
        "/api",
        "/api/health",
        "public_paths lists it with the root_path '/api', but entries are matched "
        "without it: list '/health'",
        id="root-path-in-front",
    ),
    pytest.param(
        ["/api/static/*"],
        "/api",
        "/api/static/app.js",
        "public_paths lists '/api/static/*' with the root_path '/api', but entries are "
        "matched without it: list '/static/*'",
        id="root-path-in-front-of-a-subtree",
    ),
    pytest.param(
        ["/static"],
        "",
        "/static/app.js",
        "public_paths lists '/static', that path alone: list '/static/*' for the paths below it",
        id="listed-alone-meant-as-a-subtree",
    ),
]


async def fail_closed_refusal(
    key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
    listed: list[str],
    root_path: str,
    path: str,
) -> str:
    """The rejection line of a tokenless request to ``path`` under a fail-closed
    middleware listing ``listed``."""
    caplog.set_level(logging.INFO, logger="asgi_auth0")
    app = Auth0Middleware(
        FastAPI(),
        verifier=static_verifier(minting(key)),
        require_token=True,
        public_paths=listed,
    )
    response = await get(app, path.removeprefix(root_path), root_path=root_path)
    assert response.status_code == 401
    return rejection_line(caplog)


@pytest.mark.anyio
@pytest.mark.parametrize(("listed", "root_path", "path", "hint"), _NEAR_MISSES)
async def test_each_public_path_near_miss_ends_the_rejection_line(
    auth0_rsa_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
    listed: list[str],
    root_path: str,
    path: str,
    hint: str,
) -> None:
    line = await fail_closed_refusal(auth0_rsa_key, caplog, listed, root_path, path)
    assert line.endswith(f"GET {path!r}: a token is required outside the public paths; {hint}")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("listed", "root_path", "path"),
    [
        (["/health"], "", "/healthz"),  # not a near miss: a path of its own
        (["/Health"], "", "/health"),
        (["/api/health"], "", "/api/x/health"),
        (["/api/health"], "", "/api/healthz/x"),
        (["/v2/health"], "/api", "/api/health"),
    ],
)
async def test_a_path_that_is_no_near_miss_gets_no_hint(
    auth0_rsa_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
    listed: list[str],
    root_path: str,
    path: str,
) -> None:
    line = await fail_closed_refusal(auth0_rsa_key, caplog, listed, root_path, path)
    assert line.endswith(": a token is required outside the public paths")


@pytest.mark.anyio
async def test_a_long_near_miss_hint_still_fits_the_rejection_line(
    auth0_rsa_key: PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # The log shows a detail of up to 200 printable characters as it is (a longer one
    # escaped and cut to 80): a hint naming a long path would push the whole detail,
    # hint included, out of the line. With a bare token (its own hint) as well, the
    # near miss is still said, without the paths.
    caplog.set_level(logging.INFO, logger="asgi_auth0")
    long = "/" + "x" * 90
    app = Auth0Middleware(
        FastAPI(),
        verifier=static_verifier(minting(auth0_rsa_key)),
        require_token=True,
        public_paths=[long + "/"],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(long, headers={"Authorization": "aaa.bbb.ccc"})
    assert response.status_code == 401
    line = rejection_line(caplog)
    assert line.endswith(
        ": a token is required outside the public paths; the Authorization header holds a "
        "bare token, with no scheme: send 'Authorization: Bearer <token>'; a public path "
        "differs from it only by a trailing slash"
    )
    assert "aaa.bbb.ccc" not in line


def test_a_near_miss_hint_is_bounded_by_its_room() -> None:
    public = PublicPaths(["/api/health"])
    specific = public.near_miss("/health", "/api")
    assert specific is not None
    assert public.near_miss("/health", "/api", room=len(specific)) == specific
    short = public.near_miss("/health", "/api", room=len(specific) - 1)
    assert short == "public_paths lists it with the root_path in front"
    assert public.near_miss("/health", "/api", room=len(short) - 1) is None
    assert public.near_miss("/health", "") is None


@pytest.mark.anyio
async def test_an_expiry_says_by_how_much(auth0_rsa_key: PrivateKey) -> None:
    issuer = minting(auth0_rsa_key, clock=lambda: time.time() - 7200)
    verifier = static_verifier(issuer)
    with pytest.raises(InvalidTokenError) as caught:
        await verifier.verify(issuer.token(expires_in=3600))
    assert caught.value.reason == "token_expired"
    assert caught.value.detail == "exp has passed, 60 min ago (leeway 5 s)"


@pytest.mark.anyio
async def test_a_failed_fetch_names_the_url_it_fetched(
    auth0_rsa_key: PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_auth0")
    with server(auth0_rsa_key) as issuer:
        wrong = issuer.url + "/jwks.json"
        verifier = TokenVerifier(issuer.config(jwks_uri=wrong))
        try:
            with pytest.raises(KeySetError):
                await verifier.refresh()
        finally:
            await verifier.aclose()
    assert any(wrong in line for line in lines(caplog, logging.WARNING)), lines(caplog)


# -- the answers that do name the cause (pinned nowhere else) --------------------------


@pytest.mark.anyio
async def test_a_keycloak_issuer_without_its_realm_says_so_at_startup_and_per_request(
    auth0_rsa_key: PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    # issuer="https://sso.acme.com" for a realm's "https://sso.acme.com/realms/acme":
    # discovery 404s at startup (WARNING naming it), and each refusal shows the
    # token's iss, with the realm the configuration lacks.
    caplog.set_level(logging.INFO, logger="asgi_auth0")
    with server(auth0_rsa_key, issuer_path="/realms/acme", audience="orders-api") as kc:
        verifier = TokenVerifier(kc.config(issuer=kc.url, jwks_uri=None))
        try:
            with pytest.raises(KeySetError):
                await verifier.refresh()
            assert any(
                "failed (http_status: the discovery answered HTTP 404)" in line
                for line in lines(caplog, logging.WARNING)
            ), lines(caplog)
            caplog.clear()
            response = await get(api(verifier), "/me", kc.token())
        finally:
            await verifier.aclose()
    assert response.status_code == 401
    assert response.json()["reason"] == "invalid_issuer"
    line = rejection_line(caplog)
    assert "reason=invalid_issuer" in line
    assert f"iss='{kc.url}/realms/acme': iss is not a configured issuer" in line


# Mistakes whose every request is refused with a line that names the cause.
_NAMED = [
    pytest.param(
        {"issuer": COGNITO, "audience": COGNITO_CLIENT, "audience_claim": "client_id"},
        {"aud": COGNITO_CLIENT, "token_use": "id"},
        "reason=invalid_audience",
        "an ID token has one",
        id="cognito-id-token-sent",
    ),
    pytest.param(
        {},
        {"headers": {"alg": "ES256"}, "signing_alg": "RS256"},
        "reason=alg_not_allowed",
        "alg='ES256' iss='https://tenant.example.test/': alg is not in the allow-list",
        id="issuer-signs-with-an-algorithm-not-configured",
    ),
    pytest.param(
        {"strict_typ": True},
        {},
        "reason=invalid_typ",
        "typ is not at+jwt",
        id="strict-typ-with-auth0s-default-profile",
    ),
    pytest.param(
        {"required_claims": ("iat", "email")},
        {},
        "reason=missing_claim",
        "required claim email is missing",
        id="required-claim-machine-tokens-lack",
    ),
    pytest.param(
        {"max_token_size": 1024},
        {"permissions": [f"perm:{i:03d}" for i in range(100)]},
        "reason=token_too_large",
        "the token is longer than 1024 bytes",
        id="max-token-size-below-rbac-tokens",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("settings", "claims", "reason", "cause"), _NAMED)
async def test_the_rejection_line_names_the_cause(
    auth0_rsa_key: PrivateKey,
    caplog: pytest.LogCaptureFixture,
    settings: dict[str, Any],
    claims: dict[str, Any],
    reason: str,
    cause: str,
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_auth0")
    issuer_url = settings.get("issuer", "https://tenant.example.test/")
    issuer = minting(auth0_rsa_key, issuer_url, audience=settings.get("audience", API))
    verifier = static_verifier(issuer, **settings)
    response = await get(api(verifier), "/me", issuer.token(**claims))
    assert response.status_code == 401
    line = rejection_line(caplog)
    assert reason in line
    assert line.endswith(cause)


def test_a_config_given_as_the_verifier_is_refused_with_what_to_do(
    auth0_rsa_key: PrivateKey,
) -> None:
    # It failed later with AttributeError: 'Auth0Config' object has no attribute 'config'.
    config = minting(auth0_rsa_key).config()
    with pytest.raises(ConfigError, match="verifier= was given an Auth0Config: pass it as config="):
        Auth0Middleware(FastAPI(), verifier=config)  # type: ignore[arg-type]


def test_a_cognito_user_pool_id_as_the_audience_is_refused() -> None:
    # The pool id is in the issuer URL; every token names an app client instead, so
    # each would be refused with "client_id does not name an accepted app client".
    with pytest.raises(ConfigError, match="is the user pool's id"):
        Auth0Config(issuer=COGNITO, audience="eu-west-1_AbCdEf123", audience_claim="client_id")
    config = Auth0Config(issuer=COGNITO, audience=COGNITO_CLIENT, audience_claim="client_id")
    assert config.audiences == (COGNITO_CLIENT,)


def test_every_path_public_under_fail_closed_is_refused(auth0_rsa_key: PrivateKey) -> None:
    # require_token=True with public_paths=['/*'] closes nothing, while the code and
    # the OpenAPI document read as if the app failed closed.
    verifier = static_verifier(minting(auth0_rsa_key))
    with pytest.raises(ConfigError, match="makes every path public"):
        Auth0Middleware(FastAPI(), verifier=verifier, require_token=True, public_paths=["/*"])
    narrower = ["/health", "/static/*"]
    Auth0Middleware(FastAPI(), verifier=verifier, require_token=True, public_paths=narrower)


def test_the_middleware_twice_on_one_app_is_warned_about(
    auth0_rsa_key: PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_auth0")
    verifier = static_verifier(minting(auth0_rsa_key))

    def twice_warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "reason", None) == "middleware_twice"]

    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=verifier)
    Auth0Middleware(app, verifier=verifier)  # and wrapped as well
    assert len(twice_warnings()) == 1
    # One on an app mounted below, for another API, is left alone.
    caplog.clear()
    inner = FastAPI()
    inner.add_middleware(Auth0Middleware, verifier=verifier)
    outer = FastAPI()
    outer.mount("/v2", inner)
    Auth0Middleware(outer, verifier=verifier)
    assert twice_warnings() == []
