"""Part 3: resident memory while verifying many distinct tokens.

Runs in a fresh subprocess so that nothing else (the other benchmarks, RSA keys,
PyJWT) is in the heap. Tokens are minted on the fly with Ed25519 (fast to sign and to
verify) and dropped after use, so what grows is the verifier: its verified-token cache
at the default size. Each token is verified twice, since the cache takes a token at its
second verification. RSS is read from /proc/self/status (VmRSS now, VmHWM peak; getrusage's
ru_maxrss where there is no /proc).

The tokens come from a third process, the minter, one per line on a pipe (the JWKS on
the first line): signing then runs on another core while this one verifies, which
takes a sixth off the part's run time, and the minter's own memory stays out of the
figures. The pipe's buffer keeps the minter a few dozen tokens ahead at most.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from asgi_auth0 import Auth0Config, StaticKeySet, TokenVerifier

from ._common import AUDIENCE, DOMAIN, auth0_payload, ed25519_signer


@dataclass
class Checkpoint:
    tokens: int
    rss_mib: float
    peak_mib: float
    cache_entries: int
    bytes_per_entry: int
    seconds: float


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _mint(total: int) -> None:
    """The minter: the JWKS on the first line, then ``total`` distinct tokens."""
    signer = ed25519_signer()
    now = time.time()
    out = sys.stdout
    out.write(json.dumps(signer.jwks) + "\n")
    for i in range(1, total + 1):
        out.write(signer.token(auth0_payload(i, now)) + "\n")
    out.flush()


def _child(total: int, every: int) -> None:
    minter = subprocess.Popen(
        [sys.executable, "-m", "bench._memory", "--mint", str(total)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert minter.stdout is not None
    tokens = minter.stdout
    config = Auth0Config(domain=DOMAIN, audience=AUDIENCE, algorithms=("EdDSA",))
    verifier = TokenVerifier(config, key_set=StaticKeySet(json.loads(tokens.readline())))
    # Close together while the cache fills, then evenly spaced once it is full.
    size = config.token_cache_size
    marks = {size // 4, size // 2, size, 2 * size, *range(every, total + 1, every), total}

    def emit(done: int, t0: float) -> None:
        info = verifier.cache_info()
        # VmHWM is this process's own peak; getrusage's ru_maxrss survives exec on Linux
        # (it would report the parent's peak), so it is only the fallback without /proc.
        peak_kib = _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(
            json.dumps(
                {
                    "tokens": done,
                    "rss_mib": _status_kib("VmRSS") / 1024,
                    "peak_mib": peak_kib / 1024,
                    "cache_entries": info["entries"],
                    "bytes_per_entry": info["approx_bytes_per_entry"],
                    "seconds": time.perf_counter() - t0,
                }
            ),
            flush=True,
        )

    async def main() -> None:
        verify = verifier.verify
        t0 = time.perf_counter()
        emit(0, t0)
        for i in range(1, total + 1):
            minted = tokens.readline()[:-1]
            # Twice: the cache takes a token at its second verification (each a new
            # string, as two requests bring), so every token here ends up cached.
            await verify(minted.encode("ascii").decode("ascii"))
            claims = await verify(minted)
            assert claims.sub == f"auth0|{i:024x}"
            if i in marks:
                emit(i, t0)

    asyncio.run(main())
    if minter.wait(timeout=60) != 0:
        raise RuntimeError(f"the minter failed with status {minter.returncode}")


def run(*, total: int = 200_000, every: int = 20_000) -> tuple[list[Checkpoint], int]:
    """Checkpoints, and the verifier's default cache size."""
    out = subprocess.run(
        [sys.executable, "-m", "bench._memory", "--child", str(total), str(every)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    points = [Checkpoint(**json.loads(line)) for line in out.stdout.splitlines() if line]
    default_size = Auth0Config(domain="x.auth0.com", audience="a").token_cache_size
    return points, default_size


def table(points: list[Checkpoint], cache_size: int) -> str:
    lines = [
        f"Verified-token cache at its default size ({cache_size} entries); "
        f"Ed25519 tokens, each distinct, each verified twice (cached at the second).",
        "",
        "| tokens verified | RSS MiB | peak RSS MiB | cache entries | ≈ bytes/entry | elapsed s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    full = next((p for p in points if p.tokens >= cache_size), None)
    for p in points:
        lines.append(
            f"| {p.tokens:,} | {p.rss_mib:.1f} | {p.peak_mib:.1f} | {p.cache_entries:,} | "
            f"{p.bytes_per_entry:,} | {p.seconds:.1f} |"
        )
    if full is not None:
        grown = (full.rss_mib - points[0].rss_mib) * 1024 * 1024 / cache_size
        later = max(p.rss_mib for p in points if p.tokens >= cache_size) - full.rss_mib
        lines += [
            "",
            f"RSS growth while filling the cache: ≈ {grown:,.0f} bytes per cached token "
            f"(whole process, measured); after it is full RSS moves by {later:+.1f} MiB "
            f"over the remaining {points[-1].tokens - full.tokens:,} tokens.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["--mint"]:
        _mint(int(sys.argv[2]))
    else:
        args: dict[str, Any] = {}
        print(table(*run(**args)))
