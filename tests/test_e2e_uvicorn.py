"""End to end: a real uvicorn on 127.0.0.1 serving a FastAPI app protected by
Auth0Middleware, whose keys come over HTTP from a real LocalIssuer; clients are real
httpx, real WebSocket clients (websockets, on asyncio and on trio) and raw sockets.

One server per module (started in a thread on a socket the test already listens on,
so no wait for readiness is needed) and stopped at the end, bounded in time.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import anyio.to_thread
import httpx
import pytest
import websockets.asyncio.client
from _servers import uvicorn_in_thread
from fastapi import Depends, FastAPI, WebSocket
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from websockets.exceptions import InvalidStatus

try:
    import websockets.trio.client as trio_ws_client
except ImportError:  # websockets has a trio client from 17 on, which needs Python 3.11+
    trio_ws_client = None  # type: ignore[assignment]

from asgi_auth0._claims import Claims
from asgi_auth0._middleware import Auth0Middleware
from asgi_auth0._signing import PrivateKey
from asgi_auth0.fastapi import (
    configure_openapi,
    optional_token,
    require_permissions,
    require_scopes,
    require_token,
)
from asgi_auth0.testing import LocalIssuer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

NO_DENIAL_HEADER = "x-test-no-denial-extension"
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("e2e_request_id", default="-")
ClaimsDep = Annotated[Claims, Depends(require_token)]


@dataclass
class Observed:
    """What the app saw, written from the server thread, read by the tests."""

    background: threading.Event
    background_sub: list[str]
    stream_go: threading.Event
    lifespan: list[str]


def build_app(config: Any, observed: Observed) -> FastAPI:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        observed.lifespan.append("startup")
        yield
        observed.lifespan.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/public")
    async def public() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/me")
    async def me(claims: ClaimsDep) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.get("/maybe")
    async def maybe(claims: Annotated[Claims | None, Depends(optional_token)]) -> dict[str, Any]:
        return {"sub": None if claims is None else claims.sub}

    @app.get("/read")
    async def read(claims: Annotated[Claims, Depends(require_scopes("read:messages"))]) -> str:
        return "read"

    @app.get("/delete")
    async def delete(
        claims: Annotated[Claims, Depends(require_permissions("delete:messages"))],
    ) -> str:
        return "deleted"

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        return {
            "authenticated": request.user.is_authenticated,
            "scopes": request.auth.scopes,
            "request_id": REQUEST_ID.get(),
        }

    @app.get("/stream")
    async def stream(claims: ClaimsDep) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"one\n"
            # Continue only once the *client* has the first chunk: a buffering
            # middleware would make this time out and the body would say so.
            arrived = await anyio.to_thread.run_sync(observed.stream_go.wait, 10)
            yield b"two\n" if arrived else b"buffered\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/background")
    async def background(claims: ClaimsDep) -> Response:
        def record(sub: str) -> None:
            observed.background_sub.append(sub)
            observed.background.set()

        return Response("accepted", background=BackgroundTask(record, claims.sub or ""))

    @app.get("/boom")
    async def boom(claims: ClaimsDep) -> None:
        raise RuntimeError("application bug")

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, claims: ClaimsDep) -> None:
        await websocket.accept()
        await websocket.send_json({"sub": claims.sub})
        await websocket.close()

    @app.websocket("/ws-scoped")
    async def ws_scoped(
        websocket: WebSocket,
        claims: Annotated[Claims, Depends(require_scopes("chat:join"))],
    ) -> None:
        await websocket.accept()
        await websocket.send_json({"sub": claims.sub})
        await websocket.close()

    app.add_middleware(Auth0Middleware, config=config, websocket_query_param="access_token")
    configure_openapi(app, config)
    return app


class Entry:
    """The ASGI app given to uvicorn: an outer middleware that sets a context
    variable, and a switch that hides the denial extension (to see the fallback)."""

    def __init__(self, app: Any, down_app: Any) -> None:
        self.app = app
        self.down_app = down_app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            REQUEST_ID.set("outer-" + scope["path"])
            headers = dict(scope["headers"])
            if NO_DENIAL_HEADER.encode() in headers:
                scope["extensions"] = {
                    k: v
                    for k, v in (scope.get("extensions") or {}).items()
                    if k != "websocket.http.response"
                }
            if scope["path"].startswith("/down/"):
                await self.down_app(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass
class Server:
    url: str
    ws_url: str
    port: int
    issuer: LocalIssuer
    down_issuer: LocalIssuer
    observed: Observed
    app: FastAPI
    jwks_requests_at_startup: int


def find_middleware(app: Any) -> Auth0Middleware:
    node = app.middleware_stack
    while not isinstance(node, Auth0Middleware):
        node = node.app
    return node


# uvicorn's two server stacks: the pure-Python one it falls back to, and the compiled
# one `uvicorn[standard]` installs (the dev extra has it). Both speak HTTP and the
# WebSocket denial extension through different code, so every test runs on each.
SERVER_STACKS = {
    "h11-asyncio": {"http": "h11", "loop": "asyncio"},
    "httptools-uvloop": {"http": "httptools", "loop": "uvloop"},
}


@pytest.fixture(scope="module", params=sorted(SERVER_STACKS))
def server(request: pytest.FixtureRequest, auth0_rsa_key: PrivateKey) -> Iterator[Server]:
    stack = SERVER_STACKS[request.param]
    for module in ("httptools", stack["loop"]):
        if module != "asyncio" and importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (the dev extra installs it)")
    observed = Observed(threading.Event(), [], threading.Event(), [])
    with (
        LocalIssuer(private_key=auth0_rsa_key) as issuer,
        LocalIssuer(private_key=auth0_rsa_key) as down_issuer,
    ):
        down_issuer.fail_with(503, retry_after=7)
        app = build_app(issuer.config(), observed)
        down_app = FastAPI()

        @down_app.get("/down/me")
        async def down_me(claims: ClaimsDep) -> dict[str, Any]:
            return {"sub": claims.sub}

        down_app.add_middleware(Auth0Middleware, config=down_issuer.config())

        with uvicorn_in_thread(Entry(app, down_app), stack) as running:
            yield Server(
                url=running.url,
                ws_url=running.ws_url,
                port=running.port,
                issuer=issuer,
                down_issuer=down_issuer,
                observed=observed,
                app=app,
                jwks_requests_at_startup=issuer.jwks_requests,
            )
    # Lifespan went through the middleware both ways, and it closed the key set
    # client it owned once the app had shut down.
    assert observed.lifespan == ["startup", "shutdown"]
    assert find_middleware(app).verifier.key_set._client is None


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- HTTP ----------------------------------------------------------------------------------


async def test_keys_were_warmed_at_startup_over_http(server: Server) -> None:
    # Only an anonymous request was made before this, and it needs no keys.
    assert server.jwks_requests_at_startup == 1


async def test_anonymous_and_authenticated_requests(
    server: Server, http: httpx.AsyncClient
) -> None:
    anon = await http.get("/whoami")
    assert anon.json()["authenticated"] is False
    token = server.issuer.token(scope="read:messages", permissions=["delete:messages"])
    who = await http.get("/whoami", headers=bearer(token))
    assert who.json()["authenticated"] is True
    assert who.json()["scopes"] == ["authenticated", "read:messages"]
    me = await http.get("/me", headers=bearer(server.issuer.token(sub="auth0|e2e")))
    assert me.json() == {"sub": "auth0|e2e"}


async def test_missing_token_gets_the_bare_challenge(http: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        r = await http.get("/me", headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="api"'
        assert r.json() == {
            "error": None,
            "error_description": "Authentication required.",
            "reason": "missing_token",
        }


async def test_invalid_tokens_are_401_even_on_optional_routes(
    server: Server, http: httpx.AsyncClient
) -> None:
    issuer = server.issuer
    cases = {
        "token_expired": issuer.expired_token(),
        "invalid_audience": issuer.wrong_audience_token(),
        "invalid_issuer": issuer.wrong_issuer_token(),
        "bad_signature": issuer.bad_signature_token(),
        "malformed_token": "abc.def.ghi",
    }
    for reason, token in cases.items():
        for path in ("/me", "/maybe", "/public"):
            r = await http.get(path, headers=bearer(token))
            assert r.status_code == 401, (reason, path)
            assert r.json()["reason"] == reason
            assert r.headers["www-authenticate"].startswith(
                'Bearer realm="api", error="invalid_token", error_description="'
            )


async def test_scopes_and_permissions(server: Server, http: httpx.AsyncClient) -> None:
    issuer = server.issuer
    ok = await http.get("/read", headers=bearer(issuer.token(scope="read:messages")))
    short = await http.get("/read", headers=bearer(issuer.token(permissions=["read:messages"])))
    deleted = await http.get(
        "/delete", headers=bearer(issuer.token(permissions=["delete:messages"]))
    )
    refused = await http.get("/delete", headers=bearer(issuer.token(scope="delete:messages")))
    assert (ok.status_code, deleted.status_code) == (200, 200)
    assert short.status_code == 403
    assert short.headers["www-authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", '
        'error_description="The access token lacks a required scope.", scope="read:messages"'
    )
    assert short.json()["error"] == "insufficient_scope"
    assert refused.status_code == 403
    assert refused.headers["www-authenticate"].endswith('scope="delete:messages"')


async def test_malformed_and_multiple_authorization_headers_are_400(
    server: Server, http: httpx.AsyncClient
) -> None:
    token = server.issuer.token()
    two = await http.get(
        "/public",
        headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")],
    )
    assert two.status_code == 400
    assert two.json()["reason"] == "multiple_tokens"
    bad = await http.get("/public", headers={"Authorization": "Bearer a b"})
    assert bad.status_code == 400
    assert bad.headers["www-authenticate"].startswith('Bearer realm="api", error="invalid_request"')


async def test_a_rejected_upload_leaves_the_connection_usable(
    server: Server, http: httpx.AsyncClient
) -> None:
    # The middleware answers without reading the body; the server deals with the
    # unread bytes, and the next request on the same connection still works.
    body = b"x" * 300_000
    rejected = await http.post("/public", content=body, headers=bearer("a.b.c"))
    assert rejected.status_code == 401
    follow_up = await http.get("/public")
    assert follow_up.json() == {"hello": "world"}


async def raw_request(port: int, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes (clients refuse to send some of these) and parse the answer."""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(head)
            data = b""
            try:
                while True:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    head_part, _, body = data.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


