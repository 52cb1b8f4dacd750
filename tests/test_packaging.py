"""What `pip install asgi_auth0` and the sdist deliver stays right.

Statically, from pyproject.toml, MANIFEST.in and the source tree, because a real build
needs setuptools>=77 (PEP 639's ``license = "MIT"``) and the test venvs do not have it:
Python 3.12+ venvs have no setuptools at all, 3.10/3.11 ones an old one, and building
in isolation would need the network. The rules pinned, each the outcome of a setting:

- the wheel holds every module of the package, and py.typed, and nothing else
  (``[tool.setuptools.packages.find]`` and ``package-data``);
- the sdist holds what the test suite needs to run from it (MANIFEST.in), and no caches;
- every third-party module the package imports is a declared runtime dependency;
- the metadata a PyPI user reads: README as markdown long description, the license,
  the classifiers (supported Pythons, Typing :: Typed, frameworks).

Where setuptools>=77 is installed, the last test builds both archives for real through
the PEP 517 hooks (no isolation, no network) and checks them.
"""

from __future__ import annotations

import ast
import email
import importlib.metadata
import itertools
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "asgi_auth0"

# Imported by the package but not runtime dependencies, each only where it cannot be
# needed without it: pytest by the pytest plugin (a user enables it in a test suite that
# has pytest); trio inside a function that runs only under trio; pydantic_core inside
# Claims' pydantic hooks, which only pydantic calls (FastAPI requires pydantic); orjson
# and pybase64 inside _speedups' loaders, which fall back to the standard library on
# ImportError (the speedups extra, pinned below).
ALLOWED_UNDECLARED = {
    "pytest": {"pytest_plugin"},
    "trio": set(),
    "pydantic_core": set(),
    "orjson": set(),
    "pybase64": set(),
}
#: The optional distributions the package uses when installed, by extra.
OPTIONAL_IMPORTS = {"speedups": {"orjson", "pybase64"}}


def _toml() -> Any:
    # tomllib is 3.11+; on 3.10 the dev extra's mypy brings tomli.
    return pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    data: dict[str, Any] = _toml().loads((REPO / "pyproject.toml").read_text())
    return data


def _files_under(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path


# --- the wheel -------------------------------------------------------------------------


def _package_dirs(pyproject: dict[str, Any], root: Path) -> dict[str, Path]:
    """Directories setuptools' ``packages.find`` (namespaces on, its default in
    pyproject.toml) turns into packages: dotted names matching ``include``."""
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    assert set(find) <= {"include"}, "extend _package_dirs for the new find options"
    found = {}
    for directory, subdirs, _ in os.walk(root):
        # Like setuptools, never descend into a directory that cannot be a package
        # (".venv", "asgi_auth0.egg-info", ...).
        subdirs[:] = sorted(d for d in subdirs if d.isidentifier())
        rel = Path(directory).relative_to(root)
        name = ".".join(rel.parts)
        if name and any(fnmatchcase(name, pattern) for pattern in find["include"]):
            found[name] = Path(directory)
    return found


def test_the_wheel_installs_every_module_and_only_the_package(
    pyproject: dict[str, Any],
) -> None:
    packages = _package_dirs(pyproject, REPO)
    assert PACKAGE in packages
    # tests/, example_app/, bench/ and the rest never become installed packages.
    assert {name.split(".")[0] for name in packages} == {PACKAGE}
    for module in (REPO / PACKAGE).rglob("*.py"):
        assert ".".join(module.parent.relative_to(REPO).parts) in packages, module


def test_every_data_file_of_the_package_is_installed(pyproject: dict[str, Any]) -> None:
    # Only .py files go into the wheel by themselves; the rest need package-data.
    package_data: dict[str, list[str]] = pyproject["tool"]["setuptools"]["package-data"]
    for name, directory in _package_dirs(pyproject, REPO).items():
        for path in directory.iterdir():
            if path.is_file() and path.suffix not in {".py", ".pyc"}:
                patterns = package_data.get(name, []) + package_data.get("*", [])
                assert any(fnmatchcase(path.name, p) for p in patterns), path
    # PEP 561: without the marker, type checkers ignore the package's annotations.
    assert (REPO / PACKAGE / "py.typed").is_file()
    assert "py.typed" in package_data[PACKAGE]


def _third_party_imports(tree: ast.Module) -> Iterator[tuple[str, bool]]:
    """(top-level module, imported at module level) for each absolute import, skipping
    ``if TYPE_CHECKING:`` blocks."""

    def visit(node: ast.AST, module_level: bool) -> Iterator[tuple[str, bool]]:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (item for child in node.orelse for item in visit(child, module_level))
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], module_level
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], module_level
        nested = module_level and not isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
        )
        for child in ast.iter_child_nodes(node):
            yield from visit(child, nested)

    for statement in tree.body:
        yield from visit(statement, True)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def import_problems(package: Path, declared: set[str]) -> tuple[list[str], set[str]]:
    """Imports of modules in ``package`` that an install with only the ``declared``
    runtime distributions cannot satisfy, and the ALLOWED_UNDECLARED modules seen."""
    distributions = importlib.metadata.packages_distributions()
    problems = []
    seen_allowed = set()
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for module, module_level in _third_party_imports(tree):
            if module in sys.stdlib_module_names or module in {PACKAGE, "__future__"}:
                continue
            if module in ALLOWED_UNDECLARED:
                seen_allowed.add(module)
                if module_level and path.stem not in ALLOWED_UNDECLARED[module]:
                    problems.append(f"{path.name} imports {module} at import time")
                continue
            owners = {_normalise(d) for d in distributions.get(module, [module])}
            if not owners & declared:
                problems.append(f"{path.name} imports {module}: not in dependencies")
    return problems, seen_allowed


