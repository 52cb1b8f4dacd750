"""The speedups extra (orjson, pybase64) never changes an answer of the token path.

``asgi_auth0/_speedups.py`` swaps the standard library's base64 decoder and JSON parser
for native ones. ``_jose._json_object`` takes orjson's value only when orjson writes it
back as the very bytes it read; otherwise the strict parser (``loads_strict``) decides.
Every input here is run both ways, and both ways must give the same outcome: the same
value with the same types all the way down (int is not float, key order counts), or
the same exception with the same message. Inputs: generated JSON written several ways,
generated documents with duplicate member names, hand-written hostile documents (also
inside genuinely signed tokens), and base64.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from asgi_auth0 import MalformedTokenError, StaticKeySet, TokenVerifier, _jose, _keys, _speedups
from asgi_auth0 import speedups as asgi_auth0_speedups
from asgi_auth0._jose import MAX_JSON_CONTAINERS, MAX_JSON_DEPTH, loads_strict
from asgi_auth0._signing import PrivateKey, b64url, sign
from asgi_auth0.testing import LocalIssuer

try:
    import orjson
except ImportError:  # the speedups extra is optional; the tests that need it skip
    orjson = None

REPO = Path(__file__).resolve().parent.parent
ISS = "https://tenant.example.test/"
AUD = "https://api.example.test"
NOW = 1_800_000_000
LONG = os.environ.get("ASGI_AUTH0_FUZZ") == "long"


# -- switching the speedups on and off ------------------------------------------------


def _available() -> frozenset[str]:
    # What select(True) turns on here (pybase64 counts only with its C extension), with
    # the state restored, so that a test that switched them cannot leak its choice.
    before = _speedups.SPEEDUPS
    try:
        return _speedups.select(True)
    finally:
        _speedups.select(bool(before))


AVAILABLE = _available()

needs_orjson = pytest.mark.skipif(
    "orjson" not in AVAILABLE,
    reason="orjson (the speedups extra) is not installed: no native JSON path to compare",
)
needs_pybase64 = pytest.mark.skipif(
    "pybase64" not in AVAILABLE,
    reason="pybase64 with its C extension (the speedups extra) is not installed: "
    "no native base64 path to compare",
)
needs_speedups = pytest.mark.skipif(
    not AVAILABLE,
    reason="neither orjson nor pybase64 (the speedups extra) is installed: "
    "the token path has only one way to run",
)


@pytest.fixture(autouse=True)
def _restore_speedups() -> Iterator[None]:
    # A failing assertion inside speedups() still restores (its finally); this is the
    # backstop for anything else, so no test leaves the other tests a changed path.
    before = _speedups.SPEEDUPS
    yield
    _speedups.select(bool(before))


@contextlib.contextmanager
def speedups(enabled: bool) -> Iterator[frozenset[str]]:
    """The token path with the native helpers on or off for the block, then as before."""
    before = _speedups.SPEEDUPS
    names = _speedups.select(enabled)
    try:
        # Both modes must really differ, else every comparison below is vacuous.
        assert names == (AVAILABLE if enabled else frozenset())
        yield names
    finally:
        _speedups.select(bool(before))


@pytest.fixture(params=[True, False], ids=["speedups-on", "speedups-off"])
def speedups_mode(request: pytest.FixtureRequest) -> Iterator[frozenset[str]]:
    """Runs the test once with the native helpers and once without."""
    if request.param and not AVAILABLE:
        pytest.skip("the speedups extra (orjson, pybase64) is not installed")
    with speedups(request.param) as names:
        yield names


# -- comparing outcomes ---------------------------------------------------------------

Outcome = tuple[Any, ...]


def run(fn: Callable[[], Any]) -> Outcome:
    # Any exception, not only the documented ones: a crash on one path is a difference.
    try:
        return ("value", fn())
    except Exception as exc:
        return ("error", type(exc), str(exc))


def both(fn: Callable[[], Any]) -> tuple[Outcome, Outcome]:
    with speedups(True):
        on = run(fn)
    with speedups(False):
        off = run(fn)
    return on, off


def same(a: Any, b: Any) -> bool:
    """Equal values of identical types all the way down, mappings in the same order.

    ``==`` alone is not enough: ``1 == 1.0 == True``, ``0.0 == -0.0``, and two dicts
    with the same items in another order are equal, yet each is a different claim.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        # repr tells -0.0 from 0.0 and round-trips every finite float exactly.
        return repr(a) == repr(b)
    if isinstance(a, Mapping):
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


