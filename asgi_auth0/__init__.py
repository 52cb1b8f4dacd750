"""asgi_auth0: verify Auth0 / OIDC access tokens in ASGI apps.

Pure ASGI middleware, an async JWKS cache and FastAPI dependencies. See the README.
"""

from ._challenge import Challenge, json_response, problem_json_response
from ._claims import Claims
from ._config import Auth0Config
from ._dpop import DPoPReplayStore
from ._errors import (
    AlgorithmNotAllowedError,
    Auth0Error,
    BearerError,
    ConfigError,
    DPoPBindingError,
    DPoPProofReplayedError,
    DPoPReplayStoreError,
    DPoPRequiredError,
    ExpiredTokenError,
    ImmatureTokenError,
    InsufficientPermissionError,
    InsufficientScopeError,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidDPoPProofError,
    InvalidIssuerError,
    InvalidRequestError,
    InvalidSignatureError,
    InvalidTokenError,
    InvalidTypeError,
    IssuedInFutureError,
    KeySetError,
    MalformedQueryTokenError,
    MalformedTokenError,
    MissingClaimError,
    MissingTokenError,
    MultipleTokensError,
    SenderConstrainedTokenError,
    TokenTooLargeError,
    TokenTooOldError,
    UnknownKeyError,
    UnsupportedHeaderError,
)
from ._jwks import IssuerKeySets, JWKSCache, JWKSStatus
from ._keys import PublicKey, StaticKeySet
from ._middleware import (
    Auth0Middleware,
    Auth0User,
    AuthenticationRejected,
    MiddlewareNotInstalledError,
)
from ._speedups import speedups
from ._verify import TokenVerifier
from .fastapi import (
    configure_openapi,
    optional_token,
    rejection_handler,
    require_permissions,
    require_scopes,
    require_token,
    swagger_ui_init_oauth,
)

__version__ = "0.1.0"

__all__ = [
    "AlgorithmNotAllowedError",
    "Auth0Config",
    "Auth0Error",
    "Auth0Middleware",
    "Auth0User",
    "AuthenticationRejected",
    "BearerError",
    "Challenge",
    "Claims",
    "ConfigError",
    "DPoPBindingError",
    "DPoPProofReplayedError",
    "DPoPReplayStore",
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
    "IssuerKeySets",
    "JWKSCache",
    "JWKSStatus",
    "KeySetError",
    "MalformedQueryTokenError",
    "MalformedTokenError",
    "MiddlewareNotInstalledError",
    "MissingClaimError",
    "MissingTokenError",
    "MultipleTokensError",
    "PublicKey",
    "SenderConstrainedTokenError",
    "StaticKeySet",
    "TokenTooLargeError",
    "TokenTooOldError",
    "TokenVerifier",
    "UnknownKeyError",
    "UnsupportedHeaderError",
    "configure_openapi",
    "json_response",
    "optional_token",
    "problem_json_response",
    "rejection_handler",
    "require_permissions",
    "require_scopes",
    "require_token",
    "speedups",
    "swagger_ui_init_oauth",
]
