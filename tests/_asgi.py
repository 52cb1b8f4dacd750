"""A bare ASGI driver, for what an HTTP client cannot show (exact messages, WebSocket
denial responses, apps run without a server), and the one place that builds the
``http`` and ``websocket`` scopes the tests hand to it; with a lifespan runner and a
session login for Starlette's AuthenticationMiddleware."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.requests import HTTPConnection

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


def with_lifespan(app: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """``app`` for requests, and a lifespan that starts and stops at once."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await app(scope, receive, send)

    return wrapped


@asynccontextmanager
async def lifespan_running(
    app: Callable[..., Awaitable[None]], state: dict[str, Any]
) -> AsyncIterator[None]:
    """Runs ``app``'s lifespan with ``state``: started for the body, then shut down."""
    steps: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    started, stop = anyio.Event(), anyio.Event()

    async def receive() -> Message:
        if len(steps) == 1:
            await stop.wait()
        return steps.pop(0)

    async def send(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, scope, receive, send)
            await started.wait()
            try:
                yield
            finally:
                stop.set()


class CookieLogin(AuthenticationBackend):
    """A session login for Starlette's AuthenticationMiddleware: the cookie
    ``session=<session>`` logs ``user`` in with ``scopes``; anything else, nobody."""

    def __init__(self, session: str, user: str, scopes: Sequence[str] = ("authenticated",)):
        self.session, self.user, self.scopes = session, user, list(scopes)

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        if conn.cookies.get("session") != self.session:
            return None
        return AuthCredentials(self.scopes), SimpleUser(self.user)
