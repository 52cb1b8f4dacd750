"""From an error to status, WWW-Authenticate (RFC 6750 §3) and body."""

from __future__ import annotations

import json
import re

import pytest
from _asgi import http_scope
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, Response

from asgi_auth0._challenge import (
    Challenge,
    Responder,
    challenge_for,
    json_response,
    problem_json_response,
    www_authenticate,
)
from asgi_auth0._errors import (
    Auth0Error,
    ExpiredTokenError,
    InsufficientScopeError,
    InvalidRequestError,
    InvalidTokenError,
    KeySetError,
    MissingTokenError,
    MultipleTokensError,
)

# RFC 6750 §3 (with RFC 9110 auth-param syntax): Bearer, then comma-separated
# name="value" pairs whose values hold no quote, backslash or control character.
CHALLENGE = re.compile(
    r'Bearer [a-z_]+="[\x20\x21\x23-\x5b\x5d-\x7e]*"(, [a-z_]+="[\x20\x21\x23-\x5b\x5d-\x7e]*")*'
)


def conn() -> HTTPConnection:
    return HTTPConnection(http_scope(host=None))


def params(header: str) -> dict[str, str]:
    assert CHALLENGE.fullmatch(header), header
    return dict(re.findall(r'([a-z_]+)="([^"]*)"', header))


def test_missing_token_gets_a_bare_challenge() -> None:
    c = challenge_for(MissingTokenError(), realm="api")
    assert c.status_code == 401
    assert c.headers == {"WWW-Authenticate": 'Bearer realm="api"'}
    assert c.body() == {
        "error": None,
        "error_description": "Authentication required.",
        "reason": "missing_token",
    }


def test_invalid_token_carries_error_and_fixed_description() -> None:
    c = challenge_for(ExpiredTokenError("exp 1234 passed for sub=alice"), realm="api")
    assert c.status_code == 401
    assert params(c.headers["WWW-Authenticate"]) == {
        "realm": "api",
        "error": "invalid_token",
        "error_description": "The access token has expired.",
    }
    assert c.body() == {
        "error": "invalid_token",
        "error_description": "The access token has expired.",
        "reason": "token_expired",
    }
    # The instance detail (server-side words) never reaches the client.
    assert "alice" not in json.dumps(c.body()) + c.headers["WWW-Authenticate"]


@pytest.mark.parametrize("exc", [InvalidRequestError(), MultipleTokensError()])
def test_malformed_requests_are_400_invalid_request(exc: Auth0Error) -> None:
    c = challenge_for(exc, realm="api")
    assert c.status_code == 400
    assert params(c.headers["WWW-Authenticate"])["error"] == "invalid_request"
    assert c.body()["error"] == "invalid_request"
    assert c.body()["reason"] == exc.reason


def test_insufficient_scope_is_403_with_the_scopes() -> None:
    c = challenge_for(InsufficientScopeError(["read:messages", "write:messages"]), realm="api")
    assert c.status_code == 403
    assert params(c.headers["WWW-Authenticate"]) == {
        "realm": "api",
        "error": "insufficient_scope",
        "error_description": "The access token lacks a required scope.",
        "scope": "read:messages write:messages",
    }
    assert c.required == ("read:messages", "write:messages")
    assert c.body()["error"] == "insufficient_scope"


def test_scope_values_that_could_break_the_header_are_dropped() -> None:
    evil = ['read"x', "a b", "back\\slash", "crlf\r\nSet-Cookie: x=1", "caf\u00e9", "ok:scope"]
    c = challenge_for(InsufficientScopeError(evil), realm="api")
    header = c.headers["WWW-Authenticate"]
    assert params(header)["scope"] == "ok:scope"
    assert "\r" not in header
    assert "\n" not in header
    assert c.required == ("ok:scope",)


