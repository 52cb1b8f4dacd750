"""``TokenVerifier``: the one place where a bearer token becomes verified ``Claims``."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import math
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import anyio

from ._claims import Claims
from ._config import Auth0Config, _seconds
from ._config import _is_cognito as is_cognito
from ._dpop import STORE_CLOCK_MARGIN, DPoPProofChecker, DPoPReplayStore, replay_key
from ._errors import (
    AlgorithmNotAllowedError,
    Auth0Error,
    ConfigError,
    DPoPBindingError,
    DPoPProofReplayedError,
    DPoPReplayStoreError,
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTypeError,
    IssuedInFutureError,
    KeySetError,
    MalformedTokenError,
    MissingClaimError,
    SenderConstrainedTokenError,
    TokenTooOldError,
)
from ._jose import MAX_JSON_CONTAINERS, JWSParser, ParsedToken
from ._jwks import JWKSCache, key_source_for_config
from ._jwks import log_safe as _log_safe
from ._keys import _RSA_ALGS, PublicKey, log_field, wrap_foreign_key

__all__ = ["TokenVerifier"]

logger = logging.getLogger("asgi_auth0.verify")
# Where the middleware logs rejections (asgi_auth0._challenge): it shows kid/alg/iss.
_REJECTION_LOGGER = logging.getLogger("asgi_auth0.middleware")

# Beyond 9999-12-31 a NumericDate is a mistake or an attack, not a real lifetime.
_MAX_NUMERIC_DATE = 253402300799
_AT_JWT_TYPES = frozenset({"at+jwt", "application/at+jwt"})

#: Seconds a DPoP replay store has to answer, by default. Redis answers in well
#: under a millisecond; a store that takes a second is failing, and the request
#: should not wait for it much longer.
DPOP_REPLAY_TIMEOUT = 1.0
# Seconds between two ERROR lines about a failing replay store (the rest are counted).
_STORE_ERROR_LOG_INTERVAL = 60.0


def _check_replay_store(config: Auth0Config, store: object) -> None:
    """Refuse at construction a store that could never be used, or never be called."""
    if config.dpop == "disabled":
        raise ConfigError(
            "dpop_replay_store is given but config.dpop is 'disabled': no DPoP "
            "proof would ever be recorded in it (set dpop='allowed' or 'required')"
        )
    add = getattr(store, "add", None)
    if not inspect.iscoroutinefunction(add):
        raise TypeError("dpop_replay_store must have an async add(key, expires_at) method")
    try:
        inspect.signature(add).bind("key", 0.0)
    except TypeError:
        # The class rather than an instance, or another signature: every DPoP request
        # would fail at its first call.
        raise TypeError(
            "dpop_replay_store.add must take (key, expires_at): pass an instance whose "
            "add(key, expires_at) the verifier can call"
        ) from None
    except ValueError:  # no signature to read (a compiled callable): trusted as it is
        pass


def _spurious_cancellation() -> bool:
    """Whether a CancelledError just caught was raised with no cancellation asked for.

    Only asyncio on Python 3.11+ can tell (``Task.cancelling()``); elsewhere a
    cancellation is always taken as real and passed on.
    """
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not in asyncio (trio)
        return False
    cancelling = getattr(task, "cancelling", None)
    return callable(cancelling) and cancelling() == 0


class _LogWindow:
    """At most one log line per interval; counts the ones held back."""

    def __init__(self, interval: float = _STORE_ERROR_LOG_INTERVAL) -> None:
        self.interval = interval
        #: The window's clock (tests replace it).
        self.clock: Callable[[], float] = time.monotonic
        self._last: float | None = None
        self._held = 0

    def take(self) -> int | None:
        """``None`` if this line is held back; else how many were held back since."""
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self._held += 1
            return None
        held, self._held, self._last = self._held, 0, now
        return held


def _is_date(value: object) -> bool:
    """A JSON number usable as a NumericDate: int or finite float, not bool, in range."""
    kind = type(value)
    if kind is int:
        return -_MAX_NUMERIC_DATE <= value <= _MAX_NUMERIC_DATE  # type: ignore[operator]
    return kind is float and math.isfinite(value) and abs(value) <= _MAX_NUMERIC_DATE  # type: ignore[arg-type]


# An OrderedDict entry: its hash-table slot and index plus its linked-list node.
_CACHE_SLOT_BYTES = 100

#: The verified-token cache holds at most ``token_cache_size`` times this many token
#: characters in all. An entry costs a few times its token's length (the claims),
#: so a count alone let issuer-signed tokens with large claims hold about a GiB at the
#: default size; with this, the worst shape found holds 69 MiB. It never binds on
#: ordinary tokens (about 1 KiB from Auth0): large ones just get fewer entries.
CACHE_CHARS_PER_ENTRY = 2048


#: The verified-token cache takes a token at its second verification (verify()): the
#: first only sets the token's bit in a filter (hash-addressed, one bit per slot). A
#: shared bit lets a token in at its first verification, so the filter is emptied once
#: one bit in 64 is set: at most one new token in 64 (one in 128 on average) is let in
#: early. (A byte per slot, as before, let in one in eight: with a filter as full as
#: that, a flood of tokens used once put a few hundred of them in the cache, each
#: pushing out a token that clients reuse.) A token's second verification counts if
#: fewer than that many other new tokens came between its two: the filter has 16 bytes
#: (128 bits) per cache entry, so that window is twice the cache's size (a cache taking
#: every token at once would have evicted it by then). At least 64 KiB (the default
#: cache: 524,288 bits, a window of 8,192 tokens); at most 4 MiB (caches of 262,144
#: entries and more).
_SEEN_MIN_SLOTS = 1 << 16
_SEEN_MAX_SLOTS = 1 << 22
_SEEN_SLOTS_PER_ENTRY = 16


def _seen_slots(cache_size: int) -> int:
    """The filter's size in bytes for a cache of ``cache_size`` entries (0: none)."""
    if not cache_size:
        return 0
    wanted = max(_SEEN_MIN_SLOTS, cache_size * _SEEN_SLOTS_PER_ENTRY)
    return min(_SEEN_MAX_SLOTS, 1 << (wanted - 1).bit_length())


