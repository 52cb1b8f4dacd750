"""Shared fixtures: every async test runs on asyncio and on trio; a minting issuer and
a verifier over its keys for the tests that need no key server (files that need one
define their own ``issuer``)."""

from __future__ import annotations

import pytest

from asgi_auth0._keys import StaticKeySet
from asgi_auth0._signing import PrivateKey
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.testing import LocalIssuer

ISS = "https://tenant.example.test/"
AUD = "https://api.example.test"

pytest_plugins = ["asgi_auth0.pytest_plugin"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def issuer(auth0_rsa_key: PrivateKey) -> LocalIssuer:
    """Mints tokens; no server: the ``verifier`` gets its JWKS directly."""
    return LocalIssuer(issuer=ISS, audience=AUD, private_key=auth0_rsa_key)


@pytest.fixture
def verifier(issuer: LocalIssuer) -> TokenVerifier:
    return TokenVerifier(issuer.config(), key_set=StaticKeySet(issuer.jwks))
