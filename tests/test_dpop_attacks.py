"""DPoP (RFC 9449) from the attacker's side, through the real middleware.

Three attackers: one who holds a valid DPoP-bound token of their own and its key, one
who captured someone else's token and proofs (from a log or a proxy), and one who has
nothing but can send any bytes. Every attack here is refused today; each test shows the
refusal next to the honest request that still passes (or the state that must not move),
so that it fails when the rule behind it is removed. The rules already pinned one by
one in test_dpop.py are not repeated: these are the combinations an attacker would try.

Time is an injected clock; the issuer is never started (its JWKS goes to a
StaticKeySet); requests go through httpx.ASGITransport, or a raw ASGI scope where an
HTTP client cannot send the bytes (absolute-form targets, duplicate Host headers).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import httpx
import pytest
from _asgi import drive, http_scope, ws_scope
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from fastapi import Depends, FastAPI, Request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_auth0._claims import Claims
from asgi_auth0._dpop import access_token_hash, jwk_thumbprint
from asgi_auth0._keys import PublicKey, StaticKeySet
from asgi_auth0._middleware import Auth0Middleware
from asgi_auth0._signing import PrivateKey, b64url, generate_private_key, public_jwk, sign_jws
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.fastapi import require_token
from asgi_auth0.testing import DPoPKey, LocalIssuer

ISS = "https://tenant.example.test/"
AUD = "https://api.example.test"
NOW = 1_800_000_000
BASE = "http://testserver"
# The order of the P-256 group: (r, s) and (r, n - s) are both valid ECDSA signatures.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

TokenClaims = Annotated[Claims, Depends(require_token)]


class CountingKeySet(StaticKeySet):
    """A StaticKeySet that counts lookups: the token's key is the only key ever asked."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        super().__init__(jwks)
        self.lookups = 0

    async def get_key(self, kid: str | None, alg: str) -> PublicKey:
        self.lookups += 1
        return await super().get_key(kid, alg)


@pytest.fixture
def minter(auth0_rsa_key: PrivateKey) -> LocalIssuer:
    return LocalIssuer(issuer=ISS, audience=AUD, private_key=auth0_rsa_key, clock=lambda: NOW)


def verifier_for(minter: LocalIssuer, **config: Any) -> TokenVerifier:
    config.setdefault("dpop", "allowed")
    return TokenVerifier(
        minter.config(**config), key_set=CountingKeySet(minter.jwks), clock=lambda: NOW
    )


def api(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI()

    @app.api_route("/me", methods=["GET", "POST"])
    async def me(claims: TokenClaims) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.get("/other")
    async def other(claims: TokenClaims) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.get("/anyone")
    async def anyone(request: Request) -> dict[str, Any]:
        claims = request.state.claims
        return {"sub": None if claims is None else claims.sub}

    app.add_middleware(Auth0Middleware, verifier=verifier)
    return app


@pytest.fixture
async def http() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def open_client(app: Any, base_url: str = BASE) -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)
        clients.append(c)
        return c

    yield open_client
    for c in clients:
        await c.aclose()


