"""HumanSD inside a real ComfyUI (in-process, CPU, random full-size weights). Skipped unless COMFYUI_PATH points at a
ComfyUI checkout; COMFYUI_EXTRA_SITE may add a site-packages with ComfyUI's extra requirements (torchsde …).
Slow (~1 min CPU, ~4 GB RAM): it builds the real SD2.1-base UNet."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hgtest import COMFYUI_SKIP_REASON

COMFY = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfyui, pytest.mark.slow,
              pytest.mark.skipif(not COMFY, reason=COMFYUI_SKIP_REASON)]


def test_apply_pose_makes_the_stock_sampler_run_humansd(tmp_path):
    from comfy_server import host_environment
    script = Path(__file__).resolve().parent / "humansd_comfy_check.py"
    python, env = host_environment(tmp_path)  # the host's interpreter and environment, as the server tests use
    out = subprocess.run([python, str(script), COMFY], capture_output=True, text=True, timeout=1800, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["registered"]  # HumanGenHumanSDApplyPose appears only with the host present
    # ComfyUI's own view of the checkpoint: SD2, 8 input channels, epsilon, treated as an inpainting model …
    assert (report["detected"], report["in_channels"], report["model_type"]) == ("SD20", 8, "ModelType.EPS")
    assert report["stock_concat_keys"] == ["mask", "masked_image"]
    # … so the stock KSampler fails on conv_in (4 + 5 channels) …
    assert "channels" in report["stock_error"]
    # … and with our patch it samples; the input MODEL stays unpatched
    assert report["patched_shape"] == [1, 4, 8, 8] and report["patched_finite"] and report["input_model_untouched"]
    # our LDM key mapping on the real layout: ComfyUI's UNet == our diffusers UNet
    assert report["unmapped"] == [] and report["eps_max_abs_diff"] < 1e-5
    # the Skeleton-SD sampler node under the ComfyUI host adapter: models go through ComfyUI's memory manager
    assert report["host"] == "ComfyHost" and report["node_images"] == [2, 64, 64, 3] and report["node_managed"]


def test_workflows_run_in_a_real_comfyui_server(tmp_path):
    """main.py --cpu on 127.0.0.1 with a throw-away --base-directory (custom_nodes/humangen -> this checkout, a tiny
    stand-in humansd-v1.ckpt): /object_info lists our nodes (ApplyPose included) and both HumanSD API workflows
    finish (steps 2, short side 64). COMFYUI_PYTHON picks the host interpreter (default: this one)."""
    import shutil
    import time
    import urllib.error
    import urllib.request

    import humansd_tiny as T
    from hgtest import ROOT
    from comfy_server import comfyui_server
    base = tmp_path / "base"
    (base / "input").mkdir(parents=True)
    for asset in ("astronaut.png", "humansd_pose.json"):
        shutil.copy(ROOT / "workflows" / "assets" / asset, base / "input")
    T.save_ckpt(base / "models" / "humansd" / "humansd-v1.ckpt", T.ldm_state_dict(*T.make_components(seed=5)))
    with comfyui_server(base) as url:
        info = json.loads(urllib.request.urlopen(url + "/object_info", timeout=60).read())
        assert {"HumanGenHumanSDLoader", "HumanGenSkeletonSDSampler", "HumanGenHumanSDConvert",
                "HumanGenHumanSDApplyPose"} <= set(info)
        assert "custom_nodes/humangen" not in "".join(l for l in (base / "comfyui.log").read_text().splitlines()
                                                      if "IMPORT FAILED" in l or "Cannot import" in l)
        for name in ("humansd_pose_json", "humansd_photo_pose"):
            api = json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())
            for node in api.values():
                if node["class_type"] == "HumanGenSkeletonSDSampler":
                    node["inputs"].update(steps=2, short_side=64)
            req = urllib.request.Request(url + "/prompt", data=json.dumps({"prompt": api}).encode(),
                                         headers={"Content-Type": "application/json"})
            try:
                pid = json.loads(urllib.request.urlopen(req, timeout=60).read())["prompt_id"]
            except urllib.error.HTTPError as exc:
                pytest.fail(f"{name}: {exc.read().decode()[:2000]}")
            deadline = time.monotonic() + 600
            while True:
                hist = json.loads(urllib.request.urlopen(f"{url}/history/{pid}", timeout=30).read())
                status = hist.get(pid, {}).get("status", {})
                if status.get("completed") is not None:
                    break
                assert time.monotonic() < deadline, f"{name} did not finish"
                time.sleep(1)
            assert status["status_str"] == "success", status.get("messages")
            saved = [img["filename"] for out in hist[pid]["outputs"].values() for img in out.get("images", [])]
            assert any(f.startswith(name) for f in saved)
