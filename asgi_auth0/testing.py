"""A local token issuer for tests and development: keys, discovery, JWKS and tokens.

:class:`LocalIssuer` plays the part of an Auth0 tenant on your machine. It generates
real signing keys, publishes them as a JWKS and an OIDC discovery document, and mints
real tokens signed with them, so the code under test verifies tokens exactly as it
would in production, with no tenant, no network and no mocking of the library.

It serves its documents two ways:

* as an ASGI app (:attr:`LocalIssuer.asgi_app`), for ``httpx.ASGITransport``;
* as a real HTTP server on ``127.0.0.1`` (a free port by default), started by using the
  issuer as a context manager, from sync or async code::

      with LocalIssuer() as issuer:
          config = issuer.config()
          token = issuer.token(scope="read:messages")

      async with LocalIssuer(key_type="P-256") as issuer:
          ...

The HTTP server runs in daemon threads (stdlib :mod:`http.server`; no extra
dependency), so it works under asyncio and trio alike and never blocks an event loop.

For outage tests the issuer misbehaves on request, at runtime, from any thread:
:meth:`~LocalIssuer.fail_with`, :meth:`~LocalIssuer.slow`, :meth:`~LocalIssuer.garbage`,
:meth:`~LocalIssuer.oversized`, :meth:`~LocalIssuer.reset_connections`,
:meth:`~LocalIssuer.hold` / :meth:`~LocalIssuer.release`, and
:meth:`~LocalIssuer.stop` / :meth:`~LocalIssuer.start` on the same port;
:meth:`~LocalIssuer.heal` puts it back to normal. Every request is counted per path
(:attr:`~LocalIssuer.requests`) so tests can assert exact fetch counts.

An issuer with a path (Keycloak's ``.../realms/myrealm``, Okta's
``.../oauth2/default``) serves discovery where a real one would: OpenID Connect's
``{issuer}/.well-known/openid-configuration`` and RFC 8414's
``/.well-known/oauth-authorization-server{path}``; see
:attr:`~LocalIssuer.discovery_path`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import secrets
import selectors
import socket
import socketserver
import struct
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ._config import Auth0Config, validate_issuer
from ._dpop import access_token_hash, jwk_thumbprint
from ._signing import (
    DEFAULT_ALG,
    PrivateKey,
    b64url,
    compact_json,
    generate_private_key,
    public_jwk,
    sign,
)

__all__ = [
    "ALL_PATHS",
    "DISCOVERY_PATH",
    "JWKS_PATH",
    "OAUTH_METADATA_PATH",
    "DPoPKey",
    "LocalIssuer",
    "PrivateKey",
    "TokenFactory",
    "generate_private_key",
    "public_pem",
]

logger: logging.Logger = logging.getLogger("asgi_auth0.testing")

#: Where the issuer serves its JWKS (whatever the issuer's path).
JWKS_PATH = "/.well-known/jwks.json"
#: Where an issuer without a path serves its OpenID Connect discovery document; an
#: issuer with a path serves it under that path (:attr:`LocalIssuer.discovery_path`).
#: As ``paths=`` of a misbehaviour it means the discovery document wherever it is.
DISCOVERY_PATH = "/.well-known/openid-configuration"
#: Where an issuer without a path serves the same metadata per RFC 8414 (OAuth server
#: metadata); an issuer with a path serves it at this prefix followed by the path
#: (:attr:`LocalIssuer.oauth_metadata_path`). As ``paths=`` of a misbehaviour it means
#: that document wherever it is.
OAUTH_METADATA_PATH = "/.well-known/oauth-authorization-server"
#: Pass as ``paths=`` to make a misbehaviour apply to every path the issuer answers.
ALL_PATHS = "*"

_LOOPBACK = "127.0.0.1"
_DEFAULT_AUDIENCE = "https://api.example.test"
_WRONG_ISSUER = "https://wrong-issuer.example.test/"
_WRONG_AUDIENCE = "https://another-api.example.test"
# The leeway of config() (it sets none): expired_token() must mint a token past it.
_CONFIG_LEEWAY = float(Auth0Config.leeway)
# How long close() waits for one server thread to finish before giving up on it.
_JOIN_TIMEOUT = 5.0
_KEY_TYPES = frozenset(DEFAULT_ALG)
_ALGS_BY_KIND: dict[str, frozenset[str]] = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "P-256": frozenset({"ES256"}),
    "P-384": frozenset({"ES384"}),
    "P-521": frozenset({"ES512"}),
    "Ed25519": frozenset({"EdDSA", "Ed25519"}),
}
_CURVE_KINDS = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
# What each kind of key can make a signature for. Looser than _ALGS_BY_KIND (which a
# key is published with): ES384 over a P-256 key is a meaningful forgery to test.
_ES = frozenset({"ES256", "ES384", "ES512"})
_SIGNABLE: dict[str, frozenset[str]] = {
    "RSA": _ALGS_BY_KIND["RSA"],
    "P-256": _ES,
    "P-384": _ES,
    "P-521": _ES,
    "Ed25519": _ALGS_BY_KIND["Ed25519"],
}
# HS* "signatures" keyed with the public key: the classic alg-confusion forgery.
_HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}

Paths = str | Iterable[str]
ASGIScope = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _is_finite_number(value: object) -> bool:
    # math.isfinite raises OverflowError on an int too large for a float (10**400):
    # that is not a finite number of seconds either, and must read as a ValueError.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _key_kind(key: PrivateKey) -> str:
    """``"RSA"``, ``"P-256"``, ``"P-384"``, ``"P-521"`` or ``"Ed25519"`` for a private key."""
    if isinstance(key, rsa.RSAPrivateKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        kind = _CURVE_KINDS.get(key.curve.name)
        if kind is not None:
            return kind
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        return "Ed25519"
    raise TypeError(f"unsupported private key type {type(key).__name__}")


def public_pem(key: PrivateKey) -> bytes:
    """The PEM (SubjectPublicKeyInfo) of ``key``'s public half: the bytes an attacker
    uses as the HMAC secret in an alg-confusion forgery (``HS256`` over an RSA key)."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _signature(key: PrivateKey, alg: str, data: bytes, *, own_alg: str) -> bytes:
    """The signature of ``data`` under ``alg``: ``none`` (any case) is empty, ``HS*``
    is an HMAC keyed with the public key's PEM, the rest are made by ``key``."""
    if alg.lower() == "none":
        return b""
    hmac_hash = _HMAC_HASHES.get(alg)
    if hmac_hash is not None:
        return hmac.new(public_pem(key), data, hmac_hash).digest()
    kind = _key_kind(key)
    if alg not in _SIGNABLE[kind]:
        raise ValueError(
            f"cannot sign with alg {alg!r}: the {kind} key signs with "
            f"{', '.join(sorted(_SIGNABLE[kind]))}; the kit also mints 'none' (an empty "
            f"signature) and HS256/HS384/HS512 (an HMAC keyed with the public key's PEM, "
            f"the alg-confusion forgery). For a header that claims {alg!r} over a "
            f"signature it does not describe, say what to sign with: "
            f"issuer.token(headers={{'alg': {alg!r}}}, signing_alg={own_alg!r}), or "
            f"issuer.sign(header, payload, signing_alg={own_alg!r})"
        )
    return sign(key, alg, data)


