"""`run --server` against a hostile ComfyUI stand-in on 127.0.0.1: output names that try to leave `--out`, answers
that are not JSON, HTTP errors, resets, slow drips, stalls, huge bodies, jobs that never finish, uploads that try
to leave `--input-dir`. Each case: the job fails (or the run is refused) with one line naming the server and the
request, no traceback, nothing written outside the allowed folders, no partial file, bounded time."""
from __future__ import annotations

import os
import time

import pytest

from adversarial.runner_helpers import (box, cli, cli_process, error_lines, hostile, run_args,  # noqa: F401
                                        scale_prompt)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    from humangen.runner import remote
    monkeypatch.setattr(remote, "BACKOFF_SECONDS", 0.01)


def _remote(capsys, box, url, *extra, prompt=None, timeout="3"):
    path = box.write("wf.json", prompt or scale_prompt())
    return cli(capsys, *run_args(box, path, "--server", url, "--timeout", timeout, *extra))


def _one_error(err: str, url: str) -> str:
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert url in lines[0], lines[0]
    return lines[0]


# ---- output names from the server ---------------------------------------------------------------------------
NAME_CASES = [
    ("dotdot-filename", "../../canary/evil.png", "", "not a plain file name"),
    ("absolute-filename", "{canary}/evil.png", "", "not a plain file name"),
    ("slash-filename", "a/b.png", "", "not a plain file name"),
    ("backslash-filename", "..\\..\\evil.png", "", "not a plain file name"),
    ("dotdot-only", "..", "", "not a plain file name"),
    ("dot-only", ".", "", "not a plain file name"),
    ("empty-filename", "", "", "not a plain file name"),
    ("nul-filename", "evil\x00.png", "", "not a plain file name"),
    ("newline-filename", "evil\n.png", "", "not a plain file name"),
    ("long-filename", "a" * 300 + ".png", "", "not a plain file name"),
    ("number-filename", 123, "", "filename and subfolder must be text"),
    ("dotdot-subfolder", "evil.png", "../../canary", "outside --out"),
    ("absolute-subfolder", "evil.png", "{canary}", "outside --out"),
    ("sneaky-subfolder", "evil.png", "a/../../../canary", "outside --out"),
    ("backslash-subfolder", "evil.png", "..\\..\\canary", "outside --out"),
    ("nul-subfolder", "evil.png", "a\x00b", "outside --out"),
    ("list-subfolder", "evil.png", ["a"], "filename and subfolder must be text"),
]


@pytest.mark.parametrize("filename,subfolder,expected", [c[1:] for c in NAME_CASES], ids=[c[0] for c in NAME_CASES])
def test_output_name_outside_out_is_refused(capsys, box, hostile, filename, subfolder, expected):
    server, b = hostile()
    fix = (lambda v: v.replace("{canary}", str(box.canary)) if isinstance(v, str) else v)
    good = {"filename": "result.png", "subfolder": "", "type": "output"}
    b.outputs = [good, {"filename": fix(filename), "subfolder": fix(subfolder), "type": "output"}]
    b.files["evil.png"] = b"evil"
    code, out, err = _remote(capsys, box, server.url)
    assert code == 1
    line = _one_error(err, server.url)
    assert "job 1/1 on" in line and expected in line and "refused" in line
    assert box.out_files() == []  # the whole job fails before any of its files is written
    assert b.hits.get("view", 0) == 0


def test_symlink_subfolder_out_of_out_is_refused(capsys, box, hostile):
    server, b = hostile()
    os.symlink(box.canary, box.out / "link")
    b.outputs = [{"filename": "evil.png", "subfolder": "link", "type": "output"}]
    code, _, err = _remote(capsys, box, server.url)
    assert code == 1 and "outside --out" in _one_error(err, server.url)
    os.unlink(box.out / "link")


def test_malformed_outputs_are_refused(capsys, box, hostile):
    server, b = hostile()
    for outputs, node_outputs, expected in [
            ("result.png", None, "reports 'images' as str, not a list"),
            (["result.png"], None, "reports a file that is not an object"),
            (None, ["3"], "history 'outputs' is list, not an object"),
            (None, {"3": "images"}, "history output of node 3 is not an object"),
            ([{"filename": "result.png", "type": ["output"]}], None, "reports a file of type")]:
        b.outputs, b.node_outputs = outputs, node_outputs
        code, _, err = _remote(capsys, box, server.url)
        assert code == 1 and expected in _one_error(err, server.url)
    assert box.out_files() == []


