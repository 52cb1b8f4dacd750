"""The testing kit: LocalIssuer (keys, minting, HTTP server, ASGI app, faults) and the
pytest plugin's fixtures. Everything here talks to a real loopback server through real
httpx, or to the ASGI app through httpx.ASGITransport."""

from __future__ import annotations

import hmac
import json
import math
import socket
import threading
import time
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from asgi_auth0 import (
    Auth0Config,
    Claims,
    ExpiredTokenError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    JWKSCache,
    KeySetError,
    MissingClaimError,
    StaticKeySet,
    TokenVerifier,
    UnknownKeyError,
)
from asgi_auth0._keys import b64url_decode, parse_jwks
from asgi_auth0._signing import PrivateKey, generate_private_key
from asgi_auth0.testing import (
    ALL_PATHS,
    DISCOVERY_PATH,
    JWKS_PATH,
    OAUTH_METADATA_PATH,
    LocalIssuer,
    TokenFactory,
    public_pem,
)

ASGI_ISSUER = "https://tenant.example.test/"
FROZEN = 1_700_000_000.0


def decode_part(token: str, index: int) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(b64url_decode(token.split(".")[index]))
    return result


def signature_verifies(issuer: LocalIssuer, token: str) -> bool:
    """Verify ``token`` with the issuer's published JWKS, by PublicKey.verify directly."""
    header = decode_part(token, 0)
    head, payload, signature = token.split(".")
    key = parse_jwks(issuer.jwks).find(header.get("kid"), header["alg"])
    return key.verify(header["alg"], f"{head}.{payload}".encode(), b64url_decode(signature))


def verifier_for(issuer: LocalIssuer, **config: Any) -> TokenVerifier:
    return TokenVerifier(issuer.config(**config), key_set=StaticKeySet(issuer.jwks))


def server_threads(port: int) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith(f"-{port}")]


@pytest.fixture
def asgi_issuer(auth0_rsa_key: PrivateKey) -> LocalIssuer:
    """An issuer used only through its ASGI app (never started)."""
    return LocalIssuer(issuer=ASGI_ISSUER, private_key=auth0_rsa_key)


# -- minting --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "alg"),
    [("P-256", "ES256"), ("P-384", "ES384"), ("P-521", "ES512"), ("Ed25519", "EdDSA")],
)
def test_each_key_type_mints_tokens_its_jwks_verifies(key_type: str, alg: str) -> None:
    issuer = LocalIssuer(key_type=key_type, issuer=ASGI_ISSUER)
    token = issuer.token()
    assert decode_part(token, 0)["alg"] == alg
    assert issuer.jwks["keys"][0]["alg"] == alg
    assert signature_verifies(issuer, token)


def test_rsa_issuer_uses_a_given_key_and_rs256(asgi_issuer: LocalIssuer) -> None:
    token = asgi_issuer.token()
    assert decode_part(token, 0) == {"alg": "RS256", "typ": "JWT", "kid": asgi_issuer.current_kid}
    assert asgi_issuer.jwks["keys"][0]["kty"] == "RSA"
    assert signature_verifies(asgi_issuer, token)


def test_alg_must_fit_the_key_type() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        LocalIssuer(key_type="P-256", alg="ES384", issuer=ASGI_ISSUER)
    ps = LocalIssuer(key_type="Ed25519", alg="Ed25519", issuer=ASGI_ISSUER)
    assert signature_verifies(ps, ps.token())


def test_token_carries_auth0_style_claims(asgi_issuer: LocalIssuer) -> None:
    token = asgi_issuer.token(
        "auth0|42", scope=["read:messages", "write:messages"], permissions=["admin"], now=FROZEN
    )
    assert decode_part(token, 1) == {
        "iss": ASGI_ISSUER,
        "sub": "auth0|42",
        "aud": "https://api.example.test",
        "iat": int(FROZEN),
        "exp": int(FROZEN) + 3600,
        "scope": "read:messages write:messages",
        "permissions": ["admin"],
    }


def test_claims_override_and_none_removes(asgi_issuer: LocalIssuer) -> None:
    token = asgi_issuer.token(aud=["a", "b"], iat=None, azp="client", headers={"typ": "at+jwt"})
    payload = decode_part(token, 1)
    assert payload["aud"] == ["a", "b"]
    assert "iat" not in payload
    assert payload["azp"] == "client"
    assert decode_part(token, 0)["typ"] == "at+jwt"
    no_kid = asgi_issuer.token(headers={"kid": None})
    assert "kid" not in decode_part(no_kid, 0)


def test_clock_attribute_freezes_iat_and_exp(asgi_issuer: LocalIssuer) -> None:
    asgi_issuer.clock = lambda: FROZEN + 0.75
    payload = decode_part(asgi_issuer.token(expires_in=60), 1)
    assert (payload["iat"], payload["exp"]) == (int(FROZEN), int(FROZEN) + 60)


