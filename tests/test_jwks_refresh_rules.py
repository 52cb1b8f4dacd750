"""JWKSCache rules of fetching, freshness, stale serving, backoff and the background
refresher that a mutation of ``asgi_auth0/_jwks.py`` showed no other test pinned.

The issuer is :class:`LocalIssuer` served in-process through ``httpx.ASGITransport``;
``MockTransport`` only where a header or fault the issuer cannot send is needed (an
``Age`` header, a naive HTTP date). Time is an injected clock; no sleeps.
"""

from __future__ import annotations

import email.utils
import gc
import gzip
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest
from _clock import Clock
from _jwks_support import (  # noqa: F401 (fixtures, used by name)
    ISSUER,
    JWKS_URI,
    ONE_MIB,
    P256,
    Factory,
    client,
    clock,
    issuer,
    make,
    mock_client,
)

from asgi_auth0 import KeySetError
from asgi_auth0._jwks import IssuerKeySets, JWKSCache, freshness_lifetime, parse_retry_after
from asgi_auth0._signing import public_jwk
from asgi_auth0.testing import DISCOVERY_PATH, OAUTH_METADATA_PATH, LocalIssuer

pytestmark = pytest.mark.anyio

GOOD = json.dumps({"keys": [public_jwk(P256, kid="k1", alg="ES256")]}).encode()


async def assert_body_accepted_or_too_large(
    handler: Callable[[httpx.Request], httpx.Response], clock: Clock, accepted: bool
) -> None:
    """One refresh through ``handler``: it loads key k1, or fails as too large."""
    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        if accepted:
            await cache.refresh()
            assert cache.status().kids == ("k1",)
        else:
            with pytest.raises(KeySetError):
                await cache.refresh()
            assert cache.status().last_error == "too_large"


# -- Cache-Control and Retry-After (pure) ---------------------------------------------------


@pytest.mark.parametrize(
    "other",
    ["stale-while-revalidate=600", "stale-if-error=60", "s-maxage=60", "max-stale=60"],
)
def test_only_max_age_sets_freshness(other: str) -> None:
    # Other directives with a number (Auth0 sends stale-while-revalidate and
    # stale-if-error beside max-age) must not be read as a shorter max-age.
    directives = ["public", "max-age=7200", other]
    assert freshness_lifetime(directives, None, default=600, minimum=300, maximum=86400) == 7200


@pytest.mark.parametrize(
    "malformed",
    ["max-age=", "max-age", 'max-age="7200', 'max-age=7200"', 'max-age="', 'max-age=""'],
)
def test_a_malformed_max_age_makes_the_keys_stale(malformed: str) -> None:
    # An empty value or an unbalanced quote is not a number of seconds. RFC 9111
    # §4.2.1 encourages reading invalid freshness as stale: the minimum, not the
    # configured ttl (it was), and not a valid max-age beside it either.
    directives = ["public", malformed]
    assert freshness_lifetime(directives, None, default=600, minimum=300, maximum=86400) == 300
    directives = ["max-age=7200", malformed]
    assert freshness_lifetime(directives, None, default=600, minimum=300, maximum=86400) == 300


def test_a_max_age_of_too_many_digits_is_the_largest() -> None:
    # RFC 9111 §1.2.2: a delta-seconds too large to hold is 2**31; clamped to maximum.
    directives = ["max-age=9999999999999999"]
    assert freshness_lifetime(directives, None, default=600, minimum=300, maximum=86400) == 86400


SENT = "Sun, 29 Nov 2026 12:00:00 GMT"
SENT_AT = 1_795_953_600  # SENT as a timestamp


@pytest.mark.parametrize(
    ("expires", "date", "expected"),
    [
        ("Sun, 29 Nov 2026 14:00:00 GMT", SENT, 7200),  # Expires - Date
        ("Sun, 29 Nov 2026 12:00:30 GMT", SENT, 300),  # clamped up
        ("Thu, 01 Jan 2099 00:00:00 GMT", SENT, 86400),  # clamped down
        ("Thu, 01 Jan 1970 00:00:00 GMT", SENT, 300),  # long expired
        ("0", SENT, 300),  # invalid: already expired (RFC 9111 §5.3)
        ("Sun, 29 Nov 2026 14:00:00 GMT", None, 7200 - 600),  # no Date: from now
        ("Sun, 29 Nov 2026 14:00:00 GMT", "not a date", 7200 - 600),
    ],
)
def test_expires_sets_freshness_without_max_age(
    expires: str, date: str | None, expected: float
) -> None:
    now = SENT_AT + 600
    result = freshness_lifetime(
        ["public"],
        None,
        default=600,
        minimum=300,
        maximum=86400,
        expires=expires,
        date=date,
        now=now,
    )
    assert result == expected


