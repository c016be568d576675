"""`--server URL`: run the jobs on one or more running ComfyUI servers instead of in-process.

Per job: upload the LoadImage files found in `--input-dir` (POST /upload/image), POST /prompt, poll
GET /history/{id} until the entry is completed (the websocket's success can come before the history entry),
then download every output image with GET /view into `--out`, never overwriting a file. A batch is spread over
the servers: one worker per server takes the next job from a shared queue. Standard library only (urllib).
"""
from __future__ import annotations

import json
import mimetypes
import os
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from .specs import NodeSpec, spec_from_object_info
from .workflow import WorkflowError


class RemoteError(RuntimeError):
    """A server could not be reached, or a job failed on it (the message names server, node and class)."""


@dataclass
class RemoteJob:
    index: int
    prompt: dict
    label: str = ""
    server: str = ""
    prompt_id: str = ""
    files: list[str] = field(default_factory=list)
    error: BaseException | None = None
    seconds: float = 0.0


class Server:
    def __init__(self, url: str, timeout: float = 30.0):
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    def __repr__(self) -> str:
        return f"Server({self.url})"

    # ---- HTTP ------------------------------------------------------------------------------------------------
    def _open(self, path: str, data: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {},
                                     method="POST" if data is not None else "GET")
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError) as exc:
            raise RemoteError(f"{self.url}: cannot reach the server ({getattr(exc, 'reason', exc)}); is ComfyUI "
                              "running there (python main.py --listen ...)?") from None

    def get_json(self, path: str) -> Any:
        with self._open(path) as resp:
            return json.loads(resp.read().decode("utf-8") or "null")

    def post_json(self, path: str, body: Any) -> Any:
        data = json.dumps(body).encode("utf-8")
        with self._open(path, data, {"Content-Type": "application/json"}) as resp:
            text = resp.read().decode("utf-8")
            return json.loads(text) if text.strip() else None

    def get_bytes(self, path: str) -> bytes:
        with self._open(path) as resp:
            return resp.read()

    # ---- ComfyUI API -----------------------------------------------------------------------------------------
    def object_info(self) -> dict[str, NodeSpec]:
        info = self.get_json("/object_info")
        return {node_id: spec_from_object_info(node_id, entry) for node_id, entry in info.items()}

    def upload_image(self, path: str) -> str:
        """POST /upload/image (never overwriting on the server); returns the name to use in LoadImage."""
        boundary = uuid.uuid4().hex
        name = os.path.basename(path)
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        with open(path, "rb") as f:
            payload = f.read()
        parts = [
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ninput\r\n".encode(),
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\nfalse\r\n".encode(),
            (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
             f"Content-Type: {ctype}\r\n\r\n").encode() + payload + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        with self._open("/upload/image", b"".join(parts),
                        {"Content-Type": f"multipart/form-data; boundary={boundary}"}) as resp:
            answer = json.loads(resp.read().decode("utf-8"))
        sub = answer.get("subfolder") or ""
        return f"{sub}/{answer['name']}" if sub else answer["name"]

    def submit(self, prompt: dict, extra_data: dict | None = None) -> str:
        body = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            body["extra_data"] = extra_data
        try:
            answer = self.post_json("/prompt", body)
        except urllib.error.HTTPError as exc:
            raise _validation_error(self.url, exc, prompt) from None
        if not isinstance(answer, dict) or "prompt_id" not in answer:
            raise RemoteError(f"{self.url}: unexpected answer to POST /prompt: {answer!r}")
        return answer["prompt_id"]

    def wait(self, prompt_id: str, *, timeout: float, poll: float = 0.2,
             stop: threading.Event | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            history = self.get_json(f"/history/{urllib.parse.quote(prompt_id)}") or {}
            entry = history.get(prompt_id)
            if entry:
                status = entry.get("status") or {}
                if status.get("status_str") == "error":
                    raise RemoteError(f"{self.url}: {_execution_error(status)}")
                if status.get("completed") or (not status and "outputs" in entry):
                    return entry
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            if time.monotonic() > deadline:
                raise RemoteError(f"{self.url}: job {prompt_id} did not finish within {timeout:.0f} s "
                                  "(raise --timeout)")
            time.sleep(poll)

    def download(self, entry: dict, out_dir: str, types: tuple[str, ...] = ("output",)) -> list[str]:
        from .core_nodes import write_new_file
        written = []
        for node_output in (entry.get("outputs") or {}).values():
            # images, and the other files output nodes report the same way (e.g. HumanGenSavePose's pose JSON)
            for item in (node_output.get("images") or []) + (node_output.get("files") or []):
                if item.get("type", "output") not in types:
                    continue
                query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                                "type": item.get("type", "output")})
                data = self.get_bytes(f"/view?{query}")
                folder = os.path.join(out_dir, item.get("subfolder") or "")
                stem, ext = os.path.splitext(os.path.basename(item["filename"]))
                name, _ = write_new_file(folder, lambda n: f"{stem}{ext}" if n == 0 else f"{stem}-{n}{ext}",
                                         lambda f: f.write(data), 0)
                written.append(os.path.join(folder, name))
        return written

    def interrupt(self) -> None:
        try:
            self.post_json("/interrupt", {})
        except Exception:  # noqa: BLE001 - best effort while stopping
            pass


