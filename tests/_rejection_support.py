"""What the rejection-log tests share: a middleware around a bare app, with the
log window's clock injected, a client for it, and a key source that always fails."""

from __future__ import annotations

from typing import Any

import httpx
from _clock import Clock
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from asgi_auth0._middleware import Auth0Middleware

OTHER = "the Authorization header uses a scheme other than Bearer"


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("ok")(scope, receive, send)


def middleware(verifier: Any, clock: Clock) -> Auth0Middleware:
    mw = Auth0Middleware(ok, verifier=verifier)
    mw._responder.clock = clock
    return mw


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


class FailingKeySet:
    """A custom key source that answers every lookup with ``error``."""

    generation = 1

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def get_key(self, kid: str | None, alg: str) -> Any:
        raise self.error