def _crafted_jws(
    key: PrivateKey,
    header: Mapping[str, Any],
    payload: bytes,
    *,
    signing_alg: str | None,
    own_alg: str,
) -> str:
    """A compact JWS of ``header`` and ``payload`` as given, signed under
    ``signing_alg``, else the header's ``alg``, else ``own_alg`` (see :func:`_signature`)."""
    header_alg = header.get("alg")
    alg = signing_alg or (header_alg if isinstance(header_alg, str) else None) or own_alg
    signing_input = b64url(compact_json(dict(header))) + "." + b64url(payload)
    return (
        signing_input
        + "."
        + b64url(_signature(key, alg, signing_input.encode("ascii"), own_alg=own_alg))
    )


@dataclass(frozen=True)
class _SigningKey:
    """One of the issuer's keys: the private half signs, ``jwk`` is what the JWKS shows."""

    kid: str
    alg: str
    kind: str
    private_key: PrivateKey = field(repr=False)
    jwk: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class _Fault:
    """One active misbehaviour: its parameter and the paths it applies to (None: all)."""

    value: Any
    paths: frozenset[str] | None

    def applies(self, names: frozenset[str]) -> bool:
        """Whether it applies to a request known by ``names`` (its path, and its role
        such as :data:`DISCOVERY_PATH` when the document lives elsewhere)."""
        return self.paths is None or not self.paths.isdisjoint(names)


@dataclass(frozen=True)
class _Reply:
    """What to answer one request with (computed under the lock, sent outside it)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    # False: no Content-Length; the body ends when the connection closes.
    content_length: bool = True


def _normalise_paths(paths: Paths) -> frozenset[str] | None:
    if paths == ALL_PATHS:
        return None
    items = (paths,) if isinstance(paths, str) else tuple(paths)
    for item in items:
        if not isinstance(item, str) or not item.startswith("/"):
            raise ValueError(f"paths must be absolute paths such as {JWKS_PATH!r}, got {item!r}")
    return frozenset(items)


class _Handler(BaseHTTPRequestHandler):
    """Hands every request to the owning :class:`LocalIssuer`."""

    # HTTP/1.1 with keep-alive, as a real issuer: clients pool connections, and stop()
    # must cope with idle kept-alive connections (it shuts their sockets down).
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the client's delayed
    # ACK would add ~40 ms to every response.
    disable_nagle_algorithm = True
    server: _IssuerHTTPServer
    server_version = "asgi-auth0-LocalIssuer"
    sys_version = ""

    def do_GET(self) -> None:
        self.server.issuer._serve_http(self, head=False)

    def do_HEAD(self) -> None:
        self.server.issuer._serve_http(self, head=True)

    def _method_not_allowed(self) -> None:
        self.server.issuer._serve_http(self, head=False)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _method_not_allowed

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes access logs to stderr; tests want silence, debugging wants logs.
        logger.debug("LocalIssuer: " + format, *args)


class _IssuerHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that tracks its connections and handler threads, so that
    stopping it is fast and complete: idle keep-alive connections are shut down, every
    handler thread is joined, and nothing is left behind to warn about."""

    daemon_threads = True
    # Restarting on the same port must work right after stop(), despite TIME_WAIT.
    allow_reuse_address = True
    # The stdlib default backlog of 5 makes bursts of concurrent clients (flood and
    # rotation scenarios) wait for SYN retransmits, which take a second or more.
    request_queue_size = 1024

    def __init__(self, port: int, issuer: LocalIssuer) -> None:
        self.issuer = issuer
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handler_threads: set[threading.Thread] = set()
        self._to_reset: set[socket.socket] = set()
        super().__init__((_LOOPBACK, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (socket.getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._process,
            args=(request, client_address),
            name=f"LocalIssuer-conn-{self.server_port}",
            daemon=True,
        )
        with self._lock:
            self._connections.add(request)
            # Finished threads are pruned here rather than removing themselves, so
            # join_handlers() joins every thread that ever ran, not just live entries.
            self._handler_threads = {t for t in self._handler_threads if t.is_alive()}
            self._handler_threads.add(thread)
        thread.start()

    def _process(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._lock:
                self._connections.discard(request)

    def mark_for_reset(self, request: socket.socket) -> None:
        """Close ``request`` with a TCP RST instead of an orderly shutdown."""
        with contextlib.suppress(OSError):
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._lock:
            self._to_reset.add(request)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            reset = request in self._to_reset
            self._to_reset.discard(request)
        if reset:
            # No SHUT_WR first: with SO_LINGER 0, close() sends RST, not FIN.
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The stdlib prints tracebacks to stderr; clients hanging up mid-answer are normal
        # in fault tests, so log quietly instead.
        logger.debug("LocalIssuer: error while answering %s", client_address, exc_info=True)

    def drop_all_connections(self) -> None:
        """Shut down every open connection so blocked reads and writes return at once."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout: float) -> None:
        """Join every handler thread (the listener is closed, so no new ones start)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._handler_threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = sum(t.is_alive() for t in threads)
        if stuck:
            logger.warning("LocalIssuer: %d handler threads did not stop", stuck)


class _Runner:
    """One run of the HTTP server: the listening socket, its accept thread and a wake-up
    pipe so :meth:`stop` interrupts the accept loop at once (no polling interval)."""

    def __init__(self, issuer: LocalIssuer, port: int) -> None:
        self.server = _IssuerHTTPServer(port, issuer)
        self.port = self.server.server_port
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"LocalIssuer-accept-{self.port}", daemon=True
        )
        self._thread.start()

    def _accept_loop(self) -> None:
        server = self.server
        # handle_request() waits at most this long; the selector below already knows
        # a connection is pending, so it never actually waits.
        server.timeout = 0
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r or self._stopping:
                        return
                    server.handle_request()

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(_JOIN_TIMEOUT)
        self.server.server_close()
        self.server.drop_all_connections()
        self.server.join_handlers(_JOIN_TIMEOUT)
        self._wake_r.close()
        self._wake_w.close()


# DPoPKey.proof()'s default iat: "now", told apart from None, which removes the claim.
_NOW: Any = object()


class DPoPKey:
    """A client's DPoP key (RFC 9449), for testing an API with ``dpop="allowed"`` or
    ``"required"``: the key pair, the ``cnf`` to bind a token to it, and proofs.

    ::

        client = DPoPKey()
        token = issuer.token(cnf=client.cnf)
        headers = client.headers(token, "GET", "http://testserver/me")
        response = await http.get("/me", headers=headers)

    Every proof gets a fresh ``jti``; keyword arguments of :meth:`proof` override or
    (given as ``None``) remove any claim or header member, to mint broken proofs.
    A proof's ``iat`` comes from ``clock`` (``time.time`` by default): give the clock
    your verifier and issuer use when a test sets the time (the pytest plugin's
    ``dpop_key`` takes its issuer's), as patching ``time.time`` reaches neither of
    those, which keep the function they were given.
    """

    def __init__(
        self,
        kind: str = "P-256",
        *,
        alg: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if kind not in _ALGS_BY_KIND:
            raise ValueError(f"unknown key kind {kind!r}; choose from {', '.join(_ALGS_BY_KIND)}")
        if not callable(clock):
            raise TypeError(f"clock must be a function returning the time, not {clock!r}")
        chosen = alg or DEFAULT_ALG[kind]
        if chosen not in _ALGS_BY_KIND[kind]:
            # Caught here, not at the first proof(): the mistake is in this line.
            raise ValueError(
                f"a {kind} key signs with {', '.join(sorted(_ALGS_BY_KIND[kind]))}, not {chosen!r}"
            )
        #: The private key (``"P-256"`` by default; any kind :class:`LocalIssuer` takes).
        self.private_key: PrivateKey = generate_private_key(kind)
        #: The algorithm proofs are signed with.
        self.alg: str = chosen
        jwk = public_jwk(self.private_key)
        jwk.pop("use", None)
        #: The public JWK a proof carries in its ``jwk`` header.
        self.jwk: dict[str, Any] = jwk
        #: The RFC 7638 SHA-256 thumbprint of :attr:`jwk`: a bound token's ``cnf.jkt``.
        self.jkt: str = jwk_thumbprint(jwk)
        #: Where a proof's ``iat`` comes from (seconds since the epoch).
        self.clock: Callable[[], float] = clock

    @property
    def cnf(self) -> dict[str, str]:
        """The ``cnf`` claim binding a token to this key: ``{"jkt": ...}``."""
        return {"jkt": self.jkt}

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        iat: Any = _NOW,
        headers: Mapping[str, Any] | None = None,
        signing_alg: str | None = None,
        **claims: Any,
    ) -> str:
        """A DPoP proof for one request: ``htm`` ``method``, ``htu`` ``url`` (sent as
        given: the API ignores its query), ``iat`` now in whole seconds (or ``iat`` as
        given, any JSON value), a random ``jti``, and ``ath`` when ``access_token`` is
        given. ``iat``, ``claims`` and ``headers`` override or, as ``None``, remove
        payload claims and header members.

        The signature follows the header's ``alg`` (or ``signing_alg``, when given), as
        :meth:`LocalIssuer.token`'s does: ``headers={"alg": "none"}`` mints an empty
        signature, ``HS256``/``HS384``/``HS512`` an HMAC keyed with the public key's
        PEM (the alg-confusion forgery), and a header claiming an algorithm this key
        cannot sign with needs ``signing_alg`` (this key's :attr:`alg`, say) to say
        what to sign with: ``proof(..., headers={"alg": "EdDSA"}, signing_alg="ES256")``.
        """
        payload: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": url,
            "iat": math.floor(self.clock()) if iat is _NOW else iat,
        }
        if access_token is not None:
            payload["ath"] = access_token_hash(access_token)
        payload.update(claims)
        header: dict[str, Any] = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.jwk}
        header.update(headers or {})
        payload = {k: v for k, v in payload.items() if v is not None}
        header = {k: v for k, v in header.items() if v is not None}
        return _crafted_jws(
            self.private_key,
            header,
            compact_json(payload),
            signing_alg=signing_alg,
            own_alg=self.alg,
        )

    def headers(self, access_token: str, method: str, url: str, **claims: Any) -> dict[str, str]:
        """The two request headers of a DPoP request: ``Authorization: DPoP <token>``
        and ``DPoP: <proof>`` (``claims`` as for :meth:`proof`)."""
        return {
            "Authorization": f"DPoP {access_token}",
            "DPoP": self.proof(method, url, access_token=access_token, **claims),
        }

    def __repr__(self) -> str:
        return f"DPoPKey(alg={self.alg!r}, jkt={self.jkt!r})"


