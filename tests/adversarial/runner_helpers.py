"""Shared pieces of the runner's adversarial tests: a sandbox with a canary folder, the CLI run in-process (or as a
real process) with the checks every hostile case makes, and a hostile ComfyUI stand-in on 127.0.0.1.

Every loop in the hostile server is bounded (a few seconds at most) and ends when the test stops the server."""
from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from hgtest import ROOT

PNG_SIZE = 8


def tiny_png(color=(200, 30, 40), size=PNG_SIZE) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


# ---- sandbox ----------------------------------------------------------------------------------------------------
@dataclass
class Sandbox:
    """tmp/work/{input,out} is where the runner may read and write; tmp/canary (and everything else under tmp) must
    never gain a file. `check()` asserts that."""
    root: Path
    work: Path = field(init=False)
    input: Path = field(init=False)
    out: Path = field(init=False)
    canary: Path = field(init=False)
    before: set = field(init=False)

    def __post_init__(self):
        self.work = self.root / "work"
        self.input = self.work / "input"
        self.out = self.work / "out"
        self.canary = self.root / "canary"
        for d in (self.input, self.out, self.canary):
            d.mkdir(parents=True, exist_ok=True)
        (self.canary / "secret.txt").write_text("do not upload me")
        (self.canary / "secret.png").write_bytes(tiny_png((1, 2, 3)))
        (self.input / "x.png").write_bytes(tiny_png())
        self.before = self._outside()

    def _outside(self) -> set:
        allowed = (self.input, self.out)
        return {p for p in self.root.rglob("*") if not any(p == a or a in p.parents for a in allowed)}

    def out_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.out)) for p in self.out.rglob("*") if p.is_file())

    def check(self) -> None:
        """Nothing appeared outside input/ and out/, the canary is intact, no temporary file was left behind."""
        new = self._outside() - self.before
        assert not new, f"files written outside the allowed folders: {sorted(map(str, new))}"
        assert (self.canary / "secret.txt").read_text() == "do not upload me"
        leftovers = [p for p in self.out.rglob(".*")]
        assert not leftovers, f"temporary files left behind: {leftovers}"

    def write(self, name: str, data: Any) -> str:
        path = self.root / name
        if isinstance(data, (bytes, bytearray)):
            path.write_bytes(data)
        else:
            path.write_text(data if isinstance(data, str) else json.dumps(data))
        self.before.add(path)  # the test's own file
        return str(path)


# ---- the CLI ----------------------------------------------------------------------------------------------------
def cli(capsys, *argv: str, extra_nodes: dict | None = None) -> tuple[int, str, str]:
    """`humangen <argv>` in-process; returns (exit status, stdout, stderr) after the checks every case makes:
    a known exit status, no traceback, stderr error lines are single lines starting with 'error:'."""
    from humangen.runner.cli import main
    capsys.readouterr()
    code = main(list(argv), extra_nodes=extra_nodes)
    out, err = capsys.readouterr()
    assert code in (0, 1, 2, 130), code
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


def run_args(box: Sandbox, workflow: str, *extra: str) -> list[str]:
    return ["run", workflow, "--out", str(box.out), "--input-dir", str(box.input), "--quiet", *extra]


