"""Auth0Config: validated once, every mistake a ConfigError naming the setting."""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from asgi_auth0 import Auth0Config, ConfigError, JWKSCache, KeySetError
from asgi_auth0.testing import LocalIssuer

AUD = "https://api.example.com"


def test_domain_derives_issuer_and_jwks_uri() -> None:
    cfg = Auth0Config(domain="Tenant.EU.auth0.com", audience=AUD)
    assert cfg.issuer == "https://tenant.eu.auth0.com/"
    assert cfg.jwks_uri == "https://tenant.eu.auth0.com/.well-known/jwks.json"
    assert cfg.audiences == (AUD,)
    assert cfg.algorithms == ("RS256",)
    assert cfg.required_claims == ("iat",)
    assert cfg.leeway == 5


def test_issuer_alone_leaves_jwks_uri_to_discovery() -> None:
    cfg = Auth0Config(issuer="https://idp.example.com/realms/x", audience=AUD)
    assert cfg.jwks_uri is None
    assert cfg.discovery_url == "https://idp.example.com/realms/x/.well-known/openid-configuration"


def test_config_is_frozen_and_keyword_only() -> None:
    cfg = Auth0Config(domain="t.auth0.com", audience=AUD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.leeway = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        Auth0Config("t.auth0.com", AUD)  # type: ignore[misc]


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="audience"):
        Auth0Config(domain="t.auth0.com")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({}, "domain"),
        ({"domain": "https://t.auth0.com"}, "domain"),
        ({"domain": "t.auth0.com/"}, "domain"),
        ({"domain": "bad host"}, "domain"),
        ({"issuer": "http://idp.example.com/"}, "https"),
        ({"issuer": "ftp://idp.example.com/"}, "https"),
        ({"issuer": "https://user:pw@idp.example.com/"}, "credentials"),
        ({"issuer": "https://idp.example.com/#x"}, "fragment"),
        ({"issuer": "https://idp.example.com/realm#"}, "fragment"),  # an empty one
        ({"domain": "t.auth0.com", "jwks_uri": "https://t.auth0.com/jwks#"}, "fragment"),
        ({"domain": "t.auth0.com", "jwks_uri": "http://t.auth0.com/jwks"}, "jwks_uri"),
        ({"domain": "t.auth0.com", "audience": ""}, "audience"),
        ({"domain": "t.auth0.com", "audience": ()}, "audience"),
        ({"domain": "t.auth0.com", "audience": [" a"]}, "audience"),
        ({"domain": "t.auth0.com", "algorithms": ()}, "algorithms"),
        ({"domain": "t.auth0.com", "algorithms": ("none",)}, "none"),
        ({"domain": "t.auth0.com", "algorithms": ("NONE",)}, "none"),
        ({"domain": "t.auth0.com", "algorithms": ("HS256",)}, "HS256"),
        ({"domain": "t.auth0.com", "algorithms": ("RS256", "hs512")}, "hs512"),
        ({"domain": "t.auth0.com", "algorithms": ("RS1",)}, "unsupported"),
        ({"domain": "t.auth0.com", "leeway": -1}, "leeway"),
        ({"domain": "t.auth0.com", "leeway": float("nan")}, "leeway"),
        ({"domain": "t.auth0.com", "leeway": True}, "leeway"),
        ({"domain": "t.auth0.com", "leeway": "5"}, "leeway"),
        ({"domain": "t.auth0.com", "leeway": 86400}, "leeway"),
        ({"domain": "t.auth0.com", "max_token_age": 0}, "max_token_age"),
        ({"domain": "t.auth0.com", "jwks_fetch_timeout": 0}, "jwks_fetch_timeout"),
        ({"domain": "t.auth0.com", "jwks_cache_ttl": -5}, "jwks_cache_ttl"),
        ({"domain": "t.auth0.com", "jwks_max_stale": -1}, "jwks_max_stale"),
        ({"domain": "t.auth0.com", "strict_typ": "yes"}, "strict_typ"),
        ({"domain": "t.auth0.com", "accept_bound_tokens": 1}, "accept_bound_tokens"),
        ({"domain": "t.auth0.com", "max_token_size": 10}, "max_token_size"),
        ({"domain": "t.auth0.com", "token_cache_size": -1}, "token_cache_size"),
        ({"domain": "t.auth0.com", "realm": 'a"b'}, "realm"),
        ({"domain": "t.auth0.com", "realm": "a\r\nb"}, "realm"),
        ({"domain": "t.auth0.com", "client_id": "a b"}, "client_id"),
        ({"domain": "t.auth0.com", "additional_issuers": ("http://x.example/",)}, "https"),
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, Any], needle: str) -> None:
    kwargs = dict(kwargs)
    kwargs.setdefault("audience", AUD)
    with pytest.raises(ConfigError, match=needle):
        Auth0Config(**kwargs)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/", "http://localhost:9/", "http://[::1]:8000/", "http://127.2.3.4/"],
)
def test_plain_http_is_allowed_only_on_loopback(url: str) -> None:
    assert Auth0Config(issuer=url, audience=AUD, jwks_uri=url + "jwks").issuer == url


