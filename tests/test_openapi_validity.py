"""The OpenAPI documents asgi_auth0 produces, read as a client generator or an API
fuzzer (schemathesis) reads them: every protected operation names the ``Auth0``
scheme with the scopes it needs, public ones none; every requirement names a declared
scheme, every ``$ref`` resolves, the OAuth2 flow has absolute URLs and lists every
scope an operation asks for; and what the app really answers (status, body, challenge
header) is what its own document says for that operation.

Found by an audit that validated these documents with openapi-spec-validator and
fuzzed the example app from its own schema with schemathesis; the shortfalls it found
are the strict xfails at the end (each names the finding). The checks here are
structural, written against the document itself, so the suite needs neither tool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Security
from fastapi.security import APIKeyHeader
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount

from asgi_auth0 import (
    Auth0Config,
    Auth0Middleware,
    StaticKeySet,
    configure_openapi,
    optional_token,
    require_permissions,
    require_scopes,
    require_token,
)
from asgi_auth0._public import PublicPaths
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.fastapi import SCHEME_NAME, bearer_scheme
from asgi_auth0.testing import LocalIssuer
from example_app import create_app

Doc = dict[str, Any]

TENANT = Auth0Config(
    domain="tenant.eu.auth0.com", audience="https://api.example.com", client_id="cid"
)
BEARER_ONLY = Auth0Config(domain="tenant.eu.auth0.com", audience="https://api.example.com")
#: Keys for a verifier that must never fetch any (the tokens here never verify).
NO_NETWORK_KEYS = LocalIssuer(key_type="Ed25519").jwks
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
api_key = APIKeyHeader(name="X-API-Key", auto_error=False)


async def _audit(_: None = Security(bearer_scheme, scopes=["audit:read"])) -> None:
    """A user's own dependency declaring a scope on the scheme."""


async def _endpoint() -> dict[str, bool]:
    return {"ok": True}


def operations(doc: Doc) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in _METHODS:
                yield path, method, operation


def op(doc: Doc, path: str, method: str = "get") -> dict[str, Any]:
    found: dict[str, Any] = doc["paths"][path][method]
    return found


def resolve(doc: Doc, schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
}


def violations(doc: Doc, value: Any, schema: dict[str, Any], at: str = "$") -> list[str]:
    """What in ``value`` breaks ``schema``: the keywords the library's error schema
    uses (``type``, also as a list, ``nullable``, ``properties``, ``required``)."""
    schema = resolve(doc, schema)
    found: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if schema.get("nullable") is True:
            types = [*types, "null"]
        if not any(_JSON_TYPES[t](value) for t in types):
            found.append(f"{at}: {value!r} is not {types}")
    if isinstance(value, dict):
        found += [
            f"{at}: {name} missing" for name in schema.get("required", ()) if name not in value
        ]
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                found += violations(doc, value[name], sub, f"{at}.{name}")
    return found


def assert_documented(doc: Doc, path: str, method: str, response: httpx.Response) -> None:
    """``response`` is what ``doc`` promises for that operation: a documented status,
    its JSON body schema, and its documented headers present."""
    responses = op(doc, path, method)["responses"]
    status = str(response.status_code)
    assert status in responses, f"{method.upper()} {path}: {status} not in {sorted(responses)}"
    documented = responses[status]
    schema = documented["content"]["application/json"]["schema"]
    assert violations(doc, response.json(), schema) == []
    for header in documented.get("headers", {}):
        assert header in response.headers, f"documented header {header} missing"


# -- the applications ------------------------------------------------------------------


