"""Generate the adversarial token corpus: attack and edge-case tokens, each with the
exact outcome ``TokenVerifier.verify`` must give and why.

Everything is derived from fixed seeds: the keys (RSA primes, EC scalars and Ed25519
seeds come from ``random.Random(SEED + label)``), the mutations (which bits to flip)
and the claims. RS*, EdDSA and ES* (RFC 6979 deterministic ECDSA) tokens are
byte-for-byte the same on every run; PS* signatures carry a random salt by design, so
for them only the verdicts are reproducible.

Every case is verified with the *widest* configuration (all eleven supported
algorithms, one issuer, one audience, leeway 5 s, ``iat`` required) unless the case
says otherwise, so that each refusal is caused by the rule under test and not by a
narrow allow-list. ``NOW`` is the frozen clock.

Run ``python tests/adversarial/generate.py --out corpus.json`` to write the corpus out
(for review, or to feed another implementation); the tests build it in memory.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import hmac
import json
import math
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID

from asgi_auth0._signing import PrivateKey, b64url, public_jwk
from asgi_auth0._signing import sign as sign_randomized

SEED = "asgi_auth0/adversarial/v1"
NOW = 1_800_000_000
ISS = "https://tenant.example.auth0.com/"
#: A second issuer, accepted only where a case configures ``additional_issuers``.
ISS_ALT = "https://login.example.com/"
AUD = "https://api.example.com"
ALL_ALGS = (
    "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512",
    "EdDSA", "Ed25519",
)  # fmt: skip
DEFAULT_CONFIG: dict[str, Any] = {
    "issuer": ISS,
    "audience": AUD,
    "algorithms": ALL_ALGS,
    "leeway": 5,
}
#: The longest kid the library accepts (MAX_KID_LENGTH); published for the RSA key.
LONG_KID = "k" * 256

# Which key each issuer kid names, and the JWK "alg" it publishes (None: none).
# The RSA key is also published once per RSA algorithm under a JWK naming it: a JWK
# without alg is bound to the first RSA algorithm allowed (RS256 here; RFC 8725 §3.1,
# one algorithm per key), so the other five reach the key through their own JWK. (A
# real issuer would use a key per algorithm; a verifier cannot tell, and these cases
# test the verifier.)
JWKS_LAYOUT: tuple[tuple[str, str, str | None], ...] = (
    ("rsa", "rsa", None),
    ("rsa-rs256", "rsa", "RS256"),
    ("rsa-rs384", "rsa", "RS384"),
    ("rsa-rs512", "rsa", "RS512"),
    ("rsa-ps256", "rsa", "PS256"),
    ("rsa-ps384", "rsa", "PS384"),
    ("rsa-ps512", "rsa", "PS512"),
    (LONG_KID, "rsa", None),
    ("p256", "p256", None),
    ("p384", "p384", None),
    ("p521", "p521", None),
    ("ed25519", "ed25519", None),
)
#: The issuer kid whose key fits each algorithm most naturally.
KID_FOR_ALG = {
    "RS256": "rsa",
    **{alg: f"rsa-{alg.lower()}" for alg in ("RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": "p256",
    "ES384": "p384",
    "ES512": "p521",
    "EdDSA": "ed25519",
    "Ed25519": "ed25519",
}
_KEY_ALGS = {
    # No alg in its JWK: bound to RS256, the first RSA algorithm of ALL_ALGS.
    "rsa": frozenset({"RS256"}),
    "p256": frozenset({"ES256"}),
    "p384": frozenset({"ES384"}),
    "p521": frozenset({"ES512"}),
    "ed25519": frozenset({"EdDSA", "Ed25519"}),
}
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ED25519_L = 2**252 + 27742317777372353535851937790883648493

# Which step of verification refuses the token (DESIGN.md's order).
PRECHECK = "precheck"  # size, shape, header, alg allow-list, crit/b64, kid, iss
KEY = "key"  # key lookup by kid and alg
SIGNATURE = "signature"
CLAIMS = "claims"
ACCEPTED = "accepted"
STAGES = (PRECHECK, KEY, SIGNATURE, CLAIMS, ACCEPTED)
_DEFAULT_STAGE = {
    "MalformedTokenError": PRECHECK,
    "TokenTooLargeError": PRECHECK,
    "AlgorithmNotAllowedError": PRECHECK,
    "UnsupportedHeaderError": PRECHECK,
    "InvalidIssuerError": PRECHECK,
    "InvalidTypeError": CLAIMS,
    "UnknownKeyError": KEY,
    "InvalidSignatureError": SIGNATURE,
    "ExpiredTokenError": CLAIMS,
    "ImmatureTokenError": CLAIMS,
    "InvalidClaimError": CLAIMS,
    "InvalidAudienceError": CLAIMS,
    "MissingClaimError": CLAIMS,
    "IssuedInFutureError": CLAIMS,
    "TokenTooOldError": CLAIMS,
}


@dataclass(frozen=True)
class Case:
    """One corpus token and the outcome it must get."""

    #: Stable id, ``category/what``.
    id: str
    token: str
    #: The exact exception class name (from ``asgi_auth0``), or ``None``: accepted.
    expect: str | None
    #: Which verification step decides (see ``STAGES``).
    stage: str
    #: Why this is the right outcome.
    why: str
    #: Auth0Config settings that differ from ``DEFAULT_CONFIG``.
    config: tuple[tuple[str, Any], ...] = ()

    @property
    def category(self) -> str:
        return self.id.split("/", 1)[0]

    def config_dict(self) -> dict[str, Any]:
        return {**DEFAULT_CONFIG, **dict(self.config)}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "token": self.token,
            "expect": self.expect,
            "stage": self.stage,
            "why": self.why,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.config},
        }


# -- deterministic keys ---------------------------------------------------------------


def _rng(label: str) -> random.Random:
    # A str seed goes through SHA-512: stable across runs and PYTHONHASHSEED values.
    return random.Random(f"{SEED}:{label}")


_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % q for q in range(2, math.isqrt(p) + 1))]


def _probable_prime(n: int, rng: random.Random) -> bool:
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(32):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, rng: random.Random) -> int:
    while True:
        # Top two bits set, so the product of two such primes has exactly 2 * bits bits.
        candidate = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if _probable_prime(candidate, rng):
            return candidate


def _rsa_key(label: str) -> rsa.RSAPrivateKey:
    rng = _rng(label)
    e = 65537
    while True:
        p, q = _prime(1024, rng), _prime(1024, rng)
        if p != q and math.gcd(e, (p - 1) * (q - 1)) == 1:
            break
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key()


def _ec_key(label: str, curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    # Below 2**(size - 1) is below every NIST curve's order.
    return ec.derive_private_key(_rng(label).randrange(1, 2 ** (curve.key_size - 1)), curve)


def _ed_key(label: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(
        _rng(label).getrandbits(256).to_bytes(32, "big")
    )


@functools.lru_cache(maxsize=1)
def keys() -> dict[str, PrivateKey]:
    """The issuer's keys and the attacker's, by label."""
    return {
        "rsa": _rsa_key("rsa"),
        "p256": _ec_key("p256", ec.SECP256R1()),
        "p384": _ec_key("p384", ec.SECP384R1()),
        "p521": _ec_key("p521", ec.SECP521R1()),
        "ed25519": _ed_key("ed25519"),
        "attacker-rsa": _rsa_key("attacker-rsa"),
        "attacker-p256": _ec_key("attacker-p256", ec.SECP256R1()),
        "attacker-ed25519": _ed_key("attacker-ed25519"),
    }


def jwks() -> dict[str, Any]:
    """The issuer's published JWKS (public keys only)."""
    k = keys()
    return {"keys": [public_jwk(k[label], kid=kid, alg=alg) for kid, label, alg in JWKS_LAYOUT]}


# -- signing --------------------------------------------------------------------------

_HASH = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def _ecdsa(hash_alg: hashes.HashAlgorithm) -> ec.ECDSA:
    try:  # RFC 6979 where cryptography supports it (>= 43), so tokens are reproducible
        return ec.ECDSA(hash_alg, deterministic_signing=True)
    except TypeError:  # pragma: no cover - older cryptography
        return ec.ECDSA(hash_alg)


