"""Limits and leaks.

Limits: the token size cap, JSON nesting depth, the number of keys in a JWKS, the
size and nesting of a JWKS body and the length of ``kid`` each have an exact boundary,
tested on both sides, and each is enforced before the expensive work it protects.
(``tests/test_jwks.py`` also covers endless and compressed JWKS bodies.)

Leaks: with every ``asgi_auth0`` logger at DEBUG, the whole adversarial corpus, tokens
carrying log-injection canaries and a run of issuer outages go through the verifier
(with a real JWKS cache on a loopback issuer) and through the middleware. No log
record (message, formatted traceback or extra field), error description, exception
text or response header/body may contain token bytes (any 24-character window of a
token) or attacker-controlled text with its control characters intact.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from _asgi import drive, http_scope
from adversarial import generate
from adversarial.generate import AUD, ISS, LONG_KID, NOW
from adversarial.leakcheck import JWT_SEGMENT, capture_logs, record_texts
from fastapi import Depends, FastAPI
from starlette.types import Message

from asgi_auth0 import (
    Auth0Config,
    Auth0Error,
    Auth0Middleware,
    Claims,
    ConfigError,
    JWKSCache,
    KeySetError,
    MalformedTokenError,
    StaticKeySet,
    TokenTooLargeError,
    TokenVerifier,
    UnknownKeyError,
    require_scopes,
    require_token,
)
from asgi_auth0._jose import MAX_JSON_CONTAINERS, MAX_JSON_DEPTH, JWSParser
from asgi_auth0._jwks import MAX_JWKS_BYTES
from asgi_auth0._keys import MAX_JWKS_KEYS, MAX_KID_LENGTH, parse_jwks
from asgi_auth0._signing import DEFAULT_ALG, public_jwk
from asgi_auth0.testing import LocalIssuer

pytestmark = pytest.mark.anyio

ALL_ALGS = generate.ALL_ALGS
KEYS = generate.keys()


class RecordingKeys:
    """The corpus key set, counting lookups."""

    generation = 0

    def __init__(self) -> None:
        self.calls = 0
        self.inner = StaticKeySet(generate.jwks())

    async def get_key(self, kid: str | None, alg: str) -> Any:
        self.calls += 1
        return await self.inner.get_key(kid, alg)


def _verifier(**cfg: Any) -> tuple[TokenVerifier, RecordingKeys]:
    keys = RecordingKeys()
    settings: dict[str, Any] = {"issuer": ISS, "audience": AUD, "algorithms": ALL_ALGS, **cfg}
    return TokenVerifier(Auth0Config(**settings), key_set=keys, clock=lambda: NOW), keys


# -- the token size cap ------------------------------------------------------------------


async def test_the_size_cap_is_exact_and_checked_first() -> None:
    verifier, keys = _verifier()
    cap = verifier.config.max_token_size
    assert cap == 16 * 1024
    exact = next(c.token for c in generate.corpus() if c.id == "size/exactly-default-cap")
    assert len(exact) == cap
    assert (await verifier.verify(exact)).sub
    # One over, then absurdly over, then absurd and non-ASCII: all refused by length
    # alone, before any decoding and without asking for a key.
    calls = keys.calls
    for token in (exact + "A", "A" * (8 << 20), "\u00e9" * (8 << 20)):
        with pytest.raises(TokenTooLargeError):
            await verifier.verify(token)
    assert keys.calls == calls
    with pytest.raises(ConfigError):
        Auth0Config(issuer=ISS, audience=AUD, max_token_size=255)


async def test_a_huge_authorization_header_is_a_401_not_a_500() -> None:
    verifier, _ = _verifier()
    app = _app(verifier)
    sent = await _drive(app, http_scope([(b"authorization", b"Bearer " + b"A" * (4 << 20))], "/me"))
    assert sent[0]["status"] == 401
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["reason"] == "token_too_large"


# -- JSON nesting depth ----------------------------------------------------------------------


def _nested(depth: int, kind: str) -> Any:
    """``depth`` containers in total once placed as a member value of the payload."""
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = [value] if kind == "array" else {"n": value}
    return value


@pytest.mark.parametrize("kind", ["array", "object"])
async def test_json_nesting_is_allowed_up_to_the_limit_and_not_beyond(kind: str) -> None:
    verifier, _ = _verifier()
    at_limit = generate.good("ES256", deep=_nested(MAX_JSON_DEPTH, kind))
    claims = await verifier.verify(at_limit)
    assert "deep" in claims
    with pytest.raises(MalformedTokenError):
        await verifier.verify(generate.good("ES256", deep=_nested(MAX_JSON_DEPTH + 1, kind)))
    header = generate.header("ES256", ext=_nested(MAX_JSON_DEPTH, kind))
    assert await verifier.verify(generate.jws(header, generate.claims()))
    header = generate.header("ES256", ext=_nested(MAX_JSON_DEPTH + 1, kind))
    with pytest.raises(MalformedTokenError):
        await verifier.verify(generate.jws(header, generate.claims()))


async def test_pathological_nesting_is_malformed_not_a_recursion_error() -> None:
    verifier, keys = _verifier(max_token_size=1 << 20)
    for raw in (b"[" * 300_000, b'{"a":' * 150_000, b"[" * 150_000 + b"]" * 150_000):
        token = generate.jws(generate.header("ES256"), raw)
        with pytest.raises(MalformedTokenError):
            await verifier.verify(token)
    assert keys.calls == 0


# -- JSON objects and arrays per segment -----------------------------------------------------


def _flat(containers: int) -> list[Any]:
    """A member value holding exactly ``containers`` objects and arrays in all."""
    return [{} for _ in range(containers - 1)]


async def test_a_payload_may_hold_max_json_containers_and_no_more() -> None:
    verifier, _ = _verifier()
    # The payload object itself is one of them.
    at_limit = generate.good("ES256", many=_flat(MAX_JSON_CONTAINERS - 1))
    assert len((await verifier.verify(at_limit))["many"]) == MAX_JSON_CONTAINERS - 2
    with pytest.raises(MalformedTokenError, match="more than 256 JSON objects and arrays"):
        await verifier.verify(generate.good("ES256", many=_flat(MAX_JSON_CONTAINERS)))


async def test_a_header_over_the_container_limit_is_refused_and_never_cached() -> None:
    verifier, keys = _verifier()
    parser = JWSParser(max_size=16384, algorithms=frozenset(ALL_ALGS))
    header = generate.header("ES256", ext=_flat(MAX_JSON_CONTAINERS))
    token = generate.jws(header, generate.claims())
    with pytest.raises(MalformedTokenError, match="header holds more than"):
        parser.parse(token)
    assert parser.cached_headers == 0
    with pytest.raises(MalformedTokenError, match="header holds more than"):
        await verifier.verify(token)
    assert keys.calls == 0
    # One container fewer is an ordinary header.
    header = generate.header("ES256", ext=_flat(MAX_JSON_CONTAINERS - 1))
    assert await verifier.verify(generate.jws(header, generate.claims()))


async def test_brackets_inside_strings_are_not_counted_as_containers() -> None:
    verifier, _ = _verifier()
    # A claim carrying JSON as text (an Auth0 Action copying metadata, say), with
    # escaped quotes that must not end the string early.
    text = '{"a": [' + '"\\"[{", ' * 400 + "]}"
    token = generate.good("ES256", note=text, many=_flat(MAX_JSON_CONTAINERS - 2))
    assert (await verifier.verify(token))["note"] == text


async def test_the_container_limit_is_checked_before_the_json_is_parsed() -> None:
    verifier, _ = _verifier()
    # Thousands of containers, then a syntax error: refused for the count, which
    # needs no parse, not for the syntax, which the parser would reach only after
    # building every container before it.
    raw = b'{"iss": "' + ISS.encode() + b'", "many": [' + b"{}, " * 2500 + b"}"
    with pytest.raises(MalformedTokenError, match="more than 256 JSON objects and arrays"):
        await verifier.verify(generate.jws(generate.header("ES256"), raw))


async def test_counting_containers_stays_linear_on_an_unterminated_string() -> None:
    verifier, _ = _verifier(max_token_size=1 << 20)
    # Brackets enough for the exact count, then a string that never ends, full of
    # escaped quotes. A count that rescanned the rest at each of those 300,000 quotes
    # (as a string pattern that can fail once begun does) would take hours at this
    # size, where it takes milliseconds (pytest's timeout is the judge, not a clock).
    raw = b'{"iss": "' + ISS.encode() + b'", "a": "' + b"[" * 300 + b'\\"' * 300_000
    with pytest.raises(MalformedTokenError, match="not base64url-encoded UTF-8 JSON"):
        await verifier.verify(generate.jws(generate.header("ES256"), raw))


async def test_a_refused_flood_of_containers_is_not_parsed_for_the_log_either(
    caplog: pytest.LogCaptureFixture,
) -> None:
    verifier, _ = _verifier()
    header = generate.header("ES256", kid="peek-me", ext=_flat(MAX_JSON_CONTAINERS * 4))
    small = generate.header("ES256", kid="peek-me", ext=_flat(3))
    with caplog.at_level(logging.DEBUG, logger="asgi_auth0"):
        for hdr in (header, small):
            with pytest.raises(MalformedTokenError):
                await verifier.verify(generate.jws(hdr, b"not json"))
    kids = [getattr(r, "kid", None) for r in caplog.records if hasattr(r, "kid")]
    # The small header's kid is read for the log line; the flood's is left unread.
    assert "peek-me" in kids
    assert kids.count("peek-me") == 1


# -- the JWKS: number of keys, nesting, kid length --------------------------------------------


def _jwk(i: int) -> dict[str, Any]:
    return public_jwk(KEYS["p256"], kid=f"k{i}", alg="ES256")


def test_a_jwks_holds_at_most_max_jwks_keys() -> None:
    assert MAX_JWKS_KEYS == 100
    assert len(parse_jwks({"keys": [_jwk(i) for i in range(MAX_JWKS_KEYS)]})) == MAX_JWKS_KEYS
    too_many = {"keys": [_jwk(i) for i in range(MAX_JWKS_KEYS + 1)]}
    with pytest.raises(ValueError, match="more than"):
        parse_jwks(too_many)
    with pytest.raises(ConfigError):
        StaticKeySet(too_many)


def test_a_kid_is_at_most_max_kid_length_in_a_jwks() -> None:
    assert MAX_KID_LENGTH == 256
    index = parse_jwks(
        {"keys": [public_jwk(KEYS["p256"], kid="k" * 256), public_jwk(KEYS["p384"], kid="k" * 257)]}
    )
    assert index.kids() == {"k" * 256}
    assert index.skipped == 1


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(
        issuer=ISS, audience=AUD, private_key=KEYS["p256"], kid="p256", alg="ES256"
    ) as running:
        yield running


async def test_a_fetched_jwks_over_the_key_limit_or_too_deep_is_a_failed_fetch(
    issuer: LocalIssuer,
) -> None:
    cache = JWKSCache(issuer.jwks_uri, fetch_timeout=2)
    try:
        await cache.refresh()
        good = await cache.get_key("p256", "ES256")
        bad_bodies = {
            "not_a_jwks": json.dumps({"keys": [_jwk(i) for i in range(MAX_JWKS_KEYS + 1)]}),
            "invalid_json": '{"keys": [' + "[" * 200_000 + "]" * 200_000 + "]}",
        }
        for reason, body in bad_bodies.items():
            issuer.garbage(body.encode())
            with pytest.raises(KeySetError):
                await cache.refresh()
            assert cache.status().last_error == reason
            assert await cache.get_key("p256", "ES256") is good  # the last good set stays
    finally:
        await cache.aclose()


@pytest.mark.parametrize("content_length", [True, False])
async def test_a_jwks_body_may_be_exactly_one_mebibyte_and_no_more(
    issuer: LocalIssuer, content_length: bool
) -> None:
    # (test_jwks.py covers endless and compressed bodies at this cap as well.)
    assert MAX_JWKS_BYTES == 1024 * 1024
    issuer.oversized(MAX_JWKS_BYTES, content_length=content_length)
    cache = JWKSCache(issuer.jwks_uri, fetch_timeout=5)
    try:
        await cache.refresh()
        good = await cache.get_key("p256", "ES256")
        issuer.oversized(MAX_JWKS_BYTES + 1, content_length=content_length)
        with pytest.raises(KeySetError):
            await cache.refresh()
        assert cache.status().last_error == "too_large"
        assert await cache.get_key("p256", "ES256") is good
    finally:
        await cache.aclose()


async def test_an_over_long_kid_never_causes_a_fetch(issuer: LocalIssuer) -> None:
    cache = JWKSCache(issuer.jwks_uri, fetch_timeout=2)
    try:
        await cache.refresh()
        fetches = issuer.jwks_requests
        with pytest.raises(UnknownKeyError):
            await cache.get_key("k" * (MAX_KID_LENGTH + 1), "ES256")
        assert issuer.jwks_requests == fetches
    finally:
        await cache.aclose()
    # And in a token it is malformed before any lookup at all.
    verifier, keys = _verifier()
    with pytest.raises(MalformedTokenError):
        await verifier.verify(
            generate.jws(generate.header("RS256", LONG_KID + "k"), generate.claims())
        )
    assert keys.calls == 0


async def test_garbage_labelled_gzip_fails_cleanly() -> None:
    # Regression: a zlib error used to leave the read loop and abandon httpx's async
    # generators, which trio reports as a ResourceWarning (an error under our pytest
    # settings). The body is streamed, as from a socket.
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-encoding": "gzip"}, stream=httpx.ByteStream(b"not gzip")
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        cache = JWKSCache("https://issuer.example/jwks.json", http_client=client)
        with pytest.raises(KeySetError):
            await cache.refresh()
        assert cache.status().last_error == "bad_encoding"


# -- leaks ------------------------------------------------------------------------------

WINDOW = 24
# Attacker text with the control characters a log injection needs. Whatever carries
# it into a log line or a header must escape it.
CANARIES = (
    "CANARY\nFORGED reason=ok",
    "CANARY\r\nX-Forged: 1",
    "CANARY\x1b[31mFORGED",
    "CANARY\x00FORGED",
)
_RAW_MARKERS = ("\nFORGED", "\r\nX-Forged", "\x1b[31m", "\x00FORGED")


class LeakDetector:
    """Knows every token sent; finds any 24-character window of one in a text."""

    def __init__(self) -> None:
        self._windows: set[str] = set()

    def add(self, token: str) -> None:
        step = 1 if len(token) < 20_000 else 997  # sample huge tokens
        for i in range(0, max(0, len(token) - WINDOW + 1), step):
            window = token[i : i + WINDOW]
            if not window.strip("A=. "):  # padding-like runs say nothing about a token
                continue
            self._windows.add(window)

    def leaks(self, text: str) -> list[str]:
        found = [
            text[i : i + WINDOW]
            for i in range(len(text) - WINDOW + 1)
            if text[i : i + WINDOW] in self._windows
        ]
        found += [marker for marker in _RAW_MARKERS if marker in text]
        return found


def canary_tokens() -> list[str]:
    """Tokens that pass the precheck and carry attacker text where logs might look."""
    tokens = []
    for canary in CANARIES:
        tokens.append(generate.jws(generate.header("ES256", canary), generate.claims()))
        tokens.append(generate.jws(generate.header("ES256", canary + "-" * 300), generate.claims()))
        tokens.append(generate.good("ES256", sub=canary, aud=canary, scope=canary))
        tokens.append(generate.good("ES256", iss="https://evil.example/" + canary))
        tokens.append(
            generate.jws(generate.header("ES256", typ=canary, x5u=canary), generate.claims())
        )
        tokens.append(generate.jws({"alg": canary, "kid": "p256"}, generate.claims(), alg="ES256"))
    return tokens


def junk_tokens(count: int) -> list[str]:
    rng = random.Random("asgi_auth0/leaks")
    alphabet = generate._ALPHABET + ".=+/"
    return ["".join(rng.choices(alphabet, k=rng.randrange(30, 400))) for _ in range(count)]


_Scoped = Annotated[Claims, Depends(require_scopes("read:messages", "admin:all"))]


def _app(verifier: TokenVerifier) -> FastAPI:
    api = FastAPI()

    @api.get("/me")
    async def me(claims: Annotated[Claims, Depends(require_token)]) -> dict[str, Any]:
        return {"sub": claims.sub}

    @api.get("/scoped")
    async def scoped(claims: _Scoped) -> dict[str, Any]:
        return {"sub": claims.sub}

    api.add_middleware(Auth0Middleware, verifier=verifier, warm_keys_on_startup=False)
    return api


async def _drive(app: Any, scope: dict[str, Any]) -> list[Message]:
    request: Message = {"type": "http.request", "body": b"", "more_body": False}
    return await drive(app, scope, [request], timeout=10)


def _response_text(sent: list[Message]) -> str:
    start = sent[0]
    head = b"\n".join(n + b": " + v for n, v in start.get("headers", []))
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return (head + b"\n\n" + body).decode("latin-1")


def test_the_suite_wide_plugin_recognises_token_segments() -> None:
    # tests/adversarial/leakcheck.py, loaded with -p, flags JWT-shaped text in logs.
    for case in generate.corpus():
        if case.expect is None:
            header, payload, _ = case.token.split(".")
            assert JWT_SEGMENT.search(f"log line {header} x")
            assert JWT_SEGMENT.search(f"log line {payload} x")
    assert not JWT_SEGMENT.search("token rejected: reason=bad_signature kid='rsa' alg=RS256")


def test_the_leak_detector_is_not_vacuous() -> None:
    detector = LeakDetector()
    token = generate.good("RS256")
    detector.add(token)
    _header, payload, signature = token.split(".")
    assert detector.leaks(f"token rejected: {token[:40]}")
    assert detector.leaks(f"sig={signature[100:130]}")
    assert detector.leaks(f"payload {payload}")
    assert detector.leaks("kid CANARY\nFORGED reason=ok")
    assert not detector.leaks("kid 'CANARY\\nFORGED reason=ok'")  # escaped is fine
    assert not detector.leaks("token rejected: reason=bad_signature alg=RS256")


async def test_no_token_bytes_or_raw_attacker_text_in_logs_errors_or_responses(
    issuer: LocalIssuer,
) -> None:
    # The issuer publishes the corpus keys over real HTTP; the verifier fetches them
    # through a real JWKSCache, so its logs (fetches, unknown kids, outages) count too.
    for kid, label, alg in generate.JWKS_LAYOUT:
        if kid != "p256":
            kind = {"rsa": "RSA", "p384": "P-384", "p521": "P-521", "ed25519": "Ed25519"}[label]
            issuer.add_key(KEYS[label], kid=kid, alg=alg or DEFAULT_ALG[kind])
    config = issuer.config(algorithms=ALL_ALGS, jwks_refresh_cooldown=0)
    verifier = TokenVerifier(config, clock=lambda: NOW)
    app = _app(verifier)

    tokens = [c.token for c in generate.corpus()] + canary_tokens() + junk_tokens(200)
    detector = LeakDetector()
    for token in tokens:
        detector.add(token)
    texts: list[tuple[str, str]] = []

    async def run_all(tag: str) -> None:
        for token in tokens:
            try:
                await verifier.verify(token)
            except Auth0Error as exc:
                for what, text in (
                    ("str", str(exc)),
                    ("detail", str(exc.detail)),
                    ("description", exc.description),
                    ("cause", str(exc.__cause__)),
                ):
                    texts.append((f"{tag} error {what}", text))
            for path in ("/me", "/scoped"):
                sent = await _drive(
                    app, http_scope([(b"authorization", b"Bearer " + token.encode())], path)
                )
                texts.append((f"{tag} response", _response_text(sent)))
        for canary in CANARIES:
            for value in (f"Bearer {canary}", f"Basic {canary}", canary):
                raw = value.encode("latin-1")
                sent = await _drive(app, http_scope([(b"authorization", raw)], "/me"))
                texts.append((f"{tag} response", _response_text(sent)))

    with capture_logs() as records:
        try:
            await run_all("normal")
            issuer.fail_with(503, retry_after=5)  # outage: unknown kids now fail to fetch
            verifier.clear_cache()
            await run_all("outage")
            issuer.heal()
            issuer.garbage(b'{"keys": "CANARY\\nFORGED"}')
            await run_all("garbage")
        finally:
            await verifier.aclose()

    loggers = {r.name for r in records}
    # The capture saw the verifier, the middleware and the key cache at work.
    assert {"asgi_auth0.verify", "asgi_auth0.middleware", "asgi_auth0.jwks"} <= loggers, loggers
    for record in records:
        for text in record_texts(record):
            texts.append((f"log {record.name}:{record.lineno}", text))
    problems = [(where, leak) for where, text in texts for leak in detector.leaks(text)]
    assert not problems, problems[:10]
