"""The paths that stay open when ``Auth0Middleware(require_token=True)`` closes the rest.

Matching is done on the path the router matches routes against (the ASGI ``path``,
already percent-decoded by the server, less the ``root_path`` a proxy prefix puts in
front), so a request is public exactly when it reaches a route listed as public. Every
near miss (a trailing slash, another case, an encoded variant) fails closed: it needs
a token.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._errors import ConfigError

__all__ = ["PublicPaths", "route_path"]

# A query, a fragment or an encoded byte can never appear in a decoded ASGI path, so
# an entry holding one would silently never match: refuse it instead.
_NEVER_IN_A_PATH = frozenset("?#%")


def holds_root(path: str, root: str) -> bool:
    """Whether ``path`` carries the ``root_path`` ``root`` in front, as Starlette's
    router decides it (``starlette._utils.get_route_path``): the whole path, or the
    root followed by ``/``."""
    return bool(root) and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/")


def route_path(scope: Any) -> str:
    """The part of ``scope["path"]`` that routing sees: without the ``root_path``
    prefix when the path carries it (:func:`holds_root`)."""
    path: str = scope["path"]
    root = scope.get("root_path")
    return path[len(root) :] if root and holds_root(path, root) else path


class PublicPaths:
    """A set of exact paths (``"/health"``) and subtrees (``"/static/*"``: everything
    below ``/static/``, not ``/static`` itself) reachable without a token.

    Entries are validated at construction; a mistake raises :class:`ConfigError`
    instead of leaving a route unexpectedly open or closed.
    """

    __slots__ = ("_exact", "_prefixes", "entries")

    def __init__(self, paths: Iterable[str]) -> None:
        if isinstance(paths, (str, bytes)):
            # A lone "/health" would otherwise be read as the paths "/", "h", "e", ...
            raise ConfigError("public_paths must be a collection of paths, not a single string")
        try:
            one_pass = iter(paths) is paths
        except TypeError:
            raise ConfigError("public_paths must be a collection of path strings") from None
        if one_pass:
            # A generator would be used up by the first reader (the middleware), and
            # configure_openapi reads the same setting again to document it.
            raise ConfigError("public_paths must be a list, tuple or set, not an iterator")
        entries = tuple(dict.fromkeys(paths))
        exact: set[str] = set()
        prefixes: list[str] = []
        for entry in entries:
            _check_entry(entry)
            if entry.endswith("/*"):
                prefixes.append(entry[:-1])
            else:
                exact.add(entry)
        #: The entries as given (duplicates dropped), for documentation and repr.
        self.entries: tuple[str, ...] = entries
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)

    def __contains__(self, path: object) -> bool:
        # str.startswith takes a tuple: one C call however many subtrees are listed.
        return path in self._exact or (type(path) is str and path.startswith(self._prefixes))

    def covers_template(self, template: str) -> bool:
        """Whether every request to the route ``template`` (an OpenAPI path such as
        ``/items/{id}``) is public: an exact entry equal to it, or a subtree above it."""
        return template in self._exact or template.startswith(self._prefixes)

    def below(self, prefix: str) -> PublicPaths:
        """These public paths as an application mounted at ``prefix`` sees them: the
        entries under it, with the prefix taken off (``"/v1/ping"`` at ``"/v1"`` is
        ``"/ping"``), and ``"/*"`` when a subtree covers all of it. A prefix with a
        path parameter (``"/{tenant}"``) keeps only a subtree above its fixed part."""
        if "{" in prefix:
            fixed = prefix[: prefix.index("{")]
            covered = any(fixed.startswith(p) for p in self._prefixes)
            return PublicPaths(["/*"] if covered else [])
        base = prefix.rstrip("/") + "/"
        if base.startswith(self._prefixes):
            return PublicPaths(["/*"])
        cut = len(base) - 1
        return PublicPaths([entry[cut:] for entry in self.entries if entry.startswith(base)])

    def near_miss(self, path: str, root_path: str = "", room: int = 200) -> str | None:
        """Why ``path`` (as routing sees it, refused as not public) looks like a listed
        entry: a hint for the rejection log, or ``None``.

        The near misses are the ones that read as a bug in the log: an entry that
        differs only by a trailing slash, a subtree entry whose own root is asked for,
        an entry written with the ``root_path`` in front (entries are matched
        without it), and an exact entry above the path (meant as a subtree). Called
        only when refusing a request: a few set lookups and a walk over the exact
        entries. The hint names only ``path`` and the ``root_path`` (the path the log
        line shows already) give or take a slash, escaped, and configured entries;
        longer than ``room`` characters, it names none of them.
        """
        specific, short = self._near_miss(path, root_path)
        if specific is None or len(specific) <= room:
            return specific
        return short if len(short) <= room else None

    def _near_miss(self, path: str, root_path: str) -> tuple[str | None, str]:
        # The path with its trailing slash taken off, or with one added.
        other = path[:-1] if path.endswith("/") and len(path) > 1 else path + "/"
        if other in self._exact:
            return (
                f"public_paths lists {other!r}, which differs from it only by a trailing slash",
                "a public path differs from it only by a trailing slash",
            )
        if other in self._prefixes:
            return (
                f"public_paths lists {other + '*'!r}, which covers only the paths below "
                f"{other!r}: list {path!r} too",
                "a public subtree covers only the paths below it",
            )
        if root_path:
            full = root_path + path
            short = "public_paths lists it with the root_path in front"
            if full in self._exact:
                return (
                    f"public_paths lists it with the root_path {root_path!r}, but entries "
                    f"are matched without it: list {path!r}",
                    short,
                )
            for prefix in self._prefixes:
                if full.startswith(prefix) and prefix.startswith(root_path + "/"):
                    inner = prefix[len(root_path) :] + "*"
                    return (
                        f"public_paths lists {prefix + '*'!r} with the root_path "
                        f"{root_path!r}, but entries are matched without it: list {inner!r}",
                        short,
                    )
        # An exact entry meant as a subtree (a StaticFiles mount, a mounted app).
        for entry in self._exact:
            base = entry.rstrip("/")
            if base and path.startswith(base + "/") and base + "/" not in self._prefixes:
                return (
                    f"public_paths lists {entry!r}, that path alone: list {base + '/*'!r} "
                    "for the paths below it",
                    "a public path is listed alone, not as a subtree",
                )
        return None, ""

    def __repr__(self) -> str:
        return f"PublicPaths({list(self.entries)!r})"


def _check_entry(entry: object) -> None:
    if not isinstance(entry, str):
        raise ConfigError(f"public_paths entries must be strings, not {type(entry).__name__}")
    if not entry.startswith("/"):
        raise ConfigError(f"public path {entry!r} must start with '/'")
    if not entry.isprintable() or " " in entry:
        raise ConfigError(f"public path {entry!r} holds whitespace or control characters")
    if not _NEVER_IN_A_PATH.isdisjoint(entry):
        raise ConfigError(
            f"public path {entry!r} holds '?', '#' or '%': it is matched against the "
            "decoded request path, without the query string; list the decoded path"
        )
    if "{" in entry or "}" in entry:
        raise ConfigError(
            f"public path {entry!r} looks like a route template: entries are matched "
            "against request paths as they are; list the subtree ('/items/*') instead"
        )
    if "*" in entry[:-1] or (entry.endswith("*") and not entry.endswith("/*")):
        raise ConfigError(
            f"public path {entry!r}: '*' is only allowed as a final '/*' (a whole subtree)"
        )
