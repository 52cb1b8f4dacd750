"""The verified-token cache is emptied when the key set changes (issue 7): the verdicts
vouched for by the old set are dropped at the first verification after the change,
not left in memory until the LRU order pushes them out. Real issuers on 127.0.0.1."""

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


async def fill(verifier: TokenVerifier, issuer: LocalIssuer, count: int) -> list[str]:
    tokens = [issuer.token(sub=f"user-{n}") for n in range(count)]
    for token in tokens:
        await verifier.verify(token)
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
        await verifier.verify(fresh)
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
        await verifier.verify(issuer.token(sub="another"))
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
            for n in range(7):
                await verifier.verify(second.token(sub=f"second-{n}"))
            assert verifier.cache_info()["entries"] == 12
            first.rotate(keep_old=True)
            await verifier.refresh()
            await verifier.verify(first.token(sub="after"))
            # The first issuer's five are gone; the second issuer's seven stay.
            assert verifier.cache_info()["entries"] == 8
            await verifier.verify(second.token(sub="second-0"))
            assert verifier.cache_info()["entries"] == 8
        finally:
            await verifier.aclose()
