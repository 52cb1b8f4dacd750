"""From an error to the HTTP answer: status, ``WWW-Authenticate`` (RFC 6750 §3), body.

:func:`challenge_for` turns an :class:`Auth0Error` into a :class:`Challenge`, a plain
value holding everything a response needs. A *response hook* turns a challenge into a
Starlette ``Response``; :func:`json_response` is the default and
:func:`problem_json_response` the RFC 9457 alternative. Whatever the hook returns, the
challenge's headers (``WWW-Authenticate``, ``Retry-After``) are set on it, so a custom
body format can never lose the challenge.

Header values are built only from the configured realm, the error class's fixed
``error``/``description`` and the scopes a developer declared, and each is filtered to
the characters RFC 6750 allows inside a quoted string: nothing can add quotes, a
backslash or a control character (CR/LF) to a header.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response

from ._bearer import SCHEME_CHARS
from ._errors import (
    Auth0Error,
    BearerError,
    DPoPBindingError,
    DPoPRequiredError,
    InsufficientScopeError,
    InvalidDPoPProofError,
    KeySetError,
)
from ._keys import log_field, log_safe

logger = logging.getLogger("asgi_auth0.middleware")

__all__ = [
    "Challenge",
    "Responder",
    "ResponseHook",
    "challenge_for",
    "json_response",
    "problem_json_response",
    "scope_token_ok",
    "uses_dpop_scheme",
    "www_authenticate",
]

#: A response hook: builds the response for a rejected request. It gets the
#: connection (``Request`` or ``WebSocket`` scope view) and the :class:`Challenge`.
ResponseHook = Callable[[HTTPConnection, "Challenge"], Response]

# RFC 6750 §3: error and error_description values are NQSCHAR = %x20-21 / %x23-5B /
# %x5D-7E (printable ASCII without '"' and '\'). The same set keeps realm safe.
_NOT_NQSCHAR = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
# RFC 6749 §3.3 scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# A JWS alg name (RFC 7518 registry style), for the DPoP challenge's algs.
_ALG = re.compile(r"[A-Za-z0-9+._-]{1,32}")


def _quotable(value: str) -> str:
    return _NOT_NQSCHAR.sub("", value)


def scope_token_ok(value: object) -> bool:
    """True if ``value`` is a valid OAuth scope token (RFC 6749 §3.3)."""
    return isinstance(value, str) and _SCOPE_TOKEN.fullmatch(value) is not None


def www_authenticate(
    realm: str,
    error: str | None = None,
    description: str | None = None,
    scope: Iterable[str] = (),
    *,
    scheme: str = "Bearer",
    algs: Iterable[str] = (),
) -> str:
    """A ``WWW-Authenticate: Bearer ...`` value; every part is filtered to safe characters.

    With no ``error`` it is the bare challenge RFC 6750 §3.1 asks for when the request
    carried no credentials. Scopes that are not valid scope tokens are left out.
    ``scheme="DPoP"`` with ``algs`` gives RFC 9449 §7.1's DPoP challenge instead.
    """
    parts = [f'realm="{_quotable(realm)}"']
    shown_algs = [a for a in algs if _ALG.fullmatch(a)]
    if shown_algs:
        parts.append(f'algs="{" ".join(shown_algs)}"')
    if error:
        parts.append(f'error="{_quotable(error)}"')
        if description:
            parts.append(f'error_description="{_quotable(description)}"')
        scopes = [s for s in scope if scope_token_ok(s)]
        if scopes:
            parts.append(f'scope="{" ".join(scopes)}"')
    return f"{scheme} " + ", ".join(parts)


# The errors that concern the DPoP side of a request: answered with the DPoP challenge
# even when the request's scheme could not be told.
_DPOP_ERRORS = (InvalidDPoPProofError, DPoPBindingError, DPoPRequiredError)


def _authenticate_header(
    exc: BearerError,
    realm: str,
    required: tuple[str, ...],
    *,
    dpop_algs: tuple[str, ...] | None,
    dpop_required: bool,
    dpop_request: bool,
) -> str:
    """The ``WWW-Authenticate`` value for ``exc``: RFC 6750's Bearer challenge, and
    RFC 9449's DPoP challenge (with ``algs``) when DPoP is on.

    With both schemes on, the error goes with the scheme the request used and the
    other scheme's challenge follows bare, so a client learns it exists.
    """
    cls = type(exc)
    error, description = cls.error, _quotable(cls.description)
    if dpop_algs is None:
        return www_authenticate(realm, error, description, required)
    on_dpop = dpop_required or dpop_request or isinstance(exc, _DPOP_ERRORS)
    dpop = www_authenticate(
        realm,
        error if on_dpop else None,
        description,
        required,
        scheme="DPoP",
        algs=dpop_algs,
    )
    if dpop_required:
        return dpop
    if on_dpop:
        return f"{dpop}, {www_authenticate(realm)}"
    return f"{www_authenticate(realm, error, description, required)}, {dpop}"


@dataclass(frozen=True)
class Challenge:
    """Everything the answer to a rejected request needs, independent of body format."""

    #: HTTP status: 400, 401, 403 or 503.
    status_code: int
    #: RFC 6750 error code (``invalid_token``, ...), ``temporarily_unavailable`` for
    #: 503, or ``None`` when no credentials were sent.
    error: str | None
    #: Fixed, human-readable text of the error class.
    error_description: str
    #: Stable snake_case machine code (``token_expired``, ``missing_token``, ...).
    reason: str
    #: Headers the response must carry (``WWW-Authenticate`` or ``Retry-After``).
    headers: Mapping[str, str]
    #: The scopes (or permissions) that were required, on a 403.
    required: tuple[str, ...] = ()
    #: The error being answered; for logging and custom hooks, never for echoing.
    exception: Auth0Error | None = field(default=None, compare=False, repr=False)

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error", "error_description", "reason"}``."""
        return {
            "error": self.error,
            "error_description": self.error_description,
            "reason": self.reason,
        }


