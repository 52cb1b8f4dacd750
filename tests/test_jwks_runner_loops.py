"""A background refresher left behind in an event loop that stopped running.

An asyncio loop can stop running with the refresher's task still pending: a program
that drives its own loop with ``run_until_complete`` and then drops it, or closes it,
without leaving ``cache.running()``. The cache used to go on believing in that
refresher: every later loop handed its fetches to it, nobody performed them, and each
request waited ``fetch_timeout`` for a 503; no new refresher could start; past
freshness the dead one vouched for cached verdicts. Now fetches are handed only to
a refresher of the caller's own loop, and one whose loop no longer runs is forgotten.

Real issuer on 127.0.0.1, real httpx. The left-behind loop is kept, stopped, and run
once more at the end of each test so that its refresher ends cleanly; waits are
bounded well below ``fetch_timeout``; no sleeps. A *closed* loop is not used: its
pending task could never be finished, and would be destroyed at some later garbage
collection, in whichever test is running then. The cache cannot tell the two apart
(neither loop runs), so the stopped one stands for both.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import anyio
import pytest
import trio
from _clock import Clock

from asgi_auth0 import KeySetError, UnknownKeyError
from asgi_auth0._jwks import NOT_VOUCHED, JWKSCache
from asgi_auth0.testing import LocalIssuer

# The waiters' own bound is fetch_timeout + 1 s: a hand-over nobody performs shows as
# a wait past BOUND, long before that.
FETCH_TIMEOUT = 10
BOUND = 3

Main = Callable[[], Coroutine[Any, Any, None]]


def run_asyncio(main: Main) -> None:
    asyncio.run(main())


def run_trio(main: Main) -> None:
    trio.run(main)


RUNNERS = [pytest.param(run_asyncio, id="asyncio"), pytest.param(run_trio, id="trio")]


class LeftBehind:
    """A refresher started in an asyncio loop that then stops running, not shut down.

    ``check`` runs inside that loop once the refresher has loaded the keys, before the
    loop stops; a task it returns is cancelled in :meth:`finish`, which runs the loop
    once more so that the refresher ends.
    """

    def __init__(self, cache: JWKSCache, check: Callable[[], object] | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self._extra: list[asyncio.Task[Any]] = []
        ready: asyncio.Future[None] = self.loop.create_future()
        self._release: asyncio.Future[None] = self.loop.create_future()

        async def hold() -> None:
            try:
                async with cache.running():
                    await cache.refresh()
                    assert cache.status().background
                    extra = None if check is None else check()
                    if isinstance(extra, asyncio.Task):
                        self._extra.append(extra)
                    ready.set_result(None)
                    await self._release
            except Exception as exc:
                if ready.done():
                    raise
                ready.set_exception(exc)  # a refresher that did not start: say so

        self._task = self.loop.create_task(hold())
        try:
            self.loop.run_until_complete(ready)
        except Exception:
            self.loop.run_until_complete(self._task)
            self.loop.close()
            raise
        assert not self.loop.is_running()

    def finish(self) -> None:
        if self.loop.is_closed():
            return
        self._release.set_result(None)
        self.loop.run_until_complete(self._task)
        for task in self._extra:
            task.cancel()

        async def cancelled() -> None:
            await asyncio.gather(*self._extra, return_exceptions=True)

        self.loop.run_until_complete(cancelled())
        self.loop.close()


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as issuer:
        yield issuer


@pytest.fixture
def left_behind() -> Iterator[Callable[..., LeftBehind]]:
    made: list[LeftBehind] = []

    def leave(cache: JWKSCache, check: Callable[[], object] | None = None) -> LeftBehind:
        made.append(LeftBehind(cache, check))
        return made[-1]

    yield leave
    for one in made:
        one.finish()


@pytest.mark.parametrize("run", RUNNERS)
def test_a_loop_fetches_for_itself_when_the_refresher_was_left_in_a_stopped_loop(
    issuer: LocalIssuer, left_behind: Callable[..., LeftBehind], run: Callable[[Main], None]
) -> None:
    cache = JWKSCache(issuer.jwks_uri, fetch_timeout=FETCH_TIMEOUT)
    left_behind(cache)
    assert issuer.jwks_requests == 1
    new = issuer.rotate()

    async def main() -> None:
        with anyio.fail_after(BOUND):
            # An unknown kid: the fetch is this loop's own, answered at once.
            assert (await cache.get_key(new, issuer.alg)).kid == new
            await cache.refresh()
        await cache.aclose()

    run(main)
    assert issuer.jwks_requests == 3


@pytest.mark.parametrize("run", RUNNERS)
def test_a_new_loop_starts_a_refresher_of_its_own_and_still_refuses_a_second(
    issuer: LocalIssuer, left_behind: Callable[..., LeftBehind], run: Callable[[Main], None]
) -> None:
    clock = Clock()
    triggers: list[str] = []
    cache = JWKSCache(
        issuer.jwks_uri,
        fetch_timeout=FETCH_TIMEOUT,
        clock=clock,
        on_event=lambda name, info: triggers.append(info["trigger"]) if name == "refresh" else None,
    )
    left_behind(cache)
    # Asked from no event loop at all: the loop it was left in does not run.
    assert not cache.status().background
    assert triggers == ["background"]
    clock.advance(600)  # a refresh is due: a live refresher performs it by itself

    async def main() -> None:
        with anyio.fail_after(BOUND):
            async with cache.running():
                await cache.refresh()  # joins (or follows) the new refresher's fetch
                assert triggers[1] == "background"
                assert cache.status().background
                # From a worker thread (a sync health endpoint), too.
                assert (await anyio.to_thread.run_sync(cache.status)).background
                # Two live refreshers in one loop are still one too many.
                with pytest.raises(RuntimeError, match="already has a background refresher"):
                    async with cache.running():
                        pass
                assert cache.status().background
            assert not cache.status().background
        await cache.aclose()

    run(main)


def test_a_stopped_loop_run_again_leaves_the_newer_refresher_alone(
    issuer: LocalIssuer, left_behind: Callable[..., LeftBehind]
) -> None:
    # Loop A stops just after a request handed its refresher a fetch: the hand-over
    # is never picked up, and A's refresher has a wake-up queued. Loop B starts a
    # refresher (which must not perform A's hand-over: its waiters and event are A's)
    # and stops too. Then A runs again: its refresher wakes with a refresh due, but
    # B's has taken over, so it must neither fetch nor unregister B's.
    clock = Clock()
    triggers: list[str] = []
    cache = JWKSCache(
        issuer.jwks_uri,
        fetch_timeout=FETCH_TIMEOUT,
        clock=clock,
        ttl=600,
        on_event=lambda name, info: triggers.append(info["trigger"]) if name == "refresh" else None,
    )

    def hand_over() -> object:
        # Runs first in A's next turn, and hands over; the refresher's wake-up is
        # queued behind the loop's stop, so A stops with the hand-over untouched.
        return asyncio.ensure_future(cache.get_key(issuer.rotate(), issuer.alg))

    first = left_behind(cache, hand_over)
    assert triggers == ["background"]
    second = left_behind(cache)  # failed with "already has a background refresher"
    assert triggers == ["background", "manual"]  # B's own refresh() only
    clock.advance(500)  # past refresh-ahead: a woken refresher would fetch
    fetches = cache.status().fetch_count
    first.finish()
    assert cache.status().fetch_count == fetches
    new = issuer.rotate()
    requests = issuer.jwks_requests

    async def in_b() -> None:
        assert cache.status().background
        with anyio.fail_after(BOUND):
            assert (await cache.get_key(new, issuer.alg)).kid == new

    second.loop.run_until_complete(in_b())
    assert issuer.jwks_requests > requests


@pytest.mark.parametrize("run", RUNNERS)
def test_a_refresher_left_behind_vouches_for_nothing_past_freshness(
    issuer: LocalIssuer,
    left_behind: Callable[..., LeftBehind],
    run: Callable[[Main], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    cache = JWKSCache(issuer.jwks_uri, fetch_timeout=FETCH_TIMEOUT, clock=clock, ttl=600)

    def vouched_in_its_own_loop() -> None:
        clock.advance(601)  # past freshness, within max_stale
        assert cache.generation == 1  # a live refresher will refresh: cached verdicts hold

    left_behind(cache, vouched_in_its_own_loop)

    async def main() -> None:
        # Nothing refreshes for this loop but its own requests: no cached verdict.
        assert cache.generation == NOT_VOUCHED
        status = cache.status()
        assert (status.state, status.generation, status.background) == ("stale", 1, False)
        assert status.next_refresh_in == 0  # on the next request (no refresher to wait for)
        with anyio.fail_after(BOUND):
            assert (await cache.get_key(issuer.current_kid, issuer.alg)).kid == issuer.current_kid
        # ... which refreshed the stale set inline, as without any refresher.
        assert issuer.jwks_requests == 2
        assert cache.generation == 1
        await cache.aclose()

    with caplog.at_level(logging.DEBUG, "asgi_auth0.jwks"):
        run(main)
    # A refresh merely due, made by the request (nothing failed): no outage warning.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert "due for refresh" in caplog.text


@pytest.mark.anyio
async def test_a_hand_over_the_refresher_never_started_gives_the_cooldown_back(
    issuer: LocalIssuer,
) -> None:
    # The runner is cancelled, and before it next runs a request hands it an unknown
    # kid's fetch: run()'s finally must answer that request (503, not a wait for
    # nobody) and give back the cooldown stamp the hand-over took, so the next
    # request for a kid just published fetches at once. (The clock never moves: a
    # stamp kept would refuse it for the whole cooldown.)
    clock = Clock()
    cache = JWKSCache(
        issuer.jwks_uri, clock=clock, refresh_cooldown=30, fetch_timeout=FETCH_TIMEOUT
    )
    runner = anyio.CancelScope()

    async def refresher(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with runner:
            await cache.run(task_status=task_status)

    async with anyio.create_task_group() as group:
        await group.start(refresher)
        await cache.refresh()
        await anyio.wait_all_tasks_blocked()  # the runner sleeps until it is due
        assert issuer.jwks_requests == 1
        newer = issuer.rotate()
        runner.cancel()  # takes effect when the runner next runs, after this hand-over:
        with anyio.fail_after(BOUND), pytest.raises(KeySetError, match="fetch failed"):
            await cache.get_key(newer, issuer.alg)
    assert not cache.status().background
    assert issuer.jwks_requests == 1  # the hand-over never reached the issuer
    with anyio.fail_after(BOUND):
        assert (await cache.get_key(newer, issuer.alg)).kid == newer
    assert issuer.jwks_requests == 2
    with pytest.raises(UnknownKeyError, match="cooldown"):
        await cache.get_key("never-published", issuer.alg)  # that fetch's cooldown holds
    await cache.aclose()


@pytest.mark.parametrize("run", RUNNERS)
def test_a_request_in_another_loop_never_wakes_the_refresher_left_behind(
    issuer: LocalIssuer, left_behind: Callable[..., LeftBehind], run: Callable[[Main], None]
) -> None:
    # In the refresh-ahead window a request wakes its loop's refresher. Woken from
    # another loop, the one left behind would get a callback queued on its stopped
    # loop (on a closed one: RuntimeError) and fetch as soon as that loop ran again.
    clock = Clock()
    cache = JWKSCache(issuer.jwks_uri, fetch_timeout=FETCH_TIMEOUT, clock=clock, ttl=600)
    dead = left_behind(cache)
    clock.advance(500)  # past refresh-ahead (480 s), still fresh

    async def main() -> None:
        assert (await cache.get_key(issuer.current_kid, issuer.alg)).kid == issuer.current_kid
        await cache.aclose()

    run(main)
    assert cache.status().fetch_count == 1  # nothing fetches early without a refresher
    dead.finish()  # its refresher runs once more, until it is stopped
    assert cache.status().fetch_count == 1


def trio_thread(main: Main) -> None:
    trio.run(main)


def asyncio_thread(main: Main) -> None:
    asyncio.run(main())


@pytest.mark.parametrize(
    ("there", "here"),
    [
        pytest.param(trio_thread, run_asyncio, id="trio-there-asyncio-here"),
        pytest.param(asyncio_thread, run_trio, id="asyncio-there-trio-here"),
    ],
)
def test_a_refresher_running_in_another_threads_loop_is_live_but_never_woken_from_here(
    issuer: LocalIssuer, there: Callable[[Main], None], here: Callable[[Main], None]
) -> None:
    # One cache used from two threads' loops at once. The refresher is alive: it
    # vouches (it refreshes on its own schedule), status() says so, a second one is
    # refused. But its wake event is its own loop's: a request here never sets it
    # (an asyncio one set from another thread may be missed, or corrupt the loop; a
    # trio one raises). Each side waits on the other through threading events.
    clock = Clock()
    cache = JWKSCache(issuer.jwks_uri, fetch_timeout=FETCH_TIMEOUT, clock=clock, ttl=600)
    started, stop = threading.Event(), threading.Event()
    woken: list[bool] = []

    async def refresher_there() -> None:
        async with cache.running():
            await cache.refresh()
            started.set()
            await anyio.to_thread.run_sync(stop.wait)
            runner = cache._runner
            woken.append(runner is not None and runner.wake.is_set())

    thread = threading.Thread(target=there, args=(refresher_there,))
    thread.start()
    try:
        assert started.wait(BOUND)
        clock.advance(601)  # past freshness: a refresh is due

        async def main() -> None:
            assert cache.generation == 1
            assert cache.status().background
            with pytest.raises(RuntimeError, match="already has a background refresher"):
                async with cache.running():
                    pass
            # Served from the stale set; the refresh is the live refresher's to make.
            assert (await cache.get_key(issuer.current_kid, issuer.alg)).kid
            assert issuer.jwks_requests == 1

        here(main)
    finally:
        stop.set()
        thread.join(BOUND)
    assert not thread.is_alive()
    assert woken == [False]
    assert not cache.status().background
