"""Model-based (stateful) tests of ``JWKSCache`` and the verifier's token cache on top.

A hypothesis :class:`RuleBasedStateMachine` drives one ``JWKSCache`` (fake monotonic
clock, no jitter) and one ``TokenVerifier`` over it (fake wall clock, a small token
cache) through random sequences of: key rotations at the issuer (add, remove, replace
a kid's key, with keys of two types), issuer faults and recovery, clock moves across
the ttl, cooldown, backoff, negative-cache and max_stale boundaries, ``get_key`` for
known, unknown, removed and never-published kids, ``verify`` of fresh, replayed,
expired and foreign-signed tokens, ``refresh()``, concurrent bursts, and ``aclose()``.

After every step the cache is checked against a small model of the policy the module
docstring of ``asgi_auth0/_jwks.py`` states (when a request fetches, what it answers
from the last good set, cooldown, backoff, negative cache, max_stale, generation), and
against rules that need no model: only the documented exception types escape; a burst
of concurrent callers costs at most one fetch; unknown-kid refreshes start at least
``refresh_cooldown`` apart; a verified-token cache hit answers exactly what the full
verification would (so a removed key never validates again from the cache);
``cache_info()`` stays within its bounds; after ``aclose()`` no fetch task is left.

The issuer is an ``httpx.MockTransport`` handler. That is deliberate: thousands of
steps each need per-fetch control of the answer (a given JWKS, a 500, a 503 with
``Retry-After``, a timeout, a real hang cut by ``fetch_timeout``, a non-JWKS body, an
oversized body) at no cost, which a real server cannot give cheaply; the real-server
integration tests (tests/test_jwks_integration.py) exist beside these.

Each test case runs its own event loop in a blocking portal (asyncio and trio). A second
machine runs the same rules with the background refresher (``cache.run``) alive, where
refresh-ahead and stale-while-revalidate happen; there the model follows the fetches
the cache reports rather than predicting them (see :class:`JWKSRunnerMachine`).

``fetch_timeout`` is real time (0.5 s): an example where an in-memory answer missed it
(a busy machine) is discarded, not failed, and only a few fetches per run really hang.
Rule-removal runs (single flight, the generation bump, the token cache's generation
check, waking the refresher) each turn these tests red within a few dozen examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import httpx
import pytest
from hypothesis import HealthCheck, assume, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from asgi_auth0 import (
    AlgorithmNotAllowedError,
    Auth0Config,
    BearerError,
    ExpiredTokenError,
    InvalidSignatureError,
    KeySetError,
    PublicKey,
    TokenVerifier,
    UnknownKeyError,
)
from asgi_auth0._jwks import NOT_VOUCHED, JWKSCache
from asgi_auth0._signing import generate_private_key, public_jwk, sign_jws

ISS = "https://issuer.model.test/"
AUD = "https://api.model.test"
JWKS_URI = "https://issuer.model.test/.well-known/jwks.json"

# Key material, generated once (Ed25519 and P-256 generation is fast, but not free).
# Materials 0-3 are Ed25519 (EdDSA), 4-5 P-256 (ES256); 6 is never published.
MATERIALS = [generate_private_key("Ed25519") for _ in range(4)] + [
    generate_private_key("P-256") for _ in range(2)
]
NEVER_PUBLISHED = len(MATERIALS)
MATERIALS.append(generate_private_key("Ed25519"))
ALG = ["EdDSA"] * 4 + ["ES256"] * 2 + ["EdDSA"]
PUBLIC = [m.public_key() for m in MATERIALS]
KIDS = ["a", "b", "c", "d"]
UNPUBLISHED_KID = "zz"  # never in any published set

# The cache's settings (seconds on the fake monotonic clock, except FETCH_TIMEOUT,
# which is a real deadline: the hanging issuer costs that much real time).
TTL = 600.0
COOLDOWN = 30.0
MAX_STALE = 1800.0
BACKOFF_MIN = 5.0
BACKOFF_MAX = 300.0
NEGATIVE_TTL = 300.0
NEGATIVE_SIZE = 3
FETCH_TIMEOUT = 0.5
RETRY_AFTER = 120
REFRESH_AHEAD = 0.8  # the cache's default: the runner refreshes at 80% of freshness
# A real hang costs fetch_timeout of real time: this many per backend per test run
# (across examples); beyond them the "hang" issuer times out at once, the same failure
# for the cache without the wait.
REAL_HANGS = {"asyncio": 6, "trio": 6}
# Nothing may take longer than fetch_timeout plus the waiters' 1 s slack: beyond this a
# call counts as hung (a test failure with the steps, not a pytest timeout).
HUNG = 5.0
LEEWAY = 5.0
TOKEN_CACHE_SIZE = 3
MAX_TOKEN_SIZE = 8192

# What the issuer answers. "ok" serves the published set (no usable key when empty).
MODES = ["ok", "500", "503", "timeout", "hang", "connect", "not_json", "not_jwks", "oversized"]
OVERSIZED = b'{"keys": [], "pad": "' + b"x" * (1024 * 1024) + b'"}'
# Handler calls per fetch: a connection error gets one immediate retry.
CALLS_PER_FETCH = {"connect": 2}

# Token lifetimes: one that a few clock moves expire, and one that none do.
LIFETIMES = st.sampled_from([100_000, 20, 100_000])

# Clock moves that land on and around the policy's boundaries.
STEPS = [1, 4, 5, 10, 29, 30, 31, 60, 119, 120, 299, 300, 301, 480, 599, 600, 1800, 2400]

GET_KEY_ERRORS = (UnknownKeyError, KeySetError, AlgorithmNotAllowedError)

Outcome = tuple[str, Any]  # ("key", material) | ("error", exception class) | ("claims", None)


@dataclass(frozen=True)
class Token:
    kid: str
    material: int
    exp: float
    text: str = field(repr=False)


@dataclass
class Model:
    """What the module docstring of _jwks.py says the cache holds and will do."""

    installed: dict[str, int] | None = None  # kid -> material of the last good set
    fresh_until: float = -math.inf
    refresh_at: float = -math.inf
    stale_until: float = -math.inf
    failures: int = 0
    next_attempt: float = -math.inf
    last_unknown_fetch: float = -math.inf
    negative: OrderedDict[str, float] = field(default_factory=OrderedDict)
    generation: int = 0
    expiry_counted: bool = False
    fetches: int = 0
    failed_fetches: int = 0

    def usable(self, now: float) -> dict[str, int] | None:
        return self.installed if self.installed is not None and now < self.stale_until else None

    def lookup(self, keys: dict[str, int], kid: str, alg: str) -> Outcome:
        if kid not in keys:
            return ("error", UnknownKeyError)
        material = keys[kid]
        if ALG[material] != alg:
            return ("error", AlgorithmNotAllowedError)
        return ("key", material)

    def count_expiry(self, now: float) -> None:
        if not self.expiry_counted and self.installed is not None and now >= self.stale_until:
            self.expiry_counted = True
            self.generation += 1

    def remember_absent(self, kid: str, now: float) -> None:
        self.negative[kid] = now + NEGATIVE_TTL
        self.negative.move_to_end(kid)
        while len(self.negative) > NEGATIVE_SIZE:
            self.negative.popitem(last=False)


def backoff(failures: int, retry_after: float | None) -> float:
    delay = min(BACKOFF_MAX, BACKOFF_MIN * 2.0 ** (failures - 1))
    if retry_after is not None:
        delay = max(delay, min(retry_after, BACKOFF_MAX))
    return delay


def describe(result: object) -> Outcome:
    """An observed result in the model's terms."""
    if isinstance(result, BaseException):
        return ("error", type(result))
    if isinstance(result, PublicKey):
        for material, public in enumerate(PUBLIC):
            if result.key == public:
                return ("key", material)
        return ("key", "foreign")
    return ("claims", None)


