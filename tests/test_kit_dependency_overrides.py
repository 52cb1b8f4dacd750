"""Faking authentication with FastAPI's ``dependency_overrides``, as the README's testing
section describes it: an override replaces a dependency's own checks (a token present,
its scopes or permissions), never the middleware's verification of a token that is
sent, on any app; and on a fail-closed app a request without a token never gets as far
as the override."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from asgi_auth0 import (
    Auth0Middleware,
    Claims,
    TokenVerifier,
    require_permissions,
    require_scopes,
    require_token,
)
from asgi_auth0.testing import LocalIssuer

FAKE = Claims({"sub": "faked", "scope": "", "permissions": []})


def build_app(verifier: TokenVerifier, overridden: list[str], **options: Any) -> FastAPI:
    """An app whose three dependencies are all overridden; ``overridden`` records each
    call of the override, so a test can tell whether it ran."""
    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=verifier, **options)

    @app.get("/me")
    async def me(claims: Annotated[Claims, Depends(require_token)]) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.get("/read")
    async def read(
        claims: Annotated[Claims, Depends(require_scopes("read:messages"))],
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.get("/delete")
    async def delete(
        claims: Annotated[Claims, Depends(require_permissions("delete:messages"))],
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    async def fake() -> Claims:
        overridden.append("called")
        return FAKE

    for dependency in (
        require_token,
        require_scopes("read:messages"),
        require_permissions("delete:messages"),
    ):
        app.dependency_overrides[dependency] = fake
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.anyio
async def test_an_override_replaces_the_dependencys_own_checks(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    overridden: list[str] = []
    async with client(build_app(verifier, overridden)) as c:
        # No token: require_token's own 401 is what the override replaces.
        assert (await c.get("/me")).json() == {"sub": "faked"}
        # A valid token lacking the scope and the permission: the checks are replaced,
        # and the route gets the override's claims, not the token's.
        token = issuer.token(sub="real")
        assert (await c.get("/read", headers=bearer(token))).json() == {"sub": "faked"}
        assert (await c.get("/delete", headers=bearer(token))).json() == {"sub": "faked"}
    assert len(overridden) == 3


@pytest.mark.anyio
async def test_a_bad_token_is_refused_by_the_middleware_before_any_override(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    overridden: list[str] = []
    bad = [
        (bearer(issuer.expired_token()), 401, "token_expired"),
        (bearer(issuer.bad_signature_token()), 401, "bad_signature"),
        (bearer(issuer.wrong_audience_token()), 401, "invalid_audience"),
        (bearer("not-a-jwt"), 401, "malformed_token"),
        ({"Authorization": "Bearer two tokens"}, 400, "malformed_authorization"),
    ]
    async with client(build_app(verifier, overridden)) as c:
        for headers, status, reason in bad:
            for path in ("/me", "/read", "/delete"):
                response = await c.get(path, headers=headers)
                assert (response.status_code, response.json()["reason"]) == (status, reason)
    assert overridden == []


@pytest.mark.anyio
async def test_a_fail_closed_app_refuses_a_tokenless_request_before_any_override(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    overridden: list[str] = []
    app = build_app(verifier, overridden, require_token=True, public_paths=["/health"])
    async with client(app) as c:
        missing = await c.get("/me")
        assert missing.status_code == 401
        assert missing.json()["reason"] == "missing_token"
        assert overridden == []
        # With a valid token the override still replaces the checks.
        token = issuer.token(sub="real")
        assert (await c.get("/read", headers=bearer(token))).json() == {"sub": "faked"}
    assert overridden == ["called"]
