"""Drive Debian's headless Chromium from tests over the DevTools protocol.

Page tests must see what a person sees: images that load, no script errors, text where text
belongs. This helper starts ``chromium --headless`` with a throw-away profile and no
background networking, talks to it over the DevTools websocket (aiohttp), and gives a small
synchronous API::

    with Chromium() as browser:
        page = browser.open(Path("report.html").resolve().as_uri())
        assert page.eval("document.images.length") > 0
        page.screenshot(tmp_path / "shot.png")
        assert page.console_errors == []

``console_errors`` collects ``console.error`` calls, uncaught exceptions and browser log
errors (failed loads, Content-Security-Policy violations); ``requests`` lists every URL the
page asked for. A missing browser raises ``BrowserError`` (a test failure, never a skip).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
)
BINARIES = ("chromium", "chromium-browser", "google-chrome")


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or a DevTools call failed."""


def find_chromium() -> str:
    """The path of a Chromium binary on PATH."""
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserError("chromium not found on PATH: install it (apt-get install -y chromium)")


class Chromium:
    """A headless Chromium process and its DevTools connection; use as a context manager."""

    def __init__(self, binary: str | None = None, *, width: int = 1280, height: int = 900,
                 timeout: float = 20.0) -> None:
        self.binary = binary or find_chromium()
        self.width, self.height, self.timeout = width, height, timeout
        self._ids = itertools.count(1)
        self._pages: dict[str, Page] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: subprocess.Popen | None = None
        self._profile: str | None = None

    def __enter__(self) -> Chromium:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the browser and connect to it."""
        self._profile = tempfile.mkdtemp(prefix="rlaif-chromium-")
        log = open(Path(self._profile) / "chromium.log", "wb")  # noqa: SIM115 - closed below
        try:
            self._process = subprocess.Popen(
                [self.binary, *FLAGS, f"--user-data-dir={self._profile}",
                 "--remote-debugging-port=0", f"--window-size={self.width},{self.height}",
                 "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        try:
            url = self._devtools_url()
            self._loop = asyncio.new_event_loop()
            self._run(self._connect(url))
        except BaseException:
            self._process.kill()
            self.close()
            raise

    def _devtools_url(self) -> str:
        """The browser's websocket URL, from the DevToolsActivePort file it writes."""
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrowserError(f"chromium exited with {self._process.returncode}: "
                                   f"{self.log()[-2000:]}")
            lines = port_file.read_text().split() if port_file.is_file() else []
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            time.sleep(0.05)
        raise BrowserError(f"chromium did not open DevTools in {self.timeout} s: "
                           f"{self.log()[-2000:]}")

    def log(self) -> str:
        """What the browser process wrote to stdout and stderr."""
        path = Path(self._profile or "") / "chromium.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    async def _connect(self, url: str) -> None:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(url, max_msg_size=0)

    def _run(self, coroutine: Any) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(coroutine, self.timeout))

    async def _call(self, method: str, params: dict | None = None,
                    session: str | None = None) -> dict[str, Any]:
        """Send one DevTools command and wait for its reply, dispatching events meanwhile."""
        message_id = next(self._ids)
        message = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        await self._ws.send_str(json.dumps(message))
        while True:
            reply = await self._receive()
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    async def _receive(self) -> dict[str, Any]:
        msg = await self._ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise BrowserError(f"DevTools connection closed ({msg.type.name}): "
                               f"{self.log()[-2000:]}")
        data = json.loads(msg.data)
        if "method" in data and data.get("sessionId") in self._pages:
            self._pages[data["sessionId"]]._event(data["method"], data.get("params", {}))
        return data

    async def _wait_for(self, page: Page, loader: str) -> None:
        while loader not in page._loaded:
            await self._receive()

    def open(self, url: str) -> Page:
        """A new tab showing ``url``, returned once its load event fired."""
        target = self._run(self._call("Target.createTarget", {"url": "about:blank"}))
        attached = self._run(self._call("Target.attachToTarget",
                                        {"targetId": target["targetId"], "flatten": True}))
        page = Page(self, target["targetId"], attached["sessionId"])
        self._pages[page.session] = page
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.call(f"{domain}.enable")
        page.call("Page.setLifecycleEventsEnabled", {"enabled": True})
        page.call("Emulation.setDeviceMetricsOverride", {
            "width": self.width, "height": self.height, "deviceScaleFactor": 1,
            "mobile": False})
        page.goto(url)
        return page

    def close(self) -> None:
        """Close the connection, stop the browser and remove its profile."""
        if self._loop is not None:
            async def disconnect() -> None:
                with contextlib.suppress(OSError, TimeoutError, aiohttp.ClientError):
                    await asyncio.wait_for(self._ws.send_str(json.dumps(
                        {"id": next(self._ids), "method": "Browser.close"})), 2)
                await self._ws.close()
                await self._session.close()
            try:
                self._loop.run_until_complete(disconnect())
            finally:
                self._loop.close()
                self._loop = None
        if self._process is not None:
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None


class Page:
    """One tab: navigate, evaluate JavaScript, screenshot, and what went wrong on it."""

    def __init__(self, browser: Chromium, target: str, session: str) -> None:
        self.browser, self.target, self.session = browser, target, session
        self._errors: list[str] = []
        self.requests: list[str] = []
        self._loaded: set[str] = set()

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.lifecycleEvent" and params.get("name") == "load":
            self._loaded.add(params.get("loaderId"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self._errors.append("console: " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self._errors.append("exception: " + str(
                details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self._errors.append(f"log ({entry.get('source')}): {entry.get('text')} "
                                f"{entry.get('url', '')}".rstrip())
        elif method == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))

    def call(self, method: str, params: dict | None = None) -> dict[str, Any]:
        """One raw DevTools command on this tab."""
        return self.browser._run(self.browser._call(method, params, self.session))

    def goto(self, url: str) -> None:
        """Navigate and wait for the new document's load event."""
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"{url}: {result['errorText']}")
        if result.get("loaderId"):  # absent for a same-document (#fragment) navigation
            self.browser._run(self.browser._wait_for(self, result["loaderId"]))

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited, result as JSON)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"{expression[:80]}: " + str(
                details.get("exception", {}).get("description") or details.get("text")))
        return result.get("result", {}).get("value")

    def html(self) -> str:
        """The serialised DOM, as after ``--dump-dom``."""
        return self.eval("document.documentElement.outerHTML")

    def screenshot(self, path: str | Path | None = None, full_page: bool = False) -> bytes:
        """A PNG of the viewport (or the whole page), also written to ``path`` if given."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params |= {"captureBeyondViewport": True, "clip": {
                "x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16384),
                "scale": 1}}
        data = base64.b64decode(self.call("Page.captureScreenshot", params)["data"])
        if path is not None:
            Path(path).write_bytes(data)
        return data

    @property
    def console_errors(self) -> list[str]:
        """Errors reported so far (a round trip first, so that earlier events are in)."""
        self.eval("0")
        return list(self._errors)

    def close(self) -> None:
        """Close the tab."""
        self.browser._run(self.browser._call("Target.closeTarget", {"targetId": self.target}))
        self.browser._pages.pop(self.session, None)
