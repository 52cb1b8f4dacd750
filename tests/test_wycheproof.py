"""Project Wycheproof's JSON Web Signature vectors through our signature layer.

The vectors (Apache-2.0, from C2SP/wycheproof) sit beside the repository, in
``../shared/testdata/wycheproof/json_web_signature_test.json``; set
``ASGI_AUTH0_WYCHEPROOF`` to use another copy. Without the file these tests skip and
say where it is expected.

Wycheproof's payloads are arbitrary bytes ("foo", empty, all zeros), not JWT claim
sets, so ``TokenVerifier.verify`` would refuse every one of them for its payload alone.
The vectors therefore go through the *signature layer*: the same primitives, in the
same order, that ``parse_compact`` and ``TokenVerifier`` use (strict base64url, strict
JSON header, the alg allow-list, ``crit``/``b64``, ``kid``, the key index's kid/alg
lookup, ``PublicKey.verify``), minus the rule that the payload is a JSON object. A
cross-check against the adversarial corpus keeps this harness honest.

How results map:

- ``valid``: we accept, except the documented deviations in ``DEVIATIONS`` (each a
  stricter policy, each shown to be policy and not cryptography by relaxing exactly
  that policy and watching the signature verify).
- ``invalid``: we refuse.
- ``acceptable`` (weak but not broken; none in the current file): we refuse. A
  library that verifies access tokens has no use for "tolerable" inputs, so an
  acceptable vector we accept is a failure to look at.
- HMAC groups (``kty: oct``, HS256): always refused, by the allow-list (no config can
  contain HS*) and by the key filter (oct keys are never loaded).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from adversarial import generate

from asgi_auth0 import (
    AlgorithmNotAllowedError,
    Auth0Config,
    ConfigError,
    InvalidSignatureError,
    InvalidTokenError,
    MalformedTokenError,
    StaticKeySet,
    TokenVerifier,
    UnsupportedHeaderError,
)
from asgi_auth0._config import SUPPORTED_ALGORITHMS
from asgi_auth0._jose import loads_strict
from asgi_auth0._keys import MAX_KID_LENGTH, KeyIndex, KeyRejected, b64url_decode, parse_jwk

ENV_VAR = "ASGI_AUTH0_WYCHEPROOF"
DEFAULT_PATH = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "testdata"
    / "wycheproof"
    / "json_web_signature_test.json"
)
VECTOR_PATH = Path(os.environ.get(ENV_VAR) or DEFAULT_PATH)
SKIP_REASON = (
    f"Wycheproof JWS vectors not found at {VECTOR_PATH} (expected beside the repository "
    f"at ../shared/testdata/wycheproof/json_web_signature_test.json; set {ENV_VAR} to "
    "point elsewhere)"
)
ALGORITHMS = frozenset(SUPPORTED_ALGORITHMS)

#: Vectors Wycheproof publishes as valid that we refuse, on purpose. tcId -> (what we
#: raise, why). Any other difference from the published result fails the test.
DEVIATIONS: dict[int, tuple[type[Exception], str]] = {
    **dict.fromkeys(
        (259, 264, 268, 272, 320, 325),
        (
            MalformedTokenError,
            "empty payload: RFC 7515 allows an empty payload, but an access token always "
            "has a claim set, and an empty segment is also how detached payloads (RFC "
            "7515 Appendix F) look; we refuse every empty segment before decoding",
        ),
    ),
    **dict.fromkeys(
        (346, 350),
        (
            AlgorithmNotAllowedError,
            "RFC 7520 Figure 20: the JWK says alg PS256, the header PS384. A JWK's alg "
            "restricts the key to that algorithm (RFC 7517 §4.4); we enforce it, so a "
            "key published for one algorithm never verifies another",
        ),
    ),
    **dict.fromkeys(
        (347, 351),
        (
            KeyRejected,
            "RFC 7520 Figure 27: the JWK says alg 'ES521', which is not a JWS algorithm "
            "(ES512 is meant). A key whose declared alg does not fit its type and curve "
            "is dropped at load time rather than guessed at",
        ),
    ),
}


def _load() -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(VECTOR_PATH.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data


DATA = _load()


def _vectors(kind: str) -> Iterator[Any]:
    """``pytest.param(group, test)`` for each vector of ``kind`` (asymmetric / hmac)."""
    if DATA is None:
        yield pytest.param(None, None, marks=pytest.mark.skip(reason=SKIP_REASON), id="absent")
        return
    for group in DATA["testGroups"]:
        is_hmac = "public" not in group
        if is_hmac == (kind == "hmac"):
            for test in group["tests"]:
                yield pytest.param(group, test, id=f"tc{test['tcId']}-{test['comment']}")


# -- the signature layer ---------------------------------------------------------------


def verify_jws_signature(
    token: str,
    keys: KeyIndex,
    algorithms: frozenset[str],
    trace: list[str] | None = None,
    *,
    rsa_alg: str = "RS256",
) -> None:
    """Verify a compact JWS's signature the way the library does; raise on refusal.

    The order and the primitives are those of ``parse_compact`` and ``TokenVerifier``;
    only the payload is taken as opaque bytes (it must still be canonical base64url).
    ``trace`` collects the steps passed ("parsed", then "key"). ``rsa_alg`` is the
    one algorithm an RSA JWK without ``alg`` verifies: the first RSA algorithm of the
    configured allow-list (RFC 8725 §3.1).
    """
    trace = [] if trace is None else trace
    if not token.isascii():
        raise MalformedTokenError("non-ASCII")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise MalformedTokenError("not three non-empty segments")
    header_b64, payload_b64, signature_b64 = parts
    try:
        header = loads_strict(b64url_decode(header_b64))
    except ValueError as exc:
        raise MalformedTokenError("header") from exc
    if not isinstance(header, dict):
        raise MalformedTokenError("header is not an object")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise MalformedTokenError("no alg")
    if alg not in algorithms:
        raise AlgorithmNotAllowedError("alg")
    if "crit" in header or header.get("b64", True) is not True:
        raise UnsupportedHeaderError("crit/b64")
    kid = header.get("kid")
    if "kid" in header and (not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH):
        raise MalformedTokenError("kid")
    try:
        b64url_decode(payload_b64)
        signature = b64url_decode(signature_b64)
    except ValueError as exc:
        raise MalformedTokenError("encoding") from exc
    trace.append("parsed")
    key = keys.find(kid, alg)
    if len(key.algorithms) > 1 and key.kty == "RSA" and alg != rsa_alg:
        raise AlgorithmNotAllowedError("one algorithm per key")
    trace.append("key")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    if not key.verify(alg, signing_input, signature):
        raise InvalidSignatureError("signature")


def _outcome(group: dict[str, Any], token: str) -> Exception | None:
    """What our layer does with ``token`` under the group's key: None is acceptance."""
    try:
        key = parse_jwk(group["public"])
    except KeyRejected as exc:
        return exc
    try:
        verify_jws_signature(token, KeyIndex([key]), ALGORITHMS)
    except InvalidTokenError as exc:
        return exc
    return None


