"""asgi_auth0.testing.DPoPKey as a user of the testing kit meets it: each key kind
mints proofs that TokenVerifier.verify_dpop takes (with dpop_algorithms set to match),
its ``cnf``/``jkt`` is the RFC 7638 thumbprint of its public ``jwk`` (computed here from
the JWK members, checked against the RFCs' own examples), its ``jwk`` is public only,
and the overrides of ``proof()`` mint exactly the broken proof asked for, which the
verifier refuses for that reason and no other.

The signatures are also checked here with ``cryptography`` directly, so a proof is
known to be right independently of the verifier that accepts it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from asgi_auth0._errors import (
    Auth0Error,
    DPoPBindingError,
    DPoPProofReplayedError,
    InvalidDPoPProofError,
)
from asgi_auth0._keys import StaticKeySet
from asgi_auth0._middleware import Auth0Middleware
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.testing import DPoPKey, LocalIssuer

URL = "http://testserver/me"

# (kind, alg given to DPoPKey or None for its default, the alg its proofs carry)
KINDS = [
    ("P-256", None, "ES256"),
    ("P-384", None, "ES384"),
    ("Ed25519", None, "EdDSA"),
    ("Ed25519", "Ed25519", "Ed25519"),
    ("RSA", None, "RS256"),
    ("RSA", "PS256", "PS256"),
]
KIND_IDS = [f"{kind}-{alg}" for kind, _, alg in KINDS]

# RFC 7638 §3.2: the members a thumbprint hashes, in lexicographic order.
THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}
# Private (and symmetric) JWK members (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

# RFC 7638 §3.1's example key and thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPeb"
    "WKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368Q"
    "QMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2N"
    "cRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
# RFC 8037 Appendix A.3: the Ed25519 example key's thumbprint.
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638, written out here: the required members only, in order, no spaces."""
    members = ",".join(f'"{name}":"{jwk[name]}"' for name in THUMBPRINT_MEMBERS[jwk["kty"]])
    return b64url(hashlib.sha256(("{" + members + "}").encode("utf-8")).digest())


