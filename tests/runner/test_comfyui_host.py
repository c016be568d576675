"""Optional: the pack inside a real ComfyUI. Skipped unless COMFYUI_PATH points at a ComfyUI checkout.

Starts `main.py --cpu --listen 127.0.0.1` on a free port with a throw-away `--base-directory` whose custom_nodes/
holds only a link to this checkout, then checks: no IMPORT FAILED for the pack, /object_info lists every node id,
the runner's core-compatible nodes declare what the host's do, every workflow that needs no model files runs
through the runner's --server mode, HumanGen Pose Detect's POSE_KEYPOINT keeps every keypoint under
comfyui_controlnet_aux's decoder (aux's own RenderPeopleKps draws it when aux is installed in the host's
custom_nodes, else aux's rules from tests/aux_rules.py read the saved pose), and HumanGen's upscale loader feeds the
core ImageUpscaleWithModel (a tiny spandrel-format RRDBNet x4 written into the throw-away models folder).
COMFYUI_PYTHON selects the host's interpreter (default: this one); see docs/comfyui-host.md for a CPU
set-up. When that interpreter's torchvision cannot import (a CUDA build on CPU torch), the host process gets the
pack's own torchvision fix (utils/compat.py) via sitecustomize.
"""
from __future__ import annotations

import json
import shutil
import urllib.request

import numpy as np
import pytest
from PIL import Image

from aux_rules import aux_decode
from comfy_server import COMFYUI, comfyui_server
from hgtest import COMFYUI_SKIP_REASON
from hgtoys import ASSETS, WORKFLOWS
from humangen import NODE_CLASS_MAPPINGS
from humangen.runner.cli import main
from humangen.runner.core_nodes import NODE_CLASS_MAPPINGS as CORE
from humangen.runner.remote import Server
from humangen.utils.pose import OPENPOSE_COLORS

pytestmark = [pytest.mark.comfyui,
              pytest.mark.skipif(not COMFYUI, reason=COMFYUI_SKIP_REASON)]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy-base")
    (base / "input").mkdir()
    shutil.copy(ASSETS / "astronaut.png", base / "input")
    import torch

    import hg_upscale
    (base / "models" / "upscale_models").mkdir(parents=True)
    torch.save(hg_upscale.realesrgan_checkpoint(hg_upscale.rrdbnet_state_dict()),
               base / "models" / "upscale_models" / "tiny_x4.pth")
    with comfyui_server(base, timeout=180) as url:
        yield url, base


def test_pack_imports_and_registers_every_node(comfy):
    url, base = comfy
    text = (base / "comfyui.log").read_text()
    assert not [line for line in text.splitlines() if "IMPORT FAILED" in line and "humangen" in line], text[-3000:]
    info = json.loads(urllib.request.urlopen(url + "/object_info", timeout=60).read())
    missing = sorted(set(NODE_CLASS_MAPPINGS) - set(info))
    assert missing == []
    for node_id in NODE_CLASS_MAPPINGS:
        assert info[node_id]["category"].startswith("HumanGen")


def _version(url) -> tuple[int, ...]:
    stats = json.loads(urllib.request.urlopen(url + "/system_stats", timeout=60).read())
    return tuple(int(v) for v in stats["system"]["comfyui_version"].split(".")[:3])


def test_core_compatible_nodes_match_the_host(comfy):
    """Inputs exactly the host's; outputs the current host's (v0.33: SaveImage/PreviewImage output `images`), and
    an older host's outputs (v0.8: none) a prefix of ours."""
    url, _ = comfy
    info = json.loads(urllib.request.urlopen(url + "/object_info", timeout=60).read())
    current = _version(url) >= (0, 33, 0)
    for node_id, cls in CORE.items():
        ours = json.loads(json.dumps(cls.INPUT_TYPES()))
        theirs = info[node_id]["input"]
        if node_id == "LoadImage":  # the file lists differ (different input folders)
            ours["required"]["image"][0] = theirs["required"]["image"][0] = []
        assert ours == theirs, node_id
        returns = list(cls.RETURN_TYPES)
        names = list(getattr(cls, "RETURN_NAMES", None) or returns)
        host_returns, host_names = info[node_id]["output"], info[node_id]["output_name"]
        if current:
            assert (returns, names) == (host_returns, host_names), node_id
        else:
            assert (returns[:len(host_returns)], names[:len(host_names)]) == (host_returns, host_names), node_id
        assert bool(getattr(cls, "OUTPUT_NODE", False)) == info[node_id]["output_node"]


