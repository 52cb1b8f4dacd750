"""DPoP replay protection shared between processes: ``TokenVerifier(config,
dpop_replay_store=...)`` records each accepted proof in the store instead of in its
own memory (RFC 9449 §11.1), so a proof replayed to another worker is refused there.

Each verifier here stands for one worker: two verifiers share nothing but the store.
A refusal is shown beside the same request passing without the breach (or without the
store), so that each test fails when its rule is removed. The end-to-end form (two
uvicorn servers and a store reached over HTTP) is in ``test_dpop_e2e.py``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import re
import sys
from collections.abc import Callable
from typing import Annotated, Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI
from test_dpop import AUD, ISS, NOW, URL, Clock, proof_for

from asgi_auth0 import DPoPReplayStore
from asgi_auth0._claims import Claims
from asgi_auth0._dpop import replay_key
from asgi_auth0._errors import (
    ConfigError,
    DPoPBindingError,
    DPoPProofReplayedError,
    DPoPReplayStoreError,
    ExpiredTokenError,
    InvalidDPoPProofError,
    KeySetError,
)
from asgi_auth0._keys import StaticKeySet
from asgi_auth0._middleware import Auth0Middleware
from asgi_auth0._signing import PrivateKey
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.fastapi import require_token
from asgi_auth0.testing import DPoPKey, LocalIssuer

pytestmark = pytest.mark.anyio

KEY_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}")


class SharedStore:
    """What a Redis ``SET key 1 NX EXAT t`` does, in memory: atomic, expiring."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.records: dict[str, float] = {}
        self.calls: list[tuple[str, float]] = []

    async def add(self, key: str, expires_at: float) -> bool:
        self.calls.append((key, expires_at))
        await anyio.sleep(0)  # a real store is awaited: let other requests interleave
        held = self.records.get(key)
        if held is not None and held >= self.clock():
            return False
        self.records[key] = expires_at
        return True


class Lagging:
    """A worker's clock running ``lag`` seconds behind ``clock``."""

    def __init__(self, clock: Clock, lag: float) -> None:
        self.clock, self.lag = clock, lag

    def __call__(self) -> float:
        return self.clock() - self.lag


class BrokenStore:
    def __init__(self, outcome: Any = None, *, error: Exception | None = None) -> None:
        self.outcome = outcome
        self.error = error
        self.calls = 0

    async def add(self, key: str, expires_at: float) -> bool:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.outcome  # type: ignore[no-any-return]


class SlowStore:
    def __init__(self) -> None:
        self.started = anyio.Event()

    async def add(self, key: str, expires_at: float) -> bool:
        self.started.set()
        await anyio.sleep(3600)
        return True


@pytest.fixture
def minter(auth0_rsa_key: PrivateKey) -> LocalIssuer:
    return LocalIssuer(issuer=ISS, audience=AUD, private_key=auth0_rsa_key, clock=lambda: NOW)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def worker(
    minter: LocalIssuer,
    clock: Callable[[], float],
    store: DPoPReplayStore | None,
    *,
    timeout: float | None = None,
    **config: Any,
) -> TokenVerifier:
    """One worker's verifier: its own key set, token cache and jti memory."""
    config.setdefault("dpop", "allowed")
    return TokenVerifier(
        minter.config(**config),
        key_set=StaticKeySet(minter.jwks),
        clock=clock,
        dpop_replay_store=store,
        **({} if timeout is None else {"dpop_replay_timeout": timeout}),
    )


def bound(minter: LocalIssuer, **claims: Any) -> tuple[DPoPKey, str, str]:
    """A client key, a token bound to it (``claims`` for the token) and a proof."""
    client = DPoPKey()
    token = minter.token(cnf=client.cnf, **claims)
    return client, token, proof_for(client, token=token)


async def send(verifier: TokenVerifier, token: str, proof: str) -> Claims:
    return await verifier.verify_dpop(token, proof, method="GET", url=URL)