# -- the vectors -----------------------------------------------------------------------


@pytest.mark.parametrize(("group", "test"), list(_vectors("asymmetric")))
def test_asymmetric_vector(group: dict[str, Any], test: dict[str, Any]) -> None:
    outcome = _outcome(group, test["jws"])
    note = f"tc{test['tcId']} {test['comment']} {test['flags']}: published {test['result']}"
    deviation = DEVIATIONS.get(test["tcId"])
    if deviation is not None:
        error_type, why = deviation
        assert test["result"] == "valid", note
        assert type(outcome) is error_type, f"{note}; we should refuse it because {why}"
        _assert_policy_not_crypto(group, test["jws"], error_type)
    elif test["result"] == "valid":
        assert outcome is None, f"{note}; we refused: {outcome!r}"
    else:
        assert test["result"] in ("invalid", "acceptable"), note
        assert outcome is not None, f"{note}; we accepted it"


def _assert_policy_not_crypto(group: dict[str, Any], token: str, error: type[Exception]) -> None:
    """Relax exactly the policy behind a deviation and watch the signature verify."""
    jwk = dict(group["public"])
    header_b64, payload_b64, signature_b64 = token.split(".")
    alg = loads_strict(b64url_decode(header_b64))["alg"]
    if error is MalformedTokenError:
        assert payload_b64 == ""  # the only policy: no empty segment
    else:
        # The JWK's own alg is what refused it (a mismatch, or not a fitting alg at all).
        assert jwk.pop("alg") != alg
    key = parse_jwk(jwk)
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    assert key.verify(alg, signing_input, b64url_decode(signature_b64))


