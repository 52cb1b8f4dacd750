"""The exception tree of asgi_auth0.

Every failure is data: each class carries ``status_code``, ``error`` (the RFC 6750
error code, or ``None``), ``reason`` (a stable snake_case code for logs, metrics and
clients) and ``description`` (fixed, safe text for ``error_description``). None of
these ever contains token bytes or exception text.

::

    Auth0Error
    ├── ConfigError (also ValueError)         construction only
    ├── KeySetError                            503 temporarily_unavailable
    │   └── DPoPReplayStoreError
    └── BearerError
        ├── MissingTokenError                  401, bare challenge
        ├── InvalidRequestError                400 invalid_request
        │   ├── MultipleTokensError
        │   └── MalformedQueryTokenError
        ├── InvalidTokenError                  401 invalid_token
        │   ├── MalformedTokenError
        │   │   └── TokenTooLargeError
        │   ├── UnsupportedHeaderError
        │   ├── AlgorithmNotAllowedError
        │   ├── UnknownKeyError
        │   ├── InvalidSignatureError
        │   ├── ExpiredTokenError
        │   ├── ImmatureTokenError
        │   ├── SenderConstrainedTokenError
        │   ├── DPoPBindingError
        │   ├── DPoPRequiredError
        │   └── InvalidClaimError
        │       ├── InvalidIssuerError
        │       ├── InvalidAudienceError
        │       ├── MissingClaimError
        │       ├── InvalidTypeError
        │       ├── IssuedInFutureError
        │       └── TokenTooOldError
        ├── InvalidDPoPProofError              401 invalid_dpop_proof (RFC 9449)
        │   └── DPoPProofReplayedError
        └── InsufficientScopeError             403 insufficient_scope
            └── InsufficientPermissionError
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

__all__ = [
    "AlgorithmNotAllowedError",
    "Auth0Error",
    "BearerError",
    "ConfigError",
    "DPoPBindingError",
    "DPoPProofReplayedError",
    "DPoPReplayStoreError",
    "DPoPRequiredError",
    "ExpiredTokenError",
    "ImmatureTokenError",
    "InsufficientPermissionError",
    "InsufficientScopeError",
    "InvalidAudienceError",
    "InvalidClaimError",
    "InvalidDPoPProofError",
    "InvalidIssuerError",
    "InvalidRequestError",
    "InvalidSignatureError",
    "InvalidTokenError",
    "InvalidTypeError",
    "IssuedInFutureError",
    "KeySetError",
    "MalformedQueryTokenError",
    "MalformedTokenError",
    "MissingClaimError",
    "MissingTokenError",
    "MultipleTokensError",
    "SenderConstrainedTokenError",
    "TokenTooLargeError",
    "TokenTooOldError",
    "UnknownKeyError",
    "UnsupportedHeaderError",
]


class Auth0Error(Exception):
    """Base of every error raised by asgi_auth0."""

    status_code: ClassVar[int] = 500
    error: ClassVar[str | None] = None
    reason: ClassVar[str] = "auth0_error"
    description: ClassVar[str] = "Authentication failed."
    #: ``(kid, alg, iss)`` of the refused token as it read, for the rejection log
    #: (escaped there); ``None`` when no token was involved or it could not be read.
    #: A class-level default, so a subclass whose ``__init__`` skips ours has it too.
    token_facts: tuple[object, object, object] | None = None
    #: Why, in our own words, for server logs only (class-level default as above).
    detail: str | None = None
    #: Set on a refusal that points at this server's configuration rather than at the
    #: client: a token the issuer signed whose ``aud`` differs from the configured
    #: audience only by a slash, letter case or a prefix. Its rejection line is a
    #: WARNING, so that it shows where INFO lines are not collected.
    misconfiguration: bool = False

    def __init__(self, detail: str | None = None) -> None:
        # ``detail`` is for server logs only (e.g. which claim failed); it is built
        # from our own words, never from token bytes, and never sent to clients.
        self.detail = detail
        super().__init__(detail or self.description)


class ConfigError(Auth0Error, ValueError):
    """A setting is missing or invalid; raised at construction, never per request."""

    reason = "config_error"
    description = "Invalid asgi_auth0 configuration."


class KeySetError(Auth0Error):
    """No verification key can be obtained because the issuer is unreachable or broken."""

    status_code = 503
    error: ClassVar[str | None] = "temporarily_unavailable"
    reason = "key_set_unavailable"
    description = "The token issuer's signing keys are temporarily unavailable."
    #: Seconds a client should wait before retrying (the ``Retry-After`` header). A
    #: class-level default too: a custom key source's subclass may skip our __init__.
    retry_after: int = 30

    def __init__(self, detail: str | None = None, *, retry_after: int = 30) -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))


class DPoPReplayStoreError(KeySetError):
    """The shared record of DPoP proofs (a ``DPoPReplayStore``) failed or did not
    answer in time, so a replay cannot be ruled out: 503, and the request is not
    served (the store may have recorded the proof all the same: a retry needs a new
    one)."""

    reason = "dpop_replay_store_unavailable"
    description = "DPoP replay protection is temporarily unavailable."

    def __init__(self, detail: str | None = None, *, retry_after: int = 5) -> None:
        # A store hiccup is usually brief: a client may retry sooner than after an
        # issuer outage.
        super().__init__(detail, retry_after=retry_after)


class BearerError(Auth0Error):
    """Base of every error about the bearer token a client presented (RFC 6750 §3.1)."""

    status_code = 401
    reason = "bearer_error"


class MissingTokenError(BearerError):
    """A token is required but the request carries none; answered with a bare challenge."""

    status_code = 401
    error: ClassVar[str | None] = None
    reason = "missing_token"
    description = "Authentication required."


class InvalidRequestError(BearerError):
    """The ``Authorization`` header is malformed (RFC 6750 ``invalid_request``)."""

    status_code = 400
    error: ClassVar[str | None] = "invalid_request"
    reason = "malformed_authorization"
    description = "The Authorization header is malformed."


class MultipleTokensError(InvalidRequestError):
    """The request carries more than one token or ``Authorization`` header."""

    reason = "multiple_tokens"
    description = "The request carries more than one Authorization header or access token."


class MalformedQueryTokenError(InvalidRequestError):
    """The WebSocket handshake's access-token query parameter (when enabled) is empty
    or not a token68: the Authorization header is not what is malformed."""

    reason = "malformed_query_token"
    description = "The access token query parameter is malformed."


class InvalidTokenError(BearerError):
    """The token is malformed, expired, forged or not meant for this API."""

    status_code = 401
    error: ClassVar[str | None] = "invalid_token"
    reason = "invalid_token"
    description = "The access token is invalid."


class MalformedTokenError(InvalidTokenError):
    """The token is not a well-formed compact JWS with JSON header and payload."""

    reason = "malformed_token"
    description = "The access token is malformed."


class TokenTooLargeError(MalformedTokenError):
    """The token exceeds the configured size cap."""

    reason = "token_too_large"
    description = "The access token is too large."


class UnsupportedHeaderError(InvalidTokenError):
    """The JOSE header uses a feature this library refuses (``crit``, ``b64: false``)."""

    reason = "unsupported_header"
    description = "The access token header uses an unsupported feature."


class AlgorithmNotAllowedError(InvalidTokenError):
    """The token's ``alg`` is not in the allow-list, or does not fit the key."""

    reason = "alg_not_allowed"
    description = "The access token is signed with an algorithm that is not allowed."