@pytest.mark.parametrize(
    "value",
    [
        b'Bearer a"b',
        b'Bearer x", error="none", realm="evil',
        b"Bearer \xff\xfe\xfd",
        b"Bearer abc\\",
    ],
)
async def test_header_bytes_never_reach_response_headers(server: Server, value: bytes) -> None:
    status, headers, body = await raw_request(
        server.port,
        b"GET /public HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
        + value
        + b"\r\n\r\n",
    )
    assert status == 400
    assert headers["www-authenticate"] == (
        'Bearer realm="api", error="invalid_request", '
        'error_description="The Authorization header is malformed."'
    )
    assert b"evil" not in body
    assert json.loads(body)["reason"] == "malformed_authorization"


async def test_issuer_outage_is_503_with_retry_after(
    server: Server, http: httpx.AsyncClient
) -> None:
    r = await http.get("/down/me", headers=bearer(server.down_issuer.token()))
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"] == "temporarily_unavailable"
    assert "www-authenticate" not in r.headers


async def test_application_errors_stay_500(server: Server, http: httpx.AsyncClient) -> None:
    r = await http.get("/boom", headers=bearer(server.issuer.token()))
    assert r.status_code == 500
    assert "www-authenticate" not in r.headers


async def test_streaming_reaches_the_client_chunk_by_chunk(
    server: Server, http: httpx.AsyncClient
) -> None:
    server.observed.stream_go.clear()
    received: list[bytes] = []
    async with http.stream("GET", "/stream", headers=bearer(server.issuer.token())) as r:
        assert r.status_code == 200
        async for chunk in r.aiter_raw():
            received.append(chunk)
            server.observed.stream_go.set()
    assert b"".join(received) == b"one\ntwo\n"