def test_subfolders_inside_out_and_name_clashes_are_fine(capsys, box, hostile):
    server, b = hostile()
    b.outputs = [{"filename": "result.png", "subfolder": "sub/dir", "type": "output"},
                 {"filename": "result.png", "subfolder": "sub/dir", "type": "output"},
                 {"filename": "preview.png", "subfolder": "../..", "type": "temp"}]  # not downloaded at all
    code, out, err = _remote(capsys, box, server.url)
    assert code == 0, err
    assert box.out_files() == ["sub/dir/result-1.png", "sub/dir/result.png"]
    assert (box.out / "sub/dir/result.png").read_bytes() == b.files["result.png"]
    assert b.uploads["x.png"] == (box.input / "x.png").read_bytes()


# ---- hostile answers ----------------------------------------------------------------------------------------
ANSWER_CASES = [
    ("object_info-nonjson", {"object_info": "nonjson"}, 1, "GET /object_info: the answer is not JSON: <html>Bad"),
    ("object_info-500", {"object_info": 500}, 1, "GET /object_info failed with HTTP 500"),
    ("object_info-404", {"object_info": 404}, 1, "GET /object_info failed with HTTP 404"),
    ("object_info-list", {"object_info": "list"}, 1, "expected an object of node definitions, got list"),
    ("object_info-deep", {"object_info": "deep"}, 1, "GET /object_info: the answer is not JSON"),
    ("object_info-huge", {"object_info": "huge"}, 1, "the answer is 419430400 bytes; at most 67108864"),
    ("object_info-drip", {"object_info": "drip"}, 1, "GET /object_info: no complete answer within 1 s"),
    ("object_info-stall", {"object_info": "stall"}, 1, "GET /object_info: no complete answer within 1 s"),
    ("object_info-reset", {"object_info": "reset"}, 1, "GET /object_info failed: the connection was cut"),
    ("prompt-500", {"prompt": 500}, 1, "POST /prompt failed with HTTP 500"),
    ("prompt-nonjson", {"prompt": "nonjson"}, 1, "POST /prompt: the answer is not JSON"),
    ("prompt-400", {"prompt": 400}, 2, "rejected by"),
    ("prompt-list", {"prompt": "list"}, 1, "POST /prompt: unexpected answer [1, 2, 3]"),
    ("prompt-reset", {"prompt": "reset"}, 1, "POST /prompt failed: the connection was cut"),
    ("prompt-stall", {"prompt": "stall"}, 1, "POST /prompt: no complete answer within the job's --timeout of 1 s"),
    ("history-nonjson", {"history": "nonjson"}, 1, "the answer is not JSON"),
    ("history-500", {"history": 500}, 1, "failed with HTTP 500"),
    ("history-404", {"history": 404}, 1, "failed with HTTP 404"),
    ("history-list", {"history": "list"}, 1, "expected an object, got list"),
    ("history-deep", {"history": "deep"}, 1, "the answer is not JSON"),
    ("history-drip", {"history": "drip"}, 1, "did not finish within the job's --timeout of 1 s"),
    ("history-stall", {"history": "stall"}, 1, "did not finish within the job's --timeout of 1 s"),
    ("history-reset", {"history": "reset"}, 1, "the connection was cut (ConnectionResetError) (after 4 tries)"),
    ("view-404", {"view": 404}, 1, "GET /view (result.png) failed with HTTP 404"),
    ("view-500", {"view": 500}, 1, "GET /view (result.png) failed with HTTP 500"),
    ("view-drip", {"view": "drip"}, 1, "GET /view: no complete answer within the job's --timeout of 1 s"),
    ("view-stall", {"view": "stall"}, 1, "GET /view: no complete answer within the job's --timeout of 1 s"),
    ("view-reset", {"view": "reset"}, 1, "GET /view failed: the connection was cut"),
    ("upload-500", {"upload": 500}, 1, "POST /upload/image failed with HTTP 500"),
    ("upload-nonjson", {"upload": "nonjson"}, 1, "POST /upload/image: the answer is not JSON"),
]


@pytest.mark.parametrize("modes,code,expected", [c[1:] for c in ANSWER_CASES], ids=[c[0] for c in ANSWER_CASES])
def test_hostile_answer_is_one_clear_line(capsys, box, hostile, modes, code, expected):
    server, b = hostile(**modes)
    t0 = time.monotonic()
    got, out, err = _remote(capsys, box, server.url, timeout="1")
    assert time.monotonic() - t0 < 15
    assert got == code, err
    assert expected in _one_error(err, server.url)
    assert box.out_files() == []
    if "object_info" not in modes:
        assert "job 1/1 on" in err


