"""The immutable mapping of a verified token's payload."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

__all__ = ["Claims"]


class _FrozenDict(dict[str, Any]):
    """A ``dict`` that refuses mutation.

    Nested objects stay ``dict`` instances so that ``json.dumps`` and FastAPI's
    encoder handle them as usual, while one request cannot change claims that the
    verified-token cache shares with later requests.
    """

    __slots__ = ()

    def _readonly(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("verified claims are read-only")

    __setitem__ = __delitem__ = _readonly
    clear = pop = popitem = setdefault = update = _readonly
    __ior__ = _readonly

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: kv[0])))

    # Immutable: a copy is the object itself, and pickling rebuilds it through the
    # constructor (unpickling a dict subclass would otherwise call __setitem__).
    def __copy__(self) -> _FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _FrozenDict:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_FrozenDict, (dict(self),))


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return _FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                return tuple(_freeze(v) for v in value)
        return tuple(value)  # the usual array of strings: no per-item calls
    return value


class Claims(Mapping[str, Any]):
    """The verified claims of an access token: a read-only ``Mapping[str, Any]``.

    JSON arrays in the payload are exposed as tuples and nested objects as read-only
    dicts. Besides the mapping interface it offers ``sub``, ``scopes`` and
    ``permissions``.
    """

    __slots__ = ("_data", "_permissions", "_scopes")
    _data: dict[str, Any]
    _scopes: frozenset[str]
    _permissions: frozenset[str]

    def __init__(self, payload: Mapping[str, Any]) -> None:
        if not isinstance(payload, Mapping):
            raise TypeError(
                f"Claims() takes a mapping of claim names to values, not {type(payload).__name__}"
            )
        data = {str(k): _freeze(v) for k, v in payload.items()}
        object.__setattr__(self, "_data", data)

    @classmethod
    def _adopt(cls, payload: dict[str, Any]) -> Claims:
        """Wrap a JSON object the verifier has just decoded, without copying it.

        The keys are JSON strings already and nobody else holds ``payload``, so only
        its array and object values need freezing (in place). ``scopes`` and
        ``permissions`` are worked out on first use; many routes never ask.
        """
        # Replacing values (not adding keys) while iterating is safe for a dict.
        for name, value in payload.items():
            kind = type(value)
            if kind is list:
                for item in value:
                    if type(item) is list or type(item) is dict:
                        payload[name] = _freeze(value)
                        break
                else:  # the usual array of strings: one tuple() call
                    payload[name] = tuple(value)
            elif kind is dict:
                payload[name] = _freeze(value)
        self = object.__new__(cls)
        object.__setattr__(self, "_data", payload)
        return self

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Claims are immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Claims are immutable")

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        # Deliberately not the whole payload: reprs end up in logs and tracebacks.
        return f"Claims(sub={self.sub!r}, claims={sorted(self._data)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Claims):
            return self._data == other._data
        if isinstance(other, Mapping):
            # JSON arrays are tuples here and lists in to_dict() or a test's literal:
            # the same claims either way.
            return bool(_thaw(self._data) == _thaw(dict(other)))
        return NotImplemented

    # Immutable: copies are the object itself; pickling (multiprocessing, task
    # queues, caches) rebuilds it from the plain payload.
    def __copy__(self) -> Claims:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Claims:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Claims, (self.to_dict(),))

    __hash__ = None  # type: ignore[assignment]

    @property
    def sub(self) -> str | None:
        """The subject (``sub``) the token was issued for, or ``None`` if absent."""
        sub = self._data.get("sub")
        return sub if isinstance(sub, str) else None

    @property
    def scopes(self) -> frozenset[str]:
        """Scopes from the space-separated ``scope`` claim (or an array of strings, as
        some issuers send it), or else from ``scp`` (an array, or Entra's string)."""
        try:
            return self._scopes
        except AttributeError:  # first use; the claims never change, so keep it
            scopes = _scopes_of(self._data)
            object.__setattr__(self, "_scopes", scopes)
            return scopes

    @property
    def permissions(self) -> frozenset[str]:
        """Auth0 RBAC permissions from the ``permissions`` array claim."""
        try:
            return self._permissions
        except AttributeError:
            permissions = _strings(self._data.get("permissions"))
            object.__setattr__(self, "_permissions", permissions)
            return permissions

    def to_dict(self) -> dict[str, Any]:
        """A plain, mutable deep copy of the payload (for serialisation)."""
        return _thaw(self._data)  # type: ignore[no-any-return]

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """Let pydantic (so FastAPI) use ``Claims`` as a type: a route may return the
        claims or declare ``-> Claims``, and they are sent as the JSON object they
        came from. Only a ``Claims`` instance validates: a dict is not verified claims.
        """
        # Imported here: pydantic comes with FastAPI, and only pydantic calls this.
        from pydantic_core import core_schema  # noqa: PLC0415

        return core_schema.is_instance_schema(
            cls,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _thaw_claims, when_used="always"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        """The OpenAPI schema of ``Claims``: a JSON object of any claims."""
        return {
            "type": "object",
            "additionalProperties": True,
            "title": "Claims",
            "description": "The verified claims of an access token.",
        }


def _thaw_claims(claims: Claims) -> dict[str, Any]:
    return claims.to_dict()


def _install_pydantic_serializer() -> None:
    # pydantic serializes values it has no schema for (a route returning ``Any``, a
    # Claims inside a dict) by looking for this attribute on their type.
    try:
        from pydantic_core import SchemaSerializer, core_schema  # noqa: PLC0415
    except ImportError:  # pragma: no cover - pydantic comes with FastAPI
        return
    serializer = SchemaSerializer(
        core_schema.any_schema(
            serialization=core_schema.plain_serializer_function_ser_schema(
                _thaw_claims, when_used="always"
            )
        )
    )
    type.__setattr__(Claims, "__pydantic_serializer__", serializer)


_install_pydantic_serializer()


def _thaw(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _strings(value: Any) -> frozenset[str]:
    # Only a JSON array of strings counts; anything else grants nothing rather than
    # guessing (a bare string "read:all" is not silently split into characters).
    if isinstance(value, tuple):
        return frozenset(v for v in value if isinstance(v, str) and v)
    return frozenset()


def _split_scopes(value: str) -> frozenset[str]:
    # RFC 6749 3.3: scope tokens are separated by a space (%x20) and nothing else.
    # str.split() with no argument would also split on tabs, NO-BREAK SPACE, U+2028
    # and the like, turning one scope the issuer signed ("read\u00a0admin") into
    # two, one of them "admin".
    return frozenset(part for part in value.split(" ") if part)


def _scopes_of(data: Mapping[str, Any]) -> frozenset[str]:
    scope = data.get("scope")
    if isinstance(scope, str):
        return _split_scopes(scope)
    if isinstance(scope, tuple):
        # RFC 9068 writes scope as one space-separated string, but some issuers
        # (Spring Authorization Server, PingFederate) send a JSON array; reading it
        # as "no scopes" would refuse every request with a 403 and nothing to say why.
        return _strings(scope)
    scp = data.get("scp")
    if isinstance(scp, str):
        # Entra ID sends ``scp`` as a space-separated string.
        return _split_scopes(scp)
    return _strings(scp)