def proof(
    client: DPoPKey,
    token: str,
    *,
    htu: str = BASE + "/me",
    htm: str = "GET",
    header: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {
        "jti": secrets.token_urlsafe(12),
        "htm": htm,
        "htu": htu,
        "iat": NOW,
        "ath": access_token_hash(token),
        **claims,
    }
    head = {"typ": "dpop+jwt", "alg": client.alg, "jwk": client.jwk, **(header or {})}
    return sign_jws(client.private_key, head, payload)


def es256_raw(key: Any, header: bytes, payload: bytes) -> str:
    """An ES256 JWS over the exact header and payload bytes given (duplicate members
    and other JSON the dict-based signer cannot write)."""
    signing_input = b64url(header) + "." + b64url(payload)
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def dpop(token: str, the_proof: str) -> dict[str, str]:
    return {"Authorization": f"DPoP {token}", "DPoP": the_proof}


def reason(r: httpx.Response) -> str:
    return str(r.json()["reason"])


async def raw_get(
    app: Any, target: bytes, headers: list[tuple[bytes, bytes]], *, root_path: str = ""
) -> int:
    """The status of a GET with exactly this request target and these headers."""
    path = target.decode("latin-1").split("?", 1)[0]
    scope = http_scope(
        headers, path, host=None, raw_path=target, root_path=root_path, server=("testserver", 80)
    )
    sent = await drive(app, scope, [{"type": "http.request", "body": b""}])
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


# -- (b) a captured token and proof -----------------------------------------------------


@pytest.mark.anyio
async def test_a_captured_proof_opens_no_other_request_and_is_spent_by_its_own(
    minter: LocalIssuer, http: Any
) -> None:
    # The victim's token and a proof for GET http://testserver/me, captured before the
    # victim sent them: every other request they could be put on is refused, none of
    # those refusals spends the proof, and once it is used it is a replay everywhere.
    victim = DPoPKey()
    token = minter.token(cnf=victim.cnf)
    captured = dpop(token, proof(victim, token))
    app = api(verifier_for(minter))
    async with http(app) as c:
        moved = [
            await c.post("/me", headers=captured),
            await c.get("/other", headers=captured),
            await c.get("/me/", headers=captured),
            await c.get("/ME", headers=captured),
            await c.get("/%2Fme", headers=captured),
            await c.get("/me", headers={**captured, "Host": "testserver:8080"}),
            await c.get("/me", headers={**captured, "Host": "otherserver"}),
            await c.get("/me", headers={**captured, "Host": "testserver."}),
        ]
        async with http(app, "https://testserver") as tls:
            moved.append(await tls.get("/me", headers=captured))
        used = await c.get("/me", headers=captured)
        again = [
            await c.get("/me", headers=captured),
            # The query is not part of htu (§4.3): a new query is the same proof again.
            await c.get("/me?page=2", headers=captured),
        ]
    for r in moved:
        assert r.status_code == 401
        assert reason(r) == "invalid_dpop_proof"
    assert used.status_code == 200
    assert used.json() == {"sub": "user-1"}
    for r in again:
        assert r.status_code == 401
        assert reason(r) == "dpop_proof_replayed"


@pytest.mark.anyio
async def test_a_replay_is_caught_by_its_jti_not_by_its_bytes(
    minter: LocalIssuer, http: Any
) -> None:
    # ECDSA signatures are malleable: (r, n - s) verifies as well as (r, s). A replay
    # check keyed on the proof's bytes would take the twin as new; the jti memory does not.
    victim = DPoPKey()
    token = minter.token(cnf=victim.cnf)
    original = proof(victim, token)
    head, body, signature = original.split(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    s = int.from_bytes(raw[32:], "big")
    twin = f"{head}.{body}.{b64url(raw[:32] + (P256_ORDER - s).to_bytes(32, 'big'))}"
    assert twin != original
    async with http(api(verifier_for(minter))) as c:
        first = await c.get("/me", headers=dpop(token, original))
        replayed = await c.get("/me", headers=dpop(token, twin))
    assert first.status_code == 200
    assert replayed.status_code == 401
    assert reason(replayed) == "dpop_proof_replayed"


@pytest.mark.anyio
async def test_a_captured_token_with_the_attackers_own_key_is_refused_and_spends_nothing(
    minter: LocalIssuer, http: Any
) -> None:
    # The attacker signs a perfect proof for the victim's token with a key of their
    # own, reusing the jti of the victim's next proof: refused as unbound, and the
    # victim's proof with that jti still passes afterwards (no lock-out).
    victim, attacker = DPoPKey(), DPoPKey()
    token = minter.token(cnf=victim.cnf)
    jti = "the-victims-next-jti"
    verifier = verifier_for(minter)
    async with http(api(verifier)) as c:
        forged = await c.get("/me", headers=dpop(token, proof(attacker, token, jti=jti)))
        remembered = verifier.dpop.remembered
        honest = await c.get("/me", headers=dpop(token, proof(victim, token, jti=jti)))
    assert forged.status_code == 401
    assert reason(forged) == "dpop_binding_mismatch"
    assert remembered == 0
    assert honest.status_code == 200


# -- Host header and request-target tricks -------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("target", "hosts"),
    [
        # Absolute-form request target (RFC 9112 §3.2.2): the path as sent is not a path.
        (b"http://testserver/me", [b"testserver"]),
        # Two Host headers: the first (which Starlette routes by) is the one compared.
        (b"/me", [b"otherserver", b"testserver"]),
        # Userinfo, a port that is no port, an IPv6 literal that is not one.
        (b"/me", [b"user@testserver"]),
        (b"/me", [b"testserver:99999"]),
        (b"/me", [b"[testserver]"]),
        (b"/me", [b"testserver:80@otherserver"]),
    ],
    ids=["absolute-form", "two-hosts", "userinfo", "bad-port", "bad-ipv6", "port-userinfo"],
)
async def test_host_and_target_tricks_do_not_match_a_captured_proof(
    minter: LocalIssuer, target: bytes, hosts: list[bytes]
) -> None:
    victim = DPoPKey()
    token = minter.token(cnf=victim.cnf)
    app = api(verifier_for(minter))

    def headers(host: list[bytes]) -> list[tuple[bytes, bytes]]:
        return [
            *((b"host", h) for h in host),
            (b"authorization", f"DPoP {token}".encode()),
            (b"dpop", proof(victim, token).encode()),
        ]

    assert await raw_get(app, target, headers(hosts)) == 401
    assert await raw_get(app, b"/me", headers([b"testserver"])) == 200


@pytest.mark.anyio
async def test_a_root_path_is_part_of_the_uri_a_proof_must_name(minter: LocalIssuer) -> None:
    # Behind a proxy that strips /api, the client called http://testserver/api/me: a
    # proof for /me (what the app routes) is refused, one for /api/me passes.
    victim = DPoPKey()
    token = minter.token(cnf=victim.cnf)
    app = api(verifier_for(minter))

    def headers(htu: str) -> list[tuple[bytes, bytes]]:
        return [
            (b"host", b"testserver"),
            (b"authorization", f"DPoP {token}".encode()),
            (b"dpop", proof(victim, token, htu=htu).encode()),
        ]

    assert await raw_get(app, b"/me", headers(BASE + "/me"), root_path="/api") == 401
    assert await raw_get(app, b"/me", headers(BASE + "/api/me"), root_path="/api") == 200


# -- (a) the attacker's own token and key: proofs built to confuse the parser ---------------


def _header(client: DPoPKey, **extra: Any) -> dict[str, Any]:
    return {"typ": "dpop+jwt", "alg": client.alg, "jwk": client.jwk, **extra}


def _payload(token: str, **extra: Any) -> dict[str, Any]:
    return {
        "jti": secrets.token_urlsafe(12),
        "htm": "GET",
        "htu": BASE + "/me",
        "iat": NOW,
        "ath": access_token_hash(token),
        **extra,
    }


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


@pytest.mark.anyio
@pytest.mark.parametrize(
    "build",
    [
        # crit names an extension nobody understands (RFC 7515 §4.1.11): refuse.
        lambda c, t: (_dump(_header(c, crit=["htu"], htu="x")), _dump(_payload(t))),
        lambda c, t: (_dump(_header(c, crit=[])), _dump(_payload(t))),
        # b64: false would make the signature cover the payload unencoded.
        lambda c, t: (_dump(_header(c, b64=False)), _dump(_payload(t))),
        # Duplicate members: which one a parser keeps decides what is checked.
        lambda c, t: (_dump(_header(c))[:-1] + ',"typ":"JWT"}', _dump(_payload(t))),
        lambda c, t: (
            _dump(_header(c)),
            _dump(_payload(t, htu=BASE + "/other"))[:-1] + f',"htu":"{BASE}/me"}}',
        ),
        lambda c, t: (
            _dump({**_header(c), "jwk": None})[:-5]
            + _dump(c.jwk)[:-1]
            + f',"x":"{c.jwk["x"]}"}}}}',
            _dump(_payload(t)),
        ),
        # A byte-order mark before the payload JSON.
        lambda c, t: (_dump(_header(c)), "\ufeff" + _dump(_payload(t))),
        # The key somewhere else than jwk: never fetched, never used.
        lambda c, t: (
            _dump(
                {k: v for k, v in _header(c, jku="https://evil.test/jwks").items() if k != "jwk"}
            ),
            _dump(_payload(t)),
        ),
        lambda c, t: (
            _dump({k: v for k, v in _header(c, kid="k1").items() if k != "jwk"}),
            _dump(_payload(t)),
        ),
    ],
    ids=[
        "crit",
        "crit-empty",
        "b64-false",
        "duplicate-typ",
        "duplicate-htu",
        "duplicate-jwk-member",
        "bom",
        "jku-without-jwk",
        "kid-without-jwk",
    ],
)
async def test_proofs_built_to_confuse_the_parser_are_refused(
    minter: LocalIssuer, http: Any, build: Callable[[DPoPKey, str], tuple[str, str]]
) -> None:
    client = DPoPKey()
    token = minter.token(cnf=client.cnf)
    header, payload = build(client, token)
    verifier = verifier_for(minter)
    async with http(api(verifier)) as c:
        bad = await c.get(
            "/me",
            headers=dpop(token, es256_raw(client.private_key, header.encode(), payload.encode())),
        )
        good = await c.get(
            "/me",
            headers=dpop(
                token,
                es256_raw(
                    client.private_key,
                    _dump(_header(client)).encode(),
                    _dump(_payload(token)).encode(),
                ),
            ),
        )
    assert bad.status_code == 401
    assert reason(bad) == "invalid_dpop_proof"
    assert verifier.dpop.remembered == 1  # only the good one
    assert good.status_code == 200


@pytest.mark.anyio
async def test_jku_x5u_and_x5c_beside_jwk_are_never_followed(
    minter: LocalIssuer, http: Any
) -> None:
    # The proof's key is its jwk and nothing else: the key source is asked once per
    # request (for the access token's key), never for what jku/x5u/x5c/kid point at.
    client = DPoPKey()
    token = minter.token(cnf=client.cnf)
    verifier = verifier_for(minter)
    key_set = verifier.key_set
    assert isinstance(key_set, CountingKeySet)
    extra = {"jku": "https://evil.test/jwks", "x5u": "https://evil.test/c", "x5c": ["AAAA"]}
    async with http(api(verifier)) as c:
        r = await c.get(
            "/me", headers=dpop(token, proof(client, token, header={**extra, "kid": "x"}))
        )
    assert r.status_code == 200
    assert key_set.lookups == 1


@pytest.mark.anyio
async def test_an_ec_point_off_the_curve_is_refused(
    minter: LocalIssuer, http: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Invalid-curve attacks start with a point that is not on P-256; the thumbprint of
    # such a jwk could even be what the token is bound to. It is refused as a key,
    # before any signature is checked with it.
    caplog.set_level(logging.DEBUG, logger="asgi_auth0")
    client = DPoPKey()
    y = int.from_bytes(base64.urlsafe_b64decode(client.jwk["y"] + "=="), "big")
    off = {**client.jwk, "y": b64url(((y + 1) % 2**256).to_bytes(32, "big"))}
    token = minter.token(cnf={"jkt": jwk_thumbprint(off)})
    async with http(api(verifier_for(minter))) as c:
        r = await c.get("/me", headers=dpop(token, proof(client, token, header={"jwk": off})))
        honest_token = minter.token(cnf=client.cnf)
        ok = await c.get("/me", headers=dpop(honest_token, proof(client, honest_token)))
    assert r.status_code == 401
    assert reason(r) == "invalid_dpop_proof"
    assert any("jwk is not usable" in rec.getMessage() for rec in caplog.records)
    assert ok.status_code == 200


@pytest.mark.anyio
async def test_a_key_type_and_alg_that_do_not_fit_are_refused(
    minter: LocalIssuer, http: Any
) -> None:
    # ES256 named over a P-384 key, and over an Ed25519 key, with every alg allowed:
    # the signature is never checked with an algorithm the key was not made for.
    verifier = verifier_for(minter, dpop_algorithms=("ES256", "ES384", "EdDSA"))
    results = []
    async with http(api(verifier)) as c:
        for kind in ("P-384", "Ed25519"):
            client = DPoPKey(kind)
            token = minter.token(cnf=client.cnf)
            lying = proof(client, token, header={"alg": "ES256"})
            results.append(await c.get("/me", headers=dpop(token, lying)))
            results.append(await c.get("/me", headers=dpop(token, proof(client, token))))
    assert [r.status_code for r in results] == [401, 200, 401, 200]
    assert reason(results[0]) == reason(results[2]) == "invalid_dpop_proof"


@pytest.fixture(scope="module")
def rsa_client() -> DPoPKey:
    client = DPoPKey()  # its P-256 key is replaced (the kit would make another RSA key)
    client.private_key = generate_private_key("RSA")
    client.alg = "RS256"
    client.jwk = {k: v for k, v in public_jwk(client.private_key).items() if k != "use"}
    client.jkt = jwk_thumbprint(client.jwk)
    return client


@pytest.mark.anyio
async def test_another_spelling_of_the_same_rsa_key_is_another_thumbprint(
    minter: LocalIssuer, http: Any, rsa_client: DPoPKey
) -> None:
    # A leading zero octet in n is the same key, but not the same RFC 7638 input: a
    # token bound to the canonical jwk is not opened by the padded one, nor the reverse.
    n = base64.urlsafe_b64decode(rsa_client.jwk["n"] + "==")
    padded = {**rsa_client.jwk, "n": b64url(b"\x00" + n)}
    assert jwk_thumbprint(padded) != rsa_client.jkt
    canonical_token = minter.token(cnf=rsa_client.cnf)
    padded_token = minter.token(cnf={"jkt": jwk_thumbprint(padded)})
    async with http(api(verifier_for(minter, dpop_algorithms=("ES256", "RS256")))) as c:
        crossed = [
            await c.get(
                "/me",
                headers=dpop(
                    canonical_token, proof(rsa_client, canonical_token, header={"jwk": padded})
                ),
            ),
            await c.get("/me", headers=dpop(padded_token, proof(rsa_client, padded_token))),
        ]
        honest = await c.get(
            "/me", headers=dpop(canonical_token, proof(rsa_client, canonical_token))
        )
    for r in crossed:
        assert r.status_code == 401
        # Refusing the padded n outright (RFC 7518 §6.3.1.1: minimal octets) would do too.
        assert reason(r) in ("dpop_binding_mismatch", "invalid_dpop_proof")
    assert honest.status_code == 200


# -- credentials: more than one, or the wrong scheme for the token ---------------------------


@pytest.mark.anyio
async def test_mixed_credentials_are_refused(minter: LocalIssuer, http: Any) -> None:
    client = DPoPKey()
    bound = minter.token(cnf=client.cnf)
    plain = minter.token(sub="someone-else")
    good_proof = proof(client, bound)
    async with http(api(verifier_for(minter))) as c:
        for first, second in (
            (f"DPoP {bound}", f"Bearer {plain}"),
            (f"Bearer {plain}", f"DPoP {bound}"),
        ):
            r = await c.get(
                "/anyone",
                headers=[("Authorization", first), ("Authorization", second), ("DPoP", good_proof)],
            )
            assert r.status_code == 400
            assert reason(r) == "multiple_tokens"
        # A bound token sent as Bearer next to a perfectly good proof: still a bearer use.
        as_bearer = await c.get(
            "/me", headers={"Authorization": f"Bearer {bound}", "DPoP": good_proof}
        )
        # Two proofs folded into one header value.
        folded = await c.get("/me", headers=dpop(bound, f"{good_proof}, {good_proof}"))
        honest = await c.get("/me", headers=dpop(bound, good_proof))
    assert as_bearer.status_code == 401
    assert reason(as_bearer) == "sender_constrained_token"
    assert folded.status_code == 401
    assert reason(folded) == "invalid_dpop_proof"
    assert honest.status_code == 200


# -- (c) nothing but bytes: no proof work before the token is good ---------------------------


@pytest.mark.anyio
async def test_no_proof_is_looked_at_before_the_access_token_is_good(
    minter: LocalIssuer, http: Any, auth0_rsa_key: PrivateKey
) -> None:
    # Large proofs with fresh keys next to tokens that are garbage, forged, expired or
    # from another issuer: the proof checker is never reached, so no key is parsed
    # and no signature of the attacker's checked.
    client = DPoPKey()
    verifier = verifier_for(minter)
    calls: list[str] = []
    real_check = verifier.dpop.check

    def counting_check(the_proof: str, **kwargs: Any) -> None:
        calls.append(the_proof)
        real_check(the_proof, **kwargs)

    verifier.dpop.check = counting_check  # type: ignore[method-assign,assignment]
    forger = LocalIssuer(issuer=ISS, audience=AUD, clock=lambda: NOW)
    stranger = LocalIssuer(
        issuer="https://other.example.test/", audience=AUD, private_key=auth0_rsa_key
    )
    tokens = [
        "not.a.token",
        forger.token(cnf=client.cnf, headers={"kid": minter.current_kid}),  # not its key
        minter.expired_token(cnf=client.cnf),
        stranger.token(cnf=client.cnf),
    ]
    padding = "p" * 5000
    async with http(api(verifier)) as c:
        refused = [
            await c.get("/me", headers=dpop(t, proof(client, t, pad=padding))) for t in tokens
        ]
        good = minter.token(cnf=client.cnf)
        ok = await c.get("/me", headers=dpop(good, proof(client, good)))
    for r in refused:
        assert r.status_code == 401
        assert reason(r) not in ("invalid_dpop_proof", "dpop_binding_mismatch")
    assert ok.status_code == 200
    assert len(calls) == 1


@pytest.mark.anyio
async def test_with_dpop_disabled_no_proof_is_ever_read(minter: LocalIssuer, http: Any) -> None:
    # "disabled" is the behaviour from before DPoP: the scheme is another scheme
    # (anonymous), the DPoP header is just a header, and a bound Bearer token is refused.
    client = DPoPKey()
    bound = minter.token(cnf=client.cnf)
    verifier = verifier_for(minter, dpop="disabled")
    calls: list[str] = []
    verifier.dpop.check = lambda p, **_: calls.append(p)  # type: ignore[method-assign]
    async with http(api(verifier)) as c:
        anonymous = await c.get("/anyone", headers=dpop(bound, proof(client, bound, iat="garbage")))
        malformed = await c.get("/anyone", headers={"Authorization": "DPoP", "DPoP": "x"})
        required = await c.get("/me", headers=dpop(bound, proof(client, bound)))
        as_bearer = await c.get("/me", headers={"Authorization": f"Bearer {bound}"})
    assert anonymous.status_code == 200
    assert anonymous.json() == {"sub": None}
    assert malformed.status_code == 200
    assert malformed.json() == {"sub": None}
    assert required.status_code == 401
    assert reason(required) == "missing_token"
    assert reason(as_bearer) == "sender_constrained_token"
    assert "DPoP" not in anonymous.headers.get("www-authenticate", "")
    assert "DPoP" not in required.headers["www-authenticate"]
    assert calls == []


# -- WebSocket ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["required", "allowed"])
async def test_a_websocket_query_token_beside_dpop_credentials_is_refused(
    minter: LocalIssuer, mode: str
) -> None:
    # A query token next to good DPoP credentials is two ways at once, refused in both
    # modes (with "allowed" it used to be taken in place of the DPoP credentials); the
    # same handshake without the query token is accepted.
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"sub": websocket.state.claims.sub})
        await websocket.close()

    verifier = verifier_for(minter, dpop=mode)
    app = Starlette(
        routes=[WebSocketRoute("/ws", ws)],
        middleware=[
            Middleware(Auth0Middleware, verifier=verifier, websocket_query_param="access_token")
        ],
    )
    client = DPoPKey()
    token = minter.token(cnf=client.cnf)

    def scope(query: bytes) -> dict[str, Any]:
        the_proof = proof(client, token, htu="ws://testserver/ws")
        auth = [(b"authorization", f"DPoP {token}".encode()), (b"dpop", the_proof.encode())]
        # No denial extension: a refused handshake is a bare close.
        return ws_scope(auth, query=query, host=b"testserver", denial=False)

    connect = [{"type": "websocket.connect"}]
    refused = await drive(app, scope(b"access_token=" + minter.token().encode()), connect)
    accepted = await drive(app, scope(b""), connect)
    assert [m["type"] for m in refused] == ["websocket.close"]
    assert [m["type"] for m in accepted] == [
        "websocket.accept",
        "websocket.send",
        "websocket.close",
    ]


