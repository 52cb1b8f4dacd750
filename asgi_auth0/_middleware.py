"""``Auth0Middleware``: pure ASGI bearer-token authentication for HTTP and WebSocket.

Per connection it does one thing: find the bearer token, verify it, and either store
the claims in the scope for the application or answer with the RFC 6750 rejection.
It never reads the body, never wraps ``send`` and never starts a task, so streaming
responses, background tasks and context variables behave exactly as without it. The
``try`` covers authentication only; the application is called outside it, so an error
raised by the application is never turned into an authentication error.

The one exception it catches from downstream is :class:`AuthenticationRejected`, which
the FastAPI dependencies raise (before any response is started), and application code
may raise too (the README's Starlette sample does), to have a rejection answered here,
exactly like the middleware's own.

Across the application's lifespan (when the server runs one) it warms the key set at
startup and runs the key source's background refresher in a task group it owns, so
requests never wait on the issuer; at shutdown it stops the refresher, then closes
the verifier it built. Without a lifespan, keys load and refresh on demand.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, ParamSpec
from urllib.parse import unquote_plus

import anyio
import anyio.abc
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, BaseUser, UnauthenticatedUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._bearer import (
    bearer_token,
    is_token68,
    missing_token_hint,
    not_token68_error,
    token_from_scope,
)
from ._challenge import REJECTION_LOG_WINDOW, Responder, ResponseHook, uses_dpop_scheme
from ._claims import Claims
from ._config import Auth0Config
from ._dpop import dpop_credentials, request_htu
from ._errors import (
    Auth0Error,
    ConfigError,
    DPoPRequiredError,
    InvalidTokenError,
    KeySetError,
    MissingTokenError,
    MultipleTokensError,
)
from ._keys import log_safe
from ._public import PublicPaths, route_path
from ._verify import TokenVerifier

__all__ = [
    "Auth0Middleware",
    "Auth0User",
    "AuthenticationRejected",
    "MiddlewareNotInstalledError",
    "auth_state",
]

logger = logging.getLogger("asgi_auth0.middleware")

# Keys in the ASGI scope's "state" dict (what ``request.state`` reads). "claims" is
# the public contract; the responder lets dependencies answer like the middleware.
_CLAIMS_KEY = "claims"
_RESPONDER_KEY = "asgi_auth0"
# The key in the scope itself where the result is kept for the dependencies: a scope
# is this request's alone, whereas a server or harness may hand every request the
# same state dict (see _store).
_SCOPE_KEY = "asgi_auth0"
_DENIAL_EXTENSION = "websocket.http.response"
# RFC 6455 close codes, used only where the server lacks the denial extension (ASGI
# servers then answer the handshake with a plain 403).
_WS_POLICY_VIOLATION = 1008
_WS_TRY_AGAIN_LATER = 1013
# A websocket_query_param name: RFC 3986 unreserved characters, which a URL carries as
# they are (anything else is a delimiter, or is percent-encoded by a URL builder).
_QUERY_PARAM_NAME = re.compile(r"[A-Za-z0-9._~-]+")


class Auth0User(BaseUser):
    """The ``request.user`` of a request with a valid token (Starlette's ``BaseUser``)."""

    __slots__ = ("claims",)

    def __init__(self, claims: Claims) -> None:
        #: The verified claims of the token.
        self.claims: Claims = claims

    @property
    def is_authenticated(self) -> bool:
        """Always true: only a verified token makes an ``Auth0User``."""
        return True

    @property
    def display_name(self) -> str:
        """The token's ``sub`` (Auth0 tokens carry no display name)."""
        return self.claims.sub or ""

    @property
    def identity(self) -> str:
        """The token's ``sub``."""
        return self.claims.sub or ""

    def __repr__(self) -> str:
        return f"Auth0User(sub={self.claims.sub!r})"


class MiddlewareNotInstalledError(RuntimeError):
    """An asgi_auth0 dependency ran on a request that ``Auth0Middleware`` never saw."""


class AuthenticationRejected(Exception):
    """Raised by the FastAPI dependencies (or an application's own code) to have
    ``Auth0Middleware`` answer a request.

    It carries the :class:`Auth0Error` to answer. The middleware registers
    :func:`asgi_auth0.fastapi.rejection_handler` for it on the applications it can
    reach, and catches it itself from the rest: either way the answer is the RFC 6750
    response it sends for its own rejections, so no exception handler needs
    registering. Applications it cannot reach, whose other middleware swallows
    exceptions, can register the handler by hand.

    On a WebSocket the flags say how far the handshake went, when the raiser knows.
    Without them the middleware sees for itself whether the application took the
    ``websocket.connect`` message: before that, it sends the HTTP denial response;
    after, it closes with 1008 (1013 for a :class:`KeySetError`: try again later),
    which also refuses a handshake not yet accepted.
    """

    def __init__(
        self,
        error: Auth0Error,
        *,
        websocket_connect_received: bool = False,
        websocket_accepted: bool = False,
    ) -> None:
        super().__init__(error.reason)
        #: What to answer.
        self.error = error
        #: For a WebSocket: whether the application already consumed ``websocket.connect``.
        self.websocket_connect_received = websocket_connect_received
        #: For a WebSocket: whether the application already accepted it (then only a
        #: close is possible, no denial response).
        self.websocket_accepted = websocket_accepted


#: Where the middleware keeps a WebSocket's :class:`_ConnectWatch` in the scope, for
#: :func:`asgi_auth0.fastapi.rejection_handler`.
CONNECT_WATCH = "asgi_auth0.connect_watch"


class _ConnectWatch:
    """A WebSocket's ``receive``, noting whether ``websocket.connect`` was taken.

    Only observes: every message passes through unchanged. It lets the middleware
    answer an :class:`AuthenticationRejected` raised after the application took the
    connect message without saying so, and the rejection handler too, whose
    ``WebSocket`` object may not be the one that took it (Starlette's
    ``WebSocketEndpoint`` makes its own).
    """

    __slots__ = ("_receive", "connected")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.connected = False

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "websocket.connect":
            self.connected = True
        return message


class _TokenCredentials(AuthCredentials):
    """``request.auth`` for a valid token: Starlette's ``AuthCredentials`` whose
    ``scopes`` list is built on first use.

    Like Starlette's AuthenticationMiddleware: "authenticated" plus the token's OAuth
    scopes, sorted. Permissions stay out: they are another claim with another meaning,
    checked with require_permissions(). The list is still a fresh one per request (an
    application may change it), but most requests never look at it: the FastAPI
    dependencies read the claims, and sorting the scopes on every request was a
    measurable share of the middleware's cost. The claims are immutable, so the list
    is the same whenever it is built.
    """

    def __init__(self, claims: Claims) -> None:
        self._claims = claims

    @functools.cached_property
    def scopes(self) -> list[str]:  # type: ignore[override]
        """``"authenticated"`` and the token's scopes, sorted."""
        return ["authenticated", *sorted(self._claims.scopes)]


#: The loggers uvicorn writes request URLs to, query string included: each WebSocket
#: handshake's line goes to uvicorn.error (at INFO, whatever --no-access-log says),
#: each HTTP request's to uvicorn.access.
_URL_LOGGERS = ("uvicorn.error", "uvicorn.access")


# One query parameter in a logged line: after "?", "&" (or ";"), up to the next
# separator, space or quote (a line may go on after the URL, or hold several).
_LOGGED_QUERY_PARAM = re.compile(r"(?<=[?&;])([^=&;#\s\"'<>]+)=([^&;#\s\"'<>]*)")


class _QueryTokenRedactor(logging.Filter):
    """Replaces the value of the ``websocket_query_param`` parameter with
    ``[redacted]`` in the URLs a server logs, so that the tokens that option lets
    browsers put in a WebSocket URL do not end up in the server's log."""

    def __init__(self, param: str) -> None:
        super().__init__()
        self.param = param

    def filter(self, record: logging.LogRecord) -> bool:
        # A filter that raised would pass the exception to the code that logs.
        with contextlib.suppress(Exception):
            self._scrub(record)
        return True

    def _scrub(self, record: logging.LogRecord) -> None:
        # Argument by argument, judged by its text (a URL object is logged by its
        # str); the arguments are rebuilt only when something was taken out, and stay
        # a tuple (uvicorn's access formatter unpacks them).
        args = record.args
        if isinstance(args, tuple):
            redacted = tuple(self._redacted(a) for a in args)
            if any(new is not old for new, old in zip(redacted, args, strict=True)):
                record.args = redacted
        elif isinstance(args, Mapping):
            values = {k: self._redacted(v) for k, v in args.items()}
            if any(values[k] is not v for k, v in args.items()):
                record.args = values
        msg = record.msg
        text = msg if isinstance(msg, str) else str(msg)
        # In a format string a "%" may start a placeholder: a value holding one is
        # left alone, so that no placeholder loses its argument.
        scrubbed = self._redact(text, keep_percent=bool(args))
        if scrubbed != text:
            record.msg = scrubbed

    def _redacted(self, value: object) -> object:
        if isinstance(value, (bytes, bytearray)):
            text = bytes(value).decode("latin-1")
        elif isinstance(value, str):
            text = value
        elif isinstance(value, (int, float, type(None))):
            return value
        else:
            try:
                text = str(value)
            except Exception:
                return value
        redacted = self._redact(text)
        return value if redacted == text else redacted

    def _redact(self, text: str, *, keep_percent: bool = False) -> str:
        if "?" not in text:
            return text

        def value_of_ours(found: re.Match[str]) -> str:
            # The name decoded as the middleware decodes it: spelled with %-escapes it
            # carries the token just the same.
            if keep_percent and "%" in found.group(2):
                return found.group(0)
            if unquote_plus(found.group(1), encoding="latin-1") == self.param:
                return f"{found.group(1)}=[redacted]"
            return found.group(0)

        return _LOGGED_QUERY_PARAM.sub(value_of_ours, text)


def _redact_query_tokens_in_server_logs(param: str) -> None:
    for name in _URL_LOGGERS:
        server_logger = logging.getLogger(name)
        if not any(
            isinstance(f, _QueryTokenRedactor) and f.param == param for f in server_logger.filters
        ):
            server_logger.addFilter(_QueryTokenRedactor(param))


def _store(
    scope: Scope, claims: Claims | None, responder: Responder, lifespan_state: object
) -> None:
    """Write the authentication result into the scope: the one place that does."""
    state = scope.get("state")
    # Whether an Auth0Middleware outside this one verified a token for this request
    # (one for another API, read in a form this one may not read: DPoP, a query
    # parameter). Any user in the scope now may be made from that token. Read from
    # the scope, which is this request's alone.
    # (The state too, as a second sign: a middleware between may have rebuilt the
    # scope without our key. Only another middleware's entry counts there: this
    # one's own, in a dict shared by requests, is another request's.)
    outer = scope.get(_SCOPE_KEY)
    outer_token = (type(outer) is tuple and len(outer) == 2 and outer[0] is not None) or (
        isinstance(state, Mapping)
        and state.get(_RESPONDER_KEY, responder) is not responder
        and state.get(_CLAIMS_KEY) is not None
    )
    scope[_SCOPE_KEY] = (claims, responder)
    if state is None or not isinstance(state, Mapping):
        # None, or not a mapping at all (a server's bug): a dict of this request's.
        state = scope["state"] = {}
    elif (
        lifespan_state is None
        or state is lifespan_state
        or _RESPONDER_KEY in state
        or not isinstance(state, dict)
    ):
        # The ASGI spec gives each request a shallow copy of the lifespan state, and
        # uvicorn does; but a server or test harness that hands every request the
        # same dict (asgi-lifespan's LifespanManager does) would let other requests
        # read this one's claims: concurrent ones, and later ones to routes this
        # middleware does not cover (its claims left in the shared dict would
        # authenticate them). This request gets a copy of its own whenever the dict
        # may be shared: it is the lifespan's, or this middleware never saw the
        # lifespan and cannot tell (mounted in another app, or no lifespan at all),
        # or our key is already there (another request's, or an outer
        # Auth0Middleware's, whose view stays its own). Otherwise (a per-request
        # copy, as uvicorn makes) write in place, so that an outer middleware that
        # took request.state before the call sees the claims after it. (Even so a
        # harness sharing one dict in a way this cannot see, nested lifespans, say,
        # may leave claims there: the dependencies read the scope, never the state.)
        # A mapping that is not a dict may not take our keys: a dict copy does.
        state = scope["state"] = dict(state)
    state[_CLAIMS_KEY] = claims
    state[_RESPONDER_KEY] = responder
    if claims is None:
        # No bearer token: what another authentication middleware outside this one
        # decided (a session login for an app's pages, say) stands; a scope without
        # it gets the anonymous user, so that request.user and @requires work. Never
        # a user from an outer Auth0Middleware's token, its own or one a middleware
        # between made from it: that token was for another API and must not pass here.
        user = scope.get("user")
        if (
            outer_token
            or user is None
            or isinstance(user, Auth0User)
            or not isinstance(scope.get("auth"), AuthCredentials)
            or isinstance(scope["auth"], _TokenCredentials)
        ):
            scope["auth"] = AuthCredentials()
            scope["user"] = UnauthenticatedUser()
    else:
        scope["auth"] = _TokenCredentials(claims)
        scope["user"] = Auth0User(claims)


def auth_state(scope: Scope) -> tuple[Claims | None, Responder]:
    """The claims and responder the middleware stored, read back in one place.

    Raises :class:`MiddlewareNotInstalledError` when the middleware did not run.
    """
    # From the scope, not the state: a state dict may be shared by requests (see
    # _store), and a value some code wrote into request.state is no verification.
    found = scope.get(_SCOPE_KEY)
    if type(found) is not tuple or not isinstance(found[1], Responder):
        raise MiddlewareNotInstalledError(
            "Auth0Middleware is not installed: asgi_auth0 dependencies read the claims it "
            "stores. Add it with app.add_middleware(Auth0Middleware, config=...)."
        )
    claims, responder = found
    return (claims if isinstance(claims, Claims) else None), responder


_P = ParamSpec("_P")


def _log_config_errors(init: Callable[_P, None]) -> Callable[_P, None]:
    """Log a :class:`ConfigError` from ``__init__`` at ERROR before it propagates.

    Starlette builds its middleware on the first call, which is the lifespan startup
    under a server, and uvicorn's default lifespan mode reads an exception there as
    "lifespan unsupported" (an INFO line) and goes on serving, every request then
    failing. The error line says what is wrong where an operator will see it.
    """

    @functools.wraps(init)
    def logged(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            init(*args, **kwargs)
        except ConfigError as exc:
            # No traceback here: the exception itself carries one, wherever it lands.
            logger.error(  # noqa: TRY400
                "Auth0Middleware is misconfigured: %s", exc, extra={"reason": "config_error"}
            )
            raise

    return logged


class Auth0Middleware:
    """Authenticate ``http`` and ``websocket`` connections with an Auth0 access token.

    Give exactly one of ``config`` (the middleware builds, warms and closes its own
    :class:`TokenVerifier`) or ``verifier`` (yours; it is warmed, never closed here).

    - ``websocket_query_param``: name of a query parameter (e.g. ``"access_token"``)
      that may carry the token on WebSocket handshakes, for browsers, which cannot set
      headers there. Off by default: URLs end up in server logs. When it is set, a
      filter on uvicorn's loggers (``uvicorn.error``, where uvicorn writes each
      handshake's URL, and ``uvicorn.access``) replaces the parameter's value with
      ``[redacted]``; other servers and proxies need their own.
    - ``on_error``: a response hook ``(conn, challenge) -> Response`` that replaces the
      JSON body format (see :func:`problem_json_response`); the FastAPI dependencies
      use it too. The challenge headers are always kept.
    - ``warm_keys_on_startup``: fetch the key set on lifespan startup (failures are
      logged, never fatal; keys then load in the background or on the first request).
    - ``require_token``: fail closed. Every ``http`` and ``websocket`` request needs a
      valid token (no token: 401 with the bare challenge, as from the
      ``require_token`` dependency) except on ``public_paths``. A route added later
      and forgotten is then protected, not open; and protected routes need no
      dependency (FastAPI's dependency machinery costs a few microseconds per
      request): the endpoint reads ``request.state.claims``, which is then always a
      :class:`Claims`, or ``await require_token(request)`` for it typed. Dependencies
      keep working for scope and permission checks.
    - ``public_paths``: with ``require_token=True``, the paths reachable without a
      token: exact paths (``"/health"``, ``"/docs"``, ``"/openapi.json"``) and whole
      subtrees (``"/static/*"``), matched against the decoded path the router sees
      (without the ``root_path``). Anything else, even ``"/health/"``, needs a token.
      A token sent to a public path is still verified, and an invalid one rejected.
      Put ``CORSMiddleware`` outside this middleware (add it after), so that CORS
      preflights, which carry no token, are answered before they get here (a warning
      is logged at startup when it runs inside).
      :func:`configure_openapi` documents both settings.
    - ``background_refresh``: run the key source's background refresher (refresh
      ahead, retries with backoff; see :class:`JWKSCache`) for as long as the app's
      lifespan lasts, so that no request waits on the issuer. ``None`` (default): on
      for a verifier built from ``config``, off for one passed as ``verifier``, whose
      owner decides (a key source has at most one refresher: the owner may run it
      already, or share the verifier between apps); ``True`` runs it for a passed
      verifier too; ``False`` never. Key sources without ``running()`` (such as
      :class:`StaticKeySet`) need none. The refresher stops as soon as shutdown
      begins (``lifespan.shutdown``), before the application's own shutdown code runs,
      so that code may close a key source it passed in. Without a lifespan there is
      no refresher and keys refresh on demand.

    DPoP (RFC 9449) follows the config's ``dpop``: with ``"allowed"`` or
    ``"required"``, ``Authorization: DPoP <token>`` with its ``DPoP`` proof header is
    verified by :meth:`TokenVerifier.verify_dpop` (the proof's ``htu`` against the
    scheme the server saw, the ``Host`` header and the path as sent) and gives claims
    as a bearer token does; with ``"required"`` a bearer token is refused.

    Anonymous requests (no token, or another scheme) continue with
    ``request.state.claims = None`` (with ``require_token=True``, only on public
    paths; elsewhere they get 401); valid tokens set it to the :class:`Claims` and set
    ``request.user``/``request.auth``; invalid tokens are answered here (400/401), and
    an unreachable issuer with 503 and ``Retry-After``.
    """

    @_log_config_errors
    def __init__(
        self,
        app: ASGIApp,
        *,
        config: Auth0Config | None = None,
        verifier: TokenVerifier | None = None,
        websocket_query_param: str | None = None,
        on_error: ResponseHook | None = None,
        warm_keys_on_startup: bool = True,
        background_refresh: bool | None = None,
        require_token: bool = False,
        public_paths: Iterable[str] = (),
    ) -> None:
        if websocket_query_param is not None and (
            not isinstance(websocket_query_param, str)
            or not websocket_query_param
            or not websocket_query_param.isascii()
        ):
            raise ConfigError("websocket_query_param must be a non-empty ASCII string or None")
        if websocket_query_param is not None and not _QUERY_PARAM_NAME.fullmatch(
            websocket_query_param
        ):
            # "?access_token" or "access_token=" (copied from a URL template) would
            # never be the name of a parameter in the URL a browser builds, so every
            # handshake would be anonymous with nothing pointing here.
            raise ConfigError(
                f"websocket_query_param {websocket_query_param!r} is not a bare parameter "
                "name (it holds '?', '=', '&', '#', whitespace or another character "
                "outside A-Z a-z 0-9 . _ ~ -): give the parameter's name alone, "
                "e.g. 'access_token'"
            )
        if on_error is not None and not callable(on_error):
            raise ConfigError("on_error must be a callable (conn, challenge) -> Response")
        # An async hook would hand back a coroutine where a Response is due; refuse
        # it here (plain functions and objects whose __call__ is async alike).
        call = type(on_error).__call__ if on_error is not None else None
        if inspect.iscoroutinefunction(on_error) or inspect.iscoroutinefunction(call):
            raise ConfigError(
                "on_error must return a Response, not a coroutine: use a plain def hook"
            )
        if background_refresh is not None and not isinstance(background_refresh, bool):
            raise ConfigError("background_refresh must be True, False or None")
        if not isinstance(require_token, bool):
            raise ConfigError("require_token must be True or False")
        public = PublicPaths(public_paths)
        if public.entries and not require_token:
            # Listing public paths means "the rest is closed": say so instead of
            # serving every path anonymously.
            raise ConfigError("public_paths only applies with require_token=True")
        if "/*" in public.entries:
            # Every path below "/" is public: fail closed would close nothing, while
            # the OpenAPI document and the reader of the code believe the opposite.
            raise ConfigError(
                "public_paths '/*' makes every path public, so require_token=True "
                "protects nothing: list the public paths one by one, or leave "
                "require_token out and protect routes with Depends(require_token)"
            )
        # fastapi imports this module.
        from .fastapi import scopes_written_as_strings, uncalled_factories  # noqa: PLC0415

        misused = uncalled_factories(app)
        if misused:
            raise ConfigError(
                f"{'; '.join(misused)}: the dependency is the factory itself, not what "
                "calling it returns, so FastAPI reads its parameters as query parameters "
                "and answers every request 422. Call it with the names: "
                'Depends(require_scopes("read:messages"))'
            )
        as_strings = scopes_written_as_strings(app)
        if as_strings:
            raise ConfigError(
                f"{'; '.join(as_strings)}: Security(..., scopes=) was given a string, which "
                "FastAPI reads as one scope per character, so every request gets 403. "
                "Give a list: Security(require_token, scopes=['read:messages'])"
            )
        # Validate everything else first: a verifier built here owns network clients.
        if config is not None and verifier is None:
            verifier = TokenVerifier(config)
        elif config is not None or verifier is None:
            raise ConfigError("Auth0Middleware needs exactly one of config= or verifier=")
        elif isinstance(verifier, Auth0Config):
            # It failed later, with AttributeError: 'Auth0Config' object has no
            # attribute 'config'.
            raise ConfigError(
                "verifier= was given an Auth0Config: pass it as config=, or pass "
                "verifier=TokenVerifier(config)"
            )
        self.app = app
        _answer_rejections_inside(app)
        _warn_if_cors_inside(app, require_token)
        _warn_if_authentication_inside(app)
        _warn_if_twice(app)
        if require_token and isinstance(app, Starlette):
            # Wrapping the app itself: remember the policy for configure_openapi(app),
            # which otherwise finds it among app.user_middleware.
            _WRAPPED_FAIL_CLOSED[app] = public
        # Only a verifier built here is closed here.
        self._owns_verifier = config is not None
        #: The verifier every token goes through.
        self.verifier = verifier
        #: The verifier's configuration.
        self.config: Auth0Config = verifier.config
        self._query_param = websocket_query_param
        if websocket_query_param is not None:
            _redact_query_tokens_in_server_logs(websocket_query_param)
        self._warm = bool(warm_keys_on_startup)
        self._background = self._owns_verifier if background_refresh is None else background_refresh
        # The refresher of the lifespan under way, if any (see _app_lifetime).
        self._refresher: _Refresher | None = None
        # The state dict of the lifespan under way: a request handed this very dict
        # gets a copy (see _store).
        self._lifespan_state: object = None
        # When a rejection answered 500 inside was last logged (_answered_by_a_500).
        self._late_logged_at: float | None = None
        dpop_mode = self.config.dpop
        #: Whether the DPoP scheme is taken (``config.dpop`` is not ``"disabled"``).
        self._dpop_on = dpop_mode != "disabled"
        cls = type(verifier)
        if self._dpop_on and not callable(getattr(cls, "verify_dpop", None)):
            raise ConfigError(
                f"dpop is {dpop_mode!r} but the verifier ({cls.__name__}) has no "
                "verify_dpop(): use a TokenVerifier"
            )
        if (
            self._dpop_on
            and cls.verify is not TokenVerifier.verify
            and cls.verify_dpop is TokenVerifier.verify_dpop
        ):
            # DPoP requests go through verify_dpop(): checks added in an overridden
            # verify() (a revocation list, a tenant rule) would silently not apply.
            raise ConfigError(
                f"{cls.__name__} overrides verify() but not verify_dpop(), and dpop is "
                f"{dpop_mode!r}: DPoP requests would skip the checks added in verify(); "
                "override verify_dpop() too"
            )
        self._dpop_required = dpop_mode == "required"
        self._responder = Responder(
            realm=self.config.realm,
            hook=on_error,
            dpop_algs=self.config.dpop_algorithms if self._dpop_on else None,
            dpop_required=self._dpop_required,
        )
        # The token68 syntax check (a pass over the whole token) is needed only for
        # tokens that fail: TokenVerifier accepts nothing but base64url segments, which
        # are token68, so for valid tokens the check is implied. A subclass that
        # verifies otherwise gets the check up front.
        self._token68_first = type(verifier).verify is not TokenVerifier.verify
        #: With ``require_token=True``, the paths reachable without a token (else None).
        self.public_paths: PublicPaths | None = public if require_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # This runs on every request: the authentication is written out inline (no
        # helper coroutine, no per-request objects beyond what _store must create).
        scope_type = scope["type"]
        if scope_type == "http":
            query_param = None
        elif scope_type == "websocket":
            query_param = self._query_param
        else:
            if scope_type == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return

        try:
            if query_param is None:
                token = bearer_token(scope.get("headers") or (), check_token68=self._token68_first)
            else:
                token = token_from_scope(scope, query_param=query_param)
                if token is not None and self._dpop_on and uses_dpop_scheme(scope):
                    # The query token came beside DPoP credentials: two ways at once,
                    # as for a Bearer header and a query token (RFC 6750 §2).
                    raise MultipleTokensError(
                        "a token in the query beside DPoP credentials in the header"
                    )
            if token is not None:
                if self._dpop_required:
                    raise DPoPRequiredError("a bearer token, and dpop is 'required'")
                try:
                    claims = await self.verifier.verify(token)
                except InvalidTokenError:
                    # Malformed credentials are a 400, not a 401 (RFC 6750 §3.1).
                    if not is_token68(token):
                        raise not_token68_error() from None
                    raise
            elif self._dpop_on and (dpop := dpop_credentials(scope.get("headers") or ())):
                # RFC 9449 §7.1: Authorization: DPoP <token>, with its proof beside it.
                claims = await self.verifier.verify_dpop(
                    dpop[0],
                    dpop[1],
                    method=scope.get("method") or "GET",
                    url=request_htu(scope),
                )
            else:
                claims = None
                public = self.public_paths
                if public is not None:
                    # Here, not per request: the apps mounted in this one find their
                    # protection through it when their OpenAPI document is built, and
                    # a request for a document carries no token.
                    _note_host(scope)
                if public is not None and route_path(scope) not in public:
                    raise MissingTokenError(_refusal_detail(scope, public))
        except Auth0Error as exc:
            await self._reject(exc, scope, receive, send)
            return
        _store(scope, claims, self._responder, self._lifespan_state)

        watch = None
        if scope_type == "websocket":
            watch = receive = _ConnectWatch(receive)
            scope[CONNECT_WATCH] = watch
        try:
            await self.app(scope, receive, send)
        except AuthenticationRejected as rejected:
            # Raised by our own dependencies (before the endpoint ran), or by the
            # application's own code; any other exception propagates untouched.
            if scope_type == "http" and self._answered_by_a_500(rejected, scope):
                raise
            connect_received = rejected.websocket_connect_received
            accepted = rejected.websocket_accepted
            if watch is not None and watch.connected and not connect_received:
                # The application took websocket.connect (Starlette's accept() does)
                # but the exception does not say whether it accepted. Waiting for a
                # connect message that already went would hang; a close is right in
                # both states: before accept the server refuses the handshake (403),
                # after it the client gets the close code.
                accepted = True
            await self._reject(
                rejected.error,
                scope,
                receive,
                send,
                connect_received=connect_received,
                accepted=accepted,
            )
        except RuntimeError as exc:
            # Starlette's ExceptionMiddleware (ours registered in it) met a rejection
            # after a response had started: perhaps an app inside answered it with 500.
            if isinstance(exc.__cause__, AuthenticationRejected):
                self._answered_by_a_500(exc.__cause__, scope)
            raise

    def _answered_by_a_500(self, rejected: AuthenticationRejected, scope: Scope) -> bool:
        """Whether ``rejected`` came up through a Starlette app with no handler for it,
        whose own ServerErrorMiddleware has then answered 500 (and re-raised it), so
        that no answer of ours can follow. Such an app was mounted after the middleware
        registered its handler (at startup), or sits behind a wrapper the startup walk
        cannot look into: register the handler on it now, found in the traceback, so
        that its next rejections get their RFC 6750 answer, and say what happened (at
        most once a minute: a client must not decide how much the application logs).
        """
        apps = _apps_without_handler(rejected)
        if not apps:
            return False
        for app in apps:
            _register_handler(app)
        now = time.monotonic()
        last = self._late_logged_at
        level = logging.ERROR
        if last is not None and now - last < REJECTION_LOG_WINDOW:
            level = logging.DEBUG
        else:
            self._late_logged_at = now
        logger.log(
            level,
            "a rejection on %s became a 500: it was raised in an app with no handler for "
            "it (mounted after Auth0Middleware started, or behind a wrapper it cannot "
            "look into); the handler is registered on that app now, so its next ones "
            "get 401/403. Mount sub-applications before the app serves its first "
            "request, or register the handler: "
            "sub_app.add_exception_handler(AuthenticationRejected, rejection_handler)",
            log_safe(scope.get("path")),
            extra={"reason": "mounted_late"},
        )
        return True

    async def _reject(
        self,
        exc: Auth0Error,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        connect_received: bool = False,
        accepted: bool = False,
    ) -> None:
        challenge = self._responder.challenge(exc, scope)
        self._responder.log_rejection(
            scope, challenge, exc.token_facts, exc.detail, misconfiguration=exc.misconfiguration
        )
        if scope["type"] == "websocket":
            if accepted:
                await send({"type": "websocket.close", "code": _close_code(exc)})
                return
            if not connect_received:
                # The ASGI spec has the application answer websocket.connect with
                # accept, close or a denial response; a client that already left
                # needs no answer.
                message = await receive()
                if message["type"] != "websocket.connect":
                    return
            if _DENIAL_EXTENSION not in (scope.get("extensions") or {}):
                await send({"type": "websocket.close", "code": _close_code(exc)})
                return
        response = self._responder.response(HTTPConnection(scope), challenge)
        # A Starlette Response sends websocket.http.response.* on a websocket scope.
        await response(scope, receive, send)

    # -- lifespan ---------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._lifespan_state = scope.get("state")
        if self.public_paths is not None:
            _note_host(scope)

        # Only observe: every message passes through unchanged, in order.
        async def observed_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._on_startup()
            elif message["type"] == "lifespan.shutdown":
                # Shutdown begins: nothing may fetch any more, so the application's
                # own shutdown code can close a key source it passed in.
                await self._stop_refresher()
            return message

        async def observed_send(message: Message) -> None:
            if message["type"] in _LIFESPAN_END:
                await self._on_shutdown()
            await send(message)

        try:
            async with self._app_lifetime():
                await self.app(scope, observed_receive, observed_send)
        finally:
            # Its requests are over: a later one is judged as if no lifespan ran.
            if self._lifespan_state is scope.get("state"):
                self._lifespan_state = None

    @contextlib.asynccontextmanager
    async def _app_lifetime(self) -> AsyncIterator[None]:
        """What lives exactly as long as the application's lifespan: the single place
        for it. Entered around the whole lifespan (so the refresher's task group nests
        properly): the key source's background refresher, stopped at shutdown before
        the verifier is closed (see :meth:`_on_shutdown`), or here at the latest."""
        refresher = self._new_refresher()
        try:
            if refresher is not None:
                await refresher.__aenter__()
        except Exception:
            # Keys still refresh on demand; an app must not fail to start over this
            # (e.g. the owner of a shared key source already runs its refresher).
            logger.warning(
                "could not start the background refresh of the issuer's keys; "
                "they refresh on demand",
                exc_info=True,
                extra={"reason": "refresher_not_started"},
            )
            refresher = None
        if refresher is None:
            yield
            return
        self._refresher = refresher
        try:
            yield
        finally:
            if self._refresher is refresher:
                self._refresher = None
            await refresher.__aexit__(None, None, None)

    def _new_refresher(self) -> _Refresher | None:
        if not self._background:
            return None
        running = getattr(getattr(self.verifier, "key_set", None), "running", None)
        return _Refresher(running) if callable(running) else None

    async def _on_startup(self) -> None:
        """Startup work, run when ``lifespan.startup`` arrives: warm the key set."""
        if not self._warm:
            return
        try:
            await self.verifier.refresh()
        except Exception as exc:  # warming is an optimisation, never a reason to fail
            logger.warning(
                "could not load the issuer's keys at startup; they load in the background "
                "or on the first request",
                extra={"reason": getattr(exc, "reason", type(exc).__name__)},
            )

    async def _stop_refresher(self) -> None:
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            await refresher.stop()

    async def _on_shutdown(self) -> None:
        """Shutdown work: stop the background refresher (so that nothing fetches
        any more), then close what this middleware built, nothing else."""
        await self._stop_refresher()
        if not self._owns_verifier:
            return
        try:
            await self.verifier.aclose()
        except Exception:
            logger.warning(
                "closing the token verifier failed",
                exc_info=True,
                extra={"reason": "close_failed"},
            )


class _Refresher:
    """Runs a key source's ``running()`` context in a task group of its own, in a task
    that can be stopped early (from shutdown) and is stopped at the latest on exit.

    Entering it returns once the refresher has started (a failure to start raises).
    Like the key source's own ``running()``, it never wraps the body's exception in an
    exception group, and a refresher that crashes later is logged, never allowed to
    cancel the application's lifespan.
    """

    def __init__(self, running: Any) -> None:
        self._running = running
        self._group: anyio.abc.TaskGroup | None = None
        self._scope = anyio.CancelScope()
        self._stopped: anyio.Event | None = None

    async def __aenter__(self) -> None:
        self._stopped = anyio.Event()
        group = anyio.create_task_group()
        await group.__aenter__()
        try:
            await group.start(self._run)
        except BaseException:
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)
            raise
        self._group = group

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        started = False
        try:
            with self._scope:
                async with self._running():
                    started = True
                    task_status.started()
                    # Only the cancel scope ends this. An event no one sets, rather
                    # than sleep_forever(): on some event loops (rloop, as of 0.5) an
                    # infinite sleep returns at once, which would end the refresher.
                    await anyio.Event().wait()
            if not self._scope.cancel_called:
                logger.error(
                    "the background refresh of the issuer's keys ended on its own; "
                    "they refresh on demand",
                    extra={"reason": "refresher_failed"},
                )
        except Exception:
            if not started:
                raise  # reported by __aenter__
            logger.error(
                "the background refresh of the issuer's keys failed; they refresh on demand",
                exc_info=True,
                extra={"reason": "refresher_failed"},
            )
        finally:
            if self._stopped is not None:
                self._stopped.set()

    async def stop(self) -> None:
        """Stop the refresher and wait until it has (idempotent; any task may call it)."""
        self._scope.cancel()
        if self._stopped is not None and self._group is not None:
            await self._stopped.wait()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        group, self._group = self._group, None
        self._scope.cancel()
        if group is not None:
            await group.__aexit__(None, None, None)


_LIFESPAN_END = frozenset(
    {"lifespan.shutdown.complete", "lifespan.shutdown.failed", "lifespan.startup.failed"}
)


def _answer_rejections_inside(app: ASGIApp) -> None:
    """Register our handler on every Starlette/FastAPI app the middleware wraps.

    A Starlette app's own ServerErrorMiddleware would meet a dependency's
    :class:`AuthenticationRejected` before we do, answer 500 and re-raise (so our
    answer would then be a second response): when the middleware wraps the app
    directly (``Auth0Middleware(app)`` rather than ``app.add_middleware``), and for
    every app mounted inside (``app.mount("/v1", sub_app)``). Registered there, our
    handler answers the rejection itself, exactly as we would. Done here, when the
    outer app builds its middleware: after the routes are set up, and usually before a
    mounted app builds its own stack (on its first request), which reads the handlers.
    A mounted app that already served requests on its own (a test of the sub-app
    alone, then the whole app) has its stack built: the handler also goes into that
    stack's ExceptionMiddleware, which reads its handlers on every exception.

    An app this walk misses (mounted later, or behind a wrapper it cannot look into)
    gets the handler when its first rejection comes up as a 500 (see
    ``Auth0Middleware._answered_by_a_500``).
    """
    from .fastapi import rejection_handler  # noqa: PLC0415 (fastapi imports this module)

    for found in _starlette_apps_inside(app):
        if AuthenticationRejected in found.exception_handlers:
            continue  # the application answers rejections its own way
        _register_handler(found)
    # Added with app.add_middleware, we run inside the app's own stack, and its
    # ExceptionMiddleware is below us, after the middleware added before us. A
    # rejection answered there is an ordinary 401/403 response to that middleware; left
    # to us, it passes through it as an exception, and a catch-all error middleware
    # makes it a 500, a metrics one counts a 5xx, an error tracker reports it.
    exception_middleware = _exception_middleware_below(app)
    if exception_middleware is not None:
        handlers = getattr(exception_middleware, "_exception_handlers", None)
        if not (isinstance(handlers, dict) and AuthenticationRejected in handlers):
            exception_middleware.add_exception_handler(AuthenticationRejected, rejection_handler)


def _register_handler(app: Starlette) -> None:
    """Our handler for rejections on ``app``, and in its middleware stack if built."""
    from .fastapi import rejection_handler  # noqa: PLC0415 (fastapi imports this module)

    app.add_exception_handler(AuthenticationRejected, rejection_handler)
    built = _built_exception_middleware(app)
    if built is not None:
        built.add_exception_handler(AuthenticationRejected, rejection_handler)


def _apps_without_handler(rejected: AuthenticationRejected) -> list[Starlette]:
    """The Starlette apps ``rejected`` passed through on its way up that have no
    handler for it. Looked for in its traceback (the frames of ``Starlette.__call__``),
    on this rare path only. (An instance raised again keeps the frames of its earlier
    passes; an app found there has had our handler since, so it is not found again.)
    """
    found: list[Starlette] = []
    tb = rejected.__traceback__
    for _ in range(256):  # a bound, as for every walk here
        if tb is None:
            break
        owner = tb.tb_frame.f_locals.get("self")
        if (
            isinstance(owner, Starlette)
            and AuthenticationRejected not in owner.exception_handlers
            and all(owner is not app for app in found)
        ):
            found.append(owner)
        tb = tb.tb_next
    return found


def _exception_middleware_below(app: ASGIApp | None) -> ExceptionMiddleware | None:
    """The first ExceptionMiddleware down the ``.app`` chain from ``app``, before any
    Starlette app (whose own is handled with its handlers), or ``None``."""
    node: Any = app
    for _ in range(64):  # a bound: a cycle of .app attributes must not hang startup
        if node is None or isinstance(node, Starlette):
            return None
        if isinstance(node, ExceptionMiddleware):
            return node
        node = getattr(node, "app", None)
    return None


def _built_exception_middleware(app: Starlette) -> ExceptionMiddleware | None:
    """The ExceptionMiddleware of ``app``'s middleware stack, if it is built already."""
    return _exception_middleware_below(app.middleware_stack)


def _starlette_apps_inside(app: ASGIApp) -> Iterator[Starlette]:
    """``app`` if it is a Starlette app, and every Starlette app reachable below it:
    through middleware (``.app``), routers and mounts (``.routes``), nested mounts."""
    for node in app_graph(app):
        if isinstance(node, Starlette):
            yield node


def app_graph(app: ASGIApp) -> Iterator[Any]:
    """``app`` and everything reachable below it, once each: middleware (``.app``),
    Starlette apps (their router), routers and mounts (``.routes``), nested mounts."""
    stack: list[Any] = [app]
    seen: set[int] = set()
    budget = 4096  # a bound: a strange app graph must not hang startup
    while stack and budget:
        node = stack.pop()
        budget -= 1
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, Starlette):
            stack.append(node.router)
            continue
        routes = getattr(node, "routes", None)
        if isinstance(routes, list):
            for route in routes:
                # A Mount or Host keeps the app it was given as _base_app (.app may be
                # that app wrapped in the mount's own middleware).
                stack.append(getattr(route, "_base_app", None))
                stack.append(getattr(route, "app", None))
                # FastAPI 0.16x keeps an included router whole, as one route holding it
                # (with neither .app nor .routes of its own): its mounts are in there.
                stack.append(getattr(route, "original_router", None))
        stack.append(getattr(node, "app", None))


