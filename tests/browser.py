"""Open a page in headless Chromium (Debian's package) over the DevTools protocol: console errors, uncaught
exceptions and failed loads, whether the summary and every image rendered, and a full-page screenshot.

Loaded by the tests as a module (tests/ is on sys.path, like bundle_synth)::

    result = browser.check_page(index_html, screenshot=index_html.with_name("screenshot.png"))
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser")
CALL_TIMEOUT_S = 60.0
PROBE = """JSON.stringify({
  summary: (() => { const s = document.getElementById('summary');
                    return !!s && s.getBoundingClientRect().height > 0 && s.innerText.trim().length > 0; })(),
  images: Array.from(document.images).map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
                                                 width: i.naturalWidth})),
  height: document.documentElement.scrollHeight,
})"""


def chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@dataclass
class PageCheck:
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    summary: bool = False  # #summary exists, is laid out and has text
    images: list[dict] = field(default_factory=list)  # {src, ok, width}

    @property
    def broken_images(self) -> list[str]:
        return [i["src"] for i in self.images if not i["ok"]]


class DevTools:
    def __init__(self, ws_url: str):
        import websocket  # websocket-client

        self.ws = websocket.create_connection(ws_url, timeout=CALL_TIMEOUT_S, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.settimeout(CALL_TIMEOUT_S)
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout_s} s")
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            self.events.append(json.loads(self.ws.recv()))

    def drain(self, quiet_s: float) -> None:
        import websocket

        self.ws.settimeout(quiet_s)
        try:
            while True:
                self.events.append(json.loads(self.ws.recv()))
        except websocket.WebSocketTimeoutException:
            pass

    def close(self) -> None:
        self.ws.close()


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description", "")))
                                                           for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            out.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
    return out


def _ws_url(profile: Path, proc: subprocess.Popen, timeout_s: float) -> str:
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while not port_file.is_file() or not port_file.read_text().strip():
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError("chromium did not open its DevTools port")
        time.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
        pages = [t for t in json.load(r) if t.get("type") == "page"]
    return pages[0]["webSocketDebuggerUrl"]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the browser and every helper it started (its own session), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(proc.pid):
                return
            time.sleep(0.1)
    proc.wait()


def check_page(page: Path, screenshot: Path | None = None, timeout_s: float = 60.0, width: int = 1300) -> PageCheck:
    """Load `page` (a file) in a fresh headless Chromium and report what a reader would hit."""
    binary = chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed")
    # Chromium's helper processes may still write its profile after the browser exits: the whole process group
    # is stopped below, and a file written after that does not fail the check.
    with tempfile.TemporaryDirectory(prefix="report-chromium-", ignore_cleanup_errors=True) as tmp:
        profile = Path(tmp)
        proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            tools = DevTools(_ws_url(profile, proc, timeout_s))
            try:
                for domain in ("Runtime", "Log", "Page"):
                    tools.call(f"{domain}.enable")
                tools.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1,
                           mobile=False)
                tools.call("Page.navigate", url=page.resolve().as_uri())
                tools.wait_event("Page.loadEventFired", timeout_s)
                tools.drain(0.5)
                probe = json.loads(tools.call("Runtime.evaluate", expression=PROBE, returnByValue=True)
                                   ["result"]["value"])
                result = PageCheck(_errors(tools.events), probe["summary"], probe["images"])
                if screenshot is not None:
                    tools.call("Emulation.setDeviceMetricsOverride", width=width,
                               height=min(int(probe["height"]), 16000), deviceScaleFactor=1, mobile=False)
                    shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                    screenshot.write_bytes(base64.b64decode(shot["data"]))
                return result
            finally:
                tools.close()
        finally:
            _stop_group(proc)
