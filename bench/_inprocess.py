"""Part 1: in-process verification cost per token, as a ratio to the raw RSA floor.

Every row verifies real RS256 tokens signed by one RSA-2048 key, with a realistic
Auth0 access-token payload. The floor is one raw ``cryptography`` verify of the same
signing input and signature (bytes precomputed, padding and hash objects reused).

Rows are timed in interleaved rounds (the row order rotates every round) so that a
noisy neighbour slows all rows alike. Time is the benchmark thread's CPU time
(``time.thread_time``): on a shared machine, time spent descheduled is not a cost of
verification. Each row's figure is the median over rounds of its per-token time; its
ratio is the median over rounds of (row time / floor time in the same round).

"Cold" is a steady state, as on a busy API: a long-lived verifier whose token cache
(default size) is already full is fed tokens it has never seen, fresh ones every
round, so every call verifies in full. A token enters the cache at its second
verification (TokenVerifier.verify), so a second row feeds the same verifier tokens it
has verified once before: each of those verifies in full, inserts and evicts.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from asgi_auth0 import JWKSCache, TokenVerifier, _speedups

from ._common import (
    AUDIENCE,
    ISSUER,
    LocalJWKS,
    auth0_payload,
    bench_config,
    median,
    rsa_signer,
    split_token,
)

_clock = time.thread_time

#: The floor's check done as our verifier does it for RS256 (not the target's floor).
FLOOR_RECOVER = "the same check by recover + SHA-256 + compare, as asgi_auth0 does it"
#: The reference row: what decoding and verifying costs with no checks at all.
BARE_MINIMUM = "reference: split, base64 x2, json.loads, RSA verify; no checks"
#: The row issue 7's cold target is about: a token the verifier has never seen.
COLD = "asgi_auth0 cold (a token never seen, cache full)"
COLD_INSERT = "asgi_auth0 cold, second sighting (cache insert + evict)"
COLD_PLAIN = "asgi_auth0 cold, without the speedups extra"
PYJWT_DECODE = "PyJWT jwt.decode, preloaded key"


@dataclass
class Row:
    name: str
    us: float  # median microseconds per token
    ratio: float  # median of per-round ratios to the floor
    spread: tuple[float, float]  # min and max per-token microseconds over rounds


def run(*, batch: int = 1500, rounds: int = 15, warm_calls: int = 20_000) -> list[Row]:
    signer = rsa_signer()
    assert isinstance(signer.key, rsa.RSAPrivateKey)
    public = signer.key.public_key()
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    pyjwt_key = jwt.PyJWK(signer.jwks["keys"][0]).key
    loop = asyncio.new_event_loop()
    server = LocalJWKS(signer.jwks).__enter__()
    # Our verifier gets its keys the way it does in production: a JWKSCache fetching
    # the issuer's JWKS over HTTP (here from 127.0.0.1), loaded once before timing.
    config = bench_config(server.url)
    key_set = JWKSCache.from_config(config)
    loop.run_until_complete(key_set.refresh())
    now = time.time()
    # The cache fillers (seen in the warm-up only), then a fresh slice of tokens for
    # every round: never seen by any verifier before that round.
    filled = config.token_cache_size + 500
    minted = signer.tokens([auth0_payload(i, now) for i in range(filled + (rounds + 1) * batch)])
    fill, fresh = minted[:filled], iter(minted[filled:])
    current: list[str] = []
    split: dict[str, tuple[bytes, bytes]] = {}

    def next_batch() -> None:
        # Every row's input is made here, at the start of the round: the tokens (new
        # string objects, as a server makes for each request) and the floor's bytes.
        # (Made long before, at minting, they sat colder in the CPU's caches than the
        # floor's, which cost our rows about 1 µs per token in memory traffic alone.)
        current[:] = [next(fresh).encode("ascii").decode("ascii") for _ in range(batch)]
        split.clear()
        split.update((t, split_token(t)) for t in current)

    def floor() -> float:
        verify = public.verify
        inputs = [split[t] for t in current]
        t0 = _clock()
        for signing_input, signature in inputs:
            verify(signature, signing_input, pkcs1, sha256)
        return (_clock() - t0) / len(inputs)

    recover = public.recover_data_from_signature
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420")

    def floor_recover() -> float:
        # The same RSA operation and padding check as the floor, by the route our
        # verifier takes for RS256: recover what follows the padding, compare it whole
        # with the expected DigestInfo and hash (and the signature's length, as ours does).
        inputs = [split[t] for t in current]
        sha = hashlib.sha256
        t0 = _clock()
        for signing_input, signature in inputs:
            if len(signature) != 256 or (
                recover(signature, pkcs1, None) != digest_info + sha(signing_input).digest()
            ):
                raise AssertionError("the floor's signature does not verify")
        return (_clock() - t0) / len(inputs)

    url_to_std = bytes.maketrans(b"-_", b"+/")

    def bare_minimum() -> float:
        # A reference, not a verifier: the work no Python JWT verifier can skip, with
        # none of the checks. Split, base64url-decode payload and signature, parse the
        # payload JSON, verify the signature (the header is taken as already known).
        verify, loads, a2b = public.verify, json.loads, binascii.a2b_base64
        toks = list(current)
        t0 = _clock()
        for t in toks:
            raw = t.encode()
            header, payload, sig = raw.split(b".")
            loads(a2b(payload.translate(url_to_std) + b"=" * (-len(payload) % 4)))
            signature = a2b(sig.translate(url_to_std) + b"=" * (-len(sig) % 4))
            verify(signature, raw[: len(header) + 1 + len(payload)], pkcs1, sha256)
        return (_clock() - t0) / len(toks)

    def in_loop(coro: Callable[[], Coroutine[Any, Any, float]]) -> Callable[[], float]:
        return lambda: loop.run_until_complete(coro())

    cold_verifier = TokenVerifier(config, key_set=key_set)
    insert_verifier = TokenVerifier(config, key_set=key_set)
    plain_verifier = TokenVerifier(config, key_set=key_set)
    nocache_verifier = TokenVerifier(
        bench_config(server.url, token_cache=False),
        key_set=key_set,
    )

    async def verify_batch(verifier: TokenVerifier) -> float:
        verify = verifier.verify
        toks = list(current)
        t0 = _clock()
        for t in toks:
            await verify(t)
        return (_clock() - t0) / len(toks)

    async def ours_cold() -> float:
        return await verify_batch(cold_verifier)

    async def ours_cold_insert() -> float:
        # Untimed: the first verification of each token, which only marks it as seen.
        # The filter is emptied first, so that none of these tokens shares a slot with
        # an earlier one (it would be cached now, and the timed pass would hit it).
        # With copies: a string keeps its hash once computed, and a request brings a
        # new string each time.
        insert_verifier._forget_seen()
        for t in current:
            await insert_verifier.verify(t.encode("ascii").decode("ascii"))
        return await verify_batch(insert_verifier)

    async def ours_cold_plain() -> float:
        # The same verifier code with the standard library's base64 and JSON.
        in_use = bool(_speedups.SPEEDUPS)
        _speedups.select(False)
        try:
            return await verify_batch(plain_verifier)
        finally:
            _speedups.select(in_use)

    async def ours_nocache() -> float:
        return await verify_batch(nocache_verifier)

    warm_verifier = TokenVerifier(config, key_set=key_set)
    warm_token = fill[0]

    async def ours_warm() -> float:
        verify = warm_verifier.verify
        await verify(warm_token)
        await verify(warm_token)  # the second verification puts it in the cache
        t0 = _clock()
        for _ in range(warm_calls):
            await verify(warm_token)
        return (_clock() - t0) / warm_calls

    def pyjwt_decode() -> float:
        decode = jwt.decode
        toks = list(current)
        t0 = _clock()
        for t in toks:
            decode(t, pyjwt_key, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)
        return (_clock() - t0) / len(toks)

    try:
        client = jwt.PyJWKClient(server.url)

        def pyjwk_client() -> float:
            decode = jwt.decode
            toks = list(current)
            t0 = _clock()
            for t in toks:
                key = client.get_signing_key_from_jwt(t)
                decode(t, key.key, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)
            return (_clock() - t0) / len(toks)

        rows: list[tuple[str, Callable[[], float]]] = [
            ("floor: raw RSA-2048 PKCS#1 v1.5 SHA-256 verify", floor),
            (FLOOR_RECOVER, floor_recover),
            (BARE_MINIMUM, bare_minimum),
            (COLD, in_loop(ours_cold)),
            (COLD_INSERT, in_loop(ours_cold_insert)),
            (COLD_PLAIN, in_loop(ours_cold_plain)),
            ("asgi_auth0 cold, token cache off", in_loop(ours_nocache)),
            ("asgi_auth0 warm (repeated token, cache hit)", in_loop(ours_warm)),
            (PYJWT_DECODE, pyjwt_decode),
            ("PyJWT PyJWKClient + jwt.decode", pyjwk_client),
        ]
        # Warm-up: imports, the PyJWKClient fetch, and our verifiers' caches filled (a
        # token enters at its second verification).
        for verifier in (cold_verifier, insert_verifier, plain_verifier):
            for t in fill + fill:
                loop.run_until_complete(verifier.verify(t))
            assert verifier.cache_info()["entries"] == config.token_cache_size
        next_batch()
        for _, fn in rows:
            fn()
        samples: dict[str, list[float]] = {name: [] for name, _ in rows}
        for r in range(rounds):
            # Each round a fresh slice, never seen by any verifier, the same for every
            # row (the second-sighting row verifies it once, untimed, first).
            next_batch()
            order = rows[r % len(rows) :] + rows[: r % len(rows)]
            for name, fn in order:
                samples[name].append(fn())
    finally:
        loop.run_until_complete(key_set.aclose())
        loop.close()
        server.__exit__()

    floor_samples = samples[rows[0][0]]
    result = []
    for name, _ in rows:
        s = samples[name]
        ratio = median(x / f for x, f in zip(s, floor_samples, strict=True))
        result.append(Row(name, median(s) * 1e6, ratio, (min(s) * 1e6, max(s) * 1e6)))
    return result


def table(rows: list[Row]) -> str:
    lines = [
        "| row | µs / token (median) | ratio to floor | min-max µs |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.us:.2f} | {row.ratio:.2f}x | "
            f"{row.spread[0]:.2f}-{row.spread[1]:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run()))
