"""`--server URL`: run the jobs on one or more running ComfyUI servers instead of in-process.

Per job: upload the LoadImage files found in `--input-dir` (POST /upload/image), POST /prompt, poll
GET /history/{id} until the entry is completed (the websocket's success can come before the history entry),
then download every output file with GET /view into `--out`, never overwriting a file. A batch is spread over
the servers: one worker per server takes the next job from a shared, lazily filled source. Standard library only.

A server is untrusted, like a workflow file: every answer is bounded in size and time and checked for shape.
- Each job has a wall-clock deadline (`--timeout`, and the run's `--deadline`): a watchdog closes the connection
  when it passes, so a server that drips one byte a second or never answers cannot hold the runner.
- Bodies are read in chunks up to a cap (JSON answers MAX_JSON_BYTES, files `max_file_bytes`); files are streamed
  to a temporary file next to their target, never into memory, and linked into place only when complete.
- Output names are only ever written inside `--out`: a plain file name, in the server's subfolder resolved inside
  `--out` (utils.paths.confine); anything else fails the job before any file of it is written.
- Only files that resolve inside `--input-dir` are uploaded.
- Errors (no JSON, HTTP errors, resets, stalls) are one RemoteError line naming the server and the request; only
  transient ones (connection refused/reset, HTTP 429/502/503/504) are retried, a few times, with backoff.
"""
from __future__ import annotations

import http.client
import json
import mimetypes
import os
import socket
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..utils import host, limits
from ..utils.errors import HumanGenError, one_line
from ..utils.paths import PathOutsideFolderError, confine, write_next_free
from .specs import NodeSpec, spec_from_object_info
from .workflow import WorkflowError

MAX_JSON_BYTES = 64 * 1024 * 1024  # /object_info of a server with many node packs is a few MiB
MAX_FILE_BYTES = 1024 * 1024 * 1024  # one downloaded output file (--max-file-mb)
MAX_UPLOAD_BYTES = 256 * 1024 * 1024  # one LoadImage file sent to a server
MAX_ERROR_BODY = 64 * 1024  # what is read of an HTTP error answer
OBJECT_INFO_SECONDS = 120.0  # /object_info deadline (or --timeout when shorter)
RETRIES = 3  # extra tries for a transient error
BACKOFF_SECONDS = 0.25  # first pause before a retry; doubled each time
TRANSIENT_STATUS = {429, 502, 503, 504}
CHUNK = 64 * 1024


class RemoteError(RuntimeError):
    """A server could not be reached, answered something unusable, or a job failed on it. One line that names the
    server and the request (the runner adds the job)."""


class _Transient(Exception):
    """A failure worth one more try (the request may not have reached the server, or it asked us to retry)."""

    def __init__(self, problem: str, sent: bool, partial: bool = False, reached: bool = True):
        super().__init__(problem)
        self.sent = sent  # False: the request was not processed (safe to retry even a POST)
        self.partial = partial  # part of the body already went to the caller's sink (a retry would repeat it)
        self.reached = reached  # False: no connection to the server at all


@dataclass
class Budget:
    """A wall-clock deadline (time.monotonic) and what set it, for the message when it passes."""
    at: float
    reason: str

    @classmethod
    def after(cls, seconds: float, reason: str) -> "Budget":
        return cls(time.monotonic() + seconds, reason)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def sooner(self, other: "Budget | None") -> "Budget":
        return other if other is not None and other.at < self.at else self


@dataclass
class RemoteJob:
    index: int
    prompt: dict | None
    label: str = ""
    server: str = ""
    prompt_id: str = ""
    files: list[str] = field(default_factory=list)
    error: BaseException | None = None
    seconds: float = 0.0
    finished: bool = False  # its worker is done with it (an interrupt can leave a started job unfinished)


@dataclass
class _Answer:
    status: int
    body: bytes


