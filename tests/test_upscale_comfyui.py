"""The upscale nodes inside a real ComfyUI (in-process, no server): core UPSCALE_MODEL interop both ways, the
ComfyHost paths (model folders, ModelPatcher, ProgressBar, interrupt). Runs only with COMFYUI_PATH set (a ComfyUI
v0.8.0 or v0.33.0 checkout) and, if ComfyUI has its own venv, COMFYUI_PYTHON (and COMFYUI_EXTRA_SITE), as the
server tests (tests/comfy_server.py `host_environment`)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap

import pytest

from comfy_server import host_environment
from hgtest import COMFYUI_SKIP_REASON, ROOT

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

SCRIPT = textwrap.dedent('''
    import asyncio, importlib, json, os, sys
    comfy_path, pack, models, tests = sys.argv[1:5]
    sys.path.insert(0, comfy_path); os.chdir(comfy_path); sys.argv = ["main.py", "--cpu"]
    import comfy.options; comfy.options.enable_args_parsing()
    import utils.extra_config  # noqa: F401 - before `nodes`
    import folder_paths
    folder_paths.add_model_folder_path("upscale_models", models)
    import nodes, torch
    sys.path.insert(0, tests)
    import hg_upscale as H
    torch.save(H.realesrgan_checkpoint(H.rrdbnet_state_dict()), os.path.join(models, "tiny_x4.pth"))
    report = {"loaded": asyncio.run(nodes.load_custom_node(pack))}
    from comfy_extras.nodes_upscale_model import ImageUpscaleWithModel, UpscaleModelLoader
    import comfy.model_management as mm, comfy.utils
    M = nodes.NODE_CLASS_MAPPINGS
    host = importlib.import_module(pack + ".utils.host")
    report["host"] = type(host.get()).__name__
    report["combo"] = M["HumanGenUpscaleModelLoader"].INPUT_TYPES()["required"]["model_name"][0]
    image = torch.rand((1, 48, 40, 3), generator=torch.Generator().manual_seed(0))
    core_model = UpscaleModelLoader.execute("tiny_x4.pth").result[0]
    ours = M["HumanGenTiledUpscale"]().upscale(image, core_model, tile_size=0)[0]
    (our_model,) = M["HumanGenUpscaleModelLoader"]().load("tiny_x4.pth")
    core = ImageUpscaleWithModel.execute(our_model, image).result[0]
    report["shape"] = list(ours.shape)
    report["max_diff"] = (ours - core).abs().max().item()
    seen = []
    comfy.utils.set_progress_bar_global_hook(lambda v, t, p, node_id=None: seen.append([v, t]))
    M["HumanGenTiledUpscale"]().upscale(image, our_model, tile_size=24, overlap=8)
    report["progress"] = seen
    report["patcher"] = type(getattr(our_model.model, "_humangen_patcher", None)).__name__
    report["patcher_is_the_core_one"] = our_model.model._humangen_patcher is our_model.patcher
    report["core_patcher_reused"] = core_model.model.__dict__.get("_humangen_patcher") in (None, core_model.patcher)
    mm.interrupt_current_processing(True)
    try:
        M["HumanGenTiledUpscale"]().upscale(image, our_model, tile_size=24, overlap=8)
        report["interrupt"] = None
    except BaseException as exc:  # noqa: BLE001 - which one the host raised (a BaseException since v0.9)
        report["interrupt"] = type(exc).__name__
    finally:
        mm.interrupt_current_processing(False)
    print("REPORT " + json.dumps(report))
''')


def test_upscale_nodes_inside_comfyui(tmp_path):
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path or not os.path.isfile(os.path.join(comfy_path, "nodes.py")):
        pytest.skip(COMFYUI_SKIP_REASON)
    pack = tmp_path / "custom_nodes" / "HumanGenPack"
    shutil.copytree(ROOT, pack, ignore=shutil.ignore_patterns(".git", "tests", "__pycache__", "bench", "workflows"))
    models = tmp_path / "upscale_models"
    models.mkdir()
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    python, env = host_environment(tmp_path)
    out = subprocess.run([python, str(script), comfy_path, str(pack), str(models), str(ROOT / "tests")],
                         capture_output=True, text=True, timeout=600, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("REPORT ")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT "):])
    assert report["loaded"] and report["host"] == "ComfyHost"
    assert report["combo"] == ["tiny_x4.pth"]
    assert report["shape"] == [1, 192, 160, 3] and report["max_diff"] < 1e-6  # ours untiled == core
    assert report["progress"] and report["progress"][-1][0] == report["progress"][-1][1]
    assert report["patcher"] == "ModelPatcher"
    assert report["patcher_is_the_core_one"] and report["core_patcher_reused"]
    assert report["interrupt"] == "InterruptProcessingException"
