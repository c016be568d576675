"""Keyed runs without Ray: stable job keys, the manifest's cut last line, concurrent commits of one job, --resume
with the in-process engine (skips, records finished-but-unlisted files, removes stale temp files), and that neither
the pack nor the runner imports Ray."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys

import pytest

from hgraynode import RAY_TOYS, ray_toy_prompt
from hgtest import ROOT
from humangen.runner.cli import main, make_jobs
from humangen.runner.manifest import MANIFEST, RunFolder, RunFolderError, job_key


def test_job_keys_are_stable_hashes_of_the_final_prompt(engine):
    prompt = ray_toy_prompt("loads.txt")
    reordered = {nid: {"inputs": dict(reversed(list(node["inputs"].items()))), "class_type": node["class_type"],
                       "_meta": {"title": "renamed"}} for nid, node in reversed(list(prompt.items()))}
    assert job_key(prompt) == job_key(reordered) == job_key(json.loads(json.dumps(prompt)))
    assert len(job_key(prompt)) == 16 and int(job_key(prompt), 16) >= 0
    specs = {c: engine.spec(c) for c in ("ToyConst", "ToyAdd", "ToySink")}
    from hgtoys import toy_prompt
    up = {label: job_key(job) for label, job in make_jobs(toy_prompt(), specs, [], ["1.value=1-3"])}
    down = {label: job_key(job) for label, job in make_jobs(toy_prompt(), specs, [], ["1.value=3,2,1"])}
    assert up == down and len(set(up.values())) == 3  # by content, not by position in the batch
    changed = {label: job_key(job) for label, job in make_jobs(toy_prompt(), specs, ["2.value=9"], ["1.value=1-3"])}
    assert not set(changed.values()) & set(up.values())


def _commit(folder: RunFolder, key: str, data: bytes = b"png bytes") -> list[str]:
    return folder.commit(key, f"job {key}", [{"rel": "toy_00001_.png", "data": data}], seconds=0.5, node="n1",
                         attempt=1)


def test_manifest_tolerates_a_cut_last_line(tmp_path):
    folder = RunFolder(str(tmp_path), resume=False)
    paths = _commit(folder, "a" * 16) + _commit(folder, "b" * 16)
    assert [os.path.basename(p) for p in paths] == [f"toy_00001-{'a' * 16}.png", f"toy_00001-{'b' * 16}.png"]
    manifest = tmp_path / MANIFEST
    cut = b'{"key": "cccccccccccccccc", "label": "job c", "fil'
    with open(manifest, "ab") as f:
        f.write(cut)  # the driver died inside this write
    with pytest.raises(RunFolderError, match="already holds a batch run"):
        RunFolder(str(tmp_path), resume=False)
    again = RunFolder(str(tmp_path), resume=True)
    assert sorted(again.entries) == ["a" * 16, "b" * 16] and again.is_done("a" * 16)
    assert not again.is_done("c" * 16)
    assert again.notes == [f"{MANIFEST}: ignored a cut last line ({len(cut)} bytes)"]
    _commit(again, "c" * 16)
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]  # the next line starts on a line of its own
    assert [x["key"] for x in lines] == ["a" * 16, "b" * 16, "c" * 16]
    assert lines[2]["files"] == [f"toy_00001-{'c' * 16}.png"] and lines[2]["attempt"] == 1
    assert lines[2]["sha256"] == [hashlib.sha256(b"png bytes").hexdigest()]
    text = manifest.read_text()
    manifest.write_text(text.replace(f'"job {"b" * 16}"', f'"job {"b" * 16}'))  # broken, and not the last line
    assert manifest.read_text() != text
    with pytest.raises(RunFolderError, match="line 2 is not a manifest entry"):
        RunFolder(str(tmp_path), resume=True)


def _commit_in_child(out: str, barrier, data: bytes, results) -> None:
    folder = RunFolder(out, resume=True)
    barrier.wait()
    try:
        _commit(folder, "d" * 16, data)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(type(exc).__name__)


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
@pytest.mark.timeout(60)
def test_two_concurrent_commits_of_one_job_leave_one_file(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for round_, datas in enumerate(([b"same", b"same"], [b"one", b"other"])):
        out = tmp_path / str(round_)
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_commit_in_child, args=(str(out), barrier, d, results)) for d in datas]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        outcomes = sorted(results.get(timeout=5) for _ in procs)
        assert [p.name for p in out.iterdir() if p.suffix == ".png"] == [f"toy_00001-{'d' * 16}.png"]
        assert not [p for p in out.rglob("*.part")]
        content = (out / f"toy_00001-{'d' * 16}.png").read_bytes()
        if round_ == 0:  # the same job twice: both commits stand, on the one file
            assert outcomes == ["ok", "ok"] and content == b"same"
        else:  # different bytes under one key: the second is refused, the first file is kept whole
            assert outcomes == ["FileExistsRefusedError", "ok"] and content in (b"one", b"other")


def _local(tmp_path, *extra: str) -> int:
    wf = tmp_path / "wf.json"
    if not wf.exists():
        wf.write_text(json.dumps(ray_toy_prompt(str(tmp_path / "loads.txt"))))
    return main(["run", str(wf), "--out", str(tmp_path / "out"), "--quiet", *extra], extra_nodes=RAY_TOYS)


def test_in_process_resume_skips_recovers_and_cleans(tmp_path, capsys):
    out = tmp_path / "out"
    assert _local(tmp_path, "--batch", "2.seed=1-4", "--resume") == 0  # --resume also starts a keyed run
    entries = [json.loads(x) for x in (out / MANIFEST).read_text().splitlines()]
    assert [e["label"] for e in entries] == [f"2.seed={i}" for i in range(1, 5)]
    assert {e["node"] for e in entries} == {"local"} and not (out / ".humangen").exists()
    capsys.readouterr()
    assert _local(tmp_path, "--batch", "2.seed=1-5") == 2  # the counter-named mode never writes into it
    assert "already holds a batch run (manifest.jsonl); add --resume" in capsys.readouterr().err

    # the driver died after linking job 4's file, before its manifest line; and left a temporary file
    last = entries[-1]
    (out / MANIFEST).write_text("".join(json.dumps(e) + "\n" for e in entries[:-1]))
    (out / ".humangen" / "pending").mkdir(parents=True)
    (out / ".humangen" / "pending" / f"{last['key']}.json").write_text(json.dumps(last))
    stale = out / f".toy_00001-{last['key']}.png.x1y2.part"
    stale.write_bytes(b"half")
    cut_record = out / ".humangen" / "pending" / f".{entries[0]['key']}.json.k3m4.part"  # killed while writing it
    cut_record.write_bytes(b'{"key": ')
    foreign = out / ".someone-elses.part"
    foreign.write_bytes(b"not ours")
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}

    assert _local(tmp_path, "--batch", "2.seed=1-5", "--resume") == 0
    err = capsys.readouterr().err
    assert f"job {last['key']} (2.seed=4): its files were written before the run stopped; recorded" in err
    assert "resume: 4 of 5 job(s) already done" in err
    lines = [json.loads(x) for x in (out / MANIFEST).read_text().splitlines()]
    assert [x["label"] for x in lines] == ["2.seed=1", "2.seed=2", "2.seed=3", "2.seed=4", "2.seed=5"]
    assert lines[3]["recovered"] is True and lines[3]["sha256"] == last["sha256"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if p.name in before} == before  # not redone
    assert len(list(out.glob("*.png"))) == 5
    assert not stale.exists() and not cut_record.exists() and foreign.read_bytes() == b"not ours"
    assert not (out / ".humangen").exists()


def test_ray_client_address_without_the_client_extra_exits_2(tmp_path, monkeypatch, capsys):
    """Checked before Ray is imported (this test must not import it: the Ray tests' cluster sets Ray's environment
    before the first import)."""
    import importlib.util

    from humangen.runner import ray_engine
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "grpc" else find_spec(name, *a))
    imports = []
    monkeypatch.setattr(ray_engine, "import_ray", lambda: imports.append("ray"))
    assert _local(tmp_path, "--engine", "ray", "--address", "ray://127.0.0.1:10001", "--batch", "2.seed=1-2") == 2
    err = capsys.readouterr().err
    assert "--address ray://127.0.0.1:10001 is a Ray Client address, which needs pip install " \
           "'ray[client]==2.60.*'" in err
    assert imports == []  # refused before Ray is imported (whatever other tests imported before this one)


def test_ray_client_connection_is_tried_three_times(monkeypatch):
    """A ray:// connection whose per-client server failed to start is tried again (each try gets a new server);
    a direct address, or a third failure, raises."""
    from humangen.runner import ray_engine
    monkeypatch.setattr(ray_engine, "CLIENT_RETRY_S", 0.0)

    class FakeRay:
        def __init__(self, failures):
            self.failures, self.calls = failures, []

        def init(self, address, **kw):
            self.calls.append(address)
            if len(self.calls) <= self.failures:
                raise ConnectionAbortedError("Initialization failure from server:\nStarting Ray client server failed")

        def is_initialized(self):
            return False

    lines = []
    fake = FakeRay(2)
    ray_engine._connect(fake, "ray://head:10001", lines.append)
    assert fake.calls == ["ray://head:10001"] * 3
    assert lines == ["ray: connecting to ray://head:10001 failed (ConnectionAbortedError: Initialization failure "
                     "from server:); trying again"] * 2
    with pytest.raises(ConnectionAbortedError):
        ray_engine._connect(FakeRay(3), "ray://head:10001", lines.append)
    with pytest.raises(ConnectionAbortedError):
        ray_engine._connect(FakeRay(1), "head:6379", lines.append)


def test_engine_ray_without_ray_installed_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert _local(tmp_path, "--engine", "ray", "--batch", "2.seed=1-2") == 2
    assert "--engine ray needs Ray: pip install 'ray[client]==2.60.*'" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.png"))


def test_importing_the_pack_and_runner_does_not_import_ray():
    code = ("import importlib.util, sys\n"
            f"root = {str(ROOT)!r}\n"
            "spec = importlib.util.spec_from_file_location('humangen', root + '/__init__.py', "
            "submodule_search_locations=[root])\n"
            "pack = importlib.util.module_from_spec(spec); sys.modules['humangen'] = pack; "
            "spec.loader.exec_module(pack)\n"
            "import humangen.runner.cli, humangen.runner.engine, humangen.runner.manifest, "
            "humangen.runner.ray_engine\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


class _NoRay:
    """What the Ray worker class needs of the `ray` module, for checking its start without a cluster."""

    class util:
        @staticmethod
        def get_node_ip_address():
            return "10.1.2.3"


def _worker_config(tmp_path, **changes) -> dict:
    from humangen.runner import ray_engine
    config = {"pack_name": "humangen", "pack_root": str(ROOT), "fingerprint": ray_engine.pack_fingerprint(str(ROOT)),
              "models_dir": str(tmp_path / "models"), "input_dir": str(tmp_path), "device": "cpu",
              "needs_models": {"prompts": [], "declared": []}, "extra_nodes": RAY_TOYS, "extra_pnginfo": None, "staging_root": None}
    config.update(changes)
    return config


def test_ray_worker_start_checks_pack_files_and_model_files_on_its_node(tmp_path):
    from humangen.runner.ray_engine import worker_class
    Worker = worker_class(_NoRay)
    good = Worker(_worker_config(tmp_path))
    assert good.ready()["problem"] is None and good.ready()["node"] == "10.1.2.3"

    prints = _worker_config(tmp_path)["fingerprint"]
    assert "runner/engine.py" in prints and "nodes/__init__.py" in prints
    assert not [p for p in prints if p.startswith(("tests/", "bench/"))]
    changed = dict(prints, **{"runner/engine.py": "0" * 64})
    problem = Worker(_worker_config(tmp_path, fingerprint=changed)).ready()["problem"]
    assert problem.startswith("pack file runner/engine.py differs from the driver's")
    del changed["runner/engine.py"]
    problem = Worker(_worker_config(tmp_path, fingerprint=changed)).ready()["problem"]
    assert problem.startswith("pack file runner/engine.py is not on the driver")
    problem = Worker(_worker_config(tmp_path, pack_root=str(tmp_path))).ready()["problem"]
    assert problem.startswith(f"the HumanGen pack is not at {tmp_path} on this node")

    need = {"prompts": [], "declared": [{"directory": "stylegan", "name": "g.pkl", "url": "https://x/g.pkl"}]}
    problem = Worker(_worker_config(tmp_path, needs_models=need)).ready()["problem"]
    assert problem == (f"'g.pkl' -> put it in the 'stylegan' model folder ({tmp_path / 'models' / 'stylegan'}); "
                       "download: https://x/g.pkl [declared in the workflow's models]")
    (tmp_path / "models" / "stylegan").mkdir(parents=True)
    (tmp_path / "models" / "stylegan" / "g.pkl").write_bytes(b"x")
    assert Worker(_worker_config(tmp_path, needs_models=need)).ready()["problem"] is None


def test_jobs_naming_the_same_model_files_share_a_signature():
    from humangen.runner.ray_engine import model_signature
    a = {"1": {"class_type": "Loader", "inputs": {"ckpt": "human.pkl", "seed": 1}}}
    b = {"1": {"class_type": "Loader", "inputs": {"ckpt": "human.pkl", "seed": 2}}}
    c = {"1": {"class_type": "Loader", "inputs": {"ckpt": "other.safetensors", "seed": 1}}}
    assert model_signature(a) == model_signature(b) == frozenset({("Loader", "ckpt", "human.pkl")})
    assert model_signature(c) != model_signature(a)


def test_in_process_resume_records_node_failures_and_keep_going(tmp_path, toys, write_json, capsys):
    from hgtoys import toy_prompt
    prompt = toy_prompt()
    prompt["5"] = {"class_type": "ToyFail", "inputs": {"x": ["3", 0]}}
    prompt["6"] = {"class_type": "ToySink", "inputs": {"x": ["5", 0], "label": "bad"}}
    wf = write_json(prompt)
    out = tmp_path / "out"
    run = ["run", wf, "--out", str(out), "--quiet", "--batch", "1.value=1-3", "--resume"]
    assert main(run, extra_nodes=toys) == 1  # stops at the first failure
    failures = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["label"], f["attempts"], f["node"]) for f in failures] == [("1.value=1", 1, "local")]
    assert failures[0]["error"].startswith("node 5 (ToyFail) failed: ValueError: boom")
    assert "0/3 job(s) ok" in capsys.readouterr().err
    assert main([*run, "--keep-going"], extra_nodes=toys) == 1
    labels = [json.loads(x)["label"] for x in (out / "failures.jsonl").read_text().splitlines()]
    assert labels == ["1.value=1", "1.value=1", "1.value=2", "1.value=3"]  # failed jobs run again on resume
    assert not (out / MANIFEST).exists()


def test_resume_never_replaces_a_different_file_under_a_jobs_name(tmp_path, capsys):
    out = tmp_path / "out"
    assert _local(tmp_path, "--batch", "2.seed=1-2", "--resume") == 0
    entries = [json.loads(x) for x in (out / MANIFEST).read_text().splitlines()]
    (out / MANIFEST).write_text(json.dumps(entries[0]) + "\n")  # job 2 unlisted, and its file is not what it renders
    (out / entries[1]["files"][0]).write_bytes(b"someone else's file")
    capsys.readouterr()
    assert _local(tmp_path, "--batch", "2.seed=1-2", "--resume") == 1
    assert (out / entries[1]["files"][0]).read_bytes() == b"someone else's file"
    failure = json.loads((out / "failures.jsonl").read_text())
    assert failure["label"] == "2.seed=2" and "already exists" in failure["error"]
    assert "Traceback" not in capsys.readouterr().err
    # a second resume finds no pending record of the refused commit: it still leaves the other file alone
    assert _local(tmp_path, "--batch", "2.seed=1-2", "--resume") == 1
    assert (out / entries[1]["files"][0]).read_bytes() == b"someone else's file"
    assert not (out / ".humangen" / "pending").exists() or not list((out / ".humangen" / "pending").iterdir())


@pytest.mark.timeout(60)
def test_pending_records_never_make_a_resume_delete_or_claim_other_files(tmp_path, capsys):
    """A pending record names files; a resume deletes (or records) only files inside --out, under the job's key,
    holding the bytes the record lists: a planted or stale record cannot remove a file outside --out or one that
    someone else put there."""
    out = tmp_path / "out"
    assert _local(tmp_path, "--resume") == 0
    entry = json.loads((out / MANIFEST).read_text())
    key = entry["key"]
    (out / MANIFEST).unlink()
    (out / entry["files"][0]).unlink()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("x")
    (out / f"mine-{key}.png").write_text("someone else's, under the key")
    pending = out / ".humangen" / "pending"
    pending.mkdir(parents=True)
    (pending / f"{key}.json").write_text(json.dumps({
        "key": key, "files": ["../victim/precious.txt", str(victim / "precious.txt"), f"mine-{key}.png"],
        "sha256": ["0" * 64, "0" * 64, "0" * 64]}))
    capsys.readouterr()
    assert _local(tmp_path, "--resume") == 0  # renders the job again
    assert (victim / "precious.txt").read_text() == "x"
    assert (out / f"mine-{key}.png").read_text() == "someone else's, under the key"
    assert (out / entry["files"][0]).is_file() and not (pending / f"{key}.json").exists()


def test_manifest_names_outside_the_folder_never_count_as_done(tmp_path):
    folder = RunFolder(str(tmp_path), resume=False)
    with open(tmp_path / MANIFEST, "a") as f:
        f.write(json.dumps({"key": "e" * 16, "files": ["/etc/hostname"], "sha256": ["0" * 64]}) + "\n")
        f.write(json.dumps({"key": "f" * 16, "files": ["../x"], "sha256": ["0" * 64]}) + "\n")
    (tmp_path.parent / "x").write_text("x")
    again = RunFolder(str(tmp_path), resume=True)
    assert not again.is_done("e" * 16) and not again.is_done("f" * 16)
    del folder


@pytest.mark.parametrize("line,kept", [(b'{"key": "aaaaaaaaaaaaaaaa", "files": [], "sha256": []}', True),
                                       (b'{"key": "aaaaaaaaaaaaaaaa", "fil', False),
                                       (b'{"key": ["x"], "files": 5}', False)])
def test_a_last_line_without_its_newline_is_kept_when_whole(tmp_path, line, kept):
    """An editor that strips the final newline leaves a whole entry: it is kept (and the newline restored) rather
    than dropped as a cut line, which would render a finished job again."""
    RunFolder(str(tmp_path), resume=False)
    (tmp_path / MANIFEST).write_bytes(line)
    again = RunFolder(str(tmp_path), resume=True)
    assert (("a" * 16) in again.entries) is kept
    assert (tmp_path / MANIFEST).read_bytes() == (line + b"\n" if kept else b"")
    assert bool(again.notes) is not kept
