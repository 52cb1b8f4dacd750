"""``JWKSCache``: the issuer's signing keys, fetched over HTTPS and cached.

The request path asks :meth:`JWKSCache.get_key` for the key of a token's ``kid``. When
the cached key set is fresh and knows that ``kid``, that is one clock read and one dict
lookup: no lock, no await that suspends, no network.

Everything else follows the policy below (times are seconds on the injected ``clock``).

Freshness
    A fetched set is fresh for the issuer's ``Cache-Control: max-age`` (minus ``Age``),
    clamped to ``[min(min_ttl, ttl), max_ttl]`` (5 min .. 24 h by default);
    ``no-store``/``no-cache`` give the lower bound (never a fetch per request); with no
    ``max-age`` the configured ``ttl`` applies as is.

Refresh ahead and stale-while-revalidate
    With a background runner (``async with cache.running():`` or
    ``await task_group.start(cache.run)``, normally owned by the app's lifespan), the
    runner loads the set at startup and refreshes it at ``refresh_ahead`` (80%) of its
    freshness. Requests never wait for those refreshes: a request whose ``kid`` is in
    the cached set is answered from it at once, even when the set is past freshness
    (within ``max_stale``), and merely wakes the runner.

    Without a runner the cache refreshes on demand. In the last 20% of freshness
    nothing happens early. Once the set is past freshness, the *first* request that
    finds it so refreshes inline (bounded by ``fetch_timeout``), so that a key removed
    from the JWKS stops validating; every request arriving meanwhile is served from the
    stale set without waiting, and so is that first request if the fetch fails. So,
    without a runner, at most one request per freshness period (or per backoff step
    while the issuer fails) waits on the network, and never longer than
    ``fetch_timeout``. Use a runner to remove even that.

Stale-if-error
    A failed refresh never discards the last good set: it keeps serving for
    ``max_stale`` past freshness, logged once per stale period. After that, or when no
    set was ever loaded, :class:`KeySetError` (503 with ``Retry-After``) is raised.

Failures and backoff
    A fetch is a failure unless it is a ``200`` (redirects are never followed), with a
    body of at most 1 MiB (counted while streaming), holding strict JSON (no NaN or
    Infinity) that is an object with a ``keys`` array and at least one usable key. The
    whole fetch (discovery, retry and body included) has one deadline,
    ``fetch_timeout``. A connection error gets one immediate retry inside the same
    deadline. After a failure the next fetch waits an exponential backoff with jitter
    (``backoff_min`` 5 s doubling to ``backoff_max`` 5 min), or the issuer's
    ``Retry-After`` when longer (capped at ``backoff_max``). While no usable set is
    left (none loaded yet, or past ``max_stale``), every token gets 503, so the wait
    is at most ``refresh_cooldown`` (at least ``backoff_min``; jittered) past that
    moment, or the issuer's ``Retry-After`` when longer: the issuer's return ends the
    503s within it. Failures are logged and reported to
    hooks; they never escape as foreign exceptions.

Unknown ``kid``
    A ``kid`` not in the set triggers one awaited refresh, at most once per
    ``refresh_cooldown``: counted from the start of the previous refresh an unknown
    ``kid`` triggered, not from scheduled ones, so a key rotated in just after a
    scheduled refresh is picked up by its first token (any number of callers share
    one fetch). Within the cooldown the answer is :class:`UnknownKeyError` at once, or
    :class:`KeySetError` if the last fetch failed (the ``kid`` might be a rotated key
    we cannot see). A ``kid`` still absent after a fetch that began once it had arrived
    enters a bounded LRU negative cache (``negative_cache_size``, ``negative_ttl``;
    cleared when the key set changes) and is refused without any fetch until
    ``negative_ttl`` (by default the cooldown) has passed; then it triggers a refresh
    again, as any unknown ``kid`` does. So repeating a garbage ``kid``, or a flood of
    random ones, costs one fetch per cooldown. A ``kid`` over 256 characters is
    refused without any fetch.

Single flight, generations, cancellation
    One fetch at a time: every caller that needs one joins the fetch under way. Each
    fetch has a sequence number and only a newer one may install its result, so an
    older response can never overwrite a newer key set (nor an older failure mark a
    newer success as failing). :attr:`JWKSCache.generation`
    moves whenever the usable keys change (the verifier drops cached verdicts then).
    Callers wait on an event, each under its own cancel scope, so a caller that goes
    away (its deadline, its task cancelled) stops waiting at once and never cancels
    the fetch. (A client that disconnects does not cancel its request under uvicorn,
    which only reports the disconnect to a reader of ``receive``: that request waits
    out ``fetch_timeout`` at most.) The runner performs it when there is one in the
    caller's event loop; else the first caller starts it in a task of its own (a
    system task on trio), bounded by ``fetch_timeout``, and then waits like everyone
    else. A runner left
    behind in an event loop that stopped running (closed or dropped with the runner
    still pending) is forgotten: it vouches for nothing, and a new one may start; so
    is a fetch of such a loop. A fetch of another thread's running loop is joined by
    checking on it every few milliseconds (an event cannot be awaited across loops). A
    fetch that ends without an outcome (the cache closed, the runner stopped) answers
    its waiters with 503 and does not count towards the unknown-``kid`` cooldown.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import math
import random
import re
import sys
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any, Generic, Literal, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import httpx
from cryptography.hazmat.primitives import serialization

from ._config import Auth0Config, discovery_url_for, validate_issuer, validate_url
from ._errors import (
    AlgorithmNotAllowedError,
    ConfigError,
    InvalidIssuerError,
    KeySetError,
    UnknownKeyError,
)
from ._keys import MAX_KID_LENGTH, KeyIndex, PublicKey, log_field, log_safe, parse_jwks

__all__ = [
    "MAX_JWKS_BYTES",
    "EventHook",
    "IssuerKeySets",
    "JWKSCache",
    "JWKSStatus",
    "freshness_lifetime",
    "key_source_for_config",
    "log_safe",
    "parse_retry_after",
]

logger = logging.getLogger("asgi_auth0.jwks")

#: What :attr:`JWKSCache.generation` reads while cached verdicts must not be used.
NOT_VOUCHED = -1

#: A JWKS (or discovery document) body larger than this many bytes is a fetch failure.
MAX_JWKS_BYTES = 1024 * 1024

#: ``on_event(name, info)``: called synchronously with ``"refresh"``, ``"refresh_error"``,
#: ``"stale_served"`` or ``"unknown_kid"`` and a small mapping (reason, kid, alg, iss,
#: counts; never a token; a fetch's events carry ``trigger`` and ``started``, the cache
#: clock's time it began). It must not block; exceptions it raises are logged and ignored.
EventHook = Callable[[str, Mapping[str, Any]], None]

State = Literal["fresh", "stale", "empty", "failing"]

_RFC8414_PATH = "/.well-known/oauth-authorization-server"
_USER_AGENT = "asgi_auth0 (JWKS fetcher)"
# Waiters give up this long after fetch_timeout; the fetch itself is bounded by
# fetch_timeout, so this only guards against a bug leaving a flight unfinished.
_WAIT_SLACK = 1.0
# How often a waiter checks on a fetch running in another thread's event loop.
_FOREIGN_POLL = 0.005
# Backoff delays are drawn from [(1 - _JITTER) * d, d] so that many processes that
# failed together do not retry together.
_JITTER = 0.25
# An unknown kid that a refresh did not find is logged at INFO once per this many
# seconds, the rest at DEBUG and counted: the kids are chosen by whoever sends tokens.
_UNKNOWN_KID_LOG_WINDOW = 60.0
_DIGITS = re.compile(r"[0-9]{1,15}")
# Errors where the connection itself failed, so one immediate retry may succeed (a
# pooled keep-alive connection the server had closed, a refused connect during a
# restart). Timeouts and HTTP statuses are not retried.
_RETRYABLE = (httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class JWKSStatus:
    """A snapshot of a :class:`JWKSCache` for health endpoints and diagnostics.

    ``state`` is ``"fresh"`` (usable, within freshness), ``"stale"`` (usable, past
    freshness but within ``max_stale``, because refreshes fail or are pending),
    ``"empty"`` (no usable set yet, nothing failed) or ``"failing"`` (no usable set and
    the last fetch failed). Ages and delays are seconds on the cache's clock.
    """

    state: State
    #: The issuer the cache serves, when known.
    issuer: str | None
    #: The configured or discovered JWKS URL (``None`` before discovery).
    jwks_uri: str | None
    #: Usable keys in the current set, and their kids (none once the set is past
    #: ``max_stale``: it verifies nothing then).
    key_count: int
    kids: tuple[str, ...]
    #: Moves whenever the usable keys change; 0 until a set is loaded.
    generation: int
    #: Fetches attempted, and how many of them failed.
    fetch_count: int
    failed_fetch_count: int
    #: Failures since the last success (0 when the last fetch succeeded).
    consecutive_failures: int
    #: Seconds since the last successful fetch (``None``: never).
    last_success_age: float | None
    #: The stable reason code of the last failure since the last success, if any.
    last_error: str | None
    #: Seconds until the next fetch is due: a refresh, or a retry after backoff
    #: (``0``: on the next request, or now if a runner is active).
    next_refresh_in: float
    #: Whether a background runner is alive (not one left behind in an event loop
    #: that stopped running).
    background: bool

    def as_dict(self) -> dict[str, Any]:
        """The status as plain JSON-ready data."""
        data = asdict(self)
        data["kids"] = list(self.kids)
        return data


class _FetchFailure(Exception):
    """A fetch that did not produce a usable key set; internal, never escapes."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
        self.status = status


