"""Each request's claims stay its own, whatever the server does with ``scope["state"]``.

The ASGI spec hands every request a shallow copy of the lifespan state, and uvicorn
does; asgi-lifespan's ``LifespanManager`` (which the README's testing section uses)
hands every request the same dict. The middleware writes the claims into that dict,
so without a copy of its own a request that awaits before reading them would read
whichever request wrote last. Concurrency is arranged with events, never sleeps.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import httpx
import pytest
from _asgi import CookieLogin, drive, http_scope, lifespan_running, with_lifespan
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_auth0._claims import Claims
from asgi_auth0._middleware import Auth0Middleware
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.fastapi import require_scopes, require_token
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio


class Gate:
    """Holds every request at one point until released: the await a real dependency
    (a database session, say) makes between the middleware and the claims check."""

    def __init__(self) -> None:
        self.open = anyio.Event()
        self.waiting = 0

    async def __call__(self) -> None:
        self.waiting += 1
        await self.open.wait()


def admin_app(verifier: TokenVerifier, gate: Gate) -> FastAPI:
    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=verifier)

    @app.get("/admin", dependencies=[Depends(gate)])
    async def admin(claims: Annotated[Claims, Depends(require_scopes("admin"))]) -> Any:
        return {"sub": claims.sub}

    return app


async def test_concurrent_requests_under_lifespan_manager_keep_their_own_claims(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    # The audit's case: mallory (no admin scope) was served with admin-user's claims.
    gate = Gate()
    results: dict[str, httpx.Response] = {}
    async with LifespanManager(admin_app(verifier, gate)) as started:
        transport = httpx.ASGITransport(app=started.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def call(sub: str, scope: str) -> None:
                token = issuer.token(sub=sub, scope=scope)
                results[sub] = await client.get("/admin", headers=bearer(token))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call, "mallory", "read")
                    while gate.waiting < 1:
                        await anyio.wait_all_tasks_blocked()
                    tg.start_soon(call, "admin-user", "admin")
                    while gate.waiting < 2:
                        await anyio.wait_all_tasks_blocked()
                    # Both are past the middleware: the later one wrote last.
                    gate.open.set()
    assert results["admin-user"].status_code == 200
    assert results["admin-user"].json() == {"sub": "admin-user"}
    assert results["mallory"].status_code == 403, results["mallory"].text
    assert results["mallory"].json()["reason"] == "insufficient_scope"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def state_reader(seen: dict[str, Any], gate: Gate) -> ASGIApp:
    """An endpoint that awaits, then reports what ``request.state`` holds."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        label = request.headers["x-label"]
        await gate()
        claims = request.state.claims
        seen[label] = None if claims is None else claims.sub
        await Response("ok")(scope, receive, send)

    return app


async def run_shared(mw: Auth0Middleware, shared: dict[str, Any], issuer: LocalIssuer) -> None:
    """Three requests in flight at once, all handed the same ``state`` dict, as a
    server that does not copy it would hand them."""

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    async def one(label: str, token: str | None) -> None:
        headers = [(b"x-label", label.encode())]
        if token is not None:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        scope = http_scope(headers)
        scope["state"] = shared
        await mw(scope, receive, send)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "alice", issuer.token(sub="alice"))
        tg.start_soon(one, "bob", issuer.token(sub="bob"))
        tg.start_soon(one, "anonymous", None)


async def test_a_state_dict_shared_by_requests_is_copied_per_request(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    # No lifespan seen: the middleware learns the dict is shared from its own key
    # already being in it.
    seen: dict[str, Any] = {}
    gate = Gate()
    mw = Auth0Middleware(state_reader(seen, gate), verifier=verifier)
    shared: dict[str, Any] = {"db": "pool"}
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_shared, mw, shared, issuer)
            while gate.waiting < 3:
                await anyio.wait_all_tasks_blocked()
            gate.open.set()
    assert seen == {"alice": "alice", "bob": "bob", "anonymous": None}


