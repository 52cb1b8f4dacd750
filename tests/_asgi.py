"""A bare ASGI driver, for what an HTTP client cannot show (exact messages, WebSocket
denial responses, apps run without a server)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


def http_scope(headers: list[tuple[bytes, bytes]] | None = None, path: str = "/") -> dict[str, Any]:
    """A plain ``GET`` scope as a server would pass it, with ``headers`` added."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), *(headers or [])],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
