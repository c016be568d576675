"""HumanSD example workflows: UI/API twins agree with each other and with the node definitions; the pose-JSON
workflow runs end to end with a tiny stand-in model saved under the name it declares in needs_models."""
from __future__ import annotations

import json
import os


import humansd_tiny as T
from hgtest import ROOT



def _load(name):
    with open(ROOT / "workflows" / f"{name}.json") as fh:
        ui = json.load(fh)
    with open(ROOT / "workflows" / "api" / f"{name}.json") as fh:
        api = json.load(fh)
    return ui, api


def _run_api(api, overrides):
    """A minimal API-prompt executor: our registered nodes, the pose loader (utils.pose) until nodes/pose.py is
    merged, and sinks for Save/PreviewImage."""
    from humangen import NODE_CLASS_MAPPINGS
    from humangen.utils import host
    from humangen.utils import pose as posemod
    from humangen.utils import image as I

    def load_image(image, **_):
        from PIL import Image
        return (I.pil_to_comfy(Image.open(os.path.join(host.input_dir(), image))), None)

    stubs = {"HumanGenLoadPose": lambda path, canvas_width, canvas_height: (
                 posemod.load_pose(os.path.join(host.input_dir(), path)),),
             "LoadImage": load_image,
             "SaveImage": lambda images, filename_prefix: ("saved", images),
             "PreviewImage": lambda images: ("preview", images)}
    results, sinks = {}, {}

    def run(nid):
        if nid in results:
            return results[nid]
        entry = api[nid]
        kwargs = {}
        for k, v in dict(entry["inputs"], **overrides.get(nid, {})).items():
            kwargs[k] = run(v[0])[v[1]] if isinstance(v, list) else v
        cls = NODE_CLASS_MAPPINGS.get(entry["class_type"])
        if cls is not None:
            out = getattr(cls(), cls.FUNCTION)(**kwargs)
            out = out["result"] if isinstance(out, dict) else out
        else:
            out = stubs[entry["class_type"]](**kwargs)
            if entry["class_type"] in ("SaveImage", "PreviewImage"):
                sinks[nid] = out[1]
        results[nid] = out
        return out

    for nid in api:
        run(nid)
    return sinks


def _prepare(standalone_host, name):
    import shutil
    ui, api = _load(name)
    need = ui["models"][0]
    unet, vae, tower = T.make_components(seed=5)
    T.save_ckpt(os.path.join(standalone_host.models_root, need["directory"], need["name"]),
                T.ldm_state_dict(unet, vae, tower))
    os.makedirs(standalone_host.input_root, exist_ok=True)
    for asset in ("humansd_pose.json", "astronaut.png"):
        shutil.copy(ROOT / "workflows" / "assets" / asset, os.path.join(standalone_host.input_root, asset))
    sampler = next(k for k, v in api.items() if v["class_type"] == "HumanGenSkeletonSDSampler")
    sinks = _run_api(api, {sampler: {"steps": 2, "short_side": 64}})
    images = [v for k, v in sinks.items() if api[k]["class_type"] == "SaveImage"][0]
    skeleton = [v for k, v in sinks.items() if api[k]["class_type"] == "PreviewImage" and api[k]["inputs"]
                ["images"][0] == sampler][0]
    return images, skeleton


def test_pose_json_workflow_runs_with_a_tiny_stand_in(standalone_host, one_torch_thread):
    images, skeleton = _prepare(standalone_host, "humansd_pose_json")
    assert images.shape == (1, 128, 64, 3)  # 512x768 canvas, short side 64 -> 64x96 -> rounded to 64x128
    assert skeleton.shape == (1, 128, 64, 3) and skeleton.amax() > 0.3  # the skeleton was drawn


def test_photo_pose_workflow_runs_with_a_tiny_stand_in(standalone_host, one_torch_thread):
    """astronaut.png (512x512) -> mediapipe pose -> HumanSD skeleton -> tiny stand-in model."""
    images, skeleton = _prepare(standalone_host, "humansd_photo_pose")
    assert images.shape == (1, 64, 64, 3) and skeleton.shape == (1, 64, 64, 3)
    assert (skeleton.sum(-1) > 0).float().mean() > 0.02  # a skeleton of the detected person