def test_several_audiences_and_issuers() -> None:
    cfg = Auth0Config(
        domain="t.auth0.com",
        audience=["https://a", "https://b", "https://a"],
        additional_issuers=["https://login.example.com/"],
    )
    assert cfg.audiences == ("https://a", "https://b")
    assert cfg.issuers == ("https://t.auth0.com/", "https://login.example.com/")


def test_from_env_reads_documented_variables() -> None:
    env = {
        "AUTH0_DOMAIN": "t.auth0.com",
        "AUTH0_AUDIENCE": "https://a, https://b",
        "AUTH0_ALGORITHMS": "RS256,PS256",
        "AUTH0_CLIENT_ID": "abc123",
        "UNRELATED": "x",
    }
    cfg = Auth0Config.from_env(env)
    assert cfg.issuer == "https://t.auth0.com/"
    assert cfg.audiences == ("https://a", "https://b")
    assert cfg.algorithms == ("RS256", "PS256")
    assert cfg.client_id == "abc123"


def test_from_env_issuer_base_url_and_overrides() -> None:
    cfg = Auth0Config.from_env(
        {"AUTH0_ISSUER_BASE_URL": "https://idp.example.com/", "AUTH0_AUDIENCE": AUD}, leeway=0
    )
    assert cfg.issuer == "https://idp.example.com/"
    assert cfg.leeway == 0


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"AUTH0_AUDIENCE": AUD}, "AUTH0_DOMAIN"),
        ({"AUTH0_DOMAIN": "t.auth0.com"}, "AUTH0_AUDIENCE"),
        ({"AUTH0_DOMAIN": "t.auth0.com", "AUTH0_AUDIENCE": "  "}, "AUTH0_AUDIENCE"),
        ({"AUTH0_DOMAIN": "https://t.auth0.com", "AUTH0_AUDIENCE": AUD}, "AUTH0_DOMAIN"),
        (
            {"AUTH0_ISSUER_BASE_URL": "http://x.example", "AUTH0_AUDIENCE": AUD},
            "AUTH0_ISSUER_BASE_URL",
        ),
        ({"AUTH0_DOMAIN": "t.auth0.com", "AUTH0_AUDIENCE": "a,,b"}, "AUTH0_AUDIENCE"),
        (
            {"AUTH0_DOMAIN": "t.auth0.com", "AUTH0_AUDIENCE": AUD, "AUTH0_ALGORITHMS": "HS256"},
            "AUTH0_ALGORITHMS",
        ),
        (
            {"AUTH0_DOMAIN": "t.auth0.com", "AUTH0_AUDIENCE": AUD, "AUTH0_CLIENT_ID": "a b"},
            "AUTH0_CLIENT_ID",
        ),
    ],
)
def test_from_env_names_the_bad_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Auth0Config.from_env(env)


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH0_DOMAIN", "env.auth0.com")
    monkeypatch.setenv("AUTH0_AUDIENCE", AUD)
    monkeypatch.delenv("AUTH0_ISSUER_BASE_URL", raising=False)
    assert Auth0Config.from_env().issuer == "https://env.auth0.com/"