# What verify()'s synchronous key lookup stands in for.
_JWKS_GET_KEY = JWKSCache.get_key


def _deep_size(claims: Claims) -> int:
    """Bytes held by ``claims``: the object, its mapping, and every key and value."""
    data = claims._data
    total = sys.getsizeof(claims) + sys.getsizeof(data)
    stack: list[Any] = [*data, *data.values()]
    while stack:
        item = stack.pop()
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, tuple):
            stack.extend(item)
    return total


def _binding_of(cnf: object) -> str:
    """Log detail for a refused ``cnf``: which kind of binding the token names."""
    # A bound token sent as Bearer is a client that skipped its proof, or a token
    # used by someone without the key. Either way the binding is the point of the
    # token: RFC 9449 7.2 (DPoP) and RFC 8705 3 (mutual TLS) both say refuse it.
    if isinstance(cnf, dict):
        if "jkt" in cnf:
            return "DPoP-bound token (cnf.jkt) presented as a bearer token"
        if "x5t#S256" in cnf:
            return "certificate-bound token (cnf x5t#S256) presented as a bearer token"
    return "key-bound token (cnf) presented as a bearer token"


def _peek(token: object, max_size: int) -> tuple[object, object, object]:
    """``kid``, ``alg`` and ``iss`` of a token that failed before parsing completed,
    read without any check, for a DEBUG line; ``None`` for whatever cannot be read."""
    kid = alg = iss = None
    if not isinstance(token, str) or len(token) > max_size:
        return kid, alg, iss
    segments = token.split(".")
    objects: list[dict[str, Any]] = []
    for segment in segments[:2]:
        try:
            raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
            # Not worth more than the check that refused it: an attacker's thousands of
            # nested containers stay unread (the log line then shows no kid or alg).
            value = (
                None if raw.count(b"{") + raw.count(b"[") > MAX_JSON_CONTAINERS else json.loads(raw)
            )
        except (ValueError, RecursionError):  # binascii.Error and UnicodeError are ValueErrors
            value = None
        objects.append(value if isinstance(value, dict) else {})
    while len(objects) < 2:
        objects.append({})
    header, payload = objects
    return header.get("kid"), header.get("alg"), payload.get("iss")


_ENTRA_V1 = "https://sts.windows.net/"


def _span(seconds: float) -> str:
    """A duration for a log line, rounded to read at a glance (and bounded: a token
    may carry any number)."""
    if not seconds < 1e9:  # also NaN
        return "over 30 years"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


class _CacheEntry(NamedTuple):
    claims: Claims
    valid_until: float
    generation: int
    source: object


# Builds a _CacheEntry without the Python-level __new__ a NamedTuple gets.
_new_entry: Callable[[tuple[Any, ...]], _CacheEntry] = partial(tuple.__new__, _CacheEntry)


