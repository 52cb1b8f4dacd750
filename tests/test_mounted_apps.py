"""Rejections raised inside mounted apps get the RFC 6750 answer, not a 500.

A Starlette or FastAPI app mounted inside the protected one (``app.mount("/v1", sub)``,
``Mount("/v1", app=Starlette(...))``) has its own ServerErrorMiddleware, which met a
dependency's ``AuthenticationRejected`` first: it answered 500 and re-raised, and the
outer middleware's answer was then a second response. The middleware registers its
handler on every app it finds mounted below it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import fastapi.routing
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, Router

from asgi_auth0._claims import Claims
from asgi_auth0._errors import InsufficientScopeError, MissingTokenError
from asgi_auth0._middleware import Auth0Middleware, AuthenticationRejected
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.fastapi import require_scopes, require_token
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio


def fastapi_sub() -> FastAPI:
    sub = FastAPI()

    @sub.get("/who")
    async def who(claims: Annotated[Claims, Depends(require_token)]) -> Any:
        return {"sub": claims.sub}

    @sub.get("/admin")
    async def admin(claims: Annotated[Claims, Depends(require_scopes("admin"))]) -> Any:
        return {"sub": claims.sub}

    return sub


async def private(request: Request) -> Response:
    # The README's Starlette pattern.
    if request.state.claims is None:
        raise AuthenticationRejected(MissingTokenError())
    if "admin" not in request.state.claims.scopes:
        raise AuthenticationRejected(InsufficientScopeError(("admin",)))
    return JSONResponse({"sub": request.state.claims.sub})


def starlette_sub() -> Starlette:
    return Starlette(routes=[Route("/private", private)])


def mounted_fastapi(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=verifier)
    app.mount("/sub", fastapi_sub())
    return app


def mounted_starlette(verifier: TokenVerifier) -> Starlette:
    # Two levels deep, through a Mount of routes, as a versioned API is laid out.
    v1 = Mount("/api", routes=[Mount("/v1", app=starlette_sub())])
    return Starlette(routes=[v1], middleware=[Middleware(Auth0Middleware, verifier=verifier)])


def wrapped_directly(verifier: TokenVerifier) -> Auth0Middleware:
    app = FastAPI()
    app.mount("/sub", fastapi_sub())
    return Auth0Middleware(app, verifier=verifier)


def mounted_in_included_routers(verifier: TokenVerifier) -> FastAPI:
    # A mount inside a router, included two levels deep. FastAPI 0.16x keeps each
    # included router whole, as a route holding it (older FastAPI copies the routes).
    inner = APIRouter()
    inner.mount("/sub", fastapi_sub())
    outer = APIRouter()
    outer.include_router(inner, prefix="/in")
    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=verifier)
    app.include_router(outer, prefix="/r")
    return app


# FastAPI before 0.16x copied an included router's routes but dropped its mounts.
ROUTER_MOUNTS_ROUTED = hasattr(fastapi.routing, "iter_route_contexts")

BUILDERS = {
    "fastapi-mount": (mounted_fastapi, "/sub/who", "/sub/admin"),
    **(
        {
            "fastapi-mount-in-included-routers": (
                mounted_in_included_routers,
                "/r/in/sub/who",
                "/r/in/sub/admin",
            )
        }
        if ROUTER_MOUNTS_ROUTED
        else {}
    ),
    "starlette-nested-mount": (mounted_starlette, "/api/v1/private", "/api/v1/private"),
    "wrapped-directly": (wrapped_directly, "/sub/who", "/sub/admin"),
}


def client(app: Any) -> httpx.AsyncClient:
    # raise_app_exceptions=False: a 500 must show as the response it is, not as a
    # test crash, so the assertion says what the client got.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.mark.parametrize("layout", sorted(BUILDERS))
async def test_a_mounted_apps_rejections_are_answered_like_the_middlewares(
    verifier: TokenVerifier, issuer: LocalIssuer, layout: str
) -> None:
    build, who, admin = BUILDERS[layout]
    async with client(build(verifier)) as c:
        anonymous = await c.get(who)
        short = await c.get(admin, headers={"Authorization": f"Bearer {issuer.token()}"})
        token = issuer.token(sub="root", scope="admin")
        ok = await c.get(admin, headers={"Authorization": f"Bearer {token}"})
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="api"'
    assert anonymous.json()["reason"] == "missing_token"
    assert short.status_code == 403, short.text
    assert short.headers["www-authenticate"].endswith('scope="admin"')
    assert short.json()["reason"] == "insufficient_scope"
    assert ok.status_code == 200
    assert ok.json() == {"sub": "root"}


async def test_a_mounted_apps_own_handler_is_kept(verifier: TokenVerifier) -> None:
    # An application that answers rejections its own way keeps doing so.
    async def own(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("ours", status_code=418)

    sub = fastapi_sub()
    sub.add_exception_handler(AuthenticationRejected, own)
    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=verifier)
    app.mount("/sub", sub)
    async with client(app) as c:
        r = await c.get("/sub/who")
    assert (r.status_code, r.text) == (418, "ours")


@pytest.mark.parametrize("kind", ["fastapi", "starlette"])
async def test_a_sub_app_that_served_requests_alone_is_answered_once_mounted(
    verifier: TokenVerifier, issuer: LocalIssuer, kind: str
) -> None:
    # A module-level sub-app, tested on its own first (its middleware stack gets built
    # then, from the handlers it had), then mounted in the protected app: the
    # handler registered later still answers its rejections, instead of its
    # ServerErrorMiddleware answering 500 before the middleware's 401.
    sub: Starlette = fastapi_sub() if kind == "fastapi" else starlette_sub()
    path = "/who" if kind == "fastapi" else "/private"
    async with client(sub) as c:
        alone = await c.get(path)
    assert alone.status_code == 500  # alone, nothing answers the rejection
    assert sub.middleware_stack is not None
    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=verifier)
    app.mount("/sub", sub)
    async with client(app) as c:
        anonymous = await c.get("/sub" + path)
        token = issuer.token(sub="root", scope="admin")
        ok = await c.get("/sub" + path, headers={"Authorization": f"Bearer {token}"})
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["reason"] == "missing_token"
    assert ok.status_code == 200
    assert ok.json() == {"sub": "root"}


def catch_all_inside(verifier: TokenVerifier, passed: list[str]) -> FastAPI:
    """The app a user builds with add_middleware: a catch-all error middleware added
    before ours runs inside it, between it and the app's own exception handling."""
    app = FastAPI()

    @app.middleware("http")
    async def catch_all(request: Request, call_next: Any) -> Response:
        try:
            response: Response = await call_next(request)
        except Exception as exc:  # what such middleware does
            passed.append(type(exc).__name__)
            return JSONResponse({"message": "internal error"}, status_code=500)
        return response

    app.add_middleware(Auth0Middleware, verifier=verifier)

    @app.get("/who")
    async def who(claims: Annotated[Claims, Depends(require_token)]) -> Any:
        return {"sub": claims.sub}

    @app.get("/admin")
    async def admin(claims: Annotated[Claims, Depends(require_scopes("admin"))]) -> Any:
        return {"sub": claims.sub}

    return app


