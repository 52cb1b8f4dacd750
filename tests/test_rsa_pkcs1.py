"""RS256/384/512 verification, which compares the whole decoded block itself.

The library checks RSASSA-PKCS1-v1_5 signatures with ``recover_data_from_signature``
and a byte comparison instead of cryptography's ``verify`` (cheaper per token). These
tests hold it to ``verify``'s verdict on signatures over hand-built encoded blocks,
each one way an RFC 8017 §8.2.2 verifier must refuse, and on malformed signatures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import cache

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from asgi_auth0._keys import PublicKey, parse_jwk
from asgi_auth0._signing import public_jwk

MESSAGE = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0"

# RFC 8017 §9.2 note 1: the DER DigestInfo in front of the hash.
_PREFIX = {
    "RS256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "RS384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "RS512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_HASH: dict[str, Callable[[bytes], bytes]] = {
    "RS256": lambda m: hashlib.sha256(m).digest(),
    "RS384": lambda m: hashlib.sha384(m).digest(),
    "RS512": lambda m: hashlib.sha512(m).digest(),
}
_CRYPTOGRAPHY_HASH: dict[str, type[hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256,
    "RS384": hashes.SHA384,
    "RS512": hashes.SHA512,
}


@cache
def _private_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _length(bits: int) -> int:
    return (bits + 7) // 8


def _raw_sign(private: rsa.RSAPrivateKey, block: bytes) -> bytes:
    """The RSA private operation on ``block`` as it is: no padding added."""
    numbers = private.private_numbers()
    n = numbers.public_numbers.n
    m = int.from_bytes(block, "big")
    assert m < n
    return pow(m, numbers.d, n).to_bytes(_length(private.key_size), "big")


def _block(length: int, tail: bytes, *, start: bytes = b"\x00\x01", fill: int = 0xFF) -> bytes:
    """``start || fill... || 00 || tail``, ``length`` bytes in all."""
    filler = length - len(start) - 1 - len(tail)
    return start + bytes([fill]) * filler + b"\x00" + tail


def _blocks(alg: str, length: int) -> dict[str, tuple[bytes, bool]]:
    """Encoded blocks by name, with whether RFC 8017 says they verify ``MESSAGE``."""
    prefix, digest = _PREFIX[alg], _HASH[alg](MESSAGE)
    good = prefix + digest
    no_null = bytes([prefix[0] - 2, prefix[1] - 2, 0x30, 0x0B]) + prefix[4:15] + prefix[17:]
    assert len(no_null) == len(prefix) - 2
    seven_ff = b"\x00\x01" + b"\xff" * 7 + b"\x00"
    return {
        "the right encoding": (_block(length, good), True),
        "another message's hash": (_block(length, prefix + _HASH[alg](b"other")), False),
        "garbage after the hash": (_block(length, good + b"\x00" * 8), False),
        "garbage before the DigestInfo": (_block(length, b"\x00" * 8 + good), False),
        "DigestInfo without NULL parameters": (_block(length, no_null + digest), False),
        "another hash's DigestInfo": (
            _block(length, _PREFIX["RS512" if alg != "RS512" else "RS256"] + digest),
            False,
        ),
        "one padding byte not FF": (
            _block(length, good)[:5] + b"\xfe" + _block(length, good)[6:],
            False,
        ),
        "block type 02 (encryption)": (_block(length, good, start=b"\x00\x02"), False),
        "block type 00": (_block(length, good, start=b"\x00\x00"), False),
        "only seven FF bytes": (
            seven_ff + b"\x00" * (length - len(seven_ff) - len(good)) + good,
            False,
        ),
    }


KEY_SIZES = [2048, 2052, 3072]


def _ours(private: rsa.RSAPrivateKey, alg: str) -> PublicKey:
    return parse_jwk(public_jwk(private, kid="k", alg=alg))


def _theirs(private: rsa.RSAPrivateKey, alg: str, signature: bytes, message: bytes) -> bool:
    try:
        private.public_key().verify(
            signature, message, padding.PKCS1v15(), _CRYPTOGRAPHY_HASH[alg]()
        )
    except (InvalidSignature, ValueError):
        return False
    return True


@pytest.mark.parametrize("bits", KEY_SIZES)
@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
def test_hand_built_blocks_get_the_rfc_verdict_and_cryptographys(alg: str, bits: int) -> None:
    private = _private_key(bits)
    key = _ours(private, alg)
    for name, (block, valid) in _blocks(alg, _length(bits)).items():
        signature = _raw_sign(private, block)
        assert key.verify(alg, MESSAGE, signature) is valid, name
        assert _theirs(private, alg, signature, MESSAGE) is valid, name


@pytest.mark.parametrize("bits", KEY_SIZES)
def test_malformed_signatures_are_refused_as_cryptography_refuses_them(bits: int) -> None:
    private = _private_key(bits)
    key = _ours(private, "RS256")
    n = private.public_key().public_numbers().n
    length = _length(bits)
    good = private.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    assert key.verify("RS256", MESSAGE, good)
    cases = {
        "empty": b"",
        "one byte short": good[1:],
        "one byte long": b"\x00" + good,
        "zero": bytes(length),
        "one": (1).to_bytes(length, "big"),
        "n - 1": (n - 1).to_bytes(length, "big"),
        "n": n.to_bytes(length, "big"),
        "all FF": b"\xff" * length,
        "the signature with its last bit flipped": good[:-1] + bytes([good[-1] ^ 1]),
    }
    for name, signature in cases.items():
        assert key.verify("RS256", MESSAGE, signature) is False, name
        assert _theirs(private, "RS256", signature, MESSAGE) is False, name
    assert key.verify("RS256", MESSAGE + b".", good) is False
    assert key.verify("RS384", MESSAGE, good) is False


def test_a_signature_without_its_leading_zero_byte_is_refused() -> None:
    """RFC 8017 §8.2.2 step 1: a signature must be exactly as long as the modulus.

    The RSA operation alone reads 00 || rest and rest as the same number, so without
    the length check a signature that begins with a zero byte would also verify one
    byte shorter (``verify`` refuses that; ``recover_data_from_signature`` does not).
    """
    private = _private_key(2048)
    key = _ours(private, "RS256")
    for i in range(5000):
        message = MESSAGE + str(i).encode()
        signature = private.sign(message, padding.PKCS1v15(), hashes.SHA256())
        if signature[0] == 0:
            break
    else:  # pragma: no cover - one signature in 256 starts with 00
        pytest.fail("no signature with a leading zero byte in 5,000 tries")
    assert key.verify("RS256", message, signature)
    public = private.public_key()
    # The shortened signature is the same number, so the RSA operation accepts it.
    recovered = public.recover_data_from_signature(signature[1:], padding.PKCS1v15(), None)
    assert recovered == _PREFIX["RS256"] + hashlib.sha256(message).digest()
    assert key.verify("RS256", message, signature[1:]) is False
    assert _theirs(private, "RS256", signature[1:], message) is False