@dataclass(eq=False)
class _Flight:
    """One fetch, shared by everyone who needs it."""

    seq: int
    trigger: str
    #: Clock time the fetch began: a kid that arrived later may postdate it.
    started: float
    done: anyio.Event = field(default_factory=anyio.Event)
    ok: bool = False
    failure: _FetchFailure | None = None
    #: For a fetch an unknown kid triggered: when the one before it began (the cooldown
    #: goes back to that if this one ends without an outcome).
    cooldown_before: float | None = None
    #: The event loop it runs in (see _running_loop): its event is bound to that loop.
    loop: object = None
    #: Set with ``done``, for waiters in another thread's event loop, which cannot
    #: wait on ``done`` (see JWKSCache._wait).
    finished: bool = False
    #: Per event loop of such waiters: set when the one of them that watches
    #: ``finished`` for its loop stops watching.
    relays: dict[object, anyio.Event] = field(default_factory=dict)


@dataclass(frozen=True)
class _Fetched:
    index: KeyIndex
    fingerprint: tuple[tuple[str | None, tuple[str, ...], bytes], ...]
    lifetime: float
    #: Why each key left out was left out ("key #2 (kid 'x'): use is not 'sig'").
    refused: tuple[str, ...] = ()


@dataclass(eq=False)
class _Runner:
    """One background refresher (a call of :meth:`JWKSCache.run`) and its event loop.

    Fetches are handed only to a refresher of the caller's own loop (see
    _running_loop): its wake event belongs to that loop, and a loop that stopped
    running with the refresher still pending (closed, or simply dropped) will never
    run it again. See JWKSCache._runner_alive for when it counts as there at all.
    """

    loop: object
    #: The same loop when it is asyncio's (``None``: a trio token).
    asyncio_loop: asyncio.AbstractEventLoop | None
    #: Set to wake it early; replaced after each wake (an Event cannot be cleared).
    wake: anyio.Event = field(default_factory=anyio.Event)


def _running_loop() -> object:
    """The event loop running now: the token of this ``trio.run``, or asyncio's loop.

    trio first: in trio's guest mode on an asyncio host, asyncio's running loop is the
    host's, and a trio task must still be treated as trio. (Only a program that
    imported trio can be running it.)
    """
    trio = sys.modules.get("trio")
    # While another thread imports trio, sys.modules holds it half made, without
    # lowlevel yet; then no trio.run can be running (it needs the import done).
    current_trio_token = getattr(getattr(trio, "lowlevel", None), "current_trio_token", None)
    if current_trio_token is not None:
        try:
            return current_trio_token()
        except RuntimeError:
            pass
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # no event loop at all: nothing to bind to
        return None


def _running_elsewhere(loop: object) -> bool:
    """Whether ``loop``, not the caller's, is an asyncio event loop running now (in
    another thread, or hosting trio's guest mode in this one): a fetch in it will end,
    and say so in ``_Flight.finished``."""
    return (
        isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running() and not loop.is_closed()
    )


def freshness_lifetime(
    cache_control: Iterable[str],
    age: str | None,
    *,
    default: float,
    minimum: float,
    maximum: float,
    expires: str | None = None,
    date: str | None = None,
    now: float | None = None,
) -> float:
    """Seconds a response stays fresh, from its ``Cache-Control`` directives, or its
    ``Expires`` (RFC 9111 §4.2.1).

    ``no-store``/``no-cache`` give ``minimum``; ``max-age`` (minus a valid ``Age``) is
    clamped to ``[minimum, maximum]``; without it, ``Expires`` minus ``Date`` (or
    ``now``, default ``time.time()``) likewise. A ``max-age`` or ``Expires`` that
    cannot be read makes the response stale (§4.2.1, §5.3): ``minimum``. With
    neither, ``default`` applies unclamped. ``cache_control`` is the list of
    directives.
    """
    max_age: int | None = None
    unreadable = False
    for directive in cache_control:
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            return minimum
        if name == "max-age":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if _DIGITS.fullmatch(value):
                seconds = int(value)
            elif value.isascii() and value.isdigit():
                seconds = 2**31  # too many digits: the largest value (RFC 9111 §1.2.2)
            else:
                unreadable = True
                continue
            # Conflicting max-age directives: the shorter one is the safe reading.
            max_age = seconds if max_age is None else min(max_age, seconds)
    if unreadable:
        return minimum
    elapsed = int(age.strip()) if age is not None and _DIGITS.fullmatch(age.strip()) else 0
    if max_age is None:
        if expires is None:
            return default
        until = _http_date(expires)
        if until is None:
            return minimum  # an invalid Expires means "already expired" (§5.3)
        sent = _http_date(date) if date is not None else None
        base = sent if sent is not None else (time.time() if now is None else now)
        lifetime = until - base
    else:
        lifetime = max_age
    return float(min(maximum, max(minimum, lifetime - elapsed)))


def _http_date(value: str) -> float | None:
    """An HTTP-date as a timestamp, or ``None`` when it is not one."""
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when.timestamp() if when.tzinfo is not None else None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), or ``None``.

    ``now`` is the wall-clock time for HTTP-dates (default ``time.time()``).
    """
    if value is None:
        return None
    value = value.strip()
    if _DIGITS.fullmatch(value):
        return float(int(value))
    when = _http_date(value)
    if when is None:
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _rfc8414_url(issuer: str) -> str:
    """RFC 8414 §3: the well-known segment goes between the host and the issuer's path."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, _RFC8414_PATH + path, parts.query, ""))


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(body: bytes, what: str) -> object:
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _FetchFailure("invalid_json", f"the {what} is not valid JSON") from exc


def _fingerprint(index: KeyIndex) -> tuple[tuple[str | None, tuple[str, ...], bytes], ...]:
    """What makes two key sets verify the same tokens: kid, algorithms, public key.

    Sorted: the same keys in another order are the same set (an issuer may shuffle
    them on every response), and must not flush every cached verdict. The set kept
    is then the one installed first, order included, so a kid published twice still
    finds the key it found before."""
    return tuple(
        sorted(
            (
                (
                    key.kid,
                    tuple(sorted(key.algorithms)),
                    key.key.public_bytes(
                        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                    ),
                )
                for key in index.keys
            ),
            key=lambda entry: (entry[0] is not None, entry[0] or "", entry[1], entry[2]),
        )
    )


def _key_index(document: object) -> tuple[KeyIndex, tuple[str, ...]]:
    """Parse a fetched JWKS once; a document that is not one, or has no usable key, fails.

    Also returns why each skipped key was skipped, for the log: an issuer publishes
    keys we cannot use (Keycloak always adds an encryption key), and "no usable key"
    alone does not say what to fix.
    """
    refused: list[str] = []

    def skipped(position: int, entry: object, why: object) -> None:
        # The kid is the issuer's unchecked text: escaped and truncated.
        kid = entry.get("kid") if isinstance(entry, Mapping) else None
        shown = log_safe(kid) if kid is not None else "(none)"
        refused.append(f"key #{position} (kid {shown}): {why}")

    try:
        index = parse_jwks(document, on_skip=skipped)
    except ValueError as exc:
        raise _FetchFailure("not_a_jwks", str(exc)) from exc
    if not len(index):
        detail = "; ".join(refused[:5]) if refused else "it has no keys"
        more = f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
        raise _FetchFailure(
            "no_usable_keys", f"the JWKS holds no usable signing key ({detail}{more})"
        )
    return index, tuple(refused)


def _seconds(name: str, value: object, *, minimum: float, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float: not a ValueError
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < minimum or (positive and seconds <= 0):
        raise ConfigError(
            f"{name} must be a finite number of seconds >= {minimum}, got {seconds:g}"
        )
    return seconds


_T = TypeVar("_T")


class _Running(Generic[_T]):
    """``async with``: run a ``run(task_status=...)`` method in a task group it owns.

    Unlike a generator-based context manager around a task group, an exception from
    the body propagates as itself, not wrapped in an exception group.
    """

    def __init__(self, target: Callable[..., Any], owner: _T) -> None:
        self._target = target
        self._owner = owner
        self._group: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> _T:
        group = anyio.create_task_group()
        await group.__aenter__()
        try:
            await group.start(self._target)
        except BaseException:
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)
            raise
        self._group = group
        return self._owner

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        if group is not None:
            # The runner only ever ends by cancellation; stop it and wait for it. The
            # body's own exception (if any) then propagates unchanged.
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)


