"""`--server` mode against a small local stand-in of ComfyUI's HTTP API (/object_info, /upload/image, /prompt,
/history/{id}, /view, /interrupt) on 127.0.0.1: a threaded http.server on a free port, shut down after each test."""
from __future__ import annotations

import email.parser
import io
import json
import socket
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from hgtoys import ASSETS, WORKFLOWS
from humangen.runner.cli import main
from humangen.runner.core_nodes import NODE_CLASS_MAPPINGS as CORE


def _jsonable(x):
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    return x


class StandIn:
    """What a ComfyUI server answers, reduced to what the runner uses. Thread-safe; counts what it was asked."""

    def __init__(self, name: str):
        self.name = name
        self.lock = threading.Lock()
        self.uploads: dict[str, bytes] = {}
        self.prompts: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.files: dict[str, bytes] = {}
        self.interrupted = 0
        self.counter = 0
        self.upload_seconds = 0.0  # how long each upload takes to answer
        self.upload_times: list[tuple[float, float]] = []  # (start, end) of each upload, time.monotonic()

    def object_info(self):
        info = {}
        for node_id, cls in CORE.items():
            types = _jsonable(cls.INPUT_TYPES())
            if node_id == "LoadImage":
                types["required"]["image"][0] = sorted(self.uploads)
            info[node_id] = {"input": types, "input_order": {k: list(v) for k, v in types.items()},
                             "output": list(cls.RETURN_TYPES), "output_name": list(cls.RETURN_TYPES),
                             "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}
        return info

    def submit(self, prompt):
        for nid, node in prompt.items():
            if node["class_type"] not in CORE:
                return 400, {"error": {"type": "invalid_prompt", "message": "Cannot execute because node "
                                       f"{node['class_type']} does not exist."}, "node_errors": {}}
            width = node["inputs"].get("width")
            if isinstance(width, int) and width > 16384:
                return 400, {"error": {"type": "prompt_outputs_failed_validation", "message": "failed"},
                             "node_errors": {nid: {"class_type": node["class_type"], "errors": [
                                 {"type": "value_bigger_than_max", "message": "Value bigger than max",
                                  "details": f"width {width} > 16384", "extra_info": {"input_name": "width"}}]}}}
            if node["class_type"] == "LoadImage" and node["inputs"]["image"] not in self.uploads:
                return 400, {"error": {"message": "invalid"}, "node_errors": {nid: {"class_type": "LoadImage",
                             "errors": [{"message": "Invalid image file", "details": node["inputs"]["image"]}]}}}
        pid = uuid.uuid4().hex
        with self.lock:
            self.prompts[pid] = prompt
        return 200, {"prompt_id": pid, "number": len(self.prompts), "node_errors": {}}

    def history(self, pid):
        with self.lock:
            self.polls[pid] = self.polls.get(pid, 0) + 1
            if pid not in self.prompts or self.polls[pid] < 2:  # not there yet on the first poll
                return {}
            prompt = self.prompts[pid]
            outputs, messages, status = {}, [], "success"
            for nid, node in prompt.items():
                if node["class_type"] != "SaveImage":
                    continue
                prefix = node["inputs"]["filename_prefix"]
                if prefix == "fail":
                    status = "error"
                    messages.append(["execution_error", {"node_id": "2", "node_type": "ImageScale",
                                                         "exception_type": "RuntimeError",
                                                         "exception_message": "out of memory"}])
                    continue
                scale = prompt[node["inputs"]["images"][0]]["inputs"]
                self.counter += 1
                name = f"{prefix}_{self.counter:05}_.png"
                buf = io.BytesIO()
                Image.new("RGB", (scale["width"], scale["height"]), (10, 20, 30)).save(buf, format="PNG")
                self.files[name] = buf.getvalue()
                outputs[nid] = {"images": [{"filename": name, "subfolder": "", "type": "output"},
                                           {"filename": "preview.png", "subfolder": "", "type": "temp"}]}
                if prefix == "with_pose":  # as HumanGenSavePose reports a non-image file
                    self.files["pose_00001.json"] = b'{"people": []}'
                    outputs[nid]["files"] = [{"filename": "pose_00001.json", "subfolder": "poses", "type": "output"}]
            return {pid: {"prompt": [0, pid, prompt, {}, list(outputs)], "outputs": outputs,
                          "status": {"status_str": status, "completed": status == "success",
                                     "messages": messages}}}


def _handler(state: StandIn):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, code, body, ctype="application/json"):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            if url.path == "/object_info":
                return self._send(200, state.object_info())
            if url.path.startswith("/history/"):
                return self._send(200, state.history(url.path.split("/")[-1]))
            if url.path == "/view":
                q = urllib.parse.parse_qs(url.query)
                data = state.files.get(q["filename"][0])
                return self._send(200, data, "image/png") if data else self._send(404, {"error": "no file"})
            self._send(404, {"error": "unknown"})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/prompt":
                code, answer = state.submit(json.loads(body)["prompt"])
                return self._send(code, answer)
            if self.path == "/interrupt":
                state.interrupted += 1
                return self._send(200, {})
            if self.path == "/upload/image":
                start = time.monotonic()
                time.sleep(state.upload_seconds)
                state.upload_times.append((start, time.monotonic()))
                msg = email.parser.BytesParser().parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
                for part in msg.get_payload():
                    if part.get_param("name", header="content-disposition") == "image":
                        name = part.get_filename()
                        state.uploads[name] = part.get_payload(decode=True)
                        return self._send(200, {"name": name, "subfolder": "", "type": "input"})
            self._send(404, {"error": "unknown"})

    return Handler


