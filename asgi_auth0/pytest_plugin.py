"""pytest fixtures for testing an app protected by asgi_auth0, with no Auth0 tenant.

Enable it explicitly in your ``conftest.py`` (it is not registered automatically)::

    pytest_plugins = ["asgi_auth0.pytest_plugin"]

Then, in a test::

    @pytest.mark.anyio
    async def test_messages_need_a_scope(auth0_config, auth0_token):
        app = create_app(auth0_config)            # your app, bound to the local issuer
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            token = auth0_token(scope="read:messages")
            response = await client.get("/messages", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200

Fixtures:

``auth0_issuer``
    A running :class:`~asgi_auth0.testing.LocalIssuer` (a real HTTP server on
    127.0.0.1), new for every test and stopped after it.
``auth0_config``
    An :class:`~asgi_auth0.Auth0Config` bound to that issuer.
``auth0_token``
    A token factory: ``auth0_token(sub=..., scope=..., permissions=..., **claims)``
    returns a signed token string (see :meth:`LocalIssuer.token
    <asgi_auth0.testing.LocalIssuer.token>`).
``dpop_key``
    A fresh :class:`~asgi_auth0.testing.DPoPKey` (P-256, ES256) playing a DPoP client:
    ``token = auth0_token(cnf=dpop_key.cnf)``, then
    ``dpop_key.headers(token, "GET", "http://app/me")`` for an app configured with
    ``dpop="allowed"`` or ``"required"``.
``auth0_issuer_options``
    Keyword arguments for the issuer; override it in your ``conftest.py`` to change
    the audience or key type, e.g. ``return {"audience": "https://my-api"}`` or
    ``return {"key_type": "P-256"}`` (key types: ``"RSA"``, ``"P-256"``, ``"P-384"``,
    ``"P-521"``, ``"Ed25519"``; the config's ``algorithms`` follow the key).
``auth0_rsa_key``
    One RSA private key for the whole session, so each test's issuer starts in
    milliseconds instead of generating a key. Every issuer still gets its own random
    ``kid``, server, counters and state; only the key material is shared.

Annotate fixtures with :class:`asgi_auth0.testing.TokenFactory` (the type of
``auth0_token``), imported from :mod:`asgi_auth0.testing`. (It is re-exported here
too; this module opts out of pytest's assertion rewriting, PYTEST_DONT_REWRITE, as it
has no ``assert`` to rewrite, so importing it from a ``conftest.py`` before pytest
registers it is harmless even under ``filterwarnings = error``.)

Lines the package logs only once per process (the ERROR for each scope a route
declares that no token can have, the WARNING when ``require_permissions`` meets a
token with no ``permissions`` claim) are logged once per *test* under this plugin: an
autouse fixture forgets what was reported before each test, so a test asserting such
a line with ``caplog`` passes whatever ran before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# Costs nothing: importing the package (for Auth0Config) imports .fastapi already.
from . import fastapi as _fastapi
from ._config import Auth0Config
from ._signing import PrivateKey, generate_private_key
from .testing import DPoPKey, LocalIssuer, TokenFactory

__all__ = [
    "TokenFactory",
    "auth0_config",
    "auth0_issuer",
    "auth0_issuer_options",
    "auth0_rsa_key",
    "auth0_token",
    "dpop_key",
]


@pytest.fixture(autouse=True)
def _asgi_auth0_log_once_reset() -> None:
    """Forget the log-once lines already reported, so each test sees its own."""
    # Read through the module at each test rather than bound at import, so it is the
    # set the reporting functions use now (a test may swap it with monkeypatch).
    _fastapi._REPORTED.clear()


@pytest.fixture(scope="session")
def auth0_rsa_key() -> PrivateKey:
    """A 2048-bit RSA key generated once per test session (key generation is slow)."""
    return generate_private_key("RSA")


@pytest.fixture
def auth0_issuer_options() -> dict[str, Any]:
    """Keyword arguments for :class:`LocalIssuer`; override to customise the issuer."""
    return {}


@pytest.fixture
def auth0_issuer(
    auth0_issuer_options: dict[str, Any], auth0_rsa_key: PrivateKey
) -> Iterator[LocalIssuer]:
    """A running :class:`LocalIssuer` on 127.0.0.1, stopped when the test ends."""
    options = dict(auth0_issuer_options)
    # Reuse the session key only where an RSA key is wanted and none was given.
    if options.get("key_type", "RSA") == "RSA" and "private_key" not in options:
        options["private_key"] = auth0_rsa_key
    with LocalIssuer(**options) as issuer:
        yield issuer


@pytest.fixture
def auth0_config(auth0_issuer: LocalIssuer) -> Auth0Config:
    """An :class:`~asgi_auth0.Auth0Config` bound to ``auth0_issuer``."""
    return auth0_issuer.config()


@pytest.fixture
def auth0_token(auth0_issuer: LocalIssuer) -> TokenFactory:
    """A factory minting tokens from ``auth0_issuer``: ``auth0_token(scope="read:x")``."""
    return auth0_issuer.token


@pytest.fixture
def dpop_key(auth0_issuer: LocalIssuer) -> DPoPKey:
    """A DPoP client key: bind tokens with ``cnf=dpop_key.cnf``, sign with ``headers()``.
    Its proofs take their ``iat`` from the issuer's clock, as its tokens do."""
    # A lambda, not the bound clock: a test may set auth0_issuer.clock later.
    return DPoPKey(clock=lambda: auth0_issuer.clock())  # noqa: PLW0108
