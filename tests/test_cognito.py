"""Amazon Cognito: access tokens with no ``aud``, matched on ``client_id``.

Cognito's access tokens name the app client in ``client_id`` and say
``token_use: "access"``; its ID tokens carry the client id in ``aud`` instead. With
``audience_claim="client_id"`` the API accepts the first and refuses the second. The
issuer here is a real one on 127.0.0.1 with Cognito's shape: a path (the user pool id),
keys found by discovery.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from asgi_auth0 import (
    Auth0Config,
    Auth0Middleware,
    Claims,
    ConfigError,
    ExpiredTokenError,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidIssuerError,
    MissingClaimError,
    StaticKeySet,
    TokenVerifier,
    require_scopes,
    require_token,
)
from asgi_auth0._signing import PrivateKey
from asgi_auth0.fastapi import swagger_ui_init_oauth
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio

POOL = "/us-east-1_Example"
CLIENT = "3n4b5urk1ft4fl3mg5e62d9ado"
RESOURCE_SCOPE = "https://api.example.com/read"


# A claim present with the value null (LocalIssuer.token leaves None claims out).
_NULL = object()


def cognito_access(issuer: LocalIssuer, **over: Any) -> str:
    """An access token shaped as Cognito issues it."""
    claims: dict[str, Any] = {
        "aud": None,
        "client_id": CLIENT,
        "token_use": "access",
        "username": "alice",
        "scope": f"openid {RESOURCE_SCOPE}",
        "cognito:groups": ["readers"],
    }
    claims.update(over)
    nulls = [name for name, value in claims.items() if value is _NULL]
    if not nulls:
        return issuer.token("alice-sub", **claims)
    payload = dict(pool_claims(issuer), **{k: v for k, v in claims.items() if v is not None})
    payload.update(dict.fromkeys(nulls))
    return issuer.sign({"alg": "RS256", "typ": "JWT", "kid": issuer.current_kid}, payload)


def pool_claims(issuer: LocalIssuer) -> dict[str, Any]:
    """The registered claims LocalIssuer.token would write, without aud."""
    now = int(issuer.clock())
    return {"iss": issuer.issuer, "sub": "alice-sub", "iat": now, "exp": now + 3600}


def cognito_id_token(issuer: LocalIssuer) -> str:
    """An ID token of the same pool: aud is the client id, no client_id claim."""
    return issuer.token("alice-sub", aud=CLIENT, token_use="id", email="a@example.com")


@pytest.fixture
async def pool(auth0_rsa_key: PrivateKey) -> AsyncIterator[LocalIssuer]:
    async with LocalIssuer(private_key=auth0_rsa_key, issuer_path=POOL) as issuer:
        yield issuer


def config_for(issuer: LocalIssuer, **over: Any) -> Auth0Config:
    settings: dict[str, Any] = {
        "issuer": issuer.issuer,
        "audience": CLIENT,
        "audience_claim": "client_id",
    }
    settings.update(over)
    return Auth0Config(**settings)


def app_for(config: Auth0Config) -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me(claims: Annotated[Claims, Depends(require_token)]) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.get("/read")
    async def read(
        claims: Annotated[Claims, Depends(require_scopes(RESOURCE_SCOPE))],
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    app.add_middleware(Auth0Middleware, config=config)
    return app


async def get(app: FastAPI, path: str, token: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        return await client.get(path, headers={"Authorization": f"Bearer {token}"})


async def test_a_cognito_access_token_is_accepted_through_discovery(pool: LocalIssuer) -> None:
    app = app_for(config_for(pool))
    me = await get(app, "/me", cognito_access(pool))
    assert (me.status_code, me.json()) == (200, {"sub": "alice-sub"})
    # A resource server's scope is an ordinary scope name.
    assert (await get(app, "/read", cognito_access(pool))).status_code == 200
    short = await get(app, "/read", cognito_access(pool, scope="openid"))
    assert short.status_code == 403
    # The keys were found where Cognito publishes them: discovery under the pool.
    assert pool.discovery_requests == 1


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (cognito_id_token, "invalid_audience"),
        (lambda p: cognito_access(p, client_id="another-app-client"), "invalid_audience"),
        (lambda p: cognito_access(p, client_id=None), "missing_claim"),
        (lambda p: cognito_access(p, client_id=[CLIENT]), "invalid_audience"),
        (lambda p: cognito_access(p, token_use="id"), "claim_invalid"),
        # An aud (any issuer that names its API) is refused, even naming the client.
        (lambda p: cognito_access(p, aud=CLIENT), "invalid_audience"),
        # A present null is a wrong type, not an absent claim.
        (lambda p: cognito_access(p, aud=_NULL), "invalid_audience"),
        (lambda p: cognito_access(p, token_use=_NULL), "claim_invalid"),
    ],
    ids=[
        "id-token",
        "other-client",
        "no-client-id",
        "client-id-array",
        "id-use",
        "has-aud",
        "null-aud",
        "null-token-use",
    ],
)
async def test_what_is_not_a_cognito_access_token_for_this_client_is_refused(
    pool: LocalIssuer, token: Any, reason: str
) -> None:
    response = await get(app_for(config_for(pool)), "/me", token(pool))
    assert response.status_code == 401
    assert response.json()["reason"] == reason
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_the_default_audience_claim_refuses_cognito_access_tokens_and_says_why(
    pool: LocalIssuer,
) -> None:
    # Matched on aud, a Cognito access token has none; only an ID token would pass,
    # which is why the mode exists. The DEBUG line names the setting.
    config = config_for(pool, audience_claim="aud")
    verifier = TokenVerifier(config, key_set=StaticKeySet(pool.jwks))
    with pytest.raises(MissingClaimError) as caught:
        await verifier.verify(cognito_access(pool))
    assert caught.value.detail is not None
    assert "audience_claim='client_id'" in caught.value.detail
    # A token without aud from anyone else gets the plain message.
    with pytest.raises(MissingClaimError) as plain:
        await verifier.verify(pool.token("bob", aud=None))
    assert plain.value.detail == "aud is required"


async def test_client_id_mode_checks_every_rule_the_verifier_has(pool: LocalIssuer) -> None:
    # The mode swaps the audience check only: signature, iss and exp still apply.
    verifier = TokenVerifier(config_for(pool), key_set=StaticKeySet(pool.jwks))
    assert (await verifier.verify(cognito_access(pool))).sub == "alice-sub"
    with pytest.raises(InvalidAudienceError):
        await verifier.verify(cognito_access(pool, client_id="x"))
    with pytest.raises(InvalidClaimError):
        await verifier.verify(cognito_access(pool, token_use="refresh"))
    with pytest.raises(ExpiredTokenError):
        await verifier.verify(pool.expired_token(aud=None, client_id=CLIENT))
    with pytest.raises(InvalidIssuerError):
        await verifier.verify(cognito_access(pool, iss="https://cognito-idp.example/other"))


def test_audience_claim_takes_aud_or_client_id_only() -> None:
    with pytest.raises(ConfigError, match="audience_claim must be 'aud' or 'client_id'"):
        Auth0Config(issuer="https://idp.example.com", audience="a", audience_claim="azp")


def test_the_client_id_may_be_the_audience_in_client_id_mode() -> None:
    # Swagger UI's login client is one of the accepted app clients: no ID-token risk
    # here, since tokens with an aud are refused in this mode.
    config = Auth0Config(
        issuer="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example",
        audience=CLIENT,
        audience_claim="client_id",
        client_id=CLIENT,
    )
    settings = swagger_ui_init_oauth(config)
    assert settings["clientId"] == CLIENT
    # Cognito's /oauth2/authorize has no audience parameter.
    assert "additionalQueryStringParams" not in settings
    with pytest.raises(ConfigError, match="aud of ID tokens"):
        Auth0Config(domain="t.auth0.com", audience=CLIENT, client_id=CLIENT)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"domain": "t.auth0.com"}, "Auth0's always do"),
        ({"issuer": "https://t.eu.auth0.com/"}, "Auth0's always do"),
        ({"strict_typ": True}, "carry no typ header"),
        ({"required_claims": ("iat", "aud")}, "required_claims names aud"),
    ],
)
def test_client_id_mode_refuses_settings_under_which_no_token_could_pass(
    settings: dict[str, Any], message: str
) -> None:
    options: dict[str, Any] = {
        "issuer": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example",
        "audience": CLIENT,
        "audience_claim": "client_id",
    }
    if "domain" in settings:
        del options["issuer"]
    options.update(settings)
    with pytest.raises(ConfigError, match=message):
        Auth0Config(**options)


@pytest.mark.parametrize(
    "claims",
    [
        # RFC 9068-style client_id with no token_use: not Cognito's shape.
        {"client_id": CLIENT},
        # token_use "access" alone: no client to name in audience.
        {"token_use": "access"},
    ],
    ids=["client-id-only", "token-use-only"],
)
async def test_the_cognito_hint_needs_both_token_use_access_and_client_id(
    pool: LocalIssuer, claims: dict[str, Any]
) -> None:
    # Pointing at audience_claim='client_id' is advice for a Cognito access token only;
    # a token without aud that is not one gets the plain message.
    verifier = TokenVerifier(
        config_for(pool, audience_claim="aud"), key_set=StaticKeySet(pool.jwks)
    )
    with pytest.raises(MissingClaimError) as caught:
        await verifier.verify(pool.token("bob", aud=None, **claims))
    assert caught.value.detail == "aud is required"


def test_required_claims_as_one_string_is_one_claim_name_in_client_id_mode() -> None:
    # A bare string is one claim name (as everywhere in the config), not a sequence of
    # letters: "audit" does not name aud, "aud" does.
    options: dict[str, Any] = {
        "issuer": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example",
        "audience": CLIENT,
        "audience_claim": "client_id",
    }
    assert Auth0Config(**options, required_claims="audit").required_claims == ("audit",)
    with pytest.raises(ConfigError, match="required_claims names aud"):
        Auth0Config(**options, required_claims="aud")


# -- access tokens bound to a resource (the resource parameter, RFC 8707) ---------------

COGNITO = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example"
API = "https://api.example.com"


def resource_pool(key: PrivateKey) -> LocalIssuer:
    """A minting-only issuer with Cognito's own issuer URL (keys go in a StaticKeySet)."""
    return LocalIssuer(issuer=COGNITO, private_key=key, kid="k1", audience=API)