@pytest.fixture
def servers():
    running = []

    def start(name="a"):
        state = StandIn(name)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        running.append((httpd, thread))
        return f"http://127.0.0.1:{httpd.server_address[1]}", state

    yield start
    for httpd, thread in running:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _remote(tmp_path, urls, *args):
    argv = ["run", *args, "--out", str(tmp_path / "out"), "--input-dir", str(ASSETS), "--quiet", "--timeout", "20"]
    for url in urls:
        argv += ["--server", url]
    return main(argv)


def test_batch_spread_over_two_servers_without_overwriting(tmp_path, servers, capsys):
    (url_a, a), (url_b, b) = servers("a"), servers("b")
    code = _remote(tmp_path, [url_a, url_b], str(WORKFLOWS / "image_scale.json"), "--batch", "2.width=20-23",
                   "--set", "2.height=10")
    assert code == 0, capsys.readouterr().err
    assert len(a.prompts) >= 1 and len(b.prompts) >= 1 and len(a.prompts) + len(b.prompts) == 4
    sent = sorted(p["2"]["inputs"]["width"] for s in (a, b) for p in s.prompts.values())
    assert sent == [20, 21, 22, 23]
    assert a.uploads["astronaut.png"] == (ASSETS / "astronaut.png").read_bytes()  # LoadImage file uploaded once
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) == 4  # both servers number from 00001: the second copy gets a new name, nothing replaced
    widths = sorted(Image.open(f).size[0] for f in files)
    assert widths == [20, 21, 22, 23]
    assert not any("preview" in f.name for f in files)  # only type=output images are downloaded
    out = capsys.readouterr()
    assert sorted(out.out.split()) == sorted(str(f) for f in files)


def test_uploads_to_different_servers_run_at_the_same_time_and_once_per_server(tmp_path, servers, capsys):
    (url_a, a), (url_b, b) = servers("a"), servers("b")
    a.upload_seconds = b.upload_seconds = 0.5
    code = _remote(tmp_path, [url_a, url_b], str(WORKFLOWS / "image_scale.json"), "--batch", "2.width=20-21",
                   "--set", "2.height=10")
    assert code == 0, capsys.readouterr().err
    (start_a, end_a), (start_b, end_b) = a.upload_times[0], b.upload_times[0]
    assert start_a < end_b and start_b < end_a  # they overlapped: one upload did not wait for the other
    url_c, c = servers("c")  # one server named twice: two workers, the file still goes up once
    assert _remote(tmp_path, [url_c, url_c], str(WORKFLOWS / "image_scale.json"), "--batch", "2.width=20-23",
                   "--set", "2.height=10") == 0
    assert len(c.upload_times) == 1 and len(c.prompts) == 4


def test_non_image_files_reported_by_output_nodes_are_downloaded(tmp_path, servers, capsys):
    url, _ = servers()
    code = _remote(tmp_path, [url], str(WORKFLOWS / "image_scale.json"), "--set", "3.filename_prefix=with_pose")
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "poses" / "pose_00001.json").read_bytes() == b'{"people": []}'


def test_validation_error_from_server_exit_2(tmp_path, servers, capsys):
    url, _ = servers()
    code = _remote(tmp_path, [url], str(WORKFLOWS / "api" / "image_scale.json"), "--set", "2.width=20000")
    assert code == 2
    err = capsys.readouterr().err
    assert "node 2 (ImageScale) input 'width': rejected by" in err and "width 20000 > 16384" in err


def test_execution_error_on_server_exit_1(tmp_path, servers, capsys):
    url, _ = servers()
    code = _remote(tmp_path, [url], str(WORKFLOWS / "api" / "image_scale.json"), "--set", "3.filename_prefix=fail")
    assert code == 1
    assert "node 2 (ImageScale) failed: RuntimeError: out of memory" in capsys.readouterr().err


def test_unreachable_server_exit_1(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = _remote(tmp_path, [f"http://127.0.0.1:{port}"], str(WORKFLOWS / "api" / "image_scale.json"))
    assert code == 1
    assert "cannot reach the server" in capsys.readouterr().err
