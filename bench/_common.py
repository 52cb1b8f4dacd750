"""Shared fixtures for the benchmarks: keys, realistic Auth0 payloads, machine facts."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import platform
import statistics
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from asgi_auth0 import Auth0Config
from asgi_auth0._signing import public_jwk

DOMAIN = "bench-tenant.eu.auth0.com"
ISSUER = f"https://{DOMAIN}/"
AUDIENCE = "https://api.bench.example.com"
KID = "bench-key-1"


def bench_config(jwks_uri: str, *, token_cache: bool = True) -> Auth0Config:
    """The verifier settings of the in-process rows: the bench tenant, its keys from
    ``jwks_uri``, the token cache at its default size (or off)."""
    if token_cache:
        return Auth0Config(domain=DOMAIN, audience=AUDIENCE, jwks_uri=jwks_uri)
    return Auth0Config(domain=DOMAIN, audience=AUDIENCE, jwks_uri=jwks_uri, token_cache_size=0)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def auth0_payload(i: int, now: float) -> dict[str, Any]:
    """What an Auth0 access token for an API with RBAC looks like (about 380 bytes of JSON)."""
    return {
        "iss": ISSUER,
        "sub": f"auth0|{i:024x}",
        "aud": [AUDIENCE, f"https://{DOMAIN}/userinfo"],
        "iat": int(now) - 30,
        "exp": int(now) + 86_400,
        "scope": "openid profile email read:messages write:messages",
        "azp": "Xq3bN0cV7kWm2ZtLr9PyHs4JdEuAfGiO",
        "permissions": ["read:messages", "write:messages"],
    }


class Signer:
    """Mints compact JWS tokens with one key, the way Auth0 lays them out."""

    def __init__(self, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, alg: str) -> None:
        self.key = key
        self.alg = alg
        header = {"alg": alg, "typ": "JWT", "kid": KID}
        self._header_b64 = b64url(json.dumps(header, separators=(",", ":")).encode())
        self.jwks = {"keys": [public_jwk(key, kid=KID, alg=alg)]}

    def tokens(self, payloads: list[dict[str, Any]]) -> list[str]:
        """Tokens for ``payloads``, in order, signed on every core.

        RSA-2048 signing takes about 0.7 ms, and part 1 mints some 28,000 tokens: on
        one core that was most of the part's run time. The workers are spawned, not
        forked: the caller may run threads (the JWKS server) that a fork would copy
        mid-flight.
        """
        workers = min(os.cpu_count() or 1, 8)
        if workers == 1 or len(payloads) < 1000:
            return [self.token(p) for p in payloads]
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        step = -(-len(payloads) // (4 * workers))
        chunks = [payloads[i : i + step] for i in range(0, len(payloads), step)]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            minted = pool.map(_mint_chunk, [pem] * len(chunks), [self.alg] * len(chunks), chunks)
            return [token for chunk in minted for token in chunk]

    def token(self, payload: dict[str, Any]) -> str:
        body = b64url(json.dumps(payload, separators=(",", ":")).encode())
        signing_input = f"{self._header_b64}.{body}"
        if isinstance(self.key, rsa.RSAPrivateKey):
            sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        else:
            sig = self.key.sign(signing_input.encode())
        return f"{signing_input}.{b64url(sig)}"


def _mint_chunk(pem: bytes, alg: str, payloads: list[dict[str, Any]]) -> list[str]:
    # In a worker process (Signer.tokens): the same key, so the same tokens.
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey))
    signer = Signer(key, alg)
    return [signer.token(p) for p in payloads]


def rsa_signer() -> Signer:
    return Signer(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


def ed25519_signer() -> Signer:
    return Signer(ed25519.Ed25519PrivateKey.generate(), "EdDSA")


def split_token(token: str) -> tuple[bytes, bytes]:
    """(signing input, signature) bytes of a compact JWS."""
    signing_input, _, sig = token.rpartition(".")
    return signing_input.encode("ascii"), base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def machine() -> dict[str, str]:
    """The facts a reader needs to compare results across machines."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for dist in (
        "asgi_auth0",
        "cryptography",
        "PyJWT",
        "starlette",
        "fastapi",
        "uvicorn",
        "httptools",
        "uvloop",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


class _JWKSHandler(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LocalJWKS:
    """A JWKS document served over HTTP on 127.0.0.1 (for PyJWKClient)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        handler = type("H", (_JWKSHandler,), {"body": json.dumps(jwks).encode()})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    def __enter__(self) -> LocalJWKS:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
