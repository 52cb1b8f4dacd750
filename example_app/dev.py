"""What ``python -m example_app`` prints: dev tokens, curl commands and Swagger hints."""

from __future__ import annotations

import ipaddress
import shlex
import socket
from dataclasses import dataclass

from asgi_auth0 import Auth0Config
from asgi_auth0.testing import LocalIssuer

from .app import ADMIN_PERMISSION, MESSAGES_SCOPE

__all__ = [
    "DEV_AUDIENCE",
    "DEV_SUBJECT",
    "DEV_TOKEN_LIFETIME",
    "DevTokens",
    "dev_banner",
    "dev_description",
    "dev_tokens",
    "listen_url",
    "tenant_banner",
]

#: The API identifier (``aud``) of the offline dev mode.
DEV_AUDIENCE = "https://api.example.test"
#: The ``sub`` of every dev token.
DEV_SUBJECT = "dev-user"
#: Seconds a printed dev token stays valid: Auth0's default access-token lifetime.
DEV_TOKEN_LIFETIME = 24 * 3600


@dataclass(frozen=True)
class DevTokens:
    """One token per kind of access the example routes check."""

    #: No scope and no permission: /api/private only.
    plain: str
    #: The scope ``read:messages``.
    messages: str
    #: The permission ``read:admin``.
    admin: str
    #: Both, for Swagger UI's "Authorize" box.
    everything: str


def dev_tokens(issuer: LocalIssuer) -> DevTokens:
    """Fresh tokens from the dev issuer."""

    def mint(scope: str | None = None, permissions: list[str] | None = None) -> str:
        return issuer.token(
            sub=DEV_SUBJECT, scope=scope, permissions=permissions, expires_in=DEV_TOKEN_LIFETIME
        )

    return DevTokens(
        plain=mint(),
        messages=mint(scope=MESSAGES_SCOPE),
        admin=mint(permissions=[ADMIN_PERMISSION]),
        everything=mint(scope=MESSAGES_SCOPE, permissions=[ADMIN_PERMISSION]),
    )


def listen_url(sock: socket.socket) -> str:
    """The ``http://host:port`` a local client should use for a listening socket."""
    host, port = sock.getsockname()[:2]
    address = ipaddress.ip_address(host)
    if address.is_unspecified:
        # Bound to every interface: loopback is one of them and always reachable.
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{port}"


def _curl(url: str, token: str | None = None) -> str:
    parts = ["curl", "-i"]
    if token is not None:
        parts += ["-H", f"Authorization: Bearer {token}"]
    return shlex.join([*parts, url])


def dev_description(issuer: LocalIssuer) -> str:
    """The Swagger UI intro for dev mode."""
    return (
        "**Offline dev mode.** Tokens come from an embedded dev issuer at "
        f"`{issuer.issuer}` (audience `{issuer.audience}`). Click **Authorize** and paste "
        "the token printed in the terminal that runs `make demo`, then *Try it out* on "
        "any route. Without a token the protected routes answer 401."
    )


def dev_banner(issuer: LocalIssuer, base_url: str, *, host: str = "127.0.0.1") -> str:
    """The text printed at start-up in dev mode: what runs where, and commands to try."""
    tokens = dev_tokens(issuer)
    hours = DEV_TOKEN_LIFETIME // 3600
    lines = [
        "",
        "asgi_auth0 example API: offline dev mode (no AUTH0_* variables set)",
        f"  API:         {base_url}",
        f"  Swagger UI:  {base_url}/docs",
        f"  Dev issuer:  {issuer.issuer}  (audience {issuer.audience})",
        f"  Tokens below are valid for {hours} h, and only while this process runs.",
    ]
    if not _is_loopback(host):
        lines.append(
            f"  WARNING: listening on {host}, not loopback: anyone who can reach this "
            "port can use the tokens printed here."
        )
    lines += [
        "",
        "Try it:",
        "",
        "  # public: no token needed",
        f"  {_curl(base_url + '/api/public')}",
        "",
        "  # private: any valid token -> 200 (without the header: 401)",
        f"  {_curl(base_url + '/api/private', tokens.plain)}",
        "",
        f"  # scope {MESSAGES_SCOPE} -> 200 (the private token above gets 403 here)",
        f"  {_curl(base_url + '/api/messages', tokens.messages)}",
        "",
        f"  # permission {ADMIN_PERMISSION} -> 200",
        f"  {_curl(base_url + '/api/admin', tokens.admin)}",
        "",
        "  # the signing-key cache",
        f"  {_curl(base_url + '/health')}",
        "",
        f"  # WebSocket: {base_url.replace('http', 'ws', 1)}/ws with the same "
        "Authorization header on the handshake",
        "",
        f'Swagger UI: open {base_url}/docs, click "Authorize" and paste this token '
        f"({MESSAGES_SCOPE} and {ADMIN_PERMISSION}):",
        "",
        f"  {tokens.everything}",
        "",
        "Press Ctrl+C to stop.",
        "",
    ]
    return "\n".join(lines)


def tenant_banner(config: Auth0Config, base_url: str) -> str:
    """The text printed at start-up when protecting routes with a real Auth0 tenant."""
    if config.client_id:
        login = (
            f'Swagger UI "Authorize" logs in with Auth0 client {config.client_id} (PKCE); '
            f"allow {base_url}/docs/oauth2-redirect as a callback URL of that application."
        )
    else:
        login = (
            'Swagger UI "Authorize" takes a pasted access token; set AUTH0_CLIENT_ID to '
            "log in through Auth0 instead."
        )
    return "\n".join(
        [
            "",
            "asgi_auth0 example API: Auth0 mode",
            f"  API:         {base_url}",
            f"  Swagger UI:  {base_url}/docs",
            f"  Issuer:      {config.issuer}",
            f"  Audience:    {', '.join(config.audiences)}",
            f"  {login}",
            "",
            "Press Ctrl+C to stop.",
            "",
        ]
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
