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
import gc
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import asgi_auth0._jwks
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


@pytest.fixture(autouse=True)
def _collect_abandoned_connections() -> Iterator[None]:
    """Several tests here end a loop, or block it, with a fetch in flight, as the
    scenarios need: its connection can then only be closed by the garbage collector,
    which warns (an error in this suite). Collected here, at the end of the test that
    abandoned it, rather than at a random point of a later test."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


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
    cache = _loaded(issuer)
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


def _failing_after_a_newer_success(
    issuer: LocalIssuer, cache: JWKSCache, start: Callable[[], Coroutine[Any, Any, object]]
) -> tuple[BaseException | None, int]:
    """Loop A starts a fetch (by ``start``) and stops running (a test's loop, kept for
    the next test) before the answer arrives; the connection drops, and the issuer is
    down when A retries. Meanwhile loop B gives up on that fetch and loads the keys.
    Returns the error A's own waiter got, and the failed fetches counted before A's."""
    loop_a = asyncio.new_event_loop()
    try:
        issuer.hold()
        waiter = loop_a.create_task(start())

        async def until_the_request_waits() -> None:
            await issuer.wait_for_waiting_async(1)

        loop_a.run_until_complete(until_the_request_waits())  # A stops, its fetch held
        issuer.stop()  # drops A's connection unanswered: A reads that when it runs again
        issuer.heal()
        issuer.start()
        assert run_asyncio(lambda: _kid_of(cache, issuer.current_kid)) == issuer.current_kid
        before = cache.status().failed_fetch_count
        issuer.stop()  # and A's retry finds no server
        loop_a.run_until_complete(asyncio.wait([waiter], timeout=5))
        issuer.start()
        return waiter.exception(), before
    finally:
        loop_a.close()


def test_a_fetch_given_up_on_that_fails_later_leaves_a_newer_success_alone(
    issuer: LocalIssuer,
) -> None:
    # When A runs again and its fetch fails, the failure is only its own waiter's: it
    # used to mark the cache as failing and back off, so that the next new kid got
    # 503 with no fetch at all, the issuer healthy.
    cache = JWKSCache(issuer.jwks_uri, refresh_cooldown=0)
    failure, _ = _failing_after_a_newer_success(
        issuer, cache, lambda: cache.get_key(issuer.current_kid, issuer.alg)
    )
    assert isinstance(failure, KeySetError)  # A's own waiter: its fetch failed
    status = cache.status()
    assert (status.state, status.consecutive_failures, status.last_error) == ("fresh", 0, None)
    new = issuer.rotate()
    assert run_asyncio(lambda: _kid_of(cache, new)) == new  # fetched, not 503


async def _kid_of(cache: JWKSCache, kid: str) -> str:
    return (await cache.get_key(kid, "RS256")).kid or ""


def _loaded(issuer: LocalIssuer, **settings: Any) -> JWKSCache:
    """A cache of ``issuer``'s keys, loaded (in a loop of its own, now ended)."""
    cache = JWKSCache(issuer.jwks_uri, **settings)
    assert run_asyncio(lambda: _kid_of(cache, issuer.current_kid)) == issuer.current_kid
    return cache


