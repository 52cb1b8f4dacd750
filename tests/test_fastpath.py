"""The verifier's fast path: every shortcut gives the same verdicts as the plain way.

Covers the one-pass base64url decoder, the whole-token alphabet pass and its
segment-by-segment fallback, the checked-header cache, the cheap JSON depth pre-check,
the lazily built ``Claims`` and the per-key signature checks.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_auth0 import (
    AlgorithmNotAllowedError,
    Auth0Config,
    Claims,
    InvalidSignatureError,
    JWKSCache,
    KeySetError,
    MalformedTokenError,
    PublicKey,
    StaticKeySet,
    TokenVerifier,
    UnsupportedHeaderError,
)
from asgi_auth0._jose import HEADER_CACHE_SIZE, MAX_JSON_DEPTH, JWSParser, parse_compact
from asgi_auth0._keys import b64url_decode, parse_jwk
from asgi_auth0._signing import b64url, generate_private_key, public_jwk, sign_jws
from asgi_auth0.testing import LocalIssuer

ISS = "https://tenant.example.auth0.com/"
AUD = "https://api.example.com"
NOW = 1_800_000_000
RSA = generate_private_key("RSA")
ED = generate_private_key("Ed25519")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def reference_decode(data: str) -> bytes:
    """The obviously-correct strict decoder: decode, then insist that re-encoding
    gives back exactly the input."""
    if "=" in data or len(data) % 4 == 1:
        raise ValueError("not unpadded")
    try:
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != data:
        raise ValueError("not canonical")
    return raw


def lenient(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def outcome(fn: Any, data: str) -> bytes | str:
    try:
        return fn(data)  # type: ignore[no-any-return]
    except ValueError:
        return "refused"


# -- base64url ----------------------------------------------------------------------


@given(st.text(alphabet=ALPHABET + "+/=. \n\t\x00é", max_size=24))
def test_decoder_agrees_with_the_reencoding_reference(data: str) -> None:
    assert outcome(b64url_decode, data) == outcome(reference_decode, data)


@given(st.binary(max_size=64))
def test_decoder_round_trips_every_byte_string(raw: bytes) -> None:
    assert b64url_decode(b64url(raw)) == raw


@pytest.mark.parametrize(
    ("spelling", "why"),
    [
        ("QR", "unused bits set after 2 characters (canonical: QQ)"),
        ("QUF", "unused bits set after 3 characters (canonical: QUE)"),
        ("QQ==", "padding"),
        ("QQ=", "partial padding"),
        ("a+8", "standard alphabet '+'"),
        ("a/8", "standard alphabet '/'"),
        ("QUJD\n", "whitespace"),
        ("Q", "a length no encoding has"),
        ("QU\u00e9", "non-ASCII"),
    ],
)
def test_decoder_refuses_every_second_spelling(spelling: str, why: str) -> None:
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode(spelling)


# -- whole-token parsing ------------------------------------------------------------


def _segments(token: str) -> list[str]:
    return token.split(".")


def _token(payload: dict[str, Any] | None = None, **header: Any) -> str:
    body = {"iss": ISS, "aud": AUD, "sub": "auth0|1", "iat": NOW - 1, "exp": NOW + 60}
    body.update(payload or {})
    return sign_jws(RSA, {"alg": "RS256", "kid": "k", **header}, body)


def _respell_last_char(segment: str) -> str:
    """The same bytes with the unused low bits of the final character set."""
    assert len(segment) % 4 in (2, 3), "pick a segment with spare bits"
    value = ALPHABET.index(segment[-1]) | (0b1111 if len(segment) % 4 == 2 else 0b11)
    return segment[:-1] + ALPHABET[value]


def _with_spare_bits(make: Any) -> str:
    # Segment lengths vary with the content; find one where the segment has spare bits.
    for n in range(8):
        token = make(n)
        if all(len(s) % 4 in (2, 3) for s in _segments(token)):
            return token  # type: ignore[no-any-return]
    raise AssertionError("no token with spare bits in every segment")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_non_canonical_final_character_is_refused_in_every_segment(index: int) -> None:
    token = _with_spare_bits(lambda n: _token({"pad": "x" * n}, typ="J" * n))
    parts = _segments(token)
    parts[index] = _respell_last_char(parts[index])
    bad = ".".join(parts)
    # A lenient decoder reads the respelling as the very same bytes; we must not.
    assert lenient(parts[index]) == lenient(_segments(token)[index])
    parser = JWSParser(max_size=16384, algorithms=frozenset({"RS256"}))
    parser.parse(token)  # the header is now cached: the fast path must still refuse
    with pytest.raises(MalformedTokenError):
        parser.parse(bad)


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("intruder", ["=", "+", "/", " ", "\\"])
def test_a_foreign_byte_is_refused_in_every_segment(index: int, intruder: str) -> None:
    parts = _segments(_token())
    parts[index] = parts[index][:4] + intruder + parts[index][4:]
    parser = JWSParser(max_size=16384, algorithms=frozenset({"RS256"}))
    parser.parse(_token())
    with pytest.raises(MalformedTokenError):
        parser.parse(".".join(parts))


def test_a_padded_signature_is_refused() -> None:
    token = _token()
    with pytest.raises(MalformedTokenError):
        parse_compact(token + "==", max_size=16384, algorithms=frozenset({"RS256"}))


def test_the_fallback_keeps_the_documented_error_order() -> None:
    # A bad alg in the header and a foreign byte in the signature: the header is
    # checked first, so the answer is the alg, exactly as before the one-pass check.
    header = b64url(json.dumps({"alg": "HS256"}).encode())
    payload = b64url(b'{"iss":"x"}')
    with pytest.raises(AlgorithmNotAllowedError):
        parse_compact(f"{header}.{payload}.ab+c", max_size=16384, algorithms=frozenset({"RS256"}))
    # The same token with a clean signature reaches the same verdict.
    with pytest.raises(AlgorithmNotAllowedError):
        parse_compact(f"{header}.{payload}.abcd", max_size=16384, algorithms=frozenset({"RS256"}))


def test_the_signing_input_is_the_tokens_own_bytes() -> None:
    token = _with_spare_bits(lambda n: _token({"sub": "a-_?>" * (n + 1)}))
    parsed = parse_compact(token, max_size=16384, algorithms=frozenset({"RS256"}))
    assert parsed.signing_input == token.rsplit(".", 1)[0].encode("ascii")


# -- the checked-header cache -------------------------------------------------------


def test_header_cache_is_bounded() -> None:
    parser = JWSParser(max_size=16384, algorithms=frozenset({"RS256"}))
    for i in range(HEADER_CACHE_SIZE * 3):
        parser.parse(_token(kid=f"key-{i}"))
        assert parser.cached_headers <= HEADER_CACHE_SIZE
    assert parser.cached_headers == HEADER_CACHE_SIZE


_HEADER_ERRORS = (AlgorithmNotAllowedError, UnsupportedHeaderError, MalformedTokenError)


def test_header_cache_keeps_only_headers_that_passed() -> None:
    parser = JWSParser(max_size=16384, algorithms=frozenset({"RS256"}))
    refused = [
        sign_jws(ED, {"alg": "EdDSA", "kid": "k"}, {"iss": ISS}),
        _token(crit=["exp"]),
        _token(b64=False),
        _token(kid=7),
    ]
    for token in refused:
        for _ in range(2):  # a second sight must not be waved through by a cache
            with pytest.raises(
                (AlgorithmNotAllowedError, UnsupportedHeaderError, MalformedTokenError)
            ):
                parser.parse(token)
    assert parser.cached_headers == 0


def test_a_cached_header_is_still_checked_against_this_parsers_allow_list() -> None:
    token = _token()
    JWSParser(max_size=16384, algorithms=frozenset({"RS256"})).parse(token)
    with pytest.raises(AlgorithmNotAllowedError):
        JWSParser(max_size=16384, algorithms=frozenset({"ES256"})).parse(token)


def test_header_cache_can_be_turned_off() -> None:
    parser = JWSParser(max_size=16384, algorithms=frozenset({"RS256"}), header_cache_size=0)
    parser.parse(_token())
    assert parser.cached_headers == 0


def test_a_cached_header_is_read_only_all_the_way_down() -> None:
    parser = JWSParser(max_size=16384, algorithms=frozenset({"RS256"}))
    first = parser.parse(_token(x5c=["a"], ext={"n": [1]}))
    second = parser.parse(_token(x5c=["a"], ext={"n": [1]}))
    assert first.header is second.header  # served from the cache
    with pytest.raises(TypeError):
        first.header["alg"] = "none"
    with pytest.raises(TypeError):
        first.header["ext"]["n"] = 2
    assert first.header["x5c"] == ("a",)
    assert first.header["ext"]["n"] == (1,)


# -- JSON depth pre-check -----------------------------------------------------------


def test_nesting_beyond_the_limit_is_refused_and_at_the_limit_accepted() -> None:
    def nested(depth: int) -> dict[str, Any]:
        value: Any = 1
        for _ in range(depth - 1):  # the payload object itself is one level
            value = [value]
        return {"iss": ISS, "deep": value}

    algorithms = frozenset({"RS256"})
    parse_compact(_token(nested(MAX_JSON_DEPTH)), max_size=16384, algorithms=algorithms)
    with pytest.raises(MalformedTokenError):
        parse_compact(_token(nested(MAX_JSON_DEPTH + 1)), max_size=16384, algorithms=algorithms)


def test_the_nesting_limit_is_the_documented_sixteen_levels() -> None:
    # SECURITY.md promises 16; the test above follows the constant, so it would not
    # notice the constant itself moving.
    def nested(depth: int) -> dict[str, Any]:
        value: Any = 1
        for _ in range(depth - 1):  # objects this time; the payload is one level
            value = {"x": value}
        return {"iss": ISS, "deep": value}

    algorithms = frozenset({"RS256"})
    parse_compact(_token(nested(16)), max_size=16384, algorithms=algorithms)
    with pytest.raises(MalformedTokenError):
        parse_compact(_token(nested(17)), max_size=16384, algorithms=algorithms)
    # With more brackets than levels the exact walk runs: 16 levels still pass, built
    # from objects or from arrays.
    in_arrays: Any = 1
    for _ in range(15):
        in_arrays = [in_arrays]
    for deep in (nested(16), {"iss": ISS, "deep": in_arrays}):
        at_limit = {**deep, "flat": [1], "also": {"a": 1}}
        parse_compact(_token(at_limit), max_size=16384, algorithms=algorithms)


def test_brackets_inside_strings_do_not_refuse_a_flat_payload() -> None:
    payload = {"note": "[" * 40 + "{" * 40}
    parsed = parse_compact(_token(payload), max_size=16384, algorithms=frozenset({"RS256"}))
    assert parsed.payload["note"] == payload["note"]


# -- the verifier end to end --------------------------------------------------------


def _verifier(**cfg: Any) -> TokenVerifier:
    return TokenVerifier(
        Auth0Config(issuer=ISS, audience=AUD, **cfg),
        key_set=StaticKeySet({"keys": [public_jwk(RSA, kid="k")]}),
        clock=lambda: NOW,
    )


@pytest.mark.anyio
async def test_tokens_sharing_a_header_each_get_their_own_payload_and_signature() -> None:
    v = _verifier(token_cache_size=0)
    a = await v.verify(_token({"sub": "a"}))
    b = await v.verify(_token({"sub": "b"}))
    assert (a.sub, b.sub) == ("a", "b")
    forged = _segments(_token({"sub": "a"}))
    forged[1] = _segments(_token({"sub": "b"}))[1]  # b's payload under a's signature
    with pytest.raises(InvalidSignatureError):
        await v.verify(".".join(forged))


@pytest.mark.anyio
async def test_verified_claims_are_frozen_and_scopes_computed_on_demand() -> None:
    v = _verifier()
    claims = await v.verify(
        _token({"scope": "a b", "permissions": ["p", "q", 3], "nested": {"l": [1, {"m": []}]}})
    )
    assert claims.scopes == {"a", "b"}
    assert claims.permissions == {"p", "q"}
    assert claims["permissions"] == ("p", "q", 3)
    assert claims["nested"]["l"] == (1, {"m": ()})
    with pytest.raises(TypeError):
        claims["nested"]["l2"] = 1
    with pytest.raises(TypeError):
        claims["nested"]["l"][1]["m"] = 1
    with pytest.raises(AttributeError):
        claims._scopes = frozenset()  # type: ignore[misc]
    assert claims.to_dict()["nested"] == {"l": [1, {"m": []}]}


def test_adopted_and_constructed_claims_are_equal() -> None:
    payload = {"sub": "x", "scp": ["r"], "permissions": ["w"], "o": {"a": [1]}}
    built = Claims(payload)
    adopted = Claims._adopt(json.loads(json.dumps(payload)))
    assert built == adopted
    assert (built.scopes, built.permissions) == (adopted.scopes, adopted.permissions)


# -- per-key signature checks -------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "alg"),
    [("RSA", "RS256"), ("RSA", "PS384"), ("P-256", "ES256"), ("Ed25519", "EdDSA")],
)
def test_a_key_checks_many_signatures_with_its_reused_objects(kind: str, alg: str) -> None:
    private = RSA if kind == "RSA" else ED if kind == "Ed25519" else generate_private_key(kind)
    key = parse_jwk(public_jwk(private))
    for i in range(3):
        token = sign_jws(private, {"alg": alg}, {"i": i})
        signing_input, _, sig = token.rpartition(".")
        signature = b64url_decode(sig)
        assert key.verify(alg, signing_input.encode(), signature)
        assert not key.verify(alg, signing_input.encode() + b"x", signature)


def test_a_key_never_verifies_an_alg_it_does_not_fit() -> None:
    key = parse_jwk(public_jwk(RSA, alg="RS256"))
    token = sign_jws(RSA, {"alg": "PS256"}, {})
    signing_input, _, sig = token.rpartition(".")
    # PS256 is a valid signature by this RSA key, but the JWK pins RS256.
    assert not key.verify("PS256", signing_input.encode(), b64url_decode(sig))
    assert not key.verify("ES256", signing_input.encode(), b64url_decode(sig))


# -- cache memory report ------------------------------------------------------------


@pytest.mark.anyio
async def test_cache_info_counts_every_byte_a_cached_token_holds() -> None:
    async def per_entry(payload: dict[str, Any]) -> int:
        v = _verifier()
        token = _token(payload)
        await v.verify(token)
        assert v.cache_info()["entries"] == 0  # the cache takes it at its second verification
        await v.verify(token)
        info = v.cache_info()
        assert info["entries"] == 1
        return info["approx_bytes_per_entry"]

    base = await per_entry({})
    # The token string alone is stored, so the estimate is at least its length.
    assert base > len(_token({}))
    # A large claim, flat or buried in arrays and objects, is counted (twice here: once
    # in the token string, once decoded in the claims).
    assert await per_entry({"big": "x" * 5000}) >= base + 2 * 5000
    assert await per_entry({"n": {"l": [{"deep": "y" * 5000}]}}) >= base + 2 * 5000


class _RacyCache(OrderedDict[str, Any]):
    """Acts as if another thread emptied the cache just before each reordering."""

    def move_to_end(self, key: str, last: bool = True) -> None:
        self.clear()
        super().move_to_end(key, last)

    def popitem(self, last: bool = True) -> tuple[str, Any]:
        self.clear()
        return super().popitem(last)


@pytest.mark.anyio
async def test_a_cache_entry_vanishing_under_another_thread_is_not_an_error() -> None:
    v = _verifier(token_cache_size=1)
    racy = _RacyCache()
    v._cache = racy  # type: ignore[assignment]
    first, second = _token({"sub": "a"}), _token({"sub": "b"})
    assert (await v.verify(first)).sub == "a"
    assert first not in racy  # the cache takes a token at its second verification
    assert (await v.verify(first)).sub == "a"
    assert first in racy
    # A hit whose reordering finds the entry gone still returns the verified claims.
    assert (await v.verify(first)).sub == "a"
    assert first not in racy
    # Inserting over capacity when the oldest entry is already gone: no error either.
    # second goes in at its second verification, whose eviction finds the cache empty.
    await v.verify(first)
    assert (await v.verify(second)).sub == "b"
    assert (await v.verify(second)).sub == "b"
    assert not racy


# -- the synchronous key lookup (JWKSCache._find_fresh) ---------------------------------


def _issuer_and_cache(cls: type[JWKSCache] = JWKSCache) -> tuple[LocalIssuer, JWKSCache]:
    issuer = LocalIssuer(issuer=ISS, audience=AUD, private_key=ED, kid="k1")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=issuer.asgi_app))
    cache = cls(ISS + ".well-known/jwks.json", http_client=client, algorithms=("EdDSA",))
    return issuer, cache


@pytest.mark.anyio
async def test_the_synchronous_key_lookup_agrees_with_get_key() -> None:
    # verify() asks a JWKSCache's fresh set directly, without a coroutine; it must
    # answer what get_key answers, or None where get_key would do more than look up.
    _, cache = _issuer_and_cache()
    kid = "k1"
    assert cache._find_fresh(kid, "EdDSA") is None  # nothing loaded: get_key fetches
    await cache.refresh()
    assert cache._find_fresh(kid, "EdDSA") is await cache.get_key(kid, "EdDSA")
    assert cache._find_fresh("no-such-kid", "EdDSA") is None  # get_key's slow path
    assert cache._find_fresh(None, "EdDSA") is None
    for alg in ("RS256", "none", 7):
        with pytest.raises(AlgorithmNotAllowedError):
            cache._find_fresh(kid, alg)  # type: ignore[arg-type]
        with pytest.raises(AlgorithmNotAllowedError):
            await cache.get_key(kid, alg)  # type: ignore[arg-type]
    await cache.aclose()


@pytest.mark.anyio
async def test_a_jwks_cache_subclass_with_its_own_get_key_is_always_asked() -> None:
    # The synchronous lookup is used for JWKSCache itself only: a subclass may add
    # rules in get_key (a deny-list of kids, say), which no token may skip.
    asked: list[str | None] = []

    class Audited(JWKSCache):
        async def get_key(self, kid: str | None, alg: str) -> PublicKey:
            asked.append(kid)
            return await super().get_key(kid, alg)

    config = Auth0Config(issuer=ISS, audience=AUD, algorithms=("EdDSA",), token_cache_size=0)
    for cls, expected in ((JWKSCache, 0), (Audited, 2)):
        asked.clear()
        issuer, cache = _issuer_and_cache(cls)
        await cache.refresh()
        verifier = TokenVerifier(config, key_set=cache)
        for _ in range(2):
            assert (await verifier.verify(issuer.token(sub="a"))).sub == "a"
        assert len(asked) == expected, cls
        await cache.aclose()


@pytest.mark.anyio
async def test_a_failing_clock_in_the_synchronous_lookup_is_the_key_sources_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Through get_key, an exception from the cache's injected clock was reported as the
    # key source failing (503, logged); the synchronous lookup must not turn it into a
    # 500 by letting it out of verify().
    issuer = LocalIssuer(issuer=ISS, audience=AUD, private_key=ED, kid="k1")
    broken = False

    def clock() -> float:
        if broken:
            raise RuntimeError("clock source unavailable")
        return 1000.0

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=issuer.asgi_app))
    cache = JWKSCache(
        ISS + ".well-known/jwks.json", http_client=client, algorithms=("EdDSA",), clock=clock
    )
    await cache.refresh()
    config = Auth0Config(issuer=ISS, audience=AUD, algorithms=("EdDSA",), token_cache_size=0)
    verifier = TokenVerifier(config, key_set=cache)
    token = issuer.token(sub="a")
    assert (await verifier.verify(token)).sub == "a"
    broken = True
    with pytest.raises(KeySetError, match="the key source failed unexpectedly"):
        await verifier.verify(token)
    assert "the key source (JWKSCache) failed unexpectedly" in caplog.text
    broken = False
    await cache.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["class", "instance"])
async def test_a_replaced_get_key_is_honoured_with_a_fresh_set_loaded(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A test that replaces get_key to play an outage (on the class, as mock.patch.object
    # does, or on the instance) before building the verifier must see it answer even
    # with a fresh set loaded: the synchronous lookup stands in only for JWKSCache's
    # own get_key. (The verifier binds get_key when it is built, as it always has.)
    async def outage(*args: Any) -> PublicKey:
        raise KeySetError("maintenance")

    issuer, cache = _issuer_and_cache()
    await cache.refresh()
    config = Auth0Config(issuer=ISS, audience=AUD, algorithms=("EdDSA",), token_cache_size=0)
    token = issuer.token(sub="a")
    assert (await TokenVerifier(config, key_set=cache).verify(token)).sub == "a"
    if where == "class":
        monkeypatch.setattr(JWKSCache, "get_key", outage)
    else:
        monkeypatch.setattr(cache, "get_key", outage)
    with pytest.raises(KeySetError, match="maintenance"):
        await TokenVerifier(config, key_set=cache).verify(token)
    monkeypatch.undo()
    assert (await TokenVerifier(config, key_set=cache).verify(token)).sub == "a"
    await cache.aclose()
