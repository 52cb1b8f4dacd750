"""The README stays true: its code runs, its tables and example responses are exact.

Every ``python runnable`` block starts with ``# <file>.py``. The app samples are
executed and then driven with real tokens from a ``LocalIssuer``; the testing sample
is run by pytest in a subprocess, next to the sample app it imports, as a user would.
The example HTTP responses are compared with real responses of the sample app, and
the configuration and error tables with the code.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from _typecheckers import assert_mypy_strict_passes, assert_pyright_strict_passes
from example_support import REPO, serving
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_auth0 import (
    Auth0Config,
    Auth0Error,
    Auth0Middleware,
    AuthenticationRejected,
    BearerError,
    InsufficientScopeError,
    KeySetError,
    StaticKeySet,
    TokenVerifier,
)
from asgi_auth0._signing import PrivateKey
from asgi_auth0.testing import LocalIssuer, TokenFactory

README = (REPO / "README.md").read_text()
_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_FILE_HEADER = re.compile(r"# (?P<name>[a-z_]+\.py)\n")


def fenced(info: str) -> list[str]:
    return [m["body"] for m in _FENCE.finditer(README) if m["info"].strip() == info]


def runnable_files() -> dict[str, str]:
    files: dict[str, str] = {}
    for body in fenced("python runnable"):
        header = _FILE_HEADER.match(body)
        assert header, f"a runnable block must start with '# name.py':\n{body[:80]}"
        assert header["name"] not in files, f"two blocks are {header['name']}"
        files[header["name"]] = body
    return files


def load(name: str) -> dict[str, Any]:
    """Execute a runnable README block as a module; return its namespace."""
    namespace: dict[str, Any] = {"__name__": f"readme_{name.removesuffix('.py')}"}
    exec(compile(runnable_files()[name], f"README.md:{name}", "exec"), namespace)
    return namespace


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_runnable_blocks_are_the_expected_files() -> None:
    assert set(runnable_files()) == {
        "myapp.py",
        "closed_app.py",
        "spa_api.py",
        "starlette_app.py",
        "verify_tokens.py",
        "issuers.py",
        "conftest.py",
        "test_myapp.py",
    }


# Per issuer in the README's list: a token shaped as that issuer issues it (besides
# iss, sub, iat and exp), and the scopes its scope claim grants.
_ISSUER_TOKENS: dict[str, tuple[dict[str, Any], frozenset[str]]] = {
    "auth0_custom_domain": (
        {"aud": ["https://api.acme.com", "https://login.acme.com/userinfo"], "scope": "read:a"},
        frozenset({"read:a"}),
    ),
    "okta": (
        {"aud": "api://default", "scp": ["orders.read"], "cid": "0oa1"},
        frozenset({"orders.read"}),
    ),
    "entra": (
        {"aud": "6e74172b-be56-4843-9ff4-e66a39bb12e3", "scp": "Orders.Read", "ver": "2.0"},
        frozenset({"Orders.Read"}),
    ),
    "keycloak": (
        {"aud": ["orders-api", "account"], "azp": "web", "scope": "openid orders"},
        frozenset({"openid", "orders"}),
    ),
    "cognito": (
        {"client_id": "3n4b5urk1ft4fl3mg5e62d9ado", "token_use": "access", "scope": "openid"},
        frozenset({"openid"}),
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(_ISSUER_TOKENS))
async def test_each_issuer_config_accepts_that_issuers_tokens(
    name: str, auth0_rsa_key: PrivateKey
) -> None:
    config = load("issuers.py")[name]
    assert isinstance(config, Auth0Config)
    claims, scopes = _ISSUER_TOKENS[name]
    minter = LocalIssuer(issuer=config.issuer or "", private_key=auth0_rsa_key)
    verifier = TokenVerifier(config, key_set=StaticKeySet(minter.jwks))
    token = minter.token("someone", **{"aud": None, **claims})
    verified = await verifier.verify(token)
    assert verified.sub == "someone"
    assert verified.scopes == scopes
    # And its other issuer's tokens too, where it lists one.
    for other in config.additional_issuers:
        assert (await verifier.verify(minter.token("x", iss=other, **claims))).sub == "x"


def test_quickstart_is_exactly_the_two_make_commands() -> None:
    [commands] = [b for b in fenced("sh") if "make demo" in b]
    lines = [line.split("#")[0].strip() for line in commands.splitlines() if line.strip()]
    assert lines == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:.*\n\t\$\(PY\) -m example_app$", makefile, re.MULTILINE)
    assert re.search(r"^test: lint typecheck unit$", makefile, re.MULTILINE)
    # CI runs the README's command first, then the same tests on the oldest Python,
    # 3.12 and the newest, then with the runtime dependencies at their floors.
    ci_make_lines = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip().startswith("make")
    ]
    assert ci_make_lines == [
        "make test",
        "make test-oldest",
        "make test-312",
        "make test-newest",
        "make test-floors",
    ]
    for target, extras in (
        # The oldest Python also runs without the speedups extra: the whole suite on the
        # standard library's base64 and JSON.
        ("test-oldest", " EXTRAS=dev-stdlib"),
        ("test-312", ""),
        ("test-newest", ""),
    ):
        assert re.search(
            rf"^{target}:\n.*\n\telse \$\(MAKE\) --no-print-directory unit [^\n]*"
            rf"VENV=[.\w-]+{extras}; fi$",
            makefile,
            re.M,
        ), target


@pytest.mark.anyio
async def test_fastapi_sample(
    auth0_config: Auth0Config, auth0_token: TokenFactory, auth0_issuer: LocalIssuer
) -> None:
    sample = load("myapp.py")
    # The module-level app (for a real tenant) serves anonymous requests with no network.
    transport = httpx.ASGITransport(app=sample["app"])
    async with httpx.AsyncClient(transport=transport, base_url="http://tenant") as client:
        response = await client.get("/me")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="api"'

    async with serving(sample["create_app"](auth0_config)) as client:
        assert (await client.get("/me")).status_code == 401
        me = await client.get("/me", headers=bearer(auth0_token(sub="alice")))
        assert me.json() == {"sub": "alice"}
        no_scope = await client.get("/messages", headers=bearer(auth0_token(sub="alice")))
        assert no_scope.status_code == 403
        token = auth0_token(sub="alice", scope="read:messages")
        messages = await client.get("/messages", headers=bearer(token))
        assert messages.json() == [{"to": "alice", "text": "hello"}]
        forged = await client.get("/me", headers=bearer(auth0_issuer.bad_signature_token()))
        assert forged.status_code == 401


@pytest.mark.anyio
async def test_fail_closed_sample(auth0_config: Auth0Config, auth0_token: TokenFactory) -> None:
    sample = load("closed_app.py")
    async with serving(sample["create_app"](auth0_config)) as client:
        assert (await client.get("/health")).json() == {"ok": True}
        assert (await client.get("/docs")).status_code == 200
        spec = (await client.get("/openapi.json")).json()
        assert spec["paths"]["/me"]["get"]["security"] == [{"Auth0": []}]
        assert "security" not in spec["paths"]["/health"]["get"]
        missing = await client.get("/me")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        assert (await client.get("/health/")).status_code == 401
        me = await client.get("/me", headers=bearer(auth0_token(sub="alice")))
        assert me.json() == {"sub": "alice"}
        no_scope = await client.get("/messages", headers=bearer(auth0_token(sub="alice")))
        assert no_scope.status_code == 403


@pytest.mark.anyio
async def test_cors_sample(auth0_config: Auth0Config, auth0_token: TokenFactory) -> None:
    sample = load("spa_api.py")
    origin = {"Origin": "https://app.example.com"}
    async with serving(sample["create_app"](auth0_config)) as client:
        preflight = await client.options(
            "/me",
            headers={
                **origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin["Origin"]
        missing = await client.get("/me", headers=origin)
        assert missing.status_code == 401
        assert missing.headers["access-control-allow-origin"] == origin["Origin"]
        assert missing.headers["access-control-expose-headers"] == "WWW-Authenticate"
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        ok = await client.get("/me", headers={**origin, **bearer(auth0_token())})
        assert ok.json() == {"ok": True}
        assert ok.headers["access-control-allow-origin"] == origin["Origin"]


@pytest.mark.anyio
async def test_core_api_sample(auth0_config: Auth0Config, auth0_issuer: LocalIssuer) -> None:
    sample = load("verify_tokens.py")
    good = auth0_issuer.token(sub="carol", scope="read:messages")
    no_scope = auth0_issuer.token(sub="carol")
    expired = auth0_issuer.expired_token()
    results = await sample["main"](auth0_config, [good, no_scope, expired])
    assert results[good] == "carol"
    assert results[expired] == "rejected: token_expired"
    assert results[no_scope] == "forbidden"
    auth0_issuer.stop()
    unknown = auth0_issuer.unknown_kid_token()
    results = await sample["main"](auth0_config, [unknown])
    assert results[unknown] == "issuer unavailable"


@pytest.mark.anyio
async def test_starlette_sample(
    auth0_config: Auth0Config, auth0_token: TokenFactory, auth0_issuer: LocalIssuer
) -> None:
    sample = load("starlette_app.py")
    async with serving(sample["create_app"](auth0_config)) as client:
        assert (await client.get("/whoami")).json() == {"sub": None}
        whoami = await client.get("/whoami", headers=bearer(auth0_token(sub="bob")))
        assert whoami.json() == {"sub": "bob"}
        # An invalid token never reaches the endpoint.
        expired = await client.get("/whoami", headers=bearer(auth0_issuer.expired_token()))
        assert expired.status_code == 401
        assert expired.json()["reason"] == "token_expired"

        # AuthenticationRejected(MissingTokenError()) gets the middleware's RFC 6750 answer.
        private = await client.get("/private")
        assert private.status_code == 401
        assert private.headers["www-authenticate"] == 'Bearer realm="api"'
        assert private.json()["reason"] == "missing_token"
        ok = await client.get("/private", headers=bearer(auth0_token(sub="bob")))
        assert ok.json() == {"sub": "bob"}

        # Starlette's @requires: its own plain 403, as the README says.
        denied = await client.get("/messages", headers=bearer(auth0_token()))
        assert denied.status_code == 403
        assert "www-authenticate" not in denied.headers
        token = auth0_token(scope="read:messages", permissions=["read:admin"])
        scoped = await client.get("/messages", headers=bearer(token))
        # request.auth.scopes: "authenticated" and the scopes, not the permissions.
        assert scoped.json() == {"scopes": ["authenticated", "read:messages"]}


@pytest.mark.anyio
async def test_starlette_rfc6750_answer_for_a_missing_scope(
    auth0_config: Auth0Config, auth0_token: TokenFactory
) -> None:
    # What the README suggests instead of @requires for an RFC 6750 403.
    async def messages(request: Request) -> PlainTextResponse:
        if "read:messages" not in request.state.claims.scopes:
            raise AuthenticationRejected(InsufficientScopeError(("read:messages",)))
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/messages", messages)],
        middleware=[Middleware(Auth0Middleware, config=auth0_config)],
    )
    async with serving(app) as client:
        response = await client.get("/messages", headers=bearer(auth0_token()))
        assert response.status_code == 403
        assert 'scope="read:messages"' in response.headers["www-authenticate"]
        assert response.json()["reason"] == "insufficient_scope"
        token = auth0_token(scope="read:messages")
        assert (await client.get("/messages", headers=bearer(token))).text == "ok"


@pytest.mark.e2e
def test_testing_sample_passes_under_pytest(tmp_path: Path) -> None:
    for name in ("myapp.py", "conftest.py", "test_myapp.py"):
        (tmp_path / name).write_text(runnable_files()[name])
    # Isolate the run from this project's pytest configuration; warnings are errors.
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_runnable_samples_pass_mypy_strict(tmp_path: Path) -> None:
    # Users copy these into projects checked with mypy --strict: they must pass as
    # written, the package's own types included.
    files = runnable_files()
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    assert_mypy_strict_passes(tmp_path, sorted(files))


def test_runnable_samples_pass_pyright_strict(tmp_path: Path) -> None:
    # The same samples as VS Code (Pylance) shows them to a user in strict mode.
    files = runnable_files()
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    assert_pyright_strict_passes(tmp_path, sorted(files))


def _parse_http(block: str) -> tuple[int, str, dict[str, str], str]:
    head, _, body = block.partition("\n\n")
    status_line, *header_lines = head.splitlines()
    _, status, phrase = status_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return int(status), phrase, headers, body.strip()


@pytest.mark.anyio
async def test_example_responses_are_real(
    auth0_config: Auth0Config, auth0_issuer: LocalIssuer
) -> None:
    examples = [_parse_http(block) for block in fenced("http")]
    assert len(examples) == 4
    create_app = load("myapp.py")["create_app"]
    actual: list[httpx.Response] = []
    async with serving(create_app(auth0_config)) as client:
        actual.append(await client.get("/me"))
        actual.append(await client.get("/me", headers=bearer(auth0_issuer.expired_token())))
        actual.append(await client.get("/messages", headers=bearer(auth0_issuer.token())))
    token = auth0_issuer.token()
    auth0_issuer.stop()
    async with serving(create_app(auth0_config)) as client:
        actual.append(await client.get("/me", headers=bearer(token)))

    for (status, phrase, headers, body), response in zip(examples, actual, strict=True):
        assert response.status_code == status
        assert response.reason_phrase == phrase
        assert response.text == body
        assert json.loads(body)  # the body shown is the exact JSON
        for name, value in headers.items():
            if name == "retry-after":
                # The value depends on the backoff; the header is always a delay in seconds.
                assert int(response.headers[name]) >= 1
            else:
                assert response.headers[name] == value, name
        assert ("www-authenticate" in headers) == ("www-authenticate" in response.headers)


def test_configuration_table_lists_every_option() -> None:
    rows = re.findall(
        r"^\| `(\w+)` \| ([^|]+) \| [^|]+ \| ([^|]+) \|$", section("Configuration"), re.M
    )
    documented = {name: (default.strip(), env.strip()) for name, default, env in rows}
    fields = {
        f.name: f for f in dataclasses.fields(Auth0Config) if f.init and not f.name.startswith("_")
    }
    assert set(documented) == set(fields)

    for name, (default, _env) in documented.items():
        literal = re.fullmatch(r"`(.+)`(?: \(.*\))?", default)
        if literal:
            assert ast.literal_eval(literal[1]) == fields[name].default, name

    from_env = inspect.getsource(Auth0Config.from_env)
    variables = {re.match(r"`(\w+)`", env)[1] for _, env in documented.values() if env != "—"}  # type: ignore[index]
    assert variables == set(re.findall(r'"(AUTH0_\w+)"', from_env))


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_error_table_covers_every_reason() -> None:
    text = section("What a client sees")
    documented = set(re.findall(r"`([a-z_]+)`", text))
    raised = {
        cls.reason
        for cls in _subclasses(BearerError) | _subclasses(KeySetError) | {KeySetError}
        if cls.__module__.startswith("asgi_auth0")
    }
    assert raised <= documented, raised - documented
    # And every status/error pair in the table is what the classes say.
    rows = re.findall(r"^\| [^|]+ \| (\d{3}) \| `?([a-z_]+)`?[^|]* \| `([a-z_]+)` \|$", text, re.M)
    assert len(rows) == 19
    for status, error, reason in rows:
        [cls] = [
            c
            for c in _subclasses(Auth0Error)
            if c.reason == reason and c.__module__.startswith("asgi_auth0")
        ]
        assert cls.status_code == int(status), reason
        assert (cls.error or "null") == error, reason


def test_public_names_used_in_the_readme_exist() -> None:
    # Every import from the package, parenthesised or not, and from its submodules
    # (asgi_auth0.testing). Each one must be read: an import spelled in a way the
    # pattern misses would otherwise go unchecked without a sound.
    imports = re.findall(
        r"^from (asgi_auth0(?:\.\w+)*) import (\([^)]*\)|[\w, ]+?) *(?:#.*)?$",
        README,
        re.MULTILINE,
    )
    assert len(imports) == len(re.findall(r"^from asgi_auth0\b", README, re.MULTILINE))
    checked = 0
    for module_name, names in imports:
        module = importlib.import_module(module_name)
        for item in names.strip("()").split(","):
            if item.strip():
                assert hasattr(module, item.strip()), f"{module_name}.{item.strip()}"
                checked += 1
    assert checked >= len(imports) > 0