# -- logs ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_log_line_holds_a_token_or_a_proof(
    minter: LocalIssuer, http: Any, caplog: pytest.LogCaptureFixture
) -> None:
    victim, attacker = DPoPKey(), DPoPKey()
    token = minter.token(cnf=victim.cnf)
    forged = LocalIssuer(issuer=ISS, audience=AUD, clock=lambda: NOW).token(
        cnf=victim.cnf, headers={"kid": minter.current_kid}
    )
    proofs = [
        proof(victim, token, htm="PUT"),  # wrong method
        proof(victim, token, htu=BASE + "/other"),  # wrong URI
        proof(attacker, token),  # wrong key
        proof(victim, token, iat=NOW - 3600),  # too old
        proof(victim, token, ath=access_token_hash(forged)),  # another token
        "x" + proof(victim, token),  # not a JWT
    ]
    replayed = proof(victim, token)
    caplog.set_level(logging.DEBUG)
    async with http(api(verifier_for(minter))) as c:
        statuses = [(await c.get("/me", headers=dpop(token, p))).status_code for p in proofs]
        statuses.append((await c.get("/me", headers=dpop(forged, replayed))).status_code)
        statuses.append((await c.get("/me", headers=dpop(token, replayed))).status_code)
        statuses.append((await c.get("/me", headers=dpop(token, replayed))).status_code)
    assert statuses == [401] * 7 + [200, 401]
    assert caplog.records
    # The signed parts of tokens and proofs: any 16 characters of them in a log line
    # would be a piece of a credential.
    secrets_seen = [
        part
        for credential in (token, forged, replayed, *proofs)
        for part in credential.split(".")[1:]
        if len(part) >= 16
    ]
    for record in caplog.records:
        line = record.getMessage() + " " + repr(record.__dict__)
        for part in secrets_seen:
            for start in range(0, len(part) - 16, 16):
                assert part[start : start + 16] not in line, (record.name, line[:200])