class Server:
    def __init__(self, url: str, timeout: float = OBJECT_INFO_SECONDS):
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        try:  # urlsplit refuses a broken IPv6 host ('http://[::1'), .port a port that is not a number
            parts = urllib.parse.urlsplit(self.url)
            port = parts.port
        except ValueError:
            parts, port = None, -1
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise RemoteError(f"{one_line(url)}: not a server address; use http://HOST:PORT")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, port
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout  # default budget of calls made without one (object_info, interrupt)
        self.client_id = uuid.uuid4().hex

    def __repr__(self) -> str:
        return f"Server({self.url})"

    # ---- HTTP ------------------------------------------------------------------------------------------------
    def _budget(self, budget: Budget | None, what: str) -> Budget:
        return budget or Budget.after(self.timeout, f"the {self.timeout:g} s limit for {what}")

    def request(self, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None,
                budget: Budget | None = None, limit: int = MAX_JSON_BYTES,
                sink: Callable[[bytes], None] | None = None, stop: threading.Event | None = None,
                retry_sent: bool | None = None) -> _Answer:
        """One HTTP exchange within `budget`, the body capped at `limit` (given to `sink` chunk by chunk when set,
        else returned). Transient failures are retried (requests that reached the server only when `retry_sent`,
        by default for GET). Any failure is a RemoteError naming the server and the request."""
        what = f"{method} {path.split('?')[0]}"
        budget = self._budget(budget, what)
        retry_sent = method == "GET" if retry_sent is None else retry_sent
        pause = BACKOFF_SECONDS
        for attempt in range(RETRIES + 1):
            try:
                return self._exchange(method, path, body, headers or {}, budget, limit, sink, stop, what)
            except _Transient as exc:
                if attempt == RETRIES or (exc.sent and not retry_sent) or exc.partial:
                    tries = f" (after {attempt + 1} tries)" if attempt else ""
                    if not exc.reached:
                        raise RemoteError(f"{self.url}: cannot reach the server ({exc}){tries}; is ComfyUI running "
                                          "there (python main.py --listen ...)?") from None
                    raise RemoteError(f"{self.url}: {what} failed: {exc}{tries}") from None
                if budget.remaining() < pause:
                    raise self._late(budget, what) from None
                time.sleep(pause)
                pause *= 2
        raise AssertionError("unreachable")

    def _late(self, budget: Budget, what: str) -> RemoteError:
        return RemoteError(f"{self.url}: {what}: no complete answer within {budget.reason}")

    def _exchange(self, method, path, body, headers, budget, limit, sink, stop, what) -> _Answer:
        remaining = budget.remaining()
        if remaining <= 0:
            raise self._late(budget, what)
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=remaining)
        fired = threading.Event()
        sock_ref: list[socket.socket] = []

        def watchdog() -> None:  # the deadline passed: unblock whatever read or write is waiting
            fired.set()
            for sock in sock_ref:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timer = threading.Timer(remaining, watchdog)
        timer.daemon = True
        timer.start()
        sent = False
        total = 0
        try:
            try:
                conn.connect()
            except ConnectionRefusedError:
                raise _Transient("connection refused", False, reached=False) from None
            sock_ref.append(conn.sock)
            conn.request(method, self.base_path + path, body=body, headers=headers)
            sent = True
            resp = conn.getresponse()
            status = resp.status
            if status in TRANSIENT_STATUS:
                raise _Transient(f"HTTP {status} (server busy)", status != 503 and status != 429)
            cap = limit if status == 200 else MAX_ERROR_BODY
            length = resp.getheader("Content-Length")
            declared = limits.plain_int((length or "").strip())
            if status == 200 and declared is not None and declared > limit:
                raise RemoteError(f"{self.url}: {what}: the answer is {declared} bytes; at most {limit} are "
                                  "accepted")
            chunks = []
            while True:
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt
                left = budget.remaining()
                if left <= 0:
                    raise self._late(budget, what)
                if sock_ref:
                    sock_ref[0].settimeout(left)
                chunk = resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK)
                if not chunk:
                    if fired.is_set():  # the watchdog closed the connection: not a complete answer
                        raise self._late(budget, what)
                    break
                total += len(chunk)
                if total > cap:
                    if status != 200:
                        break  # enough of an error page to quote
                    raise RemoteError(f"{self.url}: {what}: the answer is larger than {limit} bytes; refused")
                if sink is not None and status == 200:
                    sink(chunk)
                else:
                    chunks.append(chunk)
            return _Answer(status, b"".join(chunks))
        except (RemoteError, _Transient, KeyboardInterrupt):
            raise
        except (socket.timeout, TimeoutError):
            raise self._late(budget, what) from None
        except (http.client.IncompleteRead, ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
                http.client.RemoteDisconnected) as exc:
            if fired.is_set():
                raise self._late(budget, what) from None
            raise _Transient(f"the connection was cut ({type(exc).__name__})", sent,
                             partial=sink is not None and total > 0) from None
        except (http.client.HTTPException, OSError, ValueError) as exc:
            if fired.is_set():
                raise self._late(budget, what) from None
            reason = getattr(exc, "strerror", None) or one_line(exc) or type(exc).__name__
            if not sent:
                raise RemoteError(f"{self.url}: cannot reach the server ({reason}); is ComfyUI running there "
                                  "(python main.py --listen ...)?") from None
            raise RemoteError(f"{self.url}: {what}: broken answer ({type(exc).__name__}: {one_line(reason)})") from None
        finally:
            timer.cancel()
            conn.close()

    def _json(self, answer: _Answer, what: str) -> Any:
        if answer.status != 200:
            raise RemoteError(f"{self.url}: {what} failed with HTTP {answer.status}{_quote(answer.body)}")
        text = answer.body.decode("utf-8", errors="replace")
        if not text.strip():
            return None
        try:
            return limits.parse_json(text, what)
        except ValueError:  # malformed or nested deeper than the pack's JSON limit
            raise RemoteError(f"{self.url}: {what}: the answer is not JSON{_quote(answer.body)}") from None

    def get_json(self, path: str, *, budget: Budget | None = None, stop: threading.Event | None = None) -> Any:
        return self._json(self.request("GET", path, budget=budget, stop=stop), f"GET {path}")

    def post_json(self, path: str, body: Any, *, budget: Budget | None = None) -> Any:
        data = json.dumps(body).encode("utf-8")
        answer = self.request("POST", path, body=data, headers={"Content-Type": "application/json"},
                              budget=budget)
        return self._json(answer, f"POST {path}")

    def get_bytes(self, path: str, *, budget: Budget | None = None, limit: int = MAX_FILE_BYTES) -> bytes:
        """A small binary answer, in memory (at most `limit` bytes); files are downloaded with `download`."""
        answer = self.request("GET", path, budget=budget, limit=limit)
        if answer.status != 200:
            raise RemoteError(f"{self.url}: GET {path.split('?')[0]} failed with HTTP {answer.status}"
                              f"{_quote(answer.body)}")
        return answer.body

    # ---- ComfyUI API -----------------------------------------------------------------------------------------
    def object_info(self, budget: Budget | None = None) -> dict[str, NodeSpec]:
        """Node definitions; entries that are not node definitions are left out (a node type the workflow then
        uses is reported as unknown)."""
        info = self.get_json("/object_info", budget=budget)
        if not isinstance(info, dict):
            raise RemoteError(f"{self.url}: GET /object_info: expected an object of node definitions, got "
                              f"{type(info).__name__}")
        specs = {}
        for node_id, entry in info.items():
            if not isinstance(entry, dict):
                continue
            try:
                specs[node_id] = spec_from_object_info(node_id, entry)
            except (TypeError, ValueError, AttributeError, KeyError, IndexError):
                continue
        return specs

    def upload_image(self, path: str | os.PathLike, budget: Budget | None = None) -> str:
        """POST /upload/image (never overwriting on the server); returns the name to use in LoadImage."""
        path = Path(path)
        size = path.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise RemoteError(f"{self.url}: {path.name} is {size} bytes; at most {MAX_UPLOAD_BYTES} are uploaded")
        boundary = uuid.uuid4().hex
        name = "".join(c if c.isprintable() and c not in '"\\' else "_" for c in path.name)
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        payload = path.read_bytes()
        parts = [
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ninput\r\n".encode(),
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\nfalse\r\n".encode(),
            (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
             f"Content-Type: {ctype}\r\n\r\n").encode() + payload + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        answer = self._json(self.request("POST", "/upload/image", body=b"".join(parts), budget=budget,
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}),
                            "POST /upload/image")
        uploaded = answer.get("name") if isinstance(answer, dict) else None
        sub = answer.get("subfolder") if isinstance(answer, dict) else None
        if not isinstance(uploaded, str) or not uploaded or not isinstance(sub, (str, type(None))):
            raise RemoteError(f"{self.url}: POST /upload/image: unexpected answer {one_line(answer, 120)}")
        return f"{sub}/{uploaded}" if sub else uploaded

    def submit(self, prompt: dict, extra_data: dict | None = None, budget: Budget | None = None) -> str:
        body = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            body["extra_data"] = extra_data
        answer = self.request("POST", "/prompt", body=json.dumps(body).encode("utf-8"),
                              headers={"Content-Type": "application/json"}, budget=budget)
        if answer.status == 400:
            raise _validation_error(self.url, answer.body, prompt)
        answer = self._json(answer, "POST /prompt")
        prompt_id = answer.get("prompt_id") if isinstance(answer, dict) else None
        if not isinstance(prompt_id, (str, int)) or isinstance(prompt_id, bool) or not str(prompt_id):
            raise RemoteError(f"{self.url}: POST /prompt: unexpected answer {one_line(answer, 120)}")
        return str(prompt_id)

    def wait(self, prompt_id: str, *, budget: Budget | None = None, timeout: float | None = None,
             poll: float = 0.2, stop: threading.Event | None = None) -> dict:
        """Poll /history until the job's entry is complete; its entry. Bounded by `budget` (or `timeout` seconds)."""
        if budget is None:
            seconds = float(self.timeout if timeout is None else timeout)
            budget = Budget.after(seconds, f"the {seconds:g} s limit (--timeout)")
        what = f"GET /history/{one_line(prompt_id, 60)}"
        while True:
            try:
                history = self.get_json(f"/history/{urllib.parse.quote(prompt_id, safe='')}", budget=budget,
                                        stop=stop)
            except RemoteError:
                if budget.remaining() <= 0:  # the poll in flight was cut by the deadline
                    raise RemoteError(f"{self.url}: job {one_line(prompt_id, 60)} did not finish within "
                                      f"{budget.reason}") from None
                raise
            if history is not None and not isinstance(history, dict):
                raise RemoteError(f"{self.url}: {what}: expected an object, got {type(history).__name__}")
            entry = (history or {}).get(prompt_id)
            if entry is not None and not isinstance(entry, dict):
                raise RemoteError(f"{self.url}: {what}: the job's entry is {type(entry).__name__}, not an object")
            if entry:
                status = entry.get("status") or {}
                if not isinstance(status, dict):
                    raise RemoteError(f"{self.url}: {what}: 'status' is {type(status).__name__}, not an object")
                if status.get("status_str") == "error":
                    raise RemoteError(f"{self.url}: {_execution_error(status)}")
                if status.get("completed") is True or (not status and "outputs" in entry):
                    return entry
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            if budget.remaining() <= 0:
                raise RemoteError(f"{self.url}: job {one_line(prompt_id, 60)} did not finish within {budget.reason}")
            time.sleep(max(0.0, min(poll, budget.remaining())))

    def output_files(self, entry: dict, out_dir: str, types: tuple[str, ...] = ("output",)) -> list[tuple]:
        """(query, folder, stem, ext) of each file the job's output nodes report with a type in `types`, each
        checked: a plain file name in a subfolder that stays inside `out_dir`. Raises RemoteError for the first
        name that is not (before anything is downloaded)."""
        outputs = entry.get("outputs") or {}
        if not isinstance(outputs, dict):
            raise RemoteError(f"{self.url}: history 'outputs' is {type(outputs).__name__}, not an object")
        plan = []
        for nid, node_output in outputs.items():
            if not isinstance(node_output, dict):
                raise RemoteError(f"{self.url}: history output of node {one_line(nid, 40)} is not an object")
            # images, and the other files output nodes report the same way (e.g. HumanGenSavePose's pose JSON)
            for key in ("images", "files"):
                items = node_output.get(key) or []
                if not isinstance(items, list):
                    raise RemoteError(f"{self.url}: node {one_line(nid, 40)} reports '{key}' as "
                                      f"{type(items).__name__}, not a list")
                for item in items:
                    if not isinstance(item, dict):
                        raise RemoteError(f"{self.url}: node {one_line(nid, 40)} reports a file that is not an object")
                    kind = item.get("type", "output")
                    if not isinstance(kind, str):
                        raise RemoteError(f"{self.url}: node {one_line(nid, 40)} reports a file of type {one_line(kind)}")
                    if kind not in types:
                        continue
                    plan.append(self._checked_target(item, kind, out_dir, nid))
        return plan

    def _checked_target(self, item: dict, kind: str, out_dir: str, nid: str) -> tuple:
        filename, subfolder = item.get("filename"), item.get("subfolder") or ""
        where = f"{self.url}: node {one_line(nid, 40)} reports the output file"
        if not isinstance(filename, str) or not isinstance(subfolder, str):
            raise RemoteError(f"{where} {one_line(item, 120)}: filename and subfolder must be text; refused")
        plain = (filename and filename not in (".", "..") and "/" not in filename and "\\" not in filename
                 and len(filename) <= 255 and filename.isprintable())
        if not plain:
            raise RemoteError(f"{where} {one_line(filename)!r}: not a plain file name; refused, nothing of this job "
                              f"is written outside --out {out_dir}")
        try:
            folder = confine(out_dir, subfolder.replace("\\", "/"), node="--server", input_name="subfolder",
                             allow_root=True) if subfolder else Path(out_dir).resolve()
            confine(folder, filename, node="--server", input_name="filename")  # e.g. a symlink planted there
        except PathOutsideFolderError:
            raise RemoteError(f"{where} {one_line(filename)!r} in subfolder {one_line(subfolder)!r}: outside --out "
                              f"{out_dir}; refused") from None
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        stem, ext = os.path.splitext(filename)
        return query, folder, stem, ext

    def download(self, entry: dict, out_dir: str, types: tuple[str, ...] = ("output",), *,
                 budget: Budget | None = None, stop: threading.Event | None = None,
                 max_file_bytes: int = MAX_FILE_BYTES) -> list[str]:
        """Download every reported output file into `out_dir`: streamed to a temporary file, linked to the first
        free name (`name.png`, `name-1.png`, ...) when complete. Names are all checked before the first download."""
        written = []
        for query, folder, stem, ext in self.output_files(entry, out_dir, types):
            def fetch(tmp: str, query=query) -> None:
                with open(tmp, "wb") as f:
                    answer = self.request("GET", f"/view?{query}", budget=budget, limit=max_file_bytes,
                                          sink=f.write, stop=stop)
                if answer.status != 200:
                    raise RemoteError(f"{self.url}: GET /view ({one_line(urllib.parse.parse_qs(query)['filename'][0])}"
                                      f") failed with HTTP {answer.status}{_quote(answer.body)}")
            path = write_next_free(folder, lambda n: f"{stem}{ext}" if n == 0 else f"{stem}-{n}{ext}", 0,
                                   data=fetch, node="--server")
            written.append(str(path))
        return written

    def interrupt(self) -> None:
        try:
            self.request("POST", "/interrupt", body=b"{}", headers={"Content-Type": "application/json"},
                         budget=Budget.after(5.0, "5 s"), retry_sent=False)
        except Exception:  # noqa: BLE001 - best effort while stopping
            pass


