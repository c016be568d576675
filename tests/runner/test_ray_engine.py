"""--engine ray on one Ray cluster for the module, kept on 127.0.0.1 (checked before every test): outputs exactly once
with 2 workers, over a ray:// (Ray Client) address, after a worker is SIGKILLed, with a job that kills its worker
every time, after the driver is SIGKILLed and the run resumed; a fake-GPU node gets CUDA_VISIBLE_DEVICES; GPUs asked
where none are -> exit 2.

The test nodes (tests/hgraynode.py) count model loads in a file (with the loading pid) and write an 8x8 PNG."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hgraynode import RAY_TOYS, ray_toy_prompt

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="Ray is not installed (pip install 'ray[client]==2.60.*' or install.py --ray)"),
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and Ray's loopback cluster")]

TESTS = Path(__file__).resolve().parent.parent
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # else Ray advertises the machine's network address
           "RAY_USAGE_STATS_ENABLED": "0", "HUMANGEN_NO_PROGRESS": "1"}
STARTED: list[int] = []  # every pid the tests saw: none may be left at the end


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _wait_gone(pids, seconds=30.0) -> list[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


class RayCluster:
    """The module's cluster: a child process (tests/ray_cluster.py) that owns it."""

    def __init__(self, base: Path):
        self.base = base
        self.env = dict(os.environ, **RAY_ENV, HOME=str(base), RAY_TMPDIR=str(base / "t"),
                        PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        (base / "t").mkdir()
        self.proc = subprocess.Popen([sys.executable, str(TESTS / "ray_cluster.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=self.env, cwd=base)
        STARTED.append(self.proc.pid)
        self.state = self._answer()
        self.address = self.state["address"]

    def _answer(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("HGRAY "):
                state = json.loads(line[6:])
                STARTED.extend(state.get("pids", []))
                return state
        raise RuntimeError(f"the test cluster stopped (exit {self.proc.wait()})")

    def command(self, text: str) -> dict:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        self.state = self._answer()
        return self.state

    def assert_loopback(self) -> None:
        addresses = [n["address"] for n in self.state["nodes"]]
        assert addresses and all(a == "127.0.0.1" for a in addresses), f"Ray left loopback: {addresses}"
        assert self.address.startswith("127.0.0.1:"), self.address

    def stop(self) -> None:
        try:
            self.command("quit")
        finally:
            try:
                self.proc.wait(timeout=60)
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()


@pytest.fixture(scope="module")
def cluster():
    base = Path(tempfile.mkdtemp(prefix="hgr-", dir="/tmp"))  # short: Ray's socket paths must stay under ~107 chars
    saved = {k: os.environ.get(k) for k in (*RAY_ENV, "HOME", "RAY_TMPDIR", "RAY_ADDRESS")}
    c = None
    try:
        c = RayCluster(base)
        os.environ.update(RAY_ENV, HOME=c.env["HOME"], RAY_TMPDIR=c.env["RAY_TMPDIR"])  # this process is a driver
        os.environ.pop("RAY_ADDRESS", None)
        yield c
    finally:
        if c is not None:
            c.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        left = _wait_gone(STARTED)
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"processes left running: {left}"


@pytest.fixture
def ray_cluster(cluster):
    cluster.assert_loopback()
    return cluster


def _workflow(tmp_path: Path, **kw) -> tuple[str, Path]:
    count = tmp_path / "loads.txt"
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(ray_toy_prompt(str(count), **kw)))
    return str(wf), count


def _ray(cluster, tmp_path: Path, wf: str, *extra: str) -> int:
    from humangen.runner.cli import main
    return main(["run", wf, "--out", str(tmp_path / "out"), "--quiet", "--engine", "ray", "--address",
                 cluster.address, *extra], extra_nodes=RAY_TOYS)


def _loads(count: Path) -> list[tuple[int, str]]:
    rows = [line.split() for line in count.read_text().splitlines()] if count.exists() else []
    STARTED.extend(int(r[0]) for r in rows)
    return [(int(pid), cuda) for pid, cuda in rows]


def _manifest(out: Path) -> list[dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _keys(wf: str, seeds) -> dict[int, str]:
    from humangen.runner.manifest import job_key
    prompt = json.loads(Path(wf).read_text())
    keys = {}
    for s in seeds:
        prompt["2"]["inputs"]["seed"] = s
        keys[s] = job_key(prompt)
    return keys


def _assert_exactly_once(out: Path, keys: dict[int, str]) -> list[dict]:
    entries = _manifest(out)
    assert sorted(e["key"] for e in entries) == sorted(keys.values())  # one line per job, no job twice
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(f"toy_00001-{k}.png" for k in keys.values())  # one file per job, named by its key
    for e in entries:
        assert e["files"] == [f"toy_00001-{e['key']}.png"] and len(e["sha256"]) == 1
    assert not [p for p in out.rglob("*.part")]
    assert not (out / ".humangen").exists()  # nothing pending, nothing staged
    return entries


@pytest.mark.timeout(150)
def test_two_workers_twenty_jobs_each_output_once_and_two_model_loads(ray_cluster, tmp_path, capsys):
    wf, count = _workflow(tmp_path)
    assert _ray(ray_cluster, tmp_path, wf, "--workers", "2", "--batch", "2.seed=1-20") == 0
    entries = _assert_exactly_once(tmp_path / "out", _keys(wf, range(1, 21)))
    loads = _loads(count)
    assert len(loads) == 2 and len({pid for pid, _ in loads}) == 2  # one model load per worker, two workers
    assert {e["node"] for e in entries} == {"127.0.0.1"} and {e["attempt"] for e in entries} == {1}
    err = capsys.readouterr().err
    assert "20/20 done" in err and "20/20 job(s) ok, 20 file(s) written" in err
    assert _ray(ray_cluster, tmp_path, wf, "--batch", "2.seed=1-20") == 2  # a manifest there, no --resume
    assert "already holds a batch run (manifest.jsonl); add --resume" in capsys.readouterr().err


@pytest.mark.timeout(150)
def test_ray_client_address_each_output_once(ray_cluster, tmp_path, capsys):
    """`--address ray://HOST:PORT`: the driver is a Ray Client of the cluster (what `install.py --ray` installs
    `ray[client]` for); the workers send the files back, the driver commits them."""
    from humangen.runner.cli import main
    wf, count = _workflow(tmp_path)
    address = ray_cluster.state["client_address"]
    assert address.startswith("ray://127.0.0.1:")
    assert main(["run", wf, "--out", str(tmp_path / "out"), "--quiet", "--engine", "ray", "--address", address,
                 "--workers", "2", "--batch", "2.seed=1-4"], extra_nodes=RAY_TOYS) == 0, capsys.readouterr().err
    _assert_exactly_once(tmp_path / "out", _keys(wf, range(1, 5)))
    assert len(_loads(count)) == 2
    assert "4/4 job(s) ok, 4 file(s) written" in capsys.readouterr().err


@pytest.mark.timeout(150)
def test_worker_sigkilled_mid_run_still_exactly_once(ray_cluster, tmp_path):
    wf, count = _workflow(tmp_path, kill_seed=5, kill_once_file=str(tmp_path / "killed"))
    code = _ray(ray_cluster, tmp_path, wf, "--workers", "2", "--batch", "2.seed=1-10", "--shared-out")
    assert code == 0
    assert (tmp_path / "killed").exists()  # the worker running seed 5 was SIGKILLed once
    entries = _assert_exactly_once(tmp_path / "out", _keys(wf, range(1, 11)))
    attempts = {e["label"]: e["attempt"] for e in entries}
    assert attempts.pop("2.seed=5") == 2 and set(attempts.values()) == {1}
    # two workers, and the killed one again if it restarted before the other took the job back
    assert len(_loads(count)) in (2, 3)
    assert not (tmp_path / "out" / "failures.jsonl").exists()


@pytest.mark.timeout(150)
def test_job_killing_its_worker_every_time_ends_with_exit_1(ray_cluster, tmp_path, capsys):
    wf, count = _workflow(tmp_path, kill_seed=3)
    code = _ray(ray_cluster, tmp_path, wf, "--workers", "2", "--batch", "2.seed=1-6", "--max-attempts", "2")
    assert code == 1
    keys = _keys(wf, range(1, 7))
    failures = [json.loads(x) for x in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert [(f["key"], f["label"], f["attempts"]) for f in failures] == [(keys[3], "2.seed=3", 2)]
    assert "--max-attempts 2" in failures[0]["error"]
    del keys[3]
    _assert_exactly_once(tmp_path / "out", keys)  # every other job once
    assert "error: job 3 (2.seed=3): worker lost 2 time(s)" in capsys.readouterr().err
    _loads(count)


@pytest.mark.timeout(150)
def test_job_raising_outside_its_nodes_fails_once_and_the_run_goes_on(ray_cluster, tmp_path, capsys):
    wf, count = _workflow(tmp_path, interrupt_seed=2)
    assert _ray(ray_cluster, tmp_path, wf, "--workers", "1", "--batch", "2.seed=1-3", "--keep-going") == 1
    keys = _keys(wf, range(1, 4))
    failures = [json.loads(x) for x in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert [(f["key"], f["attempts"]) for f in failures] == [(keys[2], 1)]  # not retried: a Python error repeats
    assert "the job failed on the worker: HumanGenInterrupted: processing interrupted" in failures[0]["error"]
    del keys[2]
    _assert_exactly_once(tmp_path / "out", keys)
    assert "error: job 2 (2.seed=2): the job failed on the worker" in capsys.readouterr().err
    _loads(count)


@pytest.mark.timeout(180)
def test_driver_sigkilled_then_resume_exactly_once_and_nothing_left(ray_cluster, tmp_path, capsys):
    wf, count = _workflow(tmp_path, sleep=0.3)
    out = tmp_path / "out"
    args = [sys.executable, str(TESTS / "hgraynode.py"), "run", wf, "--out", str(out), "--quiet", "--engine", "ray",
            "--address", ray_cluster.address, "--workers", "2", "--batch", "2.seed=1-20"]
    driver = subprocess.Popen(args, env=ray_cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    STARTED.append(driver.pid)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            manifest = out / "manifest.jsonl"
            if manifest.exists() and manifest.read_bytes().count(b"\n") >= 5:
                break
            time.sleep(0.05)
        assert driver.poll() is None, driver.stderr.read()
        driver.send_signal(signal.SIGKILL)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait()
        driver.stderr.close()
    done_before = len(_manifest(out))
    assert 5 <= done_before < 20
    first_workers = [pid for pid, _ in _loads(count)]
    assert not _wait_gone(first_workers)  # the killed driver's workers end with it

    assert _ray(ray_cluster, tmp_path, wf, "--workers", "2", "--batch", "2.seed=1-20", "--resume") == 0
    assert f"resume: {done_before} of 20 job(s) already done" in capsys.readouterr().err
    _assert_exactly_once(out, _keys(wf, range(1, 21)))
    assert not _wait_gone([driver.pid, *(pid for pid, _ in _loads(count))])


@pytest.mark.timeout(150)
def test_fake_gpu_node_gets_cuda_visible_devices(ray_cluster, tmp_path):
    state = ray_cluster.command("add_gpu_node")
    try:
        ray_cluster.assert_loopback()
        assert sorted(n["resources"].get("GPU", 0) for n in state["nodes"]) == [0, 1]
        wf, count = _workflow(tmp_path)
        assert _ray(ray_cluster, tmp_path, wf, "--gpus-per-worker", "1", "--batch", "2.seed=1-2") == 0
        assert [cuda for _, cuda in _loads(count)] == ["0"]  # one worker: the one GPU, as Ray assigned it
        _assert_exactly_once(tmp_path / "out", _keys(wf, [1, 2]))
    finally:
        state = ray_cluster.command("remove_gpu_node")
    assert [n["resources"].get("GPU", 0) for n in state["nodes"] if n["alive"]] == [0]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read() and _alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.mark.timeout(120)
def test_gpus_asked_none_present_exit_2_with_a_local_ray(cluster, tmp_path):
    """No --address and no $RAY_ADDRESS: the driver (a process of its own, like a user's) starts a local Ray for the
    run in its own temp folder, finds no GPU, exits 2 with the numbers and leaves no Ray process behind."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    wf, count = _workflow(tmp_path)
    ray_tmp = Path(tempfile.mkdtemp(prefix="hgl-", dir="/tmp"))
    try:
        env = dict(cluster.env, RAY_TMPDIR=str(ray_tmp))
        proc = subprocess.run([sys.executable, str(TESTS / "hgraynode.py"), "run", wf, "--out", str(tmp_path / "out"),
                               "--quiet", "--engine", "ray", "--gpus-per-worker", "1"],
                              env=env, capture_output=True, text=True, timeout=100)
        assert proc.returncode == 2, proc.stderr
        assert ("error: the Ray cluster cannot place one worker: each worker asks 1 GPU(s) and 1 CPU(s); the "
                "cluster has 1 node(s), the largest offers 0 GPU(s)") in proc.stderr
        assert not count.exists()  # no job ran
        deadline = time.monotonic() + 30
        while _processes_mentioning(str(ray_tmp)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _processes_mentioning(str(ray_tmp))  # the local Ray's processes ended with the run
        assert os.listdir(ray_tmp) == []  # and its temp folder is gone
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.timeout(120)
def test_pack_mismatch_on_a_node_fails_fast_with_exit_2(ray_cluster, tmp_path, monkeypatch, capsys):
    from humangen.runner import ray_engine
    real = ray_engine.pack_fingerprint
    monkeypatch.setattr(ray_engine, "pack_fingerprint", lambda root: dict(real(root), **{"runner/cli.py": "0" * 64}))
    wf, count = _workflow(tmp_path)
    assert _ray(ray_cluster, tmp_path, wf, "--workers", "1", "--gpus-per-worker", "0", "--batch", "2.seed=1-3") == 2
    err = capsys.readouterr().err
    assert "error: Ray worker on node 127.0.0.1: pack file runner/cli.py differs from the driver's" in err
    assert not count.exists() and not list((tmp_path / "out").glob("*.png"))  # nothing ran