def signature(label: str, alg: str, data: bytes) -> bytes:
    """The raw JWS signature of ``data`` by key ``label`` under ``alg``'s scheme."""
    key = keys()[label]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        r, s = decode_dss_signature(key.sign(data, _ecdsa(_HASH[alg[2:]]())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return sign_randomized(key, alg, data)


def seg(value: Any) -> str:
    """One token segment: bytes as they are, anything else as compact JSON."""
    raw = value if isinstance(value, bytes) else json.dumps(value, separators=(",", ":")).encode()
    return b64url(raw)


def claims(**over: Any) -> dict[str, Any]:
    """A valid payload at ``NOW``; ``name=DROP`` removes a claim."""
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "auth0|adversary",
        "iat": NOW - 60,
        "exp": NOW + 3600,
        "scope": "read:messages",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not DROP}


DROP: Any = object()


def header(alg: str, kid: str | None = "", **extra: Any) -> dict[str, Any]:
    """A JOSE header; ``kid=""`` picks the natural kid for ``alg``, ``None`` omits it."""
    h: dict[str, Any] = {"alg": alg, "typ": "at+jwt"}
    if kid is not None:
        h["kid"] = kid or KID_FOR_ALG.get(alg, "rsa")
    h.update(extra)
    return {k: v for k, v in h.items() if v is not DROP}


def jws(
    hdr: dict[str, Any] | bytes,
    payload: dict[str, Any] | bytes,
    *,
    signer: str | None = None,
    alg: str | None = None,
    sig: bytes | None = None,
) -> str:
    """A compact JWS. ``signer`` (a key label) signs under ``alg`` (default: the
    header's); ``sig`` replaces the signature with given bytes."""
    signing_input = f"{seg(hdr)}.{seg(payload)}"
    if sig is None:
        if alg is None:
            assert isinstance(hdr, dict)
            alg = hdr["alg"]
        assert alg is not None
        label = signer or _label_of(KID_FOR_ALG[alg])
        sig = signature(label, alg, signing_input.encode())
    return f"{signing_input}.{b64url(sig)}"


def _label_of(kid: str) -> str:
    return next(label for k, label, _ in JWKS_LAYOUT if k == kid)


def good(alg: str = "RS256", **over: Any) -> str:
    """A genuine token for ``alg`` with its natural kid."""
    return jws(header(alg), claims(**over))


def _canonical_b64url(s: str) -> bool:
    """An independent oracle (stdlib base64, not the library's decoder)."""
    if len(s) % 4 == 1 or any(c not in _B64URL for c in s):
        return False
    return b64url(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))) == s


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_ZERO = b"\x00"


def _non_canonical(s: str) -> str:
    """``s`` with its final character changed to set the unused low bits: the same
    bytes to a lenient decoder, a different string to the signature."""
    rest = len(s) % 4
    assert rest in (2, 3), "no spare bits to set"
    index = _ALPHABET.index(s[-1])
    spare = 0b1111 if rest == 2 else 0b11
    return s[:-1] + _ALPHABET[(index & ~spare) | 1]


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


# -- the corpus -----------------------------------------------------------------------


class _Builder:
    def __init__(self) -> None:
        self.cases: list[Case] = []
        self._ids: set[str] = set()

    def add(
        self,
        id: str,
        token: str,
        expect: str | None,
        why: str,
        *,
        stage: str | None = None,
        **config: Any,
    ) -> None:
        assert id not in self._ids, f"duplicate case id {id}"
        assert expect is None or expect in _DEFAULT_STAGE, expect
        self._ids.add(id)
        if stage is None:
            stage = ACCEPTED if expect is None else _DEFAULT_STAGE[expect]
        assert stage in STAGES
        self.cases.append(Case(id, token, expect, stage, why, tuple(sorted(config.items()))))


def _controls(b: _Builder) -> None:
    for alg in ALL_ALGS:
        b.add(
            f"control/{alg}",
            good(alg),
            None,
            "a genuine token for every supported algorithm verifies: the corpus harness "
            "refuses the attacks below for their own reasons, not by refusing everything",
        )
    b.add(
        "control/jwk-alg-rs256",
        jws(header("RS256", "rsa-rs256"), claims()),
        None,
        "a JWK whose own alg is RS256 verifies RS256 tokens",
    )
    b.add(
        "control/no-kid-single-fitting-key",
        jws(header("ES256", None), claims()),
        None,
        "without kid, a token is accepted when exactly one published key fits its alg "
        "(only p256 fits ES256)",
    )
    b.add(
        "control/exact-max-kid-length",
        jws(header("RS256", LONG_KID), claims()),
        None,
        "a kid of exactly MAX_KID_LENGTH (256) characters is still a kid",
    )
    b.add(
        "control/narrow-allow-list",
        good("RS256"),
        None,
        "the default allow-list (RS256 only) accepts an RS256 token",
        algorithms=("RS256",),
    )


def _alg_none(b: _Builder) -> None:
    payload = claims()
    for bits in range(16):
        alg = "".join(c.upper() if bits >> i & 1 else c for i, c in enumerate("none"))
        h = seg({"alg": alg, "kid": "rsa"})
        p = seg(payload)
        b.add(
            f"alg-none/{alg}/empty-signature",
            f"{h}.{p}.",
            "MalformedTokenError",
            "an empty signature segment is refused before the header is even read: an "
            "unsigned token never reaches the alg check",
        )
        genuine_sig = good("RS256").rsplit(".", 1)[1]
        b.add(
            f"alg-none/{alg}/with-signature",
            f"{h}.{p}.{genuine_sig}",
            "AlgorithmNotAllowedError",
            f"alg {alg!r} is not in the allow-list (Auth0Config refuses 'none' in any "
            "casing, and the token's alg is matched exactly, case-sensitively)",
        )
    h = seg({"alg": "none"})
    b.add(
        "alg-none/two-segments",
        f"{h}.{seg(payload)}",
        "MalformedTokenError",
        "a JWS has three segments; dropping the signature segment is malformed",
    )
    for name, alg_value in [
        ("null", None),
        ("number", 256),
        ("true", True),
        ("array", ["RS256"]),
        ("object", {"name": "RS256"}),
        ("missing", DROP),
    ]:
        hdr = {"alg": alg_value, "kid": "rsa"}
        b.add(
            f"alg-none/alg-{name}",
            jws({k: v for k, v in hdr.items() if v is not DROP}, claims(), alg="RS256"),
            "MalformedTokenError",
            "alg must be present and a string (RFC 7515 §4.1.1); anything else is malformed",
        )
    b.add(
        "alg-none/ALG-uppercase-member",
        jws({"ALG": "RS256", "kid": "rsa"}, claims(), alg="RS256"),
        "MalformedTokenError",
        "member names are case-sensitive: 'ALG' is an unknown member and alg is missing",
    )
    for label, alg in [
        ("lowercase", "rs256"),
        ("leading-space", " RS256"),
        ("trailing-space", "RS256 "),
        ("trailing-nul", "RS256\x00"),
        ("es256k", "ES256K"),
        ("ed448", "Ed448"),
        ("jwe-alg", "RSA-OAEP"),
        ("dir", "dir"),
    ]:
        b.add(
            f"alg-none/unlisted-{label}",
            jws(header(alg, "rsa"), claims(), alg="RS256"),
            "AlgorithmNotAllowedError",
            f"{alg!r} is not exactly one of the configured algorithms (comparison is exact)",
        )
    b.add(
        "alg-none/PS256-outside-narrow-allow-list",
        good("PS256"),
        "AlgorithmNotAllowedError",
        "the key fits PS256 but the configuration allows only RS256: the allow-list "
        "comes from config, never from the token",
        algorithms=("RS256",),
    )