def _environment_reads(source: str) -> list[str]:
    """Where ``source`` touches the process environment: ``os.environ``/``getenv``
    and the like, or those names imported from ``os``, by enclosing function."""
    names = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
    found: list[str] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{where}.{child.name}" if where else child.name
            if (
                isinstance(child, ast.Attribute)
                and child.attr in names
                and isinstance(child.value, ast.Name)
                and child.value.id == "os"
            ) or (
                isinstance(child, ast.ImportFrom)
                and child.module == "os"
                and any(alias.name in names for alias in child.names)
            ):
                found.append(where or "<module>")
            visit(child, inner)

    visit(ast.parse(source), "")
    return found


def test_nothing_but_from_env_reads_the_environment() -> None:
    # DESIGN.md: "Nothing else in the library reads the environment." Settings come
    # from Auth0Config; a variable read elsewhere would change behaviour unseen.
    package = Path(__file__).resolve().parent.parent / "asgi_auth0"
    reads = {
        f"{path.name}:{where}"
        for path in sorted(package.glob("*.py"))
        for where in _environment_reads(path.read_text(encoding="utf-8"))
    }
    assert reads == {"_config.py:Auth0Config.from_env"}


def test_the_environment_check_sees_each_way_of_reading_it() -> None:
    source = (
        "import os\n"
        "from os import getenv\n"
        "A = os.environ.get('A')\n"
        "def f():\n    return os.getenv('B')\n"
        "class C:\n    def g(self):\n        return os.environ['C']\n"
    )
    assert _environment_reads(source) == ["<module>", "<module>", "f", "C.g"]


# -- an issuer Auth0 never issues: the tenant URL without its slash ---------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"domain": "tenant.auth0.com", "issuer": "https://tenant.auth0.com"},
        {"domain": "tenant.auth0.com", "issuer": "https://Tenant.auth0.com"},
        {"issuer": "https://tenant.eu.auth0.com"},
        {"domain": "login.example.com", "issuer": "https://login.example.com"},
        {"domain": "tenant.auth0.com", "additional_issuers": ["https://tenant.auth0.com"]},
    ],
)
def test_an_auth0_issuer_without_its_slash_is_refused(kwargs: dict[str, Any]) -> None:
    # Auth0's iss is "https://{domain}/"; iss is compared exactly, so without the slash
    # every token would fail invalid_issuer while startup looked fine.
    with pytest.raises(ConfigError, match=r"trailing slash.*carry iss 'https://[^']+/'"):
        Auth0Config(audience=AUD, **kwargs)


@pytest.mark.parametrize(
    "issuer",
    [
        "https://x.okta.com",  # Okta org authorization server
        "https://x.okta.com/oauth2/default",
        "https://kc.example.com/realms/r",  # Keycloak
        "https://login.microsoftonline.com/tid/v2.0",  # Entra ID
        "https://tenant.auth0.com/",
        "https://x.okta.com:8443/oauth2/default",  # ports and paths elsewhere are theirs
        "https://Kc.Example.com/realms/r",
    ],
)
def test_issuers_of_other_shapes_are_kept_exactly(issuer: str) -> None:
    assert Auth0Config(issuer=issuer, audience=AUD).issuer == issuer


@pytest.mark.parametrize(
    ("kwargs", "meant"),
    [
        ({"issuer": "https://Tenant.auth0.com/"}, "https://tenant.auth0.com/"),
        ({"issuer": "https://tenant.auth0.com:443/"}, "https://tenant.auth0.com/"),
        ({"issuer": "https://tenant.auth0.com/custom"}, "https://tenant.auth0.com/"),
        ({"issuer": "https://tenant.auth0.com/?x=1"}, "https://tenant.auth0.com/"),
        (
            {"domain": "login.example.com", "issuer": "https://LOGIN.example.com/"},
            "https://login.example.com/",
        ),
        (
            {"domain": "t.auth0.com", "additional_issuers": ["https://t.auth0.com:443/"]},
            "https://t.auth0.com/",
        ),
    ],
)
def test_an_auth0_issuer_spelled_otherwise_than_auth0_writes_it_is_refused(
    kwargs: dict[str, Any], meant: str
) -> None:
    # iss is compared as a string and Auth0 writes exactly "https://{host}/": any other
    # spelling of the same issuer would fail every token with invalid_issuer.
    with pytest.raises(ConfigError, match=f"carry iss '{re.escape(meant)}' exactly"):
        Auth0Config(audience=AUD, **kwargs)