def every_spelling_app(config: Auth0Config) -> FastAPI:
    """One route per way of declaring a requirement, not fail closed."""
    app = FastAPI()
    app.add_middleware(Auth0Middleware, config=config)
    configure_openapi(app, config)
    routes: dict[str, list[Any]] = {
        "/open": [],
        "/token": [Depends(require_token)],
        "/optional": [Depends(optional_token)],
        "/optional-scoped": [Security(optional_token, scopes=["s:opt"])],
        "/scopes": [Depends(require_scopes("read:a", "read:b", "write:c"))],
        "/any": [Depends(require_scopes("read:a", "read:b", any_of=True))],
        "/perms": [Depends(require_permissions("p:1", "p:2"))],
        "/security": [Security(require_token, scopes=["sec:1", "sec:2"])],
        "/nested": [Depends(_audit)],
        "/extra": [Depends(require_token), Depends(api_key)],
    }
    for path, dependencies in routes.items():
        app.get(path, dependencies=dependencies)(_endpoint)
    app.post("/items/{item_id}", dependencies=[Depends(require_scopes("write:items"))])(_endpoint)
    router = APIRouter(prefix="/r", dependencies=[Depends(require_scopes("router:x"))])
    router.get("/one")(_endpoint)
    router.get("/two", dependencies=[Depends(require_permissions("p:two"))])(_endpoint)
    app.include_router(router)
    return app


EVERY_SPELLING: dict[tuple[str, str], Any] = {
    ("/open", "get"): None,
    ("/token", "get"): [{SCHEME_NAME: []}],
    ("/optional", "get"): [{}, {SCHEME_NAME: []}],
    ("/optional-scoped", "get"): [{SCHEME_NAME: ["s:opt"]}],
    ("/scopes", "get"): [{SCHEME_NAME: ["read:a", "read:b", "write:c"]}],
    ("/any", "get"): [{SCHEME_NAME: ["read:a"]}, {SCHEME_NAME: ["read:b"]}],
    ("/perms", "get"): [{SCHEME_NAME: ["p:1", "p:2"]}],
    ("/security", "get"): [{SCHEME_NAME: ["sec:1", "sec:2"]}],
    ("/nested", "get"): [{SCHEME_NAME: ["audit:read"]}],
    # FastAPI lists each scheme as its own requirement; the route needs the token.
    ("/extra", "get"): [{SCHEME_NAME: []}, {"APIKeyHeader": []}],
    ("/items/{item_id}", "post"): [{SCHEME_NAME: ["write:items"]}],
    ("/r/one", "get"): [{SCHEME_NAME: ["router:x"]}],
    ("/r/two", "get"): [{SCHEME_NAME: ["router:x", "p:two"]}],
}


def closed_app(config: Auth0Config) -> FastAPI:
    """Fail closed: no dependency needed for a token, public paths listed."""
    app = FastAPI(redoc_url=None)
    app.add_middleware(
        Auth0Middleware,
        config=config,
        require_token=True,
        public_paths=["/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/pub/*"],
    )
    configure_openapi(app, config)
    app.get("/health")(_endpoint)
    app.get("/pub/{name}")(_endpoint)
    app.get("/me")(_endpoint)
    app.get("/keyed", dependencies=[Depends(api_key)])(_endpoint)
    app.get("/maybe", dependencies=[Depends(optional_token)])(_endpoint)
    app.get("/messages", dependencies=[Depends(require_scopes("read:messages"))])(_endpoint)
    app.put("/items/{item_id}")(_endpoint)
    return app


CLOSED: dict[tuple[str, str], Any] = {
    ("/health", "get"): None,
    ("/pub/{name}", "get"): None,
    ("/me", "get"): [{SCHEME_NAME: []}],
    ("/keyed", "get"): [{"APIKeyHeader": [], SCHEME_NAME: []}],
    ("/maybe", "get"): [{SCHEME_NAME: []}],  # fail closed: the token is not optional
    ("/messages", "get"): [{SCHEME_NAME: ["read:messages"]}],
    ("/items/{item_id}", "put"): [{SCHEME_NAME: []}],
}

EXAMPLE: dict[tuple[str, str], Any] = {
    ("/api/public", "get"): [{}, {SCHEME_NAME: []}],
    ("/api/private", "get"): [{SCHEME_NAME: []}],
    ("/api/messages", "get"): [{SCHEME_NAME: ["read:messages"]}],
    ("/api/admin", "get"): [{SCHEME_NAME: ["read:admin"]}],
    ("/health", "get"): None,
}

APPS: dict[str, tuple[Callable[[Auth0Config], FastAPI], dict[tuple[str, str], Any]]] = {
    "example": (create_app, EXAMPLE),
    "every_spelling": (every_spelling_app, EVERY_SPELLING),
    "closed": (closed_app, CLOSED),
}