def _public_encodings(label: str) -> Iterator[tuple[str, bytes]]:
    key = keys()[label].public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    yield "pem", key.public_bytes(serialization.Encoding.PEM, spki)
    yield "pem-no-newline", key.public_bytes(serialization.Encoding.PEM, spki).rstrip(b"\n")
    yield "der", key.public_bytes(serialization.Encoding.DER, spki)
    if isinstance(key, rsa.RSAPublicKey):
        pkcs1 = serialization.PublicFormat.PKCS1
        yield "pem-pkcs1", key.public_bytes(serialization.Encoding.PEM, pkcs1)
        yield "der-pkcs1", key.public_bytes(serialization.Encoding.DER, pkcs1)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        yield (
            "x962-point",
            key.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            ),
        )
    else:
        yield "raw", key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = {"rsa": "rsa", "p256": "p256", "ed25519": "ed25519"}[label]
    published = next(j for j in jwks()["keys"] if j.get("kid") == kid)
    yield "jwk-json", json.dumps(published).encode()
    yield "jwk-json-compact", json.dumps(published, separators=(",", ":")).encode()
    yield "jwks-document", json.dumps(jwks()).encode()


def _hmac_confusion(b: _Builder) -> None:
    for label in ("rsa", "p256", "ed25519"):
        for encoding, secret in _public_encodings(label):
            for alg, digest in [
                ("HS256", hashlib.sha256),
                ("HS384", hashlib.sha384),
                ("HS512", hashlib.sha512),
            ]:
                signing_input = f"{seg(header(alg, label))}.{seg(claims())}"
                mac = hmac.new(secret, signing_input.encode(), digest).digest()
                b.add(
                    f"hmac-confusion/{label}/{encoding}/{alg}",
                    f"{signing_input}.{b64url(mac)}",
                    "AlgorithmNotAllowedError",
                    "HS* is never in the allow-list (Auth0Config refuses it: a JWKS holds "
                    "public keys, so an HMAC secret would be public); the public key is "
                    "never used as a MAC secret",
                )
    signing_input = f"{seg(header('HS256', None))}.{seg(claims())}"
    mac = hmac.new(b"", signing_input.encode(), hashlib.sha256).digest()
    b.add(
        "hmac-confusion/no-kid-empty-secret",
        f"{signing_input}.{b64url(mac)}",
        "AlgorithmNotAllowedError",
        "HS256 with no kid and an empty secret: still refused at the allow-list",
    )


def _alg_key_mismatch(b: _Builder) -> None:
    for kid in ("rsa", "p256", "p384", "p521", "ed25519"):
        for alg in ALL_ALGS:
            if alg in _KEY_ALGS[kid]:
                b.add(
                    f"alg-key-mismatch/{alg}-on-{kid}/fits",
                    jws(header(alg, kid), claims()),
                    None,
                    f"{alg} fits the {kid} key",
                )
                continue
            if kid == "rsa" and alg.startswith(("RS", "PS")):
                why = (
                    f"the RSA key published as 'rsa' has no alg in its JWK, so it is used "
                    f"with one algorithm only, RS256, the first RSA one allowed (RFC 8725 "
                    f"§3.1): a {alg} token is refused before any signature check, though "
                    f"signed properly by that very key"
                )
            else:
                why = (
                    f"the key published as {kid!r} cannot verify {alg} (kty/crv must fit "
                    "the token's alg), so the lookup refuses before any signature check"
                )
            b.add(
                f"alg-key-mismatch/{alg}-on-{kid}",
                # Signed properly under alg by the issuer key that does fit it; only
                # the kid points at a key of another type or curve (or, for 'rsa', at
                # the same key bound to another algorithm).
                jws(header(alg, kid), claims()),
                "AlgorithmNotAllowedError",
                why,
                stage=KEY,
            )
    b.add(
        "alg-key-mismatch/ES384-on-p256-signed-with-p256",
        jws(header("ES384", "p256"), claims(), signer="p256"),
        "AlgorithmNotAllowedError",
        "a P-256 key signing with SHA-384 under ES384: ES384 requires P-384 (RFC 7518 §3.4)",
        stage=KEY,
    )
    b.add(
        "alg-key-mismatch/ES256-on-p384-signed-with-p384",
        jws(header("ES256", "p384"), claims(), signer="p384"),
        "AlgorithmNotAllowedError",
        "a P-384 key signing with SHA-256 under ES256: ES256 requires P-256",
        stage=KEY,
    )
    b.add(
        "alg-key-mismatch/ES256-on-p256-hashed-with-sha384",
        jws(header("ES256", "p256"), claims(), signer="p256", alg="ES384"),
        "InvalidSignatureError",
        "the right key and curve but the wrong hash: the ES256 check uses SHA-256",
    )
    for alg in ("RS384", "RS512", "PS256", "PS384", "PS512"):
        b.add(
            f"alg-key-mismatch/{alg}-on-jwk-alg-RS256",
            jws(header(alg, "rsa-rs256"), claims()),
            "AlgorithmNotAllowedError",
            "the JWK declares alg RS256; a key whose own alg differs from the header's "
            "is refused even though its type would fit (RFC 7517 §4.4)",
            stage=KEY,
        )
    rsa_algs = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    for claimed in rsa_algs:
        for actual in rsa_algs:
            if claimed == actual:
                continue
            b.add(
                f"alg-key-mismatch/{actual}-signature-as-{claimed}",
                jws(header(claimed), claims(), alg=actual, signer="rsa"),
                "InvalidSignatureError",
                f"the RSA key fits both, but a {actual} signature is checked as {claimed} "
                "(padding and hash come from the header's alg, so it fails)",
            )


def _attacker_cert() -> bytes:
    key = keys()["attacker-ed25519"]
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tenant.example.auth0.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x5EED)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=timezone.utc))
        .not_valid_after(datetime(2099, 1, 1, tzinfo=timezone.utc))
        .sign(key, None)
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _embedded_keys(b: _Builder) -> None:
    cert = _attacker_cert()
    attackers = {
        "RS256": ("attacker-rsa", "rsa"),
        "ES256": ("attacker-p256", "p256"),
        "EdDSA": ("attacker-ed25519", "ed25519"),
    }
    for alg, (attacker, victim) in attackers.items():
        attacker_jwk = public_jwk(keys()[attacker], kid=victim, alg=alg)
        members = {
            "jwk": attacker_jwk,
            "jku": "https://attacker.example/.well-known/jwks.json",
            "x5u": "https://attacker.example/cert.pem",
            "x5c": [base64.b64encode(cert).decode()],
            "x5t#S256": b64url(hashlib.sha256(cert).digest()),
        }
        for member, value in members.items():
            b.add(
                f"embedded-key/{alg}/{member}/victim-kid",
                jws(header(alg, victim, **{member: value}), claims(), signer=attacker),
                "InvalidSignatureError",
                f"the key comes from the issuer's JWKS by kid, never from the header's "
                f"{member}: the issuer's {victim} key does not verify the attacker's signature",
            )
            b.add(
                f"embedded-key/{alg}/{member}/attacker-kid",
                jws(header(alg, "attacker", **{member: value}), claims(), signer=attacker),
                "UnknownKeyError",
                f"the attacker's own kid is not in the issuer's JWKS; the {member} header "
                "does not add it",
            )
        b.add(
            f"embedded-key/{alg}/jwk/genuine-token",
            jws(header(alg, victim, jwk=public_jwk(keys()[victim])), claims()),
            None,
            "a genuine token carrying a jwk header verifies: the member is ignored, "
            "not a reason to refuse (RFC 7515 §4: unknown-use members are ignored)",
        )
    b.add(
        "embedded-key/ES256/jwk/no-kid",
        jws(
            header("ES256", None, jwk=public_jwk(keys()["attacker-p256"])),
            claims(),
            signer="attacker-p256",
        ),
        "InvalidSignatureError",
        "without kid the one published key that fits ES256 (p256) is used, not the embedded one",
    )
    b.add(
        "embedded-key/RS256/jwk/no-kid-several-fitting",
        jws(
            header("RS256", None, jwk=public_jwk(keys()["attacker-rsa"])),
            claims(),
            signer="attacker-rsa",
        ),
        "UnknownKeyError",
        "without kid and with several published keys fitting RS256, no key is guessed "
        "(and the embedded one is never considered)",
    )