@pytest.mark.parametrize(("group", "test"), list(_vectors("hmac")))
def test_hmac_vector_is_refused(group: dict[str, Any], test: dict[str, Any]) -> None:
    # By key type: the group's (only) key is symmetric and never becomes a PublicKey.
    with pytest.raises(KeyRejected, match="symmetric"):
        parse_jwk(group["private"])
    # By algorithm: even with every supported algorithm allowed and a key set that
    # holds a real public key under the vector's kid, the token stops at the
    # allow-list, or earlier when it is malformed; it never reaches a key.
    published = _any_public_jwk()
    try:
        kid = loads_strict(b64url_decode(test["jws"].split(".")[0])).get("kid")
    except (ValueError, AttributeError):
        kid = None
    keys = KeyIndex([parse_jwk({**published, "kid": kid} if isinstance(kid, str) else published)])
    with pytest.raises(InvalidTokenError) as info:
        verify_jws_signature(test["jws"], keys, ALGORITHMS)
    assert type(info.value) in (AlgorithmNotAllowedError, MalformedTokenError)
    if test["result"] == "valid" and type(info.value) is MalformedTokenError:
        # Only the "lenient decoder" vectors: a valid MAC over a segment we decode
        # strictly (a character outside base64url inserted).
        assert "InvalidCharacterInserted" in test["comment"]


def _any_public_jwk() -> dict[str, Any]:
    assert DATA is not None
    return next(g["public"] for g in DATA["testGroups"] if g.get("public", {}).get("kty") == "RSA")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_cannot_be_configured(alg: str) -> None:
    with pytest.raises(ConfigError):
        Auth0Config(issuer=generate.ISS, audience=generate.AUD, algorithms=(alg,))


@pytest.mark.skipif(DATA is None, reason=SKIP_REASON)
@pytest.mark.anyio
async def test_no_vector_passes_the_full_token_verifier() -> None:
    # The end-to-end path on top of the signature layer: with the vector's key (where
    # we load it) and every algorithm allowed, no vector is ever accepted as an access
    # token and nothing but an InvalidTokenError comes out.
    assert DATA is not None
    for group in DATA["testGroups"]:
        jwk = group.get("public") or group["private"]
        try:
            key_set = StaticKeySet({"keys": [jwk]})
        except ConfigError:
            continue
        verifier = TokenVerifier(
            Auth0Config(issuer=generate.ISS, audience=generate.AUD, algorithms=tuple(ALGORITHMS)),
            key_set=key_set,
        )
        for test in group["tests"]:
            with pytest.raises(InvalidTokenError):
                await verifier.verify(test["jws"])


@pytest.mark.skipif(DATA is None, reason=SKIP_REASON)
def test_the_file_is_the_one_reviewed() -> None:
    # DEVIATIONS is keyed by tcId; a new edition of the file must be reviewed again.
    assert DATA is not None
    assert DATA["numberOfTests"] == 401
    results = [t["result"] for g in DATA["testGroups"] for t in g["tests"]]
    assert len(results) == 401
    assert "acceptable" not in results  # our policy for it is untested until one appears


# -- keeping the harness honest ---------------------------------------------------------


def test_the_signature_layer_agrees_with_the_token_verifier_on_the_corpus() -> None:
    # The harness refuses every adversarial-corpus token with the class the corpus
    # expects from TokenVerifier. The only differences are the checks the harness
    # leaves out: the size cap, the payload (JSON object, iss, typ, before any key
    # lookup in TokenVerifier) and the claims after the signature.
    keys = StaticKeySet(generate.jwks()).index
    payload_checks = {"MalformedTokenError", "InvalidIssuerError", "InvalidTypeError"}
    compared = 0
    for case in generate.corpus():
        if case.expect == "TokenTooLargeError":
            continue
        trace: list[str] = []
        allowed = case.config_dict()["algorithms"]
        algorithms = frozenset(allowed)
        rsa_alg = next((a for a in allowed if a.startswith(("RS", "PS"))), "RS256")
        try:
            verify_jws_signature(case.token, keys, algorithms, trace, rsa_alg=rsa_alg)
        except InvalidTokenError as exc:
            if type(exc).__name__ != case.expect:
                # TokenVerifier stopped earlier, at the payload, which the harness
                # reaches only through the key lookup and signature.
                assert "parsed" in trace, case.id
                assert case.stage == generate.PRECHECK, case.id
                assert case.expect in payload_checks, case.id
            else:
                compared += 1
            continue
        assert case.stage in (generate.CLAIMS, generate.ACCEPTED) or (
            case.stage == generate.PRECHECK and case.expect in payload_checks
        ), case.id
    assert compared > 300
