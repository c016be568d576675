"""HumanSD inside a real ComfyUI (in-process, CPU, random full-size weights). Skipped unless COMFYUI_PATH points at a
ComfyUI checkout; COMFYUI_EXTRA_SITE may add a site-packages with ComfyUI's extra requirements (torchsde …).
Slow (~1 min CPU, ~4 GB RAM): it builds the real SD2.1-base UNet."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMFY = os.environ.get("COMFYUI_PATH")
pytestmark = [pytest.mark.comfyui, pytest.mark.slow,
              pytest.mark.skipif(not COMFY, reason="set COMFYUI_PATH to a ComfyUI checkout to run")]


def test_apply_pose_makes_the_stock_sampler_run_humansd():
    script = Path(__file__).resolve().parent / "humansd_comfy_check.py"
    out = subprocess.run([sys.executable, str(script), COMFY], capture_output=True, text=True, timeout=1800)
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