def _crit_b64(b: _Builder) -> None:
    variants: list[tuple[str, dict[str, Any]]] = [
        ("crit-b64-with-b64-false", {"crit": ["b64"], "b64": False}),
        ("crit-b64-with-b64-true", {"crit": ["b64"], "b64": True}),
        ("crit-exp", {"crit": ["exp"], "exp": NOW + 3600}),
        ("crit-unknown-uri", {"crit": ["https://ext.example/x"], "https://ext.example/x": 1}),
        ("crit-names-absent-member", {"crit": ["nope"]}),
        ("crit-empty-list", {"crit": []}),
        ("crit-string", {"crit": "b64"}),
        ("crit-null", {"crit": None}),
        ("crit-registered-alg", {"crit": ["alg"]}),
        ("b64-false", {"b64": False}),
        ("b64-string-false", {"b64": "false"}),
        ("b64-zero", {"b64": 0}),
        ("b64-null", {"b64": None}),
    ]
    for name, extra in variants:
        b.add(
            f"crit-b64/{name}",
            jws(header("RS256", **extra), claims()),
            "UnsupportedHeaderError",
            "we implement no JWS extensions: any crit (even empty, null or malformed) names "
            "an extension we do not understand, so the token MUST be refused (RFC 7515 "
            "§4.1.11); b64 other than true would mean an unencoded payload (RFC 7797)",
        )
    b.add(
        "crit-b64/b64-true-without-crit",
        jws(header("RS256", b64=True), claims()),
        None,
        "b64: true is the default encoding (RFC 7797 §3), so it changes nothing",
    )


