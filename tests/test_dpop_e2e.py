"""End to end, DPoP (RFC 9449): a real uvicorn on 127.0.0.1 serving a FastAPI app behind
Auth0Middleware with ``dpop="allowed"`` or ``"required"``, its keys fetched by the
JWKSCache from a real LocalIssuer over HTTP, driven by real httpx and real WebSocket
clients, with ``asgi_auth0.testing.DPoPKey`` playing the client.

What only the real parts show: the proof must name the URL exactly as the client
called it (scheme, ``Host`` with its port, path), which the middleware rebuilds from
what uvicorn put in the scope; a ``ws://`` handshake is an HTTP GET; behind a proxy that
terminates TLS the scheme is right only when uvicorn trusts the proxy's headers.

The servers run in threads of the test process on sockets the test already listens on
(as in ``test_e2e_uvicorn.py``), on both uvicorn stacks, and are stopped bounded in time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import httpx
import pytest
from _servers import uvicorn_in_thread
from fastapi import Body, Depends, FastAPI, WebSocket
from test_e2e_uvicorn import SERVER_STACKS, find_middleware, ws_exchange
from websockets.exceptions import InvalidStatus

from asgi_auth0._claims import Claims
from asgi_auth0._middleware import Auth0Middleware
from asgi_auth0._signing import PrivateKey
from asgi_auth0._verify import TokenVerifier
from asgi_auth0.fastapi import require_scopes, require_token
from asgi_auth0.testing import DPoPKey, LocalIssuer

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

ClaimsDep = Annotated[Claims, Depends(require_token)]

BOTH_CHALLENGES = 'Bearer realm="api", DPoP realm="api", algs="ES256"'
REPLAYED = (
    'DPoP realm="api", algs="ES256", error="invalid_dpop_proof", '
    'error_description="The DPoP proof has already been used.", Bearer realm="api"'
)
INVALID_PROOF = (
    'DPoP realm="api", algs="ES256", error="invalid_dpop_proof", '
    'error_description="The DPoP proof is invalid.", Bearer realm="api"'
)
SCHEME_HINT = "only the scheme differs"


def build_app(config: Any, verifier: TokenVerifier | None = None) -> FastAPI:
    """The protected app: the same routes for every DPoP mode (``verifier``, when
    given, in place of one the middleware builds from ``config``)."""
    app = FastAPI()

    @app.get("/public")
    async def public() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/me")
    async def me(claims: ClaimsDep) -> dict[str, Any]:
        return {"sub": claims.sub, "cnf": claims.get("cnf")}

    @app.post("/echo")
    async def echo(claims: ClaimsDep, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        return {"sub": claims.sub, "body": body}

    @app.get("/read")
    async def read(
        claims: Annotated[Claims, Depends(require_scopes("read:messages"))],
    ) -> dict[str, Any]:
        return {"sub": claims.sub}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, claims: ClaimsDep) -> None:
        await websocket.accept()
        await websocket.send_json({"sub": claims.sub, "cnf": claims.get("cnf")})
        await websocket.close()

    if verifier is None:
        app.add_middleware(Auth0Middleware, config=config)
    else:
        app.add_middleware(Auth0Middleware, verifier=verifier)
    return app


@dataclass
class Served:
    """One running uvicorn: its URLs and the app it serves."""

    url: str
    ws_url: str
    port: int
    app: FastAPI

    def at(self, path: str, scheme: str = "http") -> str:
        """The absolute URL of ``path`` as a client calls it (the proof's ``htu``)."""
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    @property
    def verifier(self) -> TokenVerifier:
        return find_middleware(self.app).verifier


@contextlib.contextmanager
def serve(app: FastAPI, stack: Mapping[str, str], **options: Any) -> Iterator[Served]:
    """Run ``app`` under uvicorn (``options`` for its Config) in a thread for the block."""
    with uvicorn_in_thread(app, stack, **options) as running:
        yield Served(url=running.url, ws_url=running.ws_url, port=running.port, app=app)


@pytest.fixture(scope="module", params=sorted(SERVER_STACKS))
def stack(request: pytest.FixtureRequest) -> Mapping[str, str]:
    chosen = SERVER_STACKS[request.param]
    for module in ("httptools", chosen["loop"]):
        if module != "asyncio" and importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (the dev extra installs it)")
    return chosen


@pytest.fixture(scope="module")
def dpop_issuer(auth0_rsa_key: PrivateKey) -> Iterator[LocalIssuer]:
    """The real key server every app below fetches its JWKS from."""
    with LocalIssuer(private_key=auth0_rsa_key) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def allowed(dpop_issuer: LocalIssuer, stack: Mapping[str, str]) -> Iterator[Served]:
    """dpop="allowed", with uvicorn trusting X-Forwarded-Proto from 127.0.0.1 (as
    ``--proxy-headers --forwarded-allow-ips=127.0.0.1`` would)."""
    app = build_app(dpop_issuer.config(dpop="allowed"))
    with serve(app, stack, proxy_headers=True, forwarded_allow_ips="127.0.0.1") as served:
        yield served


@pytest.fixture(scope="module")
def required(dpop_issuer: LocalIssuer, stack: Mapping[str, str]) -> Iterator[Served]:
    with serve(build_app(dpop_issuer.config(dpop="required")), stack) as served:
        yield served


@pytest.fixture
def untrusting(dpop_issuer: LocalIssuer, stack: Mapping[str, str]) -> Iterator[Served]:
    """dpop="allowed" with proxy headers ignored; new per test, so that its rejection
    log window is fresh and the first line of a kind is this test's."""
    app = build_app(dpop_issuer.config(dpop="allowed"))
    with serve(app, stack, proxy_headers=False) as served:
        yield served


@contextlib.asynccontextmanager
async def client(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refusal(response: httpx.Response) -> tuple[int, str, str | None]:
    return response.status_code, response.json()["reason"], response.json()["error"]


# -- dpop="allowed" ------------------------------------------------------------------------


async def test_allowed_takes_dpop_and_bearer_and_refuses_a_replay(
    allowed: Served, dpop_issuer: LocalIssuer
) -> None:
    key = DPoPKey()
    token = dpop_issuer.token(sub="auth0|dpop", cnf=key.cnf)
    headers = key.headers(token, "GET", allowed.at("/me"))
    async with client(allowed) as http:
        ok = await http.get("/me", headers=headers)
        assert ok.status_code == 200
        assert ok.json() == {"sub": "auth0|dpop", "cnf": {"jkt": key.jkt}}

        again = await http.get("/me", headers=headers)
        assert refusal(again) == (401, "dpop_proof_replayed", "invalid_dpop_proof")
        assert again.headers["www-authenticate"] == REPLAYED

        plain = await http.get("/me", headers=bearer(dpop_issuer.token(sub="auth0|bearer")))
        assert plain.status_code == 200
        assert plain.json() == {"sub": "auth0|bearer", "cnf": None}

        # RFC 9449 §7.2: a bound token sent as a bearer token is refused.
        stolen = await http.get("/me", headers=bearer(token))
        assert refusal(stolen) == (401, "sender_constrained_token", "invalid_token")
        assert stolen.headers["www-authenticate"].startswith(
            'Bearer realm="api", error="invalid_token", error_description="'
        )
        assert stolen.headers["www-authenticate"].endswith(', DPoP realm="api", algs="ES256"')

        missing = await http.get("/me")
        assert refusal(missing) == (401, "missing_token", None)
        assert missing.headers["www-authenticate"] == BOTH_CHALLENGES


async def test_the_proof_names_the_url_the_client_called(
    allowed: Served, dpop_issuer: LocalIssuer
) -> None:
    key = DPoPKey()
    token = dpop_issuer.token(cnf=key.cnf)
    async with client(allowed) as http:
        # The query is not part of htu's comparison (RFC 9449 §4.3), whichever side has it.
        query = await http.get(
            "/me", params={"page": "2"}, headers=key.headers(token, "GET", allowed.at("/me?x=1"))
        )
        assert query.status_code == 200
        # Another host name for the same socket is another URL: the Host header counts.
        other_host = f"http://localhost:{allowed.port}/me"
        host = await http.get("/me", headers=key.headers(token, "GET", other_host))
        assert refusal(host) == (401, "invalid_dpop_proof", "invalid_dpop_proof")
        assert host.headers["www-authenticate"] == INVALID_PROOF
        # So is the same path without the port the client connected to.
        no_port = await http.get("/me", headers=key.headers(token, "GET", "http://127.0.0.1/me"))
        assert refusal(no_port) == (401, "invalid_dpop_proof", "invalid_dpop_proof")


# -- dpop="required" -----------------------------------------------------------------------


async def test_required_refuses_bearer_and_checks_the_method(
    required: Served, dpop_issuer: LocalIssuer
) -> None:
    key = DPoPKey()
    token = dpop_issuer.token(sub="auth0|req", cnf=key.cnf)
    async with client(required) as http:
        plain = await http.get("/me", headers=bearer(dpop_issuer.token()))
        assert refusal(plain) == (401, "dpop_required", "invalid_token")
        assert plain.headers["www-authenticate"] == (
            'DPoP realm="api", algs="ES256", error="invalid_token", '
            'error_description="This API accepts DPoP-bound access tokens only."'
        )
        missing = await http.get("/me")
        assert refusal(missing) == (401, "missing_token", None)
        assert missing.headers["www-authenticate"] == 'DPoP realm="api", algs="ES256"'

        ok = await http.get("/me", headers=key.headers(token, "GET", required.at("/me")))
        assert ok.status_code == 200
        assert ok.json()["sub"] == "auth0|req"

        body = {"text": "hello", "n": 3}
        posted = await http.post(
            "/echo", json=body, headers=key.headers(token, "POST", required.at("/echo"))
        )
        assert posted.status_code == 200
        assert posted.json() == {"sub": "auth0|req", "body": body}

        wrong_method = await http.post(
            "/echo", json=body, headers=key.headers(token, "GET", required.at("/echo"))
        )
        assert refusal(wrong_method) == (401, "invalid_dpop_proof", "invalid_dpop_proof")
        assert wrong_method.headers["www-authenticate"] == (
            'DPoP realm="api", algs="ES256", error="invalid_dpop_proof", '
            'error_description="The DPoP proof is invalid."'
        )


# -- scopes --------------------------------------------------------------------------------


async def test_scopes_on_a_dpop_request(allowed: Served, dpop_issuer: LocalIssuer) -> None:
    key = DPoPKey()
    with_scope = dpop_issuer.token(scope="read:messages", cnf=key.cnf)
    without = dpop_issuer.token(scope="write:messages", cnf=key.cnf)
    url = allowed.at("/read")
    async with client(allowed) as http:
        ok = await http.get("/read", headers=key.headers(with_scope, "GET", url))
        assert ok.status_code == 200
        short = await http.get("/read", headers=key.headers(without, "GET", url))
    assert refusal(short) == (403, "insufficient_scope", "insufficient_scope")
    # The error goes with the scheme the request used; Bearer follows bare.
    assert short.headers["www-authenticate"] == (
        'DPoP realm="api", algs="ES256", error="insufficient_scope", '
        'error_description="The access token lacks a required scope.", '
        'scope="read:messages", Bearer realm="api"'
    )


# -- WebSocket -----------------------------------------------------------------------------


async def test_websocket_handshake_with_dpop(
    allowed: Served, dpop_issuer: LocalIssuer, anyio_backend: str
) -> None:
    key = DPoPKey()
    token = dpop_issuer.token(sub="auth0|ws", cnf=key.cnf)
    # The handshake of ws://host/ws is GET http://host/ws: that is what the proof names.
    headers = key.headers(token, "GET", allowed.at("/ws"))
    result = await ws_exchange(anyio_backend, f"{allowed.ws_url}/ws", headers)
    assert result == {"sub": "auth0|ws", "cnf": {"jkt": key.jkt}}

    replayed = await ws_exchange(anyio_backend, f"{allowed.ws_url}/ws", headers)
    assert isinstance(replayed, InvalidStatus)
    assert replayed.response.status_code == 401
    assert replayed.response.headers["WWW-Authenticate"] == REPLAYED

    bad_cases = {
        "another path": key.headers(token, "GET", allowed.at("/other")),
        "another method": key.headers(token, "POST", allowed.at("/ws")),
        "another key": DPoPKey().headers(token, "GET", allowed.at("/ws")),
    }
    reasons = {}
    for case, bad in bad_cases.items():
        denied = await ws_exchange(anyio_backend, f"{allowed.ws_url}/ws", bad)
        assert isinstance(denied, InvalidStatus), case
        assert denied.response.status_code == 401, case
        assert denied.response.headers["WWW-Authenticate"].startswith('DPoP realm="api"'), case
        reasons[case] = json.loads(denied.response.body)["reason"]
    assert reasons == {
        "another path": "invalid_dpop_proof",
        "another method": "invalid_dpop_proof",
        "another key": "dpop_binding_mismatch",
    }


# -- a mounted API, under a root path -------------------------------------------------------


def mounted_service(config: Any) -> FastAPI:
    """An API with its own middleware, mounted at ``/v1`` and ``/café`` of an outer app."""
    inner = FastAPI()

    @inner.get("/me")
    async def me(claims: ClaimsDep) -> dict[str, Any]:
        return {"sub": claims.sub}

    inner.add_middleware(Auth0Middleware, config=config)
    outer = FastAPI()

    @outer.get("/public")
    async def public() -> dict[str, str]:
        return {"hello": "world"}

    outer.mount("/v1", inner)
    outer.mount("/café", inner)
    return outer


async def test_a_mounted_api_under_a_root_path_takes_the_url_the_client_sent(
    dpop_issuer: LocalIssuer, stack: Mapping[str, str]
) -> None:
    # uvicorn --root-path /api/ (the proxy strips /api): for the client's /api/v1/me its
    # path is /api//v1/me, and the mount's root path the decoded /api//v1, whatever
    # escapes the client's path has. The proof names the URL the client called.
    app = mounted_service(dpop_issuer.config(dpop="allowed"))
    key = DPoPKey()
    token = dpop_issuer.token(sub="auth0|mounted", cnf=key.cnf)
    with serve(app, stack, root_path="/api/") as served:
        async with client(served) as http:
            for sent, called in [
                ("/v1/me", "/api/v1/me"),
                ("/v%31/me", "/api/v%31/me"),
                ("/v%31/me", "/api/v1/me"),
                ("/caf%C3%A9/me", "/api/caf%C3%A9/me"),
                # The mount's "/" sent escaped: routed to the inner /me all the same.
                ("/v1%2Fme", "/api/v1%2Fme"),
            ]:
                ok = await http.get(sent, headers=key.headers(token, "GET", served.at(called)))
                assert ok.status_code == 200, (sent, called, ok.text)
                assert ok.json() == {"sub": "auth0|mounted"}
            for sent, wrong in [
                ("/v%31/me", "/v1/me"),
                ("/v%31/me", "/api/v1/v1/me"),
                ("/v%31/me", "/api//v1/me"),
                ("/v%31/me", "/api/v2/me"),
                ("/v1%2Fme", "/api/v1/%2Fme"),
            ]:
                refused = await http.get(sent, headers=key.headers(token, "GET", served.at(wrong)))
                assert refusal(refused) == (401, "invalid_dpop_proof", "invalid_dpop_proof"), wrong


async def test_a_target_without_its_leading_slash_gets_no_other_targets_proof(
    dpop_issuer: LocalIssuer, stack: Mapping[str, str]
) -> None:
    # h11 passes a request target such as "%2Fme" as it is (httptools answers 400), and
    # uvicorn joins it to --root-path /api/: "/api/%2Fme", the path of the target
    # "/%2Fme" too, though Starlette routes the two apart. A proof for that URL, or
    # for any, must not open it.
    app = build_app(dpop_issuer.config(dpop="allowed"))
    key = DPoPKey()
    token = dpop_issuer.token(cnf=key.cnf)
    with serve(app, stack, root_path="/api/") as served:
        for target, proof_url in [("%2Fme", "/api/%2Fme"), ("me", "/api/me"), ("me", "/me")]:
            headers = key.headers(token, "GET", served.at(proof_url))
            request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n"
            request += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            request += "Connection: close\r\n\r\n"
            with anyio.fail_after(10):
                async with await anyio.connect_tcp("127.0.0.1", served.port) as stream:
                    await stream.send(request.encode("ascii"))
                    answer = b""
                    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                        while True:
                            answer += await stream.receive()
            status = answer.split(b" ", 2)[1]
            if stack["http"] == "httptools":
                assert status == b"400", (target, answer[:200])
            else:
                assert status == b"401", (target, proof_url, answer[:300])
                assert b'"reason":"invalid_dpop_proof"' in answer


# -- behind a TLS-terminating proxy --------------------------------------------------------


async def test_https_behind_a_trusted_proxy(allowed: Served, dpop_issuer: LocalIssuer) -> None:
    key = DPoPKey()
    token = dpop_issuer.token(sub="auth0|tls", cnf=key.cnf)
    forwarded = {"X-Forwarded-Proto": "https"}
    async with client(allowed) as http:
        ok = await http.get(
            "/me", headers={**forwarded, **key.headers(token, "GET", allowed.at("/me", "https"))}
        )
        assert ok.status_code == 200
        assert ok.json()["sub"] == "auth0|tls"
        # The server now sees https, so a proof naming http is for another URL.
        plain = await http.get(
            "/me", headers={**forwarded, **key.headers(token, "GET", allowed.at("/me"))}
        )
    assert refusal(plain) == (401, "invalid_dpop_proof", "invalid_dpop_proof")


async def test_https_proof_without_proxy_trust_is_refused_with_a_hint(
    untrusting: Served, dpop_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asgi_auth0")
    key = DPoPKey()
    token = dpop_issuer.token(cnf=key.cnf)
    headers = {
        "X-Forwarded-Proto": "https",
        **key.headers(token, "GET", untrusting.at("/me", "https")),
    }
    async with client(untrusting) as http:
        r = await http.get("/me", headers=headers)
    # The client learns nothing read from its proof; the operator's log says why.
    assert r.json() == {
        "error": "invalid_dpop_proof",
        "error_description": "The DPoP proof is invalid.",
        "reason": "invalid_dpop_proof",
    }

    def lines(logger: str, level: int) -> list[str]:
        return [
            rec.getMessage()
            for rec in caplog.records
            if rec.name == logger
            and rec.levelno >= level
            and "reason=invalid_dpop_proof" in rec.getMessage()
        ]

    # The operator's line: one, naming the request and the URL the proof named.
    [line] = lines("asgi_auth0.middleware", logging.INFO)
    assert line.startswith("request rejected: status=401 reason=invalid_dpop_proof GET '/me'")
    assert untrusting.at("/me", "https") in line
    assert SCHEME_HINT in line
    assert "--proxy-headers" in line
    # The why in full: both URLs, and the hint that only the scheme differs.
    [why] = lines("asgi_auth0.verify", logging.DEBUG)
    assert untrusting.at("/me", "https") in why
    assert untrusting.at("/me") in why
    assert SCHEME_HINT in why
    assert "--proxy-headers" in why
    # Neither the token nor the proof, nor their signatures, is in any record the
    # request produced, at any level, in the message or in the extra fields.
    proof = headers["DPoP"]
    secrets = [token, proof, token.rsplit(".", 1)[1], proof.rsplit(".", 1)[1]]
    assert caplog.records
    for rec in caplog.records:
        text = rec.getMessage() + repr(vars(rec))
        for secret in secrets:
            assert secret not in text, rec.getMessage()


# -- load ----------------------------------------------------------------------------------


async def test_fifty_concurrent_dpop_requests(
    allowed: Served, dpop_issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    key = DPoPKey()
    token = dpop_issuer.token(sub="auth0|many", cnf=key.cnf)
    url = allowed.at("/me")
    proofs = [key.headers(token, "GET", url) for _ in range(50)]
    assert len({h["DPoP"] for h in proofs}) == 50
    remembered = allowed.verifier.dpop.remembered
    statuses: list[int] = []

    async def one(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        r = await http.get("/me", headers=headers)
        assert r.json()["sub"] == "auth0|many"
        statuses.append(r.status_code)

    with anyio.fail_after(15):
        async with client(allowed) as http, anyio.create_task_group() as group:
            for headers in proofs:
                group.start_soon(one, http, headers)
    assert statuses == [200] * 50
    # Every one was checked in full (its jti remembered), none served from a cache.
    assert allowed.verifier.dpop.remembered == remembered + 50
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    # And each is now spent.
    async with client(allowed) as http:
        replay = await http.get("/me", headers=proofs[17])
    assert refusal(replay) == (401, "dpop_proof_replayed", "invalid_dpop_proof")


# -- several workers: a shared replay store ----------------------------------------------------


def replay_service() -> FastAPI:
    """A shared record of DPoP proofs over HTTP: what Redis's ``SET key 1 NX EXAT t``
    gives a real deployment. One event loop serves it, so each add is atomic."""
    service = FastAPI()
    records: dict[str, float] = {}
    service.state.adds = 0

    @service.get("/public")
    async def ready() -> dict[str, str]:
        return {}

    @service.post("/add")
    async def add(key: Annotated[str, Body()], expires_at: Annotated[float, Body()]) -> bool:
        service.state.adds += 1
        held = records.get(key)
        if held is not None and held >= time.time():
            return False
        records[key] = expires_at
        return True

    return service


class HTTPReplayStore:
    """A ``DPoPReplayStore`` client of :func:`replay_service`, one per worker."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def add(self, key: str, expires_at: float) -> bool:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.post(self.url, json={"key": key, "expires_at": expires_at})
        response.raise_for_status()
        return response.json() is True


async def test_a_proof_replayed_to_another_worker_is_refused_with_a_shared_store(
    dpop_issuer: LocalIssuer, stack: Mapping[str, str]
) -> None:
    # Two uvicorn servers stand for two workers behind one load balancer: the client
    # calls http://api.example.test, so both see that Host (and the proof names it).
    config = dpop_issuer.config(dpop="allowed")
    key = DPoPKey()
    token = dpop_issuer.token(sub="auth0|workers", cnf=key.cnf)
    url = "http://api.example.test/me"
    host = {"Host": "api.example.test"}

    async def replayed_across(first: Served, second: Served) -> tuple[int, int, int]:
        headers = {**key.headers(token, "GET", url), **host}
        async with client(first) as a, client(second) as b:
            return (
                (await a.get("/me", headers=headers)).status_code,
                (await b.get("/me", headers=headers)).status_code,
                (await a.get("/me", headers=headers)).status_code,
            )

    # Without a store each worker remembers only its own proofs: the replay to the
    # other worker passes (the limitation the store is for).
    with serve(build_app(config), stack) as one, serve(build_app(config), stack) as two:
        assert await replayed_across(one, two) == (200, 200, 401)

    with serve(replay_service(), stack) as service:
        store_url = f"{service.url}/add"

        def worker() -> FastAPI:
            return build_app(
                config, TokenVerifier(config, dpop_replay_store=HTTPReplayStore(store_url))
            )

        with serve(worker(), stack) as one, serve(worker(), stack) as two:
            assert await replayed_across(one, two) == (200, 401, 401)
            async with client(two) as b:
                fresh = await b.get("/me", headers={**key.headers(token, "GET", url), **host})
                assert fresh.status_code == 200  # a new proof: accepted on either
                stale = await b.get(
                    "/me", headers={**key.headers(token, "GET", url, iat=0), **host}
                )
                assert refusal(stale) == (401, "invalid_dpop_proof", "invalid_dpop_proof")
            # Each accepted or replayed proof was one add; the refused one, none.
            assert service.app.state.adds == 4
            # Each worker also remembers what it took itself.
            assert (one.verifier.dpop.remembered, two.verifier.dpop.remembered) == (1, 1)