def test_every_imported_distribution_is_a_declared_dependency(
    pyproject: dict[str, Any],
) -> None:
    declared = {
        _normalise(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])
        for requirement in pyproject["project"]["dependencies"]
    }
    assert declared >= {"starlette", "fastapi", "httpx"}, declared
    problems, seen_allowed = import_problems(REPO / PACKAGE, declared)
    assert problems == []
    # The allow-list names only what is imported, so it cannot hide a new import.
    assert seen_allowed == set(ALLOWED_UNDECLARED)


def test_each_optional_import_is_declared_by_its_extra(pyproject: dict[str, Any]) -> None:
    extras = pyproject["project"]["optional-dependencies"]
    for extra, modules in OPTIONAL_IMPORTS.items():
        named = {_normalise(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in extras[extra]}
        assert named == modules, extra
        assert modules <= set(ALLOWED_UNDECLARED), extra
        # Only where a failed import is caught (the standard library takes over).
        for module in modules:
            users = [
                path.name
                for path in sorted((REPO / PACKAGE).rglob("*.py"))
                if re.search(rf"^\s*import {module}\b", path.read_text(), re.M)
            ]
            assert users == ["_speedups.py"], (module, users)
    source = (REPO / PACKAGE / "_speedups.py").read_text()
    assert source.count("except ImportError:") == len(OPTIONAL_IMPORTS["speedups"])
    # The dev extra installs them, so the suite runs the native path too; dev-stdlib
    # (make test-oldest) is the same without them, so one run has the standard
    # library's base64 and JSON alone, in every process the suite starts.
    assert extras["dev"] == ["asgi_auth0[dev-stdlib,speedups]"]
    stdlib = {_normalise(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in extras["dev-stdlib"]}
    assert not stdlib & OPTIONAL_IMPORTS["speedups"]
    assert not any(r.startswith("asgi_auth0") for r in extras["dev-stdlib"])


def test_the_testing_extra_brings_what_the_plugin_and_the_readme_samples_need(
    pyproject: dict[str, Any],
) -> None:
    extras = pyproject["project"]["optional-dependencies"]
    named = {_normalise(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in extras["testing"]}
    assert named == {"pytest", "asgi-lifespan"}
    # The plugin is the one module that imports pytest, and the suite (dev-stdlib) runs
    # with both, so what the extra promises is what the suite tests.
    users = [
        path.name
        for path in sorted((REPO / PACKAGE).rglob("*.py"))
        if re.search(r"^\s*(import|from) pytest\b", path.read_text(), re.M)
    ]
    assert users == ["pytest_plugin.py"]
    stdlib = {_normalise(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in extras["dev-stdlib"]}
    assert named <= stdlib
    assert "asgi_auth0[testing]'" in (REPO / "README.md").read_text()


def test_the_version_is_the_same_in_the_metadata_and_the_package(
    pyproject: dict[str, Any],
) -> None:
    import asgi_auth0

    assert pyproject["project"]["version"] == asgi_auth0.__version__


def test_import_problems_finds_an_undeclared_import(tmp_path: Path) -> None:
    (tmp_path / "pytest_plugin.py").write_text("import pytest\n")
    (tmp_path / "lazy.py").write_text("def f():\n    import trio\n    import pytest\n")
    (tmp_path / "typing_only.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import uvicorn\n"
    )
    assert import_problems(tmp_path, {"httpx"}) == ([], {"pytest", "trio"})
    (tmp_path / "server.py").write_text("import json\nimport httpx\nimport uvicorn\n")
    (tmp_path / "eager.py").write_text("class C:\n    import trio\n")
    problems, _ = import_problems(tmp_path, {"httpx"})
    assert problems == [
        "eager.py imports trio at import time",
        "server.py imports uvicorn: not in dependencies",
    ]


# --- the sdist -------------------------------------------------------------------------


def manifest_files(root: Path) -> set[str]:
    """The files MANIFEST.in adds to the sdist of the tree at ``root`` (besides those
    setuptools adds itself), for the commands it uses."""
    files: set[str] = set()
    every = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    for line in (root / "MANIFEST.in").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command, *args = line.split()
        if command == "include":
            files |= {f for f in every if any(_anchored_match(f, a) for a in args)}
        elif command == "graft":
            files |= {f for f in every if f.startswith(args[0].rstrip("/") + "/")}
        elif command == "prune":
            files = {f for f in files if not f.startswith(args[0].rstrip("/") + "/")}
        elif command == "global-exclude":
            files = {f for f in files if not any(fnmatchcase(Path(f).name, a) for a in args)}
        else:
            raise AssertionError(f"MANIFEST.in: teach manifest_files {command!r}")
    return files


def _anchored_match(path: str, pattern: str) -> bool:
    """An ``include`` pattern: anchored at the root, and "*" does not cross "/"."""
    regex = re.escape(pattern).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return re.fullmatch(regex, path) is not None


def _needed_by_the_tests(pyproject: dict[str, Any]) -> set[str]:
    """What running the test suite from an unpacked sdist reads, besides the package."""
    needed = {
        p.relative_to(REPO).as_posix()
        for top in ("tests", "example_app", ".ci")
        for p in _files_under(REPO / top)
    }
    # Read by tests (test_conformance_doc, test_readme), and the docs a packager ships.
    needed |= {"CONFORMANCE.md", "Makefile", "CHANGELOG.md", "SECURITY.md"}
    # Plugins pytest loads from addopts ("-p tests.adversarial.leakcheck").
    addopts = pyproject["tool"]["pytest"]["ini_options"]["addopts"].split()
    for flag, value in itertools.pairwise(addopts):
        if flag == "-p" and value.startswith("tests."):
            needed.add(value.replace(".", "/") + ".py")
    # mypy's `files` must exist for `mypy` to run at all.
    for top in pyproject["tool"]["mypy"]["files"]:
        if top != PACKAGE:
            needed |= {p.relative_to(REPO).as_posix() for p in _files_under(REPO / top)}
    return {f for f in needed if not f.endswith(".pyc")}


def test_the_sdist_carries_what_its_test_suite_needs(
    pyproject: dict[str, Any], tmp_path: Path
) -> None:
    # A copy of the tree's file names, with the caches and results a working tree has.
    needed = _needed_by_the_tests(pyproject)
    junk = {
        "tests/__pycache__/conftest.cpython-311.pyc",
        "tests/stray.pyc",
        "bench/results/run.json",
        "example_app/__pycache__/app.cpython-311.pyc",
    }
    for name in (*needed, *junk, "MANIFEST.in"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    shutil.copy(REPO / "MANIFEST.in", tmp_path / "MANIFEST.in")
    shipped = manifest_files(tmp_path)
    assert "tests/adversarial/leakcheck.py" in needed
    assert "tests/conftest.py" in needed
    assert sorted(needed - shipped) == []
    assert sorted(junk & shipped) == []


def test_manifest_files_reads_the_commands_as_setuptools_does(tmp_path: Path) -> None:
    for name in ("a.md", "d/a.md", "t/x.py", "t/__pycache__/x.pyc", "t/r/y.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    (tmp_path / "MANIFEST.in").write_text(
        "# comment\n\ninclude *.md\ngraft t\nprune t/r\nglobal-exclude *.py[cod]\n"
    )
    assert manifest_files(tmp_path) == {"a.md", "t/x.py"}
    (tmp_path / "MANIFEST.in").write_text("recursive-include t *.py\n")
    with pytest.raises(AssertionError, match="recursive-include"):
        manifest_files(tmp_path)


# --- metadata --------------------------------------------------------------------------


def _classifiers(pyproject: dict[str, Any]) -> list[str]:
    classifiers: list[str] = pyproject["project"]["classifiers"]
    return classifiers


def test_the_readme_is_the_long_description_in_markdown(pyproject: dict[str, Any]) -> None:
    # setuptools derives Description-Content-Type: text/markdown from the suffix.
    assert pyproject["project"]["readme"] == "README.md"
    assert (REPO / "README.md").read_text().startswith(f"# {PACKAGE}\n")


def test_the_license_is_an_spdx_expression_with_its_file(pyproject: dict[str, Any]) -> None:
    project = pyproject["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert "Permission is hereby granted, free of charge" in (REPO / "LICENSE").read_text()
    # PEP 639: a License :: classifier beside a license expression is refused by PyPI.
    assert not [c for c in _classifiers(pyproject) if c.startswith("License ::")]
    # License expressions need setuptools 77 (PEP 639); older ones fail the build.
    assert "setuptools>=77" in pyproject["build-system"]["requires"]


def test_the_python_classifiers_match_requires_python(pyproject: dict[str, Any]) -> None:
    floor = re.fullmatch(r">=\s*3\.(\d+)", pyproject["project"]["requires-python"])
    assert floor, pyproject["project"]["requires-python"]
    minors = sorted(
        int(m[1])
        for c in _classifiers(pyproject)
        if (m := re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", c))
    )
    assert minors[0] == int(floor[1])
    assert minors == list(range(minors[0], minors[-1] + 1)), "a gap in the versions"
    assert "Programming Language :: Python :: 3 :: Only" in _classifiers(pyproject)
    # Not asserted: that the running Python is listed. CI's test-newest runs on the
    # newest Python the machine has, which may be newer than any listed here; a
    # classifier claims a version was tested, so it is added by hand once it is.


def test_the_classifiers_say_what_the_package_is(pyproject: dict[str, Any]) -> None:
    classifiers = set(_classifiers(pyproject))
    assert "Typing :: Typed" in classifiers  # it ships py.typed
    assert "Framework :: FastAPI" in classifiers  # its dependencies
    assert "Framework :: Pytest" in classifiers  # asgi_auth0.pytest_plugin
    assert (REPO / PACKAGE / "pytest_plugin.py").is_file()
    # The test suite runs every async test on both (tests/conftest.py).
    assert {"Framework :: AsyncIO", "Framework :: Trio", "Framework :: AnyIO"} <= classifiers
    assert len(classifiers) == len(_classifiers(pyproject)), "a classifier twice"


# --- a real build, where setuptools>=77 is installed ------------------------------------


def _setuptools_version() -> tuple[int, ...]:
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return ()
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def _build_hook(hook: str, source: Path, out: Path) -> str:
    """Run one PEP 517 hook of setuptools on ``source`` (no isolation, no network) in a
    process of its own (setuptools' hooks are not meant to run twice in one)."""
    script = f"import sys; from setuptools import build_meta; print(build_meta.{hook}(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "", "VALIDATE_PYPROJECT_NO_NETWORK": "1", "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # setuptools logs to stdout too: the hook's answer is the last line.
    name = result.stdout.splitlines()[-1]
    assert (out / name).is_file(), result.stdout[-3000:]
    return name


@pytest.mark.skipif(
    _setuptools_version() < (77,),
    reason="a real build needs setuptools>=77 in this venv (the dev extra has none); "
    "the static tests above pin the same rules",
)
def test_a_real_build_of_both_archives(tmp_path: Path) -> None:
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
    )
    shutil.copytree(REPO, source, ignore=ignore)
    out = tmp_path / "dist"
    out.mkdir()
    # As `python -m build` does: the sdist from the tree, then the wheel from the sdist,
    # so the sdist alone must be enough to build the package.
    sdist_name = _build_hook("build_sdist", source, out)
    with tarfile.open(out / sdist_name) as sdist:
        top = sdist_name.removesuffix(".tar.gz")
        members = {m.name.removeprefix(top + "/") for m in sdist.getmembers() if m.isfile()}
        # filter= silences 3.12+'s warning; older 3.10/3.11 patch releases lack it.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        sdist.extractall(tmp_path / "unpacked", **safe)  # type: ignore[arg-type]
    wheel_name = _build_hook("build_wheel", tmp_path / "unpacked" / top, out)

    with zipfile.ZipFile(out / wheel_name) as wheel:
        names = set(wheel.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(wheel.read(f"{dist_info}/METADATA"))
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / PACKAGE).rglob("*.py")}
    assert {n for n in names if not n.startswith(dist_info)} == modules | {f"{PACKAGE}/py.typed"}
    assert f"{dist_info}/licenses/LICENSE" in names
    assert metadata["Name"] == PACKAGE
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata["Requires-Python"] == ">=3.10"
    assert "Typing :: Typed" in metadata.get_all("Classifier", [])
    assert str(metadata.get_payload()).startswith(f"# {PACKAGE}\n")

    for needed in ("tests/conftest.py", "tests/adversarial/leakcheck.py", "LICENSE"):
        assert needed in members
    assert {"example_app/app.py", ".ci/run", "Makefile", "CONFORMANCE.md"} <= members
    assert not [m for m in members if m.endswith(".pyc")]
