"""FastAPI dependencies and the OpenAPI security scheme.

The dependencies do no verification of their own: they read what
:class:`Auth0Middleware` stored for the request, so a token is verified once however
many dependencies a route uses, and scope and permission checks only ever look at
verified claims.

How a dependency rejects a request
----------------------------------
A FastAPI dependency cannot return a response, and raising ``HTTPException`` would be
rendered by FastAPI's own handler as ``{"detail": ...}``. So the dependencies raise
:class:`AuthenticationRejected`. ``Auth0Middleware`` registers
:func:`rejection_handler` for it on the application (and on every application
mounted below it), so the application's own exception handling answers it with
exactly the response the middleware gives for its own rejections (same status,
challenge, body and response hook), and middleware in between sees an ordinary
response. Nothing needs registering. Where the middleware cannot reach the
application (behind a wrapper it cannot look into), the exception travels out to the
middleware, which answers it the same way; if something on that way swallows
exceptions, register :func:`rejection_handler` for ``AuthenticationRejected`` by hand.

OpenAPI
-------
Every dependency declares the ``Auth0`` security scheme, so protected operations carry
``security: [{"Auth0": [scopes...]}]`` and Swagger UI offers "Authorize" (paste a
token). :data:`require_token` and :data:`optional_token` *are* that scheme (instances
of a FastAPI ``SecurityBase``), so FastAPI resolves them as one dependency per request
rather than a dependency plus a nested ``Security`` one: each level of dependency
costs several microseconds of FastAPI's machinery on every request.
:func:`require_scopes` and :func:`require_permissions` still nest a ``Security`` of
the same scheme with their names, because FastAPI only puts scopes into the security
requirement through ``Security``, and users write ``Depends(...)``.

FastAPI's own scope pattern is honoured: scopes given with ``Security(dep,
scopes=[...])`` on any asgi_auth0 dependency, on :data:`bearer_scheme`, or on a parent
dependency (router ``dependencies=`` included) are published as required scopes, so
they are enforced as required OAuth scopes (``Claims.scopes``), all of them: no token
is 401, a shortfall 403 ``insufficient_scope``. Each dependency reads them from its
``SecurityScopes``; with none declared, nothing changes.

:func:`configure_openapi` adds the rest: documented 401/403 responses, requirements
FastAPI cannot express (``any_of`` names as alternatives, ``optional_token`` as
optional) and, when the config has a ``client_id``, an OAuth2 authorization-code
scheme with Auth0's ``/authorize`` and ``/oauth/token`` URLs and PKCE in Swagger UI.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlsplit

import fastapi.routing
from fastapi import FastAPI, Security
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.models import SecurityBase as SecurityBaseModel
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer, OAuth2AuthorizationCodeBearer, SecurityScopes
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState

from ._bearer import missing_token_hint
from ._challenge import scope_token_ok
from ._claims import Claims
from ._config import Auth0Config, validate_url
from ._errors import (
    Auth0Error,
    ConfigError,
    InsufficientPermissionError,
    InsufficientScopeError,
    MissingTokenError,
)
from ._keys import log_safe
from ._middleware import (
    CONNECT_WATCH,
    AuthenticationRejected,
    _ConnectWatch,
    app_graph,
    auth_state,
    fail_closed_policies,
)
from ._public import PublicPaths

__all__ = [
    "SCHEME_NAME",
    "AuthenticationRejected",
    "bearer_scheme",
    "configure_openapi",
    "optional_token",
    "rejection_handler",
    "require_permissions",
    "require_scopes",
    "require_token",
    "swagger_ui_init_oauth",
]

logger: logging.Logger = logging.getLogger("asgi_auth0.fastapi")

#: The name of the security scheme in ``components.securitySchemes``.
SCHEME_NAME = "Auth0"
_ERROR_SCHEMA_NAME = "Auth0ErrorResponse"
_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


class _Auth0Bearer(HTTPBearer):
    """The bearer scheme as FastAPI sees it, declared for OpenAPI; it does nothing at
    request time (the middleware already authenticated, and FastAPI's own 401/403
    answers must never replace the RFC 6750 ones).

    :func:`require_scopes` and :func:`require_permissions` nest this one: their names
    must reach the OpenAPI requirement, and they check them themselves (permissions
    are not OAuth scopes, and ``any_of`` is not "all of").
    """

    def __init__(self) -> None:
        super().__init__(
            bearerFormat="JWT",
            scheme_name=SCHEME_NAME,
            description="An Auth0 access token (JWT) in the Authorization header.",
            auto_error=False,
        )

    async def __call__(self, request: HTTPConnection) -> None:
        return None


# A hand call (``await require_token(request)``) declares no scopes; FastAPI always
# passes its own SecurityScopes. Shared and never mutated.
_NO_SCOPES = SecurityScopes()


class _DeclaringBearer(_Auth0Bearer):
    """:data:`bearer_scheme`: the scheme, enforcing the scopes declared on it."""

    async def __call__(
        self, request: HTTPConnection, security_scopes: SecurityScopes = _NO_SCOPES
    ) -> None:
        if security_scopes.scopes:
            _check_declared(request, auth_state(request.scope)[0], security_scopes.scopes)


#: The ``Auth0`` security scheme, for ``Security(bearer_scheme, scopes=[...])`` in your
#: own dependencies. Without scopes it only declares the scheme (no check at request
#: time); with scopes (its own or a parent's) it requires a token that has all of them:
#: 401 without a token, 403 ``insufficient_scope`` short of a scope.
bearer_scheme: _DeclaringBearer = _DeclaringBearer()
# What require_scopes/require_permissions nest: the same scheme, checking nothing.
_declaration = _Auth0Bearer()
_declaration.model = bearer_scheme.model


def _reject(conn: HTTPConnection, error: Auth0Error) -> NoReturn:
    if isinstance(conn, WebSocket):
        # Dependencies normally run before the endpoint accepts; these flags cover a
        # dependency called by hand later, so the middleware sends what still fits.
        raise AuthenticationRejected(
            error,
            websocket_connect_received=conn.client_state is not WebSocketState.CONNECTING,
            websocket_accepted=conn.application_state is WebSocketState.CONNECTED,
        )
    raise AuthenticationRejected(error)


def _claims_or_reject(conn: HTTPConnection) -> Claims:
    claims, _ = auth_state(conn.scope)
    if claims is None:
        _reject(conn, _missing_token(conn))
    return claims


def _missing_token(conn: HTTPConnection) -> MissingTokenError:
    return MissingTokenError(missing_token_hint(conn.scope))


def _check_declared(
    conn: HTTPConnection,
    claims: Claims | None,
    declared: list[str],
    joined: tuple[str, ...] = (),
) -> Claims:
    """Enforce the scopes FastAPI collected from ``Security(..., scopes=[...])`` on a
    dependency and its parents: OpenAPI publishes them as required OAuth scopes, so
    the token must have all of them (in ``scope``/``scp``, never ``permissions``).
    A shortfall's challenge names them, and ``joined`` (scopes required with them)."""
    if claims is None:
        _reject(conn, _missing_token(conn))
    if not claims.scopes.issuperset(declared):
        _report_unsatisfiable(declared)
        _report_scope_near_miss(
            f"Security(..., scopes={declared!r})",
            (name for name in declared if name not in claims.scopes),
            claims,
        )
        _reject(
            conn,
            InsufficientScopeError(
                _joined([*declared, *joined], _route_scopes(conn)), "declared scope shortfall"
            ),
        )
    return claims


