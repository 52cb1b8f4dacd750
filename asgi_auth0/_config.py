"""``Auth0Config``: every setting, validated once at construction."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ._dpop import DPOP_MODES
from ._errors import ConfigError

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "Auth0Config",
    "is_loopback_host",
    "validate_issuer",
    "validate_url",
]

#: Every JWS algorithm the library can verify with a public key.
SUPPORTED_ALGORITHMS: frozenset[str] = frozenset(
    {
        "RS256", "RS384", "RS512",
        "PS256", "PS384", "PS512",
        "ES256", "ES384", "ES512",
        "EdDSA", "Ed25519",
    }
)  # fmt: skip

_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?$")
# RFC 6750 §3: the realm is a quoted-string; we keep it to printable ASCII without
# quotes or backslashes so it never needs escaping.
_REALM_RE = re.compile(r"^[\x20-\x7e]{1,200}$")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1``: the only hosts allowed over http."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_url(name: str, url: object) -> str:
    """Check that ``url`` is https (or http on a loopback host) with no fragment or userinfo."""
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{name} must be a non-empty URL string")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{name} is not a valid URL: {url!r}") from exc
    if parts.scheme == "https":
        pass
    elif parts.scheme == "http":
        if not is_loopback_host(host):
            raise ConfigError(
                f"{name} must use https:// (plain http is allowed only on 127.0.0.1, ::1 "
                f"and localhost, for development): {url!r}"
            )
    else:
        raise ConfigError(f"{name} must be an https:// URL: {url!r}")
    if not host:
        raise ConfigError(f"{name} has no host: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{name} must not carry credentials: {url!r}")
    # "#" itself, not parts.fragment: a bare trailing "#" has an empty fragment, and
    # the discovery URL built from such an issuer put /.well-known/... after it.
    if "#" in url:
        raise ConfigError(f"{name} must not have a #fragment: {url!r}")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ConfigError(f"{name} contains whitespace or control characters")
    return url


def validate_issuer(name: str, url: object) -> str:
    """:func:`validate_url`, and no ``?query`` either: an issuer identifier has neither
    query nor fragment (RFC 8414 §2, OpenID Connect Discovery §3). With one, the
    discovery URL built from it would put ``/.well-known/...`` inside the query."""
    return _no_query(name, validate_url(name, url))


def _no_query(name: str, url: str) -> str:
    if "?" in url:
        raise ConfigError(f"{name} must not have a ?query: {url!r}")
    return url


def _seconds(name: str, value: object, *, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float: not a ValueError
        seconds = math.inf
    if not math.isfinite(seconds) or not minimum <= seconds <= maximum:
        raise ConfigError(
            f"{name} must be between {minimum} and {maximum} seconds, got {seconds:g}"
        )
    return seconds


def _strings(name: str, value: object, *, allow_empty: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        items: tuple[object, ...] = (value,)
    elif isinstance(value, Sequence):
        items = tuple(value)
    else:
        raise ConfigError(f"{name} must be a string or a sequence of strings")
    for item in items:
        if not isinstance(item, str) or not item.strip() or item != item.strip():
            raise ConfigError(f"{name} entries must be non-empty strings without surrounding space")
    if not items and not allow_empty:
        raise ConfigError(f"{name} must not be empty")
    return tuple(dict.fromkeys(items))  # type: ignore[arg-type]


def _check_algorithms(name: str, value: object) -> tuple[str, ...]:
    algs = _strings(name, value, allow_empty=False)
    for alg in algs:
        if alg.lower() == "none":
            raise ConfigError(f"{name}: 'none' is never allowed (unsigned tokens)")
        if alg.upper().startswith("HS"):
            raise ConfigError(
                f"{name}: {alg} is a shared-secret algorithm; a JWKS holds public keys, so "
                "HS* would let anyone who knows the public key forge tokens (for an Auth0 "
                "API signed with HS256, switch its JSON Web Token Signing Algorithm to "
                "RS256 in the dashboard: Applications > APIs > your API > Settings)"
            )
        if alg not in SUPPORTED_ALGORITHMS:
            raise ConfigError(
                f"{name}: unsupported algorithm {alg!r}; choose from "
                f"{', '.join(sorted(SUPPORTED_ALGORITHMS))}"
            )
    return algs


def _issuer_from_domain(domain: object) -> str:
    if not isinstance(domain, str) or not domain:
        raise ConfigError("domain must be a non-empty host name such as 'tenant.eu.auth0.com'")
    if "://" in domain or "/" in domain or not _HOST_RE.match(domain):
        raise ConfigError(
            f"domain must be a bare host name such as 'tenant.eu.auth0.com', got {domain!r}; "
            "pass a full URL as issuer= instead"
        )
    host = domain.lower()
    if host.endswith(_OKTA_HOSTS):
        # domain= derives Auth0's issuer and JWKS URL, neither of which an Okta org has.
        raise ConfigError(
            f"domain {domain!r} is an Okta org, and domain= is for Auth0 tenants: give "
            "issuer= alone, the authorization server's issuer exactly (such as "
            f"'https://{host}/oauth2/default')"
        )
    return f"https://{host}/"


# Okta's org hosts: not Auth0 tenants, whatever name the variable had (AUTH0_DOMAIN).
_OKTA_HOSTS = (".okta.com", ".oktapreview.com", ".okta-emea.com", ".okta-gov.com")


def _is_auth0_host(netloc: str, domain: str | None) -> bool:
    """An Auth0 tenant host: the configured ``domain`` or any ``*.auth0.com`` host."""
    netloc = netloc.lower()
    return netloc == domain or netloc.endswith(".auth0.com")


def _is_bare_auth0_url(url: str, domain: str | None) -> bool:
    """``https://{auth0 host}`` with nothing after the host, not even ``/``."""
    parts = urlsplit(url)
    return not parts.path and not parts.query and _is_auth0_host(parts.netloc, domain)