def _run_prompt(url, prompt, out_dir):
    server = Server(url, timeout=60)
    entry = server.wait(server.submit(prompt), timeout=300)
    return entry, server.download(entry, str(out_dir))


def test_pose_detect_keeps_every_keypoint_in_controlnet_aux(comfy, tmp_path):
    url, _ = comfy
    info = json.loads(urllib.request.urlopen(url + "/object_info", timeout=60).read())
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "astronaut.png"}},
        "2": {"class_type": "HumanGenPoseDetect", "inputs": {"image": ["1", 0], "backend": "mediapipe",
                                                             "keypoint_threshold": 0.3, "max_people": 1,
                                                             "layout": "openpose18", "allow_no_person": False}},
        "3": {"class_type": "HumanGenSavePose", "inputs": {"pose": ["2", 0], "filename_prefix": "interop/pose",
                                                           "format": "openpose_json"}}}
    aux_installed = "RenderPeopleKps" in info
    if aux_installed:
        prompt["4"] = {"class_type": "RenderPeopleKps", "inputs": {"kps": ["2", 0], "render_body": True,
                                                                     "render_hand": True, "render_face": True}}
        prompt["5"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "interop/aux"}}
    _, files = _run_prompt(url, prompt, tmp_path)
    (pose_file,) = [f for f in files if f.endswith(".json")]
    (frame,) = json.loads(open(pose_file).read())
    person = frame["people"][0]
    raw = person["humangen_scores"]["pose_keypoints_2d"]
    (decoded,), height, width = aux_decode(frame)
    kept = [i for i, p in enumerate(decoded["pose_keypoints_2d"]) if p is not None]
    assert kept == [i for i, c in enumerate(raw) if c > 0] and len(kept) >= 10
    assert (width, height) == (512, 512)
    if aux_installed:  # aux's own renderer: a joint dot in aux's colour at each kept keypoint
        (render,) = [f for f in files if "aux_" in f and f.endswith(".png")]
        img = np.asarray(Image.open(render).convert("RGB"))
        assert img.shape == (512, 512, 3) and (img.max(-1) > 0).sum() > 2000
        hits = sum(tuple(img[int(y), int(x)]) == OPENPOSE_COLORS[i]
                   for i, (x, y) in ((i, decoded["pose_keypoints_2d"][i]) for i in kept))
        assert hits >= len(kept) - 4  # dots drawn later (face) may cover a neighbour


def test_humangen_upscale_model_works_in_core_upscale_node(comfy, tmp_path):
    url, _ = comfy
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "astronaut.png"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "area", "width": 40,
                                                     "height": 32, "crop": "disabled"}},
        "3": {"class_type": "HumanGenUpscaleModelLoader", "inputs": {"model_name": "tiny_x4.pth",
                                                                     "extra_architectures": False}},
        "4": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["3", 0], "image": ["2", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "interop/up"}}}
    _, files = _run_prompt(url, prompt, tmp_path)
    (png,) = files
    img = np.asarray(Image.open(png))
    assert img.shape == (128, 160, 3) and img.std() > 1


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.json")) + sorted((WORKFLOWS / "api").glob("*.json")),
                         ids=lambda p: str(p.relative_to(WORKFLOWS)))
def test_workflows_run_on_the_host(comfy, path, tmp_path):
    if json.loads((WORKFLOWS / path.name).read_text()).get("models"):
        pytest.skip("needs model files")
    url, _ = comfy
    code = main(["run", str(path), "--server", url, "--input-dir", str(ASSETS), "--out", str(tmp_path),
                 "--quiet", "--timeout", "300"])
    assert code == 0
    assert list(tmp_path.rglob("*.png"))