@pytest.fixture
def watch_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A count of the checks waiters make on fetches of other loops (``[0]``)."""
    counter = [0]
    running_elsewhere = asgi_auth0._jwks._running_elsewhere

    def counted(loop: object) -> bool:
        counter[0] += 1
        return running_elsewhere(loop)

    monkeypatch.setattr(asgi_auth0._jwks, "_running_elsewhere", counted)
    return counter


def _in_a_thread(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _until(condition: Callable[[], bool], timeout: float = 5) -> None:
    """Block (bounded) until ``condition()``: another thread's loop gets there."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_fetch_of_another_loop_that_ends_unanswered_is_fetched_again_here(
    issuer: LocalIssuer,
) -> None:
    # Twenty requests in thread B's loop join thread A's fetch. A's caller gives up
    # and A's loop ends, cancelling the fetch: no outcome. B must fetch for itself,
    # not answer 503 with the issuer healthy, and once for all twenty.
    cache = _loaded(issuer, fetch_timeout=10)
    new = issuer.rotate()
    issuer.hold()
    b_joined = threading.Event()
    found: dict[str, str] = {}

    async def a_gives_up() -> str:
        asyncio.get_running_loop().create_task(_kid_of(cache, new))
        await issuer.wait_for_waiting_async(1)
        while not b_joined.is_set():
            await asyncio.sleep(0.005)
        return "gone"  # asyncio.run cancels the fetch's task as it ends

    async def twenty() -> str:
        kids = set(await asyncio.gather(*(_kid_of(cache, new) for _ in range(20))))
        return kids.pop() if len(kids) == 1 else repr(kids)

    def b() -> None:
        found["b"] = run_asyncio(twenty)

    a = _in_a_thread(lambda: found.setdefault("a", run_asyncio(a_gives_up)))
    issuer.wait_for_waiting(1)
    second = _in_a_thread(b)
    _until(lambda: cache._inflight is not None and bool(cache._inflight.relays))
    b_joined.set()
    a.join(5)
    issuer.release()
    second.join(5)
    assert found == {"a": "gone", "b": new}
    assert issuer.jwks_requests == 3  # the first load, A's fetch, B's own (one)


def test_one_waiter_per_loop_watches_a_fetch_of_another_loop(
    issuer: LocalIssuer, watch_checks: list[int]
) -> None:
    # Waiters of a fetch in another thread's loop cannot await its event: one of them
    # per loop checks its flag, the others wait on that one. A check per waiter (every
    # 5 ms each) kept a core busy under a flood of unknown kids.
    cache = _loaded(issuer, fetch_timeout=10)
    new = issuer.rotate()
    issuer.hold()
    found: dict[str, list[str]] = {}

    async def many() -> str:
        found["b"] = list(await asyncio.gather(*(_kid_of(cache, new) for _ in range(50))))
        return "done"

    a = _in_a_thread(lambda: found.setdefault("a", [run_asyncio(lambda: _kid_of(cache, new))]))
    issuer.wait_for_waiting(1)
    b = _in_a_thread(lambda: found.setdefault("done", [run_asyncio(many)]))
    _until(lambda: cache._inflight is not None and bool(cache._inflight.relays))
    watch_checks[0] = 0
    time.sleep(0.25)  # fifty waiters, each checking every 5 ms, would check ~2,500 times
    during = watch_checks[0]
    issuer.release()
    a.join(5)
    b.join(5)
    assert found == {"a": [new], "b": [new] * 50, "done": ["done"]}
    assert issuer.jwks_requests == 2
    assert during < 500, during


def test_when_the_watcher_goes_away_another_waiter_takes_over(
    issuer: LocalIssuer, watch_checks: list[int]
) -> None:
    # The waiter watching for its loop is cancelled: the next one takes over the
    # watch (one, not all 49 at once), and all of them get the key.
    cache = _loaded(issuer, fetch_timeout=10)
    new = issuer.rotate()
    issuer.hold()
    cancelled = threading.Event()
    found: dict[str, Any] = {}

    async def many() -> str:
        tasks = [asyncio.ensure_future(_kid_of(cache, new)) for _ in range(50)]
        while not (cache._inflight is not None and cache._inflight.relays):
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)
        tasks[0].cancel()  # the first to wait is the watcher
        cancelled.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        found["b"] = [r for r in results if isinstance(r, str)]
        return "done"

    a = _in_a_thread(lambda: found.setdefault("a", run_asyncio(lambda: _kid_of(cache, new))))
    issuer.wait_for_waiting(1)
    b = _in_a_thread(lambda: found.setdefault("done", run_asyncio(many)))
    assert cancelled.wait(5)
    time.sleep(0.02)
    watch_checks[0] = 0
    time.sleep(0.25)  # one watcher checks about 50 times; 49 would check ~2,500 times
    during = watch_checks[0]
    issuer.release()
    a.join(5)
    b.join(5)
    assert found["b"] == [new] * 49
    assert during < 500, during


