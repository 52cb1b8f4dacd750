"""A bare ASGI driver, for what an HTTP client cannot show (exact messages, WebSocket
denial responses, apps run without a server), and the one place that builds the
``http`` and ``websocket`` scopes the tests hand to it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

Message = dict[str, Any]


async def drive(
    app: Callable[..., Awaitable[None]],
    scope: dict[str, Any],
    incoming: list[Message],
    *,
    timeout: float = 5,
) -> list[Message]:
    """Run ``app`` on ``scope``; ``receive`` hands out ``incoming`` then waits forever.

    Returns every message the app sent. A hang fails after ``timeout`` seconds.
    """
    sent: list[Message] = []
    queue = list(incoming)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(timeout):
        await app(scope, receive, send)
    return sent


Headers = list[tuple[bytes, bytes]]


def _base_scope(
    kind: str,
    headers: Headers | None,
    path: str,
    query: bytes,
    scheme: str,
    host: bytes | None,
    raw_path: bytes | None,
    root_path: str,
) -> dict[str, Any]:
    """The keys an ``http`` and a ``websocket`` scope share (ASGI 3, HTTP/1.1)."""
    return {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode() if raw_path is None else raw_path,
        "root_path": root_path,
        "query_string": query,
        "headers": [*([(b"host", host)] if host is not None else []), *(headers or [])],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


def http_scope(
    headers: Headers | None = None,
    path: str = "/",
    *,
    method: str = "GET",
    query: bytes = b"",
    scheme: str = "http",
    host: bytes | None = b"test",
    raw_path: bytes | None = None,
    root_path: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """An ``http`` scope as a server would pass it.

    ``headers`` follow a ``Host: <host>`` header (none when ``host`` is ``None``);
    ``raw_path`` defaults to ``path`` encoded. ``extra`` adds or overrides any key
    (``server=...``, ``state=...``).
    """
    scope = _base_scope("http", headers, path, query, scheme, host, raw_path, root_path)
    scope["method"] = method
    scope.update(extra)
    return scope


def ws_scope(
    headers: Headers | None = None,
    path: str = "/ws",
    *,
    query: bytes = b"",
    denial: bool = True,
    scheme: str = "ws",
    subprotocols: Sequence[str] = (),
    host: bytes | None = b"test",
    raw_path: bytes | None = None,
    root_path: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """A ``websocket`` handshake scope as a server would pass it (no ``method``).

    With ``denial`` the server offers the ``websocket.http.response`` extension, so
    the app may refuse the handshake with an HTTP response; without it, only a close.
    ``headers``, ``host``, ``raw_path`` and ``extra`` work as for :func:`http_scope`.
    """
    scope = _base_scope("websocket", headers, path, query, scheme, host, raw_path, root_path)
    scope["subprotocols"] = list(subprotocols)
    if denial:
        scope["extensions"] = {"websocket.http.response": {}}
    scope.update(extra)
    return scope
