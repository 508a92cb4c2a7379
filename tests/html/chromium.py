"""Headless Chromium driven over the DevTools protocol, with the network shut off.

A small, dependency-free client: Chromium is started with ``--remote-debugging-pipe`` and
speaks JSON messages (separated by NUL bytes) on file descriptors 3 (commands in) and 4
(replies and events out). :class:`Browser` opens one tab, serves nothing itself, and lets
requests through only to the local HTTP server of :func:`serve` (127.0.0.1) and to local
files (``file://``, as a reader opens the book); every other request is failed and recorded
(``Page.blocked``), and Chromium's resolver maps every other host to nothing as well
(``--host-resolver-rules``).

Per page it records what a reader's browser would show as broken: console errors and
uncaught exceptions, failed requests and HTTP errors, and the bytes transferred (the page's
weight, with the browser cache disabled).
"""

from __future__ import annotations

import base64
import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

#: Where the Debian package puts the browser; CHROMIUM overrides it.
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
INSTALL_HINT = ("Chromium is needed for the browser test: install the Debian package with "
                "`apt-get update && apt-get install -y chromium` (as root), or set CHROMIUM "
                "to a Chromium/Chrome executable.")
LOCAL_HOSTS = ("127.0.0.1",)
#: Asked for by the browser itself, not by the page, when a page names no icon.
BROWSER_REQUESTS = ("/favicon.ico",)


def _browser_request(url: str) -> bool:
    return urlsplit(url).path in BROWSER_REQUESTS


