"""The rejection log is bounded: once per status and reason per window, then a count.

Anyone can send bad tokens, and during an issuer outage every request may get 503,
so a line per rejected request would let a client decide how much the application
logs (a user audit measured 12,500 INFO lines for 15,000 requests). The window's
clock is injected; nothing sleeps.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import pytest
from _clock import Clock
from _rejection_support import OTHER, FailingKeySet, client, middleware
from fastapi import Depends, FastAPI

from asgi_auth0._challenge import REJECTION_LOG_WINDOW
from asgi_auth0._claims import Claims
from asgi_auth0._errors import KeySetError
from asgi_auth0._keys import StaticKeySet
from asgi_auth0._middleware import Auth0Middleware
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.fastapi import require_scopes
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio

# The audience the conftest's issuer mints for and configures.
AUD = "https://api.example.test"


def rejections(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "asgi_auth0.middleware" and r.levelno >= level
    ]


async def test_a_flood_of_one_kind_is_one_line_per_window_then_a_count(
    verifier: TokenVerifier, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    caplog.set_level(logging.DEBUG, logger="asgi_auth0.middleware")
    headers = {"Authorization": f"Bearer {issuer.expired_token()}"}
    async with client(middleware(verifier, clock)) as c:
        for _ in range(50):
            assert (await c.get("/orders/7", headers=headers)).status_code == 401
            clock.advance(1)  # 50 s: all inside one window
        facts = f"kid={issuer.current_kid!r} alg='RS256' iss={issuer.issuer!r}"
        assert rejections(caplog) == [
            f"request rejected: status=401 reason=token_expired GET '/orders/7' {facts}: "
            "exp has passed, 60 min ago (leeway 5 s)"
        ]
        # Each one is still there for whoever turns DEBUG on.
        assert len(rejections(caplog, logging.DEBUG)) == 50
        clock.advance(REJECTION_LOG_WINDOW - 50)
        await c.get("/orders/8", headers=headers)
    assert rejections(caplog)[1] == (
        f"request rejected: status=401 reason=token_expired GET '/orders/8' {facts}: "
        "exp has passed, 60 min ago (leeway 5 s) (49 more like it, unlogged, since the line "
        "60 s ago)"
    )


async def test_each_kind_gets_its_own_first_line(
    verifier: TokenVerifier, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="asgi_auth0.middleware")
    kinds = [
        {"Authorization": f"Bearer {issuer.expired_token()}"},
        {"Authorization": f"Bearer {issuer.wrong_audience_token()}"},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": "Bearer a b"},
    ]
    async with client(middleware(verifier, clock)) as c:
        for _ in range(3):
            for headers in kinds:
                await c.get("/", headers=headers)
    assert [line.split()[3] for line in rejections(caplog)] == [
        "reason=token_expired",
        "reason=invalid_audience",
        "reason=malformed_token",
        "reason=malformed_authorization",
    ]


async def test_an_outage_warns_once_per_window_not_once_per_request(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    verifier = TokenVerifier(
        issuer.config(),
        key_set=FailingKeySet(KeySetError("the issuer is unreachable", retry_after=30)),
    )
    caplog.set_level(logging.WARNING, logger="asgi_auth0.middleware")
    async with client(middleware(verifier, clock)) as c:
        for i in range(200):
            token = issuer.token(sub=f"user-{i}")
            r = await c.get("/", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 503
    assert rejections(caplog, logging.WARNING) == [
        "request rejected: status=503 reason=key_set_unavailable GET '/' "
        f"kid={issuer.current_kid!r} alg='RS256' iss={issuer.issuer!r}: "
        "the issuer is unreachable"
    ]


async def test_the_line_never_holds_the_query_string_and_escapes_the_path(
    verifier: TokenVerifier, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="asgi_auth0.middleware")
    secret = issuer.expired_token()
    headers = {"Authorization": f"Bearer {secret}"}
    async with client(middleware(verifier, clock)) as c:
        await c.get(f"/a%0Aforged?access_token={secret}", headers=headers)
        clock.advance(REJECTION_LOG_WINDOW)
        await c.get("/" + "x" * 500, headers=headers)
    first, second = rejections(caplog)
    assert "GET '/a\\nforged' kid=" in first  # one line: the newline is escaped
    assert "\n" not in first
    assert secret not in first
    assert secret.split(".")[2] not in first
    assert "... kid=" in second  # the path is cut short, the rest of the line stays
    assert len(second) < 320


async def test_rejections_answered_inside_the_app_are_logged_the_same_way(
    verifier: TokenVerifier, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    # A mounted app's rejection goes through the handler, not the middleware's own
    # answer: it is logged, and counted in the same windows.
    sub = FastAPI()

    @sub.get("/admin")
    async def admin(claims: Annotated[Claims, Depends(require_scopes("admin"))]) -> Any:
        return {}

    app = FastAPI()
    app.add_middleware(Auth0Middleware, verifier=verifier)
    app.mount("/sub", sub)
    caplog.set_level(logging.INFO, logger="asgi_auth0.middleware")
    async with client(app) as c:
        for _ in range(5):
            r = await c.get("/sub/admin", headers={"Authorization": f"Bearer {issuer.token()}"})
            assert r.status_code == 403
    assert rejections(caplog) == [
        "request rejected: status=403 reason=insufficient_scope GET '/sub/admin': scope shortfall"
    ]


async def test_the_line_shows_the_kid_alg_and_iss_the_token_carries(
    verifier: TokenVerifier, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    # DESIGN.md: logs carry reason, kid, alg, iss. With INFO alone (the verifier's own
    # DEBUG line off), a token refused before it parsed fully still shows them: an
    # issuer mix-up is diagnosed from this line.
    clock = Clock()
    caplog.set_level(logging.INFO, logger="asgi_auth0")
    other = issuer.wrong_issuer_token()
    async with client(middleware(verifier, clock)) as c:
        await c.get("/", headers={"Authorization": f"Bearer {other}"})
        await c.get("/", headers={"Authorization": "Bearer not.a.jwt"})
    wrong_issuer, garbage = rejections(caplog)
    assert "reason=invalid_issuer" in wrong_issuer
    assert f"kid={issuer.current_kid!r} alg='RS256'" in wrong_issuer
    assert "iss='https://" in wrong_issuer
    assert issuer.issuer not in wrong_issuer  # the token's iss, not ours
    assert "kid=None alg=None iss=None: " in garbage
    [record] = [r for r in caplog.records if "invalid_issuer" in r.getMessage()]
    assert record.kid == issuer.current_kid  # structured, for JSON log handlers


class _Bare(KeySetError):
    """A custom key source's error whose __init__ skips ours."""

    def __init__(self) -> None:
        Exception.__init__(self, "down")


