"""The why behind a refusal (``Auth0Error.detail``, shown in the rejection log line):
how far off a time claim is, and a near miss of the configuration named. The hints
quote only configured values and our own words, never what the token says, and stay
short whatever numbers a token carries."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_auth0 import InvalidTokenError, StaticKeySet, TokenVerifier
from asgi_auth0._signing import PrivateKey
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000.0
ISS = "https://tenant.example.test/"
API = "https://api.example.test"


@pytest.fixture
def minter(auth0_rsa_key: PrivateKey) -> LocalIssuer:
    return LocalIssuer(issuer=ISS, audience=API, private_key=auth0_rsa_key, clock=lambda: NOW)


async def detail_of(minter: LocalIssuer, token: str, **config: Any) -> str:
    verifier = TokenVerifier(
        minter.config(**config), key_set=StaticKeySet(minter.jwks), clock=lambda: NOW
    )
    with pytest.raises(InvalidTokenError) as caught:
        await verifier.verify(token)
    return caught.value.detail or ""


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"exp": NOW - 30}, "exp has passed, 30 s ago (leeway 5 s)"),
        ({"exp": NOW - 3 * 3600}, "exp has passed, 3 h ago (leeway 5 s)"),
        ({"exp": NOW - 9 * 86400}, "exp has passed, 9 days ago (leeway 5 s)"),
        ({"exp": 1}, "exp has passed, over 30 years ago (leeway 5 s)"),
        ({"nbf": NOW + 30}, "nbf is in the future, by 30 s (leeway 5 s)"),
        (
            {"iat": NOW + 2 * 3600},
            "iat is in the future, by 2 h (leeway 5 s): is this server's clock right?",
        ),
        ({"iat": NOW + 2e9}, "iat is in the future, by over 30 years (leeway 5 s): "),
    ],
)
async def test_a_time_refusal_says_by_how_much(
    minter: LocalIssuer, claims: dict[str, Any], detail: str
) -> None:
    assert (await detail_of(minter, minter.token(**claims))).startswith(detail)


@pytest.mark.parametrize(
    ("token_iss", "configured", "hint"),
    [
        (ISS.rstrip("/"), ISS, f"differs from the configured issuer {ISS!r} only by a trailing"),
        (ISS.upper(), ISS, f"differs from the configured issuer {ISS!r} only in letter case"),
        # AUTH0_DOMAIN=127.0.0.1:8080 for a local issuer that serves http.
        (
            ISS.replace("https://", "http://"),
            ISS,
            f"differs from the configured issuer {ISS!r} only by its scheme)",
        ),
    ],
)
async def test_an_issuer_near_miss_names_the_configured_issuer(
    minter: LocalIssuer, token_iss: str, configured: str, hint: str
) -> None:
    detail = await detail_of(minter, minter.token(iss=token_iss), issuer=configured)
    assert detail.startswith("iss is not a configured issuer (it ")
    assert hint in detail


@pytest.mark.parametrize(
    "token_iss", ["https://evil.example/", "https://sts.windows.net/", "x" * 2000]
)
async def test_any_other_issuer_gets_no_hint(minter: LocalIssuer, token_iss: str) -> None:
    # Nothing the token says comes back: the hint is for near misses of our own config.
    assert await detail_of(minter, minter.token(iss=token_iss)) == "iss is not a configured issuer"


EXPECTED = f"aud does not name this API (this API's audience: {API!r})"


@pytest.mark.parametrize("aud", ["https://evil.example/<b>", ["https://other.example", 7]])
async def test_any_other_audience_gets_only_the_configured_one(
    minter: LocalIssuer, aud: Any
) -> None:
    # Nothing the token says comes back, but what the API expected does: a token for
    # another API (or a test minting for the wrong one) is told apart at a glance.
    detail = await detail_of(minter, minter.token(aud=aud))
    assert detail in (EXPECTED, "aud array holds a non-string")
    assert "evil" not in detail
    assert "other" not in detail


async def test_several_configured_audiences_are_named_up_to_three(minter: LocalIssuer) -> None:
    many = ["https://a.example", "https://b.example", "https://c.example", "https://d.example"]
    detail = await detail_of(minter, minter.token(aud="x"), audience=many)
    assert detail.endswith(
        "(this API's audience: 'https://a.example', 'https://b.example', "
        "'https://c.example' and 1 more)"
    )


async def test_only_the_first_sixteen_audiences_are_compared(minter: LocalIssuer) -> None:
    # A token may list thousands; the near-miss search looks at a bounded few.
    near = API + "/"
    crowd = [f"https://other{n}.example" for n in range(16)]
    assert await detail_of(minter, minter.token(aud=[*crowd, near])) == EXPECTED
    assert "only by a trailing slash" in await detail_of(minter, minter.token(aud=[near, *crowd]))


async def test_the_scheme_hint_blames_domain_only_when_domain_built_the_issuer(
    minter: LocalIssuer,
) -> None:
    # domain= makes https://{domain}/: an http token beside it is the local-issuer slip.
    domain = "tenant.example.test"
    detail = await detail_of(
        minter, minter.token(iss=f"http://{domain}/"), issuer=None, domain=domain
    )
    assert "domain= always builds an https issuer" in detail
    # Given as issuer=, or the other way round (an https token, an http issuer), the
    # two differ by their scheme, and domain= has nothing to do with it.
    plain = await detail_of(minter, minter.token(iss=f"http://{domain}/"), issuer=ISS)
    assert plain.endswith("only by its scheme)")
