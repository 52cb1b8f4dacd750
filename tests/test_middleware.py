"""Auth0Middleware at the ASGI level: tokens, rejections, state, lifespan, WebSocket
handshakes, and the promise to stay out of the way (no body reads, no wrapped send).

Tokens are real: minted by a LocalIssuer (used without its server here) and verified
against its JWKS through a StaticKeySet.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from _asgi import CookieLogin, drive, http_scope, ws_scope
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    SimpleUser,
    requires,
)
from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.endpoints import WebSocketEndpoint
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from asgi_auth0._challenge import Challenge, problem_json_response
from asgi_auth0._errors import ConfigError, InsufficientScopeError, InvalidTokenError, KeySetError
from asgi_auth0._keys import StaticKeySet
from asgi_auth0._middleware import (
    Auth0Middleware,
    Auth0User,
    AuthenticationRejected,
    auth_state,
)
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.testing import DPoPKey, LocalIssuer

pytestmark = pytest.mark.anyio

ISS = "https://tenant.example.test/"
AUD = "https://api.example.test"
Message = dict[str, Any]


class CountingKeySet:
    """A StaticKeySet that counts what the middleware and verifier do with it."""

    generation = 0

    def __init__(self, jwks: dict[str, Any], *, refresh_fails: bool = False) -> None:
        self.inner = StaticKeySet(jwks)
        self.refresh_fails = refresh_fails
        self.gets = 0
        self.refreshes = 0
        self.closes = 0

    async def get_key(self, kid: str | None, alg: str) -> Any:
        self.gets += 1
        return await self.inner.get_key(kid, alg)

    async def refresh(self) -> None:
        self.refreshes += 1
        if self.refresh_fails:
            raise KeySetError("issuer down")

    async def aclose(self) -> None:
        self.closes += 1


class DownKeySet:
    """A key source whose issuer is unreachable."""

    generation = 0

    async def get_key(self, kid: str | None, alg: str) -> Any:
        raise KeySetError("issuer unreachable", retry_after=42)


@pytest.fixture
def keys(issuer: LocalIssuer) -> CountingKeySet:
    return CountingKeySet(issuer.jwks)


@pytest.fixture
def verifier(issuer: LocalIssuer, keys: CountingKeySet) -> TokenVerifier:
    return TokenVerifier(issuer.config(), key_set=keys)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- a Starlette app that reports what the middleware gave it ---------------------------


async def whoami(request: Request) -> JSONResponse:
    claims = request.state.claims
    return JSONResponse(
        {
            "sub": None if claims is None else claims.sub,
            "authenticated": request.user.is_authenticated,
            "display_name": request.user.display_name,
            "identity": request.user.identity,
            "scopes": request.auth.scopes,
        }
    )


@requires("read:messages")
async def messages(request: Request) -> JSONResponse:
    return JSONResponse(["hello"])


def starlette_app(verifier: TokenVerifier | None = None, **options: Any) -> Starlette:
    routes = [Route("/", whoami), Route("/messages", messages)]
    return Starlette(
        routes=routes,
        middleware=[Middleware(Auth0Middleware, verifier=verifier, **options)],
    )


def client(app: Any) -> httpx.AsyncClient:
    # ASGITransport sends no lifespan: every test here also shows the middleware
    # works without one.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def start_of(sent: list[Message]) -> tuple[int, dict[str, str], Any]:
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    hdrs = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
    return start["status"], hdrs, json.loads(body) if body else None


# -- anonymous and authenticated requests ----------------------------------------------


async def test_no_token_continues_anonymously(
    verifier: TokenVerifier, keys: CountingKeySet
) -> None:
    async with client(starlette_app(verifier)) as c:
        r = await c.get("/")
    assert r.status_code == 200
    assert r.json() == {
        "sub": None,
        "authenticated": False,
        "display_name": "",
        "identity": "",
        "scopes": [],
    }
    assert keys.gets == 0  # no token, no key lookup


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Digest username=x", "Token abc"])
async def test_another_scheme_counts_as_no_token(verifier: TokenVerifier, value: str) -> None:
    async with client(starlette_app(verifier)) as c:
        r = await c.get("/", headers={"Authorization": value})
    assert r.status_code == 200
    assert r.json()["authenticated"] is False


async def test_a_valid_token_sets_claims_user_and_auth(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    token = issuer.token(
        sub="auth0|alice",
        scope="write:messages read:messages",
        permissions=["delete:messages"],
    )
    async with client(starlette_app(verifier)) as c:
        r = await c.get("/", headers=bearer(token))
    assert r.status_code == 200
    assert r.json() == {
        "sub": "auth0|alice",
        "authenticated": True,
        "display_name": "auth0|alice",
        "identity": "auth0|alice",
        # "authenticated" plus the token's scopes; never its permissions.
        "scopes": ["authenticated", "read:messages", "write:messages"],
    }


async def test_starlette_requires_works_with_token_scopes(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    async with client(starlette_app(verifier)) as c:
        ok = await c.get("/messages", headers=bearer(issuer.token(scope="read:messages")))
        short = await c.get("/messages", headers=bearer(issuer.token(scope="other")))
        perm = await c.get(
            "/messages",
            headers=bearer(issuer.token(permissions=["read:messages"])),
        )
        anon = await c.get("/messages")
    assert ok.status_code == 200
    assert short.status_code == 403
    assert perm.status_code == 403  # a permission is not a scope
    assert anon.status_code == 403


async def test_state_written_into_an_existing_state_dict_keeps_other_entries(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope["state"])
        seen["user"] = scope["user"]
        await Response("ok")(scope, receive, send)

    scope = http_scope(
        [(b"authorization", f"Bearer {issuer.token()}".encode())],
        state={"db": "pool"},  # what a server copies in from lifespan state
    )
    await drive(Auth0Middleware(app, verifier=verifier), scope, [{"type": "http.request"}])
    assert seen["db"] == "pool"
    assert seen["claims"]["sub"] == "user-1"
    assert isinstance(seen["user"], Auth0User)
    claims, _ = auth_state(scope)
    assert claims is not None
    assert claims.sub == "user-1"


async def test_a_user_set_outside_stands_for_a_request_without_a_token(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    # Starlette's AuthenticationMiddleware outside ours, logging users in by session
    # cookie for an app's pages: a request with no bearer token keeps that user (it
    # was replaced by the anonymous one, and the app's logged-in users silently
    # lost their login); a token's identity still wins, and a bad token is refused.
    app = Starlette(
        routes=[Route("/", whoami)],
        middleware=[
            Middleware(
                AuthenticationMiddleware,
                backend=CookieLogin("s1", "cookie-user", ["authenticated", "pages"]),
            ),
            Middleware(Auth0Middleware, verifier=verifier),
        ],
    )
    async with client(app) as c:
        cookie = {"Cookie": "session=s1"}
        session = (await c.get("/", headers=cookie)).json()
        anonymous = (await c.get("/")).json()
        token = (await c.get("/", headers=bearer(issuer.token(sub="alice")))).json()
        both = await c.get("/", headers={**cookie, **bearer(issuer.token())})
        bad = await c.get("/", headers={**cookie, **bearer("x.y.z")})
    assert session["sub"] is None  # no token: no claims
    assert session["display_name"] == "cookie-user"
    assert session["scopes"] == ["authenticated", "pages"]
    assert anonymous["authenticated"] is False
    assert token["display_name"] == "alice"
    assert both.json()["sub"] == "user-1"  # the token's identity, not the cookie's
    assert "pages" not in both.json()["scopes"]
    assert bad.status_code == 401


class _RewrapUser:
    """A middleware that swaps the user for one of its own, made from the old."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        if user is not None and user.is_authenticated:
            scope["user"] = SimpleUser(user.display_name)
            scope["auth"] = AuthCredentials(list(scope["auth"].scopes))
        await self.app(scope, receive, send)


