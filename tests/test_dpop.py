"""DPoP (RFC 9449): every check a proof goes through, the RFCs' own vectors, the
bound-token path of ``TokenVerifier``, the ``DPoP`` credentials and the request URI
a proof must name, and what the middleware answers in each ``dpop`` mode.

A refusal is shown beside the same proof (or request) passing once the breach is
taken away, so that each test fails when its rule is removed. Time is an injected
clock; the issuer is never started (its JWKS goes to a ``StaticKeySet``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from _asgi import drive, ws_scope
from fastapi import Depends, FastAPI, Request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_auth0._challenge import Challenge, challenge_for
from asgi_auth0._claims import Claims
from asgi_auth0._config import Auth0Config
from asgi_auth0._dpop import (
    MAX_PROOF_SIZE,
    DPoPProofChecker,
    _is_numeric_date,
    access_token_hash,
    dpop_credentials,
    jwk_thumbprint,
    normalize_htu,
    request_htu,
)
from asgi_auth0._errors import (
    Auth0Error,
    ConfigError,
    DPoPBindingError,
    DPoPProofReplayedError,
    ExpiredTokenError,
    InvalidAudienceError,
    InvalidDPoPProofError,
    InvalidIssuerError,
    InvalidRequestError,
    InvalidSignatureError,
    MalformedTokenError,
    MultipleTokensError,
    SenderConstrainedTokenError,
)
from asgi_auth0._keys import StaticKeySet, parse_jwk
from asgi_auth0._middleware import Auth0Middleware
from asgi_auth0._signing import PrivateKey, b64url, generate_private_key, public_jwk, sign_jws
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.fastapi import require_scopes, require_token
from asgi_auth0.testing import DPoPKey, LocalIssuer

ISS = "https://tenant.example.test/"
AUD = "https://api.example.test"
NOW = 1_800_000_000
URL = "https://api.example.test/messages"
TOKEN = "an-access-token.for-the-checker.alone"
README = Path(__file__).resolve().parent.parent / "README.md"

# -- the RFCs' vectors, as the RFCs print them ---------------------------------------------
# (Each is checked against itself below: the proofs' signatures verify with their jwk,
# so a copying mistake would show.)

# RFC 7638 §3.1: the RSA key of the example and its SHA-256 thumbprint.
RFC7638_JWK = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qvz"
        "qY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZ"
        "u0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

# RFC 9449 §4.1 (figures of the DPoP header and of its decoded content): the client's
# P-256 key, and §6.1: its thumbprint as the cnf.jkt of the example token.
RFC9449_JWK = {
    "kty": "EC",
    "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
    "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
    "crv": "P-256",
}
RFC9449_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
# RFC 9449 §4.1: the example proof of a token request (POST https://server.example.com/token).
RFC9449_TOKEN_REQUEST_PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUk"
    "lDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUw"
    "Q2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Im"
    "h0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0z"
    "drj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)
# RFC 9449 §7.1: the access token of the example, its ath, and the proof of the
# protected resource request (GET https://resource.example.org/protectedresource).
RFC9449_ACCESS_TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
RFC9449_ATH = "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
RFC9449_RESOURCE_PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUk"
    "lDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUw"
    "Q2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1Ijoia"
    "HR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjo"
    "iZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRi"
    "mPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA"
)
RFC9449_RESOURCE_URL = "https://resource.example.org/protectedresource"
RFC9449_RESOURCE_IAT = 1562262618

# RFC 8037 §A.3: the thumbprint of the public Ed25519 key of §A.2.
RFC8037_JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


# -- helpers -------------------------------------------------------------------------------


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


DROP = object()  # a claim or header member given as DROP is left out


def proof_for(
    client: DPoPKey,
    *,
    key: PrivateKey | None = None,
    header: dict[str, Any] | None = None,
    token: str = TOKEN,
    **claims: Any,
) -> str:
    """A proof for GET ``URL`` at ``NOW`` with ``token``'s ath, signed by ``client``
    (or ``key``); ``claims`` and ``header`` override members (``DROP`` removes one)."""
    payload: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": "GET",
        "htu": URL,
        "iat": NOW,
        "ath": access_token_hash(token),
    }
    payload.update(claims)
    head: dict[str, Any] = {"typ": "dpop+jwt", "alg": client.alg, "jwk": client.jwk}
    head.update(header or {})
    payload = {k: v for k, v in payload.items() if v is not DROP}
    head = {k: v for k, v in head.items() if v is not DROP}
    return sign_jws(key or client.private_key, head, payload)


def make_checker(
    clock: Callable[[], float] | None = None,
    *,
    algorithms: tuple[str, ...] = ("ES256",),
    max_age: float = 300,
    leeway: float = 30,
    jti_cache_size: int = 1000,
    jti_per_key: int | None = None,
) -> DPoPProofChecker:
    """A checker; one key may fill the whole jti memory unless ``jti_per_key`` says
    otherwise (most tests here use a single client key)."""
    return DPoPProofChecker(
        algorithms=algorithms,
        max_age=max_age,
        leeway=leeway,
        clock=clock or Clock(),
        jti_cache_size=jti_cache_size,
        jti_per_key=jti_cache_size + 1 if jti_per_key is None else jti_per_key,
    )


def check(
    checker: DPoPProofChecker,
    client: DPoPKey,
    proof: str,
    *,
    method: str = "GET",
    url: str | None = URL,
    token: str = TOKEN,
    jkt: str | None = None,
) -> None:
    checker.check(
        proof, method=method, url=url, access_token=token, jkt=client.jkt if jkt is None else jkt
    )


@pytest.fixture
def client() -> DPoPKey:
    return DPoPKey()


@pytest.fixture
def checker() -> DPoPProofChecker:
    return make_checker()


# -- RFC vectors ---------------------------------------------------------------------------


def test_rfc7638_3_1_thumbprint_of_the_example_rsa_key() -> None:
    assert jwk_thumbprint(RFC7638_JWK) == RFC7638_THUMBPRINT


def test_rfc8037_a_3_thumbprint_of_the_example_ed25519_key() -> None:
    assert jwk_thumbprint(RFC8037_JWK) == RFC8037_THUMBPRINT


def test_thumbprint_hashes_only_the_required_members_whatever_their_order() -> None:
    # RFC 7638 §3.2/§3.3: optional members (alg, kid, use) and member order do not count.
    bare = {"e": RFC7638_JWK["e"], "n": RFC7638_JWK["n"], "kty": "RSA"}
    assert jwk_thumbprint(bare) == RFC7638_THUMBPRINT
    assert jwk_thumbprint({**bare, "use": "sig", "x5t": "abc"}) == RFC7638_THUMBPRINT
    reordered = dict(reversed(list(RFC9449_JWK.items())))
    assert jwk_thumbprint(reordered) == RFC9449_JKT


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "EC", "crv": "P-256", "x": RFC9449_JWK["x"]},  # no y
        {"kty": "RSA", "n": 5, "e": "AQAB"},
        {"n": "abc", "e": "AQAB"},
    ],
)
def test_thumbprint_of_an_incomplete_or_unknown_key_is_a_value_error(jwk: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the documented contract
        jwk_thumbprint(jwk)


def test_rfc9449_6_1_jkt_of_the_example_key() -> None:
    assert jwk_thumbprint(RFC9449_JWK) == RFC9449_JKT


def test_rfc9449_7_1_ath_of_the_example_token() -> None:
    assert access_token_hash(RFC9449_ACCESS_TOKEN) == RFC9449_ATH


def _decode(segment: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return data


def test_rfc9449_4_1_example_proof_is_signed_by_its_own_jwk() -> None:
    # The token request proof of §4.1: its htm/htu/iat are not a request's of ours, so
    # the key-level part is checked: its jwk is the example key and it signed the proof.
    header_b64, payload_b64, signature_b64 = RFC9449_TOKEN_REQUEST_PROOF.split(".")
    header = _decode(header_b64)
    assert header["typ"] == "dpop+jwt"
    assert header["alg"] == "ES256"
    assert header["jwk"] == RFC9449_JWK
    assert _decode(payload_b64)["htu"] == "https://server.example.com/token"
    key = parse_jwk(header["jwk"])
    signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
    signing_input = f"{header_b64}.{payload_b64}".encode()
    assert key.verify("ES256", signing_input, signature)
    assert not key.verify("ES256", signing_input + b"x", signature)


def test_rfc9449_7_1_example_request_passes_every_check_then_is_a_replay() -> None:
    # The RFC's own protected resource request, at the moment of its iat: every check
    # of §4.3 and §7.1 passes (typ, alg, jwk, signature, htm, htu, iat, ath, jkt).
    checker = make_checker(Clock(RFC9449_RESOURCE_IAT))
    request = {
        "method": "GET",
        "url": normalize_htu(RFC9449_RESOURCE_URL),
        "access_token": RFC9449_ACCESS_TOKEN,
        "jkt": RFC9449_JKT,
    }
    checker.check(RFC9449_RESOURCE_PROOF, **request)
    assert checker.remembered == 1
    with pytest.raises(DPoPProofReplayedError):
        checker.check(RFC9449_RESOURCE_PROOF, **request)
    # And each request fact it is bound to matters.
    for changed in (
        {"method": "POST"},
        {"url": "https://resource.example.org/other"},
        {"access_token": RFC9449_ACCESS_TOKEN + "x"},
    ):
        with pytest.raises(InvalidDPoPProofError) as caught:
            make_checker(Clock(RFC9449_RESOURCE_IAT)).check(
                RFC9449_RESOURCE_PROOF, **{**request, **changed}
            )
        assert type(caught.value) is InvalidDPoPProofError
    with pytest.raises(DPoPBindingError):
        make_checker(Clock(RFC9449_RESOURCE_IAT)).check(
            RFC9449_RESOURCE_PROOF, **{**request, "jkt": RFC7638_THUMBPRINT}
        )


# -- DPoPProofChecker.check: RFC 9449 §4.3 ---------------------------------------------------


def test_a_good_proof_is_accepted_and_remembered(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    check(checker, client, proof_for(client))
    assert checker.remembered == 1
    assert checker.evicted_live == 0
    assert checker.algorithms == ("ES256",)


def test_the_testing_kit_proof_passes_the_checker(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    check(checker, client, client.proof("GET", URL, access_token=TOKEN, iat=NOW))


@pytest.mark.parametrize(
    "proof",
    [
        "",
        "not-a-jwt",
        "a.b",
        "a.b.c.d.e",
        "eyJhbGciOiJFUzI1NiJ9..c2ln",
        "bm90IGpzb24.e30.c2ln",  # the header is not JSON
        "eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.c2ln",  # no alg
        "é.b.c",
    ],
)
def test_a_proof_that_is_not_a_jwt_is_refused(
    checker: DPoPProofChecker, client: DPoPKey, proof: str
) -> None:
    with pytest.raises(InvalidDPoPProofError, match="not acceptable"):
        check(checker, client, proof)
    assert checker.remembered == 0


def test_a_proof_longer_than_8_kib_is_refused_unread(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    # The documented limit: a proof holds one public key and a few claims (about 1,300
    # characters with an RSA-4096 key). Pad a valid proof up to it, then one step past.
    limit = 8 * 1024
    assert limit == MAX_PROOF_SIZE
    fits = over = None
    start = (limit - len(proof_for(client, pad=""))) * 3 // 4 - 8
    for pad in range(start, start + 40):
        proof = proof_for(client, pad="x" * pad)
        if len(proof) <= limit:
            fits = proof
        else:
            over = proof
            break
    assert fits is not None
    assert over is not None
    assert limit - 4 <= len(fits) <= limit < len(over)
    check(checker, client, fits)
    with pytest.raises(InvalidDPoPProofError, match="longer than"):
        check(checker, client, over)


@pytest.mark.parametrize(
    "typ",
    [
        DROP,
        "JWT",
        "at+jwt",
        "dpop",
        "dpop+jwt ",
        "dpop+jws",
        "text/dpop+jwt",
        "application/jwt",
        "application/dpop+jwt/x",
        1,
        ["dpop+jwt"],
        None,
    ],
)
def test_typ_must_be_dpop_jwt(checker: DPoPProofChecker, client: DPoPKey, typ: Any) -> None:
    # RFC 9449 §4.3, and "Signed JWT Swapping": a JWT made for another purpose is no proof.
    with pytest.raises(InvalidDPoPProofError, match="typ"):
        check(checker, client, proof_for(client, header={"typ": typ}))


@pytest.mark.parametrize(
    "typ", ["dpop+jwt", "DPoP+JWT", "DPOP+jwt", "application/dpop+jwt", "Application/DPoP+JWT"]
)
def test_typ_is_compared_as_a_media_type(
    checker: DPoPProofChecker, client: DPoPKey, typ: str
) -> None:
    # RFC 7515 §4.1.9: a media type name is case-insensitive, and a typ without "/"
    # means "application/" + it, so both spellings name the DPoP proof type (as the
    # verifier takes at+jwt and application/at+jwt).
    check(checker, client, proof_for(client, header={"typ": typ}))


@pytest.mark.parametrize(
    ("kind", "alg"), [("P-384", "ES384"), ("P-521", "ES512"), ("Ed25519", "EdDSA")]
)
def test_other_key_types_work_when_their_alg_is_allowed(kind: str, alg: str) -> None:
    client = DPoPKey(kind)
    assert client.alg == alg
    check(make_checker(algorithms=(alg,)), client, proof_for(client))
    with pytest.raises(InvalidDPoPProofError, match="alg"):
        check(make_checker(algorithms=("ES256",)), client, proof_for(client))


def test_an_alg_outside_dpop_algorithms_is_refused() -> None:
    client = DPoPKey("P-384")  # ES384
    proof = proof_for(client)
    with pytest.raises(InvalidDPoPProofError, match="alg"):
        check(make_checker(algorithms=("ES256",)), client, proof)
    check(make_checker(algorithms=("ES256", "ES384")), client, proof)


def test_alg_none_is_refused_even_when_listed(client: DPoPKey) -> None:
    checker = make_checker(algorithms=("ES256", "none"))
    header = b64url(json.dumps({"typ": "dpop+jwt", "alg": "none", "jwk": client.jwk}).encode())
    payload = b64url(
        json.dumps(
            {"jti": "j", "htm": "GET", "htu": URL, "iat": NOW, "ath": access_token_hash(TOKEN)}
        ).encode()
    )
    for signature in ("", b64url(b"\x00" * 64)):
        with pytest.raises(InvalidDPoPProofError):
            check(checker, client, f"{header}.{payload}.{signature}")
    assert checker.remembered == 0


def _hs256_proof(secret: bytes, jwk: dict[str, Any]) -> str:
    header = b64url(json.dumps({"typ": "dpop+jwt", "alg": "HS256", "jwk": jwk}).encode())
    payload = b64url(
        json.dumps(
            {"jti": "j", "htm": "GET", "htu": URL, "iat": NOW, "ath": access_token_hash(TOKEN)}
        ).encode()
    )
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def test_a_symmetric_alg_is_refused_even_by_a_checker_that_lists_it(client: DPoPKey) -> None:
    # Auth0Config never lets HS* in; a checker built by hand with it still cannot be
    # fooled: an oct jwk is refused, and an HMAC does not fit an EC jwk.
    checker = make_checker(algorithms=("ES256", "HS256"))
    secret = b"a shared secret the client chose!"
    oct_jwk = {"kty": "oct", "k": b64url(secret)}
    with pytest.raises(InvalidDPoPProofError, match="jwk is not usable"):
        checker.check(
            _hs256_proof(secret, oct_jwk),
            method="GET",
            url=URL,
            access_token=TOKEN,
            jkt=client.jkt,
        )
    with pytest.raises(InvalidDPoPProofError, match="does not fit"):
        check(checker, client, _hs256_proof(secret, client.jwk))


@pytest.mark.parametrize("jwk", [DROP, None, "a key", ["a", "key"], 5, True])
def test_the_jwk_header_must_be_an_object(
    checker: DPoPProofChecker, client: DPoPKey, jwk: Any
) -> None:
    with pytest.raises(InvalidDPoPProofError, match="no jwk header"):
        check(checker, client, proof_for(client, header={"jwk": jwk}))


def test_a_jwk_with_the_private_key_is_refused(checker: DPoPProofChecker, client: DPoPKey) -> None:
    # RFC 9449 §4.2/§4.3: the jwk MUST NOT contain a private key.
    private_value = client.private_key.private_numbers().private_value  # type: ignore[union-attr]
    leaked = {**client.jwk, "d": b64url(private_value.to_bytes(32, "big"))}
    with pytest.raises(InvalidDPoPProofError, match="jwk is not usable"):
        check(checker, client, proof_for(client, header={"jwk": leaked}))
    assert checker.remembered == 0


def test_a_jwk_for_encryption_is_refused(checker: DPoPProofChecker, client: DPoPKey) -> None:
    with pytest.raises(InvalidDPoPProofError, match="jwk is not usable"):
        check(checker, client, proof_for(client, header={"jwk": {**client.jwk, "use": "enc"}}))


def _rsa_client(key: PrivateKey) -> DPoPKey:
    """A client with this RSA key (the kit would generate one, which is slow)."""
    client = DPoPKey()
    client.private_key = key
    client.alg = "RS256"
    client.jwk = {k: v for k, v in public_jwk(key).items() if k != "use"}
    client.jkt = jwk_thumbprint(client.jwk)
    return client


def test_an_rsa_key_under_2048_bits_is_refused(auth0_rsa_key: PrivateKey) -> None:
    checker = make_checker(algorithms=("RS256",))
    weak = _rsa_client(generate_private_key("RSA", rsa_bits=1024))
    with pytest.raises(InvalidDPoPProofError, match="jwk is not usable"):
        check(checker, weak, proof_for(weak))
    strong = _rsa_client(auth0_rsa_key)
    check(checker, strong, proof_for(strong))


def test_a_jwk_that_does_not_fit_the_alg_is_refused(auth0_rsa_key: PrivateKey) -> None:
    checker = make_checker(algorithms=("ES256", "ES384", "RS256"))
    ec = DPoPKey()
    # An ES384 signature (SHA-384) made with a P-256 key: ES384 is a P-384 algorithm.
    with pytest.raises(InvalidDPoPProofError, match="does not fit"):
        check(checker, ec, proof_for(ec, header={"alg": "ES384"}))
    # An RSA signature beside an EC jwk.
    with pytest.raises(InvalidDPoPProofError, match="does not fit"):
        check(checker, ec, proof_for(ec, key=auth0_rsa_key, header={"alg": "RS256"}))


def test_a_proof_not_signed_by_its_jwk_is_refused(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    thief = DPoPKey()
    # Signed by another key, naming the client's public key (and its thumbprint).
    with pytest.raises(InvalidDPoPProofError, match="signature"):
        check(checker, client, proof_for(client, key=thief.private_key))
    # A valid proof whose payload was changed after signing.
    header, _, signature = proof_for(client).split(".")
    other = proof_for(client, htu=URL + "/other").split(".")[1]
    with pytest.raises(InvalidDPoPProofError, match="signature"):
        check(checker, client, f"{header}.{other}.{signature}")
    assert checker.remembered == 0


@pytest.mark.parametrize("jti", [DROP, "", None, 5, ["j"], {"j": 1}, True, "x" * 257])
def test_jti_must_be_a_short_non_empty_string(
    checker: DPoPProofChecker, client: DPoPKey, jti: Any
) -> None:
    with pytest.raises(InvalidDPoPProofError, match="jti"):
        check(checker, client, proof_for(client, jti=jti))


def test_a_jti_of_256_characters_is_accepted(checker: DPoPProofChecker, client: DPoPKey) -> None:
    check(checker, client, proof_for(client, jti="x" * 256))


@pytest.mark.parametrize("htm", ["get", "Get", "POST", "HEAD", "", DROP, None, ["GET"]])
def test_htm_must_be_the_request_method_exactly(
    checker: DPoPProofChecker, client: DPoPKey, htm: Any
) -> None:
    # HTTP methods are case-sensitive (RFC 9110 §9.1): "get" is not GET.
    with pytest.raises(InvalidDPoPProofError, match="htm"):
        check(checker, client, proof_for(client, htm=htm))


def test_htm_matches_other_methods_too(checker: DPoPProofChecker, client: DPoPKey) -> None:
    check(checker, client, proof_for(client, htm="DELETE"), method="DELETE")
    with pytest.raises(InvalidDPoPProofError, match="htm"):
        check(checker, client, proof_for(client, htm="DELETE"), method="GET")


@pytest.mark.parametrize(
    "htu",
    [
        "https://api.example.test/other",
        "https://api.example.test/messages/",
        "https://api.example.test/Messages",
        "https://other.example.test/messages",
        "https://api.example.test:8443/messages",
        "https://api.example.test/messages%2F",
    ],
)
def test_htu_must_be_the_request_uri(checker: DPoPProofChecker, client: DPoPKey, htu: str) -> None:
    with pytest.raises(InvalidDPoPProofError, match="htu"):
        check(checker, client, proof_for(client, htu=htu))


def test_an_htu_that_differs_only_in_scheme_says_so(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    # The usual cause is a proxy that terminates TLS: the rejection log says what to do.
    with pytest.raises(InvalidDPoPProofError, match="only the scheme differs") as caught:
        check(checker, client, proof_for(client, htu="http://api.example.test/messages"))
    assert "proxy-headers" in str(caught.value)
    with pytest.raises(InvalidDPoPProofError) as caught:
        check(checker, client, proof_for(client, htu="https://api.example.test/other"))
    assert "only the scheme" not in str(caught.value)


@pytest.mark.parametrize(
    "htu", [DROP, None, 5, ["https://api.example.test/messages"], "/messages", "ftp://a.test/"]
)
def test_htu_must_be_an_absolute_http_uri(
    checker: DPoPProofChecker, client: DPoPKey, htu: Any
) -> None:
    with pytest.raises(InvalidDPoPProofError, match="htu"):
        check(checker, client, proof_for(client, htu=htu))


def test_the_query_and_fragment_of_htu_are_ignored(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    # RFC 9449 §4.3: "ignoring any query and fragment parts".
    check(checker, client, proof_for(client, htu=URL + "?page=2&x=%41#section"))


def test_htu_is_normalized_before_the_comparison(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    # RFC 9449 §4.3: syntax- and scheme-based normalization (RFC 3986 §6.2.2, §6.2.3).
    check(checker, client, proof_for(client, htu="HTTPS://API.Example.TEST:443/%6Dessages"))
    check(checker, client, proof_for(client, htu="https://api.example.test/a/../messages"))


def test_a_request_whose_uri_could_not_be_built_is_refused(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    with pytest.raises(InvalidDPoPProofError, match="could not be built"):
        check(checker, client, proof_for(client), url=None)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.example.test/messages", "https://api.example.test/messages"),
        ("HTTPS://API.Example.TEST/messages", "https://api.example.test/messages"),
        ("https://api.example.test:443/x", "https://api.example.test/x"),
        ("http://api.example.test:80/x", "http://api.example.test/x"),
        ("http://api.example.test:443/x", "http://api.example.test:443/x"),
        ("https://api.example.test:8443/x", "https://api.example.test:8443/x"),
        ("https://api.example.test:/x", "https://api.example.test/x"),  # empty port
        ("https://api.example.test", "https://api.example.test/"),
        ("https://api.example.test?q", "https://api.example.test/"),
        ("https://api.example.test/caf%c3%a9", "https://api.example.test/caf%C3%A9"),
        (
            "https://api.example.test/%7Euser/%41%2d%5F%2E%30",
            "https://api.example.test/~user/A-_.0",
        ),
        ("https://api.example.test/a%2fb%3F", "https://api.example.test/a%2Fb%3F"),
        ("https://api.example.test/a/./b/../c", "https://api.example.test/a/c"),
        ("https://api.example.test/a/b/.", "https://api.example.test/a/b/"),
        ("https://api.example.test/a/b/..", "https://api.example.test/a/"),
        ("https://api.example.test/a/..", "https://api.example.test/"),
        ("https://api.example.test/..", "https://api.example.test/"),
        ("https://api.example.test/.", "https://api.example.test/"),
        ("https://api.example.test/a/%2E%2E/b", "https://api.example.test/b"),
        ("https://api.example.test/a.b/c..d", "https://api.example.test/a.b/c..d"),
        ("https://api.example.test/x?q=1#f", "https://api.example.test/x"),
        ("https://api.example.test/x?q=100%#5%", "https://api.example.test/x"),
        ("wss://api.example.test/ws", "wss://api.example.test/ws"),
        ("ws://api.example.test:80/ws", "ws://api.example.test/ws"),
        ("WSS://api.example.test:443/ws", "wss://api.example.test/ws"),
        ("https://[::1]:8443/x", "https://[::1]:8443/x"),
        ("https://[::1]:443/x", "https://[::1]/x"),
        ("http://[2001:DB8::1]/x", "http://[2001:db8::1]/x"),
        ("http://%74estserver/%6De", "http://testserver/me"),  # escapes in the host too
        ("http://%54EST%2Eexample/x", "http://test.example/x"),
        ("http://a%20b.example/x", "http://a%20b.example/x"),  # a space stays escaped
    ],
)
def test_normalize_htu(url: str, expected: str) -> None:
    assert normalize_htu(url) == expected
    assert normalize_htu(expected) == expected  # normalizing twice changes nothing


@pytest.mark.parametrize(
    "url",
    [
        "/messages",
        "api.example.test/messages",
        "ftp://api.example.test/x",
        "https:///x",
        "https://user:pw@api.example.test/x",
        "https://user@api.example.test/x",
        "https://api.example.test:99999/x",
        "https://api.example.test:port/x",
        "https://api.example.test/é",
        # A "%" that starts no escape: "%2%30" must not become "%20" ("my doc").
        "https://api.example.test/files/my%2%30doc",
        "https://api.example.test/a%",
        "https://api.example.test/a%zz",
        "https://api%.example.test/a",
        "https://" + "a" * MAX_PROOF_SIZE + ".test/",
        5,
        None,
    ],
)
def test_normalize_htu_refuses_what_is_not_an_absolute_http_uri(url: Any) -> None:
    assert normalize_htu(url) is None


@pytest.mark.parametrize(
    ("htu", "url", "fits"),
    [
        ("https://api.example.test/ws", "https://api.example.test/ws", True),
        ("wss://api.example.test/ws", "wss://api.example.test/ws", True),
        ("ws://api.example.test/ws", "ws://api.example.test/ws", True),
        # A WebSocket handshake is a GET of the http(s) form: either names it.
        ("https://api.example.test/ws", "wss://api.example.test/ws", True),
        ("http://api.example.test/ws", "ws://api.example.test/ws", True),
        # But a ws(s) URL names no plain HTTP request.
        ("wss://api.example.test/ws", "https://api.example.test/ws", False),
        ("ws://api.example.test/ws", "http://api.example.test/ws", False),
        ("http://api.example.test/ws", "wss://api.example.test/ws", False),
        ("ws://api.example.test/ws", "wss://api.example.test/ws", False),
    ],
)
def test_which_scheme_of_a_proof_fits_which_request(htu: str, url: str, fits: bool) -> None:
    checker, client = make_checker(), DPoPKey()
    proof = proof_for(client, htu=htu)
    if fits:
        check(checker, client, proof, url=url)
    else:
        with pytest.raises(InvalidDPoPProofError, match="only the scheme differs") as caught:
            check(checker, client, proof, url=url)
        if htu.startswith("ws") and not url.startswith("ws"):
            assert "a ws(s) URI names a WebSocket handshake only" in str(caught.value)


@pytest.mark.parametrize("iat", [DROP, None, "1800000000", True, False, [NOW], {"t": NOW}])
def test_iat_must_be_a_numeric_date(checker: DPoPProofChecker, client: DPoPKey, iat: Any) -> None:
    with pytest.raises(InvalidDPoPProofError, match="iat"):
        check(checker, client, proof_for(client, iat=iat))


@pytest.mark.parametrize("iat", [math.nan, math.inf, -math.inf])
def test_a_non_finite_iat_is_refused(
    checker: DPoPProofChecker, client: DPoPKey, iat: float
) -> None:
    # JSON has no NaN; the parser refuses the token, and the claim check would too.
    with pytest.raises(InvalidDPoPProofError):
        check(checker, client, proof_for(client, iat=iat))
    assert not _is_numeric_date(iat)
    assert _is_numeric_date(NOW)
    assert _is_numeric_date(NOW + 0.5)
    assert not _is_numeric_date(True)


@pytest.mark.parametrize(
    ("max_age", "leeway"), [(300, 30), (60, 5), (1, 0)], ids=["default", "short", "tightest"]
)
def test_iat_window_boundaries(client: DPoPKey, max_age: float, leeway: float) -> None:
    # Acceptable: now - dpop_max_age <= iat <= now + dpop_leeway, both ends included.
    checker = make_checker(max_age=max_age, leeway=leeway)
    check(checker, client, proof_for(client, iat=NOW - max_age))
    check(checker, client, proof_for(client, iat=NOW + leeway))
    check(checker, client, proof_for(client, iat=NOW - max_age + 0.5))
    with pytest.raises(InvalidDPoPProofError, match="old"):
        check(checker, client, proof_for(client, iat=NOW - max_age - 1))
    with pytest.raises(InvalidDPoPProofError, match="old"):
        check(checker, client, proof_for(client, iat=NOW - max_age - 0.25))
    with pytest.raises(InvalidDPoPProofError, match="future"):
        check(checker, client, proof_for(client, iat=NOW + leeway + 1))
    with pytest.raises(InvalidDPoPProofError, match="future"):
        check(checker, client, proof_for(client, iat=NOW + leeway + 0.25))


@pytest.mark.parametrize("ath", [DROP, None, 5, ["x"]])
def test_ath_is_required(checker: DPoPProofChecker, client: DPoPKey, ath: Any) -> None:
    # RFC 9449 §7.1: a proof sent with an access token MUST carry its hash.
    with pytest.raises(InvalidDPoPProofError, match="no ath"):
        check(checker, client, proof_for(client, ath=ath))


@pytest.mark.parametrize(
    "ath",
    [
        access_token_hash("another-token"),
        access_token_hash(TOKEN) + "=",
        access_token_hash(TOKEN).lower(),
        base64.b64encode(hashlib.sha256(TOKEN.encode()).digest()).decode(),  # not base64url
        hashlib.sha256(TOKEN.encode()).hexdigest(),
        "",
    ],
)
def test_ath_must_be_the_hash_of_this_access_token(
    checker: DPoPProofChecker, client: DPoPKey, ath: str
) -> None:
    with pytest.raises(InvalidDPoPProofError, match="ath"):
        check(checker, client, proof_for(client, ath=ath))


def test_a_proof_for_another_access_token_is_refused(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    proof = proof_for(client, token="token-one")
    with pytest.raises(InvalidDPoPProofError, match="ath"):
        check(checker, client, proof, token="token-two")
    check(checker, client, proof, token="token-one")


def test_a_token_bound_to_another_key_is_a_binding_error(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    other = DPoPKey()
    with pytest.raises(DPoPBindingError) as caught:
        check(checker, client, proof_for(client), jkt=other.jkt)
    error = caught.value
    assert not isinstance(error, InvalidDPoPProofError)
    assert (error.status_code, error.error, error.reason) == (
        401,
        "invalid_token",
        "dpop_binding_mismatch",
    )
    assert checker.remembered == 0


# -- replay (RFC 9449 §11.1) ---------------------------------------------------------------


@pytest.mark.parametrize("leeway", [30, 0])
def test_a_proof_is_never_accepted_twice(client: DPoPKey, leeway: float) -> None:
    clock = Clock()
    checker = make_checker(clock, max_age=300, leeway=leeway)
    proof = proof_for(client)
    check(checker, client, proof)
    # Again at once, later, and at the last instant its iat would still be accepted.
    for later in (0, 1, 150, 300):
        clock.now = NOW + later
        with pytest.raises(DPoPProofReplayedError) as caught:
            check(checker, client, proof)
        assert (caught.value.status_code, caught.value.error, caught.value.reason) == (
            401,
            "invalid_dpop_proof",
            "dpop_proof_replayed",
        )
    # Past the window it is refused as too old: there is no moment it passes again.
    clock.now = NOW + 300.001
    with pytest.raises(InvalidDPoPProofError, match="old"):
        check(checker, client, proof)


def test_a_fresh_proof_with_the_same_jti_and_key_is_a_replay(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    check(checker, client, proof_for(client, jti="once"))
    # Another proof (another iat, so other bytes) with the same jti from the same key.
    with pytest.raises(DPoPProofReplayedError):
        check(checker, client, proof_for(client, jti="once", iat=NOW - 1))


def test_the_same_jti_from_another_key_is_not_a_replay(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    # The jti is the client's choice, unique among its own proofs: another client's
    # proof with the same value proves nothing about this one's.
    other = DPoPKey()
    check(checker, client, proof_for(client, jti="shared"))
    check(checker, other, proof_for(other, jti="shared"))
    assert checker.remembered == 2


def test_a_refused_proof_does_not_use_up_its_jti(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    # Only an accepted proof is remembered: a refused request got nothing, and a proof
    # that failed a check (sent by whoever captured it, to another URI, with another
    # token or bound key) must not lock out the genuine request that carries it.
    proof = proof_for(client)
    with pytest.raises(InvalidDPoPProofError, match="htm"):
        check(checker, client, proof, method="POST")
    with pytest.raises(InvalidDPoPProofError, match="htu"):
        check(checker, client, proof, url="https://api.example.test/other")
    with pytest.raises(InvalidDPoPProofError, match="ath"):
        check(checker, client, proof, token="another-token")
    with pytest.raises(DPoPBindingError):
        check(checker, client, proof, jkt=DPoPKey().jkt)
    assert checker.remembered == 0
    check(checker, client, proof)
    assert checker.remembered == 1
    with pytest.raises(DPoPProofReplayedError):
        check(checker, client, proof)


def test_the_jti_memory_is_bounded_and_counts_live_evictions(client: DPoPKey) -> None:
    checker = make_checker(jti_cache_size=3)
    # Same iat, so the same expiry: the oldest goes first (jti in reverse order, so
    # that no other order of the entries gives the same result).
    proofs = [proof_for(client, jti=jti) for jti in ("d", "c", "b", "a")]
    for proof in proofs[:3]:
        check(checker, client, proof)
    assert (checker.remembered, checker.evicted_live) == (3, 0)
    check(checker, client, proofs[3])
    # The oldest, still live, was pushed out: counted, so that status can show it.
    assert (checker.remembered, checker.evicted_live) == (3, 1)
    for proof in proofs[1:]:
        with pytest.raises(DPoPProofReplayedError):
            check(checker, client, proof)


def test_the_jti_memory_holds_100_000_by_default() -> None:
    # README: "Each jti is remembered (up to 100,000)". Filled directly: minting and
    # checking that many proofs would take seconds.
    checker = DPoPProofChecker(algorithms=("ES256",), max_age=300, leeway=30, clock=Clock())
    for i in range(100_001):
        # From 20 keys: one key alone may hold a tenth (see the share tests below).
        checker._remember(f"jkt{i % 20}", str(i), NOW + 330, NOW)
    assert (checker.remembered, checker.evicted_live) == (100_000, 1)


def test_expired_entries_go_first_and_are_not_counted(client: DPoPKey) -> None:
    clock = Clock()
    checker = make_checker(clock, max_age=300, leeway=30, jti_cache_size=2)
    check(checker, client, proof_for(client))  # remembered until NOW + 330
    clock.now = NOW + 331
    check(checker, client, proof_for(client, iat=clock.now))
    # The expired entry was dropped although the memory was not full.
    assert checker.remembered == 1
    check(checker, client, proof_for(client, iat=clock.now))
    assert (checker.remembered, checker.evicted_live) == (2, 0)


def test_an_expired_entry_goes_before_a_live_one_whatever_the_order_they_came_in(
    client: DPoPKey,
) -> None:
    # Proofs do not arrive in iat order: one made at the edge of the window expires
    # before a fresh one seen earlier. Over the bound, the expired one must go first.
    clock = Clock()
    checker = make_checker(clock, max_age=300, leeway=30, jti_cache_size=2)
    check(checker, client, proof_for(client, jti="fresh"))  # until NOW + 330
    check(checker, client, proof_for(client, jti="old", iat=NOW - 300))  # until NOW + 30
    clock.now = NOW + 31
    check(checker, client, proof_for(client, iat=clock.now))
    assert (checker.remembered, checker.evicted_live) == (2, 0)
    with pytest.raises(DPoPProofReplayedError):
        check(checker, client, proof_for(client, jti="fresh", iat=NOW))


def test_a_jti_used_again_after_its_window_is_remembered_again(client: DPoPKey) -> None:
    clock = Clock()
    checker = make_checker(clock, max_age=300, leeway=30)
    check(checker, client, proof_for(client, jti="again"))
    clock.now = NOW + 331  # the first proof is out of its window and forgotten
    second = proof_for(client, jti="again", iat=clock.now)
    check(checker, client, second)
    assert checker.remembered == 1
    with pytest.raises(DPoPProofReplayedError):
        check(checker, client, second)


def test_over_the_bound_the_entry_closest_to_expiry_goes(client: DPoPKey) -> None:
    # All live: the one whose proof leaves the window first is the least exposed.
    checker = make_checker(max_age=300, leeway=30, jti_cache_size=2)
    check(checker, client, proof_for(client, jti="a", iat=NOW))
    check(checker, client, proof_for(client, jti="b", iat=NOW - 200))
    check(checker, client, proof_for(client, jti="c", iat=NOW))
    assert (checker.remembered, checker.evicted_live) == (2, 1)
    for jti in ("a", "c"):
        with pytest.raises(DPoPProofReplayedError):
            check(checker, client, proof_for(client, jti=jti))


@pytest.mark.parametrize("leeway", [30, 0])
def test_an_entry_is_kept_as_long_as_its_proof_could_be_accepted(
    client: DPoPKey, leeway: float
) -> None:
    clock = Clock()
    checker = make_checker(clock, max_age=300, leeway=leeway, jti_cache_size=2)
    check(checker, client, proof_for(client, jti="first"))
    clock.now = NOW + 300
    check(checker, client, proof_for(client, iat=clock.now))
    # "first" could still be accepted now (iat = now - max_age): it must stay.
    assert checker.remembered == 2
    with pytest.raises(DPoPProofReplayedError):
        check(checker, client, proof_for(client, jti="first", iat=NOW))


# -- TokenVerifier.verify_dpop ---------------------------------------------------------------


@pytest.fixture
def minter(auth0_rsa_key: PrivateKey) -> LocalIssuer:
    """Mints tokens at ``NOW``; never started (its JWKS goes to a StaticKeySet)."""
    return LocalIssuer(issuer=ISS, audience=AUD, private_key=auth0_rsa_key, clock=lambda: NOW)


def verifier_for(
    minter: LocalIssuer, clock: Callable[[], float] | None = None, **config: Any
) -> TokenVerifier:
    config.setdefault("dpop", "allowed")
    return TokenVerifier(
        minter.config(**config), key_set=StaticKeySet(minter.jwks), clock=clock or Clock()
    )


async def verify_dpop(
    verifier: TokenVerifier, client: DPoPKey, token: str, proof: str | None = None
) -> Claims:
    return await verifier.verify_dpop(
        token, proof if proof is not None else proof_for(client, token=token), method="GET", url=URL
    )


@pytest.mark.anyio
async def test_verify_dpop_returns_the_claims_of_a_bound_token(
    minter: LocalIssuer, client: DPoPKey
) -> None:
    verifier = verifier_for(minter)
    claims = await verify_dpop(verifier, client, minter.token(cnf=client.cnf, scope="read:x"))
    assert claims.sub == "user-1"
    assert claims["cnf"] == {"jkt": client.jkt}
    assert verifier.dpop.remembered == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "cnf",
    [DROP, {}, {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}, {"jkt": 5}, "jkt"],
    ids=["no-cnf", "empty-cnf", "mtls-cnf", "jkt-not-a-string", "cnf-not-an-object"],
)
async def test_a_token_not_bound_by_jkt_is_refused_on_the_dpop_scheme(
    minter: LocalIssuer, client: DPoPKey, cnf: Any
) -> None:
    verifier = verifier_for(minter)
    token = minter.token() if cnf is DROP else minter.token(cnf=cnf)
    with pytest.raises(DPoPBindingError, match="not DPoP-bound"):
        await verify_dpop(verifier, client, token)
    assert verifier.dpop.remembered == 0


@pytest.mark.anyio
async def test_verify_dpop_makes_every_token_check(minter: LocalIssuer, client: DPoPKey) -> None:
    verifier = verifier_for(minter)
    cases: list[tuple[str, type[Exception]]] = [
        (minter.token(cnf=client.cnf, now=NOW - 7200, expires_in=3600), ExpiredTokenError),
        (minter.token(cnf=client.cnf, aud="https://other.example.test"), InvalidAudienceError),
        (minter.token(cnf=client.cnf, iss="https://evil.example.test/"), InvalidIssuerError),
    ]
    good = minter.token(cnf=client.cnf)
    head, body, signature = good.split(".")
    forged_body = b64url(json.dumps({**_decode(body), "sub": "admin"}).encode())
    cases.append((f"{head}.{forged_body}.{signature}", InvalidSignatureError))
    for token, error in cases:
        with pytest.raises(error):
            await verify_dpop(verifier, client, token)
    # The proof is checked (and its jti used up) only for a token that passed.
    assert verifier.dpop.remembered == 0
    await verify_dpop(verifier, client, good)
    assert verifier.dpop.remembered == 1


@pytest.mark.anyio
async def test_verify_dpop_checks_the_proof(minter: LocalIssuer, client: DPoPKey) -> None:
    verifier = verifier_for(minter)
    token = minter.token(cnf=client.cnf)
    with pytest.raises(InvalidDPoPProofError, match="htm"):
        await verify_dpop(verifier, client, token, proof_for(client, token=token, htm="POST"))
    other = DPoPKey()
    with pytest.raises(DPoPBindingError):
        await verify_dpop(verifier, other, token)


@pytest.mark.anyio
async def test_verify_dpop_uses_the_configured_proof_policy(
    minter: LocalIssuer, client: DPoPKey
) -> None:
    clock = Clock()
    verifier = verifier_for(minter, clock, dpop_max_age=60, dpop_leeway=5)
    token = minter.token(cnf=client.cnf)
    assert verifier.dpop.algorithms == ("ES256",)
    await verify_dpop(verifier, client, token, proof_for(client, token=token, iat=NOW - 60))
    with pytest.raises(InvalidDPoPProofError, match="old"):
        await verify_dpop(verifier, client, token, proof_for(client, token=token, iat=NOW - 61))
    with pytest.raises(InvalidDPoPProofError, match="future"):
        await verify_dpop(verifier, client, token, proof_for(client, token=token, iat=NOW + 6))
    es384 = DPoPKey("P-384")
    bound = minter.token(cnf=es384.cnf)
    with pytest.raises(InvalidDPoPProofError, match="alg"):
        await verify_dpop(verifier, es384, bound)
    wider = verifier_for(minter, clock, dpop_algorithms=("ES256", "ES384"))
    assert wider.dpop.algorithms == ("ES256", "ES384")
    await verify_dpop(wider, es384, bound)


@pytest.mark.anyio
async def test_a_bound_token_never_comes_back_as_a_bearer_token(
    minter: LocalIssuer, client: DPoPKey
) -> None:
    verifier = verifier_for(minter)
    token = minter.token(cnf=client.cnf)
    await verify_dpop(verifier, client, token)
    await verify_dpop(verifier, client, token)  # a second request, a fresh proof
    # Nothing was cached (as two Bearer verifications would be): the Bearer path checks
    # the token in full and refuses it.
    assert verifier.cache_info()["entries"] == 0
    with pytest.raises(SenderConstrainedTokenError):
        await verifier.verify(token)
    assert verifier.cache_info()["entries"] == 0
    # The Bearer cache still works for unbound tokens, from their second verification.
    unbound = minter.token()
    await verifier.verify(unbound)
    assert verifier.cache_info()["entries"] == 0
    await verifier.verify(unbound)
    assert verifier.cache_info()["entries"] == 1


@pytest.mark.anyio
async def test_a_cached_bearer_token_is_verified_again_on_the_dpop_scheme(
    minter: LocalIssuer, client: DPoPKey
) -> None:
    # The other direction: an unbound token cached by verify() is no DPoP token.
    verifier = verifier_for(minter)
    token = minter.token()
    await verifier.verify(token)
    await verifier.verify(token)  # the cache takes it at its second verification
    assert verifier.cache_info()["entries"] == 1
    with pytest.raises(DPoPBindingError):
        await verify_dpop(verifier, client, token)


class _Str(str):
    __slots__ = ()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "what",
    ["token-bytes", "token-none", "token-int", "token-str-subclass", "proof-bytes", "proof-none"],
)
async def test_verify_dpop_refuses_what_is_not_a_str(
    minter: LocalIssuer, client: DPoPKey, what: str
) -> None:
    verifier = verifier_for(minter)
    token = minter.token(cnf=client.cnf)
    proof = proof_for(client, token=token)
    given: dict[str, Any] = {
        "token-bytes": (token.encode(), proof),
        "token-none": (None, proof),
        "token-int": (5, proof),
        "token-str-subclass": (_Str(token), proof),
        "proof-bytes": (token, proof.encode()),
        "proof-none": (token, None),
    }
    bad_token, bad_proof = given[what]
    with pytest.raises(MalformedTokenError):
        await verifier.verify_dpop(bad_token, bad_proof, method="GET", url=URL)
    assert verifier.dpop.remembered == 0
    await verifier.verify_dpop(token, proof, method="GET", url=URL)


# -- the DPoP credentials (RFC 9449 §7.1) ---------------------------------------------------


def _headers(*pairs: tuple[str, str | bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (name.encode(), value if isinstance(value, bytes) else value.encode())
        for name, value in pairs
    ]


@pytest.mark.parametrize(
    "authorization",
    ["DPoP tok.en", "dpop tok.en", "DPOP tok.en", "  DPoP   tok.en \t", " DPoP tok.en"],
)
def test_dpop_credentials_scheme_is_case_insensitive(authorization: str) -> None:
    headers = _headers(("authorization", authorization), ("dpop", " the.proof.jwt "))
    assert dpop_credentials(headers) == ("tok.en", "the.proof.jwt")


def test_dpop_credentials_header_names_are_case_insensitive() -> None:
    headers = _headers(("Authorization", "DPoP abc=="), ("DPoP", "p.r.f"))
    assert dpop_credentials(headers) == ("abc==", "p.r.f")


@pytest.mark.parametrize(
    "authorization",
    [
        "DPoP",
        "DPoP ",
        "DPoP\ttok",
        "DPoP tok extra",
        "DPoP t@k",
        "DPoP =abc",
        "DPoP é",
        "DPoP,tok",  # no scheme name holds ",": DPoP, malformed
        "dpop:tok",
    ],
)
def test_malformed_dpop_credentials_are_a_400(authorization: str) -> None:
    headers = _headers(("authorization", authorization), ("dpop", "p.r.f"))
    with pytest.raises(InvalidRequestError) as caught:
        dpop_credentials(headers)
    assert caught.value.status_code == 400


def test_the_dpop_header_must_be_there_exactly_once() -> None:
    authorization = ("authorization", "DPoP tok")
    with pytest.raises(InvalidDPoPProofError, match="no DPoP header"):
        dpop_credentials(_headers(authorization))
    with pytest.raises(InvalidDPoPProofError, match="more than one"):
        dpop_credentials(_headers(authorization, ("dpop", "a.b.c"), ("DPoP", "a.b.c")))
    with pytest.raises(InvalidDPoPProofError, match="not a JWT"):
        dpop_credentials(_headers(authorization, ("dpop", "a.b.\xe9".encode("latin-1"))))
    assert dpop_credentials(_headers(authorization, ("dpop", "a.b.c"))) == ("tok", "a.b.c")


@pytest.mark.parametrize("second", ["DPoP other", "Bearer other", "Basic dXNlcjpwdw=="])
def test_two_authorization_headers_are_refused(second: str) -> None:
    headers = _headers(("authorization", "DPoP tok"), ("dpop", "a.b.c"), ("Authorization", second))
    with pytest.raises(MultipleTokensError):
        dpop_credentials(headers)


@pytest.mark.parametrize(
    "authorization", ["Bearer tok", "Basic dXNlcjpwdw==", "DPoPX tok", "DPoP-Bound tok", "tok"]
)
def test_another_scheme_is_not_a_dpop_request(authorization: str) -> None:
    headers = _headers(("authorization", authorization), ("dpop", "a.b.c"))
    assert dpop_credentials(headers) is None


def test_no_authorization_header_is_not_a_dpop_request() -> None:
    # A DPoP header alone (a proof without a token) carries no credentials.
    assert dpop_credentials(_headers(("dpop", "a.b.c"))) is None
    assert dpop_credentials([]) is None


# -- the request URI (RFC 9449 §4.3 htu) ----------------------------------------------------


# Hand-written, not _asgi's builders: these scopes lack keys (scheme, raw_path, Host,
# server) on purpose, to show how request_htu copes with each one missing.
def _scope(
    *,
    host: str | None = "api.example.test",
    path: str = "/x",
    raw_path: bytes | None = None,
    root_path: str = "",
    app_root_path: str | None = None,
    scheme: str | None = "http",
    kind: str = "http",
    server: tuple[str, int | None] | None = ("10.0.0.1", 8000),
) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": kind,
        "path": path,
        "root_path": root_path,
        "headers": [(b"host", host.encode("latin-1"))] if host is not None else [],
        "server": server,
    }
    if scheme is not None:
        scope["scheme"] = scheme
    if raw_path is not None:
        scope["raw_path"] = raw_path
    if app_root_path is not None:  # a Mount's: the server's root_path
        scope["app_root_path"] = app_root_path
    return scope


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (_scope(), "http://api.example.test/x"),
        (_scope(scheme="https", host="API.Example.Test"), "https://api.example.test/x"),
        (_scope(host="api.example.test:8080"), "http://api.example.test:8080/x"),
        (_scope(host="api.example.test:80"), "http://api.example.test/x"),
        (_scope(scheme="https", host="api.example.test:443"), "https://api.example.test/x"),
        (_scope(scheme="https", host="api.example.test:80"), "https://api.example.test:80/x"),
        # Without a Host header: the server's address.
        (_scope(host=None), "http://10.0.0.1:8000/x"),
        (_scope(host=None, server=("10.0.0.1", 80)), "http://10.0.0.1/x"),
        (_scope(host=""), "http://10.0.0.1:8000/x"),
        (_scope(host=None, server=("::1", 8000)), "http://[::1]:8000/x"),
        # IPv6 Host headers.
        (_scope(host="[::1]:8000"), "http://[::1]:8000/x"),
        (_scope(host="[2001:DB8::1]"), "http://[2001:db8::1]/x"),
        # The path as the client sent it.
        (_scope(path="/café", raw_path=b"/caf%c3%a9"), "http://api.example.test/caf%C3%A9"),
        (_scope(path="/a/b", raw_path=b"/a%2Fb"), "http://api.example.test/a%2Fb"),
        (_scope(path="/x", raw_path=b"/x?q=1"), "http://api.example.test/x"),
        (_scope(path="/from-path", raw_path=b""), "http://api.example.test/from-path"),
        (_scope(path=""), "http://api.example.test/"),
        # root_path: a prefix the proxy stripped, unless the path already holds it.
        (_scope(path="/x", raw_path=b"/x", root_path="/api"), "http://api.example.test/api/x"),
        (_scope(path="/api/x", root_path="/api"), "http://api.example.test/api/x"),
        (_scope(path="/x", root_path="/api/"), "http://api.example.test/api/x"),
        (_scope(path="/api/", root_path="/api"), "http://api.example.test/api/"),
        # uvicorn --root-path /api/ joins it to the path as "/api//x" (and raw_path).
        (
            _scope(path="/api//x", raw_path=b"/api//x", root_path="/api/"),
            "http://api.example.test/api/x",
        ),
        (
            _scope(
                path="/api//v1/x",
                raw_path=b"/api//v1/x",
                root_path="/api//v1",
                app_root_path="/api/",
            ),
            "http://api.example.test/api/v1/x",
        ),
        (_scope(path="//x", raw_path=b"//x", root_path="/"), "http://api.example.test/x"),
        # ... and a client's own double slash stays, after the root.
        (
            _scope(path="/api///x", raw_path=b"/api///x", root_path="/api/"),
            "http://api.example.test/api//x",
        ),
        # A Mount's root_path is the decoded prefix; the path as sent may spell it
        # otherwise (an escaped unreserved character, UTF-8, a path parameter): the
        # URI has the client's spelling.
        (
            _scope(path="/v1/x", raw_path=b"/v%31/x", root_path="/v1", app_root_path=""),
            "http://api.example.test/v1/x",
        ),
        (
            _scope(path="/café/x", raw_path=b"/caf%C3%A9/x", root_path="/café", app_root_path=""),
            "http://api.example.test/caf%C3%A9/x",
        ),
        (
            _scope(path="/t/a b/x", raw_path=b"/t/a%20b/x", root_path="/t/a b", app_root_path=""),
            "http://api.example.test/t/a%20b/x",
        ),
        (
            _scope(path="/t/a/b/x", raw_path=b"/t/a%2Fb/x", root_path="/t/a/b", app_root_path=""),
            "http://api.example.test/t/a%2Fb/x",
        ),
        # The "/" that ends the root sent escaped: the client's URI, as sent (the mount
        # routes it to /files/etc, which "/v1/%2Ffiles/etc" does not name).
        (
            _scope(
                path="/v1/files/etc", raw_path=b"/v1%2Ffiles/etc", root_path="/v1", app_root_path=""
            ),
            "http://api.example.test/v1%2Ffiles/etc",
        ),
        # A raw_path that does not spell the root: no URI to compare with.
        (_scope(path="/v1/x", raw_path=b"/v2/x", root_path="/v1"), None),
        # No raw_path: the decoded path, escaped again.
        (_scope(path="/café/x", root_path="/café"), "http://api.example.test/caf%C3%A9/x"),
        # WebSocket: the ws(s) URI (htu_matches also takes the http(s) form for it).
        (_scope(kind="websocket", scheme="ws"), "ws://api.example.test/x"),
        (_scope(kind="websocket", scheme="wss"), "wss://api.example.test/x"),
        (_scope(kind="websocket", scheme=None), "ws://api.example.test/x"),
        (_scope(scheme=None), "http://api.example.test/x"),
    ],
)
def test_request_htu(scope: dict[str, Any], expected: str | None) -> None:
    assert request_htu(scope) == expected


@pytest.mark.parametrize(
    "scope",
    [
        _scope(host=None, server=None),
        _scope(host=None, server=("/run/app.sock", None)),
        _scope(scheme="ftp"),
        _scope(host="api.example.test:99999"),
        _scope(path="/café", raw_path="/café".encode()),  # not ASCII as sent
        # A lone surrogate has no UTF-8 form, so no URI form (not a 500).
        _scope(path="/\udce9"),
        _scope(path="/x", raw_path=b"/x", root_path="/\ud800"),
        _scope(path="/\ud800/x", root_path="/\ud800"),
        # A "%" that starts no escape (the router takes it literally).
        _scope(path="/files/my%2%30doc", raw_path=b"/files/my%2%30doc"),
        # A target without its leading "/" (h11 passes one), after the server's root:
        # joined to the root, it reads as another target ("%2Fme" as "/%2Fme").
        _scope(path="/api/x", root_path="/api/"),
        _scope(path="/api/me", raw_path=b"/api/me", root_path="/api/"),
        _scope(path="/api//me", raw_path=b"/api/%2Fme", root_path="/api/"),
        _scope(path="/apiary", root_path="/api"),
        _scope(path="/api", root_path="/api"),
        _scope(path="/x", root_path="/"),
        _scope(path="/v1/me", raw_path=b"/v1/me", root_path="/v1", app_root_path="/"),
        _scope(path="me", raw_path=b"me"),
    ],
)
def test_request_htu_is_none_when_it_cannot_be_built(scope: dict[str, Any]) -> None:
    assert request_htu(scope) is None


@pytest.mark.parametrize(
    "host",
    [
        "api.example.test/x?",
        "api.example.test/x#",
        "api.example.test/x/..",
        "api.example.test?",
        "api.example.test#",
        "api.example.test\\x",
        "user@api.example.test",
        "api.example.test x",
        "api.example.test:80:80",
    ],
)
def test_a_host_header_that_is_not_a_host_builds_no_uri(host: str) -> None:
    # Host is the client's text. Read as part of a URL, "api/x?" would make a request
    # for /y look like one for /x, and a proof made for /x would pass at /y.
    assert request_htu(_scope(host=host, path="/y")) is None


# -- the middleware, via ASGI ---------------------------------------------------------------

# Module level: with postponed annotations FastAPI resolves dependencies from here.
TokenClaims = Annotated[Claims, Depends(require_token)]
ReadMessages = Annotated[Claims, Depends(require_scopes("read:messages"))]
BASE = "http://testserver"
BEARER_BARE = 'Bearer realm="api"'
DPOP_BARE = 'DPoP realm="api", algs="ES256"'
MALFORMED = 'error="invalid_token", error_description="The access token is malformed."'
BOUND = (
    'error="invalid_token", error_description="The access token is bound to a key and '
    'cannot be used as a bearer token."'
)
DPOP_ONLY = (
    'error="invalid_token", error_description="This API accepts DPoP-bound access tokens only."'
)
BAD_PROOF = 'error="invalid_dpop_proof", error_description="The DPoP proof is invalid."'
REPLAYED = 'error="invalid_dpop_proof", error_description="The DPoP proof has already been used."'
NOT_BOUND = (
    'error="invalid_token", error_description="The access token is not bound to the key of '
    'the DPoP proof."'
)
NO_SCOPE = (
    'error="insufficient_scope", error_description="The access token lacks a required scope.", '
    'scope="read:messages"'
)


def api(verifier: TokenVerifier, *, wrap: bool = False, **options: Any) -> Any:
    """The test API behind Auth0Middleware: added with add_middleware, or (``wrap``)
    wrapping the app directly, where the dependencies' rejections are answered by the
    handler the middleware registers inside the app."""
    app = FastAPI()

    @app.get("/me")
    async def me(claims: TokenClaims, request: Request) -> dict[str, Any]:
        return {"sub": claims.sub, "state": request.state.claims.sub}

    @app.get("/state")
    async def state(request: Request) -> dict[str, Any]:
        claims = request.state.claims
        return {"sub": None if claims is None else claims.sub}

    @app.get("/messages")
    async def messages(claims: ReadMessages) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.post("/messages")
    async def post_message(claims: TokenClaims) -> dict[str, Any]:
        return {"posted_by": claims.sub}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"ok": True}

    if wrap:
        return Auth0Middleware(app, verifier=verifier, **options)
    app.add_middleware(Auth0Middleware, verifier=verifier, **options)
    return app


@pytest.fixture
async def http() -> AsyncIterator[Callable[[Any], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def open_client(app: Any) -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
        clients.append(c)
        return c

    yield open_client
    for c in clients:
        await c.aclose()


def challenge(mode: str, scheme: str, error: str | None) -> str:
    """The expected WWW-Authenticate: the error on the scheme the request used and the
    other scheme bare after it (RFC 9449 §7.2); only DPoP when it is required."""
    with_error = f", {error}" if error else ""
    if mode == "disabled":
        return BEARER_BARE + with_error
    if mode == "required":
        return DPOP_BARE + with_error
    if scheme == "DPoP":
        return f"{DPOP_BARE}{with_error}, {BEARER_BARE}"
    return f"{BEARER_BARE}{with_error}, {DPOP_BARE}"


MODES = ["disabled", "allowed", "required"]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_no_token(minter: LocalIssuer, http: Any, mode: str) -> None:
    async with http(api(verifier_for(minter, dpop=mode))) as c:
        r = await c.get("/me")
    assert r.status_code == 401
    assert r.json()["reason"] == "missing_token"
    assert r.headers["www-authenticate"] == challenge(mode, "Bearer", None)


@pytest.mark.anyio
async def test_the_dpop_challenge_lists_every_configured_algorithm(
    minter: LocalIssuer, http: Any
) -> None:
    verifier = verifier_for(minter, dpop_algorithms=("ES256", "PS256", "EdDSA"))
    async with http(api(verifier)) as c:
        r = await c.get("/me")
    assert r.headers["www-authenticate"] == (
        'Bearer realm="api", DPoP realm="api", algs="ES256 PS256 EdDSA"'
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "reason", "error"),
    [
        ("disabled", "malformed_token", MALFORMED),
        ("allowed", "malformed_token", MALFORMED),
        ("required", "dpop_required", DPOP_ONLY),
    ],
)
async def test_a_bad_bearer_token(
    minter: LocalIssuer, http: Any, mode: str, reason: str, error: str
) -> None:
    async with http(api(verifier_for(minter, dpop=mode))) as c:
        r = await c.get("/me", headers={"Authorization": "Bearer not.a.token"})
    assert r.status_code == 401
    assert r.json()["reason"] == reason
    assert r.headers["www-authenticate"] == challenge(mode, "Bearer", error)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "reason", "error"),
    [
        ("disabled", "sender_constrained_token", BOUND),
        ("allowed", "sender_constrained_token", BOUND),
        ("required", "dpop_required", DPOP_ONLY),
    ],
)
async def test_a_bound_token_sent_as_bearer_is_refused(
    minter: LocalIssuer, client: DPoPKey, http: Any, mode: str, reason: str, error: str
) -> None:
    # RFC 9449 §7.2: a DPoP-bound token received as a bearer token MUST be rejected.
    token = minter.token(cnf=client.cnf)
    async with http(api(verifier_for(minter, dpop=mode))) as c:
        r = await c.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert r.json()["reason"] == reason
    assert r.headers["www-authenticate"] == challenge(mode, "Bearer", error)


@pytest.mark.anyio
async def test_required_refuses_even_a_good_bearer_token(minter: LocalIssuer, http: Any) -> None:
    async with http(api(verifier_for(minter, dpop="required"))) as c:
        r = await c.get("/state", headers={"Authorization": f"Bearer {minter.token()}"})
        allowed = http(api(verifier_for(minter, dpop="allowed")))
        ok = await allowed.get("/state", headers={"Authorization": f"Bearer {minter.token()}"})
    assert r.status_code == 401
    assert r.json()["reason"] == "dpop_required"
    assert r.headers["www-authenticate"] == f"{DPOP_BARE}, {DPOP_ONLY}"
    assert ok.status_code == 200
    assert ok.json() == {"sub": "user-1"}


def dpop_headers(client: DPoPKey, token: str, path: str = "/me", **claims: Any) -> dict[str, str]:
    return {
        "Authorization": f"DPoP {token}",
        "DPoP": proof_for(client, token=token, htu=BASE + path, **claims),
    }


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["allowed", "required"])
async def test_a_good_dpop_request(
    minter: LocalIssuer, client: DPoPKey, http: Any, mode: str
) -> None:
    token = minter.token(cnf=client.cnf)
    async with http(api(verifier_for(minter, dpop=mode))) as c:
        r = await c.get("/me", headers=dpop_headers(client, token))
        kit = await c.get("/me", headers=client.headers(token, "GET", BASE + "/me", iat=NOW))
    assert r.status_code == 200
    assert r.json() == {"sub": "user-1", "state": "user-1"}
    assert "www-authenticate" not in r.headers
    assert kit.status_code == 200


@pytest.mark.anyio
async def test_with_dpop_disabled_the_dpop_scheme_is_anonymous(
    minter: LocalIssuer, client: DPoPKey, http: Any
) -> None:
    # The contract's behaviour: a scheme that is not ours carries no credentials.
    token = minter.token(cnf=client.cnf)
    async with http(api(verifier_for(minter, dpop="disabled"))) as c:
        anonymous = await c.get("/state", headers=dpop_headers(client, token, "/state"))
        refused = await c.get("/me", headers=dpop_headers(client, token))
        broken = await c.get("/state", headers={"Authorization": f"DPoP {token}"})
    assert anonymous.status_code == 200
    assert anonymous.json() == {"sub": None}
    assert refused.status_code == 401
    assert refused.json()["reason"] == "missing_token"
    assert refused.headers["www-authenticate"] == BEARER_BARE
    assert broken.status_code == 200  # no proof, and still not ours to refuse


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["allowed", "required"])
async def test_a_bad_proof(minter: LocalIssuer, client: DPoPKey, http: Any, mode: str) -> None:
    token = minter.token(cnf=client.cnf)
    async with http(api(verifier_for(minter, dpop=mode))) as c:
        wrong_method = await c.get("/me", headers=dpop_headers(client, token, htm="POST"))
        wrong_path = await c.get("/me", headers=dpop_headers(client, token, "/state"))
        no_proof = await c.get("/me", headers={"Authorization": f"DPoP {token}"})
    for r in (wrong_method, wrong_path, no_proof):
        assert r.status_code == 401
        assert r.json()["reason"] == "invalid_dpop_proof"
        assert r.headers["www-authenticate"] == challenge(mode, "DPoP", BAD_PROOF)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["allowed", "required"])
async def test_a_replayed_proof(minter: LocalIssuer, client: DPoPKey, http: Any, mode: str) -> None:
    token = minter.token(cnf=client.cnf)
    headers = dpop_headers(client, token)
    async with http(api(verifier_for(minter, dpop=mode))) as c:
        first = await c.get("/me", headers=headers)
        again = await c.get("/me", headers=headers)
    assert first.status_code == 200
    assert again.status_code == 401
    assert again.json()["reason"] == "dpop_proof_replayed"
    assert again.headers["www-authenticate"] == challenge(mode, "DPoP", REPLAYED)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["allowed", "required"])
async def test_a_token_not_bound_to_the_proof_key(
    minter: LocalIssuer, client: DPoPKey, http: Any, mode: str
) -> None:
    other = DPoPKey()
    async with http(api(verifier_for(minter, dpop=mode))) as c:
        another_key = await c.get("/me", headers=dpop_headers(client, minter.token(cnf=other.cnf)))
        unbound = await c.get("/me", headers=dpop_headers(client, minter.token()))
    for r in (another_key, unbound):
        assert r.status_code == 401
        assert r.json()["reason"] == "dpop_binding_mismatch"
        assert r.json()["error"] == "invalid_token"
        assert r.headers["www-authenticate"] == challenge(mode, "DPoP", NOT_BOUND)


@pytest.mark.anyio
async def test_the_proof_names_the_request_method(
    minter: LocalIssuer, client: DPoPKey, http: Any
) -> None:
    token = minter.token(cnf=client.cnf)
    async with http(api(verifier_for(minter))) as c:
        posted = await c.post(
            "/messages", headers=dpop_headers(client, token, "/messages", htm="POST")
        )
        get_proof = await c.post("/messages", headers=dpop_headers(client, token, "/messages"))
    assert posted.status_code == 200
    assert posted.json() == {"posted_by": "user-1"}
    assert get_proof.status_code == 401
    assert get_proof.json()["reason"] == "invalid_dpop_proof"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["allowed", "required"])
@pytest.mark.parametrize("wrap", [False, True], ids=["add_middleware", "wrapped"])
async def test_insufficient_scope_on_a_dpop_request(
    minter: LocalIssuer, client: DPoPKey, http: Any, mode: str, wrap: bool
) -> None:
    lacking = minter.token(cnf=client.cnf, scope="read:other")
    holding = minter.token(cnf=client.cnf, scope="read:messages")
    async with http(api(verifier_for(minter, dpop=mode), wrap=wrap)) as c:
        r = await c.get("/messages", headers=dpop_headers(client, lacking, "/messages"))
        ok = await c.get("/messages", headers=dpop_headers(client, holding, "/messages"))
        # The scheme name is case-insensitive here too: the error still goes on DPoP's.
        lower_case = dpop_headers(client, lacking, "/messages")
        lower_case["Authorization"] = f"dpop {lacking}"
        lower = await c.get("/messages", headers=lower_case)
    assert r.status_code == 403
    assert r.json()["reason"] == "insufficient_scope"
    assert r.headers["www-authenticate"] == challenge(mode, "DPoP", NO_SCOPE)
    assert ok.status_code == 200
    assert lower.status_code == 403
    assert lower.headers["www-authenticate"] == r.headers["www-authenticate"]


@pytest.mark.anyio
async def test_a_host_header_cannot_move_a_proof_to_another_path(
    minter: LocalIssuer, client: DPoPKey, http: Any
) -> None:
    # A proof made for /state, sent to /me with a Host header that would make the
    # request's URI read as .../state: refused, and the same proof still works at /state.
    token = minter.token(cnf=client.cnf)
    headers = dpop_headers(client, token, "/state")
    async with http(api(verifier_for(minter))) as c:
        moved = await c.get("/me", headers={**headers, "Host": "testserver/state?"})
        fragment = await c.get("/me", headers={**headers, "Host": "testserver/state#"})
        honest = await c.get("/state", headers=headers)
    for r in (moved, fragment):
        assert r.status_code == 401
        assert r.json()["reason"] == "invalid_dpop_proof"
    assert honest.status_code == 200
    assert honest.json() == {"sub": "user-1"}


@pytest.mark.anyio
async def test_fail_closed_with_dpop(minter: LocalIssuer, client: DPoPKey, http: Any) -> None:
    token = minter.token(cnf=client.cnf)
    app = api(verifier_for(minter), require_token=True, public_paths=["/health"])
    async with http(app) as c:
        closed = await c.get("/state")
        public = await c.get("/health")
        opened = await c.get("/state", headers=dpop_headers(client, token, "/state"))
        bad = await c.get("/state", headers=dpop_headers(client, token, "/me"))
    assert closed.status_code == 401
    assert closed.json()["reason"] == "missing_token"
    assert closed.headers["www-authenticate"] == f"{BEARER_BARE}, {DPOP_BARE}"
    assert public.status_code == 200
    assert opened.status_code == 200
    assert opened.json() == {"sub": "user-1"}
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == f"{DPOP_BARE}, {BAD_PROOF}, {BEARER_BARE}"


@pytest.mark.anyio
async def test_a_custom_on_error_hook_gets_the_dpop_challenge(
    minter: LocalIssuer, client: DPoPKey, http: Any
) -> None:
    seen: list[Challenge] = []

    def hook(conn: HTTPConnection, challenge: Challenge) -> Response:
        seen.append(challenge)
        # No WWW-Authenticate of its own: the middleware adds the challenge's.
        return PlainTextResponse("refused", status_code=challenge.status_code)

    lacking = minter.token(cnf=client.cnf, scope="read:other")
    token = minter.token(cnf=client.cnf)
    async with http(api(verifier_for(minter), on_error=hook)) as c:
        bad = await c.get("/me", headers=dpop_headers(client, token, htm="PUT"))
        scope = await c.get("/messages", headers=dpop_headers(client, lacking, "/messages"))
    assert bad.status_code == 401
    assert bad.text == "refused"
    assert bad.headers["www-authenticate"] == f"{DPOP_BARE}, {BAD_PROOF}, {BEARER_BARE}"
    assert scope.status_code == 403
    assert scope.headers["www-authenticate"] == f"{DPOP_BARE}, {NO_SCOPE}, {BEARER_BARE}"
    assert [c.reason for c in seen] == ["invalid_dpop_proof", "insufficient_scope"]
    assert seen[0].headers["WWW-Authenticate"] == bad.headers["www-authenticate"]


@pytest.mark.anyio
async def test_a_websocket_handshake_with_dpop(minter: LocalIssuer, client: DPoPKey) -> None:
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"sub": websocket.state.claims.sub})
        await websocket.close()

    app = Starlette(
        routes=[WebSocketRoute("/ws", ws)],
        middleware=[Middleware(Auth0Middleware, verifier=verifier_for(minter, dpop="required"))],
    )
    token = minter.token(cnf=client.cnf)

    def scope(htu: str) -> dict[str, Any]:
        proof = proof_for(client, token=token, htu=htu)
        auth = [(b"authorization", f"DPoP {token}".encode()), (b"dpop", proof.encode())]
        # No denial extension: a refused handshake is a bare close.
        return ws_scope(auth, scheme="wss", host=b"api.example.test", denial=False)

    connect = [{"type": "websocket.connect"}]
    # The handshake of wss://host/ws is GET https://host/ws: that is the htu.
    for htu in ("https://api.example.test/ws", "wss://api.example.test/ws"):
        sent = await drive(app, scope(htu), connect)
        assert [m["type"] for m in sent] == [
            "websocket.accept",
            "websocket.send",
            "websocket.close",
        ]
        assert json.loads(sent[1]["text"]) == {"sub": "user-1"}
    refused = await drive(app, scope("wss://api.example.test/other"), connect)
    assert [m["type"] for m in refused] == ["websocket.close"]


def _readme_dpop_response() -> tuple[int, str]:
    text = README.read_text()
    start = text.index("\n## DPoP: sender-constrained tokens\n")
    section = text[start : text.index("\n## ", start + 1)]
    block = re.search(r"```text\n(?P<body>.*?)```", section, re.DOTALL)
    assert block is not None, "the DPoP section shows an example response"
    lines = block["body"].strip().splitlines()
    status = re.fullmatch(r"HTTP/1\.1 (\d{3}) .+", lines[0])
    assert status is not None
    [header] = [line for line in lines[1:] if line.startswith("WWW-Authenticate: ")]
    return int(status[1]), header.removeprefix("WWW-Authenticate: ")


@pytest.mark.anyio
async def test_the_readme_challenge_is_a_real_response(minter: LocalIssuer, http: Any) -> None:
    status, header = _readme_dpop_response()
    assert header == 'Bearer realm="api", DPoP realm="api", algs="ES256"'
    async with http(api(verifier_for(minter, dpop="allowed"))) as c:
        r = await c.get("/me")
    assert (r.status_code, r.headers["www-authenticate"]) == (status, header)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (InvalidDPoPProofError(), f"{DPOP_BARE}, {BAD_PROOF}, {BEARER_BARE}"),
        (DPoPBindingError(), f"{DPOP_BARE}, {NOT_BOUND}, {BEARER_BARE}"),
        (
            ExpiredTokenError(),
            f'{BEARER_BARE}, error="invalid_token", '
            f'error_description="{ExpiredTokenError.description}", {DPOP_BARE}',
        ),
    ],
)
def test_a_dpop_error_goes_on_the_dpop_challenge_even_without_the_request(
    error: Auth0Error, expected: str
) -> None:
    # When the request's scheme is not known (no scope given), an error that can only
    # concern DPoP is still delivered on the DPoP challenge; others go on Bearer's.
    got = challenge_for(error, realm="api", dpop_algs=("ES256",))
    assert got.headers["WWW-Authenticate"] == expected


# -- configuration ---------------------------------------------------------------------------


def config(**options: Any) -> Auth0Config:
    return Auth0Config(issuer=ISS, audience=AUD, jwks_uri=ISS + ".well-known/jwks.json", **options)


def test_dpop_defaults() -> None:
    c = config()
    assert (c.dpop, c.dpop_algorithms, c.dpop_max_age, c.dpop_leeway) == (
        "disabled",
        ("ES256",),
        300,
        30,
    )


@pytest.mark.parametrize("mode", MODES)
def test_dpop_modes(mode: str) -> None:
    assert config(dpop=mode).dpop == mode


@pytest.mark.parametrize("mode", ["enabled", "Allowed", "REQUIRED", "", "on", True, None, 1])
def test_dpop_must_be_one_of_the_modes(mode: Any) -> None:
    with pytest.raises(ConfigError, match="dpop must be one of"):
        config(dpop=mode)


@pytest.mark.parametrize(
    "algorithms",
    [("none",), ("ES256", "None"), ("HS256",), ("ES256", "hs512"), ("ES999",), (), [5], "HS384"],
)
def test_dpop_algorithms_refuses_unsigned_symmetric_and_unknown(algorithms: Any) -> None:
    with pytest.raises(ConfigError, match="dpop_algorithms"):
        config(dpop="allowed", dpop_algorithms=algorithms)


def test_dpop_algorithms_are_kept_in_order_once_each() -> None:
    c = config(dpop="allowed", dpop_algorithms=["PS256", "ES256", "PS256", "EdDSA"])
    assert c.dpop_algorithms == ("PS256", "ES256", "EdDSA")
    assert config(dpop_algorithms="ES384").dpop_algorithms == ("ES384",)


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("dpop_max_age", [1, 60, 3600, 1.5], [0, 0.5, 3600.5, -1, math.nan, math.inf, True, "300"]),
        ("dpop_leeway", [0, 5, 300, 0.5], [-1, -0.1, 300.5, math.nan, math.inf, False, "30"]),
    ],
)
def test_dpop_time_bounds(name: str, good: list[Any], bad: list[Any]) -> None:
    for value in good:
        assert getattr(config(**{name: value}), name) == value
    for value in bad:
        with pytest.raises(ConfigError, match=name):
            config(**{name: value})


@pytest.mark.parametrize("mode", ["allowed", "required"])
def test_dpop_with_accept_bound_tokens_is_refused(mode: str) -> None:
    # RFC 9449 §7.2: a DPoP resource server must refuse bound tokens sent as Bearer.
    with pytest.raises(ConfigError, match=r"accept_bound_tokens.*9449"):
        config(dpop=mode, accept_bound_tokens=True)
    assert config(dpop="disabled", accept_bound_tokens=True).accept_bound_tokens
    assert config(dpop=mode, accept_bound_tokens=False).dpop == mode


# -- a URL as sent, the parsed-key memory, the full-memory warning, the scheme of a 400 ----


def test_check_takes_the_url_as_the_client_sent_it(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    # verify_dpop() outside ASGI is handed the request URL as it is: default port,
    # query, another letter case. It is normalized like htu before the comparison.
    sent = "HTTPS://API.example.test:443/messages?page=2#top"
    check(checker, client, proof_for(client, htu=sent), url=sent)
    check(checker, client, proof_for(client), url=sent)


def _counting_parse_jwk(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    import asgi_auth0._dpop as dpop_module

    calls: list[object] = []
    real = dpop_module.parse_jwk

    def counted(jwk: object) -> Any:
        calls.append(jwk)
        return real(jwk)

    monkeypatch.setattr(dpop_module, "parse_jwk", counted)
    return calls


def test_a_clients_key_is_parsed_once_it_has_passed(
    monkeypatch: pytest.MonkeyPatch, checker: DPoPProofChecker, client: DPoPKey
) -> None:
    calls = _counting_parse_jwk(monkeypatch)
    # A proof that fails (wrong ath) does not make its key known...
    with pytest.raises(InvalidDPoPProofError):
        check(checker, client, proof_for(client, ath="wrong"))
    check(checker, client, proof_for(client))
    assert len(calls) == 2
    # ...one that passed does: the next proofs with the same JWK skip the parse.
    for _ in range(3):
        check(checker, client, proof_for(client))
    assert len(calls) == 2
    # Another key, or the same key with one member more, is another JWK.
    check(checker, client, proof_for(client, header={"jwk": {**client.jwk, "kid": "k1"}}))
    assert len(calls) == 3


def test_a_known_key_is_still_held_to_every_check(
    checker: DPoPProofChecker, client: DPoPKey
) -> None:
    check(checker, client, proof_for(client))
    # The remembered key verifies signatures; it does not vouch for them.
    forged = proof_for(client, key=generate_private_key("P-256"))
    with pytest.raises(InvalidDPoPProofError, match="signature"):
        check(checker, client, forged)
    with pytest.raises(DPoPBindingError):
        check(checker, client, proof_for(client), jkt=DPoPKey().jkt)


def test_a_jwk_with_a_non_string_member_works_and_is_not_remembered(
    monkeypatch: pytest.MonkeyPatch, checker: DPoPProofChecker, client: DPoPKey
) -> None:
    calls = _counting_parse_jwk(monkeypatch)
    jwk = {**client.jwk, "key_ops": ["verify"]}
    for _ in range(2):
        check(checker, client, proof_for(client, header={"jwk": jwk}))
    assert len(calls) == 2


def test_the_parsed_key_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import asgi_auth0._dpop as dpop_module

    monkeypatch.setattr(dpop_module, "PROOF_KEY_CACHE_SIZE", 3)
    checker = make_checker()
    clients = [DPoPKey() for _ in range(5)]
    for each in clients:
        check(checker, each, proof_for(each))
    assert len(checker._keys) == 3
    calls = _counting_parse_jwk(monkeypatch)
    check(checker, clients[0], proof_for(clients[0]))  # the oldest went out
    check(checker, clients[4], proof_for(clients[4]))  # the newest stayed
    assert len(calls) == 1


def test_forgetting_live_proofs_is_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture, client: DPoPKey
) -> None:
    clock = Clock()
    checker = make_checker(clock, jti_cache_size=2)
    caplog.set_level("WARNING", logger="asgi_auth0.dpop")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "asgi_auth0.dpop"]

    for _ in range(2):
        check(checker, client, proof_for(client))
    assert warnings() == []  # full, nothing forgotten yet
    for _ in range(3):
        check(checker, client, proof_for(client))
    assert checker.evicted_live == 3
    [line] = warnings()
    assert "jti memory is full (2 proofs" in line
    assert "(1 so far)" in line
    assert caplog.records[-1].reason == "dpop_jti_memory_full"  # type: ignore[attr-defined]
    clock.now += 60
    check(checker, client, proof_for(client, iat=clock.now))
    assert len(warnings()) == 2
    assert "(4 so far)" in warnings()[-1]


@pytest.mark.anyio
@pytest.mark.parametrize("value", ["DPoP", "DPoP\ttoken", "dpop  ", "DPoP,token", "dpop:token"])
async def test_a_malformed_dpop_authorization_is_answered_on_the_dpop_challenge(
    value: str,
) -> None:
    issuer = LocalIssuer(issuer=ISS, audience=AUD)
    verifier = TokenVerifier(issuer.config(dpop="allowed"), key_set=StaticKeySet(issuer.jwks))
    app = Auth0Middleware(PlainTextResponse("ok"), verifier=verifier)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/", headers={"Authorization": value})
    assert response.status_code == 400
    assert response.headers["www-authenticate"].startswith(
        'DPoP realm="api", algs="ES256", error="invalid_request"'
    )


def test_a_keys_share_of_the_jti_memory_frees_as_its_proofs_expire(
    caplog: pytest.LogCaptureFixture, client: DPoPKey
) -> None:
    clock = Clock()
    checker = make_checker(clock, jti_cache_size=100, jti_per_key=2)
    caplog.set_level("WARNING", logger="asgi_auth0.dpop")
    spent = [proof_for(client) for _ in range(3)]
    for each in spent:
        check(checker, client, each)
    # Past its share the key's proofs are taken but not remembered, and that is said.
    assert (checker.remembered, checker.unremembered) == (2, 1)
    [record] = [r for r in caplog.records if r.name == "asgi_auth0.dpop"]
    assert record.reason == "dpop_jti_share_full"  # type: ignore[attr-defined]
    assert f"jkt {client.jkt[:16]!r}" in record.getMessage()
    with pytest.raises(DPoPProofReplayedError):
        check(checker, client, spent[0])
    check(checker, client, spent[2])  # the unremembered one: its replay check is gone
    # Another key has its own share.
    other = DPoPKey()
    check(checker, other, proof_for(other), jkt=other.jkt)
    assert checker.remembered == 3
    # Once its proofs leave the window, the key's share is free again.
    clock.now = NOW + 331
    check(checker, client, proof_for(client, iat=clock.now))
    check(checker, client, proof_for(client, iat=clock.now))
    assert checker._per_key == {client.jkt: 2}
    assert checker.unremembered == 2  # only the replay of spent[2] above


def test_a_verifier_that_adds_checks_in_verify_must_cover_dpop_too() -> None:
    # A subclass adding a check to verify() (a revocation list, say) would not see
    # DPoP requests, which go through verify_dpop(): refused at construction.
    issuer = LocalIssuer(issuer=ISS, audience=AUD)

    class Revoking(TokenVerifier):
        async def verify(self, token: str) -> Claims:
            return await super().verify(token)

    class RevokingBoth(Revoking):
        async def verify_dpop(
            self, token: str, proof: str, *, method: str, url: str | None
        ) -> Claims:
            return await super().verify_dpop(token, proof, method=method, url=url)

    keys = StaticKeySet(issuer.jwks)
    with pytest.raises(ConfigError, match="overrides verify\\(\\) but not verify_dpop"):
        Auth0Middleware(
            PlainTextResponse("ok"), verifier=Revoking(issuer.config(dpop="allowed"), key_set=keys)
        )
    # Fine with DPoP off, or with both overridden.
    Auth0Middleware(PlainTextResponse("ok"), verifier=Revoking(issuer.config(), key_set=keys))
    Auth0Middleware(
        PlainTextResponse("ok"),
        verifier=RevokingBoth(issuer.config(dpop="required"), key_set=keys),
    )


def test_a_verifier_without_verify_dpop_is_refused_when_dpop_is_on() -> None:
    issuer = LocalIssuer(issuer=ISS, audience=AUD)

    class DuckVerifier:
        """Anything with config and verify(), as the middleware otherwise accepts."""

        def __init__(self, config: Auth0Config) -> None:
            self.config = config

        async def verify(self, token: str) -> Claims:
            raise NotImplementedError

    with pytest.raises(ConfigError, match="has no verify_dpop"):
        Auth0Middleware(
            PlainTextResponse("ok"),
            verifier=DuckVerifier(issuer.config(dpop="allowed")),  # type: ignore[arg-type]
        )
    Auth0Middleware(
        PlainTextResponse("ok"),
        verifier=DuckVerifier(issuer.config()),  # type: ignore[arg-type]
    )