async def test_an_error_whose_init_skips_ours_is_still_answered_and_logged(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_auth0.middleware")
    verifier = TokenVerifier(issuer.config(), key_set=FailingKeySet(_Bare()))
    async with client(middleware(verifier, Clock())) as c:
        r = await c.get("/", headers={"Authorization": f"Bearer {issuer.token()}"})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "30"
    [line] = rejections(caplog, logging.WARNING)
    assert f"kid={issuer.current_kid!r}" in line


async def test_the_line_ends_with_the_detail_escaped_when_it_is_not_plain(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    # Our details are our own words, but a custom key source may raise its own.
    caplog.set_level(logging.WARNING, logger="asgi_auth0.middleware")
    verifier = TokenVerifier(
        issuer.config(), key_set=FailingKeySet(KeySetError("upstream said:\nforged line"))
    )
    async with client(middleware(verifier, Clock())) as c:
        await c.get("/", headers={"Authorization": f"Bearer {issuer.token()}"})
    [line] = rejections(caplog, logging.WARNING)
    assert line.endswith(": 'upstream said:\\nforged line'")
    assert "\n" not in line
    [record] = [r for r in caplog.records if r.name == "asgi_auth0.middleware"]
    assert record.detail == "'upstream said:\\nforged line'"  # structured too


BARE = "the Authorization header holds a bare token, with no scheme"


def scoped_me_app(verifier: TokenVerifier, *, fail_closed: bool) -> FastAPI:
    """``GET /me`` needing the scope ``read``, behind the middleware (fail closed or
    not)."""
    app = FastAPI()

    @app.get("/me")
    async def me(claims: Annotated[Claims, Depends(require_scopes("read"))]) -> Any:
        return {}

    if fail_closed:
        app.add_middleware(Auth0Middleware, verifier=verifier, require_token=True)
    else:
        app.add_middleware(Auth0Middleware, verifier=verifier)
    return app


@pytest.mark.parametrize("fail_closed", [False, True])
async def test_a_token_sent_without_bearer_says_so_in_the_line(
    verifier: TokenVerifier,
    issuer: LocalIssuer,
    caplog: pytest.LogCaptureFixture,
    fail_closed: bool,
) -> None:
    # Another scheme reads as anonymous (RFC 6750), so the answer is a bare 401
    # missing_token: right, and baffling when the client pasted the token without
    # "Bearer ". The line says which it was, never what the header held.
    app = scoped_me_app(verifier, fail_closed=fail_closed)
    caplog.set_level(logging.DEBUG, logger="asgi_auth0.middleware")
    token = issuer.token()
    async with client(app) as c:
        answers = [
            await c.get("/me", headers=headers)
            for headers in (
                {"Authorization": token},
                {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
                {},
            )
        ]
    assert [r.status_code for r in answers] == [401, 401, 401]
    assert {r.json()["reason"] for r in answers} == {"missing_token"}
    assert not any("Authorization" in r.text for r in answers)  # for the log, not clients
    bare, basic, none = rejections(caplog, logging.DEBUG)
    assert bare.endswith(BARE + ": send 'Authorization: Bearer <token>'")
    assert basic.endswith(OTHER)
    assert BARE not in none
    assert OTHER not in none
    assert token.split(".")[1] not in bare
    assert "dXNlcjpwYXNzd29yZA" not in basic


@pytest.mark.parametrize("fail_closed", [False, True])
async def test_a_token_in_the_query_says_so_in_the_line(
    verifier: TokenVerifier,
    issuer: LocalIssuer,
    caplog: pytest.LogCaptureFixture,
    fail_closed: bool,
) -> None:
    # Browsers cannot set a WebSocket's headers, so clients put the token in the
    # query; without websocket_query_param naming it (and never on plain HTTP) the
    # request is anonymous. The line names the parameter, never its value.
    app = scoped_me_app(verifier, fail_closed=fail_closed)
    caplog.set_level(logging.DEBUG, logger="asgi_auth0.middleware")
    token = issuer.token()
    async with client(app) as c:
        sent = await c.get("/me", params={"page": "2", "token": token})
        plain = await c.get("/me", params={"page": "2", "q": "eyJ"})
    assert sent.status_code == plain.status_code == 401
    in_query, no_token = rejections(caplog, logging.DEBUG)
    assert in_query.endswith(
        "the query parameter 'token' holds a token: send it in 'Authorization: Bearer "
        "<token>' (query tokens: WebSocket handshakes only)"
    )
    assert token.split(".")[1] not in in_query
    assert "query parameter" not in no_token


async def test_a_long_detail_is_cut_short(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_auth0.middleware")
    verifier = TokenVerifier(
        issuer.config(), key_set=FailingKeySet(KeySetError("upstream said: " + "x" * 900))
    )
    async with client(middleware(verifier, Clock())) as c:
        await c.get("/", headers={"Authorization": f"Bearer {issuer.token()}"})
    [line] = rejections(caplog, logging.WARNING)
    assert line.endswith(": upstream said: " + "x" * 582 + "...")


async def test_one_issuer_reads_the_same_in_every_logger_s_fields(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    # A log query joining the 503 a client got to the failed fetch behind it: the
    # key cache's records and the middleware's carry the issuer in one spelling
    # (DESIGN.md: logs carry reason, kid, alg, iss). The line's text escapes them.
    issuer.fail_with(500)
    caplog.set_level(logging.WARNING, logger="asgi_auth0")
    verifier = TokenVerifier(issuer.config())
    async with client(middleware(verifier, Clock())) as c:
        r = await c.get("/", headers={"Authorization": f"Bearer {issuer.token()}"})
    await verifier.aclose()
    assert r.status_code == 503
    fetch = [rec for rec in caplog.records if rec.name == "asgi_auth0.jwks"]
    answer = [rec for rec in caplog.records if rec.name == "asgi_auth0.middleware"]
    assert fetch
    assert answer
    assert {rec.iss for rec in fetch} == {rec.iss for rec in answer} == {issuer.issuer}
    assert answer[0].alg == "RS256"
    assert f"iss={issuer.issuer!r}" in answer[0].getMessage()


async def test_a_field_that_is_not_plain_is_escaped(
    verifier: TokenVerifier, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_auth0.middleware")
    token = issuer.unknown_kid_token("line\nbreak")  # refused, and logged
    async with client(middleware(verifier, Clock())) as c:
        await c.get("/", headers={"Authorization": f"Bearer {token}"})
    [record] = [r for r in caplog.records if r.name == "asgi_auth0.middleware"]
    assert record.kid == repr("line\nbreak")
    assert "\n" not in record.getMessage()


@pytest.mark.parametrize(
    ("aud", "level"),
    [
        (f"{AUD}/", logging.WARNING),  # only a trailing slash apart: the configuration
        (AUD.upper(), logging.WARNING),  # only letter case apart
        ("https://another-api.example", logging.INFO),  # a token for another API
    ],
)
async def test_an_audience_near_miss_is_a_warning(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture, aud: str, level: int
) -> None:
    # The aud is checked after the signature: a near miss of the configured audience
    # in a token the issuer signed points at this server's configuration (or the
    # client's audience parameter), and every token will be refused the same way. At
    # INFO it showed nowhere under a server that collects only warnings (uvicorn sets
    # up its own loggers only); a token for another API stays at INFO.
    caplog.set_level(logging.INFO, logger="asgi_auth0.middleware")
    verifier = TokenVerifier(issuer.config(), key_set=StaticKeySet(issuer.jwks))
    async with client(middleware(verifier, Clock())) as c:
        r = await c.get("/", headers={"Authorization": f"Bearer {issuer.token(aud=aud)}"})
    assert r.status_code == 401
    [record] = [r for r in caplog.records if r.name == "asgi_auth0.middleware"]
    assert record.levelno == level
    assert "reason=invalid_audience" in record.getMessage()


async def test_an_id_token_cannot_keep_an_audience_near_miss_at_info(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    # Any user of the tenant has an ID token (issuer-signed, refused as invalid_audience
    # at INFO). Sent first in each window, in a window shared with the near misses it
    # kept their WARNING from ever being written: they have a window of their own.
    caplog.set_level(logging.INFO, logger="asgi_auth0.middleware")
    verifier = TokenVerifier(issuer.config(), key_set=StaticKeySet(issuer.jwks))
    id_token = issuer.token(aud="the-client-id", nonce="n")
    near_miss = issuer.token(aud=f"{AUD}/")
    async with client(middleware(verifier, Clock())) as c:
        for token in (id_token, near_miss, near_miss):
            await c.get("/", headers={"Authorization": f"Bearer {token}"})
    levels = [r.levelno for r in caplog.records if r.name == "asgi_auth0.middleware"]
    assert levels == [logging.INFO, logging.WARNING]