# -- what holds --------------------------------------------------------------------------


@pytest.mark.parametrize("config", [TENANT, BEARER_ONLY], ids=["oauth2", "bearer"])
@pytest.mark.parametrize("name", sorted(APPS))
def test_each_operation_documents_the_requirement_it_enforces(
    name: str, config: Auth0Config
) -> None:
    build, expected = APPS[name]
    doc = build(config).openapi()
    published = {(path, method): o.get("security") for path, method, o in operations(doc)}
    assert published == expected
    for path, method, operation in operations(doc):
        requirement = operation.get("security") or []
        scoped = any(r.get(SCHEME_NAME) for r in requirement)
        ours = any(SCHEME_NAME in r for r in requirement)
        # 401 wherever the token is asked for, 403 wherever a scope is; none elsewhere.
        assert ("401" in operation["responses"]) is ours, (path, method)
        assert ("403" in operation["responses"]) is scoped, (path, method)


@pytest.mark.parametrize("config", [TENANT, BEARER_ONLY], ids=["oauth2", "bearer"])
@pytest.mark.parametrize("name", sorted(APPS))
def test_each_document_holds_together(name: str, config: Auth0Config) -> None:
    doc = APPS[name][0](config).openapi()
    assert doc["openapi"].startswith("3.1")
    schemes = doc["components"]["securitySchemes"]
    wanted: set[str] = set()
    for path, method, operation in operations(doc):
        for requirement in operation.get("security") or ():
            assert set(requirement) <= set(schemes), (path, method, requirement)
            wanted.update(requirement.get(SCHEME_NAME, ()))
        for status, response in operation["responses"].items():
            for media in response.get("content", {}).values():
                resolve(doc, media["schema"])  # a dangling $ref raises KeyError
            if status in ("401", "403"):
                body = resolve(doc, response["content"]["application/json"]["schema"])
                assert body["required"] == ["error", "error_description", "reason"]
                assert response["headers"]["WWW-Authenticate"]["schema"] == {"type": "string"}
    scheme = schemes[SCHEME_NAME]
    if config.client_id is None:
        assert scheme == {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": scheme["description"],
        }
        return
    assert scheme["type"] == "oauth2"
    assert list(scheme["flows"]) == ["authorizationCode"]
    flow = scheme["flows"]["authorizationCode"]
    assert flow["authorizationUrl"] == "https://tenant.eu.auth0.com/authorize"
    assert flow["tokenUrl"] == "https://tenant.eu.auth0.com/oauth/token"
    # Swagger UI offers only the scopes the flow lists: every one an operation needs.
    assert set(flow["scopes"]) == wanted


@pytest.fixture
def spelling_app(verifier: TokenVerifier) -> FastAPI:
    app = every_spelling_app(verifier.config)
    # The same routes, verified against the conftest issuer's keys (no key server).
    app.user_middleware.clear()
    app.add_middleware(Auth0Middleware, verifier=verifier)
    return app


