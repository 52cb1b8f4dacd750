"""Auth0Config rules that mutation testing found unpinned (session 8).

URL checks (the issuer, ``jwks_uri`` and every URL the key cache follows go through
``validate_url``), the inclusive bounds of each number setting, a few derivations,
and from_env checking a variable's value before anything reads it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from asgi_auth0 import Auth0Config, ConfigError, JWKSCache
from asgi_auth0._config import is_loopback_host, validate_url

AUD = "https://api.example.com"
DOMAIN = "tenant.eu.auth0.com"


# -- validate_url ---------------------------------------------------------------------


@pytest.mark.parametrize("host", [None, ""])
def test_no_host_is_not_a_loopback_host(host: str | None) -> None:
    assert is_loopback_host(host) is False


@pytest.mark.parametrize("url", ["https:///jwks.json", "http:///jwks.json", "https://"])
def test_a_url_without_a_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="jwks_uri"):
        Auth0Config(domain=DOMAIN, audience=AUD, jwks_uri=url)


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/jwks", "ws://localhost:8000/jwks", "file://localhost/jwks"]
)
def test_only_http_and_https_are_allowed_even_on_loopback(url: str) -> None:
    with pytest.raises(ConfigError, match=r"must be an https:// URL"):
        validate_url("jwks_uri", url)


@pytest.mark.parametrize(
    "url",
    [
        "https://user@idp.example.com/",  # a user name alone
        "https://:secret@idp.example.com/",  # a password alone
    ],
)
def test_any_userinfo_in_a_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="credentials"):
        Auth0Config(issuer=url, audience=AUD)


@pytest.mark.parametrize("char", [" ", "\t", "\n", "\x00", "\x1f", "\x7f"])
def test_whitespace_and_control_characters_in_a_url_are_refused(char: str) -> None:
    with pytest.raises(ConfigError, match="whitespace or control"):
        validate_url("jwks_uri", f"https://idp.example.com/keys{char}x")


def test_visible_punctuation_in_a_url_is_kept() -> None:
    # "!" (0x21) is the first character past the refused range; "~" the last below DEL.
    url = "https://idp.example.com/keys!set~1"
    assert validate_url("jwks_uri", url) == url


@pytest.mark.parametrize(
    "url",
    ["https://idp.example.com:99999/", "https://idp.example.com:port/", "https://[::1/"],
)
def test_an_unparsable_url_is_a_config_error(url: str) -> None:
    # A bad port or a broken IPv6 literal: urlsplit's ValueError, reworded.
    with pytest.raises(ConfigError, match="not a valid URL"):
        Auth0Config(issuer=url, audience=AUD)


# -- domain ------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", [5, b"tenant.auth0.com", ["tenant.auth0.com"]])
def test_a_domain_that_is_not_a_string_is_a_config_error(domain: Any) -> None:
    with pytest.raises(ConfigError, match="domain must be a non-empty host name"):
        Auth0Config(domain=domain, audience=AUD)


def test_the_domain_is_kept_in_lower_case() -> None:
    assert Auth0Config(domain="Tenant.EU.Auth0.com", audience=AUD).domain == DOMAIN


def test_a_custom_domain_in_mixed_case_still_gets_auth0s_issuer_checks() -> None:
    # domain= may be a custom domain; an issuer on that host is judged as Auth0
    # writes it ("https://{host}/"), whatever the case the domain was given in.
    with pytest.raises(ConfigError, match="trailing slash"):
        Auth0Config(
            domain="Login.Acme.Example",
            audience=AUD,
            additional_issuers=["https://login.acme.example"],
        )


# -- audience ----------------------------------------------------------------------------


@pytest.mark.parametrize("audience", [None, "", ()])
def test_a_missing_audience_says_it_is_required(audience: Any) -> None:
    with pytest.raises(ConfigError, match="audience is required"):
        Auth0Config(domain=DOMAIN, audience=audience)


def test_several_audiences_survive_replace() -> None:
    # dataclasses.replace passes .audience back in: it must hold all of them.
    cfg = Auth0Config(domain=DOMAIN, audience=["https://a.example", "https://b.example"])
    assert cfg.audience == ("https://a.example", "https://b.example")
    again = dataclasses.replace(cfg, leeway=0)
    assert again.audiences == ("https://a.example", "https://b.example")
    assert Auth0Config(domain=DOMAIN, audience=[AUD]).audience == AUD


# -- numbers -----------------------------------------------------------------------------

# (setting, lowest accepted, highest accepted): the bounds a ConfigError states.
BOUNDS: list[tuple[str, float, float]] = [
    ("leeway", 0, 300),
    ("max_token_age", 1, 10 * 365 * 86400),
    ("jwks_cache_ttl", 1, 7 * 86400),
    ("jwks_refresh_cooldown", 0, 86400),
    ("jwks_fetch_timeout", 0.05, 120),
    ("jwks_max_stale", 0, 30 * 86400),
]


@pytest.mark.parametrize(("name", "low", "high"), BOUNDS)
def test_each_duration_accepts_both_of_its_bounds(name: str, low: float, high: float) -> None:
    for value in (low, high):
        setting: dict[str, Any] = {name: value}
        cfg = Auth0Config(domain=DOMAIN, audience=AUD, **setting)
        assert getattr(cfg, name) == value


@pytest.mark.parametrize(("name", "low", "high"), BOUNDS)
def test_each_duration_refuses_values_just_outside_its_bounds(
    name: str, low: float, high: float
) -> None:
    below = low - 0.01 if low < 1 else low - 0.5
    for value in (below, high + 1):
        setting: dict[str, Any] = {name: value}
        with pytest.raises(ConfigError, match=f"{name} must be between {low} and {high}"):
            Auth0Config(domain=DOMAIN, audience=AUD, **setting)


def test_max_token_size_may_be_as_small_as_256_bytes() -> None:
    assert Auth0Config(domain=DOMAIN, audience=AUD, max_token_size=256).max_token_size == 256
    with pytest.raises(ConfigError, match="at least 256"):
        Auth0Config(domain=DOMAIN, audience=AUD, max_token_size=255)


def test_a_token_cache_size_of_zero_turns_the_cache_off_and_is_accepted() -> None:
    assert Auth0Config(domain=DOMAIN, audience=AUD, token_cache_size=0).token_cache_size == 0


# -- from_env ----------------------------------------------------------------------------


@pytest.mark.parametrize("base_url", ["https://[::1", "https://tenant.auth0.com:port"])
def test_from_env_refuses_an_unparsable_issuer_base_url_as_a_config_error(base_url: str) -> None:
    # Checked before the base URL is read as an issuer (which parses it again).
    env = {"AUTH0_ISSUER_BASE_URL": base_url, "AUTH0_AUDIENCE": AUD}
    with pytest.raises(ConfigError) as caught:
        Auth0Config.from_env(env)
    assert str(caught.value).startswith("AUTH0_ISSUER_BASE_URL: issuer is not a valid URL")


def test_from_env_blames_a_bad_domain_alone_beside_a_good_issuer_base_url() -> None:
    env = {
        "AUTH0_DOMAIN": "https://tenant.auth0.com",
        "AUTH0_ISSUER_BASE_URL": "https://login.acme.example/",
        "AUTH0_AUDIENCE": AUD,
    }
    with pytest.raises(ConfigError) as caught:
        Auth0Config.from_env(env)
    assert str(caught.value).startswith("AUTH0_DOMAIN: domain must be a bare host name")


_DURATIONS = (
    "leeway",
    "max_token_age",
    "jwks_cache_ttl",
    "jwks_refresh_cooldown",
    "jwks_fetch_timeout",
    "jwks_max_stale",
)
_CACHE_DURATIONS = (
    "ttl",
    "refresh_cooldown",
    "fetch_timeout",
    "max_stale",
    "min_ttl",
    "max_ttl",
    "backoff_min",
    "backoff_max",
    "negative_ttl",
)


@pytest.mark.parametrize("name", _DURATIONS)
def test_a_duration_too_large_for_a_float_is_a_config_error(name: str) -> None:
    # float(10**400) raises OverflowError, which is not a ValueError: every invalid
    # setting must still be the one documented ConfigError.
    with pytest.raises(ConfigError, match=f"^{name} must be between"):
        Auth0Config(domain=DOMAIN, audience=AUD, **{name: 10**400})


@pytest.mark.parametrize("name", _CACHE_DURATIONS)
def test_a_key_cache_duration_too_large_for_a_float_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} must be a finite number"):
        JWKSCache("https://tenant.example.com/.well-known/jwks.json", **{name: 10**400})
