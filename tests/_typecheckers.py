"""Run the type checkers on code written into a temporary directory, as a user's
project would: the tests that hold documented usage to the package's types.

mypy and pyright disagree often enough that users of either must be served: mypy is
the common CI checker, pyright is what VS Code (Pylance) shows while typing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import asgi_auth0

# An editable install is an import hook, which neither checker follows: point them at
# the package's parent directory instead.
_PACKAGE_ROOT = Path(asgi_auth0.__file__).resolve().parent.parent
#: basedpyright is the PyPI build of pyright that brings its own Node.js (dev extra).
BASEDPYRIGHT = Path(sys.executable).parent / "basedpyright"


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


def run_basedpyright(
    directory: Path, *args: str, package_root: Path = _PACKAGE_ROOT
) -> dict[str, Any]:
    """basedpyright ``args`` (with ``--outputjson``) in ``directory``, with asgi_auth0
    found under ``package_root``; returns its JSON report."""
    env = dict(os.environ)
    # The venv (found through VIRTUAL_ENV) gives it the dependencies' types.
    env["VIRTUAL_ENV"] = sys.prefix
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(package_root)
    result = subprocess.run(
        [str(BASEDPYRIGHT), "--outputjson", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"basedpyright printed no report: {result.stdout}{result.stderr}")
    return report


def assert_pyright_strict_passes(directory: Path, files: list[str]) -> None:
    """pyright in strict mode, for Python 3.10, on ``files`` in ``directory`` finds
    nothing to report."""
    config = {"typeCheckingMode": "strict", "pythonVersion": "3.10", "include": files}
    (directory / "pyrightconfig.json").write_text(json.dumps(config))
    report = run_basedpyright(directory)
    checked = report["summary"]["filesAnalyzed"]
    assert checked >= len(files), report
    messages = [
        f"{d['file']}:{d['range']['start']['line'] + 1}: {d['message']}"
        for d in report["generalDiagnostics"]
        if d["severity"] in ("error", "warning")
    ]
    assert messages == [], "\n".join(messages)