async def test_requests_handed_the_lifespan_state_itself_never_write_into_it(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    # The lifespan's own dict, handed to requests: each request gets a copy from the
    # first one on, and the lifespan state never holds anybody's claims.
    seen: dict[str, Any] = {}
    gate = Gate()
    mw = Auth0Middleware(with_lifespan(state_reader(seen, gate)), verifier=verifier)
    lifespan_state: dict[str, Any] = {"db": "pool"}
    async with lifespan_running(mw, lifespan_state), anyio.create_task_group() as tg:
        tg.start_soon(run_shared, mw, lifespan_state, issuer)
        while gate.waiting < 3:
            await anyio.wait_all_tasks_blocked()
        gate.open.set()
    assert seen == {"alice": "alice", "bob": "bob", "anonymous": None}
    assert lifespan_state == {"db": "pool"}


async def test_a_per_request_state_is_written_in_place(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    # With a server that copies the lifespan state per request (uvicorn), the dict
    # the request brings is its own: the claims go into it, so middleware outside
    # ours that holds request.state sees them after the call (a logging middleware
    # reading the subject, say). The middleware knows the dict is a copy because it
    # saw the lifespan, and this is not the lifespan's dict.
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({})(scope, receive, send)

    mw = Auth0Middleware(with_lifespan(endpoint), verifier=verifier)
    lifespan_state: dict[str, Any] = {"db": "pool"}
    per_request = dict(lifespan_state)
    scope = http_scope([(b"authorization", f"Bearer {issuer.token(sub='alice')}".encode())])
    scope["state"] = per_request
    outer_view = Request(scope).state  # taken before the call, as BaseHTTPMiddleware does

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    async with lifespan_running(mw, lifespan_state):
        await mw(scope, receive, send)
    assert scope["state"] is per_request
    assert outer_view.claims.sub == "alice"
    assert outer_view.db == "pool"
    assert "claims" not in lifespan_state


@pytest.mark.parametrize("inner_lifespan", [False, True], ids=["no-lifespan", "own-lifespan"])
async def test_claims_in_a_shared_state_authenticate_nobody_else(
    verifier: TokenVerifier, issuer: LocalIssuer, inner_lifespan: bool
) -> None:
    # Auth0Middleware on a mounted app, under LifespanManager (one state dict for
    # every request). Without a lifespan of its own the middleware cannot tell that
    # the dict is shared: its first request wrote its claims there, a later request
    # with no token to a route of the outer app (no middleware) was authenticated as
    # that user by require_token, and a session user's request through the mounted
    # app lost its login to those stale claims; it copies now. With a lifespan of
    # its own (the outer app runs it: Starlette does not pass lifespans to mounts)
    # it writes into the outer shared dict, and the claims left there must still
    # authenticate nobody: the dependencies read the result from the request's
    # scope, and only another middleware's entry counts as an outer token.
    inner = FastAPI()
    inner.add_middleware(Auth0Middleware, verifier=verifier)

    @inner.get("/me")
    async def me(claims: Annotated[Claims, Depends(require_token)]) -> Any:
        return {"sub": claims.sub}

    @inner.get("/who")
    async def who(request: Request) -> Any:
        return {"user": request.user.display_name or None}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with LifespanManager(inner):
            yield

    outer = FastAPI(lifespan=lifespan if inner_lifespan else None, routes=[Mount("/b", app=inner)])
    outer.add_middleware(AuthenticationMiddleware, backend=CookieLogin("bob", "bob"))

    @outer.get("/outer")
    async def outer_route(claims: Annotated[Claims, Depends(require_token)]) -> Any:
        return {"sub": claims.sub}

    async with LifespanManager(outer) as started:
        transport = httpx.ASGITransport(app=started.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            alice = {"Authorization": f"Bearer {issuer.token(sub='alice')}"}
            assert (await c.get("/b/who", headers=alice)).json() == {"user": "alice"}
            assert (await c.get("/b/me", headers=alice)).json() == {"sub": "alice"}
            assert (await c.get("/outer")).status_code == 500  # no middleware there
            bob = await c.get("/b/who", headers={"Cookie": "session=bob"})
            assert bob.json() == {"user": "bob"}


@pytest.mark.parametrize(
    "odd",
    [{"asgi_auth0": ()}, {"state": object()}, {"state": ["x"]}],
    ids=["empty-tuple-in-our-key", "state-not-a-mapping", "state-a-list"],
)
async def test_odd_scope_contents_never_make_a_500(
    verifier: TokenVerifier, issuer: LocalIssuer, odd: dict[str, Any]
) -> None:
    # What a broken server or middleware may leave in the scope: the request is
    # still served, with this request's own state.
    seen: dict[str, Any] = {}

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        seen["claims"] = Request(scope).state.claims
        await JSONResponse({})(scope, receive, send)

    mw = Auth0Middleware(endpoint, verifier=verifier)
    for token in (None, issuer.token(sub="alice")):
        headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode())]
        scope = {**http_scope(headers), **odd}
        sent = await drive(mw, scope, [{"type": "http.request", "body": b""}])
        assert sent[0]["status"] == 200
        assert (seen["claims"] is None) if token is None else (seen["claims"].sub == "alice")