@pytest.mark.parametrize("endpoint", ["history", "prompt"])
def test_non_transient_errors_are_not_retried(capsys, box, hostile, endpoint):
    server, b = hostile(**{endpoint: 500})
    code, _, err = _remote(capsys, box, server.url)
    assert code == 1 and b.hits[endpoint] == 1


def test_a_post_that_reached_the_server_is_not_repeated(capsys, box, hostile):
    server, b = hostile(prompt="reset")
    code, _, err = _remote(capsys, box, server.url)
    assert code == 1 and b.hits["prompt"] == 1


def _flaky(endpoint, times, how):
    def answer(handler):
        if handler.behaviour.hits[endpoint] <= times:
            if how == "reset":
                handler.reset()
            else:
                handler.send(how, {"error": "busy"})
            return True
        return False
    return answer


@pytest.mark.parametrize("endpoint,times,how", [
    ("object_info", 1, "reset"), ("history", 2, 503), ("history", 1, "reset"), ("view", 1, 503),
    ("view", 2, "reset"), ("prompt", 2, 503), ("history", 3, 502)])
def test_transient_errors_are_retried_a_few_times(capsys, box, hostile, endpoint, times, how):
    server, b = hostile()
    b.modes[endpoint] = _flaky(endpoint, times, how)
    code, _, err = _remote(capsys, box, server.url)
    assert code == 0, err
    assert b.hits[endpoint] == times + 1
    assert box.out_files() == ["result.png"] and len(b.prompts) == 1


def test_retries_are_bounded(capsys, box, hostile):
    server, b = hostile(history=503)
    code, _, err = _remote(capsys, box, server.url)
    assert code == 1 and "HTTP 503 (server busy) (after 4 tries)" in _one_error(err, server.url)
    assert b.hits["history"] == 4


def test_job_that_never_finishes_hits_its_timeout(capsys, box, hostile):
    server, b = hostile(history=lambda h: h.send(200, {}) or True)
    t0 = time.monotonic()
    code, _, err = _remote(capsys, box, server.url, timeout="1")
    assert time.monotonic() - t0 < 10
    line = _one_error(err, server.url)
    assert code == 1 and "did not finish within the job's --timeout of 1 s" in line and "job 1/1 on" in line


def test_deadline_bounds_the_whole_run(capsys, box, hostile):
    server, b = hostile(history=lambda h: h.send(200, {}) or True)
    t0 = time.monotonic()
    code, _, err = _remote(capsys, box, server.url, "--deadline", "1", "--batch", "2.width=1-5", "--keep-going",
                           timeout="60")
    assert time.monotonic() - t0 < 10
    assert code == 1
    assert "did not finish within the run's --deadline of 1 s" in err
    assert "job(s) not started: the run's --deadline of 1 s has passed" in err
    assert len(b.prompts) < 5


def test_huge_download_is_refused_by_its_declared_size(capsys, box, hostile):
    server, b = hostile(view="huge")
    code, _, err = _remote(capsys, box, server.url, "--max-download-mb", "1")
    assert code == 1 and "GET /view: the answer is 419430400 bytes; at most 1048576 are accepted" in err


def test_undeclared_huge_download_is_cut_at_the_cap_and_leaves_nothing(capsys, box, hostile):
    server, b = hostile(view=lambda h: h.stream(3 * 1024 * 1024, None) or True)
    code, _, err = _remote(capsys, box, server.url, "--max-download-mb", "1")
    assert code == 1 and "GET /view: the answer is larger than 1048576 bytes; refused" in err
    assert box.out_files() == []


def test_large_download_is_streamed_to_disk_not_memory(capsys, box, hostile):
    import tracemalloc
    sizes = [1024, 48 * 1024 * 1024]  # a small run first, so that what it imports is not counted
    server, b = hostile(view=lambda h: h.stream(sizes[b.hits["view"] - 1], sizes[b.hits["view"] - 1],
                                                 chunk=b"\0" * 1024) or True)
    assert _remote(capsys, box, server.url)[0] == 0
    tracemalloc.start()
    try:
        code, _, err = _remote(capsys, box, server.url, timeout="20")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 0, err
    assert (box.out / "result-1.png").stat().st_size == sizes[1]
    assert peak < 8 * 1024 * 1024