class UnknownKeyError(InvalidTokenError):
    """No key in the issuer's key set matches the token's ``kid``."""

    reason = "unknown_kid"
    description = "The access token is signed with an unknown key."


class InvalidSignatureError(InvalidTokenError):
    """The signature does not verify."""

    reason = "bad_signature"
    description = "The access token signature is invalid."


class ExpiredTokenError(InvalidTokenError):
    """``exp`` is in the past (beyond the leeway)."""

    reason = "token_expired"
    description = "The access token has expired."


class ImmatureTokenError(InvalidTokenError):
    """``nbf`` is in the future (beyond the leeway)."""

    reason = "token_not_yet_valid"
    description = "The access token is not yet valid."


class SenderConstrainedTokenError(InvalidTokenError):
    """The token carries a ``cnf`` claim: it is bound to a key the client must prove
    it holds (DPoP, RFC 9449; a mutual-TLS certificate, RFC 8705), and a bearer
    request proves nothing. Taking it as a bearer token would undo the binding.
    """

    reason = "sender_constrained_token"
    description = "The access token is bound to a key and cannot be used as a bearer token."


class DPoPBindingError(InvalidTokenError):
    """A token sent with the ``DPoP`` scheme is not bound to the key of the DPoP proof
    beside it: it has no ``cnf.jkt``, or its ``cnf.jkt`` is another key's thumbprint
    (RFC 9449 §7.1; ``invalid_token``, as the RFC's own example answers it)."""

    reason = "dpop_binding_mismatch"
    description = "The access token is not bound to the key of the DPoP proof."


