"""The example app: every route's protection, its lifespan and key-cache health, the
offline dev mode and the Auth0 mode of ``python -m example_app``.

In-process tests run the app through ``httpx.ASGITransport`` (with its lifespan
driven by hand, as a server would) against a real ``LocalIssuer`` on 127.0.0.1. The
process tests run ``python -m example_app`` exactly as ``make demo`` does, with a real
uvicorn, and follow what its banner tells a newcomer to do.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from _typecheckers import assert_pyright_strict_passes
from example_support import Demo, demo_env, run_demo, serving
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect as ws_connect

from asgi_auth0 import Auth0Config, ConfigError
from asgi_auth0.testing import LocalIssuer, TokenFactory
from example_app import ADMIN_PERMISSION, MESSAGES_SCOPE, PUBLIC_PATHS, create_app
from example_app.__main__ import config_from_env, listen_address, main
from example_app.dev import DEV_SUBJECT, dev_banner, listen_url

BARE_CHALLENGE = 'Bearer realm="api"'


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def client(auth0_config: Auth0Config) -> AsyncIterator[httpx.AsyncClient]:
    """The example app bound to the test's LocalIssuer, started with its lifespan."""
    async with serving(create_app(auth0_config)) as client:
        yield client


async def health(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/health")
    return response.status_code, response.json()


# -- the routes ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_public_route_is_open_but_still_rejects_a_bad_token(
    client: httpx.AsyncClient, auth0_issuer: LocalIssuer, auth0_token: TokenFactory
) -> None:
    anonymous = await client.get("/api/public")
    assert anonymous.status_code == 200
    assert anonymous.json()["sub"] is None

    known = await client.get("/api/public", headers=bearer(auth0_token(sub="alice")))
    assert known.status_code == 200
    assert known.json()["sub"] == "alice"

    # An invalid token is never treated as anonymous, even on a public route.
    forged = await client.get("/api/public", headers=bearer(auth0_issuer.bad_signature_token()))
    assert forged.status_code == 401
    assert forged.json()["reason"] == "bad_signature"


@pytest.mark.anyio
async def test_private_route_needs_a_valid_token(
    client: httpx.AsyncClient, auth0_issuer: LocalIssuer, auth0_token: TokenFactory
) -> None:
    missing = await client.get("/api/private")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == BARE_CHALLENGE
    assert missing.json() == {
        "error": None,
        "error_description": "Authentication required.",
        "reason": "missing_token",
    }

    expired = await client.get("/api/private", headers=bearer(auth0_issuer.expired_token()))
    assert expired.status_code == 401
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]
    assert expired.json()["reason"] == "token_expired"

    wrong_api = await client.get(
        "/api/private", headers=bearer(auth0_issuer.wrong_audience_token())
    )
    assert wrong_api.status_code == 401
    assert wrong_api.json()["reason"] == "invalid_audience"

    token = auth0_token(sub="bob", scope="read:messages", permissions=["read:admin"])
    ok = await client.get("/api/private", headers=bearer(token))
    assert ok.status_code == 200
    assert ok.json() == {
        "message": "Hello from a private endpoint.",
        "sub": "bob",
        "scopes": ["read:messages"],
        "permissions": ["read:admin"],
    }


@pytest.mark.anyio
async def test_messages_route_needs_the_scope(
    client: httpx.AsyncClient, auth0_token: TokenFactory
) -> None:
    assert (await client.get("/api/messages")).status_code == 401

    for token in (
        auth0_token(),
        auth0_token(scope="read:other"),
        # A permission of the same name is not an OAuth scope.
        auth0_token(permissions=[MESSAGES_SCOPE]),
    ):
        response = await client.get("/api/messages", headers=bearer(token))
        assert response.status_code == 403
        challenge = response.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge
        assert f'scope="{MESSAGES_SCOPE}"' in challenge
        assert response.json()["reason"] == "insufficient_scope"

    ok = await client.get("/api/messages", headers=bearer(auth0_token(scope=MESSAGES_SCOPE)))
    assert ok.status_code == 200
    assert len(ok.json()["messages"]) == 2