def cli_process(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real command line (`python <checkout> run ...`) in a fresh process."""
    env = dict(os.environ, HUMANGEN_NO_PROGRESS="1")
    env.pop("HUMANGEN_VERBOSE", None)
    proc = subprocess.run([sys.executable, str(ROOT), *argv], capture_output=True, text=True, timeout=timeout,
                          env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


# ---- workflows --------------------------------------------------------------------------------------------------
def scale_prompt(image: str = "x.png", prefix: str = "hg") -> dict:
    """LoadImage -> ImageScale -> SaveImage in the API format."""
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                         "width": 4, "height": 4, "crop": "disabled"}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}}}


def core_object_info() -> dict:
    from humangen.runner.core_nodes import NODE_CLASS_MAPPINGS as core

    def jsonable(x):
        if isinstance(x, (tuple, list)):
            return [jsonable(v) for v in x]
        if isinstance(x, dict):
            return {k: jsonable(v) for k, v in x.items()}
        return x

    info = {}
    for node_id, cls in core.items():
        types = jsonable(cls.INPUT_TYPES())
        if node_id == "LoadImage":
            types["required"]["image"][0] = ["x.png"]
        info[node_id] = {"input": types, "input_order": {k: list(v) for k, v in types.items()},
                         "output": list(cls.RETURN_TYPES), "output_name": list(cls.RETURN_TYPES),
                         "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}
    return info


# ---- hostile server ---------------------------------------------------------------------------------------------
class Behaviour:
    """What to answer; a value per endpoint ("ok" = like ComfyUI). Callables get the handler and return True when
    they answered. Counts requests per endpoint."""

    def __init__(self, **modes: Any):
        self.modes = {"object_info": "ok", "prompt": "ok", "history": "ok", "view": "ok", "upload": "ok"}
        self.modes.update(modes)
        self.outputs: Any = [{"filename": "result.png", "subfolder": "", "type": "output"}]
        self.node_outputs: Any = None  # replaces {"3": {"images": outputs}} when set
        self.files = {"result.png": tiny_png((9, 9, 9))}
        self.uploads: dict[str, bytes] = {}
        self.prompts: list[dict] = []
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()

    def hit(self, endpoint: str) -> int:
        with self.lock:
            self.hits[endpoint] = self.hits.get(endpoint, 0) + 1
            return self.hits[endpoint]


class HostileServer:
    """A ThreadingHTTPServer on 127.0.0.1:<free port> that answers per `Behaviour`; `stop()` ends every loop."""

    def __init__(self, behaviour: Behaviour):
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.httpd.handle_error = lambda request, address: None  # a client that hung up is expected here
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _handler(server: HostileServer):
    b = server.behaviour

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        behaviour = b

        def log_message(self, *args):
            pass

        def send(self, code: int, body: Any, ctype: str = "application/json", length: int | None = None):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data) if length is None else length))
            self.end_headers()
            self.wfile.write(data)

        # hostile ways to answer, each bounded
        def reset(self):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        def drip(self, seconds: float = 8.0):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            end = time.monotonic() + seconds
            try:
                while time.monotonic() < end and not server.stopping.is_set():
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass

        def stall(self, seconds: float = 8.0):
            server.stopping.wait(seconds)

        def stream(self, total: int, declared: int | None, chunk: bytes = b"\0" * 65536):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            if declared is not None:
                self.send_header("Content-Length", str(declared))
            self.end_headers()
            sent = 0
            try:
                while sent < total and not server.stopping.is_set():
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except OSError:
                pass

        def common(self, mode: Any, ok: Callable[[], None]) -> None:
            if callable(mode) and mode(self):
                return
            if mode == "ok" or callable(mode):
                return ok()
            if mode == "reset":
                return self.reset()
            if mode == "drip":
                return self.drip()
            if mode == "stall":
                return self.stall()
            if mode == "nonjson":
                return self.send(200, b"<html>Bad Gateway</html>\n", "text/html")
            if mode == "deep":
                return self.send(200, b"[" * 200_000 + b"]" * 200_000)
            if mode == "list":
                return self.send(200, [1, 2, 3])
            if mode == "huge":
                return self.stream(3 * 1024 * 1024, 400 * 1024 * 1024)
            if isinstance(mode, int):
                return self.send(mode, {"error": f"HTTP {mode} from the hostile server"})
            raise AssertionError(f"unknown mode {mode!r}")

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            if url.path == "/object_info":
                b.hit("object_info")
                return self.common(b.modes["object_info"], lambda: self.send(200, core_object_info()))
            if url.path.startswith("/history/"):
                b.hit("history")
                pid = urllib.parse.unquote(url.path.split("/", 2)[2])

                def ok():
                    outputs = b.node_outputs if b.node_outputs is not None else {"3": {"images": b.outputs}}
                    self.send(200, {pid: {"prompt": [0, pid, {}, {}, ["3"]], "outputs": outputs,
                                          "status": {"status_str": "success", "completed": True, "messages": []}}})
                return self.common(b.modes["history"], ok)
            if url.path == "/view":
                b.hit("view")
                q = urllib.parse.parse_qs(url.query)

                def ok():
                    data = b.files.get(q.get("filename", [""])[0])
                    return self.send(200, data, "image/png") if data else self.send(404, {"error": "no file"})
                return self.common(b.modes["view"], ok)
            self.send(404, {"error": "unknown"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0) or 0)
            body = self.rfile.read(min(length, 64 * 1024 * 1024))
            if self.path == "/prompt":
                b.hit("prompt")

                def ok():
                    b.prompts.append(json.loads(body)["prompt"])
                    self.send(200, {"prompt_id": uuid.uuid4().hex, "number": len(b.prompts), "node_errors": {}})
                return self.common(b.modes["prompt"], ok)
            if self.path == "/upload/image":
                b.hit("upload")

                def ok():
                    import email.parser
                    msg = email.parser.BytesParser().parsebytes(
                        b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
                    for part in msg.get_payload():
                        if part.get_param("name", header="content-disposition") == "image":
                            name = part.get_filename()
                            b.uploads[name] = part.get_payload(decode=True)
                            return self.send(200, {"name": name, "subfolder": "", "type": "input"})
                    self.send(400, {"error": "no image"})
                return self.common(b.modes["upload"], ok)
            if self.path == "/interrupt":
                b.hit("interrupt")
                return self.send(200, {})
            self.send(404, {"error": "unknown"})

    return Handler


# ---- fixtures (imported by the test modules; this folder has no conftest.py) ----------------------------------
import pytest  # noqa: E402


@pytest.fixture
def box(tmp_path):
    sandbox = Sandbox(tmp_path / "box")
    yield sandbox
    sandbox.check()


@pytest.fixture
def hostile():
    """hostile(**modes) -> (HostileServer, Behaviour); every server is stopped after the test."""
    started = []

    def start(**modes):
        behaviour = Behaviour(**modes)
        server = HostileServer(behaviour)
        started.append(server)
        return server, behaviour

    yield start
    for server in started:
        server.stop()