def find_chromium() -> str | None:
    """The Chromium executable: ``$CHROMIUM``, else the first of :data:`CHROMIUM_PATHS`."""
    if env := os.environ.get("CHROMIUM"):
        return env if os.access(env, os.X_OK) else None
    for path in CHROMIUM_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002  (the base class's name)
        pass


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``root`` on 127.0.0.1 (a free port) in a daemon thread; (server, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class CDPError(RuntimeError):
    """A DevTools command answered with an error, or Chromium stopped answering."""


@dataclass
class Page:
    """What happened while one page was loaded and exercised."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # requests to another host
    failed: list[str] = field(default_factory=list)  # failed loads and HTTP errors
    bytes: int = 0  # encoded bytes received, all resources of the page
    requests: int = 0
    inflight: set = field(default_factory=set, repr=False)  # request ids not finished yet


class Browser:
    """One headless Chromium with one tab; close it with :meth:`close` (or ``with``)."""

    def __init__(self, executable: str, width: int = 1280, height: int = 900,
                 timeout: float = 60.0):
        self.timeout = timeout
        self.started = time.perf_counter()
        self._profile = tempfile.mkdtemp(prefix="gh-chromium-")
        cmd_r, cmd_w = os.pipe()  # we write commands, Chromium reads fd 3
        out_r, out_w = os.pipe()  # Chromium writes fd 4, we read
        # Move Chromium's ends out of the way of 3 and 4 before the child dup2s them there.
        child_in = fcntl.fcntl(cmd_r, fcntl.F_DUPFD_CLOEXEC, 100)
        child_out = fcntl.fcntl(out_w, fcntl.F_DUPFD_CLOEXEC, 100)
        os.close(cmd_r)
        os.close(out_w)

        def to_fds_3_4():  # runs in the child before exec; dup2'd fds are inheritable
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        args = [
            executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--disable-default-apps", "--disable-domain-reliability", "--metrics-recording-only",
            "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", f"--window-size={width},{height}",
            f"--user-data-dir={self._profile}", "--remote-debugging-pipe", "about:blank",
        ]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, close_fds=False,
                                      preexec_fn=to_fds_3_4)
        os.close(child_in)
        os.close(child_out)
        self._write, self._read = cmd_w, out_r
        self._buffer = b""
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self.page: Page | None = None
        self._main_url = ""  # the tab's current address (Page.frameNavigated)
        self._loaded: list[str] = []  # addresses whose load event fired, for this page
        self.session = ""
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"}, session=None)
            self.session = self.call("Target.attachToTarget",
                                     {"targetId": target["targetId"], "flatten": True},
                                     session=None)["sessionId"]
            for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
                self.call(method)
            self.call("Network.setCacheDisabled", {"cacheDisabled": True})
            self.call("Fetch.enable", {"patterns": [{"urlPattern": "*"}]})
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.close()
            raise

    # -- protocol --------------------------------------------------------------------------
    def _send(self, method: str, params: dict | None, session: str | None) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._write, data):]
        return self._next_id

    def _pump(self, timeout: float) -> None:
        """Read and dispatch whatever arrives within ``timeout`` seconds."""
        ready, _, _ = select.select([self._read], [], [], max(timeout, 0))
        if not ready:
            return
        chunk = os.read(self._read, 1 << 20)
        if not chunk:
            raise CDPError(f"Chromium closed the DevTools pipe (exit code {self._proc.poll()})")
        self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        for raw in messages:
            message = json.loads(raw)
            if "id" in message:
                self._replies[message["id"]] = message
            else:
                self._event(message["method"], message.get("params", {}))

    def call(self, method: str, params: dict | None = None, session: str | None | bool = True,
             timeout: float | None = None) -> dict:
        """Send a command (to the tab's session unless ``session=None``); its result."""
        sid = self.session if session is True else session
        ident = self._send(method, params, sid)
        deadline = time.monotonic() + (timeout or self.timeout)
        while ident not in self._replies:
            if time.monotonic() > deadline:
                raise CDPError(f"{method}: no answer within {timeout or self.timeout} s")
            self._pump(deadline - time.monotonic())
        reply = self._replies.pop(ident)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error'].get('message')} {reply['error'].get('data', '')}")
        return reply.get("result", {})

    def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise CDPError(f"timed out after {timeout} s waiting for {what}")
            self._pump(min(0.1, deadline - time.monotonic()))

    def idle(self, quiet: float = 0.25, timeout: float = 10.0) -> None:
        """Wait until the page has had no request in flight for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        calm_since = None
        while time.monotonic() < deadline:
            if self.page is not None and self.page.inflight:
                calm_since = None
            elif calm_since is None:
                calm_since = time.monotonic()
            elif time.monotonic() - calm_since >= quiet:
                return
            self._pump(0.05)
        raise CDPError(f"requests still in flight after {timeout} s: {len(self.page.inflight)}")

    def settle(self, seconds: float) -> None:
        """Handle the events that arrive within ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._pump(left)

    def _event(self, method: str, params: dict) -> None:
        page = self.page
        if method == "Fetch.requestPaused":
            url = params["request"]["url"]
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob", "file") or (
                    parts.scheme == "http" and parts.hostname in LOCAL_HOSTS):
                self._send("Fetch.continueRequest", {"requestId": params["requestId"]},
                           self.session)
            else:
                if page is not None:
                    page.blocked.append(url)
                self._send("Fetch.failRequest", {"requestId": params["requestId"],
                                                 "errorReason": "BlockedByClient"}, self.session)
            return
        if page is None:
            return
        if method == "Page.frameNavigated" and not params["frame"].get("parentId"):
            self._main_url = params["frame"]["url"]
        elif method == "Page.loadEventFired":
            self._loaded.append(self._main_url)
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            text = " ".join(str(arg.get("value", arg.get("description", "")))
                            for arg in params.get("args", []))
            page.console_errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            page.console_errors.append(f"uncaught exception: {text}")
        elif (method == "Log.entryAdded" and params["entry"]["level"] == "error"
              and not _browser_request(params["entry"].get("url", ""))):
            entry = params["entry"]
            page.console_errors.append(f"{entry.get('source', 'log')}: {entry['text']} "
                                       f"{entry.get('url', '')}".rstrip())
        elif method == "Network.requestWillBeSent":
            if params["requestId"] not in page.inflight:  # not a redirect of one counted
                page.requests += 1
            page.inflight.add(params["requestId"])
        elif method == "Network.responseReceived":
            status = params["response"]["status"]
            if status >= 400 and not _browser_request(params["response"]["url"]):
                page.failed.append(f"HTTP {status}: {params['response']['url']}")
        elif method == "Network.loadingFinished":
            page.bytes += int(params.get("encodedDataLength", 0))
            page.inflight.discard(params["requestId"])
        elif method == "Network.loadingFailed":
            page.inflight.discard(params["requestId"])
            if not params.get("canceled"):
                page.failed.append(f"{params.get('errorText', 'failed')}: request "
                                   f"{params['requestId']} ({params.get('type', '')})")

    # -- pages -----------------------------------------------------------------------------
    def open(self, url: str, timeout: float = 60.0, lands_on: str | None = None) -> Page:
        """Load ``url`` and wait for the load event of ``lands_on`` (default: ``url``; a page
        that redirects lands elsewhere); the :class:`Page` record."""
        self.page = Page(url)
        self._loaded = []
        target = lands_on or url
        self.call("Page.navigate", {"url": url})
        self.wait(lambda: target in self._loaded, timeout, f"the load event of {target}")
        return self.page

    def evaluate(self, expression: str, timeout: float | None = None):
        """Evaluate JavaScript in the page (awaiting a promise); its JSON value."""
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(details.get("exception", {}).get("description") or details["text"])
        return result["result"].get("value")

    def screenshot(self, path: Path, clip: dict | None = None) -> None:
        """Save a PNG of the viewport, or of ``clip`` (page coordinates) if given."""
        params = {"format": "png"}
        if clip:
            params |= {"clip": clip | {"scale": 1}, "captureBeyondViewport": True}
        data = self.call("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        for fd in (getattr(self, "_write", None), getattr(self, "_read", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