@pytest.mark.anyio
async def test_the_rejections_are_what_the_document_says(
    spelling_app: FastAPI, issuer: LocalIssuer
) -> None:
    doc = spelling_app.openapi()
    cases: list[tuple[str, str | None]] = [
        ("/token", None),
        ("/token", "abc"),
        ("/token", issuer.expired_token()),
        ("/token", issuer.wrong_audience_token()),
        ("/scopes", issuer.token(scope="read:a")),
        ("/any", issuer.token(scope="write:c")),
        ("/perms", issuer.token(permissions=["p:1"])),
        ("/security", issuer.token(scope="sec:1")),
        ("/nested", None),
        ("/nested", issuer.token()),
        ("/r/two", issuer.token(scope="router:x")),
        ("/optional-scoped", None),
    ]
    transport = httpx.ASGITransport(app=spelling_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        seen = set()
        for path, token in cases:
            headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
            response = await client.get(path, headers=headers)
            seen.add(response.status_code)
            assert_documented(doc, path, "get", response)
        ok = await client.get(
            "/any", headers={"Authorization": f"Bearer {issuer.token(scope='read:b')}"}
        )
        assert ok.status_code == 200
    assert seen == {401, 403}


# -- findings --------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("header", ["Bearer ", "Bearer a b"])
async def test_a_malformed_authorization_header_gets_a_documented_answer(
    spelling_app: FastAPI, header: str
) -> None:
    doc = spelling_app.openapi()
    transport = httpx.ASGITransport(app=spelling_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        for path in ("/token", "/optional", "/scopes"):
            response = await client.get(path, headers={"Authorization": header})
            assert response.status_code == 400
            assert response.json()["error"] == "invalid_request"
            assert_documented(doc, path, "get", response)


def mounted_under_fail_closed(
    public: tuple[str, ...] | list[str] = ("/v1/openapi.json", "/v1/ping"),
    *,
    in_router: str = "",
) -> tuple[FastAPI, FastAPI]:
    """``sub`` mounted at /v1 of a fail-closed app, or (``in_router`` a prefix) at /v1
    of a router included there."""
    outer = FastAPI()
    outer.add_middleware(
        Auth0Middleware,
        # No network: the keys are never needed, and a lifespan would warm them.
        verifier=TokenVerifier(BEARER_ONLY, key_set=StaticKeySet(NO_NETWORK_KEYS)),
        require_token=True,
        public_paths=list(public),
    )
    sub = FastAPI()
    configure_openapi(sub, BEARER_ONLY)
    sub.get("/ping")(_endpoint)
    sub.get("/plain")(_endpoint)
    if in_router:
        router = APIRouter()
        router.mount("/v1", sub)
        outer.include_router(router, prefix=in_router)
    else:
        outer.mount("/v1", sub)
    return outer, sub


@pytest.mark.anyio
async def test_a_mounted_app_is_protected_by_the_fail_closed_middleware_around_it() -> None:
    outer, _ = mounted_under_fail_closed()
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        assert (await client.get("/v1/ping")).status_code == 200
        assert (await client.get("/v1/plain")).status_code == 401


@pytest.mark.anyio
async def test_a_mounted_app_documents_the_protection_around_it() -> None:
    outer, _ = mounted_under_fail_closed()
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        doc = (await client.get("/v1/openapi.json")).json()
        plain = await client.get("/v1/plain")
    assert op(doc, "/ping").get("security") is None
    assert op(doc, "/plain").get("security") == [{SCHEME_NAME: []}]
    assert_documented(doc, "/plain", "get", plain)


@pytest.mark.anyio
@pytest.mark.skipif(
    not hasattr(fastapi.routing, "iter_route_contexts"),
    reason="FastAPI before 0.16x drops the mounts of an included router",
)
async def test_an_app_mounted_in_an_included_router_documents_the_protection_around_it() -> None:
    # FastAPI 0.16x keeps an included router whole: the mount is found inside it, below
    # the prefix it was included with.
    outer, _ = mounted_under_fail_closed(("/r/v1/openapi.json", "/r/v1/ping"), in_router="/r")
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        doc = (await client.get("/r/v1/openapi.json")).json()
        ping = await client.get("/r/v1/ping")
        plain = await client.get("/r/v1/plain")
    assert (ping.status_code, plain.status_code) == (200, 401)
    assert op(doc, "/ping").get("security") is None
    assert op(doc, "/plain").get("security") == [{SCHEME_NAME: []}]
    assert_documented(doc, "/plain", "get", plain)


def test_each_document_has_its_own_error_schema() -> None:
    first, second = every_spelling_app(BEARER_ONLY), every_spelling_app(BEARER_ONLY)
    first_doc = first.openapi()
    error = first_doc["components"]["schemas"]["Auth0ErrorResponse"]["properties"]["error"]
    before = dict(error)
    try:
        error["type"] = "string"  # e.g. a user's downgrade of the document for a 3.0 tool
        error["nullable"] = True
        second_error = second.openapi()["components"]["schemas"]["Auth0ErrorResponse"]
        assert second_error["properties"]["error"] == before
    finally:
        # Were the schema shared again, the edit would reach the module's own: undo it,
        # or every later test in this process would see it.
        error.clear()
        error.update(before)


@pytest.mark.anyio
async def test_an_app_mounted_two_levels_down_in_a_plain_starlette_app_is_documented() -> None:
    sub = FastAPI()
    configure_openapi(sub, BEARER_ONLY)
    sub.get("/ping")(_endpoint)
    sub.get("/plain")(_endpoint)
    middle = Starlette(routes=[Mount("/v1", app=sub)])
    outer = Starlette(
        routes=[Mount("/api", app=middle)],
        middleware=[
            Middleware(
                Auth0Middleware,
                verifier=TokenVerifier(BEARER_ONLY, key_set=StaticKeySet(NO_NETWORK_KEYS)),
                require_token=True,
                public_paths=["/api/v1/openapi.json", "/api/v1/ping"],
            )
        ],
    )
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        doc = (await client.get("/api/v1/openapi.json")).json()
        assert (await client.get("/api/v1/plain")).status_code == 401
    assert op(doc, "/ping").get("security") is None
    assert op(doc, "/plain")["security"] == [{SCHEME_NAME: []}]


@pytest.mark.anyio
async def test_a_mounted_app_is_documented_once_the_app_around_it_has_started() -> None:
    # No request needed: the lifespan startup of the outer app makes it known.
    outer, sub = mounted_under_fail_closed(public=["/v1/ping"])
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await outer({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    doc = sub.openapi()
    assert op(doc, "/ping").get("security") is None
    assert op(doc, "/plain")["security"] == [{SCHEME_NAME: []}]


@pytest.mark.anyio
async def test_a_mounted_app_under_a_public_subtree_stays_public() -> None:
    outer, _ = mounted_under_fail_closed(public=["/v1/*"])
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        doc = (await client.get("/v1/openapi.json")).json()
        assert (await client.get("/v1/plain")).status_code == 200
    assert op(doc, "/plain").get("security") is None


@pytest.mark.parametrize(
    ("entries", "prefix", "below"),
    [
        (["/v1/ping", "/v1/static/*", "/health"], "/v1", ["/ping", "/static/*"]),
        (["/v1/"], "/v1", ["/"]),
        (["/v1"], "/v1", []),  # the mount point itself is no path of the mounted app
        (["/v1/*"], "/v1", ["/*"]),
        (["/*"], "/v1", ["/*"]),
        (["/v10/ping", "/v/*"], "/v1", []),  # near misses stay closed
        (["/t/*"], "/t/{tenant}", ["/*"]),
        (["/t/a/ping"], "/t/{tenant}", []),  # can't tell which tenant: closed
        (["/ping"], "", ["/ping"]),
    ],
)
def test_public_paths_as_a_mounted_app_sees_them(
    entries: list[str], prefix: str, below: list[str]
) -> None:
    assert list(PublicPaths(entries).below(prefix).entries) == below


def openapi_30_doc(config: Auth0Config) -> Doc:
    app = every_spelling_app(config)
    # FastAPI's documented way to label its document 3.0 for tools that want it.
    app.openapi_version = "3.0.3"
    doc = app.openapi()
    assert doc["openapi"] == "3.0.3"
    return doc


def test_a_3_0_document_gets_a_3_0_error_schema() -> None:
    doc = openapi_30_doc(BEARER_ONLY)
    error = doc["components"]["schemas"]["Auth0ErrorResponse"]["properties"]["error"]
    assert error["type"] == "string"
    assert error["nullable"] is True


def test_a_3_0_document_lists_scopes_only_for_an_oauth2_scheme() -> None:
    doc = openapi_30_doc(BEARER_ONLY)
    assert doc["components"]["securitySchemes"][SCHEME_NAME]["type"] == "http"
    for path, method, operation in operations(doc):
        for requirement in operation.get("security") or ():
            assert requirement.get(SCHEME_NAME, []) == [], (path, method)
    # What the lists said is kept, in the 403's words.
    forbidden = op(doc, "/scopes")["responses"]["403"]["description"]
    assert forbidden.endswith("Needs read:a and read:b and write:c.")


def test_a_3_0_document_with_a_login_lists_scopes_on_its_oauth2_scheme() -> None:
    doc = openapi_30_doc(TENANT)
    assert doc["components"]["securitySchemes"][SCHEME_NAME]["type"] == "oauth2"
    assert op(doc, "/scopes")["security"] == [{SCHEME_NAME: ["read:a", "read:b", "write:c"]}]
