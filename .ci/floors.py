"""Print a pip constraints file that pins every runtime dependency to its declared floor
(and those of the ``speedups`` extra).

``make test-floors`` installs the project with these constraints and runs the tests, so
the ``>=`` floors in ``[project] dependencies`` stay true. The pins are read from
pyproject.toml each time; there is no second copy of the floors to drift.

It runs on the interpreter that builds the venvs, which may be Python 3.10 (no
``tomllib``) and has nothing installed, so it reads the one array it needs itself. On
3.11+ the result is checked against ``tomllib`` too, so the small reader cannot silently
misread a reformatted pyproject.toml.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib

# "name[extra] >= 1.2 , <3 ; marker": the name, the floor and the marker, if any.
_REQUIREMENT = re.compile(
    r"""^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*
        (?P<specs>[^;]*?)\s*(?:;\s*(?P<marker>.+?))?\s*$""",
    re.X,
)
_BASIC_STRING = re.compile(r'"((?:[^"\\\n]|\\["\\])*)"')
_FLOOR = re.compile(r"^>=\s*(?P<version>[0-9][0-9A-Za-z.+!-]*)$")


def dependencies(text: str, table_name: str = "[project]", key: str = "dependencies") -> list[str]:
    """The strings of ``[project] dependencies`` (or another array of strings, ``key``
    in ``table_name``) in a pyproject.toml's ``text``."""
    table = ""
    offset = 0
    for line in text.splitlines(keepends=True):
        stripped = line.split("#", 1)[0].strip()
        if stripped.startswith("["):
            table = stripped
        elif table == table_name and re.match(rf"{key}\s*=\s*\[", stripped):
            return _string_array(text, text.index("[", offset) + 1)
        offset += len(line)
    raise SystemExit(f"floors.py: no {table_name} {key} array in pyproject.toml")


def _string_array(text: str, pos: int) -> list[str]:
    """The TOML array of strings in ``text`` that starts just after its ``[`` at ``pos``."""
    items: list[str] = []
    while True:
        while text[pos] in " \t\r\n,":
            pos += 1
        char = text[pos]
        if char == "]":
            return items
        if char == "#":
            pos = text.index("\n", pos)
        elif char == "'":  # literal string: no escapes
            end = text.index("'", pos + 1)
            items.append(text[pos + 1 : end])
            pos = end + 1
        elif char == '"':  # basic string: a requirement only ever escapes " and \\
            match = _BASIC_STRING.match(text, pos)
            if not match:
                raise SystemExit(f"floors.py: cannot read the string at offset {pos}")
            items.append(re.sub(r'\\(["\\])', r"\1", match[1]))
            pos = match.end()
        else:
            raise SystemExit(f"floors.py: unexpected {char!r} in the dependencies array")


def constraint(requirement: str) -> str:
    """``name==floor`` (with the requirement's marker) for one ``name>=floor`` entry."""
    match = _REQUIREMENT.match(requirement)
    floors = []
    if match:
        specs = [s.strip() for s in match["specs"].split(",") if s.strip()]
        floors = [f["version"] for f in map(_FLOOR.match, specs) if f]
    if not match or len(floors) != 1:
        raise SystemExit(f"floors.py: {requirement!r} does not declare exactly one >= floor")
    marker = f"; {match['marker']}" if match["marker"] else ""
    return f"{match['name']}=={floors[0]}{marker}"


def main(argv: list[str]) -> int:
    """Print the constraints for the pyproject.toml named in ``argv`` (default: ./)."""
    path = Path(argv[0] if argv else "pyproject.toml")
    text = path.read_text(encoding="utf-8")
    requirements = dependencies(text)
    # The speedups extra too: the dev extra installs it, so the floors run uses it.
    speedups = dependencies(text, "[project.optional-dependencies]", "speedups")
    if sys.version_info >= (3, 11):
        project = tomllib.loads(text)["project"]
        expected = project["dependencies"]
        if requirements != expected:
            raise SystemExit(f"floors.py: read {requirements}, tomllib reads {expected}")
        if speedups != project["optional-dependencies"]["speedups"]:
            raise SystemExit(f"floors.py: read {speedups} for the speedups extra")
    pins = [constraint(requirement) for requirement in requirements + speedups]
    print("\n".join(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
