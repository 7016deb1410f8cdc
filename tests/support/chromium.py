"""A real headless Chromium driven over the DevTools protocol on a pipe (no WebSocket, no extra
package): open a page, evaluate JavaScript in it, wait for a condition, take a screenshot.

``--remote-debugging-pipe`` makes the browser read protocol messages (JSON, each ended by a NUL
byte) on its file descriptor 3 and write its answers and events on 4. One page, attached with a
flat session; everything is synchronous and every wait has a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "these tests render the fleet page in a real headless Chromium: install it with "
        "'sudo apt-get install chromium' (scripts/test does)"
    )


class ProtocolError(RuntimeError):
    pass


def _above_4(fd: int) -> int:
    """``fd`` moved above 4 (so that putting the pipe on 3 and 4 overwrites neither end)."""
    if fd > 4:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
    os.close(fd)
    return moved


class Browser:
    """One headless Chromium with one page (``with Browser(profile) as b: b.open(url)``)."""

    def __init__(self, profile: Path, *, width: int = 1280, height: int = 800) -> None:
        to_browser_r, self._to_browser = (_above_4(fd) for fd in os.pipe())
        self._from_browser, from_browser_w = (_above_4(fd) for fd in os.pipe())
        # The browser's ends on its fds 3 and 4, put there by a Python that then execs it (not a
        # preexec_fn, which is unsafe with threads; dash cannot name an fd above 9).
        plumb = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
        plumb += "os.execv(sys.argv[3], sys.argv[3:])"
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile.parent / f"{profile.name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", plumb, str(to_browser_r), str(from_browser_w),
                 chromium(), *FLAGS, f"--user-data-dir={profile}",
                 "--remote-debugging-pipe", f"--window-size={width},{height}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                pass_fds=(to_browser_r, from_browser_w),
            )  # fmt: skip
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._buffer = b""
        self.session = ""
        self.width, self.height = width, height

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # the protocol -----------------------------------------------------------------------------
    def send(self, method: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        """One command (to the page's session once :meth:`open` attached it); its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise ProtocolError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise ProtocolError(f"Chromium closed the pipe (exit {self.proc.poll()}): {tail}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    # a page -----------------------------------------------------------------------------------
    def open(self, url: str) -> None:
        """A new page at ``url`` (an earlier page stays open but is no longer the one driven)."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        """The value of ``expression`` in the page (promises awaited)."""
        answer = self.send(
            "Runtime.evaluate",
            timeout,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in answer:
            raise ProtocolError(f"{expression[:80]}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 60.0) -> Any:
        """Poll ``expression`` until it is truthy (its value), or fail naming ``what``. While
        the page is still loading, an expression that throws counts as not yet."""
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(guarded)
            except ProtocolError:  # the page's context is being replaced (navigating)
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProtocolError, TimeoutError, OSError):
                self.send("Browser.close", timeout=10)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        os.close(self._to_browser)
        os.close(self._from_browser)
