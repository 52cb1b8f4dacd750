"""Swagger UI in a real browser: headless Debian Chromium, driven by chromedriver.

``python -m example_app`` runs as ``make demo`` runs it (offline dev mode, a real
uvicorn on 127.0.0.1). The browser opens ``/docs``, clicks "Authorize", pastes the
token the demo printed, executes a protected endpoint and sees 200; after "Logout" the
same request gets 401.

Chromium is driven through chromedriver's W3C WebDriver HTTP API with httpx, so the
test needs no extra Python package and nothing downloads a browser. It is skipped
when ``/usr/bin/chromium`` or ``/usr/bin/chromedriver`` is missing; ``.ci/run``
installs both (Debian's ``chromium`` and ``chromium-driver``). Set
``ASGI_AUTH0_SCREENSHOTS=/some/dir`` to keep a screenshot of each step.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from example_support import Demo, run_demo

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
# The W3C WebDriver spec's key for an element reference in JSON.
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
# How long a find waits for an element to appear (WebDriver implicit wait), in ms.
IMPLICIT_WAIT_MS = 15_000
# The operation Swagger UI renders for GET /api/private (tag "default", operationId).
PRIVATE_OPERATION = "#operations-default-private_api_private_get"
# The row of the response Swagger UI received (not the table's header row).
LIVE_RESPONSE = ".live-responses-table tbody tr.response"
# Flags for Chromium on a machine with no network but loopback (machines/python.md):
# without the background-networking ones it keeps trying to reach Google's hosts.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
)


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)) and not shutil.which(path):
            return (
                f"{path} not found: install Debian's chromium and chromium-driver "
                "(apt-get install chromium chromium-driver; .ci/run does) to run the browser test"
            )
    return None


class WebDriverError(AssertionError):
    """chromedriver answered a command with an error."""


class Browser:
    """The few W3C WebDriver commands the test needs, over chromedriver's HTTP API."""

    def __init__(self, client: httpx.Client, session_id: str, shots: Path | None) -> None:
        self._client = client
        self._session = f"/session/{session_id}"
        self._shots = shots
        self._shot_count = 0

    def _command(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._client.request(method, self._session + path, json=body)
        value = response.json()["value"]
        if response.status_code != 200:
            raise WebDriverError(f"{method} {path}: {response.status_code} {value}")
        return value

    def open(self, url: str) -> None:
        self._command("POST", "/url", {"url": url})

    def find(self, selector: str, *, xpath: bool = False) -> str:
        """The element matching ``selector``, waiting for it to appear (implicit wait)."""
        using = "xpath" if xpath else "css selector"
        found = self._command("POST", "/element", {"using": using, "value": selector})
        return str(found[ELEMENT])

    def click(self, selector: str, *, xpath: bool = False) -> None:
        element = self.find(selector, xpath=xpath)
        self._command("POST", f"/element/{element}/click", {})

    def type(self, selector: str, text: str) -> None:
        element = self.find(selector)
        self._command("POST", f"/element/{element}/value", {"text": text})

    def text(self, selector: str) -> str:
        element = self.find(selector)
        return str(self._command("GET", f"/element/{element}/text"))

    def wait_gone(self, selector: str) -> None:
        """Wait (in the page, bounded) until nothing matches ``selector``."""
        # Runs in the browser: checks on every animation frame, gives up after the
        # implicit-wait time; an element that never goes away fails the test.
        script = """
            const [selector, limit, done] = arguments;
            const start = performance.now();
            const check = () => {
                if (document.querySelector(selector) === null) return done(true);
                if (performance.now() - start > limit) return done(false);
                requestAnimationFrame(check);
            };
            check();
        """
        gone = self._command(
            "POST", "/execute/async", {"script": script, "args": [selector, IMPLICIT_WAIT_MS]}
        )
        assert gone, f"{selector} is still on the page"

    def screenshot(self, name: str) -> None:
        if self._shots is None:
            return
        self._shot_count += 1
        png = base64.b64decode(self._command("GET", "/screenshot"))
        (self._shots / f"{self._shot_count:02d}-{name}.png").write_bytes(png)


def _drain(stream: Any) -> None:
    for _ in iter(stream.readline, ""):
        pass


@pytest.fixture
def chromedriver() -> Iterator[httpx.Client]:
    """A chromedriver on a free loopback port, and an httpx client talking to it."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    process = subprocess.Popen(
        [CHROMEDRIVER, "--port=0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    drainer = threading.Thread(target=_drain, args=(process.stdout,), daemon=True)
    try:
        assert process.stdout is not None
        port = None
        # chromedriver prints its port (chosen by --port=0) on startup; the read is
        # bounded by the test timeout.
        for line in iter(process.stdout.readline, ""):
            match = re.search(r"started successfully on port (\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port is not None, "chromedriver did not start"
        # Keep reading its output so it never blocks on a full pipe.
        drainer.start()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if drainer.is_alive():
            drainer.join(10)  # it ends at EOF, now that chromedriver has exited
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def browser(chromedriver: httpx.Client, tmp_path: Path) -> Iterator[Browser]:
    """A fresh headless Chromium session with an empty profile."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    options = {"binary": CHROMIUM, "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]}
    capabilities = {"browserName": "chrome", "goog:chromeOptions": options}
    response = chromedriver.post("/session", json={"capabilities": {"alwaysMatch": capabilities}})
    assert response.status_code == 200, response.text
    session_id = response.json()["value"]["sessionId"]
    shots_dir = os.environ.get("ASGI_AUTH0_SCREENSHOTS")
    shots = Path(shots_dir) if shots_dir else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    browser = Browser(chromedriver, session_id, shots)
    try:
        timeouts = {"implicit": IMPLICIT_WAIT_MS, "script": IMPLICIT_WAIT_MS + 5_000}
        browser._command("POST", "/timeouts", timeouts)
        yield browser
    finally:
        chromedriver.delete(f"/session/{session_id}")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    with run_demo(tmp_path) as demo:
        yield demo


