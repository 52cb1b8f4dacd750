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