def assert_same_outcome(on: Outcome, off: Outcome) -> None:
    if on[0] == "value" and off[0] == "value":
        assert same(on[1], off[1]), f"speedups on: {on[1]!r}\nspeedups off: {off[1]!r}"
    else:
        assert on == off, f"speedups on: {on!r}\nspeedups off: {off!r}"


def test_same_tells_apart_what_equality_does_not() -> None:
    assert same({"a": [1, 2.5, None, "x"]}, {"a": [1, 2.5, None, "x"]})
    assert not same(1, 1.0)
    assert not same(True, 1)
    assert not same(0.0, -0.0)
    assert not same([1], (1,))
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert not same({"a": {"b": 1}}, {"a": {"b": True}})
    assert not same(2**64, float(2**64))


# -- the JSON step --------------------------------------------------------------------


def parse_payload(raw: bytes) -> dict[str, Any]:
    """``raw`` as the token parser reads a payload: base64url, then the JSON checks."""
    return _jose._json_object(b64url(raw).encode("ascii"), "payload", _keys.b64url_decode_bytes)


def check_document(
    raw: bytes, record: Callable[[str], object] | None = None
) -> tuple[Outcome, Outcome]:
    """The payload parser's outcome for ``raw`` with speedups on and off, held equal;
    and, one level down, the rule that makes it so. ``record``: hypothesis' event()."""
    on, off = both(lambda: parse_payload(raw))
    assert_same_outcome(on, off)
    if orjson is not None:
        try:
            fast = orjson.loads(raw)
            taken = orjson.dumps(fast) == raw
        except Exception:
            taken = False
        if record is not None:
            record("orjson's value taken" if taken else "the strict parser decides")
        if taken:
            # What _json_object relies on: any document orjson writes back byte for
            # byte, the strict parser accepts too, with the same value and types.
            assert same(fast, loads_strict(raw)), raw
    return on, off


# Integers around the 64-bit range, beyond which orjson reads a float (or refuses to
# write), and around 2**53, beyond which a float no longer holds every integer.
EDGE_INTS = [
    0,
    -1,
    2**53,
    2**53 + 1,
    2**63 - 1,
    -(2**63),
    2**63,
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    10**30,
    -(10**30),
]
EDGE_FLOATS = [
    -0.0,
    0.0,
    1.0,
    0.1,
    1e16,
    1e22,
    2.0**64,
    1e300,
    -1e-300,
    5e-324,
    1.7976931348623157e308,
]
# Characters JSON must escape, that encoders spell differently (or not at all), and
# surrogates: an astral character becomes a surrogate pair when escaped, a lone
# surrogate is never valid (orjson will not write one; json.dumps escapes it).
SPECIAL_CHARS = [
    "\x00",
    "\x1f",
    "\x7f",
    '"',
    "\\",
    "/",
    "\u2028",
    "\ufeff",
    "\u00e9",
    "\U0001f600",
    "\ud800",
    "\udfff",
]

ints = st.integers() | st.sampled_from(EDGE_INTS) | st.integers(-(2**70), 2**70)
floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(EDGE_FLOATS)
# st.characters() includes control characters, non-ASCII and lone surrogates.
texts = st.text(st.characters() | st.sampled_from(SPECIAL_CHARS), max_size=8)
scalars = st.none() | st.booleans() | ints | floats | texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=16,
)
# Mostly objects (what a payload is), and any value (refused, the same way, both ways).
documents = st.dictionaries(texts, json_values, max_size=6) | json_values


def _utf8(text: str) -> bytes:
    # A lone surrogate comes out as the invalid UTF-8 a careless encoder writes.
    return text.encode("utf-8", "surrogatepass")


SERIALIZERS: dict[str, Callable[[Any], bytes]] = {
    "json-compact-ascii": lambda v: json.dumps(v, separators=(",", ":")).encode("ascii"),
    "json-compact-utf8": lambda v: _utf8(json.dumps(v, separators=(",", ":"), ensure_ascii=False)),
    "json-spaced": lambda v: json.dumps(v).encode("ascii"),
    "json-indented": lambda v: _utf8(json.dumps(v, indent=1, ensure_ascii=False)),
}
if orjson is not None:
    SERIALIZERS["orjson"] = orjson.dumps