# Declared names already reported: they come from the application's code, never from
# a request, so the set stays as small as the code.
_REPORTED: set[str] = set()


def _report_unsatisfiable(declared: list[str]) -> None:
    """Log, once per name, a declared scope that no token can hold.

    ``Security(require_token, scopes=["read:a write:a"])`` (one string holding two
    scopes) makes every request a 403, and the 403 alone looks like the caller's
    fault. Only the shortfall path gets here, so a satisfied route pays nothing.
    """
    for name in declared:
        key = repr(name)
        if key in _REPORTED or scope_token_ok(name):
            continue
        _REPORTED.add(key)
        logger.error(
            "a route declares the scope %s, which no token can have (a scope is "
            "printable ASCII without spaces, quotes or backslashes; write "
            "scopes=['read:a', 'write:a'], not scopes=['read:a write:a']): every "
            "request to it is refused with 403",
            key,
            extra={"reason": "impossible_scope"},
        )


def _report_no_permissions_claim() -> None:
    """Log, once, that a permission was required of a token with no ``permissions``.

    Auth0 writes that claim only when the API has RBAC on with "Add Permissions in
    the Access Token"; without it every such route answers 403, which looks like the
    caller's fault, and the scopes the token does carry look like the answer.
    """
    if _NO_PERMISSIONS in _REPORTED:
        return
    _REPORTED.add(_NO_PERMISSIONS)
    logger.warning(
        "require_permissions refused a token that has no permissions claim at all: "
        "Auth0 adds it only when the API's RBAC settings have 'Enable RBAC' and 'Add "
        "Permissions in the Access Token' on (for the token's scope, use "
        "require_scopes); every such request is refused with 403",
        extra={"reason": "no_permissions_claim"},
    )


# A key of _REPORTED no scope name can be: scope names are reported by their repr.
_NO_PERMISSIONS = "no permissions claim"

# The most lines _report_scope_near_miss keeps a note of. Its keys come from the code
# (a dependency's names and the kind of near miss), so this is never reached by a
# real application; it bounds the set all the same, and past it the hints stop.
_MAX_REPORTED = 1024


def _report_scope_near_miss(requirement: str, missing: Iterable[str], claims: Claims) -> None:
    """Log, once per requirement, missing scope and kind, a scope shortfall whose
    cause is in the token: the name is one of its permissions, or its scopes hold the
    name with or without a resource prefix, or the token has no scope claim at all.

    Each makes every request a 403 ``scope shortfall``, which reads as the caller's
    fault. Only the shortfall path gets here, so a satisfied route pays nothing; the
    token's own values are shown escaped and cut short, never the whole claim.
    """
    scopes = claims.scopes
    for name in missing:
        kind, hint = _scope_near_miss(requirement, name, claims, scopes)
        if hint is None:
            continue
        key = repr(("scope near miss", requirement, name, kind))
        if key in _REPORTED or len(_REPORTED) >= _MAX_REPORTED:
            continue
        _REPORTED.add(key)
        logger.warning(
            "%s; every such request is refused with 403", hint, extra={"reason": "scope_near_miss"}
        )


def _scope_near_miss(
    requirement: str, name: str, claims: Claims, scopes: frozenset[str]
) -> tuple[str, str | None]:
    refused = f"{requirement} refused a token"
    if name in claims.permissions:
        return "permission", (
            f"{refused} that has {name!r} in its permissions claim, not its scope "
            f"(Auth0 RBAC): use require_permissions({name!r})"
        )
    if "scope" not in claims and "scp" not in claims:
        roles = (
            " (an app-only token? Entra puts application permissions in roles: claims['roles'])"
            if "roles" in claims
            else ""
        )
        return "no scope", f"{refused} with no scope claim at all{roles}"
    if "/" in name:
        # Entra's scp holds "read" for the scope requested as "api://<app id>/read".
        bare = name.rsplit("/", 1)[1]
        if bare in scopes:
            return "bare", (
                f"{refused} whose scopes include {bare!r}: issuers such as Entra write "
                f"scp without the resource prefix; use require_scopes({bare!r})"
            )
    suffix = "/" + name
    for granted in scopes:
        if granted.endswith(suffix):
            # Cognito writes a resource server's scopes with its identifier in front.
            shown = log_safe(granted)
            return "prefixed", (
                f"{refused} whose scopes include {shown}: issuers such as Cognito "
                f"prefix a resource server's scopes with its identifier; use "
                f"require_scopes({shown})"
            )
    return "", None