# -- found by this red team, fixed: each test failed before its fix ----------------------


@pytest.mark.anyio
@pytest.mark.parametrize("iat", [10**400, -(10**400), 253402300800, 1e300])
async def test_an_iat_beyond_any_date_is_a_refusal_not_a_500(
    minter: LocalIssuer, http: Any, iat: float
) -> None:
    # Anyone with a captured bound token, no key needed (the binding is checked last):
    # an int too large for a float overflowed the message's arithmetic.
    victim, attacker = DPoPKey(), DPoPKey()
    token = minter.token(cnf=victim.cnf)
    client = http(api(verifier_for(minter)))
    r = await client.get("/me", headers=dpop(token, proof(attacker, token, iat=iat)))
    assert r.status_code == 401
    assert reason(r) == "invalid_dpop_proof"
    ok = await client.get("/me", headers=dpop(token, proof(victim, token)))
    assert ok.status_code == 200


@pytest.mark.anyio
async def test_one_key_cannot_push_another_keys_live_proofs_out(
    minter: LocalIssuer, http: Any
) -> None:
    verifier = verifier_for(minter)
    checker = verifier.dpop
    checker._jti_cache_size, checker._jti_per_key = 50, 5  # a tenth, as by default
    victim, attacker = DPoPKey(), DPoPKey()
    victims = minter.token(cnf=victim.cnf, sub="victim")
    attackers = minter.token(cnf=attacker.cnf, sub="attacker")
    captured = dpop(victims, proof(victim, victims))
    client = http(api(verifier))
    assert (await client.get("/me", headers=captured)).status_code == 200
    for _ in range(60):  # at the far edge of the leeway: these would outlive the victim's
        flood = proof(attacker, attackers, iat=NOW + 30)
        assert (await client.get("/me", headers=dpop(attackers, flood))).status_code == 200
    replay = await client.get("/me", headers=captured)
    assert replay.status_code == 401
    assert reason(replay) == "dpop_proof_replayed"
    # The attacker's key holds its share, no more; its other proofs went unremembered.
    assert checker._per_key[attacker.jkt] == 5
    assert checker.unremembered == 55


