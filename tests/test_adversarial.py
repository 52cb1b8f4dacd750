"""The adversarial corpus: every attack and edge-case token gets exactly its stated
outcome, from the stated verification step.

The corpus and the reason for each expected outcome live in
``tests/adversarial/generate.py``; this module runs it through ``TokenVerifier`` with a
key source that records what it was asked, so each case also proves *where* it was
refused (a token refused in the precheck never reaches the key source).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from adversarial import generate
from adversarial.generate import ACCEPTED, CLAIMS, KEY, NOW, PRECHECK, SIGNATURE, Case
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

import asgi_auth0
from asgi_auth0 import Auth0Config, ConfigError, StaticKeySet, TokenVerifier
from asgi_auth0._keys import PublicKey

CASES = generate.corpus()
_KEY_SET = StaticKeySet(generate.jwks())


class RecordingKeySet:
    """Delegates to the corpus key set and records every lookup and its outcome."""

    generation = 0

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str]] = []
        self.returned: list[PublicKey] = []
        self.raised: list[Exception] = []

    async def get_key(self, kid: str | None, alg: str) -> PublicKey:
        self.calls.append((kid, alg))
        try:
            key = await _KEY_SET.get_key(kid, alg)
        except Exception as exc:
            self.raised.append(exc)
            raise
        self.returned.append(key)
        return key


def _verifier(case: Case) -> tuple[TokenVerifier, RecordingKeySet]:
    keys = RecordingKeySet()
    return TokenVerifier(Auth0Config(**case.config_dict()), key_set=keys, clock=lambda: NOW), keys


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_corpus_case(case: Case) -> None:
    verifier, keys = _verifier(case)
    note = f"{case.id}: expected {case.expect or 'acceptance'} because {case.why}"
    if case.expect is None:
        claims = await verifier.verify(case.token)
        assert claims["iss"] in verifier.config.issuers, note
        assert len(keys.returned) == 1, note
        return

    expected = getattr(asgi_auth0, case.expect)
    with pytest.raises(expected) as info:
        await verifier.verify(case.token)
    error = info.value
    assert type(error) is expected, note  # the exact class, not just a base class
    assert error.reason == expected.reason

    if case.stage == PRECHECK:
        # Refused by the cheap synchronous checks: the key source was never asked.
        assert keys.calls == [], note
        with pytest.raises(expected):
            verifier.precheck(case.token)
        return
    parsed = verifier.precheck(case.token)
    assert len(keys.calls) == 1, note
    if case.stage == KEY:
        if keys.raised:
            assert type(keys.raised[0]) is expected, note
        else:
            # The lookup found the key, and the verifier refused to use it for this
            # alg: a JWK without alg is bound to one algorithm (RFC 8725 §3.1). The
            # token is signed properly, so had a signature check run it would pass.
            (key,) = keys.returned
            assert expected is asgi_auth0.AlgorithmNotAllowedError, note
            assert parsed.alg in key.algorithms, note
            assert len(key.algorithms) > 1, note
            assert key.verify(parsed.alg, parsed.signing_input, parsed.signature), note
        return
    (key,) = keys.returned
    signature_ok = key.verify(parsed.alg, parsed.signing_input, parsed.signature)
    if case.stage == SIGNATURE:
        assert not signature_ok, note
    else:
        # A claims refusal comes after a signature that verifies.
        assert case.stage == CLAIMS
        assert signature_ok, note


def test_every_case_states_why_and_a_known_stage() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
    for case in CASES:
        assert len(case.why) > 15, case.id
        assert case.stage in generate.STAGES
        assert (case.expect is None) == (case.stage == ACCEPTED), case.id


def test_the_corpus_covers_everything_issue_6_lists() -> None:
    ids = {c.id for c in CASES}

    def some(prefix: str, expect: str | None = "any") -> bool:
        return any(
            c.id.startswith(prefix) and (expect == "any" or c.expect == expect) for c in CASES
        )

    # alg none in every casing (16 spellings), with and without a signature
    nones = {
        c.id.split("/")[1] for c in CASES if c.id.startswith("alg-none/") and "none" in c.id.lower()
    }
    assert {"none", "NONE", "nOnE", "NoNe"} <= nones
    assert len([c for c in CASES if c.id.endswith("/with-signature")]) == 16
    # HMAC with the public key's PEM, DER and JWK bytes, under HS256/384/512
    for enc in ("pem", "der", "jwk-json"):
        for alg in ("HS256", "HS384", "HS512"):
            for label in ("rsa", "p256", "ed25519"):
                assert f"hmac-confusion/{label}/{enc}/{alg}" in ids
    # alg/key mismatches across RSA, PSS, EC curves and Ed25519
    assert some("alg-key-mismatch/PS256-signature-as-RS256", "InvalidSignatureError")
    assert some("alg-key-mismatch/ES384-on-p256", "AlgorithmNotAllowedError")
    assert some("alg-key-mismatch/EdDSA-on-rsa", "AlgorithmNotAllowedError")
    assert some("alg-key-mismatch/RS256-on-ed25519", "AlgorithmNotAllowedError")
    for member in ("jwk", "jku", "x5u", "x5c"):
        assert some(f"embedded-key/RS256/{member}/")
    assert some("crit-b64/crit-", "UnsupportedHeaderError")
    assert some("crit-b64/b64-false", "UnsupportedHeaderError")
    for what in (
        "stripped",
        "truncated-byte",
        "bit-flip-0",
        "padded",
        "standard-alphabet",
        "non-canonical",
    ):
        assert some(f"signature-encoding/RS256/{what}")
    assert some("tamper/payload-", "InvalidSignatureError")
    for claim in ("exp", "nbf", "iat"):
        for wrong in ("numeric-string", "true", "null", "NaN", "huge", "1e400"):
            assert f"time/{claim}-type/{wrong}" in ids
    assert some("time/leeway-0/")
    assert some("time/leeway-60/")
    for lookalike in ("no-trailing-slash", "host-uppercase", "http-scheme", "suffix-domain"):
        assert f"issuer/{lookalike}" in ids
    for trick in ("substring", "object", "empty-array", "nested-array"):
        assert f"audience/{trick}" in ids
    assert some("duplicates/payload-", "MalformedTokenError")
    assert some("duplicates/header-", "MalformedTokenError")
    assert "encoding/payload-utf8-bom" in ids
    assert "encoding/payload-utf16-le-bom" in ids
    assert "segments/four" in ids
    assert "segments/five-jwe-shaped" in ids
    assert some("size/", "TokenTooLargeError")


@pytest.mark.parametrize(
    "alg",
    [
        *("".join(c.upper() if i >> n & 1 else c for n, c in enumerate("none")) for i in range(16)),
        "HS256",
        "HS384",
        "HS512",
        "hs256",
        "Hs512",
    ],
)
def test_none_and_hmac_are_refused_by_config(alg: str) -> None:
    # The other half of "HS* is never allowed": no configuration can even ask for it,
    # so a token's HS*/none alg can only ever meet the allow-list and fail.
    with pytest.raises(ConfigError):
        Auth0Config(issuer=generate.ISS, audience=generate.AUD, algorithms=("RS256", alg))


# Pinned: the keys come from fixed seeds, so the published JWKS never changes. If
# this fails, the corpus is no longer the one reviewed (or key derivation changed).
JWKS_SHA256 = "1ed2369baef0f45e6683195f9875149790216bc229e25d9e9ccaa35dce1115d9"


def test_keys_are_derived_from_fixed_seeds() -> None:
    digest = hashlib.sha256(json.dumps(generate.jwks(), sort_keys=True).encode()).hexdigest()
    assert digest == JWKS_SHA256


def _deterministic_ecdsa() -> bool:
    """Whether this cryptography signs ECDSA per RFC 6979 (43+), as the generator asks."""
    try:
        ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    except TypeError:
        return False
    return True


# Without RFC 6979 every ES* signature is random, and some verdicts follow from its bytes
# (a truncated signature is malformed or merely wrong depending on its last character).
# `make test-floors` runs the suite on the oldest cryptography we support, which lacks it.
@pytest.mark.skipif(
    not _deterministic_ecdsa(),
    reason="this cryptography has no deterministic ECDSA (RFC 6979, cryptography 43+), "
    "so ES* tokens and some of their verdicts differ between runs",
)
def test_the_corpus_is_reproducible() -> None:
    again = generate.build()
    assert [dataclasses.replace(c, token="") for c in again] == [
        dataclasses.replace(c, token="") for c in CASES
    ]
    # PSS signatures carry a random salt; everything else is byte-for-byte identical.
    differing = [a.id for a, b in zip(again, CASES, strict=True) if a.token != b.token]
    assert all("PS" in case_id for case_id in differing), differing


def test_the_generator_writes_the_corpus_as_json(tmp_path: Path) -> None:
    out = tmp_path / "corpus.json"
    assert generate.main(["--out", str(out)]) == 0
    document: dict[str, Any] = json.loads(out.read_text())
    assert document["seed"] == generate.SEED
    assert [c["id"] for c in document["cases"]] == [c.id for c in CASES]
    assert document["jwks"] == generate.jwks()