class JWKSModelMachine(RuleBasedStateMachine):
    """One JWKSCache + TokenVerifier per test case, on ``backend``."""

    backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self.stack = contextlib.ExitStack()
        self.portal = self.stack.enter_context(
            anyio.from_thread.start_blocking_portal(self.backend)
        )
        self.now = 1000.0  # fake monotonic clock of the cache
        self.wall = 1_700_000_000.0  # fake wall clock of the verifier
        self.published: dict[str, int] = {"a": 0}
        self.mode = "ok"
        self.calls = 0  # handler calls
        self.too_slow = False
        self.active = self.most_active = 0  # handler calls under way (at most)
        self.gate: anyio.Event | None = None
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.unknown_kid_starts: list[float] = []
        self.model = Model()
        self.closed = False
        self.hold = False  # the next fetch never answers (aclose cancels it)
        self.cancel_next_fetch = False  # the model's side of that
        self.accepted: list[Token] = []  # tokens that verified, to replay
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        self.cache = JWKSCache(
            JWKS_URI,
            http_client=self.client,
            ttl=TTL,
            refresh_cooldown=COOLDOWN,
            fetch_timeout=FETCH_TIMEOUT,
            max_stale=MAX_STALE,
            backoff_min=BACKOFF_MIN,
            backoff_max=BACKOFF_MAX,
            negative_cache_size=NEGATIVE_SIZE,
            negative_ttl=NEGATIVE_TTL,
            clock=lambda: self.now,
            jitter=lambda: 0.0,
            on_event=self.on_event,
        )
        config = Auth0Config(
            issuer=ISS,
            jwks_uri=JWKS_URI,
            audience=AUD,
            algorithms=("EdDSA", "ES256"),
            leeway=LEEWAY,
            token_cache_size=TOKEN_CACHE_SIZE,
            max_token_size=MAX_TOKEN_SIZE,
        )
        self.verifier = TokenVerifier(config, key_set=self.cache, clock=lambda: self.wall)

    # -- the issuer -------------------------------------------------------------------

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.active += 1
        # Single flight, seen from the issuer: never two requests at once.
        self.most_active = max(self.most_active, self.active)
        try:
            return await self.answer(request)
        finally:
            self.active -= 1

    async def answer(self, request: httpx.Request) -> httpx.Response:
        mode = self.mode
        if self.hold:
            await anyio.sleep_forever()
        if self.gate is not None:
            await self.gate.wait()
        if mode == "ok":
            keys = [public_jwk(MATERIALS[m], kid=kid) for kid, m in sorted(self.published.items())]
            return httpx.Response(200, json={"keys": keys})
        if mode == "500":
            return httpx.Response(500, text="oops")
        if mode == "503":
            return httpx.Response(503, headers={"Retry-After": str(RETRY_AFTER)})
        if mode == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        if mode == "hang":
            if REAL_HANGS[self.backend]:
                # A real hang, cut by fetch_timeout (see REAL_HANGS).
                REAL_HANGS[self.backend] -= 1
                await anyio.sleep_forever()
            raise httpx.ReadTimeout("slow", request=request)
        if mode == "connect":
            raise httpx.ConnectError("refused", request=request)
        if mode == "not_json":
            return httpx.Response(200, text="<html>login</html>")
        if mode == "not_jwks":  # JSON, but the discovery document, not a key set
            return httpx.Response(200, json={"issuer": ISS, "jwks_uri": JWKS_URI})
        return httpx.Response(200, content=OVERSIZED)

    def on_event(self, name: str, info: Any) -> None:
        self.events.append((name, dict(info)))
        if (
            name == "refresh_error"
            and info.get("reason") == "timeout"
            and self.mode not in ("hang", "timeout")
        ):
            # fetch_timeout is real time: a machine too busy to answer an in-memory
            # request within it says nothing about the cache. The example is dropped
            # (see settled()), not failed.
            self.too_slow = True
        if name in ("refresh", "refresh_error") and info.get("trigger") == "unknown_kid":
            self.unknown_kid_starts.append(info["started"])

    def fetch_succeeds(self) -> bool:
        return self.mode == "ok" and bool(self.published)

    def apply_fetch(self, trigger: str) -> bool:
        """The model's view of one fetch at ``self.now`` with the issuer as it is;
        whether it installed a different key set."""
        m = self.model
        changed = False
        m.fetches += 1
        if trigger == "unknown_kid":
            m.last_unknown_fetch = self.now
        if self.fetch_succeeds():
            if m.installed != self.published:
                changed = True
                m.generation += 1
                m.negative.clear()
            m.installed = dict(self.published)
            m.fresh_until = self.now + TTL
            m.refresh_at = self.now + TTL * REFRESH_AHEAD
            m.stale_until = m.fresh_until + MAX_STALE
            m.failures = 0
            m.next_attempt = -math.inf
            m.expiry_counted = False
        else:
            m.failures += 1
            m.failed_fetches += 1
            retry_after = RETRY_AFTER if self.mode == "503" else None
            m.next_attempt = self.now + backoff(m.failures, retry_after)
        return changed

    # -- driving the cache ------------------------------------------------------------

    def call(self, fn: Callable[[], Awaitable[Any]]) -> tuple[Any, int]:
        """Run ``fn`` in the loop; its result (or the exception it raised) and the number
        of handler calls it caused."""
        before = self.calls

        async def run() -> Any:
            with anyio.move_on_after(HUNG):
                try:
                    return await fn()
                except Exception as exc:
                    return exc
            raise AssertionError(f"the call did not return within {HUNG} s")

        result = self.portal.call(run)
        self.settled()
        return result, self.calls - before

    def settled(self) -> None:
        if self.too_slow:
            event("discarded: an in-memory fetch missed fetch_timeout (busy machine)")
        assume(not self.too_slow)

    def fetches_seen(self, calls: int) -> int:
        per = CALLS_PER_FETCH.get(self.mode, 1)
        assert calls % per == 0, (calls, self.mode)
        return calls // per

    def model_get_key(self, kid: str, alg: str) -> tuple[Outcome, str | None]:
        """Predict a lone get_key(kid, alg) now: its outcome and the fetch it makes.

        Applies the fetch (if any) and the negative cache to the model.
        """
        m, now = self.model, self.now
        keys = m.usable(now)
        if keys is None:
            if now < m.next_attempt:
                return ("error", KeySetError), None
            return self.after_fetch(kid, alg, "load", on_failure=("error", KeySetError))
        found = m.lookup(keys, kid, alg)
        if found[0] == "key":
            if now < m.fresh_until or now < m.next_attempt:
                return found, None
            # Past freshness, no runner, no backoff: this request refreshes inline and
            # is answered from the stale set if that fails.
            return self.after_fetch(kid, alg, "stale", on_failure=found)
        if found[1] is AlgorithmNotAllowedError:
            return found, None
        expires = m.negative.get(kid)
        if expires is not None:
            if now < expires:
                m.negative.move_to_end(kid)
                return ("error", UnknownKeyError), None
            del m.negative[kid]
        if now - m.last_unknown_fetch < COOLDOWN or now < m.next_attempt:
            return ("error", KeySetError if m.failures else UnknownKeyError), None
        return self.after_fetch(kid, alg, "unknown_kid", on_failure=("error", KeySetError))

    def after_fetch(
        self, kid: str, alg: str, trigger: str, *, on_failure: Outcome
    ) -> tuple[Outcome, str]:
        if self.cancel_next_fetch:
            # Cancelled by aclose(): no outcome. It counts as a fetch begun, but not as
            # a failure, and not towards the unknown-kid cooldown.
            self.cancel_next_fetch = False
            self.model.fetches += 1
            return on_failure, trigger
        ok = self.fetch_succeeds()
        self.apply_fetch(trigger)
        if not ok:
            return on_failure, trigger
        assert self.model.installed is not None
        found = self.model.lookup(self.model.installed, kid, alg)
        if found == ("error", UnknownKeyError):
            self.model.remember_absent(kid, self.now)
        return found, trigger

    def model_verify(self, token: Token) -> tuple[Outcome, str | None]:
        """The full verification path (a cache hit must answer the same)."""
        found, trigger = self.model_get_key(token.kid, ALG[token.material])
        if found[0] != "key":
            return found, trigger
        if found[1] != token.material:
            return ("error", InvalidSignatureError), trigger
        if token.exp <= self.wall - LEEWAY:
            return ("error", ExpiredTokenError), trigger
        return ("claims", None), trigger

    def check_documented_type(self, result: object, verify: bool) -> None:
        if isinstance(result, BaseException):
            allowed: tuple[type[BaseException], ...] = (
                (BearerError, KeySetError) if verify else GET_KEY_ERRORS
            )
            assert isinstance(result, allowed), f"undocumented {type(result).__name__}: {result}"
            if isinstance(result, KeySetError):
                assert result.retry_after is not None
                assert 1 <= result.retry_after <= BACKOFF_MAX, result.retry_after

    def check_one(self, expected: tuple[Outcome, str | None], result: object, calls: int) -> None:
        outcome, trigger = expected
        seen = self.fetches_seen(calls)
        assert seen == (trigger is not None), (
            f"expected {'a ' + trigger if trigger else 'no'} fetch, saw {seen}"
        )
        got = describe(result)
        event(f"{outcome[0]} {getattr(outcome[1], '__name__', '')} after {trigger} fetch")
        assert got == outcome, f"expected {outcome}, got {got} ({result!r})"

    # -- rules: the issuer ------------------------------------------------------------

    @initialize(load=st.booleans())
    def start(self, load: bool) -> None:
        if load:  # as at an app's startup
            self.refresh()

    @rule(kid=st.sampled_from(KIDS), material=st.integers(0, NEVER_PUBLISHED - 1))
    def issuer_publishes(self, kid: str, material: int) -> None:
        """Add a kid, or replace the key under a published one (maybe of another type)."""
        self.published[kid] = material

    @rule(kid=st.sampled_from(KIDS))
    def issuer_removes(self, kid: str) -> None:
        self.published.pop(kid, None)

    @rule(mode=st.sampled_from(MODES))
    def issuer_mode(self, mode: str) -> None:
        self.mode = mode

    @rule()
    def issuer_recovers(self) -> None:
        self.mode = "ok"

    @precondition(lambda self: self.published)
    @rule(data=st.data(), material=st.integers(0, NEVER_PUBLISHED - 1))
    def rotate_and_refresh(self, data: st.DataObject, material: int) -> None:
        """An operator replaces a published key and reloads at once (refresh())."""
        kid = data.draw(st.sampled_from(sorted(self.published)), label="kid")
        self.published[kid] = material
        self.refresh()

    # -- rules: time ------------------------------------------------------------------

    @rule(seconds=st.sampled_from(STEPS))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds

    # -- rules: the cache -------------------------------------------------------------

    @rule(kid=st.sampled_from([*KIDS, UNPUBLISHED_KID]), alg=st.sampled_from(["EdDSA", "ES256"]))
    def get_key(self, kid: str, alg: str) -> None:
        expected = self.model_get_key(kid, alg)
        result, calls = self.call(lambda: self.cache.get_key(kid, alg))
        self.check_documented_type(result, verify=False)
        self.check_one(expected, result, calls)

    @rule()
    def refresh(self) -> None:
        ok = self.fetch_succeeds()
        self.apply_fetch("manual")
        result, calls = self.call(self.cache.refresh)
        assert self.fetches_seen(calls) == 1
        if ok:
            assert result is None, result
        else:
            assert isinstance(result, KeySetError), result
            assert result.retry_after is not None
            assert result.retry_after >= 1

    @precondition(lambda self: self.model.installed)
    @rule(data=st.data())
    def get_key_installed(self, data: st.DataObject) -> None:
        """get_key for a kid of the cached set, with its key's alg (a token's usual case)."""
        assert self.model.installed is not None
        kid = data.draw(st.sampled_from(sorted(self.model.installed)), label="kid")
        self.get_key(kid, ALG[self.model.installed[kid]])

    # -- rules: the verifier ----------------------------------------------------------

    tokens = Bundle("tokens")

    def sign(self, kid: str, material: int, lifetime: int, big: bool) -> Token:
        exp = int(self.wall) + lifetime
        payload: dict[str, Any] = {
            "iss": ISS,
            "aud": AUD,
            "sub": "user",
            "iat": int(self.wall),
            "exp": exp,
        }
        if big:  # large tokens exercise the cache's character budget
            payload["pad"] = "p" * 2500
        header = {"alg": ALG[material], "typ": "JWT", "kid": kid}
        return Token(kid, material, float(exp), sign_jws(MATERIALS[material], header, payload))

    @rule(
        target=tokens,
        kid=st.sampled_from([*KIDS, UNPUBLISHED_KID]),
        material=st.integers(0, NEVER_PUBLISHED),
        lifetime=LIFETIMES,
        big=st.booleans(),
    )
    def mint_any(self, kid: str, material: int, lifetime: int, big: bool) -> Token:
        """A token under any kid and key: published, removed, never published, mixed."""
        return self.sign(kid, material, lifetime, big)

    @precondition(lambda self: self.published)
    @rule(
        target=tokens,
        data=st.data(),
        lifetime=LIFETIMES,
        big=st.booleans(),
    )
    def mint_current(self, data: st.DataObject, lifetime: int, big: bool) -> Token:
        """A token signed by a key the issuer publishes now, as the issuer would, and
        presented at once (the usual way a new key's first token arrives)."""
        kid = data.draw(st.sampled_from(sorted(self.published)), label="kid")
        token = self.sign(kid, self.published[kid], lifetime, big)
        self.verify(token)
        return token

    @rule(token=tokens)
    def verify(self, token: Token) -> None:
        expected = self.model_verify(token)
        result, calls = self.call(lambda: self.verifier.verify(token.text))
        self.check_documented_type(result, verify=True)
        self.check_one(expected, result, calls)
        if expected[0][0] == "claims" and token not in self.accepted:
            self.accepted.append(token)

    @precondition(lambda self: self.accepted)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """A token that verified before, again: a cache hit must say what the full
        verification would say now. Twice in a row: the cache takes a token at its
        second verification, so the second call is a hit whenever the first one
        (at least the token's second) succeeded."""
        token = data.draw(st.sampled_from(self.accepted), label="token")
        self.verify(token)
        self.verify(token)

    # -- rules: concurrency -----------------------------------------------------------

    def run_burst(self, make: list[Callable[[], Awaitable[Any]]]) -> tuple[list[Any], int]:
        """Start every call at once, hold the issuer until all are blocked, release."""
        before = self.calls

        async def burst() -> list[Any]:
            results: list[Any] = [None] * len(make)

            async def one(i: int) -> None:
                try:
                    results[i] = await make[i]()
                except Exception as exc:
                    results[i] = exc

            gate = self.gate = anyio.Event()
            try:
                with anyio.move_on_after(HUNG) as scope:
                    async with anyio.create_task_group() as group:
                        for i in range(len(make)):
                            group.start_soon(one, i)
                        await self.settle()
                        gate.set()
            finally:
                self.gate = None
            if scope.cancelled_caught:
                raise AssertionError(f"the burst did not end within {HUNG} s: {results}")
            return results

        results = self.portal.call(burst)
        self.settled()
        return results, self.calls - before

    async def settle(self) -> None:
        """Return once every other task in the loop is blocked (the burst's callers on
        the fetch, the fetch on the issuer's gate)."""
        if self.backend != "asyncio":
            await anyio.wait_all_tasks_blocked()
            return
        # anyio's wait_all_tasks_blocked() polls every 0.1 s on asyncio, which thousands
        # of bursts cannot afford; the same test, yielding instead of sleeping.
        this = asyncio.current_task()
        while True:
            await asyncio.sleep(0)
            if all(
                task is this or (task._fut_waiter is not None and not task._fut_waiter.done())  # type: ignore[attr-defined]
                for task in asyncio.all_tasks()
            ):
                return

    @rule(
        n=st.integers(2, 6),
        kid=st.sampled_from([*KIDS, UNPUBLISHED_KID]),
        alg=st.sampled_from(["EdDSA", "ES256"]),
    )
    def burst_get_key(self, n: int, kid: str, alg: str) -> None:
        """N callers for the same kid: one fetch at most, one answer (or the stale one)."""
        before = self.model_lookup_now(kid, alg)
        expected = self.model_get_key(kid, alg)
        results, calls = self.run_burst([lambda: self.cache.get_key(kid, alg)] * n)
        self.check_burst(expected, before, results, calls, verify=False)

    @rule(n=st.integers(2, 6), token=tokens)
    def burst_verify(self, n: int, token: Token) -> None:
        before = self.verify_outcome_from(
            self.model_lookup_now(token.kid, ALG[token.material]), token
        )
        expected = self.model_verify(token)
        results, calls = self.run_burst([lambda: self.verifier.verify(token.text)] * n)
        self.check_burst(expected, before, results, calls, verify=True)
        if expected[0][0] == "claims" and token not in self.accepted:
            self.accepted.append(token)

    def model_lookup_now(self, kid: str, alg: str) -> Outcome | None:
        keys = self.model.usable(self.now)
        return None if keys is None else self.model.lookup(keys, kid, alg)

    def verify_outcome_from(self, found: Outcome | None, token: Token) -> Outcome | None:
        if found is None or found[0] != "key":
            return found
        if found[1] != token.material:
            return ("error", InvalidSignatureError)
        if token.exp <= self.wall - LEEWAY:
            return ("error", ExpiredTokenError)
        return ("claims", None)

    def check_burst(
        self,
        expected: tuple[Outcome, str | None],
        stale: Outcome | None,
        results: list[Any],
        calls: int,
        *,
        verify: bool,
        seen: int | None = None,
    ) -> None:
        outcome, trigger = expected
        event(f"burst: {outcome[0]} {getattr(outcome[1], '__name__', '')} after {trigger} fetch")
        for result in results:
            self.check_documented_type(result, verify=verify)
        if seen is None:
            seen = self.fetches_seen(calls)
        assert seen <= 1, f"{len(results)} concurrent callers made {seen} fetches"
        assert seen == (trigger is not None), (trigger, seen)
        got = [describe(r) for r in results]
        if trigger == "stale":
            # The first caller refreshes inline; the rest are served the stale set
            # while it does (module docstring: "without waiting").
            assert sorted(got, key=repr) == sorted(
                [outcome] + [stale] * (len(results) - 1), key=repr
            ), (got, outcome, stale)
        else:
            assert got == [outcome] * len(results), (got, outcome)

    @rule(
        ops=st.lists(
            st.one_of(
                st.tuples(
                    st.just("get_key"),
                    st.sampled_from([*KIDS, UNPUBLISHED_KID]),
                    st.sampled_from(["EdDSA", "ES256"]),
                ),
                st.tuples(st.just("refresh"), st.none(), st.none()),
            ),
            min_size=2,
            max_size=6,
        )
    )
    def burst_mixed(self, ops: list[tuple[str, str | None, str | None]]) -> None:
        """Different kids and refresh() at once: at most one fetch; every answer is what
        the set before or the set after that fetch gives."""
        m = self.model
        pre = None if m.usable(self.now) is None else dict(m.installed or {})
        pre_negative = dict(m.negative)
        makers: list[Callable[[], Awaitable[Any]]] = []
        for op, kid, alg in ops:
            if op == "refresh":
                makers.append(self.cache.refresh)
            else:
                assert kid is not None
                assert alg is not None
                makers.append(lambda kid=kid, alg=alg: self.cache.get_key(kid, alg))
        ok = self.fetch_succeeds()
        n_events = len(self.events)
        results, calls = self.run_burst(makers)
        seen = self.fetches_seen(calls)
        assert seen <= 1, f"{len(ops)} concurrent callers made {seen} fetches"
        fetch_events = [e for e in self.events[n_events:] if e[0] in ("refresh", "refresh_error")]
        assert len(fetch_events) == seen, (fetch_events, seen)
        changed = False
        if seen:
            changed = self.apply_fetch(fetch_events[0][1]["trigger"])
        post = m.usable(self.now)
        for (op, kid, alg), result in zip(ops, results, strict=True):
            if op == "refresh":
                if seen == 0:
                    raise AssertionError("refresh() made no fetch")
                assert (result is None) == ok, result
                continue
            self.check_documented_type(result, verify=False)
            assert kid is not None
            assert alg is not None
            allowed: set[Outcome] = {("error", KeySetError), ("error", UnknownKeyError)}
            for keys in (pre, post):
                if keys is not None:
                    allowed.add(m.lookup(keys, kid, alg))
            got = describe(result)
            assert got in allowed, (op, kid, alg, got, allowed)
        # Which joiners found their kid absent depends on the order the tasks ran:
        # take the cache's negative cache, after checking it holds nothing else.
        negative = OrderedDict(self.cache._negative)
        for kid, expires in negative.items():
            assert kid is not None
            fresh_entry = (
                post is not None and kid not in post and expires == self.now + NEGATIVE_TTL
            )
            assert fresh_entry or (kid in pre_negative and not changed), (kid, expires)
        m.negative = negative  # type: ignore[assignment]

    @rule(
        n=st.integers(1, 4),
        kid=st.sampled_from([*KIDS, UNPUBLISHED_KID]),
        alg=st.sampled_from(["EdDSA", "ES256"]),
    )
    def aclose_during_fetch(self, n: int, kid: str, alg: str) -> None:
        """aclose() while callers wait on a fetch the issuer never answers: the fetch is
        cancelled; they are answered as after a failed fetch, at once; it does not
        count as a failure, nor towards the unknown-kid cooldown; the cache stays usable.
        """
        stale = self.model_lookup_now(kid, alg)
        self.cancel_next_fetch = True
        expected = self.model_get_key(kid, alg)
        self.cancel_next_fetch = False
        before = self.calls
        results: list[Any] = [None] * n

        async def one(i: int) -> None:
            try:
                results[i] = await self.cache.get_key(kid, alg)
            except Exception as exc:
                results[i] = exc

        async def scenario() -> bool:
            self.hold = True
            try:
                with anyio.move_on_after(HUNG) as scope:
                    async with anyio.create_task_group() as group:
                        for i in range(n):
                            group.start_soon(one, i)
                        await self.settle()
                        await self.cache.aclose()
            finally:
                self.hold = False
            return scope.cancelled_caught

        hung = self.portal.call(scenario)
        self.settled()
        assert not hung, f"callers still waiting {HUNG} s after aclose(): {results}"
        calls = self.calls - before  # a held fetch is one call, whatever the mode
        self.check_burst(expected, stale, results, calls, verify=False, seen=calls)

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def matches_model(self) -> None:
        m = self.model
        m.count_expiry(self.now)
        status = self.cache.status()
        assert status.fetch_count == m.fetches, (status.fetch_count, m.fetches)
        assert status.failed_fetch_count == m.failed_fetches
        assert status.consecutive_failures == m.failures
        assert status.generation == m.generation, (status.generation, m.generation)
        # The usable keys only: none once the set is past max_stale.
        if m.installed is None or m.usable(self.now) is None:
            assert (status.kids, status.key_count) == ((), 0)
        else:
            assert status.kids == tuple(sorted(m.installed))
            assert status.key_count == len(m.installed)
        if m.usable(self.now) is None:
            assert status.state == ("failing" if m.failures else "empty")
        else:
            assert status.state == ("fresh" if self.now < m.fresh_until else "stale")
        self.check_generation_and_negative_cache()

    def check_generation_and_negative_cache(self) -> None:
        m = self.model
        # The generation the verifier reads: vouched only within freshness (no runner).
        if self.now < m.fresh_until or m.installed is None:
            assert self.cache.generation == m.generation
        else:
            assert self.cache.generation == NOT_VOUCHED
        # The negative cache, exactly (it decides which requests may fetch).
        assert dict(self.cache._negative) == dict(m.negative), (self.cache._negative, m.negative)

    @invariant()
    def unknown_kid_refreshes_keep_the_cooldown(self) -> None:
        starts = self.unknown_kid_starts
        for earlier, later in itertools.pairwise(starts):
            assert later - earlier >= COOLDOWN, starts

    @invariant()
    def token_cache_within_bounds(self) -> None:
        info = self.verifier.cache_info()
        assert 0 <= info["entries"] <= info["max_entries"] == TOKEN_CACHE_SIZE
        assert 0 <= info["token_chars"] <= info["max_token_chars"]
        assert info["token_chars"] == sum(len(t) for t in self.verifier._cache)

    @invariant()
    def never_two_requests_at_once(self) -> None:
        assert self.most_active <= 1, self.most_active

    @invariant()
    def no_fetch_left_running(self) -> None:
        assert not self.cache._detached
        # Running, that is: a fetch task that has just finished leaves the set in its
        # done callback, which the event loop runs a moment later (in this thread's
        # view, any time, on a loaded machine; CI once caught one there).
        assert not [task for task in self.cache._fetch_tasks if not task.done()]

    # -- the end ----------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if not self.closed:
                self.portal.call(self.close_and_check)
        finally:
            self.stack.close()

    async def close_and_check(self) -> None:
        await self.cache.aclose()
        await self.client.aclose()
        assert not self.cache._detached
        assert not self.cache._fetch_tasks
        if self.backend == "asyncio":
            # Only the portal's own tasks (and this call's) may be left in the loop.
            names = {t.get_coro().__qualname__ for t in asyncio.all_tasks()}  # type: ignore[union-attr]
            assert not any("perform" in n for n in names), names
        self.closed = True