def test_no_valid_scope_left_means_no_scope_attribute() -> None:
    c = challenge_for(InsufficientScopeError(['"']), realm="api")
    assert "scope" not in params(c.headers["WWW-Authenticate"])


def test_key_set_outage_is_503_with_retry_after_and_no_challenge() -> None:
    c = challenge_for(KeySetError("issuer down", retry_after=17), realm="api")
    assert c.status_code == 503
    assert c.headers == {"Retry-After": "17"}
    assert c.body() == {
        "error": "temporarily_unavailable",
        "error_description": "The token issuer's signing keys are temporarily unavailable.",
        "reason": "key_set_unavailable",
    }


def test_a_subclass_with_unsafe_description_is_sanitised() -> None:
    class Custom(InvalidTokenError):
        reason = "custom"
        description = 'Bad "token"\r\nX: y \\ end'

    c = challenge_for(Custom(), realm="api")
    header = c.headers["WWW-Authenticate"]
    assert params(header)["error_description"] == "Bad tokenX: y  end"
    assert c.error_description == "Bad tokenX: y  end"


@given(
    realm=st.text(max_size=40),
    error=st.text(max_size=40),
    description=st.text(max_size=80),
    scopes=st.lists(st.text(max_size=20), max_size=5),
)
def test_www_authenticate_is_always_well_formed(
    realm: str, error: str, description: str, scopes: list[str]
) -> None:
    header = www_authenticate(realm, error or None, description, scopes)
    parsed = params(header)
    assert set(parsed) <= {"realm", "error", "error_description", "scope"}
    header.encode("latin-1")  # a valid header value


async def body_of(response: Response) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        raise AssertionError("a response must not read the request")

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await response(http_scope(), receive, send)  # type: ignore[arg-type]
    start, body = sent
    hdrs = {k.decode(): v.decode() for k, v in start["headers"]}  # type: ignore[attr-defined]
    return start["status"], hdrs, body["body"]  # type: ignore[return-value]


@pytest.mark.anyio
async def test_default_response_is_json_with_the_challenge_headers() -> None:
    responder = Responder(realm="my api")
    c = responder.challenge(InsufficientScopeError(["read:x"]))
    status, hdrs, body = await body_of(responder.response(conn(), c))
    assert status == 403
    assert hdrs["content-type"] == "application/json"
    assert hdrs["www-authenticate"] == (
        'Bearer realm="my api", error="insufficient_scope", '
        'error_description="The access token lacks a required scope.", scope="read:x"'
    )
    assert json.loads(body) == c.body()


@pytest.mark.anyio
async def test_problem_json_hook() -> None:
    responder = Responder(realm="api", hook=problem_json_response)
    c = responder.challenge(InsufficientScopeError(["read:x"]))
    status, hdrs, body = await body_of(responder.response(conn(), c))
    assert status == 403
    assert hdrs["content-type"] == "application/problem+json"
    assert "www-authenticate" in hdrs
    assert json.loads(body) == {
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
        "detail": "The access token lacks a required scope.",
        "error": "insufficient_scope",
        "reason": "insufficient_scope",
        "required_scopes": ["read:x"],
    }


@pytest.mark.anyio
async def test_a_hook_cannot_lose_the_challenge_headers() -> None:
    def plain(conn: HTTPConnection, challenge: Challenge) -> Response:
        return PlainTextResponse(challenge.reason, status_code=challenge.status_code)

    responder = Responder(realm="api", hook=plain)
    status, hdrs, body = await body_of(
        responder.response(conn(), responder.challenge(MissingTokenError()))
    )
    assert (status, body) == (401, b"missing_token")
    assert hdrs["www-authenticate"] == 'Bearer realm="api"'

    c = responder.challenge(KeySetError(retry_after=5))
    status, hdrs, _ = await body_of(responder.response(conn(), c))
    assert (status, hdrs["retry-after"]) == (503, "5")


def test_default_hook_is_json_response() -> None:
    assert Responder(realm="api").hook is json_response
