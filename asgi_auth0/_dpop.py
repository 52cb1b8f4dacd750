"""DPoP (RFC 9449): the proof that the client holds the key its access token is bound to.

A DPoP request carries ``Authorization: DPoP <access token>`` and a ``DPoP`` header
holding a *proof*: a small JWT the client signs, for this one request, with the private
key whose public half is in the proof's own ``jwk`` header. The issuer bound the access
token to that key by writing its RFC 7638 thumbprint into ``cnf.jkt``. A stolen token is
then useless without the key, and a stolen proof is useless for any other request.

:class:`DPoPProofChecker` makes every check of RFC 9449 §4.3 and §7.1 that concerns the
proof: ``typ``, ``alg`` on the allow-list, a public ``jwk`` that fits ``alg``, the
signature, ``htm``, ``htu``, ``iat`` inside the acceptance window, ``ath`` (the hash
of the access token), the token's ``cnf.jkt`` against the proof key's thumbprint, and
``jti`` against the proofs already seen: in this process's memory, or in a
:class:`DPoPReplayStore` that several processes share. Server-issued nonces (§8, §9)
are not offered: the ``iat`` window and the ``jti`` record bound replay instead.

Nothing read from the proof is echoed to the client; the details (in our own words,
with the client's values escaped and cut short) go to the rejection log only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import heapq
import itertools
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa

from ._bearer import SCHEME_CHARS
from ._errors import (
    Auth0Error,
    DPoPBindingError,
    DPoPProofReplayedError,
    InvalidDPoPProofError,
    InvalidRequestError,
    MultipleTokensError,
)
from ._jose import JWSParser
from ._keys import KeyRejected, PublicKey, log_safe, parse_jwk
from ._public import holds_root

logger = logging.getLogger("asgi_auth0.dpop")

__all__ = [
    "DPOP_MODES",
    "MAX_PROOF_SIZE",
    "STORE_CLOCK_MARGIN",
    "DPoPProofChecker",
    "DPoPReplayStore",
    "access_token_hash",
    "dpop_credentials",
    "htu_matches",
    "jwk_thumbprint",
    "normalize_htu",
    "replay_key",
    "request_htu",
]

#: The values of ``Auth0Config.dpop``.
DPOP_MODES = ("disabled", "allowed", "required")

#: Proofs longer than this many characters are refused unread. A proof holds one
#: public key and a handful of claims: about 500 characters with a P-256 key, about
#: 1,300 with an RSA-4096 key.
MAX_PROOF_SIZE = 8 * 1024

#: Parsed proof keys remembered (clients sign every proof with the same key).
PROOF_KEY_CACHE_SIZE = 1024
# Seconds between two warnings that the jti memory forgets live proofs.
_EVICTION_WARNING_INTERVAL = 60.0

#: The ``jti`` values remembered, at most. Each is kept until the proof it came with
#: could no longer be accepted anyway (``iat`` + max age + leeway); when this many are
#: live, the one closest to that time (of those, the oldest) makes room for a new one
#: (counted in :attr:`DPoPProofChecker.evicted_live`). One client key holds a tenth
#: of them at most (see :meth:`DPoPProofChecker._remember`).
JTI_CACHE_SIZE = 100_000

# RFC 7638 §3.2: the required members of each key type, in lexicographic order.
_THUMBPRINT_MEMBERS: dict[str, tuple[str, ...]] = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}
# RFC 7515 §4.1.9: a typ without "/" means "application/" + it, so both name the type.
_DPOP_TYPS = frozenset({"dpop+jwt", "application/dpop+jwt"})
_AUTHORIZATION = b"authorization"
_DPOP_HEADER = b"dpop"
_DPOP_SCHEME = b"dpop"
_OWS = b" \t"
# RFC 9110 token68, as for Bearer (RFC 9449 §7.1 uses the same credentials syntax).
_TOKEN68 = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
_JTI_MAX = 256
# Spaces and control characters are in no URI (RFC 3986 §2).
_NOT_URI_CHAR = re.compile(r"[\x00-\x20\x7f]")
# A dot segment, escaped or not: "/a/../b", "/a/%2e%2E/b", "/."
_DOT_SEGMENT = re.compile(r"(?:^|/)(?:\.|%2[eE]){1,2}(?:/|$)")
# Beyond 9999-12-31 a NumericDate is a mistake or an attack.
_MAX_NUMERIC_DATE = 253402300799
#: RSA proof keys: at most this many bits of modulus, and exponent at most 2**32
#: (every real key uses 65537); a larger one costs milliseconds per verification.
MAX_PROOF_RSA_BITS = 4096
_MAX_RSA_EXPONENT = 2**32
# RFC 9110 §7.2 Host = uri-host [ ":" port ]: a reg-name, IPv4 or bracketed IPv6 literal.
# Anything else ("/", "?", "#", "@", "\\", spaces) would be read as part of the URL.
_HOST_HEADER = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]*)?")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# What a path may carry unescaped (RFC 3986 pchar and "/"): a decoded path is escaped
# again as a client would send it.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"
_SLASHES = re.compile(r"/{2,}")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK, base64url without padding.

    Only the members RFC 7638 §3.2 names for the key type are hashed, in lexicographic
    order, with no whitespace. Raises ``ValueError`` for an unknown ``kty`` or a
    missing or non-string member.
    """
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if members is None:
        raise ValueError("no thumbprint for this kty")
    required: dict[str, str] = {}
    for name in members:
        value = jwk.get(name)
        if type(value) is not str:
            raise ValueError(f"member {name} is missing or not a string")
        required[name] = value
    canonical = json.dumps(required, separators=(",", ":"), ensure_ascii=False)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def access_token_hash(token: str) -> str:
    """``ath``: base64url SHA-256 of the access token's ASCII bytes (RFC 9449 §4.2)."""
    return _b64url(hashlib.sha256(token.encode("ascii")).digest())