def _check_auth0_slash(name: str, url: str, domain: str | None) -> None:
    # Auth0 always issues iss "https://{domain}/" with the slash and ``iss`` is
    # compared exactly, so the bare host would fail every token with invalid_issuer
    # and nothing at startup would say so. Only Auth0 hosts are judged: Okta, Keycloak
    # and Entra issuers legitimately end without a slash.
    if _is_bare_auth0_url(url, domain):
        parts = urlsplit(url)
        meant = f"{parts.scheme}://{parts.netloc.lower()}/"
        raise ConfigError(
            f"{name} {url!r} lacks the trailing slash: Auth0 tokens carry iss "
            f"{meant!r}, so every token would fail with invalid_issuer; write {meant!r} "
            "(or give domain= alone, which derives it)"
        )


def _check_auth0_issuer(name: str, url: str, domain: str | None) -> None:
    # An Auth0 tenant (or its custom domain, given as domain=) writes iss exactly as
    # "https://{host}/": lower-case host, no port, no path. iss is compared as a
    # string, so any other spelling of the same issuer fails every token with
    # invalid_issuer and nothing at startup says why.
    _check_auth0_slash(name, url, domain)
    host = urlsplit(url).hostname or ""
    if not _is_auth0_host(host, domain):
        return
    meant = f"https://{host}/"
    if url != meant and not host.endswith(".auth0.com") and urlsplit(url).path not in ("", "/"):
        # Only domain= made this host an Auth0 one, and the issuer has a path: Okta's
        # /oauth2/default or Keycloak's /realms/x beside a domain= kept from Auth0.
        raise ConfigError(
            f"{name} {url!r} has a path, which no Auth0 issuer has, beside domain="
            f"{domain!r}: domain= is for an Auth0 tenant (or its custom domain); for "
            "another provider give issuer= alone, without domain="
        )
    if url != meant:
        raise ConfigError(
            f"{name} {url!r} is not how Auth0 writes its issuer: its tokens carry iss "
            f"{meant!r} exactly (https, lower-case host, no port, no path), so every "
            f"token would fail with invalid_issuer; write {meant!r}"
        )


# What Auth0 client ids look like (an application's, in the dashboard's Settings).
_AUTH0_CLIENT_ID = re.compile(r"[A-Za-z0-9]{32}")

# "client_id" is for Cognito only in practice: elsewhere a token carries an aud naming
# its API, and matching the client instead would accept tokens minted for other APIs.
_AUDIENCE_CLAIMS = ("aud", "client_id")


def _check_client_id_mode(config: Auth0Config) -> None:
    # audience_claim="client_id" accepts only tokens without aud (Cognito's access
    # tokens, which carry no typ either): each of these settings would refuse them all.
    if config.domain is not None or _is_auth0_host(urlsplit(config.issuer or "").netloc, None):
        raise ConfigError(
            "audience_claim='client_id' is for issuers whose access tokens have no aud "
            "(Amazon Cognito); Auth0's always do: keep audience_claim='aud'"
        )
    if config.strict_typ is True:
        raise ConfigError(
            "strict_typ=True with audience_claim='client_id': Cognito's access tokens "
            "carry no typ header, so every one would be refused"
        )
    if "aud" in _strings("required_claims", config.required_claims, allow_empty=True):
        raise ConfigError(
            "required_claims names aud, which audience_claim='client_id' refuses in every token"
        )