class TokenVerifier:
    """Verifies access tokens against an :class:`Auth0Config` and a key source.

    ``key_set`` is a :class:`StaticKeySet`, a :class:`JWKSCache`, or anything with an
    async ``get_key(kid, alg)``; by default a ``JWKSCache`` per configured issuer is
    built from ``config`` (and closed by :meth:`aclose`). ``clock`` returns now in
    seconds since the epoch; tests freeze it. ``dpop_replay_store`` (with
    ``config.dpop`` on) is where accepted DPoP proofs are recorded when several
    processes serve the API (each verifier also remembers its own); it has
    ``dpop_replay_timeout`` seconds to answer.

    :meth:`verify` raises a :class:`BearerError` subclass for every bad token and
    :class:`KeySetError` when no key can be had because the issuer is unreachable;
    nothing else, whatever the input.
    """

    def __init__(
        self,
        config: Auth0Config,
        *,
        key_set: Any = None,
        clock: Callable[[], float] = time.time,
        dpop_replay_store: DPoPReplayStore | None = None,
        dpop_replay_timeout: float = DPOP_REPLAY_TIMEOUT,
    ) -> None:
        if not isinstance(config, Auth0Config):
            raise TypeError("config must be an Auth0Config")
        if dpop_replay_store is not None:
            _check_replay_store(config, dpop_replay_store)
        self._replay_store = dpop_replay_store
        self._replay_timeout = _seconds(
            "dpop_replay_timeout", dpop_replay_timeout, minimum=0.01, maximum=120
        )
        self._store_errors = _LogWindow()
        self.config = config
        self._clock = clock
        self._owns_key_set = key_set is None
        if key_set is None:
            key_set = key_source_for_config(config)
        elif not callable(getattr(key_set, "get_key", None)):
            raise TypeError("key_set must have an async get_key(kid, alg) method")
        self._key_set: Any = key_set
        # Looked up once: the request path should not search attributes per token.
        self._get_key_for = getattr(key_set, "get_key_for", None)
        self._get_key_plain = key_set.get_key
        # JWKSCache's synchronous fast path, for exactly that class and its own
        # get_key: a subclass's get_key, or one replaced on the class or the instance
        # (a test double playing an outage, say), must stay the only way in. Like
        # get_key itself (bound just above), this is decided once, here.
        self._find_fresh: Callable[[str | None, str], PublicKey | None] | None = (
            key_set._find_fresh
            if type(key_set) is JWKSCache
            and JWKSCache.get_key is _JWKS_GET_KEY
            and "get_key" not in vars(key_set)
            else None
        )
        self._source_for = getattr(key_set, "source_for", None)
        # Precomputed once so the request path only does set lookups.
        self._algorithms = frozenset(config.algorithms)
        # RFC 8725 §3.1: each key is used with exactly one algorithm. A JWK that names
        # none fits several only if it is RSA (RS256 ... PS512; an EC curve fixes its
        # algorithm, and EdDSA/Ed25519 are two names of one): such a key verifies only
        # the first allowed RSA algorithm, in the order of config.algorithms.
        self._rsa_alg = next((a for a in config.algorithms if a in _RSA_ALGS), None)
        self._issuers = frozenset(config.issuers)
        self._from_domain = config.domain is not None  # for a rejection hint only
        self._audiences = frozenset(config.audiences)
        self._client_id_audience = config.audience_claim == "client_id"
        # Cognito issuers matched on aud: their ID tokens carry one too (the app client
        # id), so only tokens saying token_use "access" pass (resource-bound ones).
        self._access_only_issuers = (
            frozenset(i for i in config.issuers if is_cognito(i))
            if not self._client_id_audience
            else frozenset()
        )
        self._leeway = float(config.leeway)
        self._required = tuple(c for c in config.required_claims if c not in ("exp", "iss", "aud"))
        self._max_age = config.max_token_age
        self._max_size = config.max_token_size
        self._strict_typ = config.strict_typ
        self._accept_bound = config.accept_bound_tokens
        self._parser = JWSParser(max_size=self._max_size, algorithms=self._algorithms)
        self._dpop = DPoPProofChecker(
            algorithms=config.dpop_algorithms,
            max_age=config.dpop_max_age,
            leeway=config.dpop_leeway,
            clock=clock,
        )
        self._cache: OrderedDict[str, _CacheEntry] = OrderedDict()
        self._cache_size = config.token_cache_size
        # Token characters held now, and at most; room for one token of the largest
        # size at least, however small the cache.
        self._cache_chars = 0
        self._cache_char_budget = max(self._cache_size * CACHE_CHARS_PER_ENTRY, self._max_size)
        # The newest generation seen from each key source (by id, with the source held
        # so the id cannot be reused): when it moves, the verdicts vouched for by the
        # old one are dropped at once, not left to age out of the LRU order.
        self._generations: dict[int, tuple[object, int]] = {}
        # Tokens verified once and not cached yet (see verify() and _seen_slots()).
        size = _seen_slots(self._cache_size)
        self._seen = bytearray(size)
        self._seen_mask = size - 1
        # Emptied once this many bits are set: one in 64.
        self._seen_reset = size // 8
        self._seen_count = 0

    @property
    def key_set(self) -> Any:
        """The key source tokens are verified against."""
        return self._key_set

    # -- the request path -------------------------------------------------------------

    async def verify(self, token: str) -> Claims:
        """Verify ``token`` and return its claims; see the class docstring for errors."""
        entry = self._cache.get(token) if self._cache_size and type(token) is str else None
        if entry is not None:
            # A cached verdict is only as good as the key set and the clock allow:
            # a rotated-out key or a passed exp (plus leeway) sends it back through
            # the full path, which then rejects it with the precise reason.
            if (
                self._clock() < entry.valid_until
                and getattr(entry.source, "generation", None) == entry.generation
            ):
                # try, not contextlib.suppress: free in 3.11+, and this is the hot path.
                try:  # noqa: SIM105
                    self._cache.move_to_end(token)
                except KeyError:  # another thread evicted it meanwhile; the verdict stands
                    pass
                return entry.claims
            current = getattr(entry.source, "generation", None)
            if type(current) is int and current >= 0 and current != entry.generation:
                # The keys changed (generations only grow): no verdict of the old set
                # is any use now, this token's included.
                self._drop_stale(entry.source, current)
            elif self._cache.pop(token, None) is not None:
                self._cache_chars -= len(token)
        parsed: ParsedToken | None = None
        try:
            parsed = self.precheck(token)
            # A JWKSCache with a fresh set answers without a coroutine; anything else
            # (another key source, a fetch, an unknown kid) is awaited in _get_key.
            find = self._find_fresh
            try:
                key = None if find is None else find(parsed.kid, parsed.alg)
            except Auth0Error:
                raise
            except Exception:
                # Only a broken injected clock gets here: _get_key then meets the same
                # failure inside get_key and reports it as any key source's (503).
                key = None
            if key is None:
                key = await self._get_key(parsed)
            self._check_with(key, parsed)
            claims, valid_until = self._check_claims(parsed)
        except Auth0Error as exc:
            self._log_rejection(exc, parsed, token)
            raise
        if self._cache_size and type(token) is str:
            # Only an exact str is looked up (a subclass may hash or compare its own
            # way), so only an exact str is kept. And only from its second verification
            # on: a token seen once is marked in a small filter (one bit per hash
            # slot), so tokens used once (a client that fetches a token per call, a
            # flood of distinct ones) neither pay the insert and eviction (a tenth of a
            # cold verification) nor push out the tokens clients do reuse.
            seen = self._seen
            h = hash(token)  # its low 3 bits pick the bit, the next ones the byte
            slot = (h >> 3) & self._seen_mask
            bit = 1 << (h & 7)
            if seen[slot] & bit:
                self._remember(token, claims, valid_until)
            else:
                seen[slot] |= bit
                self._seen_count += 1
                if self._seen_count >= self._seen_reset:
                    self._forget_seen()
        return claims

    async def _check_signature(self, parsed: ParsedToken) -> None:
        """The key for ``parsed`` from the key source, and its signature checked."""
        self._check_with(await self._get_key(parsed), parsed)

    async def _get_key(self, parsed: ParsedToken) -> Any:
        """The key for ``parsed`` from the key source (any key source, any state)."""
        alg = parsed.alg
        get_for = self._get_key_for
        try:
            if get_for is not None:
                key = await get_for(parsed.payload["iss"], parsed.kid, alg)
            else:
                key = await self._get_key_plain(parsed.kid, alg)
        except Auth0Error:
            raise
        except Exception as exc:
            # A custom key source that breaks is an outage, not a bad token; but a
            # bug or a misuse (a key source used from another event loop or
            # thread) must not hide behind a 503, so it is logged with its cause.
            logger.error(
                # By its class: a repr may hold a URL with credentials.
                "the key source (%s) failed unexpectedly; answering 503",
                type(self._key_set).__qualname__,
                exc_info=True,
                extra={"reason": "key_source_failed"},
            )
            raise KeySetError("the key source failed unexpectedly") from exc
        return key

    def _check_with(self, key: Any, parsed: ParsedToken) -> None:
        """Raise unless ``key`` fits ``parsed`` and verifies its signature."""
        alg = parsed.alg
        if type(key) is not PublicKey:
            key = wrap_foreign_key(parsed.kid, alg, key)
        if alg not in key.algorithms:
            raise AlgorithmNotAllowedError("the key does not fit the token's alg")
        if len(key.algorithms) > 1 and key.kty == "RSA" and alg != self._rsa_alg:
            raise AlgorithmNotAllowedError(
                f"the key's JWK names no alg, so it verifies one algorithm only: "
                f"{self._rsa_alg}, the first RSA one in algorithms (RFC 8725 §3.1)"
            )
        if not key.verify(alg, parsed.signing_input, parsed.signature):
            raise InvalidSignatureError("signature does not verify")

    async def verify_dpop(self, token: str, proof: str, *, method: str, url: str | None) -> Claims:
        """Verify a DPoP-bound access token and the DPoP proof sent with it (RFC 9449).

        ``token`` is the credential of ``Authorization: DPoP <token>``, ``proof`` the
        ``DPoP`` header, ``method`` and ``url`` the request's (``url`` as the client
        sent it, or ``None`` when it cannot be told; it is normalized as ``htu`` is). The token
        gets every check :meth:`verify` makes, except that its ``cnf`` is required
        rather than refused: it must hold the ``jkt`` of the proof's key. Raises what
        :meth:`verify` raises, plus :class:`InvalidDPoPProofError` for the proof and
        :class:`DPoPBindingError` for a token not bound to the proof's key.

        Verdicts are not cached: each proof is checked (and its ``jti`` remembered)
        per request anyway, and a bound token must never come back out of the cache
        of :meth:`verify` as a bearer token.
        """
        parsed: ParsedToken | None = None
        try:
            if type(token) is not str or type(proof) is not str:
                raise MalformedTokenError("the token or the DPoP proof is not a string")
            parsed = self.precheck(token)
            await self._check_signature(parsed)
            claims, _ = self._check_claims(parsed, bound=True)
            cnf = parsed.payload.get("cnf")
            jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
            if type(jkt) is not str:
                raise DPoPBindingError(
                    "the token sent with the DPoP scheme is not DPoP-bound (it has no cnf.jkt)"
                )
            store = self._replay_store
            if store is None:
                self._dpop.check(proof, method=method, url=url, access_token=token, jkt=jkt)
            else:
                jti, until = self._dpop.check(
                    proof, method=method, url=url, access_token=token, jkt=jkt, remember=False
                )
                await self._record_proof(store, jkt, jti, until, self._clock())
        except Auth0Error as exc:
            self._log_rejection(exc, parsed, token)
            raise
        return claims

    async def _record_proof(
        self, store: DPoPReplayStore, jkt: str, jti: str, until: float, now: float
    ) -> None:
        """Record an accepted proof in the shared store, then in this verifier's
        memory; refuse it if either has it already."""
        new: object = None
        with anyio.move_on_after(self._replay_timeout) as deadline:
            try:
                new = await store.add(replay_key(jkt, jti), until + STORE_CLOCK_MARGIN)
            except anyio.get_cancelled_exc_class():
                if deadline.cancel_called or not _spurious_cancellation():
                    raise
                # A CancelledError nobody asked for (a store awaiting a future that
                # was cancelled): the store failed; it must not end as a 500.
                self._store_failed("raised CancelledError", exc_info=True)
                raise DPoPReplayStoreError("the DPoP replay store failed") from None
            except Exception as exc:
                # Fail closed, but as an outage (503), not as the client's fault: a
                # replay cannot be ruled out, and the proof may well be genuine.
                self._store_failed("failed unexpectedly", exc_info=True)
                raise DPoPReplayStoreError("the DPoP replay store failed") from exc
        # cancel_called, not cancelled_caught: a store that swallowed the cancellation
        # and answered late most likely recorded nothing, so its answer is not taken.
        # (On Python 3.10, anyio cannot tell an outer cancellation arriving at the
        # same instant from this deadline: that request is answered 503, not dropped.)
        if deadline.cancel_called:
            self._store_failed(f"did not answer within {self._replay_timeout:g} s")
            raise DPoPReplayStoreError("the DPoP replay store did not answer in time")
        if new is False:
            raise DPoPProofReplayedError(
                "this DPoP proof (its jti) was already used (the replay store has it)"
            )
        if new is not True:
            if inspect.isawaitable(new):
                # add() returned its store call unawaited: close it, so that the mistake
                # is this one log line and not also a RuntimeWarning per request.
                close = getattr(new, "close", None)
                if callable(close):
                    close()
                self._store_failed("returned an awaitable from add() (a missing await?)")
            else:
                self._store_failed(f"returned {type(new).__name__} from add(), not True or False")
            raise DPoPReplayStoreError("the DPoP replay store returned neither True nor False")
        # Also in this verifier's memory: a store that answers True to everything (no
        # NX, a placeholder) must not leave even this worker open to a replay.
        self._dpop.remember(jkt, jti, until, now)

    def _store_failed(self, what: str, *, exc_info: bool = False) -> None:
        # Once a minute at most, with the count since: during an outage every DPoP
        # request fails the same way, and an attacker replaying a proof sets the pace.
        # The store is named by its class: its repr may hold a URL with a password.
        unlogged = self._store_errors.take()
        if unlogged is None:
            return
        logger.error(
            "the DPoP replay store (%s) %s; answering 503%s",
            type(self._replay_store).__qualname__,
            what,
            f" ({unlogged} more failures since the last line)" if unlogged else "",
            exc_info=exc_info,
            extra={"reason": DPoPReplayStoreError.reason},
        )

    @property
    def dpop(self) -> DPoPProofChecker:
        """The DPoP proof checker (its ``algorithms`` and ``jti`` memory)."""
        return self._dpop

    def precheck(self, token: str) -> ParsedToken:
        """Cheap, synchronous, network-free checks: size, shape, header, ``alg`` in the
        allow-list, ``crit``/``b64``, and ``iss`` equal to a configured issuer.

        A token that fails here never reaches the key source, so garbage and tokens
        from other issuers can never make us fetch keys.
        """
        parsed = self._parser.parse(token)
        iss = parsed.payload.get("iss")
        if type(iss) is not str:
            raise InvalidIssuerError("iss is missing or not a string")
        if iss not in self._issuers:
            raise InvalidIssuerError("iss is not a configured issuer" + self._issuer_hint(iss))
        return parsed

    # -- why a token was refused, for the operator (only on the refusal path) ---------

    def _issuer_hint(self, iss: str) -> str:
        # A near miss of a configured issuer is a configuration mistake, not an attack:
        # say so. Only configured values are quoted; the token's iss is in the log
        # line's own fields already (escaped there).
        for configured in self._issuers:
            if iss.rstrip("/") == configured.rstrip("/"):
                return (
                    f" (it differs from the configured issuer {configured!r} only by a "
                    "trailing slash)"
                )
            if iss.lower() == configured.lower():
                return (
                    f" (it differs from the configured issuer {configured!r} only in letter case)"
                )
            if "://" in iss and iss.split("://", 1)[1] == configured.split("://", 1)[1]:
                # domain= always means https: a local issuer over http is given as issuer=.
                why = (
                    "; domain= always builds an https issuer: give an http one as issuer="
                    if self._from_domain and iss.startswith("http://")
                    else ""
                )
                return (
                    f" (it differs from the configured issuer {configured!r} only by its "
                    f"scheme{why})"
                )
        if iss.startswith(_ENTRA_V1):
            tenant = iss[len(_ENTRA_V1) :].strip("/")
            for configured in self._issuers:
                if tenant and f"/{tenant}/" in configured:
                    return (
                        f" (an Entra ID v1 token of the configured tenant: set "
                        f"accessTokenAcceptedVersion to 2 in the API's app registration, or "
                        f"add '{_ENTRA_V1}{tenant}/' to additional_issuers and the API's "
                        f"Application ID URI (api://<app id> by default), which v1 tokens "
                        f"carry as aud, to audience)"
                    )
        return ""

    def _audience_error(self, values: list[Any], payload: dict[str, Any]) -> InvalidAudienceError:
        hint, near_miss = self._audience_hint(values, payload)
        error = InvalidAudienceError("aud does not name this API" + hint)
        # Checked after the signature: the issuer wrote this aud, so a near miss says
        # that the configuration (or the client's audience parameter) is off.
        error.misconfiguration = near_miss
        return error

    def _audience_hint(self, values: list[Any], payload: dict[str, Any]) -> tuple[str, bool]:
        """The hint for a wrong ``aud``, and whether it is a near miss of the
        configured audience (which points at the configuration)."""
        for value in values[:16]:
            if type(value) is not str:
                continue
            for configured in self._audiences:
                if value.rstrip("/") == configured.rstrip("/"):
                    return (
                        f" (the token's aud differs from the configured audience "
                        f"{configured!r} only by a trailing slash)"
                    ), True
                if value.lower() == configured.lower():
                    return (
                        f" (the token's aud differs from the configured audience "
                        f"{configured!r} only in letter case)"
                    ), True
                if "api://" + value == configured or value == "api://" + configured:
                    return (
                        f" (the token's aud differs from the configured audience "
                        f"{configured!r} only by the api:// prefix: Entra ID v2 tokens "
                        f"carry the application id alone)"
                    ), True
        for claim in ("azp", "client_id"):
            # A string only: the claim is the token's, any JSON (a list is unhashable).
            value = payload.get(claim)
            if type(value) is str and value in self._audiences:
                return (
                    f" (the configured audience is this token's {claim}, the id of the "
                    f"application that asked for it, not your API's identifier)"
                ), True
        if "nonce" in payload or "at_hash" in payload:
            # The usual client slip: a SPA sends the ID token its login returned (aud:
            # the application's client id) where the access token belongs. Only ID
            # tokens carry these two (OpenID Connect Core §2, §3.2.2.10).
            return (
                " (it has nonce or at_hash: it looks like an OpenID Connect ID token, "
                "whose aud is the app; send the access token, requested with "
                "audience=<API identifier>)"
            ), False
        # No near miss: say what was expected (configured values only; the token's aud
        # stays out of the line, as its other claims do).
        expected = sorted(self._audiences)
        shown = ", ".join(repr(a) for a in expected[:3])
        more = f" and {len(expected) - 3} more" if len(expected) > 3 else ""
        return f" (this API's audience: {shown}{more})", False

    def _check_claims(self, parsed: ParsedToken, *, bound: bool = False) -> tuple[Claims, float]:
        payload = parsed.payload
        now = self._clock()
        leeway = self._leeway

        exp = payload.get("exp")
        if exp is None:
            raise MissingClaimError("exp is required")
        if not _is_date(exp):
            raise InvalidClaimError("exp is not a NumericDate")
        if exp <= now - leeway:
            raise ExpiredTokenError(
                f"exp has passed, {_span(now - exp)} ago (leeway {_span(leeway)})"
            )
        valid_until = exp + leeway

        # A present nbf/iat must be a NumericDate: null is a wrong type, not "absent".
        if "nbf" in payload:
            nbf = payload["nbf"]
            if not _is_date(nbf):
                raise InvalidClaimError("nbf is not a NumericDate")
            if nbf > now + leeway:
                raise ImmatureTokenError(
                    f"nbf is in the future, by {_span(nbf - now)} (leeway {_span(leeway)})"
                )

        if "iat" in payload:
            iat = payload["iat"]
            if not _is_date(iat):
                raise InvalidClaimError("iat is not a NumericDate")
            if iat > now + leeway:
                raise IssuedInFutureError(
                    f"iat is in the future, by {_span(iat - now)} (leeway {_span(leeway)}): "
                    "is this server's clock right?"
                )

        aud = payload.get("aud")
        if self._client_id_audience:
            self._check_client_id(payload)
        elif type(aud) is str:
            if aud not in self._audiences:
                raise self._audience_error([aud], payload)
        elif type(aud) is list and aud:
            for item in aud:
                if type(item) is not str:
                    raise InvalidAudienceError("aud array holds a non-string")
            if self._audiences.isdisjoint(aud):
                raise self._audience_error(aud, payload)
        elif aud is None:
            if payload.get("token_use") == "access" and "client_id" in payload:
                raise MissingClaimError(
                    "aud is required (a Cognito access token has client_id instead: "
                    "set audience_claim='client_id' and audience to the app client ids)"
                )
            if "/realms/" in str(payload.get("iss")):
                raise MissingClaimError(
                    "aud is required (Keycloak writes one when the client has an Audience "
                    "mapper naming this API)"
                )
            raise MissingClaimError("aud is required")
        else:
            raise InvalidAudienceError("aud is neither a string nor a non-empty array")
        if (
            self._access_only_issuers
            and payload["iss"] in self._access_only_issuers
            and payload.get("token_use") != "access"
        ):
            raise InvalidClaimError(
                "token_use is not 'access' (a Cognito ID token names the app client in aud)"
            )

        # The rest in the contract's order (DESIGN.md): typ, required claims, then
        # max_token_age. It decides which reason a token failing several checks gets.
        if self._strict_typ:
            typ = parsed.header.get("typ")
            if type(typ) is not str or typ.lower() not in _AT_JWT_TYPES:
                raise InvalidTypeError("typ is not at+jwt")
        for name in self._required:
            if payload.get(name) is None:
                raise MissingClaimError(f"required claim {name} is missing")
        max_age = self._max_age
        if max_age is not None:
            if "iat" not in payload:
                raise MissingClaimError("iat is required when max_token_age is set")
            too_old_at = payload["iat"] + max_age + leeway
            if now >= too_old_at:
                raise TokenTooOldError("iat is older than max_token_age")
            valid_until = min(valid_until, too_old_at)
        # A null sub is refused like any other non-string: Claims.sub would read it as
        # "no subject", which code keyed on sub must never see from a signed token.
        if "sub" in payload and type(payload["sub"]) is not str:
            raise InvalidClaimError("sub is not a string")
        # Likewise jti (RFC 7519 §4.1.7: a string), which apps key replay checks on.
        if "jti" in payload and type(payload["jti"]) is not str:
            raise InvalidClaimError("jti is not a string")
        if "cnf" in payload and not (bound or self._accept_bound):
            raise SenderConstrainedTokenError(_binding_of(payload["cnf"]))
        return Claims._adopt(payload), valid_until

    def _check_client_id(self, payload: dict[str, Any]) -> None:
        # Cognito's access tokens name the app client in client_id and have no aud;
        # its ID tokens have aud (the client id) and no client_id. Refusing any aud
        # keeps ID tokens out and tokens of issuers that do name their API. A present
        # null is a wrong type, not an absent claim, here as everywhere.
        if "aud" in payload:
            if payload.get("token_use") == "access":
                raise InvalidAudienceError(
                    "the token has an aud, and audience_claim='client_id' accepts only "
                    "tokens without one; this access token is bound to a resource (the "
                    "resource parameter): accept it with audience_claim='aud' and "
                    "audience set to that resource's URI"
                )
            raise InvalidAudienceError(
                "the token has an aud, and audience_claim='client_id' accepts only "
                "tokens without one (Cognito access tokens); an ID token has one"
            )
        client_id = payload.get("client_id")
        if client_id is None:
            raise MissingClaimError("client_id is required (audience_claim='client_id')")
        if type(client_id) is not str or client_id not in self._audiences:
            raise InvalidAudienceError("client_id does not name an accepted app client")
        if "token_use" in payload and payload["token_use"] != "access":  # noqa: S105
            raise InvalidClaimError("token_use is not 'access'")

    def _remember(self, token: str, claims: Claims, valid_until: float) -> None:
        source = self._key_set
        get_source = self._source_for
        if get_source is not None:
            source = get_source(claims["iss"])
        generation = getattr(source, "generation", None)
        if not isinstance(generation, int) or generation < 0:
            # A key source that cannot tell us when keys change is never cached, nor
            # one that does not vouch for cached verdicts right now (JWKSCache past
            # freshness with no refresher).
            return
        seen = self._generations.get(id(source))
        if seen is None or seen[1] != generation:
            self._drop_stale(source, generation)
        cache = self._cache
        chars = self._cache_chars
        if token not in cache:  # else: a concurrent verification of it got here first
            chars += len(token)
        cache[token] = _new_entry((claims, valid_until, generation, source))
        while len(cache) > self._cache_size or chars > self._cache_char_budget:
            try:
                oldest, _ = cache.popitem(last=False)
            except KeyError:  # emptied by another thread meanwhile
                chars = 0
                break
            chars -= len(oldest)
        self._cache_chars = chars

    def _drop_stale(self, source: object, generation: int) -> None:
        # Once per key change of one source (and at its first verdict, which records
        # the generation): a walk over the cache (a few ms at most for a full default
        # one), so cache_info() and memory reflect the change as soon as the cache
        # takes its next token or one of the old verdicts is asked for (a hit checks
        # the generation itself: an old verdict is never served meanwhile).
        cache = self._cache
        for token, entry in list(cache.items()):
            if (
                entry.source is source
                and entry.generation != generation
                and cache.pop(token, None) is not None
            ):
                self._cache_chars -= len(token)
        self._generations[id(source)] = (source, generation)

    def _log_rejection(self, exc: Auth0Error, parsed: ParsedToken | None, token: object) -> None:
        # kid/alg/iss ride on the exception to the middleware's rejection line too
        # (escaped there, as here: they are attacker input). Never the token, never
        # the claims.
        kid: object
        alg: object
        iss: object
        if parsed is not None:
            kid, alg, iss = parsed.kid, parsed.alg, parsed.payload.get("iss")
        elif _REJECTION_LOGGER.isEnabledFor(logging.INFO) or logger.isEnabledFor(logging.DEBUG):
            # Refused before a ParsedToken existed (wrong iss or alg, a bad segment):
            # exactly the failures where these values are the answer, so read them
            # again without the checks, for the logs only.
            kid, alg, iss = _peek(token, self._max_size)
        else:
            return
        exc.token_facts = (kid, alg, iss)
        if not logger.isEnabledFor(logging.DEBUG):
            return
        # The detail is our own words (never token bytes): the why of the reason.
        logger.debug(
            "token rejected: reason=%s kid=%s alg=%s iss=%s: %s",
            exc.reason,
            _log_safe(kid),
            _log_safe(alg),
            _log_safe(iss),
            exc.detail or exc.description,
            extra={
                "reason": exc.reason,
                "detail": exc.detail,
                "kid": log_field(kid),
                "alg": log_field(alg),
                "iss": log_field(iss),
            },
        )

    # -- housekeeping -----------------------------------------------------------------

    def clear_cache(self) -> None:
        """Forget every cached verification (and which tokens were verified once)."""
        self._cache.clear()
        self._cache_chars = 0
        self._generations.clear()
        self._forget_seen()

    def _forget_seen(self) -> None:
        self._seen[:] = bytes(len(self._seen))
        self._seen_count = 0

    def cache_info(self) -> dict[str, int]:
        """Size and an estimate of the memory of the verified-token cache.

        ``approx_bytes_per_entry`` is measured on the oldest entry: the token string,
        the entry, the claims with every key and value they hold, and the cache's own
        slot. (The allocator's overhead comes on top.) ``token_chars`` is the length of
        the cached tokens together; the oldest are dropped when it would pass
        ``max_token_chars`` (``token_cache_size`` times 2,048, or one largest token),
        as when the entries would pass ``max_entries``.
        """
        entries = len(self._cache)
        per_entry = 0
        if entries:
            token, entry = next(iter(self._cache.items()))
            per_entry = (
                sys.getsizeof(token)
                + sys.getsizeof(entry)
                + sys.getsizeof(entry.valid_until)
                + _deep_size(entry.claims)
                + _CACHE_SLOT_BYTES
            )
        return {
            "entries": entries,
            "max_entries": self._cache_size,
            "approx_bytes_per_entry": per_entry,
            "token_chars": self._cache_chars,
            "max_token_chars": self._cache_char_budget,
        }

    async def refresh(self) -> None:
        """Load the key set now (e.g. at startup); raises ``KeySetError`` on failure."""
        refresh = getattr(self._key_set, "refresh", None)
        if refresh is not None:
            await refresh()

    async def aclose(self) -> None:
        """Close the key source if this verifier built it."""
        if self._owns_key_set:
            close = getattr(self._key_set, "aclose", None)
            if close is not None:
                await close()