def test_domain_with_another_exact_issuer_is_kept() -> None:
    # A custom domain in front of the tenant: keys from the tenant, iss of the custom
    # domain (with its slash, as Auth0 issues it).
    cfg = Auth0Config(domain="t.auth0.com", issuer="https://login.example.com/", audience=AUD)
    assert cfg.issuer == "https://login.example.com/"
    assert cfg.jwks_uri == "https://t.auth0.com/.well-known/jwks.json"


@pytest.mark.parametrize(
    ("env", "issuer"),
    [
        # Auth0's SDKs document AUTH0_ISSUER_BASE_URL without the slash: on an Auth0
        # host with no path it means the tenant, whose iss has the slash.
        (
            {
                "AUTH0_DOMAIN": "tenant.auth0.com",
                "AUTH0_ISSUER_BASE_URL": "https://tenant.auth0.com",
            },
            "https://tenant.auth0.com/",
        ),
        ({"AUTH0_ISSUER_BASE_URL": "https://tenant.us.auth0.com"}, "https://tenant.us.auth0.com/"),
        (
            {
                "AUTH0_DOMAIN": "login.example.com",
                "AUTH0_ISSUER_BASE_URL": "https://login.example.com",
            },
            "https://login.example.com/",
        ),
        ({"AUTH0_ISSUER_BASE_URL": "https://tenant.auth0.com/"}, "https://tenant.auth0.com/"),
        # Anything else is the exact issuer, as written.
        ({"AUTH0_ISSUER_BASE_URL": "https://x.okta.com"}, "https://x.okta.com"),
        ({"AUTH0_ISSUER_BASE_URL": "https://login.example.com"}, "https://login.example.com"),
        (
            {"AUTH0_ISSUER_BASE_URL": "https://kc.example.com/realms/r"},
            "https://kc.example.com/realms/r",
        ),
    ],
)
def test_from_env_reads_issuer_base_url_as_auth0_documents_it(
    env: dict[str, str], issuer: str
) -> None:
    assert Auth0Config.from_env({**env, "AUTH0_AUDIENCE": AUD}).issuer == issuer


def test_from_env_issuer_override_is_exact_and_still_checked() -> None:
    env = {"AUTH0_DOMAIN": "tenant.auth0.com", "AUTH0_AUDIENCE": AUD}
    with pytest.raises(ConfigError, match="trailing slash"):
        Auth0Config.from_env(env, issuer="https://tenant.auth0.com")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("configured", "slash_hint"), [("https://issuer.test", True), ("https://other.test/", False)]
)
async def test_the_discovery_mismatch_names_both_issuers(
    configured: str, slash_hint: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # Outside Auth0 hosts a missing slash cannot be judged at construction; the first
    # fetch then says what each side holds, and when a slash is all that differs.
    issuer = LocalIssuer(issuer="https://issuer.test/", key_type="P-256")
    caplog.set_level(logging.WARNING, logger="asgi_auth0.jwks")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=issuer.asgi_app)) as c:
            cache = JWKSCache(None, issuer=configured, http_client=c)
            with pytest.raises(KeySetError):
                await cache.refresh()
    finally:
        issuer.close()
    [record] = [r for r in caplog.records if r.__dict__.get("reason") == "issuer_mismatch"]
    text = record.getMessage()
    assert f"names issuer 'https://issuer.test/', not the configured {configured!r}" in text
    assert ("differ only by a trailing slash" in text) is slash_hint


@pytest.mark.anyio
async def test_the_discovery_mismatch_escapes_the_documents_issuer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hostile = "https://x.test/\nforged line " + "x" * 5000

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json.dumps({"issuer": hostile}).encode())

    caplog.set_level(logging.WARNING, logger="asgi_auth0.jwks")
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        cache = JWKSCache(None, issuer="https://x.test/", http_client=client)
        with pytest.raises(KeySetError):
            await cache.refresh()
    [record] = [r for r in caplog.records if r.__dict__.get("reason") == "issuer_mismatch"]
    text = record.getMessage()
    assert "\n" not in text
    assert "'https://x.test/\\nforged" in text
    assert len(text) < 400


# -- Auth0's userinfo audience -------------------------------------------------------


