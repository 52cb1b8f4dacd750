"""Log rules: what an attacker's tokens can make us write, and what we read for it.

The unknown-kid INFO line is rate-limited to one per 60 s window: these tests pin the
flood it exists for, the window's edge and the wording of the line that opens a new
window (the last two found by mutation testing). The verifier's DEBUG
line reads kid, alg and iss again for a token refused before parsing completed, up to
the size the parser itself accepts.
"""

# ruff: noqa: F811 (the fixtures imported from _jwks_support are used by name)

from __future__ import annotations

import ast
import logging
from pathlib import Path

import anyio
import pytest
from _clock import Clock
from _jwks_support import (  # noqa: F401 (fixtures, used by name)
    Factory,
    client,
    clock,
    issuer,
    make,
)

import asgi_auth0
from asgi_auth0 import (
    Auth0Config,
    InvalidIssuerError,
    StaticKeySet,
    TokenTooLargeError,
    TokenVerifier,
    UnknownKeyError,
)
from asgi_auth0._jwks import JWKSCache
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio


def unknown_kid_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "asgi_auth0.jwks" and r.getMessage().startswith("unknown kid")
    ]


async def loaded_cache(
    make: Factory, clock: Clock, caplog: pytest.LogCaptureFixture, *, cooldown: float
) -> JWKSCache:
    """A cache with its keys loaded and its cooldown over, logging at DEBUG."""
    cache = make(refresh_cooldown=cooldown)
    await cache.refresh()
    clock.advance(31)
    caplog.set_level(logging.DEBUG, logger="asgi_auth0.jwks")
    return cache


async def miss(cache: JWKSCache, kid: str) -> None:
    with pytest.raises(UnknownKeyError):
        await cache.get_key(kid, "ES256")