def challenge_for(
    exc: Auth0Error,
    *,
    realm: str,
    dpop_algs: Iterable[str] | None = None,
    dpop_required: bool = False,
    dpop_request: bool = False,
) -> Challenge:
    """The :class:`Challenge` answering ``exc``.

    ``BearerError``: its status with a ``WWW-Authenticate`` challenge (bare for a
    missing token, with ``scope=`` for insufficient scope). ``KeySetError``: 503 with
    ``Retry-After``. The description always comes from the class, never the instance.
    ``dpop_algs`` (DPoP on), ``dpop_required`` and ``dpop_request`` (the request used
    the ``DPoP`` scheme) choose the challenge scheme(s) as RFC 9449 §7.1 and §7.2 ask.
    """
    cls = type(exc)
    description = _quotable(cls.description)
    headers: dict[str, str] = {}
    required: tuple[str, ...] = ()
    if isinstance(exc, InsufficientScopeError):
        required = tuple(s for s in exc.required if scope_token_ok(s))
    if isinstance(exc, BearerError):
        algs = tuple(dpop_algs) if dpop_algs is not None else None
        headers["WWW-Authenticate"] = _authenticate_header(
            exc,
            realm,
            required,
            dpop_algs=algs,
            dpop_required=dpop_required,
            dpop_request=dpop_request,
        )
    elif isinstance(exc, KeySetError):
        headers["Retry-After"] = str(int(exc.retry_after))
    return Challenge(
        status_code=cls.status_code,
        error=cls.error,
        error_description=description,
        reason=cls.reason,
        headers=headers,
        required=required,
        exception=exc,
    )


def _status_of(response: Response) -> int | None:
    """A hook response's status, or ``None`` when it has no readable integer one."""
    try:
        status = response.status_code
    except Exception:
        return None
    # An int, HTTPStatus (an IntEnum) included; not a bool.
    if isinstance(status, int) and not isinstance(status, bool):
        return int(status)
    return None


def uses_dpop_scheme(scope: Mapping[str, Any]) -> bool:
    """Whether the request's ``Authorization`` header uses the ``DPoP`` scheme."""
    for name, value in scope.get("headers") or ():
        if name.lower() == b"authorization":
            # "DPoP" then anything but a scheme-name byte ("DPoP-x" is another
            # scheme): a malformed DPoP value (400) is still a DPoP request, and its
            # error goes on the DPoP challenge.
            credentials = bytes(value).strip(b" \t")
            return credentials[:4].lower() == b"dpop" and (
                len(credentials) == 4 or credentials[4] not in SCHEME_CHARS
            )
    return False


def json_response(conn: HTTPConnection, challenge: Challenge) -> Response:
    """The default hook: ``application/json`` ``{"error", "error_description", "reason"}``."""
    return JSONResponse(challenge.body(), status_code=challenge.status_code)