class TokenFactory(Protocol):
    """The type of :meth:`LocalIssuer.token` as a callable, e.g. of the pytest plugin's
    ``auth0_token`` fixture: annotate fixtures and tests with it.

    Import it from here (``from asgi_auth0.testing import TokenFactory``) rather than
    from :mod:`asgi_auth0.pytest_plugin`: a ``conftest.py`` that imports the plugin
    module itself does so before pytest registers it as a plugin.
    """

    def __call__(
        self,
        sub: str | None = ...,
        scope: Any = ...,
        permissions: Any = ...,
        expires_in: float = ...,
        **claims: Any,
    ) -> str:
        """Mint a signed access token for the issuer."""
        ...


class LocalIssuer:
    """A local Auth0-like token issuer: real keys, a JWKS, discovery and token minting.

    Args:
        audience: The API identifier put in ``aud`` (and in :meth:`config`).
        key_type: ``"RSA"`` (default), ``"P-256"``, ``"P-384"``, ``"P-521"`` or
            ``"Ed25519"``. Ignored when ``private_key`` is given (its type wins).
        alg: The signing algorithm; by default RS256, ES256, ES384, ES512 or EdDSA to
            fit the key type. Must fit the key (PS256 on an RSA key is fine).
        kid: The first key's id; random by default.
        issuer: The exact ``iss`` string. By default it is the server's base URL with a
            trailing slash (Auth0 style): ``http://127.0.0.1:PORT/``. Give one to use
            the issuer as an ASGI app only (no server), to play a custom domain, or to
            play an issuer with a path (``issuer=f"http://127.0.0.1:{port}/realms/r"``
            with that ``port=``; ``issuer_path=`` is simpler).
        issuer_path: Play an issuer with a path on the local server, such as Keycloak's
            ``"/realms/myrealm"``, Okta's ``"/oauth2/default"`` or Entra's
            ``"/TENANT/v2.0"``: the issuer is ``http://127.0.0.1:PORT`` + this path,
            exactly (no slash is added), and discovery is served where a real issuer
            of that URL serves it (:attr:`discovery_path`,
            :attr:`oauth_metadata_path`). Not with ``issuer=``.
        private_key: A pre-generated key to use as the first signing key. RSA key
            generation takes tens of milliseconds; a test suite can generate one key
            per session and hand it to every issuer.
        port: The port to listen on; 0 (default) picks a free one. The port is kept
            across :meth:`stop` / :meth:`start`.
        clock: Returns "now" in seconds since the epoch for ``iat``/``exp``; replace it
            (or the :attr:`clock` attribute) to freeze time.

    The HTTP server binds ``127.0.0.1`` only. It starts on ``with`` / ``async with``
    (or :meth:`start`) and stops, completely, at the end of the block (or
    :meth:`close`). Nothing is cached globally: two issuers share nothing.

    Misbehaviours (:meth:`fail_with`, :meth:`slow`, :meth:`garbage`, :meth:`oversized`,
    :meth:`reset_connections`, :meth:`hold`, :meth:`cache_control`) apply to the JWKS
    path by default; pass ``paths=`` (a path, several, or :data:`ALL_PATHS`) to aim
    them elsewhere. :data:`DISCOVERY_PATH` and :data:`OAUTH_METADATA_PATH` aim at the
    discovery documents wherever this issuer serves them (under its path, if it has
    one). They can be combined (e.g. slow *and* failing), are thread-safe and take
    effect for the next request.
    """

    def __init__(
        self,
        *,
        audience: str = _DEFAULT_AUDIENCE,
        key_type: str = "RSA",
        alg: str | None = None,
        kid: str | None = None,
        issuer: str | None = None,
        issuer_path: str | None = None,
        private_key: PrivateKey | None = None,
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(audience, str) or not audience:
            raise ValueError("audience must be a non-empty string")
        if issuer is not None:
            validate_issuer("issuer", issuer)
        if issuer_path is not None:
            if issuer is not None:
                raise ValueError("give issuer= or issuer_path=, not both")
            if (
                not isinstance(issuer_path, str)
                or not issuer_path.startswith("/")
                or any(c in issuer_path for c in "?#%\\")
                or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in issuer_path)
            ):
                raise ValueError(
                    f"issuer_path must be a plain absolute path such as '/realms/myrealm', "
                    f"got {issuer_path!r}"
                )
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        #: The API identifier put in every token's ``aud``.
        self.audience = audience
        #: Returns "now" (seconds since the epoch); tests may replace it to freeze time.
        self.clock = clock
        self._issuer_override = issuer
        self._issuer_suffix = issuer_path
        # The issuer's path without a trailing slash ("" for Auth0-style issuers): it
        # decides where discovery lives (OIDC Discovery 1.0 §4, RFC 8414 §3).
        named = issuer_path if issuer is None else urlsplit(issuer).path
        self._issuer_path = (named or "").rstrip("/")
        self._port = port
        # One condition (and its lock) guards all mutable state; waiters (hold/slow)
        # sleep on it and are woken by release(), heal(), stop() and close().
        self._cond = threading.Condition()
        self._keys: dict[str, _SigningKey] = {}
        self._published: list[str] = []
        self._current = ""
        self._faults: dict[str, _Fault] = {}
        self._requests: Counter[str] = Counter()
        self._waiting = 0
        # Bumped by stop(): tells waiting handlers their server is going away.
        self._stop_epoch = 0
        self._runner: _Runner | None = None
        self._bad_key: PrivateKey | None = None
        self.add_key(private_key, key_type=key_type, alg=alg, kid=kid, current=True)

    # -- server lifecycle ---------------------------------------------------------------

    def start(self) -> LocalIssuer:
        """Start the HTTP server on 127.0.0.1 (again on the same port after a stop).

        Returns the issuer, so ``issuer = LocalIssuer().start()`` works. Starting a
        running issuer does nothing. Raises :class:`OSError` if the port is taken.
        """
        with self._cond:
            if self._runner is not None:
                return self
            runner = _Runner(self, self._port)
            self._port = runner.port
            self._runner = runner
        logger.debug("LocalIssuer listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop the HTTP server: refuse new connections, drop open ones unanswered.

        Requests blocked by :meth:`hold` or :meth:`slow` are woken and their
        connections dropped. Returns once every server thread has finished. The port
        is remembered, so :meth:`start` listens on the same URL again; tokens, keys,
        counters and misbehaviours are kept.
        """
        with self._cond:
            runner, self._runner = self._runner, None
            if runner is None:
                return
            self._stop_epoch += 1
            self._cond.notify_all()
        runner.stop()

    def close(self) -> None:
        """Stop the server (if running) and release everything; idempotent."""
        self.stop()
        with self._cond:
            # Wake any ASGI-side waiters too; they then answer normally.
            self._stop_epoch += 1
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        """Whether the HTTP server is listening."""
        return self._runner is not None

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> LocalIssuer:
        # Binding a loopback socket and starting a thread does not block the loop.
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Stopping wakes every server thread first, so the joins are short; still,
        # do it off the event loop so a loop-lag probe never sees it. Shielded: this is
        # cleanup, and a cancelled scope must not skip it and leak the server.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)

    def __repr__(self) -> str:
        where = self.url if self._port else "not started"
        return f"<LocalIssuer {where} kid={self._current!r}>"

    # -- addresses ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (0 until the server first starts, unless given)."""
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:PORT`` (no path, no trailing slash).

        Before the server first starts, an issuer built with ``issuer=`` uses that
        issuer's scheme and host (for ASGI-only use); otherwise this raises
        :class:`RuntimeError`.
        """
        if self._port:
            return f"http://{_LOOPBACK}:{self._port}"
        if self._issuer_override is not None:
            parts = urlsplit(self._issuer_override)
            return f"{parts.scheme}://{parts.netloc}"
        raise RuntimeError(
            "LocalIssuer has no URL yet: start it (`with LocalIssuer() as issuer:`) or "
            "pass issuer= to use it as an ASGI app only"
        )

    @property
    def issuer(self) -> str:
        """The exact ``iss`` string of the tokens: ``http://127.0.0.1:PORT/`` by default,
        ``http://127.0.0.1:PORT/realms/myrealm`` with ``issuer_path="/realms/myrealm"``."""
        if self._issuer_override is not None:
            return self._issuer_override
        if self._issuer_suffix is not None:
            return self.url + self._issuer_suffix
        return self.url + "/"

    @property
    def jwks_uri(self) -> str:
        """The JWKS URL."""
        return self.url + JWKS_PATH

    @property
    def discovery_path(self) -> str:
        """Where the OpenID Connect discovery document is served: ``{path}`` +
        :data:`DISCOVERY_PATH`, where ``{path}`` is the issuer's path (OIDC Discovery
        §4), e.g. ``/realms/myrealm/.well-known/openid-configuration``. For an issuer
        without a path it is :data:`DISCOVERY_PATH` itself."""
        return self._issuer_path + DISCOVERY_PATH

    @property
    def oauth_metadata_path(self) -> str:
        """Where the RFC 8414 metadata is served: :data:`OAUTH_METADATA_PATH` followed
        by the issuer's path (RFC 8414 §3), e.g.
        ``/.well-known/oauth-authorization-server/realms/myrealm``."""
        return OAUTH_METADATA_PATH + self._issuer_path

    @property
    def discovery_url(self) -> str:
        """The OpenID Connect discovery document URL (see :attr:`discovery_path`)."""
        return self.url + self.discovery_path

    @property
    def oauth_metadata_url(self) -> str:
        """The RFC 8414 metadata URL (see :attr:`oauth_metadata_path`)."""
        return self.url + self.oauth_metadata_path

    def config(self, **overrides: Any) -> Auth0Config:
        """An :class:`~asgi_auth0.Auth0Config` bound to this issuer.

        Sets ``issuer``, ``jwks_uri``, ``audience``, ``algorithms`` (those of the
        published keys) and a short ``jwks_fetch_timeout`` (2 s) so outage tests fail
        fast; any keyword overrides those or sets other options. Pass
        ``jwks_uri=None`` to make the config find the JWKS by discovery, which works
        for issuers with a path too (as long as the issuer's URL is this server's).

        Nothing else is shortened: ``leeway`` (5 s), the key cache's
        ``jwks_refresh_cooldown`` (30 s) and ``jwks_cache_ttl`` are production's, as
        is the key cache's backoff after a failed fetch (5 s, doubling). So within
        one test, a token from a second :meth:`rotate` is refused as an unknown
        ``kid`` until the cooldown has passed (pass ``jwks_refresh_cooldown=0`` to
        test several rotations), and after :meth:`fail_with` and :meth:`heal` the
        keys reload only when the backoff ends (``await verifier.refresh()``, or
        ``refresh()`` on the key set, fetches at once: it ignores both).
        """
        with self._cond:
            algs = [self._keys[self._current].alg]
            algs += [self._keys[k].alg for k in self._published]
        settings: dict[str, Any] = {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "audience": self.audience,
            "algorithms": tuple(dict.fromkeys(algs)),
            "jwks_fetch_timeout": 2.0,
        }
        settings.update(overrides)
        return Auth0Config(**settings)

    # -- keys ---------------------------------------------------------------------------

    def add_key(
        self,
        private_key: PrivateKey | None = None,
        *,
        key_type: str = "RSA",
        alg: str | None = None,
        kid: str | None = None,
        current: bool = False,
        publish: bool = True,
    ) -> str:
        """Add a signing key and return its ``kid``.

        With no ``private_key`` one of ``key_type`` is generated. ``publish=False``
        keeps it out of the JWKS (to mint tokens no key set knows). ``current=True``
        makes it the key :meth:`token` signs with.
        """
        if private_key is None:
            if key_type not in _KEY_TYPES:
                raise ValueError(f"key_type must be one of {sorted(_KEY_TYPES)}, not {key_type!r}")
            private_key = generate_private_key(key_type)
        kind = _key_kind(private_key)
        alg = alg or DEFAULT_ALG[kind]
        if alg not in _ALGS_BY_KIND[kind]:
            raise ValueError(f"alg {alg!r} does not fit a {kind} key")
        if kid is None:
            kid = f"{kind.lower()}-{secrets.token_hex(6)}"
        if not isinstance(kid, str) or not kid:
            raise ValueError("kid must be a non-empty string")
        jwk = public_jwk(private_key, kid=kid, alg=alg)
        with self._cond:
            if kid in self._keys:
                raise ValueError(f"the issuer already has a key with kid {kid!r}")
            self._keys[kid] = _SigningKey(kid, alg, kind, private_key, jwk)
            if publish:
                self._published.append(kid)
            if current or not self._current:
                self._current = kid
        return kid

    def rotate(
        self,
        keep_old: bool = True,
        *,
        private_key: PrivateKey | None = None,
        key_type: str | None = None,
        alg: str | None = None,
        kid: str | None = None,
    ) -> str:
        """Add a new current key (new ``kid``) as Auth0's key rotation does; return its kid.

        The new key has the current key's type and algorithm unless told otherwise.
        With ``keep_old=True`` the previous key stays in the JWKS (tokens it signed keep
        verifying); with ``keep_old=False`` it is removed from the JWKS at once.
        """
        with self._cond:
            old = self._keys[self._current]
        if private_key is None and key_type is None:
            # Same kind of key as before, signing with the same algorithm.
            key_type, alg = old.kind, alg or old.alg
        new_kid = self.add_key(
            private_key, key_type=key_type or "RSA", alg=alg, kid=kid, current=True
        )
        if not keep_old:
            self.remove_key(old.kid)
        return new_kid

    def remove_key(self, kid: str) -> None:
        """Take ``kid`` out of the JWKS. The issuer can still sign with it
        (``token(kid=...)``), to test that a removed key stops verifying."""
        with self._cond:
            if kid not in self._keys:
                raise KeyError(kid)
            if kid in self._published:
                self._published.remove(kid)

    @property
    def current_kid(self) -> str:
        """The ``kid`` that :meth:`token` signs with."""
        return self._current

    @property
    def kids(self) -> tuple[str, ...]:
        """The ``kid`` values in the JWKS, in document order."""
        with self._cond:
            return tuple(self._published)

    @property
    def alg(self) -> str:
        """The current key's signing algorithm."""
        with self._cond:
            return self._keys[self._current].alg

    @property
    def private_key(self) -> PrivateKey:
        """The current private key (hand it to another issuer to skip key generation)."""
        with self._cond:
            return self._keys[self._current].private_key

    @property
    def jwks(self) -> dict[str, Any]:
        """The JWKS document currently served (a fresh copy): ``{"keys": [...]}``."""
        with self._cond:
            return {"keys": [dict(self._keys[kid].jwk) for kid in self._published]}

    @property
    def discovery(self) -> dict[str, Any]:
        """The OpenID Connect discovery document currently served (the RFC 8414
        metadata is the same document)."""
        url = self.url
        # Endpoints live under the issuer's path, as Keycloak's and Okta's do; the
        # JWKS stays at JWKS_PATH, which the document names (clients must follow it).
        base = url + self._issuer_path
        with self._cond:
            algs = list(dict.fromkeys(self._keys[k].alg for k in self._published))
        return {
            "issuer": self.issuer,
            "jwks_uri": url + JWKS_PATH,
            "authorization_endpoint": base + "/authorize",
            "token_endpoint": base + "/oauth/token",
            "userinfo_endpoint": base + "/userinfo",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": algs,
            "token_endpoint_auth_methods_supported": ["client_secret_post", "none"],
        }

    # -- minting ------------------------------------------------------------------------

    def token(
        self,
        sub: str | None = "user-1",
        scope: str | Iterable[str] | None = None,
        permissions: Iterable[str] | None = None,
        expires_in: float = 3600,
        *,
        kid: str | None = None,
        headers: Mapping[str, Any] | None = None,
        signing_alg: str | None = None,
        now: float | None = None,
        **claims: Any,
    ) -> str:
        """Mint a signed access token, as Auth0 would for this API.

        The payload has ``iss``, ``sub``, ``aud``, ``iat`` (now) and ``exp`` (now +
        ``expires_in``); ``scope`` (a space-separated string or a list of scopes) and
        ``permissions`` (Auth0's RBAC array) when given. Keyword ``claims`` are added
        and override those (``aud=[...]``, ``iss=...``, ``nbf=...``); a claim given as
        ``None`` is left out, to mint tokens missing a required claim.

        The header is ``{"alg", "typ": "JWT", "kid"}`` for the current key (or the key
        ``kid``, which may be one removed from the JWKS); ``headers`` adds or overrides
        members (``None`` removes one). ``now`` overrides :attr:`clock` for this token.

        The signature follows the header's ``alg`` (or ``signing_alg``, when given), so
        the usual algorithm-confusion forgeries are one call each:

        * ``headers={"alg": "none"}`` (or ``"None"``, ``"NONE"``): an unsecured token
          with an empty signature, ``header.payload.``, as an attacker sends it;
        * ``headers={"alg": "HS256"}`` (HS384, HS512): an HMAC keyed with the public
          key's PEM (:func:`public_pem`), the classic RSA/HMAC confusion;
        * ``headers={"alg": "PS256"}`` on an RSA key (RS384, ...): a real signature
          under that algorithm by the same key;
        * any other ``alg`` (``"RS999"``, ``"ES256"`` on an RSA key) needs
          ``signing_alg``, the algorithm to really sign with:
          ``token(headers={"alg": "RS999"}, signing_alg="RS256")``. Without it this
          raises :class:`ValueError` saying so. For full control use :meth:`sign`.
        """
        key = self._signing_key(kid)
        try:
            issued = float(self.clock() if now is None else now)
            ends = issued + expires_in
        except OverflowError:  # an int too large for a float: 10**400
            ends = math.inf
        if not math.isfinite(ends):
            raise ValueError(
                f"now + expires_in must be a finite number of seconds, got expires_in="
                f"{expires_in!r}; to mint any exp at all, however odd, pass exp= itself"
            )
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": self.audience,
            # Whole seconds, as Auth0 sends them.
            "iat": math.floor(issued),
            "exp": math.floor(issued + expires_in),
        }
        if scope is not None:
            payload["scope"] = scope if isinstance(scope, str) else " ".join(scope)
        if permissions is not None:
            if isinstance(permissions, str):
                raise TypeError("permissions must be a list of strings, not one string")
            payload["permissions"] = list(permissions)
        payload.update(claims)
        payload = {name: value for name, value in payload.items() if value is not None}
        header: dict[str, Any] = {"alg": key.alg, "typ": "JWT", "kid": key.kid}
        header.update(headers or {})
        header = {name: value for name, value in header.items() if value is not None}
        return self.sign(header, payload, kid=key.kid, signing_alg=signing_alg)

    def expired_token(self, expired_for: float = 3600, **claims: Any) -> str:
        """A token whose ``exp`` passed ``expired_for`` seconds ago (an hour by default).

        It is meant to be refused as expired, so ``expired_for`` must be more than the
        ``leeway`` of :meth:`config` (5 s, the :class:`~asgi_auth0.Auth0Config`
        default); a smaller value raises :class:`ValueError`, as such a token would
        still verify. With a config of your own with a larger ``leeway``, pass more
        than that. To test the leeway itself, mint the token you want with
        :meth:`token`: ``token(expires_in=-2)`` expired two seconds ago.
        ``claims`` (and ``now``) are passed to :meth:`token`.
        """
        if not _is_finite_number(expired_for):
            raise ValueError(f"expired_for must be a finite number of seconds, got {expired_for!r}")
        if expired_for <= _CONFIG_LEEWAY:
            raise ValueError(
                f"expired_for must be more than the {_CONFIG_LEEWAY:g} s leeway of config() "
                f"(got {expired_for!r}), or the token may still verify; to mint a token "
                f"that expired inside the leeway, use token(expires_in=-seconds)"
            )
        now_given = self.clock() if "now" not in claims else claims.pop("now")
        if not _is_finite_number(now_given):
            raise ValueError(f"now must be a finite number of seconds, got {now_given!r}")
        now = float(now_given)
        lifetime = 3600.0
        return self.token(expires_in=lifetime, now=now - expired_for - lifetime, **claims)

    def wrong_audience_token(self, audience: str = _WRONG_AUDIENCE, **claims: Any) -> str:
        """A token for another API: ``aud`` is ``audience`` instead of this issuer's."""
        return self.token(aud=audience, **claims)

    def wrong_issuer_token(self, issuer: str = _WRONG_ISSUER, **claims: Any) -> str:
        """A token whose ``iss`` is another issuer, signed with this issuer's key."""
        return self.token(iss=issuer, **claims)

    def unknown_kid_token(self, kid: str | None = None, **claims: Any) -> str:
        """A token whose header ``kid`` is in no key set (random unless given).

        It is signed with the current key, so only the ``kid`` lookup can reject it.
        """
        unknown = kid or f"unknown-{secrets.token_hex(8)}"
        headers = dict(claims.pop("headers", None) or {})
        headers["kid"] = unknown
        return self.token(headers=headers, **claims)

    def bad_signature_token(
        self, key: PrivateKey | None = None, *, kid: str | None = None, **claims: Any
    ) -> str:
        """A token with the right ``kid`` and ``alg`` but signed by another key.

        The header names the current key (or the key ``kid``); the signature comes from
        ``key``, or from a key of the same type generated on first use and kept by this
        issuer. ``claims`` are passed to :meth:`token`.
        """
        current = self._signing_key(kid)
        if key is None:
            with self._cond:
                key = self._bad_key
            if key is None or _key_kind(key) != current.kind:
                key = generate_private_key(current.kind)
                with self._cond:
                    self._bad_key = key
        genuine = self.token(kid=current.kid, **claims)
        header_b64, payload_b64, _ = genuine.split(".")
        signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
        return f"{header_b64}.{payload_b64}.{b64url(sign(key, current.alg, signing_input))}"

    def sign(
        self,
        header: Mapping[str, Any],
        payload: Mapping[str, Any] | bytes,
        *,
        kid: str | None = None,
        key: PrivateKey | None = None,
        signing_alg: str | None = None,
    ) -> str:
        """Sign an arbitrary ``header`` and ``payload`` as a compact JWS, for crafting.

        Nothing is added or checked: the header is used as given. The signature is
        made with ``key``, else the key ``kid``, else the current key, under
        ``signing_alg``, else the header's ``alg``, else the key's algorithm; so a
        header can claim one ``alg`` while the signature uses another::

            issuer.sign({"alg": "RS999", "kid": issuer.current_kid}, {"sub": "x"},
                        signing_alg="RS256")

        ``none`` (in any case) signs with an empty signature and ``HS256``/``HS384``/
        ``HS512`` with an HMAC keyed with the public key's PEM (:func:`public_pem`),
        as alg-confusion forgeries do. An algorithm the key cannot sign with raises
        :class:`ValueError`.
        """
        signer = self._signing_key(kid)
        private = key if key is not None else signer.private_key
        own_alg = signer.alg if key is None else DEFAULT_ALG[_key_kind(key)]
        return _crafted_jws(
            private, header, _payload_bytes(payload), signing_alg=signing_alg, own_alg=own_alg
        )

    def _signing_key(self, kid: str | None) -> _SigningKey:
        with self._cond:
            found = self._keys.get(kid or self._current)
        if found is None:
            raise KeyError(f"the issuer has no key with kid {kid!r}")
        return found

    # -- request accounting -------------------------------------------------------------

    @property
    def requests(self) -> Counter[str]:
        """Requests received per path (a snapshot; missing paths count 0).

        Every request is counted when it arrives, before any misbehaviour, so a held,
        failed or reset fetch still counts as one. The key is the path asked for: an
        issuer with a path counts its discovery under :attr:`discovery_path`.
        """
        with self._cond:
            return Counter(self._requests)

    @property
    def total_requests(self) -> int:
        """All requests received, on every path."""
        with self._cond:
            return sum(self._requests.values())

    @property
    def jwks_requests(self) -> int:
        """Requests received for the JWKS."""
        with self._cond:
            return self._requests[JWKS_PATH]

    @property
    def discovery_requests(self) -> int:
        """Requests received for this issuer's discovery documents: the OpenID Connect
        one at :attr:`discovery_path` plus the RFC 8414 one at
        :attr:`oauth_metadata_path`."""
        with self._cond:
            return self._requests[self.discovery_path] + self._requests[self.oauth_metadata_path]

    def reset_counts(self) -> None:
        """Set every request counter back to zero."""
        with self._cond:
            self._requests.clear()

    # -- misbehaviour -------------------------------------------------------------------

    def _set_fault(self, kind: str, value: Any, paths: Paths) -> None:
        fault = _Fault(value, _normalise_paths(paths))
        with self._cond:
            self._faults[kind] = fault
            self._cond.notify_all()

    def fail_with(
        self,
        status: int = 500,
        retry_after: float | str | None = None,
        *,
        paths: Paths = JWKS_PATH,
    ) -> None:
        """Answer with HTTP ``status`` (and a ``Retry-After`` header when given)."""
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        if isinstance(retry_after, float) and retry_after.is_integer():
            retry_after = int(retry_after)
        self._set_fault("status", (status, retry_after), paths)

    def slow(self, seconds: float, *, paths: Paths = JWKS_PATH) -> None:
        """Delay each response by ``seconds`` (measured from the request's arrival).

        A delayed request counts in :attr:`waiting`. :meth:`heal` ends the delay of
        requests already waiting; :meth:`stop` and :meth:`close` drop them unanswered.
        """
        if not _is_finite_number(seconds) or seconds < 0:
            raise ValueError("seconds must be a non-negative number")
        self._set_fault("delay", float(seconds), paths)

    def garbage(
        self,
        body: bytes = b"<html>this is not JSON</html>",
        *,
        status: int = 200,
        content_type: str = "application/json",
        paths: Paths = JWKS_PATH,
    ) -> None:
        """Answer ``status`` with ``body`` (invalid JSON by default, or any bytes).

        Give valid JSON that is not a JWKS (``b'{"keys": 1}'``) to test shape checks.
        """
        if isinstance(body, str):
            body = body.encode()
        self._set_fault("body", (status, content_type, bytes(body), True), paths)

    def oversized(
        self,
        n_bytes: int = 2 * 1024 * 1024,
        *,
        content_length: bool = True,
        paths: Paths = JWKS_PATH,
    ) -> None:
        """Answer with a ``n_bytes`` body that is otherwise a valid JWKS.

        The document holds the real keys plus a padding member, so only a size limit
        can reject it. ``content_length=False`` sends no ``Content-Length`` (the body
        ends when the connection closes), so the client must count while reading.
        """
        if not isinstance(n_bytes, int) or n_bytes < 64:
            raise ValueError("n_bytes must be an integer of at least 64")
        self._set_fault("oversized", (n_bytes, content_length), paths)

    def reset_connections(self, *, paths: Paths = JWKS_PATH) -> None:
        """Close the connection without answering (a TCP reset), like a crashed proxy.

        Over the ASGI app this raises :class:`ConnectionResetError` instead.
        """
        self._set_fault("reset", True, paths)

    def hold(self, *, paths: Paths = JWKS_PATH) -> None:
        """Block responses until :meth:`release` (or :meth:`heal`, :meth:`stop`).

        The request is counted at once and then waits, so a test can start many
        concurrent fetches, wait until :attr:`waiting` shows them all, release and
        assert how many arrived.
        """
        self._set_fault("hold", True, paths)

    def release(self) -> None:
        """Let every held request (and later ones) through."""
        with self._cond:
            self._faults.pop("hold", None)
            self._cond.notify_all()

    def cache_control(self, value: str | None, *, paths: Paths = JWKS_PATH) -> None:
        """Send ``Cache-Control: value`` with responses (``None``: send none).

        This is configuration rather than a fault, so :meth:`heal` keeps it.
        """
        if value is None:
            with self._cond:
                self._faults.pop("cache_control", None)
            return
        if not isinstance(value, str) or any(c in value for c in "\r\n"):
            raise ValueError("cache_control must be a header value on one line")
        self._set_fault("cache_control", value, paths)

    def heal(self) -> None:
        """End every misbehaviour (except :meth:`cache_control`) and release held
        and delayed requests; the next response is normal."""
        with self._cond:
            kept = self._faults.get("cache_control")
            self._faults.clear()
            if kept is not None:
                self._faults["cache_control"] = kept
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """How many requests are blocked right now by :meth:`hold` or :meth:`slow`."""
        with self._cond:
            return self._waiting

    def wait_for_waiting(self, n: int = 1, timeout: float = 5.0) -> None:
        """Block the calling thread until at least ``n`` requests are :attr:`waiting`.

        Raises :class:`TimeoutError` after ``timeout`` seconds. From async code use
        :meth:`wait_for_waiting_async`.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._waiting >= n, timeout):
                raise TimeoutError(
                    f"{self._waiting} requests waiting after {timeout} s, expected {n}"
                )

    # The wait runs in a worker thread, which cannot be cancelled: the deadline has to
    # travel with it, hence a timeout parameter rather than the caller's fail_after.
    async def wait_for_waiting_async(self, n: int = 1, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait (without blocking the event loop) until ``n`` requests are waiting.

        Works under asyncio and trio; raises :class:`TimeoutError` after ``timeout``.
        """
        await anyio.to_thread.run_sync(self.wait_for_waiting, n, timeout)

    # -- answering ----------------------------------------------------------------------

    def _names(self, path: str) -> frozenset[str]:
        """The names a misbehaviour's ``paths=`` may use for a request to ``path``: the
        path itself, plus the role constant of a discovery document served elsewhere."""
        if path == self.discovery_path:
            return frozenset((path, DISCOVERY_PATH))
        if path == self.oauth_metadata_path:
            return frozenset((path, OAUTH_METADATA_PATH))
        return frozenset((path,))

    def _arrive(self, path: str) -> tuple[bool, int]:
        """Count a request; return whether it must wait (hold/slow) and the stop epoch."""
        names = self._names(path)
        with self._cond:
            # Counted under the path asked for, so a test can tell which URL a client
            # used (a path issuer's discovery is not at the root DISCOVERY_PATH).
            self._requests[path] += 1
            must_wait = any(
                kind in self._faults and self._faults[kind].applies(names)
                for kind in ("hold", "delay")
            )
            return must_wait, self._stop_epoch

    def _wait(self, path: str, epoch: int) -> bool:
        """Block while held or delayed; False when stop()/close() interrupted the wait."""
        arrived = time.monotonic()
        names = self._names(path)
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()
            try:
                while self._stop_epoch == epoch:
                    held = self._faults.get("hold")
                    if held is not None and held.applies(names):
                        self._cond.wait()
                        continue
                    delay = self._faults.get("delay")
                    if delay is None or not delay.applies(names):
                        return True
                    remaining = arrived + delay.value - time.monotonic()
                    if remaining <= 0:
                        return True
                    self._cond.wait(remaining)
                return False
            finally:
                self._waiting -= 1
                self._cond.notify_all()

    def _reply(self, path: str, method: str) -> _Reply | None:
        """The answer for one request, or None to reset the connection."""
        names = self._names(path)
        with self._cond:
            faults = {kind: f.value for kind, f in self._faults.items() if f.applies(names)}
        headers: list[tuple[str, str]] = []
        if "cache_control" in faults:
            headers.append(("Cache-Control", faults["cache_control"]))
        if "reset" in faults:
            return None
        if method not in ("GET", "HEAD"):
            headers.append(("Allow", "GET, HEAD"))
            return _json_reply(405, {"error": "method_not_allowed"}, headers)
        if "status" in faults:
            status, retry_after = faults["status"]
            if retry_after is not None:
                headers.append(("Retry-After", str(retry_after)))
            return _json_reply(status, {"error": "local_issuer_failure", "status": status}, headers)
        if "body" in faults:
            status, content_type, body, _ = faults["body"]
            headers.append(("Content-Type", content_type))
            return _Reply(status, tuple(headers), body)
        if path == JWKS_PATH:
            document = self.jwks
        elif path in (self.discovery_path, self.oauth_metadata_path):
            document = self.discovery
        else:
            return _json_reply(404, {"error": "not_found"}, headers)
        if "oversized" in faults:
            n_bytes, content_length = faults["oversized"]
            return _Reply(200, (*headers, _JSON), _padded(document, n_bytes), content_length)
        return _json_reply(200, document, headers)

    def _serve_http(self, handler: _Handler, *, head: bool) -> None:
        """Answer one request on the HTTP server (runs in a handler thread)."""
        path = urlsplit(handler.path).path
        if handler.command not in ("GET", "HEAD"):
            # A request body is never read, so the connection cannot be reused.
            handler.close_connection = True
        must_wait, epoch = self._arrive(path)
        if must_wait and not self._wait(path, epoch):
            reply = None
        else:
            reply = self._reply(path, handler.command)
        if reply is None:
            handler.close_connection = True
            handler.server.mark_for_reset(handler.connection)
            return
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers:
                handler.send_header(name, value)
            if reply.content_length:
                handler.send_header("Content-Length", str(len(reply.body)))
            else:
                handler.send_header("Connection", "close")
                handler.close_connection = True
            handler.end_headers()
            if not head:
                handler.wfile.write(reply.body)
            handler.wfile.flush()
        except OSError:
            # The client went away (e.g. its timeout fired while we were slow).
            handler.close_connection = True

    @property
    def asgi_app(self) -> Callable[[ASGIScope, ASGIReceive, ASGISend], Awaitable[None]]:
        """The issuer as an ASGI app, e.g. for ``httpx.ASGITransport(app=issuer.asgi_app)``.

        It answers the same paths with the same documents, counters and misbehaviours
        as the HTTP server (a reset raises :class:`ConnectionResetError`; a hold or a
        delay waits without blocking the event loop). It also answers ASGI lifespan.
        """
        return self._asgi

    async def _asgi(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            raise RuntimeError(f"LocalIssuer serves HTTP only, not {scope['type']!r}")
        path = scope["path"]
        must_wait, epoch = self._arrive(path)
        if must_wait:
            # The wait is on a threading condition; wait in a worker thread so the loop
            # stays free. abandon_on_cancel: a cancelled client must not hang here.
            await anyio.to_thread.run_sync(self._wait, path, epoch, abandon_on_cancel=True)
        reply = self._reply(path, scope["method"])
        if reply is None:
            raise ConnectionResetError("LocalIssuer: reset_connections() is active")
        headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in reply.headers]
        headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else reply.body
        await send({"type": "http.response.body", "body": body})


_JSON = ("Content-Type", "application/json")


def _json_reply(status: int, document: object, headers: list[tuple[str, str]]) -> _Reply:
    body = json.dumps(document, separators=(",", ":")).encode()
    return _Reply(status, (*headers, _JSON), body)


def _padded(document: Mapping[str, Any], n_bytes: int) -> bytes:
    """``document`` as JSON with a padding member making it exactly ``n_bytes`` long."""
    base = json.dumps({**document, "padding": ""}, separators=(",", ":")).encode()
    if len(base) >= n_bytes:
        return base
    filler = b"x" * (n_bytes - len(base))
    # The padding value is the last member: insert the filler between its quotes.
    return base[:-2] + filler + base[-2:]


def _payload_bytes(payload: Mapping[str, Any] | bytes) -> bytes:
    return payload if isinstance(payload, bytes) else compact_json(dict(payload))
