"""Token cache rules that mutation testing found unpinned.

The verified-token cache is bounded by its entries and by the token characters it
holds (``token_cache_size`` x 2,048, and room for one token of ``max_token_size`` at
least). The character bound is inclusive: tokens adding up to it exactly all stay. Its
count stays exact when another thread drops an entry under a verification. A
verdict is tied to its own issuer's key source, and ``cache_info()`` reports what its
docstring says. And the DEBUG peek of a refused token leaves a segment of more than
``MAX_JSON_CONTAINERS`` brackets of either kind unread, but reads one of exactly that
many.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest

from asgi_auth0 import (
    ExpiredTokenError,
    InvalidIssuerError,
    MalformedTokenError,
    StaticKeySet,
    TokenVerifier,
)
from asgi_auth0._jose import MAX_JSON_CONTAINERS
from asgi_auth0._keys import PublicKey
from asgi_auth0._verify import _CACHE_SLOT_BYTES, _deep_size
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio


def _verifier(issuer: LocalIssuer, clock: Any = None, **settings: Any) -> TokenVerifier:
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    return TokenVerifier(issuer.config(**settings), key_set=StaticKeySet(issuer.jwks), **options)


def _token_of_length(issuer: LocalIssuer, length: int, **claims: Any) -> str:
    """The shortest token at least ``length`` characters long (its ``pad`` claim made
    to fit): exactly ``length`` unless base64url cannot end there, then one more."""
    for pad in range(length):
        token = issuer.token(pad="x" * pad, **claims)
        if len(token) >= length:
            return token
    raise AssertionError("unreachable: the pad alone is longer")


async def _verify_twice(verifier: TokenVerifier, token: str) -> Any:
    """Verify ``token`` twice: the cache takes a token at its second verification."""
    await verifier.verify(token)
    return await verifier.verify(token)


async def test_a_token_exactly_the_character_budget_long_stays_cached(
    issuer: LocalIssuer,
) -> None:
    # One entry, and a largest token over 2,048 characters: the budget is that token's
    # length. A token of exactly that length is within it (the bound is inclusive).
    token = issuer.token(pad="x" * 3000)
    verifier = _verifier(issuer, token_cache_size=1, max_token_size=len(token))
    await verifier.verify(token)
    assert verifier.cache_info()["entries"] == 0  # seen once: not cached yet
    await verifier.verify(token)
    info = verifier.cache_info()
    assert info["max_token_chars"] == len(token)
    assert (info["entries"], info["token_chars"]) == (1, len(token))


async def test_tokens_adding_up_to_the_character_budget_exactly_are_all_kept(
    issuer: LocalIssuer,
) -> None:
    # Two entries of 2,048 characters: 4,096 in all (max_token_size is below that).
    verifier = _verifier(issuer, token_cache_size=2, max_token_size=3000)
    first = issuer.token(pad="x" * 1500, jti="first")
    second = _token_of_length(issuer, 4096 - len(first), jti="second")
    if len(first) + len(second) != 4096:  # a length base64url cannot make: shift it
        first = _token_of_length(issuer, len(first) + 1, jti="first")
        second = _token_of_length(issuer, 4096 - len(first), jti="second")
    assert len(first) + len(second) == 4096
    await _verify_twice(verifier, first)
    await _verify_twice(verifier, second)
    info = verifier.cache_info()
    assert (info["entries"], info["token_chars"], info["max_token_chars"]) == (2, 4096, 4096)
    # A third token longer than the first: with the first dropped, the other two are
    # still over the budget, so the second goes too.
    third = _token_of_length(issuer, len(first) + 1, jti="third")
    await _verify_twice(verifier, third)
    info = verifier.cache_info()
    assert (info["entries"], info["token_chars"]) == (1, len(third))


async def test_an_entry_another_thread_dropped_under_a_hit_is_not_uncounted_twice(
    issuer: LocalIssuer,
) -> None:
    # The cache is shared with other threads' event loops. One may clear it between
    # this verification's lookup and its own drop of the expired verdict: that drop
    # then finds nothing, and must subtract nothing (the clear already zeroed the
    # count). The clock, read between the two, stands in for that other thread.
    now = [float(issuer.clock())]
    clear_when_read = [False]
    verifier: TokenVerifier

    def clock() -> float:
        if clear_when_read[0]:
            clear_when_read[0] = False
            verifier.clear_cache()
        return now[0]

    verifier = _verifier(issuer, clock=clock, leeway=0)
    token = issuer.token(expires_in=10)
    await _verify_twice(verifier, token)
    assert verifier.cache_info()["token_chars"] == len(token)
    now[0] += 10
    clear_when_read[0] = True
    with pytest.raises(ExpiredTokenError):
        await verifier.verify(token)
    assert not clear_when_read[0]  # the clock was read at the lookup
    info = verifier.cache_info()
    assert (info["entries"], info["token_chars"]) == (0, 0)


class _Source:
    """One issuer's keys, with the generation the verifier's cache compares."""

    def __init__(self, issuer: LocalIssuer) -> None:
        self.keys = StaticKeySet(issuer.jwks)
        self.generation = 1


class _TwoIssuers:
    """A key source for two issuers that says which one serves a token (source_for)."""

    def __init__(self, issuer: LocalIssuer, other: str) -> None:
        self.sources = {issuer.issuer: _Source(issuer), other: _Source(issuer)}
        self.lookups = 0

    @property
    def generation(self) -> int:
        return sum(source.generation for source in self.sources.values())

    def source_for(self, iss: object) -> _Source | None:
        return self.sources.get(iss) if isinstance(iss, str) else None

    async def get_key_for(self, iss: object, kid: str | None, alg: str) -> PublicKey:
        self.lookups += 1
        source = self.source_for(iss)
        assert source is not None
        return await source.keys.get_key(kid, alg)

    async def get_key(self, kid: str | None, alg: str) -> PublicKey:
        raise AssertionError("get_key_for is used when the source has it")


async def test_a_verdict_is_dropped_when_its_own_issuers_keys_change_not_anothers(
    issuer: LocalIssuer,
) -> None:
    # With several issuers, a cached verdict is compared with the generation of the
    # key source that verified it (source_for), not the combined one: another
    # issuer's rotation must not send every cached token back through verification.
    other = "https://other-tenant.example.test/"
    keys = _TwoIssuers(issuer, other)
    verifier = TokenVerifier(issuer.config(additional_issuers=[other]), key_set=keys)
    token = issuer.token()
    await _verify_twice(verifier, token)  # two lookups: the second puts it in the cache
    assert verifier.cache_info()["entries"] == 1
    keys.sources[other].generation += 1
    await verifier.verify(token)
    assert keys.lookups == 2  # still a cache hit
    keys.sources[issuer.issuer].generation += 1
    await verifier.verify(token)
    assert keys.lookups == 3  # its own issuer's keys changed: verified again


async def test_cache_info_describes_the_oldest_entry_as_documented(issuer: LocalIssuer) -> None:
    # Nothing cached: no entry to measure.
    verifier = _verifier(issuer)
    assert verifier.cache_info()["approx_bytes_per_entry"] == 0
    # The token string, the entry, its valid-until float, the claims with every key
    # and value they hold, and the cache's own slot: all counted, none subtracted.
    token = issuer.token(pad="x" * 500)
    claims = await _verify_twice(verifier, token)
    await _verify_twice(verifier, issuer.token(jti="newer"))
    entry_size = sys.getsizeof((claims, 0.0, 1, None))  # a 4-field tuple
    expected = (
        sys.getsizeof(token)
        + entry_size
        + sys.getsizeof(0.0)
        + _deep_size(claims)
        + _CACHE_SLOT_BYTES
    )
    info = verifier.cache_info()
    assert info["entries"] == 2
    assert info["approx_bytes_per_entry"] == expected


def _peeked_kids(caplog: pytest.LogCaptureFixture) -> list[object]:
    return [getattr(r, "kid", None) for r in caplog.records if hasattr(r, "kid")]


@pytest.mark.parametrize("kind", ["arrays", "objects"])
async def test_the_log_peek_leaves_a_flood_of_either_bracket_unread(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    # The peek counts "{" and "[" together: a flood of arrays is as unread as one of
    # objects (each one's brackets, alone, are over the limit).
    verifier = _verifier(issuer)
    flood: list[Any] = [[] if kind == "arrays" else {} for _ in range(MAX_JSON_CONTAINERS * 4)]
    token = issuer.token(headers={"kid": "peek-me", "ext": flood})
    with (
        caplog.at_level(logging.DEBUG, logger="asgi_auth0"),
        pytest.raises(MalformedTokenError, match="header holds more than") as refused,
    ):
        await verifier.verify(token)
    assert refused.value.token_facts == (None, None, issuer.issuer)
    assert "peek-me" not in _peeked_kids(caplog)


async def test_the_log_peek_reads_a_header_of_exactly_max_json_containers(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    # The header object, the "ext" array and the objects in it: exactly the limit,
    # which the parser accepts; the token is refused later for its issuer, before a
    # ParsedToken exists, so kid and alg are peeked for the log line.
    verifier = _verifier(issuer)
    ext: list[Any] = [{} for _ in range(MAX_JSON_CONTAINERS - 2)]
    token = issuer.token(headers={"kid": "peek-me", "ext": ext}, iss="https://elsewhere.test/")
    with (
        caplog.at_level(logging.DEBUG, logger="asgi_auth0"),
        pytest.raises(InvalidIssuerError) as refused,
    ):
        await verifier.verify(token)
    assert refused.value.token_facts == ("peek-me", issuer.alg, "https://elsewhere.test/")
    assert "peek-me" in _peeked_kids(caplog)