def fuzz(examples: int) -> settings:
    """As in tests/test_fuzz.py: ``examples`` derandomized in CI, 20 times as many,
    randomized, under ``make fuzz`` (``ASGI_AUTH0_FUZZ=long``)."""
    # The autouse fixture above is function-scoped; each example restores the state
    # itself (speedups()), so sharing the fixture between examples is fine.
    suppress = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
    if LONG:
        return settings(max_examples=examples * 20, deadline=None, suppress_health_check=suppress)
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[*suppress, HealthCheck.data_too_large],
    )


@needs_orjson
@pytest.mark.fuzz
@fuzz(250)
@given(documents)
@example({"big": 2**64, "neg": -(2**63) - 1, "zero": -0.0, "exp": 1e16})
@example({"s": "\ud83d\ude00\u00e9\x00/\u2028", "lone": "\ud800"})
def test_any_json_written_any_way_parses_the_same(value: Any) -> None:
    for name, dumps in SERIALIZERS.items():
        try:
            raw = dumps(value)
        except TypeError:  # orjson: an integer past 64 bits, a lone surrogate
            event(f"{name} cannot write it")
            continue
        check_document(raw, event)


class Obj(tuple):  # type: ignore[type-arg]
    """A JSON object as its (name, value) members in order: names may repeat."""


def _objects(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Obj]:
    # A few short names, so repeats are common; any text now and then.
    names = st.sampled_from(["a", "b", "sub", "\u00e9"]) | texts
    return st.lists(st.tuples(names, inner), max_size=4).map(Obj)


pair_trees = _objects(
    st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | _objects(inner), max_leaves=12
    )
)


def _leaf_orjson(value: Any) -> bytes:
    # Scalars spelled as orjson spells them, so the document reaches the byte-for-byte
    # comparison; what orjson cannot write (big integers, lone surrogates) as json does.
    try:
        return bytes(orjson.dumps(value))
    except TypeError:
        return _utf8(json.dumps(value, ensure_ascii=False))


def _leaf_ascii(value: Any) -> bytes:
    return json.dumps(value).encode("ascii")


def write(node: Any, leaf: Callable[[Any], bytes], comma: bytes, colon: bytes) -> bytes:
    if isinstance(node, Obj):
        members = (leaf(name) + colon + write(value, leaf, comma, colon) for name, value in node)
        return b"{" + comma.join(members) + b"}"
    if isinstance(node, list):
        return b"[" + comma.join(write(item, leaf, comma, colon) for item in node) + b"]"
    return leaf(node)


def has_duplicate_names(node: Any) -> bool:
    if isinstance(node, Obj):
        names = [name for name, _ in node]
        return len(set(names)) != len(names) or any(has_duplicate_names(v) for _, v in node)
    if isinstance(node, list):
        return any(map(has_duplicate_names, node))
    return False


@needs_orjson
@pytest.mark.fuzz
@fuzz(300)
@given(pair_trees)
@example(Obj([("a", 1), ("a", "1")]))
@example(Obj([("a", Obj([("b", [1]), ("b", None)]))]))
def test_documents_with_repeated_names_parse_the_same(tree: Obj) -> None:
    # json.dumps cannot write a repeated name, so these are written by hand: compact
    # (the spelling the fast path takes) and with spaces, scalars orjson's way or ASCII.
    duplicated = has_duplicate_names(tree)
    event("repeated names" if duplicated else "distinct names")
    for leaf in (_leaf_orjson, _leaf_ascii):
        for comma, colon in ((b",", b":"), (b", ", b": ")):
            _, off = check_document(write(tree, leaf, comma, colon), event)
            if duplicated:
                # Not only the same answer both ways: the right one (RFC 7515 §5.2).
                assert off[:2] == ("error", MalformedTokenError), off


def _deep(levels: int) -> bytes:
    return b'"x":' + b"[" * levels + b"]" * levels


def _containers(count: int) -> bytes:
    # The top-level object and one array hold `count` - 2 empty objects.
    return b'"x":[' + b",".join([b"{}"] * (count - 2)) + b"]"


