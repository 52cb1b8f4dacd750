"""Finding the bearer token of a request (RFC 6750 §2.1, and the opt-in §2.3 query form).

Parsing works on the raw header bytes: ASGI hands headers over as bytes that HTTP
defines as ISO-8859-1 (latin-1), and comparing bytes keeps case-folding to ASCII, so
no exotic character can fold into ``bearer``. Nothing parsed here is ever echoed back:
the errors raised carry fixed text only.

The rules:

- no ``Authorization`` header, or one with another scheme (``Basic``, ``Digest``, ...):
  there is no bearer token and the request is anonymous;
- more than one ``Authorization`` header, or a token both in the header and in the
  query: :class:`MultipleTokensError` (400 ``invalid_request``);
- scheme ``Bearer`` (any case) not followed by exactly one ``token68`` credential,
  or followed by a byte no scheme name holds (``Bearer,<token>``):
  :class:`InvalidRequestError` (400 ``invalid_request``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from ._errors import InvalidRequestError, MalformedQueryTokenError, MultipleTokensError
from ._keys import log_safe

__all__ = [
    "SCHEME_CHARS",
    "bearer_token",
    "is_token68",
    "missing_token_hint",
    "not_token68_error",
    "parse_authorization",
    "query_token",
    "token_from_scope",
]

# RFC 6750 §2.1 b64token (the same character set as RFC 9110 token68):
# 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
_TOKEN68_STR = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# The characters before the padding, for a ``bytes.translate`` deletion check: one C
# pass over the token, about three times faster than the regular expression above on
# the ~900-byte tokens Auth0 issues (this runs on every authenticated request).
_TOKEN68_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"
_AUTHORIZATION = b"authorization"
_BEARER = b"bearer"
# Optional whitespace around a field value (RFC 9110 §5.6.3) and the separator that
# RFC 9110 §11.3 allows between scheme and credentials.
_OWS = b" \t"
_NOT_TOKEN68 = "Bearer credentials are not a single token68"
#: What a scheme name is made of (RFC 9110 §5.6.2 tchar): a byte after "bearer" (or
#: "dpop") that is one of these makes a longer scheme name; no other byte can be part
#: of one.
SCHEME_CHARS = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def parse_authorization(value: bytes, *, check_token68: bool = True) -> str | None:
    """The bearer token in one ``Authorization`` field value, or ``None``.

    ``None`` means the value uses another scheme (or none at all); a ``Bearer`` value
    that is not exactly one token68 raises :class:`InvalidRequestError`.

    ``check_token68=False`` leaves the token68 syntax to the caller, who must check it
    with :func:`is_token68` before treating the result as anything but a candidate
    (the middleware does so only when verification fails; see there). The result
    then holds the credentials' bytes as latin-1 characters.
    """
    value = value.strip(_OWS)
    # The scheme is everything before the first space or tab. Only "bearer" matters,
    # so look at six bytes instead of scanning for the separator: a scheme that is not
    # "bearer" either differs in its first six bytes or goes on past them ("Bearerx").
    if value[:6].lower() != _BEARER:
        return None
    separator = value[6:7]
    if separator == b" ":
        credentials = value[7:].lstrip(b" ")
    elif not separator or separator == b"\t":
        # RFC 6750 §2.1 asks for 1*SP; a bare "Bearer" or a tab is a malformed request.
        raise InvalidRequestError("Bearer scheme without a well-formed token")
    elif separator[0] in SCHEME_CHARS:
        return None  # a longer scheme name such as "Bearer-ish"
    else:
        # "Bearer,<token>", "Bearer:<token>": no scheme name can hold that byte, so
        # this is the Bearer scheme, malformed (a client's slip), not another scheme
        # to let through as anonymous.
        raise InvalidRequestError("Bearer scheme without a well-formed token")
    if not check_token68:
        if not credentials:
            raise InvalidRequestError(_NOT_TOKEN68)
        return credentials.decode("latin-1")  # every byte maps to one character
    if not _token68_bytes(credentials):
        raise InvalidRequestError(_NOT_TOKEN68)
    return credentials.decode("ascii")


def _token68_bytes(credentials: bytes) -> bool:
    # token68: at least one token character, then only "=" padding. Deleting the token
    # characters from what precedes the padding must leave nothing (an "=" or any
    # other byte inside the token survives the deletion).
    body = credentials.rstrip(b"=")
    return bool(body) and not body.translate(None, _TOKEN68_CHARS)


def is_token68(token: str) -> bool:
    """Whether ``token`` has RFC 6750's ``b64token`` (RFC 9110 ``token68``) syntax."""
    return token.isascii() and _token68_bytes(token.encode("ascii"))