@pytest.mark.anyio
async def test_admin_route_needs_the_permission(
    client: httpx.AsyncClient, auth0_token: TokenFactory
) -> None:
    assert (await client.get("/api/admin")).status_code == 401

    # A scope of the same name is not an Auth0 RBAC permission.
    for token in (auth0_token(), auth0_token(scope=ADMIN_PERMISSION)):
        response = await client.get("/api/admin", headers=bearer(token))
        assert response.status_code == 403
        assert f'scope="{ADMIN_PERMISSION}"' in response.headers["www-authenticate"]

    token = auth0_token(sub="root", permissions=[ADMIN_PERMISSION, "other"])
    ok = await client.get("/api/admin", headers=bearer(token))
    assert ok.status_code == 200
    assert ok.json() == {"sub": "root", "permissions": ["other", ADMIN_PERMISSION]}


# -- lifespan, key cache and health ---------------------------------------------------


@pytest.mark.anyio
async def test_lifespan_loads_keys_once_and_runs_the_background_refresher(
    client: httpx.AsyncClient, auth0_issuer: LocalIssuer, auth0_token: TokenFactory
) -> None:
    # Startup already fetched the key set: before any request, health shows it.
    status, body = await health(client)
    assert status == 200
    assert body["status"] == "ok"
    [cache] = body["key_sets"]
    assert cache["state"] == "fresh"
    assert cache["kids"] == [auth0_issuer.current_kid]
    assert cache["issuer"] == auth0_issuer.issuer
    assert cache["background"] is True
    assert auth0_issuer.jwks_requests == 1

    # Requests are verified from the cached keys: no fetch per request.
    for i in range(20):
        response = await client.get("/api/private", headers=bearer(auth0_token(sub=f"u{i}")))
        assert response.status_code == 200
    assert auth0_issuer.jwks_requests == 1
    assert (await health(client))[1]["key_sets"][0]["fetch_count"] == 1


@pytest.mark.anyio
async def test_without_a_lifespan_keys_load_on_the_first_request(
    auth0_config: Auth0Config, auth0_issuer: LocalIssuer, auth0_token: TokenFactory
) -> None:
    app = create_app(auth0_config)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            status, body = await health(client)
            assert (status, body["key_sets"][0]["state"]) == (200, "empty")
            assert auth0_issuer.jwks_requests == 0

            response = await client.get("/api/private", headers=bearer(auth0_token()))
            assert response.status_code == 200
            status, body = await health(client)
            assert body["key_sets"][0]["state"] == "fresh"
            assert body["key_sets"][0]["background"] is False
            assert auth0_issuer.jwks_requests == 1
    finally:
        await app.state.verifier.aclose()


@pytest.mark.anyio
async def test_unreachable_issuer_gives_503_and_an_unhealthy_health_check(
    auth0_config: Auth0Config, auth0_issuer: LocalIssuer, auth0_token: TokenFactory
) -> None:
    token = auth0_token()
    auth0_issuer.stop()  # the tenant is down before the app even starts
    async with serving(create_app(auth0_config)) as client:
        response = await client.get("/api/private", headers=bearer(token))
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"] == "temporarily_unavailable"
        assert "www-authenticate" not in response.headers

        status, body = await health(client)
        assert status == 503
        assert body["status"] == "degraded"
        assert body["key_sets"][0]["state"] == "failing"
        assert body["key_sets"][0]["last_error"]

        # Requests without a token need no key: they are unaffected.
        assert (await client.get("/api/public")).status_code == 200
        assert (await client.get("/api/private")).status_code == 401


@pytest.mark.anyio
async def test_one_issuer_down_of_two_is_degraded_but_healthy(
    auth0_issuer: LocalIssuer, auth0_token: TokenFactory
) -> None:
    # A tenant migration: the old tenant is unreachable, the current one works. Every
    # replica sees the same, so a 503 would have a load balancer pull them all.
    with LocalIssuer() as old:  # on 127.0.0.1, like the current one
        config = auth0_issuer.config(additional_issuers=(old.issuer,))
        old.stop()
        async with serving(create_app(config)) as client:
            response = await client.get("/api/private", headers=bearer(auth0_token()))
            assert response.status_code == 200
            status, body = await health(client)
    assert status == 200
    assert body["status"] == "degraded"
    assert sorted(s["state"] for s in body["key_sets"]) == ["failing", "fresh"]


