"""JSON limit rules that mutation testing found unpinned.

A header or payload nests at most ``MAX_JSON_DEPTH`` containers deep and holds at
most ``MAX_JSON_CONTAINERS`` objects and arrays. Both limits are exact. Each has a
cheap bracket count in front of the exact check, which runs only for a document with
more brackets than the limit; so the exact checks' boundaries are pinned here with
documents at the limit that also hold brackets elsewhere: sibling containers for the
depth walk (a lone chain of 16 has 16 brackets and is never walked), brackets inside
strings for the container count.
"""

from __future__ import annotations

from typing import Any

import pytest

from asgi_auth0 import MalformedTokenError, StaticKeySet, TokenVerifier
from asgi_auth0._jose import MAX_JSON_CONTAINERS, MAX_JSON_DEPTH
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio


def _chain(levels: int, kind: str) -> Any:
    """``levels`` containers, each inside the one before."""
    value: Any = "leaf"
    for _ in range(levels):
        value = [value] if kind == "array" else {"n": value}
    return value


def _verifier(issuer: LocalIssuer) -> TokenVerifier:
    return TokenVerifier(issuer.config(), key_set=StaticKeySet(issuer.jwks))


@pytest.mark.parametrize("kind", ["array", "object"])
async def test_a_payload_at_the_depth_limit_is_accepted_when_it_is_walked(
    issuer: LocalIssuer, kind: str
) -> None:
    # The payload object is level 1; "deep" adds 15 more: 16 levels, the limit. The
    # siblings put the bracket count over 16, so the depth walk does run.
    verifier = _verifier(issuer)
    siblings: list[Any] = [[], {}, [{}]]
    token = issuer.token(deep=_chain(MAX_JSON_DEPTH - 1, kind), siblings=siblings)
    claims = await verifier.verify(token)
    assert claims["siblings"] == ((), {}, ({},))  # frozen: arrays are tuples
    too_deep = issuer.token(deep=_chain(MAX_JSON_DEPTH, kind), siblings=siblings)
    with pytest.raises(MalformedTokenError, match="payload nests JSON too deeply"):
        await verifier.verify(too_deep)


@pytest.mark.parametrize("kind", ["array", "object"])
async def test_a_header_at_the_depth_limit_is_accepted_when_it_is_walked(
    issuer: LocalIssuer, kind: str
) -> None:
    verifier = _verifier(issuer)
    siblings: list[Any] = [{}, {}, []]
    token = issuer.token(headers={"ext": _chain(MAX_JSON_DEPTH - 1, kind), "more": siblings})
    assert (await verifier.verify(token))["sub"] == "user-1"
    too_deep = issuer.token(headers={"ext": _chain(MAX_JSON_DEPTH, kind), "more": siblings})
    with pytest.raises(MalformedTokenError, match="header nests JSON too deeply"):
        await verifier.verify(too_deep)


def _flat(containers: int) -> list[Any]:
    """A member value holding exactly ``containers`` objects and arrays in all."""
    return [{} for _ in range(containers - 1)]


async def test_a_payload_of_exactly_max_json_containers_is_accepted_when_counted(
    issuer: LocalIssuer,
) -> None:
    # The payload object and "many": exactly the limit. The brackets inside "note"
    # put the rough count over it, so the exact count (outside strings) decides.
    verifier = _verifier(issuer)
    note = "[{" * 8
    token = issuer.token(note=note, many=_flat(MAX_JSON_CONTAINERS - 1))
    claims = await verifier.verify(token)
    assert (claims["note"], len(claims["many"])) == (note, MAX_JSON_CONTAINERS - 2)
    over = issuer.token(note=note, many=_flat(MAX_JSON_CONTAINERS))
    with pytest.raises(MalformedTokenError, match="payload holds more than 256 JSON objects"):
        await verifier.verify(over)


async def test_a_header_of_exactly_max_json_containers_is_accepted_when_counted(
    issuer: LocalIssuer,
) -> None:
    verifier = _verifier(issuer)
    note = "{[" * 8
    token = issuer.token(headers={"note": note, "ext": _flat(MAX_JSON_CONTAINERS - 1)})
    assert (await verifier.verify(token))["sub"] == "user-1"
    over = issuer.token(headers={"note": note, "ext": _flat(MAX_JSON_CONTAINERS)})
    with pytest.raises(MalformedTokenError, match="header holds more than 256 JSON objects"):
        await verifier.verify(over)


@pytest.mark.parametrize("escaped", ["\\", '"', '\\"'], ids=["backslash", "quote", "both"])
async def test_escapes_at_the_end_of_a_string_do_not_shift_the_container_count(
    issuer: LocalIssuer, escaped: str
) -> None:
    # A string ending in an escaped backslash or quote, then one full of brackets: the
    # count must still see where each string ends (a backslash pair is not an escaped
    # quote), or the brackets inside "text" are counted and these exactly-at-the-limit
    # payloads refused.
    verifier = _verifier(issuer)
    text = "[{" * 150
    token = issuer.token(a=escaped, text=text, many=_flat(MAX_JSON_CONTAINERS - 1))
    claims = await verifier.verify(token)
    assert (claims["a"], claims["text"]) == (escaped, text)
