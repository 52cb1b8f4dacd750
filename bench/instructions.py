"""``python -m bench.instructions``: instructions per request and per token, counted
by valgrind, where the other benchmarks measure time.

    python -m bench.instructions              # both parts, about 4 minutes
    python -m bench.instructions --only http  # or: inprocess

Timings on a shared machine move by several percent from run to run; instruction
counts do not. Each case runs in its own process under valgrind's callgrind: the
counters are zeroed once the process is set up and warm, and read after a fixed
number of requests (HTTP: the bench app under uvicorn, as in part 2 of
``python -m bench``, one keep-alive connection) or tokens (in-process: the rows of
part 1, every token a fresh string, the same tokens in every process). Two runs on
one machine agree to about 0.1%.

Instructions are not time. Python code runs fewer instructions per clock cycle than
OpenSSL's big-number arithmetic or uvicorn's C parts, so a ratio of instructions
comes out closer to 1 than the same ratio of time, by an amount that depends on the
CPU. Use these counts to compare two versions of the code on one machine without the
noise, and the timed benchmarks for the targets. Kernel time (the sockets) is not
counted either. Needs valgrind (``apt-get install -y valgrind``). Valgrind does not
emulate AVX-512, so under it OpenSSL takes its AVX2 code even on a CPU that has
AVX-512: the floor's count is that code's.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import glob
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ._common import LocalJWKS, Signer, auth0_payload, bench_config, split_token
from ._http import Server, stop_process

PARTS = ("inprocess", "http")
HTTP_MODES = (
    ("open", "no auth"),
    ("noop_dep", "reference: no auth, one no-op Depends"),
    ("ours", "asgi_auth0: Auth0Middleware + Depends(require_token)"),
    ("ours_closed", "asgi_auth0 fail-closed: Auth0Middleware(require_token=True)"),
)
ROWS = (
    ("floor", "floor: raw RSA-2048 verify"),
    ("reference", "reference: split, base64 x2, json.loads, RSA verify; no checks"),
    ("cold", "asgi_auth0 cold (a token never seen)"),
    ("nocache", "asgi_auth0 cold, token cache off"),
    ("warm", "asgi_auth0 warm (a cached token, as a fresh string)"),
)
# A fixed time for the tokens and the verifier's clock: the same tokens in every run.
_NOW = 1_764_000_000


def _prefix(out: str) -> list[str]:
    return ["valgrind", "--quiet", "--tool=callgrind", f"--callgrind-out-file={out}"]


class _Counted:
    """A process under callgrind (started with ``_prefix(out)``) whose counters the
    caller zeroes and reads."""

    def __init__(self, out: str, process: subprocess.Popen[str]) -> None:
        self.out = out
        self.process = process

    def zero(self) -> None:
        self._control("-z")

    def read(self) -> int:
        """Instructions since zero(), from a dump taken now."""
        before = set(glob.glob(self.out + ".*"))
        self._control("-d")
        for _ in range(100):
            new = set(glob.glob(self.out + ".*")) - before
            if new:
                text = Path(new.pop()).read_text(encoding="ascii", errors="replace")
                for line in text.splitlines():
                    if line.startswith(("summary:", "totals:")):
                        return int(line.split()[1])
            time.sleep(0.1)
        raise RuntimeError("callgrind wrote no dump")

    def _control(self, flag: str) -> None:
        subprocess.run(
            ["callgrind_control", flag, str(self.process.pid)],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def stop(self) -> None:
        stop_process(self.process, 60)  # valgrind writes its last dump on the way out


def _request(conn: http.client.HTTPConnection, token: str) -> int:
    conn.request("GET", "/me", headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    response.read()
    return response.status


def http_part(signer: Signer, directory: str, requests: int) -> list[tuple[str, float]]:
    """Instructions per request of each app (uvicorn, the app, and asgi_auth0)."""
    results = []
    with LocalJWKS(signer.jwks) as jwks:
        issuer = jwks.url.split("/.well-known/")[0] + "/"
        payload = auth0_payload(1, time.time())
        payload["iss"] = issuer
        token = signer.token(payload)
        for mode, name in HTTP_MODES:
            print(f"  {name} ...", file=sys.stderr, flush=True)
            out = os.path.join(directory, f"callgrind.{mode}")
            server = Server(
                mode, issuer, jwks.url, prefix=_prefix(out), env={"PYTHONHASHSEED": "0"}
            )
            counted = _Counted(out, server.process)
            try:
                server.wait_ready(timeout=600)  # start-up under valgrind takes a while
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                for _ in range(300):  # warm: connection, caches, the token verified
                    if _request(conn, token) != 200:
                        raise RuntimeError(f"{mode}: a valid token was not answered 200")
                counted.zero()
                answers = [_request(conn, token) for _ in range(requests)]
                results.append((name, counted.read() / requests))
                if set(answers) != {200}:
                    raise RuntimeError(f"{mode}: answers other than 200: {set(answers)}")
                conn.close()
            finally:
                server.stop()
    return results


def _child(row: str, tokens_file: str, key_file: str) -> None:
    """One row, in the process callgrind watches (see inprocess_part)."""
    import gc  # noqa: PLC0415 - the child only

    import jwt  # noqa: PLC0415 - the bench extra

    from asgi_auth0 import JWKSCache, TokenVerifier  # noqa: PLC0415

    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signer = Signer(key, "RS256")
    stored = json.loads(Path(tokens_file).read_text(encoding="ascii"))
    # Fresh string objects, as a server makes per request: none has its hash yet.
    tokens = [t.encode().decode() for t in stored["tokens"]]
    server = LocalJWKS(signer.jwks).__enter__()
    config = bench_config(server.url, token_cache=row != "nocache")
    loop = asyncio.new_event_loop()
    key_set = JWKSCache.from_config(config)
    loop.run_until_complete(key_set.refresh())
    server.__exit__()  # no other thread while counting
    verifier = TokenVerifier(config, key_set=key_set, clock=lambda: _NOW + 10.0)
    public = jwt.PyJWK(signer.jwks["keys"][0]).key
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    url_to_std = bytes.maketrans(b"-_", b"+/")
    run: Callable[[], None]
    if row == "floor":
        inputs = [split_token(t) for t in tokens]

        def run() -> None:
            for signing_input, signature in inputs:
                public.verify(signature, signing_input, pkcs1, sha256)

    elif row == "reference":

        def run() -> None:
            for token in tokens:
                raw = token.encode()
                header, body, sig = raw.split(b".")
                json.loads(
                    binascii.a2b_base64(body.translate(url_to_std) + b"=" * (-len(body) % 4))
                )
                signature = binascii.a2b_base64(sig.translate(url_to_std) + b"=" * (-len(sig) % 4))
                public.verify(signature, raw[: len(header) + 1 + len(body)], pkcs1, sha256)

    else:
        if row == "warm":
            for token in stored["warm"] * 2:  # cached from its second verification
                loop.run_until_complete(verifier.verify(token))
            tokens = [t.encode().decode() for t in stored["warm"] * len(tokens)]

        async def verify_all() -> None:
            verify = verifier.verify
            for token in tokens:
                await verify(token)

        def run() -> None:
            loop.run_until_complete(verify_all())

    gc.collect()
    gc.disable()  # a collection would land in one row's count and not another's
    print("ready", flush=True)
    sys.stdin.readline()
    run()
    print("done", flush=True)
    sys.stdin.readline()


def inprocess_part(signer: Signer, directory: str, count: int) -> list[tuple[str, float]]:
    """Instructions per token of each row, over ``count`` tokens."""
    key_file = os.path.join(directory, "key.pem")
    assert isinstance(signer.key, rsa.RSAPrivateKey)
    Path(key_file).write_bytes(
        signer.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tokens_file = os.path.join(directory, "tokens.json")
    tokens = [signer.token(auth0_payload(i, _NOW)) for i in range(count + 1)]
    Path(tokens_file).write_text(
        json.dumps({"tokens": tokens[1:], "warm": tokens[:1]}), encoding="ascii"
    )
    root = Path(__file__).resolve().parent.parent
    results = []
    for row, name in ROWS:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        command = [
            sys.executable,
            "-m",
            "bench.instructions",
            "--child",
            row,
            tokens_file,
            key_file,
        ]
        out = os.path.join(directory, f"callgrind.{row}")
        process = subprocess.Popen(
            [*_prefix(out), *command],
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(root)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        counted = _Counted(out, process)
        stdin, stdout = counted.process.stdin, counted.process.stdout
        assert stdin is not None
        assert stdout is not None
        try:
            if stdout.readline().strip() != "ready":
                raise RuntimeError(f"{row}: the child did not start")
            counted.zero()
            stdin.write("\n")
            stdin.flush()
            if stdout.readline().strip() != "done":
                raise RuntimeError(f"{row}: the child failed")
            results.append((name, counted.read() / count))
            stdin.write("\n")
            stdin.flush()
            counted.process.wait(120)
        finally:
            counted.stop()
    return results


def _table(rows: list[tuple[str, float]], unit: str) -> str:
    base = rows[0][1]
    lines = [f"| {unit} | instructions | ratio to {rows[0][0].split(':')[0]} |", "|---|---:|---:|"]
    lines += [f"| {name} | {count:,.0f} | {count / base:.3f}x |" for name, count in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for and print their tables (Markdown) on stdout."""
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    parser.add_argument("--requests", type=int, default=2000, help="HTTP requests per app")
    parser.add_argument("--tokens", type=int, default=1000, help="tokens per in-process row")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("needs valgrind (apt-get install -y valgrind)")
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if set(parts) - set(PARTS):
        parser.error(f"parts are {', '.join(PARTS)}")
    signer = Signer(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")
    with tempfile.TemporaryDirectory() as directory:
        if "inprocess" in parts:
            print("in-process, per token:", file=sys.stderr, flush=True)
            rows = inprocess_part(signer, directory, args.tokens)
            print(f"\n### Instructions per token ({args.tokens:,} tokens)\n")
            print(_table(rows, "row"))
        if "http" in parts:
            print("HTTP, per request:", file=sys.stderr, flush=True)
            rows = http_part(signer, directory, args.requests)
            print(f"\n### Server instructions per request ({args.requests:,} requests)\n")
            print(_table(rows, "app"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