def decode(jws: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, payload, signing input and signature of a compact JWS."""
    header, payload, signature = jws.split(".")
    return (
        json.loads(unb64url(header)),
        json.loads(unb64url(payload)),
        f"{header}.{payload}".encode("ascii"),
        unb64url(signature),
    )


def ath_of(token: str) -> str:
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def signature_verifies(key: DPoPKey, alg: str, signing_input: bytes, signature: bytes) -> bool:
    """The proof's signature checked with ``cryptography`` against ``key``'s public half."""
    public = key.private_key.public_key()
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            half = len(signature) // 2
            der = encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
            digest = {"ES256": hashes.SHA256, "ES384": hashes.SHA384}[alg]()
            public.verify(der, signing_input, ec.ECDSA(digest))
        elif isinstance(public, rsa.RSAPublicKey):
            if alg == "RS256":
                public.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            else:
                assert alg == "PS256"
                pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
                public.verify(signature, signing_input, pss, hashes.SHA256())
        else:
            assert isinstance(public, ed25519.Ed25519PublicKey)
            public.verify(signature, signing_input)
    except Exception:
        return False
    return True


def public_half_of(key: DPoPKey) -> dict[str, Any]:
    """The public JWK members of ``key.private_key``, computed here."""
    public = key.private_key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        size = (public.curve.key_size + 7) // 8
        numbers = public.public_numbers()
        return {
            "kty": "EC",
            "crv": {"secp256r1": "P-256", "secp384r1": "P-384"}[public.curve.name],
            "x": b64url(numbers.x.to_bytes(size, "big")),
            "y": b64url(numbers.y.to_bytes(size, "big")),
        }
    if isinstance(public, rsa.RSAPublicKey):
        rsa_numbers = public.public_numbers()
        return {
            "kty": "RSA",
            "n": b64url(rsa_numbers.n.to_bytes((rsa_numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url(rsa_numbers.e.to_bytes((rsa_numbers.e.bit_length() + 7) // 8, "big")),
        }
    assert isinstance(public, ed25519.Ed25519PublicKey)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}


class FixedClock:
    """The verifier's clock, fixed at the test's start (proofs minted with the default
    ``iat`` are within a second of it, well inside the window)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def verifier_for(issuer: LocalIssuer, clock: FixedClock, *algs: str) -> TokenVerifier:
    config = issuer.config(dpop="allowed", **({"dpop_algorithms": algs} if algs else {}))
    return TokenVerifier(config, key_set=StaticKeySet(issuer.jwks), clock=clock)


def new_key(kind: str, alg: str | None) -> DPoPKey:
    return DPoPKey(kind) if alg is None else DPoPKey(kind, alg=alg)


# -- the thumbprint oracle itself ----------------------------------------------------------


def test_the_thumbprint_written_here_matches_the_rfc_examples() -> None:
    rsa_jwk = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert thumbprint(rsa_jwk) == RFC7638_THUMBPRINT
    assert thumbprint({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}) == RFC8037_THUMBPRINT


# -- each kind of key ----------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "given_alg", "alg"), KINDS, ids=KIND_IDS)
def test_jwk_is_the_public_half_and_jkt_its_thumbprint(
    kind: str, given_alg: str | None, alg: str
) -> None:
    key = new_key(kind, given_alg)
    assert key.alg == alg
    assert not PRIVATE_MEMBERS & set(key.jwk), key.jwk
    assert "use" not in key.jwk
    # Every member it has is the key's own public value (nothing else, e.g. no kid).
    assert key.jwk == public_half_of(key)
    assert key.jkt == thumbprint(key.jwk)
    assert key.cnf == {"jkt": thumbprint(key.jwk)}


@pytest.mark.anyio
@pytest.mark.parametrize(("kind", "given_alg", "alg"), KINDS, ids=KIND_IDS)
async def test_every_kind_verifies_with_its_algorithm_configured(
    issuer: LocalIssuer, kind: str, given_alg: str | None, alg: str
) -> None:
    clock = FixedClock()
    key = new_key(kind, given_alg)
    token = issuer.token(sub="auth0|kit", cnf=key.cnf)
    proof = key.proof("GET", URL, access_token=token)

    header, payload, signing_input, signature = decode(proof)
    assert header == {"typ": "dpop+jwt", "alg": alg, "jwk": key.jwk}
    assert set(payload) == {"jti", "htm", "htu", "iat", "ath"}
    assert (payload["htm"], payload["htu"], payload["ath"]) == ("GET", URL, ath_of(token))
    assert type(payload["iat"]) is int
    assert abs(payload["iat"] - time.time()) < 5
    assert signature_verifies(key, alg, signing_input, signature)

    claims = await verifier_for(issuer, clock, alg).verify_dpop(token, proof, method="GET", url=URL)
    assert claims.sub == "auth0|kit"
    assert claims["cnf"] == {"jkt": key.jkt}

    if alg != "ES256":
        # With the default dpop_algorithms (ES256 only) the same kind of proof is refused.
        other = key.proof("GET", URL, access_token=token)
        with pytest.raises(InvalidDPoPProofError) as refused:
            await verifier_for(issuer, clock).verify_dpop(token, other, method="GET", url=URL)
        assert type(refused.value) is InvalidDPoPProofError


# -- broken proofs, one override at a time --------------------------------------------------

NOW_OFFSET_OLD = -301  # dpop_max_age is 300 s
NOW_OFFSET_FUTURE = 31  # dpop_leeway is 30 s

# (id, proof() keyword arguments, what the decoded proof must show, words of the refusal)
BROKEN: list[tuple[str, dict[str, Any], tuple[str, str, Any], str]] = [
    ("typ-JWT", {"headers": {"typ": "JWT"}}, ("header", "typ", "JWT"), "typ"),
    ("typ-removed", {"headers": {"typ": None}}, ("header", "typ", None), "typ"),
    ("jwk-removed", {"headers": {"jwk": None}}, ("header", "jwk", None), "no jwk"),
    ("alg-ES384", {"headers": {"alg": "ES384"}}, ("header", "alg", "ES384"), "not acceptable"),
    ("htm-POST", {"htm": "POST"}, ("payload", "htm", "POST"), "htm"),
    ("htm-removed", {"htm": None}, ("payload", "htm", None), "htm"),
    ("htu-other", {"htu": "http://testserver/other"}, ("payload", "htu", ...), "htu"),
    ("htu-removed", {"htu": None}, ("payload", "htu", None), "htu"),
    ("jti-removed", {"jti": None}, ("payload", "jti", None), "jti"),
    ("jti-number", {"jti": 7}, ("payload", "jti", 7), "jti"),
    ("ath-removed", {"ath": None}, ("payload", "ath", None), "no ath"),
    ("ath-other", {"ath": ath_of("another.token.x")}, ("payload", "ath", ...), "ath is not"),
    ("iat-old", {"iat_offset": NOW_OFFSET_OLD}, ("payload", "iat", ...), "s old"),
    ("iat-future", {"iat_offset": NOW_OFFSET_FUTURE}, ("payload", "iat", ...), "future"),
    ("iat-removed", {"iat": None}, ("payload", "iat", None), "iat is missing"),
    ("iat-string", {"iat": "now"}, ("payload", "iat", "now"), "not a NumericDate"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("overrides", "shows", "words"),
    [case[1:] for case in BROKEN],
    ids=[case[0] for case in BROKEN],
)
async def test_overrides_mint_the_broken_proof_asked_for(
    issuer: LocalIssuer, overrides: dict[str, Any], shows: tuple[str, str, Any], words: str
) -> None:
    clock = FixedClock()
    key = DPoPKey()
    token = issuer.token(cnf=key.cnf)
    overrides = dict(overrides)
    if "iat_offset" in overrides:
        overrides["iat"] = clock.now + overrides.pop("iat_offset")
    proof = key.proof("GET", URL, access_token=token, **overrides)

    header, payload, _, _ = decode(proof)
    part, member, value = shows
    seen = header if part == "header" else payload
    if value is None:
        assert member not in seen
    elif value is not ...:
        assert seen[member] == value
    # Everything not overridden is as a good proof has it.
    assert header.get("jwk", key.jwk) == key.jwk
    if member != "htu":
        assert payload["htu"] == URL

    with pytest.raises(Auth0Error) as refused:
        await verifier_for(issuer, clock).verify_dpop(token, proof, method="GET", url=URL)
    assert type(refused.value) is InvalidDPoPProofError
    assert refused.value.reason == "invalid_dpop_proof"
    assert words in (refused.value.detail or ""), refused.value.detail
    # The same request with a proof minted without overrides is taken: what failed
    # was the override, not the setup.
    good = key.proof("GET", URL, access_token=token)
    assert await verifier_for(issuer, clock).verify_dpop(token, good, method="GET", url=URL)


@pytest.mark.anyio
async def test_a_header_alg_override_signs_as_the_issuer_kit_does(issuer: LocalIssuer) -> None:
    # proof(headers={"alg": ...}) follows LocalIssuer.token: "none" is an empty
    # signature, HS* an HMAC keyed with the public key's PEM (the alg-confusion
    # forgery), and an algorithm the key cannot sign with needs signing_alg. It used
    # to look the hash up by the alg's last characters: KeyError 'ne' for "none".
    clock = FixedClock()
    key = DPoPKey()
    token = issuer.token(cnf=key.cnf)
    verifier = verifier_for(issuer, clock)

    none = key.proof("GET", URL, access_token=token, headers={"alg": "none"})
    assert none.endswith(".")
    assert decode(none)[0]["alg"] == "none"

    forged = key.proof("GET", URL, access_token=token, headers={"alg": "HS256"})
    header_b64, payload_b64, signature_b64 = forged.split(".")
    pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mac = hmac.new(pem, f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
    assert signature_b64 == b64url(mac)

    with pytest.raises(ValueError, match="signing_alg"):
        key.proof("GET", URL, access_token=token, headers={"alg": "EdDSA"})
    claimed = key.proof(
        "GET", URL, access_token=token, headers={"alg": "EdDSA"}, signing_alg="ES256"
    )
    header, _, signing_input, signature = decode(claimed)
    assert header["alg"] == "EdDSA"
    assert signature_verifies(key, "ES256", signing_input, signature)

    for proof in (none, forged, claimed):
        with pytest.raises(InvalidDPoPProofError):
            await verifier.verify_dpop(token, proof, method="GET", url=URL)
    good = key.proof("GET", URL, access_token=token)
    assert await verifier.verify_dpop(token, good, method="GET", url=URL)


@pytest.mark.anyio
async def test_a_proof_without_access_token_has_no_ath(issuer: LocalIssuer) -> None:
    clock = FixedClock()
    key = DPoPKey()
    token = issuer.token(cnf=key.cnf)
    proof = key.proof("GET", URL)
    assert "ath" not in decode(proof)[1]
    with pytest.raises(InvalidDPoPProofError) as refused:
        await verifier_for(issuer, clock).verify_dpop(token, proof, method="GET", url=URL)
    assert "no ath" in (refused.value.detail or "")


@pytest.mark.anyio
async def test_header_overrides_reach_the_key_checks(issuer: LocalIssuer) -> None:
    clock = FixedClock()
    key, stranger = DPoPKey(), DPoPKey()
    token = issuer.token(cnf=key.cnf)
    verifier = verifier_for(issuer, clock)

    # Signed by key, carrying the stranger's jwk: the signature does not verify.
    swapped = key.proof("GET", URL, access_token=token, headers={"jwk": stranger.jwk})
    assert decode(swapped)[0]["jwk"] == stranger.jwk
    with pytest.raises(InvalidDPoPProofError) as refused:
        await verifier.verify_dpop(token, swapped, method="GET", url=URL)
    assert "signature" in (refused.value.detail or "")

    # A good proof by another key than the token's: the binding does not hold.
    with pytest.raises(DPoPBindingError) as mismatch:
        await verifier.verify_dpop(
            token, stranger.proof("GET", URL, access_token=token), method="GET", url=URL
        )
    assert mismatch.value.reason == "dpop_binding_mismatch"

    # A token with no cnf at all is not DPoP-bound.
    unbound = issuer.token()
    with pytest.raises(DPoPBindingError):
        await verifier.verify_dpop(
            unbound, key.proof("GET", URL, access_token=unbound), method="GET", url=URL
        )


# -- jti -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_each_proof_has_a_fresh_jti_and_a_reused_one_is_a_replay(
    issuer: LocalIssuer,
) -> None:
    clock = FixedClock()
    key = DPoPKey()
    token = issuer.token(cnf=key.cnf)
    verifier = verifier_for(issuer, clock)
    proofs = [key.proof("GET", URL, access_token=token) for _ in range(40)]
    jtis = [decode(p)[1]["jti"] for p in proofs]
    assert len(set(jtis)) == 40
    assert all(isinstance(j, str) and len(j) >= 16 for j in jtis)
    for proof in proofs:  # none is mistaken for a replay of another
        await verifier.verify_dpop(token, proof, method="GET", url=URL)

    with pytest.raises(DPoPProofReplayedError) as replayed:
        await verifier.verify_dpop(token, proofs[3], method="GET", url=URL)
    assert replayed.value.reason == "dpop_proof_replayed"

    # An overridden jti is used as given: two different proofs sharing one jti.
    first = key.proof("GET", URL, access_token=token, jti="same-jti")
    second = key.proof("GET", URL, access_token=token, jti="same-jti", htu=URL + "?x")
    assert first != second
    await verifier.verify_dpop(token, first, method="GET", url=URL)
    with pytest.raises(DPoPProofReplayedError):
        await verifier.verify_dpop(token, second, method="GET", url=URL)


# -- headers() -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_headers_gives_both_headers(issuer: LocalIssuer) -> None:
    clock = FixedClock()
    key = DPoPKey()
    token = issuer.token(cnf=key.cnf)
    headers = key.headers(token, "POST", "http://testserver/orders")
    assert set(headers) == {"Authorization", "DPoP"}
    assert headers["Authorization"] == f"DPoP {token}"
    header, payload, _, _ = decode(headers["DPoP"])
    assert header["jwk"] == key.jwk
    assert (payload["htm"], payload["htu"], payload["ath"]) == (
        "POST",
        "http://testserver/orders",
        ath_of(token),
    )
    verifier = verifier_for(issuer, clock)
    await verifier.verify_dpop(
        token, headers["DPoP"], method="POST", url="http://testserver/orders"
    )
    # Each call mints a new proof; its keyword arguments reach the proof.
    assert key.headers(token, "GET", URL)["DPoP"] != key.headers(token, "GET", URL)["DPoP"]
    broken = key.headers(token, "GET", URL, htm="PUT")
    assert decode(broken["DPoP"])[1]["htm"] == "PUT"
    with pytest.raises(InvalidDPoPProofError):
        await verifier.verify_dpop(token, broken["DPoP"], method="GET", url=URL)


async def _me(scope: Scope, receive: Receive, send: Send) -> None:
    claims = Request(scope).state.claims
    await JSONResponse({"sub": claims.sub})(scope, receive, send)


@pytest.mark.anyio
async def test_the_readme_recipe_against_a_real_issuer(auth0_issuer: LocalIssuer) -> None:
    # As the README shows it: a token bound with cnf, headers() for the URL the client
    # calls; the keys come from the running LocalIssuer over HTTP.
    client = DPoPKey()
    token = auth0_issuer.token(sub="auth0|readme", cnf=client.cnf)
    app = Auth0Middleware(_me, config=auth0_issuer.config(dpop="required"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        ok = await http.get("/me", headers=client.headers(token, "GET", "http://testserver/me"))
        bearer = await http.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    assert ok.json() == {"sub": "auth0|readme"}
    assert bearer.status_code == 401
    assert bearer.json()["reason"] == "dpop_required"


# -- the kit's own mistakes are caught where they are made -------------------------------


def test_a_key_and_an_alg_that_do_not_fit_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="RSA key signs with PS256"):
        DPoPKey("RSA", alg="ES256")
    with pytest.raises(ValueError, match="unknown key kind"):
        DPoPKey("P-999")


def test_a_fractional_iat_is_sent_as_given() -> None:
    payload = decode(DPoPKey().proof("GET", URL, iat=1_700_000_000.25))[1]
    assert payload["iat"] == 1_700_000_000.25


@pytest.mark.anyio
async def test_the_plugin_fixture_is_a_fresh_client_key(
    dpop_key: DPoPKey, auth0_issuer: LocalIssuer
) -> None:
    assert dpop_key.alg == "ES256"
    assert dpop_key.jkt == thumbprint(dpop_key.jwk)
    token = auth0_issuer.token(cnf=dpop_key.cnf)
    verifier = TokenVerifier(auth0_issuer.config(dpop="required"))
    try:
        headers = dpop_key.headers(token, "GET", URL)
        claims = await verifier.verify_dpop(token, headers["DPoP"], method="GET", url=URL)
    finally:
        await verifier.aclose()
    assert claims["cnf"]["jkt"] == dpop_key.jkt


@pytest.mark.anyio
async def test_a_proofs_iat_comes_from_the_clock_given(issuer: LocalIssuer) -> None:
    # A test that sets the time gives the key the clock it gives the verifier and the
    # issuer: patching time.time reaches neither of those.
    clock = FixedClock()
    clock.now = 1_800_000_000.9
    issuer.clock = clock
    key = DPoPKey(clock=clock)
    assert decode(key.proof("GET", URL))[1]["iat"] == 1_800_000_000
    token = issuer.token(cnf=key.cnf)
    proof = key.proof("GET", URL, access_token=token)
    claims = await verifier_for(issuer, clock).verify_dpop(token, proof, method="GET", url=URL)
    assert claims["cnf"] == key.cnf


def test_the_plugins_key_takes_its_issuers_clock(
    auth0_issuer: LocalIssuer, dpop_key: DPoPKey
) -> None:
    auth0_issuer.clock = lambda: 1_700_000_000.5  # set after the fixture was made
    assert decode(dpop_key.proof("GET", URL))[1]["iat"] == 1_700_000_000


@pytest.mark.parametrize("clock", [None, 1_700_000_000])
def test_a_clock_that_is_not_a_function_is_refused_at_once(clock: Any) -> None:
    # As kind and alg are: the mistake is in the line that builds the key.
    with pytest.raises(TypeError, match="clock must be a function"):
        DPoPKey(clock=clock)
