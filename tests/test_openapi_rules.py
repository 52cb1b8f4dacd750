"""The OpenAPI rewriting of ``configure_openapi``, rule by rule: where the OAuth2 URLs
come from, the 16-alternative limit, overlapping ``any_of`` groups, the words written
when there are too many alternatives, and documents that FastAPI did not build alone
(a custom ``app.openapi`` underneath, path-level fields, routes hidden from the
schema, ``configure_openapi`` applied twice).

Each test pins one rule that a mutation of ``asgi_auth0/fastapi.py`` showed no other
test noticed. Routes declare their dependencies with ``dependencies=[...]`` so nothing
depends on how FastAPI resolves postponed annotations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Security
from fastapi.security import APIKeyHeader

from asgi_auth0._config import Auth0Config
from asgi_auth0._middleware import Auth0Middleware
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.fastapi import (
    SCHEME_NAME,
    configure_openapi,
    optional_token,
    require_scopes,
    require_token,
)

Schema = dict[str, Any]


def get_op(schema: Schema, path: str, method: str = "get") -> dict[str, Any]:
    op: dict[str, Any] = schema["paths"][path][method]
    return op


def any_of(*names: str) -> Any:
    return Depends(require_scopes(*names, any_of=True))


def app_with(*routes: tuple[str, list[Any], str | None]) -> FastAPI:
    """An app with one GET route per (path, dependencies, docstring)."""
    app = FastAPI()
    for path, dependencies, doc in routes:

        async def endpoint() -> None: ...

        endpoint.__doc__ = doc
        app.get(path, dependencies=dependencies)(endpoint)
    return app


def with_custom_openapi(app: FastAPI, edit: Callable[[Schema], None]) -> None:
    """Replace ``app.openapi`` by a user's override that edits FastAPI's document."""
    original = app.openapi

    def custom() -> Schema:
        schema = original()
        edit(schema)
        return schema

    app.openapi = custom  # type: ignore[method-assign]


# -- the OAuth2 scheme ------------------------------------------------------------------


def test_oauth_urls_use_the_custom_domain_when_it_is_the_issuer() -> None:
    # Auth0 writes into iss the domain the login went through: a login at the tenant
    # domain would bring a token with the tenant's iss, which this config refuses.
    config = Auth0Config(
        domain="tenant.eu.auth0.com",
        issuer="https://login.example.test/",
        audience="https://api.example.test",
        client_id="cid",
    )
    app = app_with(("/me", [Depends(require_token)], None))
    configure_openapi(app, config)
    flow = app.openapi()["components"]["securitySchemes"][SCHEME_NAME]["flows"]
    assert flow["authorizationCode"]["authorizationUrl"] == "https://login.example.test/authorize"
    assert flow["authorizationCode"]["tokenUrl"] == "https://login.example.test/oauth/token"


def test_an_app_with_nothing_protected_gets_no_auth0_components() -> None:
    # No operation needs a token: no error schema, and no OAuth2 scheme offering a
    # login that nothing uses, even with a client id.
    config = Auth0Config(domain="t.auth0.com", audience="https://api", client_id="cid")
    app = app_with(("/public", [], None))
    configure_openapi(app, config)
    schema = app.openapi()
    components = schema.get("components", {})
    assert SCHEME_NAME not in components.get("securitySchemes", {})
    assert "Auth0ErrorResponse" not in components.get("schemas", {})
    assert set(get_op(schema, "/public")["responses"]) == {"200"}


# -- any_of alternatives ----------------------------------------------------------------


def test_sixteen_alternatives_are_still_listed() -> None:
    # The limit is "past 16": exactly 16 alternatives are published one by one.
    groups = [any_of(f"{g}1", f"{g}2") for g in "abcd"]  # 2 * 2 * 2 * 2
    app = app_with(("/sixteen", groups, "Sixteen."))
    configure_openapi(app)
    op = get_op(app.openapi(), "/sixteen")
    assert len(op["security"]) == 16
    assert {SCHEME_NAME: ["a1", "b1", "c1", "d1"]} in op["security"]
    assert {SCHEME_NAME: ["a2", "b2", "c2", "d2"]} in op["security"]
    assert op["description"] == "Sixteen."  # no words needed


@pytest.mark.parametrize(("names", "listed"), [(16, True), (17, False)])
def test_one_group_is_listed_up_to_sixteen_names(names: int, listed: bool) -> None:
    group = any_of(*(f"s{i:02}" for i in range(names)))
    app = app_with(("/one-group", [group], None))
    configure_openapi(app)
    op = get_op(app.openapi(), "/one-group")
    assert len(op["security"]) == (names if listed else 1)
    assert ("description" in op) is not listed


def test_overlapping_groups_give_each_alternative_once() -> None:
    # (a or b) and (c or d) and (a or c): picking a then c, or a then c again, is the
    # same alternative; it must be published once. Supersets of another add nothing.
    groups = [any_of("a", "b"), any_of("c", "d"), any_of("a", "c")]
    app = app_with(("/overlap", groups, None))
    configure_openapi(app)
    assert get_op(app.openapi(), "/overlap")["security"] == [
        {SCHEME_NAME: ["a", "c"]},
        {SCHEME_NAME: ["a", "d"]},
        {SCHEME_NAME: ["b", "c"]},
    ]


def test_scopes_declared_on_an_optional_token_are_in_every_alternative() -> None:
    # Security(optional_token, scopes=["admin"]) makes the token and "admin" required,
    # so each any_of alternative needs "admin" too.
    deps = [Security(optional_token, scopes=["admin"]), any_of("read:a", "read:b")]
    app = app_with(("/x", deps, None))
    configure_openapi(app)
    assert get_op(app.openapi(), "/x")["security"] == [
        {SCHEME_NAME: ["admin", "read:a"]},
        {SCHEME_NAME: ["admin", "read:b"]},
    ]


def test_an_optional_token_beside_another_scheme_keeps_that_scheme() -> None:
    # FastAPI publishes one requirement object per scheme ([{"ApiKey": []},
    # {"Auth0": []}]: either one). Rewriting that as "token optional" would drop the
    # API key alternative, so it is left as FastAPI wrote it.
    api_key = APIKeyHeader(name="X-API-Key", scheme_name="ApiKey", auto_error=False)
    app = app_with(("/x", [Depends(api_key), Depends(optional_token)], None))
    configure_openapi(app)
    security = get_op(app.openapi(), "/x")["security"]
    assert {"ApiKey": []} in security
    assert {SCHEME_NAME: []} in security
    assert len(security) == 2


def test_alternatives_keep_the_other_schemes_requirements_around_them() -> None:
    before = APIKeyHeader(name="X-Before", scheme_name="Before", auto_error=False)
    after = APIKeyHeader(name="X-After", scheme_name="After", auto_error=False)
    deps = [Depends(before), any_of("read:a", "read:b"), Depends(after)]
    app = app_with(("/x", deps, None))
    configure_openapi(app)
    assert get_op(app.openapi(), "/x")["security"] == [
        {"Before": []},
        {SCHEME_NAME: ["read:a"]},
        {SCHEME_NAME: ["read:b"]},
        {"After": []},
    ]


def test_a_rebuilt_document_is_rewritten_too() -> None:
    # FastAPI caches its document; an app that adds a route later and clears the
    # cache gets a new document, which needs the rewrite like the first one.
    app = app_with(("/first", [any_of("a", "b")], None))
    configure_openapi(app)
    assert get_op(app.openapi(), "/first")["security"] == [
        {SCHEME_NAME: ["a"]},
        {SCHEME_NAME: ["b"]},
    ]

    async def later() -> None: ...

    app.get("/later", dependencies=[any_of("c", "d")])(later)
    app.openapi_schema = None
    schema = app.openapi()
    assert get_op(schema, "/later")["security"] == [{SCHEME_NAME: ["c"]}, {SCHEME_NAME: ["d"]}]
    assert get_op(schema, "/first")["security"] == [{SCHEME_NAME: ["a"]}, {SCHEME_NAME: ["b"]}]


# -- the words written when there are too many alternatives -----------------------------

TOO_MANY = [any_of("a1", "a2", "a3"), any_of("b1", "b2", "b3"), any_of("c1", "c2")]
NOTE_START = "Needs one scope of each group: `a1` or `a2` or `a3`; `b1` or `b2` or `b3`;"


@pytest.mark.parametrize("empty", [None, ""])
def test_an_operation_without_a_description_gets_the_note_as_its_description(
    empty: str | None,
) -> None:
    # FastAPI leaves "description" out when the route has no docstring; a custom
    # openapi may leave it empty. Either way the note is the whole description.
    app = app_with(("/too-many", TOO_MANY, None))
    if empty is not None:
        with_custom_openapi(app, lambda schema: get_op(schema, "/too-many").update(description=""))
    configure_openapi(app)
    description = get_op(app.openapi(), "/too-many")["description"]
    assert description.startswith(NOTE_START)


def test_configuring_twice_writes_the_note_once_and_keeps_the_description() -> None:
    # Two configure_openapi calls (say, a library and the app both call it) stack two
    # rewrites on one document; the second must neither repeat the note nor replace
    # the route's own description with it.
    app = app_with(("/too-many", TOO_MANY, "Too many."))
    configure_openapi(app)
    configure_openapi(app)
    description = get_op(app.openapi(), "/too-many")["description"]
    assert description.startswith("Too many.\n\n" + NOTE_START)
    assert description.count("Needs one scope of each group") == 1


# -- documents FastAPI did not build alone ----------------------------------------------


def test_requirements_a_custom_openapi_wrote_are_left_alone() -> None:
    app = app_with(("/any", [any_of("read:a", "read:b")], None))

    def edit(schema: Schema) -> None:
        # The user narrowed the requirement themselves, and documented an operation
        # that no route of this app serves.
        get_op(schema, "/any")["security"] = [{SCHEME_NAME: ["custom"]}]
        schema["paths"]["/legacy"] = {
            "get": {"security": [{SCHEME_NAME: []}], "responses": {"200": {"description": "OK"}}}
        }

    with_custom_openapi(app, edit)
    configure_openapi(app)
    schema = app.openapi()
    assert get_op(schema, "/any")["security"] == [{SCHEME_NAME: ["custom"]}]
    legacy = get_op(schema, "/legacy")
    assert legacy["security"] == [{SCHEME_NAME: []}]
    assert "401" in legacy["responses"]  # documented like any protected operation


def test_path_level_fields_are_not_operations(verifier: TokenVerifier) -> None:
    # OpenAPI path items may hold "summary", "description", "parameters" and
    # "servers" beside the operations; none of them gets a security requirement.
    app = app_with(("/me", [Depends(require_token)], None), ("/open", [], None))
    shared = [{"name": "X-Trace", "in": "header", "schema": {"type": "string"}}]

    def edit(schema: Schema) -> None:
        for path in ("/me", "/open"):
            schema["paths"][path]["parameters"] = list(shared)
            schema["paths"][path]["summary"] = "A path-level summary"
            schema["paths"][path]["x-owner"] = {"team": "identity"}  # an extension

    with_custom_openapi(app, edit)
    app.add_middleware(Auth0Middleware, verifier=verifier, require_token=True)
    configure_openapi(app)
    schema = app.openapi()
    for path in ("/me", "/open"):
        item = schema["paths"][path]
        assert item["parameters"] == shared
        assert item["summary"] == "A path-level summary"
        assert item["x-owner"] == {"team": "identity"}
        assert item["get"]["security"] == [{SCHEME_NAME: []}]
        assert "401" in item["get"]["responses"]


def test_a_route_hidden_from_the_schema_does_not_shape_the_documented_one() -> None:
    # A hidden route on the same path and method (registered later, never reached)
    # is not in the document, so its dependencies must not decide how the
    # documented operation's requirement is published.
    app = app_with(("/x", [any_of("read:a", "read:b")], None))

    async def hidden() -> None: ...

    app.get("/x", dependencies=[Depends(require_token)], include_in_schema=False)(hidden)
    configure_openapi(app)
    assert get_op(app.openapi(), "/x")["security"] == [
        {SCHEME_NAME: ["read:a"]},
        {SCHEME_NAME: ["read:b"]},
    ]


def test_a_custom_document_with_odd_entries_is_left_as_it_is() -> None:
    # A user's own openapi() may add entries FastAPI never makes (a path item that is
    # a $ref string, a security list with a non-object): configure_openapi must still
    # build the document, touching only what it understands.
    app = app_with(("/me", [Depends(require_token)], None))

    def edit(schema: Schema) -> None:
        schema["paths"]["/external"] = "see https://example.test/openapi.json"
        schema["paths"]["/me"]["get"]["security"].append("legacy")

    with_custom_openapi(app, edit)
    configure_openapi(app)
    schema = app.openapi()
    assert schema["paths"]["/external"] == "see https://example.test/openapi.json"
    assert "401" in get_op(schema, "/me")["responses"]


# -- DPoP: the scheme's description says what OpenAPI cannot -----------------------


def _scheme_description(mode: str, **settings: Any) -> str:
    config = Auth0Config(domain="tenant.auth0.com", audience="https://api", dpop=mode, **settings)
    app = app_with(("/me", [Depends(require_token)], None))
    configure_openapi(app, config)
    app.openapi()  # the second call hands out the cached document: the note is added once
    description: str = app.openapi()["components"]["securitySchemes"][SCHEME_NAME]["description"]
    return description


def test_dpop_allowed_is_described_on_the_scheme_once() -> None:
    description = _scheme_description("allowed", dpop_algorithms=("ES256", "EdDSA"))
    assert description.count("DPoP-bound tokens are accepted too (RFC 9449)") == 1
    assert "signed with ES256, EdDSA" in description
    assert description.startswith("An Auth0 access token (JWT)")


def test_dpop_required_says_swagger_ui_cannot_call_the_routes() -> None:
    description = _scheme_description("required")
    assert description.count("Only DPoP-bound tokens are accepted") == 1
    assert "Swagger UI cannot make proofs" in description


def test_dpop_disabled_adds_nothing_and_another_apps_note_does_not_leak() -> None:
    _scheme_description("required")
    assert _scheme_description("disabled") == (
        "An Auth0 access token (JWT) in the Authorization header."
    )


def test_dpop_note_goes_on_the_oauth2_login_scheme_too() -> None:
    description = _scheme_description("allowed", client_id="abc123")
    assert description.startswith("Log in with Auth0")
    assert "DPoP-bound tokens are accepted too" in description