def _validation_error(url: str, exc: urllib.error.HTTPError, prompt: dict) -> WorkflowError:
    try:
        body = json.loads(exc.read().decode("utf-8"))
    except Exception:  # noqa: BLE001 - not JSON
        return WorkflowError(f"{url}: POST /prompt failed with HTTP {exc.code}")
    for nid, info in (body.get("node_errors") or {}).items():
        for err in info.get("errors") or []:
            extra = err.get("extra_info") or {}
            return WorkflowError(f"rejected by {url}: {err.get('message', '')}: {err.get('details', '')}".rstrip(": "),
                                 str(nid), info.get("class_type") or prompt.get(str(nid), {}).get("class_type"),
                                 extra.get("input_name"))
    error = body.get("error") or {}
    return WorkflowError(f"rejected by {url}: {error.get('message', body)} {error.get('details', '')}".strip())


def _execution_error(status: dict) -> str:
    for kind, data in status.get("messages") or []:
        if kind == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                    f"{data.get('exception_type', 'error')}: {data.get('exception_message', '')}".rstrip())
        if kind == "execution_interrupted":
            return "the job was interrupted on the server"
    return "the job failed on the server (see its log)"


def upload_inputs(server: Server, prompt: dict, specs: dict[str, NodeSpec], input_dir: str,
                  uploaded: dict[str, str]) -> dict:
    """Upload LoadImage-style files that exist in `input_dir` and point the prompt at the uploaded names."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        spec = specs.get(node["class_type"])
        if spec is None:
            continue
        for inp in spec.inputs:
            value = node["inputs"].get(inp.name)
            if not (inp.options.get("image_upload") and isinstance(value, str)):
                continue
            local = os.path.join(input_dir, value)
            if not os.path.isfile(local):
                continue  # maybe it is on the server already
            key = f"{server.url}|{os.path.abspath(local)}"
            if key not in uploaded:
                uploaded[key] = server.upload_image(local)
            node["inputs"][inp.name] = uploaded[key]
    return prompt


def run_remote(servers: list[Server], jobs: list[RemoteJob], *, specs: dict[str, NodeSpec], out_dir: str,
               input_dir: str, timeout: float, extra_data: dict | None = None,
               stop: threading.Event | None = None,
               on_done: Callable[[RemoteJob], None] | None = None) -> list[RemoteJob]:
    """Run `jobs` spread over `servers` (one worker each). Failed jobs carry `.error`; others `.files`."""
    stop = stop or threading.Event()
    todo: queue.Queue[RemoteJob] = queue.Queue()
    for job in jobs:
        todo.put(job)
    uploaded: dict[str, str] = {}
    lock = threading.Lock()
    busy: dict[str, bool] = {}

    def worker(server: Server) -> None:
        while not stop.is_set():
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            job.server = server.url
            t0 = time.perf_counter()
            busy[server.url] = True
            try:
                with lock:
                    prompt = upload_inputs(server, job.prompt, specs, input_dir, uploaded)
                job.prompt_id = server.submit(prompt, extra_data)
                entry = server.wait(job.prompt_id, timeout=timeout, stop=stop)
                job.files = server.download(entry, out_dir)
            except KeyboardInterrupt:
                job.error = KeyboardInterrupt("interrupted")
            except Exception as exc:  # noqa: BLE001 - recorded per job
                job.error = exc
            finally:
                busy[server.url] = False
                job.seconds = time.perf_counter() - t0
            if on_done is not None:
                on_done(job)

    threads = [threading.Thread(target=worker, args=(s,), name=f"humangen-remote-{i}", daemon=True)
               for i, s in enumerate(servers)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.1)
    except KeyboardInterrupt:
        stop.set()
    if stop.is_set():
        for s in servers:
            if busy.get(s.url):
                s.interrupt()
        for t in threads:
            t.join(timeout=5)
    return jobs
