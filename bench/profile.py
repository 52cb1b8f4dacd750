"""``python -m bench.profile ROW``: one in-process row in a long loop, for a profiler.

    python -m bench.profile cold              # µs per token over 200,000 tokens
    python -m bench.profile cold --perf       # the same under ``perf record``, then
                                              # where the time went, by library

Rows: ``floor`` (the raw RSA verify), ``reference`` (split, base64, json.loads and
the verify, no checks), ``cold`` (our verifier, token cache full, every token new to
it), ``insert`` (the same verifier on tokens it has verified once: each enters the
cache) and ``nocache`` (``token_cache_size=0``), as in ``bench/_inprocess.py``. (Here
the tokens come round again: ``cold`` clears the cache between rounds, and a string
keeps its hash, so the rows leave out hashing the token.)

``--perf`` attaches ``perf record`` (Debian's ``linux-perf``) to this process only
after the tokens are minted, so signing them is not in the profile, and prints each
shared library's share of the samples as microseconds per token. It answers "where
do the microseconds above the floor go": the RSA verify in ``cryptography``, the
interpreter, ``binascii``'s base64 decoder, the JSON scanner.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from asgi_auth0 import JWKSCache, TokenVerifier

from ._common import LocalJWKS, auth0_payload, bench_config, rsa_signer, split_token

ROWS = ("floor", "reference", "cold", "insert", "nocache")


def _loop(row: str, tokens: int) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A function running ``row`` over n tokens, and one that cleans up."""
    signer = rsa_signer()
    assert isinstance(signer.key, rsa.RSAPrivateKey)
    now = time.time()
    server = LocalJWKS(signer.jwks).__enter__()
    config = bench_config(server.url, token_cache=row != "nocache")
    # A pool larger than the cache, walked in order: every token is new to it.
    pool = [signer.token(auth0_payload(i, now)) for i in range(config.token_cache_size + 500)]
    loop = asyncio.new_event_loop()
    key_set = JWKSCache.from_config(config)
    loop.run_until_complete(key_set.refresh())

    def close() -> None:
        loop.run_until_complete(key_set.aclose())
        loop.close()
        server.__exit__()

    if row in ("cold", "insert", "nocache"):
        verifier = TokenVerifier(config, key_set=key_set)

        async def ours(n: int) -> None:
            verify = verifier.verify
            while n > 0:
                if row == "cold":
                    # Each token new again: no insert (and no hit on the few that a
                    # shared filter slot let in early).
                    verifier.clear_cache()
                for token in pool[:n]:
                    await verify(token)
                n -= len(pool)

        return lambda n: loop.run_until_complete(ours(n)), close

    public = jwt.PyJWK(signer.jwks["keys"][0]).key
    verify = public.verify
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    if row == "floor":
        inputs = [split_token(t) for t in pool]

        def floor(n: int) -> None:
            for signing_input, signature in itertools.islice(itertools.cycle(inputs), n):
                verify(signature, signing_input, pkcs1, sha256)

        return floor, close

    url_to_std = bytes.maketrans(b"-_", b"+/")
    loads, a2b = json.loads, binascii.a2b_base64

    def reference(n: int) -> None:
        for token in itertools.islice(itertools.cycle(pool), n):
            raw = token.encode()
            header, payload, sig = raw.split(b".")
            loads(a2b(payload.translate(url_to_std) + b"=" * (-len(payload) % 4)))
            signature = a2b(sig.translate(url_to_std) + b"=" * (-len(sig) % 4))
            verify(signature, raw[: len(header) + 1 + len(payload)], pkcs1, sha256)

    return reference, close


def _by_library(data: str) -> list[tuple[float, str]]:
    """Each shared object's share of the samples, from ``perf report``."""
    report = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--sort", "dso", "--stdio", "-g", "none"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shares = []
    for line in report.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].endswith("%"):
            shares.append((float(parts[0].rstrip("%")), parts[1]))
    return shares


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("row", choices=ROWS)
    parser.add_argument("--tokens", type=int, default=200_000, help="how many to verify")
    parser.add_argument("--perf", action="store_true", help="profile the loop with perf")
    args = parser.parse_args(argv)
    if args.perf and shutil.which("perf") is None:
        parser.error("--perf needs perf (apt-get install -y linux-perf)")
    run, close = _loop(args.row, args.tokens)
    try:
        run(5_000)  # warm-up: the token cache fills, the allocator settles
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "perf.data")
            recorder = None
            if args.perf:
                recorder = subprocess.Popen(
                    ["perf", "record", "-q", "-F", "2000", "-o", data, "-p", str(os.getpid())],
                    stdout=subprocess.DEVNULL,
                )
                time.sleep(1)  # perf attaches asynchronously
            started = time.thread_time()
            run(args.tokens)
            us = (time.thread_time() - started) / args.tokens * 1e6
            print(f"{args.row}: {us:.2f} µs per token over {args.tokens:,} tokens")
            if recorder is not None:
                recorder.send_signal(signal.SIGINT)
                recorder.wait(60)
                print("| library | share of samples | ≈ µs per token |")
                print("|---|---:|---:|")
                for share, library in _by_library(data):
                    if share >= 0.5:
                        print(f"| {library} | {share:.1f}% | {us * share / 100:.1f} |")
    finally:
        close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