#: Seconds a :class:`DPoPReplayStore` keeps a record past the moment its proof would
#: be refused as too old anyway: room for clocks that differ between the workers and
#: the store. Without it, a worker whose clock is behind by more than ``dpop_leeway``
#: would take a proof whose record another worker's clock had already let expire.
STORE_CLOCK_MARGIN = 60.0


class DPoPReplayStore(Protocol):
    """A record of the DPoP proofs accepted, shared by every process that serves the
    API (RFC 9449 §11.1), for deployments with several workers or hosts.

    Without one, each :class:`TokenVerifier` remembers the proofs it accepted in its
    own memory, so a proof replayed to another worker within its window is accepted
    there. Pass one as ``TokenVerifier(config, dpop_replay_store=...)``: the verifier
    then records each accepted proof here first (and in its memory after), and takes
    it only when the store says it is new.
    """

    async def add(self, key: str, expires_at: float) -> bool:
        """Record ``key`` until ``expires_at``; ``True`` if it was not recorded yet,
        ``False`` if it was (the proof is a replay).

        The check and the record must be one atomic step (Redis: ``SET key 1 NX
        EXAT ...``), or two workers given the same proof at once could both accept
        it, and a record must not be dropped before ``expires_at``. ``key`` is 87
        characters of the base64url alphabet and a dot (the client key's thumbprint,
        then the SHA-256 of the proof's ``jti``). ``expires_at`` is in seconds since
        the epoch: a minute (:data:`STORE_CLOCK_MARGIN`) after the proof would be
        refused as too old anyway, so every worker must use the same ``dpop_max_age``
        and ``dpop_leeway``, and clocks within a minute of each other. Raising
        anything (only ``False`` means a replay), answering anything but a bool, or
        taking longer than the verifier's ``dpop_replay_timeout`` answers the request
        503; an answer that comes after that deadline is not taken, so ``add`` must
        give way to cancellation.
        """
        ...


def replay_key(jkt: str, jti: str) -> str:
    """The key a :class:`DPoPReplayStore` records for the proof ``jti`` signed by the
    key whose thumbprint is ``jkt``: ``jkt``, a dot, and the SHA-256 of ``jti``
    (base64url), so that any ``jti`` makes a short key of safe characters."""
    # jti was read from JSON, which may hold a lone surrogate; it must still hash.
    return f"{jkt}.{_b64url(hashlib.sha256(jti.encode('utf-8', 'surrogatepass')).digest())}"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _normalize_percent(text: str) -> str:
    # RFC 3986 §6.2.2.1-2: hex digits of an escape in upper case, and an escaped
    # unreserved character decoded.
    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return _PERCENT.sub(fix, text) if "%" in text else text


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 §5.2.4, for the absolute paths of request URIs.
    if "." not in path:
        return path
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    joined = "/".join(output)
    # A final "." or ".." leaves a directory: "/a/b/.." is "/a/", and "/a/.." is "/".
    tail = "/" if joined and path.endswith(("/.", "/..")) else ""
    return "/" + joined + tail


