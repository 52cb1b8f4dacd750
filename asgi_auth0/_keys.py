"""Public keys from JWKs: parsing, filtering and signature verification.

A JWK becomes a :class:`PublicKey` once, when its key set is loaded; the request path
only looks keys up and calls :meth:`PublicKey.verify`. Keys that cannot safely verify
signatures are dropped at load time, one by one, without failing the whole set.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from . import _speedups
from ._errors import AlgorithmNotAllowedError, ConfigError, KeySetError, UnknownKeyError

__all__ = [
    "MAX_JWKS_KEYS",
    "MAX_KID_LENGTH",
    "KeyIndex",
    "KeySource",
    "PublicKey",
    "StaticKeySet",
    "parse_jwk",
    "parse_jwks",
]

logger = logging.getLogger("asgi_auth0.keys")

#: A JWKS with more entries than this is refused as a whole (no issuer needs that many).
MAX_JWKS_KEYS = 100
#: A ``kid`` longer than this is refused, in tokens and in key sets.
MAX_KID_LENGTH = 256
_MIN_RSA_BITS = 2048
_MAX_RSA_BITS = 16384

VerifyingKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
# RS* alg -> (the DER DigestInfo before the hash, RFC 8017 §9.2 note 1; the hash).
_DIGEST_INFO: dict[str, tuple[bytes, Callable[[bytes], Any]]] = {
    "RS256": (bytes.fromhex("3031300d060960864801650304020105000420"), hashlib.sha256),
    "RS384": (bytes.fromhex("3041300d060960864801650304020205000430"), hashlib.sha384),
    "RS512": (bytes.fromhex("3051300d060960864801650304020305000440"), hashlib.sha512),
}
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
# JWK crv -> (cryptography curve, JWS alg, coordinate length in bytes)
_EC_CURVES: dict[str, tuple[ec.EllipticCurve, str, int]] = {
    "P-256": (ec.SECP256R1(), "ES256", 32),
    "P-384": (ec.SECP384R1(), "ES384", 48),
    "P-521": (ec.SECP521R1(), "ES512", 66),
}
# "EdDSA" (RFC 8037) and the fully specified "Ed25519" name the same algorithm on an
# Ed25519 key, so either header value verifies with such a key.
_OKP_ALGS = {"Ed25519": frozenset({"EdDSA", "Ed25519"}), "Ed448": frozenset({"EdDSA", "Ed448"})}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


# Edwards curves of RFC 8032: (p, a, d, cofactor). OpenSSL verifies with any 32 or 57
# bytes as the public key, the identity and other points of small order included, and
# with such a key one signature (R the identity, S = 0) verifies one message in 1 to 8
# of any the attacker writes. So a key whose y is not below p is refused (RFC 8032
# §5.1.3 and §5.2.3: decoding fails), and so is a point of small order.
_ED25519_P = 2**255 - 19
_ED448_P = 2**448 - 2**224 - 1
_EDWARDS = {
    "Ed25519": (_ED25519_P, -1, -121665 * pow(121666, -1, _ED25519_P) % _ED25519_P, 8),
    "Ed448": (_ED448_P, 1, -39081 % _ED448_P, 4),
}


@functools.lru_cache(maxsize=256)  # a custom key source's raw key: checked per token
def edwards_point_problem(crv: str, encoded: bytes) -> str | None:
    """Why ``encoded`` is no usable ``crv`` public key (RFC 8032), or ``None``.

    Refused: a y coordinate that is not below p, and a point of small order (one that
    the cofactor multiplies to the identity), with which anyone can make signatures
    that verify. A y that is on no point at all is left to OpenSSL, which then
    verifies nothing with the key.
    """
    p, a, d, cofactor = _EDWARDS[crv]
    top = 8 * len(encoded) - 1
    y = int.from_bytes(encoded, "little") & ((1 << top) - 1)  # the top bit is x's sign
    if y >= p:
        return "its y coordinate is not below p (RFC 8032: decoding fails)"
    # The y of a doubled point depends on y alone: with x^2 = (y^2 - 1) / (d y^2 - a)
    # from the curve equation, y' = (y^2 - a x^2) / (2 - a x^2 - y^2). Kept as a
    # fraction Y/Z, so that no step needs a (slow) modular inverse; x's sign never
    # matters. The cofactor is 2**k: k doublings, and the identity is y = 1.
    big_y, big_z = y, 1
    for _ in range(cofactor.bit_length() - 1):
        yy, zz = big_y * big_y % p, big_z * big_z % p
        n, dn = (yy - zz) % p, (d * yy - a * zz) % p  # x^2 = n / dn, over zz
        big_y, big_z = (yy * dn - a * n * zz) % p, (2 * zz * dn - a * n * zz - yy * dn) % p
    if big_z != 0 and big_y == big_z:
        return "it is a point of small order, with which anyone can sign"
    return None


def log_safe(value: object) -> str:
    """A value fit for a log line: repr-escaped and truncated (``kid``, ``alg`` and
    ``iss`` come from a token, i.e. from whoever sent it, or from the issuer's JWKS)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def log_field(value: object) -> object:
    """A value for a log record's ``extra`` fields: a short printable string as it
    is, so that one issuer (or kid) reads the same in every record, whichever logger
    wrote it, and a log query can join them; ``None`` as ``None``; anything else
    escaped as by :func:`log_safe`. A printable string cannot break a line."""
    if value is None or (isinstance(value, str) and value.isprintable() and len(value) <= 80):
        return value
    return log_safe(value)


class KeyRejected(ValueError):
    """A JWK that cannot be used for verification; ``str()`` says why (no key bytes)."""


_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# bytes.translate deletes every byte outside the alphabet (so a length change reveals
# one: '=', '+', '/', whitespace, anything) and maps the URL-safe letters to the
# standard ones that binascii decodes, in a single pass in C.
_NOT_B64URL = bytes(sorted(set(range(256)) - set(_B64URL_ALPHABET)))
_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
# By length mod 4: the padding binascii wants, and which final characters leave the
# unused low bits zero (4 spare bits after 2 chars, 2 after 3). Only those spellings
# are canonical; any other final character is a second spelling of the same bytes.
_PADDING = (b"", b"", b"==", b"=")
_CANONICAL_LAST = (b"", b"", b"AQgw", b"AEIMQUYcgkosw048")


def b64url_decode_bytes(data: bytes) -> bytes:
    """Strict unpadded base64url of ASCII ``data`` (see :func:`b64url_decode`)."""
    std = data.translate(_URL_TO_STD, _NOT_B64URL)
    if len(std) != len(data):
        raise ValueError("not unpadded base64url")
    return decode_translated(std)


def decode_translated(std: bytes) -> bytes:
    """Decode unpadded base64url that has already been checked to hold only alphabet
    characters and mapped to the standard alphabet (``-_`` to ``+/``).

    Refuses a length that no encoding has and a final character whose unused bits
    are set (each value has exactly one spelling); raises ``ValueError``.
    """
    rest = len(std) & 3
    if rest:
        if rest == 1:
            raise ValueError("not unpadded base64url")
        if std[-1] not in _CANONICAL_LAST[rest]:
            raise ValueError("non-canonical base64url")
        std += _PADDING[rest]
    # Only alphabet characters remain and the padding is exact, so this cannot
    # skip or guess anything (binascii, or pybase64 with the speedups extra).
    return _speedups.b64decode(std)


def b64url_decode(data: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 §2): no padding, no other alphabet, canonical."""
    if not isinstance(data, str) or not data.isascii():
        raise ValueError("not unpadded base64url")
    return b64url_decode_bytes(data.encode("ascii"))


def _uint(jwk: Mapping[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise KeyRejected(f"member {name!r} is missing or not a string")
    try:
        return int.from_bytes(b64url_decode(value), "big")
    except ValueError as exc:
        raise KeyRejected(f"member {name!r} is not base64url") from exc


def _coordinate(jwk: Mapping[str, Any], name: str, length: int) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise KeyRejected(f"member {name!r} is missing or not a string")
    try:
        raw = b64url_decode(value)
    except ValueError as exc:
        raise KeyRejected(f"member {name!r} is not base64url") from exc
    if len(raw) != length:
        raise KeyRejected(f"member {name!r} has the wrong length for its curve")
    return raw


@dataclass(frozen=True, eq=False)
class PublicKey:
    """A verification key parsed from one JWK, with the algorithms it may verify."""

    kid: str | None
    kty: str
    crv: str | None
    #: The algorithms this key may verify: what its type and curve fit, narrowed by
    #: the JWK's own ``alg`` when it has one.
    algorithms: frozenset[str]
    key: VerifyingKey = field(repr=False)
    #: ECDSA signature coordinate length (0 for other key types).
    coordinate_length: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        # alg -> a ready-made check, filled on first use so a key that only ever sees
        # RS256 never builds the others (and wrapping a foreign key stays cheap).
        object.__setattr__(self, "_checks", {})

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        """True if ``signature`` is a valid ``alg`` signature over ``signing_input``.

        ``alg`` must be one of :attr:`algorithms`; any other ``alg`` never verifies.
        """
        checks: dict[str, Callable[[bytes, bytes], None]] = self._checks  # type: ignore[attr-defined]
        check = checks.get(alg)
        if check is None:
            if alg not in self.algorithms:
                return False
            check = checks[alg] = _make_check(self.key, alg, self.coordinate_length)
        try:
            check(signature, signing_input)
        except (InvalidSignature, ValueError):
            return False
        return True


def _make_check(
    key: VerifyingKey, alg: str, coordinate_length: int
) -> Callable[[bytes, bytes], None]:
    """A function ``(signature, signing_input)`` that raises unless the ``alg`` signature
    verifies, with the padding and hash objects built once instead of per token."""
    if isinstance(key, rsa.RSAPublicKey):
        if alg[0] == "R":
            return _pkcs1_check(key, alg)
        digest = _HASHES[alg[2:]]()
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        rsa_verify = key.verify

        def rsa_check(signature: bytes, signing_input: bytes) -> None:
            rsa_verify(signature, signing_input, pss, digest)

        return rsa_check
    if isinstance(key, ec.EllipticCurvePublicKey):
        ec_verify = key.verify
        ecdsa = ec.ECDSA(_HASHES[alg[2:]]())
        n = coordinate_length

        def ec_check(signature: bytes, signing_input: bytes) -> None:
            # JWS ECDSA signatures are raw R || S of fixed length (RFC 7518 §3.4);
            # a DER-encoded signature has another length and is refused here.
            if len(signature) != 2 * n:
                raise InvalidSignature
            r = int.from_bytes(signature[:n], "big")
            s = int.from_bytes(signature[n:], "big")
            ec_verify(encode_dss_signature(r, s), signing_input, ecdsa)

        return ec_check
    return key.verify


def _pkcs1_check(key: rsa.RSAPublicKey, alg: str) -> Callable[[bytes, bytes], None]:
    """The RS256/384/512 check: RSASSA-PKCS1-v1_5 verification (RFC 8017 §8.2.2) by
    encoding and comparing.

    OpenSSL undoes the RSA operation and checks the padding (00 01, at least eight FF,
    00); the whole rest must then equal the DigestInfo and hash we expect, byte for
    byte. With the padding all FF and the rest of fixed length, that is the whole
    encoded block compared, as RFC 8017 §8.2.2 step 4 does, so no DigestInfo parsing
    (and no Bleichenbacher 2006 forgery) is possible. ``recover_data_from_signature``
    does not check the signature's length (``verify`` does), so that is done here
    (§8.2.2 step 1). Why not ``key.verify``: it costs 1-2.5 µs more per token, set-up
    of the digest in OpenSSL (measured with cryptography 50; a 2048-bit RSA verify is
    about 17-22 µs), and this is the path every cold token takes.
    """
    recover = key.recover_data_from_signature
    pkcs1 = padding.PKCS1v15()
    prefix, hash_new = _DIGEST_INFO[alg]
    length = (key.key_size + 7) // 8

    def pkcs1_check(signature: bytes, signing_input: bytes) -> None:
        if len(signature) != length:
            raise InvalidSignature
        if recover(signature, pkcs1, None) != prefix + hash_new(signing_input).digest():
            raise InvalidSignature

    return pkcs1_check


def parse_jwk(jwk: object) -> PublicKey:
    """Turn one JWK into a :class:`PublicKey`, or raise :class:`KeyRejected` saying why."""
    if not isinstance(jwk, Mapping):
        raise KeyRejected("not a JSON object")
    kty = jwk.get("kty")
    # The issuer's own metadata, not an attacker's: kid, use, key_ops or alg written as
    # null reads as absent, and a key_ops value listed twice is tolerated (RFC 7517
    # §4.3 forbids it),
    # since neither widens what the key may do, and refusing the key would refuse every
    # token of an issuer whose serializer writes them.
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH):
        raise KeyRejected("kid is not a string of reasonable length")
    if kty == "oct":
        raise KeyRejected("symmetric (oct) keys are never used")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise KeyRejected("the JWK carries private key material")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise KeyRejected("use is not 'sig'")
    key_ops = jwk.get("key_ops")
    # A tuple is what a JWKS built in Python code (StaticKeySet) may hold; JSON gives lists.
    if key_ops is not None and (not isinstance(key_ops, (list, tuple)) or "verify" not in key_ops):
        raise KeyRejected("key_ops does not allow 'verify'")
    declared = jwk.get("alg")
    if declared is not None and not isinstance(declared, str):
        raise KeyRejected("alg is not a string")

    coordinate_length = 0
    crv = jwk.get("crv")
    key: VerifyingKey
    if kty == "RSA":
        n, e = _uint(jwk, "n"), _uint(jwk, "e")
        bits = n.bit_length()
        if bits < _MIN_RSA_BITS:
            raise KeyRejected(f"RSA modulus of {bits} bits is under {_MIN_RSA_BITS}")
        if bits > _MAX_RSA_BITS:
            raise KeyRejected("RSA modulus is implausibly large")
        try:
            key = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise KeyRejected("invalid RSA public key") from exc
        fits = _RSA_ALGS
        crv = None
    elif kty == "EC":
        if not isinstance(crv, str) or crv not in _EC_CURVES:
            raise KeyRejected("unsupported EC curve")
        curve, alg, coordinate_length = _EC_CURVES[crv]
        x = _coordinate(jwk, "x", coordinate_length)
        y = _coordinate(jwk, "y", coordinate_length)
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
        except ValueError as exc:
            raise KeyRejected("EC point is not on the curve") from exc
        fits = frozenset({alg})
    elif kty == "OKP":
        if crv not in ("Ed25519", "Ed448"):  # a tuple, not a set: crv may be unhashable
            raise KeyRejected("unsupported OKP curve")
        raw = _coordinate(jwk, "x", 32 if crv == "Ed25519" else 57)
        problem = edwards_point_problem(crv, raw)
        if problem is not None:
            raise KeyRejected(f"invalid {crv} key: {problem}")
        try:
            if crv == "Ed25519":
                key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            else:
                key = ed448.Ed448PublicKey.from_public_bytes(raw)
        except ValueError as exc:
            raise KeyRejected(f"invalid {crv} key") from exc
        fits = _OKP_ALGS[crv]
    else:
        raise KeyRejected("unsupported kty")

    if declared is not None:
        if declared not in fits:
            raise KeyRejected("the JWK's alg does not fit its key type")
        # The JWK names one algorithm; on an Ed25519 key EdDSA and Ed25519 are aliases.
        fits = fits if declared in ("EdDSA", "Ed25519") and kty == "OKP" else frozenset({declared})
        if kty == "OKP" and crv == "Ed448":
            fits = frozenset({"EdDSA", "Ed448"})
    return PublicKey(
        kid=kid,
        kty=kty,
        crv=crv if isinstance(crv, str) else None,
        algorithms=fits,
        key=key,
        coordinate_length=coordinate_length,
    )


class KeyIndex:
    """The usable keys of one JWKS, indexed by ``kid`` for the request path."""

    __slots__ = ("_by_kid", "keys", "skipped")

    def __init__(self, keys: list[PublicKey], skipped: int = 0) -> None:
        #: Every usable key, in document order.
        self.keys: tuple[PublicKey, ...] = tuple(keys)
        #: How many JWKs were dropped as unusable.
        self.skipped: int = skipped
        by_kid: dict[str | None, list[PublicKey]] = {}
        for key in keys:
            by_kid.setdefault(key.kid, []).append(key)
        self._by_kid = {kid: tuple(found) for kid, found in by_kid.items()}

    def __len__(self) -> int:
        return len(self.keys)

    def kids(self) -> frozenset[str]:
        """The key ids in this set."""
        return frozenset(k for k in self._by_kid if k is not None)

    def has_kid(self, kid: str | None) -> bool:
        """Whether any key answers to ``kid`` (with ``None``: whether the set is non-empty)."""
        return bool(self.keys) if kid is None else kid in self._by_kid

    def find(self, kid: str | None, alg: str) -> PublicKey:
        """The key for ``kid`` that may verify ``alg``.

        Raises :class:`UnknownKeyError` when no key has that ``kid`` (a token without
        ``kid`` is accepted only when exactly one key fits ``alg``) and
        :class:`AlgorithmNotAllowedError` when keys have it but none fits ``alg``.
        """
        if kid is None:
            fitting = [k for k in self.keys if alg in k.algorithms]
            if len(fitting) == 1:
                return fitting[0]
            raise UnknownKeyError("token has no kid and the key set has no single fitting key")
        candidates = self._by_kid.get(kid)
        if candidates is None:
            raise UnknownKeyError("no key with this kid")
        for key in candidates:
            if alg in key.algorithms:
                return key
        raise AlgorithmNotAllowedError("the key for this kid does not fit the token's alg")


def parse_jwks(
    document: object, *, on_skip: Callable[[int, object, KeyRejected], None] | None = None
) -> KeyIndex:
    """Parse a JWKS document into a :class:`KeyIndex`.

    Raises :class:`ValueError` when the document is not a JWKS at all (not an object,
    no ``keys`` array, too many keys); unusable individual keys are skipped and logged,
    or handed to ``on_skip(position, entry, why)`` instead when it is given.
    """
    if not isinstance(document, Mapping):
        raise ValueError("the JWKS is not a JSON object")
    entries = document.get("keys")
    if not isinstance(entries, (list, tuple)):
        raise ValueError("the JWKS has no 'keys' array")
    if len(entries) > MAX_JWKS_KEYS:
        raise ValueError(f"the JWKS has more than {MAX_JWKS_KEYS} keys")
    keys: list[PublicKey] = []
    skipped = 0
    for position, entry in enumerate(entries):
        try:
            keys.append(parse_jwk(entry))
        except KeyRejected as exc:
            skipped += 1
            if on_skip is not None:
                on_skip(position, entry, exc)
                continue
            # The kid is the issuer's text, not checked yet (its length may be why the
            # key is skipped): escaped and truncated like a token's.
            kid = entry.get("kid") if isinstance(entry, Mapping) else None
            logger.info(
                "skipping unusable JWK",
                extra={
                    "reason": "key_skipped",
                    "kid": log_safe(kid) if kid is not None else None,
                    "why": str(exc),
                },
            )
    return KeyIndex(keys, skipped)


@runtime_checkable
class KeySource(Protocol):
    """Anything that finds the verification key for a token's ``kid`` and ``alg``."""

    async def get_key(self, kid: str | None, alg: str) -> Any:
        """Return a :class:`PublicKey` (or a ``cryptography`` public key) or raise."""
        ...


class StaticKeySet:
    """A key source over a fixed JWKS document: for tests, air-gapped deployments and
    keys pinned in configuration. The document is parsed once, here.

    Raises :class:`ConfigError` when the document is not a JWKS or holds no usable
    key (every token would fail with ``unknown_kid``), saying why each key was
    refused. A key skipped beside usable ones is logged as a warning with its ``kid``
    and the reason: pinned keys are chosen by hand, so one being ignored is a mistake.
    """

    #: Never changes, so cached verifications stay valid for the life of the set.
    generation = 0

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        refused: list[str] = []

        def skipped(position: int, entry: object, why: KeyRejected) -> None:
            # The kid is unchecked text (its length may be why the key is refused):
            # escaped and truncated, in the log and in the error alike.
            kid = entry.get("kid") if isinstance(entry, Mapping) else None
            shown = log_safe(kid) if kid is not None else "(none)"
            refused.append(f"key #{position} (kid {shown}): {why}")
            logger.warning(
                "StaticKeySet: skipping unusable JWK #%d (kid %s): %s",
                position,
                shown,
                why,
                extra={"reason": "key_skipped", "kid": shown, "why": str(why)},
            )

        try:
            self._index = parse_jwks(jwks, on_skip=skipped)
        except ValueError as exc:
            raise ConfigError(f"StaticKeySet: {exc}") from exc
        if not self._index:
            detail = "; ".join(refused[:10]) if refused else "the JWKS has no keys"
            if len(refused) > 10:
                detail += f"; and {len(refused) - 10} more"
            raise ConfigError(
                "StaticKeySet: no usable key, so every token would fail with unknown_kid: " + detail
            )

    @property
    def index(self) -> KeyIndex:
        """The parsed keys."""
        return self._index

    async def get_key(self, kid: str | None, alg: str) -> PublicKey:
        """The key for ``kid`` and ``alg``; raises ``UnknownKeyError`` or
        ``AlgorithmNotAllowedError``."""
        return self._index.find(kid, alg)

    def __repr__(self) -> str:
        return f"StaticKeySet(kids={sorted(self._index.kids())!r})"


def wrap_foreign_key(kid: str | None, alg: str, key: object) -> PublicKey:
    """Adapt a raw ``cryptography`` public key returned by a user's key source."""
    if isinstance(key, PublicKey):
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise KeySetError("the key source returned an RSA key under 2048 bits")
        # The source chose this key for this alg: bound to it alone (RFC 8725 §3.1).
        fits = frozenset({alg}) if alg in _RSA_ALGS else _RSA_ALGS
        return PublicKey(kid, "RSA", None, fits, key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        for crv, (curve, ec_alg, length) in _EC_CURVES.items():
            if curve.name == key.curve.name:
                return PublicKey(kid, "EC", crv, frozenset({ec_alg}), key, length)
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        crv = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"
        problem = edwards_point_problem(crv, key.public_bytes_raw())
        if problem is not None:
            raise KeySetError(f"the key source returned an unusable {crv} key: {problem}")
        return PublicKey(kid, "OKP", crv, _OKP_ALGS[crv], key)
    raise KeySetError(f"the key source returned an unusable key for alg {alg}")
