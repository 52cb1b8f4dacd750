"""JWKSCache unit tests: caching policy, fault handling, single flight, hooks, status.

The issuer is :class:`LocalIssuer` served in-process through ``httpx.ASGITransport``
(real documents, counters and misbehaviours, no sockets); ``MockTransport`` appears
only for fault shapes no real server produces cheaply (a connect error on the first
attempt only, a redirect, an endless or compressed body). Time is an injected clock;
races are driven with events and ``wait_all_tasks_blocked``, never sleeps.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import tracemalloc
from collections.abc import AsyncIterator
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
from hypothesis import given
from hypothesis import strategies as st

from asgi_auth0 import (
    AlgorithmNotAllowedError,
    Auth0Config,
    ConfigError,
    InvalidIssuerError,
    InvalidTokenError,
    KeySetError,
    TokenVerifier,
    UnknownKeyError,
)
from asgi_auth0._jwks import (
    NOT_VOUCHED,
    IssuerKeySets,
    JWKSCache,
    _rfc8414_url,
    freshness_lifetime,
    key_source_for_config,
    parse_retry_after,
)
from asgi_auth0._signing import generate_private_key, public_jwk
from asgi_auth0.testing import DISCOVERY_PATH, OAUTH_METADATA_PATH, LocalIssuer

pytestmark = pytest.mark.anyio


class Chunked(httpx.AsyncByteStream):
    """A body delivered in chunks, as from a socket (not preloaded like ``content=``)."""

    def __init__(self, data: bytes, size: int = 65536) -> None:
        self._data = data
        self._size = size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), self._size):
            yield self._data[start : start + self._size]


def jwks_body(*jwks: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"keys": list(jwks), **extra}).encode()


# -- construction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "http://issuer.example.com/.well-known/jwks.json",
        "ftp://issuer.example.com/jwks",
        "https://user:pw@issuer.example.com/jwks",
        "not a url",
        "",
    ],
)
def test_refuses_a_jwks_uri_that_is_not_https_at_construction(uri: str) -> None:
    with pytest.raises(ConfigError):
        JWKSCache(uri)


def test_refuses_an_http_issuer_for_discovery_off_loopback() -> None:
    with pytest.raises(ConfigError):
        JWKSCache(None, issuer="http://issuer.example.com/")


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:8080/.well-known/jwks.json",
        "http://localhost/jwks",
        "http://[::1]:9000/jwks",
        "https://issuer.example.com/.well-known/jwks.json",
    ],
)
def test_accepts_https_and_plain_http_on_loopback(uri: str) -> None:
    assert JWKSCache(uri).jwks_uri == uri


@pytest.mark.parametrize(
    "options",
    [
        {"ttl": 0},
        {"ttl": math.nan},
        {"fetch_timeout": 0},
        {"fetch_timeout": "5"},
        {"refresh_cooldown": -1},
        {"max_stale": math.inf},
        {"min_ttl": 600, "max_ttl": 300},
        {"backoff_min": 10, "backoff_max": 5},
        {"refresh_ahead": 0},
        {"refresh_ahead": 1.5},
        {"negative_cache_size": -1},
        {"negative_cache_size": True},
        {"http_client": object()},
    ],
)
def test_invalid_settings_raise_config_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        JWKSCache(JWKS_URI, **options)


def test_needs_a_jwks_uri_or_an_issuer() -> None:
    with pytest.raises(ConfigError):
        JWKSCache(None)


async def test_construction_does_no_network_io(issuer: LocalIssuer, make: Factory) -> None:
    cache = make()
    assert issuer.total_requests == 0
    status = cache.status()
    assert (status.state, status.fetch_count, status.generation) == ("empty", 0, 0)


# -- freshness rules (pure) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("directives", "age", "expected"),
    [
        ([], None, 600),  # no Cache-Control: the configured ttl, unclamped
        (["public"], None, 600),
        (["max-age=3600"], None, 3600),
        (["public", "max-age=3600"], "600", 3000),  # Age counts against max-age
        (["max-age=15", "stale-while-revalidate=15"], None, 300),  # Auth0-like: clamped up
        (["max-age=9999999"], None, 86400),  # clamped down
        (['max-age="7200"'], None, 7200),
        (["MAX-AGE=7200"], None, 7200),
        (["max-age=7200", "max-age=4000"], None, 4000),  # conflicting: the shorter
        (["no-store"], None, 300),
        (["max-age=7200", "no-cache"], None, 300),
        (['no-cache="set-cookie"'], None, 300),
        (["max-age=-5"], None, 300),  # an unreadable max-age: stale (RFC 9111 §4.2.1)
        (["max-age=abc"], None, 300),
        (["max-age=१२३"], None, 300),  # non-ASCII digits are not digits here
    ],
)
def test_freshness_follows_cache_control_within_bounds(
    directives: list[str], age: str | None, expected: float
) -> None:
    assert freshness_lifetime(directives, age, default=600, minimum=300, maximum=86400) == expected


@given(st.lists(st.text(max_size=30), max_size=5), st.one_of(st.none(), st.text(max_size=12)))
def test_freshness_never_fails_and_stays_in_bounds(directives: list[str], age: str | None) -> None:
    result = freshness_lifetime(directives, age, default=600, minimum=300, maximum=86400)
    assert 300 <= result <= 86400


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after(" 7 ") == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 + 60) == 0
    for bad in (None, "", "soon", "-5", "1e9", "Wed, 99 Foo 2015"):
        assert parse_retry_after(bad) is None


def test_rfc8414_metadata_url_puts_the_well_known_segment_before_the_path() -> None:
    assert (
        _rfc8414_url("https://a.test/") == "https://a.test/.well-known/oauth-authorization-server"
    )
    assert (
        _rfc8414_url("https://a.test/tenant/x")
        == "https://a.test/.well-known/oauth-authorization-server/tenant/x"
    )


# -- fetching and the fast path ---------------------------------------------------------------


async def test_fetches_once_then_serves_known_kids_from_memory(
    issuer: LocalIssuer, make: Factory
) -> None:
    cache = make()
    key = await cache.get_key(issuer.current_kid, "ES256")
    again = await cache.get_key(issuer.current_kid, "ES256")
    assert key is again
    assert key.kid == issuer.current_kid
    assert issuer.jwks_requests == 1
    assert cache.generation == 1


async def test_keys_are_filtered_through_jwk_parsing(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    good = public_jwk(P256, kid="good", alg="ES256")
    unusable = [
        {**public_jwk(P256, kid="enc"), "use": "enc"},
        {**public_jwk(P256, kid="wrap"), "key_ops": ["wrapKey"]},
        {**public_jwk(P256, kid="private"), "d": "AAAA"},
        {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
        public_jwk(generate_private_key("RSA", rsa_bits=1024), kid="small"),
        {"kty": "XYZ", "kid": "alien"},
    ]
    issuer.garbage(jwks_body(good, *unusable))
    cache = make(refresh_cooldown=0, negative_ttl=0)
    assert (await cache.get_key("good", "ES256")).kid == "good"
    for jwk in unusable:
        with pytest.raises(UnknownKeyError):
            await cache.get_key(jwk["kid"], "ES256")
    assert cache.status().kids == ("good",)


async def test_a_key_refuses_an_algorithm_that_does_not_fit_it(
    issuer: LocalIssuer, make: Factory
) -> None:
    cache = make()
    with pytest.raises(AlgorithmNotAllowedError):
        await cache.get_key(issuer.current_kid, "ES384")  # P-256 key
    with pytest.raises(AlgorithmNotAllowedError):
        await cache.get_key(issuer.current_kid, "RS256")


async def test_an_algorithm_outside_the_allow_list_is_refused_before_any_fetch(
    issuer: LocalIssuer, make: Factory
) -> None:
    cache = make(algorithms=["RS256"])
    with pytest.raises(AlgorithmNotAllowedError):
        await cache.get_key(issuer.current_kid, "ES256")
    assert issuer.total_requests == 0


async def test_a_kid_no_key_set_could_hold_never_causes_a_fetch(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(refresh_cooldown=0)
    await cache.refresh()
    with pytest.raises(UnknownKeyError):
        await cache.get_key("k" * 300, "ES256")
    assert issuer.jwks_requests == 1


async def test_a_kid_of_the_longest_allowed_length_is_fetched_for(clock: Clock) -> None:
    # 256 characters is the longest kid a key set may hold, so such a kid is looked up
    # (here on the very first token, which loads the set); 257 never causes a fetch.
    longest = "k" * 256
    issuer = LocalIssuer(issuer=ISSUER, private_key=P256, kid=longest)
    transport = httpx.ASGITransport(app=issuer.asgi_app)
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            cache = JWKSCache(JWKS_URI, http_client=client, clock=clock, refresh_cooldown=0)
            assert (await cache.get_key(longest, "ES256")).kid == longest
            with pytest.raises(UnknownKeyError):
                await cache.get_key(longest + "k", "ES256")
            assert issuer.jwks_requests == 1
    finally:
        issuer.close()


# -- what counts as a failed fetch -------------------------------------------------------------


def valid_jwks_with(**extra: str) -> bytes:
    """The issuer's real JWKS text with raw members appended (to inject non-JSON)."""
    text = json.dumps({"keys": [public_jwk(P256, kid="k1", alg="ES256")]})
    return (text[:-1] + "".join(f', "{k}": {v}' for k, v in extra.items()) + "}").encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>maintenance</html>", "invalid_json"),
        (b"", "invalid_json"),
        (valid_jwks_with(x="NaN"), "invalid_json"),
        (valid_jwks_with(x="Infinity"), "invalid_json"),
        (valid_jwks_with(x="-Infinity"), "invalid_json"),
        (valid_jwks_with(x='"\xff"').replace(b"\xc3\xbf", b"\xff"), "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),  # too deep for the parser
        (b"[]", "not_a_jwks"),
        (b'{"keys": 1}', "not_a_jwks"),
        (b'{"kids": []}', "not_a_jwks"),
        (b'{"keys": []}', "no_usable_keys"),
        (jwks_body({"kty": "oct", "k": "c2VjcmV0"}), "no_usable_keys"),
    ],
)
async def test_a_body_that_is_not_a_usable_jwks_is_a_fetch_failure(
    issuer: LocalIssuer, make: Factory, body: bytes, reason: str
) -> None:
    issuer.garbage(body)
    cache = make()
    with pytest.raises(KeySetError) as caught:
        await cache.get_key("k1", "ES256")
    assert not isinstance(caught.value, InvalidTokenError)
    status = cache.status()
    assert (status.state, status.last_error) == ("failing", reason)


