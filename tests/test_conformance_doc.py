"""CONFORMANCE.md stays true: every test it names exists, every row names one.

The document maps RFC requirements to the tests that pin them. A test renamed or
deleted would leave a row pointing at nothing while the suite stays green; this reads
the tables and each named test file's syntax tree (no test is run or imported) so that
cannot happen.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "CONFORMANCE.md"
HEADER = ["clause", "requirement", "how asgi_auth0 meets it", "tests"]
#: The tests cell of a row with no test to name: a deliberate departure (the middle
#: column says why).
DEPARTURE = "`departure`"
NODE_ID = re.compile(r"`(tests/[A-Za-z0-9_/]+\.py)::([A-Za-z_][A-Za-z0-9_]*)(\[[^`]*\])?`")
#: Every RFC the task covers has its own table.
SPECS = (
    *("RFC 6750", "RFC 7515", "RFC 7517", "RFC 7518", "RFC 7519", "RFC 8725", "RFC 9068"),
    *("RFC 8414", "OpenID Connect Discovery", "RFC 9449"),
)


def _cells(line: str) -> list[str]:
    # A table row: cells between unescaped pipes (an escaped "\|" stays in its cell).
    inner = line.strip()[1:-1]
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


@cache
def tables() -> dict[str, list[list[str]]]:
    """Section heading -> the rows of the table under it (header and rule left out)."""
    found: dict[str, list[list[str]]] = {}
    heading = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif line.startswith("|") and heading is not None:
            cells = _cells(line)
            if cells == HEADER or set("".join(cells)) <= {"-", ":"}:
                continue
            found.setdefault(heading, []).append(cells)
    return found


def rows() -> list[tuple[str, list[str]]]:
    return [(heading, row) for heading, table in tables().items() for row in table]


@cache
def functions_in(path: str) -> frozenset[str]:
    """Names of the module-level test functions (sync or async) defined in ``path``."""
    tree = ast.parse((REPO / path).read_text(), filename=path)
    return frozenset(
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test_")
    )


def test_every_rfc_has_a_table_with_the_four_columns() -> None:
    text = DOC.read_text()
    for spec in SPECS:
        assert any(heading.startswith(spec) for heading in tables()), f"no table for {spec}"
    # Every table has the header this test reads; a changed header would hide its rows.
    assert text.count("| " + " | ".join(HEADER) + " |") == len(tables())
    for heading, row in rows():
        assert len(row) == len(HEADER), (heading, row)
        assert row[0].startswith("§"), (heading, row)


def test_every_row_names_a_test_or_is_a_departure() -> None:
    for heading, (clause, _, how, tests) in rows():
        if tests == DEPARTURE:
            assert "**departure**" in how, f"{heading} {clause}: say why it departs"
            continue
        assert NODE_ID.search(tests), f"{heading} {clause}: no test named in {tests!r}"


@pytest.mark.parametrize("heading", sorted(tables()))
def test_every_named_test_exists(heading: str) -> None:
    for clause, _, _, tests in tables()[heading]:
        for match in NODE_ID.finditer(tests):
            path, name, brackets = match.groups()
            where = f"{heading} {clause}: {path}::{name}"
            assert brackets is None, f"{where}: name the test without parametrisation"
            assert (REPO / path).is_file(), f"{where}: no such file"
            assert name in functions_in(path), f"{where}: no such test function"


def test_every_rfc_clause_test_is_in_the_document() -> None:
    # The other direction for the clause tests: one written for a clause is listed.
    named = {m.group(2) for _, row in rows() for m in NODE_ID.finditer(row[3])}
    missing = functions_in("tests/test_rfc_clauses.py") - named
    assert not missing, f"tests/test_rfc_clauses.py tests missing from CONFORMANCE.md: {missing}"


def _decorators(path: str, name: str) -> list[str]:
    """The source text of each decorator of test ``name`` in ``path``."""
    source = (REPO / path).read_text()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return [ast.get_source_segment(source, d) or "" for d in node.decorator_list]
    return []


def test_not_met_rows_name_a_strict_xfail_test() -> None:
    # A requirement we do not meet is pinned by a test that fails once it is met, so
    # the row gets updated; the test must be a strict xfail to do that.
    for heading, (clause, _, how, tests) in rows():
        if "**not met**" not in how.lower():
            continue
        strict = [
            match.group(2)
            for match in NODE_ID.finditer(tests)
            if any(
                "xfail" in d and "strict=True" in d
                for d in _decorators(match.group(1), match.group(2))
            )
        ]
        assert strict, f"{heading} {clause}: a Not met row needs a strict xfail test"
