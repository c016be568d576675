"""The command line: running the shipped workflow, --set, --batch, caching across a batch, no-overwrite,
missing model files, exit statuses and Ctrl-C (a real SIGINT in a subprocess)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from PIL import Image

from hgtest import ROOT
from hgtoys import ASSETS, WORKFLOWS, Calls, toy_prompt
from humangen.runner.cli import main

UI = str(WORKFLOWS / "image_scale.json")
API = str(WORKFLOWS / "api" / "image_scale.json")


def _run(tmp_path, *args, extra_nodes=None):
    return main(["run", *args, "--out", str(tmp_path / "out"), "--input-dir", str(ASSETS), "--quiet"],
                extra_nodes=extra_nodes)


def _pngs(tmp_path):
    return sorted(p.name for p in (tmp_path / "out").glob("*.png")) if (tmp_path / "out").exists() else []


def test_runs_ui_workflow_and_never_overwrites(tmp_path, capsys):
    assert _run(tmp_path, UI) == 0
    first = tmp_path / "out" / "image_scale_00001_.png"
    with Image.open(first) as im:
        assert im.size == (256, 256)
        assert "workflow" in im.info and "prompt" in im.info  # metadata like the host writes
    before = first.read_bytes()
    assert _run(tmp_path, API, "--set", "2.width=64") == 0
    assert _pngs(tmp_path) == ["image_scale_00001_.png", "image_scale_00002_.png"]
    assert first.read_bytes() == before
    with Image.open(tmp_path / "out" / "image_scale_00002_.png") as im:
        assert im.size == (64, 256)
    out = capsys.readouterr()
    assert str(tmp_path / "out" / "image_scale_00002_.png") in out.out  # summary of written files
    assert "1/1 job(s) ok, 1 file(s) written" in out.err


def test_save_skips_names_that_exist(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "image_scale_00001_.png").write_bytes(b"keep me")
    (out / "image_scale_00003_.png").write_bytes(b"keep me too")
    assert _run(tmp_path, API, "--set", "2.width=16", "--set", "2.height=16") == 0
    assert (out / "image_scale_00001_.png").read_bytes() == b"keep me"
    assert (out / "image_scale_00003_.png").read_bytes() == b"keep me too"
    assert _pngs(tmp_path) == ["image_scale_00001_.png", "image_scale_00003_.png", "image_scale_00004_.png"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_digits_int_refuses_are_names_not_numbers(tmp_path, write_json):
    """str.isdigit() accepts '²', which int() refuses: a file named like that in the output folder stopped every
    save, and a node id like that stopped the runner and `models`, each with a raw ValueError."""
    import json
    out = tmp_path / "out"
    out.mkdir()
    (out / "image_scale_\u00b2_.png").write_bytes(b"someone else's")
    (out / "image_scale_00002_.png").write_bytes(b"keep me")
    assert _run(tmp_path, API, "--set", "2.width=16", "--set", "2.height=16") == 0
    assert "image_scale_00003_.png" in _pngs(tmp_path)
    prompt = json.loads(open(API).read())
    prompt["\u00b2"] = prompt.pop("3")
    workflow = write_json(prompt, "superscript_id.json")
    assert _run(tmp_path, str(workflow), "--set", "2.width=16", "--set", "2.height=16") == 0
    assert "image_scale_00004_.png" in _pngs(tmp_path)
    assert main(["models", str(workflow)]) == 0


def test_write_next_free_does_not_replace_a_name_taken_meanwhile(tmp_path):
    from humangen.utils.paths import write_next_free
    (tmp_path / "a_00001_.png").write_bytes(b"old")
    calls = []

    def data(tmp):
        calls.append(tmp)
        with open(tmp, "wb") as f:
            f.write(b"new")

    path = write_next_free(tmp_path, lambda n: f"a_{n:05}_.png", 1, data=data)
    assert path.name == "a_00002_.png" and path.read_bytes() == b"new"
    assert (tmp_path / "a_00001_.png").read_bytes() == b"old"
    assert len(calls) == 1  # written once, then linked to the first free name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_00001_.png", "a_00002_.png"]


def test_batch_sweep_with_set(tmp_path):
    code = _run(tmp_path, API, "--batch", "2.width=30,40-41", "--set", "height=20",
                "--set", "2.upscale_method=lanczos")
    assert code == 0
    sizes = []
    for name in _pngs(tmp_path):
        with Image.open(tmp_path / "out" / name) as im:
            sizes.append(im.size)
    assert sizes == [(30, 20), (40, 20), (41, 20)]


def test_batch_product_and_cache(tmp_path, toys, write_json, capsys):
    wf = write_json(toy_prompt(2, 3))
    assert _run(tmp_path, wf, "--batch", "2.value=1-3", "--batch", "1.mode=plain,neg", extra_nodes=toys) == 0
    # jobs are the product of the axes, the first --batch outermost
    assert [v for k, v in Calls.log if k == "sink"] == [3.0, -1.0, 4.0, 0.0, 5.0, 1.0]
    # node 2 (value) is reused while only node 1's mode changes, and vice versa: 9 const calls, not 12
    assert [v for k, v in Calls.log if k == "const"] == [2, 1, 2, 2, 2, 2, 2, 3, 2]
    err = capsys.readouterr().err
    assert "job 2/6 2.value=1 1.mode=neg: 3 ran, 1 cached" in err


def test_set_errors_exit_2(tmp_path, capsys):
    assert _run(tmp_path, API, "--set", "2.width=wide") == 2
    assert "--set 2.width=wide: 'wide' is not a valid int" in capsys.readouterr().err
    assert _run(tmp_path, API, "--set", "9.width=3") == 2
    assert "there is no node 9 in the workflow" in capsys.readouterr().err
    assert _run(tmp_path, API, "--set", "2.depth=3") == 2
    assert "node 2 (ImageScale) input 'depth': --set 2.depth=3: no such input" in capsys.readouterr().err
    assert _run(tmp_path, API, "--set", "2.crop=diagonal") == 2
    assert "node 2 (ImageScale) input 'crop': value 'diagonal' is not in the list" in capsys.readouterr().err
    # a huge value is quoted cut short, once, with its length: the error stays one readable line
    assert _run(tmp_path, API, "--set", "2.width=" + "9" * 5000) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set 2.width=99999999999999999999...(5000 characters): '99999") and \
        err.endswith("...(5000 characters) is not a valid int\n") and len(err) < 250, err
    assert _run(tmp_path, API, "--batch", "2.width=1,x" + "y" * 999) == 2
    assert "--batch 2.width=1,xyyyyyyyyyyyyyyyyy...(1002 characters): 'xyyyy" in capsys.readouterr().err
    assert _pngs(tmp_path) == []


def test_dry_run_and_validate_write_nothing(tmp_path, capsys):
    assert _run(tmp_path, UI, "--dry-run", "--batch", "2.width=10-12") == 0
    out = capsys.readouterr().out
    assert "job 3/3: 2.width=12: 3 nodes" in out and "valid (ui format, 3 job(s))" in out
    assert main(["validate", API, "--input-dir", str(ASSETS)]) == 0
    assert _pngs(tmp_path) == []


def test_missing_input_image_exit_2(tmp_path, capsys):
    code = main(["run", API, "--out", str(tmp_path / "out"), "--input-dir", str(tmp_path), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"node 1 (LoadImage): invalid input: Invalid image file: astronaut.png: no such file in {tmp_path}" in err


def test_an_out_folder_that_cannot_be_written_is_refused_before_any_job(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out, problem in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "sub", "cannot be written")):
        code = main(["run", API, "--out", str(out), "--input-dir", str(ASSETS), "--quiet"])
        assert code == 2
        err = capsys.readouterr().err
        assert f"error: --out {out} {problem}" in err and "choose a folder" in err and "Traceback" not in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_an_input_that_is_not_a_regular_file_is_refused_not_opened(tmp_path, capsys):
    """A named pipe (or device) in the input folder would block the run forever in open()."""
    import shutil
    shutil.copy(ASSETS / "astronaut.png", tmp_path / "astronaut.png")
    os.mkfifo(tmp_path / "pipe.png")
    code = main(["run", API, "--out", str(tmp_path / "out"), "--input-dir", str(tmp_path), "--quiet",
                 "--set", "1.image=pipe.png"])
    assert code == 2
    assert "'pipe.png' is not a file in its folder (missing, or a folder, pipe or device)" in capsys.readouterr().err


def test_missing_models_are_listed_with_folder_link_and_the_rest_exit_2(tmp_path, capsys):
    models = tmp_path / "m"
    wf = str(WORKFLOWS / "editing_garment_length.json")
    assert _run(tmp_path, wf, "--models-dir", str(models), "--dry-run") == 2
    err = capsys.readouterr().err
    assert "editing_garment_length.json: 4 model file(s) missing, nothing was run" in err
    # every line: the exact file, the folder it goes in, a direct link to that file, and the node that needs it
    assert (f"1. 'stylegan_human_v2_1024.pkl' -> put it in the 'stylegan' model folder ({models / 'stylegan'}); "
            "download: https://drive.google.com/uc?export=download&id=1FlAb1rYa0r_--Zj_ML8e6shmaF28hQb5") in err
    raw = "https://raw.githubusercontent.com/stylegan-human/StyleGAN-Human/main/latent_direction/"
    assert (f"2. 'sefa/upper_length.pt' -> put it in the 'stylegan_directions' model folder "
            f"({models / 'stylegan_directions'}); download: {raw}sefa/upper_length.pt") in err
    assert f"download: {raw}ss/upper_length/style_vect_mean_5.pkl" in err
    assert f"download: {raw}ss_statics/upper_length_statis/5/statis.csv" in err
    assert "[node 5 HumanGenStyleSpaceEdit, input 'layer']" in err
    # the documented layouts satisfy it: latent_direction/ copied as a folder, the generator beside it
    (models / "stylegan").mkdir(parents=True)
    (models / "stylegan" / "stylegan_human_v2_1024.pkl").write_bytes(b"x")
    for rel in ("sefa/upper_length.pt", "ss/upper_length/style_vect_mean_5.pkl",
                "ss_statics/upper_length_statis/5/statis.csv"):
        path = models / "stylegan_directions" / "latent_direction" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    capsys.readouterr()
    assert _run(tmp_path, wf, "--models-dir", str(models), "--dry-run") == 0, capsys.readouterr().err


def test_models_declared_in_the_workflow_are_checked_too(tmp_path, write_json, capsys):
    import json
    ui = json.loads((WORKFLOWS / "image_scale.json").read_text())
    ui["models"] = [{"name": "g.safetensors", "url": "https://example.org/g.safetensors", "directory": "checkpoints"}]
    wf = write_json(ui)
    assert _run(tmp_path, wf, "--models-dir", str(tmp_path / "m")) == 2
    err = capsys.readouterr().err
    assert (f"'g.safetensors' -> put it in the 'checkpoints' model folder ({tmp_path / 'm' / 'checkpoints'}); "
            "download: https://example.org/g.safetensors [declared in the workflow's models]") in err
    (tmp_path / "m" / "checkpoints").mkdir(parents=True)
    (tmp_path / "m" / "checkpoints" / "g.safetensors").write_bytes(b"x")
    assert _run(tmp_path, wf, "--models-dir", str(tmp_path / "m")) == 0


def test_models_command_lists_and_writes_the_frontend_list(tmp_path, capsys):
    import json
    import shutil
    wf = tmp_path / "w.json"
    shutil.copy(WORKFLOWS / "upscale_4x.json", wf)
    data = json.loads(wf.read_text())
    del data["models"]
    wf.write_text(json.dumps(data))
    assert main(["models", str(wf), "--models-dir", str(tmp_path / "m"), "--write"]) == 0
    out = capsys.readouterr().out
    assert "MISSING upscale_models/RealESRGAN_x4plus.pth" in out and "wrote 1 entries" in out
    assert json.loads(wf.read_text())["models"] == [
        {"name": "RealESRGAN_x4plus.pth", "directory": "upscale_models",
         "url": "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth"}]


def test_models_write_checks_every_file_first_and_never_leaves_one_broken(tmp_path, capsys):
    """--write replaces each file atomically: text UTF-8 cannot hold (a lone surrogate escape, which JSON allows)
    is written escaped instead of emptying the file; a bad file among several stops the run before any is
    rewritten; a number JSON cannot write back (1e400) leaves the file as it was."""
    import json
    import shutil
    good = tmp_path / "good.json"
    shutil.copy(WORKFLOWS / "upscale_4x.json", good)
    data = json.loads(good.read_text())
    del data["models"]
    data["extra"] = dict(data.get("extra") or {}, note="\ud800 kept")
    good.write_text(json.dumps(data))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    before = good.read_bytes()
    assert main(["models", str(good), str(bad), "--models-dir", str(tmp_path / "m"), "--write"]) == 2
    assert good.read_bytes() == before and "bad.json: not valid JSON" in capsys.readouterr().err
    assert main(["models", str(good), "--models-dir", str(tmp_path / "m"), "--write"]) == 0
    written = json.loads(good.read_text())
    assert written["extra"]["note"] == "\ud800 kept" and written["models"][0]["name"] == "RealESRGAN_x4plus.pth"
    del data["extra"]["note"]
    data["extra"]["big"] = 1e400
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps(data).replace("Infinity", "1e400"))
    before = huge.read_bytes()
    assert main(["models", str(huge), "--models-dir", str(tmp_path / "m"), "--write"]) == 2
    assert huge.read_bytes() == before and "holds a number too large for JSON" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_convert_output_must_be_a_regular_file(tmp_path, capsys):
    """`convert -o` never replaces a pipe or a device, also with --overwrite (as root, /dev/null became a file),
    and a folder (or a name ending in '/') is refused, each as one line with exit 2."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for target, expected in ((str(fifo), "is not a regular file (a pipe or a device); it is never replaced"),
                             (str(tmp_path), "names a folder, not a file"),
                             (str(tmp_path / "newdir") + "/", "names a folder, not a file")):
        assert main(["convert", API, "-o", target, "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, err
    assert fifo.is_fifo() and not (tmp_path / "newdir").exists()


def test_node_failure_exit_1_and_keep_going(tmp_path, toys, write_json, capsys):
    prompt = toy_prompt()
    prompt["5"] = {"class_type": "ToyFail", "inputs": {"x": ["3", 0]}}
    prompt["6"] = {"class_type": "ToySink", "inputs": {"x": ["5", 0], "label": "bad"}}
    wf = write_json(prompt)
    assert _run(tmp_path, wf, "--batch", "1.value=1-3", extra_nodes=toys) == 1
    err = capsys.readouterr().err
    assert "error: job 1/3 (1.value=1): node 5 (ToyFail) failed: ValueError: boom" in err
    assert "job 2/3" not in err
    assert _run(tmp_path, wf, "--batch", "1.value=1-3", "--keep-going", extra_nodes=toys) == 1
    assert "error: job 3/3 (1.value=3)" in capsys.readouterr().err


def test_interrupt_exit_130_and_stops_the_batch(tmp_path, toys, write_json, capsys):
    prompt = toy_prompt()
    prompt["5"] = {"class_type": "ToyInterrupt", "inputs": {"x": ["3", 0]}}
    prompt["4"]["inputs"]["x"] = ["5", 0]
    assert _run(tmp_path, write_json(prompt), "--batch", "1.value=1-3", extra_nodes=toys) == 130
    assert [v for k, v in Calls.log if k == "interrupt"] == [4.0]  # the first job stopped, no later job ran
    err = capsys.readouterr().err
    assert "interrupted: stopped cleanly; 3 job(s) not run or not finished" in err
    assert "0/3 job(s) ok" in err  # the interrupted job and the two never started are not ok


def _slow_prompt():
    """const -> ToySlow (node 5, 10 ms a step) -> sink."""
    prompt = toy_prompt()
    prompt["5"] = {"class_type": "ToySlow", "inputs": {"x": ["3", 0], "steps": 3000}}
    prompt["4"]["inputs"]["x"] = ["5", 0]
    return prompt


def test_timeout_stops_a_running_in_process_job_and_the_next_job_still_runs(tmp_path, toys, write_json, capsys):
    """--timeout in-process: a 30 s job stops at its next progress step once its time is up, and fails naming the
    node and the limit; the interrupt flag is lowered again, so with --keep-going the next job runs (and times out
    on its own) instead of stopping the run as an interruption would (status 130)."""
    wf = write_json(_slow_prompt())
    t0 = time.monotonic()
    assert _run(tmp_path, wf, "--timeout", "0.4", "--batch", "5.steps=3000,3001", "--keep-going",
                extra_nodes=toys) == 1
    assert time.monotonic() - t0 < 15
    err = capsys.readouterr().err
    for label in ("job 1/2 (5.steps=3000)", "job 2/2 (5.steps=3001)"):
        assert f"error: {label}: stopped in node 5 (ToySlow): the job's --timeout of 0.4 s has passed" in err
    assert [k for k, _ in Calls.log if k == "slow"] == []  # neither finished
    assert "0/2 job(s) ok" in err


def test_a_job_within_its_timeout_and_the_deadline_of_a_running_job(tmp_path, toys, write_json, capsys):
    prompt = _slow_prompt()
    prompt["5"]["inputs"]["steps"] = 3
    assert _run(tmp_path, write_json(prompt), "--timeout", "30", extra_nodes=toys) == 0
    assert ("slow", 3) in Calls.log
    t0 = time.monotonic()
    assert _run(tmp_path, write_json(_slow_prompt()), "--deadline", "0.4", "--batch", "5.steps=3000,3001",
                "--keep-going", extra_nodes=toys) == 1
    assert time.monotonic() - t0 < 15
    err = capsys.readouterr().err
    assert "error: job 1/2 (5.steps=3000): stopped in node 5 (ToySlow): the run's --deadline of 0.4 s has passed" \
        in err
    assert "error: job 2/2 (5.steps=3001): not started, the run's --deadline of 0.4 s has passed" in err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_ctrl_c_after_the_time_limit_fired_is_still_a_first_one(standalone_host):
    """Once a job's --timeout has raised the interrupt flag, a user's Ctrl-C before the node notices stops the run
    gently (not hard, as a second Ctrl-C does) and is an interruption of the run, not the job's timeout."""
    from humangen.runner.engine import JobTimedOut, time_limit
    from humangen.runner.remote import Budget
    from humangen.utils import host
    from humangen.utils.errors import HumanGenInterrupted
    with host.interrupt_on_sigint():
        press = signal.getsignal(signal.SIGINT)
        with pytest.raises(HumanGenInterrupted) as info:
            with time_limit(standalone_host, Budget.after(0.05, "the job's --timeout of 0.05 s")):
                assert standalone_host.interrupt_event.wait(10)  # the time ran out
                press(signal.SIGINT, None)  # no KeyboardInterrupt here: a first Ctrl-C
                host.check_interrupt()
        assert not isinstance(info.value, JobTimedOut)
        assert standalone_host.interrupt_event.is_set()  # still raised: the run stops
        with pytest.raises(KeyboardInterrupt):
            press(signal.SIGINT, None)  # a second Ctrl-C stops hard
    assert not standalone_host.stop_requested.is_set()


def test_timeout_in_a_resumable_run_records_the_failure(tmp_path, toys, write_json, capsys):
    import json
    assert _run(tmp_path, write_json(_slow_prompt()), "--resume", "--timeout", "0.4", extra_nodes=toys) == 1
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 1 and "the job's --timeout of 0.4 s has passed" in failures[0]["error"]
    assert "stopped in node 5 (ToySlow)" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["run"]) == 2
    assert main(["frobnicate"]) == 2
    assert _run(tmp_path, str(tmp_path / "nope.json")) == 2
    assert "does not exist" in capsys.readouterr().err


SLOW_SCRIPT = textwrap.dedent("""
    import importlib.util, json, sys, time
    root = sys.argv[1]
    spec = importlib.util.spec_from_file_location("humangen", root + "/__init__.py", submodule_search_locations=[root])
    pack = importlib.util.module_from_spec(spec); sys.modules["humangen"] = pack; spec.loader.exec_module(pack)
    from humangen.utils import host
    from humangen.runner.cli import main

    class Slow:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"steps": ("INT", {"default": 1000, "min": 1, "max": 100000})}}
        RETURN_TYPES = ()
        OUTPUT_NODE = True
        FUNCTION = "run"
        def run(self, steps):
            bar = host.progress(steps)
            print("started", flush=True)
            for _ in range(steps):
                time.sleep(0.01)
                host.check_interrupt()
                bar.update(1)
            print("finished", flush=True)
            return {}

    with open(sys.argv[2], "w") as f:
        json.dump({"1": {"class_type": "Slow", "inputs": {"steps": 3000}}}, f)
    sys.exit(main(["run", sys.argv[2], "--out", sys.argv[3], "--batch", "1.steps=3000,3001"],
                  extra_nodes={"Slow": Slow}))
""")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_cleanly_with_status_130(tmp_path, sig):
    """Ctrl-C, and SIGTERM as `timeout`, `docker stop` or a batch scheduler send it, stop the run cleanly."""
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SCRIPT)
    env = dict(os.environ, HUMANGEN_NO_PROGRESS="0")
    proc = subprocess.Popen([sys.executable, str(script), str(ROOT), str(tmp_path / "wf.json"), str(tmp_path / "o")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "started"
        time.sleep(0.2)
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "finished" not in out and "started" not in out  # the second job never started
    assert "interrupted: stopped cleanly; 2 job(s) not run or not finished" in err and "0/2 job(s) ok" in err
    assert "Traceback" not in err


def test_python_pack_dir_entry_point(tmp_path):
    env = dict(os.environ, HUMANGEN_NO_PROGRESS="1")
    proc = subprocess.run([sys.executable, str(ROOT), "run", API, "--input-dir", str(ASSETS), "--out",
                           str(tmp_path / "out"), "--set", "2.width=8", "--set", "2.height=8"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "out" / "image_scale_00001_.png")


def test_summary_lists_every_file_written_and_one_save_shares_one_name_pattern(tmp_path, capsys):
    """photo_to_skeleton saves a skeleton PNG and the pose JSON: both are listed and counted, both named like
    ComfyUI's SaveImage (prefix_00001_.ext), and a second run numbers both 00002."""
    wf = str(WORKFLOWS / "photo_to_skeleton.json")
    for n in (1, 2):
        assert _run(tmp_path, wf) == 0
        out = capsys.readouterr()
        expected = [str(tmp_path / "out" / f"photo_to_skeleton_{n:05d}_.png"),
                    str(tmp_path / "out" / f"photo_to_skeleton_pose_{n:05d}_.json")]
        assert out.out.split() == expected
        assert all(os.path.isfile(p) for p in expected)
        assert "1/1 job(s) ok, 2 file(s) written" in out.err
    assert len(list((tmp_path / "out").iterdir())) == 4


def test_summary_counts_files_a_failing_job_saved_before_it_failed(tmp_path, capsys):
    """The skeleton PNG is saved, then SavePose fails to write (a file stands where its folder would be): the PNG is
    kept, listed and counted."""
    wf = str(WORKFLOWS / "photo_to_skeleton.json")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_bytes(b"a file")
    assert _run(tmp_path, wf, "--set", "5.filename_prefix=sub/pose") == 1
    out = capsys.readouterr()
    png = str(tmp_path / "out" / "photo_to_skeleton_00001_.png")
    assert out.out.split() == [png] and os.path.isfile(png)
    assert "node 5 (HumanGenSavePose) failed:" in out.err and "sub is a file, not a folder" in out.err
    assert "0/1 job(s) ok, 1 file(s) written" in out.err
    assert sorted(os.listdir(tmp_path / "out")) == ["photo_to_skeleton_00001_.png", "sub"]


def test_a_bad_save_prefix_is_refused_before_any_node_runs(tmp_path, capsys):
    """SavePose's prefix leaves --out: the workflow is invalid (exit 2) and the SaveImage before it writes nothing."""
    wf = str(WORKFLOWS / "photo_to_skeleton.json")
    assert _run(tmp_path, wf, "--set", "5.filename_prefix=../escape") == 2
    err = capsys.readouterr().err
    assert "node 5 (HumanGenSavePose): invalid input: HumanGenSavePose: input 'filename_prefix': '../escape' " \
           "points outside its folder" in err
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_summary_lists_previews(tmp_path, write_json, capsys):
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "astronaut.png"}},
              "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                           "width": 8, "height": 8, "crop": "disabled"}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "kept"}},
              "4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    assert _run(tmp_path, write_json(prompt)) == 0
    out = capsys.readouterr()
    listed = out.out.split()
    assert listed[0] == str(tmp_path / "out" / "kept_00001_.png")
    assert len(listed) == 2 and os.path.dirname(listed[1]) == str(tmp_path / "out" / "temp")
    assert os.path.isfile(listed[1]) and os.path.basename(listed[1]).endswith("_00001_.png")
    assert "1/1 job(s) ok, 2 file(s) written" in out.err


def test_quiet_run_prints_only_the_job_line_and_the_summary(tmp_path):
    """--quiet holds back mediapipe's absl/TensorFlow Lite lines, which native code writes straight to fd 2."""
    env = {k: v for k, v in os.environ.items() if k != "HUMANGEN_NO_PROGRESS"}
    proc = subprocess.run([sys.executable, str(ROOT), "run", str(WORKFLOWS / "photo_to_skeleton.json"),
                           "--input-dir", str(ASSETS), "--out", str(tmp_path / "out"), "--quiet"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("job 1/1: 5 ran, 0 cached, 2 file(s), ")
    assert lines[1].startswith("1/1 job(s) ok, 2 file(s) written in ")
    assert len(proc.stdout.split()) == 2


def test_quiet_native_logs_holds_fd2_back_and_replays_it_on_error(capfd):
    from humangen.utils import host
    with host.quiet_native_logs():  # the active host is not quiet: nothing is held back
        os.write(2, b"loud\n")
    assert capfd.readouterr().err == "loud\n"
    host.use(host.StandaloneHost(quiet=True))
    with host.quiet_native_logs():
        os.write(2, b"native noise\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(RuntimeError), host.quiet_native_logs():
        os.write(2, b"context of the failure\n")
        raise RuntimeError("boom")
    assert capfd.readouterr().err == "context of the failure\n"
    os.write(2, b"after\n")  # fd 2 is restored
    assert capfd.readouterr().err == "after\n"
