"""The verified-token cache takes a token at its second verification, not its first.

Tokens used once (a client that fetches a token per call, a flood of distinct valid
tokens) then neither pay the cache's insert and eviction nor push out the tokens
clients reuse. Pinned here: when a token gets in, that a hit really skips the key
source, that only successes count, and the filter's bound on early admissions.
"""

from __future__ import annotations

from typing import Any

import pytest

from asgi_auth0 import (
    Auth0Config,
    ExpiredTokenError,
    PublicKey,
    StaticKeySet,
    TokenVerifier,
    _verify,
)
from asgi_auth0._signing import generate_private_key, public_jwk, sign_jws

pytestmark = pytest.mark.anyio

ISS = "https://tenant.example.auth0.com/"
AUD = "https://api.example.com"
NOW = 1_800_000_000.0
KEY = generate_private_key("Ed25519")


class CountingKeys:
    """A StaticKeySet that counts get_key calls: a cache hit makes none."""

    def __init__(self) -> None:
        self.inner = StaticKeySet({"keys": [public_jwk(KEY, kid="k1")]})
        self.calls = 0

    @property
    def generation(self) -> int:
        return self.inner.generation

    async def get_key(self, kid: str | None, alg: str) -> PublicKey:
        self.calls += 1
        return await self.inner.get_key(kid, alg)


def token(n: int = 0, **over: Any) -> str:
    payload = {"iss": ISS, "aud": AUD, "sub": f"auth0|{n}", "iat": NOW, "exp": NOW + 3600, **over}
    return sign_jws(KEY, {"alg": "EdDSA", "kid": "k1"}, payload)


def verifier(keys: Any = None, **cfg: Any) -> TokenVerifier:
    config = Auth0Config(issuer=ISS, audience=AUD, algorithms=("EdDSA",), **cfg)
    return TokenVerifier(config, key_set=keys or CountingKeys(), clock=lambda: NOW)


def copy(t: str) -> str:
    # Each request brings its own string; the cache must match by value.
    return t.encode("ascii").decode("ascii")


async def test_a_token_is_cached_at_its_second_verification_and_hit_at_its_third() -> None:
    keys = CountingKeys()
    v = verifier(keys)
    t = token()
    assert (await v.verify(copy(t))).sub == "auth0|0"
    assert v.cache_info()["entries"] == 0
    assert keys.calls == 1
    assert (await v.verify(copy(t))).sub == "auth0|0"
    assert v.cache_info()["entries"] == 1
    assert keys.calls == 2
    # Hits: the verdict comes from the cache, the key source is not asked again.
    for _ in range(3):
        assert (await v.verify(copy(t))).sub == "auth0|0"
    assert keys.calls == 2


async def test_a_refused_token_is_not_marked_as_seen() -> None:
    # Only a successful verification counts towards admission; a refusal leaves no
    # trace, so the same token twice refused is never cached, and a later valid token
    # in the same slot is not let in early on its account.
    v = verifier()
    bad = token(exp=NOW - 3600)
    for _ in range(2):
        with pytest.raises(ExpiredTokenError):
            await v.verify(copy(bad))
    assert v.cache_info()["entries"] == 0
    assert not any(v._seen)


async def test_clear_cache_also_forgets_the_tokens_seen_once() -> None:
    v = verifier()
    t = token()
    await v.verify(t)
    v.clear_cache()
    await v.verify(copy(t))
    assert v.cache_info()["entries"] == 0
    await v.verify(copy(t))
    assert v.cache_info()["entries"] == 1


async def test_the_cache_turned_off_keeps_no_filter() -> None:
    v = verifier(token_cache_size=0)
    t = token()
    for _ in range(3):
        await v.verify(copy(t))
    assert v.cache_info()["entries"] == 0
    assert len(v._seen) == 0


async def test_a_token_seen_once_before_the_filter_is_emptied_needs_two_more() -> None:
    # The filter is emptied once one bit in 64 is set (a token whose bit is already
    # set sets none), so that shared bits never let more than one new token in 64
    # into the cache at its first sight.
    keys = StaticKeySet({"keys": [public_jwk(KEY, kid="k1")]})
    v = verifier(keys)  # the default cache: 65,536 bytes of bits, emptied at 8,192
    assert v._seen_reset == len(v._seen) // 8 == 8192
    first = token(-1)
    await v.verify(first)
    assert v._seen_count == 1
    n = 0
    while v._seen_count and n < 2 * v._seen_reset:
        await v.verify(token(n))
        n += 1
    assert v._seen_count == 0
    assert not any(v._seen)
    # Each token either set a bit or, its bit taken, went into the cache.
    assert n == v._seen_reset - 1 + v.cache_info()["entries"]
    before = v.cache_info()["entries"]
    await v.verify(copy(first))
    assert v.cache_info()["entries"] == before
    await v.verify(copy(first))
    assert v.cache_info()["entries"] == before + 1


def test_the_filter_grows_with_the_cache() -> None:
    # A token's second verification counts if fewer than one in 64 of the filter's
    # bits were set in between: that window is twice the cache's size, so a larger
    # cache gets a larger filter (a fixed one capped what a large cache could hold).
    assert _verify._seen_slots(0) == 0
    for size in (1, 64, 4096):
        assert _verify._seen_slots(size) == 1 << 16
    for size in (4097, 50_000, 262_144):
        slots = _verify._seen_slots(size)
        assert slots // 8 >= 2 * size
        assert slots & (slots - 1) == 0  # a power of two: the slot is hash & mask
    assert _verify._seen_slots(10**7) == 1 << 22  # 4 MiB at the most


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_large_cache_takes_a_token_back_after_more_than_8192_others() -> None:
    # 9,000 other new tokens between a token's two verifications: with a filter of the
    # default cache's size (emptied after 8,192) the second one would not count, and
    # a cache sized for 10,000 tokens would never take a client that comes back less
    # often than that.
    keys = StaticKeySet({"keys": [public_jwk(KEY, kid="k1")]})
    v = verifier(keys, token_cache_size=10_000)
    first = token(-1)
    await v.verify(first)
    for n in range(9_000):
        await v.verify(token(n))
    before = v.cache_info()["entries"]  # the few let in early by shared slots
    await v.verify(copy(first))
    assert v.cache_info()["entries"] == before + 1


@pytest.mark.slow
# The filter does not depend on the event loop: one backend is enough for 5 s of tokens.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_at_most_one_new_token_in_64_is_cached_at_its_first_verification() -> None:
    # What the filter is for: a flood of tokens each used once must not fill the
    # cache (each one in it pushes out a token that clients reuse). 8,000 distinct
    # tokens, each verified once, with the default cache (the filter is emptied only
    # after 8,192 first sightings, and the cache keeps every one it takes): it takes
    # those whose bit was already set, about 61 on average here (a byte per slot, as
    # the filter had before, took about 490). Hashes differ per process, and so does
    # the count, but never by enough to pass one in 64.
    v = verifier(StaticKeySet({"keys": [public_jwk(KEY, kid="k1")]}))
    total = 8000
    assert v._seen_reset > total
    for n in range(total):
        await v.verify(token(n))
    early = v.cache_info()["entries"]
    assert v._seen_count + early == total  # never emptied, none evicted
    assert early <= total // 64, early
    assert early > 0  # shared bits exist: the count above is a real measurement