def _middleware_inside(
    app: ASGIApp, cls: type, *, mounted: bool = True
) -> tuple[type, bool] | None:
    """The class of the first ``cls`` middleware (a subclass counts) that runs inside
    this one, and whether it is in an app mounted below (rather than in the app we
    wrap or run in); or ``None``.

    The inner stack is already built when Starlette constructs us, so it can be
    walked: through ``.app`` down to the first Starlette app, whose own
    ``user_middleware`` all runs inside us when we wrap it directly; then through
    routers and mounts (:func:`app_graph`) to the apps mounted below, whose
    ``user_middleware`` runs inside us too (their stacks may not be built yet).
    """
    node: Any = app
    for _ in range(64):  # a bound: a cycle of .app attributes must not hang startup
        found = _found_in(node, cls)
        if found is not None:
            return found, False
        if isinstance(node, Starlette):
            break
        node = getattr(node, "app", None)
        if node is None:
            break
    if not mounted:
        return None
    for node in app_graph(app):
        found = _found_in(node, cls)
        if found is not None:
            return found, True
    return None


def _found_in(node: object, cls: type) -> type | None:
    """``cls`` (or a subclass) as ``node`` itself, or declared in ``node``'s
    ``user_middleware`` when it is a Starlette app."""
    if isinstance(node, cls):
        return type(node)
    if isinstance(node, Starlette):
        for entry in node.user_middleware:
            found = getattr(entry, "cls", None)
            if isinstance(found, type) and issubclass(found, cls):
                return found
    return None