class JWKSCache:
    """The issuer's public keys, fetched from ``jwks_uri`` (or found by OIDC discovery
    from ``issuer``), cached and refreshed as the module docstring describes.

    Args:
        jwks_uri: The JWKS URL; ``https://`` except on loopback hosts. ``None`` to
            discover it from ``issuer``.
        issuer: The exact issuer; required when ``jwks_uri`` is ``None``. Discovery
            reads ``{issuer}/.well-known/openid-configuration`` (falling back to RFC
            8414 ``/.well-known/oauth-authorization-server`` on a 4xx); the document's
            ``issuer`` must equal this exactly.
        http_client: An ``httpx.AsyncClient`` to use (never closed by the cache); by
            default the cache creates one on first fetch and closes it in
            :meth:`aclose`. Redirects are never followed either way.
        ttl: Freshness in seconds when the issuer sends no ``Cache-Control: max-age``.
        refresh_cooldown: Minimum seconds between the starts of two refreshes
            triggered by unknown ``kid`` values (scheduled refreshes do not count).
        fetch_timeout: Deadline in seconds for a whole fetch (body and retry included).
        max_stale: Seconds past freshness the last good set keeps serving while
            refreshes fail.
        clock: Monotonic seconds; tests inject one to move time.
        algorithms: Optional allow-list; any other ``alg`` is refused before any lookup.
        min_ttl, max_ttl: Bounds for ``Cache-Control`` freshness (5 min, 24 h).
        refresh_ahead: Fraction of freshness after which the runner refreshes (0.8).
        backoff_min, backoff_max: Exponential backoff bounds after failed fetches.
        negative_cache_size, negative_ttl: The LRU of ``kid`` values known to be absent,
            and how long one is remembered (default: ``refresh_cooldown``; so with a
            cooldown of 0, as tests set it, none is: every unknown ``kid``, repeated or
            not, is fetched for).
        on_event: Optional :data:`EventHook` for metrics.
        logger: Where to log (default ``asgi_auth0.jwks``).
        jitter: Returns a float in ``[0, 1)`` for backoff jitter (tests fix it).

    Raises :class:`ConfigError` for any invalid argument. Construction does no I/O.
    """

    def __init__(
        self,
        jwks_uri: str | None = None,
        *,
        issuer: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        ttl: float = 600,
        refresh_cooldown: float = 30,
        fetch_timeout: float = 5,
        max_stale: float = 6 * 3600,
        clock: Callable[[], float] = time.monotonic,
        algorithms: Iterable[str] | None = None,
        min_ttl: float = 300,
        max_ttl: float = 86400,
        refresh_ahead: float = 0.8,
        backoff_min: float = 5,
        backoff_max: float = 300,
        negative_cache_size: int = 1024,
        negative_ttl: float | None = None,
        on_event: EventHook | None = None,
        logger: logging.Logger | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if jwks_uri is None and issuer is None:
            raise ConfigError("JWKSCache needs jwks_uri, or issuer to find it by discovery")
        self._jwks_uri = None if jwks_uri is None else validate_url("jwks_uri", jwks_uri)
        self._issuer = None if issuer is None else validate_issuer("issuer", issuer)
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise ConfigError("http_client must be an httpx.AsyncClient")
        self._ttl = _seconds("ttl", ttl, minimum=0, positive=True)
        self._cooldown = _seconds("refresh_cooldown", refresh_cooldown, minimum=0)
        self._fetch_timeout = _seconds("fetch_timeout", fetch_timeout, minimum=0, positive=True)
        self._max_stale = _seconds("max_stale", max_stale, minimum=0)
        self._min_ttl = _seconds("min_ttl", min_ttl, minimum=0, positive=True)
        self._max_ttl = _seconds("max_ttl", max_ttl, minimum=self._min_ttl)
        self._backoff_min = _seconds("backoff_min", backoff_min, minimum=0, positive=True)
        self._backoff_max = _seconds("backoff_max", backoff_max, minimum=self._backoff_min)
        # By default a kid found absent is looked for again once the cooldown has
        # passed, as for any unknown kid: an issuer whose JWKS showed a new key a few
        # seconds after its first token (a CDN in front of it) is then served within
        # a cooldown, where a longer memory kept that key's tokens at 401 for it.
        self._negative_ttl = (
            self._cooldown
            if negative_ttl is None
            else _seconds("negative_ttl", negative_ttl, minimum=0)
        )
        if isinstance(refresh_ahead, bool) or not isinstance(refresh_ahead, (int, float)):
            raise ConfigError("refresh_ahead must be a fraction between 0 and 1")
        if not 0 < refresh_ahead <= 1:
            raise ConfigError("refresh_ahead must be a fraction between 0 and 1")
        self._refresh_ahead = float(refresh_ahead)
        if (
            isinstance(negative_cache_size, bool)
            or not isinstance(negative_cache_size, int)
            or negative_cache_size < 0
        ):
            raise ConfigError("negative_cache_size must be a non-negative integer")
        self._negative_size = negative_cache_size
        if not callable(clock) or not callable(jitter):
            raise ConfigError("clock and jitter must be callables")
        if on_event is not None and not callable(on_event):
            raise ConfigError("on_event must be a callable")
        self._algorithms = None if algorithms is None else frozenset(algorithms)
        self._clock = clock
        self._jitter = jitter
        self._on_event = on_event
        self._logger = logger if logger is not None else logging.getLogger("asgi_auth0.jwks")
        self._client = http_client
        self._owns_client = http_client is None
        self._client_loop: object = None  # the event loop our own client was made in

        # -- the key set and its clock (written only by _install) --
        self._index: KeyIndex | None = None
        self._fingerprint: object = None
        # Fetches performed in tasks of their own (see _start_fetch), by flight, so that
        # aclose() can cancel them; on asyncio also their tasks (it keeps weak ones).
        self._detached: dict[_Flight, anyio.CancelScope] = {}
        self._fetch_tasks: set[asyncio.Task[None]] = set()
        # Read through the generation property; bumped by _install and on expiry.
        self._generation = 0
        self._expiry_counted = False
        self._installed_seq = 0
        self._refresh_at = -math.inf  # fast path while clock() < this
        self._fresh_until = -math.inf
        self._stale_until = -math.inf
        self._last_success_at: float | None = None
        # When a failing on_event hook was last logged at WARNING.
        self._hook_warned_at: float | None = None
        # The INFO line for unknown kids: when it was last written, how many since not.
        self._unknown_logged_at: float | None = None
        self._unknown_unlogged = 0
        # -- fetch bookkeeping --
        self._seq = 0
        self._inflight: _Flight | None = None
        self._pending: _Flight | None = None  # handed to the runner, not started yet
        # When the last refresh triggered by an unknown kid began: the cooldown runs
        # from there. Scheduled and startup fetches do not count, or a key rotated in
        # just after one would be refused for up to a cooldown.
        self._last_unknown_kid_fetch = -math.inf
        self._next_attempt_at = -math.inf  # backoff: no fetch before this (except refresh())
        self._failures = 0
        self._fetch_count = 0
        self._failed_fetch_count = 0
        self._last_error: str | None = None
        self._discovered: str | None = None
        self._stale_noted = False
        self._stale_warned = False
        self._expired_noted = False
        self._negative: OrderedDict[str | None, float] = OrderedDict()
        # -- background runner (see _Runner) --
        self._runner: _Runner | None = None

    @classmethod
    def from_config(
        cls, config: Auth0Config, *, issuer: str | None = None, **options: Any
    ) -> JWKSCache:
        """A cache for ``config.issuer`` (or another of ``config.issuers``) with the
        config's JWKS settings and algorithm allow-list; ``options`` are passed on
        (``http_client``, ``clock``, ``on_event``, ...).

        The configured ``jwks_uri`` serves the main issuer; any other issuer's keys are
        found by discovery.
        """
        if not isinstance(config, Auth0Config):
            raise ConfigError("config must be an Auth0Config")
        if "jwks_uri" in options:
            raise ConfigError(
                "JWKSCache.from_config() takes the jwks_uri from the config: set "
                "Auth0Config(jwks_uri=...), or build JWKSCache(jwks_uri, ...) directly"
            )
        iss = config.issuer if issuer is None else issuer
        if iss not in config.issuers:
            raise ConfigError(f"issuer {iss!r} is not one of the configured issuers")
        settings: dict[str, Any] = {
            "issuer": iss,
            "ttl": config.jwks_cache_ttl,
            "refresh_cooldown": config.jwks_refresh_cooldown,
            "fetch_timeout": config.jwks_fetch_timeout,
            "max_stale": config.jwks_max_stale,
            "algorithms": config.algorithms,
        }
        settings.update(options)
        return cls(config.jwks_uri if iss == config.issuer else None, **settings)

    # -- the request path ---------------------------------------------------------------

    async def get_key(self, kid: str | None, alg: str) -> PublicKey:
        """The key for a token's ``kid`` and ``alg``.

        Raises :class:`UnknownKeyError` (no such ``kid`` in the issuer's set),
        :class:`AlgorithmNotAllowedError` (``alg`` not allowed or not fitting the key)
        or :class:`KeySetError` (no usable key set: the issuer is unreachable or broken).
        """
        key = self._find_fresh(kid, alg)
        if key is not None:
            return key
        return await self._get_key_slow(kid, alg)

    def _find_fresh(self, kid: str | None, alg: str) -> PublicKey | None:
        # get_key's fast path, synchronous so that TokenVerifier can call it without a
        # coroutine: the key from a fresh set not yet due for refresh (a dict lookup),
        # or None when get_key must do more. Raises as get_key does for a bad alg.
        if type(alg) is not str or (self._algorithms is not None and alg not in self._algorithms):
            raise AlgorithmNotAllowedError("alg is not in the allow-list")
        index = self._index
        if index is not None and type(kid) is str and self._clock() < self._refresh_at:
            try:
                return index.find(kid, alg)
            except UnknownKeyError:
                pass
        return None

    async def _get_key_slow(self, kid: str | None, alg: str) -> PublicKey:
        if kid is not None and (type(kid) is not str or len(kid) > MAX_KID_LENGTH):
            # No key set can hold such a kid (parse_jwk refuses them): never fetch for it.
            self._emit("unknown_kid", kid=None, alg=alg, action="invalid_kid")
            raise UnknownKeyError("kid is not a string of reasonable length")
        now = self._clock()
        index = self._usable(now)
        if index is None:
            return await self._get_key_without_set(kid, alg, now)
        try:
            key = index.find(kid, alg)
        except UnknownKeyError:
            return await self._get_unknown_kid(kid, alg, now)
        if now < self._fresh_until:
            # Refresh-ahead window: still fresh; only a runner refreshes this early.
            self._kick(now)
            return key
        # Past freshness, within max_stale: the known kid is served from the stale set.
        self._note_stale(now)
        if (
            self._runner_alive()
            or self._current_flight() is not None
            or now < self._next_attempt_at
        ):
            # A runner (or a fetch under way, or backoff) takes care of freshness;
            # this request does not wait.
            self._kick(now)
            return key
        # No runner: this request refreshes inline (see the module docstring), so that
        # keys removed from the JWKS stop validating.
        flight = await self._refresh_now("stale")
        if not flight.ok:
            self._note_stale(self._clock())  # now it is an outage: warn
            return key
        return self._find_after_fetch(kid, alg, flight, now)

    async def _get_key_without_set(self, kid: str | None, alg: str, now: float) -> PublicKey:
        # An outage that outlasted max_stale is an ERROR: tokens are refused now. A set
        # that merely aged unused (no refresher, no traffic, no failed fetch) is not:
        # this request refreshes it like any other, quietly.
        if self._index is not None and self._failures and not self._expired_noted:
            self._expired_noted = True
            self._logger.error(
                "JWKS of %s is older than max_stale and cannot be refreshed; refusing tokens",
                self._where(),
                extra={"reason": "key_set_expired", "iss": self._issuer},
            )
        if self._current_flight() is None and now < self._next_attempt_at:
            raise self._unavailable(now, "the issuer's key set is unavailable (backing off)")
        flight = await self._refresh_now("load")
        if not flight.ok:
            raise self._unavailable(self._clock(), "the issuer's key set could not be fetched")
        return self._find_after_fetch(kid, alg, flight, now)

    async def _get_unknown_kid(self, kid: str | None, alg: str, now: float) -> PublicKey:
        expires = self._negative.get(kid)
        if expires is not None:
            if now < expires:
                self._negative.move_to_end(kid)
                self._emit("unknown_kid", kid=kid, alg=alg, action="negative_cache")
                raise UnknownKeyError("no key with this kid (known to be absent)")
            del self._negative[kid]
        if self._current_flight() is None and (
            now - self._last_unknown_kid_fetch < self._cooldown or now < self._next_attempt_at
        ):
            if self._failures:
                # The issuer is failing: the kid may be a new key we cannot see, so this
                # is an outage (503), not a bad token (401).
                self._emit("unknown_kid", kid=kid, alg=alg, action="issuer_unavailable")
                raise self._unavailable(now, "cannot look up an unknown kid: issuer failing")
            self._emit("unknown_kid", kid=kid, alg=alg, action="cooldown")
            self._logger.debug(
                "unknown kid %s within the refresh cooldown",
                log_safe(kid),
                extra={
                    "reason": "unknown_kid",
                    "kid": log_field(kid),
                    "alg": alg,
                    "iss": self._issuer,
                },
            )
            raise UnknownKeyError("no key with this kid (refresh cooldown)")
        flight = await self._refresh_now("unknown_kid")
        if not flight.ok:
            self._emit("unknown_kid", kid=kid, alg=alg, action="issuer_unavailable")
            raise self._unavailable(self._clock(), "cannot look up an unknown kid: fetch failed")
        return self._find_after_fetch(kid, alg, flight, now)

    def _find_after_fetch(
        self, kid: str | None, alg: str, flight: _Flight, arrived: float
    ) -> PublicKey:
        """Look ``kid`` up in the set ``flight`` just produced.

        An absent kid is remembered (negative cache) only if that fetch began after the
        request arrived: a fetch already under way may predate the key's publication.
        """
        index = self._usable(self._clock())
        if index is None:
            raise self._unavailable(self._clock(), "no usable key set")
        try:
            return index.find(kid, alg)
        except UnknownKeyError:
            if flight.started >= arrived:
                self._remember_absent(kid)
            self._emit("unknown_kid", kid=kid, alg=alg, action="refreshed")
            self._log_unknown_kid(kid, alg)
            raise

    def _log_unknown_kid(self, kid: str | None, alg: str) -> None:
        # Every caller that joined the refresh and still misses its kid comes here: a
        # flood of random kids would otherwise write one INFO line per request, each
        # with a kid of the sender's choosing. Once per window at INFO, then DEBUG.
        now = self._clock()
        last = self._unknown_logged_at
        level, since = logging.DEBUG, ""
        if last is None or now - last >= _UNKNOWN_KID_LOG_WINDOW:
            level = logging.INFO
            if self._unknown_unlogged and last is not None:
                since = (
                    f" ({self._unknown_unlogged} more unknown kids, at DEBUG, since the "
                    f"line {now - last:.0f} s ago)"
                )
            self._unknown_logged_at, self._unknown_unlogged = now, 0
        else:
            self._unknown_unlogged += 1
        if not self._logger.isEnabledFor(level):
            return
        # The kid is attacker input: escaped in the extra field too, since a %(kid)s
        # formatter would otherwise print its newlines raw.
        self._logger.log(
            level,
            "unknown kid %s: not in the key set of %s%s",
            log_safe(kid),
            self._where(),
            since,
            extra={
                "reason": "unknown_kid",
                "kid": log_field(kid),
                "alg": alg,
                "iss": self._issuer,
            },
        )

    @property
    def generation(self) -> int:
        """Moves whenever the usable keys change; 0 until a set is loaded; -1 while
        cached verdicts must not be used.

        It moves when a different key set is installed, and when the last good set
        expires (``max_stale`` past freshness with every refresh failing), since no
        key validates after that. The verified-token cache of a
        :class:`TokenVerifier` compares it on every hit, so neither a removed key nor
        an expired set keeps validating tokens verified earlier.

        It is -1 (which matches no cached verdict, and is never cached) while the set
        is past freshness with no background refresher running: then only a request
        that looks a key up refreshes it, and a token answered from the cache would
        never do that. A replayed token could otherwise keep a key removed from the
        JWKS validating for as long as nothing else came along.
        """
        # Checked here, on the reader's side: freshness and expiry are the passing of
        # time, and no fetch or lookup need happen for a cached verdict to be read.
        if self._clock() < self._fresh_until:
            return self._generation
        return self._generation_past_freshness()

    def _generation_past_freshness(self) -> int:
        if self._index is None:
            return self._generation
        generation = self._counted_generation()
        # Only a live refresher vouches: one left behind in a loop that no longer runs
        # refreshes nothing, here or anywhere.
        return generation if self._runner_alive() else NOT_VOUCHED

    def _counted_generation(self) -> int:
        """The generation, with the last good set's expiry counted if it has passed."""
        if (
            not self._expiry_counted
            and self._index is not None
            and self._clock() >= self._stale_until
        ):
            self._expiry_counted = True
            self._generation += 1
        return self._generation

    def _usable(self, now: float) -> KeyIndex | None:
        index = self._index
        return index if index is not None and now < self._stale_until else None

    def _remember_absent(self, kid: str | None) -> None:
        if not self._negative_size or not self._negative_ttl:
            return
        negative = self._negative
        negative[kid] = self._clock() + self._negative_ttl
        negative.move_to_end(kid)
        while len(negative) > self._negative_size:
            negative.popitem(last=False)

    def _note_stale(self, now: float) -> None:
        """Report serving past freshness: the hook's event once per stale period, and a
        warning once per stale period when something is wrong."""
        past = now - self._fresh_until
        # Nothing failed and no background refresher (no lifespan: Daphne, uvicorn
        # --lifespan off): a refresh is simply due, and this request is making it. A
        # warning would cry outage once per freshness period; if that refresh fails,
        # this is called again and warns then.
        quiet = self._last_error is None and not self._runner_alive()
        if not self._stale_noted:
            self._stale_noted = True
            if quiet:
                self._logger.debug(
                    "the JWKS of %s is due for refresh (%.0f s past freshness)",
                    self._where(),
                    past,
                    extra={"reason": "refresh_due", "iss": self._issuer},
                )
            self._emit("stale_served", stale_for=past, last_error=self._last_error)
        if not quiet and not self._stale_warned:
            self._stale_warned = True
            self._logger.warning(
                "serving the stale JWKS of %s (%.0f s past freshness, last error: %s)",
                self._where(),
                past,
                self._last_error or "none yet",
                extra={"reason": "stale_served", "iss": self._issuer},
            )

    def _where(self) -> str:
        """Whose keys, for a log line: the issuer, and the URL they come from when it is
        known (a wrong jwks_uri, a 404 or another tenant's keys, shows only there)."""
        uri = self._jwks_uri or self._discovered
        if self._issuer is None:
            return str(uri)
        return self._issuer if uri is None else f"{self._issuer} ({uri})"

    def _unavailable(self, now: float, detail: str) -> KeySetError:
        wait = self._next_attempt_at - now
        if not math.isfinite(wait) or wait < 1:
            wait = self._backoff_min
        return KeySetError(detail, retry_after=math.ceil(wait))

    # -- fetching -------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Fetch the key set now (e.g. at startup), joining a fetch already under way.

        Ignores cooldown and backoff. Raises :class:`KeySetError` if the fetch fails;
        the last good key set is kept either way.
        """
        flight = await self._refresh_now("manual")
        if not flight.ok:
            error = self._unavailable(self._clock(), "refreshing the key set failed")
            raise error from flight.failure

    async def _refresh_now(self, trigger: str) -> _Flight:
        """Join the fetch under way or start one; wait for it (never cancelling it).

        One bound for the whole wait, whatever it waits on: no request waits longer
        than fetch_timeout (and a little slack), even when the fetch it first joined,
        another loop's, ends without an outcome and it then needs one of its own.
        """
        flight = self._current_flight()
        # The caller that starts the fetch waits like any other: its deadline or its
        # cancellation ends its wait here, and the fetch goes on for the others.
        with anyio.move_on_after(self._fetch_timeout + _WAIT_SLACK):
            while flight is not None and flight.loop is not _running_loop():
                if await self._joined_elsewhere(flight):
                    return flight
                # Forgotten: another waiter of this loop may have started ours already.
                flight = self._current_flight()
            if flight is None:
                flight = self._new_flight(trigger)
                runner = self._runner
                if runner is not None and runner.loop is flight.loop:
                    self._pending = flight
                    runner.wake.set()
                else:
                    # No refresher, or one of another event loop, which cannot be
                    # woken from here and may never run again: fetch for ourselves.
                    self._start_fetch(flight)
            await flight.done.wait()
        if flight is None:  # pragma: no cover - the scope cannot end before an await
            raise RuntimeError("no fetch to wait for")
        return flight

    async def _wait(self, flight: _Flight) -> None:
        """Until ``flight`` is done (callers bound the wait)."""
        loop = _running_loop()
        if flight.loop is loop:
            await flight.done.wait()
            return
        # A fetch in another loop that is running (see _current_flight): its event
        # belongs to that loop and cannot be awaited here, so one waiter per loop
        # watches the flag it sets, and the others wait on that waiter's event.
        while not flight.finished and _running_elsewhere(flight.loop):
            relay = flight.relays.get(loop)
            if relay is not None:
                await relay.wait()
                continue
            relay = flight.relays[loop] = anyio.Event()
            try:
                while not flight.finished and _running_elsewhere(flight.loop):  # noqa: ASYNC110
                    await anyio.sleep(_FOREIGN_POLL)
            finally:
                # Also when this waiter goes away first: the next one takes over.
                del flight.relays[loop]
                relay.set()

    async def _joined_elsewhere(self, flight: _Flight) -> bool:
        """Wait for ``flight``, a fetch of another running loop (callers bound the
        wait); whether it ended with an outcome. If not, it is forgotten (as one of a
        stopped loop is): it was cancelled as its loop ended (its last caller went
        away), or it did not end within the caller's bound (its loop is blocked), and
        the next fetch is this loop's own."""
        try:
            await self._wait(flight)
        finally:
            if not (flight.ok or flight.failure is not None):
                self._forget(flight)
        return flight.ok or flight.failure is not None

    def _current_flight(self) -> _Flight | None:
        """The fetch under way, if it runs in this event loop or in another thread's
        asyncio loop that is running.

        One begun in another loop cannot be joined the usual way (its event belongs to
        that loop); while that loop runs, the fetch will end, and it is waited for by
        its flag (_wait), so that several threads' loops still share one fetch and the
        unknown-kid cooldown (a flood of unknown kids from every loop at once would
        otherwise fetch on each). One in a loop that is not running may never finish
        at all: the loop was closed with it pending, or stopped, or ended before its
        task first ran. It is forgotten, so this loop fetches for itself instead of
        waiting for it, or failing, forever.
        """
        flight = self._inflight
        if flight is not None and flight.loop is not _running_loop():
            if _running_elsewhere(flight.loop):
                return flight
            self._forget(flight)
            return None
        return flight

    def _forget(self, flight: _Flight) -> None:
        """Stop counting on ``flight``, a fetch of another event loop."""
        if self._inflight is flight:
            self._inflight = None
        if self._pending is flight:
            self._pending = None
        self._detached.pop(flight, None)
        self._forget_unanswered(flight)

    def _start_fetch(self, flight: _Flight) -> None:
        """Perform ``flight`` in a task of its own, for every caller waiting on it.

        Performed in the caller's task, the fetch would either die with that caller
        (asyncio's native cancellation, ``task.cancel()`` and ``asyncio.timeout``,
        gets through any shield) or, shielded, hold the caller past its own deadline.
        _perform bounds it by fetch_timeout; aclose() cancels it.
        """
        scope = anyio.CancelScope()
        self._detached[flight] = scope

        async def perform() -> None:
            try:
                with scope:
                    await self._perform(flight)
            except Exception:
                # _perform contains the fetch's own failures; what is left is ours or
                # a logging filter's, after the outcome. Nothing may escape: on trio
                # an exception out of a system task ends the whole program.
                with contextlib.suppress(Exception):
                    self._logger.error(
                        "unexpected error after fetching the JWKS of %s",
                        self._where(),
                        exc_info=True,
                        extra={"reason": "unexpected", "iss": self._issuer},
                    )
            finally:
                self._detached.pop(flight, None)

        loop = flight.loop
        if not isinstance(loop, asyncio.AbstractEventLoop):
            # trio, the other backend anyio runs on: without a nursery of the caller's
            # to outlive it, a system task (trio cancels those when its run ends).
            import trio  # noqa: PLC0415 (only under trio; not a dependency)

            trio.lowlevel.spawn_system_task(perform, name="asgi_auth0 JWKS fetch")
            return
        task = loop.create_task(perform())
        self._fetch_tasks.add(task)  # a strong reference until done (asyncio keeps a weak one)
        task.add_done_callback(self._fetch_tasks.discard)

    def _new_flight(self, trigger: str) -> _Flight:
        self._seq += 1
        now = self._clock()
        flight = _Flight(self._seq, trigger, now, loop=_running_loop())
        self._inflight = flight
        if trigger == "unknown_kid":
            flight.cooldown_before = self._last_unknown_kid_fetch
            self._last_unknown_kid_fetch = now
        return flight

    def _forget_unanswered(self, flight: _Flight) -> None:
        """A fetch ended without an outcome (cancelled: the cache closed, the runner
        stopped): it told nobody anything about the key set. Its waiters get 503; it
        must not also hold back the next unknown-kid refresh, or a token bearing a
        newly published kid would get 401 for a whole cooldown with the issuer fine."""
        if flight.ok or flight.failure is not None:
            return
        if flight.cooldown_before is not None and self._last_unknown_kid_fetch == flight.started:
            self._last_unknown_kid_fetch = flight.cooldown_before

    async def _perform(self, flight: _Flight) -> None:
        self._fetch_count += 1
        try:
            try:
                with anyio.fail_after(self._fetch_timeout):
                    fetched = await self._fetch()
            except TimeoutError as exc:
                raise _FetchFailure(
                    "timeout", f"no complete answer within {self._fetch_timeout:g} s"
                ) from exc
        except _FetchFailure as failure:
            self._record_failure(flight, failure)
        except Exception as exc:
            # A bug or an exotic client error: still only a failed fetch for callers.
            self._logger.error(
                "unexpected error while fetching the JWKS of %s",
                self._where(),
                exc_info=True,
                extra={"reason": "unexpected", "iss": self._issuer},
            )
            unexpected = _FetchFailure("unexpected", type(exc).__name__)
            unexpected.__cause__ = exc
            self._record_failure(flight, unexpected)
        else:
            self._install(flight, fetched)
        finally:
            if self._inflight is flight:
                self._inflight = None
            self._forget_unanswered(flight)
            flight.finished = True
            flight.done.set()

    async def _fetch(self) -> _Fetched:
        client = self._http_client()
        jwks_uri = self._jwks_uri or self._discovered
        if jwks_uri is None:
            jwks_uri = await self._discover(client)
        try:
            document, headers = await self._get_json(client, jwks_uri, "JWKS")
            index, refused = _key_index(document)
        except _FetchFailure:
            if self._jwks_uri is None:
                self._discovered = None  # the issuer may have moved its keys: rediscover
            raise
        lifetime = freshness_lifetime(
            headers.get_list("cache-control", split_commas=True),
            headers.get("age"),
            default=self._ttl,
            minimum=min(self._min_ttl, self._ttl),
            maximum=self._max_ttl,
            expires=headers.get("expires"),
            date=headers.get("date"),
        )
        return _Fetched(index, _fingerprint(index), lifetime, refused)

    async def _discover(self, client: httpx.AsyncClient) -> str:
        issuer = self._issuer
        if issuer is None:  # construction rules this out; keeps the types honest
            raise _FetchFailure("bad_config", "no jwks_uri and no issuer to discover it from")
        try:
            document, _ = await self._get_json(client, discovery_url_for(issuer), "discovery")
        except _FetchFailure as failure:
            # Not an OIDC provider? Try OAuth server metadata (RFC 8414), but only when
            # the server answered "no such document", not when it is failing.
            status = failure.status
            if status is None or not 400 <= status < 500 or status == 429:
                raise
            document, _ = await self._get_json(client, _rfc8414_url(issuer), "discovery")
        if not isinstance(document, Mapping):
            raise _FetchFailure("bad_discovery", "the discovery document is not a JSON object")
        named = document.get("issuer")
        if named != issuer:
            # Name both (the document's is remote text: escaped); a lone trailing slash
            # is the usual mistake and hard to spot, so say so.
            slash = isinstance(named, str) and (named + "/" == issuer or issuer + "/" == named)
            raise _FetchFailure(
                "issuer_mismatch",
                f"the discovery document names issuer {log_safe(named)}, not the configured "
                f"{log_safe(issuer)}"
                + (" (they differ only by a trailing slash)" if slash else ""),
            )
        try:
            jwks_uri = validate_url("jwks_uri", document.get("jwks_uri"))
        except ConfigError as exc:
            raise _FetchFailure("bad_discovery", f"discovery jwks_uri refused: {exc}") from exc
        self._discovered = jwks_uri
        return jwks_uri

    async def _get_json(
        self, client: httpx.AsyncClient, url: str, what: str
    ) -> tuple[object, httpx.Headers]:
        try:
            try:
                return await self._get_json_once(client, url, what)
            except _RETRYABLE as exc:
                self._logger.debug(
                    "retrying the %s fetch after %s",
                    what,
                    type(exc).__name__,
                    extra={"reason": "connection_error", "iss": self._issuer},
                )
            return await self._get_json_once(client, url, what)
        except httpx.TimeoutException as exc:
            raise _FetchFailure("timeout", f"the {what} request timed out") from exc
        except _RETRYABLE as exc:
            raise _FetchFailure(
                "connection_error", f"the {what} request failed: {type(exc).__name__}"
            ) from exc
        except httpx.HTTPError as exc:
            raise _FetchFailure(
                "http_error", f"the {what} request failed: {type(exc).__name__}"
            ) from exc

    async def _get_json_once(
        self, client: httpx.AsyncClient, url: str, what: str
    ) -> tuple[object, httpx.Headers]:
        async with client.stream(
            "GET",
            url,
            headers={"Accept": "application/json", "Accept-Encoding": "identity"},
            follow_redirects=False,
            timeout=self._fetch_timeout,
        ) as response:
            status = response.status_code
            if status != 200:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                reason = "redirect" if 300 <= status < 400 else "http_status"
                raise _FetchFailure(
                    reason,
                    f"the {what} answered HTTP {status}",
                    retry_after=retry_after,
                    status=status,
                )
            body = await _read_capped(response, MAX_JWKS_BYTES, what)
            headers = response.headers
        return _parse_json(body, what), headers

    def _http_client(self) -> httpx.AsyncClient:
        client = self._client
        if not self._owns_client and client is not None:
            return client
        loop = _running_loop()
        if client is None or self._client_loop is not loop:
            # Created on first use (not at construction: no I/O, no event loop needed
            # then), and again in another event loop: an httpx client belongs to the
            # loop it was made in (on trio, to one trio.run), and the same app or
            # verifier is often run by one test on trio and the next on asyncio. The
            # client left behind holds no connection (no keep-alive, below).
            # trust_env=False: nothing but Auth0Config.from_env reads the
            # environment; inject a client to use a proxy.
            self._client_loop = loop
            client = self._client = httpx.AsyncClient(
                follow_redirects=False,
                timeout=self._fetch_timeout,
                trust_env=False,
                headers={"User-Agent": _USER_AGENT},
                # No keep-alive: fetches are minutes apart, so a kept connection only
                # outlives its use, and an app run without a lifespan (no aclose())
                # would leave its socket open until garbage collection.
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=0),
            )
        return client

    # -- installing results -------------------------------------------------------------

    def _install(self, flight: _Flight, fetched: _Fetched) -> None:
        if flight.seq <= self._installed_seq:
            # A fetch of another loop, given up on (see _current_flight), ending after
            # a newer one: its older response must not replace the newer key set.
            flight.ok = True
            return
        now = self._clock()
        self._installed_seq = flight.seq
        recovered_after = self._failures
        changed = fetched.fingerprint != self._fingerprint
        if changed:
            self._index = fetched.index
            self._fingerprint = fetched.fingerprint
            self._generation += 1
            # Kids found absent from the old set may be in the new one.
            self._negative.clear()
        lifetime = fetched.lifetime
        self._fresh_until = now + lifetime
        self._refresh_at = now + lifetime * self._refresh_ahead
        self._stale_until = self._fresh_until + self._max_stale
        self._last_success_at = now
        self._failures = 0
        self._next_attempt_at = -math.inf
        self._last_error = None
        self._stale_noted = False
        self._stale_warned = False
        self._expired_noted = False
        self._expiry_counted = False
        flight.ok = True
        index = fetched.index
        self._logger.log(
            logging.INFO if changed else logging.DEBUG,
            "JWKS of %s %s: %d keys, fresh for %.0f s, generation %d",
            self._where(),
            "loaded" if changed else "unchanged",
            len(index),
            lifetime,
            self._generation,
            extra={"reason": "refresh", "iss": self._issuer},
        )
        if recovered_after and not changed:
            # The outage was logged at WARNING (and ERROR); its end gets a line at
            # INFO too, even when the keys came back unchanged.
            self._logger.info(
                "JWKS of %s fetched again after %d failed attempts",
                self._where(),
                recovered_after,
                extra={"reason": "recovered", "iss": self._issuer},
            )
        for why in fetched.refused:
            # Logged with the set (INFO when it changed, else DEBUG), not on every
            # refresh: an issuer that always publishes a key we cannot use is normal.
            self._logger.log(
                logging.INFO if changed else logging.DEBUG,
                "JWKS of %s: skipping unusable %s",
                self._where(),
                why,
                extra={"reason": "key_skipped", "iss": self._issuer},
            )
        self._emit(
            "refresh",
            changed=changed,
            generation=self._generation,
            key_count=len(index),
            skipped=index.skipped,
            lifetime=lifetime,
            trigger=flight.trigger,
            started=flight.started,
        )

    def _record_failure(self, flight: _Flight, failure: _FetchFailure) -> None:
        if flight.seq < self._seq:
            # Given up on while its event loop was not running (see _current_flight),
            # and a newer fetch began since: that one says how the issuer is doing.
            # This failure is only its own waiters' (a stopped loop run again); on
            # the shared state it would undo a newer success and back off for nothing.
            flight.failure = failure
            self._failed_fetch_count += 1
            self._logger.info(
                "a fetch of the JWKS of %s given up on earlier failed too (%s: %s); "
                "a newer fetch decides",
                self._where(),
                failure.reason,
                failure.detail,
                extra={"reason": "superseded_fetch_failed", "iss": self._issuer},
            )
            return
        now = self._clock()
        self._failures += 1
        self._failed_fetch_count += 1
        self._last_error = failure.reason
        delay = self._outage_delay(now, self._backoff(self._failures, failure.retry_after))
        if failure.retry_after is not None:  # the issuer asked for a pause: honour it
            delay = max(delay, min(failure.retry_after, self._backoff_max))
        self._next_attempt_at = now + delay
        flight.failure = failure
        self._logger.warning(
            "fetching the JWKS of %s failed (%s: %s); next attempt in %.0f s",
            self._where(),
            failure.reason,
            failure.detail,
            delay,
            extra={"reason": failure.reason, "iss": self._issuer},
        )
        self._emit(
            "refresh_error",
            reason=failure.reason,
            status=failure.status,
            consecutive_failures=self._failures,
            retry_in=delay,
            trigger=flight.trigger,
            started=flight.started,
        )

    def _outage_delay(self, now: float, delay: float) -> float:
        """``delay`` (the backoff), but no later than the interval past the moment no
        usable key set is left (before the first fetch succeeds, or past max_stale).

        Then every token of the issuer gets 503, and a backoff grown to its cap would
        keep them failing for up to five minutes after the issuer is back: from then
        on, a fetch at least every refresh cooldown (and backoff_min), the pace an
        unknown kid may already set.
        """
        stale_until = self._stale_until if self._index is not None else now
        if now + delay <= stale_until:
            return delay  # the last good set serves until then
        # Jittered as the backoff is, so that workers failing together stay apart.
        interval = max(self._backoff_min, self._cooldown) * (
            1.0 - _JITTER * min(max(self._jitter(), 0.0), 1.0)
        )
        return min(delay, max(stale_until, now + interval) - now)

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        base = min(self._backoff_max, self._backoff_min * 2.0 ** min(failures - 1, 40))
        delay = base * (1.0 - _JITTER * min(max(self._jitter(), 0.0), 1.0))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._backoff_max))
        return delay

    def _emit(self, name: str, **info: Any) -> None:
        hook = self._on_event
        if hook is None:
            return
        info["iss"] = self._issuer
        try:
            hook(name, info)
        except Exception:
            # Events follow requests (one per unknown kid), so a broken hook would
            # otherwise write a traceback per request, as many as a client sends:
            # WARNING once a minute, the rest at DEBUG.
            now = self._clock()
            last = self._hook_warned_at
            if last is None or now - last >= _UNKNOWN_KID_LOG_WINDOW:
                self._hook_warned_at = now
                self._logger.warning(
                    "the JWKSCache on_event hook raised (on %s; more within a minute at DEBUG)",
                    name,
                    exc_info=True,
                    extra={"reason": "on_event_failed", "iss": self._issuer},
                )
            else:
                self._logger.debug(
                    "the JWKSCache on_event hook raised (on %s)",
                    name,
                    extra={"reason": "on_event_failed", "iss": self._issuer},
                )

    # -- background refresh -------------------------------------------------------------

    def running(self) -> _Running[JWKSCache]:
        """``async with cache.running():`` keeps a background refresher alive for the
        block (load at startup, refresh ahead, retry with backoff).

        It returns as soon as the refresher has started, before the first load: await
        :meth:`refresh` first when the keys must be there before the first token.
        """
        return _Running(self.run, self)

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start the background refresher in ``task_group`` (its owner stops it)."""
        await task_group.start(self.run)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The background refresher; runs until cancelled. For ``task_group.start``.

        Raises :class:`RuntimeError` if the cache already has a live one. A refresher
        left behind in an event loop that stopped running (closed or dropped without
        cancelling it) is not live: it is forgotten, and this one takes over.
        """
        if self._runner_alive():
            raise RuntimeError("this JWKSCache already has a background refresher")
        loop = _running_loop()
        runner = self._runner = _Runner(
            loop, loop if isinstance(loop, asyncio.AbstractEventLoop) else None
        )
        try:
            task_status.started()
            # Left only if another refresher took over while this one's loop was not
            # running (a loop that was stopped and has now been run again): the
            # cache is the newer one's.
            while self._runner is runner:
                # First: forgets a fetch of another loop, and its hand-over with it.
                inflight = self._current_flight()
                pending = self._pending
                if pending is not None:
                    self._pending = None
                    await self._perform(pending)
                    continue
                if inflight is not None:
                    # A fetch a request started inline before the runner began (or
                    # one of another running loop's).
                    if inflight.loop is runner.loop:
                        await inflight.done.wait()
                    else:
                        with anyio.move_on_after(self._fetch_timeout + _WAIT_SLACK):
                            await self._joined_elsewhere(inflight)
                    continue
                now = self._clock()
                due = self._background_due()
                if due <= now:
                    await self._perform(self._new_flight("background"))
                    continue
                # Sleeps on the event loop's clock; requests wake it early when the
                # cache's own clock says a refresh is due (they differ only in tests).
                with anyio.move_on_after(due - now):
                    await runner.wake.wait()
                runner.wake = anyio.Event()
        finally:
            if self._runner is runner:
                self._runner = None
                pending, self._pending = self._pending, None
                if pending is not None:
                    # Handed over but never started: release its waiters (as a failure).
                    if self._inflight is pending:
                        self._inflight = None
                    self._forget_unanswered(pending)
                    pending.finished = True
                    pending.done.set()

    def _runner_alive(self) -> bool:
        """Whether the background refresher is alive, and so keeps the key set fresh.

        An asyncio loop that no longer runs (stopped or closed with the refresher
        still pending) never runs it again; one merely paused finds, if it runs again,
        that a newer refresher took over (see run()). A trio run that ends cancels and
        unwinds every task in it, run()'s finally included, so a trio refresher still
        here belongs to a run still going.

        Not "in the caller's loop": a refresher running in another thread's loop
        refreshes too, and status() is often asked from a worker thread. Handing it
        a fetch does take the same loop (see _refresh_now). Cheap, for
        :attr:`generation` on the verifier's cache hits past freshness: the running
        loop is not asked for (that costs an exception whenever trio is imported).
        """
        runner = self._runner
        if runner is None:
            return False
        loop = runner.asyncio_loop
        return True if loop is None else loop.is_running()

    def _background_due(self) -> float:
        if self._index is None:
            return self._next_attempt_at
        return max(self._refresh_at, self._next_attempt_at)

    def _kick(self, now: float) -> None:
        runner = self._runner
        if (
            runner is not None
            and self._inflight is None
            and now >= self._next_attempt_at
            and now >= self._refresh_at
            # Last, and only when a refresh is due: the wake event is the loop's own.
            and runner.loop is _running_loop()
        ):
            runner.wake.set()

    # -- introspection and lifecycle ------------------------------------------------------

    def status(self) -> JWKSStatus:
        """A snapshot for health endpoints; see :class:`JWKSStatus`."""
        now = self._clock()
        index = self._index
        # Past max_stale the last set verifies nothing: no usable keys, whatever it held.
        usable = self._usable(now)
        state: State
        if usable is None:
            state = "failing" if self._failures else "empty"
        elif now < self._fresh_until:
            state = "fresh"
        else:
            state = "stale"
        background = self._runner_alive()
        if background:
            due = self._background_due()
        elif index is None or self._usable(now) is None:
            due = self._next_attempt_at
        else:
            due = max(self._fresh_until, self._next_attempt_at)
        return JWKSStatus(
            state=state,
            issuer=self._issuer,
            jwks_uri=self._jwks_uri or self._discovered,
            key_count=0 if usable is None else len(usable),
            kids=() if usable is None else tuple(sorted(usable.kids())),
            generation=self._counted_generation(),
            fetch_count=self._fetch_count,
            failed_fetch_count=self._failed_fetch_count,
            consecutive_failures=self._failures,
            last_success_age=None
            if self._last_success_at is None
            else max(0.0, now - self._last_success_at),
            last_error=self._last_error,
            next_refresh_in=max(0.0, due - now) if math.isfinite(due) else 0.0,
            background=background,
        )

    @property
    def issuer(self) -> str | None:
        """The issuer this cache serves, when given."""
        return self._issuer

    @property
    def jwks_uri(self) -> str | None:
        """The configured JWKS URL, or the discovered one (``None`` until discovered)."""
        return self._jwks_uri or self._discovered

    async def aclose(self) -> None:
        """Close the HTTP client if the cache created it (an injected one is left open).

        The cache stays usable: a later fetch creates a new client. A fetch still
        running in a task of its own (see the module docstring) is cancelled first, so
        no task outlives the cache's client; its waiters get 503. Stop the background
        refresher first (leave its ``running()`` block; the middleware does so at
        shutdown): a fetch it is performing would meet the closed client.
        """
        loop = _running_loop()
        # Rounds, not one pass: a request may start another fetch while we wait. A
        # fetch the background refresher performs is its own: stop it first.
        for _ in range(8):
            running = [(f, scope) for f, scope in self._detached.items() if f.loop is loop]
            if not running:
                break
            for _, scope in running:
                scope.cancel()
            for flight, _ in running:
                await flight.done.wait()
        # Fetches of an event loop that is gone: nothing to wait for, nothing to keep.
        for flight in [f for f in self._detached if f.loop is not loop]:
            del self._detached[flight]
        tasks = [t for t in self._fetch_tasks if t.get_loop() is loop]
        self._fetch_tasks.intersection_update(tasks)
        if tasks:
            await asyncio.wait(tasks)
        client = self._client
        if self._owns_client and client is not None:
            self._client = None
            # One made in another event loop is dropped, not closed: closing takes its
            # pool's lock, which older anyio binds to the loop that made it (from trio,
            # a client of a dead asyncio loop failed with "no running event loop").
            # It holds no connection to close (no keep-alive, see _http_client).
            if self._client_loop is loop:
                await client.aclose()

    async def __aenter__(self) -> JWKSCache:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        where = self._jwks_uri or f"discovery of {self._issuer}"
        return f"<JWKSCache {where} generation={self._counted_generation()}>"