def test_max_age_wins_over_expires_and_age_counts_against_both() -> None:
    kw: dict[str, Any] = {"default": 600, "minimum": 300, "maximum": 86400, "date": SENT}
    late = "Sun, 29 Nov 2026 14:00:00 GMT"
    assert freshness_lifetime(["max-age=3600"], None, expires=late, **kw) == 3600
    assert freshness_lifetime([], "1000", expires=late, **kw) == 6200
    assert freshness_lifetime(["no-store"], None, expires=late, **kw) == 300


def test_of_conflicting_max_ages_the_shorter_wins_in_any_order() -> None:
    for directives in (["max-age=4000", "max-age=7200"], ["max-age=7200", "max-age=4000"]):
        assert freshness_lifetime(directives, None, default=600, minimum=300, maximum=86400) == (
            4000
        )


def test_a_retry_after_date_without_a_real_zone_is_ignored() -> None:
    # "-0000" means "zone unknown" (RFC 5322 §3.3): no instant to count from.
    when = "Wed, 21 Oct 2015 07:28:00"
    assert parse_retry_after(f"{when} GMT", now=1445412480 - 60) == 60
    assert parse_retry_after(f"{when} -0000", now=1445412480 - 60) is None


# -- hooks and logging ----------------------------------------------------------------------


async def test_a_cache_without_a_hook_logs_no_hook_warnings(
    issuer: LocalIssuer, make: Factory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make()
    with caplog.at_level(logging.DEBUG, "asgi_auth0.jwks"):
        await cache.get_key(issuer.current_kid, "ES256")  # "refresh" event
        issuer.fail_with(500)
        clock.advance(601)
        await cache.get_key(issuer.current_kid, "ES256")  # "stale_served", "refresh_error"
    assert not [r for r in caplog.records if "hook" in r.getMessage()]
    assert cache.status().state == "stale"


async def test_hooks_are_told_how_long_past_freshness_a_stale_set_is_served(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    cache = make(ttl=600, on_event=lambda name, info: events.append((name, dict(info))))
    await cache.get_key(issuer.current_kid, "ES256")
    issuer.fail_with(500)
    clock.advance(600 + 42)
    await cache.get_key(issuer.current_kid, "ES256")
    stale = [info for name, info in events if name == "stale_served"]
    assert len(stale) == 1
    assert stale[0]["stale_for"] == 42
    assert stale[0]["last_error"] is None  # the failing refresh comes after


# -- what counts as a failed fetch --------------------------------------------------------


class Recorded(httpx.AsyncByteStream):
    """A body that counts the chunks the client pulled from it."""

    def __init__(self, data: bytes, size: int = 16384) -> None:
        self._data = data
        self._size = size
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), self._size):
            self.pulled += 1
            yield self._data[start : start + self._size]


async def test_a_declared_oversized_body_is_refused_before_it_is_read(clock: Clock) -> None:
    # Content-Length over 1 MiB: refused on the header, even if the bytes that
    # follow would have been a valid JWKS, and none of them is read.
    body = Recorded(GOOD)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body, headers={"Content-Length": str(2 * 1024 * 1024)})

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        with pytest.raises(KeySetError):
            await cache.refresh()
    assert cache.status().last_error == "too_large"
    assert body.pulled == 0


def padded_jwks(size: int) -> bytes:
    """A valid JWKS of exactly ``size`` bytes: only a size limit can refuse it."""
    head = GOOD[:-1] + b', "pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


