"""Cancellation around a shared key fetch, on asyncio and trio, against a real issuer.

Two rules, both found by a cancellation audit with a real uvicorn:

- The caller that starts a fetch is a caller like any other: its own deadline or
  cancel scope ends its wait at once, while the fetch goes on for everyone else.
- A fetch that ends without an outcome (cancelled: the cache closed or its refresher
  stopped mid-fetch) is nobody's answer. Its waiters get 503, and it does not use up
  the unknown-``kid`` cooldown: the next token bearing the new ``kid`` fetches again
  instead of getting 401 ``unknown_kid`` for ``refresh_cooldown`` seconds.

No sleeps: the issuer holds its answer until released, and waits use events.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from _clock import Clock

from asgi_auth0 import KeySetError, UnknownKeyError
from asgi_auth0._jwks import JWKSCache
from asgi_auth0._keys import PublicKey
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio

# Long enough that a test can tell "left at its own deadline" from "waited for the
# fetch to time out"; the held fetch is always released or cancelled well before.
FETCH_TIMEOUT = 20.0


@pytest.fixture
async def issuer() -> AsyncIterator[LocalIssuer]:
    async with LocalIssuer() as issuer:
        yield issuer


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make(issuer: LocalIssuer, client: httpx.AsyncClient, clock: Clock) -> JWKSCache:
    return JWKSCache(
        issuer.jwks_uri,
        http_client=client,
        clock=clock,
        fetch_timeout=FETCH_TIMEOUT,
        refresh_cooldown=30,
        jitter=lambda: 0.0,
    )


async def test_the_caller_that_starts_a_fetch_leaves_at_its_own_deadline(
    issuer: LocalIssuer, client: httpx.AsyncClient
) -> None:
    cache = make(issuer, client, Clock())
    kid, alg = issuer.current_kid, issuer.alg
    issuer.hold()
    first_left = anyio.Event()
    found: list[PublicKey] = []

    async def first(scope: anyio.CancelScope) -> None:
        with scope:
            await cache.get_key(kid, alg)
        first_left.set()

    async def other() -> None:
        found.append(await cache.get_key(kid, alg))

    first_scope = anyio.CancelScope()
    async with anyio.create_task_group() as group:
        group.start_soon(first, first_scope)
        await issuer.wait_for_waiting_async(1)  # the first caller's fetch is under way
        for _ in range(5):
            group.start_soon(other)
        await anyio.wait_all_tasks_blocked()
        first_scope.cancel()  # what its fail_after or a client disconnect does
        # It leaves now, with the issuer still holding its answer, not when the fetch
        # ends (release, or FETCH_TIMEOUT later).
        with anyio.fail_after(5):
            await first_left.wait()
        assert issuer.waiting == 1
        issuer.release()
    assert [key.kid for key in found] == [kid] * 5  # the fetch went on for the others
    assert issuer.jwks_requests == 1
    await cache.aclose()


@pytest.mark.parametrize("how", ["closed", "refresher stopped"])
async def test_a_fetch_cancelled_midway_answers_503_and_spends_no_cooldown(
    issuer: LocalIssuer, client: httpx.AsyncClient, how: str
) -> None:
    clock = Clock()
    cache = make(issuer, client, clock)
    await cache.refresh()
    new_kid = issuer.rotate()
    issuer.hold()
    outcomes: list[object] = []

    async def needs_new_kid() -> None:
        try:
            outcomes.append(await cache.get_key(new_kid, issuer.alg))
        except KeySetError as exc:
            outcomes.append(exc)

    if how == "closed":
        # The request itself performs the fetch (no refresher); closing the cache
        # cancels it.
        async with anyio.create_task_group() as group:
            group.start_soon(needs_new_kid)
            await issuer.wait_for_waiting_async(1)
            await cache.aclose()
    else:
        # The refresher performs it; the app shuts its refresher down mid-fetch.
        async with anyio.create_task_group() as group, cache.running():
            group.start_soon(needs_new_kid)
            await issuer.wait_for_waiting_async(1)
    # Its waiter got an outage (503), not a bare cancellation and not a bad token.
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], KeySetError)
    issuer.release()
    fetched = issuer.jwks_requests

    # Same instant, well within the 30 s cooldown: the cancelled fetch did not count,
    # so the new kid fetches again and is found.
    key = await cache.get_key(new_kid, issuer.alg)
    assert key.kid == new_kid
    assert issuer.jwks_requests == fetched + 1
    await cache.aclose()


async def test_a_completed_unknown_kid_fetch_still_starts_the_cooldown(
    issuer: LocalIssuer, client: httpx.AsyncClient
) -> None:
    # The counterpart of the rule above: only a fetch without an outcome is forgotten.
    clock = Clock()
    cache = make(issuer, client, clock)
    await cache.refresh()
    fetched = issuer.jwks_requests
    # Both are 401 unknown_kid (never a 503): the first after a fetch, the second
    # answered from the cooldown without one.
    with pytest.raises(UnknownKeyError, match=r"^no key with this kid$"):
        await cache.get_key("never-published", issuer.alg)
    assert issuer.jwks_requests == fetched + 1
    with pytest.raises(UnknownKeyError, match=r"\(refresh cooldown\)$"):
        await cache.get_key("another-unpublished", issuer.alg)
    assert issuer.jwks_requests == fetched + 1
    await cache.aclose()


class _FailsOnLoaded(logging.Filter):
    """A logging filter with a bug: it raises on the "JWKS ... loaded" line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "loaded" in record.getMessage():
            raise ValueError("a buggy log filter")
        return True


async def test_an_error_after_the_fetch_never_escapes_its_task(
    issuer: LocalIssuer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    # The fetch runs in a task of its own, on trio a system task, and an exception
    # out of a trio system task ends the whole program (every request, the server).
    # What _perform does not contain itself (here a logging filter raising on the
    # line _install writes) is logged and stops there; this caller and the rest of
    # the program carry on.
    logger = logging.getLogger("asgi_auth0.tests.buggy_filter")
    logger.addFilter(_FailsOnLoaded())
    caplog.set_level(logging.INFO, logger=logger.name)
    cache = JWKSCache(
        issuer.jwks_uri, http_client=client, fetch_timeout=FETCH_TIMEOUT, logger=logger
    )
    try:
        # The key set was installed before the line that failed: the caller has it.
        key = await cache.get_key(issuer.current_kid, issuer.alg)
        await anyio.sleep(0)  # the program is still running
    finally:
        logger.filters.clear()
    assert key.kid == issuer.current_kid
    assert any("unexpected error after fetching" in r.getMessage() for r in caplog.records)
    assert issuer.jwks_requests == 1
    await cache.aclose()
