"""Auth0Middleware and the app's lifespan: the key source's background refresher.

The refresher runs for as long as the lifespan does (on by default for a verifier
the middleware built, opt-in for one passed in), is stopped at shutdown *before* the
verifier is closed, never fails or wraps the application's lifespan, and without any
lifespan nothing runs and keys load on demand.

Keys come over real HTTP from a LocalIssuer on 127.0.0.1; the lifespan is driven
message by message so tests can act between startup and shutdown. Waits use events,
the issuer's counters and ``wait_for_waiting_async``, never sleeps.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from _clock import Clock
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_auth0._config import Auth0Config
from asgi_auth0._errors import ConfigError
from asgi_auth0._jwks import JWKSCache
from asgi_auth0._keys import StaticKeySet
from asgi_auth0._middleware import Auth0Middleware
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio

Message = dict[str, Any]


class Events:
    """An ``on_event`` hook that records event names and wakes waiters."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.info: list[Mapping[str, Any]] = []
        self._changed: anyio.Event | None = None

    def __call__(self, name: str, info: Mapping[str, Any]) -> None:
        self.names.append(name)
        self.info.append(dict(info))
        if self._changed is not None:
            self._changed.set()

    async def wait_for(self, name: str, count: int = 1) -> None:
        with anyio.fail_after(5):
            while self.names.count(name) < count:
                self._changed = anyio.Event()
                await self._changed.wait()