@pytest.mark.parametrize(
    "audience",
    [
        "https://tenant.auth0.com/userinfo",
        ["https://api.example.com", "https://login.example.com/userinfo"],
    ],
)
def test_the_userinfo_audience_is_refused(audience: str | list[str]) -> None:
    # Every Auth0 access token requested with openid carries it, for whatever API.
    with pytest.raises(ConfigError, match=r"'https://[^']+/userinfo'.*any API"):
        Auth0Config(domain="tenant.auth0.com", audience=audience)


def test_from_env_names_the_variable_with_the_userinfo_audience() -> None:
    env = {
        "AUTH0_DOMAIN": "tenant.auth0.com",
        "AUTH0_AUDIENCE": "https://api.example.com,https://tenant.auth0.com/userinfo",
    }
    with pytest.raises(ConfigError, match=r"AUTH0_AUDIENCE: .*userinfo"):
        Auth0Config.from_env(env)


@pytest.mark.parametrize(
    "audience", ["https://api.example.com/userinfo-service", "https://api.example.com/v1/userinfo"]
)
def test_audiences_that_merely_mention_userinfo_are_fine(audience: str) -> None:
    assert Auth0Config(domain="t.auth0.com", audience=audience).audiences == (audience,)


# -- copies and custom domains ------------------------------------------------------------

STAGING = "acme-staging.eu.auth0.com"
PROD = "acme.eu.auth0.com"


def test_replacing_the_domain_derives_issuer_and_jwks_uri_again() -> None:
    # replace() hands every field back to __init__: the staging issuer and jwks_uri
    # derived from the old domain must not ride along into the "prod" config, which
    # would then accept the staging tenant's tokens and fetch its keys.
    staging = Auth0Config(domain=STAGING, audience=AUD)
    prod = dataclasses.replace(staging, domain=PROD)
    assert prod.issuer == f"https://{PROD}/"
    assert prod.issuers == (f"https://{PROD}/",)
    assert prod.jwks_uri == f"https://{PROD}/.well-known/jwks.json"
    assert prod == Auth0Config(domain=PROD, audience=AUD)
    # And back again, from the copy.
    assert dataclasses.replace(prod, domain=STAGING) == staging


def test_replacing_the_domain_keeps_what_was_chosen_by_hand() -> None:
    custom = Auth0Config(
        domain=STAGING,
        issuer="https://login.acme.example/",
        jwks_uri="https://keys.acme.example/jwks.json",
        audience=AUD,
    )
    moved = dataclasses.replace(custom, domain=PROD)
    assert moved.issuer == "https://login.acme.example/"
    assert moved.jwks_uri == "https://keys.acme.example/jwks.json"
    # Only the derived one of the two is derived again.
    half = dataclasses.replace(
        Auth0Config(domain=STAGING, issuer="https://login.acme.example/", audience=AUD),
        domain=PROD,
    )
    assert half.issuer == "https://login.acme.example/"
    assert half.jwks_uri == f"https://{PROD}/.well-known/jwks.json"


def test_replacing_other_fields_keeps_the_derived_values() -> None:
    staging = Auth0Config(domain=STAGING, audience=AUD)
    wider = dataclasses.replace(staging, audience=(AUD, "https://other.example.com"))
    assert wider.issuer == staging.issuer
    assert wider.jwks_uri == staging.jwks_uri


def test_dropping_the_domain_leaves_the_keys_to_discovery() -> None:
    # Without a domain there is nothing to derive the old jwks_uri from any more: the
    # new issuer's keys are found by discovery, never at the old tenant.
    okta = dataclasses.replace(
        Auth0Config(domain=STAGING, audience=AUD), domain=None, issuer="https://acme.okta.com"
    )
    assert okta.issuer == "https://acme.okta.com"
    assert okta.jwks_uri is None


def test_the_derivation_record_is_not_part_of_the_value() -> None:
    cfg = Auth0Config(domain=STAGING, audience=AUD)
    assert "_derived_from" not in repr(cfg)
    assert cfg == Auth0Config(
        domain=STAGING,
        issuer=f"https://{STAGING}/",
        jwks_uri=f"https://{STAGING}/.well-known/jwks.json",
        audience=AUD,
    )
    assert hash(cfg) == hash(Auth0Config(domain=STAGING, audience=AUD))