def _joined(first: list[str], then: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *then)))


def _route_scopes(conn: HTTPConnection) -> tuple[str, ...]:
    """Every OAuth scope the matched route requires, in dependency order.

    A 403's ``scope=`` names the scope needed to access the resource (RFC 6750 §3),
    so a shortfall names these too, not only the failing dependency's: with two
    ``require_scopes`` on a route (or one on its router), each naming only its own
    sent a client asking for exactly that scope to the other's 403. Declared scopes
    count where one of our dependencies enforces them; ``any_of`` alternatives and
    permissions (not OAuth scopes) do not. Walked on a shortfall only.
    """
    scope = conn.scope
    state = scope.get("fastapi")
    # Newer FastAPI keeps included routers nested: the dependencies a request ran
    # (include_router's among them) are in its effective route context.
    context = state.get("effective_route_context") if isinstance(state, dict) else None
    dependant = getattr(context, "dependant", None)
    if dependant is None:
        dependant = getattr(scope.get("route"), "dependant", None)
    found: list[str] = []

    def add(names: Iterable[str]) -> None:
        found.extend(name for name in names if name not in found)

    stack: list[tuple[Any, list[str]]] = [(dependant, [])] if dependant is not None else []
    visits = 0
    while stack and visits < 4096:  # a bound: a strange graph must not hang a 403
        visits += 1
        node, inherited = stack.pop()
        own = getattr(node, "own_oauth_scopes", None) or ()
        scopes = inherited + [name for name in own if name not in inherited]
        call = getattr(node, "call", None)
        requires = _requirement_of(call)
        if requires is not None:
            kind, names, any_of = requires
            add(scopes)  # declared on it or above it: its own check enforces them
            if kind == "scope" and not any_of:
                add(names)
            continue  # its nested declaration only repeats its names
        if scopes and (call is require_token or call is optional_token or call is bearer_scheme):
            add(scopes)
        # Reversed onto the stack, so that the walk goes in declaration order.
        stack.extend((sub, scopes) for sub in reversed(getattr(node, "dependencies", None) or ()))
    return tuple(found)


class _SchemeDependency(SecurityBase):
    """A dependency that is itself the ``Auth0`` security scheme.

    FastAPI documents a dependency whose callable is a ``SecurityBase`` as a security
    requirement, exactly as it documents ``Security(bearer_scheme)`` nested inside a
    function, but resolves it as a single dependant. The OpenAPI model is
    :data:`bearer_scheme`'s own object, so both spellings describe one scheme.
    """

    def __init__(self, name: str) -> None:
        self.model: SecurityBaseModel = bearer_scheme.model
        self.scheme_name: str = bearer_scheme.scheme_name
        # What FastAPI's error messages and debuggers show for the dependency.
        self.__name__ = self.__qualname__ = name

    def __repr__(self) -> str:
        return f"<asgi_auth0 dependency {self.__name__}>"


class _RequireToken(_SchemeDependency):
    """The verified :class:`Claims`; a request without a token gets 401.

    Use it as ``Depends(require_token)`` (HTTP and WebSocket routes, router
    dependencies) or call it: ``await require_token(request)``. Scopes declared with
    ``Security(require_token, scopes=[...])`` (or on a parent dependency) are required
    OAuth scopes, all of them: a token short of one gets 403 ``insufficient_scope``.
    """

    async def __call__(
        self, conn: HTTPConnection, security_scopes: SecurityScopes = _NO_SCOPES
    ) -> Claims:
        if security_scopes.scopes:
            return _check_declared(conn, auth_state(conn.scope)[0], security_scopes.scopes)
        return _claims_or_reject(conn)


class _OptionalToken(_SchemeDependency):
    """The verified :class:`Claims`, or ``None`` for an anonymous request.

    (An invalid token never gets here: the middleware has already answered it.)
    With scopes declared, ``Security(optional_token, scopes=[...])`` (or on a parent
    dependency), the token is no longer optional: it behaves as ``require_token`` with
    those scopes (401 without a token, 403 short of a scope), as the OpenAPI
    requirement FastAPI publishes for it says.
    """

    async def __call__(
        self, conn: HTTPConnection, security_scopes: SecurityScopes = _NO_SCOPES
    ) -> Claims | None:
        claims, _ = auth_state(conn.scope)
        if security_scopes.scopes:
            return _check_declared(conn, claims, security_scopes.scopes)
        return claims


#: The verified :class:`Claims`; a request without a token gets 401.
require_token: _RequireToken = _RequireToken("require_token")
#: The verified :class:`Claims`, or ``None`` for an anonymous request.
optional_token: _OptionalToken = _OptionalToken("optional_token")


def _checked_names(what: str, given: tuple[object, ...]) -> tuple[str, ...]:
    for name in given:
        # Checked before deduplication: a list is unhashable, and its TypeError would
        # not say what to do.
        if isinstance(name, (list, tuple, set, frozenset)):
            raise ConfigError(
                f"{what}() takes each name as a separate argument: "
                f"{what}('read:a', 'read:b'), or {what}(*names) for a list; got {name!r}"
            )
        if not isinstance(name, str):
            raise ConfigError(f"{what}(): names must be strings, got {type(name).__name__}")
    names = tuple(dict.fromkeys(name for name in given if isinstance(name, str)))
    if not names:
        raise ConfigError(f"{what}() needs at least one name")
    for name in names:
        if not scope_token_ok(name):
            raise ConfigError(
                f"{what}(): {name!r} is not a valid scope token (printable ASCII without "
                "spaces, quotes or backslashes)"
            )
    return names