# Hostile payloads, each a template: <B> is the registered claims but exp, <C> all of
# them (so each template is also a token that would verify but for its trick).
HOSTILE: dict[str, bytes] = {
    "compact": b"{<C>}",
    "compact-extra-member": b'{<C>,"x":[1,"y",{"z":null}]}',
    # Repeated member names: orjson keeps the last; the strict parser refuses.
    "dup-top-same-value": b'{<C>,"x":1,"x":1}',
    "dup-top-int-then-str": b'{<C>,"x":1,"x":"1"}',
    "dup-top-str-then-int": b'{<C>,"x":"1","x":1}',
    "dup-top-null-then-array": b'{<C>,"x":null,"x":[1]}',
    "dup-top-object-then-bool": b'{<C>,"x":{},"x":true}',
    "dup-sub-last": b'{<C>,"sub":"admin"}',
    "dup-sub-first": b'{"sub":"admin",<C>}',
    "dup-exp-expired-last": b'{<C>,"exp":%d}' % (NOW - 3600),
    "dup-exp-expired-first": b'{"exp":%d,<C>}' % (NOW - 3600),
    "dup-aud-last": b'{<C>,"aud":"https://other.example.test"}',
    "dup-escaped-name": b'{<C>,"x":1,"\\u0078":2}',
    "dup-nested": b'{<C>,"x":{"y":1,"y":2}}',
    "dup-nested-int-then-str": b'{<C>,"x":{"y":1,"y":"1"}}',
    "dup-nested-str-then-int": b'{<C>,"x":{"y":"1","y":1}}',
    "dup-in-array": b'{<C>,"x":[{"y":true,"y":1}]}',
    "dup-deep": b'{<C>,"x":[[{"a":{"y":[],"y":null}}]]}',
    # Integers past 64 bits: orjson reads a float, the strict parser an int.
    "int-2**64": b'{<C>,"x":18446744073709551616}',
    "int-2**64-1": b'{<C>,"x":18446744073709551615}',
    "int--2**63-1": b'{<C>,"x":-9223372036854775809}',
    "int--2**63": b'{<C>,"x":-9223372036854775808}',
    "int-10**30": b'{<C>,"x":1000000000000000000000000000000}',
    "int--10**30": b'{<C>,"x":-1000000000000000000000000000000}',
    "int-2**64-nested": b'{<C>,"x":[{"y":18446744073709551616}]}',
    "exp-2**64": b'{<B>,"exp":18446744073709551616}',
    "exp-10**30": b'{<B>,"exp":1000000000000000000000000000000}',
    "iat-2**64": b'{"iss":"%s","sub":"u","aud":"%s","iat":18446744073709551616,"exp":%d}'
    % (ISS.encode(), AUD.encode(), NOW + 3600),
    # Other numbers.
    "float-1e400": b'{<C>,"x":1e400}',
    "float--1e400": b'{<C>,"x":-1e400}',
    "exp-1e400": b'{<B>,"exp":1e400}',
    "nan": b'{<C>,"x":NaN}',
    "infinity": b'{<C>,"x":Infinity}',
    "-infinity": b'{<C>,"x":-Infinity}',
    "minus-zero": b'{<C>,"x":-0}',
    "minus-zero-float": b'{<C>,"x":-0.0}',
    "exponent-capital": b'{<C>,"x":1E5}',
    "exponent-plus": b'{<C>,"x":1e+16}',
    "one-point-zero": b'{<C>,"x":1.0}',
    "float-past-2**64": b'{<C>,"x":1.8446744073709552e+19}',
    "float-subnormal": b'{<C>,"x":5e-324}',
    "exp-float": b'{<B>,"exp":%d.0}' % (NOW + 3600),
    "exp-exponent": b'{<B>,"exp":1.8000036e9}',
    "leading-zero": b'{<C>,"x":01}',
    "leading-plus": b'{<C>,"x":+1}',
    "bare-fraction": b'{<C>,"x":.5}',
    "bare-point": b'{<C>,"x":1.}',
    # Strings.
    "lone-high-surrogate": b'{<C>,"x":"\\ud800"}',
    "lone-low-surrogate": b'{<C>,"x":"\\udc00"}',
    "lone-surrogate-name": b'{<C>,"\\ud800":1}',
    "escaped-pair": b'{<C>,"x":"\\ud83d\\ude00"}',
    "escaped-pair-reversed": b'{<C>,"x":"\\ude00\\ud83d"}',
    "high-then-not-low": b'{<C>,"x":"\\ud800\\u0041"}',
    "raw-astral": b'{<C>,"x":"\xf0\x9f\x98\x80"}',
    "escaped-e-acute": b'{<C>,"x":"\\u00e9"}',
    "raw-e-acute": b'{<C>,"x":"\xc3\xa9"}',
    "escaped-solidus": b'{<C>,"x":"a\\/b"}',
    "escaped-nul": b'{<C>,"x":"\\u0000"}',
    "escaped-name-sub": b'{<B>,"exp":%d,"\\u0073ub":"x"}' % (NOW + 3600),
    "raw-control": b'{<C>,"x":"a\x01b"}',
    "raw-tab": b'{<C>,"x":"a\tb"}',
    "raw-newline": b'{<C>,"x":"a\nb"}',
    "raw-del": b'{<C>,"x":"a\x7fb"}',
    "raw-line-separator": b'{<C>,"x":"a\xe2\x80\xa8b"}',
    "bad-escape": b'{<C>,"x":"\\x41"}',
    "unterminated-string": b'{<C>,"x":"abc}',
    # Not UTF-8.
    "utf8-ff": b'{<C>,"x":"\xff"}',
    "utf8-overlong": b'{<C>,"x":"\xc0\xaf"}',
    "utf8-encoded-surrogate": b'{<C>,"x":"\xed\xa0\x80"}',
    "utf8-truncated": b'{<C>,"x":"\xe2\x82"}',
    "latin1": b'{<C>,"x":"\xe9"}',
    # The document around the object.
    "bom": b"\xef\xbb\xbf{<C>}",
    "leading-space": b" {<C>}",
    "leading-newline": b"\n{<C>}",
    "trailing-space": b"{<C>} ",
    "trailing-crlf": b"{<C>}\r\n",
    "trailing-garbage": b"{<C>}x",
    "trailing-object": b"{<C>}{}",
    "trailing-nul": b"{<C>}\x00",
    "trailing-comma-inside": b"{<C>,}",
    "spaces-inside": b"{ <C> }",
    "space-after-comma": b'{<C>, "x": 1}',
    # Not an object.
    "array-of-claims": b"[{<C>}]",
    "empty-array": b"[]",
    "string": b'"x"',
    "null": b"null",
    "number": b"1",
    "true": b"true",
    "empty": b"",
    "whitespace-only": b" ",
    # Nesting and size (the top-level object is depth 1 and one container).
    "depth-at-limit": b"{<C>," + _deep(MAX_JSON_DEPTH - 1) + b"}",
    "depth-past-limit": b"{<C>," + _deep(MAX_JSON_DEPTH) + b"}",
    "depth-far-past-limit": b"{<C>," + _deep(120) + b"}",
    "containers-at-limit": b"{<C>," + _containers(MAX_JSON_CONTAINERS) + b"}",
    "containers-past-limit": b"{<C>," + _containers(MAX_JSON_CONTAINERS + 1) + b"}",
    "brackets-in-a-string": b'{<C>,"x":"' + b"[{" * MAX_JSON_CONTAINERS + b'"}',
}