@pytest.mark.anyio
async def test_good_and_deliberately_bad_tokens_meet_the_verifier(
    asgi_issuer: LocalIssuer,
) -> None:
    verifier = verifier_for(asgi_issuer)
    claims = await verifier.verify(asgi_issuer.token("u", scope="read:x", permissions=["p"]))
    assert (claims.sub, claims.scopes, claims.permissions) == ("u", {"read:x"}, {"p"})
    bad = [
        (asgi_issuer.expired_token(), ExpiredTokenError),
        (asgi_issuer.wrong_audience_token(), InvalidAudienceError),
        (asgi_issuer.wrong_issuer_token(), InvalidIssuerError),
        (asgi_issuer.unknown_kid_token(), UnknownKeyError),
        (asgi_issuer.bad_signature_token(), InvalidSignatureError),
        (asgi_issuer.token(iat=None), MissingClaimError),
    ]
    for token, error in bad:
        with pytest.raises(error):
            await verifier.verify(token)


def test_bad_tokens_are_bad_for_one_reason_only(asgi_issuer: LocalIssuer) -> None:
    # Each deliberately bad token differs from a good one in exactly its defect.
    unknown = asgi_issuer.unknown_kid_token(kid="nope")
    assert decode_part(unknown, 0)["kid"] == "nope"
    head, payload, signature = unknown.split(".")
    key = parse_jwks(asgi_issuer.jwks).find(asgi_issuer.current_kid, "RS256")
    assert key.verify("RS256", f"{head}.{payload}".encode(), b64url_decode(signature))
    forged = asgi_issuer.bad_signature_token()
    assert decode_part(forged, 0)["kid"] == asgi_issuer.current_kid
    assert not signature_verifies(asgi_issuer, forged)
    expired = decode_part(asgi_issuer.expired_token(expired_for=100, now=FROZEN), 1)
    assert expired["exp"] == int(FROZEN) - 100
    assert expired["iat"] < expired["exp"]


@pytest.mark.anyio
async def test_an_expired_token_is_refused_just_past_the_leeway(asgi_issuer: LocalIssuer) -> None:
    # config() keeps the default 5 s leeway; 6 s past exp is outside it.
    assert asgi_issuer.config().leeway == 5
    verifier = verifier_for(asgi_issuer)
    with pytest.raises(ExpiredTokenError):
        await verifier.verify(asgi_issuer.expired_token(expired_for=6))


@pytest.mark.parametrize(
    "expired_for",
    [-10, 0, 1, 4.5, 5, math.nan, math.inf, 10**400, True, "60"],
    ids=lambda v: repr(v)[:12],
)
def test_expired_token_refuses_an_age_the_leeway_would_forgive(
    asgi_issuer: LocalIssuer, expired_for: Any
) -> None:
    # expired_token() promises a token that config() refuses as expired; one that
    # expired inside the 5 s leeway would verify, so asking for it is a mistake.
    with pytest.raises(ValueError, match="expired_for"):
        asgi_issuer.expired_token(expired_for=expired_for)


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("token", {"expires_in": 10**400}),
        ("token", {"expires_in": math.inf}),
        ("token", {"expires_in": math.nan}),
        ("token", {"now": 10**400}),
        ("token", {"now": 1e308, "expires_in": 1e308}),
        ("expired_token", {"now": 10**400}),
        ("expired_token", {"now": math.nan}),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={v[k]!r:.8}" for k in v),
)
def test_minting_with_seconds_no_float_can_hold_is_a_value_error(
    asgi_issuer: LocalIssuer, method: str, kwargs: dict[str, Any]
) -> None:
    # An int too large for a float (10**400) used to escape as OverflowError, and an
    # infinite exp from math.floor(inf) too: the kit's own misuse errors are ValueErrors.
    with pytest.raises(ValueError, match="finite number of seconds"):
        getattr(asgi_issuer, method)(**kwargs)


def test_an_odd_exp_is_still_minted_through_the_exp_claim(asgi_issuer: LocalIssuer) -> None:
    # The refusal above is about the convenience arguments; exp= itself stays free.
    assert decode_part(asgi_issuer.token(exp=10**400), 1)["exp"] == 10**400


@pytest.mark.anyio
async def test_a_token_inside_the_leeway_is_minted_with_token_expires_in(
    asgi_issuer: LocalIssuer,
) -> None:
    with pytest.raises(ValueError, match=r"token\(expires_in=-seconds\)"):
        asgi_issuer.expired_token(expired_for=2)
    claims = await verifier_for(asgi_issuer).verify(asgi_issuer.token(expires_in=-2))
    assert claims["exp"] < time.time()


def test_sign_crafts_arbitrary_tokens(asgi_issuer: LocalIssuer) -> None:
    token = asgi_issuer.sign({"alg": "RS256", "kid": asgi_issuer.current_kid}, b"not json")
    assert b64url_decode(token.split(".")[1]) == b"not json"
    assert signature_verifies(asgi_issuer, token)
    # The header can lie about the algorithm while the signature uses another.
    lying = asgi_issuer.sign({"alg": "PS256", "kid": asgi_issuer.current_kid}, {"a": 1},
                             signing_alg="RS256")  # fmt: skip
    head, payload, signature = lying.split(".")
    key = parse_jwks(asgi_issuer.jwks).find(asgi_issuer.current_kid, "RS256")
    assert decode_part(lying, 0)["alg"] == "PS256"
    assert key.verify("RS256", f"{head}.{payload}".encode(), b64url_decode(signature))