def _warn_if_cors_inside(app: ASGIApp, require_token: bool) -> None:
    """Log a warning when ``CORSMiddleware`` runs inside this middleware.

    The mistake is easy (Starlette runs the middleware added *last* first; a CORS
    layer on the API app mounted in the protected one) and shows up only in a
    browser, as a bare CORS error: our rejections never reach the CORS layer, so they
    carry no CORS headers, and fail closed every preflight gets 401.
    """
    found = _middleware_inside(app, CORSMiddleware)
    if found is None:
        return
    if found[1]:
        # Harmless when the outer app also runs one outside us, which cannot be seen
        # from here (the middleware outside us is built after us): say so.
        where, fix = (
            "in an app mounted inside Auth0Middleware",
            "Unless a CORSMiddleware also runs outside Auth0Middleware, add one to the "
            "outer app, outside it: app.add_middleware(CORSMiddleware, ...) after "
            "Auth0Middleware, or listed before it in Starlette(middleware=[...])",
        )
    else:
        where, fix = (
            "inside Auth0Middleware",
            "Put it outside: app.add_middleware(CORSMiddleware, ...) after "
            "Auth0Middleware (the last one added runs first), or list it before "
            "Auth0Middleware in Starlette(middleware=[...]) (the first listed runs first)",
        )
    logger.warning(
        "CORSMiddleware runs %s, so %s. %s.",
        where,
        "every CORS preflight outside public_paths is answered 401"
        if require_token
        else "its own answers (401/400 for a bad token, 503 in an outage) reach browsers "
        "without CORS headers",
        fix,
        extra={"reason": "cors_inside"},
    )