def problem_json_response(conn: HTTPConnection, challenge: Challenge) -> Response:
    """An RFC 9457 ``application/problem+json`` hook.

    ``type`` is ``about:blank`` with the status phrase as ``title``; ``detail`` is
    the error description, and ``error`` and ``reason`` are extension members.
    """
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(challenge.status_code).phrase,
        "status": challenge.status_code,
        "detail": challenge.error_description,
        "error": challenge.error,
        "reason": challenge.reason,
    }
    if challenge.required:
        body["required_scopes"] = list(challenge.required)
    return JSONResponse(
        body, status_code=challenge.status_code, media_type="application/problem+json"
    )


#: Seconds during which further rejections of the same status and reason are only
#: counted, not logged (see :meth:`Responder.log_rejection`).
REJECTION_LOG_WINDOW = 60.0


def _request_line(scope: Mapping[str, Any]) -> str:
    # The method and path are the client's text: escaped and cut short, like a kid
    # (a server may pass a method of hundreds of token characters).
    method = scope.get("method") or str(scope.get("type", "")).upper()
    if not (isinstance(method, str) and len(method) <= 16 and method.isprintable()):
        method = log_safe(method)[:24] + "..."
    path = repr(scope.get("path", ""))
    if len(path) > 120:
        path = path[:117] + "..."
    return f"{method} {path}"


#: The longest error detail a rejection line shows: the longest hint is about 350.
_DETAIL_MAX = 600


def _facts(
    token_facts: tuple[object, object, object] | None, detail: object
) -> tuple[str, dict[str, object]]:
    """The log text and extra fields for a token's kid, alg and iss (escaped in the
    text; as :func:`log_field` puts them in the fields), then the error's detail
    (shown as is when it is a short printable string, else escaped)."""
    text = ""
    fields: dict[str, object] = {}
    if token_facts is not None:
        kid, alg, iss = token_facts
        fields = {"kid": log_field(kid), "alg": log_field(alg), "iss": log_field(iss)}
        text = f" kid={log_safe(kid)} alg={log_safe(alg)} iss={log_safe(iss)}"
    if detail:
        if isinstance(detail, str) and detail.isprintable():
            # Our own words, with the hint that says what to change: kept whole up to
            # a bound (a key source of the application's may raise any text).
            shown = detail if len(detail) <= _DETAIL_MAX else detail[: _DETAIL_MAX - 3] + "..."
        else:
            shown = log_safe(detail)
        fields["detail"] = shown
        text = f"{text}: {shown}"
    return text, fields