def test_an_issuer_of_another_auth0_tenant_beside_domain_is_refused() -> None:
    # The keys come from domain=; another tenant's tokens could never verify, and the
    # usual cause is a config copied between environments.
    with pytest.raises(ConfigError, match="another Auth0 tenant than domain"):
        Auth0Config(domain=PROD, issuer=f"https://{STAGING}/", audience=AUD)


@pytest.mark.parametrize(
    ("issuer", "meant"),
    [
        ("https://login.acme.example", "https://login.acme.example/"),
        ("https://login.acme.example/auth", "https://login.acme.example/"),
        ("https://login.acme.example/?x=1", "https://login.acme.example/"),
    ],
)
def test_a_custom_domain_issuer_not_spelled_as_auth0_writes_it_is_refused(
    issuer: str, meant: str
) -> None:
    # Beside domain=, the issuer is the tenant's custom domain; Auth0 writes its iss as
    # "https://{host}/", so any other spelling fails every token with invalid_issuer.
    with pytest.raises(ConfigError, match=f"carry iss '{re.escape(meant)}'"):
        Auth0Config(domain=PROD, issuer=issuer, audience=AUD)


def test_from_env_reads_a_custom_domain_base_url_beside_auth0_domain() -> None:
    # Auth0's SDKs write the base URL without the slash; beside AUTH0_DOMAIN it is the
    # tenant's custom domain, whose iss has it.
    cfg = Auth0Config.from_env(
        {
            "AUTH0_DOMAIN": PROD,
            "AUTH0_ISSUER_BASE_URL": "https://login.acme.example",
            "AUTH0_AUDIENCE": AUD,
        }
    )
    assert cfg.issuer == "https://login.acme.example/"
    assert cfg.jwks_uri == f"https://{PROD}/.well-known/jwks.json"


def test_the_client_id_as_audience_is_refused() -> None:
    # An ID token's aud is the application's client id: with it as the audience, ID
    # tokens would pass as access tokens.
    with pytest.raises(ConfigError, match="client id: that is the aud of ID tokens"):
        Auth0Config(domain=PROD, audience=("abcDEF123", AUD), client_id="abcDEF123")
    assert Auth0Config(domain=PROD, audience=AUD, client_id="abcDEF123").client_id == "abcDEF123"


@pytest.mark.parametrize("domain", [PROD, "login.example.com"])
def test_an_audience_shaped_like_an_auth0_client_id_is_refused(domain: str) -> None:
    # Without client_id= the slip above goes unseen: a SPA that got no API access
    # token sends its ID token, and the audience is set to the client id to let it in.
    client_id = "Xq3vL8mN2pR5sT7uW9yZ1aB4cD6eF8gH"
    with pytest.raises(ConfigError, match="shape of an Auth0 client id"):
        Auth0Config(domain=domain, audience=client_id)
    with pytest.raises(ConfigError, match="shape of an Auth0 client id"):
        Auth0Config(issuer="https://tenant.eu.auth0.com/", audience=(AUD, client_id))
    # One letter short, or with a dash, is not that shape; nor is any audience of
    # another provider (Entra ID: one app registration may be API and client).
    assert Auth0Config(domain=domain, audience=client_id[:-1]).audience == client_id[:-1]
    assert Auth0Config(domain=domain, audience=client_id[:-1] + "-").audiences
    entra = "https://login.microsoftonline.com/4b3c2d1e-0000-4000-8000-000000000000/v2.0"
    assert Auth0Config(issuer=entra, audience=client_id).audience == client_id