def normalize_htu(url: str) -> str | None:
    """``url`` as RFC 9449 §4.3 compares it: no query, no fragment, syntax- and
    scheme-based normalization (RFC 3986 §6.2.2, §6.2.3): scheme and host in lower
    case, the default port dropped, an empty path read as ``/``, escapes normalized,
    dot segments removed. ``None`` when it is not an absolute http(s) or ws(s) URL.

    A ``ws``/``wss`` URL keeps its scheme: :func:`htu_matches` decides that a proof
    naming the ``http(s)`` form fits a WebSocket handshake, not the other way round."""
    if type(url) is not str or not url.isascii() or len(url) > MAX_PROOF_SIZE:
        return None
    if _NOT_URI_CHAR.search(url):
        # urlsplit drops tabs and line breaks silently: "/m\te" would read as "/me".
        return None
    if _STRAY_PERCENT.search(url.split("#", 1)[0].split("?", 1)[0]):
        # A "%" that starts no escape could join a decoded one: "%2%30" would read as
        # "%20", where the router takes the literal "%2" then "0". (The query and the
        # fragment are not compared.)
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if (
        scheme not in _DEFAULT_PORTS
        or not host
        or parts.username is not None
        or parts.password is not None
    ):
        return None
    # Escapes in the host too (RFC 3986 §6.2.2.2): "%74estserver" is "testserver".
    # Lower case again after: a decoded letter may be upper case, and hosts are not.
    host = _normalize_percent(host).lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    authority = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _remove_dot_segments(_normalize_percent(parts.path or "/"))
    return f"{scheme}://{authority}{path}"


def htu_matches(htu: str, url: str) -> bool:
    """Whether a proof's normalized ``htu`` names the request's normalized ``url``.

    A WebSocket handshake is an HTTP GET of the ``http(s)`` form of its URL (RFC 6455
    §4.1), so a proof may name either form for it; a proof naming a ``ws(s)`` URL
    never fits a plain HTTP request.
    """
    if htu == url:
        return True
    # "ws://" -> "http://", "wss://" -> "https://".
    return url.startswith("ws") and htu == "http" + url[2:]


def _root_end(raw: str, root: str) -> int | None:
    """Where ``root`` ends in the escaped path ``raw``, which decodes to a path that
    begins with ``root``; ``None`` when ``raw`` does not begin with it."""
    want = root.encode("utf-8")
    got = bytearray()
    i = 0
    while len(got) < len(want) and i < len(raw):
        escape = raw[i + 1 : i + 3] if raw[i] == "%" else ""
        if len(escape) == 2 and all(c in "0123456789abcdefABCDEF" for c in escape):
            got.append(int(escape, 16))
            i += 3
        else:
            got += raw[i].encode("latin-1")
            i += 1
    return i if got == want else None