class JWKSModelMachineTrio(JWKSModelMachine):
    backend = "trio"


class JWKSRunnerMachine(JWKSModelMachine):
    """The same cache with its background refresher running (``cache.run``).

    Whether and when the refresher fetches is its own business, so here the model
    does not predict fetches: it applies the ones the cache reports (``on_event``), in
    order, checking each outcome against the issuer, and so still checks status,
    generation, backoff and cooldown. Answers are checked against the key set before
    and after those fetches, and exactly where the docstring is exact: a request whose
    kid is in the usable set is answered from it at once, and one that finds the set
    due for refresh (refresh-ahead, or past freshness) wakes the refresher, which
    then fetches.
    """

    def __init__(self) -> None:
        super().__init__()
        self.applied = 0
        self.step_failed = self.failing_before = False
        self.runner, _ = self.portal.start_task(self.cache.run)
        self.sync()  # the refresher loads the set at startup

    async def quiesce(self) -> None:
        """Until every task is blocked and no fetch is under way or handed over."""
        with anyio.fail_after(HUNG):
            while True:
                await self.settle()
                flight = self.cache._inflight or self.cache._pending
                if flight is None:
                    return
                await flight.done.wait()

    def sync(self) -> list[str]:
        """Let the refresher finish; apply the fetches reported since the last sync to
        the model; their triggers."""
        self.portal.call(self.quiesce)
        self.settled()
        triggers = []
        self.step_failed = False
        for name, info in self.events[self.applied :]:
            if name in ("refresh", "refresh_error"):
                assert (name == "refresh") == self.fetch_succeeds(), (name, info, self.mode)
                self.step_failed |= name == "refresh_error"
                self.apply_fetch(info["trigger"])
                triggers.append(info["trigger"])
        self.applied = len(self.events)
        self.model.negative = OrderedDict(self.cache._negative)  # type: ignore[assignment]
        return triggers

    # -- expectations: the set before, the set after ------------------------------

    def model_get_key(self, kid: str, alg: str) -> tuple[Outcome, str | None]:
        self.failing_before = self.model.failures > 0
        return ("runner", ("get_key", kid, alg, self.before(kid, alg))), None

    def model_verify(self, token: Token) -> tuple[Outcome, str | None]:
        self.failing_before = self.model.failures > 0
        before = self.before(token.kid, ALG[token.material])
        return ("runner", ("verify", token, before)), None

    def before(self, kid: str, alg: str) -> tuple[Outcome | None, bool]:
        """The answer from the usable set now (if the kid is in it), and whether the
        refresher must be woken (due for refresh-ahead, not backing off)."""
        m, now = self.model, self.now
        keys = m.usable(now)
        found = None if keys is None else m.lookup(keys, kid, alg)
        if found == ("error", UnknownKeyError):
            found = None
        due = found is not None and found[0] == "key" and now >= max(m.refresh_at, m.next_attempt)
        return found, due

    def allowed(self, expectation: Outcome) -> set[Outcome]:
        what, *args = expectation[1]
        if what == "get_key":
            kid, alg, (found, _) = args
            token = None
        else:
            token, (found, _) = args
            kid, alg = token.kid, ALG[token.material]
        if found is not None:
            answers = {found}  # from the usable set, at once
        else:
            answers = {("error", UnknownKeyError)}
            if self.failing_before or self.step_failed:
                # 503 only for an issuer failing before or during this step: callers
                # that joined a fetch that succeeded get its answer.
                answers.add(("error", KeySetError))
            keys = self.model.usable(self.now)
            if keys is not None:
                answers.add(self.model.lookup(keys, kid, alg))
        if token is None:
            return answers
        return {self.verify_outcome_from(a, token) or a for a in answers}

    def check_one(self, expected: tuple[Outcome, str | None], result: object, calls: int) -> None:
        triggers = self.sync()
        assert len(triggers) <= 1, triggers
        got = describe(result)
        allowed = self.allowed(expected[0])
        assert got in allowed, (got, allowed)
        what, *args = expected[0][1]
        _, due = args[-1]
        if what == "get_key" and due:
            # Refresh-ahead / stale-while-revalidate: the request woke the refresher.
            assert triggers == ["background"], triggers
        event(f"runner: {got[0]} {getattr(got[1], '__name__', '')} after {triggers}")

    def check_burst(
        self,
        expected: tuple[Outcome, str | None],
        stale: Outcome | None,
        results: list[Any],
        calls: int,
        *,
        verify: bool,
        seen: int | None = None,
    ) -> None:
        for result in results:
            self.check_documented_type(result, verify=verify)
        triggers = self.sync()
        assert len(triggers) <= 1, f"{len(results)} concurrent callers made {triggers}"
        allowed = self.allowed(expected[0])
        for result in results:
            assert describe(result) in allowed, (describe(result), allowed)

    # -- rules that differ -------------------------------------------------------------

    @rule()
    def refresh(self) -> None:
        ok = self.fetch_succeeds()
        result, _ = self.call(self.cache.refresh)
        assert self.sync() == ["manual"]
        if ok:
            assert result is None, result
        else:
            assert isinstance(result, KeySetError), result

    def burst_mixed(self, ops: Any) -> None:  # type: ignore[override]
        """Not a rule here: its fetch accounting assumes no refresher."""

    def aclose_during_fetch(self, n: int, kid: str, alg: str) -> None:  # type: ignore[override]
        """Not a rule here: aclose() leaves a fetch the refresher performs alone (its
        docstring: stop the refresher first)."""

    def check_generation_and_negative_cache(self) -> None:
        # A live refresher vouches for the set past freshness too.
        assert self.cache.generation == self.model.generation

    def teardown(self) -> None:
        with contextlib.suppress(BaseException):
            self.runner.cancel()
        try:
            self.portal.call(self.runner_gone)
        finally:
            super().teardown()

    async def runner_gone(self) -> None:
        with anyio.fail_after(HUNG):
            while self.cache._runner is not None:
                await self.settle()
                await anyio.lowlevel.checkpoint()


class JWKSRunnerMachineTrio(JWKSRunnerMachine):
    backend = "trio"


# CI: a fixed set of examples (derandomized), so a run is repeatable and every Python
# of the CI matrix exercises the same sequences; `make fuzz` (ASGI_AUTH0_FUZZ=long)
# runs 20 times as many, randomized.
LONG = os.environ.get("ASGI_AUTH0_FUZZ") == "long"
pytestmark = [pytest.mark.fuzz, *([pytest.mark.timeout(3600)] if LONG else [])]
SETTINGS = settings(
    max_examples=2000 if LONG else 100,
    stateful_step_count=40,
    deadline=None,
    database=None,
    derandomize=not LONG,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

JWKSModelMachine.TestCase.settings = SETTINGS
JWKSModelMachineTrio.TestCase.settings = SETTINGS
JWKSRunnerMachine.TestCase.settings = SETTINGS
JWKSRunnerMachineTrio.TestCase.settings = SETTINGS
TestJWKSModelAsyncio = JWKSModelMachine.TestCase
TestJWKSModelTrio = JWKSModelMachineTrio.TestCase
TestJWKSRunnerAsyncio = JWKSRunnerMachine.TestCase
TestJWKSRunnerTrio = JWKSRunnerMachineTrio.TestCase
