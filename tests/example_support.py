"""Helpers for the tests of the example app and the README.

:func:`run_demo` runs ``python -m example_app`` as a real process, as ``make demo``
does. The demo binds its port before printing its banner, so once the banner is read the
URLs in it accept connections (they wait in the listen backlog until uvicorn's loop
is up). ``PORT=0`` makes it pick a free port; the banner says which.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

REPO = Path(__file__).resolve().parent.parent
BANNER_END = "Press Ctrl+C to stop."
_STARTUP_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


@dataclass
class Curl:
    """One curl command from the banner, reduced to what httpx needs."""

    line: str
    url: str
    headers: dict[str, str]


@dataclass
class Demo:
    """A running demo process and what its banner said."""

    process: subprocess.Popen[str]
    banner: list[str]
    base_url: str
    stderr_path: Path
    curls: list[Curl] = field(default_factory=list)
    swagger_token: str | None = None

    def curl(self, path: str, with_token: bool = True) -> Curl:
        """The banner's curl command for ``path`` (with or without a token)."""
        for curl in self.curls:
            if curl.url == self.base_url + path and bool(curl.headers) == with_token:
                return curl
        raise LookupError(f"no curl command for {path} in the banner")

    def token_for(self, path: str) -> str:
        """The bearer token the banner's curl command for ``path`` carries."""
        value = self.curl(path).headers["Authorization"]
        scheme, _, token = value.partition(" ")
        assert scheme == "Bearer"
        return token

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _parse_curl(line: str) -> Curl:
    words = shlex.split(line)
    assert words[0] == "curl", line
    headers: dict[str, str] = {}
    url = None
    i = 1
    while i < len(words):
        word = words[i]
        if word == "-H":
            name, _, value = words[i + 1].partition(":")
            headers[name.strip()] = value.strip()
            i += 2
            continue
        if not word.startswith("-"):
            url = word
        i += 1
    assert url is not None, line
    return Curl(line=line, url=url, headers=headers)


def _reader(stream: object, lines: queue.Queue[str | None]) -> None:
    # Drains stdout for the life of the process, so the child never blocks on a pipe.
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line.rstrip("\n"))
    lines.put(None)


def demo_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a fresh shell without any ``AUTH0_*`` setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH0_")}
    env.update({"PORT": "0", "HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


@contextmanager
def run_demo(tmp_path: Path, env: Mapping[str, str] | None = None) -> Iterator[Demo]:
    """Start the demo, read its banner, yield it; stop it with SIGTERM afterwards."""
    stderr_path = tmp_path / "demo-stderr.log"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "example_app"],
            cwd=REPO,
            env=dict(env if env is not None else demo_env()),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True).start()
    try:
        banner: list[str] = []
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not banner or banner[-1].strip() != BANNER_END:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    "the demo printed no banner in time:\n" + stderr_path.read_text()
                ) from None
            if line is None:
                raise AssertionError(
                    f"the demo exited ({process.wait()}) before its banner:\n"
                    + stderr_path.read_text()
                )
            banner.append(line)
        text = "\n".join(banner)
        match = re.search(r"^  API: +(http://\S+)$", text, re.MULTILINE)
        assert match, text
        demo = Demo(
            process=process, banner=banner, base_url=match.group(1), stderr_path=stderr_path
        )
        demo.curls = [
            _parse_curl(line.strip()) for line in banner if line.strip().startswith("curl ")
        ]
        for i, line in enumerate(banner):
            if "paste this token" in line:
                demo.swagger_token = banner[i + 2].strip()
        yield demo
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan as a server does (startup before the first request,
    shutdown after the last) and yield an httpx client calling it in-process."""
    to_app, app_inbox = anyio.create_memory_object_stream[dict[str, Any]](4)
    app_outbox, from_app = anyio.create_memory_object_stream[dict[str, Any]](4)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with to_app, app_inbox, app_outbox, from_app, anyio.create_task_group() as group:
        group.start_soon(app, scope, app_inbox.receive, app_outbox.send)
        await to_app.send({"type": "lifespan.startup"})
        assert (await from_app.receive())["type"] == "lifespan.startup.complete"
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                yield client
        finally:
            await to_app.send({"type": "lifespan.shutdown"})
            assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"
