"""Claims mapping and the error tree: the data every other part hands around."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest

import asgi_auth0
from asgi_auth0 import (
    Auth0Error,
    BearerError,
    Claims,
    ConfigError,
    InsufficientPermissionError,
    InsufficientScopeError,
    InvalidRequestError,
    InvalidTokenError,
    KeySetError,
    MissingTokenError,
    _errors,
)


@pytest.mark.parametrize("separator", ["\t", "\n", "\x1f", "\x85", "\xa0", "\u2028", "\u3000"])
@pytest.mark.parametrize("claim", ["scope", "scp"])
def test_scopes_are_split_on_spaces_only(separator: str, claim: str) -> None:
    # One scope the issuer signed, with an odd character in it, must not become two
    # (one of them "admin"): RFC 6749 separates scopes with %x20 alone.
    one = f"photos.read{separator}admin"
    assert Claims({claim: f"{one}  other "}).scopes == {one, "other"}
    assert "admin" not in Claims({claim: one}).scopes


def test_scope_string_wins_over_scp() -> None:
    c = Claims({"scope": "a b  c", "scp": ["x"]})
    assert c.scopes == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("payload", "scopes"),
    [
        ({"scp": ["a", "b"]}, {"a", "b"}),
        ({"scp": "a b"}, {"a", "b"}),
        ({"scp": ["a", 1, None, ""]}, {"a"}),
        ({"scope": 5}, set()),
        ({"scope": 5, "scp": ["x"]}, {"x"}),
        ({}, set()),
        # A scope array (Spring Authorization Server, PingFederate): its strings.
        ({"scope": ["a", "b"]}, {"a", "b"}),
        ({"scope": ["a", 1, None, ""], "scp": ["x"]}, {"a"}),
        ({"scope": [], "scp": ["x"]}, set()),
    ],
)
def test_scopes_from_scp(payload: dict[str, Any], scopes: set[str]) -> None:
    assert Claims(payload).scopes == scopes


@pytest.mark.parametrize(
    ("value", "perms"),
    [
        (["read:a", "write:a"], {"read:a", "write:a"}),
        ("read:a", set()),  # a bare string is not an array: grants nothing
        ([1, "x"], {"x"}),
        (None, set()),
    ],
)
def test_permissions_only_from_an_array_of_strings(value: Any, perms: set[str]) -> None:
    assert Claims({"permissions": value}).permissions == perms


PAYLOAD = {
    "sub": "auth0|1",
    "permissions": ["read:a", "write:a"],
    "org": {"id": "o1", "roles": ["admin"], "meta": {"tier": 2}},
    "scope": "read:a",
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_claims_pickle_to_equal_read_only_claims(protocol: int) -> None:
    # multiprocessing, task queues and caches pickle what they are handed.
    claims = Claims(PAYLOAD)
    back = pickle.loads(pickle.dumps(claims, protocol=protocol))
    assert type(back) is Claims
    assert back == claims
    assert back.scopes == {"read:a"}
    assert back.permissions == {"read:a", "write:a"}
    with pytest.raises(TypeError):
        back["org"]["id"] = "other"  # type: ignore[index]
    nested = pickle.loads(pickle.dumps(claims["org"], protocol=protocol))
    assert nested == PAYLOAD["org"] | {"roles": ("admin",)}
    with pytest.raises(TypeError):
        nested["id"] = "other"


def test_copies_of_claims_are_the_claims_themselves() -> None:
    claims = Claims(PAYLOAD)
    assert copy.copy(claims) is claims
    assert copy.deepcopy(claims) is claims
    assert copy.deepcopy(claims["org"]) is claims["org"]
    assert copy.deepcopy({"c": claims})["c"] is claims


def test_claims_equal_their_plain_payload() -> None:
    # Arrays are tuples inside Claims and lists in to_dict() or a literal.
    claims = Claims(PAYLOAD)
    assert claims == PAYLOAD
    assert claims == claims.to_dict()
    assert claims == dict(claims)
    assert claims != {**PAYLOAD, "permissions": ["read:a"]}
    assert claims != {**PAYLOAD, "extra": 1}
    assert claims != ["sub"]


@pytest.mark.parametrize("wrong", [None, [("a", 1)], "sub", 3])
def test_claims_of_something_not_a_mapping_is_a_type_error(wrong: Any) -> None:
    with pytest.raises(TypeError, match="mapping"):
        Claims(wrong)


def test_claims_are_a_read_only_mapping() -> None:
    c = Claims({"sub": "u", "nested": {"k": [1, {"z": 2}]}})
    assert c["sub"] == "u"
    assert dict(c) == {"sub": "u", "nested": {"k": (1, {"z": 2})}}
    assert len(c) == 2
    assert "sub" in c
    with pytest.raises(TypeError):
        c["sub"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        c["nested"]["k"] = 1
    with pytest.raises(TypeError):
        c["nested"].update({"a": 1})
    with pytest.raises(AttributeError):
        c.sub = "x"  # type: ignore[misc]
    assert json.loads(json.dumps(c.to_dict())) == {"sub": "u", "nested": {"k": [1, {"z": 2}]}}


def test_claims_repr_does_not_dump_the_payload() -> None:
    c = Claims({"sub": "u", "email": "secret@example.com"})
    assert "secret@example.com" not in repr(c)
    assert "email" in repr(c)


def test_sub_must_be_a_string() -> None:
    assert Claims({"sub": 5}).sub is None
    assert Claims({}).sub is None


def test_error_tree_and_class_attributes() -> None:
    assert issubclass(ConfigError, ValueError)
    assert KeySetError.status_code == 503
    assert KeySetError.error == "temporarily_unavailable"
    assert MissingTokenError.status_code == 401
    assert MissingTokenError.error is None
    assert InvalidRequestError.status_code == 400
    assert InvalidRequestError.error == "invalid_request"
    assert InvalidTokenError.error == "invalid_token"
    assert InsufficientScopeError.status_code == 403
    assert InsufficientScopeError.error == "insufficient_scope"
    assert InsufficientScopeError(["a", "b"]).scope == "a b"
    # One string is one name, never its characters.
    assert InsufficientScopeError("read:messages").scope == "read:messages"
    assert InsufficientPermissionError("read:admin").required == ("read:admin",)
    assert KeySetError(retry_after=0).retry_after == 1


def test_every_error_has_a_unique_reason_and_a_fixed_description() -> None:
    classes = [
        obj
        for obj in vars(_errors).values()
        if isinstance(obj, type) and issubclass(obj, Auth0Error)
    ]
    reasons = [c.reason for c in classes]
    assert len(reasons) == len(set(reasons)), "reasons must be unique"
    for cls in classes:
        assert cls.reason.replace("_", "").isalnum()
        assert cls.reason.islower()
        assert cls.description
        assert '"' not in cls.description
        assert "\\" not in cls.description
        assert cls.__doc__, f"{cls.__name__} needs a one-line docstring"
        if issubclass(cls, BearerError) and cls is not BearerError:
            assert cls.status_code in (400, 401, 403)


def test_detail_never_replaces_the_public_description() -> None:
    exc = InvalidTokenError("internal detail")
    assert exc.description == InvalidTokenError.description
    assert exc.detail == "internal detail"


def test_public_surface_is_exactly_all() -> None:
    public = {name for name in dir(asgi_auth0) if not name.startswith("_")}
    modules = {"fastapi", "testing", "pytest_plugin"}  # importable submodules, not names
    assert public - modules == set(asgi_auth0.__all__)
    assert list(asgi_auth0.__all__) == sorted(asgi_auth0.__all__)
    for name in (
        "Auth0Config",
        "Auth0Middleware",
        "Claims",
        "ConfigError",
        "JWKSCache",
        "KeySetError",
        "StaticKeySet",
        "TokenVerifier",
        "require_permissions",
        "require_scopes",
        "require_token",
        "optional_token",
    ):
        assert name in asgi_auth0.__all__, name
