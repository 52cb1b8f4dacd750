"""Log capture for leak tests, and a pytest plugin that applies it to a whole run.

``tests/test_limits_and_leaks.py`` uses :func:`capture_logs` and :func:`record_texts`
directly. The plugin checks a *full suite run* as well: pyproject's ``addopts``
loads it on every run (``-p tests.adversarial.leakcheck``).

Every test then runs with every ``asgi_auth0`` logger at DEBUG, and fails (at
teardown) if any record's message, formatted traceback or extra field holds something
shaped like a JWT segment (``eyJ`` + 16 base64url characters: the start of a
base64url-encoded JSON object). DEBUG records also reach ``caplog``: tests that
count log records filter by level or logger name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

__all__ = ["JWT_SEGMENT", "capture_logs", "record_texts"]

#: A base64url-encoded JSON object of some length: a token's header or payload.
JWT_SEGMENT = re.compile(r"eyJ[A-Za-z0-9_-]{16,}")

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 1, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def capture_logs() -> Iterator[list[logging.LogRecord]]:
    """Every record of every ``asgi_auth0`` logger, at DEBUG, for the block."""
    root = logging.getLogger("asgi_auth0")
    handler = _Capture()
    level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def record_texts(record: logging.LogRecord) -> list[str]:
    """Everything a log pipeline could print: the message, the formatted record with
    any traceback, and every extra field as a %-style formatter would render it."""
    texts = [record.getMessage(), logging.Formatter().format(record)]
    for name, value in vars(record).items():
        if name not in _STANDARD_ATTRS:
            texts.append(value if isinstance(value, str) else str(value))
    return texts


@pytest.fixture(autouse=True)
def _asgi_auth0_no_tokens_in_logs() -> Iterator[None]:
    with capture_logs() as records:
        yield
    leaks = [
        f"{record.name}:{record.lineno}: {match.group()[:40]}"
        for record in records
        for text in record_texts(record)
        for match in JWT_SEGMENT.finditer(text)
    ]
    if leaks:
        pytest.fail("token bytes in asgi_auth0 log records: " + "; ".join(leaks[:5]))