def _signature_encoding(b: _Builder) -> None:
    rng = _rng("signature-encoding")
    for alg in ("RS256", "PS256", "ES256", "ES512", "EdDSA"):
        # Deterministic schemes give the same signature for the same input, so search a
        # jti whose signature holds '-' or '_' (for the standard-alphabet case).
        for jti in range(1000):
            token = good(alg, jti=f"sig-{jti}")
            if "-" in token.rsplit(".", 1)[1] or "_" in token.rsplit(".", 1)[1]:
                break
        h, p, s = token.split(".")
        raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
        pre = f"signature-encoding/{alg}"
        b.add(
            f"{pre}/stripped",
            f"{h}.{p}.",
            "MalformedTokenError",
            "an empty signature segment: an unsigned token is never verified",
        )
        b.add(
            f"{pre}/segment-dropped",
            f"{h}.{p}",
            "MalformedTokenError",
            "two segments: the signature segment is missing altogether",
        )
        b.add(
            f"{pre}/truncated-byte",
            f"{h}.{p}.{b64url(raw[:-1])}",
            "InvalidSignatureError",
            "one byte short (canonical base64url): a well-formed but wrong signature",
        )
        cut = s[:-1]
        b.add(
            f"{pre}/truncated-char",
            f"{h}.{p}.{cut}",
            "InvalidSignatureError" if _canonical_b64url(cut) else "MalformedTokenError",
            "one character short: malformed when that leaves an impossible length or "
            "non-zero spare bits, otherwise a wrong signature",
        )
        b.add(
            f"{pre}/zero-byte-appended",
            f"{h}.{p}.{b64url(raw + _ZERO)}",
            "InvalidSignatureError",
            "trailing bytes after a signature are not ignored",
        )
        b.add(
            f"{pre}/zero-byte-prepended",
            f"{h}.{p}.{b64url(_ZERO + raw)}",
            "InvalidSignatureError",
            "a leading zero byte changes the signature's length: not ignored",
        )
        positions = sorted({0, len(raw) * 8 - 1, *rng.sample(range(len(raw) * 8), 4)})
        for bit in positions:
            flipped = bytearray(raw)
            flipped[bit // 8] ^= 0x80 >> (bit % 8)
            b.add(
                f"{pre}/bit-flip-{bit}",
                f"{h}.{p}.{b64url(bytes(flipped))}",
                "InvalidSignatureError",
                "any single flipped bit breaks the signature",
            )
        b.add(
            f"{pre}/padded",
            f"{h}.{p}.{s}{'=' * (-len(s) % 4 or 1)}",
            "MalformedTokenError",
            "JWS base64url has no padding (RFC 7515 §2); '=' is refused, not stripped",
        )
        b.add(
            f"{pre}/padded-double",
            f"{h}.{p}.{s}==",
            "MalformedTokenError",
            "padding of any length is refused",
        )
        std = s.translate(str.maketrans("-_", "+/"))
        assert std != s
        b.add(
            f"{pre}/standard-alphabet",
            f"{h}.{p}.{std}",
            "MalformedTokenError",
            "'+' and '/' are standard base64, not base64url: refused, not translated",
        )
        if len(s) % 4 in (2, 3):
            b.add(
                f"{pre}/non-canonical",
                f"{h}.{p}.{_non_canonical(s)}",
                "MalformedTokenError",
                "non-zero spare bits in the last character: a second spelling of the "
                "same bytes, refused so every signature has exactly one encoding",
            )
        for name, char in [("space", " "), ("newline", "\n"), ("tab", "\t"), ("dot", ".")]:
            b.add(
                f"{pre}/{name}-inside",
                f"{h}.{p}.{s[:20]}{char}{s[20:]}",
                "MalformedTokenError",
                "characters outside base64url are refused, never skipped",
            )
        b.add(
            f"{pre}/all-zero",
            f"{h}.{p}.{b64url(bytes(len(raw)))}",
            "InvalidSignatureError",
            "an all-zero signature of the right length",
        )
        other = good(alg, jti="another-token").rsplit(".", 1)[1]
        b.add(
            f"{pre}/from-another-token",
            f"{h}.{p}.{other}",
            "InvalidSignatureError",
            "a genuine signature over another payload",
        )
    _rsa_signature_values(b)
    _ecdsa_signature_values(b)
    _eddsa_signature_values(b)
    token = good("RS256", jti="segments")
    h, p, s = token.split(".")
    b.add(
        "signature-encoding/header-non-canonical",
        f"{_non_canonical(h) if len(h) % 4 in (2, 3) else h + '='}.{p}.{s}",
        "MalformedTokenError",
        "the header segment must be canonical unpadded base64url as well",
    )
    payload_nc = _non_canonical(p) if len(p) % 4 in (2, 3) else p + "="
    b.add(
        "signature-encoding/payload-non-canonical",
        f"{h}.{payload_nc}.{s}",
        "MalformedTokenError",
        "the payload segment must be canonical unpadded base64url as well",
    )
    b.add(
        "signature-encoding/header-padded",
        f"{h}=.{p}.{s}",
        "MalformedTokenError",
        "no padding in any segment",
    )
    b.add(
        "signature-encoding/payload-standard-alphabet",
        f"{h}.{p.translate(str.maketrans('-_', '+/'))}x.{s}",
        "MalformedTokenError",
        "standard-alphabet characters in the payload segment",
    )


def _rsa_signature_values(b: _Builder) -> None:
    h, p, _ = good("RS256", jti="rsa-values").split(".")
    n = keys()["rsa"].public_key().public_numbers().n  # type: ignore[union-attr]
    for name, value, length in [
        ("equals-modulus", n, 256),
        ("modulus-minus-one", n - 1, 256),
        ("modulus-plus-one", n + 1, 257),
        ("one", 1, 256),
        ("one-short", 1, 1),
    ]:
        b.add(
            f"signature-encoding/RS256/{name}",
            f"{h}.{p}.{b64url(value.to_bytes(length, 'big'))}",
            "InvalidSignatureError",
            "an RSA signature representative outside [1, n-1] or of the wrong length "
            "(RFC 8017 §8.2.2) is simply invalid",
        )


def _ecdsa_signature_values(b: _Builder) -> None:
    token = good("ES256", jti="ecdsa-values")
    h, p, s = token.split(".")
    raw = base64.urlsafe_b64decode(s + "==")
    r, s_int = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    high_s = r.to_bytes(32, "big") + (P256_ORDER - s_int).to_bytes(32, "big")
    b.add(
        "signature-encoding/ES256/high-s",
        f"{h}.{p}.{b64url(high_s)}",
        None,
        "ECDSA signatures are malleable: (r, n - s) verifies like (r, s). RFC 7518 "
        "does not require low-S and common signers emit either, so refusing would "
        "refuse genuine tokens. Consequence (documented in SECURITY.md): a token's "
        "string is not a unique id; use jti for replay detection",
    )
    for name, value in [
        ("r-s-swapped", raw[32:] + raw[:32]),
        ("r-zero-s-zero", bytes(64)),
        ("r-is-order", P256_ORDER.to_bytes(32, "big") + raw[32:]),
        ("s-is-order", raw[:32] + P256_ORDER.to_bytes(32, "big")),
        ("s-plus-order", raw[:32] + (s_int + P256_ORDER).to_bytes(33, "big")),
        ("coordinates-padded", b"\x00" + raw[:32] + b"\x00" + raw[32:]),
        ("der-encoded", encode_dss_signature(r, s_int)),
    ]:
        b.add(
            f"signature-encoding/ES256/{name}",
            f"{h}.{p}.{b64url(value)}",
            "InvalidSignatureError",
            "JWS ECDSA is exactly R || S, each the curve's length, 0 < r, s < n "
            "(RFC 7518 §3.4): anything else does not verify",
        )


def _eddsa_signature_values(b: _Builder) -> None:
    h, p, s = good("EdDSA", jti="eddsa-values").split(".")
    raw = base64.urlsafe_b64decode(s + "==")
    big_s = int.from_bytes(raw[32:], "little") + ED25519_L
    identity = (1).to_bytes(32, "little")
    for name, value, why in [
        (
            "s-plus-l",
            raw[:32] + big_s.to_bytes(32, "little"),
            "a non-canonical S (S >= L) is refused (RFC 8032 §5.1.7), closing malleability",
        ),
        (
            "identity-r-zero-s",
            identity + bytes(32),
            "R = identity, S = 0: the small-order trick that fools some verifiers",
        ),
    ]:
        b.add(
            f"signature-encoding/EdDSA/{name}",
            f"{h}.{p}.{b64url(value)}",
            "InvalidSignatureError",
            why,
        )


def _tamper(b: _Builder) -> None:
    h, p, s = good("RS256", jti="tamper").split(".")
    edits: list[tuple[str, dict[str, Any] | bytes]] = [
        ("sub", claims(jti="tamper", sub="auth0|admin")),
        ("scope", claims(jti="tamper", scope="read:messages admin")),
        ("exp-extended", claims(jti="tamper", exp=NOW + 10 * 365 * 86400)),
        ("aud-added", claims(jti="tamper", aud=[AUD, "https://other.example"])),
        ("reserialised-with-spaces", json.dumps(claims(jti="tamper")).encode()),
        (
            "members-reordered",
            json.dumps(
                dict(reversed(claims(jti="tamper").items())), separators=(",", ":")
            ).encode(),
        ),
        (
            "trailing-newline",
            json.dumps(claims(jti="tamper"), separators=(",", ":")).encode() + b"\n",
        ),
    ]
    for name, payload in edits:
        b.add(
            f"tamper/payload-{name}",
            f"{h}.{seg(payload)}.{s}",
            "InvalidSignatureError",
            "the signature covers the exact payload text: any edit after signing breaks it",
        )
    other_payload = good("RS256", jti="other").split(".")[1]
    b.add(
        "tamper/payload-swapped-from-another-token",
        f"{h}.{other_payload}.{s}",
        "InvalidSignatureError",
        "cut and paste between genuine tokens: each signature covers only its own payload",
    )
    for name, hdr in [
        ("typ", header("RS256", typ="JWT")),
        ("kid-same-key", header("RS256", "rsa-rs256")),
        ("alg-RS512", header("RS512")),
        ("alg-PS256", header("PS256")),
        ("extra-member", header("RS256", x="y")),
    ]:
        b.add(
            f"tamper/header-{name}",
            f"{seg(hdr)}.{p}.{s}",
            "InvalidSignatureError",
            "the signature covers the exact header text as well",
        )
    b.add(
        "tamper/iss-switched-to-other-configured-issuer",
        f"{h}.{seg(claims(jti='tamper', iss=ISS_ALT))}.{s}",
        "InvalidSignatureError",
        "iss passes the precheck (both issuers are configured) and the signature fails",
        additional_issuers=(ISS_ALT,),
    )
    b.add(
        "tamper/iss-switched-to-unconfigured-issuer",
        f"{h}.{seg(claims(jti='tamper', iss=ISS_ALT))}.{s}",
        "InvalidIssuerError",
        "an unconfigured iss is refused before any key lookup, whatever the signature",
    )


def _time(b: _Builder) -> None:
    for leeway in (0, 5, 60):
        lw = {"leeway": leeway}
        pre = f"time/leeway-{leeway}"
        for label, exp, expect in [
            ("exp-one-second-past-leeway", NOW - leeway - 1, "ExpiredTokenError"),
            ("exp-at-leeway-edge", NOW - leeway, "ExpiredTokenError"),
            ("exp-half-second-inside", NOW - leeway + 0.5, None),
            ("exp-one-second-inside", NOW - leeway + 1, None),
        ]:
            b.add(
                f"{pre}/{label}",
                good(exp=exp),
                expect,
                "RFC 7519 §4.1.4: now must be before exp; with leeway, refused once "
                "exp + leeway <= now (so exp + leeway == now is expired)",
                **lw,
            )
        for label, nbf, expect in [
            ("nbf-at-leeway-edge", NOW + leeway, None),
            ("nbf-half-second-beyond", NOW + leeway + 0.5, "ImmatureTokenError"),
            ("nbf-one-second-beyond", NOW + leeway + 1, "ImmatureTokenError"),
        ]:
            b.add(
                f"{pre}/{label}",
                good(nbf=nbf),
                expect,
                "RFC 7519 §4.1.5: now must be on or after nbf; with leeway, refused "
                "once nbf > now + leeway",
                **lw,
            )
        for label, iat, expect in [
            ("iat-at-leeway-edge", NOW + leeway, None),
            ("iat-half-second-beyond", NOW + leeway + 0.5, "IssuedInFutureError"),
        ]:
            b.add(
                f"{pre}/{label}",
                good(iat=iat),
                expect,
                "a token issued in the future (beyond leeway) is refused: RFC 7519 "
                "leaves iat unchecked, we choose the stricter reading",
                **lw,
            )
        for label, iat, expect in [
            ("max-age-at-edge", NOW - 60 - leeway, "TokenTooOldError"),
            ("max-age-half-second-inside", NOW - 60 - leeway + 0.5, None),
        ]:
            b.add(
                f"{pre}/{label}",
                good(iat=iat),
                expect,
                "max_token_age=60: refused once iat + 60 + leeway <= now",
                max_token_age=60,
                **lw,
            )
    b.add(
        "time/exp-missing",
        good(exp=DROP),
        "MissingClaimError",
        "exp is always required: a token without one would never expire",
        required_claims=(),
    )
    b.add("time/iat-missing", good(iat=DROP), "MissingClaimError", "iat is required by default")
    b.add(
        "time/iat-missing-not-required",
        good(iat=DROP),
        None,
        "required_claims=() drops the iat requirement",
        required_claims=(),
    )
    b.add(
        "time/iat-missing-with-max-age",
        good(iat=DROP),
        "MissingClaimError",
        "max_token_age cannot be enforced without iat",
        required_claims=(),
        max_token_age=60,
    )
    b.add("time/exp-largest-date", good(exp=253402300799), None, "9999-12-31T23:59:59Z is allowed")
    for name, token, expect in [
        ("exp-zero", good(exp=0), "ExpiredTokenError"),
        ("exp-negative", good(exp=-1), "ExpiredTokenError"),
        ("exp-negative-zero", good(exp=-0.0), "ExpiredTokenError"),
        ("iat-zero", good(iat=0), None),
        ("nbf-negative", good(nbf=-1), None),
    ]:
        b.add(f"time/{name}", token, expect, "ordinary (if odd) NumericDates, judged by value")
    for name in ("exp", "nbf", "iat"):
        _wrong_types(b, name)


def _raw_claims(name: str, literal: str) -> bytes:
    """A payload whose ``name`` claim is the raw JSON ``literal``."""
    body = claims(**{name: 1234567})
    return json.dumps(body, separators=(",", ":")).replace("1234567", literal, 1).encode()


def _wrong_types(b: _Builder, name: str) -> None:
    pre = f"time/{name}-type"
    values: list[tuple[str, Any]] = [
        ("numeric-string", str(NOW + 100)),
        ("empty-string", ""),
        ("iso-date-string", "2027-01-15T08:00:00Z"),
        ("true", True),
        ("false", False),
        ("array", [NOW + 100]),
        ("object", {"$date": NOW + 100}),
        ("too-large", 253402300800),
        ("huge", 10**20),
        ("huge-negative", -(10**20)),
        ("4000-digits", int("9" * 4000)),
    ]
    for label, value in values:
        b.add(
            f"{pre}/{label}",
            good(**{name: value}),
            "InvalidClaimError",
            f"{name} must be a JSON number (not bool, which Python counts as int) within "
            "year 9999 (RFC 7519 §2 NumericDate)",
        )
    b.add(
        f"{pre}/null",
        good(**{name: None}),
        "MissingClaimError" if name == "exp" else "InvalidClaimError",
        "exp: null counts as missing (exp is required either way); a present nbf/iat of "
        "null is a wrong type, never read as absent (stricter than null == absent)",
    )
    for label, literal in [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity")]:
        b.add(
            f"{pre}/{label}",
            jws(header("RS256"), _raw_claims(name, literal)),
            "MalformedTokenError",
            f"{literal} is not JSON (RFC 8259 §6); the payload is refused as malformed",
        )
    for label, literal in [("1e400", "1e400"), ("-1e400", "-1e400")]:
        b.add(
            f"{pre}/{label}",
            jws(header("RS256"), _raw_claims(name, literal)),
            "MalformedTokenError",
            "a number literal that overflows a double would become infinite, which JSON "
            "cannot hold and NaN/Infinity would smuggle in: the payload is malformed",
        )
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    b.add(
        f"{pre}/5000-digits",
        jws(header("RS256"), _raw_claims(name, "9" * 5000)),
        "MalformedTokenError" if 0 < limit < 5000 else "InvalidClaimError",
        "a 5000-digit integer: Python's int-digit limit (3.10.7+/3.11+) refuses it while "
        "decoding (malformed); without the limit it decodes and is out of range",
    )
    accepted = {"exp": NOW + 100, "nbf": NOW - 100, "iat": NOW - 100}[name]
    b.add(
        f"{pre}/exponent-notation",
        jws(header("RS256"), _raw_claims(name, f"{accepted / 1e9}e9")),
        None,
        "an exponent is an ordinary way to write a JSON number",
    )
    b.add(
        f"{pre}/fraction",
        good(**{name: accepted + 0.25}),
        None,
        "NumericDate may be non-integer (RFC 7519 §2)",
    )


def _issuer(b: _Builder) -> None:
    lookalikes = {
        "no-trailing-slash": ISS.rstrip("/"),
        "double-slash": ISS + "/",
        "host-uppercase": ISS.replace("tenant", "TENANT"),
        "scheme-uppercase": ISS.replace("https", "HTTPS"),
        "http-scheme": ISS.replace("https", "http"),
        "suffix-domain": "https://tenant.example.auth0.com.evil.example/",
        "prefix-domain": "https://evil-tenant.example.auth0.com/",
        "subdomain": "https://evil.tenant.example.auth0.com/",
        "path-appended": ISS + "evil",
        "issuer-in-path": "https://evil.example/tenant.example.auth0.com/",
        "userinfo": "https://tenant.example.auth0.com@evil.example/",
        "default-port": "https://tenant.example.auth0.com:443/",
        "trailing-dot-host": "https://tenant.example.auth0.com./",
        "query": ISS + "?",
        "fragment": ISS + "#",
        "percent-encoded-slash": ISS.rstrip("/") + "%2F",
        "leading-space": " " + ISS,
        "trailing-space": ISS + " ",
        "trailing-newline": ISS + "\n",
        "trailing-nul": ISS + "\x00",
        "cyrillic-a": ISS.replace("example", "ex\u0430mple"),
        "fullwidth-slash": ISS.rstrip("/") + "\uff0f",
        "truncated": ISS[:-3],
        "empty": "",
    }
    for name, iss in lookalikes.items():
        b.add(
            f"issuer/{name}",
            good(iss=iss),
            "InvalidIssuerError",
            "iss is compared as an exact string to the configured issuer(s) (RFC 7519 "
            "§4.1.1, OIDC discovery §4.3); no URL normalisation, so no look-alike passes, "
            "and the check runs before any key lookup",
        )
    for name, iss in [
        ("array", [ISS]),
        ("object", {"iss": ISS}),
        ("number", 1),
        ("true", True),
        ("null", None),
        ("missing", DROP),
    ]:
        b.add(
            f"issuer/type-{name}",
            good(iss=iss),
            "InvalidIssuerError",
            "iss must be present and a string",
        )
    b.add(
        "issuer/additional-issuer-configured",
        good(iss=ISS_ALT),
        None,
        "an issuer listed in additional_issuers is accepted",
        additional_issuers=(ISS_ALT,),
    )
    b.add(
        "issuer/additional-issuer-not-configured",
        good(iss=ISS_ALT),
        "InvalidIssuerError",
        "the same token without that configuration is refused",
    )


def _audience(b: _Builder) -> None:
    refused: dict[str, Any] = {
        "substring": "api.example.com",
        "prefix": AUD[:-1],
        "superstring-domain": AUD + ".evil.example",
        "trailing-slash": AUD + "/",
        "uppercase": AUD.upper(),
        "leading-space": " " + AUD,
        "space-separated-list": f"{AUD} https://other.example",
        "fullwidth-h": "\uff48" + AUD[1:],
        "empty-string": "",
        "object": {"aud": AUD},
        "object-key": {AUD: True},
        "empty-array": [],
        "nested-array": [[AUD]],
        "array-with-null": [AUD, None],
        "array-with-number": [AUD, 1],
        "array-with-nested": [AUD, [AUD]],
        "array-of-lookalikes": [AUD[:-1], "api.example.com", AUD + "/"],
        "number": 1,
        "true": True,
    }
    for name, aud in refused.items():
        b.add(
            f"audience/{name}",
            good(aud=aud),
            "InvalidAudienceError",
            "aud is a string or a non-empty array of strings (RFC 7519 §4.1.3) and must "
            "contain a configured audience exactly; an array with any non-string member "
            "is refused as a whole (stricter than skipping it)",
        )
    for name, aud in [("null", None), ("missing", DROP)]:
        b.add(f"audience/{name}", good(aud=aud), "MissingClaimError", "aud is always required")
    for name, aud in [
        ("array-single", [AUD]),
        ("array-among-others", ["https://other.example", AUD]),
        ("array-duplicated", [AUD, AUD]),
    ]:
        b.add(f"audience/{name}", good(aud=aud), None, "an array containing the audience")
    b.add(
        "audience/second-configured-audience",
        good(aud="https://second.example"),
        None,
        "any configured audience matches",
        audience=(AUD, "https://second.example"),
    )


def _raw_payload(*members: str) -> bytes:
    """A JSON object from raw ``"name":value`` member texts (duplicates allowed)."""
    return ("{" + ",".join(members) + "}").encode()


def _base_members(**over: Any) -> list[str]:
    return [f"{json.dumps(k)}:{json.dumps(v)}" for k, v in claims(**over).items()]


def _duplicates(b: _Builder) -> None:
    why = (
        "duplicate member names are refused (RFC 7515 §5.2 and RFC 7519 §4 allow "
        "'reject' or 'last wins'; two parsers picking different duplicates is a "
        "classic confusion attack, so we take the strict option)"
    )
    payloads = {
        "iss-evil-then-good": _raw_payload('"iss":"https://evil.example/"', *_base_members()),
        "aud-other-then-good": _raw_payload('"aud":"https://other.example"', *_base_members()),
        "exp-past-then-future": _raw_payload(f'"exp":{NOW - 100}', *_base_members()),
        "sub-twice": _raw_payload(*_base_members(), '"sub":"auth0|admin"'),
        "identical-twice": _raw_payload(*_base_members(), '"sub":"auth0|adversary"'),
        "escaped-name": _raw_payload(*_base_members(), '"\\u0069ss":"https://evil.example/"'),
        "nested-object": _raw_payload(*_base_members(), '"ctx":{"role":"user","role":"admin"}'),
        "object-in-array": _raw_payload(*_base_members(), '"orgs":[{"id":1,"id":2}]'),
    }
    for name, payload in payloads.items():
        b.add(
            f"duplicates/payload-{name}",
            jws(header("RS256"), payload),
            "MalformedTokenError",
            why,
        )
    headers = {
        "alg-none-then-rs256": b'{"alg":"none","alg":"RS256","kid":"rsa"}',
        "alg-rs256-then-none": b'{"alg":"RS256","alg":"none","kid":"rsa"}',
        "kid-twice": b'{"alg":"RS256","kid":"attacker","kid":"rsa"}',
        "crit-hidden": b'{"alg":"RS256","kid":"rsa","crit":["x"],"crit":null}',
    }
    for name, hdr in headers.items():
        b.add(
            f"duplicates/header-{name}",
            jws(hdr, claims(), alg="RS256"),
            "MalformedTokenError",
            why,
        )
    b.add(
        "duplicates/case-different-names",
        jws(header("RS256"), _raw_payload(*_base_members(), '"ISS":"https://evil.example/"')),
        None,
        "names are case-sensitive (RFC 8259): 'ISS' is another, ignored, claim",
    )


def _encoding(b: _Builder) -> None:
    text = json.dumps(claims(), separators=(",", ":"))
    malformed = {
        "utf8-bom": b"\xef\xbb\xbf" + text.encode(),
        "utf16-le-bom": text.encode("utf-16"),
        "utf16-be": text.encode("utf-16-be"),
        "utf16-le": text.encode("utf-16-le"),
        "utf32": text.encode("utf-32"),
        "latin1-byte": text.replace("adversary", "advers\u00e9ry").encode("latin-1"),
        "overlong-slash": text.replace("auth0|", "auth0\xc0\xaf").encode("latin-1"),
        "cesu-surrogate": text.encode()[:-1] + b',"x":"\xed\xa0\x80"}',
        "lone-high-surrogate-escape": text.encode()[:-1] + b',"x":"\\ud800"}',
        "lone-low-surrogate-escape": text.encode()[:-1] + b',"x":"\\udc00 "}',
        "leading-space": b" " + text.encode(),
        "trailing-garbage": text.encode() + b"x",
        "two-objects": text.encode() + b"{}",
        "trailing-nul": text.encode() + b"\x00",
        "array": json.dumps([claims()]).encode(),
        "string": json.dumps(text).encode(),
        "number": b"1",
        "null": b"null",
        "true": b"true",
        "nested-jws": json.dumps(good("RS256")).encode(),
    }
    for name, payload in malformed.items():
        b.add(
            f"encoding/payload-{name}",
            jws(header("RS256"), payload),
            "MalformedTokenError",
            "the payload must be one JSON object in UTF-8 (RFC 7519 §7.2, RFC 8259 §8.1): "
            "no BOM, no UTF-16/32, no invalid UTF-8, no lone surrogates (I-JSON, our "
            "stricter choice), no leading whitespace (no JWS producer writes it; we "
            "refuse it), nothing after the object",
        )
    b.add(
        "encoding/header-utf8-bom",
        jws(b"\xef\xbb\xbf" + json.dumps(header("RS256")).encode(), claims(), alg="RS256"),
        "MalformedTokenError",
        "the header follows the same rules",
    )
    b.add(
        "encoding/header-utf16",
        jws(json.dumps(header("RS256")).encode("utf-16"), claims(), alg="RS256"),
        "MalformedTokenError",
        "the header follows the same rules",
    )
    for name, payload, why in [
        (
            "paired-surrogate-escape",
            text.encode()[:-1] + b',"x":"\\ud83d\\ude00"}',
            "a correctly paired escape is one ordinary character",
        ),
        (
            "escaped-nul",
            text.encode()[:-1] + b',"x":"a\\u0000b"}',
            "U+0000 is a legal character in a JSON string; claims are data",
        ),
        (
            "trailing-whitespace",
            text.encode() + b"\n",
            "insignificant whitespace after the value is allowed by RFC 8259; the "
            "signature covers the exact bytes anyway",
        ),
        (
            "non-ascii-utf8",
            text.replace("adversary", "adv\u00e9rsary").encode(),
            "non-ASCII claims are fine in UTF-8",
        ),
    ]:
        b.add(f"encoding/payload-{name}", jws(header("RS256"), payload), None, why)
    h, p, s = good("RS256", jti="non-ascii").split(".")
    for name, token in [
        ("non-ascii-in-token", f"{h}.{p[:-1]}\u00e9.{s}"),
        ("fullwidth-dot-separator", f"{h}\uff0e{p}\uff0e{s}"),
        ("zero-width-space", f"{h}.{p}\u200b.{s}"),
    ]:
        b.add(
            f"encoding/{name}",
            token,
            "MalformedTokenError",
            "a compact JWS is ASCII; anything else is refused before decoding",
        )


def _segments(b: _Builder) -> None:
    token = good("RS256", jti="segments-count")
    h, p, s = token.split(".")
    jwe_header = seg({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "rsa"})
    cases = {
        "one": h,
        "two": f"{h}.{p}",
        "four": f"{token}.{s}",
        "four-trailing-dot": f"{token}.",
        "four-leading-dot": f".{token}",
        "four-double-dot": f"{h}..{p}.{s}",
        "five-jwe-shaped": f"{jwe_header}.{s[:40]}.{s[40:56]}.{p}.{s[56:78]}",
        "five-repeated": f"{token}.{p}.{s}",
        "six": f"{token}.{token}",
        "only-dots-2": "..",
        "only-dots-3": "...",
        "only-dots-4": "....",
        "empty": "",
        "json-serialization-flattened": json.dumps({"protected": h, "payload": p, "signature": s}),
        "json-serialization-general": json.dumps(
            {"payload": p, "signatures": [{"protected": h, "signature": s}]}
        ),
        "bearer-prefix": f"Bearer {token}",
        "leading-space": f" {token}",
        "trailing-newline": f"{token}\n",
        "quoted": f'"{token}"',
        "empty-header": f".{p}.{s}",
        "empty-payload": f"{h}..{s}",
    }
    for name, tok in cases.items():
        b.add(
            f"segments/{name}",
            tok,
            "MalformedTokenError",
            "only the compact JWS serialization (three non-empty base64url segments) is "
            "accepted; JWE (five segments) and JSON serializations are not supported",
        )


def _padded_to(size: int, **over: Any) -> str:
    """A genuine RS256 token of exactly ``size`` characters."""
    for extra in range(8):
        hdr = header("RS256", x="y" * extra)
        fixed = len(seg(hdr)) + 2 + 342  # a 2048-bit RSA signature is 342 characters
        need = size - fixed
        if need % 4 == 1:
            continue
        base = json.dumps(claims(pad="", **over), separators=(",", ":")).encode()
        n = need * 3 // 4
        payload = base.replace(b'"pad":""', b'"pad":"' + b"p" * (n - len(base)) + b'"')
        token = jws(hdr, payload)
        assert len(token) == size, (len(token), size)
        return token
    raise AssertionError("unreachable")


def _size(b: _Builder) -> None:
    cap = 16 * 1024
    b.add(
        "size/exactly-default-cap",
        _padded_to(cap),
        None,
        "a genuine token of exactly max_token_size (16 KiB) characters is accepted",
    )
    b.add(
        "size/one-over-default-cap",
        _padded_to(cap + 1),
        "TokenTooLargeError",
        "one character over max_token_size is refused before any decoding",
    )
    b.add(
        "size/configured-cap",
        _padded_to(1000),
        "TokenTooLargeError",
        "a smaller configured cap applies",
        max_token_size=999,
    )
    b.add(
        "size/one-mebibyte-garbage",
        "a" * (1 << 20),
        "TokenTooLargeError",
        "size is the first check: a huge string costs one len()",
    )
    b.add(
        "size/huge-non-ascii",
        "\u00e9" * (1 << 18),
        "TokenTooLargeError",
        "the size check comes before the ASCII check",
    )
    b.add(
        "size/huge-valid-shape",
        _padded_to(1 << 16),
        "TokenTooLargeError",
        "a genuine but oversized token is refused too: the cap is not a heuristic",
    )


def _kid(b: _Builder) -> None:
    unknown = {
        "257-chars": ("k" * 257, "MalformedTokenError"),
        "case-variant": ("RSA", "UnknownKeyError"),
        "trailing-space": ("rsa ", "UnknownKeyError"),
        "empty": ("", "UnknownKeyError"),
        "path-traversal": ("../../../../dev/null", "UnknownKeyError"),
        "sql": ("rsa' OR '1'='1", "UnknownKeyError"),
        "newline-log-injection": ("x\nreason=ok kid=rsa", "UnknownKeyError"),
        "url": ("https://attacker.example/key", "UnknownKeyError"),
        "nul": ("rsa\x00", "UnknownKeyError"),
        "256-chars-unknown": ("x" * 256, "UnknownKeyError"),
    }
    for name, (kid, expect) in unknown.items():
        b.add(
            f"kid/{name}",
            jws(_header_with_kid(kid), claims(), alg="RS256"),
            expect,
            "kid is an opaque, case-sensitive string looked up exactly in the published "
            "set (never a path, URL or query); over MAX_KID_LENGTH (256) it is malformed",
            stage=PRECHECK if expect == "MalformedTokenError" else KEY,
        )
    for name, kid in [
        ("null", None),
        ("number", 1),
        ("true", True),
        ("array", ["rsa"]),
        ("object", {"kid": "rsa"}),
    ]:
        b.add(
            f"kid/type-{name}",
            jws(_header_with_kid(kid), claims(), alg="RS256"),
            "MalformedTokenError",
            "a present kid must be a string (RFC 7515 §4.1.4); null is not read as "
            "'no kid' (stricter than null == absent)",
        )


def _header_with_kid(kid: Any) -> dict[str, Any]:
    return {"alg": "RS256", "typ": "at+jwt", "kid": kid}


def _typ(b: _Builder) -> None:
    for label, typ, expect in [
        ("at+jwt", "at+jwt", None),
        ("application-at+jwt", "application/at+jwt", None),
        ("AT+JWT", "AT+JWT", None),
        ("JWT", "JWT", "InvalidTypeError"),
        ("jwt", "jwt", "InvalidTypeError"),
        ("trailing-space", "at+jwt ", "InvalidTypeError"),
        ("application-jwt", "application/jwt", "InvalidTypeError"),
        ("id_token", "id_token", "InvalidTypeError"),
        ("missing", DROP, "InvalidTypeError"),
    ]:
        b.add(
            f"typ/strict-{label}",
            jws(header("RS256", typ=typ), claims()),
            expect,
            "with strict_typ, typ must be at+jwt or application/at+jwt, compared "
            "case-insensitively (RFC 9068 §4); this refuses ID tokens used as access tokens",
            strict_typ=True,
        )
    for label, typ in [("null", None), ("array", ["at+jwt"]), ("number", 1)]:
        for strict in (True, False):
            b.add(
                f"typ/{'strict' if strict else 'lenient'}-{label}",
                jws(header("RS256", typ=typ), claims()),
                "MalformedTokenError",
                "typ is a media type, a string (RFC 7515 §4.1.9): any other value is a "
                "malformed header, whether or not strict_typ reads it",
                strict_typ=strict,
            )
    b.add(
        "typ/lenient-JWT",
        jws(header("RS256", typ="JWT"), claims()),
        None,
        "without strict_typ (Auth0's default tokens say typ JWT) typ is not checked",
    )


def _ordering(b: _Builder) -> None:
    h, _, s = good("RS256", jti="ordering").split(".")
    bad_sig = b64url(bytes(256))
    expired_forged = f"{h}.{seg(claims(jti='ordering', exp=NOW - 1000))}.{bad_sig}"
    b.add(
        "ordering/forged-and-expired",
        expired_forged,
        "InvalidSignatureError",
        "the signature is checked before any claim: a forged token learns nothing "
        "about which claims would have failed",
    )
    b.add(
        "ordering/forged-wrong-audience",
        f"{h}.{seg(claims(jti='ordering', aud='https://other.example'))}.{bad_sig}",
        "InvalidSignatureError",
        "the signature is checked before aud as well",
    )
    # DESIGN.md's order after the signature: exp, nbf, iat, aud, typ, required
    # claims, max_token_age. It decides the reason a token failing several gets.
    b.add(
        "ordering/forged-with-wrong-typ",
        f"{seg(header('RS256', typ='JWT'))}.{seg(claims(jti='ordering'))}.{bad_sig}",
        "InvalidSignatureError",
        "typ is a claims-stage check: a forged token is refused for its signature first",
        strict_typ=True,
    )
    b.add(
        "ordering/expired-with-wrong-typ",
        jws(header("RS256", typ="JWT"), claims(jti="ordering", exp=NOW - 1000)),
        "ExpiredTokenError",
        "exp is checked before typ",
        strict_typ=True,
    )
    b.add(
        "ordering/wrong-audience-with-wrong-typ",
        jws(header("RS256", typ="JWT"), claims(jti="ordering", aud="https://other.example")),
        "InvalidAudienceError",
        "aud is checked before typ",
        strict_typ=True,
    )
    b.add(
        "ordering/wrong-typ-missing-required-claim",
        jws(header("RS256", typ="JWT"), claims(jti="ordering", iat=DROP)),
        "InvalidTypeError",
        "typ is checked before the required claims",
        strict_typ=True,
    )
    b.add(
        "ordering/too-old-wrong-audience",
        jws(header("RS256"), claims(jti="ordering", iat=NOW - 600, aud="https://other.example")),
        "InvalidAudienceError",
        "max_token_age comes last: aud is checked before it",
        max_token_age=60,
    )
    b.add(
        "ordering/too-old-missing-required-claim",
        jws(header("RS256"), claims(jti="ordering", iat=NOW - 600)),
        "MissingClaimError",
        "max_token_age comes last: the required claims are checked before it",
        max_token_age=60,
        required_claims=("iat", "azp"),
    )
    b.add(
        "ordering/wrong-issuer-unknown-kid",
        jws(header("RS256", "nope"), claims(iss="https://evil.example/"), signer="rsa"),
        "InvalidIssuerError",
        "iss is checked before the key lookup: tokens of other issuers never cause a JWKS fetch",
    )
    b.add(
        "ordering/alg-none-wrong-issuer",
        f"{seg({'alg': 'none'})}.{seg(claims(iss='https://evil.example/'))}.{s}",
        "AlgorithmNotAllowedError",
        "the header (alg) is checked before the payload",
    )
    b.add(
        "ordering/crit-with-malformed-payload",
        f"{seg(header('RS256', crit=['x']))}.{b64url(b'not json')}.{s}",
        "UnsupportedHeaderError",
        "the whole header is checked before the payload is decoded",
    )
    b.add(
        "ordering/unlisted-alg-with-malformed-payload",
        f"{seg(header('HS256'))}.{b64url(b'not json')}.{s}",
        "AlgorithmNotAllowedError",
        "the alg allow-list is checked before the payload is decoded",
    )
    b.add(
        "ordering/malformed-signature-encoding-expired",
        f"{h}.{seg(claims(jti='ordering', exp=NOW - 1000))}.{s}=",
        "MalformedTokenError",
        "encoding problems are found while parsing, before keys or claims",
    )


_SECTIONS: tuple[Callable[[_Builder], None], ...] = (
    _controls,
    _alg_none,
    _hmac_confusion,
    _alg_key_mismatch,
    _embedded_keys,
    _crit_b64,
    _signature_encoding,
    _tamper,
    _time,
    _issuer,
    _audience,
    _duplicates,
    _encoding,
    _segments,
    _size,
    _kid,
    _typ,
    _ordering,
)


def build() -> tuple[Case, ...]:
    """Generate every case afresh, in a stable order."""
    builder = _Builder()
    for section in _SECTIONS:
        section(builder)
    return tuple(builder.cases)


@functools.lru_cache(maxsize=1)
def corpus() -> tuple[Case, ...]:
    """Every case (generated once per process)."""
    return build()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the corpus as JSON here (default: stdout)")
    args = parser.parse_args(argv)
    document = {
        "seed": SEED,
        "now": NOW,
        "default_config": {
            k: list(v) if isinstance(v, tuple) else v for k, v in DEFAULT_CONFIG.items()
        },
        "jwks": jwks(),
        "cases": [case.to_json() for case in corpus()],
    }
    text = json.dumps(document, indent=1, ensure_ascii=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