@pytest.mark.parametrize(
    ("audience", "needle"),
    [
        ("https://a.example https://b.example", "whitespace or a bracket"),
        ("https://a.example\thttps://b.example", "whitespace or a bracket"),
        ('["https://a.example","https://b.example"]', "whitespace or a bracket"),
        ('["https://a.example"', "whitespace or a bracket"),
        ('"https://b.example"]', "whitespace or a bracket"),
        ("https://a.example,https://b.example", "joined by commas"),
    ],
)
def test_several_audiences_in_one_string_are_refused(audience: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Auth0Config(domain=PROD, audience=audience)


def test_several_audiences_in_one_environment_value_are_refused() -> None:
    # A JSON list in AUTH0_AUDIENCE: the comma split leaves a bracket on each part.
    with pytest.raises(ConfigError, match="AUTH0_AUDIENCE"):
        Auth0Config.from_env(
            {"AUTH0_DOMAIN": PROD, "AUTH0_AUDIENCE": '["https://a.example","https://b.example"]'}
        )
    # A comma in a single name is allowed (a scope-like identifier, not two URLs).
    assert Auth0Config(domain=PROD, audience="urn:api,v2").audience == "urn:api,v2"


def test_domain_is_for_auth0_and_says_so_beside_another_providers_issuer() -> None:
    # Moving from Auth0 to Okta or Keycloak with AUTH0_DOMAIN kept: the advice was
    # "write https://host/", which fails every token with invalid_issuer there.
    with pytest.raises(ConfigError, match="is an Okta org, and domain= is for Auth0"):
        Auth0Config(domain="acme.okta.com", audience="api://default")
    with pytest.raises(ConfigError, match="is an Okta org"):
        Auth0Config(
            domain="acme.okta.com", issuer="https://acme.okta.com/oauth2/default", audience="x"
        )
    with pytest.raises(ConfigError, match="AUTH0_DOMAIN"):
        Auth0Config.from_env({"AUTH0_DOMAIN": "acme.okta.com", "AUTH0_AUDIENCE": "api://default"})
    realm = "https://sso.example.com/realms/acme"
    with pytest.raises(ConfigError, match="for another provider give issuer= alone"):
        Auth0Config(domain="sso.example.com", issuer=realm, audience="orders-api")
    # Alone, those issuers are fine; so is an Auth0 custom domain given as domain=.
    assert Auth0Config(issuer="https://acme.okta.com/oauth2/default", audience="x").issuer
    assert Auth0Config(issuer=realm, audience="orders-api").issuer == realm
    assert Auth0Config(domain="login.example.com", audience=AUD).issuer == (
        "https://login.example.com/"
    )


def test_the_hs256_refusal_says_how_to_fix_an_auth0_api() -> None:
    with pytest.raises(ConfigError, match=r"switch its JSON Web Token Signing Algorithm to RS256"):
        Auth0Config(domain=PROD, audience=AUD, algorithms=("HS256",))


def test_keycloaks_account_audience_is_refused_for_a_realm_issuer() -> None:
    # Keycloak puts aud "account" into every client's tokens by default: as an API's
    # audience it would accept tokens minted for any client of the realm.
    realm = "https://sso.example.com/realms/acme"
    with pytest.raises(ConfigError, match="Audience mapper"):
        Auth0Config(issuer=realm, audience=("account", "orders-api"))
    assert Auth0Config(issuer=realm, audience="orders-api").audiences == ("orders-api",)
    # Elsewhere "account" is just a name.
    assert Auth0Config(issuer="https://idp.example.com/", audience="account").audience == "account"


def test_the_canonical_issuer_beside_a_custom_domain_given_as_domain_is_kept() -> None:
    # Auth0's quickstarts have custom-domain users put the custom domain in
    # AUTH0_DOMAIN; the canonical host's tokens (e.g. machine-to-machine ones) verify
    # with the same keys, so the canonical issuer beside it is the same tenant.
    cfg = Auth0Config(
        domain="login.example.com",
        issuer="https://tenant.eu.auth0.com/",
        additional_issuers=["https://login.example.com/"],
        audience=AUD,
    )
    assert cfg.issuers == ("https://tenant.eu.auth0.com/", "https://login.example.com/")
    assert cfg.jwks_uri == "https://login.example.com/.well-known/jwks.json"
    env = Auth0Config.from_env(
        {
            "AUTH0_DOMAIN": "login.example.com",
            "AUTH0_ISSUER_BASE_URL": "https://tenant.eu.auth0.com",
            "AUTH0_AUDIENCE": AUD,
        }
    )
    assert env.issuer == "https://tenant.eu.auth0.com/"


def test_the_client_id_may_be_the_audience_outside_auth0() -> None:
    # Entra ID: one app registration may be both the API and Swagger UI's client.
    cfg = Auth0Config(
        issuer="https://login.microsoftonline.com/tid/v2.0",
        audience="2f3c6a1e-0000-4000-8000-000000000001",
        client_id="2f3c6a1e-0000-4000-8000-000000000001",
    )
    assert cfg.client_id in cfg.audiences


def test_replacing_the_domain_with_none_asks_for_an_issuer() -> None:
    with pytest.raises(ConfigError, match="give either domain="):
        dataclasses.replace(Auth0Config(domain=STAGING, audience=AUD), domain=None)


@pytest.mark.parametrize("base_url", ["https://login.acme.example/", f"https://{PROD}/"])
def test_from_env_keeps_a_base_url_that_already_has_its_slash_beside_auth0_domain(
    base_url: str,
) -> None:
    # Only the bare host gets the slash: one written with it is the issuer as it is.
    cfg = Auth0Config.from_env(
        {"AUTH0_DOMAIN": PROD, "AUTH0_ISSUER_BASE_URL": base_url, "AUTH0_AUDIENCE": AUD}
    )
    assert cfg.issuer == base_url
    assert cfg.jwks_uri == f"https://{PROD}/.well-known/jwks.json"


@pytest.mark.parametrize(
    "where",
    [{"issuer": f"https://{PROD}/"}, {"domain": "login.acme.example"}],
    ids=["auth0-issuer-without-domain", "custom-domain-as-domain"],
)
def test_the_client_id_as_audience_is_refused_however_the_auth0_tenant_is_given(
    where: dict[str, str],
) -> None:
    # An Auth0 tenant is an Auth0 tenant whether named by its issuer alone or by its
    # custom domain in domain=: its ID tokens carry the client id as aud either way.
    with pytest.raises(ConfigError, match="client id: that is the aud of ID tokens"):
        Auth0Config(**where, audience=("abcDEF123", AUD), client_id="abcDEF123")


@pytest.mark.parametrize("required", [5, None])
def test_a_bad_required_claims_is_a_config_error_in_client_id_mode_too(required: object) -> None:
    with pytest.raises(ConfigError, match="required_claims must be a string or a sequence"):
        Auth0Config(
            issuer="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_X",
            audience="c",
            audience_claim="client_id",
            required_claims=required,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        # Auth0's issuer spelling, checked only when the config is built.
        ({"AUTH0_ISSUER_BASE_URL": "https://TENANT.auth0.com/"}, "AUTH0_ISSUER_BASE_URL: "),
        (
            {"AUTH0_DOMAIN": "tenant.auth0.com", "AUTH0_ISSUER_BASE_URL": "https://o.auth0.com/"},
            "AUTH0_DOMAIN, AUTH0_ISSUER_BASE_URL: ",
        ),
        (
            {"AUTH0_DOMAIN": "tenant.auth0.com", "AUTH0_CLIENT_ID": "abc123"},
            "AUTH0_AUDIENCE, AUTH0_CLIENT_ID: ",
        ),
    ],
)
def test_from_env_names_the_variables_of_a_rule_over_several_settings(
    env: dict[str, str], named: str
) -> None:
    # DESIGN.md: a bad value raises ConfigError naming the variable, also when the
    # rule that refuses it looks at several settings together.
    env = {"AUTH0_AUDIENCE": "abc123" if "AUTH0_CLIENT_ID" in env else AUD, **env}
    with pytest.raises(ConfigError) as caught:
        Auth0Config.from_env(env)
    assert str(caught.value).startswith(named)


def test_from_env_leaves_errors_of_overrides_alone() -> None:
    # Every setting came from the caller's keywords: no variable to name.
    with pytest.raises(ConfigError) as caught:
        Auth0Config.from_env({}, domain="t.auth0.com", audience=AUD, realm='"')
    assert str(caught.value).startswith("realm must be")


@pytest.mark.parametrize(
    ("extra", "start"),
    [
        (["https://acme.eu.auth0.com"], "additional_issuers entry"),  # no trailing slash
        (["http://old.example.com/"], "additional_issuers must use https://"),
    ],
)
def test_from_env_does_not_blame_a_variable_for_a_setting_passed_in_code(
    extra: list[str], start: str
) -> None:
    # The message's words ("issuer", "domain=") named AUTH0_ISSUER_BASE_URL and
    # AUTH0_DOMAIN, which were fine; the setting at fault came from the keywords.
    env = {"AUTH0_DOMAIN": "acme.eu.auth0.com", "AUTH0_AUDIENCE": AUD}
    with pytest.raises(ConfigError) as caught:
        Auth0Config.from_env(env, additional_issuers=extra)
    assert str(caught.value).startswith(start)