def request_htu(scope: Mapping[str, Any]) -> str | None:
    """The URI of an ASGI ``http`` or ``websocket`` request as a proof must name it
    (normalized as :func:`normalize_htu`), or ``None`` when it cannot be built.

    Scheme from the scope (what the server saw: behind a proxy that terminates TLS,
    run the server with its proxy-headers option so that it is ``https``), host from
    the ``Host`` header, path as the client sent it (``raw_path``), under the
    ``root_path`` when the server was told of a prefix that the proxy strips.

    In the ``root_path`` part of the path, runs of ``/`` count as one, and so does the
    ``/`` that ends it with the one after it: they are the server's joins
    (``--root-path /api/`` makes uvicorn's path ``/api//me`` for the client's
    ``/api/me``), since a ``Mount`` never matches an empty segment.
    """
    scheme = scope.get("scheme") or ("ws" if scope.get("type") == "websocket" else "http")
    host = None
    for name, value in scope.get("headers") or ():
        if name.lower() == b"host":
            host = value.decode("latin-1")
            break
    if host:
        # The client's text: a path, query or fragment in it would move the URI built
        # below to another resource, and a proof made for that one would pass here.
        if not _HOST_HEADER.fullmatch(host):
            return None
    else:
        server = scope.get("server")
        if not server or server[1] is None:
            return None
        address = str(server[0])
        host = f"[{address}]:{server[1]}" if ":" in address else f"{address}:{server[1]}"
    full = scope.get("path") or "/"
    root = scope.get("root_path") or ""
    if type(full) is not str or type(root) is not str:
        return None
    try:
        # A lone surrogate (a server decoding the path its own way) has no URI form.
        full.encode("utf-8")
        root.encode("utf-8")
    except UnicodeEncodeError:
        return None
    raw_path = scope.get("raw_path")
    if isinstance(raw_path, bytes) and raw_path:
        path = raw_path.decode("latin-1").split("?", 1)[0]
    else:
        path = quote(full, safe=_PATH_SAFE)
    if "#" in path or _DOT_SEGMENT.search(path):
        # The router takes such a path as sent ("/files/x/../../me" is a file path)
        # while the URI's normalization would read it as another ("/me"): a proof
        # for that one must not open this one. Clients never send them.
        return None
    # The request target the client sent, after the root the server put in front
    # (Starlette's Mount keeps that one as app_root_path), must begin with "/" (RFC
    # 9112 §3.2.1). h11 passes "me" or "%2Fme" as they are, and joined to a root
    # they read as another target's path: "/api/" + "%2Fme" as "/api/" + "/%2Fme".
    server_root = scope.get("app_root_path", root)
    if type(server_root) is not str:
        return None
    target = path[len(server_root) :] if server_root and path.startswith(server_root) else path
    if not target.startswith("/"):
        return None
    if root:
        # Whether the path holds the root is decided as Starlette's router decides
        # it, so that the URI names what is routed. ASGI servers now put the root in
        # front, and a Mount keeps the whole path; then the client's part is what
        # follows the root in the path as sent.
        if holds_root(full, root):
            end = _root_end(path, root)
            if end is None:
                return None
            prefix, rest = _SLASHES.sub("/", path[:end]), path[end:]
        else:
            # An older server: the path leaves out the root, which is decoded text.
            prefix, rest = _SLASHES.sub("/", quote(root, safe=_PATH_SAFE)), path
        if prefix.endswith("/") and rest.startswith("/"):
            prefix = prefix[:-1]  # the server's join of "/api/" and "/me"
        path = prefix + rest
    return normalize_htu(f"{scheme}://{host}{path}")


def _dpop_scheme_token(value: bytes) -> str | None:
    """The access token of one ``Authorization: DPoP <token>`` value; ``None`` for
    another scheme; :class:`InvalidRequestError` for a malformed DPoP value."""
    value = value.strip(_OWS)
    if value[:4].lower() != _DPOP_SCHEME:
        return None
    separator = value[4:5]
    if separator == b" ":
        credentials = value[5:].lstrip(b" ")
    elif not separator or separator == b"\t":
        raise InvalidRequestError("DPoP scheme without a well-formed token")
    elif separator[0] in SCHEME_CHARS:
        return None  # a longer scheme name
    else:
        # "DPoP,<token>": no scheme name holds that byte (see _bearer.parse_authorization).
        raise InvalidRequestError("DPoP scheme without a well-formed token")
    if not _TOKEN68.fullmatch(credentials):
        raise InvalidRequestError("DPoP credentials are not a single token68")
    return credentials.decode("ascii")


def dpop_credentials(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str] | None:
    """``(access token, proof)`` of a request using the ``DPoP`` scheme, or ``None``
    when its ``Authorization`` header (if any) uses another scheme.

    Raises :class:`MultipleTokensError` for several ``Authorization`` headers,
    :class:`InvalidRequestError` for malformed DPoP credentials, and
    :class:`InvalidDPoPProofError` when the ``DPoP`` header is missing or repeated
    (RFC 9449 §4.3: exactly one).
    """
    authorization: bytes | None = None
    proofs: list[bytes] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == _AUTHORIZATION:
            if authorization is not None:
                raise MultipleTokensError("more than one Authorization header")
            authorization = value
        elif lowered == _DPOP_HEADER:
            proofs.append(value)
    if authorization is None:
        return None
    token = _dpop_scheme_token(authorization)
    if token is None:
        return None
    if not proofs:
        raise InvalidDPoPProofError("the request uses the DPoP scheme but has no DPoP header")
    if len(proofs) > 1:
        raise InvalidDPoPProofError("the request has more than one DPoP header")
    proof = proofs[0].strip(_OWS)
    if not proof.isascii():
        raise InvalidDPoPProofError("the DPoP header is not a JWT")
    return token, proof.decode("ascii")