def _execute_private(browser: Browser) -> str:
    """Press Execute on GET /api/private and return the status Swagger UI shows."""
    browser.click(f"{PRIVATE_OPERATION} .execute")
    return browser.text(f"{PRIVATE_OPERATION} {LIVE_RESPONSE} .response-col_status")


def test_swagger_ui_authorize_with_a_dev_token_then_logout(browser: Browser, demo: Demo) -> None:
    # (browser first: without Chromium the test is skipped before the demo starts)
    assert demo.swagger_token, "the demo printed no token for Swagger UI"
    browser.open(demo.base_url + "/docs")

    # The page came up from local assets (no CDN) and shows the protected operation.
    browser.find(".auth-wrapper .authorize")
    browser.find(PRIVATE_OPERATION)
    browser.screenshot("docs")

    # Authorize: paste the printed token into the bearer field and apply it.
    browser.click(".auth-wrapper .authorize")
    browser.type(".modal-ux input#auth-bearer-value", demo.swagger_token)
    browser.screenshot("authorize-dialog")
    browser.click(".modal-ux .auth-btn-wrapper button[type=submit]")
    browser.find("//div[@class='modal-ux']//button[normalize-space()='Logout']", xpath=True)
    browser.click(".modal-ux .btn-done")
    browser.wait_gone(".modal-ux")

    # Expand GET /api/private, "Try it out", Execute: 200 with the dev user's claims.
    browser.click(f"{PRIVATE_OPERATION} .opblock-summary-control")
    browser.click(f"{PRIVATE_OPERATION} .try-out__btn")
    assert _execute_private(browser) == "200"
    body = browser.text(f"{PRIVATE_OPERATION} {LIVE_RESPONSE} .response-col_description")
    assert '"sub": "dev-user"' in body
    # The curl command Swagger UI shows carries the token: it really was sent.
    assert "Authorization: Bearer " + demo.swagger_token[:20] in browser.text(
        f"{PRIVATE_OPERATION} .curl-command"
    )
    browser.screenshot("authorized-200")

    # Logout, clear the old response, execute again: 401 with the bare challenge.
    browser.click(".auth-wrapper .authorize")
    browser.click("//div[@class='modal-ux']//button[normalize-space()='Logout']", xpath=True)
    browser.click(".modal-ux .btn-done")
    browser.click(f"{PRIVATE_OPERATION} .btn-clear")
    browser.wait_gone(f"{PRIVATE_OPERATION} .live-responses-table")
    assert _execute_private(browser) == "401"
    body = browser.text(f"{PRIVATE_OPERATION} {LIVE_RESPONSE} .response-col_description")
    assert '"reason": "missing_token"' in body
    assert 'www-authenticate: Bearer realm="api"' in body
    assert "Authorization" not in browser.text(f"{PRIVATE_OPERATION} .curl-command")
    browser.screenshot("logged-out-401")
