"""Issue 5's resilience scenarios, each through a real uvicorn and a real issuer.

The server runs ``_scenario_app.py`` (Auth0Middleware over a minimal endpoint, with a
JWKSCache whose background refresher lives in the app's lifespan) in a process of its
own; the issuer is a LocalIssuer HTTP server on 127.0.0.1 in this process, made to
misbehave on request. The cache's policy clock (TTL, cooldown, backoff, max_stale) is
moved through a test-only route instead of waiting; real time is spent only where it
is the point (the flood's 10 s, fetch deadlines, recovering by itself). A loop-lag
probe runs in the server's event loop through every scenario and must stay under
50 ms (scenario 6; see MAX_LOOP_LAG_MS).

Figures (fetch counts, successes, latencies, loop lag, recovery) are printed (see them
with ``pytest -rA tests/test_resilience.py``) and written to
``resilience_figures.json`` in pytest's base temporary directory.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from _servers import ClientPool, Reply, ScenarioServer, percentile, scenario_server

from asgi_auth0._signing import PrivateKey
from asgi_auth0.testing import LocalIssuer

# serial: the loop-lag and latency budgets below hold with the machine otherwise idle.
pytestmark = [pytest.mark.e2e, pytest.mark.serial, pytest.mark.anyio]

#: Scenario 6: the most a 10 ms sleep in the server's loop may overshoot, in ms (issue
#: 5's budget, in every CI run). Part of any overshoot is work that is due at once: in
#: the rotation scenario 200 requests wake together and each is verified and answered
#: back to back. The server runs uvicorn's compiled stack (httptools, uvloop: the dev
#: extra installs them, as ``uvicorn[standard]`` does in production); on the pure-Python
#: h11 + asyncio stack that burst alone measured 43-56 ms with one core busy elsewhere,
#: against 23-38 ms on the compiled one, on Python 3.10 to 3.13 and at the floors.
MAX_LOOP_LAG_MS = 50.0
#: Scheduling slack on top of fetch deadlines on a busy 2-core machine, in seconds.
MARGIN = 0.75
FIGURES: dict[str, Any] = {}
LAGS: dict[str, float] = {}


@pytest.fixture
def anyio_backend() -> str:
    # The code under test runs in the server process's loop (uvicorn: asyncio); this
    # side only sends requests, so running it on trio as well would double the time
    # of the heaviest tests without exercising anything more of the library. The
    # refresher's wiring is tested on both backends in test_middleware_lifespan.py.
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
def figures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    yield FIGURES
    if FIGURES:
        path = tmp_path_factory.getbasetemp() / "resilience_figures.json"
        path.write_text(json.dumps(FIGURES, indent=2, sort_keys=True))
        print(f"\nresilience figures written to {path}")


def record(name: str, **values: Any) -> None:
    FIGURES[name] = values
    print(f"\n[{name}] " + json.dumps(values, sort_keys=True))


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def settings_for(
    issuer: LocalIssuer, *, cache: dict[str, Any] | None = None, **config: Any
) -> dict[str, Any]:
    """Server settings: Auth0Config keywords bound to ``issuer``, JWKSCache extras."""
    base: dict[str, Any] = {
        "issuer": issuer.issuer,
        "jwks_uri": issuer.jwks_uri,
        "audience": issuer.audience,
        "algorithms": [issuer.alg],
        "jwks_fetch_timeout": 5.0,
    }
    base.update(config)
    return {"config": base, "cache": cache or {}}


@pytest.fixture
async def issuer(auth0_rsa_key: PrivateKey) -> AsyncIterator[LocalIssuer]:
    async with LocalIssuer(private_key=auth0_rsa_key) as issuer:
        try:
            yield issuer
        finally:
            # Let anything held or slowed go at once, so no teardown waits on it.
            issuer.heal()


@pytest.fixture
def server_log(tmp_path: Path) -> Path:
    return tmp_path / "server.log"


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[str, int], ClientPool]]:
    pools: list[ClientPool] = []

    def make(url: str, size: int = 20) -> ClientPool:
        pools.append(ClientPool(url, size=size))
        return pools[-1]

    yield make
    for pool in pools:
        await pool.aclose()


async def gather(calls: list[Awaitable[Reply]]) -> list[Reply]:
    """Run the requests concurrently; their replies in completion order."""
    replies: list[Reply] = []

    async def one(call: Awaitable[Reply]) -> None:
        replies.append(await call)

    async with anyio.create_task_group() as group:
        for call in calls:
            group.start_soon(one, call)
    return replies


def statuses(replies: list[Reply]) -> dict[int, int]:
    found: dict[int, int] = {}
    for reply in replies:
        found[reply.status] = found.get(reply.status, 0) + 1
    return found


async def check_lag(server: ScenarioServer, scenario: str) -> float:
    """Scenario 6, for one scenario: the probe ran throughout and stayed under budget."""
    lag = await server.loop_lag()
    assert lag["running"]
    assert lag["samples"] > 0
    assert lag["max_ms"] < MAX_LOOP_LAG_MS, f"{scenario}: the server's loop lagged: {lag}"
    LAGS[scenario] = max(LAGS.get(scenario, 0.0), float(lag["max_ms"]))
    return float(lag["max_ms"])


def assert_unavailable(reply: Reply) -> None:
    """503 (issuer unreachable), never 401, with a usable Retry-After."""
    assert reply.status == 503, (reply.status, reply.body)
    assert int(reply.headers["retry-after"]) >= 1
    assert reply.body["error"] == "temporarily_unavailable"
    assert "www-authenticate" not in reply.headers


# -- the probe itself ------------------------------------------------------------------


async def test_the_loop_lag_probe_sees_a_blocked_loop(
    issuer: LocalIssuer, server_log: Path, clients: Callable[[str, int], ClientPool]
) -> None:
    # Without this, a probe that measured nothing would pass every scenario below.
    async with scenario_server(settings_for(issuer), server_log) as server:
        await server.loop_lag(reset=True)
        await clients(server.url, 10).get("/_test/block?seconds=0.12")
        lag = await server.loop_lag()
    assert lag["max_ms"] >= 100
    assert server.stopped_cleanly


# -- 1. rotation -----------------------------------------------------------------------


async def test_rotation_200_concurrent_requests_with_a_new_kid_cause_one_fetch(
    issuer: LocalIssuer, server_log: Path, clients: Callable[[str, int], ClientPool]
) -> None:
    settings = settings_for(issuer, jwks_refresh_cooldown=30)
    async with scenario_server(settings, server_log) as server:
        pool = clients(server.url, 200)
        # Open the 200 connections first, so the burst is requests, not connects.
        warm = await gather([pool.get("/me", issuer.token(sub=f"old-{i}")) for i in range(200)])
        assert statuses(warm) == {200: 200}
        at_start = issuer.jwks_requests
        assert at_start == 1  # the warm-up at startup

        new_kid = issuer.rotate()
        tokens = [issuer.token(sub=f"user-{i}") for i in range(200)]
        # No waiting: the cooldown runs from refreshes that unknown kids trigger, and
        # the only fetch so far is the startup one.
        await server.loop_lag(reset=True)

        issuer.hold()
        replies: list[Reply] = []
        start = time.perf_counter()
        async with anyio.create_task_group() as group:

            async def one(token: str) -> None:
                replies.append(await pool.get("/me", token))

            for token in tokens:
                group.start_soon(one, token)
            # All 200 inside the server, waiting on the one fetch held at the issuer.
            await issuer.wait_for_waiting_async(1, timeout=10)
            await server.wait_inflight(200)
            fetches_while_held = issuer.jwks_requests - at_start
            issuer.release()
        elapsed = time.perf_counter() - start
        fetches = issuer.jwks_requests - at_start
        lag = await check_lag(server, "1_rotation")
        server_loop = (await server.loop_lag())["server_loop"]
    assert server.stopped_cleanly
    assert fetches_while_held == 1
    assert fetches == 1
    assert statuses(replies) == {200: 200}
    assert {r.body["sub"] for r in replies} == {f"user-{i}" for i in range(200)}
    latencies = [r.elapsed for r in replies]
    record(
        "1_rotation",
        requests=200,
        successes=statuses(replies)[200],
        jwks_fetches=fetches,
        burst_seconds=round(elapsed, 3),
        latency_p50_ms=ms(percentile(latencies, 0.5)),
        latency_p99_ms=ms(percentile(latencies, 0.99)),
        max_loop_lag_ms=lag,
        server_loop=server_loop,
        note="latencies include the time the one fetch was held until all 200 arrived",
        new_kid=new_kid,
    )


# -- 2. random-kid flood ---------------------------------------------------------------


@pytest.mark.slow
async def test_a_random_kid_flood_costs_one_fetch_per_cooldown_and_valid_requests_pass(
    issuer: LocalIssuer, server_log: Path, clients: Callable[[str, int], ClientPool]
) -> None:
    cooldown = 2.5
    flood, valid_count, duration = 1000, 200, 10.0
    settings = settings_for(issuer, jwks_refresh_cooldown=cooldown)
    # Tokens signed by the issuer's real key, so only the kid lookup can refuse them.
    attack = [
        issuer.unknown_kid_token(kid=f"random-{random.getrandbits(64):016x}") for _ in range(flood)
    ]
    valid = [issuer.token(sub=f"user-{i}") for i in range(valid_count)]
    async with scenario_server(settings, server_log) as server:
        pool = clients(server.url, 60)
        await gather([pool.get("/me", valid[i]) for i in range(60)])  # open connections
        await server.advance_clock(cooldown)  # the first random kid may fetch at once
        at_start = issuer.jwks_requests
        await server.loop_lag(reset=True)
        events_before = len(await server.events())

        attacked: list[Reply] = []
        served: list[Reply] = []

        async def send_at(at: float, token: str, into: list[Reply]) -> None:
            await anyio.sleep_until(at)
            into.append(await pool.get("/me", token))

        start = anyio.current_time()
        wall = time.perf_counter()
        with anyio.fail_after(duration + 20):
            async with anyio.create_task_group() as group:
                # 100 random kids per second and, interleaved, 20 valid tokens per second.
                for i, token in enumerate(attack):
                    group.start_soon(send_at, start + i * duration / flood, token, attacked)
                for i, token in enumerate(valid):
                    at = start + (i + 0.5) * duration / valid_count
                    group.start_soon(send_at, at, token, served)
        elapsed = time.perf_counter() - wall
        fetches = issuer.jwks_requests - at_start
        refreshes = [e for e in (await server.events())[events_before:] if e[1] == "refresh"]
        counts = (await server.status())["events"]
        lag = await check_lag(server, "2_flood")
    assert server.stopped_cleanly

    # Every random kid is an invalid token (401 unknown_kid): never a 5xx, never a hang.
    assert statuses(attacked) == {401: flood}
    assert {r.body["reason"] for r in attacked} == {"unknown_kid"}
    # At most one fetch per cooldown window over the flood; and the flood did reach
    # the issuer (so the cooldown, not something else, is what held it back).
    bound = int(elapsed // cooldown) + 1
    assert 2 <= fetches <= bound, (fetches, bound, elapsed)
    # When each fetch began, on the cache's own clock (the one the cooldown runs on):
    # exact, however long a fetch took on a loaded machine.
    starts = [e[2]["started"] for e in refreshes]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= cooldown for gap in gaps), gaps
    # Concurrent valid requests all succeeded, and fast.
    assert statuses(served) == {200: valid_count}
    latencies = [r.elapsed for r in served]
    record(
        "2_flood",
        random_kid_requests=flood,
        random_kid_401=statuses(attacked).get(401, 0),
        valid_requests=valid_count,
        valid_successes=statuses(served).get(200, 0),
        seconds=round(elapsed, 2),
        cooldown_s=cooldown,
        jwks_fetches=fetches,
        fetch_bound=bound,
        fetch_gaps_s=[round(g, 2) for g in gaps],
        unknown_kid_actions={k: v for k, v in counts.items() if k.startswith("unknown_kid:")},
        valid_p50_ms=ms(percentile(latencies, 0.5)),
        valid_p99_ms=ms(percentile(latencies, 0.99)),
        valid_max_ms=ms(max(latencies)),
        random_kid_p50_ms=ms(percentile([r.elapsed for r in attacked], 0.5)),
        random_kid_p99_ms=ms(percentile([r.elapsed for r in attacked], 0.99)),
        max_loop_lag_ms=lag,
    )


# -- 3. outage -------------------------------------------------------------------------

FETCH_TIMEOUT = 1.0
TTL, COOLDOWN, MAX_STALE = 600, 30, 3600
BACKOFF_MAX = 300

OUTAGES: dict[str, Callable[[LocalIssuer], None]] = {
    "http_500": lambda issuer: issuer.fail_with(500),
    "timeout": lambda issuer: issuer.slow(30),
    "connection_reset": lambda issuer: issuer.reset_connections(),
    "invalid_json": lambda issuer: issuer.garbage(),
    "oversized_declared": lambda issuer: issuer.oversized(2 * 1024 * 1024),
    "oversized_streamed": lambda issuer: issuer.oversized(2 * 1024 * 1024, content_length=False),
}


@pytest.mark.slow
@pytest.mark.parametrize("outage", list(OUTAGES))
async def test_an_outage_keeps_known_kids_working_and_answers_unknown_kids_503_quickly(
    issuer: LocalIssuer,
    server_log: Path,
    clients: Callable[[str, int], ClientPool],
    outage: str,
) -> None:
    settings = settings_for(
        issuer,
        jwks_fetch_timeout=FETCH_TIMEOUT,
        jwks_cache_ttl=TTL,
        jwks_refresh_cooldown=COOLDOWN,
        jwks_max_stale=MAX_STALE,
        cache={"backoff_max": BACKOFF_MAX},
    )
    users = iter(range(10_000))

    def known(n: int) -> list[str]:
        return [issuer.token(sub=f"user-{next(users)}") for _ in range(n)]

    async with scenario_server(settings, server_log) as server:
        pool = clients(server.url, 20)
        assert statuses(await gather([pool.get("/me", t) for t in known(20)])) == {200: 20}
        await server.loop_lag(reset=True)

        OUTAGES[outage](issuer)
        # Past freshness: known kids are served from the stale set at once and wake
        # the refresher, whose fetch fails.
        await server.advance_clock(TTL + 1)
        stale = await gather([pool.get("/me", t) for t in known(20)])
        await server.wait_event("refresh_error", 1, timeout=FETCH_TIMEOUT + 10)

        # Within cooldown and backoff of that failure: an unknown kid is 503 at once.
        immediate = await pool.get("/me", issuer.unknown_kid_token())

        # Past cooldown and backoff: an unknown kid makes the cache fetch, which fails:
        # 503 within the fetch deadline. Known kids meanwhile never wait on it.
        await server.advance_clock(BACKOFF_MAX + 1)
        fetching: list[Reply] = []
        during: list[Reply] = []
        async with anyio.create_task_group() as group:

            async def unknown() -> None:
                fetching.append(await pool.get("/me", issuer.unknown_kid_token()))

            group.start_soon(unknown)
            during.extend(await gather([pool.get("/me", t) for t in known(10)]))

        # A minute before max_stale (counted from the end of freshness) runs out,
        # known kids still work (real seconds have passed too, hence the minute).
        await server.advance_clock(MAX_STALE - (BACKOFF_MAX + 1) - 60)
        near_end = await gather([pool.get("/me", t) for t in known(10)])
        # Past max_stale: the set is no longer used: 503 with Retry-After, never 401.
        await server.advance_clock(120)
        expired = await gather([pool.get("/me", t) for t in known(5)])

        # The issuer heals: the next fetch (after backoff) brings it all back.
        issuer.heal()
        await server.advance_clock(BACKOFF_MAX + 1)
        healed = await pool.get("/me", issuer.token(sub="after"))
        status = (await server.status())["cache"]
        lag = await check_lag(server, f"3_outage_{outage}")
    assert server.stopped_cleanly

    assert statuses(stale) == {200: 20}
    assert max(r.elapsed for r in stale) < FETCH_TIMEOUT
    assert_unavailable(immediate)
    assert immediate.elapsed < MARGIN
    assert len(fetching) == 1
    assert_unavailable(fetching[0])
    assert fetching[0].elapsed < FETCH_TIMEOUT + MARGIN
    assert statuses(during) == {200: 10}
    assert statuses(near_end) == {200: 10}
    for reply in expired:
        assert_unavailable(reply)
        assert reply.elapsed < FETCH_TIMEOUT + MARGIN
    assert healed.status == 200
    assert status["state"] == "fresh"
    assert status["failed_fetch_count"] >= 2
    record(
        f"3_outage_{outage}",
        fetch_timeout_s=FETCH_TIMEOUT,
        known_kid_stale_ok=f"{statuses(stale).get(200, 0)}/20",
        known_kid_stale_max_ms=ms(max(r.elapsed for r in stale)),
        known_kid_during_failing_fetch_max_ms=ms(max(r.elapsed for r in during)),
        known_kid_near_max_stale_ok=f"{statuses(near_end).get(200, 0)}/10",
        unknown_kid_503_in_cooldown_ms=ms(immediate.elapsed),
        unknown_kid_503_with_fetch_ms=ms(fetching[0].elapsed),
        retry_after_s=int(fetching[0].headers["retry-after"]),
        past_max_stale=f"{statuses(expired)}",
        past_max_stale_max_ms=ms(max(r.elapsed for r in expired)),
        max_loop_lag_ms=lag,
    )


# -- 4. slow issuer --------------------------------------------------------------------


async def test_a_slow_issuer_never_delays_requests_with_known_keys(
    issuer: LocalIssuer, server_log: Path, clients: Callable[[str, int], ClientPool]
) -> None:
    # A fetch deadline above the issuer's 10 s: the slow answer would be accepted, so
    # the refresh really is in flight for 10 s while the requests below run.
    settings = settings_for(issuer, jwks_fetch_timeout=15, jwks_cache_ttl=TTL)
    async with scenario_server(settings, server_log) as server:
        pool = clients(server.url, 20)
        warm = await gather([pool.get("/me", issuer.token(sub=f"warm-{i}")) for i in range(20)])
        assert statuses(warm) == {200: 20}
        await server.loop_lag(reset=True)

        issuer.slow(10)
        # Into the refresh-ahead window (80% of freshness): a request wakes the
        # refresher, whose fetch now takes 10 s.
        await server.advance_clock(TTL * 0.8 + 1)
        first = await pool.get("/me", issuer.token(sub="first"))
        await issuer.wait_for_waiting_async(1, timeout=10)
        fetch_started = time.perf_counter()

        # 2 s of traffic with new tokens (each one needs a key lookup), first in the
        # refresh-ahead window, then past freshness (stale) with the fetch still out.
        replies: list[Reply] = []
        tokens = [issuer.token(sub=f"user-{i}") for i in range(100)]
        start = anyio.current_time()

        async def send_at(at: float, token: str) -> None:
            await anyio.sleep_until(at)
            replies.append(await pool.get("/me", token))

        async with anyio.create_task_group() as group:
            for i, token in enumerate(tokens[:50]):
                group.start_soon(send_at, start + i * 0.02, token)
        await server.advance_clock(TTL * 0.2)  # now past freshness
        start = anyio.current_time()
        async with anyio.create_task_group() as group:
            for i, token in enumerate(tokens[50:]):
                group.start_soon(send_at, start + i * 0.02, token)
        traffic_seconds = time.perf_counter() - fetch_started
        still_in_flight = issuer.waiting
        status = (await server.status())["cache"]
        lag = await check_lag(server, "4_slow_issuer")

        # Teardown: heal() answers the slow request at once; the refresh completes.
        issuer.heal()
        await server.wait_event("refresh", 2, timeout=10)
    assert server.stopped_cleanly

    assert first.status == 200
    assert first.elapsed < 1.0
    assert still_in_flight == 1  # all of the traffic ran while the fetch was out
    assert traffic_seconds < 10
    assert status["state"] == "stale"
    assert statuses(replies) == {200: 100}
    latencies = [r.elapsed for r in replies]
    # Not waiting on a 10 s fetch means milliseconds; 1 s leaves room for a busy CI.
    assert max(latencies) < 1.0
    record(
        "4_slow_issuer",
        issuer_delay_s=10,
        requests=len(replies),
        successes=statuses(replies).get(200, 0),
        fetch_still_in_flight=bool(still_in_flight),
        latency_p50_ms=ms(percentile(latencies, 0.5)),
        latency_p99_ms=ms(percentile(latencies, 0.99)),
        latency_max_ms=ms(max(latencies)),
        first_request_ms=ms(first.elapsed),
        max_loop_lag_ms=lag,
    )


# -- 5. issuer down at startup ---------------------------------------------------------


async def test_an_issuer_down_at_startup_gives_503_then_recovers_by_itself(
    issuer: LocalIssuer, server_log: Path, clients: Callable[[str, int], ClientPool]
) -> None:
    issuer.stop()  # the port is kept: start() brings it back at the same URL
    # Real time here: the refresher retries on its own, with a short backoff.
    settings = settings_for(
        issuer, jwks_fetch_timeout=2, cache={"backoff_min": 0.25, "backoff_max": 1.0}
    )
    token = issuer.token(sub="patient")
    async with scenario_server(settings, server_log) as server:
        # The app started: its lifespan completed although the keys could not load.
        status = (await server.status())["cache"]
        assert status["state"] == "failing"
        assert status["background"] is True
        await server.loop_lag(reset=True)
        pool = clients(server.url, 10)
        down = await gather([pool.get("/me", token) for _ in range(5)])
        events_seen = len(await server.events())

        issuer.start()
        restarted = time.monotonic()
        # No request from here on until the keys are back: the refresher alone.
        await server.wait_event("refresh", 1, timeout=10)
        loaded = next(e for e in (await server.events())[events_seen:] if e[1] == "refresh")
        recovery = loaded[0] - restarted  # both CLOCK_MONOTONIC on this machine
        up = await pool.get("/me", token)
        lag = await check_lag(server, "5_down_at_startup")
    assert server.stopped_cleanly

    for reply in down:
        assert_unavailable(reply)
        assert reply.elapsed < 2 + MARGIN
    assert loaded[2]["trigger"] == "background"
    assert up.status == 200
    assert up.body == {"sub": "patient"}
    # Backoff is capped at 1 s, so the first retry after the restart comes within it.
    assert 0 <= recovery < 1.0 + MARGIN
    record(
        "5_down_at_startup",
        startup_state=status["state"],
        while_down=statuses(down),
        retry_after_s=int(down[0].headers["retry-after"]),
        time_to_503_max_ms=ms(max(r.elapsed for r in down)),
        recovery_s_after_issuer_start=round(recovery, 3),
        recovered_by="background refresher (no request)",
        backoff_s="0.25..1.0",
        max_loop_lag_ms=lag,
    )


# -- 6. the event loop is never blocked -------------------------------------------------


def test_the_event_loop_was_never_blocked_through_the_scenarios() -> None:
    # Each scenario asserted its own bound; this collects them into one figure.
    if not LAGS:
        pytest.skip("no scenario ran in this session")
    worst = max(LAGS.values())
    record(
        "6_loop_lag",
        max_ms=worst,
        bound_ms=MAX_LOOP_LAG_MS,
        per_scenario=dict(sorted(LAGS.items())),
    )
    assert worst < MAX_LOOP_LAG_MS
