"""Run ``mypy --strict`` on user code written into a temporary directory, as a user's
project would: the tests that hold documented usage to the package's types."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import asgi_auth0

# An editable install is an import hook, which mypy does not follow: point it at the
# package's parent directory instead.
_PACKAGE_ROOT = Path(asgi_auth0.__file__).resolve().parent.parent


def assert_mypy_strict_passes(directory: Path, files: list[str], *extra: str) -> None:
    """``mypy --strict`` on ``files`` in ``directory`` (no project config, a cache of its
    own) finds nothing; skipped when mypy is not installed."""
    pytest.importorskip("mypy", reason="mypy is not installed")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--config-file=",
            "--cache-dir",
            str(directory / ".mypy_cache"),
            *extra,
            *files,
        ],
        cwd=directory,
        env={**os.environ, "MYPYPATH": str(_PACKAGE_ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