def _check_custom_domain(issuer: str, domain: str) -> None:
    # domain= names the tenant whose JWKS verifies the tokens; an issuer beside it is
    # the same tenant under its other name (a custom domain beside the canonical host,
    # or the canonical host beside a custom domain given as domain=, as Auth0's
    # quickstarts have custom-domain users write AUTH0_DOMAIN). Auth0 writes either
    # as "https://{host}/". Caught here, a slip fails at startup, not on every token.
    parts = urlsplit(issuer)
    host = (parts.hostname or "").lower()
    if domain.endswith(".auth0.com") and host.endswith(".auth0.com") and host != domain:
        raise ConfigError(
            f"issuer {issuer!r} is another Auth0 tenant than domain={domain!r}: the keys "
            f"come from {domain!r}, so that tenant's tokens would all fail; give domain= "
            "alone, or the issuer of a custom domain of this tenant"
        )
    if parts.path != "/" or parts.query:
        meant = f"{parts.scheme}://{parts.netloc}/"
        raise ConfigError(
            f"issuer {issuer!r} beside domain={domain!r} names the same Auth0 tenant "
            f"(its custom domain or canonical host), whose tokens carry iss {meant!r} "
            f"(with the slash, no path), so every token would fail with invalid_issuer; "
            f"write {meant!r}"
        )


# Entra ID's multi-tenant endpoints: their discovery documents name the issuer with a
# "{tenantid}" placeholder, and no token carries any of these in its iss.
_ENTRA_HOSTS = ("login.microsoftonline.com", "sts.windows.net", "login.microsoftonline.us")
_ENTRA_PLACEHOLDERS = frozenset({"{tenantid}", "common", "organizations", "consumers"})


def _check_issuer_is_one_tenant(name: str, url: str) -> None:
    parts = urlsplit(url)
    first = parts.path.strip("/").split("/")[0].lower()
    if (
        "{" in url
        or "}" in url
        or ((parts.hostname or "") in _ENTRA_HOSTS and first in _ENTRA_PLACEHOLDERS)
    ):
        raise ConfigError(
            f"{name} {url!r} names no tenant: Entra ID tokens carry iss "
            "'https://login.microsoftonline.com/<tenant id>/v2.0' with the tenant's id; "
            "list each tenant you accept (issuer= and additional_issuers=)"
        )


def _check_cognito_resources(audiences: tuple[str, ...], issuers: tuple[str, ...]) -> None:
    # A Cognito pool writes aud into its ID tokens (the app client id) and into access
    # tokens bound to a resource (resource indicators, RFC 8707: the resource's URL)
    # only; the verifier takes from a Cognito issuer only tokens with token_use
    # "access", so any other audience would refuse every token.
    for aud in audiences:
        parts = urlsplit(aud)
        if parts.scheme and parts.netloc:
            continue
        if all(_is_cognito(i) for i in issuers):
            advice = (
                "set audience_claim='client_id' and audience to the app client id(s); "
                "audience_claim='aud' is for access tokens bound to a resource (the "
                "resource parameter), with audience the resource's URL"
            )
        else:
            # Another issuer's API may be named otherwise (Entra's app id), but the
            # audiences apply to every issuer's tokens.
            advice = (
                "with a Cognito issuer among the issuers, every audience must be a "
                "resource's URL, as the audiences apply to every issuer's tokens"
            )
        raise ConfigError(
            f"audience {aud!r} is not a URL: a Cognito user pool's access tokens carry "
            f"no aud (they name the app client in client_id), except those bound to a "
            f"resource; {advice}"
        )


# A Cognito user pool's issuer host: the original form (cognito-idp.{region}) and the
# one AWS now recommends (issuer-cognito-idp.{region}, the same keys served from
# several regions), on amazonaws.com or, in the China regions, amazonaws.com.cn.
_COGNITO_HOST = re.compile(
    r"(?:issuer-)?cognito-idp(?:-fips)?\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?"
)


def _is_cognito(url: str) -> bool:
    # Its rules keep a pool's ID tokens out: a host missed here would let them in.
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return _COGNITO_HOST.fullmatch(host) is not None