async def unavailable(
    verifier: TokenVerifier, minter: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> DPoPReplayStoreError:
    """Send a good DPoP request, which must fail for the store (the ERROR lines of
    every logger land in ``caplog``); a hang is a failure too."""
    _, token, proof = bound(minter)
    with (
        caplog.at_level(logging.ERROR),
        anyio.fail_after(10),
        pytest.raises(DPoPReplayStoreError) as raised,
    ):
        await send(verifier, token, proof)
    return raised.value


# -- the store is the record -----------------------------------------------------------------


async def test_without_a_store_a_proof_replayed_to_another_worker_is_accepted(
    minter: LocalIssuer, clock: Clock
) -> None:
    # The limitation the store removes: each worker remembers only its own proofs.
    _, token, proof = bound(minter)
    first, second = worker(minter, clock, None), worker(minter, clock, None)
    await send(first, token, proof)
    await send(second, token, proof)
    with pytest.raises(DPoPProofReplayedError):
        await send(first, token, proof)


async def test_with_a_shared_store_a_proof_replayed_to_another_worker_is_refused(
    minter: LocalIssuer, clock: Clock
) -> None:
    client = DPoPKey()
    token = minter.token(cnf=client.cnf, sub="auth0|shared")
    proof = proof_for(client, token=token, jti="the-jti")
    store = SharedStore(clock)
    first, second = worker(minter, clock, store), worker(minter, clock, store)
    assert (await send(first, token, proof)).sub == "auth0|shared"
    for again in (second, first):
        with pytest.raises(DPoPProofReplayedError, match="replay store"):
            await send(again, token, proof)
    # The store decided; the worker that took the proof also remembers it.
    assert (first.dpop.remembered, second.dpop.remembered) == (1, 0)
    # Recorded under the key's thumbprint and the jti's hash, until the proof would
    # be too old anyway (iat + dpop_max_age + dpop_leeway), plus a minute for clocks.
    assert store.calls == [(replay_key(client.jkt, "the-jti"), NOW + 300 + 30 + 60)] * 3
    # A fresh proof (another jti) from the same client passes on either worker.
    await send(second, token, proof_for(client, token=token))


async def test_the_record_may_expire_with_the_proofs_window(
    minter: LocalIssuer, clock: Clock
) -> None:
    client = DPoPKey()
    token = minter.token(cnf=client.cnf, expires_in=7200)
    store = SharedStore(clock)
    verifier = worker(minter, clock, store, dpop_max_age=60, dpop_leeway=5)
    proof = proof_for(client, token=token, iat=NOW)
    await send(verifier, token, proof)
    (_, expires_at), *_ = store.calls
    assert expires_at == NOW + 65 + 60
    # Once the store has dropped the record, the proof is refused as too old: the
    # window, not the store, refuses it from then on.
    clock.now = expires_at + 1
    store.records.clear()
    with pytest.raises(InvalidDPoPProofError, match="old"):
        await send(verifier, token, proof)
    assert len(store.calls) == 1


async def test_a_worker_whose_clock_is_behind_still_finds_the_record(
    minter: LocalIssuer, clock: Clock
) -> None:
    # Worker "behind" runs 20 s late, more than dpop_leeway (5 s): it still takes the
    # proof as young 15 s after the others' window closed. The record outlives that.
    _, token, proof = bound(minter, expires_in=7200)
    store = SharedStore(clock)  # the store keeps true time
    options: dict[str, Any] = {"dpop_max_age": 300, "dpop_leeway": 5}
    on_time = worker(minter, clock, store, **options)
    behind = worker(minter, Lagging(clock, 20), store, **options)
    await send(on_time, token, proof)
    clock.now = NOW + 315
    with pytest.raises(DPoPProofReplayedError, match="replay store"):
        await send(behind, token, proof)
    # Without the margin the record would have gone at NOW + 305: "behind" took it.
    store.records = {key: until - 60 for key, until in store.records.items()}
    await send(behind, token, proof)


async def test_concurrent_presentations_of_one_proof_pass_once(
    minter: LocalIssuer, clock: Clock
) -> None:
    # The verifier keeps no check-then-act of its own: the store's one atomic step
    # decides, whichever worker each copy reaches.
    _, token, proof = bound(minter)
    store = SharedStore(clock)
    workers = [worker(minter, clock, store) for _ in range(4)]
    outcomes: list[str] = []

    async def present(verifier: TokenVerifier) -> None:
        try:
            await send(verifier, token, proof)
        except DPoPProofReplayedError:
            outcomes.append("replayed")
        else:
            outcomes.append("accepted")

    async with anyio.create_task_group() as group:
        for i in range(40):
            group.start_soon(present, workers[i % 4])
    assert sorted(outcomes) == ["accepted"] + ["replayed"] * 39


@pytest.mark.parametrize(
    "breach",
    ["ath", "htm", "binding", "expired_token"],
)
async def test_only_a_proof_that_passed_every_check_reaches_the_store(
    minter: LocalIssuer, clock: Clock, breach: str
) -> None:
    client, token, proof = bound(minter)
    store = SharedStore(clock)
    verifier = worker(minter, clock, store)
    expected: type[Exception] = InvalidDPoPProofError
    if breach == "ath":
        proof = proof_for(client, token="another token")
    elif breach == "htm":
        proof = proof_for(client, token=token, htm="POST")
    elif breach == "binding":
        token = minter.token(cnf=DPoPKey().cnf)
        proof = proof_for(client, token=token)
        expected = DPoPBindingError
    else:
        token = minter.token(cnf=client.cnf, now=NOW - 7200, expires_in=3600)
        proof = proof_for(client, token=token)
        expected = ExpiredTokenError
    with pytest.raises(expected):
        await send(verifier, token, proof)
    # A refused proof takes no record (so it cannot use up a jti), and costs the
    # store nothing.
    assert store.calls == []


# -- the key ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "jti", ["a", "x" * 256, "with.dots.and spaces", "line\nbreak", "\u00e9\u6f22", "\ud800"]
)
def test_the_replay_key_is_short_and_of_safe_characters_for_any_jti(jti: str) -> None:
    client = DPoPKey()
    key = replay_key(client.jkt, jti)
    assert KEY_SHAPE.fullmatch(key), key
    assert key.startswith(client.jkt + ".")


