"""Optional native helpers for a cold token's base64 and JSON steps.

``pip install 'asgi_auth0[speedups]'`` installs two widely used compiled libraries:
pybase64 (a SIMD base64 decoder) and orjson (a JSON parser in Rust). The token path
uses each one that imports, and the standard library otherwise. Either way every
check is the same, and so is every answer: the standard library's parser stays the
authority (see ``_jose._json_object``), and tests run the token path both ways.

Nothing here reads the environment (DESIGN.md: only ``Auth0Config.from_env`` does).
To run without them, leave the extra out: the test suite does so on its oldest Python
(``make test-oldest``), and tests and the benchmark switch with :func:`select`.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

__all__ = ["SPEEDUPS", "b64decode", "json_codec", "select", "speedups"]

#: Decodes standard-alphabet base64 with exact padding; raises ``ValueError``.
B64Decode = Callable[[bytes], bytes]
#: orjson's ``loads`` and ``dumps``.
JSONCodec = tuple[Callable[[bytes], Any], Callable[[Any], bytes]]


def _pybase64() -> B64Decode | None:
    try:
        # Without the extra, mypy run on this source (not an installed copy) finds no
        # module here; with it, the ignore is unused: both are expected.
        import pybase64  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
    except ImportError:
        return None
    # pybase64 falls back to pure Python when its extension did not build: slower than
    # binascii, so it is used only as the C extension.
    if "C extension active" not in pybase64.get_version():
        return None
    # Without validate=True, as binascii is called: the callers have already refused
    # every byte outside the alphabet and fixed the padding (_keys.decode_translated),
    # and the check costs a third of the decode.
    decode: B64Decode = pybase64.b64decode
    return decode


def _orjson() -> JSONCodec | None:
    try:
        # As for pybase64: absent without the extra.
        import orjson  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
    except ImportError:
        return None
    return orjson.loads, orjson.dumps


_native_b64 = _pybase64()
_native_json = _orjson()

#: The native helpers in use: a subset of ``{"orjson", "pybase64"}``. Empty when the
#: ``speedups`` extra is not installed.
SPEEDUPS: frozenset[str] = frozenset()

#: What the token path calls (module globals, rebound by :func:`select`): the base64
#: decoder, and orjson's ``(loads, dumps)`` or ``None``. How the parser makes orjson's
#: answer the strict parser's answer is in ``_jose._json_object``.
b64decode: B64Decode = binascii.a2b_base64
json_codec: JSONCodec | None = None


def speedups() -> frozenset[str]:
    """The native helpers the token path uses: a subset of ``{"orjson", "pybase64"}``.

    Empty without the ``speedups`` extra (``pip install 'asgi_auth0[speedups]'``).
    Answers are the same either way; only a token's first verifications get faster.
    """
    return SPEEDUPS


def select(enabled: bool) -> frozenset[str]:
    """Use the native helpers (when installed) or the standard library from now on,
    for every verifier; returns the names in use. For tests and the benchmark."""
    # Module globals, so the token path reads the choice with one attribute lookup.
    global SPEEDUPS, b64decode, json_codec  # noqa: PLW0603
    b64decode = (enabled and _native_b64) or binascii.a2b_base64
    json_codec = _native_json if enabled else None
    SPEEDUPS = frozenset(
        name
        for name, used in (("pybase64", b64decode is _native_b64), ("orjson", json_codec))
        if used
    )
    return SPEEDUPS


select(True)