def not_token68_error() -> InvalidRequestError:
    """The error for Bearer credentials that are not a single token68."""
    return InvalidRequestError(_NOT_TOKEN68)


def bearer_token(
    headers: Iterable[tuple[bytes, bytes]], *, check_token68: bool = True
) -> str | None:
    """The bearer token in ASGI ``headers``, or ``None`` when there is none.

    Raises :class:`MultipleTokensError` for several ``Authorization`` headers (whatever
    their schemes) and :class:`InvalidRequestError` for a malformed Bearer value
    (``check_token68`` as for :func:`parse_authorization`).
    """
    found: bytes | None = None
    for name, value in headers:
        # ASGI servers lowercase header names; lower() again so that a lenient server
        # or test client cannot smuggle a second, differently cased header past us.
        if len(name) == 13 and name.lower() == _AUTHORIZATION:
            if found is not None:
                raise MultipleTokensError("more than one Authorization header")
            found = value
    if found is None:
        return None
    return parse_authorization(found, check_token68=check_token68)


# A query parameter whose value starts like a compact JWS (a base64url JSON header).
_JWT_IN_QUERY = re.compile(rb"(?:^|&)([^=&]{1,32})=eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.")


def missing_token_hint(scope: Mapping[str, Any]) -> str | None:
    """Why a request (its ASGI ``scope``) that found no bearer token still sent
    something like one, for the rejection log (never the token itself); ``None`` if it
    sent nothing of the kind.

    A token pasted without ``Bearer `` is the usual slip of a hand-written client or
    test, and reads as anonymous (RFC 6750: another scheme is not ours); so is a token
    in the query string, which browsers put there for a WebSocket (they cannot set its
    headers), and which is read only on a WebSocket handshake with
    ``websocket_query_param`` naming it. The 401 alone says neither. Called on the
    rejection path only.
    """
    for name, value in scope.get("headers") or ():
        if len(name) == 13 and name.lower() == _AUTHORIZATION:
            credentials = value.strip(_OWS)
            if credentials[:4].lower() == b"dpop" and (
                len(credentials) == 4 or credentials[4] not in SCHEME_CHARS
            ):
                # With DPoP on, such a request is verified or refused before this.
                return (
                    "the Authorization header uses the DPoP scheme, which is taken only "
                    "with dpop='allowed' or 'required' in the config"
                )
            if b" " not in credentials and credentials.count(b".") in (2, 4):
                return (
                    "the Authorization header holds a bare token, with no scheme: "
                    "send 'Authorization: Bearer <token>'"
                )
            return "the Authorization header uses a scheme other than Bearer"
    query = scope.get("query_string") or b""
    found = _JWT_IN_QUERY.search(query) if b"eyJ" in query else None
    if found is None:
        return None
    # The parameter's name only, escaped and cut short: it is the client's text.
    param = log_safe(found.group(1).decode("latin-1"))
    if scope.get("type") == "websocket":
        return (
            f"the query parameter {param} holds a token: it is read only with "
            f"websocket_query_param={param}"
        )
    return (
        f"the query parameter {param} holds a token: send it in 'Authorization: Bearer "
        "<token>' (query tokens: WebSocket handshakes only)"
    )


def query_token(query_string: bytes, param: str) -> str | None:
    """The token in query parameter ``param`` (RFC 6750 §2.3), or ``None`` if absent.

    Several occurrences raise :class:`MultipleTokensError`; an empty or non-token68
    value raises :class:`MalformedQueryTokenError` (an :class:`InvalidRequestError`).
    """
    if not query_string:
        return None
    values = [
        v
        for k, v in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        if k == param
    ]
    if not values:
        return None
    if len(values) > 1:
        raise MultipleTokensError("the access token query parameter appears more than once")
    token = values[0]
    if not _TOKEN68_STR.fullmatch(token):
        raise MalformedQueryTokenError("the access token query parameter is not a token68")
    return token


def token_from_scope(scope: Mapping[str, Any], *, query_param: str | None = None) -> str | None:
    """The bearer token of an ASGI ``http`` or ``websocket`` scope, or ``None``.

    ``query_param`` names the query parameter that may also carry the token (the
    middleware passes it for WebSocket handshakes only, when the user opted in). A
    request must not use both ways at once (RFC 6750 §2).
    """
    token = bearer_token(scope.get("headers") or ())
    if query_param is not None:
        from_query = query_token(scope.get("query_string") or b"", query_param)
        if from_query is not None:
            if token is not None:
                raise MultipleTokensError("a token in both the Authorization header and the query")
            token = from_query
    return token