def test_a_fetch_a_stopped_refresher_never_started_releases_another_loops_waiter(
    issuer: LocalIssuer,
) -> None:
    # Loop A hands a fetch to its refresher and is blocked (so the refresher cannot
    # take it) until a waiter of thread B's loop has joined; then the refresher is
    # cancelled, the fetch never started. B is told the fetch ended (and fetches for
    # itself) instead of waiting out its whole bound, fetch_timeout + 1 s = 11 s.
    cache = _loaded(issuer, fetch_timeout=10)
    new = issuer.rotate()
    b_joined, b_done, handed = threading.Event(), threading.Event(), threading.Event()
    found: dict[str, Any] = {}

    async def a() -> str:
        runner = asyncio.ensure_future(cache.run())
        await asyncio.sleep(0.05)  # the refresher is registered and asleep
        waiter = asyncio.ensure_future(_kid_of(cache, new))
        await asyncio.sleep(0)  # the waiter hands the fetch over and waits
        handed.set()
        assert b_joined.wait(5)  # blocks loop A: its refresher cannot take the hand-over
        runner.cancel()
        await asyncio.gather(runner, waiter, return_exceptions=True)
        while not b_done.is_set():
            await asyncio.sleep(0.005)
        return "stopped"

    def b() -> None:
        started = time.monotonic()
        found["b"] = run_asyncio(lambda: _kid_of(cache, new))
        found["b_waited"] = time.monotonic() - started
        b_done.set()

    first = _in_a_thread(lambda: found.setdefault("a", run_asyncio(a)))
    assert handed.wait(5)
    second = _in_a_thread(b)
    _until(lambda: cache._inflight is not None and bool(cache._inflight.relays))
    b_joined.set()
    second.join(15)
    first.join(5)
    assert (found["a"], found["b"]) == ("stopped", new)
    assert found["b_waited"] < 6, found  # far from the 11 s bound it would wait out


def test_a_foreign_fetch_that_ends_releases_its_waiters_while_its_loop_runs(
    issuer: LocalIssuer,
) -> None:
    # The flag is set as the fetch ends, not when its loop ends: B's waiter is answered
    # while A's loop goes on running, well inside its own 11 s bound.
    cache = _loaded(issuer, fetch_timeout=10)
    new = issuer.rotate()
    issuer.hold()
    b_done = threading.Event()
    found: dict[str, Any] = {}

    async def a() -> str:
        kid = await _kid_of(cache, new)
        while not b_done.is_set():
            await asyncio.sleep(0.005)
        return kid

    def b() -> None:
        found["b"] = run_asyncio(lambda: _kid_of(cache, new))
        found["b_at"] = time.monotonic()
        b_done.set()

    first = _in_a_thread(lambda: found.setdefault("a", run_asyncio(a)))
    issuer.wait_for_waiting(1)
    second = _in_a_thread(b)
    _until(lambda: cache._inflight is not None and bool(cache._inflight.relays))
    released = time.monotonic()
    issuer.release()
    second.join(15)
    first.join(5)
    assert (found["a"], found["b"]) == (new, new)
    assert found["b_at"] - released < 6, found
    assert issuer.jwks_requests == 2


def test_a_superseded_failure_tells_its_own_waiter_why_and_is_counted(
    issuer: LocalIssuer,
) -> None:
    # As in the test above of a newer success: the failure of the fetch given up on
    # leaves the shared state alone, but is still a failed fetch, and its own
    # waiter's KeySetError still says what failed.
    cache = JWKSCache(issuer.jwks_uri, refresh_cooldown=0)
    failure, before = _failing_after_a_newer_success(issuer, cache, cache.refresh)
    assert isinstance(failure, KeySetError)
    assert failure.__cause__ is not None
    status = cache.status()
    assert (status.failed_fetch_count, status.consecutive_failures) == (before + 1, 0)