def _shown(value: object, limit: int = 80) -> str:
    """A value the client chose, for a log line: escaped and cut short."""
    text = log_safe(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_numeric_date(value: object) -> bool:
    """An int or finite float within year 9999 either way: an int beyond a float's
    range would overflow the arithmetic that follows (a 500, not a refusal)."""
    kind = type(value)
    if kind is not int and (kind is not float or not math.isfinite(value)):  # type: ignore[arg-type]
        return False
    return -_MAX_NUMERIC_DATE <= value <= _MAX_NUMERIC_DATE  # type: ignore[operator]


class DPoPProofChecker:
    """Checks DPoP proofs for one set of policies (algorithms, time window), and
    remembers the ``jti`` of every proof it accepted (RFC 9449 §11.1).

    The memory is this object's, so it is per process: behind several workers a proof
    replayed to another worker within its window is not recognised. The window (by
    default 5 minutes, plus the leeway) bounds that exposure, as it does for every
    in-memory replay check; a :class:`DPoPReplayStore` removes it
    (``check(remember=False)``, then the store, then :meth:`remember`). Thread-safe.
    """

    def __init__(
        self,
        *,
        algorithms: Iterable[str],
        max_age: float,
        leeway: float,
        clock: Callable[[], float],
        jti_cache_size: int = JTI_CACHE_SIZE,
        jti_per_key: int | None = None,
    ) -> None:
        #: The algorithms a proof may use, in the order the challenge's ``algs`` lists them.
        self.algorithms: tuple[str, ...] = tuple(algorithms)
        self._parser = JWSParser(
            max_size=MAX_PROOF_SIZE, algorithms=frozenset(self.algorithms), header_cache_size=0
        )
        self._max_age = float(max_age)
        self._leeway = float(leeway)
        self._clock = clock
        self._jti_cache_size = jti_cache_size
        # (jkt, jti) -> the time after which the proof would be refused anyway, and the
        # same entries as a heap ordered by that time (stale pairs are skipped when
        # popped): proofs do not come in iat order, so arrival order is not expiry order.
        self._seen: dict[tuple[str, str], float] = {}
        self._expiry: list[tuple[float, int, tuple[str, str]]] = []
        self._arrivals = itertools.count()  # among equal times, the oldest goes first
        self._lock = threading.Lock()
        #: Entries pushed out before their time (the cache was full of live ones).
        self.evicted_live: int = 0
        #: Proofs accepted but not remembered: their key held its share already.
        self.unremembered: int = 0
        #: How many live entries one key may hold (a tenth of the memory by default).
        self._jti_per_key = max(1, jti_cache_size // 10 if jti_per_key is None else jti_per_key)
        self._per_key: dict[str, int] = {}
        self._warned_at = -math.inf
        self._keys: dict[tuple[tuple[str, str], ...], tuple[PublicKey, str]] = {}

    def check(
        self,
        proof: str,
        *,
        method: str,
        url: str | None,
        access_token: str,
        jkt: str,
        remember: bool = True,
    ) -> tuple[str, float]:
        """Accept ``proof`` for one request, or raise.

        ``method`` and ``url`` are the request's (``url`` as sent, or as
        :func:`request_htu` builds it; it is normalized here), ``access_token`` the
        token sent with the proof and ``jkt`` the token's verified ``cnf.jkt``. Raises
        :class:`InvalidDPoPProofError` (or its subclass :class:`DPoPProofReplayedError`)
        for a bad proof and :class:`DPoPBindingError` when the proof's key is not the
        one the token is bound to.

        With ``remember`` (the default) the proof's ``jti`` is checked against this
        object's memory and recorded there. Without it, the caller must record it
        (in a :class:`DPoPReplayStore`, then with :meth:`remember`): the proof's
        ``jti`` and the time until which to keep it are returned.
        """
        try:
            parsed = self._parser.parse(proof)
        except Auth0Error as exc:
            raise InvalidDPoPProofError(f"the DPoP proof is not acceptable: {exc.detail}") from None
        header = parsed.header
        typ = header.get("typ")
        if type(typ) is not str or typ.lower() not in _DPOP_TYPS:
            raise InvalidDPoPProofError("the DPoP proof's typ is not dpop+jwt")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict):
            raise InvalidDPoPProofError("the DPoP proof has no jwk header (its public key)")
        # A client signs all its proofs with one key: its parsed form and thumbprint
        # are remembered (keyed by every member of the JWK, so only an identical JWK
        # finds them), once a proof with it has passed every check.
        known_as = _jwk_identity(jwk)
        known = self._keys.get(known_as) if known_as is not None else None
        if known is None:
            try:
                key = parse_jwk(jwk)
                thumbprint = jwk_thumbprint(jwk)
            except (KeyRejected, ValueError) as exc:
                raise InvalidDPoPProofError(f"the DPoP proof's jwk is not usable: {exc}") from None
            if isinstance(key.key, rsa.RSAPublicKey):
                numbers = key.key.public_numbers()
                if numbers.n.bit_length() > MAX_PROOF_RSA_BITS or numbers.e > _MAX_RSA_EXPONENT:
                    raise InvalidDPoPProofError(
                        f"the DPoP proof's jwk is not usable: an RSA key over "
                        f"{MAX_PROOF_RSA_BITS} bits or with an exponent over 2**32"
                    )
        else:
            key, thumbprint = known
        alg = parsed.alg
        if alg not in key.algorithms:
            raise InvalidDPoPProofError(
                f"the DPoP proof's jwk ({key.kty}) does not fit its alg {alg}"
            )
        if not key.verify(alg, parsed.signing_input, parsed.signature):
            raise InvalidDPoPProofError("the DPoP proof's signature does not verify with its jwk")

        claims = parsed.payload
        jti = claims.get("jti")
        if type(jti) is not str or not jti or len(jti) > _JTI_MAX:
            raise InvalidDPoPProofError("the DPoP proof's jti is missing or not a short string")
        htm = claims.get("htm")
        if htm != method:
            raise InvalidDPoPProofError(
                f"the DPoP proof's htm {_shown(htm)} is not this request's method "
                f"{_shown(method, 24)}"
            )
        htu = claims.get("htu")
        if type(htu) is not str:
            raise InvalidDPoPProofError("the DPoP proof's htu is missing or not a string")
        wanted = normalize_htu(htu)
        if url is not None:
            # Idempotent on what request_htu built; a direct caller may pass the URL
            # as sent.
            url = normalize_htu(url)
        if wanted is None or url is None or not htu_matches(wanted, url):
            raise InvalidDPoPProofError(_htu_mismatch(htu, wanted, url))
        iat = claims.get("iat")
        if not _is_numeric_date(iat):
            raise InvalidDPoPProofError("the DPoP proof's iat is missing or not a NumericDate")
        now = self._clock()
        if iat > now + self._leeway:  # type: ignore[operator]
            raise InvalidDPoPProofError(
                f"the DPoP proof's iat is {iat - now:.0f} s in the future "  # type: ignore[operator]
                f"(leeway {self._leeway:g} s): is the client's clock right?"
            )
        if iat < now - self._max_age:  # type: ignore[operator]
            raise InvalidDPoPProofError(
                f"the DPoP proof is {now - iat:.0f} s old (dpop_max_age {self._max_age:g} s)"  # type: ignore[operator]
            )
        ath = claims.get("ath")
        if type(ath) is not str:
            raise InvalidDPoPProofError("the DPoP proof has no ath (the access token's hash)")
        if ath != access_token_hash(access_token):
            raise InvalidDPoPProofError("the DPoP proof's ath is not the hash of this access token")
        if thumbprint != jkt:
            raise DPoPBindingError(
                "the access token's cnf.jkt is not the thumbprint of the DPoP proof's key"
            )
        until: float = iat + self._max_age + self._leeway  # type: ignore[operator]
        if remember:
            self._remember(jkt, jti, until, now)
        if known is None and known_as is not None:
            keys = self._keys
            if len(keys) >= PROOF_KEY_CACHE_SIZE:
                # Oldest out; another thread may change the dict meanwhile: then skip.
                with contextlib.suppress(RuntimeError, StopIteration, KeyError):
                    del keys[next(iter(keys))]
            keys[known_as] = (key, thumbprint)
        return jti, until

    def remember(self, jkt: str, jti: str, until: float, now: float) -> None:
        """Remember the proof ``jti`` of the key ``jkt`` until ``until``, or raise
        :class:`DPoPProofReplayedError` if it is remembered already; for a proof
        :meth:`check` accepted with ``remember=False``."""
        self._remember(jkt, jti, until, now)

    def _remember(self, jkt: str, jti: str, until: float, now: float) -> None:
        # Only proofs that passed every other check are remembered: a forged or
        # mismatched proof can never occupy (or evict) an entry.
        key = (jkt, jti)
        per_key = self._per_key
        with self._lock:
            seen = self._seen
            expires = seen.get(key)
            # Inclusive: at "expires" itself the proof's iat can still be in the window
            # (with dpop_leeway 0 it is exactly now - max_age, which check() accepts).
            if expires is not None and expires >= now:
                raise DPoPProofReplayedError("this DPoP proof (its jti) was already used")
            expiry = self._expiry
            # Soonest to expire first: drop what has expired (so that a key's share
            # below counts live proofs only).
            while expiry and expiry[0][0] < now:
                self._forget(heapq.heappop(expiry))
            held = per_key.get(jkt, 0) - (expires is not None)
            over_share = held >= self._jti_per_key
            evicted = 0
            if over_share:
                # One key (one client, or one attacker with a token of their own) may
                # hold a share of the memory only: were it to push out every other
                # key's live proofs, theirs could be replayed. Past its share, its own
                # new proofs go unremembered: only they lose the replay check.
                self.unremembered += 1
            else:
                if expires is None:
                    per_key[jkt] = held + 1
                seen[key] = until
                heapq.heappush(expiry, (until, next(self._arrivals), key))
                # Over the bound (many keys): the live entries whose proofs leave the
                # window first go (counted and logged: they could be replayed).
                while expiry and len(seen) > self._jti_cache_size:
                    evicted += self._forget(heapq.heappop(expiry))
                self.evicted_live += evicted
            warn = (evicted or over_share) and now - self._warned_at >= _EVICTION_WARNING_INTERVAL
            if warn:
                self._warned_at = now
        if warn and over_share:
            logger.warning(
                "a DPoP key (jkt %s) holds %d proofs still in their window, its share of "
                "the jti memory: its further proofs are not remembered, so they could be "
                "replayed (%d so far); shorten dpop_max_age",
                log_safe(jkt[:16]),
                self._jti_per_key,
                self.unremembered,
                extra={"reason": "dpop_jti_share_full"},
            )
        elif warn:
            logger.warning(
                "the DPoP jti memory is full (%d proofs still in their window): proofs "
                "forgotten early could be replayed (%d so far); shorten dpop_max_age",
                self._jti_cache_size,
                self.evicted_live,
                extra={"reason": "dpop_jti_memory_full"},
            )

    def _forget(self, entry: tuple[float, int, tuple[str, str]]) -> int:
        """Drop one popped heap entry from the memory; 1 if it was still live (called
        under the lock; ``now`` is not needed: only the bound pops live entries)."""
        until, _, key = entry
        if self._seen.get(key) != until:
            return 0  # stale: that jti expired and was remembered again since
        del self._seen[key]
        jkt = key[0]
        left = self._per_key[jkt] - 1
        if left:
            self._per_key[jkt] = left
        else:
            del self._per_key[jkt]
        return 1

    @property
    def remembered(self) -> int:
        """How many proofs' ``jti`` are remembered now."""
        return len(self._seen)


def _jwk_identity(jwk: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | None:
    """Every member of a JWK whose members are all strings, in a hashable form; ``None``
    for any other JWK (never remembered: rare, and parsed anew each time)."""
    items = tuple(sorted(jwk.items()))
    for _, value in items:
        if type(value) is not str:
            return None
    return items


def _htu_mismatch(htu: str, wanted: str | None, url: str | None) -> str:
    # Kept well under the 600 characters the rejection log shows as they are (longer
    # details are cut there): the hint must survive.
    if url is None:
        return "this request's URI could not be built to compare the DPoP proof's htu with"
    if wanted is None:
        return (
            f"the DPoP proof's htu {_shown(htu, 60)} is not an absolute http(s) or ws(s) "
            "URI (each % starting an escape)"
        )
    if wanted.split(":", 1)[1] == url.split(":", 1)[1]:
        hint = (
            "a ws(s) URI names a WebSocket handshake only"
            if wanted.startswith("ws") and not url.startswith("ws")
            else "behind a TLS proxy: uvicorn --proxy-headers"
        )
        return (
            f"the DPoP proof's htu {_shown(wanted, 40)} is not this request's URI "
            f"{_shown(url, 40)}: only the scheme differs ({hint})"
        )
    return f"the DPoP proof's htu {_shown(wanted, 60)} is not this request's URI {_shown(url, 60)}"