# One dependency per (kind, names, any_of): require_scopes("a") is the same object
# wherever it is written, so app.dependency_overrides[require_scopes("a")] reaches a
# route that wrote it inline, and FastAPI resolves it once per request. The keys come
# from the application's code, so this stays as small as the code.
_MADE: dict[tuple[str, frozenset[str], bool], Callable[..., Awaitable[Claims]]] = {}
# What each of those requires: kind ("scope" or "permission"), names, any_of.
_REQUIRES: dict[object, tuple[str, tuple[str, ...], bool]] = {}


def _requirement(
    what: str,
    names: tuple[str, ...],
    any_of: bool,
    granted_of: Callable[[Claims], frozenset[str]],
    kind: str,
) -> Callable[..., Awaitable[Claims]]:
    any_of = bool(any_of)
    required = frozenset(names)
    # Whatever the order of the names: one requirement, so one object, and a test's
    # override written in another order than the route's still reaches it. Its names
    # are then listed sorted (OpenAPI, the challenge's scope=, the log), the same
    # whichever order some code in the process happened to write first.
    made = _MADE.get((what, required, any_of))
    if made is not None:
        return made
    names = tuple(sorted(required))
    # An all-of scope requirement and the scopes declared on it are one requirement
    # (OpenAPI shows them as one list), so a shortfall of either names both.
    joined = names if kind == "scope" and not any_of else ()
    # How the log names this dependency.
    label = f"{what}({', '.join(map(repr, names))}{', any_of=True' if any_of else ''})"

    async def dependency(
        conn: HTTPConnection,
        security_scopes: SecurityScopes = _NO_SCOPES,
        _scheme: None = Security(_declaration, scopes=list(names)),
    ) -> Claims:
        claims = _claims_or_reject(conn)
        granted = granted_of(claims)
        ok = not required.isdisjoint(granted) if any_of else required <= granted
        declared = security_scopes.scopes
        if not ok:
            if kind == "permission" and "permissions" not in claims:
                _report_no_permissions_claim()
            elif kind == "scope":
                _report_scope_near_miss(
                    label, (name for name in names if name not in granted), claims
                )
            error = (
                InsufficientPermissionError(names, "permission shortfall")
                if kind == "permission"
                else InsufficientScopeError(
                    _joined([*declared, *names], _route_scopes(conn)), "scope shortfall"
                )
                if joined
                # any_of: its alternatives (RFC 6750 has no "one of"), then the rest.
                else InsufficientScopeError(
                    _joined(list(names), _route_scopes(conn)), "scope shortfall"
                )
            )
            _reject(conn, error)
        if declared:
            _check_declared(conn, claims, declared, joined)
        return claims

    mode = "any_of" if any_of else "all_of"
    dependency.__name__ = f"{what}_{mode}"
    # Its repr (in a debugger, or a dict of overrides) says what it requires.
    dependency.__qualname__ = label
    dependency.__doc__ = f"Claims whose {kind}s include {mode.replace('_', ' ')} {list(names)}."
    _MADE[(what, required, any_of)] = dependency
    # configure_openapi publishes any_of names as alternatives (see _Requirements), and
    # a 403 names every scope the route requires (_route_scopes).
    _REQUIRES[dependency] = (kind, names, any_of)
    return dependency


def require_scopes(*scopes: str, any_of: bool = False) -> Callable[..., Awaitable[Claims]]:
    """A dependency returning the :class:`Claims` when the token has the OAuth scopes.

    All of ``scopes`` are required, or at least one with ``any_of=True``. No token:
    401; a valid token without them: 403 ``insufficient_scope`` with ``scope="..."``.
    The scopes also appear in the operation's OpenAPI security requirement.

    The same arguments (in any order) give the same dependency object, so a test can
    override it where the route wrote it inline:
    ``app.dependency_overrides[require_scopes("a")]``.
    """
    names = _checked_names("require_scopes", scopes)
    return _requirement("require_scopes", names, any_of, _scopes_of, "scope")


def require_permissions(
    *permissions: str, any_of: bool = False
) -> Callable[..., Awaitable[Claims]]:
    """Like :func:`require_scopes`, for Auth0 RBAC ``permissions`` in the token."""
    names = _checked_names("require_permissions", permissions)
    return _requirement("require_permissions", names, any_of, _permissions_of, "permission")


def uncalled_factories(app: ASGIApp) -> list[str]:
    """The routes in ``app`` (mounted apps included) that depend on
    :func:`require_scopes` or :func:`require_permissions` itself rather than on what a
    call of it returns, each as ``"GET /path: Depends(require_scopes)"``.

    ``Depends(require_scopes)`` is an easy slip, and FastAPI takes it without a word:
    it reads the factory's parameters as the route's query parameters, so every
    request is answered 422 (and one that sends ``?scopes=`` gets a 500), and the
    OpenAPI document lists them. :class:`Auth0Middleware` refuses such an app when it
    is built (:class:`ConfigError`), before any request.
    """
    found: list[str] = []
    for where, dep in _route_dependencies(app):
        call = getattr(dep, "call", None)
        # By identity: a dependency may be any callable, hashable or not.
        if call is require_scopes or call is require_permissions:
            entry = f"{where}: Depends({call.__name__})"
            if entry not in found:
                found.append(entry)
    return found


def scopes_written_as_strings(app: ASGIApp) -> list[str]:
    """The routes in ``app`` (mounted apps included) with a ``Security(...,
    scopes="read:a")`` written with a string, each as ``"GET /path: 'read:a'"``.

    FastAPI takes the string as the sequence it is, one scope per character, so the
    route requires "r", "e", "a", "d", ":" and "a" (and documents them): every request
    gets 403. Each character a scope of its own is taken as that slip when there are
    two or more; a real scope of one letter would be rare, and two of them in one
    declaration rarer still. :class:`Auth0Middleware` refuses such an app when it is
    built (:class:`ConfigError`).
    """
    found: list[str] = []
    for where, dep in _route_dependencies(app):
        if getattr(dep, "call", None) is _declaration:
            continue  # require_scopes' own declaration, from a real list of names
        own = getattr(dep, "own_oauth_scopes", None) or ()
        if len(own) >= 2 and all(type(s) is str and len(s) == 1 for s in own):
            entry = f"{where}: {''.join(own)!r}"
            if entry not in found:
                found.append(entry)
    return found