async def _read_capped(response: httpx.Response, cap: int, what: str) -> bytes:
    """The body, read while counting: more than ``cap`` bytes (decoded) is a failure.

    We ask for ``identity``; should a server compress anyway, gzip/deflate are decoded
    here with the output bounded, so a small compressed body cannot expand unchecked.
    """
    declared = response.headers.get("content-length")
    if declared is not None and _DIGITS.fullmatch(declared.strip()) and int(declared) > cap:
        raise _FetchFailure("too_large", f"the {what} is larger than {cap} bytes")
    if response.is_stream_consumed:
        # A response built in memory (httpx.MockTransport and the like) has its body
        # read, and decoded, already: nothing to stream, but the cap still applies.
        content = response.content
        if len(content) > cap:
            raise _FetchFailure("too_large", f"the {what} is larger than {cap} bytes")
        return content
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        decoder = None
    elif encoding in ("gzip", "x-gzip", "deflate"):
        decoder = zlib.decompressobj(wbits=47)  # 32 + 15: zlib or gzip header
    else:
        raise _FetchFailure("bad_encoding", f"the {what} uses content-encoding {encoding!r}")
    body = bytearray()
    too_large = False
    bad_encoding = False
    after_close = 0
    try:
        async for raw in response.aiter_raw():
            if too_large or bad_encoding:
                # Only a transport whose stream ignores close() gets here; stop anyway.
                after_close += len(raw)
                if after_close > cap:
                    break
                continue
            data = raw
            if decoder is not None:
                try:
                    data = decoder.decompress(raw, cap + 1 - len(body))
                except zlib.error:
                    # Stop the way an oversized body stops (below), not by letting the
                    # error leave the loop, which abandons httpx's async generators.
                    bad_encoding = True
                    await response.aclose()
                    continue
                if decoder.unconsumed_tail:
                    data += b"?"  # more output is pending: over the cap
            body += data
            if len(body) > cap:
                # Stop reading by closing the connection rather than leaving the loop:
                # the next read then fails at the bottom of httpx's stack of async
                # generators, which ends them all at once (leaving the loop would
                # abandon them to the garbage collector, which trio warns about:
                # encode/httpx#3686).
                too_large = True
                await response.aclose()
        if decoder is not None and not too_large and not bad_encoding:
            body += decoder.flush()
            too_large = len(body) > cap
            # A stream cut short decodes without error, just incompletely: say so,
            # rather than letting the JSON parser report half a document.
            bad_encoding = not too_large and not decoder.eof
    except zlib.error as exc:
        raise _FetchFailure("bad_encoding", f"the {what} is not valid {encoding}") from exc
    except (httpx.HTTPError, httpx.StreamError):
        if not too_large and not bad_encoding:
            raise
    if bad_encoding:
        raise _FetchFailure("bad_encoding", f"the {what} is not valid {encoding}")
    if too_large:
        raise _FetchFailure("too_large", f"the {what} is larger than {cap} bytes")
    return bytes(body)