def test_server_text_cannot_forge_lines(capsys, box, hostile):
    def failed(h):
        pid = h.path.split("/")[-1]
        h.send(200, {pid: {"outputs": {}, "status": {"status_str": "error", "completed": False, "messages": [
            ["execution_error", {"node_id": "2", "node_type": "ImageScale\nerror: forged", "exception_type":
                                 "\x1b[31mRuntimeError", "exception_message": "boom\r\nerror: forged too"}]]}}})
        return True
    server, b = hostile(history=failed)
    code, _, err = _remote(capsys, box, server.url)
    assert code == 1
    line = _one_error(err, server.url)
    assert "node 2 (ImageScale?error: forged) failed: ?[31mRuntimeError: boom??error: forged too" in line
    assert "\x1b" not in err


def test_unreachable_server_and_bad_address(capsys, box):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = _remote(capsys, box, f"http://127.0.0.1:{port}")
    assert code == 1 and "cannot reach the server (connection refused)" in _one_error(err, f"127.0.0.1:{port}")
    for bad in ("http://127.0.0.1:notaport", "http://[::1", "ftp://127.0.0.1:8188", "http://:8188"):
        code, _, err = _remote(capsys, box, bad)
        assert code == 1 and "not a server address; use http://HOST:PORT" in _one_error(err, bad), err


# ---- uploads ------------------------------------------------------------------------------------------------
UPLOAD_CASES = [
    ("dotdot", "../../canary/secret.png"),
    ("dotdot-text", "../../canary/secret.txt"),
    ("absolute", "{canary}/secret.png"),
    ("annotated-input-dotdot", "../../canary/secret.png [input]"),
    ("nul", "x.png\x00../../canary/secret.png"),
    ("symlink-out", "link.png"),
]


@pytest.mark.parametrize("name", [c[1] for c in UPLOAD_CASES], ids=[c[0] for c in UPLOAD_CASES])
def test_upload_outside_input_dir_is_refused(capsys, box, hostile, name):
    server, b = hostile()
    os.symlink(box.canary / "secret.png", box.input / "link.png")
    name = name.replace("{canary}", str(box.canary))
    code, _, err = _remote(capsys, box, server.url, prompt=scale_prompt(image=name))
    assert code == 2, err
    line = _one_error(err, server.url)
    assert "node 1 (LoadImage) input 'image':" in line and "is outside --input-dir" in line
    assert b.uploads == {} and b.prompts == []
    os.unlink(box.input / "link.png")


def test_uploads_inside_input_dir_and_server_names(capsys, box, hostile):
    server, b = hostile()
    (box.input / "sub").mkdir()
    (box.input / "sub" / "y.png").write_bytes(b"y")
    code, _, err = _remote(capsys, box, server.url, prompt=scale_prompt(image="sub/y.png"))
    assert code == 0, err
    assert b.uploads == {"y.png": b"y"} and b.prompts[0]["1"]["inputs"]["image"] == "y.png"
    code, _, err = _remote(capsys, box, server.url, prompt=scale_prompt(image="made.png [output]"))
    assert code == 0, err
    assert b.prompts[1]["1"]["inputs"]["image"] == "made.png [output]"  # the server's own file, nothing uploaded
    assert list(b.uploads) == ["y.png"]


# ---- the real command line ----------------------------------------------------------------------------------
@pytest.mark.parametrize("modes,expected", [
    ({"history": "nonjson"}, "the answer is not JSON"),
    ({"view": "reset"}, "GET /view failed: the connection was cut"),
])
def test_real_process_prints_one_line_and_no_traceback(box, hostile, modes, expected):
    server, b = hostile(**modes)
    b.outputs = [{"filename": "../../canary/evil.png", "subfolder": "", "type": "output"}] \
        if "view" not in modes else b.outputs
    path = box.write("wf.json", scale_prompt())
    proc = cli_process(*run_args(box, path, "--server", server.url, "--timeout", "5"))
    assert proc.returncode == 1
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and server.url in lines[0] and expected in lines[0], proc.stderr


def test_malformed_node_definitions_are_left_out(capsys, box, hostile):
    from adversarial.runner_helpers import core_object_info
    info = core_object_info()
    info.update({"Broken": "x", "Broken2": {"input": ["not", "a", "dict"]}, "Broken3": {"input": {"required": 5}}})
    server, b = hostile(object_info=lambda h: h.send(200, info) or True)
    code, _, err = _remote(capsys, box, server.url)
    assert code == 0, err
    prompt = scale_prompt()
    prompt["4"] = {"class_type": "Broken2", "inputs": {}}
    code, _, err = _remote(capsys, box, server.url, prompt=prompt)
    assert code == 2 and "node 4 (Broken2): unknown node type" in _one_error(err, "")