# -- alg-confusion forgeries ----------------------------------------------------------


def signing_input(token: str) -> bytes:
    head, payload, _ = token.split(".")
    return f"{head}.{payload}".encode()


async def refusal(verifier: TokenVerifier, token: str) -> str:
    """The reason the package gives for refusing ``token``."""
    with pytest.raises(InvalidTokenError) as caught:
        await verifier.verify(token)
    return caught.value.reason


@pytest.mark.anyio
@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_mints_an_unsigned_token_the_package_refuses(
    asgi_issuer: LocalIssuer, alg: str
) -> None:
    token = asgi_issuer.token(headers={"alg": alg})
    assert token.endswith(".")  # header.payload. with an empty signature
    assert decode_part(token, 0) == {"alg": alg, "typ": "JWT", "kid": asgi_issuer.current_kid}
    assert decode_part(token, 1)["iss"] == ASGI_ISSUER
    assert await refusal(verifier_for(asgi_issuer), token) == "malformed_token"
    # The other shape: "none" in the header over a real signature.
    signed = asgi_issuer.token(headers={"alg": alg}, signing_alg="RS256")
    assert decode_part(signed, 0)["alg"] == alg
    key = parse_jwks(asgi_issuer.jwks).find(asgi_issuer.current_kid, "RS256")
    assert key.verify("RS256", signing_input(signed), b64url_decode(signed.split(".")[2]))
    assert await refusal(verifier_for(asgi_issuer), signed) == "alg_not_allowed"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("alg", "digest"), [("HS256", "sha256"), ("HS384", "sha384"), ("HS512", "sha512")]
)
async def test_hs_algs_mint_the_public_key_as_hmac_secret_forgery(
    asgi_issuer: LocalIssuer, alg: str, digest: str
) -> None:
    token = asgi_issuer.token(headers={"alg": alg})
    assert decode_part(token, 0)["alg"] == alg
    # The secret is the PEM anyone can build from the published JWKS.
    pem = asgi_issuer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public_pem(asgi_issuer.private_key) == pem
    expected = hmac.new(pem, signing_input(token), digest).digest()
    assert b64url_decode(token.split(".")[2]) == expected
    assert await refusal(verifier_for(asgi_issuer), token) == "alg_not_allowed"


@pytest.mark.anyio
async def test_an_alg_the_key_cannot_sign_with_says_how_to_mint_it(
    asgi_issuer: LocalIssuer,
) -> None:
    for alg in ("RS999", "ES256", "EdDSA", "hs256"):
        with pytest.raises(ValueError, match=r"signing_alg='RS256'.*issuer\.sign\("):
            asgi_issuer.token(headers={"alg": alg})
    with pytest.raises(ValueError, match="cannot sign with alg 'RS999'"):
        asgi_issuer.token(signing_alg="RS999")
    token = asgi_issuer.token(headers={"alg": "RS999"}, signing_alg="RS256")
    assert decode_part(token, 0)["alg"] == "RS999"
    key = parse_jwks(asgi_issuer.jwks).find(asgi_issuer.current_kid, "RS256")
    assert key.verify("RS256", signing_input(token), b64url_decode(token.split(".")[2]))
    assert await refusal(verifier_for(asgi_issuer), token) == "alg_not_allowed"
    # Allowed by the config, but not by the RSA key the kid names.
    es = asgi_issuer.token(headers={"alg": "ES256"}, signing_alg="RS256")
    verifier = verifier_for(asgi_issuer, algorithms=("RS256", "ES256"))
    assert await refusal(verifier, es) == "alg_not_allowed"
    crafted = asgi_issuer.sign({"alg": "RS999"}, {"sub": "x"}, signing_alg="RS256")
    assert decode_part(crafted, 0) == {"alg": "RS999"}
    with pytest.raises(ValueError, match="signing_alg"):
        asgi_issuer.sign({"alg": "RS999"}, {"sub": "x"})


@pytest.mark.anyio
async def test_another_alg_of_the_keys_family_is_really_signed_with(
    asgi_issuer: LocalIssuer,
) -> None:
    token = asgi_issuer.token(headers={"alg": "PS256"})
    public = asgi_issuer.private_key.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    signature = b64url_decode(token.split(".")[2])
    public.verify(signature, signing_input(token), pss, hashes.SHA256())  # raises if not
    # The JWKS pins the key to RS256, so even an allow-list with PS256 refuses it.
    verifier = verifier_for(asgi_issuer, algorithms=("RS256", "PS256"))
    assert await refusal(verifier, token) == "alg_not_allowed"