def _route_dependencies(app: ASGIApp) -> Iterator[tuple[str, Any]]:
    """Every route's dependant and sub-dependant in ``app`` and the apps mounted in it,
    each with ``"METHODS /path"`` of its route."""
    lists_seen: set[int] = set()  # an app and its router hold the same list
    # Newer FastAPI keeps included routers nested (see _api_routes).
    iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    for node in app_graph(app):
        routes = getattr(node, "routes", None)
        if not isinstance(routes, list) or id(routes) in lists_seen:
            continue
        lists_seen.add(id(routes))
        for route in routes if iter_contexts is None else iter_contexts(routes):
            dependant = getattr(route, "dependant", None)
            if dependant is None:
                continue
            methods = ",".join(sorted(getattr(route, "methods", None) or ())) or "WS"
            path = getattr(route, "path_format", None) or getattr(route, "path", "?")
            where = f"{methods} {path}"
            stack: list[Any] = [dependant]
            seen: set[int] = set()
            while stack and len(seen) < 4096:  # a bound: a strange graph must not hang
                dep = stack.pop()
                if id(dep) in seen:
                    continue
                seen.add(id(dep))
                yield where, dep
                stack.extend(getattr(dep, "dependencies", None) or ())


def _scopes_of(claims: Claims) -> frozenset[str]:
    return claims.scopes


def _permissions_of(claims: Claims) -> frozenset[str]:
    return claims.permissions


class _AlreadyAnswered(Response):
    """What :func:`rejection_handler` returns after closing a WebSocket itself: Starlette
    sends whatever response a handler returns, and nothing is left to send. (A handler
    typed to return ``Response`` is what Starlette's handler type accepts.)"""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


async def rejection_handler(conn: HTTPConnection, exc: Exception) -> Response:
    """An exception handler for :class:`AuthenticationRejected`, for applications in
    which something between ``Auth0Middleware`` and the routes swallows exceptions::

        app.add_exception_handler(AuthenticationRejected, rejection_handler)

    It answers exactly as the middleware would, on HTTP and WebSocket routes. Not
    needed otherwise. (It takes any ``Exception``, as Starlette's handler type says, and
    re-raises anything that is not an ``AuthenticationRejected``.)
    """
    if not isinstance(exc, AuthenticationRejected):
        raise exc
    _, responder = auth_state(conn.scope)
    challenge = responder.challenge(exc.error, conn.scope)
    error = exc.error
    responder.log_rejection(
        conn.scope,
        challenge,
        error.token_facts,
        error.detail,
        misconfiguration=error.misconfiguration,
    )
    if isinstance(conn, WebSocket):
        close_code = 1013 if challenge.status_code >= 500 else 1008
        if conn.application_state is WebSocketState.CONNECTED:
            await conn.close(code=close_code)
            return _AlreadyAnswered()
        watch = conn.scope.get(CONNECT_WATCH)
        if (
            conn.client_state is WebSocketState.CONNECTING
            and isinstance(watch, _ConnectWatch)
            and watch.connected
        ):
            # The application took the connect message through another WebSocket
            # object than this one (a WebSocketEndpoint makes its own), which may have
            # accepted too: waiting for the message would hang. A close is right either
            # way: before accept the server refuses the handshake, after it the client
            # gets the close code.
            await conn.close(code=close_code)
            return _AlreadyAnswered()
        if conn.client_state is WebSocketState.CONNECTING:
            # Answer the client's websocket.connect, as the middleware does.
            message = await conn.receive()
            if message["type"] != "websocket.connect":
                return _AlreadyAnswered()
        if "websocket.http.response" not in (conn.scope.get("extensions") or {}):
            await conn.close(code=close_code)
            return _AlreadyAnswered()
    return responder.response(conn, challenge)


# -- OpenAPI and Swagger UI -------------------------------------------------------------


def _base_url(config: Auth0Config) -> str:
    # The issuer, not the tenant domain: with a custom domain, Auth0 writes into iss the
    # domain the login went through, and only the configured issuer passes the check.
    return (config.issuer or "").rstrip("/")


def swagger_ui_init_oauth(config: Auth0Config) -> dict[str, Any]:
    """Swagger UI's OAuth settings for ``FastAPI(swagger_ui_init_oauth=...)``.

    Authorization code with PKCE (no client secret in the browser) for
    ``config.client_id``, and the API ``audience`` Auth0 needs to issue a JWT access
    token rather than an opaque one (not with ``audience_claim="client_id"``: there
    the audiences are app clients, and the issuer has no audience parameter).
    """
    if not config.client_id:
        raise ConfigError("swagger_ui_init_oauth() needs a config with client_id")
    settings: dict[str, Any] = {
        "clientId": config.client_id,
        "usePkceWithAuthorizationCodeGrant": True,
    }
    if config.audience_claim == "aud":
        settings["additionalQueryStringParams"] = {"audience": config.audiences[0]}
    return settings


def _login_urls(
    config: Auth0Config, authorization_url: str | None, token_url: str | None
) -> tuple[str, str, str]:
    """Where Swagger UI sends the user to log in, where it gets the token, and what
    the scheme's description says.

    Auth0 serves them at ``/authorize`` and ``/oauth/token`` on the tenant (or custom)
    domain. An issuer with a path (Keycloak ``.../realms/x``, Okta
    ``.../oauth2/default``, Entra ``.../v2.0``, Cognito) has them elsewhere, named in
    its discovery document; guessing would send "Authorize" to a 404 at the issuer.
    """
    if authorization_url is not None or token_url is not None:
        if authorization_url is None or token_url is None:
            raise ConfigError("configure_openapi(): give both authorization_url= and token_url=")
        return (
            validate_url("authorization_url", authorization_url),
            validate_url("token_url", token_url),
            "Log in (authorization code with PKCE).",
        )
    if config.domain is None and urlsplit(config.issuer or "").path != "/":
        raise ConfigError(
            f"configure_openapi(): the issuer {config.issuer!r} is not shaped like an "
            "Auth0 tenant (https://host/), so its login endpoints are not known to be "
            "/authorize and /oauth/token; pass authorization_url= and token_url= (the "
            "authorization_endpoint and token_endpoint of its discovery document) for "
            "the Swagger UI login"
        )
    base = _base_url(config)
    return (
        f"{base}/authorize",
        f"{base}/oauth/token",
        "Log in with Auth0 (authorization code with PKCE).",
    )