class DPoPRequiredError(InvalidTokenError):
    """The API takes DPoP-bound tokens only (``dpop="required"``) and the request sent
    a bearer token; the challenge names the ``DPoP`` scheme and its algorithms."""

    reason = "dpop_required"
    description = "This API accepts DPoP-bound access tokens only."


class InvalidClaimError(InvalidTokenError):
    """A claim has the wrong type or value."""

    reason = "claim_invalid"
    description = "The access token has an invalid claim."


class InvalidIssuerError(InvalidClaimError):
    """``iss`` is missing or is not the configured issuer."""

    reason = "invalid_issuer"
    description = "The access token was not issued by the expected issuer."


class InvalidAudienceError(InvalidClaimError):
    """``aud`` does not name any configured audience."""

    reason = "invalid_audience"
    description = "The access token is not meant for this API."


class MissingClaimError(InvalidClaimError):
    """A required claim is absent."""

    reason = "missing_claim"
    description = "The access token lacks a required claim."


class InvalidTypeError(InvalidClaimError):
    """The JOSE ``typ`` header is not ``at+jwt`` while ``strict_typ`` is on (RFC 9068)."""

    reason = "invalid_typ"
    description = "The token is not an access token."


class IssuedInFutureError(InvalidClaimError):
    """``iat`` lies in the future beyond the leeway."""

    reason = "iat_in_future"
    description = "The access token was issued in the future."


class TokenTooOldError(InvalidClaimError):
    """``iat`` is older than ``max_token_age``."""

    reason = "token_too_old"
    description = "The access token is too old."


class InvalidDPoPProofError(BearerError):
    """The DPoP proof of a ``DPoP``-scheme request is missing, malformed, not signed by
    its own ``jwk``, or does not match this request (method, URI, time, access token);
    RFC 9449 §4.3 and §7.1."""

    status_code = 401
    error: ClassVar[str | None] = "invalid_dpop_proof"
    reason = "invalid_dpop_proof"
    description = "The DPoP proof is invalid."


class DPoPProofReplayedError(InvalidDPoPProofError):
    """A DPoP proof was presented again: its ``jti`` was seen within the window in which
    the proof is acceptable (RFC 9449 §11.1)."""

    reason = "dpop_proof_replayed"
    description = "The DPoP proof has already been used."


class InsufficientScopeError(BearerError):
    """The token is valid but lacks a required scope or permission (403).

    ``required`` is the names the resource needs (an iterable of strings, or one string
    for a single name); they become the challenge's ``scope=``.
    """

    status_code = 403
    error: ClassVar[str | None] = "insufficient_scope"
    reason = "insufficient_scope"
    description = "The access token lacks a required scope."

    def __init__(
        self,
        required: Iterable[str] = (),
        detail: str | None = None,
        *,
        kind: str = "scope",
    ) -> None:
        super().__init__(detail)
        #: The scopes (or permissions) the resource needs, for the challenge's ``scope=``.
        # One string is one name: tuple("read:x") would split it into characters and
        # send scope="r e a d : x" to the client.
        self.required: tuple[str, ...] = (
            (required,) if isinstance(required, str) else tuple(required)
        )
        #: ``"scope"`` or ``"permission"``: which claim fell short.
        self.kind = kind

    @property
    def scope(self) -> str:
        """The space-separated ``scope`` value of the challenge (RFC 6750 §3)."""
        return " ".join(self.required)


class InsufficientPermissionError(InsufficientScopeError):
    """The token is valid but lacks a required Auth0 RBAC permission (403).

    Still ``insufficient_scope`` on the wire: Auth0 permissions are the API's scopes
    granted through RBAC, so ``scope=`` in the challenge names them.
    """

    reason = "insufficient_permission"
    description = "The access token lacks a required permission."

    def __init__(self, required: Iterable[str] = (), detail: str | None = None) -> None:
        super().__init__(required, detail, kind="permission")
