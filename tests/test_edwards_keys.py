"""Ed25519 and Ed448 public keys that anyone can sign for are refused (RFC 8032).

OpenSSL verifies with any 32 (or 57) bytes as the public key. With a point of small
order as the key, the signature R = identity, S = 0 verifies every message whose
challenge hash is a multiple of the point's order: one in 1, 2, 4 or 8 of the claim
sets an attacker tries. So a key set (a broken or compromised issuer, a pinned
StaticKeySet) or a DPoP proof holding such a key would let anyone mint tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

from asgi_auth0 import (
    Auth0Config,
    InvalidDPoPProofError,
    InvalidSignatureError,
    KeySetError,
    StaticKeySet,
    TokenVerifier,
    UnknownKeyError,
)
from asgi_auth0._dpop import DPoPProofChecker
from asgi_auth0._keys import KeyRejected, edwards_point_problem, parse_jwk
from asgi_auth0._signing import b64url, generate_private_key, public_jwk
from asgi_auth0.testing import DPoPKey

_L = 2**252 + 27742317777372353535851937790883648493  # the order of Ed25519's base point
_P25519 = 2**255 - 19
_P448 = 2**448 - 2**224 - 1
ISSUER = "https://tenant.example.auth0.com/"
AUDIENCE = "https://api.example.com"
NOW = 1_800_000_000

# The eight points of small order on edwards25519 (the curve's whole torsion
# subgroup), as RFC 8032 encodes them, with the order of each.
SMALL_ORDER_ED25519 = {
    "01" + "00" * 31: 1,  # the identity
    "ec" + "ff" * 30 + "7f": 2,  # (0, -1)
    "00" * 32: 4,  # (sqrt(-1), 0)
    "00" * 31 + "80": 4,  # (-sqrt(-1), 0)
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a": 8,
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa": 8,
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05": 8,
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85": 8,
}


def _okp(crv: str, raw: bytes) -> dict[str, Any]:
    return {"kty": "OKP", "crv": crv, "x": b64url(raw), "kid": "weak"}


def _forge(public: bytes, order: int) -> str:
    """A token "signed" for ``public`` with no private key: R = identity, S = 0, and
    claims chosen (by their jti) so that the challenge is a multiple of ``order``."""
    r = (1).to_bytes(32, "little")
    header = b64url(json.dumps({"alg": "EdDSA", "kid": "weak"}).encode())
    for attempt in range(2000):
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "auth0|anyone",
            "scope": "admin",
            "iat": NOW,
            "exp": NOW + 3600,
            "jti": str(attempt),
        }
        payload = b64url(json.dumps(claims).encode())
        digest = hashlib.sha512(r + public + f"{header}.{payload}".encode()).digest()
        if int.from_bytes(digest, "little") % _L % order == 0:
            return f"{header}.{payload}.{b64url(r + bytes(32))}"
    raise AssertionError("no claim set fitted")  # pragma: no cover - 1 in 8 fits


@pytest.mark.parametrize(("encoded", "order"), SMALL_ORDER_ED25519.items())
def test_openssl_takes_a_forgery_for_each_small_order_key_and_parse_jwk_refuses_the_key(
    encoded: str, order: int
) -> None:
    public = bytes.fromhex(encoded)
    token = _forge(public, order)
    signing_input, _, signature = token.rpartition(".")
    # The attack is real: the library under us verifies the forgery.
    ed25519.Ed25519PublicKey.from_public_bytes(public).verify(
        _b64url_decode(signature), signing_input.encode()
    )
    with pytest.raises(KeyRejected, match="small order"):
        parse_jwk(_okp("Ed25519", public))


def _b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


@pytest.mark.anyio
async def test_a_forged_token_for_a_small_order_key_in_the_jwks_is_refused() -> None:
    order8 = bytes.fromhex(next(k for k, v in SMALL_ORDER_ED25519.items() if v == 8))
    good = public_jwk(generate_private_key("Ed25519"), kid="good")
    key_set = StaticKeySet({"keys": [good, _okp("Ed25519", order8)]})
    verifier = TokenVerifier(
        Auth0Config(issuer=ISSUER, audience=AUDIENCE, algorithms=("EdDSA",)),
        key_set=key_set,
        clock=lambda: float(NOW),
    )
    # The weak key is skipped when the set is read, so its kid is unknown.
    with pytest.raises(UnknownKeyError):
        await verifier.verify(_forge(order8, 8))


@pytest.mark.parametrize(
    "y",
    [_P25519, _P25519 + 1, 2**255 - 1],  # p + 1 is the identity, written with y >= p
)
def test_an_ed25519_key_with_y_not_below_p_is_refused(y: int) -> None:
    # RFC 8032 §5.1.3: "If the resulting value is >= p, decoding fails."
    with pytest.raises(KeyRejected, match="not below p"):
        parse_jwk(_okp("Ed25519", y.to_bytes(32, "little")))


@pytest.mark.parametrize("y", [1, _P448 - 1, 0])  # orders 1, 2 and 4: the torsion points
@pytest.mark.parametrize("x_sign", [0, 1])
def test_an_ed448_key_of_small_order_is_refused(y: int, x_sign: int) -> None:
    encoded = (y | x_sign << 455).to_bytes(57, "little")
    with pytest.raises(KeyRejected, match="small order"):
        parse_jwk(_okp("Ed448", encoded))


@pytest.mark.parametrize("y", [_P448, _P448 + 1, 2**448, 2**455 - 1])
def test_an_ed448_key_with_y_not_below_p_is_refused(y: int) -> None:
    # RFC 8032 §5.2.3, the same rule; 2**448 and up set the 57th octet's low bits.
    with pytest.raises(KeyRejected, match="not below p"):
        parse_jwk(_okp("Ed448", y.to_bytes(57, "little")))


class _RawKeySource:
    """A custom key source that hands out a raw cryptography key."""

    def __init__(self, key: object) -> None:
        self.key = key

    async def get_key(self, kid: str | None, alg: str) -> object:
        return self.key


@pytest.mark.anyio
async def test_a_small_order_key_from_a_custom_key_source_is_refused() -> None:
    # The check also guards keys that never were a JWK: a key source's raw key. The
    # key source is broken (503), not the token.
    identity = bytes.fromhex("01" + "00" * 31)
    verifier = TokenVerifier(
        Auth0Config(issuer=ISSUER, audience=AUDIENCE, algorithms=("EdDSA",)),
        key_set=_RawKeySource(ed25519.Ed25519PublicKey.from_public_bytes(identity)),
        clock=lambda: float(NOW),
    )
    with pytest.raises(KeySetError, match="small order"):
        await verifier.verify(_forge(identity, 1))
    good = ed25519.Ed25519PrivateKey.generate()
    verifier = TokenVerifier(
        Auth0Config(issuer=ISSUER, audience=AUDIENCE, algorithms=("EdDSA",)),
        key_set=_RawKeySource(good.public_key()),
        clock=lambda: float(NOW),
    )
    with pytest.raises(InvalidSignatureError):  # a real key: checked, then used
        await verifier.verify(_forge(identity, 1))


def test_real_keys_of_both_curves_pass_the_check() -> None:
    # Every key a real signer makes has large order: the check must never refuse one.
    for _ in range(200):
        public = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        assert edwards_point_problem("Ed25519", public) is None
    for _ in range(50):
        public = ed448.Ed448PrivateKey.generate().public_key().public_bytes_raw()
        assert edwards_point_problem("Ed448", public) is None


def test_a_dpop_proof_whose_jwk_is_a_small_order_point_is_refused() -> None:
    client = DPoPKey("Ed25519")
    weak = {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(32))}
    checker = DPoPProofChecker(algorithms=("EdDSA",), max_age=300, leeway=30, clock=time.time)
    url = "https://api.example.com/me"
    with pytest.raises(InvalidDPoPProofError, match="small order"):
        checker.check(
            client.proof("GET", url, headers={"jwk": weak}),
            method="GET",
            url=url,
            access_token="t",
            jkt=client.jkt,
        )