def _oauth2_scheme(login: tuple[str, str, str], scopes: Iterable[str]) -> dict[str, Any]:
    authorization_url, token_url, description = login
    scheme = OAuth2AuthorizationCodeBearer(
        authorizationUrl=authorization_url,
        tokenUrl=token_url,
        scopes={s: s for s in sorted(set(scopes))},
        scheme_name=SCHEME_NAME,
        description=description,
        auto_error=False,
    )
    encoded: dict[str, Any] = jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
    return encoded


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {
            "WWW-Authenticate": {
                "description": "The RFC 6750 Bearer challenge.",
                "schema": {"type": "string"},
            }
        },
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{_ERROR_SCHEMA_NAME}"}}
        },
    }


_ERROR_SCHEMA: dict[str, Any] = {
    "title": _ERROR_SCHEMA_NAME,
    "type": "object",
    "properties": {
        "error": {
            "type": ["string", "null"],
            "description": "RFC 6750 error code; null when no token was sent.",
        },
        "error_description": {"type": "string"},
        "reason": {"type": "string", "description": "Stable machine-readable reason."},
    },
    "required": ["error", "error_description", "reason"],
}


#: Above this many alternatives an ``any_of`` requirement is described in words.
_MAX_ALTERNATIVES = 16


@dataclass
class _Requirements:
    """What an operation's asgi_auth0 dependencies need, to publish it truthfully.

    FastAPI merges every ``Auth0`` scope of an operation into one requirement, which
    OpenAPI reads as "all of them", and publishes ``optional_token`` like
    ``require_token``.
    """

    #: Names every request needs (declared scopes, all-of requirements), in order.
    required: list[str] = field(default_factory=list)
    #: One name of each group is enough (``any_of=True``).
    groups: list[tuple[str, ...]] = field(default_factory=list)
    #: Something needs a token (anything but ``optional_token`` without scopes).
    token: bool = False
    #: ``optional_token`` without scopes is among the dependencies.
    optional: bool = False

    def need(self, names: Iterable[str]) -> None:
        self.token = True
        self.required.extend(n for n in names if n not in self.required)

    def walk(self, dependant: Any, inherited: list[str]) -> None:
        """Collect from ``dependant`` and its sub-dependencies, accumulating scopes
        declared with ``Security(..., scopes=)`` down the tree as FastAPI does."""
        own = getattr(dependant, "own_oauth_scopes", None) or ()
        scopes = inherited + [s for s in own if s not in inherited]
        call = getattr(dependant, "call", None)
        group = _any_of_group(call)
        if group is not None:
            self.need(scopes)
            self.groups.append(group)
            return  # its nested declaration carries the group: already accounted for
        if call is optional_token:
            if scopes:
                self.need(scopes)
            else:
                self.optional = True
        elif call is require_token or call is bearer_scheme or call is _declaration:
            self.need(scopes)
        for sub in getattr(dependant, "dependencies", None) or ():
            self.walk(sub, scopes)

    def alternatives(self) -> list[list[str]] | None:
        """Each list of names that satisfies the operation (None if too many)."""
        groups = [g for g in self.groups if set(g).isdisjoint(self.required)]
        count = 1
        for group in groups:
            count *= len(group)
        if count > _MAX_ALTERNATIVES:
            return None
        picks: list[list[str]] = []
        for pick in itertools.product(*groups):
            names = list(dict.fromkeys((*self.required, *pick)))
            if names not in picks:
                picks.append(names)
        # A pick that is a superset of another adds nothing (groups may share names).
        return [p for p in picks if not any(set(q) < set(p) for q in picks)]


def _requirement_of(call: object) -> tuple[str, tuple[str, ...], bool] | None:
    """What ``call`` requires, if require_scopes/require_permissions made it."""
    try:
        return _REQUIRES.get(call)
    except TypeError:  # an unhashable callable: not one of ours
        return None


def _any_of_group(call: object) -> tuple[str, ...] | None:
    requires = _requirement_of(call)
    return requires[1] if requires is not None and requires[2] else None


def _api_routes(app: FastAPI) -> Iterator[Any]:
    """The routes FastAPI documents, found as FastAPI finds them: newer versions keep
    included routers nested and walk them with ``iter_route_contexts``."""
    iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_contexts is None:
        yield from (route for route in app.routes if isinstance(route, APIRoute))
        return
    for context in iter_contexts(app.routes):
        if isinstance(getattr(context, "original_route", None), APIRoute):
            yield context


def _operation_requirements(app: FastAPI) -> dict[tuple[str, str], _Requirements]:
    found: dict[tuple[str, str], _Requirements] = {}
    for route in _api_routes(app):
        path = getattr(route, "path_format", None)
        dependant = getattr(route, "dependant", None)
        if not getattr(route, "include_in_schema", False) or path is None or dependant is None:
            continue
        requirements = _Requirements()
        requirements.walk(dependant, [])
        for method in getattr(route, "methods", None) or ():
            # A later route on the same path and method wins, as in FastAPI's document.
            found[(path, method.lower())] = requirements
    return found