def resource_bound(issuer: LocalIssuer, **over: Any) -> str:
    """An access token Cognito issues for resource=API: aud is the resource."""
    claims: dict[str, Any] = {"client_id": CLIENT, "token_use": "access", "scope": "openid"}
    claims.update(over)
    return issuer.token("alice-sub", **claims)


async def test_a_resource_bound_access_token_is_accepted_on_aud(auth0_rsa_key: PrivateKey) -> None:
    # Cognito (Essentials and Plus tiers) writes the resource a client asked for into
    # the access token's aud: matched on aud, audience is that resource's URI.
    issuer = resource_pool(auth0_rsa_key)
    config = Auth0Config(issuer=COGNITO, audience=API, jwks_uri=COGNITO + "/.well-known/jwks.json")
    verifier = TokenVerifier(config, key_set=StaticKeySet(issuer.jwks))
    claims = await verifier.verify(resource_bound(issuer))
    assert (claims.sub, claims["aud"]) == ("alice-sub", API)


@pytest.mark.parametrize(
    "over",
    [{"token_use": "id"}, {"token_use": None}, {"token_use": ["access"]}],
    ids=["id-token", "no-token-use", "token-use-array"],
)
async def test_on_aud_a_cognito_token_must_say_token_use_access(
    auth0_rsa_key: PrivateKey, over: dict[str, Any]
) -> None:
    # A Cognito ID token carries an aud too (the app client id); one whose aud named
    # the API must still not pass for an access token.
    issuer = resource_pool(auth0_rsa_key)
    config = Auth0Config(issuer=COGNITO, audience=API, jwks_uri=COGNITO + "/.well-known/jwks.json")
    verifier = TokenVerifier(config, key_set=StaticKeySet(issuer.jwks))
    with pytest.raises(InvalidClaimError) as caught:
        await verifier.verify(resource_bound(issuer, **over))
    assert "token_use" in (caught.value.detail or "")