class _RewrapAndRebuild(_RewrapUser):
    """The same, then a scope rebuilt from the keys it knows (ours not among them)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        known = ("type", "asgi", "http_version", "method", "scheme", "path", "raw_path")
        known += ("root_path", "query_string", "headers", "client", "server", "extensions")
        known += ("subprotocols", "state", "user", "auth", "app", "router")

        async def rebuilt(scope: Scope, receive: Receive, send: Send) -> None:
            await self.app({k: v for k, v in scope.items() if k in known}, receive, send)

        await _RewrapUser(rebuilt)(scope, receive, send)


@pytest.mark.parametrize(
    "between",
    [None, _RewrapUser, _RewrapAndRebuild],
    ids=["nothing", "a-user-remade", "remade-and-scope-rebuilt"],
)
async def test_an_outer_auth0_middlewares_user_never_stands_for_an_inner_api(
    issuer: LocalIssuer, between: Any
) -> None:
    # API A outside, API B mounted inside with its own middleware. A reads DPoP and
    # query-string tokens, B neither: a token for A sent that way is no token to B,
    # and A's user must not pass B's @requires, as it is or remade by a middleware in
    # between (either did when an outer user was kept whatever its origin).
    @requires("admin")
    async def b_admin(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.user.display_name})

    @requires("admin")
    async def b_ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    def verifier_for(audience: str, **options: Any) -> TokenVerifier:
        config = issuer.config(audience=audience, **options)
        return TokenVerifier(config, key_set=StaticKeySet(issuer.jwks))

    b_app = Starlette(
        routes=[Route("/admin", b_admin), WebSocketRoute("/ws", b_ws)],
        middleware=[
            *([Middleware(between)] if between else []),
            Middleware(Auth0Middleware, verifier=verifier_for("https://b.example")),
        ],
    )
    app = Starlette(
        routes=[Mount("/b", app=b_app)],
        middleware=[
            Middleware(
                Auth0Middleware,
                verifier=verifier_for("https://a.example", dpop="allowed"),
                websocket_query_param="access_token",
            )
        ],
    )
    key = DPoPKey()
    token = issuer.token(sub="alice", scope="admin", aud="https://a.example", cnf=key.cnf)
    async with client(app) as c:
        r = await c.get("/b/admin", headers=key.headers(token, "GET", "http://test/b/admin"))
    assert r.status_code == 403
    plain = issuer.token(sub="alice", scope="admin", aud="https://a.example")
    scope = ws_scope(path="/b/ws", query=f"access_token={plain}".encode())
    sent = await drive(app, scope, [{"type": "websocket.connect"}])
    # @requires refuses the handshake (Starlette closes it before any accept).
    assert "websocket.accept" not in [m["type"] for m in sent]


# -- rejections --------------------------------------------------------------------------


def invalid_tokens(issuer: LocalIssuer) -> dict[str, str]:
    return {
        "token_expired": issuer.expired_token(),
        "invalid_audience": issuer.wrong_audience_token(),
        "invalid_issuer": issuer.wrong_issuer_token(),
        "unknown_kid": issuer.unknown_kid_token(),
        "bad_signature": issuer.bad_signature_token(),
        "malformed_token": "not.a.jwt",
        # A DPoP-bound token sent as Bearer: signed, valid, and still refused.
        "sender_constrained_token": issuer.token(cnf={"jkt": "bm90LWEtcmVhbC10aHVtYnByaW50"}),
    }


async def test_invalid_tokens_are_401_and_never_anonymous(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    called = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal called
        called = True
        await Response("should not run")(scope, receive, send)

    mw = Auth0Middleware(app, verifier=verifier)
    async with client(mw) as c:
        for reason, token in invalid_tokens(issuer).items():
            r = await c.get("/", headers=bearer(token))
            assert r.status_code == 401, reason
            assert r.json()["reason"] == reason
            assert r.json()["error"] == "invalid_token"
            assert r.headers["www-authenticate"] == (
                'Bearer realm="api", error="invalid_token", '
                f'error_description="{r.json()["error_description"]}"'
            )
            assert token not in r.text
            assert token not in r.headers["www-authenticate"]
    assert not called


async def test_malformed_authorization_is_400(verifier: TokenVerifier) -> None:
    async with client(starlette_app(verifier)) as c:
        r = await c.get("/", headers={"Authorization": "Bearer two tokens"})
    assert r.status_code == 400
    assert r.json() == {
        "error": "invalid_request",
        "error_description": "The Authorization header is malformed.",
        "reason": "malformed_authorization",
    }
    assert r.headers["www-authenticate"].startswith('Bearer realm="api", error="invalid_request"')


async def test_several_authorization_headers_are_400(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    token = issuer.token()
    async with client(starlette_app(verifier)) as c:
        r = await c.get(
            "/",
            headers=[("Authorization", f"Bearer {token}"), ("Authorization", "Basic eDp5")],
        )
    assert r.status_code == 400
    assert r.json()["reason"] == "multiple_tokens"


async def test_an_unreachable_issuer_is_503_with_retry_after(issuer: LocalIssuer) -> None:
    verifier = TokenVerifier(issuer.config(), key_set=DownKeySet())
    async with client(starlette_app(verifier)) as c:
        r = await c.get("/", headers=bearer(issuer.token()))
        anon = await c.get("/")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "42"
    assert "www-authenticate" not in r.headers
    assert r.json()["error"] == "temporarily_unavailable"
    assert anon.status_code == 200  # anonymous requests do not need the keys


async def test_the_realm_comes_from_the_config(issuer: LocalIssuer) -> None:
    verifier = TokenVerifier(issuer.config(realm="messages api"), key_set=StaticKeySet(issuer.jwks))
    async with client(starlette_app(verifier)) as c:
        r = await c.get("/", headers=bearer("x.y.z"))
    assert r.headers["www-authenticate"].startswith('Bearer realm="messages api", ')


@pytest.mark.parametrize(
    "value",
    [
        b'Bearer a"b',
        b"Bearer abc\r\nSet-Cookie: session=evil",
        b"Bearer abc\nX-Injected: yes",
        b'Bearer x", error="none',
        b"Bearer \xff\xfe",
        b"Bearer " + b"a" * 20_000,
    ],
)
async def test_request_bytes_never_reach_the_response_headers(
    verifier: TokenVerifier, value: bytes
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("must be rejected before the app")

    sent = await drive(
        Auth0Middleware(app, verifier=verifier),
        http_scope([(b"authorization", value)]),
        [{"type": "http.request"}],
    )
    status, hdrs, body = start_of(sent)
    assert status in (400, 401)
    assert set(hdrs) == {"www-authenticate", "content-length", "content-type"}
    for header_value in hdrs.values():
        assert "evil" not in header_value
        assert "Injected" not in header_value
        assert "\r" not in header_value
        assert "\n" not in header_value
        assert not any(ord(c) > 0x7E for c in header_value)
    assert "evil" not in json.dumps(body)


async def test_rejections_are_logged_with_reason_never_the_token(
    verifier: TokenVerifier, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    token = issuer.expired_token()
    caplog.set_level(logging.DEBUG, logger="asgi_auth0")
    async with client(starlette_app(verifier)) as c:
        r = await c.get("/", headers=bearer(token))
    assert r.status_code == 401
    records = [r for r in caplog.records if r.name == "asgi_auth0.middleware"]
    assert [getattr(r, "reason", None) for r in records] == ["token_expired"]
    for record in caplog.records:
        assert token not in record.getMessage()
        assert token.split(".")[2] not in str(record.__dict__)


async def test_the_response_hook_replaces_the_body_format(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    app = starlette_app(verifier, on_error=problem_json_response)
    async with client(app) as c:
        r = await c.get("/", headers=bearer(issuer.expired_token()))
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"].startswith('Bearer realm="api", error="invalid_token"')
    assert r.json()["title"] == "Unauthorized"
    assert r.json()["reason"] == "token_expired"


async def test_the_hook_gets_the_connection_and_challenge(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    seen: list[tuple[str, str]] = []

    def hook(conn: HTTPConnection, challenge: Challenge) -> Response:
        seen.append((conn.url.path, challenge.reason))
        return Response(status_code=challenge.status_code)

    async with client(starlette_app(verifier, on_error=hook)) as c:
        r = await c.get("/some/path", headers=bearer(issuer.expired_token()))
    assert r.status_code == 401
    assert seen == [("/some/path", "token_expired")]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"websocket_query_param": ""},
        {"websocket_query_param": "t\u00f6ken"},
        {"on_error": "not callable"},
    ],
)
def test_bad_options_are_refused_at_construction(
    verifier: TokenVerifier, kwargs: dict[str, Any]
) -> None:
    if kwargs:
        kwargs["verifier"] = verifier
    with pytest.raises(ConfigError):
        Auth0Middleware(Response("x"), **kwargs)


def test_config_and_verifier_together_are_refused(verifier: TokenVerifier) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        Auth0Middleware(Response("x"), config=verifier.config, verifier=verifier)


# -- staying out of the way ---------------------------------------------------------------


async def test_the_app_gets_the_servers_own_receive_and_send(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    passed: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        passed.update(receive=receive, send=send)

    async def receive() -> Message:
        raise AssertionError("the middleware must not read the body")

    async def send(message: Message) -> None:
        raise AssertionError("nothing to send")

    mw = Auth0Middleware(app, verifier=verifier)
    for headers in ([], [(b"authorization", f"Bearer {issuer.token()}".encode())]):
        passed.clear()
        await mw(http_scope(headers), receive, send)
        assert passed["receive"] is receive
        assert passed["send"] is send


async def test_a_rejection_does_not_read_the_body(verifier: TokenVerifier) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("unreachable")

    async def receive() -> Message:
        raise AssertionError("the middleware must not read the body")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = http_scope([(b"authorization", b"Bearer x.y.z")], method="POST")
    await Auth0Middleware(app, verifier=verifier)(scope, receive, send)
    assert sent[0]["status"] == 401


async def test_other_scope_types_pass_through_untouched(verifier: TokenVerifier) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    scope = {"type": "custom.protocol", "headers": [(b"authorization", b"Bearer x.y.z")]}
    await Auth0Middleware(app, verifier=verifier)(scope, None, None)  # type: ignore[arg-type]
    assert seen == [{"type": "custom.protocol", "headers": [(b"authorization", b"Bearer x.y.z")]}]


async def test_other_scope_types_get_the_servers_own_receive_and_send(
    verifier: TokenVerifier,
) -> None:
    # Untouched means the channels too: not wrapped like a lifespan's.
    got: list[tuple[Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.append((receive, send))

    async def receive() -> dict[str, Any]:
        return {"type": "custom.message"}

    async def send(message: Any) -> None:
        pass

    await Auth0Middleware(app, verifier=verifier)({"type": "custom.protocol"}, receive, send)
    assert got == [(receive, send)]


async def test_streaming_responses_are_not_buffered(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    first_chunk_sent = anyio.Event()
    chunks: list[bytes] = []

    async def stream() -> AsyncIterator[bytes]:
        yield b"one,"
        # Only continue once the first chunk has reached the server: a middleware
        # that buffered the body would deadlock here (and fail the deadline).
        await first_chunk_sent.wait()
        yield b"two"

    async def endpoint(request: Request) -> StreamingResponse:
        assert request.state.claims is not None
        return StreamingResponse(stream())

    app = Starlette(
        routes=[Route("/", endpoint)],
        middleware=[Middleware(Auth0Middleware, verifier=verifier)],
    )

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.append(message["body"])
            first_chunk_sent.set()

    scope = http_scope([(b"authorization", f"Bearer {issuer.token()}".encode())])
    with anyio.fail_after(5):
        await app(scope, receive, send)
    assert chunks == [b"one,", b"two"]


async def test_background_tasks_run_after_the_response_with_the_claims(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    events: list[str] = []

    async def endpoint(request: Request) -> Response:
        async def later(sub: str) -> None:
            events.append(f"background:{sub}")

        return Response("ok", background=BackgroundTask(later, request.state.claims.sub))

    app = Starlette(
        routes=[Route("/", endpoint)],
        middleware=[Middleware(Auth0Middleware, verifier=verifier)],
    )

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            events.append("response complete")

    scope = http_scope([(b"authorization", f"Bearer {issuer.token(sub='bob')}".encode())])
    with anyio.fail_after(5):
        await app(scope, receive, send)
    assert events == ["response complete", "background:bob"]


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


async def test_context_variables_flow_both_ways(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    seen: dict[str, str] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["inside"] = REQUEST_ID.get()
        REQUEST_ID.set("set-by-app")
        await Response("ok")(scope, receive, send)

    mw = Auth0Middleware(app, verifier=verifier)

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        REQUEST_ID.set("set-outside")
        await mw(scope, receive, send)
        # Same task, same context: what the app set is visible here. A middleware
        # that ran the app in another task (as BaseHTTPMiddleware does) would lose it.
        seen["after"] = REQUEST_ID.get()

    scope = http_scope([(b"authorization", f"Bearer {issuer.token()}".encode())])
    await drive(outer, scope, [{"type": "http.request"}])
    assert seen == {"inside": "set-outside", "after": "set-by-app"}


async def test_application_errors_are_never_auth_errors(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    class Boom(Exception):
        pass

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise Boom

    async def token_error_app(scope: Any, receive: Any, send: Any) -> None:
        # The app's own use of the verifier's errors is the app's business.
        raise InvalidTokenError("app-level check")

    scope = http_scope([(b"authorization", f"Bearer {issuer.token()}".encode())])
    with pytest.raises(Boom):
        await drive(Auth0Middleware(app, verifier=verifier), scope, [{"type": "http.request"}])
    with pytest.raises(InvalidTokenError):
        await drive(
            Auth0Middleware(token_error_app, verifier=verifier),
            http_scope(),
            [{"type": "http.request"}],
        )


async def test_app_errors_become_500_not_401_in_a_starlette_app(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    async def endpoint(request: Request) -> Response:
        raise RuntimeError("database down")

    app = Starlette(
        routes=[Route("/", endpoint)],
        middleware=[Middleware(Auth0Middleware, verifier=verifier)],
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/", headers=bearer(issuer.token()))
    assert r.status_code == 500
    assert "www-authenticate" not in r.headers


# -- lifespan ------------------------------------------------------------------------------


def lifespan_app(log: list[str]) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.append("app startup")
        yield
        log.append("app shutdown")

    return Starlette(lifespan=lifespan)


async def run_lifespan(app: Any) -> list[Message]:
    return await drive(
        app,
        {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
        [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
    )


async def test_lifespan_passes_through_and_warms_the_keys(
    verifier: TokenVerifier, keys: CountingKeySet
) -> None:
    log: list[str] = []
    sent = await run_lifespan(Auth0Middleware(lifespan_app(log), verifier=verifier))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert log == ["app startup", "app shutdown"]
    assert keys.refreshes == 1
    # A verifier that was handed in belongs to the caller: never closed here.
    assert keys.closes == 0


async def test_warming_can_be_turned_off(verifier: TokenVerifier, keys: CountingKeySet) -> None:
    await run_lifespan(
        Auth0Middleware(lifespan_app([]), verifier=verifier, warm_keys_on_startup=False)
    )
    assert keys.refreshes == 0


async def test_a_failed_warm_up_is_logged_not_fatal(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    keys = CountingKeySet(issuer.jwks, refresh_fails=True)
    verifier = TokenVerifier(issuer.config(), key_set=keys)
    log: list[str] = []
    sent = await run_lifespan(Auth0Middleware(lifespan_app(log), verifier=verifier))
    assert sent[0]["type"] == "lifespan.startup.complete"
    assert log == ["app startup", "app shutdown"]
    warnings = [r for r in caplog.records if r.name == "asgi_auth0.middleware"]
    assert [getattr(r, "reason", None) for r in warnings] == ["key_set_unavailable"]


async def test_without_any_lifespan_keys_load_on_first_use(
    verifier: TokenVerifier, keys: CountingKeySet, issuer: LocalIssuer
) -> None:
    async with client(starlette_app(verifier)) as c:
        r = await c.get("/", headers=bearer(issuer.token()))
    assert r.status_code == 200
    assert (keys.refreshes, keys.gets) == (0, 1)


async def test_a_middleware_built_from_config_closes_its_verifier_on_shutdown(
    auth0_issuer: LocalIssuer,
) -> None:
    mw = Auth0Middleware(lifespan_app([]), config=auth0_issuer.config())
    key_set = mw.verifier.key_set
    await run_lifespan(mw)
    # Warmed at startup over real HTTP, then the cache's own client was closed.
    assert auth0_issuer.jwks_requests == 1
    assert key_set._client is None


# -- WebSocket handshakes -----------------------------------------------------------------


async def ws_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    claims = websocket.state.claims
    await websocket.send_json({"sub": None if claims is None else claims.sub})
    await websocket.close()


def ws_app(verifier: TokenVerifier, **options: Any) -> Starlette:
    return Starlette(
        routes=[WebSocketRoute("/ws", ws_endpoint)],
        middleware=[Middleware(Auth0Middleware, verifier=verifier, **options)],
    )


CONNECT = {"type": "websocket.connect"}


async def test_websocket_with_a_valid_token_is_accepted(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    scope = ws_scope([(b"authorization", f"Bearer {issuer.token(sub='carol')}".encode())])
    sent = await drive(ws_app(verifier), scope, [CONNECT])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert json.loads(sent[1]["text"]) == {"sub": "carol"}


async def test_anonymous_websocket_continues(verifier: TokenVerifier) -> None:
    sent = await drive(ws_app(verifier), ws_scope(), [CONNECT])
    assert json.loads(sent[1]["text"]) == {"sub": None}


async def test_websocket_with_a_bad_token_gets_an_http_denial(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    scope = ws_scope([(b"authorization", f"Bearer {issuer.expired_token()}".encode())])
    sent = await drive(ws_app(verifier), scope, [CONNECT])
    assert [m["type"] for m in sent] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    status, hdrs, body = start_of(sent)
    assert status == 401
    assert hdrs["www-authenticate"].startswith('Bearer realm="api", error="invalid_token"')
    assert body["reason"] == "token_expired"


async def test_websocket_denial_answers_the_connect_message_first(
    verifier: TokenVerifier,
) -> None:
    order: list[str] = []

    async def receive() -> Message:
        order.append("receive")
        return CONNECT

    async def send(message: Message) -> None:
        order.append(message["type"])

    scope = ws_scope([(b"authorization", b"Bearer x.y.z")])
    await ws_app(verifier)(scope, receive, send)
    assert order == ["receive", "websocket.http.response.start", "websocket.http.response.body"]


async def test_websocket_without_the_denial_extension_is_closed_with_1008(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    scope = ws_scope(
        [(b"authorization", f"Bearer {issuer.expired_token()}".encode())], denial=False
    )
    sent = await drive(ws_app(verifier), scope, [CONNECT])
    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_websocket_outage_is_503_denial_or_1013(issuer: LocalIssuer) -> None:
    verifier = TokenVerifier(issuer.config(), key_set=DownKeySet())
    header = [(b"authorization", f"Bearer {issuer.token()}".encode())]
    sent = await drive(ws_app(verifier), ws_scope(header), [CONNECT])
    status, hdrs, body = start_of(sent)
    assert (status, hdrs["retry-after"], body["error"]) == (503, "42", "temporarily_unavailable")
    sent = await drive(ws_app(verifier), ws_scope(header, denial=False), [CONNECT])
    assert sent == [{"type": "websocket.close", "code": 1013}]


def rejecting_ws_app(verifier: TokenVerifier, *, accept: bool) -> Auth0Middleware:
    """A Starlette WebSocket endpoint that raises AuthenticationRejected itself, as the
    README's Starlette section shows, without the websocket_* flags, after taking
    the connect message (and, with ``accept``, accepting)."""

    async def endpoint(websocket: WebSocket) -> None:
        if accept:
            await websocket.accept()
        else:
            await websocket.receive()  # the connect message, not answered
        raise AuthenticationRejected(InsufficientScopeError(("chat",)))

    # Behind a wrapper the middleware cannot look into, so that the rejection reaches
    # the middleware itself, not the handler it registers inside the apps it finds.
    inner = Starlette(routes=[WebSocketRoute("/ws", endpoint)])

    async def opaque(scope: Scope, receive: Receive, send: Send) -> None:
        await inner(scope, receive, send)

    return Auth0Middleware(opaque, verifier=verifier)


@pytest.mark.parametrize("accept", [True, False], ids=["after-accept", "after-connect"])
@pytest.mark.parametrize("denial", [True, False])
async def test_a_websocket_rejection_raised_after_connect_closes_without_hanging(
    verifier: TokenVerifier, issuer: LocalIssuer, accept: bool, denial: bool
) -> None:
    # The middleware used to wait for a websocket.connect the endpoint had already
    # taken: the client saw nothing until it gave up. A close fits both states: after
    # accept the client gets 1008; before it the server refuses the handshake (403).
    scope = ws_scope([(b"authorization", f"Bearer {issuer.token()}".encode())], denial=denial)
    sent = await drive(rejecting_ws_app(verifier, accept=accept), scope, [CONNECT], timeout=2)
    expected = [{"type": "websocket.accept", "subprotocol": None, "headers": []}] if accept else []
    assert sent == [*expected, {"type": "websocket.close", "code": 1008}]


class _ScopedChat(WebSocketEndpoint):
    """A class-based endpoint checking a scope per message (it makes its own
    WebSocket object: the one the exception handler gets has seen nothing)."""

    encoding = "text"

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        if "post:chat" not in websocket.auth.scopes:
            raise AuthenticationRejected(InsufficientScopeError(("post:chat",)))
        await websocket.send_text("ok")


@pytest.mark.parametrize("denial", [True, False])
async def test_a_websocket_endpoints_rejection_after_accept_is_a_close(
    verifier: TokenVerifier, issuer: LocalIssuer, denial: bool
) -> None:
    # Answered inside the app (the handler the middleware registers there): it waited
    # for a websocket.connect the endpoint had taken long before, so the connection
    # hung, or the next message failed the app.
    app = Starlette(
        routes=[WebSocketRoute("/ws", _ScopedChat)],
        middleware=[Middleware(Auth0Middleware, verifier=verifier)],
    )
    token = issuer.token(scope="read:chat")
    scope = ws_scope([(b"authorization", f"Bearer {token}".encode())], denial=denial)
    hello = {"type": "websocket.receive", "text": "hi"}
    sent = await drive(app, scope, [CONNECT, hello], timeout=2)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert sent[1]["code"] == 1008


async def test_a_websocket_rejection_raised_before_connect_still_gets_the_denial(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    # Nothing taken yet: the full RFC 6750 denial response, as before.
    async def endpoint(websocket: WebSocket) -> None:
        raise AuthenticationRejected(InsufficientScopeError(("chat",)))

    middleware = [Middleware(Auth0Middleware, verifier=verifier)]
    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)], middleware=middleware)
    scope = ws_scope([(b"authorization", f"Bearer {issuer.token()}".encode())])
    sent = await drive(app, scope, [CONNECT], timeout=2)
    status, hdrs, body = start_of(sent)
    assert status == 403
    assert hdrs["www-authenticate"].endswith('scope="chat"')
    assert body["reason"] == "insufficient_scope"


async def test_websocket_client_gone_before_connect_gets_nothing(verifier: TokenVerifier) -> None:
    scope = ws_scope([(b"authorization", b"Bearer x.y.z")])
    sent = await drive(ws_app(verifier), scope, [{"type": "websocket.disconnect", "code": 1006}])
    assert sent == []


async def test_websocket_query_token_is_ignored_by_default(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    scope = ws_scope(query=f"access_token={issuer.token(sub='dave')}".encode())
    sent = await drive(ws_app(verifier), scope, [CONNECT])
    assert json.loads(sent[1]["text"]) == {"sub": None}


async def test_websocket_query_token_when_opted_in(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    app = ws_app(verifier, websocket_query_param="access_token")
    scope = ws_scope(query=f"x=1&access_token={issuer.token(sub='dave')}".encode())
    sent = await drive(app, scope, [CONNECT])
    assert json.loads(sent[1]["text"]) == {"sub": "dave"}

    bad = ws_scope(query=f"access_token={issuer.expired_token()}".encode())
    status, _, body = start_of(await drive(app, bad, [CONNECT]))
    assert (status, body["reason"]) == (401, "token_expired")

    token = issuer.token()
    both = ws_scope(
        [(b"authorization", f"Bearer {token}".encode())],
        query=f"access_token={token}".encode(),
    )
    status, _, body = start_of(await drive(app, both, [CONNECT]))
    assert (status, body["reason"]) == (400, "multiple_tokens")

    empty = ws_scope(query=b"access_token=")
    status, _, body = start_of(await drive(app, empty, [CONNECT]))
    assert (status, body["reason"]) == (400, "malformed_query_token")
    assert body["error_description"] == "The access token query parameter is malformed."


async def test_the_query_param_never_applies_to_http(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    app = starlette_app(verifier, websocket_query_param="access_token")
    async with client(app) as c:
        r = await c.get("/", params={"access_token": issuer.token()})
    assert r.json()["authenticated"] is False


# -- no input becomes a 500 ------------------------------------------------------------------

_FUZZ: dict[str, Any] = {}


def _fuzz_middleware() -> Auth0Middleware:
    # Built once: hypothesis runs many examples and fixtures are per test.
    if not _FUZZ:
        from asgi_auth0._signing import generate_private_key

        issuer = LocalIssuer(issuer=ISS, audience=AUD, private_key=generate_private_key("P-256"))
        verifier = TokenVerifier(issuer.config(), key_set=StaticKeySet(issuer.jwks))

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await Response("ok")(scope, receive, send)

        _FUZZ["mw"] = Auth0Middleware(app, verifier=verifier, websocket_query_param="t")
        _FUZZ["token"] = issuer.token()
    mw: Auth0Middleware = _FUZZ["mw"]
    return mw


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.binary(max_size=200),
            st.builds(lambda b: b"Bearer " + b, st.binary(max_size=200)),
            st.sampled_from([b"Bearer", b"bearer  x", b"Bearer a.b.c", b"Bearer eyJ.eyJ.x"]),
        ),
        max_size=3,
    ),
    query=st.binary(max_size=100),
)
def test_any_authorization_input_is_answered_200_400_or_401(
    values: list[bytes], query: bytes
) -> None:
    mw = _fuzz_middleware()
    headers = [(b"authorization", v) for v in values]

    async def main() -> list[Message]:
        scope = http_scope(headers)
        scope["query_string"] = query
        return await drive(mw, scope, [{"type": "http.request"}])

    sent = anyio.run(main)
    assert sent[0]["status"] in (200, 400, 401)
    for _, value in sent[0]["headers"]:
        assert all(0x20 <= b <= 0x7E for b in value)


def test_the_query_token_is_redacted_in_the_urls_uvicorn_logs(verifier: TokenVerifier) -> None:
    # Built twice (two apps in one process), one filter per logger; each line as
    # uvicorn writes it: the URL, query string included, as one argument.
    for _ in range(2):
        Auth0Middleware(Response("x"), verifier=verifier, websocket_query_param="access_token")
    for name in ("uvicorn.error", "uvicorn.access"):
        filters = logging.getLogger(name).filters
        assert [getattr(f, "param", None) for f in filters].count("access_token") == 1
    [redactor] = [
        f
        for f in logging.getLogger("uvicorn.error").filters
        if getattr(f, "param", None) == "access_token"
    ]

    def logged(*args: object) -> str:
        record = logging.LogRecord(
            "uvicorn.error", logging.INFO, "", 0, '%s - "WebSocket %s"', args, None
        )
        assert redactor.filter(record)
        return record.getMessage()

    assert logged("1.2.3.4:5", "/ws?room=a&access_token=eyJ.x.y&b=1") == (
        '1.2.3.4:5 - "WebSocket /ws?room=a&access_token=[redacted]&b=1"'
    )
    # Spelled with %-escapes, the name is still the parameter the middleware reads.
    assert logged("c", "/ws?access%5Ftoken=eyJ.x.y") == (
        'c - "WebSocket /ws?access%5Ftoken=[redacted]"'
    )
    assert logged("c", "/ws?my_access_token=keep") == 'c - "WebSocket /ws?my_access_token=keep"'
    assert logged("c", "/ws") == 'c - "WebSocket /ws"'


def test_the_query_token_redactor_takes_every_shape_of_log_record() -> None:
    from asgi_auth0._middleware import _QueryTokenRedactor

    redactor = _QueryTokenRedactor("access_token")

    def through(msg: str, args: Any) -> str:
        record = logging.LogRecord("uvicorn.error", logging.INFO, "", 0, msg, args, None)
        assert redactor.filter(record)
        return record.getMessage()

    # Already formatted: what follows the URL stays.
    assert through('GET "/ws?access_token=eyJ.x.y" 403', None) == (
        'GET "/ws?access_token=[redacted]" 403'
    )
    # Two URLs in one line, a dict of arguments, a str subclass.
    assert through("%s then %s", ("/a?access_token=t1", "/b?x=1&access_token=t2")) == (
        "/a?access_token=[redacted] then /b?x=1&access_token=[redacted]"
    )
    # logger.info("%(url)s", {...}): the record's args become the dict itself.
    assert through("%(url)s", ({"url": "/ws?access_token=t"},)) == "/ws?access_token=[redacted]"

    class Url(str):
        pass

    assert through("%s", (Url("/ws?access_token=t"),)) == "/ws?access_token=[redacted]"

    class StarletteLikeUrl:
        def __str__(self) -> str:
            return "http://h/ws?access_token=t"

    assert through("%s", (StarletteLikeUrl(),)) == "http://h/ws?access_token=[redacted]"
    assert through("%s", (b"/ws?access_token=t",)) == "/ws?access_token=[redacted]"
    # A format string naming the parameter keeps its placeholder (its value is an
    # argument, not a URL: nothing here to redact, and nothing broken).
    assert through("token in /ws?access_token=%s", ("t",)) == "token in /ws?access_token=t"
    assert through("%s %d", ("/ws?access_token=t", 403)) == "/ws?access_token=[redacted] 403"
    # A token written into the format string itself, with other arguments.
    assert through("proxying wss://h/ws?access_token=eyJ.x.y for %s", ("1.2.3.4",)) == (
        "proxying wss://h/ws?access_token=[redacted] for 1.2.3.4"
    )
    # Nothing to take out: the arguments are left as they are, objects included.
    headers = Headers({"a": "1"})
    record = logging.LogRecord("uvicorn.error", logging.INFO, "", 0, "%s", (headers,), None)
    assert redactor.filter(record)
    assert record.args is headers  # (logging unwraps a lone mapping argument)
    # A message that is an object, not a str.
    assert through(StarletteLikeUrl(), None) == "http://h/ws?access_token=[redacted]"  # type: ignore[arg-type]

    class Hostile(dict[str, str]):
        def items(self) -> Any:
            raise RuntimeError("no")

    record = logging.LogRecord("uvicorn.error", logging.INFO, "", 0, "x", (), None)
    record.args = Hostile(a="b")
    assert redactor.filter(record)  # never raises into the code that logs