def _publish_alternatives(
    schema: dict[str, Any], found: dict[tuple[str, str], _Requirements]
) -> None:
    """Rewrite the ``Auth0`` requirement FastAPI published for each operation whose
    dependencies it misdescribes: ``any_of`` groups become one requirement object per
    alternative, and an operation whose only asgi_auth0 dependency is an unscoped
    ``optional_token`` gets ``[{}, {"Auth0": []}]`` (token optional). Touches only
    requirements that match what the routes' dependencies add up to, so a document
    built some other way (or rewritten already) is left alone."""
    for template, path_item in (schema.get("paths") or {}).items():
        if not isinstance(path_item, dict):
            continue
        for method, operation in path_item.items():
            requirements = found.get((template, method))
            if requirements is None or not isinstance(operation, dict):
                continue
            security = operation.get("security")
            if not isinstance(security, list):
                continue
            ours = [i for i, r in enumerate(security) if isinstance(r, dict) and SCHEME_NAME in r]
            if len(ours) != 1 or security[ours[0]] != {SCHEME_NAME: security[ours[0]][SCHEME_NAME]}:
                continue
            index = ours[0]
            published = security[index][SCHEME_NAME]
            if requirements.optional and not requirements.token:
                if published == [] and len(security) == 1:
                    operation["security"] = [{}, {SCHEME_NAME: []}]
                continue
            if not requirements.groups:
                continue
            expected = set(requirements.required).union(*requirements.groups)
            if not isinstance(published, list) or set(published) != expected:
                continue
            alternatives = requirements.alternatives()
            if alternatives is None:
                _describe_groups(operation, requirements.groups)
                continue
            order = {name: i for i, name in enumerate(published)}
            operation["security"] = [
                *security[:index],
                *({SCHEME_NAME: sorted(names, key=order.__getitem__)} for names in alternatives),
                *security[index + 1 :],
            ]


def _describe_groups(operation: dict[str, Any], groups: list[tuple[str, ...]]) -> None:
    """Say in words what too many alternatives cannot show."""
    words = "; ".join(" or ".join(f"`{n}`" for n in group) for group in groups)
    note = (
        f"Needs one scope of each group: {words}; and every other scope in the security "
        "requirement (OpenAPI lists them all as needed)."
    )
    description = operation.get("description")
    if isinstance(description, str) and note not in description:
        operation["description"] = f"{description}\n\n{note}" if description else note
    elif description is None:
        operation["description"] = note


def _require_everywhere(schema: dict[str, Any], policies: list[PublicPaths]) -> bool:
    """Give every operation a fail-closed middleware protects the ``Auth0`` requirement
    (added to each of its existing requirements: the middleware demands a token on
    top of whatever else the route accepts). True if any operation is protected."""
    protected = False
    for template, path_item in (schema.get("paths") or {}).items():
        if not isinstance(path_item, dict) or all(p.covers_template(template) for p in policies):
            continue
        for method, operation in path_item.items():
            if method not in _HTTP_METHODS or not isinstance(operation, dict):
                continue
            protected = True
            requirements = operation.get("security") or [{}]
            protected_requirements: list[dict[str, Any]] = []
            for r in requirements:
                with_ours = r if SCHEME_NAME in r else {**r, SCHEME_NAME: []}
                # An optional token's [{}, {"Auth0": []}] is one requirement here.
                if with_ours not in protected_requirements:
                    protected_requirements.append(with_ours)
            operation["security"] = protected_requirements
    return protected


def _scopes_in_words(operation: dict[str, Any], requirements: list[dict[str, Any]]) -> str:
    """For OpenAPI 3.0, which lets only OAuth2 and OpenID Connect requirements list
    scopes (3.1 lets any): empty the bearer scheme's lists in ``operation`` and return
    what they said, in words, for its 403 description."""
    alternatives = [" and ".join(r[SCHEME_NAME]) for r in requirements if r[SCHEME_NAME]]
    emptied: list[Any] = []
    for requirement in operation.get("security") or ():
        kept = (
            {**requirement, SCHEME_NAME: []}
            if isinstance(requirement, dict) and SCHEME_NAME in requirement
            else requirement
        )
        if kept not in emptied:
            emptied.append(kept)
    operation["security"] = emptied
    return f" Needs {' or '.join(alternatives)}."


def _decorate(
    schema: dict[str, Any],
    login: tuple[str, str, str] | None,
    policies: list[PublicPaths],
    found: dict[tuple[str, str], _Requirements] | None = None,
) -> dict[str, Any]:
    """Publish ``any_of`` and optional-token requirements truthfully, add the 401/403
    responses, the requirement on routes a fail-closed middleware protects, and the
    security scheme (OAuth2 with a client id); idempotent."""
    if found:
        _publish_alternatives(schema, found)
    all_scopes: set[str] = set()
    if policies and _require_everywhere(schema, policies):
        # No dependency may mention the scheme, so FastAPI may not have declared it.
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes.setdefault(
            SCHEME_NAME, jsonable_encoder(bearer_scheme.model, by_alias=True, exclude_none=True)
        )
    protected = False
    # FastAPI writes 3.1 unless the app sets openapi_version, as some tools need 3.0.
    legacy = str(schema.get("openapi", "")).startswith("3.0.")
    for path_item in (schema.get("paths") or {}).values():
        if not isinstance(path_item, dict):  # a document of the app's own making
            continue
        for method, operation in path_item.items():
            if method not in _HTTP_METHODS or not isinstance(operation, dict):
                continue
            requirements = [
                r
                for r in operation.get("security") or ()
                if isinstance(r, dict) and SCHEME_NAME in r
            ]
            if not requirements:
                continue
            protected = True
            scopes = {s for r in requirements for s in r[SCHEME_NAME]}
            all_scopes |= scopes
            responses = operation.setdefault("responses", {})
            # The middleware answers a malformed Authorization header (or a token sent
            # two ways) with 400 before any route runs, optional token or not.
            responses.setdefault(
                "400",
                _error_response(
                    "Malformed request: an Authorization header that is not one Bearer "
                    "token, or a token sent more than one way (invalid_request)."
                ),
            )
            responses.setdefault(
                "401", _error_response("Missing, invalid or expired access token.")
            )
            if scopes:
                why = "The access token lacks a required scope or permission."
                if legacy and login is None:
                    why += _scopes_in_words(operation, requirements)
                responses.setdefault("403", _error_response(why))
    if not protected:
        return schema
    components = schema.setdefault("components", {})
    # A copy per document: an app (or a tool) editing its document must not edit
    # every other app's.
    error_schema = copy.deepcopy(_ERROR_SCHEMA)
    if legacy:
        # 3.0 has no "null" type; it spells a nullable string this way.
        error_schema["properties"]["error"] = {
            **error_schema["properties"]["error"],
            "type": "string",
            "nullable": True,
        }
    components.setdefault("schemas", {}).setdefault(_ERROR_SCHEMA_NAME, error_schema)
    if login is not None:
        components.setdefault("securitySchemes", {})[SCHEME_NAME] = _oauth2_scheme(
            login, all_scopes
        )
    return schema


