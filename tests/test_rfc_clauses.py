"""RFC clauses no other test pinned on its own: one test per clause, named after it.

CONFORMANCE.md maps every resource-server requirement of the RFCs to the test that
pins it; most live next to the code they test. These are the ones that had no test
that would fail if the rule were removed. Each test breaks exactly its clause's rule
and shows the same token (or request) passing once the breach is taken away.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_auth0 import (
    AlgorithmNotAllowedError,
    Auth0Config,
    Auth0Error,
    Auth0Middleware,
    BearerError,
    ConfigError,
    InvalidAudienceError,
    MalformedTokenError,
    StaticKeySet,
    TokenVerifier,
)
from asgi_auth0._challenge import challenge_for
from asgi_auth0._config import discovery_url_for
from asgi_auth0._errors import InsufficientScopeError
from asgi_auth0._jwks import JWKSCache
from asgi_auth0._keys import parse_jwk
from asgi_auth0._signing import PrivateKey, b64url
from asgi_auth0.testing import JWKS_PATH, LocalIssuer

ISS = "https://tenant.example.test/"
AUD = "https://api.example.test"
NOW = 1_800_000_000.0


@pytest.fixture
def minter(auth0_rsa_key: PrivateKey) -> LocalIssuer:
    """Mints tokens at ``NOW``; no server (its JWKS goes to a StaticKeySet)."""
    return LocalIssuer(issuer=ISS, audience=AUD, private_key=auth0_rsa_key, clock=lambda: NOW)


def verifier_for(minter: LocalIssuer, **config: Any) -> TokenVerifier:
    return TokenVerifier(
        minter.config(**config), key_set=StaticKeySet(minter.jwks), clock=lambda: NOW
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _subclasses(cls: type[Auth0Error]) -> list[type[Auth0Error]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _app(verifier: TokenVerifier, **options: Any) -> Starlette:
    middleware = [Middleware(Auth0Middleware, verifier=verifier, **options)]
    return Starlette(routes=[Route("/", _ok)], middleware=middleware)


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


# -- RFC 6750: bearer token usage ----------------------------------------------------------


def test_rfc6750_3_realm_appears_exactly_once_in_every_challenge() -> None:
    # "The realm attribute MUST NOT appear more than once", and "Bearer" MUST be
    # followed by one or more auth-params: realm is always the first.
    for cls in _subclasses(BearerError):
        exc = cls(("read:messages",)) if issubclass(cls, InsufficientScopeError) else cls()
        header = challenge_for(exc, realm="api").headers["WWW-Authenticate"]
        assert header.startswith('Bearer realm="api"'), (cls, header)
        assert header.count("realm=") == 1, (cls, header)


# -- RFC 7517: JSON Web Key ------------------------------------------------------------------


@pytest.fixture
async def jwks_server(auth0_rsa_key: PrivateKey) -> AsyncIterator[LocalIssuer]:
    async with LocalIssuer(issuer=ISS, audience=AUD, private_key=auth0_rsa_key) as server:
        yield server


def _with_unknown_members(jwk: dict[str, Any]) -> dict[str, Any]:
    # Members this package does not use: certificate ones Auth0 publishes, and ones no
    # registry knows.
    return {**jwk, "x5t": "bm90LWEtdGh1bWJwcmludA", "x5c": ["MIIB"], "ext": True, "x-extra": 1}


@pytest.mark.anyio
async def test_rfc7517_4_unknown_jwk_members_are_ignored(jwks_server: LocalIssuer) -> None:
    # RFC 7517 §4: members not understood MUST be ignored, so the key still verifies.
    (jwk,) = jwks_server.jwks["keys"]
    body = json.dumps({"keys": [_with_unknown_members(jwk)]}).encode()
    jwks_server.garbage(body, paths=JWKS_PATH)
    async with httpx.AsyncClient() as client:
        cache = JWKSCache(jwks_server.jwks_uri, http_client=client)
        key = await cache.get_key(jwk["kid"], "RS256")
    assert key.kid == jwk["kid"]
    assert parse_jwk(_with_unknown_members(jwk)).algorithms == parse_jwk(jwk).algorithms


@pytest.mark.anyio
async def test_rfc7517_5_unknown_jwk_set_members_are_ignored(jwks_server: LocalIssuer) -> None:
    # RFC 7517 §5: members of the JWK Set other than "keys" MUST be ignored if not
    # understood; the set is not refused over them.
    (jwk,) = jwks_server.jwks["keys"]
    body = json.dumps({"keys": [jwk], "x-issuer-note": {"rotated": True}, "etag": 7}).encode()
    jwks_server.garbage(body, paths=JWKS_PATH)
    async with httpx.AsyncClient() as client:
        cache = JWKSCache(jwks_server.jwks_uri, http_client=client)
        key = await cache.get_key(jwk["kid"], "RS256")
    assert key.kid == jwk["kid"]
    assert jwks_server.jwks_requests == 1


# -- RFC 7518: JSON Web Algorithms -----------------------------------------------------------


def _pss_token(key: rsa.RSAPrivateKey, kid: str, salt_length: Any) -> str:
    """A PS256 token signed with a PSS salt of ``salt_length`` (an int, or PSS.MAX_LENGTH)."""
    header = b64url(json.dumps({"alg": "PS256", "typ": "JWT", "kid": kid}).encode())
    claims = {"iss": ISS, "aud": AUD, "sub": "u", "iat": NOW, "exp": NOW + 60}
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt_length)
    return f"{header}.{payload}.{b64url(key.sign(signing_input, pss, hashes.SHA256()))}"


@pytest.mark.anyio
async def test_rfc7518_3_5_pss_salt_length_equals_the_hash_length(
    minter: LocalIssuer, auth0_rsa_key: PrivateKey
) -> None:
    # RFC 7518 §3.5: for PS256 the salt is as long as the SHA-256 output (32 bytes); a
    # PSS signature with another salt length is not a PS256 signature.
    assert isinstance(auth0_rsa_key, rsa.RSAPrivateKey)
    jwks = {"keys": [{k: v for k, v in jwk.items() if k != "alg"} for jwk in minter.jwks["keys"]]}
    config = Auth0Config(issuer=ISS, audience=AUD, algorithms=("PS256",))
    verifier = TokenVerifier(config, key_set=StaticKeySet(jwks), clock=lambda: NOW)
    kid = minter.current_kid
    for salt in (0, 20, padding.PSS.MAX_LENGTH):
        with pytest.raises(BearerError) as info:
            await verifier.verify(_pss_token(auth0_rsa_key, kid, salt))
        assert info.value.reason == "bad_signature", salt
    assert (await verifier.verify(_pss_token(auth0_rsa_key, kid, 32))).sub == "u"


# -- RFC 7519: JSON Web Token ----------------------------------------------------------------


@pytest.mark.anyio
async def test_rfc7519_4_unknown_claims_are_ignored_and_kept(minter: LocalIssuer) -> None:
    # RFC 7519 §4: claims an implementation does not understand MUST be ignored.
    unknown: dict[str, Any] = {"https://example.com/roles": ["admin"], "x-unregistered": {"a": 1}}
    token = minter.token(**unknown)
    claims = await verifier_for(minter).verify(token)
    assert claims["https://example.com/roles"] == ("admin",)
    assert claims["x-unregistered"] == {"a": 1}


@pytest.mark.anyio
async def test_rfc7519_4_1_3_audience_values_are_compared_case_sensitively(
    minter: LocalIssuer,
) -> None:
    # RFC 7519 §4.1.3: aud holds case-sensitive strings; a case variant is another API.
    verifier = verifier_for(minter)
    for aud in (AUD.upper(), AUD.replace("api", "API"), [AUD.replace("example", "Example")]):
        with pytest.raises(InvalidAudienceError):
            await verifier.verify(minter.token(aud=aud))
    assert (await verifier.verify(minter.token(aud=[AUD]))).sub == "user-1"


@pytest.mark.anyio
async def test_rfc7519_7_2_a_nested_jwt_is_refused(minter: LocalIssuer) -> None:
    # RFC 7519 §7.2 step 8: with "cty": "JWT" the payload is another JWT. Nested JWTs
    # are not supported: the outer token has no claims object, so it is malformed,
    # even though its signature is the issuer's.
    inner = minter.token()
    nested = minter.sign({"alg": "RS256", "kid": minter.current_kid, "cty": "JWT"}, inner.encode())
    with pytest.raises(MalformedTokenError):
        await verifier_for(minter).verify(nested)


# -- RFC 9068: JWT profile for OAuth 2.0 access tokens ---------------------------------------


@pytest.mark.anyio
async def test_rfc9068_4_every_validation_failure_answers_invalid_token(
    minter: LocalIssuer,
) -> None:
    # RFC 9068 §4: any failure of the §4 checks MUST be answered with RFC 6750 §3.1's
    # error code invalid_token (a 401), whichever check it was.
    at_jwt = {"typ": "at+jwt"}
    failing = {
        "typ": minter.token(headers={"typ": "JWT"}),
        "iss": minter.wrong_issuer_token(headers=at_jwt),
        "aud": minter.wrong_audience_token(headers=at_jwt),
        "alg none": minter.token(headers={"alg": "none", **at_jwt}),
        "signature": minter.bad_signature_token(headers=at_jwt),
        "keys of the issuer": minter.unknown_kid_token(headers=at_jwt),
        "exp": minter.token(headers=at_jwt, now=NOW - 7200),
    }
    verifier = verifier_for(minter, strict_typ=True)
    async with _client(_app(verifier)) as client:
        for check, token in failing.items():
            response = await client.get("/", headers=bearer(token))
            assert response.status_code == 401, check
            assert response.json()["error"] == "invalid_token", check
            challenge = response.headers["www-authenticate"]
            assert 'error="invalid_token"' in challenge, check
        assert (await client.get("/", headers=bearer(minter.token(headers=at_jwt)))).text == "ok"


# -- RFC 9449: DPoP, at a resource server that supports only Bearer ---------------------------


@pytest.mark.anyio
async def test_rfc9449_7_a_dpop_scheme_request_is_not_a_bearer_request(
    minter: LocalIssuer,
) -> None:
    # This resource server implements Bearer only (RFC 6750). A DPoP-scheme request
    # (RFC 9449 §7.1) carries credentials of another scheme: no bearer token, so a
    # protected route answers the bare Bearer challenge (RFC 6750 §3.1: no error code
    # for a request without bearer credentials), never a verdict on the DPoP token.
    token = minter.token(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
    dpop = {"Authorization": f"DPoP {token}", "DPoP": "eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.c2ln"}
    async with _client(_app(verifier_for(minter), require_token=True)) as client:
        response = await client.get("/", headers=dpop)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="api"'
        assert response.json()["reason"] == "missing_token"
        # The same token sent as Bearer is the key-bound token RFC 9449 §7.2 refuses.
        as_bearer = await client.get("/", headers=bearer(token))
        assert as_bearer.json()["reason"] == "sender_constrained_token"
        assert 'error="invalid_token"' in as_bearer.headers["www-authenticate"]


# -- OpenID Connect Discovery 1.0 ------------------------------------------------------------


def test_oidc_discovery_4_a_path_issuer_loses_its_terminating_slash() -> None:
    # OIDC Discovery §4: any terminating "/" of the issuer is removed before appending
    # /.well-known/openid-configuration (so a path issuer's document is not at "//").
    assert (
        discovery_url_for("https://sso.example.com/realms/acme/")
        == "https://sso.example.com/realms/acme/.well-known/openid-configuration"
    )
    assert (
        discovery_url_for("https://sso.example.com/realms/acme")
        == "https://sso.example.com/realms/acme/.well-known/openid-configuration"
    )
    assert (
        discovery_url_for("https://tenant.auth0.com/")
        == "https://tenant.auth0.com/.well-known/openid-configuration"
    )


# -- requirements the package does not meet yet (reported; strict xfail) ---------------------


def _without_alg(jwks: dict[str, Any]) -> dict[str, Any]:
    return {"keys": [{k: v for k, v in jwk.items() if k != "alg"} for jwk in jwks["keys"]]}


async def _accepted(verifier: TokenVerifier, tokens: dict[str, str]) -> set[str]:
    accepted = set()
    for alg, token in tokens.items():
        try:
            await verifier.verify(token)
        except BearerError:
            continue
        accepted.add(alg)
    return accepted


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("algorithms", "bound_to"),
    [(("RS256", "PS256"), "RS256"), (("PS256", "RS256"), "PS256"), (("ES256", "PS384"), "PS384")],
)
async def test_rfc8725_3_1_each_key_is_used_with_exactly_one_algorithm(
    minter: LocalIssuer, algorithms: tuple[str, ...], bound_to: str
) -> None:
    # RFC 8725 §3.1: each key MUST be used with exactly one algorithm. An RSA JWK that
    # names no alg fits six; it verifies only the first RSA algorithm of the allow-list.
    verifier = TokenVerifier(
        minter.config(algorithms=algorithms),
        key_set=StaticKeySet(_without_alg(minter.jwks)),
        clock=lambda: NOW,
    )
    rsa_algs = [a for a in algorithms if a.startswith(("RS", "PS"))]
    tokens = {alg: minter.token(headers={"alg": alg}) for alg in rsa_algs}
    assert await _accepted(verifier, tokens) == {bound_to}
    refused = next(alg for alg in rsa_algs if alg != bound_to) if len(rsa_algs) > 1 else None
    if refused is not None:
        with pytest.raises(AlgorithmNotAllowedError, match=f"only: {bound_to}"):
            await verifier.verify(tokens[refused])


@pytest.mark.anyio
async def test_rfc8725_3_1_a_jwk_naming_its_alg_is_used_with_that_one(
    minter: LocalIssuer,
) -> None:
    # A JWK that names its alg is bound to it whatever the allow-list's order; two JWKs
    # of two algorithms (Auth0 publishes alg on every key) each verify their own.
    second = minter.add_key(alg="PS256")
    verifier = verifier_for(minter, algorithms=("PS256", "RS256"))
    tokens = {
        "RS256": minter.token(),
        "PS256": minter.token(kid=second),
        "RS256-on-PS256-key": minter.token(kid=second, headers={"alg": "RS256"}),
    }
    assert await _accepted(verifier, tokens) == {"RS256", "PS256"}


@pytest.mark.anyio
async def test_rfc8725_3_1_a_foreign_rsa_key_is_bound_to_the_alg_it_was_asked_for(
    minter: LocalIssuer,
) -> None:
    # A custom key source returning a raw cryptography key chose it for one alg.
    public = minter.private_key.public_key()
    asked: list[str] = []

    class Source:
        generation = 0

        async def get_key(self, kid: str | None, alg: str) -> object:
            asked.append(alg)
            return public

    verifier = TokenVerifier(
        minter.config(algorithms=("RS256", "PS256")), key_set=Source(), clock=lambda: NOW
    )
    tokens = {alg: minter.token(headers={"alg": alg}) for alg in ("RS256", "PS256")}
    assert await _accepted(verifier, tokens) == {"RS256", "PS256"}
    assert asked == ["RS256", "PS256"]


@pytest.mark.parametrize(
    "issuer", ["https://idp.example.com/?tenant=a", "https://idp.example.com/?"]
)
def test_rfc8414_2_an_issuer_with_a_query_component_is_refused(
    issuer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RFC 8414 §2 and OIDC Discovery §3: an issuer identifier has no query or fragment
    # component. With one, the discovery URL built from it would put /.well-known/...
    # inside the query string. Every place an issuer is given refuses it.
    with pytest.raises(ConfigError, match=r"issuer must not have a \?query"):
        Auth0Config(issuer=issuer, audience=AUD)
    with pytest.raises(ConfigError, match=r"additional_issuers must not have a \?query"):
        Auth0Config(issuer="https://idp.example.com/", additional_issuers=[issuer], audience=AUD)
    with pytest.raises(ConfigError, match=r"issuer must not have a \?query"):
        JWKSCache(issuer=issuer)
    monkeypatch.setenv("AUTH0_ISSUER", issuer)
    monkeypatch.setenv("AUTH0_AUDIENCE", AUD)
    with pytest.raises(ConfigError, match="AUTH0_ISSUER"):
        Auth0Config.from_env()
    # A JWKS URL may have a query (some issuers version their key sets that way).
    JWKSCache("https://idp.example.com/keys?version=2")
