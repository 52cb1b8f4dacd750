"""Real servers for end-to-end scenario tests, and the tools to measure them.

``scenario_server(settings, log_path)`` runs ``_scenario_app.py`` under uvicorn in a
process of its own, on a socket the test binds to 127.0.0.1 and hands down, and stops
it gracefully (SIGTERM, bounded in time) at the end. A separate process, rather than a
thread of the test process like ``test_e2e_uvicorn.py``'s server, because a loop-lag
figure taken in a thread measures the test's own clients too: they share the GIL, and
a burst of 200 responses being parsed stalls the server's loop by tens of ms that are
not the server's.

``uvicorn_in_thread(app, stack)`` is the lighter form the other end-to-end tests use:
uvicorn in a thread of the test process, on a socket already listening.

``LoopLagProbe`` runs inside the app (started from its lifespan) and records by how
much a short sleep overshoots, so a loop blocked by synchronous work shows directly.
``ClientPool`` spreads concurrent requests over several ``httpx.AsyncClient`` pools:
one pool holding 200 idle keep-alive connections costs httpcore seconds of CPU per
burst (its connection scan is quadratic), which would be measured as server latency.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import uvicorn

__all__ = [
    "ClientPool",
    "LoopLagProbe",
    "ScenarioServer",
    "Threaded",
    "percentile",
    "scenario_server",
    "uvicorn_in_thread",
]

_APP = Path(__file__).resolve().parent / "_scenario_app.py"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0
#: Written by the scenario app once its lifespan shutdown has completed.
SHUTDOWN_MARK = "scenario-app: shutdown complete"


class LoopLagProbe:
    """Sleeps ``interval`` seconds over and over in the loop it runs in and records by
    how much each wake-up was late. Thread-safe to read from another thread.

    Start it in the app's lifespan (``await task_group.start(probe.run)``) so it lives
    in the server's loop for the server's whole life.
    """

    def __init__(self, interval: float = 0.010) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._max = 0.0
        self._samples = 0
        self._late = 0
        self._running = False

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The probe loop; runs until cancelled."""
        self._running = True
        task_status.started()
        try:
            while True:
                start = time.perf_counter()
                await anyio.sleep(self.interval)
                lag = max(0.0, time.perf_counter() - start - self.interval)
                with self._lock:
                    self._samples += 1
                    self._max = max(self._max, lag)
                    if lag > 0.020:
                        self._late += 1
        finally:
            self._running = False

    def snapshot(self, *, reset: bool = False) -> dict[str, Any]:
        """``max_ms``, ``samples`` and ``late_over_20ms`` since the start or last reset."""
        with self._lock:
            data = {
                "max_ms": round(self._max * 1000, 2),
                "samples": self._samples,
                "late_over_20ms": self._late,
                "running": self._running,
            }
            if reset:
                self._max, self._samples, self._late = 0.0, 0, 0
        return data


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (``fraction`` in (0, 1])."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


@dataclass
class Reply:
    """One timed request: status, headers, JSON body (or None) and seconds taken."""

    status: int
    headers: httpx.Headers
    body: Any
    elapsed: float