class LifespanDriver:
    """Runs an ASGI app's lifespan in a task: startup on enter, shutdown on exit,
    recording every message the app sends (and, through ``marks``, what happened
    in between)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sent: list[Message] = []
        self.marks: list[str] = []
        self.error: BaseException | None = None
        self._to_app, self._inbox = anyio.create_memory_object_stream[Message](4)
        self._replied: anyio.Event | None = None

    async def _run(self) -> None:
        async def receive() -> Message:
            return await self._inbox.receive()

        async def send(message: Message) -> None:
            self.sent.append(message)
            self.marks.append(message["type"])
            if self._replied is not None:
                self._replied.set()

        try:
            await self.app(
                {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send
            )
        except Exception as exc:  # recorded for the test to inspect
            self.error = exc
        finally:
            if self._replied is not None:
                self._replied.set()

    async def _say(self, message_type: str) -> None:
        self._replied = anyio.Event()
        await self._to_app.send({"type": message_type})
        with anyio.fail_after(10):
            await self._replied.wait()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LifespanDriver]:
        async with anyio.create_task_group() as group:
            group.start_soon(self._run)
            await self._say("lifespan.startup")
            try:
                yield self
            finally:
                if self.marks and self.marks[-1] == "lifespan.startup.complete":
                    await self._say("lifespan.shutdown")
                await self._to_app.aclose()
                await self._inbox.aclose()


def plain_app(log: list[str] | None = None) -> Starlette:
    async def whoami(request: Request) -> JSONResponse:
        claims = request.state.claims
        return JSONResponse({"sub": None if claims is None else claims.sub})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if log is not None:
            log.append("app startup")
        yield
        if log is not None:
            log.append("app shutdown")

    return Starlette(routes=[Route("/", whoami)], lifespan=lifespan)


def http_client(app: Any) -> httpx.AsyncClient:
    # ASGITransport sends no lifespan: requests reach the same middleware instance
    # whose lifespan the driver runs.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cache_of(mw: Auth0Middleware) -> JWKSCache:
    key_set = mw.verifier.key_set
    assert isinstance(key_set, JWKSCache)
    return key_set


@pytest.fixture
async def fetcher() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def user_verifier(
    issuer: LocalIssuer,
    client: httpx.AsyncClient,
    *,
    clock: Clock | None = None,
    events: Events | None = None,
    **options: Any,
) -> TokenVerifier:
    config = issuer.config()
    cache = JWKSCache.from_config(
        config,
        http_client=client,
        clock=clock or Clock(),
        on_event=events,
        jitter=lambda: 0.0,
        **options,
    )
    return TokenVerifier(config, key_set=cache)


# -- a verifier built by the middleware -------------------------------------------------


async def test_a_built_verifier_refreshes_in_the_background_for_the_lifespan(
    auth0_issuer: LocalIssuer,
) -> None:
    # ttl of 1 s: the runner refreshes ahead at 0.8 s, by itself, with no request.
    mw = Auth0Middleware(plain_app(), config=auth0_issuer.config(jwks_cache_ttl=1))
    cache = cache_of(mw)
    assert cache.status().background is False
    async with LifespanDriver(mw).running():
        status = cache.status()
        assert status.background is True
        assert status.state == "fresh"
        # The warm-up joined the runner's first load: one fetch, not two.
        assert auth0_issuer.jwks_requests == 1
        # With no request at all, the runner refreshes ahead (held here to see it).
        auth0_issuer.hold()
        await auth0_issuer.wait_for_waiting_async(1)
        assert auth0_issuer.jwks_requests >= 2
        auth0_issuer.release()
    assert cache.status().background is False


async def test_the_refresher_does_not_rely_on_an_infinite_sleep(
    auth0_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # On some event loops (granian's rloop, 0.5) an infinite sleep returns at once:
    # the refresher, which waited with sleep_forever(), ended at startup, silently.
    async def returns_at_once() -> None:
        return None

    monkeypatch.setattr(anyio, "sleep_forever", returns_at_once)
    caplog.set_level(logging.ERROR, logger="asgi_auth0.middleware")
    mw = Auth0Middleware(plain_app(), config=auth0_issuer.config(jwks_cache_ttl=1))
    cache = cache_of(mw)
    async with LifespanDriver(mw).running():
        await anyio.wait_all_tasks_blocked()
        assert cache.status().background is True
        auth0_issuer.hold()
        await auth0_issuer.wait_for_waiting_async(1)  # it refreshes ahead by itself
        auth0_issuer.release()
    assert not caplog.records


async def test_the_refresher_stops_before_the_verifier_is_closed(
    auth0_issuer: LocalIssuer,
) -> None:
    mw = Auth0Middleware(plain_app(), config=auth0_issuer.config(jwks_cache_ttl=1))
    cache = cache_of(mw)
    driver = LifespanDriver(mw)
    async with driver.running():
        # Shut down while the runner's refresh is in flight (held by the issuer).
        auth0_issuer.hold()
        await auth0_issuer.wait_for_waiting_async(1)
    status = cache.status()
    # Stopped by cancellation, not broken by a client closed under it: no failed
    # fetch was recorded (closing first fails the held fetch), and nothing fetched
    # after the close (which would have made a new client).
    assert status.background is False
    assert status.fetch_count >= 2
    assert status.failed_fetch_count == 0
    assert cache._client is None
    assert driver.marks == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    auth0_issuer.release()


async def test_background_refresh_can_be_turned_off(auth0_issuer: LocalIssuer) -> None:
    mw = Auth0Middleware(plain_app(), config=auth0_issuer.config(), background_refresh=False)
    async with LifespanDriver(mw).running():
        assert cache_of(mw).status().background is False
        assert auth0_issuer.jwks_requests == 1  # warmed all the same


async def test_without_warm_up_the_runner_still_loads_the_keys(
    auth0_issuer: LocalIssuer, fetcher: httpx.AsyncClient
) -> None:
    events = Events()
    mw = Auth0Middleware(
        plain_app(),
        verifier=user_verifier(auth0_issuer, fetcher, events=events),
        background_refresh=True,
        warm_keys_on_startup=False,
    )
    async with LifespanDriver(mw).running():
        await events.wait_for("refresh")
        assert events.info[0]["trigger"] == "background"
        assert cache_of(mw).status().state == "fresh"


# -- a verifier passed in ---------------------------------------------------------------


async def test_a_passed_verifier_gets_no_refresher_unless_asked(
    auth0_issuer: LocalIssuer, fetcher: httpx.AsyncClient
) -> None:
    verifier = user_verifier(auth0_issuer, fetcher)
    mw = Auth0Middleware(plain_app(), verifier=verifier)
    async with LifespanDriver(mw).running():
        assert cache_of(mw).status().background is False
    assert auth0_issuer.jwks_requests == 1  # warmed, never refreshed in the background


async def test_a_passed_verifier_can_opt_in_and_is_never_closed(
    auth0_issuer: LocalIssuer,
) -> None:
    clock, events = Clock(), Events()
    verifier = TokenVerifier(
        auth0_issuer.config(),
        key_set=JWKSCache.from_config(auth0_issuer.config(), clock=clock, on_event=events),
    )
    mw = Auth0Middleware(plain_app(), verifier=verifier, background_refresh=True)
    cache = cache_of(mw)
    token = auth0_issuer.token(sub="opt-in")
    try:
        async with LifespanDriver(mw).running(), http_client(mw) as c:
            assert cache.status().background is True
            # Refresh ahead: at 80% of freshness a request is answered from the
            # cached set at once, while the runner fetches (held by the issuer).
            auth0_issuer.hold()
            clock.now += 600 * 0.8 + 1
            r = await c.get("/", headers=bearer(token))
            assert r.json() == {"sub": "opt-in"}
            await auth0_issuer.wait_for_waiting_async(1)
            auth0_issuer.release()
            await events.wait_for("refresh", 2)
            assert events.info[-1]["trigger"] == "background"
        assert cache.status().background is False
        # The cache's own client is the caller's to close.
        assert cache._client is not None
    finally:
        await cache.aclose()


async def test_the_refresher_stops_before_the_apps_own_shutdown_code_runs(
    auth0_issuer: LocalIssuer,
) -> None:
    # So an application can close a key source it passed in, from its own lifespan.
    cache = JWKSCache.from_config(auth0_issuer.config())
    seen: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        seen.append(cache.status().background)
        yield
        seen.append(cache.status().background)
        await cache.aclose()

    verifier = TokenVerifier(auth0_issuer.config(), key_set=cache)
    mw = Auth0Middleware(Starlette(lifespan=lifespan), verifier=verifier, background_refresh=True)
    async with LifespanDriver(mw).running():
        assert cache.status().background is True
    assert seen == [True, False]
    assert cache._client is None
    assert cache.status().failed_fetch_count == 0


async def test_a_shared_key_source_gets_one_refresher_and_startup_still_completes(
    auth0_issuer: LocalIssuer, fetcher: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    verifier = user_verifier(auth0_issuer, fetcher)
    first = Auth0Middleware(plain_app(), verifier=verifier, background_refresh=True)
    second = Auth0Middleware(plain_app(), verifier=verifier, background_refresh=True)
    async with LifespanDriver(first).running():
        driver = LifespanDriver(second)
        async with driver.running():
            assert driver.marks == ["lifespan.startup.complete"]
            assert cache_of(first).status().background is True
        # The second one's shutdown left the first one's refresher alone.
        assert cache_of(first).status().background is True
        assert driver.error is None
    reasons = [getattr(r, "reason", None) for r in caplog.records]
    assert reasons.count("refresher_not_started") == 1


async def test_a_static_key_set_needs_no_refresher(auth0_issuer: LocalIssuer) -> None:
    verifier = TokenVerifier(auth0_issuer.config(), key_set=StaticKeySet(auth0_issuer.jwks))
    log: list[str] = []
    mw = Auth0Middleware(plain_app(log), verifier=verifier, background_refresh=True)
    async with LifespanDriver(mw).running(), http_client(mw) as c:
        r = await c.get("/", headers=bearer(auth0_issuer.token(sub="static")))
        assert r.json() == {"sub": "static"}
    assert log == ["app startup", "app shutdown"]
    assert auth0_issuer.jwks_requests == 0


@pytest.mark.parametrize("value", ["yes", 1, 0.0])
def test_background_refresh_must_be_a_bool_or_none(
    auth0_config: Auth0Config, value: object
) -> None:
    with pytest.raises(ConfigError, match="background_refresh"):
        Auth0Middleware(plain_app(), config=auth0_config, background_refresh=value)  # type: ignore[arg-type]


# -- the refresher never harms the application's lifespan ------------------------------


class CrashingSource:
    """A key source whose background refresher starts, then crashes on a signal."""

    generation = 0

    def __init__(self) -> None:
        self.crash = anyio.Event()
        self.stopped = anyio.Event()

    async def get_key(self, kid: str | None, alg: str) -> Any:
        raise AssertionError("not used")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[CrashingSource]:
        async def runner() -> None:
            await self.crash.wait()
            raise RuntimeError("refresher bug")

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(runner)
                yield self
                group.cancel_scope.cancel()
        finally:
            self.stopped.set()


async def test_a_crashing_refresher_is_logged_and_the_app_lives_on(
    auth0_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    source = CrashingSource()
    verifier = TokenVerifier(auth0_issuer.config(), key_set=source)
    log: list[str] = []
    mw = Auth0Middleware(plain_app(log), verifier=verifier, background_refresh=True)
    driver = LifespanDriver(mw)
    with caplog.at_level(logging.ERROR, logger="asgi_auth0.middleware"):
        async with driver.running():
            source.crash.set()
            with anyio.fail_after(5):
                await source.stopped.wait()
            assert log == ["app startup"]  # still running
    assert log == ["app startup", "app shutdown"]
    assert driver.marks == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert [getattr(r, "reason", None) for r in caplog.records] == ["refresher_failed"]


async def test_an_app_lifespan_error_propagates_unwrapped_and_the_refresher_stops(
    auth0_issuer: LocalIssuer,
) -> None:
    @asynccontextmanager
    async def failing(app: Starlette) -> AsyncIterator[None]:
        raise LookupError("database unreachable")
        yield  # pragma: no cover

    mw = Auth0Middleware(Starlette(lifespan=failing), config=auth0_issuer.config())
    driver = LifespanDriver(mw)
    async with driver.running():
        pass
    assert driver.marks == ["lifespan.startup.failed"]
    # Not an exception group: the server reports the application's own error.
    assert type(driver.error) is LookupError
    status = cache_of(mw).status()
    assert status.background is False
    assert cache_of(mw)._client is None  # closed on startup.failed, after the stop


# -- no lifespan at all -----------------------------------------------------------------


async def test_without_a_lifespan_keys_load_and_refresh_on_demand(
    auth0_issuer: LocalIssuer,
) -> None:
    mw = Auth0Middleware(plain_app(), config=auth0_issuer.config())
    cache = cache_of(mw)
    try:
        async with http_client(mw) as c:
            r = await c.get("/", headers=bearer(auth0_issuer.token(sub="no-lifespan")))
        assert r.json() == {"sub": "no-lifespan"}
        status = cache.status()
        assert (status.background, status.state, status.fetch_count) == (False, "fresh", 1)
    finally:
        await cache.aclose()