async def test_other_issuers_tokens_need_no_token_use_on_aud(auth0_rsa_key: PrivateKey) -> None:
    # The rule is a Cognito pool's, not every issuer's.
    other = LocalIssuer(issuer="https://idp.example.com/", private_key=auth0_rsa_key, kid="k1")
    verifier = TokenVerifier(other.config(), key_set=StaticKeySet(other.jwks))
    assert (await verifier.verify(other.token("bob"))).sub == "bob"


# Every form of a pool's issuer: the original, the one AWS recommends now (the same
# keys served from several regions), a China region's, and spellings of the host.
COGNITO_ISSUERS = [
    COGNITO,
    "https://issuer-cognito-idp.us-east-1.amazonaws.com/us-east-1_Example",
    "https://cognito-idp.cn-north-1.amazonaws.com.cn/cn-north-1_Example",
    "https://COGNITO-IDP.us-east-1.amazonaws.com./us-east-1_Example",
]


@pytest.mark.parametrize("issuer_url", COGNITO_ISSUERS)
@pytest.mark.parametrize(
    "audience", [CLIENT, "us-east-1_Example", "solar-system-data", "localhost:8000"]
)
def test_on_aud_a_cognito_audience_must_be_a_resource_url(issuer_url: str, audience: str) -> None:
    # Only ID tokens (aud: the app client id) and resource-bound access tokens (aud:
    # the resource's URL) carry an aud; anything else would refuse every access token.
    with pytest.raises(ConfigError, match="audience_claim='client_id'"):
        Auth0Config(issuer=issuer_url, audience=audience)


