"""DPoP replay protection shared between processes: ``TokenVerifier(config,
dpop_replay_store=...)`` records each accepted proof in the store instead of in its
own memory (RFC 9449 §11.1), so a proof replayed to another worker is refused there.

Each verifier here stands for one worker: two verifiers share nothing but the store.
A refusal is shown beside the same request passing without the breach (or without the
store), so that each test fails when its rule is removed. The end-to-end form (two
uvicorn servers and a store reached over HTTP) is in ``test_dpop_e2e.py``.
"""

from __future__ import annotations

import logging
import re
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
    minter: LocalIssuer, clock: Clock, store: DPoPReplayStore | None, **config: Any
) -> TokenVerifier:
    """One worker's verifier: its own key set, token cache and jti memory."""
    config.setdefault("dpop", "allowed")
    return TokenVerifier(
        minter.config(**config),
        key_set=StaticKeySet(minter.jwks),
        clock=clock,
        dpop_replay_store=store,
    )


def bound(minter: LocalIssuer, **claims: Any) -> tuple[DPoPKey, str, str]:
    """A client key, a token bound to it (``claims`` for the token) and a proof."""
    client = DPoPKey()
    token = minter.token(cnf=client.cnf, **claims)
    return client, token, proof_for(client, token=token)


async def send(verifier: TokenVerifier, token: str, proof: str) -> Claims:
    return await verifier.verify_dpop(token, proof, method="GET", url=URL)


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
    # The store is the only record: the workers' own memories stay empty.
    assert first.dpop.remembered == second.dpop.remembered == 0
    # Recorded under the key's thumbprint and the jti's hash, until the proof would
    # be too old anyway (iat + dpop_max_age + dpop_leeway).
    assert store.calls == [(replay_key(client.jkt, "the-jti"), NOW + 300 + 30)] * 3
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
    assert expires_at == NOW + 65
    # Once the store has dropped the record, the proof is refused as too old: the
    # window, not the store, refuses it from then on.
    clock.now = expires_at + 1
    store.records.clear()
    with pytest.raises(InvalidDPoPProofError, match="old"):
        await send(verifier, token, proof)
    assert len(store.calls) == 1


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
    _, token, proof = bound(minter)
    verifier = worker(minter, clock, store)
    with (
        caplog.at_level(logging.ERROR, logger="asgi_auth0.verify"),
        pytest.raises(DPoPReplayStoreError) as raised,
    ):
        await send(verifier, token, proof)
    # An outage (503, retry soon), not a refusal of the proof: it may be genuine.
    assert isinstance(raised.value, KeySetError)
    assert raised.value.status_code == 503
    assert raised.value.retry_after == 5
    [record] = [r for r in caplog.records if r.name == "asgi_auth0.verify"]
    assert record.reason == "dpop_replay_store_unavailable"  # type: ignore[attr-defined]
    assert "failed unexpectedly" in record.getMessage()
    assert record.exc_info is not None
    assert store.calls == 1


@pytest.mark.parametrize("outcome", [None, 1, 0, "yes", [True]])
async def test_a_store_answering_neither_true_nor_false_is_a_503(
    minter: LocalIssuer, clock: Clock, outcome: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, token, proof = bound(minter)
    verifier = worker(minter, clock, BrokenStore(outcome))
    with (
        caplog.at_level(logging.ERROR, logger="asgi_auth0.verify"),
        pytest.raises(DPoPReplayStoreError),
    ):
        await send(verifier, token, proof)
    assert "not True or False" in caplog.text
    # The same store answering True lets the same request through.
    accepted = worker(minter, clock, BrokenStore(True))
    await send(accepted, token, proof_for(client, token=token))


async def test_a_store_that_does_not_answer_is_a_503_after_jwks_fetch_timeout(
    minter: LocalIssuer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    _, token, proof = bound(minter)
    verifier = worker(minter, clock, SlowStore(), jwks_fetch_timeout=0.2)
    with caplog.at_level(logging.ERROR, logger="asgi_auth0.verify"):
        with anyio.fail_after(10):  # the bound under test is 0.2 s; this only stops a hang
            with pytest.raises(DPoPReplayStoreError, match="in time"):
                await send(verifier, token, proof)
    assert "did not answer within 0.2 s" in caplog.text


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
