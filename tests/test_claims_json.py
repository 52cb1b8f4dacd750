"""``Claims`` in FastAPI responses: a route may return them, however it is annotated.

They go out as the JSON object the token carried (arrays as arrays, nested objects as
objects), and ``-> Claims`` documents an object in OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from asgi_auth0 import Auth0Middleware, Claims, TokenVerifier, require_token
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio

ClaimsDep = Annotated[Claims, Depends(require_token)]


def build(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=verifier)

    @app.get("/any")
    async def as_any(claims: ClaimsDep) -> Any:
        return claims

    @app.get("/typed")
    async def typed(claims: ClaimsDep) -> Claims:
        return claims

    @app.get("/nested")
    async def nested(claims: ClaimsDep) -> dict[str, Any]:
        return {"you": claims, "list": [claims]}

    @app.get("/bare")
    async def bare(claims: ClaimsDep):  # type: ignore[no-untyped-def]
        return claims

    return app


async def test_a_route_can_return_the_claims(issuer: LocalIssuer, verifier: TokenVerifier) -> None:
    token = issuer.token(sub="alice", scope="a b", permissions=["x"], n=[1, {"k": 2}])
    transport = httpx.ASGITransport(app=build(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        headers = {"Authorization": f"Bearer {token}"}
        replies = {p: await client.get(p, headers=headers) for p in ("/any", "/typed", "/bare")}
        nested = await client.get("/nested", headers=headers)
        schema = (await client.get("/openapi.json")).json()
    for path, reply in replies.items():
        assert reply.status_code == 200, (path, reply.text)
        body = reply.json()
        assert body["sub"] == "alice", path
        assert body["permissions"] == ["x"], path
        assert body["n"] == [1, {"k": 2}], path
        assert body["iss"] == issuer.issuer, path
    assert nested.status_code == 200
    assert nested.json()["you"] == replies["/any"].json()
    assert nested.json()["list"] == [replies["/any"].json()]
    typed = schema["paths"]["/typed"]["get"]["responses"]["200"]["content"]["application/json"]
    ref = typed["schema"].get("$ref", "")
    resolved = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else typed["schema"]
    assert resolved["type"] == "object"
    assert resolved["additionalProperties"] is True


def test_only_verified_claims_validate_as_claims() -> None:
    # A dict is not verified claims: -> Claims does not turn one into them.
    from pydantic import TypeAdapter, ValidationError

    adapter = TypeAdapter(Claims)
    claims = Claims({"sub": "alice", "aud": ["a", "b"]})
    assert adapter.validate_python(claims) is claims
    with pytest.raises(ValidationError):
        adapter.validate_python({"sub": "alice"})
    assert adapter.dump_python(claims, mode="json") == {"sub": "alice", "aud": ["a", "b"]}
