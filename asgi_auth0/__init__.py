"""asgi_auth0: verify Auth0 / OIDC access tokens in ASGI apps.

Pure ASGI middleware, an async JWKS cache and FastAPI dependencies. See the README.
"""

from __future__ import annotations

from ._claims import Claims
from ._config import Auth0Config
from ._errors import (
    AlgorithmNotAllowedError,
    Auth0Error,
    BearerError,
    ConfigError,
    ExpiredTokenError,
    ImmatureTokenError,
    InsufficientScopeError,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidIssuerError,
    InvalidRequestError,
    InvalidSignatureError,
    InvalidTokenError,
    InvalidTypeError,
    IssuedInFutureError,
    KeySetError,
    MalformedTokenError,
    MissingClaimError,
    MissingTokenError,
    MultipleTokensError,
    TokenTooLargeError,
    TokenTooOldError,
    UnknownKeyError,
    UnsupportedHeaderError,
)
from ._keys import StaticKeySet
from ._verify import TokenVerifier

__version__ = "0.1.0"

__all__ = [
    "AlgorithmNotAllowedError",
    "Auth0Config",
    "Auth0Error",
    "BearerError",
    "Claims",
    "ConfigError",
    "ExpiredTokenError",
    "ImmatureTokenError",
    "InsufficientScopeError",
    "InvalidAudienceError",
    "InvalidClaimError",
    "InvalidIssuerError",
    "InvalidRequestError",
    "InvalidSignatureError",
    "InvalidTokenError",
    "InvalidTypeError",
    "IssuedInFutureError",
    "KeySetError",
    "MalformedTokenError",
    "MissingClaimError",
    "MissingTokenError",
    "MultipleTokensError",
    "StaticKeySet",
    "TokenTooLargeError",
    "TokenTooOldError",
    "TokenVerifier",
    "UnknownKeyError",
    "UnsupportedHeaderError",
]
