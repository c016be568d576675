"""A tiny Chrome DevTools Protocol client for the browser tests: start the system Chromium headless, open a page,
evaluate JavaScript, dispatch real mouse and key events, take screenshots. Uses aiohttp (a pack dependency) for the
websocket; no Playwright browser download.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import http.server
import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--no-first-run",
                  "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--hide-scrollbars",
                  "--force-device-scale-factor=1")


def find_chromium() -> str | None:
    """The Chromium to drive: $HUMANGEN_CHROMIUM, else `chromium` / `chromium-browser` on PATH."""
    env = os.environ.get("HUMANGEN_CHROMIUM")
    if env:
        return env if os.path.isfile(env) else None
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@contextlib.contextmanager
def serve_directory(root: Path, mounts: dict[str, Path] | None = None):
    """Serve `root` over HTTP on 127.0.0.1 (a free port) in a thread; yields the base URL. `mounts` maps URL
    prefixes ("/scripts/") to other folders, as ComfyUI serves a pack's web folder under /extensions/<pack>/."""
    mounts = dict(mounts or {})

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def translate_path(self, path):
            clean = path.split("?", 1)[0].split("#", 1)[0]
            for prefix, folder in mounts.items():
                if clean.startswith(prefix):
                    rel = clean[len(prefix):]
                    target = (Path(folder) / rel).resolve()
                    return str(target) if target.is_relative_to(Path(folder).resolve()) else str(folder)
            return super().translate_path(path)

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # ES modules need a JavaScript MIME type
    Quiet.extensions_map = {**Quiet.extensions_map, ".js": "text/javascript", ".mjs": "text/javascript"}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium(executable: str, workdir: Path, width: int = 800, height: int = 760):
    """Start headless Chromium with an empty profile in `workdir`; yields the DevTools HTTP base URL. The browser
    (only the process started here) is stopped on exit; its stderr is kept in workdir/chromium.log."""
    profile = workdir / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "chromium.log", "wb")
    proc = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                             f"--window-size={width},{height}", "about:blank"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {proc.returncode}; see {workdir / 'chromium.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port within 30 s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{int(port_file.read_text().split()[0])}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


class Page:
    """One browser tab over its DevTools websocket."""

    def __init__(self, session, ws):
        self.session, self.ws = session, ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.errors: list[str] = []
        self.console: list[str] = []
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, devtools: str, width: int = 800, height: int = 760) -> "Page":
        import aiohttp
        session = aiohttp.ClientSession()
        async with session.put(f"{devtools}/json/new?about:blank") as r:
            target = await r.json(content_type=None)
        ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 * 2**20)
        page = cls(session, ws)
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        await page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)
        return page

    async def _read(self):
        import aiohttp
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif data.get("method") == "Runtime.exceptionThrown":
                d = data["params"]["exceptionDetails"]
                self.errors.append(d.get("exception", {}).get("description") or d.get("text", "?"))
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"]["args"]
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))

    async def send(self, method: str, **params):
        i = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[i] = fut
        await self.ws.send_json({"id": i, "method": method, "params": params})
        data = await asyncio.wait_for(fut, 30)
        if "error" in data:
            raise RuntimeError(f"{method}: {data['error']}")
        return data.get("result", {})

    async def eval(self, expression: str):
        """Evaluate JavaScript (awaiting promises) and return its JSON value; a thrown error raises."""
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise RuntimeError(d.get("exception", {}).get("description") or d.get("text"))
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            value = await self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} s for {expression}; page errors: {self.errors}; "
                                   f"console: {self.console[-10:]}")
            await asyncio.sleep(0.1)

    async def goto(self, url: str):
        await self.send("Page.navigate", url=url)

    async def mouse(self, kind: str, x: float, y: float, buttons: int = 0, button: str = "none",
                    click_count: int = 0, modifiers: int = 0):
        await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button=button, buttons=buttons,
                        clickCount=click_count, modifiers=modifiers)

    async def click(self, x: float, y: float):
        await self.mouse("mouseMoved", x, y)
        await self.mouse("mousePressed", x, y, buttons=1, button="left", click_count=1)
        await self.mouse("mouseReleased", x, y, button="left", click_count=1)

    async def drag(self, x0: float, y0: float, x1: float, y1: float, steps: int = 8):
        """Press the left button at (x0, y0), move in `steps` to (x1, y1), release: real mouse events."""
        await self.mouse("mouseMoved", x0, y0)
        await self.mouse("mousePressed", x0, y0, buttons=1, button="left", click_count=1)
        for s in range(1, steps + 1):
            await self.mouse("mouseMoved", x0 + (x1 - x0) * s / steps, y0 + (y1 - y0) * s / steps, buttons=1,
                             button="left")
        await self.mouse("mouseReleased", x1, y1, button="left", click_count=1)

    async def key(self, key: str, code: str, key_code: int, modifiers: int = 0):
        """A key press (modifiers: 1 Alt, 2 Ctrl, 4 Meta, 8 Shift)."""
        common = dict(key=key, code=code, windowsVirtualKeyCode=key_code, nativeVirtualKeyCode=key_code,
                      modifiers=modifiers)
        await self.send("Input.dispatchKeyEvent", type="rawKeyDown", **common)
        await self.send("Input.dispatchKeyEvent", type="keyUp", **common)

    async def screenshot(self, path: Path) -> Path:
        r = await self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(r["data"]))
        return path

    async def close(self):
        self.reader.cancel()
        await self.ws.close()
        await self.session.close()
