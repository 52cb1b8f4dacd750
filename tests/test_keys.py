"""JWK parsing and filtering: which keys may ever verify a signature."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_auth0 import AlgorithmNotAllowedError, ConfigError, StaticKeySet, UnknownKeyError
from asgi_auth0._keys import MAX_JWKS_KEYS, KeyRejected, parse_jwk, parse_jwks
from asgi_auth0._signing import b64url, generate_private_key, public_jwk

RSA = generate_private_key("RSA")
RSA_1024 = generate_private_key("RSA", rsa_bits=1024)
P256 = generate_private_key("P-256")
ED = generate_private_key("Ed25519")


def rsa_jwk(**extra: Any) -> dict[str, Any]:
    jwk = public_jwk(RSA, kid="r")
    jwk.update(extra)
    return {k: v for k, v in jwk.items() if v is not None}


@pytest.mark.parametrize(
    "jwk",
    [
        {**public_jwk(RSA, kid="r"), "use": None},
        {**public_jwk(RSA, kid="r"), "key_ops": None},
        {**public_jwk(RSA, kid="r"), "alg": None},
        rsa_jwk(key_ops=["verify", "verify"]),
    ],
)
def test_an_issuers_null_members_and_repeated_key_ops_leave_the_key_usable(
    jwk: dict[str, Any],
) -> None:
    # The issuer's metadata, sloppily written (null for absent; RFC 7517 §4.3 forbids
    # a repeated key_ops value): neither widens what the key may do, and refusing the
    # key would refuse every token of that issuer.
    assert parse_jwk(jwk).algorithms == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}


def test_a_plain_rsa_key_fits_rsa_algorithms_only() -> None:
    key = parse_jwk(rsa_jwk())
    assert key.algorithms == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}


@pytest.mark.parametrize(
    ("jwk", "why"),
    [
        (rsa_jwk(use="enc"), "use"),
        (rsa_jwk(key_ops=["encrypt"]), "key_ops"),
        (rsa_jwk(key_ops="verify"), "key_ops"),
        (rsa_jwk(d="AQAB"), "private"),
        (rsa_jwk(p="AQAB"), "private"),
        ({"kty": "oct", "k": "c2VjcmV0", "kid": "h"}, "symmetric"),
        (public_jwk(RSA_1024, kid="small"), "2048"),
        (rsa_jwk(alg="ES256"), "alg"),
        (rsa_jwk(alg=5), "alg"),
        (rsa_jwk(alg=["RS256"]), "alg"),  # unhashable: must not become a TypeError
        (rsa_jwk(kid="k" * 300), "kid"),
        (rsa_jwk(kid=7), "kid"),
        (rsa_jwk(n="not base64!"), "base64url"),
        (rsa_jwk(n=None), "missing"),
        (rsa_jwk(e="Ag"), "invalid RSA"),  # e = 2: cryptography refuses the numbers
        (
            {"kty": "EC", "crv": "P-256", "x": b64url(b"\x00" * 32), "y": b64url(b"\x00" * 32)},
            "curve",
        ),
        ({**public_jwk(P256), "crv": "secp256k1"}, "curve"),
        ({**public_jwk(P256), "x": b64url(b"\x01" * 31)}, "length"),
        ({**public_jwk(P256), "y": "not base64!"}, "base64url"),
        ({**public_jwk(ED), "x": "AAA="}, "base64url"),
        ({**public_jwk(ED), "x": b64url(b"\x01" * 31)}, "length"),
        ({"kty": "OKP", "crv": "Ed448", "x": b64url(b"\x01" * 56)}, "length"),
        ({**public_jwk(ED), "crv": ["Ed25519"]}, "OKP"),  # unhashable: no TypeError
        ({**public_jwk(ED), "crv": "X25519"}, "OKP"),
        ({"kty": "PQC", "kid": "future"}, "kty"),
        ("not an object", "object"),
    ],
)
def test_unusable_keys_are_rejected_with_a_reason(jwk: Any, why: str) -> None:
    with pytest.raises(KeyRejected, match=why):
        parse_jwk(jwk)


def test_key_ops_with_verify_and_use_sig_are_fine() -> None:
    assert parse_jwk(rsa_jwk(key_ops=["verify"], use="sig")).kid == "r"


def test_unusable_keys_are_skipped_without_failing_the_set() -> None:
    index = parse_jwks(
        {"keys": [{"kty": "PQC", "kid": "future"}, rsa_jwk(use="enc", kid="e"), rsa_jwk()]}
    )
    assert index.kids() == {"r"}
    assert index.skipped == 2


def test_entries_that_are_not_objects_are_skipped_not_a_crash() -> None:
    index = parse_jwks({"keys": ["junk", 5, None, ["kty", "RSA"], rsa_jwk()]})
    assert index.kids() == {"r"}
    assert index.skipped == 4


@pytest.mark.parametrize(
    "doc",
    [[], "x", {"keys": "x"}, {"nokeys": []}, {"keys": [rsa_jwk()] * (MAX_JWKS_KEYS + 1)}],
)
def test_documents_that_are_not_a_jwks(doc: Any) -> None:
    with pytest.raises(ValueError, match="JWKS"):
        parse_jwks(doc)
    with pytest.raises(ConfigError):
        StaticKeySet(doc)


def test_jwk_alg_narrows_the_algorithms() -> None:
    assert parse_jwk(rsa_jwk(alg="PS384")).algorithms == {"PS384"}


@pytest.mark.anyio
async def test_find_by_kid_and_alg() -> None:
    ks = StaticKeySet({"keys": [rsa_jwk(), public_jwk(P256, kid="e")]})
    assert (await ks.get_key("r", "RS256")).kid == "r"
    with pytest.raises(AlgorithmNotAllowedError):
        await ks.get_key("r", "ES256")
    with pytest.raises(UnknownKeyError):
        await ks.get_key("zzz", "RS256")


@pytest.mark.anyio
async def test_missing_kid_works_only_with_one_fitting_key() -> None:
    ks = StaticKeySet({"keys": [rsa_jwk(), public_jwk(P256, kid="e")]})
    assert (await ks.get_key(None, "ES256")).kid == "e"
    two = StaticKeySet({"keys": [rsa_jwk(), rsa_jwk(kid="r2")]})
    with pytest.raises(UnknownKeyError):
        await two.get_key(None, "RS256")


@pytest.mark.anyio
async def test_missing_kid_is_ambiguous_with_two_kidless_keys() -> None:
    # Two keys without a kid both fit RS256: neither is picked for a kid-less token.
    other = generate_private_key("RSA")
    ks = StaticKeySet({"keys": [rsa_jwk(kid=None), public_jwk(other)]})
    with pytest.raises(UnknownKeyError):
        await ks.get_key(None, "RS256")
    one = StaticKeySet({"keys": [rsa_jwk(kid=None)]})
    assert (await one.get_key(None, "RS256")).kid is None


def test_a_skipped_keys_kid_is_logged_escaped_and_truncated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The kid of a skipped key is the issuer's unchecked text: an overlong one (the
    # reason it is skipped) must not reach the log whole, nor a newline that could
    # forge a second log line.
    hostile = "k\nforged log line " + "x" * 5000
    caplog.set_level("INFO", logger="asgi_auth0.keys")
    index = parse_jwks({"keys": [rsa_jwk(kid=hostile), rsa_jwk(kid="ok")]})
    assert index.kids() == {"ok"}
    [record] = [r for r in caplog.records if r.getMessage() == "skipping unusable JWK"]
    logged = record.__dict__["kid"]
    assert "\n" not in logged
    assert logged.startswith("'k\\nforged")
    assert len(logged) <= 80


def _rsa_jwk_of(bits: int) -> dict[str, Any]:
    # Any odd modulus of that length: only its size is under test.
    n = (1 << (bits - 1)) | 1
    return {
        "kty": "RSA",
        "kid": f"r{bits}",
        "n": b64url(n.to_bytes((bits + 7) // 8, "big")),
        "e": "AQAB",
    }


def test_rsa_moduli_follow_the_documented_2048_to_16384_bits() -> None:
    # SECURITY.md promises exactly this range; the bounds are spelled out here, not
    # imported, so moving a bound in the module fails this test.
    assert parse_jwk(_rsa_jwk_of(2048)).kty == "RSA"
    assert parse_jwk(_rsa_jwk_of(16384)).kty == "RSA"
    for bits in (2047, 16385):
        with pytest.raises(KeyRejected):
            parse_jwk(_rsa_jwk_of(bits))


def test_a_jwks_holds_at_most_the_documented_100_keys() -> None:
    assert len(parse_jwks({"keys": [rsa_jwk()] * 100})) == 100
    with pytest.raises(ValueError, match="JWKS"):
        parse_jwks({"keys": [rsa_jwk()] * 101})


@pytest.mark.parametrize(
    ("crv", "declared", "fits"),
    [
        ("Ed25519", None, {"EdDSA", "Ed25519"}),
        ("Ed25519", "EdDSA", {"EdDSA", "Ed25519"}),
        ("Ed25519", "Ed25519", {"EdDSA", "Ed25519"}),
        ("Ed448", None, {"EdDSA", "Ed448"}),
        ("Ed448", "EdDSA", {"EdDSA", "Ed448"}),
        ("Ed448", "Ed448", {"EdDSA", "Ed448"}),
    ],
)
def test_eddsa_and_the_curve_name_are_aliases_on_okp_keys(
    crv: str, declared: str | None, fits: set[str]
) -> None:
    # "EdDSA" and the fully specified curve name are one algorithm on such a key, so
    # a JWK declaring either still verifies tokens that use the other spelling.
    x = b64url(b"\x01" * 32) if crv == "Ed25519" else b64url(b"\x01" * 56 + b"\x00")
    jwk: dict[str, Any] = {"kty": "OKP", "crv": crv, "x": x, "kid": "o"}
    if declared is not None:
        jwk["alg"] = declared
    assert parse_jwk(jwk).algorithms == fits