def test_an_ed25519_issuer_names_its_own_alg_in_the_hint() -> None:
    issuer = LocalIssuer(key_type="Ed25519", issuer=ASGI_ISSUER)
    with pytest.raises(ValueError, match="signing_alg='EdDSA'"):
        issuer.token(headers={"alg": "ES256"})
    assert decode_part(issuer.token(headers={"alg": "ES256"}, signing_alg="EdDSA"), 0)["alg"] == (
        "ES256"
    )


# -- keys and rotation ----------------------------------------------------------------


def test_rotation_keeps_or_drops_the_old_key() -> None:
    issuer = LocalIssuer(key_type="P-256", issuer=ASGI_ISSUER)
    first = issuer.current_kid
    old_token = issuer.token()
    second = issuer.rotate()
    assert second != first
    assert issuer.current_kid == second
    assert issuer.kids == (first, second)
    assert decode_part(issuer.token(), 0)["kid"] == second
    assert signature_verifies(issuer, old_token)
    third = issuer.rotate(keep_old=False)
    assert issuer.kids == (first, third)
    issuer.remove_key(first)
    assert issuer.kids == (third,)
    # A removed key can still sign, so tests can show it no longer verifies.
    with pytest.raises(UnknownKeyError):
        signature_verifies(issuer, issuer.token(kid=first))


def test_add_key_unpublished_and_of_another_type() -> None:
    issuer = LocalIssuer(key_type="P-256", issuer=ASGI_ISSUER)
    hidden = issuer.add_key(key_type="Ed25519", publish=False)
    assert hidden not in issuer.kids
    shown = issuer.add_key(generate_private_key("P-384"), kid="mine", current=True)
    assert shown == "mine"
    assert issuer.current_kid == "mine"
    assert issuer.alg == "ES384"
    assert issuer.config().algorithms == ("ES384", "ES256")
    assert signature_verifies(issuer, issuer.token())
    with pytest.raises(ValueError, match="already"):
        issuer.add_key(key_type="P-256", kid="mine")


def test_issuers_share_nothing(auth0_rsa_key: PrivateKey) -> None:
    one = LocalIssuer(private_key=auth0_rsa_key, issuer=ASGI_ISSUER)
    two = LocalIssuer(private_key=auth0_rsa_key, issuer=ASGI_ISSUER)
    one.rotate(keep_old=False, key_type="P-256")
    assert one.current_kid != two.current_kid
    assert two.jwks["keys"][0]["kty"] == "RSA"


# -- the HTTP server ------------------------------------------------------------------


@pytest.mark.anyio
async def test_server_serves_discovery_and_jwks_over_http(auth0_issuer: LocalIssuer) -> None:
    assert auth0_issuer.url == f"http://127.0.0.1:{auth0_issuer.port}"
    assert auth0_issuer.issuer == auth0_issuer.url + "/"
    async with httpx.AsyncClient() as client:
        discovery = (await client.get(auth0_issuer.discovery_url)).json()
        assert discovery["issuer"] == auth0_issuer.issuer
        assert discovery["jwks_uri"] == auth0_issuer.jwks_uri
        assert discovery["id_token_signing_alg_values_supported"] == ["RS256"]
        assert {"authorization_endpoint", "token_endpoint"} <= discovery.keys()
        assert (await client.get(auth0_issuer.url + OAUTH_METADATA_PATH)).json() == discovery
        response = await client.get(auth0_issuer.jwks_uri)
        assert response.headers["content-type"] == "application/json"
        assert response.json() == auth0_issuer.jwks
        assert "cache-control" not in response.headers
        assert (await client.get(auth0_issuer.url + "/nope")).status_code == 404
        assert (await client.post(auth0_issuer.jwks_uri, content=b"x")).status_code == 405


def test_counters_count_every_request_per_path(auth0_issuer: LocalIssuer) -> None:
    with httpx.Client() as client:
        for _ in range(3):
            client.get(auth0_issuer.jwks_uri)
        client.get(auth0_issuer.discovery_url)
        auth0_issuer.fail_with(500)
        client.get(auth0_issuer.jwks_uri)  # failures count too
    assert auth0_issuer.requests[JWKS_PATH] == 4
    assert auth0_issuer.jwks_requests == 4
    assert auth0_issuer.requests[DISCOVERY_PATH] == 1
    assert auth0_issuer.total_requests == 5
    auth0_issuer.reset_counts()
    assert auth0_issuer.total_requests == 0
    assert auth0_issuer.requests[JWKS_PATH] == 0


def test_config_is_bound_to_the_issuer(
    auth0_issuer: LocalIssuer, auth0_config: Auth0Config
) -> None:
    assert auth0_config.issuer == auth0_issuer.issuer
    assert auth0_config.jwks_uri == auth0_issuer.jwks_uri
    assert auth0_config.audiences == ("https://api.example.test",)
    assert auth0_config.algorithms == ("RS256",)
    assert auth0_config.jwks_fetch_timeout <= 2
    assert auth0_issuer.config(leeway=0, jwks_uri=None).jwks_uri is None