async def test_middleware_inside_ours_sees_a_rejection_as_a_response(
    verifier: TokenVerifier, issuer: LocalIssuer
) -> None:
    # The rejection is answered by the app's own ExceptionMiddleware, as an
    # HTTPException would be: what runs between it and us sees a 401/403 response,
    # not an exception (which a catch-all turned into a 500, with no challenge).
    passed: list[str] = []
    async with client(catch_all_inside(verifier, passed)) as c:
        anonymous = await c.get("/who")
        short = await c.get("/admin", headers={"Authorization": f"Bearer {issuer.token()}"})
        token = issuer.token(sub="root", scope="admin")
        ok = await c.get("/admin", headers={"Authorization": f"Bearer {token}"})
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="api"'
    assert anonymous.json()["reason"] == "missing_token"
    assert short.status_code == 403, short.text
    assert short.headers["www-authenticate"].endswith('scope="admin"')
    assert ok.json() == {"sub": "root"}
    assert passed == []


async def test_the_apps_own_handler_for_rejections_is_kept_with_add_middleware(
    verifier: TokenVerifier,
) -> None:
    async def own(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("ours", status_code=418)

    passed: list[str] = []
    app = catch_all_inside(verifier, passed)
    app.add_exception_handler(AuthenticationRejected, own)
    async with client(app) as c:
        r = await c.get("/who")
    assert (r.status_code, r.text) == (418, "ours")


@pytest.mark.parametrize("outer", ["add_middleware", "wrapped", "router"])
async def test_a_sub_app_mounted_after_startup_is_named_in_the_log_then_answered(
    verifier: TokenVerifier,
    issuer: LocalIssuer,
    caplog: pytest.LogCaptureFixture,
    outer: str,
) -> None:
    # Mounted after the middleware looked for apps to register its handler on, the
    # sub-app's own ServerErrorMiddleware answers its first rejection with 500 before
    # anything else can. That 500 names its cause in the log, and the handler is
    # registered then, so the next rejection gets its RFC 6750 answer. The rejection
    # reaches the middleware as Starlette's RuntimeError when the outer app has our
    # handler (the first two), and as itself through a bare router (the third).
    async def ping(request: Request) -> Response:
        return JSONResponse({"ok": True})

    app: Starlette | Router = FastAPI()
    if outer == "router":
        app = Router()
    app.add_route("/ping", ping)
    served: Any = app
    if outer == "add_middleware":
        assert isinstance(app, Starlette)
        app.add_middleware(Auth0Middleware, verifier=verifier)
    else:
        served = Auth0Middleware(app, verifier=verifier)
    async with client(served) as c:
        assert (await c.get("/ping")).status_code == 200  # the app has started
        app.mount("/late", fastapi_sub())
        caplog.clear()
        first = await c.get("/late/who")
        named = [r for r in caplog.records if getattr(r, "reason", None) == "mounted_late"]
        second = await c.get("/late/who")
        token = issuer.token(sub="root", scope="admin")
        ok = await c.get("/late/admin", headers={"Authorization": f"Bearer {token}"})
    assert first.status_code == 500
    assert len(named) == 1, [r.getMessage() for r in caplog.records]
    assert named[0].levelname == "ERROR"
    message = named[0].getMessage()
    assert "/late/who" in message
    assert "mounted after" in message
    assert second.status_code == 401, second.text
    assert second.json()["reason"] == "missing_token"
    assert ok.status_code == 200


async def test_a_rejection_after_the_response_began_blames_no_mount(
    verifier: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    # An endpoint that raises a rejection once its response is under way: nothing can
    # answer it any more (Starlette says so in its own RuntimeError), and no app lacks
    # the handler, so no line blames a late mount.
    raised: list[bool] = []

    async def body() -> AsyncIterator[bytes]:
        yield b"partial"
        raised.append(True)
        raise AuthenticationRejected(MissingTokenError())

    async def streams(request: Request) -> Response:
        return StreamingResponse(body())

    app = FastAPI()
    app.add_route("/stream", streams)
    app.add_middleware(Auth0Middleware, verifier=verifier)
    async with client(app) as c:
        # Older httpx hands the application's exception on once the response began,
        # whatever raise_app_exceptions says: Starlette's RuntimeError, as the server
        # would log it.
        with contextlib.suppress(RuntimeError):
            await c.get("/stream")
    assert raised == [True]
    assert "mounted_late" not in [getattr(rec, "reason", None) for rec in caplog.records]


class Opaque:
    """A wrapper of the application's own that the startup walk cannot look into."""

    def __init__(self, app: Any) -> None:
        self._inner = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._inner(scope, receive, send)


async def test_an_app_behind_an_opaque_wrapper_gets_the_handler_at_its_first_500(
    verifier: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    # Mounted before startup but unseen by the walk, and beside a late app the walk
    # would find: the app whose rejection became the 500 is the one that gets the
    # handler (found in the traceback), and only the first rejection is a 500.
    hidden, late = fastapi_sub(), fastapi_sub()
    app = FastAPI()
    app.mount("/hidden", Opaque(hidden))
    app.add_middleware(Auth0Middleware, verifier=verifier)
    async with client(app) as c:
        assert (await c.get("/nowhere")).status_code == 404  # the app has started
        app.mount("/late", late)
        first = await c.get("/hidden/who")
        second = await c.get("/hidden/who")
    assert first.status_code == 500
    assert second.status_code == 401, second.text
    assert AuthenticationRejected in hidden.exception_handlers
    assert AuthenticationRejected not in late.exception_handlers  # not blamed, not touched
    [line] = [r for r in caplog.records if getattr(r, "reason", None) == "mounted_late"]
    assert "/hidden/who" in line.getMessage()
    assert "behind a wrapper" in line.getMessage()


async def test_the_late_mount_line_is_logged_once_a_minute(
    verifier: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    # Each late app heals at its first 500, but a client can reach many of them in a
    # row: past the first line in a minute, the rest go to DEBUG.
    caplog.set_level(logging.DEBUG, logger="asgi_auth0.middleware")
    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=verifier)
    async with client(app) as c:
        assert (await c.get("/nowhere")).status_code == 404
        for n in range(3):
            app.mount(f"/late{n}", fastapi_sub())
        answers = [(await c.get(f"/late{n}/who")).status_code for n in range(3)]
    assert answers == [500, 500, 500]  # three apps, each its own first rejection
    levels = [r.levelname for r in caplog.records if getattr(r, "reason", None) == "mounted_late"]
    assert levels == ["ERROR", "DEBUG", "DEBUG"]


async def test_a_rejection_raised_again_on_a_bare_router_is_answered(
    verifier: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    # One rejection instance raised on every request (a module-level constant) keeps
    # the frames of its earlier passes in its traceback, the late app's 500 among them:
    # they must not make a later request on a route of a bare router look answered.
    rejected = AuthenticationRejected(MissingTokenError())

    async def raises(request: Request) -> Response:
        raise rejected

    late = Starlette(routes=[Route("/who", raises)])
    router = Router(routes=[Route("/direct", raises)])
    served = Auth0Middleware(router, verifier=verifier)
    async with client(served) as c:
        router.mount("/late", late)
        assert (await c.get("/late/who")).status_code == 500
        direct = await c.get("/direct")
        again = await c.get("/late/who")
    assert direct.status_code == 401, direct.text
    assert again.status_code == 401, again.text
