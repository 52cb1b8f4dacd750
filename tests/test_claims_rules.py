"""Claims rules that mutation testing found unpinned (session 8).

Verified claims are shared: the verifier's cache hands the same ``Claims`` to every
request presenting the token, so no request may change what a later one reads. That
holds for objects and arrays nested inside arrays too, on both roads into ``Claims``
(the constructor and the verifier's no-copy adoption of the decoded payload).
"""

from __future__ import annotations

from typing import Any

import pytest

from asgi_auth0 import Claims, TokenVerifier
from asgi_auth0.testing import LocalIssuer

# Objects inside an array, arrays inside an array, and an object after a plain
# string (the freeze must look past the first item).
NESTED: dict[str, Any] = {
    "orgs": [{"id": "o1", "roles": ["admin"]}],
    "matrix": [[1, 2], [3]],
    "mixed": ["plain", {"k": 1}],
}


def _assert_nested_is_read_only(claims: Claims) -> None:
    org = claims["orgs"][0]
    with pytest.raises(TypeError):
        org["id"] = "o2"
    with pytest.raises(TypeError):
        org.update({"id": "o2"})
    assert org["roles"] == ("admin",)
    assert claims["matrix"] == ((1, 2), (3,))
    assert all(type(row) is tuple for row in claims["matrix"])
    with pytest.raises(TypeError):
        claims["mixed"][1]["k"] = 2
    # Still the JSON the token carried, for serialisation.
    assert claims.to_dict()["orgs"] == [{"id": "o1", "roles": ["admin"]}]
    assert claims.to_dict()["matrix"] == [[1, 2], [3]]


def test_objects_and_arrays_inside_an_array_are_read_only() -> None:
    _assert_nested_is_read_only(Claims(NESTED))


@pytest.mark.anyio
async def test_verified_claims_freeze_objects_and_arrays_inside_arrays(
    issuer: LocalIssuer, verifier: TokenVerifier
) -> None:
    token = issuer.token(**NESTED)
    first = await verifier.verify(token)
    _assert_nested_is_read_only(first)
    # The next request with the same token reads what the token says.
    again = await verifier.verify(token)
    assert again["orgs"][0]["id"] == "o1"
    assert again["mixed"][1] == {"k": 1}


def test_deleting_an_attribute_of_claims_is_refused() -> None:
    claims = Claims({"sub": "alice", "scope": "read:a"})
    with pytest.raises(AttributeError, match="immutable"):
        del claims.sub
    with pytest.raises(AttributeError, match="immutable"):
        del claims._data
    assert claims.sub == "alice"
    assert claims.scopes == {"read:a"}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"b": 1, "a": "x"}, {"a": "x", "b": 1}),  # values of different types
        ({"a": 1, "b": 1}, {"b": 1, "a": 1}),  # equal values
    ],
)
def test_equal_nested_objects_hash_alike_whatever_their_key_order(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    one, other = Claims({"o": first})["o"], Claims({"o": second})["o"]
    assert one == other
    assert hash(one) == hash(other)
    # So an array of objects is hashable too (a set, a cache key).
    assert len({Claims({"a": [first]})["a"], Claims({"a": [second]})["a"]}) == 1
