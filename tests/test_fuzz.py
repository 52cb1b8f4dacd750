"""Property-based fuzzing of every surface that takes untrusted input.

Clients control the ``Authorization`` header, the token and the request; the issuer
(or whoever sits on its network path) controls the JWKS responses. For each:

- the ``Authorization`` header parser: a token68, nothing, or ``InvalidRequestError``;
- the token parser: a parsed token or an ``InvalidTokenError`` subclass;
- ``TokenVerifier.verify``: ``Claims`` or a ``BearerError``, never anything else, never
  a hang; for tokens *genuinely signed* over arbitrary claims, the verdict must match
  an independent model of the claim rules;
- the middleware in a FastAPI app: 200/400/401/403/503 (404 for an unknown path),
  never a 500, well-formed challenge headers, no token bytes echoed;
- the JWKS parser and ``JWKSCache`` on arbitrary issuer responses: a failed fetch,
  never a crash, and the last good key set kept.

CI runs a bounded, derandomized number of examples (the same inputs every run).
``make fuzz`` sets ``ASGI_AUTH0_FUZZ=long``: 20 times as many, randomized, with the
example database on so a failure replays.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import re
from typing import Annotated, Any

import anyio
import httpx
import pytest
from _asgi import drive, http_scope, ws_scope
from adversarial import generate
from adversarial.generate import AUD, ISS, NOW
from fastapi import Depends, FastAPI, WebSocket
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import Message

from asgi_auth0 import (
    Auth0Config,
    Auth0Middleware,
    BearerError,
    Claims,
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidIssuerError,
    InvalidRequestError,
    InvalidTokenError,
    IssuedInFutureError,
    JWKSCache,
    KeySetError,
    MalformedTokenError,
    MissingClaimError,
    MultipleTokensError,
    PublicKey,
    SenderConstrainedTokenError,
    StaticKeySet,
    TokenVerifier,
    require_scopes,
    require_token,
)
from asgi_auth0._bearer import token_from_scope
from asgi_auth0._config import SUPPORTED_ALGORITHMS
from asgi_auth0._dpop import access_token_hash
from asgi_auth0._jose import MAX_JSON_CONTAINERS, MAX_JSON_DEPTH, parse_compact
from asgi_auth0._jose import _containers as count_containers
from asgi_auth0._jwks import MAX_JWKS_BYTES
from asgi_auth0._keys import (
    MAX_JWKS_KEYS,
    MAX_KID_LENGTH,
    KeyIndex,
    KeyRejected,
    parse_jwk,
    parse_jwks,
)
from asgi_auth0._signing import b64url, sign
from asgi_auth0.testing import DPoPKey, LocalIssuer

LONG = os.environ.get("ASGI_AUTH0_FUZZ") == "long"

pytestmark = [pytest.mark.fuzz, *([pytest.mark.timeout(3600)] if LONG else [])]


def fuzz(examples: int) -> settings:
    """``examples`` in CI (derandomized, no database), 20 times as many under ``make fuzz``."""
    if LONG:
        return settings(
            max_examples=examples * 20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
    )


ALL_ALGS = frozenset(SUPPORTED_ALGORITHMS)
LEEWAY = 5
MAX_DATE = 253402300799
CORPUS = generate.corpus()
# Seeds for mutation: every corpus token that is not itself huge.
SEED_TOKENS = sorted({c.token for c in CORPUS if len(c.token) < 4000})
ALL_CORPUS_TOKENS = frozenset(c.token for c in CORPUS)
# Corpus tokens accepted under the default configuration (scope "read:messages").
GOOD_TOKENS = sorted({c.token for c in CORPUS if c.expect is None and not c.config})
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

_CONFIG = Auth0Config(issuer=ISS, audience=AUD, algorithms=tuple(ALL_ALGS), leeway=LEEWAY)
_KEY_SET = StaticKeySet(generate.jwks())


def _verifier(key_set: Any = _KEY_SET) -> TokenVerifier:
    return TokenVerifier(_CONFIG, key_set=key_set, clock=lambda: NOW)


# -- strategies ----------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()  # NaN and the infinities included: json.dumps writes them, we refuse
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
b64_text = st.text(alphabet=B64URL_ALPHABET, max_size=60)
junk_text = st.text(alphabet=B64URL_ALPHABET + ".=+/ \t\n%\x00\u00e9", max_size=60)


@st.composite
def token_like(draw: st.DrawFn) -> str:
    """Dot-joined segments: JSON objects, arbitrary bytes, base64url or junk text."""
    segment = st.one_of(
        st.dictionaries(
            st.sampled_from(["alg", "kid", "typ", "crit", "b64", "x"]), json_values
        ).map(lambda d: b64url(json.dumps(d).encode())),
        st.fixed_dictionaries(
            {"alg": st.sampled_from([*ALL_ALGS, "none", "HS256", "RS256 "])},
            optional={"kid": st.sampled_from(["rsa", "p256", "ed25519", "x"]) | json_values},
        ).map(lambda d: b64url(json.dumps(d).encode())),
        st.binary(max_size=80).map(b64url),
        b64_text,
        junk_text,
    )
    return ".".join(draw(st.lists(segment, min_size=1, max_size=6)))


@st.composite
def mutated_token(draw: st.DrawFn) -> str:
    """A corpus token with a few edits: the near misses a fuzzer rarely finds alone."""
    token = draw(st.sampled_from(SEED_TOKENS))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["replace", "delete", "insert", "segments", "truncate"]))
        at = draw(st.integers(0, max(0, len(token) - 1)))
        text = draw(st.text(alphabet=B64URL_ALPHABET + ".=+/ ", min_size=1, max_size=4))
        if op == "replace":
            token = token[:at] + text + token[at + len(text) :]
        elif op == "delete":
            token = token[:at] + token[at + len(text) :]
        elif op == "insert":
            token = token[:at] + text + token[at:]
        elif op == "truncate":
            token = token[:at]
        else:
            parts = token.split(".")
            order = draw(st.permutations(range(len(parts))))
            repeat = draw(st.lists(st.sampled_from(range(len(parts))), max_size=2))
            token = ".".join(parts[i] for i in [*order, *repeat])
    return token


any_token = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    token_like(),
    mutated_token(),
)


# -- the token parser ------------------------------------------------------------------


# Strings made of the characters that could fool a count of brackets outside strings.
_tricky_text = st.text(alphabet='"\\{}[]/ u', max_size=12)
_tricky_values = st.recursive(
    st.none() | st.integers() | _tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_tricky_text, inner, max_size=4),
    max_leaves=16,
)


@fuzz(400)
@given(_tricky_values, st.booleans())
def test_the_container_count_matches_the_json_exactly(value: Any, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert count_containers(raw) == _containers(value)


@fuzz(400)
@given(any_token)
def test_token_parser_raises_only_invalid_token_errors(token: str) -> None:
    try:
        parsed = parse_compact(token, max_size=16 * 1024, algorithms=ALL_ALGS)
    except InvalidTokenError:
        return
    # Whatever gets through is exactly three segments with a JSON-object header and
    # payload, an allowed alg, and a signing input that is the token's first two parts.
    head, payload, _ = token.split(".")
    assert parsed.alg in ALL_ALGS
    assert isinstance(parsed.header, dict)
    assert isinstance(parsed.payload, dict)
    assert parsed.signing_input == f"{head}.{payload}".encode()
    assert parsed.kid is None or isinstance(parsed.kid, str)


# -- TokenVerifier.verify ----------------------------------------------------------------


@pytest.mark.anyio
@fuzz(300)
@given(any_token)
async def test_verify_any_string_gives_claims_or_an_invalid_token_error(token: str) -> None:
    verifier = _VERIFIER
    try:
        with anyio.fail_after(5):  # never a hang
            claims = await verifier.verify(token)
    except InvalidTokenError:
        return
    # Edits never forge a token: only an unchanged corpus token can verify.
    assert isinstance(claims, Claims)
    assert token in ALL_CORPUS_TOKENS


_VERIFIER = _verifier()
_ABSENT = object()
_RESERVED = frozenset(
    {"iss", "aud", "exp", "nbf", "iat", "sub", "jti", "azp", "client_id", "token_use"}
    | {"nonce", "at_hash", "scope", "scp", "permissions", "cnf"}
)


def _is_date(value: object) -> bool:
    if type(value) is int:
        return abs(value) <= MAX_DATE
    return type(value) is float and math.isfinite(value) and abs(value) <= MAX_DATE


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _containers(value: object) -> int:
    if isinstance(value, dict):
        return 1 + sum(_containers(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_containers(v) for v in value)
    return 0


def _non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    return False


def expected_refusals(header: dict[str, Any], payload: dict[str, Any]) -> set[type[Exception]]:
    """An independent model of the rules: what a genuinely signed token may be refused
    with (the empty set: it must be accepted). Defaults: iat required, leeway 5."""
    for part in (header, payload):
        if (
            _non_finite(part)
            or _depth(part) > MAX_JSON_DEPTH
            or _containers(part) > MAX_JSON_CONTAINERS
        ):
            return {MalformedTokenError}  # not JSON (NaN, Infinity), too deep or too many
    if any(name in header and type(header[name]) is not str for name in ("typ", "cty")):
        return {MalformedTokenError}  # media types are strings (RFC 7515 §4.1.9, §4.1.10)
    iss = payload.get("iss")
    if type(iss) is not str or iss != ISS:
        return {InvalidIssuerError}  # checked before any key lookup or claim
    refusals: set[type[Exception]] = set()
    exp = payload.get("exp", _ABSENT)
    if exp is _ABSENT or exp is None:
        refusals.add(MissingClaimError)
    elif not _is_date(exp):
        refusals.add(InvalidClaimError)
    elif exp <= NOW - LEEWAY:
        refusals.add(ExpiredTokenError)
    nbf = payload.get("nbf", _ABSENT)
    if nbf is not _ABSENT:
        if not _is_date(nbf):
            refusals.add(InvalidClaimError)
        elif nbf > NOW + LEEWAY:
            refusals.add(ImmatureTokenError)
    iat = payload.get("iat", _ABSENT)
    if iat is _ABSENT:
        refusals.add(MissingClaimError)
    elif not _is_date(iat):
        refusals.add(InvalidClaimError)
    elif iat > NOW + LEEWAY:
        refusals.add(IssuedInFutureError)
    aud = payload.get("aud", _ABSENT)
    if aud is _ABSENT or aud is None:
        refusals.add(MissingClaimError)
    elif type(aud) is str:
        if aud != AUD:
            refusals.add(InvalidAudienceError)
    elif type(aud) is not list or not aud or any(type(a) is not str for a in aud) or AUD not in aud:
        refusals.add(InvalidAudienceError)
    # A present sub must be a string, null included: Claims.sub would read a null as
    # "no subject" (the verifier's rule since tokens with "sub": null were refused).
    if "sub" in payload and type(payload["sub"]) is not str:
        refusals.add(InvalidClaimError)
    if "jti" in payload and type(payload["jti"]) is not str:  # RFC 7519 §4.1.7
        refusals.add(InvalidClaimError)
    if "cnf" in payload:  # a sender-constrained token, and this verifier takes Bearer only
        refusals.add(SenderConstrainedTokenError)
    return refusals


_CLAIM_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "iss": st.sampled_from([ISS, ISS[:-1], ISS.upper(), ISS + " ", "https://evil.example/"])
    | json_values,
    "aud": st.sampled_from([AUD, [AUD], ["x", AUD], [], [[AUD]], {"aud": AUD}, AUD + "/"])
    | st.lists(st.sampled_from([AUD, "x"]) | json_scalars, max_size=3)
    | json_values,
    **dict.fromkeys(
        ("exp", "nbf", "iat"),
        st.integers(NOW - 3 * LEEWAY, NOW + 3 * LEEWAY)
        | st.floats(NOW - 3 * LEEWAY, NOW + 3 * LEEWAY)
        | st.sampled_from([MAX_DATE, MAX_DATE + 1, -MAX_DATE - 1, 0, True, "1800000000", None])
        | json_values,
    ),
    "sub": st.text(max_size=10) | json_values,
    "jti": st.text(max_size=10) | json_values,
    # Read by a rule (cnf), by Claims (scope, scp, permissions) or by the rejection
    # hints (the rest): a signed token may hold any JSON there, and a wrong aud or
    # iss beside it sends it through the hints. Arrays and objects were a TypeError
    # there once (an unhashable azp looked up in a set), so a 500.
    **dict.fromkeys(
        ("azp", "client_id", "token_use", "nonce", "at_hash", "scope", "scp", "permissions"),
        st.sampled_from([AUD, "read:a write:b", ["read:a"], "access", "id"])
        | st.text(max_size=10)
        | json_values,
    ),
    "cnf": st.sampled_from([{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}, None])
    | json_values,
}
_DROP = object()


@pytest.mark.anyio
@fuzz(400)
@given(data=st.data())
async def test_genuinely_signed_tokens_match_the_rule_model(data: st.DataObject) -> None:
    # Random tokens never get past the signature, so claims would go unfuzzed: here
    # the issuer's own key signs arbitrary claims, and the verdict must match the model.
    payload = generate.claims()
    for name in data.draw(
        st.lists(st.sampled_from(sorted(_CLAIM_VALUES)), unique=True, max_size=4)
    ):
        value = data.draw(st.just(_DROP) | _CLAIM_VALUES[name])
        if value is _DROP:
            payload.pop(name, None)
        else:
            payload[name] = value
    extra = data.draw(
        st.dictionaries(
            st.text(max_size=8).filter(lambda k: k not in _RESERVED), json_values, max_size=3
        )
    )
    payload.update(extra)
    header: dict[str, Any] = {"alg": data.draw(st.sampled_from(["EdDSA", "Ed25519"]))}
    header.update(
        data.draw(
            st.dictionaries(
                st.sampled_from(["typ", "cty"])
                | st.text(max_size=6).filter(lambda k: k not in ("alg", "kid", "crit", "b64")),
                json_values,
                max_size=2,
            )
        )
    )
    if data.draw(st.booleans()):
        header["kid"] = "ed25519"
    raw = json.dumps(payload).encode()
    token = generate.jws(header, raw, signer="ed25519")
    expected = expected_refusals(header, payload)
    outcome: Claims | BearerError
    try:
        outcome = await _VERIFIER.verify(token)
    except BearerError as exc:
        outcome = exc
    event(type(outcome).__name__)  # shown by --hypothesis-show-statistics
    if isinstance(outcome, BearerError):
        assert expected, f"refused a token the rules accept: {outcome!r}"
        assert type(outcome) in expected, f"{outcome!r} not in {expected}"
    else:
        assert not expected, f"accepted a token the rules refuse with {expected}"
        assert outcome.to_dict() == payload
        # What the middleware and the dependencies read: sets of strings, whatever
        # JSON the claims hold.
        for names in (outcome.scopes, outcome.permissions):
            assert all(type(name) is str for name in names)


_HINTED = ("azp", "client_id", "token_use", "nonce", "at_hash", "scope", "scp", "permissions")


@pytest.mark.anyio
@fuzz(150)
@given(
    aud=st.sampled_from(["x", ["x", "y"], AUD + "/", AUD.upper(), None, _DROP]),
    others=st.fixed_dictionaries({}, optional=dict.fromkeys(_HINTED, json_values)),
)
async def test_a_refused_audience_is_explained_whatever_the_other_claims_hold(
    aud: Any, others: dict[str, Any]
) -> None:
    # A wrong or missing aud sends a signed token through the rejection hints, which
    # read the claims around it: whatever JSON those hold, the answer is the refusal
    # (an array as azp was once a TypeError there, so a 500).
    payload = generate.claims()
    payload.update(others)
    if aud is _DROP:
        del payload["aud"]
    else:
        payload["aud"] = aud
    token = generate.jws({"alg": "EdDSA"}, json.dumps(payload).encode(), signer="ed25519")
    refused: type[Exception] = (
        MissingClaimError if aud is None or aud is _DROP else InvalidAudienceError
    )
    if (
        _non_finite(payload)
        or _depth(payload) > MAX_JSON_DEPTH
        or _containers(payload) > MAX_JSON_CONTAINERS
    ):
        refused = MalformedTokenError  # not JSON (NaN, Infinity), too deep or too many
    with pytest.raises(refused):
        await _VERIFIER.verify(token)


# -- the Authorization header parser -----------------------------------------------------

_BEARER_VALUE = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")
_SCHEME_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*")

header_names = st.sampled_from(
    [b"authorization", b"Authorization", b"AUTHORIZATION", b"authorisation", b"x-authorization"]
) | st.binary(max_size=16)
header_values = st.one_of(
    st.binary(max_size=120),
    st.builds(lambda t: b"Bearer " + t.encode(), any_token),
    st.builds(
        lambda scheme, sep, tok: scheme + sep + tok,
        st.sampled_from(
            [
                b"Bearer",
                b"bearer",
                b"BEARER",
                b"Basic",
                b"Bearer,",
                b"Bearer:",
                b"Bearer\xe9",
                b"Token",
            ]
        ),
        st.sampled_from([b" ", b"  ", b"\t", b"", b" \t"]),
        st.text(alphabet=B64URL_ALPHABET + ".=~+/ ,", max_size=40).map(str.encode),
    ),
)


def _model_header(value: bytes) -> str | type[Exception] | None:
    """RFC 6750 §2.1 as a regular expression: the token, None, or InvalidRequestError."""
    value = value.strip(b" \t")
    # The scheme name is the leading run of tchar (RFC 9110 §5.6.2): "Bearer-ish" is
    # another scheme, "Bearer,x" a malformed Bearer value.
    found = _SCHEME_NAME.match(value)
    scheme = found.group(0) if found else b""
    if scheme.lower() != b"bearer":
        return None
    match = _BEARER_VALUE.fullmatch(value)
    return match.group(1).decode() if match else InvalidRequestError


@fuzz(400)
@given(st.lists(st.tuples(header_names, header_values), max_size=4))
def test_authorization_header_parser_matches_rfc_6750(headers: list[tuple[bytes, bytes]]) -> None:
    scope = http_scope(headers, host=None)  # exactly the generated headers
    auth = [v for n, v in headers if n.lower() == b"authorization"]
    try:
        got: str | type[Exception] | None = token_from_scope(scope)
    except MultipleTokensError:
        got = MultipleTokensError
    except InvalidRequestError:
        got = InvalidRequestError
    if len(auth) > 1:
        assert got is MultipleTokensError
    elif not auth:
        assert got is None
    else:
        assert got == _model_header(auth[0])


# -- the middleware --------------------------------------------------------------------


class _SwitchableKeys:
    """The corpus keys, or an outage (every lookup raises KeySetError)."""

    generation = 0

    def __init__(self) -> None:
        self.down = False

    async def get_key(self, kid: str | None, alg: str) -> PublicKey:
        if self.down:
            raise KeySetError("issuer unreachable", retry_after=7)
        return await _KEY_SET.get_key(kid, alg)


_SWITCH = _SwitchableKeys()


_Scoped = Annotated[Claims, Depends(require_scopes("read:messages", "admin:all"))]


def _app() -> FastAPI:
    api = FastAPI()

    @api.get("/open")
    async def open_route() -> dict[str, str]:
        return {"ok": "yes"}

    @api.get("/me")
    async def me(claims: Annotated[Claims, Depends(require_token)]) -> dict[str, Any]:
        return {"sub": claims.sub}

    @api.get("/scoped")
    async def scoped(
        claims: _Scoped,
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    @api.websocket("/ws")
    async def ws(websocket: WebSocket, claims: Annotated[Claims, Depends(require_token)]) -> None:
        await websocket.accept()
        await websocket.close()

    # token cache off: every example goes through the whole path
    verifier = TokenVerifier(
        Auth0Config(issuer=ISS, audience=AUD, algorithms=tuple(ALL_ALGS), token_cache_size=0),
        key_set=_SWITCH,
        clock=lambda: NOW,
    )
    # As the README says: inside FastAPI's stack, where dependency rejections reach it.
    api.add_middleware(Auth0Middleware, verifier=verifier, warm_keys_on_startup=False)
    return api


_APP = _app()
_TOKEN_WINDOW = 24


def _windows(token: str) -> set[str]:
    return {token[i : i + _TOKEN_WINDOW] for i in range(max(0, len(token) - _TOKEN_WINDOW + 1))}


def _bearer(token: str) -> tuple[bytes, bytes]:
    return (b"authorization", b"Bearer " + token.encode())


async def _drive(scope: dict[str, Any], incoming: list[Message]) -> list[Message]:
    return await drive(_APP, scope, incoming)


@pytest.mark.anyio
@fuzz(250)
@given(
    headers=st.lists(
        st.tuples(header_names, header_values)
        | st.sampled_from(SEED_TOKENS).map(_bearer)
        | st.sampled_from(GOOD_TOKENS).map(_bearer),
        max_size=3,
    ),
    path=st.sampled_from(["/open", "/me", "/scoped", "/missing"]),
    websocket=st.booleans(),
    outage=st.booleans(),
)
async def test_middleware_answers_every_request_without_a_500(
    headers: list[tuple[bytes, bytes]], path: str, websocket: bool, outage: bool
) -> None:
    _SWITCH.down = outage
    scope = ws_scope(headers) if websocket else http_scope(headers, path)
    incoming: list[Message] = [{"type": "http.request", "body": b"", "more_body": False}]
    if websocket:
        incoming = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
    sent = await _drive(scope, incoming)

    start = sent[0]
    event(f"{scope['type']} {start.get('status', start['type'])}")
    if start["type"] == "websocket.accept":
        assert websocket
        return
    assert start["type"] in ("http.response.start", "websocket.http.response.start"), start
    status = start["status"]
    assert status in (200, 400, 401, 403, 503) or (status == 404 and path == "/missing")
    response_headers = dict(start["headers"])
    for name, value in start["headers"]:
        # No CR/LF or other control bytes can be smuggled into a header.
        assert all(0x20 <= b <= 0x7E for b in name + value), (name, value)
    body = b"".join(m.get("body", b"") for m in sent[1:])
    if status in (400, 401, 403):
        assert response_headers[b"www-authenticate"].startswith(b"Bearer ")
        assert json.loads(body)["reason"]
    if status == 503:
        assert int(response_headers[b"retry-after"]) >= 1
        assert json.loads(body)["error"] == "temporarily_unavailable"
    # Nothing the client sent comes back: no token bytes in headers or body.
    echoed = b"".join(name + b": " + value for name, value in start["headers"]) + body
    for _, value in headers:
        text = value.decode("latin-1")
        for window in _windows(text):
            assert window.encode("latin-1") not in echoed


# -- DPoP: proofs and credentials of any shape ---------------------------------------------

_DPOP_ISSUER = LocalIssuer(issuer=ISS, audience=AUD, key_type="P-256", clock=lambda: NOW)
_DPOP_CLIENT = DPoPKey()
_DPOP_TOKEN = _DPOP_ISSUER.token(cnf=_DPOP_CLIENT.cnf, scope="read:messages")
_DPOP_URL = "http://test/me"


def _dpop_app() -> FastAPI:
    api = FastAPI()

    @api.get("/me")
    async def me(claims: Annotated[Claims, Depends(require_token)]) -> dict[str, Any]:
        return {"sub": claims.sub}

    verifier = TokenVerifier(
        _DPOP_ISSUER.config(dpop="allowed", dpop_algorithms=("ES256", "EdDSA", "RS256")),
        key_set=StaticKeySet(_DPOP_ISSUER.jwks),
        clock=lambda: float(NOW),  # a float, as time.time() gives
    )
    api.add_middleware(Auth0Middleware, verifier=verifier, warm_keys_on_startup=False)
    return api


_DPOP_APP = _dpop_app()
_proof_claims = st.dictionaries(
    st.sampled_from(["jti", "htm", "htu", "iat", "ath", "nonce", "cnf"]),
    json_values
    | st.sampled_from(["GET", "get", _DPOP_URL, "http://test/me?x#y", "HTTP://TEST:80/me"])
    | st.integers(NOW - 400, NOW + 60)
    | st.sampled_from([10**400, -(10**400), 1e308]),
    max_size=3,
)
_proof_headers = st.dictionaries(
    st.sampled_from(["typ", "alg", "jwk", "crit", "b64", "kid", "jku"]),
    json_values | st.sampled_from(["dpop+jwt", "ES256", "RS256", "none", "HS256"]),
    max_size=2,
)


@st.composite
def _dpop_proofs(draw: st.DrawFn) -> bytes:
    """Proofs signed by the bound key with claims and header members overridden, the
    same with one character changed, or bytes of any kind."""
    payload: dict[str, Any] = {
        "jti": draw(st.sampled_from(["j1", "j2", "j3"])),  # repeats: replays too
        "htm": "GET",
        "htu": _DPOP_URL,
        "iat": NOW,
        "ath": access_token_hash(_DPOP_TOKEN),
        **draw(_proof_claims),
    }
    if draw(st.integers(0, 5)) == 0:
        # Dates at and past the ends of what a NumericDate can hold.
        payload["iat"] = draw(
            st.sampled_from([10**400, -(10**400), 1e308, -1e308, 253402300800, 2**63])
        )
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": _DPOP_CLIENT.jwk, **draw(_proof_headers)}
    # Signed as ES256 by the bound key whatever the header says it is.
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    signature = sign(_DPOP_CLIENT.private_key, "ES256", signing_input.encode())
    proof = signing_input + "." + b64url(signature)
    kind = draw(st.integers(0, 3))
    if kind == 1:
        at = draw(st.integers(0, len(proof) - 1))
        proof = proof[:at] + draw(st.sampled_from("A_-.=~ ")) + proof[at + 1 :]
    elif kind == 2:
        return draw(st.binary(max_size=200))
    return proof.encode("latin-1")


@pytest.mark.anyio
@fuzz(150)
@given(
    proofs=st.lists(_dpop_proofs(), max_size=2),
    scheme=st.sampled_from([b"DPoP ", b"dpop ", b"DPoP\t", b"DPoP", b"Bearer "]),
    token=st.sampled_from([_DPOP_TOKEN.encode(), b"a.b.c", b""]) | st.binary(max_size=40),
    host=st.sampled_from([b"test", b"TEST:80", b"test:81", b"test/x?", b"[::1]"])
    | st.binary(max_size=12),
    path=st.sampled_from(["/me", "/me/", "/x/../me", "/me#"]),
)
async def test_dpop_requests_of_any_shape_get_an_answer_never_a_500(
    proofs: list[bytes], scheme: bytes, token: bytes, host: bytes, path: str
) -> None:
    auth = [(b"authorization", scheme + token), *((b"dpop", p) for p in proofs)]
    scope = http_scope(auth, path, host=host)
    sent = await drive(_DPOP_APP, scope, [{"type": "http.request", "body": b""}])
    start = sent[0]
    status = start["status"]
    event(f"status {status}")
    # 307: FastAPI's redirect of "/me/" to "/me", for a request the middleware let by.
    assert status in (200, 400, 401, 403, 404) or (status == 307 and path == "/me/"), status
    if status == 200:
        # Only the honest request: the bound token, one proof, the right URL.
        assert token == _DPOP_TOKEN.encode()
        assert len(proofs) == 1
        assert path == "/me"
    response_headers = dict(start["headers"])
    if status in (400, 401, 403):
        challenge = response_headers[b"www-authenticate"]
        assert challenge.startswith((b"DPoP ", b"Bearer ")), challenge
        assert b'algs="ES256 EdDSA RS256"' in challenge
    for name, value in start["headers"]:
        assert all(0x20 <= b <= 0x7E for b in name + value), (name, value)
    body = b"".join(m.get("body", b"") for m in sent[1:])
    for secret in (_DPOP_TOKEN, *(p.decode("latin-1") for p in proofs)):
        for window in _windows(secret):
            assert window.encode("latin-1") not in body


# -- the JWKS parser and JWKSCache -------------------------------------------------------

_REAL_JWKS = generate.jwks()["keys"]
_REAL_MEMBERS = {name: [j[name] for j in _REAL_JWKS if name in j] for name in ("n", "e", "x", "y")}


@st.composite
def jwk_like(draw: st.DrawFn) -> Any:
    """JWK-shaped objects: real key material, random bytes and junk, mixed."""
    jwk: dict[str, Any] = {}
    jwk["kty"] = draw(st.sampled_from(["RSA", "EC", "OKP", "oct", "rsa", "PQC"]) | json_scalars)
    for name in ("n", "e", "x", "y"):
        if draw(st.booleans()):
            jwk[name] = draw(
                st.sampled_from(_REAL_MEMBERS[name] or ["AQAB"])
                | st.binary(max_size=70).map(b64url)
                | json_scalars
            )
    optional = {
        "crv": st.sampled_from(
            ["P-256", "P-384", "P-521", "Ed25519", "Ed448", "X25519", "secp256k1"]
        ),
        "kid": st.sampled_from(["rsa", "p256", "k" * 257, ""]) | json_scalars,
        "use": st.sampled_from(["sig", "enc"]) | json_scalars,
        "key_ops": st.lists(st.sampled_from(["verify", "sign", "encrypt"]), max_size=3)
        | json_scalars,
        "alg": st.sampled_from([*ALL_ALGS, "HS256", "none", "ES521"]) | json_scalars,
        "d": st.binary(max_size=8).map(b64url),
        "k": st.binary(max_size=8).map(b64url),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            jwk[name] = draw(strategy)
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    return jwk


jwks_documents = st.one_of(
    json_values,
    st.builds(
        lambda keys: {"keys": keys}, st.lists(jwk_like() | st.sampled_from(_REAL_JWKS), max_size=6)
    ),
    st.builds(
        lambda keys, extra: {**extra, "keys": keys},
        st.lists(jwk_like(), max_size=3),
        st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    ),
)


def _check_index(index: KeyIndex, document: Any) -> None:
    entries = document["keys"]
    assert len(index) + index.skipped == len(entries)
    for key in index.keys:
        assert key.algorithms
        assert key.algorithms <= ALL_ALGS | {"Ed448"}
        assert key.kid is None or (isinstance(key.kid, str) and len(key.kid) <= MAX_KID_LENGTH)
        if key.kty == "RSA":
            assert key.key.key_size >= 2048  # type: ignore[union-attr]
    for entry in entries:
        if isinstance(entry, dict) and (
            {"d", "k"} & entry.keys()
            or entry.get("kty") == "oct"
            or entry.get("use", "sig") != "sig"
            or entry.get("alg", "RS256") in ("HS256", "none")
        ):
            # Private, symmetric, encryption-only or HS*/none keys never verify.
            with pytest.raises(KeyRejected):
                parse_jwk(entry)


@fuzz(400)
@given(jwks_documents)
def test_jwks_parser_gives_a_key_index_or_value_error(document: Any) -> None:
    try:
        index = parse_jwks(document)
    except ValueError:
        assert not (
            isinstance(document, dict)
            and isinstance(document.get("keys"), list)
            and len(document["keys"]) <= MAX_JWKS_KEYS
        )
        return
    _check_index(index, document)


def _body(document: Any) -> bytes:
    return json.dumps(document).encode()


responses = st.one_of(
    # Arbitrary bodies with a 200.
    st.builds(lambda body: (200, {}, body), st.binary(max_size=300)),
    st.builds(lambda doc: (200, {"content-type": "application/json"}, _body(doc)), jwks_documents),
    # Status codes, redirects, retry hints.
    st.builds(
        lambda status, retry: (
            status,
            {"retry-after": retry, "location": "https://evil.example/"},
            b"{}",
        ),
        st.sampled_from([201, 204, 301, 302, 304, 400, 401, 404, 429, 500, 502, 503]),
        st.text(alphabet="0123456789 -,GMTSunMon:", max_size=30),
    ),
    # Encodings: gzip garbage, a gzip bomb, an unknown coding.
    st.builds(lambda body: (200, {"content-encoding": "gzip"}, body), st.binary(max_size=100)),
    st.just((200, {"content-encoding": "gzip"}, gzip.compress(b" " * (MAX_JWKS_BYTES * 4)))),
    st.just((200, {"content-encoding": "br"}, b"\x0b\x02\x80{}\x03")),
    # Too big, by one byte.
    st.just((200, {}, b'{"keys": []}' + b" " * MAX_JWKS_BYTES)),
    # Valid JSON with NaN, deep nesting, duplicate keys.
    st.just((200, {}, b'{"keys": [{"kty": "RSA", "e": NaN}]}')),
    st.just((200, {}, b"[" * 100_000 + b"]" * 100_000)),
    # Transport failures.
    st.sampled_from(["connect", "read-timeout", "protocol", "boom"]),
)


def _respond(spec: Any, request: httpx.Request) -> httpx.Response:
    if isinstance(spec, str):
        if spec == "connect":
            raise httpx.ConnectError("refused", request=request)
        if spec == "read-timeout":
            raise httpx.ReadTimeout("slow", request=request)
        if spec == "protocol":
            raise httpx.RemoteProtocolError("garbled", request=request)
        raise RuntimeError("a transport bug")
    status, headers, body = spec
    # A stream, not content=: the cache reads it chunk by chunk, as from a socket, so
    # the size cap and the bounded gzip decoding are what is exercised.
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


_GOOD_BODY = json.dumps(generate.jwks()).encode()


@pytest.mark.anyio
@fuzz(150)
@given(st.lists(responses, min_size=1, max_size=3))
async def test_jwks_cache_survives_any_issuer_response(specs: list[Any]) -> None:
    now = [1000.0]
    current: list[Any] = [(200, {}, _GOOD_BODY)]

    def handler(request: httpx.Request) -> httpx.Response:
        return _respond(current[0], request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        cache = JWKSCache(
            "https://issuer.example/.well-known/jwks.json",
            http_client=client,
            clock=lambda: now[0],
            fetch_timeout=2,
        )
        await cache.refresh()
        good = await cache.get_key("ed25519", "EdDSA")
        for spec in specs:
            before = cache.status()
            current[0] = spec
            now[0] += 1000  # past freshness (600 s), within max_stale (6 h)
            try:
                with anyio.fail_after(10):
                    await cache.refresh()
            except KeySetError:
                event(f"refresh failed: {cache.status().last_error}")
                # A failed fetch: the last good key set is kept and still serves.
                after = cache.status()
                assert after.generation == before.generation
                assert after.kids == before.kids
                if "ed25519" in before.kids:
                    current[0] = "connect"  # the issuer stays down
                    assert await cache.get_key("ed25519", "EdDSA") is good
                continue
            # A successful fetch installed a key set with at least one usable key.
            assert cache.status().key_count >= 1
            # The new set may lack that key; only a foreign exception would matter.
            with contextlib.suppress(InvalidTokenError, KeySetError):
                good = await cache.get_key("ed25519", "EdDSA")


# -- fail closed: an anonymous request never reaches a route that is not public ---------

_PUBLIC_HITS: list[str] = []


def _fail_closed_app() -> Any:
    def endpoint(name: str) -> Any:
        async def answer(request: Request) -> PlainTextResponse:
            _PUBLIC_HITS.append(name)
            return PlainTextResponse(name)

        return answer

    routes = [
        Route("/health", endpoint("public")),
        Mount("/static", routes=[Route("/{name:path}", endpoint("public"))]),
        Route("/healthy", endpoint("private")),
        Route("/{rest:path}", endpoint("private")),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(
                Auth0Middleware,
                verifier=_VERIFIER,
                require_token=True,
                public_paths=["/health", "/static/*"],
            )
        ],
    )


_FAIL_CLOSED_APP = _fail_closed_app()
# Paths built from pieces that sit near the public ones: the names themselves, longer
# names, other case, dot segments, encoded slashes, a root-path-sized prefix.
_piece = st.sampled_from(
    ["health", "healthy", "static", "api", "abc", "a", "", ".", "..", "%2F", "HEALTH", ";x", "y"]
)
_segment = st.lists(_piece, min_size=1, max_size=2).map("".join)
_path = st.builds(
    lambda segments, slash: "/" + "/".join(segments) + ("/" if slash else ""),
    st.lists(_segment, min_size=1, max_size=4),
    st.booleans(),
)


@pytest.mark.anyio
@fuzz(300)
@given(
    path=_path,
    root_path=st.sampled_from(["", "/api", "/health", "/static"]),
    prefixed=st.booleans(),
)
# Near misses worth trying every run: a root path the path does not carry, a longer
# name, a subtree's own root, the root path itself.
@example(path="/abc/health", root_path="/api", prefixed=False)
@example(path="/healthy", root_path="", prefixed=False)
@example(path="/static", root_path="", prefixed=False)
@example(path="", root_path="/health", prefixed=True)
async def test_fail_closed_never_lets_an_anonymous_request_reach_a_private_route(
    path: str, root_path: str, prefixed: bool
) -> None:
    # Whatever the path and root_path (proxy prefix) look like, the router's choice of
    # endpoint and the middleware's idea of "public" must agree: an anonymous request
    # that gets through reaches a public endpoint, never a private one.
    scope = http_scope(None, (root_path + path) if prefixed else path, root_path=root_path)
    _PUBLIC_HITS.clear()
    sent = await drive(
        _FAIL_CLOSED_APP, scope, [{"type": "http.request", "body": b"", "more_body": False}]
    )
    status = sent[0]["status"]
    event(f"status {status}")
    assert "private" not in _PUBLIC_HITS, (scope["path"], root_path)
    if status == 200:
        assert _PUBLIC_HITS == ["public"]
    else:
        assert status in (401, 404, 307), status
