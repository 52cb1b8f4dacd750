"""JWKSCache rules around the background refresher that mutation testing found
unpinned.

The refresher sleeps exactly until its next refresh is due (what ``status()`` says),
not longer. And a cache that never loaded a set reads generation 0, as documented,
runner or not: it is not "not vouched" (-1), which for a multi-issuer key source
would stop every cached verdict while one issuer has not been used yet.

Real issuer on 127.0.0.1, real httpx; the cache's time moves by an injected clock; no
sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from _clock import Clock

from asgi_auth0 import KeySetError
from asgi_auth0._jwks import IssuerKeySets, JWKSCache
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as issuer:
        yield issuer


async def test_the_refresher_sleeps_exactly_until_the_next_refresh_is_due(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The runner sleeps on the event loop's clock for as long as the cache's clock
    # says is left (due - now), which status() reports too. A longer sleep would
    # leave the set unrefreshed past its refresh-ahead point with nobody asking.
    delays: list[float] = []
    move_on_after = anyio.move_on_after

    def recorded(delay: float, *args: Any, **kwargs: Any) -> anyio.CancelScope:
        delays.append(delay)
        return move_on_after(delay, *args, **kwargs)

    monkeypatch.setattr(anyio, "move_on_after", recorded)
    clock = Clock()
    cache = JWKSCache(issuer.jwks_uri, clock=clock, ttl=600)
    async with cache.running():
        await cache.refresh()  # the load is done (the runner's, or one it joined)
        await anyio.wait_all_tasks_blocked()  # the runner has gone to sleep
        assert cache.status().next_refresh_in == 480  # 80% of freshness
        assert delays[-1] == 480
    await cache.aclose()


async def test_a_cache_that_never_loaded_a_set_reads_generation_zero(
    issuer: LocalIssuer,
) -> None:
    # No set and no runner, and past any freshness (there is none): still 0, never -1.
    down = JWKSCache("http://127.0.0.1:9/jwks.json", clock=Clock(), fetch_timeout=2)
    assert down.generation == 0
    with pytest.raises(KeySetError):
        await down.refresh()  # nothing listens there: the fetch fails
    assert down.generation == 0
    # Beside a loaded issuer, the unused one does not stop cached verdicts.
    used = JWKSCache(issuer.jwks_uri, clock=Clock())
    await used.refresh()
    both = IssuerKeySets({issuer.issuer: used, "https://unused.example.test/": down})
    assert both.generation == 1
    await both.aclose()
