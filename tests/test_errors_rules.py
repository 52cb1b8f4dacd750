"""Error-tree rules that mutation testing found unpinned (session 8).

The class-level defaults matter for errors this library does not raise itself: a
custom key source (``key_set=``) or verifier may raise our base classes, or its own
subclasses whose ``__init__`` never calls ours; the answer must still be the one the
tree promises, through the real middleware.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_auth0 import Auth0Error, Auth0Middleware, BearerError, KeySetError, TokenVerifier
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio


class _Raises:
    """A custom key source that fails with the given error."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def get_key(self, kid: str | None, alg: str) -> Any:
        raise self.error


class _OwnOutage(KeySetError):
    """A key source's own outage error that skips KeySetError.__init__."""

    def __init__(self) -> None:
        Exception.__init__(self, "our vault is sealed")


class _OwnBearerError(BearerError):
    """A custom verifier's own refusal that sets no status of its own."""

    reason = "custom_refusal"


async def _answer(issuer: LocalIssuer, key_set: _Raises) -> httpx.Response:
    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    verifier = TokenVerifier(issuer.config(), key_set=key_set)
    app = Starlette(
        routes=[Route("/", home)], middleware=[Middleware(Auth0Middleware, verifier=verifier)]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        return await client.get("/", headers={"Authorization": f"Bearer {issuer.token()}"})


def test_a_key_set_error_asks_clients_to_wait_30_seconds_by_default() -> None:
    assert KeySetError("issuer down").retry_after == 30
    assert KeySetError.retry_after == 30


async def test_a_key_set_error_without_retry_after_answers_503_retry_after_30(
    issuer: LocalIssuer,
) -> None:
    reply = await _answer(issuer, _Raises(KeySetError("issuer down")))
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "30"


async def test_a_key_set_error_subclass_skipping_our_init_still_answers_retry_after_30(
    issuer: LocalIssuer,
) -> None:
    error = _OwnOutage()
    assert error.retry_after == 30
    reply = await _answer(issuer, _Raises(error))
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "30"
    assert reply.json()["error"] == "temporarily_unavailable"


async def test_an_error_of_the_base_class_is_answered_500_not_as_a_bad_token(
    issuer: LocalIssuer,
) -> None:
    # Neither the client's fault (401) nor an outage with a retry hint (503).
    assert Auth0Error.status_code == 500
    reply = await _answer(issuer, _Raises(Auth0Error("a custom key source broke")))
    assert reply.status_code == 500
    assert reply.json() == {
        "error": None,
        "error_description": Auth0Error.description,
        "reason": "auth0_error",
    }
    assert "WWW-Authenticate" not in reply.headers


async def test_a_bearer_error_that_sets_no_status_is_answered_401_with_a_challenge(
    issuer: LocalIssuer,
) -> None:
    assert BearerError.status_code == 401
    reply = await _answer(issuer, _Raises(_OwnBearerError("refused by policy")))
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"].startswith('Bearer realm="')
    assert reply.json()["reason"] == "custom_refusal"