# -- OpenAPI and Swagger UI ------------------------------------------------------------


@pytest.mark.anyio
async def test_a_route_added_later_without_a_dependency_is_closed(
    auth0_config: Auth0Config, auth0_token: TokenFactory
) -> None:
    # The example runs fail closed: someone copying it who adds a route and forgets
    # Depends(require_token) still gets a protected route, documented as one.
    app = create_app(auth0_config)

    @app.get("/api/forgotten")
    async def forgotten() -> dict[str, str]:
        return {"secret": "yes"}

    async with serving(app) as client:
        missing = await client.get("/api/forgotten")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == BARE_CHALLENGE
        assert missing.json()["reason"] == "missing_token"
        ok = await client.get("/api/forgotten", headers=bearer(auth0_token()))
        assert ok.status_code == 200
        assert ok.json() == {"secret": "yes"}
        schema = (await client.get("/openapi.json")).json()
    assert schema["paths"]["/api/forgotten"]["get"]["security"] == [{"Auth0": []}]
    assert "401" in schema["paths"]["/api/forgotten"]["get"]["responses"]


@pytest.mark.anyio
async def test_only_the_listed_paths_are_open(client: httpx.AsyncClient) -> None:
    for path in PUBLIC_PATHS:
        if not path.endswith("/*"):
            response = await client.get(path, follow_redirects=False)
            assert response.status_code in (200, 307), path
    # Near misses of a public path are not public, nor what lies under /docs besides
    # Swagger UI's own assets and redirect page.
    for path in (
        "/api/public/",
        "/Health",
        "/healthy",
        "/docs-private",
        "/docs/internal",
        "/nothing-here",
    ):
        response = await client.get(path)
        assert response.status_code == 401, path
        assert response.json()["reason"] == "missing_token", path