def test_a_refresher_started_while_another_loops_fetch_runs_survives_it(
    issuer: LocalIssuer,
) -> None:
    # The refresher meets a fetch of another thread's loop: it must not await that
    # loop's event ("bound to a different event loop"), but wait its own way.
    cache = _loaded(issuer, fetch_timeout=10)
    new = issuer.rotate()
    issuer.hold()
    found: dict[str, Any] = {}
    runner_started, stop_b = threading.Event(), threading.Event()

    async def b() -> str:
        runner = asyncio.ensure_future(cache.run())
        await asyncio.sleep(0.1)
        runner_started.set()
        while not stop_b.is_set():
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)
        found["runner_alive"] = not runner.done()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        return "ok"

    first = _in_a_thread(lambda: found.setdefault("a", run_asyncio(lambda: _kid_of(cache, new))))
    issuer.wait_for_waiting(1)
    second = _in_a_thread(lambda: found.setdefault("b", run_asyncio(b)))
    assert runner_started.wait(5)
    issuer.release()
    first.join(5)
    stop_b.set()
    second.join(5)
    assert (found["a"], found["b"], found["runner_alive"]) == (new, "ok", True)


def test_a_blocked_loops_fetch_costs_one_bound_and_is_then_given_up_on(
    issuer: LocalIssuer,
) -> None:
    # Loop A runs but is blocked, its fetch held: B's first request waits one bound
    # (fetch_timeout + 1 s = 3 s, not twice that) and gets 503; A's fetch is given up
    # on then, so B's next request fetches for itself at once.
    cache = _loaded(issuer, fetch_timeout=2.0, refresh_cooldown=0)
    new = issuer.rotate()
    issuer.hold()
    unblock = threading.Event()
    found: dict[str, Any] = {}

    async def a() -> str:
        task = asyncio.get_running_loop().create_task(_kid_of(cache, new))
        await issuer.wait_for_waiting_async(1)
        unblock.wait(15)  # loop A is running but blocked: its fetch cannot end
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return "a"

    async def b_twice() -> str:
        started = time.monotonic()
        try:
            found["first"] = await _kid_of(cache, new)
        except KeySetError:
            found["first"] = "503"
        found["first_waited"] = time.monotonic() - started
        issuer.release()
        started = time.monotonic()
        found["second"] = await _kid_of(cache, new)
        found["second_waited"] = time.monotonic() - started
        return "b"

    first = _in_a_thread(lambda: found.setdefault("a", run_asyncio(a)))
    issuer.wait_for_waiting(1)
    second = _in_a_thread(lambda: found.setdefault("b", run_asyncio(b_twice)))
    second.join(15)
    unblock.set()
    first.join(5)
    assert (found["first"], found["second"]) == ("503", new), found
    assert found["first_waited"] < 4.5, found  # one bound of 3 s, not two
    assert found["second_waited"] < 2.0, found  # its own fetch, not another bound


def test_a_refresher_gives_up_on_a_blocked_loops_fetch(issuer: LocalIssuer) -> None:
    cache = _loaded(issuer, fetch_timeout=0.3)
    new = issuer.rotate()
    issuer.hold()
    unblock = threading.Event()
    found: dict[str, Any] = {}

    async def a() -> str:
        task = asyncio.get_running_loop().create_task(_kid_of(cache, new))
        await issuer.wait_for_waiting_async(1)
        found["flight"] = cache._inflight
        unblock.wait(15)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return "a"

    async def b() -> str:
        runner = asyncio.ensure_future(cache.run())
        await asyncio.sleep(2.0)  # past the refresher's bound of 1.3 s
        found["still"] = cache._inflight is found["flight"]
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        return "b"

    first = _in_a_thread(lambda: found.setdefault("a", run_asyncio(a)))
    issuer.wait_for_waiting(1)
    _until(lambda: "flight" in found)
    second = _in_a_thread(lambda: found.setdefault("b", run_asyncio(b)))
    second.join(10)
    unblock.set()
    issuer.release()
    first.join(5)
    assert (found["b"], found["still"]) == ("b", False)
