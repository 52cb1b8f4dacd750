"""Signing side of JWS, for the testing kit only: key generation, public JWKs, tokens.

The library itself never signs; :mod:`asgi_auth0.testing` and the test suite use this to
mint real tokens (and deliberately broken ones) with real keys.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = [
    "PrivateKey",
    "b64url",
    "compact_json",
    "generate_private_key",
    "public_jwk",
    "sign",
    "sign_jws",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
#: The default algorithm for each kind of key.
DEFAULT_ALG = {
    "RSA": "RS256",
    "P-256": "ES256",
    "P-384": "ES384",
    "P-521": "ES512",
    "Ed25519": "EdDSA",
}


def b64url(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int, length: int | None = None) -> str:
    length = length or max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(length, "big"))


def generate_private_key(kind: str = "RSA", *, rsa_bits: int = 2048) -> PrivateKey:
    """A fresh private key: ``"RSA"``, ``"P-256"``, ``"P-384"``, ``"P-521"`` or ``"Ed25519"``."""
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if kind in _CURVES:
        return ec.generate_private_key(_CURVES[kind][0])
    if kind == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key kind {kind!r}")


def public_jwk(
    key: PrivateKey, *, kid: str | None = None, alg: str | None = None
) -> dict[str, Any]:
    """The public JWK of ``key`` with ``use: sig`` (and ``kid``/``alg`` when given)."""
    jwk: dict[str, Any]
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        jwk = {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        crv = {c.name: name for name, (c, _) in _CURVES.items()}[key.curve.name]
        length = _CURVES[crv][1]
        pub = key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": crv, "x": _uint(pub.x, length), "y": _uint(pub.y, length)}
    else:
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    jwk["use"] = "sig"
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    return jwk


def sign(key: PrivateKey, alg: str, data: bytes) -> bytes:
    """The JWS signature of ``data`` with ``key`` under ``alg`` (ECDSA as raw R || S)."""
    if isinstance(key, rsa.RSAPrivateKey):
        digest = _HASHES[alg[2:]]()
        if alg.startswith("RS"):
            return key.sign(data, padding.PKCS1v15(), digest)
        if alg.startswith("PS"):
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            return key.sign(data, pss, digest)
        raise ValueError(f"{alg} does not fit an RSA key")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        crv = {c.name: name for name, (c, _) in _CURVES.items()}[key.curve.name]
        length = _CURVES[crv][1]
        der = key.sign(data, ec.ECDSA(_HASHES[alg[2:]]()))
        r, s = decode_dss_signature(der)
        return r.to_bytes(length, "big") + s.to_bytes(length, "big")
    return key.sign(data)


def compact_json(value: Any) -> bytes:
    """``value`` as issuers sign it: no spaces, UTF-8 as is (Auth0, Okta, Keycloak and
    Entra all write compact JSON). The verifier's native parser (the speedups extra)
    takes this spelling at once; others go to the standard library's."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def sign_jws(
    key: PrivateKey,
    header: dict[str, Any],
    payload: dict[str, Any] | bytes,
) -> str:
    """A compact JWS of ``payload`` with ``header`` (which must name ``alg``)."""
    raw_payload = payload if isinstance(payload, bytes) else compact_json(payload)
    signing_input = b64url(compact_json(header)) + "." + b64url(raw_payload)
    signature = sign(key, header["alg"], signing_input.encode("ascii"))
    return signing_input + "." + b64url(signature)