def payload(template: bytes) -> bytes:
    base = b'"iss":"%s","sub":"user-1","aud":"%s","iat":%d' % (ISS.encode(), AUD.encode(), NOW)
    claims = base + b',"exp":%d' % (NOW + 3600)
    return template.replace(b"<C>", claims).replace(b"<B>", base)


@needs_orjson
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_payloads_parse_the_same(name: str) -> None:
    _, off = check_document(payload(HOSTILE[name]))
    if name.startswith("dup-"):
        assert off[:2] == ("error", MalformedTokenError), off
    if name.startswith("int-") and not name.endswith("-nested"):
        # The integer stays an integer, exact, both ways.
        assert off[0] == "value", off
        assert type(off[1]["x"]) is int, off


@needs_orjson
def test_compact_json_takes_the_fast_path_and_the_rest_the_strict_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Shows that the comparisons above compare two parsers, not one with itself.
    calls: list[bytes] = []

    def spy(raw: bytes) -> Any:
        calls.append(raw)
        return loads_strict(raw)

    monkeypatch.setattr(_jose, "loads_strict", spy)
    compact = payload(b'{<C>,"n":9223372036854775807,"f":-0.0,"s":"\xc3\xa9\xe2\x80\xa8"}')
    with speedups(True):
        parse_payload(compact)
        assert calls == []
        for name in ("dup-top-int-then-str", "int-2**64", "space-after-comma", "escaped-solidus"):
            raw = payload(HOSTILE[name])
            with contextlib.suppress(MalformedTokenError):
                parse_payload(raw)
            assert calls[-1] == raw, name
    with speedups(False):
        calls.clear()
        parse_payload(compact)
        assert calls == [compact]