def test_fail_with_status_and_retry_after_on_jwks_only(auth0_issuer: LocalIssuer) -> None:
    auth0_issuer.fail_with(503, retry_after=30)
    with httpx.Client() as client:
        failed = client.get(auth0_issuer.jwks_uri)
        assert (failed.status_code, failed.headers["retry-after"]) == (503, "30")
        assert client.get(auth0_issuer.discovery_url).status_code == 200
        auth0_issuer.fail_with(500, paths=ALL_PATHS)
        assert client.get(auth0_issuer.discovery_url).status_code == 500
        assert "retry-after" not in client.get(auth0_issuer.jwks_uri).headers
        auth0_issuer.heal()
        assert client.get(auth0_issuer.jwks_uri).status_code == 200


def test_garbage_bodies(auth0_issuer: LocalIssuer) -> None:
    auth0_issuer.garbage()
    with httpx.Client() as client:
        response = client.get(auth0_issuer.jwks_uri)
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            response.json()
        auth0_issuer.garbage(b'{"keys": 1}')
        assert client.get(auth0_issuer.jwks_uri).json() == {"keys": 1}
        auth0_issuer.garbage(b"\xff\x00\x80", content_type="application/octet-stream")
        assert client.get(auth0_issuer.jwks_uri).content == b"\xff\x00\x80"


@pytest.mark.parametrize("content_length", [True, False])
def test_oversized_body_is_a_valid_jwks_of_the_exact_size(
    auth0_issuer: LocalIssuer, content_length: bool
) -> None:
    size = 1024 * 1024 + 1
    auth0_issuer.oversized(size, content_length=content_length)
    with httpx.Client() as client:
        response = client.get(auth0_issuer.jwks_uri)
    assert len(response.content) == size
    assert ("content-length" in response.headers) is content_length
    assert response.json()["keys"] == auth0_issuer.jwks["keys"]


def test_reset_connections_answers_nothing(auth0_issuer: LocalIssuer) -> None:
    auth0_issuer.reset_connections()
    with httpx.Client() as client:
        with pytest.raises(httpx.TransportError):
            client.get(auth0_issuer.jwks_uri)
        assert client.get(auth0_issuer.discovery_url).status_code == 200
        auth0_issuer.heal()
        assert client.get(auth0_issuer.jwks_uri).status_code == 200
    assert auth0_issuer.jwks_requests == 2


def test_cache_control_header_survives_heal(auth0_issuer: LocalIssuer) -> None:
    auth0_issuer.cache_control("max-age=300")
    auth0_issuer.fail_with(500)
    auth0_issuer.heal()
    with httpx.Client() as client:
        assert client.get(auth0_issuer.jwks_uri).headers["cache-control"] == "max-age=300"
        auth0_issuer.cache_control(None)
        assert "cache-control" not in client.get(auth0_issuer.jwks_uri).headers


@pytest.mark.parametrize(
    "seconds", [-1, math.nan, math.inf, 10**400, True, "1"], ids=lambda v: repr(v)[:12]
)
def test_slow_refuses_a_delay_that_is_not_a_finite_duration(
    auth0_issuer: LocalIssuer, seconds: Any
) -> None:
    with pytest.raises(ValueError, match="non-negative number"):
        auth0_issuer.slow(seconds)
    # Nothing was set: the issuer still answers at once.
    with httpx.Client(timeout=5) as client:
        assert client.get(auth0_issuer.jwks_uri).status_code == 200