def test_the_replay_key_tells_jtis_and_client_keys_apart() -> None:
    one, two = DPoPKey(), DPoPKey()
    keys = {replay_key(jkt, jti) for jkt in (one.jkt, two.jkt) for jti in ("a", "b", "a.b")}
    assert len(keys) == 6
    # The same client key and jti is the same record whichever worker computes it.
    assert replay_key(one.jkt, "a") == replay_key(one.jkt, "a")


# -- a store that fails ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        lambda: ConnectionError("the store went away"),
        lambda: TimeoutError("the store's own client timed out"),
    ],
    ids=["raises", "raises-timeout"],
)
async def test_a_failing_store_is_a_503_and_is_logged(
    minter: LocalIssuer,
    clock: Clock,
    error: Callable[[], Exception],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = BrokenStore(error=error())
    raised = await unavailable(worker(minter, clock, store), minter, caplog)
    # An outage (503, retry soon), not a refusal of the proof: it may be genuine.
    assert isinstance(raised, KeySetError)
    assert raised.status_code == 503
    assert raised.retry_after == 5
    [record] = [r for r in caplog.records if r.name == "asgi_auth0.verify"]
    assert record.reason == "dpop_replay_store_unavailable"  # type: ignore[attr-defined]
    assert "failed unexpectedly" in record.getMessage()
    assert record.exc_info is not None
    assert store.calls == 1


@pytest.mark.parametrize("outcome", [None, 1, 0, "yes", [True]])
async def test_a_store_answering_neither_true_nor_false_is_a_503(
    minter: LocalIssuer, clock: Clock, outcome: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await unavailable(worker(minter, clock, BrokenStore(outcome)), minter, caplog)
    assert "not True or False" in caplog.text
    # The same store answering True lets the same request through.
    _, token, proof = bound(minter)
    await send(worker(minter, clock, BrokenStore(True)), token, proof)


@pytest.mark.parametrize(("timeout", "shown"), [(0.2, "0.2 s"), (None, "1 s")])
async def test_a_store_that_does_not_answer_is_a_503_after_dpop_replay_timeout(
    minter: LocalIssuer,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    timeout: float | None,
    shown: str,
) -> None:
    # None: the default, 1 s (not the 5 s of jwks_fetch_timeout, set to 30 here).
    verifier = worker(minter, clock, SlowStore(), timeout=timeout, jwks_fetch_timeout=30)
    raised = await unavailable(verifier, minter, caplog)
    assert "in time" in str(raised)
    assert f"did not answer within {shown};" in caplog.text


class LateStore:
    """Swallows the cancellation at its deadline and answers True after it."""

    async def add(self, key: str, expires_at: float) -> bool:
        try:
            await anyio.sleep(3600)
        except anyio.get_cancelled_exc_class():
            pass  # a store that should not do this, but might
        return True


async def test_an_answer_after_the_deadline_is_not_taken(minter: LocalIssuer, clock: Clock) -> None:
    # A store that answered late most likely recorded nothing: the proof is not taken.
    _, token, proof = bound(minter)
    verifier = worker(minter, clock, LateStore(), timeout=0.1)
    with anyio.fail_after(10), pytest.raises(DPoPReplayStoreError, match="in time"):
        await send(verifier, token, proof)
    assert verifier.dpop.remembered == 0


class NoNXStore:
    """A store that records but never says no (SET without NX, or a placeholder)."""

    def __init__(self) -> None:
        self.calls = 0

    async def add(self, key: str, expires_at: float) -> bool:
        self.calls += 1
        return True


async def test_a_store_that_always_answers_true_still_leaves_no_replay_on_one_worker(
    minter: LocalIssuer, clock: Clock
) -> None:
    _, token, proof = bound(minter)
    store = NoNXStore()
    verifier = worker(minter, clock, store)
    await send(verifier, token, proof)
    with pytest.raises(DPoPProofReplayedError):
        await send(verifier, token, proof)
    assert store.calls == 2
    assert verifier.dpop.remembered == 1


class SpuriousCancelStore:
    """Raises a CancelledError nobody asked for (a cancelled future it awaited)."""

    async def add(self, key: str, expires_at: float) -> bool:
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        return bool(await future)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() is 3.11+")
async def test_a_cancellation_raised_by_the_store_itself_is_a_503_not_a_500(
    minter: LocalIssuer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    await unavailable(worker(minter, clock, SpuriousCancelStore()), minter, caplog)
    assert "raised CancelledError" in caplog.text
    # And the task is not left cancelled: it goes on as usual.
    await anyio.sleep(0)


class UnawaitedStore:
    """Forgets an await: returns the store call instead of its answer."""

    async def add(self, key: str, expires_at: float) -> bool:
        return self._call()  # type: ignore[return-value]

    async def _call(self) -> bool:
        return True


async def test_a_store_returning_an_awaitable_is_a_503_without_a_runtime_warning(
    minter: LocalIssuer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # (The suite turns warnings into errors: an unclosed coroutine would fail it.)
    await unavailable(worker(minter, clock, UnawaitedStore()), minter, caplog)
    gc.collect()
    assert "a missing await?" in caplog.text


async def test_store_failures_are_logged_once_a_minute_with_a_count(
    minter: LocalIssuer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # During an outage every DPoP request fails alike, and anyone replaying a proof
    # sets the pace: one line a minute, then how many were held back.
    store = BrokenStore(error=ConnectionError("down"))
    verifier = worker(minter, clock, store)
    window = Clock(0)
    verifier._store_errors.clock = window
    client = DPoPKey()
    token = minter.token(cnf=client.cnf)

    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "asgi_auth0.verify"]

    with caplog.at_level(logging.ERROR, logger="asgi_auth0.verify"):
        for _ in range(5):
            with pytest.raises(DPoPReplayStoreError):
                await send(verifier, token, proof_for(client, token=token))
        assert len(lines()) == 1
        assert lines()[0].exc_info is not None
        window.now = 59.9
        with pytest.raises(DPoPReplayStoreError):
            await send(verifier, token, proof_for(client, token=token))
        assert len(lines()) == 1
        window.now = 60
        with pytest.raises(DPoPReplayStoreError):
            await send(verifier, token, proof_for(client, token=token))
    assert len(lines()) == 2
    assert "(5 more failures since the last line)" in lines()[1].getMessage()
    assert store.calls == 7


class CredentialedStore(BrokenStore):
    def __repr__(self) -> str:
        return "CredentialedStore(url='redis://:s3cret@redis.internal:6379/0')"


async def test_the_store_is_named_by_its_class_in_logs_never_by_its_repr(
    minter: LocalIssuer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = CredentialedStore(error=ConnectionError("down"))
    await unavailable(worker(minter, clock, store), minter, caplog)
    assert "(CredentialedStore)" in caplog.text
    assert "s3cret" not in caplog.text


async def test_a_cancelled_request_is_not_turned_into_a_503(
    minter: LocalIssuer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # A client that goes away mid-request cancels the verification: that must stay a
    # cancellation, not become a logged store failure.
    _, token, proof = bound(minter)
    store = SlowStore()
    verifier = worker(minter, clock, store)
    outcome: list[str] = []

    async def request() -> None:
        try:
            await send(verifier, token, proof)
        except DPoPReplayStoreError:
            outcome.append("503")
            raise
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise

    with caplog.at_level(logging.ERROR, logger="asgi_auth0.verify"):
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(request)
                await store.started.wait()
                group.cancel_scope.cancel()
    assert outcome == ["cancelled"]
    assert not [r for r in caplog.records if r.name == "asgi_auth0.verify"]


# -- through the middleware ------------------------------------------------------------------


async def test_the_middleware_answers_a_store_failure_503_and_bearer_requests_still_pass(
    minter: LocalIssuer, clock: Clock
) -> None:
    app = FastAPI()

    @app.get("/me")
    async def me(claims: Annotated[Claims, Depends(require_token)]) -> dict[str, Any]:
        return {"sub": claims.sub}

    verifier = worker(minter, clock, BrokenStore(error=ConnectionError("down")))
    asgi = Auth0Middleware(app, verifier=verifier)
    _, token, proof = bound(minter)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi), base_url="https://api.example.test"
    ) as http:
        dpop = {"Authorization": f"DPoP {token}", "DPoP": proof}
        down = await http.get("/messages", headers=dpop)
        bearer = await http.get(
            "/me", headers={"Authorization": f"Bearer {minter.token(sub='auth0|plain')}"}
        )
    assert down.status_code == 503
    assert down.headers["retry-after"] == "5"
    assert "www-authenticate" not in down.headers
    assert down.json() == {
        "error": "temporarily_unavailable",
        "error_description": "DPoP replay protection is temporarily unavailable.",
        "reason": "dpop_replay_store_unavailable",
    }
    # Bearer tokens never touch the store.
    assert bearer.status_code == 200
    assert bearer.json() == {"sub": "auth0|plain"}


# -- construction ----------------------------------------------------------------------------


def test_a_store_with_dpop_disabled_is_a_config_error(minter: LocalIssuer, clock: Clock) -> None:
    with pytest.raises(ConfigError, match="dpop is 'disabled'"):
        worker(minter, clock, SharedStore(clock), dpop="disabled")
    worker(minter, clock, SharedStore(clock), dpop="required")


class SyncStore:
    def add(self, key: str, expires_at: float) -> bool:
        return True


@pytest.mark.parametrize("store", [object(), SyncStore(), "redis://localhost"])
def test_a_store_without_an_async_add_is_a_type_error(
    minter: LocalIssuer, clock: Clock, store: Any
) -> None:
    with pytest.raises(TypeError, match="async add"):
        worker(minter, clock, store)


class OneArgument:
    async def add(self, key: str) -> bool:
        return True


class KeywordOnly:
    async def add(self, *, key: str, expires_at: float) -> bool:
        return True


@pytest.mark.parametrize(
    "store", [SharedStore, OneArgument(), KeywordOnly()], ids=["the-class", "one-arg", "kw-only"]
)
def test_a_store_whose_add_cannot_be_called_as_add_key_expires_at_is_a_type_error(
    minter: LocalIssuer, clock: Clock, store: Any
) -> None:
    # Each would pass an "is it async" check and then fail every DPoP request.
    with pytest.raises(TypeError, match=r"add\(key, expires_at\)"):
        worker(minter, clock, store)


@pytest.mark.parametrize("timeout", [0, -1, 0.001, 121, math.inf, math.nan, True, "1"])
def test_dpop_replay_timeout_is_checked(minter: LocalIssuer, clock: Clock, timeout: Any) -> None:
    with pytest.raises(ConfigError, match="dpop_replay_timeout"):
        worker(minter, clock, SharedStore(clock), timeout=timeout)
    worker(minter, clock, SharedStore(clock), timeout=0.01)
