"""Part 2: the same FastAPI app under uvicorn, driven by wrk on 127.0.0.1.

Every mode of :mod:`bench._app` runs in its own uvicorn process (one worker; uvloop
and httptools when installed) at the same time; wrk then hits them in rotating order
for several rounds, so a noisy neighbour affects all rows alike. Each row reports the
median over rounds of requests/s, p50 and p99 latency. Every protected request carries
the same valid RS256 token (clients reuse access tokens), and every server checks it
before the run: 200 with the token, 401/403 without.

Besides wrk's figures each row reports the server's own CPU time per request (user
plus system time of the uvicorn process from ``/proc``, over the same runs). wrk's
requests/s move with whatever else the shared machine runs; CPU time per request moves
much less, so it shows the cost of each protection more steadily.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._common import LocalJWKS, auth0_payload, median, rsa_signer

_ROOT = Path(__file__).resolve().parent.parent

_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"socket_errors":%d,"non2xx":%d,'
    .. '"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(99)))
end
"""

ROWS = (
    ("open", "no auth"),
    ("noop_dep", "reference: no auth, one no-op Depends (FastAPI's cost of a dependency)"),
    ("ours", "asgi_auth0: Auth0Middleware + Depends(require_token)"),
    ("ours_closed", "asgi_auth0 fail-closed: Auth0Middleware(require_token=True), no Depends"),
    ("ours_nocache", "asgi_auth0, token cache off (full verify per request)"),
    ("pyjwk", "PyJWT: PyJWKClient + jwt.decode dependency"),
)


@dataclass
class HttpRow:
    mode: str
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: int  # wrk's connect, read, write and timeout errors, over all rounds
    non2xx: int  # responses that were not 2xx, over all rounds (a valid token: none)
    cpu_us: float  # the server's CPU time per request, median over rounds (0: unknown)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Server:
    """One uvicorn process serving one mode of the bench app."""

    def __init__(
        self,
        mode: str,
        issuer: str,
        jwks_uri: str,
        *,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        # prefix and env: bench.instructions runs the server under valgrind.
        self.mode = mode
        self.port = _free_port()
        command = [
            *prefix,
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench._app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        if importlib.util.find_spec("uvloop"):
            command += ["--loop", "uvloop"]
        if importlib.util.find_spec("httptools"):
            command += ["--http", "httptools"]
        environment = {
            **os.environ,
            **(env or {}),
            "BENCH_MODE": mode,
            "BENCH_ISSUER": issuer,
            "BENCH_JWKS_URI": jwks_uri,
            "PYTHONPATH": str(_ROOT),
        }
        self.process = subprocess.Popen(command, cwd=_ROOT, env=environment, text=True)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn ({self.mode}) exited with {self.process.returncode}")
            try:
                if _get(self.port, "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"uvicorn ({self.mode}) did not start within {timeout}s")

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server process so far (0.0 off Linux)."""
        try:
            with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        stop_process(self.process, 10)


def stop_process(process: subprocess.Popen[str], grace: float) -> None:
    """Terminate ``process``; kill it if it is still there after ``grace`` seconds."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _wrk(
    port: int, token: str | None, seconds: float, connections: int, lua: str
) -> dict[str, int]:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        lua,
    ]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    command.append(f"http://127.0.0.1:{port}/me")
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 30)
    last = [line for line in out.stdout.splitlines() if line.startswith("{")][-1]
    return json.loads(last)  # type: ignore[no-any-return]


def run(
    *, rounds: int = 3, seconds: float = 5, warmup: float = 1, connections: int = 16
) -> list[HttpRow] | str:
    """The rows, or a message saying why the HTTP benchmark was skipped."""
    if shutil.which("wrk") is None:
        return "skipped: wrk is not installed (apt-get install -y wrk)"
    signer = rsa_signer()
    with LocalJWKS(signer.jwks) as jwks, tempfile.TemporaryDirectory() as tmp:
        issuer = jwks.url.split("/.well-known/")[0] + "/"
        payload = auth0_payload(1, time.time())
        payload["iss"] = issuer
        token = signer.token(payload)
        lua = str(Path(tmp) / "report.lua")
        Path(lua).write_text(_LUA, encoding="utf-8")
        servers = {mode: Server(mode, issuer, jwks.url) for mode, _ in ROWS}
        try:
            for mode, server in servers.items():
                server.wait_ready()
                status, body = _get(server.port, "/me", token)
                unauthenticated = mode in ("open", "noop_dep")
                if status != 200 or (not unauthenticated and b"auth0|" not in body):
                    raise RuntimeError(f"{mode}: a valid token got {status} {body[:200]!r}")
                if not unauthenticated:
                    status, _ = _get(server.port, "/me")
                    if status not in (401, 403):
                        raise RuntimeError(f"{mode}: no token got {status}, not 401/403")
            for server in servers.values():  # warm-up: connections, caches, allocator
                _wrk(server.port, token, warmup, connections, lua)
            samples: dict[str, list[dict[str, int]]] = {mode: [] for mode, _ in ROWS}
            order = [mode for mode, _ in ROWS]
            for r in range(rounds):
                for mode in order[r % len(order) :] + order[: r % len(order)]:
                    server = servers[mode]
                    cpu_before = server.cpu_seconds()
                    result = _wrk(server.port, token, seconds, connections, lua)
                    cpu = server.cpu_seconds() - cpu_before
                    result["cpu_us_per_request"] = int(cpu * 1e6 / max(result["requests"], 1))
                    samples[mode].append(result)
            for mode, server in servers.items():
                # wrk only counts non-2xx answers; if there were any, show one.
                if any(x["non2xx"] for x in samples[mode]):
                    status, body = _get(server.port, "/me", token)
                    print(
                        f"{mode}: non-2xx answers under load; now {status} {body[:200]!r}",
                        file=sys.stderr,
                    )
        finally:
            for server in servers.values():
                server.stop()
    rows = []
    for mode, name in ROWS:
        s = samples[mode]
        rows.append(
            HttpRow(
                mode,
                name,
                median(x["requests"] / (x["duration_us"] / 1e6) for x in s),
                median(x["p50_us"] for x in s) / 1000,
                median(x["p99_us"] for x in s) / 1000,
                sum(x["socket_errors"] for x in s),
                sum(x["non2xx"] for x in s),
                median(x["cpu_us_per_request"] for x in s),
            )
        )
    return rows


def table(rows: list[HttpRow] | str, connections: int = 16) -> str:
    if isinstance(rows, str):
        return rows
    base = rows[0]
    lines = [
        f"wrk -t1 -c{connections}, GET /me, one uvicorn worker per app, all on 127.0.0.1.",
        "",
        "| app | requests/s | vs no auth | p50 ms | p99 ms | p99 vs no auth "
        "| errors: socket / non-2xx "
        "| server CPU µs/request | CPU vs no auth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cpu_ratio = f"{row.cpu_us / base.cpu_us:.2f}x" if base.cpu_us else "n/a"
        lines.append(
            f"| {row.name} | {row.rps:,.0f} | {row.rps / base.rps:.2f}x | {row.p50_ms:.2f} | "
            f"{row.p99_ms:.2f} | {row.p99_ms / base.p99_ms:.2f}x "
            f"| {row.socket_errors} / {row.non2xx} "
            f"| {row.cpu_us:.0f} | {cpu_ratio} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run()))