async def test_unknown_kids_joining_one_refresh_log_one_info_line_per_minute(
    issuer: LocalIssuer, make: Factory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # Every caller that joined the refresh and still misses its kid used to log at
    # INFO: 300 concurrent random kids, 300 lines, each with a kid the sender chose.
    cache = await loaded_cache(make, clock, caplog, cooldown=30)

    async def flood(prefix: str, n: int) -> None:
        issuer.hold()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(miss, cache, f"{prefix}-{i}")
            await issuer.wait_for_waiting_async(1)
            await anyio.wait_all_tasks_blocked()
            issuer.release()

    def lines(level: int) -> list[str]:
        return [text for at, text in unknown_kid_lines(caplog) if at == level]

    await flood("random", 300)
    assert issuer.jwks_requests == 2
    assert len(lines(logging.INFO)) == 1
    assert len(lines(logging.DEBUG)) == 299  # each one is still there at DEBUG
    # A minute on, the next refresh's first miss is at INFO again, with the count.
    clock.advance(61)
    await flood("later", 5)
    assert issuer.jwks_requests == 3
    info = lines(logging.INFO)
    assert len(info) == 2
    assert "(299 more unknown kids, at DEBUG, since the line 61 s ago)" in info[1]


async def test_an_unknown_kid_exactly_a_window_after_the_info_line_is_at_info(
    issuer: LocalIssuer, make: Factory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # The window is 60 s: the line 60 s after the last INFO line opens the next one.
    cache = await loaded_cache(make, clock, caplog, cooldown=20)
    await miss(cache, "first")
    clock.advance(30)
    await miss(cache, "within")
    clock.advance(30)  # exactly 60 s after the first line
    await miss(cache, "edge")
    assert issuer.jwks_requests == 4  # each miss was past the cooldown: a refresh each
    levels = [level for level, _ in unknown_kid_lines(caplog)]
    assert levels == [logging.INFO, logging.DEBUG, logging.INFO]


async def test_the_next_info_line_counts_hidden_kids_only_when_there_were_some(
    issuer: LocalIssuer, make: Factory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # After a quiet minute (no kid demoted to DEBUG) the INFO line has no
    # "(0 more unknown kids ...)" tail: there is nothing to count.
    cache = await loaded_cache(make, clock, caplog, cooldown=30)
    await miss(cache, "first")
    clock.advance(61)
    await miss(cache, "second")
    lines = unknown_kid_lines(caplog)
    # The line names whose key set, by the URL it came from (a jwks_uri of another
    # tenant shows only there).
    assert lines == [
        (logging.INFO, f"unknown kid 'first': not in the key set of {issuer.jwks_uri}"),
        (logging.INFO, f"unknown kid 'second': not in the key set of {issuer.jwks_uri}"),
    ]


async def test_a_token_of_exactly_the_size_limit_refused_early_logs_its_kid_alg_iss(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    # The parser accepts a token of exactly max_token_size bytes, so the DEBUG line
    # reads it too: a token from another issuer shows the iss it carries.
    token = issuer.token(iss="https://other.example/")
    config = Auth0Config(
        issuer=issuer.issuer,
        audience="https://api.example.com",
        algorithms=("ES256",),
        max_token_size=len(token),
    )
    verifier = TokenVerifier(config, key_set=StaticKeySet(issuer.jwks))
    with (
        caplog.at_level(logging.DEBUG, logger="asgi_auth0.verify"),
        pytest.raises(InvalidIssuerError),
    ):
        await verifier.verify(token)
    [line] = [r.getMessage() for r in caplog.records if r.name == "asgi_auth0.verify"]
    assert f"kid='{issuer.current_kid}' alg='ES256' iss='https://other.example/'" in line
    # One byte over the limit, nothing is read: the parser never looked at it either.
    caplog.clear()
    with (
        caplog.at_level(logging.DEBUG, logger="asgi_auth0.verify"),
        pytest.raises(TokenTooLargeError),
    ):
        await verifier.verify(token + "A")
    [line] = [r.getMessage() for r in caplog.records if r.name == "asgi_auth0.verify"]
    assert "kid=None alg=None iss=None" in line


@pytest.mark.parametrize("kid_length", [1, 2, 3, 4])
async def test_early_rejections_read_kid_and_iss_whatever_the_segment_length(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture, kid_length: int
) -> None:
    # Token segments are unpadded base64url: the DEBUG line's second reading restores
    # the padding for each length a segment can have (every residue mod 4).
    kid = "k" * kid_length
    iss = "https://other.example/" + "p" * kid_length
    token = issuer.sign({"alg": "ES256", "kid": kid}, {"iss": iss, "exp": 2**31})
    config = Auth0Config(
        issuer=issuer.issuer, audience="https://api.example.com", algorithms=("ES256",)
    )
    verifier = TokenVerifier(config, key_set=StaticKeySet(issuer.jwks))
    with (
        caplog.at_level(logging.DEBUG, logger="asgi_auth0.verify"),
        pytest.raises(InvalidIssuerError),
    ):
        await verifier.verify(token)
    [line] = [r.getMessage() for r in caplog.records if r.name == "asgi_auth0.verify"]
    assert f"kid='{kid}' alg='ES256' iss='{iss}'" in line


_LOG_METHODS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})


def _records_without_reason(path: Path) -> list[str]:
    """The library's logging calls in ``path`` that pass no ``extra`` with a
    ``reason`` key (as a literal dict, so that it shows in review)."""
    missing = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _LOG_METHODS
            and getattr(node.func.value, "id", getattr(node.func.value, "attr", None))
            in ("logger", "_logger")
        ):
            continue
        extra = next((k.value for k in node.keywords if k.arg == "extra"), None)
        keys = (
            [k.value for k in extra.keys if isinstance(k, ast.Constant)]
            if isinstance(extra, ast.Dict)
            else []
        )
        if "reason" not in keys:
            missing.append(f"{path.name}:{node.lineno}")
    return missing


def test_every_record_the_library_writes_has_a_reason() -> None:
    # JSON log pipelines key on the reason extra (README, Logs); the testing kit's
    # own lines are for test authors and stay plain.
    package = Path(asgi_auth0.__file__).parent
    sources = [p for p in sorted(package.glob("*.py")) if p.name != "testing.py"]
    missing = [where for path in sources for where in _records_without_reason(path)]
    assert missing == []
    # The walk does find logging calls, and ones without a reason: the testing kit's.
    assert _records_without_reason(package / "testing.py")
