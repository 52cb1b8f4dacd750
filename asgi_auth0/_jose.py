"""Strict parsing of compact JWS tokens (RFC 7515 §7.1), before any key is involved.

Everything here is synchronous, allocation-light and network-free: it runs on every
cold verification and decides, cheaply, whether a token is even worth a key lookup.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

from ._errors import (
    AlgorithmNotAllowedError,
    MalformedTokenError,
    TokenTooLargeError,
    UnsupportedHeaderError,
)
from ._keys import MAX_KID_LENGTH, b64url_decode

__all__ = ["MAX_JSON_DEPTH", "ParsedToken", "loads_strict", "parse_compact"]

#: Nesting deeper than this in a header or payload is refused as malformed.
MAX_JSON_DEPTH = 16


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


_decoder = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def _too_deep(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return False


def loads_strict(raw: bytes) -> Any:
    """Decode JSON the strict way: UTF-8 only (no BOM, no UTF-16), no duplicate member
    names, no NaN/Infinity, no overflowing numbers, bounded nesting. Raises ``ValueError``."""
    try:
        text = raw.decode("utf-8")
        value, end = _decoder.raw_decode(text)
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ValueError("not UTF-8 JSON") from exc
    # raw_decode stops at the end of the first value; only whitespace may follow it.
    if text[end:].strip(" \t\n\r"):
        raise ValueError("trailing data after JSON")
    if text[:1] == "\ufeff":
        raise ValueError("byte order mark")
    return value


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = loads_strict(b64url_decode(segment))
    except ValueError as exc:
        raise MalformedTokenError(f"{what} is not base64url-encoded UTF-8 JSON") from exc
    if not isinstance(value, dict):
        raise MalformedTokenError(f"{what} is not a JSON object")
    # A flat object is the common case; only walk it if it holds containers at all.
    if any(isinstance(v, (dict, list)) for v in value.values()) and _too_deep(
        value, MAX_JSON_DEPTH
    ):
        raise MalformedTokenError(f"{what} nests JSON too deeply")
    return value


def parse_compact(token: object, *, max_size: int, algorithms: frozenset[str]) -> ParsedToken:
    """Split and decode a compact JWS and check its header.

    Checks, in order: type and size, three non-empty segments, header JSON, ``alg`` in
    ``algorithms`` (never ``none``), ``crit`` and ``b64``, ``kid`` shape, payload JSON,
    signature encoding. Raises an :class:`InvalidTokenError` subclass on any failure.
    """
    if not isinstance(token, str):
        raise MalformedTokenError("the token is not a string")
    if len(token) > max_size:
        raise TokenTooLargeError(f"the token is longer than {max_size} bytes")
    if not token.isascii():
        raise MalformedTokenError("the token has non-ASCII characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedTokenError(
            "encrypted (JWE) tokens are not supported"
            if len(parts) == 5
            else "the token does not have three segments"
        )
    header_b64, payload_b64, signature_b64 = parts
    if not header_b64 or not payload_b64 or not signature_b64:
        raise MalformedTokenError("the token has an empty segment (unsigned tokens are refused)")

    header = _json_object(header_b64, "header")
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
    if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH):
        raise MalformedTokenError("kid is not a string of reasonable length")

    payload = _json_object(payload_b64, "payload")
    try:
        signature = b64url_decode(signature_b64)
    except ValueError as exc:
        raise MalformedTokenError("the signature is not canonical base64url") from exc
    signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
    return ParsedToken(header, payload, signing_input, signature, alg, kid)


def is_number(value: object) -> bool:
    """A JSON number usable as a NumericDate: int or float, not bool, finite."""
    if type(value) is int:
        return True
    return type(value) is float and math.isfinite(value)
