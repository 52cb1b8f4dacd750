"""JWKSCache fetch rules that mutation testing found unchecked.

Each test fails under one or more mutants of asgi_auth0/_jwks.py that the JWKS test
files let through: a program that never imported trio, a cancelled fetch that was not
an unknown-``kid`` one, one owned HTTP client per event loop (not per fetch), the
outage-ended INFO line only after an outage, and aclose() in one event loop with a
fetch task of another, stopped, loop left pending. Real issuer on 127.0.0.1, real
httpx; time moves by an injected clock; no sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from _clock import Clock

from asgi_auth0 import KeySetError, UnknownKeyError
from asgi_auth0._jwks import JWKSCache
from asgi_auth0.testing import LocalIssuer


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as issuer:
        yield issuer


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.mark.parametrize("trio_state", ["never imported", "half imported"])
def test_an_asyncio_program_fetches_keys_whatever_trio_is(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch, trio_state: str
) -> None:
    # _running_loop() asks trio first, but only a program that imported trio can be
    # running it: in one that did not, trio is no module to ask (this test process
    # imports trio for the other backend, so the test hides it). And while another
    # thread imports trio (httpcore does, on a first request), the module is in
    # sys.modules half made, without lowlevel yet: asking it raised AttributeError,
    # and an app starting then lost its key refresher and startup load.
    if trio_state == "never imported":
        monkeypatch.delitem(sys.modules, "trio")
    else:
        monkeypatch.setitem(sys.modules, "trio", types.ModuleType("trio"))
    cache = JWKSCache(issuer.jwks_uri)

    async def main() -> str:
        try:
            return (await cache.get_key(issuer.current_kid, issuer.alg)).kid or ""
        finally:
            await cache.aclose()

    assert asyncio.run(main()) == issuer.current_kid
    assert issuer.jwks_requests == 1


@pytest.mark.anyio
async def test_a_cancelled_refresh_leaves_the_unknown_kid_cooldown_as_it_was(
    issuer: LocalIssuer, client: httpx.AsyncClient
) -> None:
    # Only a cancelled fetch that an unknown kid started gives its cooldown stamp back.
    # One started otherwise (here refresh(), at the same instant as the last
    # unknown-kid fetch) has none to give back: the cooldown that fetch began holds.
    clock = Clock()
    cache = JWKSCache(
        issuer.jwks_uri, http_client=client, clock=clock, refresh_cooldown=30, fetch_timeout=20
    )
    await cache.refresh()
    with pytest.raises(UnknownKeyError, match="no key with this kid"):
        await cache.get_key("never-published", issuer.alg)  # fetches: the cooldown starts
    fetched = issuer.jwks_requests
    issuer.hold()
    outcomes: list[BaseException] = []

    async def refresh() -> None:
        try:
            await cache.refresh()
        except KeySetError as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(refresh)
        await issuer.wait_for_waiting_async(1)
        await cache.aclose()  # cancels the held refresh
    issuer.release()
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], KeySetError)
    with pytest.raises(UnknownKeyError, match="cooldown"):
        await cache.get_key("another-unpublished", issuer.alg)
    assert issuer.jwks_requests == fetched + 1  # the held one only
    await cache.aclose()


@pytest.mark.anyio
async def test_the_cache_makes_one_client_per_event_loop_not_one_per_fetch(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[httpx.AsyncClient] = []

    class Counted(httpx.AsyncClient):
        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            made.append(self)

    monkeypatch.setattr(httpx, "AsyncClient", Counted)
    cache = JWKSCache(issuer.jwks_uri, refresh_cooldown=0)
    for _ in range(3):
        kid = issuer.rotate()
        assert (await cache.get_key(kid, issuer.alg)).kid == kid
    assert issuer.jwks_requests == 3
    assert len(made) == 1
    await cache.aclose()
    assert made[0].is_closed
    # Closed, the cache stays usable: the next fetch makes a new client.
    await cache.refresh()
    assert len(made) == 2
    await cache.aclose()
    assert made[1].is_closed


@pytest.mark.anyio
async def test_the_outage_ended_line_follows_an_outage_only(
    issuer: LocalIssuer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    cache = JWKSCache(issuer.jwks_uri, http_client=client, clock=clock, ttl=600, jitter=lambda: 0.0)
    await cache.get_key(issuer.current_kid, issuer.alg)
    clock.advance(601)
    caplog.clear()
    with caplog.at_level(logging.INFO, "asgi_auth0.jwks"):
        # A routine refresh, nothing failed before it, the same keys: nothing at INFO.
        await cache.get_key(issuer.current_kid, issuer.alg)
    assert issuer.jwks_requests == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []

    # An outage that ends with new keys: the "loaded" line says so, alone.
    issuer.fail_with(500)
    clock.advance(601)
    await cache.get_key(issuer.current_kid, issuer.alg)  # stale; the refresh fails
    issuer.heal()
    kid = issuer.rotate()
    clock.advance(5)  # past the backoff
    caplog.clear()
    with caplog.at_level(logging.INFO, "asgi_auth0.jwks"):
        assert (await cache.get_key(kid, issuer.alg)).kid == kid
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(messages) == 1
    assert messages[0].startswith(f"JWKS of {issuer.jwks_uri} loaded: ")
    await cache.aclose()


def test_aclose_does_not_wait_for_a_fetch_task_of_a_stopped_event_loop(
    issuer: LocalIssuer,
) -> None:
    # A loop stopped (not closed, its tasks not cancelled) with a request's fetch task
    # created but never run: aclose() in another loop has nothing of it to wait for.
    # (Waiting would never end: that task belongs to a loop that is not running.)
    cache = JWKSCache(issuer.jwks_uri)
    stopped = asyncio.new_event_loop()

    async def start_a_request() -> None:
        asyncio.get_running_loop().create_task(cache.get_key(issuer.current_kid, issuer.alg))

    try:
        # The request runs its first step (it starts the fetch task) in the same loop
        # iteration that ends run_until_complete; the fetch task never runs.
        stopped.run_until_complete(start_a_request())
        assert len(asyncio.all_tasks(stopped)) == 2  # the request, waiting, and the fetch task

        async def close() -> str:
            await asyncio.wait_for(cache.aclose(), 5)
            return "closed"

        assert asyncio.run(close()) == "closed"
        assert issuer.jwks_requests == 0
    finally:
        for task in asyncio.all_tasks(stopped):
            task.cancel()
        stopped.run_until_complete(
            asyncio.gather(*asyncio.all_tasks(stopped), return_exceptions=True)
        )
        stopped.close()
