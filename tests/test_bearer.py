"""Authorization header parsing (RFC 6750 §2.1) and the opt-in query form (§2.3)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

import pytest
from _asgi import ws_scope
from hypothesis import example, given
from hypothesis import strategies as st

from asgi_auth0._bearer import (
    bearer_token,
    missing_token_hint,
    parse_authorization,
    query_token,
    token_from_scope,
)
from asgi_auth0._errors import InvalidRequestError, MalformedQueryTokenError, MultipleTokensError

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def headers(*values: bytes, name: bytes = b"authorization") -> list[tuple[bytes, bytes]]:
    return [(b"host", b"example.test"), *((name, v) for v in values)]


@pytest.mark.parametrize("scheme", [b"Bearer", b"bearer", b"BEARER", b"bEaReR"])
def test_scheme_is_case_insensitive(scheme: bytes) -> None:
    assert parse_authorization(scheme + b" " + JWT.encode()) == JWT


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "a-b.c_d~e+f/g",
        "abc=",
        "abc==",
        JWT,
        "A" * 5000,
    ],
)
def test_accepts_every_token68_shape(token: str) -> None:
    assert parse_authorization(b"Bearer " + token.encode()) == token


def test_several_spaces_after_the_scheme_and_surrounding_whitespace_are_allowed() -> None:
    assert parse_authorization(b"  Bearer   " + JWT.encode() + b" \t") == JWT


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer",
        b"Bearer ",
        b"Bearer    ",
        b"Bearer\tabc",
        b"Bearer \tabc",
        b"Bearer abc def",
        b"Bearer abc,def",
        b"Bearer abc, Basic xyz",
        b"Bearer =abc",
        b"Bearer ab=c",
        b'Bearer "abc"',
        b"Bearer abc\r\nX-Injected: 1",
        b"Bearer \xe9abc",
        b"Bearer abc\x00",
        b"Bearer token=abc",
        # No scheme name holds these bytes: the Bearer scheme, malformed, not another.
        b"Bearer,abc",
        b"bearer:abc",
        b"Bearer=abc",
        b'Bearer"abc"',
        b"Bearer\xa0abc",
    ],
)
def test_a_malformed_bearer_value_is_invalid_request(value: bytes) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_authorization(value)
    assert info.value.status_code == 400
    assert info.value.error == "invalid_request"
    # Nothing of the request ends up in the error's text.
    assert b"abc" not in str(info.value).encode()


@pytest.mark.parametrize(
    "value",
    [
        b"Basic dXNlcjpwYXNz",
        b"Digest username=x",
        b"Bearertoken",
        b"Bearer-ish abc",
        b"Token abc",
        b"",
        b"   ",
        b"\xe9Bearer abc",
    ],
)
def test_another_scheme_is_no_bearer_token(value: bytes) -> None:
    assert parse_authorization(value) is None


def test_no_authorization_header_is_no_token() -> None:
    assert bearer_token(headers()) is None


def test_finds_the_header_among_others() -> None:
    assert bearer_token(headers(b"Bearer " + JWT.encode())) == JWT


@pytest.mark.parametrize(
    "values",
    [
        (b"Bearer a", b"Bearer b"),
        (b"Bearer a", b"Bearer a"),
        (b"Basic x", b"Bearer a"),
        (b"Basic x", b"Basic y"),
    ],
)
def test_several_authorization_headers_are_rejected(values: tuple[bytes, ...]) -> None:
    with pytest.raises(MultipleTokensError) as info:
        bearer_token(headers(*values))
    assert info.value.status_code == 400
    assert info.value.error == "invalid_request"
    assert info.value.reason == "multiple_tokens"


def test_other_headers_with_a_thirteen_byte_name_are_not_authorization() -> None:
    # cache-control, if-none-match, last-modified: same length as "authorization",
    # and none of them is a second Authorization header or a token source.
    others = [(name, b"Bearer x") for name in (b"cache-control", b"if-none-match")]
    assert bearer_token([*others, (b"authorization", b"Bearer " + JWT.encode())]) == JWT
    assert bearer_token(others) is None


def test_a_differently_cased_second_header_still_counts() -> None:
    # ASGI servers lowercase names, but a lenient one must not let a second header by.
    with pytest.raises(MultipleTokensError):
        bearer_token([(b"authorization", b"Bearer a"), (b"Authorization", b"Bearer b")])


def test_query_token_is_read_only_under_its_name() -> None:
    assert query_token(b"x=1&access_token=" + JWT.encode() + b"&y=2", "access_token") == JWT
    assert query_token(b"token=" + JWT.encode(), "access_token") is None
    assert query_token(b"", "access_token") is None


def test_query_token_is_percent_decoded() -> None:
    assert query_token(b"access%5Ftoken=ab%2Fc%3D", "access_token") == "ab/c="


@pytest.mark.parametrize(
    "query",
    [b"access_token=", b"access_token=a%20b", b"access_token=a%22b", b"access_token=%E9t%C3%A9"],
)
def test_a_malformed_query_token_is_invalid_request(query: bytes) -> None:
    # Still a 400 invalid_request, but not said to be the Authorization header's fault.
    with pytest.raises(MalformedQueryTokenError) as caught:
        query_token(query, "access_token")
    assert isinstance(caught.value, InvalidRequestError)
    assert (caught.value.status_code, caught.value.error) == (400, "invalid_request")
    assert caught.value.reason == "malformed_query_token"
    assert "query parameter" in caught.value.description


def test_a_repeated_query_token_is_rejected() -> None:
    with pytest.raises(MultipleTokensError):
        query_token(b"access_token=a&access_token=b", "access_token")


def scope(header: bytes | None = None, query: bytes = b"") -> dict[str, object]:
    # host=None: headers() brings its own Host header.
    return ws_scope(headers(header) if header is not None else headers(), query=query, host=None)


def test_the_query_is_ignored_unless_opted_in() -> None:
    assert token_from_scope(scope(query=b"access_token=" + JWT.encode())) is None


def test_the_query_token_is_used_when_opted_in() -> None:
    found = token_from_scope(scope(query=b"access_token=abc"), query_param="access_token")
    assert found == "abc"


def test_header_and_query_token_together_are_rejected() -> None:
    with pytest.raises(MultipleTokensError):
        token_from_scope(
            scope(b"Bearer abc", b"access_token=abc"),
            query_param="access_token",
        )


def test_another_scheme_in_the_header_does_not_block_a_query_token() -> None:
    found = token_from_scope(scope(b"Basic eDp5", b"access_token=abc"), query_param="access_token")
    assert found == "abc"


def test_a_header_token_is_used_when_the_query_form_is_opted_in_but_unused() -> None:
    found = token_from_scope(scope(b"Bearer " + JWT.encode()), query_param="access_token")
    assert found == JWT
    other = token_from_scope(scope(b"Bearer abc", b"other=1"), query_param="access_token")
    assert other == "abc"


def test_a_scope_without_headers_or_query_is_anonymous() -> None:
    # Minimal on purpose: no "headers" and no "query_string" key at all.
    assert token_from_scope({"type": "http"}, query_param="access_token") is None


# RFC 6750 §2.1 b64token, spelled out here apart from the parser's own table: the
# fuzz tests below judge the parser's answers by it.
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Credentials that are token68, that just miss it (a comma, a space, an "=" inside, a
# control or non-ASCII byte), or anything at all: every answer of the parser shows up.
token68 = st.from_regex(rb"[A-Za-z0-9\-._~+/]{1,30}={0,2}", fullmatch=True)
credentials = st.one_of(
    token68,
    st.tuples(
        token68,
        st.sampled_from([b",", b" ", b"=", b";", b"\t", b"\x00", b"\x7f", b"\xe9", b"%2C"]),
        token68,
    ).map(b"".join),
    st.binary(max_size=60),
)
# Random bytes alone almost never start with "Bearer " (none did in 100 examples), which
# left the token branch of these properties unexercised.
header_values = st.one_of(
    st.binary(max_size=300),
    st.tuples(
        st.sampled_from([b"Bearer", b"bearer", b"BEARER", b"bEaReR"]),
        st.sampled_from([b" ", b"   ", b"\t", b""]),
        credentials,
    ).map(b"".join),
)
query_values = st.one_of(
    st.binary(max_size=300),
    st.tuples(
        st.sampled_from([b"", b"a=1&", b"other=x;"]),
        st.sampled_from([b"access_token=", b"access%5Ftoken="]),
        credentials,
        st.sampled_from([b"", b"&b=2", b"&access_token=again"]),
    ).map(b"".join),
)


@example(b"Bearer abc.def_-~+/==")  # a token
@example(b"Bearer a,b")  # Bearer, but not token68: never read as anonymous
@example(b"Basic dXNlcjpwYXNz")  # another scheme: anonymous
@given(header_values)
def test_any_header_bytes_give_a_token68_none_or_invalid_request(value: bytes) -> None:
    try:
        token = parse_authorization(value)
    except InvalidRequestError:
        return
    if token is None:
        # Only another scheme reads as "no token": a Bearer value is a token or a 400.
        assert not value.strip(b" \t").lower().startswith(b"bearer "), value
        return
    assert B64TOKEN.fullmatch(token), token
    assert value.strip(b" \t").endswith(b" " + token.encode()), value
    assert parse_authorization(b"Bearer " + token.encode()) == token


@example(b"access_token=abc.def")  # a token
@example(b"access_token=a%2Cb")  # present, but not token68 once decoded: a 400
@example(b"access_token=a&access_token=b")  # twice: a 400
@example(b"other=abc")  # absent: anonymous
@given(query_values)
def test_any_query_bytes_give_a_token_none_or_invalid_request(value: bytes) -> None:
    try:
        token = query_token(value, "access_token")
    except InvalidRequestError:
        return
    names = [name for name, _ in parse_qsl(value.decode("latin-1"), keep_blank_values=True)]
    if token is None:
        # Anonymous only when the parameter is absent: a malformed one is a 400.
        assert "access_token" not in names, value
        return
    assert names.count("access_token") == 1, value
    assert B64TOKEN.fullmatch(token), token


def test_a_token_in_the_query_of_a_websocket_handshake_is_named_by_its_parameter() -> None:
    jwt_like = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    hint = missing_token_hint(ws_scope([], query=b"room=1&token=" + jwt_like))
    assert hint == "the query parameter 'token' holds a token: it is read only with " + (
        "websocket_query_param='token'"
    )
    # The client's name escaped, never the value; nothing without a JWT-like value.
    odd = missing_token_hint(ws_scope([], query=b"a\nb=" + jwt_like))
    assert odd is not None
    assert "'a\\nb'" in odd
    assert "eyJ" not in odd
    assert missing_token_hint(ws_scope([], query=b"token=abc.def.ghi")) is None
    assert missing_token_hint(ws_scope([], query=b"")) is None
