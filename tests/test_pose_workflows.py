"""The pose workflows: UI and API twins agree, and the API prompt runs through our nodes (LoadImage/SaveImage
stand-ins here; the headless runner runs them end to end in its own tests)."""
from __future__ import annotations

import json

import numpy as np

from hgtest import ROOT
from humangen import NODE_CLASS_MAPPINGS as N
from humangen.utils import image as I
from humangen.utils import pose as P



def run_api(prompt, assets):
    """Execute an API prompt in id order (our prompts are topologically ordered)."""
    outputs, saved = {}, {}
    for nid in sorted(prompt, key=int):
        node = prompt[nid]
        inputs = {k: (outputs[v[0]][v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
        if node["class_type"] == "LoadImage":
            from PIL import Image
            outputs[nid] = (I.pil_to_comfy(Image.open(assets / inputs["image"])),)
        elif node["class_type"] == "SaveImage":
            saved[nid] = inputs["images"]
            outputs[nid] = ()
        else:
            obj = N[node["class_type"]]()
            out = getattr(obj, obj.FUNCTION)(**inputs)
            outputs[nid] = out["result"] if isinstance(out, dict) else out
    return outputs, saved


def test_photo_to_skeleton_runs(standalone_host):
    prompt = json.loads((ROOT / "workflows" / "api" / "photo_to_skeleton.json").read_text())
    outputs, saved = run_api(prompt, ROOT / "workflows" / "assets")
    skeleton = I.comfy_to_uint8(saved["4"][0])
    assert skeleton.shape == (512, 512, 3)
    colours = {tuple(c) for c in skeleton.reshape(-1, 3)} - {(0, 0, 0)}
    assert len(colours & set(P.HUMANSD_COLORS)) >= 8  # head, arms and torso limbs of the astronaut
    back = P.load_pose(outputs["5"][0])
    np.testing.assert_array_equal(P.people_array(back[0]), P.people_array(outputs["2"][0][0]))


def test_align_full_body_runs(standalone_host):
    prompt = json.loads((ROOT / "workflows" / "api" / "align_full_body.json").read_text())
    outputs, saved = run_api(prompt, ROOT / "workflows" / "assets")
    img = saved["3"]
    assert tuple(img.shape) == (1, 1024, 512, 3)
    assert float(img[0, 5, 5].min()) == 1.0  # white background above the head
