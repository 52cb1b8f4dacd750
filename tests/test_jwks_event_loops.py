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
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_auth0 import Auth0Middleware, JWKSCache, KeySetError
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


def test_loops_in_two_threads_share_one_fetch_and_its_cooldown(issuer: LocalIssuer) -> None:
    # Two threads, each running its own loop (Starlette's TestClient without `with`,
    # used from several threads, does this). While thread A's fetch for a new kid is
    # under way, thread B asks for the same kid: it used to give up on A's fetch (an
    # event of another loop cannot be awaited), hand the unknown-kid cooldown back and
    # fetch for itself, so that a flood of unknown kids from every loop fetched on
    # every request. It now waits for A's fetch.
    cache = JWKSCache(issuer.jwks_uri)
    assert run_asyncio(lambda: _kid_of(cache, issuer.current_kid)) == issuer.current_kid
    new = issuer.rotate()
    issuer.hold()
    found: dict[str, str] = {}

    def in_a_thread(name: str) -> threading.Thread:
        def run() -> None:
            found[name] = run_asyncio(lambda: _kid_of(cache, new))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    first = in_a_thread("a")
    issuer.wait_for_waiting(1)
    second = in_a_thread("b")
    with pytest.raises(TimeoutError):  # no second fetch arrives (bounded: 0.5 s)
        issuer.wait_for_waiting(2, timeout=0.5)
    issuer.release()
    first.join(5)
    second.join(5)
    assert found == {"a": new, "b": new}
    assert issuer.jwks_requests == 2  # the first load and the one shared fetch


def test_a_fetch_given_up_on_that_fails_later_leaves_a_newer_success_alone(
    issuer: LocalIssuer,
) -> None:
    # Loop A starts a fetch and stops running (a test's loop, kept for the next
    # test) before the answer arrives; then the connection drops, and the issuer is
    # down when A retries. Loop B gives up on that fetch and
    # fetches the keys. When A runs again and reads its 500, the failure is only its
    # own waiter's: it used to mark the cache as failing and back off, so that the next
    # new kid got 503 with no fetch at all, the issuer healthy.
    cache = JWKSCache(issuer.jwks_uri, refresh_cooldown=0)
    loop_a = asyncio.new_event_loop()
    try:
        issuer.hold()
        waiter = loop_a.create_task(cache.get_key(issuer.current_kid, issuer.alg))

        async def until_the_request_waits() -> None:
            await issuer.wait_for_waiting_async(1)

        loop_a.run_until_complete(until_the_request_waits())  # A stops, its fetch held
        issuer.stop()  # drops A's connection unanswered: A reads that when it runs again
        issuer.heal()
        issuer.start()
        assert run_asyncio(lambda: _kid_of(cache, issuer.current_kid)) == issuer.current_kid
        issuer.stop()  # and A's retry finds no server
        loop_a.run_until_complete(asyncio.wait([waiter], timeout=5))
        issuer.start()
        assert isinstance(waiter.exception(), KeySetError)  # A's own waiter: its fetch failed
        status = cache.status()
        assert (status.state, status.consecutive_failures, status.last_error) == (
            "fresh",
            0,
            None,
        )
        new = issuer.rotate()
        assert run_asyncio(lambda: _kid_of(cache, new)) == new  # fetched, not 503
    finally:
        loop_a.close()


async def _kid_of(cache: JWKSCache, kid: str) -> str:
    return (await cache.get_key(kid, "RS256")).kid or ""