def _warn_if_authentication_inside(app: ASGIApp) -> None:
    """Log a warning when Starlette's ``AuthenticationMiddleware`` runs inside this
    middleware, in the app it wraps or runs in. (Not in an app mounted below: one
    with a login of its own, an admin site, say, may mean it.)

    It runs after us and replaces the ``scope["user"]`` and ``scope["auth"]`` we set,
    so Starlette's ``@requires`` checks its backend's answer instead of the token:
    valid tokens get a bare 403 and nothing is logged anywhere (a leftover from
    before asgi_auth0, typically). Our own dependencies read the claims and still work,
    which makes the cause harder to see.
    """
    found = _middleware_inside(app, AuthenticationMiddleware, mounted=False)
    if found is not None:
        logger.warning(
            "%s runs inside Auth0Middleware and replaces the request.user and "
            "request.auth it sets, so Starlette's @requires checks that middleware's "
            "backend, not the token (valid tokens get 403). Remove it: Auth0Middleware "
            "sets request.user and request.auth itself.",
            found[0].__name__,
            extra={"reason": "authentication_inside"},
        )


def _warn_if_twice(app: ASGIApp) -> None:
    """Log a warning when another ``Auth0Middleware`` runs inside this one, in the app
    it wraps or runs in (``add_middleware`` twice, or both ``add_middleware`` and a
    wrapper). It works, but verifies every token twice, and two middlewares built
    from a config each keep a key cache of their own. (One on an app mounted below,
    for another API, is left alone.)"""
    found = _middleware_inside(app, Auth0Middleware, mounted=False)
    if found is not None:
        logger.warning(
            "Auth0Middleware runs twice on this app (a second one inside it): each "
            "request is verified twice, and each copy built with config= fetches the "
            "JWKS for itself; add it once",
            extra={"reason": "middleware_twice"},
        )