class Responder:
    """Builds the response for a rejected request: one realm, one response hook.

    The middleware makes one and stores it in the request state, so that rejections
    raised by the FastAPI dependencies are answered exactly like its own.
    """

    __slots__ = (
        "_logged_at",
        "_status_fixed",
        "_suppressed",
        "clock",
        "dpop_algs",
        "dpop_required",
        "hook",
        "realm",
    )

    def __init__(
        self,
        *,
        realm: str,
        hook: ResponseHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        dpop_algs: Iterable[str] | None = None,
        dpop_required: bool = False,
    ) -> None:
        self.realm = realm
        #: With DPoP on: the algorithms its challenge lists (else ``None``).
        self.dpop_algs: tuple[str, ...] | None = tuple(dpop_algs) if dpop_algs is not None else None
        #: Whether only the DPoP scheme is accepted.
        self.dpop_required = dpop_required
        self.hook: ResponseHook = hook if hook is not None else json_response
        #: The clock of the rejection log's window (tests replace it).
        self.clock = clock
        # Per (status, reason, whether it points at the configuration): when it was
        # last logged, and how many went unlogged since. The keys are a fixed, small
        # set: the error classes' reasons.
        self._logged_at: dict[tuple[int, str, bool], float] = {}
        self._suppressed: dict[tuple[int, str, bool], int] = {}
        # Whether a hook's success status was already reported (once per process).
        self._status_fixed = False

    def log_rejection(
        self,
        scope: Mapping[str, Any],
        challenge: Challenge,
        token_facts: tuple[object, object, object] | None = None,
        detail: str | None = None,
        *,
        misconfiguration: bool = False,
    ) -> None:
        """Log a rejected request: once per status and reason per minute, then a count.

        Anyone can send bad tokens, and during an issuer outage every request may get
        503: a line per request would let a client decide how much the application
        logs. The first rejection of a kind in a window is logged (INFO, or WARNING
        for 5xx and for a refusal that points at the configuration) with method and
        path (never the query string, which may hold a WebSocket token); the rest are
        counted, and the next logged line says how many.
        Each one is logged at DEBUG. ``token_facts`` (the token's ``kid``, ``alg`` and
        ``iss``) are shown escaped, then the error's ``detail``, the why behind the
        reason ("exp has passed", "refresh cooldown"; our own words, with any value
        from the request or the token in them escaped and cut short): shown as is when
        printable, up to 600 characters, else escaped (a custom key source may raise
        its own text). Never the token, the header or the claims.
        """
        status, reason = challenge.status_code, challenge.reason
        # A refusal that points at the configuration has a window of its own: in a
        # shared one, any user sending an ID token (same status and reason, INFO)
        # at each window's start would keep the WARNING from ever being written.
        key = (status, reason, misconfiguration)
        now = self.clock()
        last = self._logged_at.get(key)
        if last is not None and now - last < REJECTION_LOG_WINDOW:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            if logger.isEnabledFor(logging.DEBUG):
                facts, fields = _facts(token_facts, detail)
                logger.debug(
                    "request rejected: status=%s reason=%s %s%s",
                    status,
                    reason,
                    _request_line(scope),
                    facts,
                    extra={"reason": reason, "scope_type": scope.get("type"), **fields},
                )
            return
        self._logged_at[key] = now
        more = self._suppressed.pop(key, 0)
        level = logging.WARNING if status >= 500 or misconfiguration else logging.INFO
        if logger.isEnabledFor(level):
            facts, fields = _facts(token_facts, detail)
            since = ""
            if more and last is not None:
                since = f" ({more} more like it, unlogged, since the line {now - last:.0f} s ago)"
            logger.log(
                level,
                "request rejected: status=%s reason=%s %s%s%s",
                status,
                reason,
                _request_line(scope),
                facts,
                since,
                extra={
                    "reason": reason,
                    "scope_type": scope.get("type"),
                    "suppressed": more,
                    **fields,
                },
            )

    def challenge(self, exc: Auth0Error, scope: Mapping[str, Any] | None = None) -> Challenge:
        """The challenge for ``exc`` under this realm; ``scope`` (the request's) tells
        which authorization scheme it used, when DPoP is on."""
        if self.dpop_algs is None:
            return challenge_for(exc, realm=self.realm)
        return challenge_for(
            exc,
            realm=self.realm,
            dpop_algs=self.dpop_algs,
            dpop_required=self.dpop_required,
            dpop_request=scope is not None and uses_dpop_scheme(scope),
        )

    def response(self, conn: HTTPConnection, challenge: Challenge) -> Response:
        """Run the hook and make sure the challenge's headers are on its response.

        A hook that raises or returns something else than a ``Response`` is a bug in
        the application; it is logged, and the default answer goes out instead, so a
        rejected request still gets its RFC 6750 status and challenge, never a 500. A
        hook's response with a success status (below 300) is sent with the
        challenge's status instead (and logged once): a rejection must never read as
        a success. Redirects and other error statuses are the hook's to choose.
        """
        try:
            response = self.hook(conn, challenge)
        except Exception:
            logger.exception(
                "the on_error response hook raised; answering with the default response",
                extra={"reason": "response_hook_failed"},
            )
            response = json_response(conn, challenge)
        else:
            if not isinstance(response, Response):
                logger.error(
                    "the on_error response hook returned %s, not a Response; answering "
                    "with the default response",
                    type(response).__name__,
                    extra={"reason": "response_hook_failed"},
                )
                if inspect.isawaitable(response):
                    close = getattr(response, "close", None)
                    if callable(close):
                        close()  # an unawaited coroutine would warn at garbage collection
                response = json_response(conn, challenge)
            elif (status := _status_of(response)) is None or status < 300:
                # A rejection answered 200 (a hook that builds JSONResponse(body) and
                # forgets status_code=challenge.status_code) reads as success to
                # anything that trusts status codes: a gateway's auth_request, a
                # client's refresh-on-401. Redirects and other errors are the hook's
                # choice; a success never is.
                if not self._status_fixed:
                    self._status_fixed = True
                    logger.error(
                        "the on_error response hook answered a %s rejection with status "
                        "%s; sending %s instead (build the response with "
                        "status_code=challenge.status_code)",
                        challenge.status_code,
                        status,
                        challenge.status_code,
                        extra={"reason": "response_hook_status"},
                    )
                with contextlib.suppress(Exception):
                    response.status_code = challenge.status_code
                if _status_of(response) != challenge.status_code:
                    # A Response class that will not take the status (a read-only or
                    # ignored attribute): the default answer, never a 500 or a 200.
                    response = json_response(conn, challenge)
        for name, value in challenge.headers.items():
            response.headers[name] = value
        return response