@pytest.mark.anyio
@pytest.mark.parametrize(("bits", "e_bits"), [(3072, 3071), (8192, 17), (4096, 40)])
async def test_a_costly_rsa_proof_key_is_refused_before_any_signature_check(
    minter: LocalIssuer, http: Any, caplog: pytest.LogCaptureFixture, bits: int, e_bits: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="asgi_auth0")
    victim = DPoPKey()
    token = minter.token(cnf=victim.cnf)
    n = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    e = secrets.randbits(e_bits) | (1 << (e_bits - 1)) | 1
    jwk = {
        "kty": "RSA",
        "n": b64url(n.to_bytes(bits // 8, "big")),
        "e": b64url(e.to_bytes((e_bits + 7) // 8, "big")),
    }
    head = _dump({"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk}).encode()
    body = _dump(_payload(token)).encode()
    signature = b64url(bytes([1]) * (bits // 8))
    forged = f"{b64url(head)}.{b64url(body)}.{signature}"
    client = http(api(verifier_for(minter, dpop_algorithms=("ES256", "RS256"))))
    r = await client.get("/me", headers=dpop(token, forged))
    assert r.status_code == 401
    assert any(
        "jwk is not usable: an RSA key over 4096 bits" in x.getMessage() for x in caplog.records
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    "target",
    [b"/files/x/../../me", b"/files/x/%2e%2e/%2E%2e/me", b"/files/./../me", b"/me#", b"/me/."],
)
async def test_a_proof_does_not_reach_another_route_through_dot_segments_or_a_hash(
    minter: LocalIssuer, target: bytes
) -> None:
    app = api(verifier_for(minter))

    @app.get("/files/{path:path}")
    async def files(path: str, claims: TokenClaims) -> dict[str, Any]:
        return {"file": path, "sub": claims.sub}

    victim = DPoPKey()
    token = minter.token(cnf=victim.cnf)

    def headers() -> list[tuple[bytes, bytes]]:
        return [
            (b"host", b"testserver"),
            (b"authorization", f"DPoP {token}".encode()),
            (b"dpop", proof(victim, token).encode()),  # made for GET /me
        ]

    assert await raw_get(app, target, headers()) == 401
    assert await raw_get(app, b"/me", headers()) == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    "htu", [BASE + "/m\te", BASE + "/m\ne", BASE + "/me ", "\x00" + BASE + "/me"]
)
async def test_an_htu_with_whitespace_or_controls_matches_nothing(
    minter: LocalIssuer, http: Any, htu: str
) -> None:
    victim = DPoPKey()
    token = minter.token(cnf=victim.cnf)
    client = http(api(verifier_for(minter)))
    r = await client.get("/me", headers=dpop(token, proof(victim, token, htu=htu)))
    assert r.status_code == 401
    assert reason(r) == "invalid_dpop_proof"