async def test_a_jwks_with_no_usable_key_says_why_each_was_refused(
    issuer: LocalIssuer, make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    # "no usable signing key" alone does not say what to fix at the issuer.
    enc = {**public_jwk(P256, kid="enc-key"), "use": "enc"}
    secret = {"kty": "oct", "k": "c2VjcmV0", "kid": "k\nforged"}
    issuer.garbage(jwks_body(enc, secret))
    with caplog.at_level(logging.WARNING, "asgi_auth0.jwks"), pytest.raises(KeySetError):
        await make().get_key("enc-key", "ES256")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "no_usable_keys" in logged
    assert "key #0 (kid 'enc-key'): use is not 'sig'" in logged
    assert "key #1 (kid 'k\\nforged'): " in logged  # escaped: no forged log line


async def test_a_skipped_key_is_logged_with_its_kid_and_reason_when_the_set_changes(
    issuer: LocalIssuer, make: Factory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # Keycloak publishes an encryption key beside its signing keys on every fetch:
    # said once at INFO with the set it came with, not again on each refresh.
    enc = {**public_jwk(generate_private_key("P-256"), kid="enc-key"), "use": "enc"}
    issuer.garbage(jwks_body(*issuer.jwks["keys"], enc))
    cache = make(ttl=600)
    caplog.set_level(logging.DEBUG, "asgi_auth0.jwks")
    assert (await cache.get_key(issuer.current_kid, "ES256")).kid == issuer.current_kid
    clock.advance(601)
    await cache.refresh()  # the same set again
    skipped = [r for r in caplog.records if "skipping unusable" in r.getMessage()]
    assert [r.levelno for r in skipped] == [logging.INFO, logging.DEBUG]
    assert "key #1 (kid 'enc-key'): use is not 'sig'" in skipped[0].getMessage()
    assert all(r.__dict__["reason"] == "key_skipped" for r in skipped)


def test_the_strict_json_bodies_above_are_otherwise_valid() -> None:
    # Guards the NaN/Infinity cases: without strict parsing they would load.
    assert "keys" in json.loads(valid_jwks_with(x="NaN"))


@pytest.mark.parametrize("status", [201, 204, 304, 400, 401, 403, 404, 429, 500, 502, 503])
async def test_any_status_but_200_is_a_fetch_failure(
    issuer: LocalIssuer, make: Factory, status: int
) -> None:
    issuer.fail_with(status)
    cache = make()
    with pytest.raises(KeySetError):
        await cache.get_key(issuer.current_kid, "ES256")
    assert issuer.jwks_requests == 1  # an HTTP status is an answer: not retried


async def test_a_non_200_with_a_valid_jwks_body_is_still_refused(
    issuer: LocalIssuer, make: Factory
) -> None:
    issuer.garbage(json.dumps(issuer.jwks).encode(), status=203)
    with pytest.raises(KeySetError):
        await make().get_key(issuer.current_kid, "ES256")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_never_followed(status: int, clock: Clock) -> None:
    seen: list[str] = []
    good = jwks_body(public_jwk(P256, kid="k1", alg="ES256"))

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/elsewhere":
            return httpx.Response(200, content=good)
        return httpx.Response(status, headers={"Location": "https://issuer.test/elsewhere"})

    # Even a client configured to follow redirects must not follow them for keys.
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), follow_redirects=True
    ) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        with pytest.raises(KeySetError):
            await cache.get_key("k1", "ES256")
    assert seen == ["/.well-known/jwks.json"]
    assert cache.status().last_error == "redirect"


async def test_a_body_of_exactly_one_mebibyte_is_accepted(
    issuer: LocalIssuer, make: Factory
) -> None:
    issuer.oversized(ONE_MIB)
    assert (await make().get_key(issuer.current_kid, "ES256")).kid == issuer.current_kid


@pytest.mark.parametrize("content_length", [True, False])
async def test_a_body_over_one_mebibyte_is_a_fetch_failure(
    issuer: LocalIssuer, make: Factory, content_length: bool
) -> None:
    issuer.oversized(ONE_MIB + 1, content_length=content_length)
    cache = make()
    with pytest.raises(KeySetError):
        await cache.get_key(issuer.current_kid, "ES256")
    assert cache.status().last_error == "too_large"