class IssuerKeySets:
    """One :class:`JWKSCache` per accepted issuer (e.g. an Auth0 custom domain beside
    the canonical domain), for :class:`TokenVerifier`.

    The verifier calls :meth:`get_key_for` with a token's *unverified* ``iss`` only
    after checking that it is a configured issuer; an ``iss`` outside the mapping is
    refused here too, before any network access.
    """

    def __init__(self, caches: Mapping[str, JWKSCache], *, primary: str | None = None) -> None:
        if not caches:
            raise ConfigError("IssuerKeySets needs at least one issuer")
        for iss, cache in caches.items():
            if not isinstance(iss, str) or not isinstance(cache, JWKSCache):
                raise ConfigError("IssuerKeySets maps issuer strings to JWKSCache objects")
        self._caches = dict(caches)
        self._primary = next(iter(self._caches)) if primary is None else primary
        if self._primary not in self._caches:
            raise ConfigError("the primary issuer must be one of the issuers")

    @classmethod
    def from_config(cls, config: Auth0Config, **options: Any) -> IssuerKeySets:
        """A cache per ``config.issuers`` (see :meth:`JWKSCache.from_config`)."""
        caches = {
            iss: JWKSCache.from_config(config, issuer=iss, **options) for iss in config.issuers
        }
        return cls(caches, primary=config.issuer)

    @property
    def issuers(self) -> tuple[str, ...]:
        """The accepted issuers, the primary one first."""
        return (self._primary, *(iss for iss in self._caches if iss != self._primary))

    def source_for(self, iss: object) -> JWKSCache | None:
        """The cache serving ``iss``, or ``None`` if it is not a configured issuer."""
        return self._caches.get(iss) if type(iss) is str else None

    async def get_key_for(self, iss: object, kid: str | None, alg: str) -> PublicKey:
        """The key for a token of issuer ``iss``; raises :class:`InvalidIssuerError` for
        an issuer not configured, else as :meth:`JWKSCache.get_key`."""
        cache = self._caches.get(iss) if type(iss) is str else None
        if cache is None:
            raise InvalidIssuerError("iss is not a configured issuer")
        return await cache.get_key(kid, alg)

    async def get_key(self, kid: str | None, alg: str) -> PublicKey:
        """The key from the primary issuer's set (the plain key-source protocol)."""
        return await self._caches[self._primary].get_key(kid, alg)

    @property
    def generation(self) -> int:
        """Moves whenever any issuer's keys change (each cache's generation only grows)."""
        generations = [cache.generation for cache in self._caches.values()]
        if NOT_VOUCHED in generations:
            return NOT_VOUCHED
        return sum(generations)

    async def refresh(self) -> None:
        """Refresh every issuer's set concurrently; raise :class:`KeySetError` if any failed."""
        errors: list[KeySetError] = []

        async def one(cache: JWKSCache) -> None:
            try:
                await cache.refresh()
            except KeySetError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as group:
            for cache in self._caches.values():
                group.start_soon(one, cache)
        if errors:
            raise errors[0]

    def running(self) -> _Running[IssuerKeySets]:
        """``async with key_sets.running():`` runs every cache's background refresher."""
        return _Running(self.run, self)

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start every cache's background refresher in ``task_group``."""
        await task_group.start(self.run)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run every cache's refresher until cancelled; for ``task_group.start``."""
        async with anyio.create_task_group() as group:
            for cache in self._caches.values():
                await group.start(cache.run)
            task_status.started()

    def status(self) -> dict[str, JWKSStatus]:
        """Each issuer's :class:`JWKSStatus`."""
        return {iss: cache.status() for iss, cache in self._caches.items()}

    async def aclose(self) -> None:
        """Close every cache's own HTTP client."""
        for cache in self._caches.values():
            await cache.aclose()

    async def __aenter__(self) -> IssuerKeySets:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<IssuerKeySets {list(self.issuers)!r}>"


def key_source_for_config(config: Auth0Config, **options: Any) -> JWKSCache | IssuerKeySets:
    """The default key source of a :class:`TokenVerifier`: a :class:`JWKSCache` for a
    single issuer, an :class:`IssuerKeySets` when ``config.issuers`` has several."""
    if len(config.issuers) == 1:
        return JWKSCache.from_config(config, **options)
    return IssuerKeySets.from_config(config, **options)
