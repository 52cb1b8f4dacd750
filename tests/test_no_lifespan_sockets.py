from __future__ import annotations

import gc
import warnings

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_auth0 import Auth0Middleware
from asgi_auth0.testing import LocalIssuer


@pytest.mark.anyio
async def test_no_socket_is_left_open_when_no_lifespan_runs(auth0_issuer: LocalIssuer) -> None:
    async def me(request: Request) -> JSONResponse:
        return JSONResponse({"sub": request.state.claims.sub})

    app = Starlette(routes=[Route("/me", me)])
    app.add_middleware(Auth0Middleware, config=auth0_issuer.config())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            token = auth0_issuer.token(sub="auth0|s")
            response = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
        del app, transport, client
        gc.collect()
    assert response.json() == {"sub": "auth0|s"}
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
