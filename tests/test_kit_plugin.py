"""The pytest plugin as a user's project meets it: run by pytest in a subprocess, in a
directory of its own with its own ``pytest.ini`` (warnings are errors), so that what
happens at collection time (plugin registration, assertion rewriting) and between
tests is what a user's suite sees, not what this suite's configuration makes of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# A user's pytest.ini: warnings are errors, as in this project and many others.
_PYTEST_INI = "[pytest]\nfilterwarnings = error\n"

_CONFTEST = """\
import pytest

from {module} import TokenFactory

pytest_plugins = ["asgi_auth0.pytest_plugin"]


@pytest.fixture
def admin_token(auth0_token: TokenFactory) -> str:
    return auth0_token(permissions=["delete:items"])
"""

_TEST_ADMIN_TOKEN = """\
def test_admin_token(admin_token: str) -> None:
    assert admin_token.count(".") == 2
"""

# Two tests, each on its own app, each asserting the warnings the package logs once
# per process: the second passes only if the plugin reset them in between.
_TEST_LOG_ONCE = """\
import logging
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, Security

from asgi_auth0 import (
    Auth0Middleware,
    Claims,
    StaticKeySet,
    TokenVerifier,
    require_permissions,
    require_token,
)
from asgi_auth0.testing import LocalIssuer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("attempt", [1, 2])
async def test_log_once_warnings_are_logged(
    auth0_rsa_key, caplog: pytest.LogCaptureFixture, attempt: int
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_auth0")
    issuer = LocalIssuer(issuer="https://tenant.example.test/", private_key=auth0_rsa_key)
    app = FastAPI()
    app.add_middleware(
        Auth0Middleware,
        verifier=TokenVerifier(issuer.config(), key_set=StaticKeySet(issuer.jwks)),
    )

    @app.delete("/items")
    async def delete(claims: Claims = Depends(require_permissions("delete:items"))) -> None:
        pass

    @app.get("/bulk")
    async def bulk(
        claims: Annotated[Claims, Security(require_token, scopes=["read:a write:a"])],
    ) -> None:
        pass

    headers = {"Authorization": f"Bearer {issuer.token(scope='delete:items')}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        assert (await client.delete("/items", headers=headers)).status_code == 403
        assert (await client.get("/bulk", headers=headers)).status_code == 403
    messages = [record.getMessage() for record in caplog.records]
    assert any("no permissions claim" in m for m in messages), messages
    assert any("'read:a write:a'" in m for m in messages), messages
"""


def run_pytest(project: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Write ``files`` into ``project`` and run pytest there, as its own root."""
    for name, text in {"pytest.ini": _PYTEST_INI, **files}.items():
        (project / name).write_text(text)
    # The outer run's options must not leak in; the project has its own pytest.ini.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("module", ["asgi_auth0.testing", "asgi_auth0.pytest_plugin"])
def test_a_conftest_can_import_token_factory_before_enabling_the_plugin(
    tmp_path: Path, module: str
) -> None:
    # The README's conftest pattern: import the type for a fixture, then enable the
    # plugin. asgi_auth0.testing is where it lives; the plugin module's re-export stays
    # safe too (pytest would otherwise warn that it cannot rewrite an imported module,
    # and filterwarnings = error turns that into an aborted run).
    files = {"conftest.py": _CONFTEST.format(module=module), "test_a.py": _TEST_ADMIN_TOKEN}
    result = run_pytest(tmp_path, files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_token_factory_is_one_type_wherever_it_is_imported() -> None:
    from asgi_auth0 import pytest_plugin, testing

    assert pytest_plugin.TokenFactory is testing.TokenFactory
    assert "TokenFactory" in testing.__all__
    assert "TokenFactory" in pytest_plugin.__all__


def test_log_once_warnings_are_logged_again_in_each_test(tmp_path: Path) -> None:
    files = {
        "conftest.py": 'pytest_plugins = ["asgi_auth0.pytest_plugin"]\n',
        "test_log_once.py": _TEST_LOG_ONCE,
    }
    result = run_pytest(tmp_path, files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