@pytest.mark.parametrize(("size", "accepted"), [(ONE_MIB, True), (ONE_MIB + 1, False)])
async def test_a_body_already_in_memory_without_a_length_is_capped_at_one_mebibyte(
    clock: Clock, size: int, accepted: bool
) -> None:
    # A transport that hands back a response already read (as httpx.MockTransport
    # does) and no Content-Length to refuse it by: the cap is applied to the bytes.
    body = padded_jwks(size)
    assert len(body) == size
    assert json.loads(body)["keys"]

    def handler(request: httpx.Request) -> httpx.Response:
        response = httpx.Response(200, content=body)
        del response.headers["Content-Length"]
        return response

    await assert_body_accepted_or_too_large(handler, clock, accepted)


# Leaving the read loop (the only way to stop a stream that ignores close) abandons
# httpx's async generators, which trio reports when they are collected (see
# encode/httpx#3686 and _read_capped): expected here, and only here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_body_that_ignores_close_is_still_abandoned(clock: Clock) -> None:
    # The cache stops an oversized body by closing the response; a transport whose
    # stream ignores that keeps yielding, and the cache must stop reading anyway
    # (within another cap's worth), not drain it.
    chunk = b" " * 65536
    sent = 0

    class IgnoresClose(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            nonlocal sent
            while sent < 64 * ONE_MIB:  # a bound for the test, far past the cap
                sent += len(chunk)
                yield chunk

        async def aclose(self) -> None:
            pass  # ignored

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=IgnoresClose())  # no Content-Length

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        with pytest.raises(KeySetError):
            await cache.refresh()
    assert cache.status().last_error == "too_large"
    assert sent <= 2 * ONE_MIB + 2 * len(chunk)
    gc.collect()  # the abandoned generators are reported within this test


@pytest.mark.parametrize(("size", "accepted"), [(ONE_MIB, True), (ONE_MIB + 1, False)])
async def test_a_gzip_body_is_capped_at_one_mebibyte_decoded(
    clock: Clock, size: int, accepted: bool
) -> None:
    compressed = gzip.compress(padded_jwks(size))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, stream=Recorded(compressed), headers={"Content-Encoding": "gzip"}
        )

    await assert_body_accepted_or_too_large(handler, clock, accepted)


@pytest.mark.parametrize(
    ("error", "reason"), [(httpx.ReadError, "connection_error"), (httpx.ReadTimeout, "timeout")]
)
async def test_a_body_cut_off_by_a_transport_error_fails_with_that_error(
    clock: Clock, error: type[httpx.TransportError], reason: str
) -> None:
    # The bytes read before the error are not parsed as if they were the whole body.
    def handler(request: httpx.Request) -> httpx.Response:
        class CutOff(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                yield GOOD[:20]
                raise error("connection lost", request=request)

        return httpx.Response(200, stream=CutOff())

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        with pytest.raises(KeySetError):
            await cache.refresh()
    assert cache.status().last_error == reason


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress"])
async def test_only_gzip_and_deflate_are_decoded(clock: Clock, encoding: str) -> None:
    # A body in an encoding we did not ask for is refused before it is read, even
    # when it happens to be gzip data that the gzip decoder would have accepted.
    body = Recorded(gzip.compress(GOOD))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body, headers={"Content-Encoding": encoding})

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        with pytest.raises(KeySetError):
            await cache.refresh()
    assert cache.status().last_error == "bad_encoding"
    assert body.pulled == 0


# A bad gzip header, and a good header followed by an invalid deflate block. mtime=0:
# the bytes name the test, and each pytest-xdist worker must collect the same names
# (the header's default mtime is the second the module was imported).
CORRUPT_GZIP = [b"this is not gzip data", gzip.compress(GOOD, mtime=0)[:10] + b"\xff\xff\xff\xff"]


@pytest.mark.parametrize("corrupt", CORRUPT_GZIP)
async def test_a_corrupt_gzip_body_is_reported_as_bad_encoding(
    clock: Clock, corrupt: bytes
) -> None:
    # The reason says what went wrong (the encoding), not what a parser of the few
    # bytes decoded before the error would say (invalid JSON).
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Recorded(corrupt), headers={"Content-Encoding": "gzip"})

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        with pytest.raises(KeySetError):
            await cache.refresh()
    assert cache.status().last_error == "bad_encoding"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (204, "http_status"),
        (300, "redirect"),
        (399, "redirect"),
        (400, "http_status"),
        (500, "http_status"),
    ],
)
async def test_only_3xx_answers_are_reported_as_redirects(
    issuer: LocalIssuer, make: Factory, status: int, reason: str
) -> None:
    issuer.fail_with(status)
    cache = make()
    with pytest.raises(KeySetError):
        await cache.refresh()
    assert cache.status().last_error == reason