# Starlette apps wrapped directly by a fail-closed middleware, with their public paths.
_WRAPPED_FAIL_CLOSED: weakref.WeakKeyDictionary[Starlette, PublicPaths] = (
    weakref.WeakKeyDictionary()
)


# Starlette apps a fail-closed middleware runs in (seen as scope["app"] at startup or
# on a request without a token): the apps mounted in them are protected too.
_FAIL_CLOSED_HOSTS: weakref.WeakSet[Starlette] = weakref.WeakSet()


def _note_host(scope: Scope) -> None:
    host = scope.get("app")
    if isinstance(host, Starlette) and host not in _FAIL_CLOSED_HOSTS:
        _FAIL_CLOSED_HOSTS.add(host)


def _mount_prefixes(routes: object, target: object, prefix: str, depth: int) -> Iterator[str]:
    """Where ``target`` is mounted among ``routes`` (nested mounts included)."""
    if depth > 8 or not isinstance(routes, list):
        return
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            # An included router kept whole (FastAPI 0.16x): its mounts sit below the
            # prefix it was included with (nested includes carry their own).
            below = getattr(getattr(route, "include_context", None), "prefix", "")
            if isinstance(below, str):
                yield from _mount_prefixes(
                    getattr(included, "routes", None), target, prefix + below, depth + 1
                )
            continue
        if not isinstance(route, Mount):
            continue
        path = prefix + route.path
        if route.app is target:
            yield path
        else:
            yield from _mount_prefixes(getattr(route, "routes", None), target, path, depth + 1)


