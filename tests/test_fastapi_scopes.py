"""FastAPI's own scope pattern on asgi_auth0 dependencies (``Security(dep, scopes=[...])``
is enforced, not only published), the OpenAPI requirements for ``any_of`` and
``optional_token``, the type of ``rejection_handler`` and the names
``require_scopes``/``require_permissions`` accept."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import asgi_auth0
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


# -- rejection_handler's type ------------------------------------------------------------

_USER_APP = """\
from fastapi import FastAPI
from starlette.applications import Starlette

from asgi_auth0 import AuthenticationRejected, rejection_handler

app = FastAPI()
app.add_exception_handler(AuthenticationRejected, rejection_handler)
plain = Starlette(exception_handlers={AuthenticationRejected: rejection_handler})
"""


@pytest.mark.timeout(60)
def test_registering_rejection_handler_as_documented_passes_mypy_strict(
    tmp_path: Path,
) -> None:
    # The README's registration line failed `mypy --strict` in user code with
    # [arg-type]: the handler returned `Response | None`, which is neither of
    # Starlette's handler types.
    pytest.importorskip("mypy", reason="mypy is not installed")
    (tmp_path / "user_app.py").write_text(_USER_APP)
    package_root = Path(asgi_auth0.__file__).resolve().parent.parent
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            # Only the user's file is judged; the library has its own mypy run.
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / "cache"),
            "user_app.py",
        ],
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(package_root)},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
