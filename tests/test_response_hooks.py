"""Broken ``on_error`` hooks: refused when they cannot work, survived when they fail.

A rejected request must get its RFC 6750 status and challenge whatever the
application's response hook does; an ``async def`` hook (which would hand back a
coroutine where a Response is due) is refused when the middleware is built.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from asgi_auth0._challenge import Challenge
from asgi_auth0._errors import ConfigError
from asgi_auth0._middleware import Auth0Middleware
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.testing import LocalIssuer


def app_with(verifier: TokenVerifier, hook: Any) -> Starlette:
    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route("/", whoami)],
        middleware=[Middleware(Auth0Middleware, verifier=verifier, on_error=hook)],
    )


async def async_hook(conn: HTTPConnection, challenge: Challenge) -> Response:
    return Response(status_code=challenge.status_code)


class AsyncCallable:
    async def __call__(self, conn: HTTPConnection, challenge: Challenge) -> Response:
        return Response(status_code=challenge.status_code)


@pytest.mark.parametrize("hook", [async_hook, AsyncCallable()], ids=["function", "object"])
def test_an_async_hook_is_refused_at_construction(verifier: TokenVerifier, hook: Any) -> None:
    with pytest.raises(ConfigError, match="use a plain def hook"):
        Auth0Middleware(Response("x"), verifier=verifier, on_error=hook)


def raising_hook(conn: HTTPConnection, challenge: Challenge) -> Response:
    raise RuntimeError("the hook has a bug")


def wrong_type_hook(conn: HTTPConnection, challenge: Challenge) -> Any:
    return {"not": "a response"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("hook", "logged"),
    [(raising_hook, "the on_error response hook raised"), (wrong_type_hook, "returned dict")],
    ids=["raises", "wrong-type"],
)
async def test_a_failing_hook_still_gets_the_rfc6750_answer_and_is_logged(
    verifier: TokenVerifier,
    issuer: LocalIssuer,
    caplog: pytest.LogCaptureFixture,
    hook: Any,
    logged: str,
) -> None:
    caplog.set_level(logging.ERROR, logger="asgi_auth0.middleware")
    transport = httpx.ASGITransport(app=app_with(verifier, hook))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/", headers={"Authorization": f"Bearer {issuer.expired_token()}"})
        # The app keeps serving.
        ok = await c.get("/", headers={"Authorization": f"Bearer {issuer.token()}"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert r.json()["reason"] == "token_expired"
    assert ok.json() == {"ok": True}
    assert any(logged in record.getMessage() for record in caplog.records)


def test_a_configuration_error_is_logged_before_it_is_raised(
    verifier: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    # Starlette builds middleware on the first call, and uvicorn's default lifespan
    # mode reads an exception there as "lifespan unsupported" (logged at INFO) and
    # starts anyway: the error log is what makes the mistake visible at startup.
    caplog.set_level(logging.ERROR, logger="asgi_auth0.middleware")
    with pytest.raises(ConfigError):
        Auth0Middleware(Response("x"), verifier=verifier, public_paths=["/health"])
    [record] = [r for r in caplog.records if r.name == "asgi_auth0.middleware"]
    assert record.levelno == logging.ERROR
    assert "Auth0Middleware is misconfigured" in record.getMessage()
    assert "public_paths only applies with require_token=True" in record.getMessage()


def forgets_the_status(conn: HTTPConnection, challenge: Challenge) -> Response:
    return JSONResponse({"message": challenge.error_description})  # status_code left at 200


def redirects(conn: HTTPConnection, challenge: Challenge) -> Response:
    return Response(status_code=303, headers={"Location": "/login"})


@pytest.mark.anyio
async def test_a_hook_answering_a_rejection_with_success_gets_the_challenges_status(
    verifier: TokenVerifier, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    # A 200 for a rejection reads as success to whatever trusts status codes (a
    # gateway's auth_request, a client's refresh-on-401): the challenge's status goes
    # out instead, with the hook's body, and the mistake is logged once.
    caplog.set_level(logging.ERROR, logger="asgi_auth0")
    transport = httpx.ASGITransport(app=app_with(verifier, forgets_the_status))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        expired = await c.get("/", headers={"Authorization": f"Bearer {issuer.expired_token()}"})
        missing_scope_free = await c.get("/", headers={"Authorization": "Bearer a b"})
    assert expired.status_code == 401
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]
    assert "message" in expired.json()  # the hook's body
    assert missing_scope_free.status_code == 400
    logged = [r for r in caplog.records if getattr(r, "reason", None) == "response_hook_status"]
    assert len(logged) == 1
    assert "status_code=challenge.status_code" in logged[0].getMessage()


@pytest.mark.anyio
async def test_a_hook_may_redirect(verifier: TokenVerifier, issuer: LocalIssuer) -> None:
    transport = httpx.ASGITransport(app=app_with(verifier, redirects))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/", headers={"Authorization": f"Bearer {issuer.expired_token()}"})
    assert r.status_code == 303
    assert r.headers["location"] == "/login"
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


class _FixedStatus(JSONResponse):
    """A Response whose status cannot be changed once it is built: a later assignment
    raises (``strict``) or is ignored."""

    strict = True

    @property  # type: ignore[override]
    def status_code(self) -> int:
        return self._status

    @status_code.setter
    def status_code(self, value: int) -> None:
        if "_status" not in self.__dict__:
            self._status = value
        elif self.strict:
            raise AttributeError("read-only")


class _IgnoredStatus(_FixedStatus):
    strict = False


@pytest.mark.anyio
@pytest.mark.parametrize("kind", [_FixedStatus, _IgnoredStatus], ids=["raises", "ignores"])
async def test_a_hook_response_that_keeps_its_success_status_gets_the_default_answer(
    verifier: TokenVerifier, issuer: LocalIssuer, kind: type[JSONResponse]
) -> None:
    def hook(conn: HTTPConnection, challenge: Challenge) -> Response:
        return kind({"message": "no"})

    transport = httpx.ASGITransport(app=app_with(verifier, hook))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/", headers={"Authorization": f"Bearer {issuer.expired_token()}"})
    assert r.status_code == 401  # not a 500, not a 200
    assert r.json()["reason"] == "token_expired"


@pytest.mark.anyio
async def test_a_hook_response_without_an_integer_status_gets_the_challenges(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    def hook(conn: HTTPConnection, challenge: Challenge) -> Response:
        response = JSONResponse({"message": "no"})
        setattr(response, "status_code", "200")  # noqa: B010 (not an int: a hook's bug)
        return response

    transport = httpx.ASGITransport(app=app_with(verifier, hook))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/", headers={"Authorization": f"Bearer {issuer.expired_token()}"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


@pytest.mark.anyio
async def test_a_hook_may_redirect_with_an_http_status_member(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    # HTTPStatus.FOUND is an int (an IntEnum): a redirect, the hook's to choose.
    def hook(conn: HTTPConnection, challenge: Challenge) -> Response:
        return RedirectResponse("/login", status_code=HTTPStatus.FOUND)

    transport = httpx.ASGITransport(app=app_with(verifier, hook))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/", headers={"Authorization": f"Bearer {issuer.expired_token()}"})
    assert r.status_code == 302
    assert r.headers["location"] == "/login"
