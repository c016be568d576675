"""The upscale workflows: UI and API twins agree with each other and with the nodes' INPUT_TYPES, declare their
model files, and run with a tiny stand-in model under the declared name (through the headless runner when it is
present, otherwise by calling the HumanGen nodes with the API inputs)."""
from __future__ import annotations

import json
import os

import pytest
import torch

import hg_upscale as H
from hgtest import ROOT
from humangen import NODE_CLASS_MAPPINGS

WORKFLOWS = ["upscale_4x", "upscale_face_refine"]


def _load(name):
    with open(ROOT / "workflows" / f"{name}.json") as f:
        ui = json.load(f)
    with open(ROOT / "workflows" / "api" / f"{name}.json") as f:
        api = json.load(f)
    return ui, api


@pytest.mark.parametrize("name", WORKFLOWS)
def test_needs_models_are_declared(name):
    ui, api = _load(name)
    needs = ui["models"]
    files = {(n["directory"], n["name"]) for n in needs}
    assert all(n["url"].startswith("https://") and n["url"].endswith("/" + n["name"]) for n in needs)
    for entry in api.values():
        if entry["class_type"] == "HumanGenUpscaleModelLoader":
            assert ("upscale_models", entry["inputs"]["model_name"]) in files
        if entry["class_type"] == "HumanGenFaceRefineUpscale":
            assert ("face_restore", entry["inputs"]["face_model_name"]) in files


def _stand_in_models(h, ui, upscaler=H.rrdbnet_state_dict):
    """Tiny random models under the declared names: an x4 upscaler, a RestoreFormer for the face model."""
    for need in ui["models"]:
        folder = os.path.join(h.models_root, need["directory"])
        os.makedirs(folder, exist_ok=True)
        sd = H.tiny_restoreformer() if need["directory"] == "face_restore" else upscaler()
        torch.save(H.realesrgan_checkpoint(sd), os.path.join(folder, need["name"]))


def test_upscale_4x_runs_with_a_stand_in_model(standalone_host):
    ui, api = _load("upscale_4x")
    _stand_in_models(standalone_host, ui)
    image = torch.rand((1, 64, 32, 3), generator=torch.Generator().manual_seed(0))  # a 2:1 full-body frame
    loader = NODE_CLASS_MAPPINGS[api["2"]["class_type"]]()
    (model,) = getattr(loader, loader.FUNCTION)(**api["2"]["inputs"])
    up = NODE_CLASS_MAPPINGS[api["3"]["class_type"]]()
    kwargs = {k: v for k, v in api["3"]["inputs"].items() if not isinstance(v, list)}
    out, mask = getattr(up, up.FUNCTION)(image=image, upscale_model=model, **kwargs)
    assert out.shape == (1, 256, 128, 3) and mask.shape == (1, 256, 128)


def test_upscale_face_refine_runs_with_stand_in_models(standalone_host):
    from skimage import data
    ui, api = _load("upscale_face_refine")
    _stand_in_models(standalone_host, ui, upscaler=H.compact_state_dict)  # cheaper than an RRDBNet at 160 px
    photo = torch.from_numpy(data.astronaut()).float().div(255).permute(2, 0, 1)[None]
    image = torch.nn.functional.interpolate(photo, size=(160, 160), mode="area").permute(0, 2, 3, 1)
    loader = NODE_CLASS_MAPPINGS[api["2"]["class_type"]]()
    (model,) = getattr(loader, loader.FUNCTION)(**api["2"]["inputs"])
    node = NODE_CLASS_MAPPINGS[api["3"]["class_type"]]()
    kwargs = {k: v for k, v in api["3"]["inputs"].items() if not isinstance(v, list)}
    out, face_mask = getattr(node, node.FUNCTION)(image=image, upscale_model=model, **kwargs)
    assert out.shape == (1, 640, 640, 3) and face_mask.shape == (1, 640, 640)
    assert float(face_mask.max()) > 0.99  # the astronaut's face was found and replaced


def test_upscale_4x_through_the_runner(standalone_host):
    from humangen.runner import engine
    from PIL import Image
    ui, api = _load("upscale_4x")
    _stand_in_models(standalone_host, ui)
    os.makedirs(standalone_host.input_dir(), exist_ok=True)
    arr = (torch.rand((64, 32, 3), generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()
    Image.fromarray(arr).save(os.path.join(standalone_host.input_dir(), api["1"]["inputs"]["image"]))
    result = engine.Engine().run(api)
    images = result.outputs["4"]["images"]
    saved = Image.open(os.path.join(standalone_host.output_dir(), images[0].get("subfolder", ""),
                                    images[0]["filename"]))
    assert saved.size == (128, 256)