def _quote(body: bytes) -> str:
    text = one_line(body.decode("utf-8", errors="replace").strip(), 160)
    return f": {text}" if text else ""


def _validation_error(url: str, raw: bytes, prompt: dict) -> WorkflowError:
    try:
        body = limits.parse_json(raw.decode("utf-8", errors="replace"), "POST /prompt")
    except ValueError:
        return WorkflowError(f"{url}: POST /prompt failed with HTTP 400{_quote(raw)}")
    if not isinstance(body, dict):
        return WorkflowError(f"{url}: POST /prompt failed with HTTP 400{_quote(raw)}")
    node_errors = body.get("node_errors")
    for nid, info in (node_errors.items() if isinstance(node_errors, dict) else []):
        if not isinstance(info, dict) or not isinstance(info.get("errors"), list):
            continue
        for err in info["errors"]:
            if not isinstance(err, dict):
                continue
            extra = err.get("extra_info") if isinstance(err.get("extra_info"), dict) else {}
            node = prompt.get(str(nid))
            ctype = info.get("class_type") or (node.get("class_type") if isinstance(node, dict) else None)
            input_name = extra.get("input_name")
            return WorkflowError(
                f"rejected by {url}: {one_line(err.get('message', ''))}: {one_line(err.get('details', ''))}".rstrip(": "),
                one_line(nid, 60), one_line(ctype, 80) if ctype else None, one_line(input_name, 80) if input_name else None)
    error = body.get("error")
    if isinstance(error, dict):
        return WorkflowError(f"rejected by {url}: {one_line(error.get('message', body))} "
                             f"{one_line(error.get('details', ''))}".strip())
    return WorkflowError(f"rejected by {url}: {one_line(body)}")