async def test_background_task_runs_after_the_response(
    server: Server, http: httpx.AsyncClient
) -> None:
    server.observed.background.clear()
    server.observed.background_sub.clear()
    r = await http.get("/background", headers=bearer(server.issuer.token(sub="auth0|bg")))
    assert r.text == "accepted"
    assert await anyio.to_thread.run_sync(server.observed.background.wait, 10)
    assert server.observed.background_sub == ["auth0|bg"]


async def test_context_set_by_outer_middleware_reaches_the_endpoint(
    server: Server, http: httpx.AsyncClient
) -> None:
    r = await http.get("/whoami", headers=bearer(server.issuer.token()))
    assert r.json()["request_id"] == "outer-/whoami"


async def test_openapi_document(server: Server, http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["Auth0"]["scheme"] == "bearer"
    read = spec["paths"]["/read"]["get"]
    assert read["security"] == [{"Auth0": ["read:messages"]}]
    assert {"401", "403"} <= set(read["responses"])


# -- WebSocket -----------------------------------------------------------------------------


async def ws_exchange(
    backend: str, url: str, headers: dict[str, str] | None = None
) -> dict[str, Any] | InvalidStatus:
    """Open a WebSocket with the real client of ``backend``; return the first JSON
    message or the handshake rejection."""

    async def asyncio_exchange() -> str | bytes:
        async with websockets.asyncio.client.connect(url, additional_headers=headers) as ws:
            return await ws.recv()

    try:
        with anyio.fail_after(10):
            if backend == "asyncio":
                message = await asyncio_exchange()
            elif trio_ws_client is not None:
                async with trio_ws_client.connect(url, additional_headers=headers) as ws:
                    message = await ws.recv()
            else:
                # No trio client on this Python: the same real client on its own
                # asyncio loop in a worker thread; the server side is what is tested.
                message = await anyio.to_thread.run_sync(
                    lambda: asyncio.run(asyncio_exchange()), abandon_on_cancel=True
                )
    except InvalidStatus as exc:
        return exc
    result: dict[str, Any] = json.loads(message)
    return result


async def test_websocket_with_a_token(server: Server, anyio_backend: str) -> None:
    token = server.issuer.token(sub="auth0|ws")
    result = await ws_exchange(anyio_backend, f"{server.ws_url}/ws", bearer(token))
    assert result == {"sub": "auth0|ws"}


async def test_websocket_rejections_are_http_denial_responses(
    server: Server, anyio_backend: str
) -> None:
    issuer = server.issuer
    cases = [
        ("/ws", {}, 401, "missing_token", 'Bearer realm="api"'),
        ("/ws", bearer(issuer.expired_token()), 401, "token_expired", None),
        ("/ws-scoped", bearer(issuer.token(scope="chat:read")), 403, "insufficient_scope", None),
        ("/ws", {"Authorization": "Bearer a b"}, 400, "malformed_authorization", None),
    ]
    for path, headers, status, reason, challenge in cases:
        result = await ws_exchange(anyio_backend, server.ws_url + path, headers)
        assert isinstance(result, InvalidStatus), path
        response = result.response
        assert response.status_code == status
        assert json.loads(response.body)["reason"] == reason
        www = response.headers["WWW-Authenticate"]
        if challenge is not None:
            assert www == challenge
        if status == 403:
            assert www.endswith('scope="chat:join"')


async def test_websocket_without_the_denial_extension_gets_a_plain_403(
    server: Server, anyio_backend: str
) -> None:
    # Where a server lacks the extension, the middleware closes with 1008 before
    # accept, which ASGI servers answer with a bare 403.
    headers = {NO_DENIAL_HEADER: "1", **bearer(server.issuer.expired_token())}
    result = await ws_exchange(anyio_backend, f"{server.ws_url}/ws", headers)
    assert isinstance(result, InvalidStatus)
    assert result.response.status_code == 403
    assert "WWW-Authenticate" not in result.response.headers


async def test_websocket_query_token_opt_in(
    server: Server, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    token = server.issuer.token(sub="auth0|browser")
    result = await ws_exchange(anyio_backend, f"{server.ws_url}/ws?access_token={token}")
    assert result == {"sub": "auth0|browser"}
    # uvicorn logs each handshake's URL to uvicorn.error at INFO (access log or not):
    # the token in it is redacted, by the filter the option put on that logger.
    handshakes = [r.getMessage() for r in caplog.records if '"WebSocket /ws?' in r.getMessage()]
    assert handshakes
    assert all("access_token=[redacted]" in line for line in handshakes)
    assert token not in caplog.text
    both = await ws_exchange(
        anyio_backend, f"{server.ws_url}/ws?access_token={token}", bearer(token)
    )
    assert isinstance(both, InvalidStatus)
    assert both.response.status_code == 400
    assert json.loads(both.response.body)["reason"] == "multiple_tokens"


async def test_websocket_issuer_outage_is_503(server: Server, anyio_backend: str) -> None:
    # The down app has no WebSocket route, but the middleware answers first.
    result = await ws_exchange(
        anyio_backend, f"{server.ws_url}/down/ws", bearer(server.down_issuer.token())
    )
    assert isinstance(result, InvalidStatus)
    assert result.response.status_code == 503
    assert "Retry-After" in result.response.headers