# -- base64 ---------------------------------------------------------------------------

STD_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@needs_pybase64
@pytest.mark.fuzz
@fuzz(300)
@given(st.binary(max_size=300))
@example(b"")
@example(b"\xfb\xff\xbf")  # '+' and '/' in standard base64, '-' and '_' in base64url
def test_base64_decodes_the_same(data: bytes) -> None:
    std = base64.b64encode(data).rstrip(b"=")
    url = base64.urlsafe_b64encode(data).rstrip(b"=")
    for enabled in (True, False):
        with speedups(enabled):
            assert _keys.decode_translated(std) == data
            assert _keys.b64url_decode_bytes(url) == data


@needs_pybase64
@pytest.mark.fuzz
@fuzz(200)
# A length that is not a multiple of 3, so the encoding ends in a partial group.
@given(st.binary(max_size=64).map(lambda d: d if len(d) % 3 else d + b"\x00"), st.data())
def test_base64_with_set_spare_bits_is_refused_both_ways(data: bytes, draw: st.DataObject) -> None:
    std = base64.b64encode(data).rstrip(b"=")
    # The last character of 2 (or 3) carries 4 (or 2) bits that must be zero.
    spare_mask = 0b1111 if len(std) % 4 == 2 else 0b11
    last = draw.draw(st.sampled_from([c for i, c in enumerate(STD_ALPHABET) if i & spare_mask]))
    mutated = std[:-1] + bytes([last])
    on, off = both(lambda: _keys.decode_translated(mutated))
    assert off == ("error", ValueError, "non-canonical base64url")
    assert on == off


