"""StaticKeySet: a pinned key set with no usable key is a construction error, and a
pinned key that is ignored is a warning naming it."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from asgi_auth0 import ConfigError, StaticKeySet, UnknownKeyError
from asgi_auth0._signing import generate_private_key, public_jwk

RSA = generate_private_key("RSA")
RSA_1024 = generate_private_key("RSA", rsa_bits=1024)


def rsa_jwk(kid: str = "r", **extra: Any) -> dict[str, Any]:
    jwk = public_jwk(RSA, kid=kid)
    jwk.update(extra)
    return jwk


OCT = {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}


@pytest.mark.parametrize(
    ("keys", "needles"),
    [
        ([], ["the JWKS has no keys"]),
        ([OCT], ["key #0 (kid 'hmac'): symmetric (oct) keys are never used"]),
        (
            [rsa_jwk("e1", use="enc"), rsa_jwk("e2", use="enc")],
            ["key #0 (kid 'e1'): use is not 'sig'", "key #1 (kid 'e2'): use is not 'sig'"],
        ),
        (
            [OCT, public_jwk(RSA_1024, kid="small"), {"kty": "RSA"}],
            [
                "key #0 (kid 'hmac'): symmetric",
                "key #1 (kid 'small'): RSA modulus of 1024 bits is under 2048",
                "key #2 (kid (none)): member 'n' is missing",
            ],
        ),
    ],
)
def test_a_set_with_no_usable_key_is_refused_saying_why(
    keys: list[dict[str, Any]], needles: list[str]
) -> None:
    # Accepted, such a set would fail every token with unknown_kid, long after startup.
    with pytest.raises(ConfigError) as caught:
        StaticKeySet({"keys": keys})
    message = str(caught.value)
    assert "no usable key" in message
    assert "unknown_kid" in message
    for needle in needles:
        assert needle in message


def test_the_refusal_lists_at_most_ten_keys() -> None:
    keys = [rsa_jwk(f"e{i}", use="enc") for i in range(13)]
    with pytest.raises(ConfigError) as caught:
        StaticKeySet({"keys": keys})
    message = str(caught.value)
    assert "key #9 (kid 'e9')" in message
    assert "key #10" not in message
    assert message.endswith("; and 3 more")


def test_a_hostile_kid_in_the_refusal_is_escaped_and_truncated() -> None:
    hostile = "k\nforged " + "x" * 5000
    with pytest.raises(ConfigError) as caught:
        StaticKeySet({"keys": [rsa_jwk(hostile)]})
    message = str(caught.value)
    assert "\n" not in message
    assert "'k\\nforged" in message
    assert len(message) < 300


@pytest.mark.anyio
async def test_an_ignored_key_beside_usable_ones_is_a_warning_with_kid_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_auth0.keys")
    keys = StaticKeySet({"keys": [rsa_jwk("enc-key", use="enc"), rsa_jwk("good")]})
    assert keys.index.kids() == {"good"}
    with pytest.raises(UnknownKeyError):
        await keys.get_key("enc-key", "RS256")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.name == "asgi_auth0.keys"
    text = record.getMessage()
    assert "'enc-key'" in text
    assert "use is not 'sig'" in text
    assert record.__dict__["kid"] == "'enc-key'"
    assert record.__dict__["why"] == "use is not 'sig'"


def test_the_warning_escapes_a_hostile_kid(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_auth0.keys")
    StaticKeySet({"keys": [rsa_jwk("k\nforged " + "x" * 5000), rsa_jwk("good")]})
    [record] = caplog.records
    text = record.getMessage()
    assert "\n" not in text
    assert "'k\\nforged" in text
    assert len(text) < 200


def test_a_set_of_usable_keys_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asgi_auth0.keys")
    assert StaticKeySet({"keys": [rsa_jwk("a"), rsa_jwk("b")]}).index.kids() == {"a", "b"}
    assert caplog.records == []


@pytest.mark.anyio
async def test_a_jwks_built_in_code_may_use_tuples() -> None:
    # StaticKeySet(jwks: Mapping): a document built in Python, not parsed from JSON,
    # may hold tuples where JSON has arrays; they mean the same.
    keys = StaticKeySet({"keys": (rsa_jwk("t", key_ops=("verify",)),)})
    assert (await keys.get_key("t", "RS256")).kid == "t"
    # key_ops is still read: a tuple without "verify" refuses the key.
    with pytest.raises(ConfigError, match="key_ops does not allow 'verify'"):
        StaticKeySet({"keys": (rsa_jwk("s", key_ops=("sign",)),)})
