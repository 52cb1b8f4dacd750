"""The public API is fully typed as pyright sees it, not only as mypy does.

The package ships ``py.typed``, so an application's type checker takes our annotations
as the truth. mypy infers an unannotated attribute or module constant from its value
and is content; pyright (and Pylance, in VS Code) reports such a name as "could be
inferred differently by type checkers" and, under its strict mode, as partially
unknown to the application that uses it. ``--verifytypes`` is pyright's check of
exactly that, over everything the package exports.

basedpyright is the PyPI distribution of pyright that brings its own Node.js, so the
check runs from the project's own dev dependencies with no npm registry.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from _typecheckers import run_basedpyright

import asgi_auth0

PACKAGE = Path(asgi_auth0.__file__).parent


def _verify_types(site: Path) -> dict[str, Any]:
    """Run ``--verifytypes`` on the copy of the package under ``site``."""
    return run_basedpyright(
        site, "--verifytypes", "asgi_auth0", "--ignoreexternal", package_root=site
    )


def _copy_package(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "asgi_auth0", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def _problems(report: dict[str, Any]) -> list[str]:
    return [
        f"{symbol['name']}: {diagnostic['message']}"
        for symbol in report["typeCompleteness"]["symbols"]
        for diagnostic in symbol.get("diagnostics", [])
        if diagnostic.get("severity") == "error"
    ]


def test_every_exported_name_has_a_declared_type(tmp_path: Path) -> None:
    site = _copy_package(tmp_path)
    report = _verify_types(site)
    completeness = report["typeCompleteness"]
    # It checked our copy, with py.typed, and found the whole public API (a package it
    # could not find would report nothing and nothing wrong).
    assert Path(completeness["packageRootDirectory"]) == site / "asgi_auth0"
    assert completeness["pyTypedPath"]
    assert completeness["exportedSymbolCounts"]["withKnownType"] > 100
    assert _problems(report) == []
    assert completeness["exportedSymbolCounts"]["withAmbiguousType"] == 0
    assert completeness["completenessScore"] == 1


def test_the_check_catches_an_inferred_public_constant(tmp_path: Path) -> None:
    # The check above can fail: the same run on a copy where one public module constant
    # lost its annotation names exactly that constant.
    site = _copy_package(tmp_path)
    testing = site / "asgi_auth0" / "testing.py"
    source = testing.read_text(encoding="utf-8")
    annotated = 'logger: logging.Logger = logging.getLogger("asgi_auth0.testing")'
    assert annotated in source
    testing.write_text(
        source.replace(annotated, 'logger = logging.getLogger("asgi_auth0.testing")'),
        encoding="utf-8",
    )
    report = _verify_types(site)
    problems = _problems(report)
    assert problems, "an inferred public constant went unnoticed"
    assert all(problem.startswith("asgi_auth0.testing.logger:") for problem in problems)
    assert report["typeCompleteness"]["completenessScore"] < 1