def _execution_error(status: dict) -> str:
    messages = status.get("messages")
    for message in messages if isinstance(messages, list) else []:
        if not (isinstance(message, (list, tuple)) and len(message) == 2):
            continue
        kind, data = message
        data = data if isinstance(data, dict) else {}
        if kind == "execution_error":
            return (f"node {one_line(data.get('node_id'), 40)} ({one_line(data.get('node_type'), 80)}) failed: "
                    f"{one_line(data.get('exception_type', 'error'), 80)}: "
                    f"{one_line(data.get('exception_message', ''))}".rstrip())
        if kind == "execution_interrupted":
            return "the job was interrupted on the server"
    return "the job failed on the server (see its log)"


def upload_inputs(server: Server, prompt: dict, specs: dict[str, NodeSpec], input_dir: str,
                  uploaded: dict[str, str], budget: Budget | None = None) -> dict:
    """Upload LoadImage-style files that exist in `input_dir` and point the prompt at the uploaded names. A name
    that resolves outside `input_dir` (`../secret.txt`, an absolute path, a symlink out) is refused: only files
    inside it are ever sent. Names annotated ` [output]`/` [temp]` are the server's own files and are left as
    they are."""
    prompt = json.loads(json.dumps(prompt))
    for nid, node in prompt.items():
        spec = specs.get(node["class_type"])
        if spec is None:
            continue
        for inp in spec.inputs:
            value = node["inputs"].get(inp.name)
            if not (inp.options.get("image_upload") and isinstance(value, str)):
                continue
            folder, name = host.split_annotation(value)
            if folder != "input":
                continue  # the server's own output/temp file
            try:
                local = confine(input_dir, name, node=f"node {nid} ({node['class_type']})", input_name=inp.name)
            except PathOutsideFolderError:
                raise WorkflowError(f"{one_line(value)!r} is outside --input-dir {input_dir}; only files inside it "
                                    "are uploaded (give the name relative to that folder)", nid, node["class_type"],
                                    inp.name) from None
            if not local.is_file():
                continue  # maybe it is on the server already
            key = f"{server.url}|{local}"
            if key not in uploaded:
                uploaded[key] = server.upload_image(local, budget)
            node["inputs"][inp.name] = uploaded[key]
    return prompt


