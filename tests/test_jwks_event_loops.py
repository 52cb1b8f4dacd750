"""One key cache, one app, run by several event loops in turn: trio, then asyncio.

A test suite often imports one app object and runs it on trio in one test and on
asyncio in the next (or in random order). The cache's own HTTP client, made in the
first loop, failed in the next one when that was asyncio after trio ("must be called
from async context"), and every later fetch answered 503 until the backoff ran out.
Each loop now gets a client of its own. Real issuer on 127.0.0.1, real httpx; each
run rotates the key so that it must fetch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_auth0 import Auth0Middleware, JWKSCache
from asgi_auth0.testing import LocalIssuer

Runner = Callable[[Callable[[], Coroutine[Any, Any, str]]], str]


def run_trio(main: Callable[[], Coroutine[Any, Any, str]]) -> str:
    return trio.run(main)


def run_asyncio(main: Callable[[], Coroutine[Any, Any, str]]) -> str:
    return asyncio.run(main())


# trio first: the order that failed. Then back and forth.
RUNS: list[Runner] = [run_trio, run_asyncio, run_trio, run_asyncio, run_asyncio]


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as issuer:
        yield issuer


def test_a_cache_fetches_in_every_event_loop_it_is_used_in(issuer: LocalIssuer) -> None:
    cache = JWKSCache(issuer.jwks_uri, refresh_cooldown=0)

    async def current_kid() -> str:
        return (await cache.get_key(issuer.current_kid, issuer.alg)).kid or ""

    for run in RUNS:
        kid = issuer.rotate()
        assert run(current_kid) == kid
    assert issuer.jwks_requests == len(RUNS)


def test_an_app_answers_in_every_event_loop_it_is_run_in(issuer: LocalIssuer) -> None:
    async def me(request: Request) -> JSONResponse:
        return JSONResponse({"sub": request.state.claims.sub})

    # No lifespan (as a bare ASGITransport runs it): the request path fetches keys.
    app = Auth0Middleware(
        Starlette(routes=[Route("/me", me)]),
        config=issuer.config(jwks_refresh_cooldown=0),
    )

    for run in RUNS:
        issuer.rotate()
        token = issuer.token(sub="user-1")

        async def call(token: str = token) -> str:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                response = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
            return f"{response.status_code} {response.text}"

        assert run(call) == '200 {"sub":"user-1"}'


def test_a_fetch_left_behind_by_a_finished_loop_does_not_block_the_next(
    issuer: LocalIssuer,
) -> None:
    # A request started in a loop's last moments: asyncio.run ends and cancels the
    # fetch's task before it first ran, so nothing ever finishes that fetch. The next
    # loop must fetch for itself, not wait on (or fail over) an event of a dead loop.
    cache = JWKSCache(issuer.jwks_uri)

    async def leave_a_fetch_behind() -> None:
        asyncio.get_running_loop().create_task(cache.get_key(issuer.current_kid, issuer.alg))

    asyncio.run(leave_a_fetch_behind())
    assert issuer.jwks_requests == 0

    async def current_kid() -> str:
        return (await cache.get_key(issuer.current_kid, issuer.alg)).kid or ""

    for run in (run_asyncio, run_trio):
        assert run(current_kid) == issuer.current_kid
    assert issuer.jwks_requests == 1

    async def close() -> str:
        await cache.aclose()  # of this loop: nothing of the dead one to wait for
        return "closed"

    assert run_asyncio(close) == "closed"


def test_trio_in_guest_mode_on_an_asyncio_host_is_treated_as_trio(issuer: LocalIssuer) -> None:
    # In guest mode asyncio's running loop is the host's even inside trio tasks; the
    # fetch must still run as trio (it used to hang the waiters until fetch_timeout).
    cache = JWKSCache(issuer.jwks_uri, fetch_timeout=5)

    async def in_trio() -> list[str]:
        with trio.fail_after(4):
            return [(await cache.get_key(issuer.current_kid, issuer.alg)).kid or "" for _ in "ab"]

    async def host() -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        trio.lowlevel.start_guest_run(
            in_trio,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
        )
        return (await done).unwrap()

    assert asyncio.run(host()) == [issuer.current_kid] * 2
    assert issuer.jwks_requests == 1