@pytest.mark.anyio
async def test_hold_blocks_jwks_until_release(auth0_issuer: LocalIssuer) -> None:
    auth0_issuer.hold()
    statuses: list[int] = []
    async with httpx.AsyncClient() as client:

        async def fetch() -> None:
            statuses.append((await client.get(auth0_issuer.jwks_uri)).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(fetch)
            await auth0_issuer.wait_for_waiting_async(5)
            # All five arrived and are counted, none answered.
            assert auth0_issuer.jwks_requests == 5
            assert statuses == []
            # Other paths are not held.
            assert (await client.get(auth0_issuer.discovery_url)).status_code == 200
            auth0_issuer.release()
    assert statuses == [200] * 5
    assert auth0_issuer.waiting == 0


@pytest.mark.anyio
async def test_slow_delays_responses(auth0_issuer: LocalIssuer) -> None:
    auth0_issuer.slow(0.3)
    async with httpx.AsyncClient() as client:
        started = time.monotonic()
        assert (await client.get(auth0_issuer.jwks_uri)).status_code == 200
        assert time.monotonic() - started >= 0.3
        # The client's own timeout fires first against a long delay.
        auth0_issuer.slow(60)
        with pytest.raises(httpx.ReadTimeout):
            await client.get(auth0_issuer.jwks_uri, timeout=0.2)


@pytest.mark.anyio
async def test_heal_ends_a_delay_in_progress(auth0_issuer: LocalIssuer) -> None:
    auth0_issuer.slow(60)
    async with httpx.AsyncClient() as client, anyio.create_task_group() as tg:
        statuses: list[int] = []

        async def fetch() -> None:
            statuses.append((await client.get(auth0_issuer.jwks_uri)).status_code)

        tg.start_soon(fetch)
        await auth0_issuer.wait_for_waiting_async(1)
        with anyio.fail_after(5):
            auth0_issuer.heal()
    assert statuses == [200]


def test_stop_drops_waiting_requests_at_once(auth0_issuer: LocalIssuer) -> None:
    auth0_issuer.slow(60)
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            httpx.get(auth0_issuer.jwks_uri, timeout=30)
        except httpx.TransportError as exc:
            errors.append(exc)

    thread = threading.Thread(target=fetch)
    thread.start()
    auth0_issuer.wait_for_waiting(1)
    started = time.monotonic()
    auth0_issuer.stop()
    thread.join(10)
    assert time.monotonic() - started < 2
    assert len(errors) == 1
    assert server_threads(auth0_issuer.port) == []


def test_stop_and_start_on_the_same_port(auth0_issuer: LocalIssuer) -> None:
    port, token = auth0_issuer.port, auth0_issuer.token()
    with httpx.Client() as client:
        assert client.get(auth0_issuer.jwks_uri).status_code == 200  # a kept-alive connection
        auth0_issuer.stop()
        assert not auth0_issuer.running
        with pytest.raises(httpx.ConnectError):
            client.get(auth0_issuer.jwks_uri)
        auth0_issuer.start()
        assert auth0_issuer.port == port
        assert client.get(auth0_issuer.jwks_uri).status_code == 200
    # Same URL, so same issuer: tokens minted before the outage stay valid.
    assert decode_part(token, 1)["iss"] == auth0_issuer.issuer


def test_sync_context_manager_stops_completely_and_fast(auth0_rsa_key: PrivateKey) -> None:
    with httpx.Client() as client:
        with LocalIssuer(private_key=auth0_rsa_key) as issuer:
            assert issuer.running
            # Leaves an idle keep-alive connection open in the client's pool.
            assert client.get(issuer.jwks_uri).status_code == 200
            started = time.monotonic()
        assert time.monotonic() - started < 1
        assert not issuer.running
        assert server_threads(issuer.port) == []
        with pytest.raises(httpx.TransportError):
            client.get(issuer.jwks_uri)


@pytest.mark.anyio
async def test_async_context_manager(auth0_rsa_key: PrivateKey) -> None:
    async with LocalIssuer(private_key=auth0_rsa_key) as issuer, httpx.AsyncClient() as client:
        assert (await client.get(issuer.jwks_uri)).json() == issuer.jwks
    assert server_threads(issuer.port) == []
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(issuer.jwks_uri)


def test_url_needs_a_running_server_or_an_issuer(auth0_rsa_key: PrivateKey) -> None:
    issuer = LocalIssuer(private_key=auth0_rsa_key)
    with pytest.raises(RuntimeError, match="start it"):
        _ = issuer.url
    assert LocalIssuer(private_key=auth0_rsa_key, issuer=ASGI_ISSUER).jwks_uri == (
        "https://tenant.example.test/.well-known/jwks.json"
    )


# -- issuers with a path: discovery where a real one serves it -------------------------


def free_port() -> int:
    # The kit picks its port at start; an explicit issuer= URL must name it beforehand.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def verify_by_discovery(issuer: LocalIssuer, token: str) -> Claims:
    """Verify through the package's own key cache: discovery, then the JWKS, real httpx."""
    config = issuer.config(jwks_uri=None)
    assert config.jwks_uri is None
    verifier = TokenVerifier(config)
    try:
        return await verifier.verify(token)
    finally:
        await verifier.aclose()


@pytest.mark.anyio
async def test_a_keycloak_like_realm_is_found_by_discovery(auth0_rsa_key: PrivateKey) -> None:
    async with LocalIssuer(private_key=auth0_rsa_key, issuer_path="/realms/myrealm") as issuer:
        assert issuer.issuer == f"http://127.0.0.1:{issuer.port}/realms/myrealm"
        assert issuer.discovery_path == "/realms/myrealm/.well-known/openid-configuration"
        assert issuer.discovery_url == issuer.config().discovery_url
        claims = await verify_by_discovery(issuer, issuer.token("alice", scope="read:x"))
        assert (claims.sub, claims["iss"]) == ("alice", issuer.issuer)
        # The OIDC location was asked, once; nothing at the root, no RFC 8414 fallback.
        assert issuer.requests == {issuer.discovery_path: 1, JWKS_PATH: 1}
        assert issuer.discovery_requests == 1


@pytest.mark.anyio
async def test_an_okta_like_issuer_given_as_a_url_is_found_by_discovery(
    auth0_rsa_key: PrivateKey,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/oauth2/default"
    async with LocalIssuer(private_key=auth0_rsa_key, issuer=url, port=port) as issuer:
        assert issuer.url == f"http://127.0.0.1:{port}"
        assert issuer.discovery_url == url + "/.well-known/openid-configuration"
        assert issuer.oauth_metadata_url == (
            f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server/oauth2/default"
        )
        claims = await verify_by_discovery(issuer, issuer.token("bob"))
        assert claims.sub == "bob"
        assert issuer.requests[issuer.discovery_path] == 1


@pytest.mark.anyio
async def test_a_path_issuer_serves_discovery_only_where_a_real_one_does(
    auth0_rsa_key: PrivateKey,
) -> None:
    entra = LocalIssuer(private_key=auth0_rsa_key, issuer_path="/tenant-id/v2.0")
    async with entra as issuer, httpx.AsyncClient() as client:
        oidc = await client.get(issuer.url + "/tenant-id/v2.0/.well-known/openid-configuration")
        rfc8414 = await client.get(
            issuer.url + "/.well-known/oauth-authorization-server/tenant-id/v2.0"
        )
        assert oidc.json() == rfc8414.json() == issuer.discovery
        assert oidc.json()["issuer"] == issuer.issuer
        assert oidc.json()["jwks_uri"] == issuer.jwks_uri
        # Not at the root: a client asking there has the issuer's URL wrong.
        for root in (DISCOVERY_PATH, OAUTH_METADATA_PATH):
            assert (await client.get(issuer.url + root)).status_code == 404
    assert issuer.discovery_requests == 2


@pytest.mark.anyio
async def test_a_path_issuer_is_found_by_the_rfc8414_fallback(auth0_rsa_key: PrivateKey) -> None:
    async with LocalIssuer(private_key=auth0_rsa_key, issuer_path="/realms/r") as issuer:
        # "No OIDC document here" (404) is what sends a client to RFC 8414.
        issuer.fail_with(404, paths=issuer.discovery_path)
        claims = await verify_by_discovery(issuer, issuer.token("carol"))
        assert claims.sub == "carol"
        assert issuer.requests == {
            "/realms/r/.well-known/openid-configuration": 1,
            "/.well-known/oauth-authorization-server/realms/r": 1,
            JWKS_PATH: 1,
        }


@pytest.mark.anyio
async def test_discovery_faults_aimed_by_role_reach_a_path_issuers_documents(
    auth0_rsa_key: PrivateKey,
) -> None:
    async with LocalIssuer(private_key=auth0_rsa_key, issuer_path="/realms/r") as issuer:
        issuer.fail_with(503, paths=DISCOVERY_PATH)
        with pytest.raises(KeySetError):
            await verify_by_discovery(issuer, issuer.token())
        # A failing issuer (5xx) is not a missing document: no fallback was tried.
        assert issuer.requests == {issuer.discovery_path: 1}
        issuer.heal()
        issuer.fail_with(404, paths=DISCOVERY_PATH)
        issuer.garbage(paths=OAUTH_METADATA_PATH)
        with pytest.raises(KeySetError):
            await verify_by_discovery(issuer, issuer.token())
        assert issuer.requests[issuer.oauth_metadata_path] == 1
        assert issuer.jwks_requests == 0
        issuer.heal()
        assert (await verify_by_discovery(issuer, issuer.token("dan"))).sub == "dan"


def test_issuer_path_is_checked(auth0_rsa_key: PrivateKey) -> None:
    for bad in ("realms/r", "/a b", "/r?x=1", "/r#f", ""):
        with pytest.raises(ValueError, match="issuer_path"):
            LocalIssuer(private_key=auth0_rsa_key, issuer_path=bad)
    with pytest.raises(ValueError, match="not both"):
        LocalIssuer(private_key=auth0_rsa_key, issuer=ASGI_ISSUER, issuer_path="/r")


@pytest.mark.anyio
async def test_an_asgi_only_path_issuer_serves_its_own_urls(auth0_rsa_key: PrivateKey) -> None:
    issuer = LocalIssuer(private_key=auth0_rsa_key, issuer="https://idp.example.test/realms/x")
    assert issuer.jwks_uri == "https://idp.example.test/.well-known/jwks.json"
    transport = httpx.ASGITransport(app=issuer.asgi_app)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(issuer.jwks_uri)).json() == issuer.jwks
        assert (await client.get(issuer.discovery_url)).json()["issuer"] == issuer.issuer
        assert (await client.get(issuer.oauth_metadata_url)).status_code == 200


# -- the ASGI app ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_asgi_app_serves_counts_and_misbehaves(asgi_issuer: LocalIssuer) -> None:
    transport = httpx.ASGITransport(app=asgi_issuer.asgi_app)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(asgi_issuer.jwks_uri)).json() == asgi_issuer.jwks
        discovery = (await client.get(asgi_issuer.discovery_url)).json()
        assert discovery["issuer"] == ASGI_ISSUER
        asgi_issuer.fail_with(502, retry_after=5)
        failed = await client.get(asgi_issuer.jwks_uri)
        assert (failed.status_code, failed.headers["retry-after"]) == (502, "5")
        asgi_issuer.heal()
        asgi_issuer.hold()
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.get, asgi_issuer.jwks_uri)
            await asgi_issuer.wait_for_waiting_async(1)
            asgi_issuer.release()
        asgi_issuer.reset_connections()
        with pytest.raises(ConnectionResetError):
            await client.get(asgi_issuer.jwks_uri)
    assert asgi_issuer.requests[JWKS_PATH] == 4