def fail_closed_policies(app: Starlette) -> list[PublicPaths]:
    """The public paths of every ``Auth0Middleware(require_token=True)`` around ``app``:
    added with ``app.add_middleware``, wrapping ``app`` itself, or around an app that
    ``app`` is mounted in (known once that app has started or served a request).
    Empty when none requires a token (then every route decides through its
    dependencies)."""
    policies = _own_policies(app)
    for host in [*_FAIL_CLOSED_HOSTS, *_WRAPPED_FAIL_CLOSED.keys()]:
        if host is app:
            continue
        prefixes = list(_mount_prefixes(host.routes, app, "", 0))
        if prefixes:
            policies += [p.below(prefix) for p in _own_policies(host) for prefix in prefixes]
    return policies


def _own_policies(app: Starlette) -> list[PublicPaths]:
    policies = []
    for entry in getattr(app, "user_middleware", ()):
        cls = getattr(entry, "cls", None)
        kwargs = getattr(entry, "kwargs", None) or {}
        fail_closed = kwargs.get("require_token") is True
        if fail_closed and isinstance(cls, type) and issubclass(cls, Auth0Middleware):
            policies.append(PublicPaths(kwargs.get("public_paths", ())))
    wrapped = _WRAPPED_FAIL_CLOSED.get(app)
    if wrapped is not None:
        policies.append(wrapped)
    return policies


# The room the near-miss hint of a fail-closed refusal is fitted into (the rejection
# log shows details up to 600 characters whole, see _challenge._facts): short enough
# to read at a glance.
_DETAIL_ROOM = 200


def _refusal_detail(scope: Scope, public: PublicPaths) -> str:
    """The log detail of a fail-closed refusal of a request without a token (the
    refusal path only): why the request has no token, when it sent an
    ``Authorization`` header, and which listed public path it nearly is, when it
    nearly is one (``"/health/"`` listed for ``/health``, or an entry written with the
    ``root_path`` in front). Neither echoes the header; both fit the log's room."""
    detail = "a token is required outside the public paths"
    hint = missing_token_hint(scope)
    if hint:
        detail += f"; {hint}"
    root = scope.get("root_path")
    near = public.near_miss(
        route_path(scope), root if isinstance(root, str) else "", _DETAIL_ROOM - len(detail) - 2
    )
    if near:
        detail += f"; {near}"
    return detail


def _close_code(exc: Auth0Error) -> int:
    """The WebSocket close code for a rejection sent as a close frame."""
    return _WS_TRY_AGAIN_LATER if isinstance(exc, KeySetError) else _WS_POLICY_VIOLATION