@pytest.mark.parametrize("issuer_url", COGNITO_ISSUERS)
async def test_no_form_of_cognito_issuer_lets_an_id_token_in_on_aud(
    auth0_rsa_key: PrivateKey, issuer_url: str
) -> None:
    # The token_use rule holds for whichever host form the pool issues from: an issuer
    # not recognised as Cognito would take its ID tokens as access tokens.
    issuer = LocalIssuer(issuer=issuer_url, private_key=auth0_rsa_key, kid="k1", audience=API)
    config = Auth0Config(issuer=issuer_url, audience=API, jwks_uri=API + "/jwks.json")
    verifier = TokenVerifier(config, key_set=StaticKeySet(issuer.jwks))
    assert (await verifier.verify(resource_bound(issuer))).sub == "alice-sub"
    with pytest.raises(InvalidClaimError):
        await verifier.verify(resource_bound(issuer, token_use="id"))


def test_beside_other_issuers_the_advice_is_not_client_id_mode() -> None:
    # The audiences apply to every issuer: switching to client_id would break the
    # other issuer's tokens, so the message does not send the user there.
    entra = "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/v2.0"
    with pytest.raises(ConfigError) as caught:
        Auth0Config(
            issuer=COGNITO,
            additional_issuers=[entra],
            audience=[API, "6e74172b-be56-4843-9ff4-e66a39bb12e3"],
            jwks_uri=COGNITO + "/.well-known/jwks.json",
        )
    assert "every issuer's tokens" in str(caught.value)
    assert "audience_claim='client_id'" not in str(caught.value)


async def test_client_id_mode_names_the_setting_for_a_resource_bound_token(
    auth0_rsa_key: PrivateKey,
) -> None:
    issuer = resource_pool(auth0_rsa_key)
    config = Auth0Config(
        issuer=COGNITO,
        audience=CLIENT,
        audience_claim="client_id",
        jwks_uri=COGNITO + "/.well-known/jwks.json",
    )
    verifier = TokenVerifier(config, key_set=StaticKeySet(issuer.jwks))
    with pytest.raises(InvalidAudienceError) as bound:
        await verifier.verify(resource_bound(issuer))
    assert "audience_claim='aud'" in (bound.value.detail or "")
    with pytest.raises(InvalidAudienceError) as id_token:
        await verifier.verify(resource_bound(issuer, aud=CLIENT, token_use="id"))
    assert "ID token" in (id_token.value.detail or "")