def _check_not_the_issuers_api(audiences: tuple[str, ...], hosts: set[str]) -> None:
    # https://{tenant}/api/v2/ is the Auth0 Management API: every application of the
    # tenant may get tokens for it, so accepting it lets in tokens minted for Auth0.
    for aud in audiences:
        parts = urlsplit(aud)
        if (parts.hostname or "").lower() in hosts and parts.path.rstrip("/") == "/api/v2":
            raise ConfigError(
                f"audience {aud!r} is the Auth0 Management API's, which tokens minted for "
                "Auth0 itself carry: create an API for your service (Applications > APIs) "
                "and use its identifier"
            )


def _check_jwks_uri(jwks_uri: str, domain: str | None, issuers: tuple[str, ...]) -> None:
    parts = urlsplit(jwks_uri)
    if "/.well-known/openid-configuration" in parts.path or (
        "/.well-known/oauth-authorization-server" in parts.path
    ):
        raise ConfigError(
            f"jwks_uri {jwks_uri!r} is a discovery document, not a key set: give the "
            "jwks_uri it names, or leave jwks_uri out to have it discovered"
        )
    host = (parts.hostname or "").lower()
    own = {domain} | {(urlsplit(i).hostname or "").lower() for i in issuers}
    if domain is not None and _is_auth0_host(host, None) and host not in own:
        raise ConfigError(
            f"jwks_uri {jwks_uri!r} is on another Auth0 tenant than domain={domain!r}: "
            "its keys never sign this tenant's tokens; leave jwks_uri out (domain= "
            "derives it)"
        )


def _check_audiences(name: str, value: object) -> tuple[str, ...]:
    audiences = _strings(name, value, allow_empty=False)
    for aud in audiences:
        if len(aud) >= 2 and aud[0] == aud[-1] and aud[0] in "\"'":
            # An .env line read without a shell (docker --env-file, some CI secret
            # stores) keeps its quotes; no token's aud has them.
            raise ConfigError(
                f"{name} {aud!r} is wrapped in quotes, which no token's aud has: "
                "write it without them"
            )
        # Several audiences written as one string: with spaces, as a JSON list (the
        # settings-library habit, which from_env's comma split cuts into '["https://a"'
        # and '"https://b"]'), or comma-joined URLs. No aud is any of those, so every
        # token would fail with invalid_audience and nothing would say why.
        if any(c.isspace() for c in aud) or aud[:1] == "[" or aud[-1:] == "]":
            raise ConfigError(
                f"{name} {aud!r} holds whitespace or a bracket, which no token's aud has: "
                "give several audiences as a list, audience=['https://a', 'https://b'] "
                "(AUTH0_AUDIENCE: comma-separated, no brackets or quotes)"
            )
        if "," in aud and sum("://" in part for part in aud.split(",")) >= 2:
            raise ConfigError(
                f"{name} {aud!r} is several URLs joined by commas: give them as a list, "
                "audience=['https://a', 'https://b']"
            )
        parts = urlsplit(aud)
        if parts.scheme.lower() in ("https", "http") and parts.path == "/userinfo":
            # Auth0 adds https://{domain}/userinfo as a second aud to every access
            # token requested with the openid scope, whatever API it is for.
            raise ConfigError(
                f"{name} {aud!r} is Auth0's userinfo audience, which every access token "
                "requested with the openid scope carries whatever API it was minted for: "
                "accepting it would let in tokens for any API of the tenant; use your "
                "API's identifier"
            )
    return audiences


def _issuer_from_base_url(url: str, domain: str | None) -> str:
    """``AUTH0_ISSUER_BASE_URL`` as an exact issuer.

    Auth0's SDKs document the variable as the tenant URL without the slash
    (``https://tenant.auth0.com``), while the tokens' ``iss`` has it; so on an Auth0
    host (``*.auth0.com``), or any host beside ``AUTH0_DOMAIN`` (the tenant's custom
    domain), with no path the slash is added. Any
    other URL is kept exactly: Okta, Keycloak and Entra issuers have no slash.
    """
    domain = domain.lower() if domain is not None else None
    if domain is not None:
        # Beside AUTH0_DOMAIN the base URL is the tenant's or its custom domain's:
        # Auth0's iss for either is "https://{host}/".
        parts = urlsplit(url)
        return url + "/" if not parts.path and not parts.query else url
    return url + "/" if _is_bare_auth0_url(url, domain) else url


