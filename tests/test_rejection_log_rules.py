"""Rejection-log rules that mutation testing found unchecked.

Each test fails under a mutant the log test files let through: the level of the line
(INFO for 4xx, WARNING for 5xx, not merely "at least INFO"), the count only when
something went unlogged, no ": None" for an error without detail, the 600-character
limit of a detail shown as is and the 80-character one of a structured field, and
which Authorization headers missing_token_hint speaks of. The window's clock is
injected; nothing sleeps.
"""

from __future__ import annotations

import logging

import pytest
from _clock import Clock
from _rejection_support import OTHER, FailingKeySet, client, middleware

from asgi_auth0._bearer import missing_token_hint
from asgi_auth0._challenge import REJECTION_LOG_WINDOW
from asgi_auth0._errors import KeySetError
from asgi_auth0._keys import log_field, log_safe
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.testing import LocalIssuer

BARE = (
    "the Authorization header holds a bare token, with no scheme: "
    "send 'Authorization: Bearer <token>'"
)
DPOP_OFF = (
    "the Authorization header uses the DPoP scheme, which is taken only with "
    "dpop='allowed' or 'required' in the config"
)


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The middleware's rejection lines above DEBUG."""
    return [
        r for r in caplog.records if r.name == "asgi_auth0.middleware" and r.levelno > logging.DEBUG
    ]


@pytest.mark.anyio
async def test_a_4xx_line_is_info_and_a_5xx_line_is_warning(
    verifier: TokenVerifier, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    # A bad token is the client's business (INFO); an outage is the operator's.
    caplog.set_level(logging.INFO, logger="asgi_auth0.middleware")
    down = TokenVerifier(issuer.config(), key_set=FailingKeySet(KeySetError("down")))
    token = issuer.token()
    async with client(middleware(verifier, Clock())) as c:
        r = await c.get("/", headers={"Authorization": f"Bearer {issuer.expired_token()}"})
    assert r.status_code == 401
    async with client(middleware(down, Clock())) as c:
        r = await c.get("/", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 503
    assert [(r.levelno, r.reason) for r in lines(caplog)] == [  # type: ignore[attr-defined]
        (logging.INFO, "token_expired"),
        (logging.WARNING, "key_set_unavailable"),
    ]


@pytest.mark.anyio
async def test_the_next_window_s_line_has_no_count_when_nothing_went_unlogged(
    verifier: TokenVerifier, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="asgi_auth0.middleware")
    headers = {"Authorization": f"Bearer {issuer.expired_token()}"}
    async with client(middleware(verifier, clock)) as c:
        await c.get("/a", headers=headers)
        clock.advance(REJECTION_LOG_WINDOW)  # one rejection per window: none counted
        await c.get("/b", headers=headers)
    first, second = lines(caplog)
    assert first.getMessage().endswith(": exp has passed, 60 min ago (leeway 5 s)")
    # No "(0 more like it ...)":
    assert second.getMessage().endswith(": exp has passed, 60 min ago (leeway 5 s)")
    assert first.suppressed == 0  # type: ignore[attr-defined]
    assert second.suppressed == 0  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_an_error_without_detail_ends_the_line_at_the_token_facts(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_auth0.middleware")
    verifier = TokenVerifier(issuer.config(), key_set=FailingKeySet(KeySetError()))
    async with client(middleware(verifier, Clock())) as c:
        r = await c.get("/", headers={"Authorization": f"Bearer {issuer.token()}"})
    assert r.status_code == 503
    [record] = lines(caplog)
    assert record.getMessage().endswith(f"iss={issuer.issuer!r}")
    assert not hasattr(record, "detail")


@pytest.mark.anyio
@pytest.mark.parametrize(("length", "whole"), [(350, True), (600, True), (601, False)])
async def test_a_detail_is_shown_whole_up_to_600_characters(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture, length: int, whole: bool
) -> None:
    # Hints are long (an Entra v1 token's is about 350 characters), and the INFO line
    # is where operators read them: cut, the advice was lost. Past the bound, the
    # first 597 characters and an ellipsis.
    detail = "upstream said: " + "x" * (length - 15)
    assert len(detail) == length
    caplog.set_level(logging.WARNING, logger="asgi_auth0.middleware")
    verifier = TokenVerifier(issuer.config(), key_set=FailingKeySet(KeySetError(detail)))
    async with client(middleware(verifier, Clock())) as c:
        await c.get("/", headers={"Authorization": f"Bearer {issuer.token()}"})
    [record] = lines(caplog)
    shown = detail if whole else detail[:597] + "..."
    assert len(shown) <= 600
    assert record.getMessage().endswith(f": {shown}")
    assert record.detail == shown  # type: ignore[attr-defined]


def test_a_structured_field_is_kept_as_is_up_to_80_characters() -> None:
    assert log_field("k" * 80) == "k" * 80
    cut = log_field("k" * 81)
    assert cut == log_safe("k" * 81)
    assert cut != "k" * 81


@pytest.mark.parametrize(
    ("headers", "hint"),
    [
        # Other headers whose names are 13 bytes long, as "authorization" is.
        ([(b"cache-control", b"no-cache"), (b"if-none-match", b'"a.b.c"')], None),
        ([(b"Authorization", b"a.b.c")], BARE),  # a JWS without its scheme
        ([(b"authorization", b" h.k.i.c.t ")], BARE),  # a JWE (five parts)
        ([(b"authorization", b"a.b.c.d")], OTHER),  # neither shape
        ([(b"authorization", b"opaque")], OTHER),  # one word, no dots
        ([(b"authorization", b"Token a.b.c")], OTHER),  # a JWT behind another scheme
        # The DPoP scheme reaches the hint only with DPoP off in the config.
        ([(b"authorization", b"DPoP a.b.c"), (b"dpop", b"x.y.z")], DPOP_OFF),
        ([(b"authorization", b"dpop a.b.c")], DPOP_OFF),
        ([(b"authorization", b"DPoP\ta.b.c")], DPOP_OFF),  # a tab, not a bare token
    ],
)
def test_missing_token_hint_names_only_a_token_shaped_authorization_header(
    headers: list[tuple[bytes, bytes]], hint: str | None
) -> None:
    scope = {"type": "http", "headers": [(b"host", b"example.test"), *headers]}
    assert missing_token_hint(scope) == hint


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "shown"),
    [
        ("M-SEARCH", "M-SEARCH"),  # a method with a dash, as it is
        ("X" * 410, "'" + "X" * 23 + "..."),  # h11 passes methods this long
    ],
)
async def test_the_request_method_is_cut_short_in_the_line(
    verifier: TokenVerifier,
    issuer: LocalIssuer,
    caplog: pytest.LogCaptureFixture,
    method: str,
    shown: str,
) -> None:
    # The method is the client's text, like the path: a long one must not fill the
    # operator's line.
    caplog.set_level(logging.INFO, logger="asgi_auth0.middleware")
    async with client(middleware(verifier, Clock())) as c:
        await c.request(method, "/p", headers={"Authorization": f"Bearer {issuer.expired_token()}"})
    [record] = lines(caplog)
    assert f" {shown} '/p'" in record.getMessage()