@pytest.mark.anyio
async def test_openapi_shows_locks_and_scopes(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    security = {
        path: item["get"].get("security") for path, item in schema["paths"].items() if "get" in item
    }
    assert security == {
        "/api/public": [{}, {"Auth0": []}],  # a token is optional there
        "/api/private": [{"Auth0": []}],
        "/api/messages": [{"Auth0": [MESSAGES_SCOPE]}],
        "/api/admin": [{"Auth0": [ADMIN_PERMISSION]}],
        "/health": None,
    }
    assert schema["components"]["securitySchemes"]["Auth0"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An Auth0 access token (JWT) in the Authorization header.",
    }
    assert "401" in schema["paths"]["/api/private"]["get"]["responses"]
    assert "403" in schema["paths"]["/api/messages"]["get"]["responses"]
    assert "Needs scope read:messages" in json.dumps(schema["paths"]["/api/messages"])


@pytest.mark.anyio
async def test_swagger_ui_is_served_without_a_cdn(client: httpx.AsyncClient) -> None:
    page = (await client.get("/docs")).text
    assert "/docs/assets/swagger-ui-bundle.js" in page
    assert "cdn." not in page
    script = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert (await client.get("/docs/oauth2-redirect")).status_code == 200
    assert (await client.get("/", follow_redirects=False)).headers["location"] == "/docs"


# -- WebSocket ---------------------------------------------------------------------------


@pytest.fixture
def ws_url(auth0_config: Auth0Config) -> Iterator[str]:
    """The example app under a real uvicorn (in a thread) on 127.0.0.1; its /ws URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # connections wait here until uvicorn's loop accepts them
    config = uvicorn.Config(
        create_app(auth0_config), log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


def test_websocket_handshake_needs_a_valid_token(ws_url: str, auth0_issuer: LocalIssuer) -> None:
    # uvicorn supports the denial extension: the handshake gets a real HTTP 401.
    with pytest.raises(InvalidStatus) as denied, ws_connect(ws_url, open_timeout=10):
        pass
    assert denied.value.response.status_code == 401
    assert denied.value.response.headers["WWW-Authenticate"] == BARE_CHALLENGE

    expired = bearer(auth0_issuer.expired_token())
    with (
        pytest.raises(InvalidStatus) as denied,
        ws_connect(ws_url, additional_headers=expired, open_timeout=10),
    ):
        pass
    assert denied.value.response.status_code == 401
    assert json.loads(denied.value.response.body or b"{}")["reason"] == "token_expired"


def test_websocket_echoes_for_a_valid_token(ws_url: str, auth0_token: TokenFactory) -> None:
    token = auth0_token(sub="carol", scope=MESSAGES_SCOPE)
    with ws_connect(ws_url, additional_headers=bearer(token), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"hello": "carol", "scopes": [MESSAGES_SCOPE]}
        ws.send("ping")
        assert json.loads(ws.recv(timeout=10)) == {"sub": "carol", "echo": "ping"}


def test_websocket_closes_when_its_token_expires(ws_url: str, auth0_token: TokenFactory) -> None:
    # exp already passed but within the 5 s leeway: the handshake is accepted, and the
    # connection must not outlive the token, so the app closes it at once with 1008.
    token = auth0_token(sub="dave", expires_in=-1)
    with ws_connect(ws_url, additional_headers=bearer(token), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["hello"] == "dave"
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert closed.value.rcvd.reason == "token expired"


# -- configuration from the environment ------------------------------------------------


def test_no_auth0_variables_means_dev_mode() -> None:
    assert config_from_env({}) is None
    assert config_from_env({"PATH": "/bin", "HOST": "127.0.0.1"}) is None


@pytest.mark.parametrize(
    ("environ", "said"),
    [
        # What a compose file's ${AUTH0_DOMAIN} gives when the host lacks it.
        ({"AUTH0_DOMAIN": "", "AUTH0_AUDIENCE": " "}, "AUTH0_AUDIENCE, AUTH0_DOMAIN set but empty"),
        ({"AUTH0_DOMIAN": "tenant.eu.auth0.com"}, "AUTH0_DOMIAN set but not read here"),
        ({"APP_AUTH0_DOMAIN": "t.auth0.com", "AUTH0_ISSUER": "x"}, "not read here"),
    ],
)
def test_auth0_variables_that_give_no_tenant_stop_the_app(
    environ: dict[str, str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Falling back to the dev issuer would print tokens into the log and refuse every
    # real one, under a banner that says no variable was set.
    with pytest.raises(ConfigError, match=said):
        config_from_env(environ)
    assert main({**environ, "PORT": "1"}) == 2
    assert said in capsys.readouterr().err


def test_auth0_variables_build_the_tenant_config() -> None:
    config = config_from_env(
        {
            "AUTH0_DOMAIN": "tenant.eu.auth0.com",
            "AUTH0_AUDIENCE": "https://api.example.com, https://other.example.com",
            "AUTH0_CLIENT_ID": "AbC123_-",
        }
    )
    assert config is not None
    assert config.issuer == "https://tenant.eu.auth0.com/"
    assert config.jwks_uri == "https://tenant.eu.auth0.com/.well-known/jwks.json"
    assert config.audiences == ("https://api.example.com", "https://other.example.com")
    assert config.client_id == "AbC123_-"
    assert config.algorithms == ("RS256",)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"AUTH0_DOMAIN": "tenant.eu.auth0.com"}, "AUTH0_AUDIENCE"),
        ({"AUTH0_AUDIENCE": "https://api.example.com"}, "AUTH0_DOMAIN"),
        # A typo in one variable must never fall back to the offline dev issuer.
        ({"AUTH0_CLIENT_ID": "abc"}, "AUTH0_DOMAIN"),
        ({"AUTH0_DOMAIN": "https://tenant.auth0.com", "AUTH0_AUDIENCE": "a"}, "AUTH0_DOMAIN"),
        (
            {"AUTH0_DOMAIN": "t.auth0.com", "AUTH0_AUDIENCE": "a", "AUTH0_ALGORITHMS": "HS256"},
            "AUTH0_ALGORITHMS",
        ),
    ],
)
def test_incomplete_or_bad_auth0_variables_stop_the_app(
    environ: dict[str, str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match=named):
        config_from_env(environ)
    # main() reports it in one line and exits before binding anything.
    assert main({**environ, "PORT": "1"}) == 2
    err = capsys.readouterr().err
    assert err.startswith("example_app: ")
    assert named in err


def test_listen_address_defaults_to_loopback_8000() -> None:
    assert listen_address({}) == ("127.0.0.1", 8000)
    assert listen_address({"HOST": "0.0.0.0", "PORT": "9001"}) == ("0.0.0.0", 9001)
    for bad in ("http", "-1", "70000"):
        with pytest.raises(ValueError, match="PORT"):
            listen_address({"PORT": bad})


def test_a_taken_port_is_reported_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main({"HOST": "127.0.0.1", "PORT": str(port)}) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "set PORT to another port" in err


def test_listen_url_is_reachable_from_this_machine() -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        assert listen_url(sock) == f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_dev_banner_warns_off_loopback(auth0_issuer: LocalIssuer) -> None:
    assert "WARNING" not in dev_banner(auth0_issuer, "http://127.0.0.1:1", host="127.0.0.1")
    assert "WARNING" in dev_banner(auth0_issuer, "http://127.0.0.1:1", host="0.0.0.0")


@pytest.mark.anyio
async def test_tenant_config_with_client_id_sets_up_pkce_login_without_network() -> None:
    config = Auth0Config.from_env(
        {
            "AUTH0_DOMAIN": "tenant.eu.auth0.com",
            "AUTH0_AUDIENCE": "https://api.example.com",
            "AUTH0_CLIENT_ID": "client123",
        }
    )
    app = create_app(config)
    # No lifespan: startup would fetch the tenant's keys. Nothing below needs a key.
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            scheme = (await client.get("/openapi.json")).json()["components"]["securitySchemes"]
            flow = scheme["Auth0"]["flows"]["authorizationCode"]
            assert scheme["Auth0"]["type"] == "oauth2"
            assert flow["authorizationUrl"] == "https://tenant.eu.auth0.com/authorize"
            assert flow["tokenUrl"] == "https://tenant.eu.auth0.com/oauth/token"
            assert set(flow["scopes"]) == {MESSAGES_SCOPE, ADMIN_PERMISSION}

            page = (await client.get("/docs")).text
            assert '"clientId": "client123"' in page
            assert '"usePkceWithAuthorizationCodeGrant": true' in page
            assert '"audience": "https://api.example.com"' in page

            missing = await client.get("/api/private")
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == BARE_CHALLENGE
            _, body = await health(client)
            assert body["key_sets"][0]["fetch_count"] == 0  # no network was touched
    finally:
        await app.state.verifier.aclose()


# -- python -m example_app, as `make demo` runs it ---------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with run_demo(tmp_path_factory.mktemp("demo")) as demo:
        yield demo


@pytest.mark.e2e
def test_demo_banner_curl_commands_work_as_printed(demo: Demo) -> None:
    paths = {curl.url.removeprefix(demo.base_url) for curl in demo.curls}
    assert paths == {"/api/public", "/api/private", "/api/messages", "/api/admin", "/health"}
    with httpx.Client(timeout=10) as http:
        for curl in demo.curls:
            response = http.get(curl.url, headers=curl.headers)
            assert response.status_code == 200, (curl.line, response.text)
            if curl.headers:
                assert response.json()["sub"] == DEV_SUBJECT

        # What the banner's comments promise: no header -> 401; the private token has
        # no scope -> 403 on /api/messages.
        assert http.get(demo.base_url + "/api/private").status_code == 401
        plain = demo.curl("/api/private").headers
        assert http.get(demo.base_url + "/api/messages", headers=plain).status_code == 403

        # The Swagger UI token opens every route.
        for path in ("/api/private", "/api/messages", "/api/admin"):
            assert demo.swagger_token is not None
            response = http.get(demo.base_url + path, headers=bearer(demo.swagger_token))
            assert response.status_code == 200


@pytest.mark.e2e
def test_demo_runs_offline_against_its_embedded_issuer(demo: Demo) -> None:
    body = httpx.get(demo.base_url + "/health", timeout=10).json()
    [cache] = body["key_sets"]
    assert cache["state"] == "fresh"
    assert cache["background"] is True
    assert cache["jwks_uri"].startswith("http://127.0.0.1:")
    assert "offline dev mode" in "\n".join(demo.banner)
    # The printed tokens are real JWTs for the printed issuer, valid for 24 h.
    payload = demo.token_for("/api/private").split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["iss"] == cache["issuer"]
    assert claims["exp"] - claims["iat"] == 24 * 3600
    assert claims["exp"] > time.time() + 23 * 3600


@pytest.mark.e2e
def test_demo_websocket_over_real_uvicorn(demo: Demo) -> None:
    url = demo.base_url.replace("http://", "ws://") + "/ws"
    token = demo.token_for("/api/messages")
    with ws_connect(url, additional_headers=bearer(token), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"hello": DEV_SUBJECT, "scopes": [MESSAGES_SCOPE]}
        ws.send("hi")
        assert json.loads(ws.recv(timeout=10)) == {"sub": DEV_SUBJECT, "echo": "hi"}

    # uvicorn supports the denial extension: a real HTTP 401 with the challenge.
    with pytest.raises(InvalidStatus) as denied, ws_connect(url, open_timeout=10):
        pass
    assert denied.value.response.status_code == 401
    assert denied.value.response.headers["WWW-Authenticate"] == BARE_CHALLENGE


@pytest.mark.e2e
def test_demo_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with run_demo(tmp_path) as demo:
        assert httpx.get(demo.base_url + "/api/public", timeout=10).status_code == 200
        assert httpx.get(demo.base_url + "/api/private", timeout=10).status_code == 401
        url = demo.base_url.replace("http://", "ws://") + "/ws"
        with pytest.raises(InvalidStatus), ws_connect(url, open_timeout=10):
            pass
    assert demo.process.returncode == 128 + 15
    log = demo.stderr()
    assert "Application shutdown complete" in log
    assert "Traceback" not in log
    # The uvicorn access log never shows a token.
    assert "eyJ" not in log
    # The library's own lines show, formatted (the rejection log, not a line per
    # request), and uvicorn's spurious ERROR after a WebSocket denial does not.
    assert "asgi_auth0.middleware: request rejected: status=401 reason=missing_token" in log
    assert "without completing handshake" not in log
    assert "ERROR" not in log


@pytest.mark.e2e
def test_auth0_mode_protects_routes_with_the_configured_tenant(
    tmp_path: Path, auth0_issuer: LocalIssuer, auth0_token: TokenFactory
) -> None:
    # The test's LocalIssuer plays the Auth0 tenant; with only AUTH0_ISSUER_BASE_URL
    # the app finds the JWKS by OIDC discovery, as with an Auth0 custom domain.
    env = demo_env(
        {
            "AUTH0_ISSUER_BASE_URL": auth0_issuer.issuer,
            "AUTH0_AUDIENCE": auth0_issuer.audience,
            "AUTH0_CLIENT_ID": "client123",
        }
    )
    with run_demo(tmp_path, env) as demo, httpx.Client(timeout=10) as http:
        text = "\n".join(demo.banner)
        assert "Auth0 mode" in text
        assert "dev mode" not in text
        # No dev tokens are printed.
        assert not demo.curls
        assert demo.swagger_token is None

        ok = http.get(
            demo.base_url + "/api/messages", headers=bearer(auth0_token(scope=MESSAGES_SCOPE))
        )
        assert ok.status_code == 200
        assert auth0_issuer.requests["/.well-known/openid-configuration"] == 1

        with LocalIssuer(audience=auth0_issuer.audience) as stranger:
            foreign = http.get(demo.base_url + "/api/private", headers=bearer(stranger.token()))
        assert foreign.status_code == 401
        assert foreign.json()["reason"] == "invalid_issuer"

        flows = http.get(demo.base_url + "/openapi.json").json()["components"]["securitySchemes"]
        assert flows["Auth0"]["flows"]["authorizationCode"]["authorizationUrl"] == (
            auth0_issuer.issuer.rstrip("/") + "/authorize"
        )


def test_the_example_passes_pyright_strict(tmp_path: Path) -> None:
    # Newcomers copy the example into their editor; it must be clean there too (mypy
    # --strict covers it in `make typecheck`).
    shutil.copytree(
        Path(__file__).parent.parent / "example_app",
        tmp_path / "example_app",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    assert_pyright_strict_passes(tmp_path, ["example_app"])