# -- rotation and outages within one test (what the README tells users) ---------------


@pytest.mark.anyio
async def test_a_second_rotation_in_one_test_meets_the_refresh_cooldown(
    auth0_issuer: LocalIssuer,
) -> None:
    # config() keeps production's 30 s cooldown; the cache's clock stands still here.
    cooldown = auth0_issuer.config().jwks_refresh_cooldown
    assert cooldown == 30
    async with JWKSCache(
        auth0_issuer.jwks_uri, refresh_cooldown=cooldown, clock=lambda: FROZEN
    ) as cache:
        verifier = TokenVerifier(auth0_issuer.config(), key_set=cache)
        await verifier.verify(auth0_issuer.token())
        auth0_issuer.rotate()
        await verifier.verify(auth0_issuer.token())  # the unknown kid refreshes the set
        auth0_issuer.rotate()
        with pytest.raises(UnknownKeyError):
            await verifier.verify(auth0_issuer.token())  # within the cooldown
        # The README's remedy for a test that needs it now: refresh() ignores cooldown.
        await verifier.refresh()
        assert (await verifier.verify(auth0_issuer.token())).sub == "user-1"
    assert auth0_issuer.jwks_requests == 3


@pytest.mark.anyio
async def test_with_no_cooldown_every_rotation_in_a_test_verifies(
    auth0_issuer: LocalIssuer,
) -> None:
    # The README's remedy for tests that rotate more than once.
    verifier = TokenVerifier(auth0_issuer.config(jwks_refresh_cooldown=0))
    try:
        for _ in range(3):
            auth0_issuer.rotate()
            assert (await verifier.verify(auth0_issuer.token())).sub == "user-1"
    finally:
        await verifier.aclose()
    assert auth0_issuer.jwks_requests == 3


