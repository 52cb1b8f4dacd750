"""The application the resilience scenarios run under uvicorn, in a process of its own.

Started by ``tests/_servers.py:ScenarioServer`` as ``python _scenario_app.py SETTINGS``
with an inherited listening socket (fd ``SETTINGS["fd"]``, bound to 127.0.0.1 by the
test). A separate process, so that the server's event loop shares no GIL with the
test's clients and its loop-lag figures are its own.

It is a minimal ASGI app behind ``Auth0Middleware`` (the library is what is under
test, so the endpoint is as cheap as an endpoint gets), whose verifier uses a
``JWKSCache`` built from the settings with an adjustable clock and an event recorder,
and whose background refresher runs for the lifespan (``background_refresh=True``).
Routes:

``GET /me``
    ``200 {"sub": ...}`` for a valid token, ``401`` without one; every rejection is
    the middleware's own (401/503).
``GET /_test/loop-lag[?reset=1]``
    The :class:`LoopLagProbe` started by the lifespan: max lag and samples, and which
    event loop the server runs (``server_loop``).
``GET /_test/status``
    ``JWKSCache.status()`` and per-event counts.
``GET /_test/events[?since=N]``
    Recorded cache events ``[monotonic_time, name, info]``.
``GET /_test/wait?name=...&count=N&timeout=S``
    Waits (on an event, not by polling) until ``name`` was seen ``N`` times.
``GET /_test/wait-inflight?count=N&timeout=S``
    Waits until ``N`` requests to ``/me`` are inside the middleware at once (they
    reach the key lookup without suspending, so this means "all waiting on it").
``GET /_test/block?seconds=S``
    Blocks the event loop with a synchronous sleep: shows the probe sees it.
``POST /_test/clock?advance=S``
    Moves the cache's policy clock forward ``S`` seconds (TTL, cooldown, backoff and
    ``max_stale`` run on it; real time still flows underneath).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import time
from collections import Counter
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import anyio
import uvicorn

# Run as a script: its own directory (tests/) is on sys.path.
from _servers import SHUTDOWN_MARK, LoopLagProbe

from asgi_auth0._config import Auth0Config
from asgi_auth0._jwks import JWKSCache
from asgi_auth0._middleware import Auth0Middleware, auth_state
from asgi_auth0._verify import TokenVerifier

Scope = MutableMapping[str, Any]


class OffsetClock:
    """``time.monotonic()`` plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class Gauge:
    """Requests to ``/me`` under way; waiters wake when it reaches their count."""

    def __init__(self) -> None:
        self.value = 0
        self._changed: anyio.Event | None = None

    def add(self, delta: int) -> None:
        self.value += delta
        if self._changed is not None:
            self._changed.set()

    async def wait(self, count: int, timeout: float) -> bool:
        with anyio.move_on_after(timeout):
            while self.value < count:
                self._changed = anyio.Event()
                await self._changed.wait()
        return self.value >= count


class Recorder:
    """The cache's ``on_event`` hook: keeps every event, wakes waiters."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.counts: Counter[str] = Counter()
        self._changed: anyio.Event | None = None

    def __call__(self, name: str, info: Mapping[str, Any]) -> None:
        key = name if name != "unknown_kid" else f"unknown_kid:{info.get('action')}"
        safe = {k: v for k, v in info.items() if k != "kid"}
        self.events.append((time.monotonic(), name, safe))
        self.counts[name] += 1
        if key != name:
            self.counts[key] += 1
        if self._changed is not None:
            self._changed.set()

    async def wait(self, name: str, count: int, timeout: float) -> bool:
        with anyio.move_on_after(timeout):
            while self.counts[name] < count:
                self._changed = anyio.Event()
                await self._changed.wait()
        return self.counts[name] >= count


def build(settings: Mapping[str, Any]) -> Any:
    config = Auth0Config(**settings["config"])
    clock = OffsetClock()
    recorder = Recorder()
    probe = LoopLagProbe()
    cache = JWKSCache.from_config(config, clock=clock, on_event=recorder, **settings["cache"])
    verifier = TokenVerifier(config, key_set=cache)

    async def respond(send: Any, status: int, document: object) -> None:
        body = json.dumps(document).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def lifespan(receive: Any, send: Any) -> None:
        group = anyio.create_task_group()
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await group.__aenter__()
        await group.start(probe.run)
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        group.cancel_scope.cancel()
        await group.__aexit__(None, None, None)
        # The middleware stopped the refresher when shutdown began; the key source
        # was passed in, so closing it is ours.
        await cache.aclose()
        print(SHUTDOWN_MARK, file=sys.stderr, flush=True)
        await send({"type": "lifespan.shutdown.complete"})

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        if path == "/me":
            claims, _ = auth_state(scope)
            if claims is None:
                await respond(send, 401, {"error": "anonymous"})
            else:
                await respond(send, 200, {"sub": claims.sub})
        elif path == "/_test/loop-lag":
            # Which event loop uvicorn chose (uvloop when installed): part of the figure.
            loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
            snapshot = probe.snapshot(reset=query.get("reset") == "1")
            await respond(send, 200, {**snapshot, "server_loop": loop})
        elif path == "/_test/status":
            counts = dict(recorder.counts)
            await respond(send, 200, {"cache": cache.status().as_dict(), "events": counts})
        elif path == "/_test/events":
            await respond(send, 200, recorder.events[int(query.get("since", "0")) :])
        elif path == "/_test/wait":
            ok = await recorder.wait(
                query["name"], int(query.get("count", "1")), float(query.get("timeout", "5"))
            )
            await respond(send, 200, {"ok": ok, "count": recorder.counts[query["name"]]})
        elif path == "/_test/wait-inflight":
            ok = await inflight.wait(int(query["count"]), float(query.get("timeout", "5")))
            await respond(send, 200, {"ok": ok, "count": inflight.value})
        elif path == "/_test/block":
            time.sleep(float(query["seconds"]))  # deliberately blocking: probe self-test
            await respond(send, 200, {"blocked": float(query["seconds"])})
        elif path == "/_test/clock" and scope["method"] == "POST":
            clock.offset += float(query["advance"])
            await respond(send, 200, {"offset": clock.offset})
        else:
            await respond(send, 404, {"error": "not_found"})

    protected = Auth0Middleware(
        app,
        verifier=verifier,
        background_refresh=settings.get("background_refresh", True),
        warm_keys_on_startup=settings.get("warm_keys_on_startup", True),
    )
    inflight = Gauge()

    async def outer(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/me":
            await protected(scope, receive, send)
            return
        inflight.add(1)
        try:
            await protected(scope, receive, send)
        finally:
            inflight.add(-1)

    return outer


def main() -> None:
    settings = json.loads(sys.argv[1])
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    sock = socket.socket(fileno=settings["fd"])
    config = uvicorn.Config(
        build(settings),
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