async def test_an_endless_body_is_abandoned_after_the_cap(clock: Clock) -> None:
    sent = 0
    chunk = b" " * 65536

    class Endless(httpx.AsyncByteStream):
        """A body that never ends until the client closes the connection."""

        closed = False

        async def __aiter__(self) -> AsyncIterator[bytes]:
            nonlocal sent
            while not self.closed:
                sent += len(chunk)
                yield chunk

        async def aclose(self) -> None:
            self.closed = True

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Endless())  # no Content-Length

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        with pytest.raises(KeySetError):
            await cache.get_key("k1", "ES256")
    assert cache.status().last_error == "too_large"
    assert sent <= ONE_MIB + 2 * len(chunk)


async def test_a_compressed_body_is_capped_after_decompression(clock: Clock) -> None:
    bomb = gzip.compress(b"[" + b" " * (20 * ONE_MIB) + b"]")
    good = gzip.compress(jwks_body(public_jwk(P256, kid="k1", alg="ES256")))
    bodies = [bomb, good]

    def handler(request: httpx.Request) -> httpx.Response:
        body = Chunked(bodies.pop(0))
        return httpx.Response(200, stream=body, headers={"Content-Encoding": "gzip"})

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        assert len(bomb) < ONE_MIB
        tracemalloc.start()
        try:
            with pytest.raises(KeySetError):
                await cache.refresh()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert cache.status().last_error == "too_large"
        # Decompression output is bounded as it is produced, not only checked after:
        # the 20 MiB expansion never sits in memory.
        assert peak < 8 * ONE_MIB
        await cache.refresh()  # a small gzip body is fine
        assert (await cache.get_key("k1", "ES256")).kid == "k1"


@pytest.mark.parametrize("cut", [0.5, 0.9])
async def test_a_compressed_body_cut_short_is_a_bad_encoding(clock: Clock, cut: float) -> None:
    # A gzip stream that ends early decodes without error, just incompletely: the
    # reason is the encoding, not the half document's JSON.
    whole = gzip.compress(jwks_body(public_jwk(P256, kid="k1", alg="ES256")))
    short = whole[: int(len(whole) * cut)]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Chunked(short), headers={"Content-Encoding": "gzip"})

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        with pytest.raises(KeySetError):
            await cache.refresh()
    assert cache.status().last_error == "bad_encoding"


async def test_an_unknown_content_encoding_is_a_fetch_failure(clock: Clock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Chunked(b"\x00\x01"), headers={"Content-Encoding": "br"})

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        with pytest.raises(KeySetError):
            await cache.refresh()
    assert cache.status().last_error == "bad_encoding"


# -- retries and deadlines ---------------------------------------------------------------------


async def test_one_quick_retry_after_a_connection_error(clock: Clock) -> None:
    calls = 0
    good = jwks_body(public_jwk(P256, kid="k1", alg="ES256"))

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, content=good)

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        assert (await cache.get_key("k1", "ES256")).kid == "k1"
    assert calls == 2
    assert cache.status().failed_fetch_count == 0


@pytest.mark.parametrize(
    ("error", "calls_expected"),
    [
        (httpx.ConnectError, 2),  # retried once, then a failure
        (httpx.RemoteProtocolError, 2),
        (httpx.ReadTimeout, 1),  # timeouts are not retried
        (httpx.UnsupportedProtocol, 1),
    ],
)
async def test_transport_errors_are_fetch_failures(
    clock: Clock, error: type[httpx.RequestError], calls_expected: int
) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise error("boom", request=request)

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        with pytest.raises(KeySetError):
            await cache.get_key("k1", "ES256")
    assert calls == calls_expected


async def test_an_unexpected_exception_never_escapes(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug in someone's transport")

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        with caplog.at_level(logging.ERROR, "asgi_auth0.jwks"), pytest.raises(KeySetError):
            await cache.get_key("k1", "ES256")
    assert cache.status().last_error == "unexpected"


async def test_fetch_timeout_bounds_the_whole_fetch_including_the_body(clock: Clock) -> None:
    class Stalls(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b'{"keys": ['
            await anyio.sleep_forever()
            yield b""  # pragma: no cover

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Stalls())

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock, fetch_timeout=0.2)
        with anyio.fail_after(5):  # a regression hangs: make it fail instead
            with pytest.raises(KeySetError):
                await cache.get_key("k1", "ES256")
    assert cache.status().last_error == "timeout"


# -- TTL and Cache-Control ---------------------------------------------------------------------