def run_remote(servers: list[Server], jobs: Iterable[RemoteJob], *, specs: dict[str, NodeSpec], out_dir: str,
               input_dir: str, timeout: float, deadline: Budget | None = None, extra_data: dict | None = None,
               stop: threading.Event | None = None, on_done: Callable[[RemoteJob], None] | None = None,
               max_file_bytes: int = MAX_FILE_BYTES) -> list[RemoteJob]:
    """Run `jobs` (taken one at a time from the iterable) spread over `servers` (one worker each); returns the
    jobs that were started. Failed jobs carry `.error`; others `.files`. Each job must finish within `timeout`
    seconds and before `deadline` (the whole run); after the deadline no job is started."""
    stop = stop or threading.Event()
    source = iter(jobs)
    source_lock = threading.Lock()
    started: list[RemoteJob] = []
    uploaded: dict[str, str] = {}
    # one upload of a file per server: workers of different servers upload at the same time, two workers of one
    # server (its URL given twice) take turns
    upload_locks = {s.url: threading.Lock() for s in servers}
    busy: dict[str, bool] = {}

    def next_job() -> RemoteJob | None:
        with source_lock:
            if stop.is_set() or (deadline is not None and deadline.remaining() <= 0):
                return None
            job = next(source, None)
            if job is not None:
                started.append(job)
            return job

    def worker(server: Server) -> None:
        while True:
            job = next_job()
            if job is None:
                return
            job.server = server.url
            t0 = time.perf_counter()
            busy[server.url] = True
            budget = Budget.after(timeout, f"the job's --timeout of {timeout:g} s").sooner(deadline)
            try:
                with upload_locks[server.url]:
                    prompt = upload_inputs(server, job.prompt, specs, input_dir, uploaded, budget)
                job.prompt_id = server.submit(prompt, extra_data, budget)
                entry = server.wait(job.prompt_id, budget=budget, stop=stop)
                job.files = server.download(entry, out_dir, budget=budget, stop=stop, max_file_bytes=max_file_bytes)
            except KeyboardInterrupt:
                job.error = KeyboardInterrupt("interrupted")
            except (RemoteError, WorkflowError) as exc:
                job.error = exc
            except HumanGenError as exc:  # e.g. a local file that could not be written
                job.error = RemoteError(f"{server.url}: {exc}")
            except Exception as exc:  # noqa: BLE001 - recorded per job as one line, never a traceback
                job.error = RemoteError(f"{server.url}: unexpected answer ({type(exc).__name__}: {one_line(exc)})")
            finally:
                busy[server.url] = False
                job.seconds = time.perf_counter() - t0
                job.prompt = None  # done: a long batch keeps only the results
                job.finished = True
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
    return started
