"""``python -m example_app``: run the example API under uvicorn.

Two modes, chosen by the environment:

* **Offline dev mode** (no ``AUTH0_*`` variable set): an embedded
  :class:`~asgi_auth0.testing.LocalIssuer` starts on 127.0.0.1 and plays the Auth0
  tenant (real keys, a real JWKS over HTTP, real signed tokens). Ready-to-paste
  ``curl`` commands with fresh tokens are printed, and a token for Swagger UI's
  "Authorize" box. Nothing leaves the machine.
* **Auth0 mode** (``AUTH0_DOMAIN`` and ``AUTH0_AUDIENCE`` set, see
  :meth:`Auth0Config.from_env <asgi_auth0.Auth0Config.from_env>`): routes are
  protected by that tenant. With ``AUTH0_CLIENT_ID`` too, Swagger UI logs in through
  Auth0 with PKCE.

``HOST`` and ``PORT`` choose the address (default ``127.0.0.1:8000``; ``PORT=0``
picks a free port and prints it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from types import FrameType

import uvicorn
from fastapi import FastAPI

from asgi_auth0 import Auth0Config, ConfigError
from asgi_auth0.testing import LocalIssuer

from .app import create_app
from .dev import DEV_AUDIENCE, dev_banner, dev_description, listen_url, tenant_banner

__all__ = ["AUTH0_VARIABLES", "config_from_env", "listen_address", "main"]

#: The variables :meth:`Auth0Config.from_env` reads. If any is set the app runs against
#: a real tenant and a missing partner variable is an error: a typo must never fall
#: back silently to the dev issuer.
AUTH0_VARIABLES = (
    "AUTH0_DOMAIN",
    "AUTH0_ISSUER_BASE_URL",
    "AUTH0_AUDIENCE",
    "AUTH0_ALGORITHMS",
    "AUTH0_CLIENT_ID",
)
_DEFAULT_HOST = "127.0.0.1"
_DEFAULT_PORT = 8000


def config_from_env(environ: Mapping[str, str]) -> Auth0Config | None:
    """The tenant's config from ``AUTH0_*`` variables, or ``None`` for dev mode.

    Dev mode only when no variable naming AUTH0 is there at all. Raises
    :class:`ConfigError` (naming the variables) when some are set but the set is
    incomplete or invalid, when one is there but empty (what a compose file's
    ``${AUTH0_DOMAIN}`` gives when the host lacks it), and when only names this app
    does not read are set (``AUTH0_DOMIAN``, ``APP_AUTH0_DOMAIN``): each must stop the
    app, not start an issuer of its own that refuses every real token.
    """
    if any(environ.get(name, "").strip() for name in AUTH0_VARIABLES):
        return Auth0Config.from_env(environ)
    present = sorted(name for name in environ if "AUTH0" in name.upper())
    if not present:
        return None
    empty = [name for name in present if name in AUTH0_VARIABLES]
    unread = [name for name in present if name not in AUTH0_VARIABLES]
    found: list[str] = []
    if empty:
        found.append(f"{', '.join(empty)} set but empty")
    if unread:
        found.append(f"{', '.join(unread)} set but not read here")
    raise ConfigError(
        f"{'; '.join(found)}. For an Auth0 tenant set AUTH0_DOMAIN (or "
        "AUTH0_ISSUER_BASE_URL) and AUTH0_AUDIENCE; for the offline dev mode, unset "
        "every variable naming AUTH0"
    )


def listen_address(environ: Mapping[str, str]) -> tuple[str, int]:
    """``(host, port)`` from ``HOST`` and ``PORT``; raises ``ValueError`` on a bad port."""
    host = environ.get("HOST", "").strip() or _DEFAULT_HOST
    raw = environ.get("PORT", "").strip() or str(_DEFAULT_PORT)
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise ValueError(f"PORT must be a number from 0 to 65535, got {raw!r}")
    return host, int(raw)


def _listen(host: str, port: int) -> socket.socket:
    """Bind and listen before uvicorn starts, so the printed URLs work the moment they
    are printed (connections wait in the backlog) and ``PORT=0`` can report its port."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


class _HandshakeNoise(logging.Filter):
    """Drops uvicorn's "ASGI callable returned without completing handshake." ERROR.

    uvicorn's default WebSocket implementation (websockets-sansio, 0.54) logs it after
    every handshake refused with an HTTP 401/403 denial response, although the client
    got exactly that response (see the README's deployment notes). In a demo, an
    ERROR after every refused connection reads as a bug.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing handshake" not in record.getMessage()


def _show_library_logs() -> None:
    # The library's loggers have no handler of their own (an application decides),
    # so without this the demo would show only warnings, unformatted. Shown the way
    # uvicorn shows its own lines: rejections, key loads, outages.
    library = logging.getLogger("asgi_auth0")
    if not library.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-9s %(name)s: %(message)s"))
        library.addHandler(handler)
        library.setLevel(logging.INFO)
        library.propagate = False


def _serve(app: FastAPI, sock: socket.socket) -> None:
    config = uvicorn.Config(app, log_level="info", proxy_headers=False)  # sets up logging
    logging.getLogger("uvicorn.error").addFilter(_HandshakeNoise())
    _show_library_logs()
    uvicorn.Server(config).run(sockets=[sock])


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it; exiting through
    # SystemExit (rather than the default handler killing the process) lets the
    # `with` blocks below stop the dev issuer cleanly.
    raise SystemExit(128 + signum)


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run the example API until interrupted; returns the process exit code."""
    env = os.environ if environ is None else environ
    try:
        host, port = listen_address(env)
        config = config_from_env(env)
    except (ConfigError, ValueError) as exc:
        print(f"example_app: {exc}", file=sys.stderr)
        return 2
    try:
        sock = _listen(host, port)
    except OSError as exc:
        print(
            f"example_app: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "set PORT to another port (PORT=0 picks a free one)",
            file=sys.stderr,
        )
        return 1
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    base_url = listen_url(sock)
    with contextlib.closing(sock):
        if config is not None:
            app = create_app(config)
            print(tenant_banner(config, base_url), flush=True)
            _serve(app, sock)
            return 0
        # Dev mode: the issuer's HTTP server runs in threads of this process and stops
        # with it; its keys exist only in memory, so its tokens die with the process.
        with LocalIssuer(audience=DEV_AUDIENCE) as issuer:
            app = create_app(issuer.config(), description=dev_description(issuer))
            print(dev_banner(issuer, base_url, host=host), flush=True)
            _serve(app, sock)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # uvicorn has shut down gracefully and re-raised Ctrl-C; no traceback wanted.
        sys.exit(130)