class ClientPool:
    """``size`` concurrent connections to ``base_url``, as ``size // per_client``
    ``httpx.AsyncClient`` pools of ``per_client`` connections used in turn."""

    def __init__(
        self, base_url: str, *, size: int = 200, per_client: int = 10, timeout: float = 15
    ) -> None:
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        self.clients = [
            httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)
            for _ in range(max(1, size // per_client))
        ]
        self._next = itertools.cycle(self.clients)

    async def get(self, path: str, token: str | None = None) -> Reply:
        """GET ``path`` (with ``token`` as a bearer token), timed."""
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        client = next(self._next)
        start = time.perf_counter()
        response = await client.get(path, headers=headers)
        elapsed = time.perf_counter() - start
        try:
            body = response.json()
        except ValueError:
            body = None
        return Reply(response.status_code, response.headers, body, elapsed)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


@dataclass
class ScenarioServer:
    """A running scenario app; the control methods use its test-only routes."""

    url: str
    port: int
    process: anyio.abc.Process
    log_path: Path
    control: httpx.AsyncClient
    stopped_cleanly: bool = field(default=False)

    async def loop_lag(self, *, reset: bool = False) -> dict[str, Any]:
        """The probe's figures since the start or the last reset."""
        r = await self.control.get("/_test/loop-lag", params={"reset": "1" if reset else "0"})
        data: dict[str, Any] = r.json()
        return data

    async def status(self) -> dict[str, Any]:
        """``{"cache": JWKSCache.status(), "events": {name: count}}``."""
        data: dict[str, Any] = (await self.control.get("/_test/status")).json()
        return data

    async def events(self, since: int = 0) -> list[list[Any]]:
        """Recorded cache events ``[monotonic_time, name, info]``."""
        data: list[list[Any]] = (
            await self.control.get("/_test/events", params={"since": since})
        ).json()
        return data

    async def wait_event(self, name: str, count: int = 1, timeout: float = 10) -> int:
        """Wait (server side, on an event) until ``name`` was recorded ``count`` times."""
        r = await self.control.get(
            "/_test/wait",
            params={"name": name, "count": count, "timeout": timeout},
            timeout=timeout + 5,
        )
        data = r.json()
        if not data["ok"]:
            raise TimeoutError(f"{name} seen {data['count']} times after {timeout} s, not {count}")
        return int(data["count"])

    async def wait_inflight(self, count: int, timeout: float = 10) -> None:
        """Wait until ``count`` requests to ``/me`` are inside the app at once."""
        r = await self.control.get(
            "/_test/wait-inflight", params={"count": count, "timeout": timeout}, timeout=timeout + 5
        )
        data = r.json()
        if not data["ok"]:
            raise TimeoutError(f"{data['count']} requests in flight after {timeout} s, not {count}")

    async def advance_clock(self, seconds: float) -> None:
        """Move the cache's policy clock forward."""
        r = await self.control.post("/_test/clock", params={"advance": seconds})
        r.raise_for_status()

    def log(self) -> str:
        """What the server process wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    # Connections queue here until uvicorn's loop accepts them (after lifespan
    # startup); bursts of a few hundred clients must not wait for SYN retransmits.
    sock.listen(1024)
    return sock


@dataclass(frozen=True)
class Threaded:
    """Where a :func:`uvicorn_in_thread` server listens."""

    url: str
    ws_url: str
    port: int


@contextlib.contextmanager
def uvicorn_in_thread(app: Any, stack: Mapping[str, str], **options: Any) -> Iterator[Threaded]:
    """Run ``app`` under uvicorn on ``stack`` (its ``http`` and ``loop``; ``options``
    for its Config) in a thread of this process, for the block.

    Ready once ``GET /public`` answers 200 (startup, key warm-up included, is over);
    stopped, bounded in time, after the block.
    """
    sock = _listening_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        http=stack["http"],
        loop=stack["loop"],
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/public").status_code == 200
        # The stack asked for is the one serving.
        assert config.http_protocol_class.__name__.lower().startswith(stack["http"])
        assert type(server.servers[0].get_loop()).__module__.split(".")[0] == stack["loop"]
        yield Threaded(url=url, ws_url=f"ws://127.0.0.1:{port}", port=port)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


@contextlib.asynccontextmanager
async def scenario_server(
    settings: Mapping[str, Any], log_path: Path
) -> AsyncIterator[ScenarioServer]:
    """Run the scenario app (see ``_scenario_app.py`` for ``settings``) for the block."""
    sock = _listening_socket()
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log_file:
        try:
            process = await anyio.open_process(
                [sys.executable, str(_APP), json.dumps({**settings, "fd": sock.fileno()})],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                pass_fds=(sock.fileno(),),
            )
        finally:
            # The child holds its own copy; without ours, a child that died refuses
            # connections at once instead of leaving them queued.
            sock.close()
    control = httpx.AsyncClient(base_url=url, timeout=20)
    server = ScenarioServer(url, port, process, log_path, control)
    try:
        await _wait_until_ready(server)
        yield server
    finally:
        with anyio.CancelScope(shield=True):
            await control.aclose()
            await _stop(server)


async def _wait_until_ready(server: ScenarioServer) -> None:
    # A request is answered only once uvicorn accepts, i.e. after lifespan startup.
    ready = False

    async def ask(group: anyio.abc.TaskGroup) -> None:
        nonlocal ready
        with contextlib.suppress(httpx.TransportError):
            await server.control.get("/_test/status", timeout=_START_TIMEOUT)
            ready = True
        group.cancel_scope.cancel()

    async def watch(group: anyio.abc.TaskGroup) -> None:
        await server.process.wait()
        group.cancel_scope.cancel()

    with anyio.move_on_after(_START_TIMEOUT):
        async with anyio.create_task_group() as group:
            group.start_soon(ask, group)
            group.start_soon(watch, group)
    if not ready:
        raise RuntimeError(f"the scenario server did not start:\n{server.log()[-4000:]}")


async def _stop(server: ScenarioServer) -> None:
    process = server.process
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(_STOP_TIMEOUT):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    await process.aclose()
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully. Any
    # traceback (an application error, a failed lifespan) makes the stop unclean.
    log = server.log()
    server.stopped_cleanly = (
        process.returncode in (0, -signal.SIGTERM)
        and SHUTDOWN_MARK in log
        and "Traceback" not in log
    )
