"""FastAPI's own scope pattern on asgi_auth0 dependencies (``Security(dep, scopes=[...])``
is enforced, not only published), the OpenAPI requirements for ``any_of`` and
``optional_token``, the type of ``rejection_handler`` and the names
``require_scopes``/``require_permissions`` accept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from asgi_auth0._errors import ConfigError
from asgi_auth0.fastapi import require_permissions, require_scopes

# -- names given to require_scopes / require_permissions -----------------------------------


@pytest.mark.parametrize("factory", [require_scopes, require_permissions])
@pytest.mark.parametrize("given", [["read:a", "read:b"], ("read:a",), {"read:a"}])
def test_a_list_of_names_is_a_config_error_saying_what_to_do(
    factory: Callable[..., Any], given: object
) -> None:
    # Before: TypeError: unhashable type: 'list' (a tuple got "not a valid scope
    # token", which does not say what to do either).
    with pytest.raises(ConfigError, match="separate argument") as caught:
        factory(given)
    assert factory.__name__ in str(caught.value)


@pytest.mark.parametrize("factory", [require_scopes, require_permissions])
@pytest.mark.parametrize("given", [5, None, b"read:a", True])
def test_a_name_that_is_not_a_string_is_a_config_error(
    factory: Callable[..., Any], given: object
) -> None:
    with pytest.raises(ConfigError, match="names must be strings"):
        factory("read:a", given)
