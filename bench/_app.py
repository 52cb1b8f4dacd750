"""The FastAPI app the HTTP benchmark serves, in one of several protection modes.

``uvicorn --factory bench._app:create_app`` builds it from environment variables set
by the benchmark (``BENCH_MODE``, ``BENCH_ISSUER``, ``BENCH_JWKS_URI``): the same
route and response in every mode, only the protection differs.

- ``open``: no authentication at all.
- ``ours``: ``Auth0Middleware`` plus ``Depends(require_token)``.
- ``ours_closed``: ``Auth0Middleware(require_token=True, public_paths=["/health"])``,
  fail closed, no dependency: the endpoint gets the claims with
  ``await require_token(request)`` (typed; the middleware guarantees them on every
  path that is not public), as the README shows.
- ``ours_nocache``: the same with the verified-token cache off (every request pays
  a full verification, as if every request carried a new token).
- ``noop_dep`` (a reference, not protection): no authentication, one no-op
  ``async`` dependency: what FastAPI's dependency machinery alone costs a route.
- ``pyjwk``: no middleware; an ``async`` dependency doing what PyJWT's docs show,
  ``PyJWKClient.get_signing_key_from_jwt`` then ``jwt.decode`` with audience and
  issuer checks (async so it does not pay a threadpool hop; PyJWKClient caches the
  JWKS).
"""

# No "from __future__ import annotations": FastAPI must see the local dependencies.

import os
from typing import Annotated, Any

import jwt
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from asgi_auth0 import Auth0Config, Auth0Middleware, Claims, require_token

from ._common import AUDIENCE

MODES = ("open", "noop_dep", "ours", "ours_closed", "ours_nocache", "pyjwk")


def create_app() -> FastAPI:
    mode = os.environ["BENCH_MODE"]
    issuer = os.environ["BENCH_ISSUER"]
    jwks_uri = os.environ["BENCH_JWKS_URI"]
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"ok": True}

    if mode == "open":

        @app.get("/me")
        async def me_open() -> dict[str, Any]:
            return {"sub": None}

    elif mode == "noop_dep":

        async def nothing() -> None:
            return None

        @app.get("/me")
        async def me_noop(_: Annotated[None, Depends(nothing)]) -> dict[str, Any]:
            return {"sub": None}

    elif mode in ("ours", "ours_nocache"):
        config = Auth0Config(
            issuer=issuer,
            audience=AUDIENCE,
            jwks_uri=jwks_uri,
            token_cache_size=0 if mode == "ours_nocache" else 4096,
        )
        app.add_middleware(Auth0Middleware, config=config)

        @app.get("/me")
        async def me_ours(claims: Annotated[Claims, Depends(require_token)]) -> dict[str, Any]:
            return {"sub": claims.sub}

    elif mode == "ours_closed":
        app.add_middleware(
            Auth0Middleware,
            config=Auth0Config(issuer=issuer, audience=AUDIENCE, jwks_uri=jwks_uri),
            require_token=True,
            public_paths=["/health"],
        )

        @app.get("/me")
        async def me_closed(request: Request) -> dict[str, Any]:
            claims = await require_token(request)  # typed, as the README shows; no Depends
            return {"sub": claims.sub}

    elif mode == "pyjwk":
        client = jwt.PyJWKClient(jwks_uri)
        bearer = HTTPBearer()

        async def pyjwt_claims(
            credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)],
        ) -> dict[str, Any]:
            token = credentials.credentials
            try:
                key = client.get_signing_key_from_jwt(token)
                # Annotated, not cast: older PyJWT types decode() as Any, newer as a dict.
                claims: dict[str, Any] = jwt.decode(
                    token, key.key, algorithms=["RS256"], audience=AUDIENCE, issuer=issuer
                )
            except jwt.PyJWTError as exc:
                raise HTTPException(status_code=401, detail="invalid token") from exc
            return claims

        @app.get("/me")
        async def me_pyjwk(
            claims: Annotated[dict[str, Any], Depends(pyjwt_claims)],
        ) -> dict[str, Any]:
            return {"sub": claims.get("sub")}

    else:
        raise SystemExit(f"unknown BENCH_MODE {mode!r}; one of {MODES}")
    return app