@pytest.mark.anyio
async def test_after_heal_keys_reload_at_once_only_on_refresh(
    auth0_issuer: LocalIssuer,
) -> None:
    # After a failed fetch the cache backs off (5 s at first); the clock stands still,
    # so without refresh() the healed issuer is not asked again.
    async with JWKSCache(auth0_issuer.jwks_uri, clock=lambda: FROZEN) as cache:
        verifier = TokenVerifier(auth0_issuer.config(), key_set=cache)
        auth0_issuer.fail_with(503)
        with pytest.raises(KeySetError):
            await verifier.verify(auth0_issuer.token())
        auth0_issuer.heal()
        with pytest.raises(KeySetError):
            await verifier.verify(auth0_issuer.token())  # backing off: no fetch
        assert auth0_issuer.jwks_requests == 1
        await verifier.refresh()  # ignores the backoff
        assert (await verifier.verify(auth0_issuer.token())).sub == "user-1"
    assert auth0_issuer.jwks_requests == 2


# -- the pytest plugin ----------------------------------------------------------------


@pytest.mark.anyio
async def test_plugin_fixtures_work_together(
    auth0_issuer: LocalIssuer,
    auth0_config: Auth0Config,
    auth0_token: TokenFactory,
    auth0_rsa_key: PrivateKey,
) -> None:
    assert auth0_issuer.running
    assert auth0_issuer.private_key is auth0_rsa_key
    verifier = TokenVerifier(auth0_config, key_set=StaticKeySet(auth0_issuer.jwks))
    claims = await verifier.verify(auth0_token(scope="read:messages"))
    assert claims.scopes == {"read:messages"}


class TestIssuerOptionsOverride:
    @pytest.fixture
    def auth0_issuer_options(self) -> dict[str, Any]:
        return {"audience": "https://my-api.test", "key_type": "P-256"}

    def test_options_reach_the_issuer(
        self, auth0_issuer: LocalIssuer, auth0_config: Auth0Config, auth0_token: TokenFactory
    ) -> None:
        assert auth0_issuer.alg == "ES256"
        assert auth0_config.audiences == ("https://my-api.test",)
        assert decode_part(auth0_token(), 1)["aud"] == "https://my-api.test"


@pytest.mark.anyio
async def test_async_exit_cleans_up_even_when_cancelled(auth0_rsa_key: PrivateKey) -> None:
    with anyio.CancelScope() as scope:
        async with LocalIssuer(private_key=auth0_rsa_key) as issuer:
            scope.cancel()
            await anyio.sleep(1)  # a checkpoint: cancelled here, then __aexit__ runs
    assert scope.cancelled_caught
    assert not issuer.running
    assert server_threads(issuer.port) == []


@pytest.mark.anyio
async def test_a_burst_of_concurrent_clients_is_served(auth0_issuer: LocalIssuer) -> None:
    # The stdlib's listen backlog of 5 would leave some of these hanging on SYN retries.
    limits = httpx.Limits(max_connections=100)
    statuses: list[int] = []
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def fetch() -> None:
            statuses.append((await client.get(auth0_issuer.jwks_uri)).status_code)

        with anyio.fail_after(8):
            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(fetch)
    assert statuses == [200] * 100
    assert auth0_issuer.jwks_requests == 100
