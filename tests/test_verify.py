"""TokenVerifier: every verification rule, each with a token that breaks exactly it."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from asgi_auth0 import (
    AlgorithmNotAllowedError,
    Auth0Config,
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    InvalidTypeError,
    IssuedInFutureError,
    KeySetError,
    MalformedTokenError,
    MissingClaimError,
    SenderConstrainedTokenError,
    StaticKeySet,
    TokenTooLargeError,
    TokenTooOldError,
    TokenVerifier,
    UnknownKeyError,
    UnsupportedHeaderError,
)
from asgi_auth0._signing import PrivateKey, b64url, generate_private_key, public_jwk, sign_jws

pytestmark = pytest.mark.anyio

ISS = "https://tenant.example.auth0.com/"
AUD = "https://api.example.com"
NOW = 1_800_000_000.0

_KEYS: dict[str, PrivateKey] = {}


def key(kind: str) -> PrivateKey:
    """One key per kind for the whole module: RSA generation is slow."""
    if kind not in _KEYS:
        _KEYS[kind] = generate_private_key(kind)
    return _KEYS[kind]


ALG_KEYS = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "P-256",
    "ES384": "P-384",
    "ES512": "P-521",
    "EdDSA": "Ed25519",
    "Ed25519": "Ed25519",
}
ALL_ALGS = tuple(ALG_KEYS)


def jwks(*kinds: str, alg: dict[str, str] | None = None) -> dict[str, Any]:
    alg = alg or {}
    return {"keys": [public_jwk(key(k), kid=k, alg=alg.get(k)) for k in kinds]}


def claims(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "auth0|123",
        "iat": NOW - 10,
        "exp": NOW + 3600,
        "scope": "read:messages write:messages",
        "permissions": ["read:admin"],
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def make(
    alg: str = "RS256",
    *,
    kind: str | None = None,
    kid: str | None = None,
    header: dict[str, Any] | None = None,
    **over: Any,
) -> str:
    kind = kind or ALG_KEYS[alg]
    hdr: dict[str, Any] = {"alg": alg, "typ": "JWT", "kid": kid or kind}
    hdr.update(header or {})
    hdr = {k: v for k, v in hdr.items() if v is not _DROP}
    return sign_jws(key(kind), hdr, claims(**over))


def verifier(
    *, kinds: tuple[str, ...] = ("RSA",), clock: Callable[[], float] = lambda: NOW, **cfg: Any
) -> TokenVerifier:
    cfg.setdefault("issuer", ISS)
    cfg.setdefault("audience", AUD)
    return TokenVerifier(Auth0Config(**cfg), key_set=StaticKeySet(jwks(*kinds)), clock=clock)


# -- the happy paths ----------------------------------------------------------------


@pytest.mark.parametrize("alg", ALL_ALGS)
async def test_every_supported_algorithm_verifies(alg: str) -> None:
    v = verifier(kinds=(ALG_KEYS[alg],), algorithms=(alg,))
    got = await v.verify(make(alg))
    assert got.sub == "auth0|123"
    assert got.scopes == {"read:messages", "write:messages"}
    assert got.permissions == {"read:admin"}


async def test_claims_are_immutable_and_arrays_are_tuples() -> None:
    got = await verifier().verify(make(extra={"a": [1, 2]}))
    assert got["extra"]["a"] == (1, 2)
    with pytest.raises(TypeError):
        got["extra"]["a"] = 3  # type: ignore[index]
    with pytest.raises(AttributeError):
        got.foo = 1  # type: ignore[attr-defined]


async def test_scp_array_when_no_scope() -> None:
    got = await verifier().verify(make(scope=_DROP, scp=["a", "b"]))
    assert got.scopes == {"a", "b"}


async def test_domain_gives_issuer_with_trailing_slash() -> None:
    cfg = Auth0Config(domain="tenant.example.auth0.com", audience=AUD)
    assert cfg.issuer == ISS
    assert cfg.jwks_uri == ISS + ".well-known/jwks.json"
    v = TokenVerifier(cfg, key_set=StaticKeySet(jwks("RSA")), clock=lambda: NOW)
    assert (await v.verify(make())).sub == "auth0|123"
    with pytest.raises(InvalidIssuerError):
        await v.verify(make(iss=ISS.rstrip("/")))


# -- algorithms -----------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_in_any_casing_is_refused(alg: str) -> None:
    payload = b64url(json.dumps(claims()).encode())
    for sig in ("", "AAAA"):
        header = b64url(json.dumps({"alg": alg, "kid": "RSA"}).encode())
        with pytest.raises(InvalidTokenError):
            await verifier().verify(f"{header}.{payload}.{sig}")


async def test_hs256_signed_with_the_public_key_is_refused() -> None:
    import hashlib
    import hmac

    pem_ish = json.dumps(public_jwk(key("RSA"))).encode()
    header = b64url(json.dumps({"alg": "HS256", "kid": "RSA"}).encode())
    payload = b64url(json.dumps(claims()).encode())
    sig = hmac.new(pem_ish, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(AlgorithmNotAllowedError):
        await verifier().verify(f"{header}.{payload}.{b64url(sig)}")


async def test_alg_outside_allow_list_is_refused_even_if_key_fits() -> None:
    v = verifier(algorithms=("RS256",))
    with pytest.raises(AlgorithmNotAllowedError):
        await v.verify(make("RS512"))


async def test_es384_header_on_p256_key_fails() -> None:
    v = verifier(kinds=("P-256",), algorithms=("ES256", "ES384"))
    token = make("ES384", kind="P-256")  # signed with P-256 + SHA-384, header says ES384
    with pytest.raises(AlgorithmNotAllowedError):
        await v.verify(token)


async def test_rs256_header_on_ec_key_fails() -> None:
    v = verifier(kinds=("P-256",), algorithms=("RS256", "ES256"))
    with pytest.raises(AlgorithmNotAllowedError):
        await v.verify(make("RS256", kind="RSA", kid="P-256"))


async def test_jwk_alg_must_match_header_alg() -> None:
    ks = StaticKeySet(jwks("RSA", alg={"RSA": "RS512"}))
    v = TokenVerifier(
        Auth0Config(issuer=ISS, audience=AUD, algorithms=("RS256", "RS512")),
        key_set=ks,
        clock=lambda: NOW,
    )
    assert (await v.verify(make("RS512"))).sub
    with pytest.raises(AlgorithmNotAllowedError):
        await v.verify(make("RS256"))


async def test_ps256_signature_presented_as_rs256_fails() -> None:
    v = verifier(algorithms=("RS256", "PS256"))
    ps = make("PS256")
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "RSA"}).encode())
    forged = header + ps[ps.index(".") :]
    with pytest.raises(InvalidSignatureError):
        await v.verify(forged)


async def test_der_encoded_ecdsa_signature_fails() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    v = verifier(kinds=("P-256",), algorithms=("ES256",))
    good = make("ES256")
    signing_input = good.rsplit(".", 1)[0]
    k = key("P-256")
    assert isinstance(k, ec.EllipticCurvePrivateKey)
    der = k.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignatureError):
        await v.verify(f"{signing_input}.{b64url(der)}")
    assert (await v.verify(good)).sub


async def test_an_ecdsa_signature_of_the_wrong_length_fails_even_if_its_numbers_are_right() -> None:
    # R || 0x00 || S carries the same two integers as the real signature; a raw JWS
    # ECDSA signature has exactly one spelling (2 x 32 bytes for ES256).
    v = verifier(kinds=("P-256",), algorithms=("ES256",))
    good = make("ES256")
    signing_input, _, sig = good.rpartition(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    assert len(raw) == 64
    for respelled in (raw[:32] + b"\x00" + raw[32:], b"\x00" + raw):
        with pytest.raises(InvalidSignatureError):
            await v.verify(f"{signing_input}.{b64url(respelled)}")
    assert (await v.verify(good)).sub


async def test_eddsa_and_ed25519_names_are_aliases_on_ed25519_keys() -> None:
    v = verifier(kinds=("Ed25519",), algorithms=("Ed25519",))
    assert (await v.verify(make("Ed25519"))).sub
    with pytest.raises(AlgorithmNotAllowedError):
        await v.verify(make("EdDSA"))  # EdDSA is not in this allow-list


async def test_unknown_kid_is_unknown_key_error() -> None:
    with pytest.raises(UnknownKeyError):
        await verifier().verify(make(kid="nope"))


async def test_bad_signature() -> None:
    token = make()
    head, payload, sig = token.split(".")
    flipped = bytearray(base64.urlsafe_b64decode(sig + "=="))
    flipped[5] ^= 1
    with pytest.raises(InvalidSignatureError):
        await verifier().verify(f"{head}.{payload}.{b64url(bytes(flipped))}")


async def test_payload_edited_after_signing_fails() -> None:
    head, _, sig = make().split(".")
    evil = b64url(json.dumps(claims(sub="admin")).encode())
    with pytest.raises(InvalidSignatureError):
        await verifier().verify(f"{head}.{evil}.{sig}")


# -- header rules ---------------------------------------------------------------------


@pytest.mark.parametrize("member", ["jwk", "jku", "x5u", "x5c"])
async def test_embedded_key_headers_are_never_used(member: str) -> None:
    attacker = generate_private_key("P-256")
    value: Any = {
        "jwk": public_jwk(attacker),
        "jku": "https://evil.example/jwks.json",
        "x5u": "https://evil.example/cert.pem",
        "x5c": ["MIIB"],
    }[member]
    token = sign_jws(attacker, {"alg": "ES256", "kid": "RSA", member: value}, claims())
    v = verifier(algorithms=("RS256", "ES256"))
    with pytest.raises(AlgorithmNotAllowedError):  # kid RSA is an RSA key: never the header's
        await v.verify(token)
    # Other unknown header members are ignored (RFC 7515 §4).
    assert (await v.verify(make(header={member: value, "x-extra": 1}))).sub


async def test_crit_and_b64_false_are_refused() -> None:
    with pytest.raises(UnsupportedHeaderError):
        await verifier().verify(make(header={"crit": ["exp"], "exp": 1}))
    with pytest.raises(UnsupportedHeaderError):
        await verifier().verify(make(header={"b64": False}))


async def test_strict_typ() -> None:
    v = verifier(strict_typ=True)
    for typ in ("at+jwt", "application/at+jwt", "AT+JWT", "Application/AT+JWT"):
        assert (await v.verify(make(header={"typ": typ}))).sub
    for typ in ("JWT", "jwt", _DROP):
        with pytest.raises(InvalidTypeError):
            await v.verify(make(header={"typ": typ}))
    assert (await verifier().verify(make(header={"typ": "JWT"}))).sub


@pytest.mark.parametrize("member", ["typ", "cty"])
@pytest.mark.parametrize("value", [1, None, ["at+jwt"], True])
@pytest.mark.parametrize("strict_typ", [False, True])
async def test_typ_and_cty_must_be_strings_when_present(
    member: str, value: Any, strict_typ: bool
) -> None:
    # Media types (RFC 7515 §4.1.9, §4.1.10): a header with "typ": 1 is malformed,
    # whether or not strict_typ reads it.
    with pytest.raises(MalformedTokenError, match=member):
        await verifier(strict_typ=strict_typ).verify(make(header={member: value}))


# -- claims ---------------------------------------------------------------------------


# Auth0 writes cnf.jkt into DPoP-bound tokens (RFC 9449 6.1) and cnf["x5t#S256"] into
# certificate-bound ones (RFC 8705 3.1); RFC 7800 allows other members.
_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
BOUND = {
    "dpop": ({"jkt": _JKT}, "DPoP-bound"),
    "mtls": ({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}, "certificate-bound"),
    "jwk": ({"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg"}}, "key-bound"),
    "empty": ({}, "key-bound"),
    "null": (None, "key-bound"),
    "string": ("x", "key-bound"),
}


@pytest.mark.parametrize("kind", sorted(BOUND))
async def test_a_key_bound_token_is_refused_as_a_bearer_token(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A bearer request proves nothing about the key the token is bound to, so taking
    # it would let whoever copied the token use it: the binding is the point.
    cnf, detail = BOUND[kind]
    token = make(cnf=cnf)
    caplog.set_level(logging.DEBUG, logger="asgi_auth0.verify")
    with pytest.raises(SenderConstrainedTokenError) as info:
        await verifier().verify(token)
    assert info.value.reason == "sender_constrained_token"
    assert info.value.status_code == 401
    assert info.value.error == "invalid_token"
    assert detail in str(info.value.detail)
    assert "sender_constrained_token" in caplog.text
    assert token not in caplog.text
    # The same token without cnf is fine: nothing else about it is wrong.
    assert (await verifier().verify(make())).sub == "auth0|123"


async def test_a_bound_token_is_refused_from_the_cache_path_too() -> None:
    # The check is on the claims, so a refused token is never cached: the second try
    # goes through the full path again and is refused again.
    v = verifier()
    token = make(cnf={"jkt": _JKT})
    for _ in range(2):
        with pytest.raises(SenderConstrainedTokenError):
            await v.verify(token)
    assert v.cache_info()["entries"] == 0


async def test_a_bound_token_with_a_bad_signature_says_bad_signature() -> None:
    # Claims are read only after the signature: nothing about cnf is revealed to a
    # forger, and a forged cnf is just a bad signature.
    token = make(cnf={"jkt": _JKT})
    header, payload, _ = token.split(".")
    other = make(sub="someone-else").split(".")[2]
    with pytest.raises(InvalidSignatureError):
        await verifier().verify(f"{header}.{payload}.{other}")


@pytest.mark.parametrize("kind", sorted(BOUND))
async def test_accept_bound_tokens_lets_a_gateway_checked_binding_through(kind: str) -> None:
    cnf, _ = BOUND[kind]
    got = await verifier(accept_bound_tokens=True).verify(make(cnf=cnf))
    assert got["cnf"] == cnf


async def test_exp_is_always_required() -> None:
    with pytest.raises(MissingClaimError):
        await verifier(required_claims=()).verify(make(exp=_DROP))


async def test_exp_boundaries_with_leeway() -> None:
    v = verifier(leeway=5)
    assert (await v.verify(make(exp=NOW - 4))).sub
    with pytest.raises(ExpiredTokenError):
        await v.verify(make(exp=NOW - 5))
    v0 = verifier(leeway=0)
    with pytest.raises(ExpiredTokenError):
        await v0.verify(make(exp=NOW))
    assert (await v0.verify(make(exp=NOW + 1))).sub


async def test_nbf_boundaries() -> None:
    v = verifier(leeway=5)
    assert (await v.verify(make(nbf=NOW + 5))).sub
    with pytest.raises(ImmatureTokenError):
        await v.verify(make(nbf=NOW + 6))


async def test_iat_in_future_fails_beyond_leeway() -> None:
    v = verifier(leeway=5)
    assert (await v.verify(make(iat=NOW + 5))).sub
    with pytest.raises(IssuedInFutureError):
        await v.verify(make(iat=NOW + 6))


async def test_iat_required_by_default_and_optional_on_request() -> None:
    with pytest.raises(MissingClaimError):
        await verifier().verify(make(iat=_DROP))
    assert (await verifier(required_claims=()).verify(make(iat=_DROP))).sub


async def test_max_token_age() -> None:
    v = verifier(max_token_age=60, leeway=0)
    assert (await v.verify(make(iat=NOW - 59))).sub
    with pytest.raises(TokenTooOldError):
        await v.verify(make(iat=NOW - 61))


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("bad", ["1800000000", True, False, [1], {"a": 1}, 1e300, -1e300, 10**20])
async def test_numeric_dates_must_be_json_numbers(name: str, bad: Any) -> None:
    with pytest.raises(InvalidClaimError):
        await verifier().verify(make(**{name: bad}))


# 253402300799 is 9999-12-31T23:59:59Z, the last NumericDate accepted either way round.
@pytest.mark.parametrize("name", ["nbf", "iat"])
@pytest.mark.parametrize("edge", [-253402300799, -253402300799.0])
async def test_numeric_dates_at_the_range_limit_are_accepted(name: str, edge: Any) -> None:
    assert (await verifier().verify(make(**{name: edge}))).sub


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("beyond", [253402300800, -253402300800, 253402300800.0, -253402300800.0])
async def test_numeric_dates_just_past_the_range_limit_are_refused(name: str, beyond: Any) -> None:
    with pytest.raises(InvalidClaimError):
        await verifier().verify(make(**{name: beyond}))


async def test_exp_at_the_range_limit_is_accepted() -> None:
    for edge in (253402300799, 253402300799.0):
        assert (await verifier().verify(make(exp=edge))).sub


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_nan_and_infinity_are_refused(literal: str) -> None:
    body = json.dumps(claims(exp=123)).replace("123", literal)
    token = sign_jws(key("RSA"), {"alg": "RS256", "kid": "RSA"}, body.encode())
    with pytest.raises(InvalidTokenError):
        await verifier().verify(token)


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1.5e309"])
@pytest.mark.parametrize("where", ['"ratio": {}', '"limits": [1, {}]', '"x": {{"y": {}}}'])
async def test_a_number_too_large_for_a_float_is_malformed_anywhere(
    literal: str, where: str
) -> None:
    # Not only in a date: an infinite claim value is what NaN/Infinity would be, and
    # an application returning the claims as JSON would answer 500.
    body = json.dumps(claims())[:-1] + ", " + where.format(literal) + "}"
    token = sign_jws(key("RSA"), {"alg": "RS256", "kid": "RSA"}, body.encode())
    with pytest.raises(MalformedTokenError):
        await verifier().verify(token)
    finite = json.dumps(claims())[:-1] + ", " + where.format("1e300") + "}"
    token = sign_jws(key("RSA"), {"alg": "RS256", "kid": "RSA"}, finite.encode())
    assert (await verifier().verify(token)).sub == "auth0|123"


@pytest.mark.parametrize(
    "member",
    [
        '"roles": ["\\ud800"]',  # in an array
        '"x": {"\\udc00": 1}',  # a nested member name
        '"x": [{"y": ["ok", "\\ud800"]}]',  # deep inside arrays and objects
    ],
)
async def test_a_lone_surrogate_anywhere_in_the_payload_is_malformed(member: str) -> None:
    body = json.dumps(claims())[:-1] + ", " + member + "}"
    token = sign_jws(key("RSA"), {"alg": "RS256", "kid": "RSA"}, body.encode())
    with pytest.raises(MalformedTokenError) as info:
        await verifier().verify(token)
    assert str(info.value.__cause__) == "lone surrogate escape"  # not some other flaw


async def test_null_exp_is_missing() -> None:
    with pytest.raises(MissingClaimError):
        await verifier().verify(make(exp=None))


@pytest.mark.parametrize(
    "aud",
    [AUD, [AUD], ["other", AUD], ["https://other", "https://api.example.com"]],
)
async def test_aud_string_or_array(aud: Any) -> None:
    assert (await verifier().verify(make(aud=aud))).sub


@pytest.mark.parametrize(
    "aud",
    [
        "https://api.example.co",
        "https://api.example.com/",
        [],
        ["other"],
        [[AUD]],
        {"aud": AUD},
        [AUD, 1],
        1,
    ],
)
async def test_aud_tricks_fail(aud: Any) -> None:
    with pytest.raises(InvalidAudienceError):
        await verifier().verify(make(aud=aud))


async def test_missing_aud_fails() -> None:
    with pytest.raises(MissingClaimError):
        await verifier().verify(make(aud=_DROP))


async def test_any_configured_audience_matches() -> None:
    v = verifier(audience=("https://a", "https://b"))
    assert (await v.verify(make(aud=["https://x", "https://b"]))).sub
    with pytest.raises(InvalidAudienceError):
        await v.verify(make(aud="https://c"))


@pytest.mark.parametrize(
    "iss",
    [
        ISS.rstrip("/"),
        ISS.upper(),
        ISS.replace("https", "http"),
        ISS + "x",
        "https://evil.example/",
        1,
        [ISS],
        _DROP,
    ],
)
async def test_issuer_must_match_exactly(iss: Any) -> None:
    with pytest.raises(InvalidIssuerError):
        await verifier().verify(make(iss=iss))


async def test_wrong_issuer_never_reaches_the_key_source() -> None:
    calls: list[object] = []

    class Spy:
        generation = 0

        async def get_key(self, kid: str | None, alg: str) -> Any:
            calls.append(kid)
            raise KeySetError("down")

    v = TokenVerifier(Auth0Config(issuer=ISS, audience=AUD), key_set=Spy(), clock=lambda: NOW)
    with pytest.raises(InvalidIssuerError):
        await v.verify(make(iss="https://evil.example/"))
    with pytest.raises(AlgorithmNotAllowedError):
        await v.verify(make("RS512"))
    assert calls == []
    with pytest.raises(KeySetError):
        await v.verify(make())
    assert calls == ["RSA"]


async def test_additional_issuers_are_accepted() -> None:
    v = verifier(additional_issuers=("https://login.example.com/",))
    assert (await v.verify(make(iss="https://login.example.com/"))).sub


async def test_required_claims() -> None:
    v = verifier(required_claims=("iat", "azp"))
    with pytest.raises(MissingClaimError):
        await v.verify(make())
    assert (await v.verify(make(azp="client"))).sub


@pytest.mark.parametrize("sub", [123, None, ["a"], True])
async def test_sub_must_be_a_string_when_present(sub: Any) -> None:
    with pytest.raises(InvalidClaimError):
        await verifier().verify(make(sub=sub))
    assert (await verifier().verify(make(sub=_DROP))).sub is None


@pytest.mark.parametrize("jti", [5, None, ["a"], True])
async def test_jti_must_be_a_string_when_present(jti: Any) -> None:
    # RFC 7519 §4.1.7; an app that keys replay checks on jti must never see 5 and "5".
    with pytest.raises(InvalidClaimError, match="jti"):
        await verifier().verify(make(jti=jti))
    assert (await verifier().verify(make(jti="5")))["jti"] == "5"
    assert "jti" not in await verifier().verify(make())


# -- malformed input ------------------------------------------------------------------


def _seg(obj: Any) -> str:
    return b64url(json.dumps(obj).encode())


GOOD_HEADER = _seg({"alg": "RS256", "kid": "RSA"})
GOOD_PAYLOAD = _seg({"iss": ISS})
BAD_UTF8 = b64url(b"\xff\xfe")
BOM_PAYLOAD = b64url(b"\xef\xbb\xbf{}")
UTF16_PAYLOAD = b64url("{}".encode("utf-16"))
DUP_PAYLOAD = b64url(b'{"a":1,"a":2}')
DEEP_PAYLOAD = b64url(f'{{"iss": "{ISS}", "x": {"[" * 20}1{"]" * 20}}}'.encode())


@pytest.mark.parametrize(
    ("token", "error"),
    [
        ("", MalformedTokenError),
        ("abc", MalformedTokenError),
        ("a.b", MalformedTokenError),
        ("a.b.c.d", MalformedTokenError),
        ("a.b.c.d.e", MalformedTokenError),
        (f"{GOOD_HEADER}.{GOOD_PAYLOAD}.", MalformedTokenError),
        (f".{GOOD_PAYLOAD}.AAAA", MalformedTokenError),
        (f"{GOOD_HEADER}=.{GOOD_PAYLOAD}.AAAA", MalformedTokenError),
        (f"{GOOD_HEADER}.{GOOD_PAYLOAD}.AA+/", MalformedTokenError),
        (f"{GOOD_HEADER}.{GOOD_PAYLOAD}.AAB", MalformedTokenError),  # non-canonical bits
        (f"{_seg([1, 2])}.{GOOD_PAYLOAD}.AAAA", MalformedTokenError),
        (f"{_seg('str')}.{GOOD_PAYLOAD}.AAAA", MalformedTokenError),
        (f"{b64url(b'{not json')}.{GOOD_PAYLOAD}.AAAA", MalformedTokenError),
        (f"{BAD_UTF8}.{GOOD_PAYLOAD}.AAAA", MalformedTokenError),
        (f"{GOOD_HEADER}.{BOM_PAYLOAD}.AAAA", MalformedTokenError),
        (f"{GOOD_HEADER}.{UTF16_PAYLOAD}.AAAA", MalformedTokenError),
        (f"{GOOD_HEADER}.{DUP_PAYLOAD}.AAAA", MalformedTokenError),
        (f"{GOOD_HEADER}.{b64url(b'{} x')}.AAAA", MalformedTokenError),
        (f"{GOOD_HEADER}.{DEEP_PAYLOAD}.AAAA", MalformedTokenError),
        (f"{_seg({'kid': 'x'})}.{GOOD_PAYLOAD}.AAAA", MalformedTokenError),
        (f"{_seg({'alg': 'RS256', 'kid': 5})}.{GOOD_PAYLOAD}.AAAA", MalformedTokenError),
        (f"{_seg({'alg': 'RS256', 'kid': 'k' * 300})}.{GOOD_PAYLOAD}.AAAA", MalformedTokenError),
        ("é.b.c", MalformedTokenError),
        ("a" * 20000, TokenTooLargeError),
    ],
)
async def test_malformed_tokens_get_specific_errors(token: str, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        await verifier().verify(token)
    # The exact class, so the exact reason code: pytest.raises also passes a subclass
    # (a TokenTooLargeError is a MalformedTokenError, reason token_too_large).
    assert type(info.value) is error


async def test_deep_json_is_malformed_not_recursion_error() -> None:
    deep = "[" * 5000 + "]" * 5000
    token = f"{GOOD_HEADER}.{b64url(deep.encode())}.AAAA"
    with pytest.raises(MalformedTokenError):
        await verifier(max_token_size=20000).verify(token)


async def test_size_cap_is_configurable() -> None:
    token = make()
    with pytest.raises(TokenTooLargeError):
        await verifier(max_token_size=len(token) - 1).verify(token)
    assert (await verifier(max_token_size=len(token)).verify(token)).sub


@pytest.mark.parametrize("junk", [None, 1, b"abc", ["a"], {"a": 1}])
async def test_non_string_input_is_malformed(junk: Any) -> None:
    with pytest.raises(MalformedTokenError):
        await verifier().verify(junk)


# -- the verified-token cache -------------------------------------------------------------


async def verify_twice(v: TokenVerifier, token: str) -> None:
    """Verify ``token`` twice: the cache takes a token at its second verification."""
    await v.verify(token)
    await v.verify(token)


async def test_cache_honours_exp_on_every_hit() -> None:
    now = [NOW]
    v = verifier(clock=lambda: now[0], leeway=0)
    token = make(exp=NOW + 10)
    assert (await v.verify(token)).sub
    assert v.cache_info()["entries"] == 0  # seen once: not cached yet
    assert (await v.verify(token)).sub
    assert v.cache_info()["entries"] == 1
    now[0] = NOW + 10
    with pytest.raises(ExpiredTokenError):
        await v.verify(token)


async def test_cache_is_dropped_when_the_key_set_changes() -> None:
    class Rotating:
        def __init__(self) -> None:
            self.inner = StaticKeySet(jwks("RSA"))
            self.generation = 1

        async def get_key(self, kid: str | None, alg: str) -> Any:
            return await self.inner.get_key(kid, alg)

    ks = Rotating()
    v = TokenVerifier(Auth0Config(issuer=ISS, audience=AUD), key_set=ks, clock=lambda: NOW)
    token = make()
    await verify_twice(v, token)
    assert v.cache_info()["entries"] == 1  # so the next verification is a cache hit
    ks.inner = StaticKeySet(jwks("P-256"))  # the RSA key is gone
    ks.generation = 2
    with pytest.raises(UnknownKeyError):
        await v.verify(token)


async def test_cache_size_is_bounded_and_configurable() -> None:
    v = verifier(token_cache_size=3)
    for i in range(5):
        await verify_twice(v, make(jti=str(i)))
    assert v.cache_info()["entries"] == 3
    assert v.cache_info()["approx_bytes_per_entry"] > 0
    off = verifier(token_cache_size=0)
    await verify_twice(off, make())
    assert off.cache_info()["entries"] == 0


async def test_cache_holds_at_most_2048_token_characters_per_entry() -> None:
    # Budget: 8 entries x 2,048 = 16,384 characters. Tokens of about 3,400 fill it
    # at 4 entries; the oldest go first, as when the entry count is reached.
    v = verifier(token_cache_size=8, max_token_size=4096)
    large = [make(jti=str(i), pad="x" * 2000) for i in range(8)]
    assert {len(t) for t in large} == {len(large[0])}
    assert 3000 < len(large[0]) < 4096
    for token in large:
        await verify_twice(v, token)
    info = v.cache_info()
    assert info["max_token_chars"] == 8 * 2048
    assert info["entries"] == 16384 // len(large[0])
    assert info["token_chars"] == sum(len(t) for t in large[-info["entries"] :])
    assert info["token_chars"] <= info["max_token_chars"]
    # Ordinary tokens never meet the budget: the count binds first.
    small = verifier(token_cache_size=8)
    for i in range(10):
        await verify_twice(small, make(jti=str(i)))
    assert small.cache_info()["entries"] == 8


async def test_cache_always_has_room_for_one_token_of_the_largest_size() -> None:
    v = verifier(token_cache_size=1, max_token_size=4096)
    token = make(pad="x" * 2000)
    assert len(token) > 2048
    await v.verify(token)
    assert v.cache_info()["entries"] == 0  # seen once: not cached yet
    await v.verify(token)
    info = v.cache_info()
    assert (info["entries"], info["token_chars"], info["max_token_chars"]) == (1, len(token), 4096)


async def test_a_token_verified_twice_at_once_is_counted_once() -> None:
    class Gated:
        """Holds every key lookup until released, so both verifications are cold."""

        generation = 1

        def __init__(self) -> None:
            self.inner = StaticKeySet(jwks("RSA"))
            self.release = anyio.Event()

        async def get_key(self, kid: str | None, alg: str) -> Any:
            await self.release.wait()
            return await self.inner.get_key(kid, alg)

    keys = Gated()
    v = TokenVerifier(Auth0Config(issuer=ISS, audience=AUD), key_set=keys, clock=lambda: NOW)
    token = make()
    # Seen once first, so that both verifications below put it in the cache.
    keys.release.set()
    await v.verify(token)
    assert v.cache_info()["entries"] == 0
    keys.release = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(v.verify, token)
        tg.start_soon(v.verify, token)
        await anyio.wait_all_tasks_blocked()
        keys.release.set()
    info = v.cache_info()
    assert (info["entries"], info["token_chars"]) == (1, len(token))


async def test_cache_character_count_follows_drops_and_clears() -> None:
    now = [NOW]
    v = verifier(clock=lambda: now[0], leeway=0)
    token, other = make(exp=NOW + 10), make(exp=NOW + 100, jti="other")
    await verify_twice(v, token)
    await verify_twice(v, other)
    await v.verify(other)  # a hit adds nothing
    assert v.cache_info()["token_chars"] == len(token) + len(other)
    now[0] = NOW + 10  # the first one's verdict is dropped on its next use
    with pytest.raises(ExpiredTokenError):
        await v.verify(token)
    assert v.cache_info()["token_chars"] == len(other)
    v.clear_cache()
    assert v.cache_info()["token_chars"] == 0
    # The clear forgets which tokens were seen too: the next verification of one is a
    # first sighting again.
    await v.verify(other)
    assert v.cache_info()["entries"] == 0
    # Counted from zero again: an over-count left behind would evict early.
    for i in range(3):
        await verify_twice(v, make(jti=str(i)))
    assert v.cache_info()["entries"] == 3


async def test_max_token_age_is_honoured_on_cache_hits() -> None:
    now = [NOW]
    v = verifier(clock=lambda: now[0], leeway=0, max_token_age=60)
    token = make(iat=NOW - 30)
    await verify_twice(v, token)
    assert v.cache_info()["entries"] == 1  # so the next verification is a cache hit
    now[0] = NOW + 31
    with pytest.raises(TokenTooOldError):
        await v.verify(token)


async def test_foreign_key_source_returning_cryptography_keys() -> None:
    class Raw:
        async def get_key(self, kid: str | None, alg: str) -> Any:
            return key("RSA").public_key()

    v = TokenVerifier(Auth0Config(issuer=ISS, audience=AUD), key_set=Raw(), clock=lambda: NOW)
    token = make()
    assert (await v.verify(token)).sub
    assert (await v.verify(token)).sub  # twice: where any other token would be cached
    assert v.cache_info()["entries"] == 0  # no generation: never cached


def _ed448_token() -> tuple[Any, str]:
    from cryptography.hazmat.primitives.asymmetric import ed448

    private = ed448.Ed448PrivateKey.generate()
    signing_input = f"{_seg({'alg': 'EdDSA', 'kid': 'ed448'})}.{_seg(claims())}"
    return private.public_key(), f"{signing_input}.{b64url(private.sign(signing_input.encode()))}"


@pytest.mark.parametrize("kind", ["P-256", "P-384", "P-521", "Ed25519", "Ed448"])
async def test_foreign_cryptography_keys_of_every_type_verify(kind: str) -> None:
    # A user's key source may return plain cryptography keys; each type is adapted to
    # the algorithms it fits (and a signature by it verifies).
    if kind == "Ed448":
        public, token, alg = *_ed448_token(), "EdDSA"
    else:
        alg = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "Ed25519": "EdDSA"}[kind]
        public, token = key(kind).public_key(), make(alg)

    class Raw:
        async def get_key(self, kid: str | None, alg: str) -> Any:
            return public

    config = Auth0Config(issuer=ISS, audience=AUD, algorithms=(alg,))
    v = TokenVerifier(config, key_set=Raw(), clock=lambda: NOW)
    assert (await v.verify(token)).sub == "auth0|123"


@pytest.mark.parametrize("junk", ["small-rsa", "secp256k1", None, "a key", b"\x04" * 65])
async def test_a_key_source_returning_no_usable_key_is_key_set_error(junk: Any) -> None:
    # Never an AttributeError (a 500), never a key under 2048 bits or on another curve.
    from cryptography.hazmat.primitives.asymmetric import ec

    returned = {
        "small-rsa": lambda: generate_private_key("RSA", rsa_bits=1024).public_key(),
        "secp256k1": lambda: ec.generate_private_key(ec.SECP256K1()).public_key(),
    }.get(junk, lambda: junk)()

    class Odd:
        async def get_key(self, kid: str | None, alg: str) -> Any:
            return returned

    v = TokenVerifier(Auth0Config(issuer=ISS, audience=AUD), key_set=Odd(), clock=lambda: NOW)
    with pytest.raises(KeySetError):
        await v.verify(make())


async def test_a_key_that_does_not_fit_the_alg_is_refused_whatever_the_source() -> None:
    # A custom key source may hand back any key; the verifier itself refuses one whose
    # type does not fit the token's alg (an EC key for an RS256 token), as an alg
    # mismatch rather than a mere bad signature.
    class Wrong:
        generation = 0

        async def get_key(self, kid: str | None, alg: str) -> Any:
            return key("P-256").public_key()

    v = TokenVerifier(Auth0Config(issuer=ISS, audience=AUD), key_set=Wrong(), clock=lambda: NOW)
    with pytest.raises(AlgorithmNotAllowedError):
        await v.verify(make())


def test_construction_refuses_a_config_or_key_set_of_the_wrong_kind() -> None:
    # A mistake in wiring fails at startup, not as a confusing error on the first token.
    with pytest.raises(TypeError, match="Auth0Config"):
        TokenVerifier({"issuer": ISS, "audience": AUD})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="get_key"):
        TokenVerifier(Auth0Config(issuer=ISS, audience=AUD), key_set=jwks("RSA"))


async def test_broken_key_source_is_key_set_error_and_logged_with_its_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A bug or a misuse (say, a key source used from another event loop) must not hide
    # behind a 503: the cause is logged, the token is not.
    class Broken:
        async def get_key(self, kid: str | None, alg: str) -> Any:
            raise RuntimeError("bound to a different event loop")

        def __repr__(self) -> str:
            return "Broken(url='https://user:s3cret@keys.internal/jwks')"

    v = TokenVerifier(Auth0Config(issuer=ISS, audience=AUD), key_set=Broken(), clock=lambda: NOW)
    token = make()
    with pytest.raises(KeySetError):
        await v.verify(token)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.__dict__["reason"] == "key_source_failed"
    assert record.exc_info is not None
    assert "bound to a different event loop" in str(record.exc_info[1])
    assert token not in record.getMessage()
    # Named by its class: a key source's repr may hold a URL with a password.
    assert re.search(r"^the key source \([\w.<>]*Broken\) failed", record.getMessage())
    assert "s3cret" not in record.getMessage()


async def test_only_an_exact_str_token_is_cached() -> None:
    # A str subclass is never looked up in the cache (it may hash or compare its own
    # way), so it is not put there either: it would only take a slot.
    class Token(str):
        pass

    v = verifier()
    token = make()
    for _ in range(2):  # twice: where an exact str would be cached
        assert (await v.verify(Token(token))).sub == "auth0|123"
    assert v.cache_info()["entries"] == 0
    # Nor does it count as a first sighting of the same text: the exact str is taken
    # at its own second verification, as any other token.
    assert (await v.verify(token)).sub == "auth0|123"
    assert v.cache_info()["entries"] == 0
    assert (await v.verify(token)).sub == "auth0|123"
    assert v.cache_info()["entries"] == 1


def caught_detail(caplog: pytest.LogCaptureFixture) -> object:
    [record] = [r for r in caplog.records if r.name == "asgi_auth0.verify"]
    return getattr(record, "detail", None)


def _debug_line(caplog: pytest.LogCaptureFixture) -> str:
    [record] = [r for r in caplog.records if r.name == "asgi_auth0.verify"]
    return record.getMessage()


@pytest.mark.parametrize(
    ("token", "error", "expected"),
    [
        # The issuer check runs before a parsed token exists: a v1/v2 or custom-domain
        # mix-up shows the iss the token really carries.
        (
            lambda: make(iss="https://sts.windows.net/tid/"),
            InvalidIssuerError,
            ("reason=invalid_issuer", "iss='https://sts.windows.net/tid/'", "kid='RSA'"),
        ),
        # The allow-list is checked inside the parser (an HS256 API's token).
        (
            lambda: ".".join(
                b64url(json.dumps(part).encode())
                for part in ({"alg": "HS256", "kid": "hs"}, claims(), "mac")
            ),
            AlgorithmNotAllowedError,
            ("reason=alg_not_allowed", "alg='HS256'", "kid='hs'", f"iss='{ISS}'"),
        ),
        # strict_typ: an ID token (typ JWT) sent to an RFC 9068 API.
        (
            make,
            InvalidTypeError,
            ("reason=invalid_typ", "alg='RS256'", f"iss='{ISS}'"),
        ),
    ],
)
async def test_early_rejections_still_log_kid_alg_iss(
    token: Callable[[], str],
    error: type[Exception],
    expected: tuple[str, ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    strict = error is InvalidTypeError
    value = token()
    with caplog.at_level(logging.DEBUG, logger="asgi_auth0.verify"), pytest.raises(error):
        await verifier(strict_typ=strict).verify(value)
    message = _debug_line(caplog)
    for part in expected:
        assert part in message
    # And why, in our own words (the exception's detail).
    assert message.endswith(": " + str(caught_detail(caplog)))
    for segment in value.split("."):
        assert segment not in message


@pytest.mark.parametrize(
    "token", ["not-a-token", "a.b.c", "!!!.???.###", "e30.W10.c2ln", "x" * 20_000]
)
async def test_unreadable_tokens_log_none_for_what_cannot_be_read(
    token: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger="asgi_auth0.verify"),
        pytest.raises(InvalidTokenError),
    ):
        await verifier().verify(token)
    assert "kid=None alg=None iss=None" in _debug_line(caplog)


async def test_rejections_are_logged_with_reason_kid_alg_iss_and_no_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = make(kid="evil\nkid")  # no such key
    with (
        caplog.at_level(logging.DEBUG, logger="asgi_auth0.verify"),
        pytest.raises(UnknownKeyError),
    ):
        await verifier().verify(token)
    [record] = [r for r in caplog.records if r.name == "asgi_auth0.verify"]
    message = record.getMessage()
    assert "reason=unknown_kid" in message
    assert "kid='evil\\nkid'" in message  # escaped: no forged log line
    assert "alg='RS256'" in message
    assert f"iss='{ISS}'" in message
    assert "\n" not in message
    for segment in token.split("."):
        assert segment not in message


async def test_an_encrypted_token_says_it_came_from_a_login_without_audience() -> None:
    # Auth0's answer to a login that names no API is a JWE (five segments) for
    # /userinfo: the commonest first mistake, so the detail in the logs names the fix.
    jwe = ".".join(b64url(json.dumps(p).encode()) for p in ({"alg": "dir", "enc": "A256GCM"},))
    jwe += ".." + ".".join(["aXY", "Y2lwaGVy", "dGFn"])
    assert jwe.count(".") == 4
    with pytest.raises(MalformedTokenError) as caught:
        await verifier().verify(jwe)
    assert caught.value.detail is not None
    assert "audience=" in caught.value.detail


async def test_a_keycloak_token_without_aud_says_where_aud_comes_from() -> None:
    realm = "https://sso.example.com/realms/acme"
    v = verifier(issuer=realm)
    with pytest.raises(MissingClaimError) as caught:
        await v.verify(make(iss=realm, aud=_DROP))
    assert caught.value.detail is not None
    assert "Audience mapper" in caught.value.detail
    with pytest.raises(MissingClaimError) as plain:
        await verifier().verify(make(aud=_DROP))
    assert plain.value.detail == "aud is required"
