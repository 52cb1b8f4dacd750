"""Auth0Config.from_env error naming and LocalIssuer.expired_token: two rules that
mutation testing found unchecked.

from_env names the variables a cross-field rule was read from, and never blames a
variable for a setting passed in code, also when the message begins with no setting's
name. expired_token() keeps its documented default of an hour.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from asgi_auth0 import Auth0Config, ConfigError
from asgi_auth0._keys import b64url_decode
from asgi_auth0.testing import LocalIssuer

AUD = "https://api.example.com"


def test_from_env_names_the_variable_also_when_the_other_side_came_from_code() -> None:
    # The client id as audience: the audience was read from AUTH0_AUDIENCE, the
    # client id passed in code. The variable is still named (and only that one).
    env = {"AUTH0_DOMAIN": "tenant.auth0.com", "AUTH0_AUDIENCE": "abc123"}
    with pytest.raises(ConfigError) as caught:
        Auth0Config.from_env(env, client_id="abc123")
    assert str(caught.value).startswith("AUTH0_AUDIENCE: audience 'abc123' is the application")


def test_from_env_blames_no_variable_for_a_setting_cleared_in_code() -> None:
    # domain=None in code drops AUTH0_DOMAIN; with no issuer either, the message
    # ("give either domain= ... or issuer= ...") is about the keywords, not about
    # AUTH0_AUDIENCE, the only variable read.
    env = {"AUTH0_DOMAIN": "tenant.auth0.com", "AUTH0_AUDIENCE": AUD}
    with pytest.raises(ConfigError) as caught:
        Auth0Config.from_env(env, domain=None)
    assert str(caught.value).startswith("give either domain=")


def test_expired_token_expired_an_hour_ago_by_default(issuer: LocalIssuer) -> None:
    now = 1_700_000_000.0
    payload: dict[str, Any] = json.loads(b64url_decode(issuer.expired_token(now=now).split(".")[1]))
    assert payload["exp"] == int(now) - 3600
