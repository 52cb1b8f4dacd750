"""What the JWKSCache test files share: the issuer's names and key, the issuer served
in-process through ``httpx.ASGITransport``, a cache factory with an injected clock,
and ``MockTransport`` clients for the faults the issuer cannot send.

The fixtures are imported by the test modules that use them (their ``issuer`` serves
a JWKS, unlike the minting-only one in ``conftest.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from _clock import Clock

from asgi_auth0._jwks import JWKSCache
from asgi_auth0._signing import generate_private_key
from asgi_auth0.testing import LocalIssuer

ISSUER = "https://issuer.test/"
JWKS_URI = "https://issuer.test/.well-known/jwks.json"
P256 = generate_private_key("P-256")
# The contract's size cap, spelled out here rather than imported from the module.
ONE_MIB = 1024 * 1024

Factory = Callable[..., JWKSCache]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    issuer = LocalIssuer(issuer=ISSUER, private_key=P256)
    yield issuer
    issuer.close()  # wakes any request a test left held


@pytest.fixture
async def client(issuer: LocalIssuer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=issuer.asgi_app)) as c:
        yield c


@pytest.fixture
def make(client: httpx.AsyncClient, clock: Clock) -> Factory:
    def make(jwks_uri: str | None = JWKS_URI, **options: Any) -> JWKSCache:
        options.setdefault("http_client", client)
        options.setdefault("clock", clock)
        options.setdefault("jitter", lambda: 0.0)  # backoff delays exactly 5, 10, 20 ...
        return JWKSCache(jwks_uri, **options)

    return make


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))
