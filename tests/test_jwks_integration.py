"""JWKSCache against a real issuer: LocalIssuer's HTTP server on 127.0.0.1, real httpx.

Fetching and discovery, single flight, rotation, the unknown-kid cooldown and every
outage shape (500, invalid JSON, oversized bodies, connection resets, timeouts, the
issuer down) over real sockets. Policy time (TTL, cooldown, backoff) is an injected
clock; only the fetch deadline is real time, kept short and bounded. No sleeps: waits
use events, ``wait_all_tasks_blocked`` and the issuer's own request counters.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest
from _clock import Clock

from asgi_auth0 import InvalidTokenError, KeySetError, UnknownKeyError
from asgi_auth0._jwks import JWKSCache
from asgi_auth0._signing import generate_private_key
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.testing import DISCOVERY_PATH, LocalIssuer

pytestmark = pytest.mark.anyio

P256 = generate_private_key("P-256")
ONE_MIB = 1024 * 1024  # the contract's body cap
FETCH_TIMEOUT = 0.5
# Scheduling slack on a busy CI machine; the deadlines asserted are FETCH_TIMEOUT plus this.
SLACK = 1.5


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def issuer() -> AsyncIterator[LocalIssuer]:
    async with LocalIssuer(private_key=P256) as issuer:
        yield issuer


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


Factory = Callable[..., JWKSCache]


@pytest.fixture
def make(issuer: LocalIssuer, client: httpx.AsyncClient, clock: Clock) -> Factory:
    def make(**options: Any) -> JWKSCache:
        options.setdefault("http_client", client)
        options.setdefault("clock", clock)
        options.setdefault("fetch_timeout", FETCH_TIMEOUT)
        options.setdefault("jitter", lambda: 0.0)
        jwks_uri = options.pop("jwks_uri", issuer.jwks_uri)
        return JWKSCache(jwks_uri, **options)

    return make


async def test_fetches_keys_over_http_on_loopback(issuer: LocalIssuer, make: Factory) -> None:
    cache = make()
    key = await cache.get_key(issuer.current_kid, issuer.alg)
    assert key.kid == issuer.current_kid
    assert issuer.jwks_requests == 1


async def test_discovers_the_jwks_from_the_issuer(issuer: LocalIssuer, make: Factory) -> None:
    cache = make(jwks_uri=None, issuer=issuer.issuer)
    assert (await cache.get_key(issuer.current_kid, issuer.alg)).kid == issuer.current_kid
    assert issuer.requests[DISCOVERY_PATH] == 1
    assert cache.jwks_uri == issuer.jwks_uri


async def test_a_cache_that_owns_its_client_closes_it_and_can_start_over(
    issuer: LocalIssuer, clock: Clock
) -> None:
    async with JWKSCache(issuer.jwks_uri, clock=clock) as cache:
        await cache.refresh()
    await cache.refresh()  # after aclose() a new client is made on demand
    await cache.aclose()
    assert issuer.jwks_requests == 2


async def test_concurrent_first_requests_cause_one_fetch(
    issuer: LocalIssuer, make: Factory
) -> None:
    cache = make()
    kid, alg = issuer.current_kid, issuer.alg
    found: list[str | None] = []

    async def call() -> None:
        found.append((await cache.get_key(kid, alg)).kid)

    issuer.hold()
    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(call)
        await issuer.wait_for_waiting_async(1)
        await anyio.wait_all_tasks_blocked()
        assert issuer.jwks_requests == 1
        issuer.release()
    assert found == [kid] * 100
    assert issuer.jwks_requests == 1


async def test_rotation_200_concurrent_requests_with_a_new_kid_one_fetch(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make()
    await cache.get_key(issuer.current_kid, issuer.alg)
    new = issuer.rotate()
    clock.advance(31)  # past the cooldown
    found: list[str | None] = []

    async def call() -> None:
        found.append((await cache.get_key(new, issuer.alg)).kid)

    issuer.hold()
    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(call)
        await issuer.wait_for_waiting_async(1)
        await anyio.wait_all_tasks_blocked()
        issuer.release()
    assert found == [new] * 200
    assert issuer.jwks_requests == 2  # the initial load and one refresh
    assert cache.generation == 2


async def test_cancelled_callers_do_not_cancel_the_shared_fetch(
    issuer: LocalIssuer, make: Factory
) -> None:
    cache = make()
    kid, alg = issuer.current_kid, issuer.alg
    found: list[str | None] = []
    scopes = [anyio.CancelScope() for _ in range(5)]

    async def leaves(scope: anyio.CancelScope) -> None:
        with scope:
            await cache.get_key(kid, alg)

    async def stays() -> None:
        found.append((await cache.get_key(kid, alg)).kid)

    issuer.hold()
    async with anyio.create_task_group() as tg:
        tg.start_soon(leaves, scopes[0])  # this one performs the fetch
        await issuer.wait_for_waiting_async(1)
        for scope in scopes[1:]:
            tg.start_soon(leaves, scope)
        for _ in range(5):
            tg.start_soon(stays)
        await anyio.wait_all_tasks_blocked()
        for scope in scopes:
            scope.cancel()  # every one of them disconnects
        await anyio.wait_all_tasks_blocked()
        issuer.release()
    assert found == [kid] * 5
    assert issuer.jwks_requests == 1


async def test_a_removed_key_stops_validating_after_the_next_refresh(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(ttl=600)
    old = issuer.current_kid
    await cache.get_key(old, issuer.alg)
    new = issuer.rotate(keep_old=False)
    clock.advance(601)
    with pytest.raises(UnknownKeyError):
        await cache.get_key(old, issuer.alg)
    assert (await cache.get_key(new, issuer.alg)).kid == new


async def test_verified_tokens_stop_validating_when_the_key_set_expires(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    # The verified-token cache answered a token verified earlier for as long as it
    # had not expired, even after the last good key set had (ttl + max_stale with
    # every refresh failing), while the cache itself refused every other token.
    cache = make(ttl=600, max_stale=600)
    wall = time.time()
    verifier = TokenVerifier(issuer.config(), key_set=cache, clock=lambda: wall + clock.now - start)
    start = clock.now
    token = issuer.token(expires_in=86400)
    assert (await verifier.verify(token)).sub == "user-1"
    assert (await verifier.verify(token)).sub == "user-1"  # cached at its second
    assert verifier.cache_info()["entries"] == 1
    issuer.fail_with(500)
    clock.advance(1199)  # stale, within max_stale: the stale key still validates
    assert (await verifier.verify(token)).sub == "user-1"
    # With no background refresher, the request past freshness tried the refresh
    # itself (a cached verdict must not skip it); it failed, and backoff holds.
    assert issuer.jwks_requests == 2
    assert (await verifier.verify(token)).sub == "user-1"
    assert issuer.jwks_requests == 2
    clock.advance(1)  # fetch + ttl + max_stale: no key is usable any more
    with pytest.raises(KeySetError):
        await verifier.verify(token)
    assert verifier.cache_info()["entries"] == 0
    issuer.heal()
    clock.advance(60)  # past the failure backoff
    assert (await verifier.verify(token)).sub == "user-1"


async def test_a_replayed_cached_token_cannot_postpone_a_due_refresh(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    # No background refresher (no lifespan, or verifier= without background_refresh):
    # only a key lookup refreshes a set past freshness, and a cached verdict skips the
    # lookup. A token replayed from the cache kept a key removed from the JWKS
    # validating for ttl + max_stale (found in a security review).
    cache = make(ttl=600)
    wall = time.time()
    start = clock.now
    verifier = TokenVerifier(issuer.config(), key_set=cache, clock=lambda: wall + clock.now - start)
    stolen = issuer.token(expires_in=86400)
    assert (await verifier.verify(stolen)).sub == "user-1"
    assert verifier.cache_info()["entries"] == 0  # the cache takes it at its second
    assert (await verifier.verify(stolen)).sub == "user-1"
    assert verifier.cache_info()["entries"] == 1
    clock.advance(300)
    assert (await verifier.verify(stolen)).sub == "user-1"  # fresh: a cache hit
    assert issuer.jwks_requests == 1
    issuer.rotate(keep_old=False)
    clock.advance(301)  # past freshness
    with pytest.raises(UnknownKeyError):
        await verifier.verify(stolen)
    assert issuer.jwks_requests == 2
    assert verifier.cache_info()["entries"] == 0
    # A token of the new key verifies and is cached again once the set is fresh.
    current = issuer.token(expires_in=86400)
    for _ in range(2):
        assert (await verifier.verify(current)).sub == "user-1"
    assert verifier.cache_info()["entries"] == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("how", ["wait_for", "task.cancel"])
async def test_a_natively_cancelled_first_caller_does_not_abort_the_shared_fetch(
    issuer: LocalIssuer, make: Factory, how: str
) -> None:
    # asyncio only: anyio's shield holds against anyio cancellation (and all of trio's),
    # not against task.cancel(), which asyncio.wait_for, asyncio.timeout, TaskGroups
    # and grpc.aio use. The caller that started the fetch timing out failed every
    # caller waiting on it with KeySetError (found by a user audit).
    import asyncio

    cache = make()
    kid, alg = issuer.current_kid, issuer.alg
    issuer.hold()
    first = asyncio.get_running_loop().create_task(cache.get_key(kid, alg))
    await issuer.wait_for_waiting_async(1)  # the first caller's fetch is under way
    others = [asyncio.get_running_loop().create_task(cache.get_key(kid, alg)) for _ in range(20)]
    await asyncio.sleep(0)  # they join the flight
    if how == "wait_for":
        # asyncio.TimeoutError: the builtin TimeoutError only from Python 3.11 on.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(first, 0.01)
    else:
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
    issuer.release()
    found = await asyncio.gather(*others)
    assert [key.kid for key in found] == [kid] * 20
    assert issuer.jwks_requests == 1
    assert cache.status().state == "fresh"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_closing_the_cache_cancels_a_fetch_left_running(
    issuer: LocalIssuer, make: Factory
) -> None:
    import asyncio

    cache = make()
    issuer.hold()
    first = asyncio.get_running_loop().create_task(cache.get_key(issuer.current_kid, issuer.alg))
    await issuer.wait_for_waiting_async(1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(cache._fetch_tasks) == 1  # still fetching for whoever joins
    await cache.aclose()
    assert not cache._fetch_tasks
    issuer.release()


async def test_a_random_kid_flood_costs_at_most_one_fetch_per_cooldown(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(refresh_cooldown=30)
    kid, alg = issuer.current_kid, issuer.alg
    await cache.get_key(kid, alg)
    start = clock.now
    for i in range(1000):  # 1000 random kids over 100 s of cache time
        with pytest.raises(UnknownKeyError):
            await cache.get_key(f"random-{i}", alg)
        assert (await cache.get_key(kid, alg)).kid == kid  # valid tokens keep working
        clock.advance(0.1)
    windows = (clock.now - start) / 30
    assert issuer.jwks_requests - 1 <= windows + 1


# -- outages ----------------------------------------------------------------------------------


def _fault_500(issuer: LocalIssuer) -> None:
    issuer.fail_with(500)


def _fault_invalid_json(issuer: LocalIssuer) -> None:
    issuer.garbage()


def _fault_not_a_jwks(issuer: LocalIssuer) -> None:
    issuer.garbage(b'{"keys": "none"}')


def _fault_oversized(issuer: LocalIssuer) -> None:
    issuer.oversized(2 * ONE_MIB)


def _fault_oversized_unannounced(issuer: LocalIssuer) -> None:
    issuer.oversized(2 * ONE_MIB, content_length=False)


def _fault_reset(issuer: LocalIssuer) -> None:
    issuer.reset_connections()


def _fault_slow(issuer: LocalIssuer) -> None:
    issuer.slow(10)


def _fault_down(issuer: LocalIssuer) -> None:
    issuer.stop()


OUTAGES = {
    # name: (fault, reason recorded, requests the issuer sees per fetch)
    "500": (_fault_500, "http_status", 1),
    "invalid_json": (_fault_invalid_json, "invalid_json", 1),
    "not_a_jwks": (_fault_not_a_jwks, "not_a_jwks", 1),
    "oversized": (_fault_oversized, "too_large", 1),
    "oversized_no_length": (_fault_oversized_unannounced, "too_large", 1),
    "reset": (_fault_reset, "connection_error", 2),  # one quick retry
    "timeout": (_fault_slow, "timeout", 1),
    "down": (_fault_down, "connection_error", 0),
}


async def timed(coro: Any) -> tuple[Any, float]:
    started = time.monotonic()
    with anyio.fail_after(10):  # a hang fails the test instead of timing it out
        result = await coro
    return result, time.monotonic() - started


async def raises_key_set_error(cache: JWKSCache, kid: str, alg: str) -> KeySetError:
    try:
        await cache.get_key(kid, alg)
    except KeySetError as exc:
        return exc
    raise AssertionError("expected KeySetError")


@pytest.mark.parametrize("outage", list(OUTAGES))
async def test_during_an_outage_known_kids_work_and_unknown_kids_get_503_quickly(
    issuer: LocalIssuer, make: Factory, clock: Clock, outage: str
) -> None:
    fault, reason, per_fetch = OUTAGES[outage]
    cache = make(ttl=600, max_stale=3600, refresh_cooldown=30)
    kid, alg = issuer.current_kid, issuer.alg
    await cache.get_key(kid, alg)
    fault(issuer)
    before = issuer.jwks_requests

    # Fresh set: the known kid is served from memory, the issuer is not asked.
    key, elapsed = await timed(cache.get_key(kid, alg))
    assert key.kid == kid
    assert issuer.jwks_requests == before

    # An unknown kid: one fetch, which fails within fetch_timeout -> 503, never 401.
    clock.advance(31)
    error, elapsed = await timed(raises_key_set_error(cache, "rotated-in", alg))
    assert not isinstance(error, InvalidTokenError)
    assert error.retry_after >= 1
    assert elapsed < FETCH_TIMEOUT + SLACK
    assert issuer.jwks_requests == before + per_fetch
    assert cache.status().last_error == reason

    # Within the cooldown, further unknown kids are answered at once without a fetch.
    error, elapsed = await timed(raises_key_set_error(cache, "another", alg))
    assert elapsed < SLACK
    assert issuer.jwks_requests == before + per_fetch

    # Past freshness the known kid keeps working (stale-if-error) ...
    clock.advance(600)
    for _ in range(5):
        key, elapsed = await timed(cache.get_key(kid, alg))
        assert key.kid == kid
        assert elapsed < FETCH_TIMEOUT + SLACK
    assert cache.status().state == "stale"

    # ... for max_stale, then the answer is 503.
    clock.advance(3600)
    error, elapsed = await timed(raises_key_set_error(cache, kid, alg))
    assert elapsed < FETCH_TIMEOUT + SLACK
    assert cache.status().state == "failing"

    # The issuer comes back: the next attempt after backoff recovers.
    issuer.heal()
    issuer.start()
    clock.advance(300)
    assert (await cache.get_key(kid, alg)).kid == kid
    assert cache.status().state == "fresh"


async def test_a_slow_issuer_never_delays_known_kids_with_a_runner(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(ttl=600)
    kid, alg = issuer.current_kid, issuer.alg
    async with cache.running():
        await cache.get_key(kid, alg)  # joins or follows the startup load
        issuer.slow(10)
        for step in (481, 200, 1000):  # refresh-ahead window, stale, staler
            clock.advance(step)
            for _ in range(20):
                _, elapsed = await timed(cache.get_key(kid, alg))
                assert elapsed < 0.25
        assert cache.status().state == "stale"


async def test_an_issuer_down_at_startup_is_503_then_recovers_by_itself(
    issuer: LocalIssuer, client: httpx.AsyncClient
) -> None:
    kid, alg = issuer.current_kid, issuer.alg
    issuer.stop()
    loaded = anyio.Event()

    def on_event(name: str, info: Any) -> None:
        if name == "refresh":
            loaded.set()

    # Real time here, with a tiny backoff, so the runner retries on its own.
    cache = JWKSCache(
        issuer.jwks_uri,
        http_client=client,
        fetch_timeout=FETCH_TIMEOUT,
        backoff_min=0.05,
        backoff_max=0.2,
        on_event=on_event,
    )
    async with cache.running():
        error, elapsed = await timed(raises_key_set_error(cache, kid, alg))
        assert error.retry_after >= 1
        assert elapsed < FETCH_TIMEOUT + SLACK
        assert cache.status().state == "failing"
        issuer.start()
        with anyio.fail_after(10):
            await loaded.wait()  # no request needed: the runner retried by itself
        assert cache.status().state == "fresh"
        assert (await cache.get_key(kid, alg)).kid == kid