@needs_pybase64
@pytest.mark.fuzz
@fuzz(100)
@given(st.binary(max_size=64), st.sampled_from(STD_ALPHABET))
def test_base64_of_impossible_length_is_refused_both_ways(data: bytes, extra: int) -> None:
    std = base64.b64encode(data).rstrip(b"=")
    std = std[: len(std) // 4 * 4] + bytes([extra])  # 4k + 1 characters: no encoding has
    on, off = both(lambda: _keys.decode_translated(std))
    assert off == ("error", ValueError, "not unpadded base64url")
    assert on == off


# -- whole tokens, genuinely signed ---------------------------------------------------


@pytest.fixture
def issuer(auth0_rsa_key: PrivateKey) -> LocalIssuer:
    return LocalIssuer(issuer=ISS, audience=AUD, private_key=auth0_rsa_key)


async def verify_both(issuer: LocalIssuer, token: str) -> tuple[Outcome, Outcome]:
    outcomes = []
    for enabled in (True, False):
        with speedups(enabled):
            # A new verifier each time: its token and header caches would otherwise
            # answer the second run from the first.
            verifier = TokenVerifier(
                issuer.config(), key_set=StaticKeySet(issuer.jwks), clock=lambda: NOW
            )
            try:
                outcomes.append(("value", await verifier.verify(token)))
            except Exception as exc:
                outcomes.append(("error", type(exc), str(exc)))
    return outcomes[0], outcomes[1]


@needs_speedups
@pytest.mark.anyio
@pytest.mark.parametrize("name", list(HOSTILE))
async def test_signed_tokens_with_hostile_payloads_verify_the_same(
    issuer: LocalIssuer, name: str
) -> None:
    header = {"alg": "RS256", "typ": "JWT", "kid": issuer.current_kid}
    token = issuer.sign(header, payload(HOSTILE[name]))
    on, off = await verify_both(issuer, token)
    assert_same_outcome(on, off)
    if name.startswith("dup-"):
        assert off[:2] == ("error", MalformedTokenError), off
    if name in ("compact", "compact-extra-member", "int-2**64", "minus-zero-float"):
        assert off[0] == "value", off  # the comparison is not between two refusals only


# Hostile headers, signed by the issuer's key: <K> is its kid.
HOSTILE_HEADERS: dict[str, bytes] = {
    "compact": b'{"alg":"RS256","typ":"JWT","kid":"<K>"}',
    "dup-alg-none-last": b'{"alg":"RS256","typ":"JWT","kid":"<K>","alg":"none"}',
    "dup-alg-none-first": b'{"alg":"none","alg":"RS256","typ":"JWT","kid":"<K>"}',
    "dup-kid": b'{"alg":"RS256","kid":"other","typ":"JWT","kid":"<K>"}',
    "dup-b64": b'{"alg":"RS256","typ":"JWT","kid":"<K>","b64":false,"b64":true}',
    "dup-typ": b'{"alg":"RS256","typ":"at+jwt","kid":"<K>","typ":"JWT"}',
    "big-int-member": b'{"alg":"RS256","typ":"JWT","kid":"<K>","x":18446744073709551616}',
    "spaces": b'{"alg": "RS256", "typ": "JWT", "kid": "<K>"}',
    "bom": b'\xef\xbb\xbf{"alg":"RS256","typ":"JWT","kid":"<K>"}',
    "escaped-alg": b'{"alg":"RS\\u0032\\u0035\\u0036","typ":"JWT","kid":"<K>"}',
    "lone-surrogate-kid": b'{"alg":"RS256","typ":"JWT","kid":"\\ud800"}',
    "array": b'[{"alg":"RS256","typ":"JWT","kid":"<K>"}]',
}


@needs_speedups
@pytest.mark.anyio
@pytest.mark.parametrize("name", list(HOSTILE_HEADERS))
async def test_signed_tokens_with_hostile_headers_verify_the_same(
    issuer: LocalIssuer, name: str
) -> None:
    header = HOSTILE_HEADERS[name].replace(b"<K>", issuer.current_kid.encode())
    signing_input = b64url(header) + "." + b64url(payload(b"{<C>}"))
    signature = sign(issuer.private_key, "RS256", signing_input.encode("ascii"))
    on, off = await verify_both(issuer, signing_input + "." + b64url(signature))
    assert_same_outcome(on, off)
    if name.startswith("dup-"):
        assert off[:2] == ("error", MalformedTokenError), off
    if name in ("compact", "spaces", "big-int-member", "escaped-alg"):
        assert off[0] == "value", off


@pytest.mark.anyio
async def test_a_genuine_token_verifies_in_either_mode(
    issuer: LocalIssuer, speedups_mode: frozenset[str]
) -> None:
    assert speedups_mode == _speedups.SPEEDUPS
    verifier = TokenVerifier(issuer.config(), key_set=StaticKeySet(issuer.jwks))
    claims = await verifier.verify(issuer.token(scope="read:a", permissions=["p"], n=2**64))
    assert claims.scopes == {"read:a"}
    assert type(claims["n"]) is int


# -- at import --------------------------------------------------------------------------

PROBE = (
    "import binascii, asgi_auth0, asgi_auth0._speedups as s; "
    "assert asgi_auth0.speedups() == s.SPEEDUPS; "
    "print(sorted(s.SPEEDUPS), s.b64decode is binascii.a2b_base64, s.json_codec is None)"
)


def probe(env: dict[str, str]) -> str:
    """What a fresh interpreter chooses at import, in environment ``env``."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


@pytest.mark.skipif(
    {"orjson", "pybase64"} != AVAILABLE,
    reason="orjson and pybase64 with its C extension are not both installed",
)
def test_both_speedups_are_used_when_installed_whatever_the_environment() -> None:
    # DESIGN.md: nothing but Auth0Config.from_env reads the environment. A variable
    # that once switched the speedups off (ASGI_AUTH0_SPEEDUPS=0) is read no more.
    assert probe(dict(os.environ)) == "['orjson', 'pybase64'] False False"
    off = {**os.environ, "ASGI_AUTH0_SPEEDUPS": "0"}
    assert probe(off) == "['orjson', 'pybase64'] False False"


def test_the_public_function_reports_what_select_chose() -> None:
    for enabled in (False, True):
        with speedups(enabled) as names:
            assert asgi_auth0_speedups() == names