@pytest.mark.parametrize(
    ("status", "falls_back"),
    [(302, False), (400, True), (404, True), (410, True), (429, False), (499, True), (500, False)],
)
async def test_discovery_falls_back_to_rfc8414_only_on_a_4xx_but_429(
    issuer: LocalIssuer, make: Factory, status: int, falls_back: bool
) -> None:
    # "No such document" (a 4xx) means try the OAuth metadata; a redirect, a rate
    # limit or a server error is the issuer failing, and is not answered with more load.
    issuer.fail_with(status, paths=DISCOVERY_PATH)
    cache = make(None, issuer=ISSUER)
    if falls_back:
        await cache.refresh()
    else:
        with pytest.raises(KeySetError):
            await cache.refresh()
    assert issuer.requests[OAUTH_METADATA_PATH] == (1 if falls_back else 0)


# -- Retry-After of KeySetError ------------------------------------------------------------


async def test_retry_after_is_the_minimum_backoff_once_the_backoff_has_passed(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    # Within the unknown-kid cooldown but past the backoff, no retry is scheduled:
    # the 503's Retry-After is then the minimum backoff step (5 s), not the 1 s floor
    # that a stale, negative "time until the next attempt" would clamp to.
    cache = make(refresh_cooldown=30)
    await cache.refresh()
    issuer.fail_with(500)
    clock.advance(31)
    with pytest.raises(KeySetError) as caught:
        await cache.get_key("rotated-in", "ES256")  # fetch fails: backoff 5 s
    assert caught.value.retry_after == 5
    clock.advance(10)  # backoff over, cooldown (30 s) not
    with pytest.raises(KeySetError) as caught:
        await cache.get_key("rotated-in", "ES256")
    assert caught.value.retry_after == 5
    assert issuer.jwks_requests == 2  # no fetch within the cooldown


# -- the background runner ------------------------------------------------------------------


async def test_status_with_a_runner_says_when_it_refreshes_ahead(
    issuer: LocalIssuer, make: Factory
) -> None:
    cache = make(ttl=600)
    async with cache.running():
        await anyio.wait_all_tasks_blocked()  # the startup load is done
        status = cache.status()
        assert (status.state, status.background) == ("fresh", True)
        assert status.next_refresh_in == 480  # 80% of freshness: the runner's refresh
    assert cache.status().next_refresh_in == 600  # no runner: due once stale


# -- the cache's own HTTP client ------------------------------------------------------------


async def test_aclose_closes_the_client_the_cache_made() -> None:
    async with LocalIssuer(private_key=P256) as real:
        cache = JWKSCache(real.jwks_uri)  # no http_client: the cache makes one
        await cache.refresh()
        made = cache._client
        assert made is not None
        await cache.aclose()
        assert made.is_closed
        await cache.refresh()  # still usable: a new client
        assert cache._client is not made
        await cache.aclose()
        assert real.jwks_requests == 2


async def test_a_fetch_handed_to_a_runner_that_stops_is_released_and_forgotten(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    # A request hands the runner a fetch (unknown kid) and the runner is cancelled
    # before it starts it. The request must get its 503 at once, and the abandoned
    # fetch must not stay "under way": later requests fetch inline as usual.
    cache = make()
    failed: list[KeySetError] = []

    async def call() -> None:
        inner.cancel_scope.cancel()  # the runner stops at its next checkpoint ...
        with anyio.fail_after(3):  # (the waiters' own bound is fetch_timeout + 1 s)
            try:
                await cache.get_key("rotated-in", "ES256")  # ... after this hand-over
            except KeySetError as exc:
                failed.append(exc)

    async with anyio.create_task_group() as outer, anyio.create_task_group() as inner:
        await inner.start(cache.run)
        await anyio.wait_all_tasks_blocked()  # the startup load is done
        outer.start_soon(call)
    assert len(failed) == 1
    assert not cache.status().background
    new = issuer.rotate()
    clock.advance(31)  # past the unknown-kid cooldown
    with anyio.fail_after(3):
        assert (await cache.get_key(new, "ES256")).kid == new
    assert issuer.jwks_requests == 2  # the startup load and this one


async def test_a_runner_started_during_an_inline_fetch_joins_it(
    issuer: LocalIssuer, make: Factory
) -> None:
    # Single flight across the hand-over: the runner waits for the fetch a request
    # began before it started, instead of starting a second one beside it.
    cache = make()
    issuer.hold()
    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.get_key, issuer.current_kid, "ES256")  # inline load, held
        await issuer.wait_for_waiting_async(1)
        async with cache.running():
            await anyio.wait_all_tasks_blocked()
            issuer.release()
            with anyio.fail_after(5):
                while cache.status().state != "fresh":
                    await anyio.wait_all_tasks_blocked()
            await anyio.wait_all_tasks_blocked()
            assert issuer.jwks_requests == 1
            assert cache.generation == 1


async def test_a_request_wakes_the_runner_exactly_when_a_refresh_is_due(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    # The runner sleeps on the event loop's clock; the cache's clock is this test's,
    # so only a request that finds a refresh due wakes it: at 80% of freshness to
    # the second, and at the end of a backoff to the second.
    cache = make(ttl=600)
    kid = issuer.current_kid
    async with cache.running():
        await anyio.wait_all_tasks_blocked()
        assert issuer.jwks_requests == 1
        issuer.fail_with(500)
        clock.advance(480)  # exactly 80% of 600
        await cache.get_key(kid, "ES256")
        await anyio.wait_all_tasks_blocked()
        assert issuer.jwks_requests == 2  # the runner's refresh, failed: back off 5 s
        clock.advance(5)  # exactly the end of the backoff
        await cache.get_key(kid, "ES256")
        await anyio.wait_all_tasks_blocked()
        assert issuer.jwks_requests == 3


async def test_a_set_is_stale_from_the_instant_freshness_ends(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(ttl=600)
    await cache.refresh()
    clock.advance(599)
    assert cache.status().state == "fresh"
    clock.advance(1)  # the instant get_key stops treating it as fresh
    assert cache.status().state == "stale"


# -- status counters and discovery ------------------------------------------------------------


async def test_status_of_an_empty_cache_has_no_keys(make: Factory) -> None:
    status = make().status()
    assert (status.state, status.key_count, status.kids) == ("empty", 0, ())
    assert (status.last_success_age, status.last_error, status.next_refresh_in) == (None, None, 0)


async def test_status_counts_every_failed_fetch(issuer: LocalIssuer, make: Factory) -> None:
    cache = make()
    issuer.fail_with(500)
    for _ in range(2):
        with pytest.raises(KeySetError):
            await cache.refresh()
    issuer.heal()
    await cache.refresh()
    status = cache.status()
    assert (status.fetch_count, status.failed_fetch_count) == (3, 2)
    assert status.consecutive_failures == 0


@pytest.mark.parametrize("document", [b"[]", b'"https://issuer.test/"', b"null"])
async def test_a_discovery_document_that_is_not_an_object_is_bad_discovery(
    issuer: LocalIssuer, make: Factory, caplog: pytest.LogCaptureFixture, document: bytes
) -> None:
    issuer.garbage(document, paths=DISCOVERY_PATH)
    cache = make(None, issuer=ISSUER)
    with caplog.at_level(logging.ERROR, "asgi_auth0.jwks"), pytest.raises(KeySetError):
        await cache.get_key(issuer.current_kid, "ES256")
    assert cache.status().last_error == "bad_discovery"
    assert not caplog.records  # a bad document, not an unexpected error with a traceback
    assert issuer.jwks_requests == 0


async def test_a_failing_jwks_url_found_by_discovery_is_looked_up_again(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    # The issuer may have moved its keys: after a failed JWKS fetch the next fetch
    # reads the discovery document again instead of retrying a dead URL forever.
    cache = make(None, issuer=ISSUER, ttl=600)
    await cache.get_key(issuer.current_kid, "ES256")
    assert (issuer.requests[DISCOVERY_PATH], issuer.jwks_requests) == (1, 1)
    issuer.fail_with(500)
    clock.advance(601)
    await cache.get_key(issuer.current_kid, "ES256")  # stale: refresh fails, key served
    assert (issuer.requests[DISCOVERY_PATH], issuer.jwks_requests) == (1, 2)
    issuer.heal()
    clock.advance(5)  # past the backoff
    await cache.get_key(issuer.current_kid, "ES256")
    assert (issuer.requests[DISCOVERY_PATH], issuer.jwks_requests) == (2, 3)
    assert cache.status().state == "fresh"


@pytest.mark.parametrize(
    ("configured", "hint"),
    [("https://issuer.test", True), ("https://elsewhere.test/", False)],
)
async def test_an_issuer_mismatch_mentions_the_slash_only_when_that_is_the_difference(
    issuer: LocalIssuer, make: Factory, configured: str, hint: bool
) -> None:
    cache = make(None, issuer=configured)  # the document names "https://issuer.test/"
    with pytest.raises(KeySetError) as caught:
        await cache.refresh()
    assert cache.status().last_error == "issuer_mismatch"
    assert ("trailing slash" in str(caught.value.__cause__)) is hint


# -- transport errors, Retry-After ----------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (httpx.ConnectError, "connection_error"),
        (httpx.RemoteProtocolError, "connection_error"),
        (httpx.ReadTimeout, "timeout"),
        (httpx.ConnectTimeout, "timeout"),
        (httpx.UnsupportedProtocol, "http_error"),
        (httpx.DecodingError, "http_error"),
    ],
)
async def test_each_transport_error_has_its_reason(
    clock: Clock, caplog: pytest.LogCaptureFixture, error: type[httpx.HTTPError], reason: str
) -> None:
    # A known client error is a plain fetch failure with its own reason, never the
    # "unexpected" one that logs a traceback at ERROR.
    def handler(request: httpx.Request) -> httpx.Response:
        if issubclass(error, httpx.RequestError):
            raise error("boom", request=request)
        raise error("boom")

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        with caplog.at_level(logging.ERROR, "asgi_auth0.jwks"), pytest.raises(KeySetError):
            await cache.refresh()
    assert cache.status().last_error == reason
    assert not caplog.records


async def test_a_retry_after_http_date_from_the_issuer_sets_the_backoff(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    issuer.fail_with(503, retry_after=email.utils.formatdate(time.time() + 120, usegmt=True))
    cache = make()
    with pytest.raises(KeySetError) as caught:
        await cache.refresh()
    assert cache.status().last_error == "http_status"
    assert 110 <= caught.value.retry_after <= 120  # the date, less the seconds it took


async def test_retry_after_counts_down_the_remaining_backoff(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    issuer.fail_with(500)
    cache = make()
    seen = []
    for _ in range(5):
        with pytest.raises(KeySetError) as caught:
            await cache.get_key(issuer.current_kid, "ES256")
        seen.append(caught.value.retry_after)
        clock.advance(1)
    assert seen == [5, 4, 3, 2, 1]
    assert issuer.jwks_requests == 1


# -- several issuers --------------------------------------------------------------------------


async def test_refreshing_several_issuers_raises_if_any_failed(clock: Clock) -> None:
    a = LocalIssuer(issuer="https://a.test/", private_key=P256)
    b = LocalIssuer(issuer="https://b.test/", private_key=P256)
    b.fail_with(500)
    mounts = {
        "all://a.test": httpx.ASGITransport(app=a.asgi_app),
        "all://b.test": httpx.ASGITransport(app=b.asgi_app),
    }
    async with httpx.AsyncClient(mounts=mounts) as client:
        sets = IssuerKeySets(
            {
                "https://a.test/": JWKSCache(a.jwks_uri, http_client=client, clock=clock),
                "https://b.test/": JWKSCache(b.jwks_uri, http_client=client, clock=clock),
            }
        )
        with pytest.raises(KeySetError):
            await sets.refresh()
        states = {iss: s.state for iss, s in sets.status().items()}
        assert states == {"https://a.test/": "fresh", "https://b.test/": "failing"}
        b.heal()
        await sets.refresh()
    a.close()
    b.close()