def _dpop_note(config: Auth0Config) -> str:
    """What the security scheme's description adds when DPoP is on: OpenAPI has no
    DPoP scheme, and Swagger UI cannot make proofs, so a reader must be told."""
    if config.dpop == "disabled":
        return ""
    algs = ", ".join(config.dpop_algorithms)
    if config.dpop == "required":
        return (
            "Only DPoP-bound tokens are accepted (RFC 9449): send 'Authorization: DPoP "
            f"<token>' and a 'DPoP' proof header signed with {algs}. Swagger UI cannot "
            "make proofs, so its requests are refused."
        )
    return (
        "DPoP-bound tokens are accepted too (RFC 9449): 'Authorization: DPoP <token>' "
        f"with a 'DPoP' proof header signed with {algs}."
    )


def _note_dpop(document: dict[str, Any], note: str) -> None:
    scheme = document.get("components", {}).get("securitySchemes", {}).get(SCHEME_NAME)
    if isinstance(scheme, dict):
        description = scheme.get("description") or ""
        if note not in description:  # the document is cached: add it once
            scheme["description"] = f"{description} {note}".strip()


def configure_openapi(
    app: FastAPI,
    config: Auth0Config | None = None,
    *,
    authorization_url: str | None = None,
    token_url: str | None = None,
) -> None:
    """Complete ``app``'s OpenAPI document and Swagger UI for asgi_auth0.

    - Operations protected by an asgi_auth0 dependency document their 400 (a
      malformed ``Authorization`` header), 401 and (when they need scopes or
      permissions) 403 responses, with the error body schema.
    - A document the app labels OpenAPI 3.0 (``app.openapi_version``) stays valid
      3.0: the error schema's nullable ``error`` is spelled ``nullable: true``, and
      without ``client_id`` (a bearer scheme, which 3.0 lets list no scopes) the
      scopes move from the requirement into the 403's description.
    - ``any_of=True`` names become alternative requirements (``[{"Auth0": ["a"]},
      {"Auth0": ["b"]}]``; FastAPI alone publishes ``{"Auth0": ["a", "b"]}``, which
      reads "both"); past 16 alternatives the operation's description says it instead.
    - An operation whose only asgi_auth0 dependency is ``optional_token`` (without
      scopes) is published as ``[{}, {"Auth0": []}]``: a token is optional.
    - With ``Auth0Middleware(require_token=True)`` on the app (``add_middleware`` or
      wrapping it), or on an app this one is mounted in (known once that app has
      started or served a request without a token): every operation outside its
      ``public_paths`` gets the ``Auth0`` security requirement and its 401, like a
      route with a dependency.
    - With ``config.client_id`` set: the ``Auth0`` scheme becomes OAuth2
      authorization code with ``/authorize`` and ``/oauth/token`` on the issuer's host
      (a custom domain given as ``issuer`` rather than the tenant's: Auth0 writes into
      ``iss`` the domain the login went through), and Swagger UI is set up for PKCE
      (unless ``swagger_ui_init_oauth`` was given to
      ``FastAPI()`` already). Register ``{your app}/docs/oauth2-redirect`` as an
      allowed callback URL of that Auth0 application. Another issuer's endpoints are
      elsewhere: give ``authorization_url`` and ``token_url`` (from its discovery
      document); an issuer with a path and no such URLs is a :class:`ConfigError`.

    - With ``config.dpop`` on, the scheme's description says that DPoP-bound tokens
      are accepted (or, with ``"required"``, only they), and with which algorithms.

    Responses a route declares itself are left alone. Uses FastAPI's documented
    ``app.openapi`` override, wrapping whatever ``app.openapi`` was before.
    """
    if not isinstance(app, FastAPI):
        raise TypeError("configure_openapi() needs a FastAPI application")
    login = None
    if config is not None and config.client_id:
        login = _login_urls(config, authorization_url, token_url)
    elif authorization_url is not None or token_url is not None:
        raise ConfigError(
            "configure_openapi(): authorization_url= and token_url= are for the Swagger UI "
            "login, which needs a config with client_id"
        )
    previous = app.openapi
    rewritten: list[dict[str, Any]] = []
    dpop_note = _dpop_note(config) if config is not None else ""

    def openapi() -> dict[str, Any]:
        schema = previous()
        # FastAPI hands out its cached document until the routes change, and the
        # rewrite is done on it once; walking every route's dependencies again on
        # each /openapi.json request would change nothing.
        found = None
        if not rewritten or rewritten[0] is not schema:
            found = _operation_requirements(app)
            rewritten[:] = [schema]
        # Read when the document is built: middleware may be added after this call.
        document = _decorate(schema, login, fail_closed_policies(app), found)
        if dpop_note:
            _note_dpop(document, dpop_note)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    if config is not None and config.client_id and app.swagger_ui_init_oauth is None:
        app.swagger_ui_init_oauth = swagger_ui_init_oauth(config)