@dataclass(frozen=True, kw_only=True)
class Auth0Config:
    """How to verify access tokens: issuer, audience, algorithms, clock and key-cache settings.

    Frozen and keyword-only. Every value is validated once, here, and any mistake
    raises :class:`ConfigError` naming the setting.
    """

    #: Auth0 tenant host (``"tenant.eu.auth0.com"``); gives issuer and jwks_uri.
    domain: str | None = None
    #: The exact ``iss`` string; with no ``jwks_uri`` the keys are found by discovery.
    #: A bare Auth0 host (``https://tenant.auth0.com``, no slash) is refused: Auth0's
    #: ``iss`` always ends in ``/``.
    issuer: str | None = None
    #: The API identifier(s); a token must name at least one in ``aud``. Auth0's
    #: ``https://{domain}/userinfo`` is refused: every token of the tenant carries it.
    audience: str | Sequence[str] = ()
    #: The claim ``audience`` is matched against: ``"aud"``, or ``"client_id"`` for an
    #: issuer whose access tokens have no ``aud`` (Amazon Cognito): ``audience`` is then
    #: the app client id(s), and a token that has an ``aud`` is refused.
    audience_claim: str = "aud"
    #: Allowed JWS algorithms (never ``none`` or ``HS*``).
    algorithms: Sequence[str] = ("RS256",)
    #: Seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
    leeway: float = 5
    #: Claims that must be present besides ``exp``, ``iss`` and ``aud``.
    required_claims: Sequence[str] = ("iat",)
    #: Require the JOSE ``typ`` to be ``at+jwt`` (RFC 9068).
    strict_typ: bool = False
    #: Reject tokens whose ``iat`` is older than this many seconds.
    max_token_age: float | None = None
    #: Accept tokens with a ``cnf`` (key-bound: DPoP, mutual TLS) as bearer tokens.
    #: Only for a gateway in front of the app that has checked the binding itself.
    accept_bound_tokens: bool = False
    #: Where the issuer publishes its keys; derived from ``domain`` or discovered.
    jwks_uri: str | None = None
    #: Seconds a fetched key set is fresh when the issuer sends no ``Cache-Control:
    #: max-age`` (``no-cache``/``no-store`` give the lower bound, never a fetch per request).
    jwks_cache_ttl: float = 600
    #: Minimum seconds between two refreshes triggered by unknown ``kid`` values.
    jwks_refresh_cooldown: float = 30
    #: Seconds a key fetch may take before it is abandoned.
    jwks_fetch_timeout: float = 5
    #: Seconds the last good key set keeps serving past freshness while the issuer fails.
    jwks_max_stale: float = 6 * 3600
    #: Further accepted issuers (e.g. an Auth0 custom domain beside the canonical one).
    additional_issuers: Sequence[str] = ()
    #: Tokens longer than this many bytes are refused before any parsing.
    max_token_size: int = 16 * 1024
    #: How many verified tokens to remember (0 turns the cache off); at most 2,048
    #: token characters each on average, so large tokens get fewer entries.
    token_cache_size: int = 4096
    #: The realm of the ``WWW-Authenticate`` challenge.
    realm: str = "api"
    #: An Auth0 application client id, for the Swagger UI login (authorization code + PKCE).
    client_id: str | None = None
    #: DPoP (RFC 9449) at the middleware: ``"disabled"`` (the ``DPoP`` scheme is not
    #: ours and a DPoP-bound token sent as Bearer is refused), ``"allowed"`` (Bearer
    #: and DPoP-bound tokens with their proofs) or ``"required"`` (DPoP only).
    dpop: str = "disabled"
    #: Algorithms a DPoP proof may be signed with (asymmetric only), as the ``algs``
    #: of the DPoP challenge lists them.
    dpop_algorithms: Sequence[str] = ("ES256",)
    #: Seconds a DPoP proof stays acceptable after its ``iat``.
    dpop_max_age: float = 300
    #: Seconds a DPoP proof's ``iat`` may lie in the future (clients' clocks drift).
    dpop_leeway: float = 30

    # Derived once here so the request path never recomputes them.
    audiences: tuple[str, ...] = field(init=False, repr=False)
    issuers: tuple[str, ...] = field(init=False, repr=False)
    # The domain that issuer and jwks_uri were derived from. dataclasses.replace()
    # passes every init field back in, so replace(config, domain="prod...") would hand
    # the old tenant's derived issuer and jwks_uri to __post_init__ as if written by
    # hand: the "prod" config would then accept the old tenant's tokens. This field
    # travels with them and tells a carried-over derived value from a chosen one.
    _derived_from: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        if isinstance(self.domain, str):
            put(self, "domain", self.domain.lower())
        old = self._derived_from
        if isinstance(old, str) and old != self.domain:
            # Copied from a config with another domain (dataclasses.replace): what was
            # derived from the old domain is derived again, from the new one (or, with
            # no domain now, left to discovery); values chosen by hand are kept.
            stale = _issuer_from_domain(old)
            if self.issuer == stale:
                put(self, "issuer", None)
            if self.jwks_uri == f"{stale}.well-known/jwks.json":
                put(self, "jwks_uri", None)
        put(self, "_derived_from", None)
        if self.domain is None and self.issuer is None:
            raise ConfigError("give either domain= (an Auth0 tenant host) or issuer= (a URL)")
        custom_domain = False
        if self.domain is not None:
            derived = _issuer_from_domain(self.domain)
            custom_domain = self.issuer is not None and self.issuer != derived
            if self.issuer is None:
                put(self, "issuer", derived)
            if self.jwks_uri is None:
                put(self, "jwks_uri", f"{derived}.well-known/jwks.json")
            put(self, "_derived_from", self.domain)
        issuer = validate_url("issuer", self.issuer)
        # Auth0's own spelling first: for its hosts that message names the right one.
        _check_auth0_issuer("issuer", issuer, self.domain)
        if custom_domain:
            _check_custom_domain(issuer, self.domain or "")
        _no_query("issuer", issuer)
        _check_issuer_is_one_tenant("issuer", issuer)
        put(self, "issuer", issuer)
        extra = _strings("additional_issuers", self.additional_issuers, allow_empty=True)
        for iss in extra:
            validate_url("additional_issuers", iss)
            _check_auth0_issuer("additional_issuers entry", iss, self.domain)
            _no_query("additional_issuers", iss)
            _check_issuer_is_one_tenant("additional_issuers entry", iss)
        put(self, "additional_issuers", extra)
        put(self, "issuers", tuple(dict.fromkeys((self.issuer, *extra))))
        if self.jwks_uri is not None:
            validate_url("jwks_uri", self.jwks_uri)
            _check_jwks_uri(self.jwks_uri, self.domain, self.issuers)

        if self.audience in ((), "", None):
            raise ConfigError(
                "audience is required: set it to your API identifier (e.g. "
                "'https://api.example.com'); without it any token of the tenant would pass"
            )
        if self.audience_claim not in _AUDIENCE_CLAIMS:
            raise ConfigError(
                f"audience_claim must be 'aud' or 'client_id' (for Amazon Cognito, whose "
                f"access tokens carry no aud), got {self.audience_claim!r}"
            )
        if self.audience_claim == "client_id":
            _check_client_id_mode(self)
        audiences = _check_audiences("audience", self.audience)
        if self.audience_claim == "aud" and any(_is_cognito(i) for i in self.issuers):
            _check_cognito_resources(audiences, self.issuers)
        pools = {urlsplit(i).path.strip("/") for i in self.issuers if _is_cognito(i)}
        if self.audience_claim == "client_id" and pools & set(audiences):
            # The pool id is in the issuer URL; client_id names an app client of it.
            raise ConfigError(
                f"audience {sorted(pools & set(audiences))[0]!r} is the user pool's id: "
                "Cognito's access tokens name the app client in client_id, so set "
                "audience to the app client id(s) (Cognito console: App integration > "
                "App clients)"
            )
        _check_not_the_issuers_api(
            audiences,
            {(urlsplit(i).hostname or "").lower() for i in self.issuers} | {self.domain or ""},
        )
        if "account" in audiences and any("/realms/" in urlsplit(i).path for i in self.issuers):
            # Keycloak's default client scopes put aud "account" into the tokens of every
            # client of the realm, as Auth0 does with /userinfo.
            raise ConfigError(
                "audience 'account' is the audience Keycloak adds to the tokens of every "
                "client of the realm (its account console): accepting it would let in "
                "tokens minted for any client; give your API's client an Audience mapper "
                "and use the audience it adds"
            )
        put(self, "audience", audiences[0] if len(audiences) == 1 else audiences)
        put(self, "audiences", audiences)
        put(self, "algorithms", _check_algorithms("algorithms", self.algorithms))
        put(self, "leeway", _seconds("leeway", self.leeway, minimum=0, maximum=300))
        required = _strings("required_claims", self.required_claims, allow_empty=True)
        put(self, "required_claims", required)
        if not isinstance(self.strict_typ, bool):
            raise ConfigError("strict_typ must be True or False")
        if not isinstance(self.accept_bound_tokens, bool):
            raise ConfigError("accept_bound_tokens must be True or False")
        if self.dpop not in DPOP_MODES:
            raise ConfigError(f"dpop must be one of {', '.join(map(repr, DPOP_MODES))}")
        put(self, "dpop_algorithms", _check_algorithms("dpop_algorithms", self.dpop_algorithms))
        put(
            self,
            "dpop_max_age",
            _seconds("dpop_max_age", self.dpop_max_age, minimum=1, maximum=3600),
        )
        put(self, "dpop_leeway", _seconds("dpop_leeway", self.dpop_leeway, minimum=0, maximum=300))
        if self.dpop != "disabled" and self.accept_bound_tokens:
            # RFC 9449 §7.2: a resource server that takes DPoP must refuse a DPoP-bound
            # token sent as Bearer; accept_bound_tokens says the opposite.
            raise ConfigError(
                "accept_bound_tokens=True takes key-bound tokens as bearer tokens, which "
                f"dpop={self.dpop!r} must refuse (RFC 9449 §7.2): use one or the other"
            )
        if self.max_token_age is not None:
            put(
                self,
                "max_token_age",
                _seconds("max_token_age", self.max_token_age, minimum=1, maximum=10 * 365 * 86400),
            )
        put(
            self,
            "jwks_cache_ttl",
            _seconds("jwks_cache_ttl", self.jwks_cache_ttl, minimum=1, maximum=7 * 86400),
        )
        put(
            self,
            "jwks_refresh_cooldown",
            _seconds("jwks_refresh_cooldown", self.jwks_refresh_cooldown, minimum=0, maximum=86400),
        )
        put(
            self,
            "jwks_fetch_timeout",
            _seconds("jwks_fetch_timeout", self.jwks_fetch_timeout, minimum=0.05, maximum=120),
        )
        put(
            self,
            "jwks_max_stale",
            _seconds("jwks_max_stale", self.jwks_max_stale, minimum=0, maximum=30 * 86400),
        )
        for name in ("max_token_size", "token_cache_size"):
            value: Any = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer")
        if self.max_token_size < 256:
            raise ConfigError("max_token_size must be at least 256 bytes")
        if (
            not isinstance(self.realm, str)
            or not _REALM_RE.match(self.realm)
            or any(c in self.realm for c in '"\\')
        ):
            raise ConfigError("realm must be 1-200 printable ASCII characters without quotes")
        if self.client_id is not None and (
            not isinstance(self.client_id, str)
            or not re.fullmatch(r"[A-Za-z0-9._~-]{1,200}", self.client_id)
        ):
            raise ConfigError("client_id must be an Auth0 client id (letters, digits, . _ ~ -)")
        if (
            self.audience_claim == "aud"
            and self.client_id is not None
            and self.client_id in audiences
            and (self.domain is not None or _is_auth0_host(urlsplit(issuer).netloc, None))
        ):
            # An access token's aud names the API; an ID token's names the application.
            # With the client id as an audience, ID tokens pass as access tokens. Only
            # for Auth0, where an API identifier is never a client id: with Entra ID one
            # app registration may be both the API and the Swagger client.
            raise ConfigError(
                f"audience {self.client_id!r} is the application's client id: that is the "
                "aud of ID tokens, so they would pass as access tokens; set audience to "
                "your API's identifier (Auth0 dashboard: Applications > APIs)"
            )
        if self.audience_claim == "aud" and (
            self.domain is not None or _is_auth0_host(urlsplit(issuer).netloc, None)
        ):
            for aud in audiences:
                # Without client_id= the same slip goes unseen: a SPA that got no API
                # access token sends its ID token, and the audience is set to the
                # client id to make it pass. Auth0 client ids are 32 letters and digits;
                # API identifiers are URLs or names, in practice never of that shape.
                if _AUTH0_CLIENT_ID.fullmatch(aud):
                    raise ConfigError(
                        f"audience {aud!r} has the shape of an Auth0 client id (32 letters "
                        "and digits): a client id is the aud of ID tokens, so they would "
                        "pass as access tokens; set audience to your API's identifier "
                        "(Auth0 dashboard: Applications > APIs), and have the client ask "
                        "for audience=<that identifier>"
                    )

    @property
    def discovery_url(self) -> str:
        """The OIDC discovery document URL for ``issuer``."""
        return discovery_url_for(self.issuer or "")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Auth0Config:
        """Build a config from ``AUTH0_*`` environment variables.

        Reads ``AUTH0_DOMAIN`` or ``AUTH0_ISSUER_BASE_URL``, ``AUTH0_AUDIENCE``
        (comma-separated for several), optional ``AUTH0_ALGORITHMS`` (comma-separated)
        and ``AUTH0_CLIENT_ID``. Keyword ``overrides`` win over the environment. A
        missing or bad value raises :class:`ConfigError` naming the variable.

        ``AUTH0_ISSUER_BASE_URL`` is read as Auth0's SDKs document it, a base URL: on an
        Auth0 host (``*.auth0.com``), or any host when ``AUTH0_DOMAIN`` is set too (the
        tenant's custom domain), with no path, ``https://tenant.auth0.com`` becomes the
        issuer ``https://tenant.auth0.com/``
        that Auth0 puts in ``iss``. Every other URL is the exact issuer, as written
        (Okta's ``https://x.okta.com``, Keycloak's ``.../realms/r``). An ``issuer=``
        override is always exact, and refused on a bare Auth0 host.
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}

        def read(name: str) -> str | None:
            value = env.get(name)
            if value is None or not value.strip():
                return None
            return value.strip()

        domain, issuer = read("AUTH0_DOMAIN"), read("AUTH0_ISSUER_BASE_URL")
        if domain is None and issuer is None and not {"domain", "issuer"} & overrides.keys():
            raise ConfigError("AUTH0_DOMAIN (or AUTH0_ISSUER_BASE_URL) is not set")
        audience = read("AUTH0_AUDIENCE")
        if audience is None and "audience" not in overrides:
            raise ConfigError("AUTH0_AUDIENCE is not set")

        # Which variable each setting was read from, to name it in a later error.
        variables: dict[str, str] = {}

        def attempt(var: str, key: str, value: Any) -> None:
            try:
                cls._check_one(key, value)
            except ConfigError as exc:
                raise ConfigError(f"{var}: {exc}") from exc
            kwargs[key] = value
            variables[key] = var

        if domain is not None:
            attempt("AUTH0_DOMAIN", "domain", domain)
        if issuer is not None:
            attempt("AUTH0_ISSUER_BASE_URL", "issuer", issuer)
            kwargs["issuer"] = _issuer_from_base_url(issuer, domain)
        if audience is not None:
            parts = tuple(a.strip() for a in audience.split(","))
            attempt("AUTH0_AUDIENCE", "audience", parts)
        algorithms = read("AUTH0_ALGORITHMS")
        if algorithms is not None:
            attempt(
                "AUTH0_ALGORITHMS", "algorithms", tuple(a.strip() for a in algorithms.split(","))
            )
        client_id = read("AUTH0_CLIENT_ID")
        if client_id is not None:
            attempt("AUTH0_CLIENT_ID", "client_id", client_id)
        from_environment = {k: var for k, var in variables.items() if k not in overrides}
        kwargs.update(overrides)
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            # Rules over several settings (an issuer beside a domain, the client id as
            # audience) or Auth0's issuer spelling fail only here: name the variables
            # they were read from, as for a bad value alone.
            message = str(exc)

            def mentions(key: str) -> bool:
                # Whole words: "issuer" is not named by "additional_issuers".
                return bool(re.search(rf"\b{key}\b", message)) or key.replace("_", " ") in message

            # A message begins with the setting it is about; one passed in code
            # ("additional_issuers entry ...") is no variable's fault.
            subject = re.match(r"[a-z_]+", message)
            if subject is not None and subject.group() in overrides:
                raise
            named = [var for key, var in from_environment.items() if mentions(key)]
            if not named and any(mentions(key) for key in overrides):
                raise
            named = named or list(from_environment.values())
            if not named:
                raise
            raise ConfigError(f"{', '.join(named)}: {message}") from exc

    @staticmethod
    def _check_one(key: str, value: Any) -> None:
        if key == "domain":
            _issuer_from_domain(value)
        elif key == "issuer":
            validate_issuer("issuer", value)
        elif key == "audience":
            _check_audiences("audience", value)
        elif key == "algorithms":
            _check_algorithms("algorithms", value)
        elif key == "client_id" and not re.fullmatch(r"[A-Za-z0-9._~-]{1,200}", value):
            raise ConfigError("not an Auth0 client id (letters, digits, . _ ~ -)")


def discovery_url_for(issuer: str) -> str:
    """``{issuer}/.well-known/openid-configuration`` without doubling the slash."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"
