"""Strict parsing of compact JWS tokens (RFC 7515 §7.1), before any key is involved.

Everything here is synchronous, allocation-light and network-free: it runs on every
cold verification and decides, cheaply, whether a token is even worth a key lookup.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

from . import _speedups
from ._claims import _freeze
from ._errors import (
    AlgorithmNotAllowedError,
    MalformedTokenError,
    TokenTooLargeError,
    UnsupportedHeaderError,
)
from ._keys import MAX_KID_LENGTH, b64url_decode_bytes, decode_translated

__all__ = [
    "HEADER_CACHE_SIZE",
    "MAX_JSON_CONTAINERS",
    "MAX_JSON_DEPTH",
    "JWSParser",
    "ParsedToken",
    "loads_strict",
    "parse_compact",
]

#: Nesting deeper than this in a header or payload is refused as malformed.
MAX_JSON_DEPTH = 16

#: More JSON objects and arrays than this in one header or payload is refused as
#: malformed. Each costs the parser a Python call or more (the duplicate-member check,
#: the depth walk, freezing a header), so a token made of ``[{},{},...]`` cost an
#: attacker nothing to send and the server milliseconds to refuse. Real access tokens
#: hold a handful (Keycloak's ``resource_access``, one per client, among the most).
MAX_JSON_CONTAINERS = 256


class ParsedToken(NamedTuple):
    """A compact JWS split and decoded, not yet verified."""

    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes
    alg: str
    kid: str | None


class _DuplicateMember(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 §5.2 lets a parser take the last duplicate or reject; we reject, because
    # two parsers that disagree on which duplicate wins is a classic confusion attack.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateMember("duplicate member name")
    return result


def _no_constants(name: str) -> Any:
    # NaN, Infinity and -Infinity are not JSON (RFC 8259); Python accepts them by default.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 parses to inf: the same value NaN/Infinity would smuggle in, and one that
    # no JSON encoder can write back (returning the claims would fail). Only number
    # literals with a fraction or exponent come here; Auth0's claims are integers.
    value = float(text)
    if math.isinf(value):
        raise ValueError("a number too large for a float")
    return value


_decoder = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_finite_float
)


def _too_deep(value: Any, limit: int) -> bool:
    # Level by level, with no generator or tuple per container: a token may hold up to
    # MAX_JSON_CONTAINERS of them, and each used to cost about a microsecond here.
    # (The decoder builds exact dicts and lists, so type() is enough.)
    level: list[Any] = [value]
    depth = 1
    while level:
        below: list[Any] = []
        for item in level:
            for child in item.values() if type(item) is dict else item:
                kind = type(child)
                if kind is dict or kind is list:
                    below.append(child)
        if below:
            depth += 1
            if depth > limit:
                return True
        level = below
    return False


def _has_lone_surrogate(value: Any) -> bool:
    # Valid UTF-8 cannot carry surrogates, and the decoder joins escaped pairs into one
    # character, so any surrogate left in a string came from a lone "\\uD8xx" escape.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


#: Decodes one token segment to bytes or raises ``ValueError``.
_Decode = Callable[[bytes], bytes]

# base64url maps to the standard alphabet that binascii decodes; every other byte
# but the segment separator is deleted, so a length change means the token holds one.
_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
_NOT_TOKEN_BYTES = bytes(
    sorted(
        set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    )
)
# Builds a ParsedToken without the Python-level __new__ a NamedTuple gets.
_new_parsed: Callable[[tuple[Any, ...]], ParsedToken] = partial(tuple.__new__, ParsedToken)
# The C scanner behind JSONDecoder.raw_decode (not in the type stubs).
_scan_once: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]


def loads_strict(raw: bytes) -> Any:
    """Decode JSON the strict way: UTF-8 only (no BOM, no UTF-16), no duplicate member
    names, no NaN/Infinity, no lone surrogate escapes (I-JSON, RFC 7493 §2.1), bounded
    nesting. Raises ``ValueError``."""
    try:
        text = raw.decode("utf-8")
        # What raw_decode does, minus a Python frame: parse one value starting at
        # index 0 (leading whitespace and a BOM are not values, so they fail here).
        value, end = _scan_once(text, 0)
    except StopIteration as exc:
        raise ValueError("not JSON") from exc
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ValueError("not UTF-8 JSON") from exc
    # Only whitespace may follow the value.
    if end != len(text) and text[end:].strip(" \t\n\r"):
        raise ValueError("trailing data after JSON")
    if text[:1] == "\ufeff":
        raise ValueError("byte order mark")
    # RFC 8259 §8.2 leaves lone surrogates "unpredictable"; we refuse them so a claim is
    # always a string that can be encoded again (logs, headers, responses). Only a "\\u"
    # escape can produce one, so the walk is skipped for almost every token.
    if "\\u" in text and _has_lone_surrogate(value):
        raise ValueError("lone surrogate escape")
    return value


def _containers(raw: bytes) -> int:
    """The ``{`` and ``[`` of ``raw`` outside its strings: for valid JSON, exactly its
    number of objects and arrays (for invalid JSON, no fewer than a parser would build
    before it fails).

    Only C-speed bytes operations, linear in the length: escaped backslashes, then
    escaped quotes, are blanked out, so every quote left opens or closes a string and
    the text outside strings is every other piece between quotes. (A regular
    expression for strings cost a Python-level match per string, and one that can fail
    once begun would be retried at every later quote: quadratic.)
    """
    unescaped = raw.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    outside = b"".join(unescaped.split(b'"')[::2])
    return outside.count(b"{") + outside.count(b"[")


def _json_object(segment: bytes, what: str, decode: _Decode) -> dict[str, Any]:
    try:
        raw = decode(segment)
    except ValueError as exc:
        raise MalformedTokenError(f"{what} is not base64url-encoded UTF-8 JSON") from exc
    # Brackets inside strings make this count err on the safe side, so the exact
    # count, and the depth walk below, run for unusual documents only.
    brackets = raw.count(b"{") + raw.count(b"[")
    if brackets > MAX_JSON_CONTAINERS and _containers(raw) > MAX_JSON_CONTAINERS:
        # Before parsing: refusing must cost less than what is refused.
        raise MalformedTokenError(
            f"{what} holds more than {MAX_JSON_CONTAINERS} JSON objects and arrays"
        )
    value: Any = None
    codec = _speedups.json_codec
    if codec is not None:
        # orjson (the speedups extra) keeps the last of duplicate member names, turns
        # integers past 64 bits into floats and skips whitespace: each unlike the
        # strict parser. So its value is taken only when orjson writes it back byte for
        # byte as raw: then raw has no duplicate member (a dict has none to write
        # back), no whitespace, and each number and string spelled as orjson spells
        # it, which loads_strict reads to the same value of the same type (the tests
        # hold both parsers to that). Compact JSON, as issuers sign it, passes; any
        # other goes to loads_strict, which also words every refusal.
        try:
            value = codec[0](raw)
            if codec[1](value) != raw:
                value = None
        except Exception:  # whatever orjson refuses, loads_strict judges
            value = None
    if value is None:
        try:
            value = loads_strict(raw)
        except ValueError as exc:
            raise MalformedTokenError(f"{what} is not base64url-encoded UTF-8 JSON") from exc
    if type(value) is not dict:
        raise MalformedTokenError(f"{what} is not a JSON object")
    if brackets > MAX_JSON_DEPTH and _too_deep(value, MAX_JSON_DEPTH):
        raise MalformedTokenError(f"{what} nests JSON too deeply")
    return value


class _Header(NamedTuple):
    header: dict[str, Any]
    alg: str
    kid: str | None


def _check_header(segment: bytes, algorithms: frozenset[str], decode: _Decode) -> _Header:
    header = _json_object(segment, "header", decode)
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise MalformedTokenError("the header has no alg")
    if alg not in algorithms:
        raise AlgorithmNotAllowedError("alg is not in the allow-list")
    if "crit" in header:
        # We implement no JWS extensions, so any critical one is unknown to us (RFC 7515
        # §4.1.11 says the token MUST then be rejected). This also covers b64 (RFC 7797).
        raise UnsupportedHeaderError("the header lists critical extensions")
    if header.get("b64", True) is not True:
        raise UnsupportedHeaderError("unencoded payloads (b64: false) are not supported")
    kid = header.get("kid")
    # A present kid must be a string: "kid": null is not quietly read as "no kid".
    if "kid" in header and (not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH):
        raise MalformedTokenError("kid is not a string of reasonable length")
    # typ and cty are media types, strings (RFC 7515 §4.1.9, §4.1.10), whether or not
    # anything here reads them: a header with "typ": 1 is malformed, not untyped.
    for name in ("typ", "cty"):
        if name in header and not isinstance(header[name], str):
            raise MalformedTokenError(f"{name} is not a string")
    # Read-only all the way down: a cached header is shared by every token that has it.
    return _Header(_freeze(header), alg, kid)


#: How many distinct accepted header segments a :class:`JWSParser` remembers.
HEADER_CACHE_SIZE = 32


class JWSParser:
    """:func:`parse_compact` for one allow-list and size limit, with a small cache of
    checked headers.

    An issuer signs with few keys, so its tokens share a handful of header segments.
    The checked header is a pure function of the segment's text and of the allow-list
    fixed here, so a later token with the same segment can skip decoding it. Only
    headers that pass every check are cached; at most ``header_cache_size`` of them
    (oldest out first, ``0`` disables it); the cached header is read-only.
    """

    __slots__ = ("_algorithms", "_cache_size", "_headers", "_max_size")

    def __init__(
        self,
        *,
        max_size: int,
        algorithms: frozenset[str],
        header_cache_size: int = HEADER_CACHE_SIZE,
    ) -> None:
        self._max_size = max_size
        self._algorithms = frozenset(algorithms)
        self._cache_size = header_cache_size
        self._headers: dict[bytes, _Header] = {}

    @property
    def cached_headers(self) -> int:
        """How many header segments are cached now."""
        return len(self._headers)

    def parse(self, token: object) -> ParsedToken:
        """See :func:`parse_compact`."""
        if not isinstance(token, str):
            raise MalformedTokenError("the token is not a string")
        if len(token) > self._max_size:
            raise TokenTooLargeError(f"the token is longer than {self._max_size} bytes")
        if not token.isascii():
            raise MalformedTokenError("the token has non-ASCII characters")
        raw = token.encode("ascii")
        # One pass over the whole token checks every segment's alphabet and maps it
        # for binascii. A token with any other byte (it will fail) is parsed again
        # segment by segment, so its error is the first in the documented order.
        std = raw.translate(_URL_TO_STD, _NOT_TOKEN_BYTES)
        if len(std) == len(raw):
            return self._parse(raw, std, decode_translated, self._headers)
        return self._parse(raw, raw, b64url_decode_bytes, None)

    def _parse(
        self,
        raw: bytes,
        segments: bytes,
        decode: _Decode,
        headers: dict[bytes, _Header] | None,
    ) -> ParsedToken:
        parts = segments.split(b".")
        if len(parts) != 3:
            raise MalformedTokenError(
                "encrypted (JWE) tokens are not supported (Auth0 issues one when the login "
                "names no API: ask /authorize for audience=<your API identifier>)"
                if len(parts) == 5
                else "the token does not have three segments"
            )
        header_b64, payload_b64, signature_b64 = parts
        if not header_b64 or not payload_b64 or not signature_b64:
            raise MalformedTokenError(
                "the token has an empty segment (unsigned tokens are refused)"
            )

        checked = headers.get(header_b64) if headers is not None else None
        if checked is None:
            checked = _check_header(header_b64, self._algorithms, decode)
            if headers is not None and self._cache_size > 0:
                if len(headers) >= self._cache_size:
                    # Another thread may change the dict between iter() and next():
                    # then skip this eviction rather than fail a verification over it.
                    with contextlib.suppress(RuntimeError, StopIteration):
                        headers.pop(next(iter(headers)), None)
                headers[header_b64] = checked

        payload = _json_object(payload_b64, "payload", decode)
        try:
            signature = decode(signature_b64)
        except ValueError as exc:
            raise MalformedTokenError("the signature is not canonical base64url") from exc
        # The signature covers the token's own bytes, not the translated ones.
        signing_input = raw[: len(header_b64) + 1 + len(payload_b64)]
        return _new_parsed(
            (checked.header, payload, signing_input, signature, checked.alg, checked.kid)
        )


def parse_compact(token: object, *, max_size: int, algorithms: frozenset[str]) -> ParsedToken:
    """Split and decode a compact JWS and check its header.

    Checks, in order: type and size, three non-empty segments, header JSON, ``alg`` in
    ``algorithms`` (never ``none``), ``crit`` and ``b64``, ``kid`` shape, payload JSON,
    signature encoding. Raises an :class:`InvalidTokenError` subclass on any failure.
    The header comes back read-only. This one-off form caches nothing; a verifier
    keeps a :class:`JWSParser`.
    """
    return JWSParser(max_size=max_size, algorithms=algorithms, header_cache_size=0).parse(token)
