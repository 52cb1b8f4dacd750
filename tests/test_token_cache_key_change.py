"""The verified-token cache is emptied when the key set changes (issue 7): the verdicts
vouched for by the old set are dropped at the first verification after the change
that uses the cache (a hit on one of them, or a token taken in at its second
verification), not left in memory until the LRU order pushes them out. Real issuers
on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from asgi_auth0 import TokenVerifier, UnknownKeyError
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000.0


@pytest.fixture
async def issuer() -> AsyncIterator[LocalIssuer]:
    async with LocalIssuer(key_type="Ed25519", clock=lambda: NOW) as running:
        yield running


def verifier_for(issuer: LocalIssuer, **overrides: object) -> TokenVerifier:
    return TokenVerifier(issuer.config(jwks_refresh_cooldown=0, **overrides), clock=lambda: NOW)


async def verify_twice(verifier: TokenVerifier, token: str) -> None:
    """Verify ``token`` twice: the cache takes a token at its second verification."""
    await verifier.verify(token)
    await verifier.verify(token)


async def fill(verifier: TokenVerifier, issuer: LocalIssuer, count: int) -> list[str]:
    tokens = [issuer.token(sub=f"user-{n}") for n in range(count)]
    for token in tokens:
        await verify_twice(verifier, token)
    assert verifier.cache_info()["entries"] == count
    return tokens


async def test_a_new_key_set_empties_the_cache_at_the_next_verification(
    issuer: LocalIssuer,
) -> None:
    verifier = verifier_for(issuer)
    try:
        await fill(verifier, issuer, 20)
        issuer.rotate(keep_old=True)  # a key added: the usable set changed
        await verifier.refresh()
        fresh = issuer.token(sub="after")
        # Its first verification only marks it as seen (and does not look at the old
        # verdicts); the second puts it in the cache, which drops them.
        await verify_twice(verifier, fresh)
        info = verifier.cache_info()
        # Only the token verified under the new set is held, in entries and in chars.
        assert (info["entries"], info["token_chars"]) == (1, len(fresh))
    finally:
        await verifier.aclose()


async def test_a_hit_on_an_old_verdict_drops_them_all_even_when_it_then_fails(
    issuer: LocalIssuer,
) -> None:
    verifier = verifier_for(issuer)
    try:
        tokens = await fill(verifier, issuer, 20)
        issuer.rotate(keep_old=False)  # the key of every cached token is gone
        await verifier.refresh()
        with pytest.raises(UnknownKeyError):
            await verifier.verify(tokens[0])
        # Nothing was verified (so nothing inserted), yet the other 19 are gone too.
        assert verifier.cache_info()["entries"] == 0
        assert verifier.cache_info()["token_chars"] == 0
    finally:
        await verifier.aclose()


async def test_an_unchanged_key_set_keeps_every_verdict(issuer: LocalIssuer) -> None:
    verifier = verifier_for(issuer)
    try:
        tokens = await fill(verifier, issuer, 20)
        await verifier.refresh()  # fetched again, the same keys: the generation stays
        await verify_twice(verifier, issuer.token(sub="another"))
        assert verifier.cache_info()["entries"] == 21
        await verifier.verify(tokens[0])
        assert verifier.cache_info()["entries"] == 21
    finally:
        await verifier.aclose()


async def test_a_key_change_at_one_issuer_keeps_the_other_issuers_verdicts() -> None:
    async with (
        LocalIssuer(key_type="Ed25519", clock=lambda: NOW) as first,
        LocalIssuer(key_type="Ed25519", clock=lambda: NOW, audience=first.audience) as second,
    ):
        verifier = verifier_for(first, additional_issuers=[second.issuer])
        try:
            await fill(verifier, first, 5)
            seconds = [second.token(sub=f"second-{n}") for n in range(7)]
            for token in seconds:
                await verify_twice(verifier, token)
            assert verifier.cache_info()["entries"] == 12
            first.rotate(keep_old=True)
            await verifier.refresh()
            await verify_twice(verifier, first.token(sub="after"))
            # The first issuer's five are gone; the second issuer's seven stay.
            assert verifier.cache_info()["entries"] == 8
            await verifier.verify(seconds[0])  # a hit: nothing added
            assert verifier.cache_info()["entries"] == 8
        finally:
            await verifier.aclose()