async def test_a_fresh_set_is_not_refetched_and_a_stale_one_is(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(ttl=600)
    kid = issuer.current_kid
    await cache.get_key(kid, "ES256")
    clock.advance(599)
    await cache.get_key(kid, "ES256")
    assert issuer.jwks_requests == 1
    clock.advance(2)
    await cache.get_key(kid, "ES256")
    assert issuer.jwks_requests == 2
    await cache.get_key(kid, "ES256")
    assert issuer.jwks_requests == 2


@pytest.mark.parametrize(
    ("header", "fresh_for"),
    [
        ("public, max-age=3600", 3600),
        ("max-age=15, stale-while-revalidate=15", 300),  # clamped up to 5 min
        ("max-age=31536000", 86400),  # clamped down to 24 h
        ("no-store", 300),
        ("no-cache", 300),
    ],
)
async def test_cache_control_sets_freshness_within_bounds(
    issuer: LocalIssuer, make: Factory, clock: Clock, header: str, fresh_for: float
) -> None:
    issuer.cache_control(header)
    cache = make(ttl=600)
    kid = issuer.current_kid
    await cache.get_key(kid, "ES256")
    assert cache.status().next_refresh_in == fresh_for
    clock.advance(fresh_for - 1)
    await cache.get_key(kid, "ES256")
    assert issuer.jwks_requests == 1
    clock.advance(2)
    await cache.get_key(kid, "ES256")
    assert issuer.jwks_requests == 2


async def test_no_cache_never_means_a_fetch_per_request(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    issuer.cache_control("no-cache, no-store")
    cache = make()
    for _ in range(50):
        await cache.get_key(issuer.current_kid, "ES256")
        clock.advance(1)
    assert issuer.jwks_requests == 1


async def test_without_a_runner_nothing_is_fetched_early(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(ttl=600)
    await cache.get_key(issuer.current_kid, "ES256")
    clock.advance(590)  # past the 80% refresh-ahead point, still fresh
    await cache.get_key(issuer.current_kid, "ES256")
    assert issuer.jwks_requests == 1


# -- unknown kids: cooldown and negative cache -------------------------------------------------


async def test_an_unknown_kid_refreshes_at_most_once_per_cooldown(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(refresh_cooldown=30)
    await cache.refresh()
    clock.advance(31)
    with pytest.raises(UnknownKeyError):
        await cache.get_key("new-1", "ES256")  # refreshes, still unknown
    assert issuer.jwks_requests == 2
    clock.advance(29)
    with pytest.raises(UnknownKeyError):
        await cache.get_key("new-2", "ES256")  # within the cooldown: no fetch
    assert issuer.jwks_requests == 2
    clock.advance(2)
    with pytest.raises(UnknownKeyError):
        await cache.get_key("new-3", "ES256")
    assert issuer.jwks_requests == 3


async def test_a_rotated_in_key_is_found_by_one_refresh(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make()
    old = issuer.current_kid
    await cache.get_key(old, "ES256")
    new = issuer.rotate()
    clock.advance(31)
    assert (await cache.get_key(new, "ES256")).kid == new
    assert (await cache.get_key(old, "ES256")).kid == old  # kept in the JWKS
    assert issuer.jwks_requests == 2
    assert cache.generation == 2


async def test_a_random_kid_flood_costs_one_fetch_per_cooldown(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(refresh_cooldown=30)
    await cache.refresh()
    clock.advance(31)
    for i in range(1000):  # 1000 requests over 10 s
        with pytest.raises(UnknownKeyError):
            await cache.get_key(f"random-{i}", "ES256")
        clock.advance(0.01)
    assert issuer.jwks_requests == 2
    clock.advance(21)  # a new cooldown window
    for i in range(100):
        with pytest.raises(UnknownKeyError):
            await cache.get_key(f"more-{i}", "ES256")
    assert issuer.jwks_requests == 3
    assert (await cache.get_key(issuer.current_kid, "ES256")).kid == issuer.current_kid


async def test_a_kid_found_absent_is_not_fetched_for_again(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(refresh_cooldown=30, negative_ttl=300)
    await cache.refresh()
    clock.advance(31)
    for _ in range(10):
        with pytest.raises(UnknownKeyError):
            await cache.get_key("garbage", "ES256")
        clock.advance(31)  # every time past the cooldown
    assert issuer.jwks_requests == 2
    clock.advance(300)  # the negative entry expires
    with pytest.raises(UnknownKeyError):
        await cache.get_key("garbage", "ES256")
    assert issuer.jwks_requests == 3


async def test_a_kid_found_absent_is_looked_for_again_after_the_cooldown(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    # An unknown kid triggers a refresh at most once per cooldown, and then again:
    # the same kid too (by default it is remembered as absent for the cooldown). A key
    # whose first token came before the JWKS showed it (a CDN in front of the issuer)
    # is found by the first refresh after the cooldown, not minutes later.
    cache = make(refresh_cooldown=30)
    await cache.refresh()
    clock.advance(31)
    kid = "published-late"
    with pytest.raises(UnknownKeyError):
        await cache.get_key(kid, "ES256")  # refreshes: not there yet
    assert issuer.jwks_requests == 2
    issuer.rotate(kid=kid)
    clock.advance(29)
    with pytest.raises(UnknownKeyError):
        await cache.get_key(kid, "ES256")  # within the cooldown: no fetch
    assert issuer.jwks_requests == 2
    clock.advance(2)
    assert (await cache.get_key(kid, "ES256")).kid == kid
    assert issuer.jwks_requests == 3


async def test_a_kid_refused_within_the_cooldown_is_not_remembered_as_absent(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(refresh_cooldown=30)
    await cache.refresh()
    with pytest.raises(UnknownKeyError):
        await cache.get_key("garbage", "ES256")  # an unknown kid's refresh: cooldown on
    kid = issuer.rotate()  # published right after that fetch
    with pytest.raises(UnknownKeyError):
        await cache.get_key(kid, "ES256")  # cooldown: refused without a look
    assert issuer.jwks_requests == 2
    clock.advance(31)
    assert (await cache.get_key(kid, "ES256")).kid == kid
    assert issuer.jwks_requests == 3


async def test_a_key_rotated_in_just_after_a_scheduled_refresh_is_found_by_its_first_token(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    # The cooldown limits refreshes that unknown kids trigger; a startup or scheduled
    # fetch does not start it, or a rotation right after one would be refused for up
    # to a cooldown.
    cache = make(refresh_cooldown=30)
    await cache.refresh()
    clock.advance(1)
    kid = issuer.rotate()
    assert (await cache.get_key(kid, "ES256")).kid == kid
    assert issuer.jwks_requests == 2
    # That refresh did start the cooldown: the next unknown kid is refused unseen.
    with pytest.raises(UnknownKeyError):
        await cache.get_key("garbage", "ES256")
    assert issuer.jwks_requests == 2


async def test_the_negative_cache_is_a_bounded_lru(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(refresh_cooldown=0, negative_cache_size=2, negative_ttl=300)
    await cache.refresh()
    for kid in ("a", "b", "a", "c"):  # "a" is used again, so "b" is the one evicted
        with pytest.raises(UnknownKeyError):
            await cache.get_key(kid, "ES256")
    assert issuer.jwks_requests == 4  # load, a, b, c
    for kid in ("a", "c"):
        with pytest.raises(UnknownKeyError):
            await cache.get_key(kid, "ES256")
    assert issuer.jwks_requests == 4
    with pytest.raises(UnknownKeyError):
        await cache.get_key("b", "ES256")
    assert issuer.jwks_requests == 5


async def test_a_new_key_set_clears_the_negative_cache(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(refresh_cooldown=0, ttl=600, negative_ttl=3600)
    await cache.refresh()
    with pytest.raises(UnknownKeyError):
        await cache.get_key("late", "ES256")
    issuer.add_key(P256, kid="late")
    clock.advance(601)
    await cache.get_key(issuer.current_kid, "ES256")  # the TTL refresh sees "late"
    assert (await cache.get_key("late", "ES256")).kid == "late"


# -- generations and removal -------------------------------------------------------------------


async def test_generation_moves_only_when_the_keys_change(
    issuer: LocalIssuer, make: Factory
) -> None:
    cache = make()
    await cache.refresh()
    await cache.refresh()
    assert (cache.generation, issuer.jwks_requests) == (1, 2)
    issuer.rotate()
    await cache.refresh()
    assert cache.generation == 2


async def test_the_same_keys_in_another_order_are_the_same_key_set(
    issuer: LocalIssuer, make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    # An issuer may shuffle its keys on every response: that must not count as a key
    # change (which drops every cached verdict and logs "loaded" at INFO).
    issuer.rotate()
    cache = make()
    await cache.refresh()
    assert cache.generation == 1
    keys = issuer.jwks["keys"]
    assert len(keys) == 2
    issuer.garbage(json.dumps({"keys": keys[::-1]}).encode())
    caplog.set_level(logging.DEBUG, logger="asgi_auth0")
    await cache.refresh()
    assert issuer.jwks_requests == 2
    assert cache.generation == 1
    assert any("unchanged" in r.getMessage() for r in caplog.records), caplog.records
    # A real change in the same shuffled form still counts.
    issuer.garbage(json.dumps({"keys": keys[:1]}).encode())
    await cache.refresh()
    assert cache.generation == 2


async def test_a_removed_key_stops_validating_after_the_next_refresh(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(ttl=600)
    old = issuer.current_kid
    await cache.get_key(old, "ES256")
    issuer.rotate(keep_old=False)
    assert (await cache.get_key(old, "ES256")).kid == old  # still fresh
    clock.advance(601)
    with pytest.raises(UnknownKeyError):
        await cache.get_key(old, "ES256")
    assert cache.generation == 2


async def test_concurrent_refreshes_share_one_fetch(issuer: LocalIssuer, make: Factory) -> None:
    # One fetch at a time is what guarantees no older response lands after a newer one.
    cache = make()
    issuer.hold()
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(cache.refresh)
        await issuer.wait_for_waiting_async(1)
        await anyio.wait_all_tasks_blocked()
        issuer.release()
    assert issuer.jwks_requests == 1
    assert cache.generation == 1


# -- single flight and cancellation ------------------------------------------------------------


async def test_concurrent_callers_cause_exactly_one_fetch(
    issuer: LocalIssuer, make: Factory
) -> None:
    cache = make()
    kid = issuer.current_kid
    found: list[str | None] = []

    async def call() -> None:
        found.append((await cache.get_key(kid, "ES256")).kid)

    issuer.hold()
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(call)
        await issuer.wait_for_waiting_async(1)
        await anyio.wait_all_tasks_blocked()
        assert issuer.jwks_requests == 1
        issuer.release()
    assert found == [kid] * 50
    assert issuer.jwks_requests == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    issuer: LocalIssuer, make: Factory
) -> None:
    cache = make()
    kid = issuer.current_kid
    found: list[str | None] = []
    first, waiter = anyio.CancelScope(), anyio.CancelScope()

    async def call(scope: anyio.CancelScope | None) -> None:
        if scope is None:
            found.append((await cache.get_key(kid, "ES256")).kid)
            return
        with scope:
            await cache.get_key(kid, "ES256")

    issuer.hold()
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, first)  # starts (and performs) the fetch
        await issuer.wait_for_waiting_async(1)
        tg.start_soon(call, waiter)
        tg.start_soon(call, None)
        tg.start_soon(call, None)
        await anyio.wait_all_tasks_blocked()
        first.cancel()  # the client that started the fetch disconnects ...
        waiter.cancel()  # ... and so does one that was waiting
        await anyio.wait_all_tasks_blocked()
        issuer.release()
    assert found == [kid, kid]
    assert issuer.jwks_requests == 1
    assert cache.status().state == "fresh"


# -- backoff -----------------------------------------------------------------------------------


async def waits_while_stale(
    cache: JWKSCache, issuer: LocalIssuer, clock: Clock, *, rounds: int
) -> list[float]:
    """Load the set, fail the issuer, let the set go stale (ttl 600 s), then ``rounds``
    times: serve the current key from the stale set (the inline refresh fails) and
    wait until the next attempt. The waits, in order."""
    kid = issuer.current_kid
    await cache.refresh()
    issuer.fail_with(500)
    clock.advance(601)
    waits = []
    for _ in range(rounds):
        await cache.get_key(kid, "ES256")
        waits.append(cache.status().next_refresh_in)
        clock.advance(waits[-1])
    return waits


async def test_failed_fetches_back_off_exponentially_up_to_five_minutes(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    # While the last good set serves (stale, within max_stale), failed refreshes back
    # off up to five minutes: tokens of known keys are unaffected meanwhile.
    cache = make(ttl=600, max_stale=86400)
    waits = await waits_while_stale(cache, issuer, clock, rounds=8)
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300]
    assert issuer.jwks_requests == 1 + 8


async def test_with_no_usable_keys_failed_fetches_back_off_only_to_the_cooldown(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    # With no usable key set every token of the issuer gets 503, so a backoff grown to
    # five minutes would keep them failing that long after the issuer is back: here
    # fetches come at least every refresh cooldown (30 s by default).
    issuer.fail_with(500)
    cache = make()
    expected = [5, 10, 20, 30, 30, 30, 30, 30]
    with pytest.raises(KeySetError):
        await cache.get_key("k", "ES256")
    for requests, delay in enumerate(expected, start=1):
        assert issuer.jwks_requests == requests
        with pytest.raises(KeySetError) as caught:
            await cache.get_key("k", "ES256")  # backing off: no fetch
        assert caught.value.retry_after == delay
        clock.advance(delay - 0.5)
        with pytest.raises(KeySetError):
            await cache.get_key("k", "ES256")
        assert issuer.jwks_requests == requests
        clock.advance(0.5)
        with pytest.raises(KeySetError):
            await cache.get_key("k", "ES256")  # due again: one more fetch
    assert cache.status().consecutive_failures == len(expected) + 1


async def test_past_max_stale_the_issuer_is_asked_again_within_the_cooldown(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    # An outage outlasts max_stale: the attempt that the backoff would have put past
    # the expiry comes at the expiry, then one every cooldown, so the issuer's return
    # ends the 503s within 30 s, not the five minutes the backoff had grown to.
    cache = make(ttl=600, max_stale=900)
    kid = issuer.current_kid
    waits = await waits_while_stale(cache, issuer, clock, rounds=8)
    # 601 + 5 + ... + 300 = 1216 s: backing off 300 s more would pass 1500 s, the
    # end of max_stale; the attempt comes then instead.
    assert waits == [5, 10, 20, 40, 80, 160, 300, 284]
    with pytest.raises(KeySetError) as expired:
        await cache.get_key(kid, "ES256")  # no usable set: fetched (fails)
    assert expired.value.retry_after == 30
    issuer.heal()
    clock.advance(30)
    assert (await cache.get_key(kid, "ES256")).kid == kid
    assert cache.status().state == "fresh"


async def test_the_cooldown_cap_is_jittered_as_the_backoff_is(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    # Workers that fail together must stay apart once their retries reach the cap.
    issuer.fail_with(500)
    cache = make(jitter=lambda: 0.999)
    waits = []
    for _ in range(6):
        with pytest.raises(KeySetError):
            await cache.get_key("k", "ES256")
        waits.append(cache.status().next_refresh_in)
        clock.advance(waits[-1])
    assert 22.4 < waits[-1] < 22.6  # 30 s * (1 - 0.25 * 0.999)


async def test_backoff_is_jittered_downwards(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    issuer.fail_with(500)
    cache = make(jitter=lambda: 0.999)
    with pytest.raises(KeySetError):
        await cache.get_key("k", "ES256")
    assert 3.7 < cache.status().next_refresh_in < 3.8  # 5 s * (1 - 0.25 * 0.999)


async def test_the_issuers_retry_after_is_honoured_up_to_the_backoff_cap(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    issuer.fail_with(429, retry_after=60)
    cache = make()
    with pytest.raises(KeySetError) as caught:
        await cache.get_key("k", "ES256")
    assert caught.value.retry_after == 60
    clock.advance(59)
    with pytest.raises(KeySetError):
        await cache.get_key("k", "ES256")
    assert issuer.jwks_requests == 1
    issuer.fail_with(503, retry_after=86400)
    clock.advance(1)
    with pytest.raises(KeySetError) as caught:
        await cache.get_key("k", "ES256")
    assert issuer.jwks_requests == 2
    assert caught.value.retry_after == 300


async def test_a_success_resets_the_backoff(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(ttl=600, refresh_cooldown=0)
    issuer.fail_with(500)
    for _ in range(3):
        with pytest.raises(KeySetError):
            await cache.refresh()
    issuer.heal()
    await cache.refresh()
    assert cache.status().consecutive_failures == 0
    issuer.fail_with(500)
    clock.advance(601)
    await cache.get_key(issuer.current_kid, "ES256")  # stale; inline refresh fails
    assert cache.status().next_refresh_in == 5


# -- stale-if-error ----------------------------------------------------------------------------


async def test_known_kids_keep_working_for_max_stale_while_the_issuer_fails(
    issuer: LocalIssuer, make: Factory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make(ttl=600, max_stale=3600)
    kid = issuer.current_kid
    await cache.get_key(kid, "ES256")
    issuer.fail_with(500)
    clock.advance(601)
    with caplog.at_level(logging.WARNING, "asgi_auth0.jwks"):
        for _ in range(20):
            assert (await cache.get_key(kid, "ES256")).kid == kid
            status = cache.status()
            assert (status.state, status.key_count, status.kids) == ("stale", 1, (kid,))
            clock.advance(3598 / 20)
    stale_logs = [r for r in caplog.records if "stale" in r.getMessage()]
    assert len(stale_logs) == 1  # once per stale period
    clock.advance(3)  # now past freshness + max_stale
    with pytest.raises(KeySetError):
        await cache.get_key(kid, "ES256")
    status = cache.status()
    # A health check reading key_count must not see the old set's keys as usable.
    assert (status.state, status.key_count, status.kids) == ("failing", 0, ())
    # No key is usable any more: that is a change of the usable keys, so verdicts
    # cached against generation 1 are dropped (see test_verify's cache tests).
    assert cache.status().generation == 2
    # And past freshness with no refresher running, no cached verdict is vouched for.
    assert cache.generation == NOT_VOUCHED


async def test_the_expiry_error_is_for_outages_not_for_a_set_that_aged_unused(
    issuer: LocalIssuer, make: Factory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # No refresher and no traffic for longer than ttl + max_stale (a second issuer
    # used at night): the next request refreshes, quietly. Only an outage that
    # outlasted max_stale is an ERROR ("refusing tokens").
    cache = make(ttl=600, max_stale=3600)
    kid = issuer.current_kid
    await cache.get_key(kid, "ES256")
    clock.advance(600 + 3600 + 1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, "asgi_auth0.jwks"):
        assert (await cache.get_key(kid, "ES256")).kid == kid
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    issuer.fail_with(500)
    clock.advance(600 + 3600 + 1)
    with caplog.at_level(logging.WARNING, "asgi_auth0.jwks"), pytest.raises(KeySetError):
        await cache.get_key(kid, "ES256")  # its refresh fails: the outage starts
    clock.advance(5)  # past the backoff
    with caplog.at_level(logging.WARNING, "asgi_auth0.jwks"), pytest.raises(KeySetError):
        await cache.get_key(kid, "ES256")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "older than max_stale and cannot be refreshed" in errors[0]


async def test_the_end_of_an_outage_is_logged_at_info_even_with_the_same_keys(
    issuer: LocalIssuer, make: Factory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make(ttl=600)
    await cache.get_key(issuer.current_kid, "ES256")
    issuer.fail_with(500)
    clock.advance(601)
    await cache.get_key(issuer.current_kid, "ES256")  # stale; the refresh fails
    clock.advance(5)
    await cache.get_key(issuer.current_kid, "ES256")  # fails again
    issuer.heal()
    clock.advance(10)
    caplog.clear()
    with caplog.at_level(logging.INFO, "asgi_auth0.jwks"):
        await cache.get_key(issuer.current_kid, "ES256")  # works: the same keys
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == [
        f"JWKS of {issuer.jwks_uri} fetched again after 2 failed attempts"
    ]


async def test_a_failing_on_event_hook_is_a_warning_once_a_minute(
    issuer: LocalIssuer, make: Factory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # Events follow requests (one per unknown kid): a broken metrics hook must not
    # let a client decide how many tracebacks the application logs.
    def broken(name: str, info: dict[str, Any]) -> None:
        raise RuntimeError("metrics backend down")

    cache = make(on_event=broken)
    await cache.get_key(issuer.current_kid, "ES256")
    with caplog.at_level(logging.DEBUG, "asgi_auth0.jwks"):
        for i in range(50):
            with pytest.raises(UnknownKeyError):
                await cache.get_key(f"random-{i}", "ES256")
        clock.advance(60)
        with pytest.raises(UnknownKeyError):
            await cache.get_key("random-again", "ES256")
    hook_lines = [r for r in caplog.records if "on_event hook raised" in r.getMessage()]
    warnings = [r for r in hook_lines if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # the first, and the first a minute later
    assert len(hook_lines) > 50  # every one still at DEBUG
    assert warnings[0].exc_info is not None


def test_from_config_says_where_the_jwks_uri_comes_from() -> None:
    config = Auth0Config(issuer=ISSUER, audience="https://api.test", jwks_uri=JWKS_URI)
    with pytest.raises(ConfigError, match="takes the jwks_uri from the config"):
        JWKSCache.from_config(config, jwks_uri="https://issuer.test/other.json")


async def test_a_due_refresh_without_a_background_refresher_is_no_warning(
    issuer: LocalIssuer, make: Factory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # Without a lifespan (Daphne, uvicorn --lifespan off) nothing refreshes ahead: the
    # first request past freshness refreshes inline. With the issuer healthy that is
    # routine, and it warned "serving the stale JWKS" once per freshness period.
    cache = make(ttl=600)
    kid = issuer.current_kid
    await cache.get_key(kid, "ES256")
    with caplog.at_level(logging.WARNING, "asgi_auth0.jwks"):
        for _ in range(3):
            clock.advance(601)
            assert (await cache.get_key(kid, "ES256")).kid == kid
    assert issuer.jwks_requests == 4
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # The same request with the issuer failing is an outage: said at once.
    issuer.fail_with(500)
    clock.advance(601)
    with caplog.at_level(logging.WARNING, "asgi_auth0.jwks"):
        assert (await cache.get_key(kid, "ES256")).kid == kid
    stale = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [m for m in stale if m.startswith("serving the stale JWKS")] == [
        f"serving the stale JWKS of {JWKS_URI} (1 s past freshness, last error: http_status)"
    ]


async def test_the_stale_set_stops_serving_exactly_at_freshness_plus_max_stale(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    # The last good set may hold a key the issuer has since revoked: its grace period
    # ends at fetch + ttl + max_stale, not an instant later.
    cache = make(ttl=600, max_stale=3600)
    kid = issuer.current_kid
    await cache.get_key(kid, "ES256")
    issuer.fail_with(500)
    clock.advance(600 + 3600 - 0.5)
    assert (await cache.get_key(kid, "ES256")).kid == kid
    clock.advance(0.5)
    with pytest.raises(KeySetError):
        await cache.get_key(kid, "ES256")


async def test_a_failed_refresh_never_wipes_good_keys(issuer: LocalIssuer, make: Factory) -> None:
    cache = make()
    kid = issuer.current_kid
    await cache.refresh()
    for fault in (b'{"keys": []}', b"nonsense", b'{"keys": [{"kty": "oct", "k": "AA"}]}'):
        issuer.garbage(fault)
        with pytest.raises(KeySetError):
            await cache.refresh()
        assert (await cache.get_key(kid, "ES256")).kid == kid
    assert cache.generation == 1
    assert cache.status().kids == (kid,)


async def test_with_no_set_ever_loaded_the_answer_is_key_set_error(
    issuer: LocalIssuer, make: Factory
) -> None:
    issuer.fail_with(500)
    with pytest.raises(KeySetError) as caught:
        await make().get_key(issuer.current_kid, "ES256")
    assert not isinstance(caught.value, InvalidTokenError)
    assert caught.value.status_code == 503


async def test_an_unknown_kid_during_an_outage_is_503_not_401(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(refresh_cooldown=30)
    await cache.refresh()
    issuer.fail_with(500)
    clock.advance(31)
    with pytest.raises(KeySetError):
        await cache.get_key("rotated-in", "ES256")  # one fetch, failed
    with pytest.raises(KeySetError):
        await cache.get_key("rotated-in", "ES256")  # cooldown + failing: no fetch
    assert issuer.jwks_requests == 2
    assert (await cache.get_key(issuer.current_kid, "ES256")).kid == issuer.current_kid


# -- background runner -------------------------------------------------------------------------


async def test_the_runner_loads_the_set_at_startup(issuer: LocalIssuer, make: Factory) -> None:
    cache = make()
    async with cache.running():
        await anyio.wait_all_tasks_blocked()
        assert issuer.jwks_requests == 1
        status = cache.status()
        assert (status.state, status.background) == ("fresh", True)
    assert not cache.status().background


async def test_with_a_runner_known_kids_never_wait_for_a_refresh(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(ttl=600)
    kid = issuer.current_kid
    async with cache.running():
        await anyio.wait_all_tasks_blocked()  # the startup load is done
        assert issuer.jwks_requests == 1
        issuer.hold()
        clock.advance(500)  # refresh-ahead window
        with anyio.fail_after(5):  # would hang on the held issuer if it waited
            assert (await cache.get_key(kid, "ES256")).kid == kid
        await issuer.wait_for_waiting_async(1)  # the runner's refresh is under way
        clock.advance(200)  # now past freshness too
        with anyio.fail_after(5):
            for _ in range(10):
                assert (await cache.get_key(kid, "ES256")).kid == kid
        assert issuer.jwks_requests == 2
        issuer.release()
        await cache.refresh()  # joins the runner's fetch
        assert issuer.jwks_requests == 2
        assert cache.status().state == "fresh"


async def test_the_runner_refreshes_ahead_of_expiry(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(ttl=600)
    async with cache.running():
        await anyio.wait_all_tasks_blocked()
        new = issuer.rotate()
        clock.advance(481)  # 80% of 600
        await cache.get_key(issuer.current_kid, "ES256")  # wakes the runner
        await anyio.wait_all_tasks_blocked()
        assert issuer.jwks_requests == 2
        assert cache.generation == 2
        assert new in cache.status().kids


async def test_callers_waiting_on_the_runner_are_released_when_it_stops(
    issuer: LocalIssuer, make: Factory
) -> None:
    cache = make()
    errors: list[Exception] = []

    async def call() -> None:
        try:
            await cache.get_key(issuer.current_kid, "ES256")
        except KeySetError as exc:
            errors.append(exc)

    issuer.hold()
    # The runner block ends first (cancelling the runner mid-fetch), then the task
    # group waits for the caller, which must not hang.
    async with anyio.create_task_group() as tg, cache.running():
        await issuer.wait_for_waiting_async(1)  # the startup load is held
        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
    assert len(errors) == 1


async def test_the_runner_is_single(make: Factory) -> None:
    cache = make()
    async with cache.running():
        with pytest.raises(RuntimeError):
            async with cache.running():
                pass  # pragma: no cover


async def test_an_error_in_the_running_block_propagates_unwrapped(make: Factory) -> None:
    with pytest.raises(LookupError):
        async with make().running():
            raise LookupError("the app's own error")


# -- hooks and status --------------------------------------------------------------------------


async def test_hooks_see_refreshes_errors_stale_serving_and_unknown_kids(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    cache = make(issuer=ISSUER, on_event=lambda name, info: events.append((name, dict(info))))
    kid = issuer.current_kid
    await cache.get_key(kid, "ES256")
    clock.advance(31)
    with pytest.raises(UnknownKeyError):
        await cache.get_key("nope", "ES256")
    issuer.fail_with(500)
    clock.advance(600)
    await cache.get_key(kid, "ES256")
    names = [name for name, _ in events]
    assert names == ["refresh", "refresh", "unknown_kid", "stale_served", "refresh_error"]
    assert events[0][1]["changed"] is True
    assert events[1][1]["changed"] is False
    assert events[2][1] | {"iss": ISSUER} == {
        "kid": "nope", "alg": "ES256", "action": "refreshed", "iss": ISSUER
    }  # fmt: skip
    assert events[4][1]["reason"] == "http_status"
    # Each fetch's events say what set it off and when it began, on the cache's clock.
    assert events[1][1]["trigger"] == "unknown_kid"
    assert events[1][1]["started"] - events[0][1]["started"] == 31
    assert events[4][1]["started"] - events[1][1]["started"] == 600


async def test_a_failing_hook_never_breaks_a_request(issuer: LocalIssuer, make: Factory) -> None:
    def hook(name: str, info: Any) -> None:
        raise ValueError("metrics backend down")

    cache = make(on_event=hook)
    assert (await cache.get_key(issuer.current_kid, "ES256")).kid == issuer.current_kid


async def test_status_reports_for_health_endpoints(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(ttl=600, issuer=ISSUER)
    await cache.refresh()
    clock.advance(100)
    data = cache.status().as_dict()
    json.dumps(data)  # ready for a JSON health endpoint
    assert data == {
        "state": "fresh",
        "issuer": ISSUER,
        "jwks_uri": JWKS_URI,
        "key_count": 1,
        "kids": [issuer.current_kid],
        "generation": 1,
        "fetch_count": 1,
        "failed_fetch_count": 0,
        "consecutive_failures": 0,
        "last_success_age": 100.0,
        "last_error": None,
        "next_refresh_in": 500.0,
        "background": False,
    }


# -- discovery ---------------------------------------------------------------------------------


async def test_discovery_finds_the_jwks_once(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    cache = make(None, issuer=ISSUER, ttl=600)
    await cache.get_key(issuer.current_kid, "ES256")
    clock.advance(601)
    await cache.get_key(issuer.current_kid, "ES256")
    assert issuer.requests[DISCOVERY_PATH] == 1
    assert issuer.jwks_requests == 2
    assert cache.jwks_uri == JWKS_URI


async def test_discovery_requires_the_exact_issuer(issuer: LocalIssuer, make: Factory) -> None:
    cache = make(None, issuer=ISSUER.rstrip("/"))  # the document says ".../"
    with pytest.raises(KeySetError):
        await cache.get_key(issuer.current_kid, "ES256")
    assert cache.status().last_error == "issuer_mismatch"
    assert issuer.jwks_requests == 0


@pytest.mark.parametrize(
    "jwks_uri", ["http://evil.example/jwks", "https://user:pw@issuer.test/jwks", 42, None]
)
async def test_a_discovered_jwks_uri_must_be_https(
    issuer: LocalIssuer, make: Factory, jwks_uri: object
) -> None:
    issuer.garbage(
        json.dumps({"issuer": ISSUER, "jwks_uri": jwks_uri}).encode(), paths=DISCOVERY_PATH
    )
    cache = make(None, issuer=ISSUER)
    with pytest.raises(KeySetError):
        await cache.refresh()
    assert cache.status().last_error == "bad_discovery"


async def test_discovery_falls_back_to_rfc8414_when_oidc_metadata_is_missing(
    issuer: LocalIssuer, make: Factory
) -> None:
    issuer.fail_with(404, paths=DISCOVERY_PATH)
    cache = make(None, issuer=ISSUER)
    assert (await cache.get_key(issuer.current_kid, "ES256")).kid == issuer.current_kid
    assert issuer.requests[OAUTH_METADATA_PATH] == 1


async def test_discovery_does_not_fall_back_when_the_issuer_is_failing(
    issuer: LocalIssuer, make: Factory
) -> None:
    issuer.fail_with(503, paths=DISCOVERY_PATH)
    cache = make(None, issuer=ISSUER)
    with pytest.raises(KeySetError):
        await cache.refresh()
    assert issuer.requests[OAUTH_METADATA_PATH] == 0


# -- configuration, several issuers, lifecycle -------------------------------------------------


def test_from_config_uses_the_configs_jwks_settings() -> None:
    config = Auth0Config(
        domain="tenant.eu.auth0.com",
        audience="https://api.example.com",
        additional_issuers=["https://login.example.com/"],
    )
    main = JWKSCache.from_config(config)
    assert main.jwks_uri == "https://tenant.eu.auth0.com/.well-known/jwks.json"
    assert main.issuer == "https://tenant.eu.auth0.com/"
    other = JWKSCache.from_config(config, issuer="https://login.example.com/")
    assert other.jwks_uri is None  # found by discovery of that issuer
    with pytest.raises(ConfigError):
        JWKSCache.from_config(config, issuer="https://evil.example.com/")
    assert isinstance(key_source_for_config(config), IssuerKeySets)
    single = Auth0Config(domain="tenant.eu.auth0.com", audience="https://api.example.com")
    assert isinstance(key_source_for_config(single), JWKSCache)


async def test_from_config_enforces_the_algorithm_allow_list(
    issuer: LocalIssuer, client: httpx.AsyncClient
) -> None:
    config = Auth0Config(issuer=ISSUER, jwks_uri=JWKS_URI, audience="a", algorithms=["RS256"])
    cache = JWKSCache.from_config(config, http_client=client)
    with pytest.raises(AlgorithmNotAllowedError):
        await cache.get_key(issuer.current_kid, "ES256")
    assert issuer.total_requests == 0


async def test_each_issuer_has_its_own_key_set(clock: Clock) -> None:
    main = LocalIssuer(issuer="https://main.test/", private_key=P256)
    custom = LocalIssuer(issuer="https://custom.test/", key_type="P-256")
    mounts = {
        "all://main.test": httpx.ASGITransport(app=main.asgi_app),
        "all://custom.test": httpx.ASGITransport(app=custom.asgi_app),
    }
    config = Auth0Config(
        issuer="https://main.test/",
        jwks_uri=main.jwks_uri,
        additional_issuers=["https://custom.test/"],
        audience="a",
        algorithms=["ES256"],
    )
    async with httpx.AsyncClient(mounts=mounts) as client:
        sets = IssuerKeySets.from_config(config, http_client=client, clock=clock)
        assert sets.issuers == ("https://main.test/", "https://custom.test/")
        key = await sets.get_key_for("https://main.test/", main.current_kid, "ES256")
        assert key.kid == main.current_kid
        key = await sets.get_key_for("https://custom.test/", custom.current_kid, "ES256")
        assert key.kid == custom.current_kid
        assert custom.requests[DISCOVERY_PATH] == 1
        with pytest.raises(UnknownKeyError):  # keys never cross issuers
            await sets.get_key_for("https://main.test/", custom.current_kid, "ES256")
        before = main.total_requests + custom.total_requests
        for iss in ("https://evil.test/", "https://main.test", None, 7, ["https://main.test/"]):
            with pytest.raises(InvalidIssuerError):
                await sets.get_key_for(iss, main.current_kid, "ES256")
            assert sets.source_for(iss) is None
        assert main.total_requests + custom.total_requests == before
        assert (await sets.get_key(main.current_kid, "ES256")).kid == main.current_kid
        assert sets.generation == 2
        assert sets.source_for("https://custom.test/") is not None
        assert sets.source_for("https://evil.test/") is None
        assert {iss: s.state for iss, s in sets.status().items()} == {
            "https://main.test/": "fresh",
            "https://custom.test/": "fresh",
        }
        custom.rotate()
        await sets.refresh()
        assert sets.generation == 3


async def test_a_verifier_takes_each_tokens_key_from_its_claimed_issuer(clock: Clock) -> None:
    # Through TokenVerifier: the key comes from the set of the token's own iss. A token
    # that claims the custom domain but carries the main issuer's kid and signature
    # must not find the main issuer's key (a verifier that asked the primary set for
    # every kid, ignoring iss, let it through).
    now = 1_800_000_000.0
    main = LocalIssuer(issuer="https://main.test/", private_key=P256, clock=lambda: now)
    custom = LocalIssuer(issuer="https://custom.test/", key_type="P-256", clock=lambda: now)
    mounts = {
        "all://main.test": httpx.ASGITransport(app=main.asgi_app),
        "all://custom.test": httpx.ASGITransport(app=custom.asgi_app),
    }
    config = Auth0Config(
        issuer="https://main.test/",
        jwks_uri=main.jwks_uri,
        additional_issuers=["https://custom.test/"],
        audience=main.audience,
        algorithms=["ES256"],
    )
    async with httpx.AsyncClient(mounts=mounts) as client:
        sets = IssuerKeySets.from_config(config, http_client=client, clock=clock)
        verifier = TokenVerifier(config, key_set=sets, clock=lambda: now)
        assert (await verifier.verify(main.token())).sub == "user-1"
        with pytest.raises(UnknownKeyError):
            await verifier.verify(main.token(iss="https://custom.test/"))
        assert (await verifier.verify(custom.token())).sub == "user-1"
        with pytest.raises(UnknownKeyError):
            await verifier.verify(custom.token(iss="https://main.test/"))


async def test_several_issuers_run_and_stop_together(clock: Clock) -> None:
    a = LocalIssuer(issuer="https://a.test/", private_key=P256)
    b = LocalIssuer(issuer="https://b.test/", private_key=P256)
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
        async with sets.running():
            await anyio.wait_all_tasks_blocked()
            assert all(s.background and s.state == "fresh" for s in sets.status().values())
        assert not any(s.background for s in sets.status().values())


async def test_aclose_leaves_an_injected_client_open(issuer: LocalIssuer, make: Factory) -> None:
    cache = make()
    client = cache._client
    await cache.refresh()
    await cache.aclose()
    assert client is not None
    assert not client.is_closed
    await cache.refresh()  # still usable


async def test_a_body_already_in_memory_is_capped_too(clock: Clock) -> None:
    # httpx.Response(content=...) arrives preloaded (MockTransport in users' tests).
    bodies = [b" " * (ONE_MIB + 1), jwks_body(public_jwk(P256, kid="k1", alg="ES256"))]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bodies.pop(0))

    async with mock_client(handler) as client:
        cache = JWKSCache(JWKS_URI, http_client=client, clock=clock)
        with pytest.raises(KeySetError):
            await cache.refresh()
        assert cache.status().last_error == "too_large"
        await cache.refresh()
        assert (await cache.get_key("k1", "ES256")).kid == "k1"


def test_the_body_cap_is_one_mebibyte() -> None:
    from asgi_auth0._jwks import MAX_JWKS_BYTES

    assert MAX_JWKS_BYTES == ONE_MIB


@pytest.mark.parametrize(
    ("kid", "alg"), [(["a"], "ES256"), ({}, "ES256"), (7, "ES256"), ("k", ["ES256"])]
)
async def test_values_of_the_wrong_type_are_refused_like_any_bad_token(
    issuer: LocalIssuer, make: Factory, kid: Any, alg: Any
) -> None:
    cache = make(refresh_cooldown=0)
    await cache.refresh()
    with pytest.raises(InvalidTokenError):
        await cache.get_key(kid, alg)
    assert issuer.jwks_requests == 1


async def test_a_kid_that_joined_an_earlier_fetch_is_not_remembered_as_absent(
    issuer: LocalIssuer, make: Factory, clock: Clock
) -> None:
    # The fetch under way may predate the key's publication, so its answer says nothing
    # definite about a kid that arrived later; the kid that started it is remembered.
    cache = make(refresh_cooldown=0, negative_ttl=300)
    await cache.refresh()

    async def unknown(kid: str) -> None:
        with pytest.raises(UnknownKeyError):
            await cache.get_key(kid, "ES256")

    issuer.hold()
    async with anyio.create_task_group() as tg:
        tg.start_soon(unknown, "first")  # starts the fetch
        await issuer.wait_for_waiting_async(1)
        clock.advance(1)
        tg.start_soon(unknown, "later")  # joins it
        await anyio.wait_all_tasks_blocked()
        issuer.release()
    assert issuer.jwks_requests == 2
    await unknown("first")
    assert issuer.jwks_requests == 2  # remembered: no fetch
    await unknown("later")
    assert issuer.jwks_requests == 3  # not remembered: looked up again
