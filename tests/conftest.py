"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

import pytest

pytest_plugins = ["asgi_auth0.pytest_plugin"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
